"""Finding, unpacking, checking and batching Fashion-MNIST, on IDX files written here (and the real ones)."""

import gzip
import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REAL_DEBIAN_DIR, idx_bytes
from hypothesis import given, settings
from hypothesis import strategies as st

import bnviz.data.fashion_mnist
from bnviz.data.fashion_mnist import (
    CLASS_NAMES,
    FILES,
    SHA256,
    DataError,
    batches,
    check_content,
    endless_batches,
    find,
    load_fashion_mnist,
    locate,
    num_batches,
    search_dirs,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def raw_dir(root):
    return Path(root) / "FashionMNIST" / "raw"


def raw_contents(root):
    return {name: (raw_dir(root) / name).read_bytes() for name in FILES}


def expected_contents(idx, arrays):
    return {name: idx.bytes(a) for name, a in zip(FILES, arrays)}


# --- where we look --------------------------------------------------------------------------------------


def test_search_dirs_order(places, monkeypatch):
    assert search_dirs() == [Path("data"), places.debian]
    monkeypatch.setenv("BNVIZ_DATA", "")  # empty means unset
    assert search_dirs() == [Path("data"), places.debian]
    monkeypatch.setenv("BNVIZ_DATA", str(places.env))
    assert search_dirs() == [places.env, Path("data"), places.debian]


def test_locate_search_order(places, idx, monkeypatch):
    sets = {}
    for i, folder in enumerate((places.env, places.cwd / "data", places.debian)):
        sets[folder] = idx.make_arrays(20, 10, seed=i)
        idx.write_dataset(folder, sets[folder], gz=True)
    monkeypatch.setenv("BNVIZ_DATA", str(places.env))

    root = locate(download=False)  # 1. $BNVIZ_DATA
    assert Path(root).resolve() == places.env.resolve()
    assert raw_contents(root) == expected_contents(idx, sets[places.env])

    monkeypatch.delenv("BNVIZ_DATA")  # 2. ./data
    root = locate(download=False)
    assert Path(root).resolve() == (places.cwd / "data").resolve()
    assert raw_contents(root) == expected_contents(idx, sets[places.cwd / "data"])

    shutil.rmtree(places.cwd / "data")  # 3. the Debian dir, unpacked into ./data
    root = locate(download=False)
    assert Path(root).resolve() == (places.cwd / "data").resolve()
    assert raw_contents(root) == expected_contents(idx, sets[places.debian])
    assert sorted(p.name for p in places.debian.iterdir()) == sorted(f"{n}.gz" for n in FILES)  # untouched


def test_incomplete_folder_is_passed_over(places, idx, monkeypatch):
    monkeypatch.setenv("BNVIZ_DATA", str(places.env))
    written = idx.write_dataset(places.env, idx.make_arrays(20, 10, seed=0), gz=True)
    written[FILES[3]].unlink()
    arrays = idx.make_arrays(20, 10, seed=1)
    idx.write_dataset(places.debian, arrays)
    found = find(download=False)
    assert found.root.resolve() == (places.cwd / "data").resolve()
    assert raw_contents(found.root) == expected_contents(idx, arrays)
    assert not raw_dir(places.env).exists()
    assert found.note == (
        f"$BNVIZ_DATA={places.env} has no {FILES[3]}.gz (3 of the 4 files); ./data does not exist; "
        f"used {places.debian} (unpacked into ./data)"
    )
    assert found.notice == found.note


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "plain"])
def test_flat_files_land_in_torchvision_layout(places, idx, monkeypatch, gz):
    monkeypatch.setenv("BNVIZ_DATA", str(places.env))
    arrays = idx.make_arrays(30, 20)
    idx.write_dataset(places.env, arrays, gz=gz)
    root = locate(download=False)
    assert Path(root) == places.env
    assert raw_contents(root) == expected_contents(idx, arrays)
    assert sorted(p.name for p in raw_dir(root).iterdir()) == sorted(FILES)  # no temporary files left
    assert all((raw_dir(root) / n).stat().st_mode & 0o777 == 0o644 for n in FILES)


def test_torchvision_layout_is_used_in_place(places, idx, monkeypatch):
    monkeypatch.setenv("BNVIZ_DATA", str(places.env))
    arrays = idx.make_arrays(20, 10)
    idx.write_dataset(places.env, arrays, layout="torchvision")
    before = {n: (raw_dir(places.env) / n).stat().st_mtime_ns for n in FILES}
    assert Path(locate(download=False)) == places.env
    assert {n: (raw_dir(places.env) / n).stat().st_mtime_ns for n in FILES} == before
    assert raw_contents(places.env) == expected_contents(idx, arrays)


def test_gz_in_torchvision_layout_is_unpacked_beside_it(places, idx, monkeypatch):
    monkeypatch.setenv("BNVIZ_DATA", str(places.env))
    arrays = idx.make_arrays(20, 10)
    idx.write_dataset(places.env, arrays, gz=True, layout="torchvision")
    assert Path(locate(download=False)) == places.env
    assert raw_contents(places.env) == expected_contents(idx, arrays)


def test_unpacks_once_and_again_when_the_source_is_newer(places, idx, monkeypatch):
    monkeypatch.setenv("BNVIZ_DATA", str(places.env))
    arrays = idx.make_arrays(20, 10)
    written = idx.write_dataset(places.env, arrays, gz=True)
    locate(download=False)
    name, src = FILES[0], written[FILES[0]]
    dst = raw_dir(places.env) / name
    dst.write_bytes(b"marker")
    os.utime(src, (1_000_000, 1_000_000))
    os.utime(dst, (2_000_000, 2_000_000))
    locate(download=False)
    assert dst.read_bytes() == b"marker"  # up to date: not unpacked again
    os.utime(src, (3_000_000, 3_000_000))
    locate(download=False)
    assert dst.read_bytes() == idx.bytes(arrays[0])  # the source is newer: unpacked again


def test_nothing_found_without_download(places, monkeypatch):
    monkeypatch.setenv("BNVIZ_DATA", str(places.env))
    with pytest.raises(DataError) as e:
        locate(download=False)
    msg = str(e.value)
    assert f"$BNVIZ_DATA={places.env} does not exist; ./data does not exist; {places.debian} does not exist" in msg
    assert "download not allowed" in msg
    assert "apt-get install dataset-fashion-mnist" in msg
    assert "$BNVIZ_DATA" in msg and "./data" in msg and "train-images-idx3-ubyte.gz" in msg
    assert not (places.cwd / "data").exists() or not any((places.cwd / "data").iterdir())
    with pytest.raises(DataError, match="not found"):
        load_fashion_mnist(download=False)


# --- which place was used, and why the ones before it were not ---------------------------------------


def fill_env(places, idx, how):
    """$BNVIZ_DATA as a folder that is missing, empty, incomplete (3 of 4 files) or holds something else."""
    if how == "empty":
        places.env.mkdir()
    elif how == "incomplete":
        written = idx.write_dataset(places.env, idx.make_arrays(20, 10), gz=True)
        written[FILES[0]].unlink()
    elif how == "other files":
        idx.write_file(places.env / "notes.txt", b"not the data")
    elif how == "a file":
        idx.write_file(places.env, b"not a folder")
    return {
        "missing": "does not exist",
        "empty": "is empty",
        "incomplete": f"has no {FILES[0]}.gz (3 of the 4 files)",
        "other files": "holds none of the four files (train-images-idx3-ubyte.gz ...)",
        "a file": "is not a folder",
    }[how]


@pytest.mark.parametrize("how", ["missing", "empty", "incomplete", "other files", "a file"])
def test_a_named_folder_passed_over_says_why(places, idx, monkeypatch, how):
    monkeypatch.setenv("BNVIZ_DATA", str(places.env))
    why = fill_env(places, idx, how)
    idx.write_dataset(places.cwd / "data", idx.make_arrays(20, 10), gz=True)
    found = find(download=False)
    assert found.root == Path("data")
    assert found.note == f"$BNVIZ_DATA={places.env} {why}; used ./data"
    assert found.notice == found.note  # the folder asked for was not used: worth showing


def test_usual_places_passed_over_are_noted_but_not_shown(places, idx):
    idx.write_dataset(places.debian, idx.make_arrays(20, 10), gz=True)
    found = find(download=False)
    assert found.note == f"./data does not exist; used {places.debian} (unpacked into ./data)"
    assert found.notice == ""  # no $BNVIZ_DATA and an absent ./data: nothing unusual
    found = find(download=False)  # ./data now holds the unpacked files
    assert found.note == "used ./data" and found.notice == ""


def test_a_partly_filled_data_folder_is_shown(places, idx):
    written = idx.write_dataset(places.cwd / "data", idx.make_arrays(20, 10), gz=True)
    written[FILES[1]].unlink()
    arrays = idx.make_arrays(20, 10, seed=1)
    idx.write_dataset(places.debian, arrays, gz=True)
    found = find(download=False)
    debian = f"{places.debian} (unpacked into ./data)"
    assert found.notice == f"./data has no {FILES[1]}.gz (3 of the 4 files); used {debian}"
    assert raw_contents(found.root) == expected_contents(idx, arrays)  # Debian's set, not ./data's three files


def test_loaded_data_says_where_it_came_from(places, full_synthetic, synthetic_is_original, monkeypatch):
    """The note travels with the data, and is the one of this call, not of the cached load before it."""
    monkeypatch.setattr(bnviz.data.fashion_mnist, "DEBIAN_DIR", full_synthetic.folder)
    monkeypatch.setenv("BNVIZ_DATA", str(places.env))
    places.env.mkdir()
    d = load_fashion_mnist(download=False)
    debian = f"{full_synthetic.folder} (unpacked into ./data)"
    assert d.note == f"$BNVIZ_DATA={places.env} is empty; ./data does not exist; used {debian}"
    assert d.notice == d.note
    monkeypatch.delenv("BNVIZ_DATA")
    again = load_fashion_mnist(download=False)
    assert again.note == "used ./data" and again.notice == ""
    assert again.train_images is d.train_images  # the same tensors, loaded and checked once
    assert d.to("cpu").note == d.note


def noise_folder(folder, compresslevel=0):
    """Random images with exactly 6,000 + 1,000 labels per class, gzipped: the right shapes and counts."""
    rng = np.random.default_rng(7)
    for name, n in zip(FILES, (60_000, 60_000, 10_000, 10_000)):
        a = (
            rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
            if "images" in name
            else rng.permutation(np.arange(n) % 10)
        )
        write_file(folder / name, idx_bytes(a), compresslevel)
    return folder


def write_file(path, data, compresslevel):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_name(path.name + ".gz").write_bytes(gzip.compress(data, compresslevel=compresslevel))


def test_noise_with_the_right_counts_is_refused(places, full_synthetic, synthetic_is_original, monkeypatch):
    """Noise shaped like Fashion-MNIST in $BNVIZ_DATA is refused (not passed over for the next place)."""
    monkeypatch.setenv("BNVIZ_DATA", str(noise_folder(places.env)))
    monkeypatch.setattr(
        bnviz.data.fashion_mnist, "DEBIAN_DIR", full_synthetic.folder
    )  # a good set lies in the next place
    with pytest.raises(DataError) as e:
        load_fashion_mnist(download=False)
    msg = str(e.value)
    assert msg.startswith(f"The files in {raw_dir(places.env)} (from $BNVIZ_DATA={places.env}) are not the original")
    assert ", ".join(FILES) in msg and "though shapes and class counts are right" in msg
    assert "Delete them, or point $BNVIZ_DATA at a folder holding the original files (or unset it)" in msg
    monkeypatch.delenv("BNVIZ_DATA")  # refused, not cached: pointed elsewhere, the good set loads
    assert load_fashion_mnist(download=False).train_labels.shape == (60_000,)


def test_noise_in_data_is_refused_with_what_to_do(places, tmp_path, monkeypatch):
    noise_folder(places.cwd / "data")
    with pytest.raises(DataError) as e:
        load_fashion_mnist(download=False)
    msg = str(e.value)
    assert f"The files in {raw_dir('data')} (from ./data) are not the original Fashion-MNIST" in msg
    assert "Delete them (bnviz then looks in the next place, or downloads the originals)" in msg


def test_unchecked_accepts_other_data_and_says_so(places, full_synthetic, monkeypatch):
    """$BNVIZ_DATA_UNCHECKED=1 (the browser tests' synthetic server): loaded, and the note says unchecked."""
    places.env.mkdir()
    for p in full_synthetic.folder.glob("*.gz"):
        (places.env / p.name).symlink_to(p)
    monkeypatch.setenv("BNVIZ_DATA", str(places.env))
    with pytest.raises(DataError, match="not the original Fashion-MNIST"):
        load_fashion_mnist(download=False)
    monkeypatch.setenv("BNVIZ_DATA_UNCHECKED", "1")
    d = load_fashion_mnist(download=False)
    unchecked = "the SHA-256 digests were not checked ($BNVIZ_DATA_UNCHECKED=1)"
    assert d.note == d.notice == f"used $BNVIZ_DATA={places.env}; {unchecked}"
    assert load_fashion_mnist(places.env, download=False).notice == unchecked
    monkeypatch.delenv("BNVIZ_DATA_UNCHECKED")  # unchecked data is never handed to a checked load
    with pytest.raises(DataError, match="not the original Fashion-MNIST"):
        load_fashion_mnist(download=False)


# --- broken files ---------------------------------------------------------------------------------------


def gz_damaged(idx, arrays, how):
    data = gzip.compress(idx.bytes(arrays), compresslevel=1)
    if how == "truncated":
        return data[: len(data) // 2]
    garbled = bytearray(data)
    for i in range(20, len(data) - 20):  # leave the header, ruin the deflate stream
        garbled[i] ^= 0x5A
    return bytes(garbled)


@pytest.mark.parametrize("how", ["truncated", "garbled"])
def test_damaged_gz_gives_data_error_naming_the_file(places, idx, monkeypatch, how):
    monkeypatch.setenv("BNVIZ_DATA", str(places.env))
    arrays = idx.make_arrays(200, 100)
    written = idx.write_dataset(places.env, arrays, gz=True)
    bad = written[FILES[2]]
    bad.write_bytes(gz_damaged(idx, arrays[2], how))
    with pytest.raises(DataError) as e:
        locate(download=False)
    assert str(bad) in str(e.value)
    assert "truncated or corrupt" in str(e.value)
    leftovers = sorted(p.name for p in raw_dir(places.env).iterdir())
    assert FILES[2] not in leftovers
    assert not [n for n in leftovers if n.startswith(".")], leftovers  # no half-written temporary file


@pytest.fixture(scope="session")
def full_root(full_synthetic):
    """full_synthetic unpacked in torchvision's layout (locate does that, into the folder itself)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BNVIZ_DATA", str(full_synthetic.folder))
        root = locate(download=False)
    assert Path(root) == full_synthetic.folder
    return Path(root)


def test_full_size_synthetic_loads(full_root, full_synthetic, synthetic_is_original):
    d = load_fashion_mnist(full_root, download=False)
    assert d.source == str(full_root)
    assert d.train_images.dtype == torch.uint8 and d.train_images.shape == (60_000, 28, 28)
    assert d.test_images.dtype == torch.uint8 and d.test_images.shape == (10_000, 28, 28)
    assert d.train_labels.dtype == torch.int64 and d.test_labels.dtype == torch.int64
    tri, trl, tei, tel = (torch.from_numpy(a) for a in full_synthetic.arrays)
    assert torch.equal(d.train_images, tri) and torch.equal(d.test_images, tei)
    assert torch.equal(d.train_labels, trl.long()) and torch.equal(d.test_labels, tel.long())
    assert load_fashion_mnist(full_root, download=False) is d  # cached in the process
    assert d.note == "" and d.notice == ""  # a root given: nothing was searched


def test_full_size_synthetic_through_locate(places, full_synthetic, synthetic_is_original, monkeypatch):
    """The Debian case end to end: gz files in a folder we must not write, unpacked into ./data, loaded."""
    monkeypatch.setattr(bnviz.data.fashion_mnist, "DEBIAN_DIR", full_synthetic.folder)
    d = load_fashion_mnist(download=False)
    assert Path(d.source).resolve() == (places.cwd / "data").resolve()
    assert torch.equal(d.train_labels, torch.from_numpy(full_synthetic.arrays[1]).long())


def root_with(tmp_path, full_root, name, data):
    """A new root: the good full-size files (linked), except `name`, which holds `data`."""
    raw = raw_dir(tmp_path / "root")
    raw.mkdir(parents=True)
    for n in FILES:
        if n == name:
            (raw / n).write_bytes(data)
        else:
            (raw / n).symlink_to(raw_dir(full_root) / n)
    return tmp_path / "root"


def damage(data, how):
    if how == "truncated":
        return data[: len(data) - 1000 - len(data) // 3]
    if how == "bad magic":
        return b"\x00\x00\x99\x99" + data[4:]
    if how == "wrong rank":  # an image file labelled as labels or vice versa
        return b"\x00\x00\x08\x02" + data[4:8] + b"\x00\x00\x00\x01" + data[8:]
    raise ValueError(how)


@pytest.mark.parametrize("how", ["truncated", "bad magic", "wrong rank"])
@pytest.mark.parametrize("name", FILES)
def test_damaged_idx_gives_data_error(tmp_path, full_root, name, how):
    good = (raw_dir(full_root) / name).read_bytes()
    root = root_with(tmp_path, full_root, name, damage(good, how))
    with pytest.raises(DataError) as e:
        load_fashion_mnist(root, download=False)
    msg = str(e.value)
    what = "training" if name.startswith("train") else "test"
    assert f"the {what} files" in msg or f"The {what} set" in msg, msg
    assert "delete them" in msg


@pytest.mark.parametrize("name", [FILES[1], FILES[3]])
def test_wrong_class_counts_give_data_error(tmp_path, full_root, full_synthetic, idx, name):
    labels = full_synthetic.arrays[FILES.index(name)].copy()
    labels[(labels == 3).nonzero()[0][0]] = 4  # one image moved from class 3 to class 4
    root = root_with(tmp_path, full_root, name, idx.bytes(labels))
    with pytest.raises(DataError, match="labels per class") as e:
        load_fashion_mnist(root, download=False)
    assert "not Fashion-MNIST" in str(e.value)


def test_wrong_counts_give_data_error(places, idx, monkeypatch):
    """A complete, readable, but small set: found, unpacked, then rejected by its content."""
    monkeypatch.setenv("BNVIZ_DATA", str(places.env))
    idx.write_dataset(places.env, idx.make_arrays(600, 100), gz=True)
    with pytest.raises(DataError, match=r"The training set is not Fashion-MNIST.*\(600, 28, 28\)"):
        load_fashion_mnist(download=False)


def balanced(n):
    return torch.arange(n) % 10


def test_check_content_accepts_fashion_mnist_shapes():
    check_content(torch.zeros(100, 28, 28, dtype=torch.uint8), balanced(100), 100, "test")
    check_content(torch.zeros(100, 28, 28, dtype=torch.uint8), balanced(100).to(torch.uint8), 100, "test")


@pytest.mark.parametrize(
    "images, labels, pattern",
    [
        (torch.zeros(90, 28, 28, dtype=torch.uint8), balanced(90), r"images are \(90, 28, 28\)"),
        (torch.zeros(100, 28, 27, dtype=torch.uint8), balanced(100), r"images are \(100, 28, 27\)"),
        (torch.zeros(100, 28, 28), balanced(100), "torch.float32"),
        (torch.zeros(100, 28, 28, dtype=torch.uint8), balanced(90), r"labels are \(90,\)"),
        (torch.zeros(100, 28, 28, dtype=torch.uint8), torch.zeros(100, dtype=torch.long), "labels per class"),
        (torch.zeros(100, 28, 28, dtype=torch.uint8), balanced(100) + 1, "labels per class"),  # 1..10
    ],
)
def test_check_content_rejects(images, labels, pattern):
    with pytest.raises(DataError, match=pattern) as e:
        check_content(images, labels, 100, "test")
    assert str(e.value).startswith("The test set is not Fashion-MNIST")


# --- batches --------------------------------------------------------------------------------------------


def toy(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 28, 28), generator=g, dtype=torch.uint8)
    images[0] = 255
    images[-1] = 0
    return images, torch.arange(n)  # the label of an image is its index


def test_batches_values_and_shapes():
    images, labels = toy(50)
    for shuffle in (False, True):
        seen = list(batches(images, labels, 16, shuffle=shuffle))
        assert [X.shape for X, _ in seen] == [(16, 1, 28, 28)] * 3 + [(2, 1, 28, 28)]
        for X, y in seen:
            assert X.dtype == torch.float32 and y.dtype == torch.int64
            assert X.min() >= 0 and X.max() <= 1
            torch.testing.assert_close(X, images[y].unsqueeze(1).float() / 255, rtol=0, atol=0)
        allX = torch.cat([X for X, _ in seen])
        assert allX.max() == 1 and allX.min() == 0
    assert images.dtype == torch.uint8 and images[0].min() == 255  # the input is left as it was


def order(n, batch_size, **kw):
    return torch.cat([y for _, y in batches(*toy(n), batch_size, **kw)] + [torch.zeros(0, dtype=torch.long)])


def test_batches_unshuffled_in_order():
    assert torch.equal(order(50, 16), torch.arange(50))
    assert torch.equal(order(49, 16), torch.arange(49))  # a last single image is kept for evaluation


def test_shuffle_order_depends_on_seed_and_epoch():
    a = order(200, 32, shuffle=True, seed=3, epoch=1)
    assert torch.equal(a, order(200, 32, shuffle=True, seed=3, epoch=1))
    assert not torch.equal(a, order(200, 32, shuffle=True, seed=3, epoch=2))
    assert not torch.equal(a, order(200, 32, shuffle=True, seed=4, epoch=1))
    assert not torch.equal(a, torch.arange(200))
    assert torch.equal(a.sort().values, torch.arange(200))  # every index exactly once


def test_shuffle_drops_only_a_final_single_image():
    for n in (65, 33):  # 64 + 1, 32 + 1
        a = order(n, 32, shuffle=True, epoch=1)
        assert a.numel() == n - 1 and a.unique().numel() == n - 1
        assert torch.equal(order(n, 32, shuffle=False), torch.arange(n))
    assert order(66, 32, shuffle=True).numel() == 66  # a final pair is kept
    assert order(1, 32, shuffle=True).numel() == 0
    assert order(1, 32, shuffle=False).numel() == 1


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 130), batch_size=st.integers(1, 40), shuffle=st.booleans(), epoch=st.integers(0, 5))
def test_num_batches_agrees_with_batches(n, batch_size, shuffle, epoch):
    images, labels = torch.zeros(n, 28, 28, dtype=torch.uint8), torch.arange(n)
    got = list(batches(images, labels, batch_size, shuffle=shuffle, epoch=epoch))
    assert len(got) == num_batches(n, batch_size, shuffle=shuffle)
    ys = torch.cat([y for _, y in got] + [torch.zeros(0, dtype=torch.long)])
    assert ys.unique().numel() == ys.numel()  # no image twice
    last_is_single = n >= 1 and (n - 1) % batch_size == 0
    assert ys.numel() == (n - 1 if shuffle and last_is_single else n)  # only a last single image is dropped
    assert all(y.numel() == batch_size for _, y in got[:-1])


@pytest.mark.parametrize("classes_per_batch", [10, 2])
def test_endless_batches_go_on_epoch_after_epoch_as_batches_draws_them(classes_per_batch):
    g = torch.Generator().manual_seed(0)
    images, labels = torch.randint(0, 256, (40, 28, 28), dtype=torch.uint8, generator=g), torch.arange(40) % 10
    per_epoch = num_batches(40, 16)
    stream = endless_batches(images, labels, 16, seed=3, epoch=2, classes_per_batch=classes_per_batch)
    got = [next(stream) for _ in range(3 * per_epoch + 1)]  # three whole epochs and the first batch of a fourth
    for k, epoch in enumerate((2, 3, 4)):
        want = batches(images, labels, 16, shuffle=True, seed=3, epoch=epoch, classes_per_batch=classes_per_batch)
        for (X, y), (wX, wy) in zip(got[k * per_epoch : (k + 1) * per_epoch], want, strict=True):
            assert torch.equal(X, wX) and torch.equal(y, wy)
    first_of_5 = next(batches(images, labels, 16, shuffle=True, seed=3, epoch=5, classes_per_batch=classes_per_batch))
    assert torch.equal(got[-1][1], first_of_5[1])


def test_endless_batches_of_too_few_images_say_so_instead_of_spinning():
    with pytest.raises(ValueError, match="at least 2 images, got 1: use a larger train_size"):
        next(endless_batches(torch.zeros(1, 28, 28, dtype=torch.uint8), torch.zeros(1, dtype=torch.long), 8))


# --- the real files -------------------------------------------------------------------------------------


def test_real_fashion_mnist(real_data):
    d = real_data
    assert d.train_images.shape == (60_000, 28, 28) and d.test_images.shape == (10_000, 28, 28)
    assert d.train_images.dtype == torch.uint8
    assert torch.bincount(d.train_labels, minlength=10).tolist() == [6_000] * 10
    assert torch.bincount(d.test_labels, minlength=10).tolist() == [1_000] * 10
    assert d.train_images.max() == 255 and d.train_images.min() == 0
    from torchvision.datasets import FashionMNIST  # a dependency, and a source of Zalando's label order apart from ours

    assert list(CLASS_NAMES) == FashionMNIST.classes
    X, y = next(batches(d.train_images, d.train_labels, 128, shuffle=True, seed=0, epoch=1))
    assert X.shape == (128, 1, 28, 28) and y.shape == (128,)
    assert num_batches(60_000, 128) == 469 and num_batches(10_000, 1024, shuffle=False) == 10


def test_real_files_regzipped_still_pass(real_data_root, places, monkeypatch):
    """Another gzip (level 1, not Debian's nor Zalando's) of the same bytes: the same decompressed digests."""
    for name in FILES:
        data = (raw_dir(real_data_root) / name).read_bytes()
        write_file(places.env / name, data, compresslevel=1)
        debian = REAL_DEBIAN_DIR / f"{name}.gz"
        if debian.is_file():
            assert (places.env / f"{name}.gz").read_bytes() != debian.read_bytes()
    monkeypatch.setenv("BNVIZ_DATA", str(places.env))
    d = load_fashion_mnist(download=False)
    assert d.note == f"used $BNVIZ_DATA={places.env}" and d.notice == ""
    assert torch.bincount(d.test_labels, minlength=10).tolist() == [1_000] * 10


def test_real_files_with_one_pixel_changed_are_refused(real_data_root, tmp_path):
    raw = raw_dir(tmp_path / "root")
    raw.mkdir(parents=True)
    for name in FILES:
        (raw / name).symlink_to(raw_dir(real_data_root) / name)
    data = bytearray((raw_dir(real_data_root) / FILES[2]).read_bytes())
    data[16 + 400] ^= 1  # one pixel of the first test image, one bit
    (raw / FILES[2]).unlink()
    (raw / FILES[2]).write_bytes(bytes(data))
    assert hashlib.sha256(bytes(data)).hexdigest() != SHA256[FILES[2]]
    with pytest.raises(DataError, match=f"the SHA-256 of {FILES[2]} \\(decompressed\\) differs"):
        load_fashion_mnist(tmp_path / "root", download=False)
