"""The live engine: lanes in lockstep, commands from other threads, snapshots, divergence, failures, stop."""

import math
import threading
import time
import uuid
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import until, worker_threads
from torch import nn

import bnviz.live.engine
import bnviz.step.graphed_step
from bnviz.live.engine import Experiment, Lane, describe_error
from bnviz.live.history import TABLES
from bnviz.live.snapshot import DEFAULT_LANES, MAX_LANES, LaneSpec, LaneStatus, LaneView, Settings, Status
from bnviz.pictures import figures
from bnviz.step.training import evaluate, evaluate_train_mode

N_TRAIN, N_TEST, BATCH = 256, 200, 32  # conftest's tiny_data
STEPS_PER_EPOCH = N_TRAIN // BATCH  # 8


def settings(**kw):
    base = dict(lr=0.1, batch_size=BATCH, epochs=1, probe_every=4, val_every=4, val_size=50, device="cpu")
    return Settings(**{**base, **kw})


bnviz_threads = worker_threads


@pytest.fixture
def data(tiny_data):
    return tiny_data


@pytest.fixture
def make(make_experiment):
    """make(settings, lanes) -> a new Experiment; every one is stopped (and checked gone) at teardown."""

    def make_one(s=None, lanes=DEFAULT_LANES, dataset=None):
        return make_experiment(s or settings(), lanes, data=dataset)

    return make_one


def fake_losses(monkeypatch, per_image):
    """train_step replaced (in the lanes' EagerStep): it trains as ever, but reports the next of ``per_image`` as
    the batch's mean loss."""
    losses, real = iter(per_image), bnviz.step.graphed_step.train_step

    def fake_step(model, opt, X, y):
        real(model, opt, X, y)
        return torch.tensor(next(losses) * X.shape[0]), torch.tensor(0)

    monkeypatch.setattr(bnviz.step.graphed_step, "train_step", fake_step)


def run(e, timeout=60):
    e.start()
    assert e.wait(timeout=timeout)
    return e.snapshot()


def table(snap, lane, name, col):
    return snap.lanes[lane].tables[name].get(col, np.array([]))


# --------------------------------------------------------------------------------------------- set-up


def test_default_lanes_are_bn_off_and_bn_scratch(make):
    e = make()
    assert [l.spec for l in e.lanes] == [LaneSpec("none", "sigmoid"), LaneSpec("scratch", "sigmoid")]
    snap = e.snapshot()
    assert snap.status == "idle" and snap.error is None
    assert [l.label for l in snap.lanes] == ["A · BN off", "B · BN scratch"]
    assert [(l.status, l.step, l.epoch) for l in snap.lanes] == [("ready", 0, 1)] * 2
    assert snap.lanes[0].steps_per_epoch == STEPS_PER_EPOCH
    assert set(snap.lanes[0].tables) == set(TABLES)
    assert LaneSpec("torch", "relu").label == "BN torch · relu"


@pytest.mark.parametrize(
    "kw, words",
    [
        (dict(lr=0), "learning rate"),
        (dict(lr=-0.5), "learning rate"),
        (dict(lr=float("nan")), "learning rate"),
        (dict(lr=float("inf")), "learning rate"),
        (dict(batch_size=1), "batch size must be at least 2"),
        (dict(batch_size=0), "batch size"),
        (dict(device="gpu"), "device must be one of"),
        (dict(epochs=0), "epochs"),
        (dict(bn_momentum=1.5), "momentum"),
        (dict(bn_eps=0), "eps"),
        (dict(train_size=1), "training-set size"),
        (dict(val_every=0), "val every"),
        (dict(dist_capacity=1), "dist capacity"),
    ],
)
def test_settings_validation(kw, words):
    with pytest.raises(ValueError, match=words):
        Settings(**kw)


def test_settings_report_every_problem_at_once():
    with pytest.raises(ValueError) as info:
        Settings(lr=0, batch_size=1, device="tpu")
    msg = str(info.value)
    assert "learning rate" in msg and "batch size" in msg and "device" in msg and "'tpu'" in msg


def test_lane_spec_and_lane_count_validation(data):
    with pytest.raises(ValueError, match="BN implementation"):
        LaneSpec("batch")
    with pytest.raises(ValueError, match="activation"):
        LaneSpec("torch", "tanh")
    for lanes in ((), (LaneSpec(),) * (MAX_LANES + 1)):
        with pytest.raises(ValueError, match="1 to 3 lanes"):
            Experiment(data, settings(), lanes, name="never-started")
    assert not bnviz_threads("never-started")


# --------------------------------------------------------------------------------------------- lockstep, determinism


def test_same_seed_same_history(make):
    s = settings(epochs=2, probe_every=3, val_every=5)
    snaps = [run(make(s)) for _ in range(2)]
    for a, b in zip(snaps[0].lanes, snaps[1].lanes):
        assert a.status == b.status == "finished" and a.step == b.step == 2 * STEPS_PER_EPOCH
        for name in TABLES:
            assert set(a.tables[name]) == set(b.tables[name])
            for col in a.tables[name]:
                if col == "images_per_s":  # a timing, not a result
                    continue
                assert np.array_equal(a.tables[name][col], b.tables[name][col], equal_nan=True), (name, col)
    # and the seed matters: another seed trains on other batches from another initialisation
    other = run(make(settings(epochs=2, probe_every=3, val_every=5, seed=1)))
    assert not np.array_equal(table(other, 0, "steps", "train_loss"), table(snaps[0], 0, "steps", "train_loss"))


def test_lanes_see_the_same_batches(make):
    # our BN and torch's compute the same function: with the same batches and initialisation, the same losses
    snap = run(make(settings(epochs=2), lanes=(LaneSpec("scratch"), LaneSpec("torch"), LaneSpec("none"))))
    scratch, torch_bn, off = (table(snap, i, "steps", "train_loss") for i in range(3))
    assert len(scratch) == len(torch_bn) == 2 * STEPS_PER_EPOCH
    # float32 rounding apart: 16 steps at lr 0.1 with sigmoid differ by 5e-7 (measured on an Intel Xeon); 1e-4
    # leaves 200x for other CPUs' kernels, and BN off differs by more than 1e-3
    np.testing.assert_allclose(scratch, torch_bn, atol=1e-4, rtol=0)
    assert not np.allclose(scratch[1:], off[1:], atol=1e-3)  # and BN does change training
    np.testing.assert_array_equal(table(snap, 0, "steps", "epoch"), table(snap, 2, "steps", "epoch"))


def test_epochs_val_and_finish(make):
    s = settings(epochs=2, val_every=3, probe_every=5)
    e = make(s, lanes=(LaneSpec("scratch"), LaneSpec("none", "relu")))
    snap = run(e)
    assert snap.status == "finished"
    total = 2 * STEPS_PER_EPOCH
    for i, lane in enumerate(snap.lanes):
        assert (lane.status, lane.step, lane.epoch) == ("finished", total, 2)
        steps, val, epochs = lane.tables["steps"], lane.tables["val"], lane.tables["epochs"]
        np.testing.assert_array_equal(steps["step"], np.arange(1, total + 1))
        np.testing.assert_array_equal(steps["epoch"], np.repeat([1, 2], STEPS_PER_EPOCH))
        np.testing.assert_array_equal(val["step"], np.arange(3, total + 1, 3))
        assert ((val["val_acc"] >= 0) & (val["val_acc"] <= 1)).all()
        assert np.allclose(val["val_acc"] * s.val_size, np.round(val["val_acc"] * s.val_size))  # of 50 images
        np.testing.assert_array_equal(epochs["epoch"], [1, 2])
        np.testing.assert_array_equal(epochs["step"], [STEPS_PER_EPOCH, total])
        # an epoch's training loss is the mean over its batches (all of one size here)
        np.testing.assert_allclose(epochs["train_loss"], steps["train_loss"].reshape(2, -1).mean(axis=1), rtol=1e-6)
        np.testing.assert_allclose(epochs["train_acc"], steps["train_acc"].reshape(2, -1).mean(axis=1), rtol=1e-6)
        # the last epoch's validation is on the whole test set, with the final model
        model, d = e.lanes[i].model, e.lanes[i].data
        assert d.test_x.shape[0] == N_TEST and d.val_x.shape[0] == s.val_size
        full_loss, full_acc = evaluate(model, d.test_x, d.test_y)
        assert epochs["val_acc"][-1] == full_acc and epochs["val_loss"][-1] == pytest.approx(full_loss, rel=1e-6)
        np.testing.assert_array_equal(lane.tables["probes"]["step"], np.arange(1, total + 1, 5))
        assert snap.lanes[i].images_per_s > 0


def test_train_size_limits_the_epoch(make):
    e = make(settings(train_size=100))  # 3 batches of 32 and one of 4
    assert e.lanes[0].steps_per_epoch == 4
    snap = run(e)
    assert [l.step for l in snap.lanes] == [4, 4]
    assert snap.status == "finished"


# --------------------------------------------------------------------------------------------- commands


def test_commands_from_another_thread(make):
    e = make(settings(epochs=200, probe_every=10, val_every=50))
    starter = threading.Thread(target=e.start)
    starter.start()
    starter.join(10)
    assert not starter.is_alive()
    assert until(lambda: e.snapshot().max_step >= 3)
    assert e.status == "running"

    e.pause()
    assert e.status == "paused"
    paused = [l.step for l in e.snapshot().lanes]
    assert paused[0] == paused[1]  # commands land between rounds: the lanes stay in lockstep
    time.sleep(0.1)
    assert [l.step for l in e.snapshot().lanes] == paused

    e.step(5)
    assert e.wait(timeout=30)
    snap = e.snapshot()
    assert snap.status == "paused"
    assert [l.step for l in snap.lanes] == [p + 5 for p in paused]
    for lane in snap.lanes:
        np.testing.assert_array_equal(lane.tables["steps"]["step"], np.arange(1, paused[0] + 6))

    e.resume()
    assert e.status == "running"
    assert until(lambda: e.snapshot().max_step > paused[0] + 8)
    e.pause()
    assert e.status == "paused"


def test_step_from_idle_then_pauses(make):
    e = make()
    e.step(3)
    assert e.wait(timeout=30)
    snap = e.snapshot()
    assert snap.status == "paused" and [l.step for l in snap.lanes] == [3, 3]
    assert [l.status for l in snap.lanes] == ["training", "training"]
    e.step()
    assert e.wait(timeout=30)
    assert [l.step for l in e.snapshot().lanes] == [4, 4]


def test_set_lr_changes_every_lane_without_reset(make):
    e = make(settings(lr=0.1))
    e.step(3)
    assert e.wait(timeout=30)
    e.set_lr(0.01)
    e.step(2)
    assert e.wait(timeout=30)
    snap = e.snapshot()
    assert snap.settings.lr == 0.01 and e.settings.lr == 0.01
    for lane, view in zip(e.lanes, snap.lanes):
        assert [g["lr"] for g in lane.optimizer.param_groups] == [0.01]
        assert view.step == 5
        np.testing.assert_array_equal(view.tables["steps"]["step"], [1, 2, 3, 4, 5])
        np.testing.assert_array_equal(view.tables["steps"]["lr"], [0.1, 0.1, 0.1, 0.01, 0.01])
    for bad in (0, -1, float("nan")):
        with pytest.raises(ValueError, match="learning rate"):
            e.set_lr(bad)
    assert e.settings.lr == 0.01


def test_set_lane_restarts_only_that_lane(make):
    e = make(settings(epochs=2), lanes=(LaneSpec("scratch"), LaneSpec("scratch")))
    e.step(6)
    assert e.wait(timeout=30)
    e.set_lane(1, LaneSpec("torch"))
    snap = e.snapshot()
    assert snap.lanes[1].spec == LaneSpec("torch") and snap.lanes[1].step == 0
    assert snap.lanes[1].status == "ready" and snap.lanes[1].tables["steps"] == {}
    assert snap.lanes[0].step == 6 and len(snap.lanes[0].tables["steps"]["step"]) == 6
    e.step(3)
    assert e.wait(timeout=30)
    snap = e.snapshot()
    assert [l.step for l in snap.lanes] == [9, 3]
    # restarted from the seed: its first steps are lane 0's first steps (same batches, same weights)
    np.testing.assert_allclose(
        table(snap, 1, "steps", "train_loss"), table(snap, 0, "steps", "train_loss")[:3], atol=1e-4, rtol=0
    )
    # the restart is marked where lane 0 was when it happened, and the marks survive a second restart
    np.testing.assert_array_equal(table(snap, 1, "starts", "step"), [6])
    e.set_lane(1, LaneSpec("scratch"))
    snap = e.snapshot()
    np.testing.assert_array_equal(table(snap, 1, "starts", "step"), [6, 9])
    labels = [a.text for a in figures.loss_figure(snap).layout.annotations]
    assert labels.count("B restarted from 0") == 2, labels
    e.step(3)
    assert e.wait(timeout=30)
    for bad in (5, 2, -1):  # the same error as remove_lane's, for every command that takes a lane
        with pytest.raises(ValueError, match=f"there is no lane {bad}"):
            e.set_lane(bad, LaneSpec())
        with pytest.raises(ValueError, match=f"there is no lane {bad}"):
            e.set_bn_bypass(bad, True)
        with pytest.raises(ValueError, match=f"there is no lane {bad}"):
            e.remove_lane(bad)
        with pytest.raises(ValueError, match=f"there is no lane {bad}"):
            e.clone_model(bad)
    assert [l.step for l in e.snapshot().lanes] == [12, 3]  # a refused command changed nothing


def test_set_lane_while_running(make):
    e = make(settings(epochs=200, probe_every=10, val_every=50))
    e.start()
    assert until(lambda: e.snapshot().max_step >= 6)
    e.set_lane(0, LaneSpec("none", "relu"))
    snap = e.snapshot()
    seen_after = snap.lanes[1].step  # at least the step lane 1 was at when lane 0 restarted
    assert snap.lanes[0].step < seen_after and snap.lanes[0].label == "A · BN off · relu"
    assert until(lambda: e.snapshot().lanes[1].step > seen_after + 3)
    e.pause()
    snap = e.snapshot()
    assert 0 < snap.lanes[0].step < snap.lanes[1].step
    # both went on in lockstep from the restart: the gap is the step lane 1 had reached then
    assert 6 <= snap.lanes[1].step - snap.lanes[0].step <= seen_after
    np.testing.assert_array_equal(table(snap, 0, "steps", "step"), np.arange(1, snap.lanes[0].step + 1))


def test_reset_clears_history_and_reruns_identically(make):
    e = make(settings(epochs=1))
    first = run(e)
    assert first.status == "finished"
    e.reset()
    snap = e.snapshot()
    assert snap.status == "idle" and snap.wall_s == 0.0
    for lane in snap.lanes:
        assert (lane.status, lane.step, lane.epoch) == ("ready", 0, 1)
        assert all(lane.tables[t] == {} for t in TABLES)
    again = run(e)
    for a, b in zip(first.lanes, again.lanes):
        np.testing.assert_array_equal(a.tables["steps"]["train_loss"], b.tables["steps"]["train_loss"])


def test_reset_with_new_settings_and_lanes(make):
    e = make(settings(epochs=1))
    e.step(2)
    assert e.wait(timeout=30)
    new = settings(lr=0.05, batch_size=16, epochs=1, val_every=8)
    e.reset(new, lanes=(LaneSpec("torch", "relu"),))
    snap = e.snapshot()
    assert snap.status == "idle" and snap.settings == new
    assert len(snap.lanes) == 1 and snap.lanes[0].spec == LaneSpec("torch", "relu")
    assert snap.lanes[0].steps_per_epoch == N_TRAIN // 16 and snap.lanes[0].step == 0
    snap = run(e)
    assert snap.status == "finished" and snap.lanes[0].step == N_TRAIN // 16
    np.testing.assert_array_equal(table(snap, 0, "steps", "lr"), np.full(N_TRAIN // 16, 0.05))
    np.testing.assert_array_equal(table(snap, 0, "val", "step"), [8, 16])
    for lanes in ((), (LaneSpec(),) * 4):
        with pytest.raises(ValueError, match="lanes"):
            e.reset(lanes=lanes)
    assert len(e.snapshot().lanes) == 1


def test_start_or_step_after_finished_stays_finished(make):
    e = make(settings(epochs=1))
    assert run(e).status == "finished"
    e.start()
    assert e.wait(timeout=10)  # nothing to train: it must not sit in "running"
    assert e.status == "finished"
    e.step(3)
    assert e.wait(timeout=10)
    snap = e.snapshot()
    assert snap.status == "finished" and [l.step for l in snap.lanes] == [STEPS_PER_EPOCH] * 2


# --------------------------------------------------------------------------------------------- snapshots


def check_snapshot(snap, s):
    for lane in snap.lanes:
        for name, cols in lane.tables.items():
            lengths = {len(a) for a in cols.values()}
            assert len(lengths) <= 1, (name, {c: len(a) for c, a in cols.items()})
            for a in cols.values():
                assert not a.flags.writeable
                if len(a):
                    with pytest.raises(ValueError):
                        a[0] = 0
        steps = lane.tables["steps"].get("step", np.array([]))
        np.testing.assert_array_equal(steps, np.arange(1, len(steps) + 1))
        assert lane.step >= len(steps)
        probes = lane.tables["probes"].get("step", np.array([]))
        assert set(probes.tolist()) <= set(steps.tolist())
        np.testing.assert_array_equal(probes, np.arange(1, len(probes) * s.probe_every, s.probe_every))
        val = lane.tables["val"].get("step", np.array([]))
        assert (val % s.val_every == 0).all() and set(val.tolist()) <= set(steps.tolist())


def test_snapshots_from_another_thread_are_consistent(make):
    s = settings(epochs=3, probe_every=2, val_every=3, dist_capacity=4)
    e = make(s, lanes=(LaneSpec("none"), LaneSpec("scratch"), LaneSpec("torch", "relu")))
    seen, failures = [], []

    def reader():
        try:
            while True:
                snap = e.snapshot()
                check_snapshot(snap, s)
                seen.append(tuple(l.step for l in snap.lanes))
                if snap.status == "finished":
                    return
                time.sleep(0.001)  # let the worker have the GIL now and then
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)

    t = threading.Thread(target=reader)
    t.start()
    e.start()
    t.join(60)
    assert not t.is_alive()
    if failures:
        raise failures[0]
    assert len(set(seen)) > 3  # it really read while the lanes were training
    assert seen[-1] == (3 * STEPS_PER_EPOCH,) * 3


# --------------------------------------------------------------------------------------------- failures


def test_divergence_stops_only_that_lane(make):
    # lr 1e4: ReLU without BN overflows to inf/NaN within a few steps; sigmoid with BN stays finite and
    # trains on. (On random images its loss gets large, so the loss limit is lifted: this is the overflow path.)
    e = make(
        settings(lr=1e4, epochs=2, probe_every=1, val_every=1, diverge_loss=1e30),
        lanes=(LaneSpec("none", "relu"), LaneSpec("scratch", "sigmoid")),
    )
    snap = run(e)
    off, bn = snap.lanes
    assert off.status == "diverged" and off.error is None
    assert off.diverged_at is not None and off.diverged_at <= off.step < 2 * STEPS_PER_EPOCH
    losses = off.tables["steps"]["train_loss"]
    limit = e.settings.diverge_loss
    assert len(losses) == off.step  # it stopped there
    assert not np.isfinite(losses[-1])  # at a NaN or infinite loss,
    after = losses[off.diverged_at - 1 :]  # above the limit from diverged_at on
    assert (~np.isfinite(after) | (after > limit)).all()
    assert (losses[: off.diverged_at - 1] <= limit).all()  # ...and not before
    assert off.tables["val"]["step"].max(initial=0) < off.step  # no validation of a diverged lane
    assert bn.status == "finished" and bn.step == 2 * STEPS_PER_EPOCH > off.diverged_at
    assert bn.diverged_at is None and np.isfinite(bn.tables["steps"]["train_loss"]).all()
    assert snap.status == "finished" and snap.error is None


def test_diverge_loss_threshold(make):
    # the same run, judged by two limits: a loss above the limit counts as divergence, one below does not
    strict = run(make(settings(epochs=1, diverge_loss=0.5), lanes=(LaneSpec("scratch"),)))
    lenient = run(make(settings(epochs=1), lanes=(LaneSpec("scratch"),)))
    first_loss = table(lenient, 0, "steps", "train_loss")[0]
    assert first_loss > 0.5  # about log(10) at the start
    assert lenient.lanes[0].status == "finished" and lenient.lanes[0].diverged_at is None
    # above the limit for diverge_steps steps in a row: diverged from the first of them
    assert (strict.lanes[0].status, strict.lanes[0].diverged_at, strict.lanes[0].step) == (
        "diverged",
        1,
        Settings().diverge_steps,
    )
    assert strict.status == "finished"  # no lane left to train


def test_a_single_spike_is_not_divergence(make, monkeypatch):
    """BN lanes at large learning rates often spike once and recover: only a run of bad steps counts."""
    e = make(settings(epochs=1, probe_every=10**6, val_every=10**6), lanes=(LaneSpec("scratch"),))
    lane = e.lanes[0]
    lane.step = 1  # past the probe at step 0
    fake_losses(monkeypatch, [50.0, 1.0, 50.0, 50.0, 1.0] + [50.0] * 10)
    for _ in range(5):
        lane.train_one_step(e._lock)
    assert lane.status != "diverged" and lane.diverged_at is None
    for _ in range(5):
        lane.train_one_step(e._lock)
    assert (lane.status, lane.diverged_at, lane.step) == ("diverged", 7, 11)


def _fail_on_call(lane, n, exc):
    original, calls = lane.train_one_step, [0]

    def train_one_step(lock):
        calls[0] += 1
        if calls[0] == n:
            raise exc
        return original(lock)

    return train_one_step


def test_exception_in_a_lane_marks_only_that_lane(make, monkeypatch):
    e = make(lanes=(LaneSpec("scratch"), LaneSpec("none"), LaneSpec("torch")))
    monkeypatch.setattr(e.lanes[0], "train_one_step", _fail_on_call(e.lanes[0], 4, RuntimeError("simulated")))
    e.lanes[2].model.fc2 = nn.Linear(7, 84)  # a broken model: its forward pass raises
    snap = run(e)
    assert snap.status == "finished" and snap.error is None
    a, b, c = snap.lanes
    assert (a.status, a.step, a.error) == ("error", 3, "RuntimeError: simulated")
    assert (b.status, b.step, b.error) == ("finished", STEPS_PER_EPOCH, None)
    assert c.status == "error" and c.step == 0 and c.error.startswith("RuntimeError") and "shape" in c.error
    assert len(a.tables["steps"]["step"]) == 3


def test_describe_error_out_of_memory():
    assert describe_error(RuntimeError("CUDA out of memory. Tried to allocate")).startswith("Out of memory")
    assert describe_error(ValueError("bad")) == "ValueError: bad"


def test_exception_in_the_worker_is_reported(make, monkeypatch, capsys):
    e = make()

    def broken_round():
        raise RuntimeError("worker broke")

    monkeypatch.setattr(e, "_round", broken_round)
    e.start()
    assert until(lambda: not e.alive, timeout=10)
    snap = e.snapshot()
    assert snap.status == "error" and e.status == "error"
    assert snap.error == "RuntimeError: worker broke"
    assert "worker broke" in capsys.readouterr().err  # the traceback is printed, not swallowed
    assert e.wait(timeout=1)
    with pytest.raises(RuntimeError, match="error"):
        e.pause()
    assert e.stop()


def test_commands_refused_once_the_worker_has_closed(make, monkeypatch):
    # The worker's last act is to fail the commands still queued. A command queued just after that, while
    # the thread is still finishing, must be refused at once rather than wait for its timeout.
    e = make()
    assert e.stop()
    monkeypatch.setattr(e, "COMMAND_TIMEOUT", 3.0)  # were it queued, a TimeoutError, not the RuntimeError

    class StillFinishing:  # the thread, seen in the instant before it ends
        name = e._thread.name

        @staticmethod
        def is_alive():
            return True

        @staticmethod
        def join(timeout=None):
            pass

    real, e._thread = e._thread, StillFinishing()
    try:
        with pytest.raises(RuntimeError, match="stopped"):
            e.pause()
        assert not e._commands  # refused, not queued
    finally:
        e._thread = real


def test_stop_ends_the_thread(make):
    e = make(settings(epochs=200, probe_every=10, val_every=50))
    assert len(bnviz_threads(e.name)) == 1
    e.start()
    assert until(lambda: e.snapshot().max_step >= 2)
    assert e.stop() is True
    assert not e.alive and not bnviz_threads(e.name)
    assert e.status == "stopped"
    steps = e.snapshot().max_step
    assert steps >= 2
    with pytest.raises(RuntimeError, match="stopped"):
        e.start()
    assert e.stop() is True  # twice is fine
    assert e.snapshot().max_step == steps


def test_stop_while_idle(make):
    e = make()
    assert e.stop() is True
    assert not bnviz_threads(e.name) and e.status == "stopped"


def test_off_the_cpu_losses_are_fetched_in_batches_and_all_recorded(make):
    """On a GPU the step does not wait for the loss: rows arrive FLUSH_EVERY at a time, or at a probe,
    a validation or the end of a run, and a paused run shows every step it took."""
    from types import SimpleNamespace

    e = make(settings(probe_every=1000, val_every=1000, epochs=5))
    lane = e.lanes[0]
    lane.device = SimpleNamespace(type="cuda")  # pretend (the tensors stay on the CPU); the worker is idle
    for _ in range(6):
        lane.train_one_step(e._lock)
    assert len(lane.history.steps) == 1  # step 1 was probed (a sync); steps 2-6 wait on the device
    assert len(lane._pending) == 5
    lane.flush(e._lock)
    np.testing.assert_array_equal(lane.history.steps.view()["step"], np.arange(1, 7))
    for _ in range(Lane.FLUSH_EVERY):
        lane.train_one_step(e._lock)
    assert 0 < len(lane._pending) < Lane.FLUSH_EVERY  # a full batch of pending steps was fetched
    e.lanes[1].device = SimpleNamespace(type="cuda")
    e.step(3)  # through the worker: the pause at the end shows every step
    assert e.wait(timeout=30)
    for view in e.snapshot().lanes:
        np.testing.assert_array_equal(view.tables["steps"]["step"], np.arange(1, view.step + 1))


def test_off_the_cpu_a_divergence_found_late_takes_the_lane_back_to_its_last_row(make, monkeypatch):
    """Off the CPU the loss of step 4 is only seen at a later flush; the lane stops there, not where the
    flush happened: its step is its last recorded row."""
    e = make(settings(batch_size=8, probe_every=10**6, val_every=10**6, epochs=5), lanes=(LaneSpec("scratch"),))
    lane = e.lanes[0]  # 32 steps an epoch: no flush at an epoch's end below
    lane.device = SimpleNamespace(type="cuda")  # pretend (the tensors stay on the CPU); the worker is idle
    fake_losses(monkeypatch, [1.0, 1.0, 1.0, math.nan] + [1.0] * 20)
    for _ in range(10):
        lane.train_one_step(e._lock)
    assert lane.step == 10 and len(lane._pending) == 9  # step 1 was probed (a sync); 2-10 wait on the device
    lane.flush(e._lock)
    assert (lane.status, lane.diverged_at) == ("diverged", 4)
    view = e.snapshot().lanes[0]
    np.testing.assert_array_equal(view.tables["steps"]["step"], [1, 2, 3, 4])
    assert lane.step == view.step == 4 and view.epoch == 1


def test_through_the_worker_a_lane_that_diverged_between_flushes_stops_at_its_last_row(make, monkeypatch):
    s = settings(batch_size=8, probe_every=10**6, val_every=10**6, epochs=5)  # 32 steps an epoch
    e = make(s, lanes=(LaneSpec("scratch"), LaneSpec("none")))
    for lane in e.lanes:
        lane.device = SimpleNamespace(type="cuda")
    # lanes take turns: lane A's losses are the even calls, lane B's the odd ones; A's step 20 is NaN
    fake_losses(monkeypatch, [math.nan if i == 2 * 19 else 1.0 for i in range(200)])
    e.step(40)  # A's divergence at step 20 is seen at the flush at the end of the epoch, step 32
    assert e.wait(timeout=60)
    a, b = e.snapshot().lanes
    assert (a.status, a.diverged_at) == ("diverged", 20)
    assert a.step == a.tables["steps"]["step"][-1] == 20 and a.epoch == 1
    assert b.status == "training" and b.step == b.tables["steps"]["step"][-1] == 40


# --------------------------------------------------------------------------------------------- the command machinery


def test_a_command_re_raises_what_it_raised_on_the_worker(make):
    e = make()
    e.remove_lane(1)
    with pytest.raises(ValueError, match="keeps at least one lane"):
        e.remove_lane(0)
    assert e.alive and len(e.lanes) == 1  # the worker goes on after a command failed
    e.step(2)
    assert e.wait(timeout=30) and e.snapshot().max_step == 2


def test_a_command_that_times_out_is_never_run_late(make, monkeypatch):
    e = make(settings(epochs=5))
    release = threading.Event()
    blocker = e._submit(lambda: release.wait(30))  # the worker is busy with this one
    monkeypatch.setattr(e, "COMMAND_TIMEOUT", 0.2)
    with pytest.raises(TimeoutError, match="did not answer in time"):
        e.step(5)
    release.set()
    assert blocker.result(timeout=30) is True
    e.pause()  # a command queued after the cancelled one: when it has run, so would have the step(5)
    assert e.wait(timeout=30)
    snap = e.snapshot()
    assert snap.status == "idle" and snap.max_step == 0  # the step(5) was cancelled, not carried out later


def test_with_stops_the_experiment_even_when_the_body_raises(data):
    with Experiment(data, settings(), name=f"test-with-{uuid.uuid4().hex[:8]}") as e:
        assert e.alive
        e.step(2)
        assert e.wait(timeout=30)
    assert until(lambda: not e.alive, timeout=10) and e.status == "stopped" and not bnviz_threads(e.name)
    with pytest.raises(KeyError):
        with Experiment(data, settings(), name=f"test-with-{uuid.uuid4().hex[:8]}") as failing:
            raise KeyError("inside")
    assert until(lambda: not failing.alive, timeout=10) and not bnviz_threads(failing.name)


def test_statuses_are_enum_members_equal_to_their_strings(make):
    e = make()
    assert e.status is Status.IDLE and e.status == "idle"
    e.step(1)
    assert e.wait(timeout=30)
    snap = e.snapshot()
    assert snap.status is Status.PAUSED and all(l.status is LaneStatus.TRAINING for l in snap.lanes)
    assert f"{snap.status} / {snap.lanes[0].status}" == "paused / training"
    assert e.refresh() is e.status is Status.PAUSED  # in this process the status is always fresh


# --------------------------------------------------------------------------------------------- one frame, one moment


def test_a_snapshot_copies_every_lane_at_the_same_moment(make, monkeypatch):
    """Lanes train in lockstep: in any snapshot, their last recorded steps differ by at most one. Building
    each lane's view is slowed down here; were the lanes copied under separate takes of the history lock,
    the worker would train several rounds between one lane's copy and the next."""
    e = make(
        settings(epochs=1000, probe_every=10**6, val_every=10**6),
        lanes=(LaneSpec("none"), LaneSpec("scratch"), LaneSpec("torch")),
    )
    e.start()
    assert until(lambda: e.snapshot().max_step >= 2)

    def slow_view(*args, **kwargs):
        time.sleep(0.05)
        return LaneView(*args, **kwargs)

    monkeypatch.setattr(bnviz.live.engine, "LaneView", slow_view)
    seen = set()
    for _ in range(8):
        snap = e.snapshot()
        last = [int(l.tables["steps"]["step"][-1]) for l in snap.lanes]
        assert max(last) - min(last) <= 1, last
        steps = [l.step for l in snap.lanes]
        assert max(steps) - min(steps) <= 1, steps
        seen.add(snap.max_step)
        time.sleep(0.05)  # the worker trains between two snapshots
    assert len(seen) > 1  # the snapshots were taken while the lanes trained
    e.pause()


# --------------------------------------------------------------------------------------------- after the end
def test_switching_bn_off_on_a_finished_run_measures_the_accuracy_at_once(make):
    e = make(settings(epochs=2, lr=0.5))
    snap = run(e)
    assert snap.status == "finished"
    end = snap.lanes[1].step
    before_rows = len(table(snap, 1, "val", "step"))
    before, after = e.set_bn_bypass(1, True)
    snap = e.snapshot()
    val_steps, val_acc = table(snap, 1, "val", "step"), table(snap, 1, "val", "val_acc")
    assert len(val_steps) == before_rows + 1 and val_steps[-1] == end  # measured now, at the lane's last step
    assert val_acc[-1] == pytest.approx(after)
    assert val_steps[-2] == end and before == pytest.approx(val_acc[-2])  # the last check, with BN, at the end
    assert list(table(snap, 1, "events", "bn_on")) == [0.0] and snap.lanes[1].bn_bypassed
    again_before, again_after = e.set_bn_bypass(1, False)  # and back: the same accuracy as before the switch
    assert again_before == pytest.approx(after) and again_after == pytest.approx(before)
    assert snap.status == "finished" and e.snapshot().lanes[1].step == end  # nothing trained


def test_a_finished_run_trains_more_epochs_from_where_it_stopped(make):
    e = make(settings(epochs=1))
    first = run(e)
    assert first.status == "finished"
    assert e.extend(2) == 3 and e.status == "paused" and e.settings.epochs == 3
    snap = run(e)
    assert snap.status == "finished"
    for lane, before in zip(snap.lanes, first.lanes):
        assert lane.step == 3 * STEPS_PER_EPOCH and list(lane.tables["epochs"]["epoch"]) == [1, 2, 3]
        # the first epoch's rows are those of the first run: nothing restarted
        np.testing.assert_array_equal(
            lane.tables["steps"]["train_loss"][:STEPS_PER_EPOCH], before.tables["steps"]["train_loss"]
        )
    with pytest.raises(ValueError, match="1 to 100"):
        e.extend(0)


def test_a_lane_added_later_is_marked_where_the_others_were(make):
    e = make(settings(epochs=2), lanes=(LaneSpec("scratch"),))
    e.step(4)
    assert e.wait(timeout=30)
    e.add_lane(LaneSpec("none"))
    snap = e.snapshot()
    np.testing.assert_array_equal(table(snap, 1, "starts", "step"), [4])
    np.testing.assert_array_equal(table(snap, 1, "starts", "restart"), [0.0])
    assert "B added, from 0" in [a.text for a in figures.loss_figure(snap).layout.annotations]
    assert len(snap.lanes[0].tables["starts"]) == 0  # the first lane began with the run: nothing to mark


def test_validation_records_train_mode_accuracy_beside_eval_mode(make):
    e = make(settings(epochs=2))
    e.step(8)
    assert e.wait(timeout=30)
    snap = e.snapshot()
    plain, bn = (lane.tables["val"] for lane in snap.lanes)
    assert list(plain["step"]) == list(bn["step"]) == [4, 8]
    # without BN train and eval mode are the same network; with it, a different number from the same weights
    np.testing.assert_array_equal(plain["val_acc_batch"], plain["val_acc"])
    model, data = e.clone_model(1), e.data
    expected = evaluate_train_mode(model, data.val_x, data.val_y, BATCH)[1]
    assert bn["val_acc_batch"][-1] == pytest.approx(expected)


def test_a_run_of_two_class_batches_trains_as_many_steps_an_epoch(make):
    e = make(settings(classes_per_batch=2))
    e.start()
    assert e.wait(timeout=60)
    snap = e.snapshot()
    iid = make(settings())
    assert [l.steps_per_epoch for l in snap.lanes] == [l.steps_per_epoch for l in iid.snapshot().lanes]
    assert all(l.status == "finished" and l.step == l.steps_per_epoch for l in snap.lanes)
    assert e.header()["settings"]["classes_per_batch"] == 2


def test_recompute_statistics_measures_before_and_after_and_records_it(make):
    e = make(settings(epochs=2, lr=0.5))
    e.step(6)
    assert e.wait(timeout=30)
    rows = len(e.snapshot().lanes[1].tables["val"]["step"])
    result = e.recompute_statistics(1, batches=5)
    assert result["batches"] == 5 and 0 <= result["before"] <= 1
    snap = e.snapshot()
    val = snap.lanes[1].tables["val"]
    assert len(val["step"]) == rows + 1 and val["step"][-1] == 6 and val["val_acc"][-1] == result["after"]
    assert val["val_acc_batch"][-1] == result["batch"]
    with pytest.raises(ValueError, match="keeps no running statistics"):
        e.recompute_statistics(0)
    with pytest.raises(ValueError, match="1 to 10,000 batches"):
        e.recompute_statistics(1, batches=0)
