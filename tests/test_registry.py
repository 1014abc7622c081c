"""The server-wide registry of experiments: ids, grace period, the training cap, the bound on kept runs."""

import base64
import os
import signal
import threading

import pytest
from conftest import together, until

from bnviz.live.experiment_process import ExperimentProcess
from bnviz.live.registry import CapacityError, Janitor, Registry
from bnviz.live.snapshot import LaneSpec, Settings


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now


class FakeExperiment:
    """What the registry uses of an experiment: status, refresh(), start(), stop(timeout)."""

    def __init__(self, status="idle"):
        self.status, self.stops, self.starts, self.refreshes = status, [], 0, 0

    def refresh(self, timeout=2.0):
        self.refreshes += 1
        return self.status

    def start(self):
        self.starts += 1
        self.status = "running"

    def stop(self, timeout=1.0):
        self.stops.append(timeout)
        self.status = "stopped"
        return True


class FakeJob:
    def __init__(self):
        self.done, self.stops = False, []

    def stop(self, timeout=1.0):
        self.stops.append(timeout)
        self.done = True
        return True


def race(n, call):
    """Run call(i) for i in range(n) in n threads released at the same instant; their outcomes, in order:
    "ok", "capacity" (CapacityError), or the exception."""

    def one(i):
        try:
            call(i)
        except CapacityError:
            return "capacity"
        return "ok"

    outcomes = together(n, one, timeout=60)
    assert None not in outcomes  # every thread finished
    return outcomes


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
    clock.now += 1  # 121 s: gone
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


def test_reap_stops_a_real_training_experiment(clock, make_experiment):
    exp = make_experiment(
        Settings(batch_size=32, epochs=50, probe_every=5, val_every=50, val_size=50, device="cpu"),
        (LaneSpec("none"), LaneSpec("scratch")),
    )
    reg = Registry(grace_s=5, clock=clock)
    key = reg.add(exp)
    reg.start(key)
    assert exp.status == "running"
    clock.now += 6
    assert reg.reap() == [key]
    assert until(lambda: not exp.alive, timeout=10), "the reaped experiment's worker thread is still running"
    assert exp.status == "stopped"
    with pytest.raises(RuntimeError):
        exp.start()


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
        assert until(lambda: len(reg) == 0, timeout=10) and e.stops
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


# ------------------------------------------------------------------------------------------ the cap, atomically
SLOW = Settings(batch_size=32, epochs=1000, probe_every=10**6, val_every=10**6, val_size=50, device="cpu")


def test_five_simultaneous_starts_with_a_cap_of_two_start_exactly_two(clock, make_experiment):
    """Five tabs press Start at the same instant, twenty times over: two start, three are told why not."""
    exps = [make_experiment(SLOW, (LaneSpec("none"),)) for _ in range(5)]
    reg = Registry(max_training=2, clock=clock)
    keys = [reg.add(e) for e in exps]
    for attempt in range(20):
        outcomes = race(5, lambda i: reg.start(keys[i]))
        assert sorted(map(str, outcomes)) == ["capacity"] * 3 + ["ok"] * 2, (attempt, outcomes)
        started = [e for e, o in zip(exps, outcomes) if o == "ok"]
        assert [e.status for e in exps if e.status == "running"] == ["running"] * 2
        assert all(e.status == "running" for e in started) and reg.training() == 2
        for e in started:
            e.pause()
        assert reg.training() == 0


def test_five_simultaneous_starts_of_child_processes_with_a_cap_of_two(clock, make_experiment, monkeypatch):
    monkeypatch.setenv("BNVIZ_THREADS", "1")
    exps = [make_experiment(SLOW, (LaneSpec("none"),), cls=ExperimentProcess) for _ in range(5)]
    reg = Registry(max_training=2, clock=clock)
    keys = [reg.add(e) for e in exps]
    outcomes = race(5, lambda i: reg.start(keys[i]))
    assert sorted(map(str, outcomes)) == ["capacity"] * 3 + ["ok"] * 2, outcomes
    assert [e.refresh() for e, o in zip(exps, outcomes) if o == "ok"] == ["running"] * 2
    assert [e.refresh() for e, o in zip(exps, outcomes) if o != "ok"] == ["idle"] * 3
    assert reg.training() == 2


def test_five_simultaneous_studies_with_a_cap_of_two(clock):
    reg = Registry(max_training=2, clock=clock)
    key = reg.add(FakeExperiment())
    made = []
    outcomes = race(5, lambda i: made.append(reg.start_job(key, f"study-{i}", FakeJob)))
    assert sorted(map(str, outcomes)) == ["capacity"] * 3 + ["ok"] * 2, outcomes
    assert len(made) == 2 and all(reg.job(key, f"study-{i}") is not None for i, o in enumerate(outcomes) if o == "ok")
    with pytest.raises(CapacityError, match="limit is 2"):
        reg.start(reg.add(FakeExperiment()))  # the studies count against the cap too
    made[0].done = True
    reg.start_job(key, "after", FakeJob)  # a finished study frees its slot


def test_the_lock_is_not_held_while_an_experiment_starts(clock):
    """An experiment's start() may take a while (a child process that is busy): meanwhile every other tab
    reads the registry as usual, and the slot it is taking counts against the cap."""
    entered, release = threading.Event(), threading.Event()

    class SlowToStart(FakeExperiment):
        def start(self):
            entered.set()
            assert release.wait(30)
            super().start()

    reg = Registry(max_training=1, clock=clock)
    slow, other = SlowToStart(), FakeExperiment()
    ks, ko = reg.add(slow), reg.add(other)
    starting = threading.Thread(target=reg.start, args=(ks,))
    starting.start()
    try:
        assert entered.wait(10)
        readers = race(3, lambda i: (reg.get(ko), reg.training(), len(reg), reg.job(ko, "x"), reg.reap()))
        assert readers == ["ok"] * 3  # all returned while the start is still blocked
        assert starting.is_alive() and slow.starts == 0
        with pytest.raises(CapacityError, match="limit is 1"):  # the slot being taken is taken
            reg.start(ko)
        assert other.starts == 0
    finally:
        release.set()
        starting.join(10)
    assert slow.status == "running" and reg.training() == 1


def test_the_lock_is_not_held_while_a_study_is_made(clock):
    entered, release = threading.Event(), threading.Event()

    def slow_factory():
        entered.set()
        assert release.wait(30)
        return FakeJob()

    reg = Registry(max_training=1, clock=clock)
    key = reg.add(FakeExperiment())
    got = []
    starting = threading.Thread(target=lambda: got.append(reg.start_job(key, "race", slow_factory)))
    starting.start()
    try:
        assert entered.wait(10)
        assert race(3, lambda i: (reg.get(key), reg.training(), reg.job(key, "race"))) == ["ok"] * 3
        assert reg.job(key, "race") is None  # not made yet
        with pytest.raises(CapacityError):
            reg.start_job(key, "another", FakeJob)
        # the same study asked for again while it is being made: the one being made, not a second one
        again = threading.Thread(target=lambda: got.append(reg.start_job(key, "race", FakeJob)))
        again.start()
    finally:
        release.set()
        starting.join(10)
    again.join(10)
    assert len(got) == 2 and got[0] is got[1] is reg.job(key, "race")


def test_a_start_that_fails_gives_its_slot_back(clock):
    class Broken(FakeExperiment):
        def start(self):
            raise RuntimeError("the training process ended unexpectedly")

    reg = Registry(max_training=1, clock=clock)
    kb, ko = reg.add(Broken()), reg.add(FakeExperiment())
    with pytest.raises(RuntimeError, match="ended unexpectedly"):
        reg.start(kb)
    reg.start(ko)  # the failed start holds no slot
    assert reg.training() == 1

    def broken_factory():
        raise ValueError("no BN layers")

    reg.get(ko).status = "paused"
    with pytest.raises(ValueError, match="no BN layers"):
        reg.start_job(ko, "study", broken_factory)
    assert reg.job(ko, "study") is None
    reg.start_job(ko, "study", FakeJob)  # nor does a failed study


def test_a_run_that_finished_unwatched_does_not_hold_a_slot(clock):
    """A child process's status is the last one it reported: the registry asks the ones last seen running
    again (outside its lock) before it counts them."""

    class FinishedSinceLastSeen(FakeExperiment):
        def refresh(self, timeout=2.0):
            self.refreshes += 1
            self.status = "finished"
            return self.status

    reg = Registry(max_training=1, clock=clock)
    done, idle = FinishedSinceLastSeen("running"), FakeExperiment()
    reg.add(done)
    reg.start(reg.add(idle))
    assert done.refreshes == 1 and idle.status == "running"


class Watchful(FakeExperiment):
    """Records, for every call the registry makes into it, whether the registry's lock was held."""

    registry = None

    def __init__(self, status="idle"):
        super().__init__(status)
        self.calls = []

    def _seen(self, what):
        self.calls.append((what, self.registry._lock.locked()))

    @property
    def status(self):
        if self.registry is not None:
            self._seen("status")
        return self._status

    @status.setter
    def status(self, value):
        self._status = value

    def refresh(self, timeout=2.0):
        self._seen("refresh")
        return super().refresh(timeout)

    def start(self):
        self._seen("start")
        super().start()

    def stop(self, timeout=1.0):
        self._seen("stop")
        return super().stop(timeout)


def test_no_call_into_an_experiment_is_made_under_the_lock(clock):
    reg = Registry(max_training=3, max_kept=2, grace_s=10, clock=clock)
    Watchful.registry = reg

    def factory():
        assert not reg._lock.locked(), "a study's factory ran under the registry's lock"
        return FakeJob()

    try:
        exps = [Watchful("running"), Watchful(), Watchful()]
        keys = [reg.add(exps[0])]
        clock.now += 1
        keys.append(reg.add(exps[1]))
        clock.now += 1
        keys.append(reg.add(exps[2]))  # over max_kept: the oldest idle one (exps[1]) is dropped and stopped
        assert exps[1].stops == [0]
        reg.start(keys[2])
        reg.start_job(keys[0], "study", factory)
        clock.now += 100
        reg.reap()
        reg.close()
        calls = [c for e in exps for c in e.calls]
        assert {what for what, _ in calls} >= {"status", "refresh", "start", "stop"}
        under_lock = [what for what, locked in calls if locked]
        assert set(under_lock) <= {"status"}, under_lock  # only the cached status, to count what runs
    finally:
        Watchful.registry = None


def test_add_reads_no_status_under_the_lock(clock):
    reg = Registry(max_kept=1, clock=clock)
    Watchful.registry = reg
    try:
        first, second = Watchful("paused"), Watchful()
        reg.add(first)
        clock.now += 1
        reg.add(second)
        assert first.stops == [0]  # dropped: the oldest idle one
        assert [locked for what, locked in first.calls + second.calls if what == "status"] == [False]
    finally:
        Watchful.registry = None


def test_a_stopped_child_holds_up_no_other_tab(clock, quick_deadlines, make_experiment, monkeypatch):
    """kill -STOP on one experiment's child, its own tab's refresh waiting on it: another tab's Start (which asks
    the running experiments how they are) and a new experiment go on without waiting for it."""
    monkeypatch.setenv("BNVIZ_THREADS", "1")
    reg = Registry(max_training=3, clock=clock)
    hung, other = (make_experiment(SLOW, (LaneSpec("none"),), cls=ExperimentProcess) for _ in range(2))
    kh, ko = reg.add(hung), reg.add(other)
    reg.start(kh)
    pid = hung._proc.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        threading.Thread(target=hung.snapshot, daemon=True).start()  # its own tab's refresh
        assert until(lambda: hung._channel.sent_at is not None, timeout=20)  # its request is sent, and waits
        finished = threading.Event()
        threading.Thread(target=lambda: (reg.start(ko), finished.set()), daemon=True).start()
        assert finished.wait(20), "Start in another tab waited on the stopped child"  # it waited 60 s before
        assert other.refresh() == "running" and hung.status == "running"  # the stopped one: as last seen
        fresh = make_experiment(SLOW, (LaneSpec("none"),), cls=ExperimentProcess)
        reg.add(fresh)
        assert len(reg) == 3 and until(lambda: not hung.responding, timeout=20)
        assert reg.reap() == [] and hung.stop(timeout=0) is False  # not told (it cannot listen): killed
        assert until(lambda: not hung._proc.is_alive(), timeout=20)
    finally:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass


def test_a_run_has_a_control_key_of_128_bits_and_a_separate_public_watch_id(clock):
    reg = Registry(clock=clock)
    e = FakeExperiment()
    key = reg.add(e)
    watch = reg.watch_id(key)
    assert len(base64.urlsafe_b64decode(key + "=" * (-len(key) % 4))) * 8 >= 128
    assert watch and watch != key and watch not in key and key not in watch
    assert reg.watched(watch) == (key, e)
    # the watch link edited into ?run= (or a run key into ?watch=) finds nothing
    assert reg.get(watch) is None and reg.touch(watch) is None
    assert reg.watched(key) is None
    assert reg.watched("no-such-id") is None and reg.watch_id("no-such-id") is None


def test_watching_keeps_a_run_alive_and_a_run_gone_takes_its_watch_id(clock):
    reg = Registry(grace_s=10, clock=clock)
    e = FakeExperiment()
    key = reg.add(e)
    watch = reg.watch_id(key)
    for _ in range(3):  # only viewers look at it
        clock.now += 8
        assert reg.watched(watch) == (key, e)
        assert reg.reap() == []
    clock.now += 11
    assert reg.reap() == [key]
    assert reg.watched(watch) is None and reg.watch_id(key) is None
    other = reg.add(FakeExperiment())
    reg.close()
    assert reg.watch_id(other) is None


def test_newest_is_the_run_added_last_that_is_still_here(clock):
    reg = Registry(grace_s=10, clock=clock)
    assert reg.newest() is None
    first = reg.add(FakeExperiment())
    clock.now += 5
    second = reg.add(FakeExperiment())
    assert reg.newest() == second
    clock.now += 6  # the first is gone; the second is not
    reg.touch(second)
    assert reg.reap() == [first] and reg.newest() == second
