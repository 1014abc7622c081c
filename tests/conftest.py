"""Shared fixtures: IDX files written by hand, isolated data search paths, and the real Fashion-MNIST."""

import gzip
import hashlib
import os
import struct
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import bnviz.data.fashion_mnist
from bnviz.data.fashion_mnist import FILES
from bnviz.machine import env

REPO_DATA = Path(__file__).resolve().parents[1] / "data"
REAL_DEBIAN_DIR = Path(
    "/usr/share/datasets/fashion-mnist"
)  # bnviz.data.fashion_mnist.DEBIAN_DIR, before any monkeypatch


def idx_bytes(array):
    """The IDX encoding of a uint8 array: images (N, 28, 28) get magic 0x803, labels (N,) get 0x801."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    magic = 0x00000800 | array.ndim
    return struct.pack(">i", magic) + struct.pack(f">{array.ndim}i", *array.shape) + array.tobytes()


def write_file(path, data, gz=False):
    """Write bytes to path (path + '.gz', gzipped, with gz); return the path written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data, compresslevel=1))
    else:
        path.write_bytes(data)
    return path


def make_arrays(n_train, n_test, seed=0):
    """Images and labels, n / 10 of each class; pixel (0, 0) holds the label so pairs can be checked."""
    rng = np.random.default_rng(seed)
    out = []
    for n in (n_train, n_test):
        labels = rng.permutation(np.arange(n) % 10).astype(np.uint8)
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        images[:, 0, 0] = labels
        out += [images, labels]
    return out


def write_dataset(folder, arrays, gz=False, layout="flat"):
    """The four files for (train_images, train_labels, test_images, test_labels) in folder.

    layout 'flat' puts them directly in folder, 'torchvision' in folder/FashionMNIST/raw.
    Returns {name: path written}.
    """
    folder = Path(folder)
    d = folder if layout == "flat" else folder / "FashionMNIST" / "raw"
    return {name: write_file(d / name, idx_bytes(a), gz=gz) for name, a in zip(FILES, arrays)}


def missing(reason):
    """An input this test needs is absent: a failure in CI (BNVIZ_REQUIRE_ALL=1), else a skip that says why."""
    if env.require_all():
        pytest.fail(f"{reason}; BNVIZ_REQUIRE_ALL=1 (CI) requires every input", pytrace=False)
    pytest.skip(reason)


def pytest_collection_modifyitems(items):
    """Tests on the real dataset carry the real_data marker, whether they ask for it directly or not."""
    for item in items:
        if {"real_data", "real_data_root"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.real_data)


@pytest.fixture
def one_thread():
    """One intra-op thread for tests on tiny tensors (restored afterwards).

    Two threads on LeNet-sized work crawl, 10-30x slower, whenever anything else uses the cores.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def idx():
    """The IDX helpers, for tests: idx.bytes, idx.write_file, idx.make_arrays, idx.write_dataset."""
    return SimpleNamespace(bytes=idx_bytes, write_file=write_file, make_arrays=make_arrays, write_dataset=write_dataset)


@pytest.fixture
def places(tmp_path, monkeypatch):
    """Nothing anywhere: no $BNVIZ_DATA, an empty working directory, and a Debian dir that does not exist.

    Returns the paths: env (for $BNVIZ_DATA), cwd (the working directory, so ./data is cwd/data), debian.
    """
    p = SimpleNamespace(env=tmp_path / "env", cwd=tmp_path / "cwd", debian=tmp_path / "debian")
    p.cwd.mkdir()
    monkeypatch.delenv("BNVIZ_DATA", raising=False)
    monkeypatch.chdir(p.cwd)
    monkeypatch.setattr(bnviz.data.fashion_mnist, "DEBIAN_DIR", p.debian)
    return p


@pytest.fixture(scope="session")
def full_synthetic(tmp_path_factory):
    """A folder with the four gz files at Fashion-MNIST's full size (60,000 + 10,000, balanced classes)."""
    folder = tmp_path_factory.mktemp("full_synthetic")
    arrays = make_arrays(60_000, 10_000, seed=1)
    for a in (arrays[0], arrays[2]):  # mostly zeros: quick to compress, pixel (0, 0) keeps the label
        a[:, 1:, :] = 0
    write_dataset(folder, arrays, gz=True)
    sha256 = {name: hashlib.sha256(idx_bytes(a)).hexdigest() for name, a in zip(FILES, arrays)}
    return SimpleNamespace(folder=folder, arrays=arrays, sha256=sha256)


@pytest.fixture
def synthetic_is_original(full_synthetic, monkeypatch):
    """full_synthetic passes the digest check: its digests stand in for Zalando's (bnviz.data.fashion_mnist.SHA256)."""
    monkeypatch.setattr(bnviz.data.fashion_mnist, "SHA256", full_synthetic.sha256)
    return full_synthetic


@pytest.fixture(scope="session")
def real_data_root(tmp_path_factory):
    """A torchvision root holding the real Fashion-MNIST, unpacked; skip when it is not on this machine."""
    for folder in (REPO_DATA, REAL_DEBIAN_DIR):
        files = bnviz.data.fashion_mnist._find_files(folder)
        if files:
            raw = folder / "FashionMNIST" / "raw"
            if all(files[n] == raw / n for n in FILES):
                return folder
            return bnviz.data.fashion_mnist._unpack_into(files, tmp_path_factory.mktemp("fashion_mnist"))
    missing(f"the real Fashion-MNIST is in neither {REPO_DATA} nor {REAL_DEBIAN_DIR}")


@pytest.fixture(scope="session")
def real_data(real_data_root):
    """The real dataset in memory (loaded once per session)."""
    return bnviz.data.fashion_mnist.load_fashion_mnist(real_data_root, download=False)


# ============================================================================================= experiments
# Shared by the engine, process, registry, history, studies, interface and jobs tests: tiny random data sets,
# polling until a condition holds, and experiments that are always stopped (and checked gone) after a test.


def tiny_dataset(n_train=256, n_test=200, seed=0):
    """Random images shaped like Fashion-MNIST (fashion_mnist.random_dataset): 8 steps an epoch at batch 32."""
    return bnviz.data.fashion_mnist.random_dataset(n_train, n_test, seed)


def together(n, fn, timeout=30.0):
    """fn(i) for i in range(n) in n threads released at the same instant; their results in order (what one
    raised in its place; None where a thread had not finished within ``timeout``)."""
    barrier, results = threading.Barrier(n), [None] * n

    def run(i):
        barrier.wait()
        try:
            results[i] = fn(i)
        except Exception as e:  # noqa: BLE001 (the test looks at it)
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    return results


@pytest.fixture
def quick_deadlines(monkeypatch):
    """A child silent for 0.5 s is "not responding" (3 s in use): the fault tests wait no real seconds for it.
    Read when an ExperimentProcess is made: take this fixture before the experiments."""
    from bnviz.live import processes

    monkeypatch.setattr(processes, "STATUS_TIMEOUT_S", 0.5)


def until(condition, timeout=30.0, poll=0.005):
    """Poll until condition() is true; False if the deadline passed first."""
    import time

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(poll)
    return bool(condition())


def worker_threads(name):
    """The live threads of the in-process experiment called ``name``."""
    import threading

    return [t for t in threading.enumerate() if t.name == f"bnviz-{name}" and t.is_alive()]


@pytest.fixture(scope="session")
def tiny_data():
    """tiny_dataset(): 256 training and 200 test images, loaded once per session."""
    return tiny_dataset()


@pytest.fixture
def make_experiment(tiny_data):
    """make_experiment(settings=None, lanes=DEFAULT_LANES, *, cls=Experiment, data=tiny_data, **kwargs).

    Every experiment made is stopped at teardown, and checked gone: its worker thread or its child process.
    """
    import uuid

    from bnviz.live.engine import Experiment
    from bnviz.live.snapshot import DEFAULT_LANES, Settings

    made = []

    def make(settings=None, lanes=DEFAULT_LANES, *, cls=Experiment, data=None, **kwargs):
        kwargs.setdefault("name", f"test-{uuid.uuid4().hex[:10]}")
        settings = settings or Settings(batch_size=32, val_size=50, device="cpu")
        made.append(cls(tiny_data if data is None else data, settings, lanes, **kwargs))
        return made[-1]

    yield make
    for e in made:
        assert e.stop(timeout=10), f"{e.name} did not stop"
        assert not e.alive and not worker_threads(e.name)


def code_that_ran(fn):
    """The code objects of bnviz's own functions that ran (in this thread) while ``fn()`` did."""
    ran = set()

    def profile(frame, event, _arg):
        if event == "call" and f"{os.sep}bnviz{os.sep}" in frame.f_code.co_filename:
            ran.add(frame.f_code)

    sys.setprofile(profile)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return ran


def lane_of(norm=None):
    """A lane as the engine trains it (the default BN lane when ``norm`` is None), small random data, the CPU."""
    from bnviz.live.engine import ExperimentData, Lane
    from bnviz.live.snapshot import DEFAULT_LANES, LaneSpec, Settings

    spec = next(s for s in DEFAULT_LANES if s.norm != "none") if norm is None else LaneSpec(norm)
    settings = Settings(batch_size=16, train_size=64, val_size=32, probe_every=10**6, val_every=10**6)
    data = ExperimentData.from_dataset(tiny_dataset(64, 32), settings, torch.device("cpu"))
    return Lane(1, spec, settings, data, torch.device("cpu"))


class Clock:
    """A clock the test moves by hand (``clock.now += 2``), for code that takes ``clock=time.monotonic``."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now
