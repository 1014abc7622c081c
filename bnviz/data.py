"""Fashion-MNIST, found offline where possible, checked by content, held in memory as uint8 tensors.

Where we look, in order: ``$BNVIZ_DATA``, ``./data``, ``/usr/share/datasets/fashion-mnist`` (Debian's
package ``dataset-fashion-mnist``), then torchvision's download into ``./data``. A place may hold the
four original files (``train-images-idx3-ubyte[.gz]`` ...) directly or in torchvision's layout
(``FashionMNIST/raw/``). Gzipped files are unpacked once into ``./data/FashionMNIST/raw`` and read by
``torchvision.datasets.FashionMNIST``. Debian recompressed its gz files, so their md5 differs from
torchvision's list: we check what we load by its content instead (shapes, 6,000 + 1,000 per class).
"""

import gzip
import os
import shutil
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch

from . import env

CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
HOW_TO_FIX = (
    "To fix it, do one of: install Debian's package (sudo apt-get install dataset-fashion-mnist, which fills "
    f"{DEBIAN_DIR}); copy the four Fashion-MNIST files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
    "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) into ./data or a folder named by $BNVIZ_DATA; "
    "or connect to the internet once so torchvision can download them into ./data."
)


class DataError(RuntimeError):
    """The data could not be found or is not Fashion-MNIST; the message says what to do."""


def search_dirs():
    """The places we look, in order."""
    dirs = [env.data_dir()] if env.data_dir() else []
    return dirs + [Path("data"), DEBIAN_DIR]


def _find_files(folder):
    """{name: path} for a folder holding all four files (plain or .gz), directly or in FashionMNIST/raw."""
    for d in (folder, folder / "FashionMNIST" / "raw"):
        found = {}
        for name in FILES:
            for candidate in (d / name, d / f"{name}.gz"):
                if candidate.is_file():
                    found[name] = candidate
                    break
        if len(found) == len(FILES):
            return found
    return None


def _unpack_into(files, root):
    """Put the four files, uncompressed, into root/FashionMNIST/raw (torchvision's layout); return root."""
    raw = root / "FashionMNIST" / "raw"
    if all(files[n] == raw / n for n in FILES):
        return root
    raw.mkdir(parents=True, exist_ok=True)
    for name, src in files.items():
        dst = raw / name
        if dst.is_file() and dst.stat().st_mtime >= src.stat().st_mtime and dst != src:
            continue
        fd, tmp = tempfile.mkstemp(dir=raw, prefix=f".{name}.")
        try:
            with os.fdopen(fd, "wb") as out, gzip.open(src) if src.suffix == ".gz" else open(src, "rb") as f:
                shutil.copyfileobj(f, out)
            os.chmod(tmp, 0o644)
            os.replace(tmp, dst)  # atomic: never a half-written file under the real name
        except (OSError, EOFError, zlib.error) as e:  # zlib.error: a garbled deflate stream
            Path(tmp).unlink(missing_ok=True)
            raise DataError(
                f"Could not read {src}: {e}. The file is truncated or corrupt; delete it and "
                f"fetch it again. {HOW_TO_FIX}"
            ) from e
    return root


def _staging_root():
    """./data if we can write there, else a per-user cache."""
    for root in (Path("data"), Path.home() / ".cache" / "bnviz"):
        try:
            root.mkdir(parents=True, exist_ok=True)
            if os.access(root, os.W_OK):
                return root
        except OSError:
            pass
    raise DataError("Neither ./data nor ~/.cache/bnviz is writable, so the data cannot be unpacked.")


def locate(download=True):
    """A torchvision root holding Fashion-MNIST (unpacking or downloading it if needed)."""
    for folder in search_dirs():
        files = _find_files(folder)
        if files:
            writable = os.access(folder, os.W_OK) and folder != DEBIAN_DIR
            return _unpack_into(files, folder if writable else _staging_root())
    if download:
        from torchvision.datasets import FashionMNIST

        root = _staging_root()
        try:
            FashionMNIST(root, train=True, download=True)
            FashionMNIST(root, train=False, download=True)
            return root
        except Exception as e:  # no internet, a proxy, a full disk...
            reason = f"torchvision's download failed ({type(e).__name__}: {e})"
    else:
        reason = "download not allowed"
    places = ", ".join(str(d) for d in search_dirs())
    raise DataError(f"Fashion-MNIST was not found in {places}, and {reason}. {HOW_TO_FIX}")


@dataclass(frozen=True)
class FashionMNISTData:
    """The whole dataset in memory: images uint8 (N, 28, 28), labels int64 (N,)."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    source: str = ""

    def to(self, device):
        return FashionMNISTData(
            *(t.to(device) for t in (self.train_images, self.train_labels, self.test_images, self.test_labels)),
            self.source,
        )


def check_content(images, labels, n, what):
    """Raise DataError unless this is n Fashion-MNIST images with n / 10 of each class."""
    problems = []
    if tuple(images.shape) != (n, 28, 28) or images.dtype != torch.uint8:
        problems.append(f"images are {tuple(images.shape)} {images.dtype}, expected ({n}, 28, 28) uint8")
    if tuple(labels.shape) != (n,):
        problems.append(f"labels are {tuple(labels.shape)}, expected ({n},)")
    elif torch.bincount(labels.long(), minlength=10).tolist() != [n // 10] * 10:
        problems.append(f"labels per class are {torch.bincount(labels.long()).tolist()}, expected {n // 10} each")
    if problems:
        raise DataError(
            f"The {what} set is not Fashion-MNIST: {'; '.join(problems)}. "
            f"The files are truncated, corrupt or another dataset; delete them. {HOW_TO_FIX}"
        )


_cache = {}


def load_fashion_mnist(root=None, *, download=True):
    """Load (and cache in this process) the dataset on the CPU, checked by content."""
    from torchvision.datasets import FashionMNIST

    root = Path(root) if root is not None else locate(download=download)
    key = str(root.resolve())
    if key not in _cache:
        parts = []
        for train, n in ((True, 60_000), (False, 10_000)):
            what = "training" if train else "test"
            try:
                ds = FashionMNIST(root, train=train, download=False)
            except Exception as e:
                raise DataError(
                    f"Could not read the {what} files under {root / 'FashionMNIST' / 'raw'} "
                    f"({type(e).__name__}: {e}). They are truncated or corrupt; delete them. "
                    f"{HOW_TO_FIX}"
                ) from e
            check_content(ds.data, ds.targets, n, what)
            parts += [ds.data.contiguous(), ds.targets.long()]
        _cache[key] = FashionMNISTData(*parts, source=str(root))
    return _cache[key]


def batches(images, labels, batch_size, *, shuffle=False, seed=0, epoch=0):
    """Yield (X, y): X float (B, 1, 28, 28) in [0, 1] on the images' device, y int64 (B,).

    With shuffle, the order is a permutation drawn from (seed, epoch): every lane and every rerun that
    asks for the same epoch sees the same batches. A last batch of a single image is dropped in training
    (BN needs two values per channel).
    """
    n = images.shape[0]
    if shuffle:
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        order = torch.randperm(n, generator=g).to(images.device)
    else:
        order = None
    for start in range(0, n, batch_size):
        if shuffle and n - start < 2:
            break
        idx = order[start : start + batch_size] if order is not None else slice(start, start + batch_size)
        yield images[idx].unsqueeze(1).float().div_(255), labels[idx]


def num_batches(n, batch_size, shuffle=True):
    """How many batches batches() yields for n images."""
    smallest = 2 if shuffle else 1  # with shuffle, a last batch of a single image is dropped
    return 0 if n < smallest else (n - smallest) // batch_size + 1


def random_dataset(n_train, n_test, seed=0):
    """Random images and labels shaped like Fashion-MNIST: for tests and smoke runs, never for lessons."""
    g = torch.Generator().manual_seed(seed)
    return FashionMNISTData(
        torch.randint(0, 256, (n_train, 28, 28), dtype=torch.uint8, generator=g),
        torch.randint(0, 10, (n_train,), generator=g),
        torch.randint(0, 256, (n_test, 28, 28), dtype=torch.uint8, generator=g),
        torch.randint(0, 10, (n_test,), generator=g),
        source="random",
    )
