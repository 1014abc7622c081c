"""The server-wide registry of experiments: ids, grace period, the training cap, the bound on kept runs."""
import threading
import time

import pytest
import torch

from bnviz.data import FashionMNISTData
from bnviz.engine import Experiment, LaneSpec, Settings
from bnviz.registry import CapacityError, Janitor, Registry


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now


class FakeExperiment:
    """What the registry uses of an experiment: status, start(), stop(timeout)."""

    def __init__(self, status="idle"):
        self.status, self.stops, self.starts = status, [], 0

    def start(self):
        self.starts += 1
        self.status = "running"

    def stop(self, timeout=1.0):
        self.stops.append(timeout)
        self.status = "stopped"
        return True


@pytest.fixture
def clock():
    return Clock()


def test_add_returns_distinct_ids_and_get_finds_the_experiment(clock):
    reg = Registry(clock=clock)
    exps = [FakeExperiment() for _ in range(5)]
    keys = [reg.add(e) for e in exps]
    assert len(set(keys)) == 5 and all(isinstance(k, str) and k for k in keys)
    assert len(reg) == 5
    for k, e in zip(keys, exps):
        assert reg.get(k) is e
        assert reg.touch(k) is e
    assert reg.get("no-such-id") is None
    assert reg.get(None) is None


def test_an_unwatched_experiment_is_stopped_after_the_grace_period(clock):
    reg = Registry(grace_s=120, clock=clock)
    watched, unwatched = FakeExperiment(), FakeExperiment("paused")
    kw, ku = reg.add(watched), reg.add(unwatched)
    clock.now += 100
    reg.touch(kw)
    clock.now += 20  # unwatched for exactly the grace period: kept
    assert reg.reap() == []
    assert not unwatched.stops
    clock.now += 1   # 121 s: gone
    assert reg.reap() == [ku]
    assert unwatched.stops and reg.get(ku) is None
    assert reg.get(kw) is watched and not watched.stops
    assert len(reg) == 1
    clock.now += 500
    assert reg.reap() == [kw] and watched.stops and len(reg) == 0


def test_get_counts_as_watching(clock):
    reg = Registry(grace_s=10, clock=clock)
    e = FakeExperiment()
    k = reg.add(e)
    for _ in range(5):  # a page that polls every 8 s keeps its run alive for 40 s
        clock.now += 8
        assert reg.get(k) is e
        assert reg.reap() == []
    assert not e.stops


def test_reap_stops_a_real_training_experiment(clock, tiny_data):
    exp = Experiment(tiny_data, Settings(train_size=None, batch_size=32, epochs=50, probe_every=5, val_every=50,
                                         val_size=50), (LaneSpec("none"), LaneSpec("scratch")), name="reg-test")
    try:
        reg = Registry(grace_s=5, clock=clock)
        key = reg.add(exp)
        reg.start(key)
        assert exp.status == "running"
        clock.now += 6
        assert reg.reap() == [key]
        deadline = time.monotonic() + 10
        while exp.alive and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not exp.alive, "the reaped experiment's worker thread is still running"
        assert exp.status == "stopped"
        with pytest.raises(RuntimeError):
            exp.start()
    finally:
        exp.stop(timeout=10)


def test_the_cap_refuses_a_start_with_a_clear_message(clock):
    reg = Registry(max_training=1, clock=clock)
    a, b = FakeExperiment(), FakeExperiment()
    ka, kb = reg.add(a), reg.add(b)
    reg.start(ka)
    assert a.status == "running" and reg.training() == 1
    with pytest.raises(CapacityError) as err:
        reg.start(kb)
    msg = str(err.value)
    assert "limit is 1" in msg and "1 experiments or studies are already running" in msg
    assert "Pause one of them" in msg and "press Start" in msg
    assert b.status == "idle" and b.starts == 0
    reg.start(ka)  # the running one may be started again: it is not a new trainer
    assert a.starts == 2
    a.status = "paused"
    reg.start(kb)
    assert b.status == "running" and reg.training() == 1


def test_a_cap_of_zero_refuses_every_start(clock):
    reg = Registry(max_training=0, clock=clock)
    e = FakeExperiment()
    k = reg.add(e)
    with pytest.raises(CapacityError, match="limit is 0"):
        reg.start(k)
    assert e.starts == 0
    assert isinstance(CapacityError("x"), RuntimeError)  # the dashboard shows it as a warning, not a traceback


def test_max_kept_drops_the_oldest_idle_experiments_never_a_running_one(clock):
    reg = Registry(max_kept=3, clock=clock)
    oldest_running = FakeExperiment("running")
    k0 = reg.add(oldest_running)
    clock.now += 1
    old_idle = FakeExperiment("paused")
    k1 = reg.add(old_idle)
    clock.now += 1
    newer_idle = FakeExperiment()
    k2 = reg.add(newer_idle)
    clock.now += 1
    assert len(reg) == 3 and not old_idle.stops
    k3 = reg.add(FakeExperiment())
    assert len(reg) == 3
    assert reg.get(k1) is None and old_idle.stops == [0]  # stopped without waiting for its thread
    assert reg.get(k0) is oldest_running and not oldest_running.stops
    assert reg.get(k2) is newer_idle and reg.get(k3) is not None


def test_the_experiment_just_added_is_never_the_one_dropped(clock):
    reg = Registry(max_kept=1, clock=clock)
    running = FakeExperiment("running")
    reg.add(running)
    clock.now += 1
    new = FakeExperiment()
    k = reg.add(new)
    assert reg.get(k) is new and not new.stops and not running.stops
    assert len(reg) == 2  # over the bound, but only running ones and the newcomer are left


def test_close_stops_everything(clock):
    reg = Registry(clock=clock)
    exps = [FakeExperiment(s) for s in ("idle", "running", "paused")]
    for e in exps:
        reg.add(e)
    reg.close()
    assert len(reg) == 0
    assert all(e.stops for e in exps)


def test_the_janitor_reaps_in_the_background_and_halts(clock):
    reg = Registry(grace_s=1, clock=clock)
    e = FakeExperiment("paused")
    reg.add(e)
    janitor = Janitor(reg, every_s=0.01)
    assert janitor.name.startswith("bnviz-") and janitor.daemon
    janitor.start()
    try:
        clock.now += 2
        deadline = time.monotonic() + 10
        while len(reg) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(reg) == 0 and e.stops
    finally:
        janitor.halt()
        janitor.join(5)
    assert not janitor.is_alive()


def test_the_registry_is_safe_to_use_from_many_threads(clock):
    reg = Registry(max_kept=1000, clock=clock)
    keys, errors = [], []

    def work():
        try:
            for _ in range(50):
                k = reg.add(FakeExperiment())
                assert reg.get(k) is not None
                keys.append(k)
                reg.training()
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert len(reg) == 200 == len(set(keys))


@pytest.fixture(scope="module")
def tiny_data():
    g = torch.Generator().manual_seed(0)
    return FashionMNISTData(torch.randint(0, 256, (256, 28, 28), dtype=torch.uint8, generator=g),
                            torch.arange(256) % 10,
                            torch.randint(0, 256, (100, 28, 28), dtype=torch.uint8, generator=g),
                            torch.arange(100) % 10, "synthetic")
