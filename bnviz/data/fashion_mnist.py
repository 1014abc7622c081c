"""Fashion-MNIST, found offline where possible, checked by content, held in memory as uint8 tensors.

Where we look, in order: ``$BNVIZ_DATA``, ``./data``, ``/usr/share/datasets/fashion-mnist`` (Debian's
package ``dataset-fashion-mnist``), then torchvision's download into ``./data``. A place may hold the
four original files (``train-images-idx3-ubyte[.gz]`` ...) directly or in torchvision's layout
(``FashionMNIST/raw/``). Gzipped files are unpacked once into ``./data/FashionMNIST/raw`` and read by
``torchvision.datasets.FashionMNIST``. Debian recompressed its gz files, so their md5 differs from
torchvision's list: we check what we load by its content instead: shapes, 6,000 + 1,000 per class, then the
SHA-256 of each decompressed file (``SHA256``), which is the same whatever gzip produced the files.

``find()`` says which place it used and why each earlier one was passed over (``Located.note``); the loaded
data carries that sentence (``FashionMNISTData.note``, and ``.notice`` when a folder named by ``$BNVIZ_DATA``
or a partly filled one was passed over, or the digests were not checked), for ``bnviz data`` and the
dashboard to show.
"""

import dataclasses
import gzip
import hashlib
import math
import os
import shutil
import struct
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bnviz.machine import env
from bnviz.data.sampling import NUM_CLASSES, class_skewed_order

CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
# SHA-256 of each file decompressed (`zcat train-images-idx3-ubyte.gz | sha256sum`): Zalando's original
# Fashion-MNIST (github.com/zalandoresearch/fashion-mnist), computed here from Debian's dataset-fashion-mnist
# 0.0~git20200523.55506a9-1 (recompressed, same content) and the same as published elsewhere for the
# decompressed files of archives whose md5 matches Zalando's list. Same bytes as torchvision's download unpacks.
SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
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


def _scan(folder):
    """({name: path} for a folder holding all four files (plain or .gz), directly or in FashionMNIST/raw,
    or None; why not, in words; whether that is worth telling (the folder holds some of the files)."""
    try:
        if not folder.exists():
            return None, "does not exist", False
        if not folder.is_dir():
            return None, "is not a folder", False
        if not any(folder.iterdir()):
            return None, "is empty", False
        best = {}
        for d in (folder, folder / "FashionMNIST" / "raw"):
            found = {}
            for name in FILES:
                for candidate in (d / name, d / f"{name}.gz"):
                    if candidate.is_file():
                        found[name] = candidate
                        break
            if len(found) == len(FILES):
                return found, "", False
            if len(found) > len(best):
                best = found
    except OSError as e:  # a folder we may not read
        return None, f"cannot be read ({e.strerror or e})", True
    if not best:
        return None, "holds none of the four files (train-images-idx3-ubyte.gz ...)", False
    lacking = ", ".join(f"{n}.gz" for n in FILES if n not in best)
    return None, f"has no {lacking} ({len(best)} of the 4 files)", True


def _find_files(folder):
    """{name: path} for a folder holding all four files (plain or .gz), directly or in FashionMNIST/raw."""
    return _scan(folder)[0]


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


def _label(folder, first):
    """How a place is named in messages."""
    if first and env.data_dir() is not None:
        return f"$BNVIZ_DATA={folder}"
    return "./data" if folder == Path("data") else str(folder)


@dataclass(frozen=True)
class Located:
    """Where the data is: the torchvision root to load, the place its files came from (as messages name it),
    and the places passed over before it, each as (name, why, worth telling)."""

    root: Path
    label: str
    passed_over: tuple = ()
    unpacked: bool = False  # the files were unpacked from `label` into root, a folder of our own

    @property
    def used(self):
        return f"{self.label} (unpacked into {_label(self.root, False)})" if self.unpacked else self.label

    @property
    def note(self):
        """e.g. "$BNVIZ_DATA=/x has no t10k-labels-idx1-ubyte.gz (3 of the 4 files); used ./data"."""
        return "; ".join([f"{place} {why}" for place, why, _ in self.passed_over] + [f"used {self.used}"])

    @property
    def notice(self):
        """The note when a folder named by $BNVIZ_DATA, or one holding some of the files, was passed over."""
        return self.note if any(telling for _, _, telling in self.passed_over) else ""


def find(download=True):
    """Located: the first place holding the four files (unpacked if needed), else torchvision's download."""
    passed_over = []
    for i, folder in enumerate(search_dirs()):
        files, why, telling = _scan(folder)
        label = _label(folder, i == 0)
        if files:
            writable = os.access(folder, os.W_OK) and folder != DEBIAN_DIR
            root = Path(_unpack_into(files, folder if writable else _staging_root()))
            return Located(root, label, tuple(passed_over), unpacked=root != folder)
        passed_over.append((label, why, telling or label.startswith("$BNVIZ_DATA")))
    if download:
        from torchvision.datasets import FashionMNIST

        root = _staging_root()
        try:
            FashionMNIST(root, train=True, download=True)
            FashionMNIST(root, train=False, download=True)
            return Located(root, f"torchvision's download into {_label(root, False)}", tuple(passed_over))
        except Exception as e:  # no internet, a proxy, a full disk...
            reason = f"torchvision's download failed ({type(e).__name__}: {e})"
    else:
        reason = "download not allowed"
    places = "; ".join(f"{place} {why}" for place, why, _ in passed_over)
    raise DataError(f"Fashion-MNIST was not found ({places}), and {reason}. {HOW_TO_FIX}")


def locate(download=True):
    """A torchvision root holding Fashion-MNIST (unpacking or downloading it if needed)."""
    return find(download=download).root


@dataclass(frozen=True)
class FashionMNISTData:
    """The whole dataset in memory: images uint8 (N, 28, 28), labels int64 (N,)."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    source: str = ""
    note: str = ""  # where it came from and why earlier places were passed over (Located.note)
    notice: str = ""  # the note, when it is worth showing (Located.notice); else ""

    def to(self, device):
        return dataclasses.replace(
            self,
            **{k: getattr(self, k).to(device) for k in ("train_images", "train_labels", "test_images", "test_labels")},
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


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def check_digests(raw, source=""):
    """Raise DataError unless the four decompressed files in raw are Zalando's original Fashion-MNIST.

    Hashing the 55 MB takes about 0.06 s (load_fashion_mnist does it once per process and root).
    """
    wrong = [n for n in FILES if sha256_of(raw / n) != SHA256[n]]
    if wrong:
        where = f"{raw} (from {source})" if source else str(raw)
        todo = (
            "Delete them, or point $BNVIZ_DATA at a folder holding the original files (or unset it)"
            if source.startswith("$BNVIZ_DATA")
            else "Delete them (bnviz then looks in the next place, or downloads the originals)"
        )
        raise DataError(
            f"The files in {where} are not the original Fashion-MNIST: the SHA-256 of {', '.join(wrong)} "
            f"(decompressed) differs from Zalando's, though shapes and class counts are right. They are "
            f"another dataset, random images or altered copies. {todo}. {HOW_TO_FIX}"
        )


def read_idx(path, ndim):
    """An IDX file (LeCun's MNIST format) of bytes as a uint8 tensor: a magic number 0x0800 | ndim, then ndim
    big-endian int32 sizes, then the bytes. Read here, not by torchvision, whose import alone takes seconds."""
    raw = Path(path).read_bytes()
    if raw[:4] != bytes((0, 0, 8, ndim)):
        raise ValueError(f"{Path(path).name} does not start as an IDX file of {ndim}-d bytes ({raw[:4].hex()})")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{Path(path).name} is shorter ({len(raw)} bytes) than its header")
    shape = struct.unpack(f">{ndim}i", raw[4:header])
    count = math.prod(shape)
    if len(raw) != header + count:
        raise ValueError(f"{Path(path).name} holds {len(raw) - header} bytes of data; its header says {count}")
    return torch.from_numpy(np.frombuffer(raw, np.uint8, count, header).reshape(shape).copy())


_cache: dict = {}


UNCHECKED = "the SHA-256 digests were not checked ($BNVIZ_DATA_UNCHECKED=1)"


def load_fashion_mnist(root=None, *, download=True):
    """Load (and cache in this process) the dataset on the CPU, checked by content and digest.

    Without a root it is found (find()), and the data says where from (``note``, ``notice``).
    $BNVIZ_DATA_UNCHECKED=1 skips the digests (synthetic data in tests), and the note and notice say so.
    """
    found = None
    if root is None:
        found = find(download=download)
        root = found.root
    root = Path(root)
    unchecked = env.data_unchecked()
    key = (str(root.resolve()), unchecked)
    if key not in _cache:
        parts = []
        for train, n in ((True, 60_000), (False, 10_000)):
            what = "training" if train else "test"
            prefix = "train" if train else "t10k"
            try:
                raw = root / "FashionMNIST" / "raw"
                images, labels = (
                    read_idx(raw / f"{prefix}-images-idx3-ubyte", 3),
                    read_idx(raw / f"{prefix}-labels-idx1-ubyte", 1),
                )
            except Exception as e:
                raise DataError(
                    f"Could not read the {what} files under {root / 'FashionMNIST' / 'raw'} "
                    f"({type(e).__name__}: {e}). They are truncated or corrupt; delete them. "
                    f"{HOW_TO_FIX}"
                ) from e
            check_content(images, labels, n, what)
            parts += [images, labels.long()]
        if not unchecked:
            check_digests(root / "FashionMNIST" / "raw", found.label if found else "")
        _cache[key] = FashionMNISTData(*parts, source=str(root))
    note, notice = (found.note, found.notice) if found else ("", "")
    if unchecked:
        note = f"{note}; {UNCHECKED}" if note else UNCHECKED
        notice = note  # worth showing: what is loaded may not be Fashion-MNIST at all
    if (note, notice) == ("", ""):
        return _cache[key]
    return dataclasses.replace(_cache[key], note=note, notice=notice)


def batches(images, labels, batch_size, *, shuffle=False, seed=0, epoch=0, classes_per_batch=NUM_CLASSES):
    """Yield (X, y): X float (B, 1, 28, 28) in [0, 1] on the images' device, y int64 (B,).

    With shuffle, the order is a permutation drawn from (seed, epoch): every lane and every rerun that
    asks for the same epoch sees the same batches. A last batch of a single image is dropped in training
    (BN needs two values per channel). With ``classes_per_batch`` below 10, each batch holds images of that
    many classes only (``sampling.class_skewed_order``), as many batches as an i.i.d. epoch.
    """
    n = images.shape[0]
    if shuffle and classes_per_batch < NUM_CLASSES:
        count = num_batches(n, batch_size)
        order = class_skewed_order(labels, batch_size, classes_per_batch, seed=seed, epoch=epoch, num_batches=count)
        order = order.to(images.device)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            yield images[idx].unsqueeze(1).float().div_(255), labels[idx]
        return
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


def endless_batches(
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
    *,
    seed: int = 0,
    epoch: int = 1,
    classes_per_batch: int = NUM_CLASSES,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled training batches that never end: epoch ``epoch``, then ``epoch + 1``, ..., each as ``batches``
    draws it (seeded by (seed, epoch)). Take what you need with ``next`` or ``itertools.islice``."""
    if num_batches(images.shape[0], batch_size) == 0:
        raise ValueError(f"training batches need at least 2 images, got {images.shape[0]}: use a larger train_size")
    while True:
        yield from batches(
            images, labels, batch_size, shuffle=True, seed=seed, epoch=epoch, classes_per_batch=classes_per_batch
        )
        epoch += 1


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
