"""Recording: a saved experiment seen as snapshots, cut at any step (the shipped chapter run, and runs built
here by hand)."""

import math
from pathlib import Path

import numpy as np
import pytest

from bnviz.data.fashion_mnist import num_batches
from bnviz.live.experiment_file import RecordingError
from bnviz.live.history import TABLES
from bnviz.live.interface import ExperimentView
from bnviz.live.replay import Recording, first_divergence
from bnviz.live.snapshot import LaneStatus, Settings, Status

SHIPPED = Path(__file__).resolve().parents[1] / "assets" / "chapter-run" / "experiment.npz"
STEPS_PER_EPOCH = 469  # 60,000 images in batches of 128, the last one of 96


@pytest.fixture(scope="module")
def chapter():
    return Recording.load(SHIPPED, name="chapter")


def meta(lanes=({"norm": "none", "activation": "sigmoid"},), **settings):
    return {"name": "by hand", "device": "cpu", "settings": settings, "lanes": list(lanes)}


def lane_tables(losses, epoch_ends=()):
    """One lane's tables: a steps table with these losses (steps 1..n), epoch rows at ``epoch_ends``."""
    n = len(losses)
    tables = {name: {} for name in TABLES}
    tables["steps"] = {
        "step": np.arange(1, n + 1, dtype=float),
        "epoch": np.ones(n),
        "train_loss": np.asarray(losses, dtype=float),
        "train_acc": np.full(n, 0.1),
    }
    if epoch_ends:
        ends = np.asarray(epoch_ends, dtype=float)
        tables["epochs"] = {
            "epoch": np.arange(1, len(ends) + 1, dtype=float),
            "step": ends,
            "images_per_s": np.full(len(ends), 1000.0),
        }
    return tables


# ------------------------------------------------------------------------------------------- the shipped run
def test_the_shipped_run_loads_with_its_meta_and_header(chapter):
    assert chapter.name == "chapter"
    assert chapter.header() is chapter.meta and chapter.meta["name"] == "cli"
    assert chapter.settings == Settings(**chapter.meta["settings"])
    assert [s.norm for s in chapter.specs] == ["none", "scratch"]
    assert isinstance(chapter, ExperimentView)


def test_the_shipped_run_ends_after_ten_epochs(chapter):
    assert chapter.last_step == 10 * STEPS_PER_EPOCH
    snap = chapter.snapshot()
    assert snap.status is Status.FINISHED and snap.device == "replay of chapter"
    assert [(l.status, l.step, l.epoch, l.steps_per_epoch) for l in snap.lanes] == [
        (LaneStatus.FINISHED, 4690, 10, STEPS_PER_EPOCH)
    ] * 2
    assert [l.diverged_at for l in snap.lanes] == [None, None]
    assert [l.label for l in snap.lanes] == ["A · BN off", "B · BN scratch"]


@pytest.mark.parametrize("at", [0, 1, 100, 469, 470, 2000])
def test_a_snapshot_cuts_every_table_at_the_step(chapter, at):
    snap = chapter.snapshot(at)
    assert snap.status is Status.PAUSED
    for lane in snap.lanes:
        assert lane.step == at and lane.status is LaneStatus.TRAINING
        for name, cols in lane.tables.items():
            if "step" in cols and len(cols["step"]):
                assert cols["step"].max() <= at, name
        np.testing.assert_array_equal(lane.tables["steps"]["step"], np.arange(1, at + 1))
        assert len(lane.tables["epochs"].get("epoch", [])) == at // STEPS_PER_EPOCH
        assert lane.epoch == 1 + max(0, at - 1) // STEPS_PER_EPOCH  # the epoch the step at ``at`` belongs to
        assert lane.steps_per_epoch == STEPS_PER_EPOCH


def test_a_snapshot_beyond_either_end_is_clamped(chapter):
    assert [l.step for l in chapter.snapshot(-5).lanes] == [0, 0]
    assert [l.step for l in chapter.snapshot(10**9).lanes] == [4690, 4690]
    assert chapter.snapshot(10**9).status is Status.FINISHED


# ------------------------------------------------------------------------------------------- steps per epoch
@pytest.mark.parametrize("train_size, batch_size", [(None, 128), (1000, 128), (257, 32), (96, 16)])
def test_steps_per_epoch_before_the_first_epoch_ends_is_what_the_engine_counts(train_size, batch_size):
    """A run saved before its first epoch ended has no epoch row to read it from: then it is data.num_batches,
    as the engine counts (469 at 60,000 / 128, the last batch smaller, not 468)."""
    rec = Recording(meta(train_size=train_size, batch_size=batch_size), [lane_tables([2.3] * 5)])
    expected = num_batches(train_size or 60_000, batch_size)
    assert rec.snapshot().lanes[0].steps_per_epoch == expected
    if train_size is None:
        assert expected == STEPS_PER_EPOCH


def test_steps_per_epoch_comes_from_the_first_epoch_row_when_there_is_one():
    rec = Recording(meta(batch_size=128), [lane_tables([2.3] * 30, epoch_ends=(12, 24))])
    assert rec.snapshot(5).lanes[0].steps_per_epoch == 12  # from the whole run, even cut before it


# ------------------------------------------------------------------------------------------- divergence
def test_first_divergence_follows_the_engines_rule():
    s = Settings(diverge_loss=20.0, diverge_steps=3)
    steps = list(range(1, 11))
    assert first_divergence(steps, [2.0] * 10, s) is None
    assert first_divergence(steps, [2.0] * 4 + [math.nan] + [2.0] * 5, s) == 5  # NaN: at once
    assert first_divergence(steps, [2.0] * 2 + [math.inf] + [2.0] * 7, s) == 3
    assert first_divergence(steps, [2.0, 50.0, 2.0, 50.0, 50.0, 2.0] + [2.0] * 4, s) is None  # spikes recover
    assert first_divergence(steps, [2.0, 50.0, 2.0, 50.0, 50.0, 50.0] + [2.0] * 4, s) == 4  # from the first
    assert first_divergence(steps, [2.0] * 7 + [20.0] * 3, s) is None  # at the limit is not above it


def test_a_recording_shows_a_lane_diverged_only_from_where_it_did():
    losses = [2.3] * 6 + [50.0] * 5 + [math.nan]  # above the limit from step 7; NaN at 12
    rec = Recording(
        meta(
            ({"norm": "none", "activation": "relu"}, {"norm": "scratch", "activation": "relu"}),
            diverge_loss=20.0,
            diverge_steps=5,
        ),
        [lane_tables(losses), lane_tables([2.3] * 12)],
    )
    early = rec.snapshot(10)  # four steps above the limit: not yet
    assert (early.lanes[0].status, early.lanes[0].diverged_at) == (LaneStatus.TRAINING, None)
    at = rec.snapshot(11)  # the fifth: diverged, from step 7
    assert (at.lanes[0].status, at.lanes[0].diverged_at) == (LaneStatus.DIVERGED, 7)
    end = rec.snapshot()
    assert (end.lanes[0].status, end.lanes[0].diverged_at, end.lanes[0].step) == (LaneStatus.DIVERGED, 7, 12)
    assert (end.lanes[1].status, end.lanes[1].diverged_at) == (LaneStatus.FINISHED, None)
    assert end.status is Status.FINISHED


# ------------------------------------------------------------------------------------------- what is not a run
@pytest.mark.parametrize(
    "bad_meta, tables",
    [
        ({"settings": {}, "lanes": []}, []),  # no lanes
        ({"settings": {}, "lanes": [{"norm": "batch"}]}, [{}]),  # an unknown BN
        ({"settings": {"lr": -1}, "lanes": [{}]}, [{}]),  # settings out of range
        ({"settings": {}}, [{}]),  # no lanes key
        ({"settings": {}, "lanes": [{}, {}]}, [{}]),  # two lanes, one table
    ],
)
def test_a_recording_that_cannot_be_read_says_so(bad_meta, tables):
    with pytest.raises(RecordingError):
        Recording(bad_meta, tables)


def test_unknown_settings_are_ignored_not_refused():
    rec = Recording(meta(batch_size=64, from_the_future=1), [lane_tables([2.3] * 3)])
    assert rec.settings.batch_size == 64 and rec.meta["settings"]["from_the_future"] == 1


# ------------------------------------------------------------------------------------------- tables by hand
def _with(tables, table, **cols):
    return {**tables, table: {**tables[table], **cols}}


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda t: {**t, "weights": {}}, "weights"),
        (lambda t: _with(t, "steps", train_loss=np.ones(2)), "differ in length"),
        (lambda t: _with(t, "steps", step=np.array([1.0, np.nan, 3.0])), "NaN"),
        (lambda t: _with(t, "steps", step=np.array([1.0, 3.0, 2.0])), "go back"),
        (lambda t: _with(t, "steps", step=[1, 2, 3]), "not an array"),
        (lambda t: _with(t, "steps", train_acc=np.array(["a", "b", "c"])), "not numbers"),
        (lambda t: {k: v for k, v in t.items() if k != "steps"} | {"steps": {"train_loss": np.ones(3)}}, "no step"),
        (lambda t: _with(t, "probes", step=np.array([[1.0]])), "dimensions"),
        (lambda t: "steps", "no tables"),
    ],
)
def test_tables_that_bnviz_cannot_have_written_are_refused(change, words):
    with pytest.raises(RecordingError) as info:
        Recording(meta(), [change(lane_tables([2.3] * 3))])
    assert words in str(info.value)


@pytest.mark.parametrize(
    "settings",
    [
        {"batch_size": "128"},
        {"diverge_steps": "5"},
        {"epochs": 2.0},
        {"lr": True},
        {"lr": 10**400},
        {"train_size": "all"},
        {"device": None},
    ],
)
def test_settings_of_the_wrong_type_are_refused(settings):
    with pytest.raises(RecordingError, match="settings cannot be read"):
        Recording(meta(**settings), [lane_tables([2.3] * 3)])


def test_a_recording_by_hand_may_leave_tables_out():
    tables = {"steps": lane_tables([2.3] * 3)["steps"]}
    rec = Recording(meta(train_size=None, lr=1), [tables])
    assert set(rec.lane_tables[0]) == set(TABLES) and rec.snapshot().lanes[0].step == 3
    assert rec.settings.train_size is None and rec.settings.lr == 1


def test_first_divergence_follows_the_engine_s_rule_step_by_step():
    """Against the rule written as a loop (what the engine does as it trains), on random loss curves."""
    import math
    import random

    def by_loop(steps, losses, settings):
        run = []
        for step, loss in zip(steps, losses):
            run = run + [step] if not loss <= settings.diverge_loss else []
            if not math.isfinite(loss) or len(run) >= settings.diverge_steps:
                return int(run[0])
        return None

    rng = random.Random(0)
    for _ in range(2000):
        n = rng.randint(0, 30)
        pick = [1.0, 25.0, 25.0, float("nan"), float("inf"), 19.9]
        losses = [rng.choice(pick) if rng.random() < 0.4 else 1.0 for _ in range(n)]
        settings = Settings(diverge_steps=rng.randint(1, 5))
        steps = list(range(5, 5 + n))
        assert first_divergence(steps, losses, settings) == by_loop(steps, losses, settings), losses


# ------------------------------------------------------------------------------------------- memory
@pytest.mark.parametrize("at", [None, 0, 1, 470, 2345])
def test_a_snapshot_shares_the_recordings_arrays(chapter, at):
    """Issue 24: a snapshot's tables are views of the recording's columns (each snapshot copied every table:
    +500 MB for the largest legal file), and hold the same rows a cut by mask would."""
    snap = chapter.snapshot(at)
    end = chapter.last_step if at is None else at
    shared = 0
    for lane, tables in zip(snap.lanes, chapter.lane_tables):
        for name, cols in tables.items():
            for col, a in cols.items():
                got = lane.tables[name][col]
                keep = cols["step"] <= end
                np.testing.assert_array_equal(got, a[keep])
                if len(got):
                    assert np.shares_memory(got, a), (name, col)
                    shared += 1
    if end:
        assert shared > 100  # the shipped run's two lanes have 100+ columns with rows


def test_a_snapshot_cuts_a_table_with_repeated_steps_after_the_last_of_them():
    """Steps may repeat in a table (two BN switches at one step, validation rows at a Flip): all are kept."""
    tables = lane_tables([1.0] * 6)
    tables["events"] = {"step": np.array([2.0, 2.0, 5.0]), "bn_on": np.array([False, True, False])}
    rec = Recording(meta(), [tables])
    assert list(rec.snapshot(2).lanes[0].tables["events"]["bn_on"]) == [False, True]
    assert list(rec.snapshot(1).lanes[0].tables["events"]["step"]) == []
    assert list(rec.snapshot(5).lanes[0].tables["events"]["step"]) == [2.0, 2.0, 5.0]
