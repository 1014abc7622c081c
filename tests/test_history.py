"""History: growing tables, the bounded distribution store, the experiment file and the CSV export."""

import csv
import io
import os
import pickle
import uuid
import zipfile

import numpy as np
import pytest
from conftest import tiny_dataset

import bnviz.live.experiment_file as experiment_file
from bnviz.live.engine import Experiment
from bnviz.live.experiment_file import RecordingError, load_experiment, metrics_csv, save_experiment
from bnviz.live.history import TABLES, LaneHistory, Table, ThinnedTable
from bnviz.live.snapshot import LaneSpec, Settings
from bnviz.step.probes import HIST_BINS

# --------------------------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def finished_run():
    """(header, lane views, settings) of a short finished run with probes, distributions and val rows."""
    settings = Settings(
        lr=0.1, batch_size=32, epochs=1, probe_every=2, val_every=3, val_size=50, dist_capacity=4, device="cpu"
    )
    lanes = (LaneSpec("none"), LaneSpec("scratch", "relu"))
    with Experiment(tiny_dataset(), settings, lanes, name=f"test-history-{uuid.uuid4().hex[:8]}") as e:
        e.start()
        assert e.wait(timeout=60)
        snap = e.snapshot()
        assert snap.status == "finished"
        return e.header(), [lane.tables for lane in snap.lanes], settings, [lane.label for lane in snap.lanes]


def dist_row(step, rng_vectors):
    """A distribution row of realistic size: 12 histograms of 60 bins and 6 per-channel vectors of 120."""
    return dict(step=step, **rng_vectors)


@pytest.fixture(scope="module")
def realistic_vectors():
    rng = np.random.default_rng(0)
    v = {f"bn{i}.{k}.hist": rng.random(60).astype(np.float32) for i in range(1, 5) for k in ("in", "out", "act")}
    v.update(
        {
            f"bn{i}.{k}": rng.random(120).astype(np.float32)
            for i in (3,)
            for k in ("batch_mean", "batch_var", "running_mean", "running_var", "gamma", "beta")
        }
    )
    assert len(v) == 18
    return v


# --------------------------------------------------------------------------------------------- Table


def test_table_append_and_view_columns():
    t = Table()
    t.append(dict(step=1, loss=0.5, hist=np.arange(3)))
    t.append(dict(step=2, loss=0.25, hist=np.arange(3) + 1))
    assert len(t) == 2
    v = t.view()
    assert set(v) == {"step", "loss", "hist"}
    np.testing.assert_array_equal(v["step"], [1, 2])
    np.testing.assert_array_equal(v["loss"], [0.5, 0.25])
    assert v["hist"].shape == (2, 3)
    np.testing.assert_array_equal(v["hist"], [[0, 1, 2], [1, 2, 3]])
    assert v["step"].dtype == np.float64 and v["hist"].dtype == np.float32


def test_table_missing_keys_read_nan_both_ways():
    t = Table()
    t.append(dict(step=1, a=1.0))
    t.append(dict(step=2, b=2.0))  # a new column: row 0 reads NaN; 'a' missing here: NaN
    t.append(dict(step=3, a=3.0, b=3.0))
    v = t.view()
    np.testing.assert_array_equal(v["a"], [1.0, np.nan, 3.0])
    np.testing.assert_array_equal(v["b"], [np.nan, 2.0, 3.0])
    np.testing.assert_array_equal(v["step"], [1, 2, 3])


def test_table_view_is_read_only_copy():
    t = Table()
    t.append(dict(step=1, x=1.0))
    v = t.view()
    with pytest.raises(ValueError):
        v["x"][0] = 5.0
    t.append(dict(step=2, x=2.0))
    assert len(v["x"]) == 1  # the earlier view does not grow...
    assert t.view()["x"][0] == 1.0  # ...and writing through it never touched the table


def test_table_grows_beyond_64_rows_keeping_every_row():
    t = Table()
    for i in range(1000):
        t.append(dict(step=i, sq=float(i * i), vec=np.full(2, i)))
    v = t.view()
    assert len(t) == 1000
    np.testing.assert_array_equal(v["step"], np.arange(1000))
    np.testing.assert_array_equal(v["sq"], np.arange(1000.0) ** 2)
    np.testing.assert_array_equal(v["vec"][:, 1], np.arange(1000))


def test_empty_table_view():
    assert Table().view() == {}
    assert len(Table()) == 0


# --------------------------------------------------------------------------------------------- ThinnedTable


@pytest.mark.parametrize("capacity", [2, 7, 64, 200])
def test_thinned_table_bounded_even_and_keeps_first(capacity):
    t = ThinnedTable(capacity)
    max_len = 0
    for i in range(20_000):
        t.offer(dict(step=1 + 5 * i))  # probe steps: 1, 6, 11, ... (probe_every=5)
        max_len = max(max_len, len(t))
    assert max_len <= capacity
    steps = t.view()["step"]
    assert len(steps) >= capacity // 2  # it thins, it does not empty
    assert steps[0] == 1  # the first row survives every thinning
    gaps = np.diff(steps)
    assert len(set(gaps.tolist())) == 1  # evenly spaced
    assert (1 + 5 * (20_000 - 1)) - steps[-1] < gaps[0]  # spread over the whole run, up to the last stride


def test_thinned_table_rejects_tiny_capacity():
    with pytest.raises(ValueError, match="capacity"):
        ThinnedTable(1)


def test_thinned_table_keeps_everything_until_full():
    t = ThinnedTable(10)
    for i in range(9):
        t.offer(dict(step=i))
    np.testing.assert_array_equal(t.view()["step"], np.arange(9))


def test_dists_memory_stops_growing(realistic_vectors):
    h = LaneHistory(dist_capacity=200)
    sizes = {}
    for i in range(20_000):
        h.dists.offer(dist_row(i + 1, realistic_vectors))
        if i + 1 in (10_000, 20_000):
            sizes[i + 1] = h.dists.nbytes()
    assert sizes[10_000] == sizes[20_000]
    # 200 rows of 12 x 60 + 6 x 120 float32 and a float64 step: a few hundred kB, not 20,000 rows' worth
    row_bytes = 12 * 60 * 4 + 6 * 120 * 4 + 8
    assert sizes[20_000] <= 256 * row_bytes
    assert len(h.dists) <= 200
    view = h.view()["dists"]
    assert view["bn1.in.hist"].shape[1:] == (60,) and view["bn3.gamma"].shape[1:] == (120,)
    np.testing.assert_array_equal(view["bn1.in.hist"][-1], realistic_vectors["bn1.in.hist"])


def test_experiment_dists_bounded_with_probe_every_step(make_experiment):
    # 96 images, batch 16: 6 steps an epoch, 5 epochs = 30 probes into a store of 4
    e = make_experiment(
        Settings(
            lr=0.05, batch_size=16, epochs=5, probe_every=1, val_every=1000, val_size=20, dist_capacity=4, device="cpu"
        ),
        data=tiny_dataset(96, 20),
    )
    e.step(15)
    assert e.wait(timeout=60)
    half = [lane.history.dists.nbytes() for lane in e.lanes]
    e.start()
    assert e.wait(timeout=60)
    assert [lane.history.dists.nbytes() for lane in e.lanes] == half  # 15 more probes, not a byte more
    snap = e.snapshot()
    assert snap.status == "finished"
    for lane in snap.lanes:
        assert lane.step == 30
        probes, dists = lane.tables["probes"], lane.tables["dists"]
        np.testing.assert_array_equal(probes["step"], np.arange(1, 31))  # every step probed, kept whole
        steps = dists["step"]
        assert 2 <= len(steps) <= 4
        assert steps[0] == 1
        assert len(set(np.diff(steps).tolist())) == 1
        assert 30 - steps[-1] < steps[1] - steps[0]  # the spread reaches the end of the run
        assert set(steps.tolist()) <= set(probes["step"].tolist())
        assert dists["bn1.in.hist"].shape == (len(steps), HIST_BINS)


def test_lane_history_view_has_every_table():
    h = LaneHistory(4)
    h.steps.append(dict(step=1, train_loss=2.0))
    v = h.view()
    assert tuple(v) == TABLES
    assert v["val"] == {} and v["steps"]["train_loss"][0] == 2.0
    assert h.nbytes() > 0


# --------------------------------------------------------------------------------------------- mirrors
def assert_same_views(a, b):
    assert a.keys() == b.keys()
    for table in a:
        assert a[table].keys() == b[table].keys(), table
        for col in a[table]:
            x, y = a[table][col], b[table][col]
            assert x.shape == y.shape and x.dtype == y.dtype, (table, col)
            assert np.array_equal(x, y, equal_nan=True), (table, col)


def test_mirror_follows_a_history_through_growth_thinning_and_late_columns():
    """A mirror updated from rows_since/apply equals its source after every sync, while the
    ThinnedTable thins (its rows move) and a column first appears mid-run."""
    source, mirror, marks = LaneHistory(dist_capacity=4), LaneHistory(), {}
    rng = np.random.default_rng(0)
    for step in range(1, 60):
        row = dict(step=step, train_loss=rng.random())
        if step > 25:
            row["late"] = 1.0 * step  # earlier rows read NaN, in the source and in the mirror
        source.steps.append(row)
        source.dists.offer(dict(step=step, hist=rng.random(5).astype(np.float32)))
        if step % 7 == 0:
            source.events.append(dict(step=step, bn_on=0.0))
        if step % 3 == 0:
            changes, marks = source.rows_since(marks)
            mirror.apply(changes)
            assert_same_views(mirror.view(), source.view())
    assert source.dists.stride > 1  # it did thin while being mirrored


def test_rows_since_sends_only_new_rows_until_a_table_thins():
    h = LaneHistory(dist_capacity=4)
    for step in range(3):
        h.steps.append(dict(step=step))
        h.dists.offer(dict(step=step))
    changes, marks = h.rows_since({})
    assert changes["steps"][0] and len(changes["steps"][1]["step"]) == 3  # first sync: everything
    h.steps.append(dict(step=3))
    changes, marks = h.rows_since(marks)
    assert not changes["steps"][0] and changes["steps"][1]["step"].tolist() == [3.0]
    assert not changes["dists"][0] and len(changes["dists"][1]["step"]) == 0  # nothing new, nothing sent
    for step in range(3, 6):  # past capacity: the table thins, its rows move
        h.dists.offer(dict(step=step))
    changes, _ = h.rows_since(marks)
    replace, cols = changes["dists"]
    assert replace and cols["step"].tolist() == h.dists.view()["step"].tolist()


def test_table_extend_matches_append():
    a, b = Table(), Table()
    rows = [dict(step=i, loss=i / 2, vec=np.full(3, i, np.float32)) for i in range(100)]
    for r in rows:
        a.append(r)
    b.extend(a.rows(0))  # 100 rows at once, through one growth
    assert_same_views({"t": a.view()}, {"t": b.view()})
    b.extend({})
    b.extend(a.rows(100))  # no rows
    assert len(b) == 100
    b.extend(a.rows(98))
    assert b.view()["step"][-3:].tolist() == [99.0, 98.0, 99.0]


# --------------------------------------------------------------------------------------------- the file


def assert_same_lanes(a, b):
    assert len(a) == len(b)
    for la, lb in zip(a, b):
        assert set(la) == set(TABLES)
        for table in TABLES:
            assert set(la[table]) == set(lb[table]), table
            for col in la[table]:
                x, y = la[table][col], lb[table][col]
                assert x.shape == y.shape and x.dtype == y.dtype, (table, col)
                assert np.array_equal(x, y, equal_nan=True), (table, col)


def test_save_load_round_trip(tmp_path, finished_run):
    header, views, settings, _ = finished_run
    assert views[1]["dists"] and views[1]["probes"] and views[0]["val"]  # something of every kind to save
    path = save_experiment(tmp_path / "sub" / "run.npz", header, views)
    assert path.is_file()
    loaded_header, lanes = load_experiment(path)
    assert (
        loaded_header["format"] == experiment_file.FORMAT and loaded_header["version"] == experiment_file.FORMAT_VERSION
    )
    for k, v in header.items():
        assert loaded_header[k] == v, k
    assert loaded_header["settings"]["lr"] == settings.lr
    assert_same_lanes(views, lanes)
    with pytest.raises(ValueError):
        lanes[0]["steps"]["train_loss"][0] = 0.0  # loaded arrays are read-only too
    # and from bytes, as a browser upload would hand them over
    header2, lanes2 = load_experiment(path.read_bytes())
    assert header2 == loaded_header
    assert_same_lanes(views, lanes2)
    assert sorted(os.listdir(path.parent)) == ["run.npz"]


def test_experiment_bytes_round_trip(finished_run):
    header, views, _, _ = finished_run
    h, lanes = load_experiment(experiment_file.experiment_bytes(header, views))
    assert h["name"] == header["name"]
    assert_same_lanes(views, lanes)


def _failing_savez(f, **arrays):
    f.write(b"PK\x03\x04 half a zip file")  # something went out before the failure
    raise OSError("disk full (simulated)")


def test_save_is_atomic_when_writing_fails_new_file(tmp_path, finished_run, monkeypatch):
    header, views, _, _ = finished_run
    monkeypatch.setattr(np, "savez_compressed", _failing_savez)
    target = tmp_path / "run.npz"
    with pytest.raises(OSError, match="disk full"):
        save_experiment(target, header, views)
    assert not target.exists()
    assert os.listdir(tmp_path) == []  # no temporary file left behind


def test_save_is_atomic_when_writing_fails_old_file_kept(tmp_path, finished_run, monkeypatch):
    header, views, _, _ = finished_run
    target = save_experiment(tmp_path / "run.npz", header, views)
    before = target.read_bytes()
    monkeypatch.setattr(np, "savez_compressed", _failing_savez)
    with pytest.raises(OSError):
        save_experiment(target, {**header, "name": "second"}, views)
    assert target.read_bytes() == before
    assert os.listdir(tmp_path) == ["run.npz"]
    monkeypatch.undo()
    assert load_experiment(target)[0]["name"] == header["name"]


def _npz_bytes(**arrays):
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _npy_bytes(a):
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


@pytest.mark.parametrize(
    "kind",
    [
        "garbage",
        "empty",
        "npz_without_header",
        "npz_foreign_header",
        "npz_header_not_a_dict",
        "npy",
        "pickle",
        "truncated",
        "corrupted",
    ],
)
def test_load_rejects_what_is_not_ours(kind, tmp_path, finished_run):
    header, views, _, _ = finished_run
    good = experiment_file.experiment_bytes(header, views)
    rng = np.random.default_rng(1)
    content = {
        "garbage": lambda: rng.integers(0, 256, 5000, dtype=np.uint8).tobytes(),
        "empty": lambda: b"",
        "npz_without_header": lambda: _npz_bytes(a=np.arange(5), b=np.ones((2, 2))),
        "npz_foreign_header": lambda: _npz_bytes(header=np.array('{"format": "something-else"}')),
        "npz_header_not_a_dict": lambda: _npz_bytes(header=np.array("[1, 2, 3]")),
        "npy": lambda: _npy_bytes(np.arange(10)),
        "pickle": lambda: pickle.dumps({"header": "bnviz-experiment", "x": [1, 2]}),
        "truncated": lambda: good[: len(good) // 2],
        "corrupted": lambda: good[:100] + bytes(400) + good[500:],
    }[kind]()
    path = tmp_path / "bad.npz"
    path.write_bytes(content)
    for source in (path, content):
        with pytest.raises(RecordingError, match="not a bnviz experiment"):
            load_experiment(source)
    # RecordingError is a ValueError, so callers that only know ValueError still catch it
    assert issubclass(RecordingError, ValueError)


def test_load_names_the_file_and_what_to_do(tmp_path):
    path = tmp_path / "holiday.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0 not a zip")
    with pytest.raises(RecordingError) as info:
        load_experiment(path)
    assert "holiday.jpg" in str(info.value) and "bnviz" in str(info.value)
    with pytest.raises(RecordingError) as info:
        load_experiment(tmp_path / "missing.npz")
    assert "missing.npz" in str(info.value)


def test_load_refuses_newer_format(tmp_path, finished_run):
    header, views, _, _ = finished_run
    b = _npz_bytes(header=np.array('{"format": "bnviz-experiment", "version": 99, "lanes": []}'))
    with pytest.raises(RecordingError, match="newer"):
        load_experiment(b)


# --------------------------------------------------------------------------------------------- CSV


def test_metrics_csv_rows_and_val_columns(finished_run):
    _, views, settings, labels = finished_run
    text = metrics_csv(labels, views)
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == "lane step epoch lr train_loss train_acc val_loss val_acc test_loss test_acc event".split()
    body = rows[1:]
    n_steps = len(views[0]["steps"]["step"])
    assert n_steps == 8  # 256 images / 32, one epoch
    assert len(body) == len(labels) * n_steps
    for label, tables in zip(labels, views):
        mine = [r for r in body if r[0] == label]
        assert [int(r[1]) for r in mine] == list(range(1, n_steps + 1))
        val = dict(zip(tables["val"]["step"].astype(int).tolist(), tables["val"]["val_acc"].tolist()))
        assert sorted(val) == [3, 6]  # val_every=3
        for r in mine:
            step = int(r[1])
            assert float(r[3]) == settings.lr
            assert float(r[4]) == pytest.approx(tables["steps"]["train_loss"][step - 1], rel=1e-5)
            assert r[10] == ""  # nothing happened in this run
            if step in val:
                assert r[6] != "" and float(r[7]) == pytest.approx(val[step], rel=1e-5)
            else:
                assert r[6] == "" and r[7] == ""


def test_metrics_csv_of_an_empty_lane():
    assert metrics_csv(["a"], [{t: {} for t in TABLES}]).strip().splitlines() == [
        "lane,step,epoch,lr,train_loss,train_acc,val_loss,val_acc,test_loss,test_acc,event"
    ]


def test_to_jsonable_turns_nan_into_null():
    out = experiment_file.to_jsonable({"steps": {"x": np.array([1.0, np.nan])}})
    assert out == {"steps": {"x": [1.0, None]}}


# --------------------------------------------------------------------------------------------- hostile files
def test_every_column_is_checked_before_any_is_read(tmp_path, finished_run, monkeypatch):
    """A bad column at the end of the file is found from its .npy header: no column's data was read before."""
    header, views, _, _ = finished_run
    good = experiment_file.experiment_bytes(header, views)
    buf = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(good)) as src, zipfile.ZipFile(buf, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, src.read(info))
        bad = io.BytesIO()
        np.lib.format.write_array_header_1_0(bad, {"descr": "<f8", "fortran_order": False, "shape": (10**12,)})
        dst.writestr("lane1/probes/zz_last.npy", bad.getvalue())
    reads = []
    real = np.lib.format.read_array
    monkeypatch.setattr(np.lib.format, "read_array", lambda f, **kw: reads.append(f.name) or real(f, **kw))
    with pytest.raises(RecordingError, match="claims 1,000,000,000,000 rows"):
        load_experiment(buf.getvalue())
    assert reads == ["header.npy"]
    reads.clear()
    assert load_experiment(good)[0]["name"] == header["name"]
    assert len(reads) > 20  # the same reader does read a good file


def test_a_saved_run_passes_the_checks_for_files(finished_run):
    _, views, _, _ = finished_run
    experiment_file.check_tables(views, required=experiment_file.REQUIRED)
    for table, cols in experiment_file.REQUIRED.items():
        assert set(cols) <= set(views[1][table]) or not views[1][table], table


def test_the_size_a_file_takes_is_its_declared_size(finished_run, monkeypatch):
    """The cap is on the uncompressed sizes: a file that compresses well is not let through by its small size."""
    header, views, _, _ = finished_run
    raw = experiment_file.experiment_bytes(header, views)
    with zipfile.ZipFile(io.BytesIO(raw)) as z:
        total = sum(i.file_size for i in z.infolist())
    assert len(raw) < total
    monkeypatch.setattr(experiment_file, "MAX_TOTAL_BYTES", (len(raw) + total) // 2)
    with pytest.raises(RecordingError, match="too big to open"):
        load_experiment(raw)
