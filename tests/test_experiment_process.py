"""ExperimentProcess: engine.Experiment's interface with the training in a child process.

The reference is engine.Experiment itself: the same settings, lanes and data give the same tables, through
the mirror, step for step. Then what only a process can do: die, be restarted, and not outlive its server.
"""

import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import until
from torch import nn

from bnviz.live.engine import Experiment
from bnviz.live.experiment_process import ExperimentProcess
from bnviz.live.snapshot import DEFAULT_LANES, LaneSpec, LaneStatus, Settings, Status
from bnviz.machine.device import DeviceError

ROOT = Path(__file__).resolve().parents[1]
N_TRAIN, N_TEST, BATCH = 256, 200, 32  # conftest's tiny_data: 8 steps an epoch


@pytest.fixture
def data(tiny_data):
    return tiny_data


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    monkeypatch.setenv("BNVIZ_THREADS", "1")  # the same arithmetic in both processes: tables compare exactly


def settings(**kw):
    base = dict(
        lr=0.1, batch_size=BATCH, epochs=2, probe_every=3, val_every=4, val_size=50, device="cpu", dist_capacity=4
    )
    return Settings(**{**base, **kw})


@pytest.fixture
def make(make_experiment):
    """make(cls, data, settings, lanes): stopped, and checked gone, at teardown."""

    def build(cls, data, s, lanes=DEFAULT_LANES):
        return make_experiment(s, lanes, cls=cls, data=data)

    return build


def gone(pid, timeout=15.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:
            if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
                return True  # exited, waiting to be reaped by a parent that is itself gone
        except (FileNotFoundError, ProcessLookupError):  # reaped between the kill(0) and the read
            return True
        time.sleep(0.05)
    return False


def assert_same_snapshots(a, b):
    assert [l.label for l in a.lanes] == [l.label for l in b.lanes]
    for la, lb in zip(a.lanes, b.lanes):
        assert (la.step, la.epoch, la.status, la.diverged_at, la.bn_bypassed) == (
            lb.step,
            lb.epoch,
            lb.status,
            lb.diverged_at,
            lb.bn_bypassed,
        )
        assert la.tables.keys() == lb.tables.keys()
        for table in la.tables:
            assert la.tables[table].keys() == lb.tables[table].keys(), table
            for col in la.tables[table]:
                if col == "images_per_s":  # a timing, different in every run
                    continue
                x, y = la.tables[table][col], lb.tables[table][col]
                assert x.shape == y.shape and x.dtype == y.dtype, (table, col)
                assert np.array_equal(x, y, equal_nan=True), (table, col)
                assert not x.flags.writeable


# ------------------------------------------------------------------------------- same as the engine
def test_same_tables_as_the_in_process_engine_step_by_step(data, make):
    """Snapshots taken along the way (so the mirror is updated in pieces, and the distributions thin)
    equal the in-process engine's at the same steps."""
    here = make(Experiment, data, settings(epochs=3))
    there = make(ExperimentProcess, data, settings(epochs=3))
    for steps in (1, 2, 5, 8):  # across the end of the first two epochs
        for exp in (here, there):
            exp.step(steps)
            assert exp.wait(60)
        a, b = here.snapshot(), there.snapshot()
        assert a.status == b.status == "paused"
        assert_same_snapshots(a, b)
    assert len(b.lanes[1].tables["dists"]["step"]) <= 4 < len(b.lanes[1].tables["probes"]["step"])
    assert b.device.startswith("CPU (1 torch thread")


def test_runs_to_the_end_and_reports_what_the_engine_reports(data, make):
    exp = make(ExperimentProcess, data, settings())
    exp.start()
    assert exp.wait(120)
    snap = exp.snapshot()
    assert exp.status == snap.status == "finished"
    assert [l.step for l in snap.lanes] == [16, 16]
    assert snap.lanes[1].tables["epochs"]["epoch"].tolist() == [1.0, 2.0]
    header = exp.header()
    assert header["lanes"] == [{"norm": "none", "activation": "sigmoid"}, {"norm": "scratch", "activation": "sigmoid"}]
    assert header["settings"]["batch_size"] == BATCH


def test_lane_commands_reach_the_child_and_the_mirror_follows(data, make):
    exp = make(ExperimentProcess, data, settings())
    exp.step(5)
    assert exp.wait(60)
    exp.set_lane(0, LaneSpec("torch", "relu"))  # lane 0 restarts from step 0: its mirror starts again
    snap = exp.snapshot()
    assert exp.lanes[0].spec == LaneSpec("torch", "relu") and snap.lanes[0].step == 0
    assert len(snap.lanes[0].tables["steps"]) == 0 and snap.lanes[1].step == 5
    exp.add_lane(LaneSpec("scratch", "relu"))
    assert [l.index for l in exp.lanes] == [0, 1, 2]
    exp.step(2)
    assert exp.wait(60)
    snap = exp.snapshot()
    assert [l.step for l in snap.lanes] == [2, 7, 2]
    exp.remove_lane(0)
    snap = exp.snapshot()
    assert [l.label for l in snap.lanes] == ["A · BN scratch", "B · BN scratch · relu"]
    assert snap.lanes[0].tables["steps"]["step"].tolist() == list(range(1, 8))
    exp.set_lr(0.5)
    assert exp.settings.lr == 0.5 and exp.snapshot().settings.lr == 0.5
    exp.reset(settings(batch_size=64))
    snap = exp.snapshot()
    assert snap.status == "idle" and exp.settings.batch_size == 64 and all(l.step == 0 for l in snap.lanes)
    assert all(l.steps_per_epoch == 4 for l in snap.lanes)


def test_errors_come_back_as_the_same_exceptions(data, make):
    exp = make(ExperimentProcess, data, settings())
    with pytest.raises(ValueError, match="learning rate must be a positive number"):
        exp.set_lr(-1)
    for command in (
        exp.remove_lane,
        exp.clone_model,
        lambda i: exp.set_lane(i, LaneSpec()),
        lambda i: exp.set_bn_bypass(i, True),
    ):
        with pytest.raises(ValueError, match="there is no lane 5"):  # as in the in-process engine
            command(5)
    with pytest.raises(ValueError, match="BN off has no BN layers to switch"):
        exp.set_bn_bypass(0, True)
    with pytest.raises((ValueError, DeviceError), match="device is chosen|CUDA was asked for"):
        exp.reset(settings(device="cuda"))  # this one is on the CPU
    assert exp.refresh() == "idle"  # nothing was lost: the experiment still answers


def test_a_set_up_that_fails_in_the_child_raises_here_and_leaves_nothing_running():
    before = {p.pid for p in multiprocessing.active_children()}
    with pytest.raises(AttributeError):
        ExperimentProcess(object(), settings())  # not a dataset: Experiment() fails in the child
    assert all(gone(p.pid) for p in multiprocessing.active_children() if p.pid not in before)


# ------------------------------------------------------------------------------- models
def test_clone_model_matches_the_engine_and_keeps_bn_switched_off(data, make):
    here = make(Experiment, data, settings())
    there = make(ExperimentProcess, data, settings())
    for exp in (here, there):
        exp.step(6)
        assert exp.wait(60)
    a, b = here.clone_model(1), there.clone_model(1)
    assert a.state_dict().keys() == b.state_dict().keys()
    for k in a.state_dict():
        torch.testing.assert_close(a.state_dict()[k], b.state_dict()[k], rtol=0, atol=0, msg=k)
    x = data.test_images[:16].unsqueeze(1).float() / 255
    a.eval(), b.eval()
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)

    there.set_bn_bypass(1, True)
    assert there.snapshot().lanes[1].bn_bypassed
    c = there.clone_model(1)
    assert isinstance(c.bn1, nn.Identity) and isinstance(c.bn4, nn.Identity)
    from bnviz.step.models import set_bn_bypass

    set_bn_bypass(c, False)  # the BN layers come back with what they learned
    torch.testing.assert_close(c.bn1.gamma, b.bn1.gamma, rtol=0, atol=0)


# ------------------------------------------------------------------------------- a process's life
def test_a_killed_child_shows_as_an_error_keeps_its_curves_and_reset_starts_a_new_one(data, make):
    exp = make(ExperimentProcess, data, settings())
    exp.step(4)
    assert exp.wait(60)
    steps_before = exp.snapshot().lanes[1].tables["steps"]["step"].tolist()
    os.kill(exp._proc.pid, signal.SIGKILL)
    exp._proc.join(10)
    assert exp.status == "paused"  # what it last said: reading the status asks nothing
    assert exp.refresh() == "error" and exp.status == "error"
    snap = exp.snapshot()
    assert snap.status == "error" and "ended unexpectedly" in snap.error and "Reset" in snap.error
    assert snap.lanes[1].tables["steps"]["step"].tolist() == steps_before  # the curves stay on screen
    with pytest.raises(RuntimeError, match="Press Reset"):
        exp.start()
    exp.reset()
    assert exp.status == "idle" and exp.alive
    exp.step(2)
    assert exp.wait(60) and [l.step for l in exp.snapshot().lanes] == [2, 2]


def test_stop_ends_the_child_and_later_commands_say_so(data, make):
    exp = make(ExperimentProcess, data, settings())
    exp.start()
    pid = exp._proc.pid
    assert exp.stop(timeout=10)
    assert gone(pid) and not exp.alive
    with pytest.raises(RuntimeError, match="stopped"):
        exp.start()
    assert exp.status == "stopped"
    assert exp.snapshot().status == "stopped"


def test_stop_without_waiting_still_ends_the_child(data, make, monkeypatch):
    exp = make(ExperimentProcess, data, settings(epochs=100))
    exp.start()
    pid, joins = exp._proc.pid, []
    monkeypatch.setattr(exp._proc, "join", lambda timeout=None: joins.append(timeout))
    monkeypatch.setattr(exp._proc, "is_alive", lambda: True)  # the child, in the instant it takes to end
    assert exp.stop(timeout=0) is False  # as the registry's janitor needs: at once, saying it is not gone yet
    assert joins == [] and exp.status == "stopped"  # it did not wait for the child
    monkeypatch.undo()
    assert gone(pid)


def test_status_asks_the_child_nothing_and_refresh_asks_it_now(data, make, monkeypatch):
    exp = make(ExperimentProcess, data, settings())
    requests = []
    send = exp._request
    monkeypatch.setattr(exp, "_request", lambda op, *a, **kw: requests.append(op) or send(op, *a, **kw))
    for _ in range(50):
        assert exp.status == "idle"
    assert requests == []
    assert exp.refresh() == "idle" and requests == ["state"]
    exp.start()
    assert exp.status == "running"  # the reply to start brought the state
    assert requests == ["state", "threads", "call"]


def test_a_finished_run_shows_as_finished_after_a_snapshot_or_a_refresh(data, make):
    """Nothing polls a child by itself: the state comes with every reply, a snapshot's included."""
    by_snapshot, by_refresh = make(ExperimentProcess, data, settings()), make(ExperimentProcess, data, settings())
    for exp in (by_snapshot, by_refresh):
        exp.start()
    assert until(lambda: by_snapshot.snapshot().status == "finished", timeout=120)
    assert by_snapshot.status is Status.FINISHED
    snap = by_snapshot.snapshot()  # a snapshot that says finished holds every row
    assert [l.tables["steps"]["step"][-1] for l in snap.lanes] == [16, 16]
    assert all(l.status is LaneStatus.FINISHED for l in snap.lanes)  # enum members, pickled by the child
    assert until(lambda: by_refresh.refresh() == "finished", timeout=120)
    assert by_refresh.status is Status.FINISHED and by_refresh.wait(1)


def test_refresh_gives_up_at_its_deadline_on_a_child_that_does_not_answer(data, make, quick_deadlines):
    exp = make(ExperimentProcess, data, settings())
    os.kill(exp._proc.pid, signal.SIGSTOP)  # frozen: alive, but answers nothing
    try:
        with pytest.raises(TimeoutError, match="did not answer in time"):
            exp.refresh(timeout=0.5)
        assert exp.status == "idle"  # the status still answers, from what the child last said
    finally:
        os.kill(exp._proc.pid, signal.SIGCONT)
    exp.step(2)  # the late reply to the refresh that gave up is dropped; the next request gets its own
    assert exp.wait(60) and [l.step for l in exp.snapshot().lanes] == [2, 2]


class Stopped:
    """``with Stopped(exp):`` the experiment's child frozen by SIGSTOP (alive, answering nothing); SIGCONT after,
    if it still exists."""

    def __init__(self, exp):
        self.pid = exp._proc.pid

    def __enter__(self):
        os.kill(self.pid, signal.SIGSTOP)
        return self

    def __exit__(self, *exc):
        try:
            os.kill(self.pid, signal.SIGCONT)
        except ProcessLookupError:
            pass


def within(seconds, fn, *args):
    """fn(*args) in a thread: what it returned (or raised), or AssertionError if it hung past ``seconds``."""
    out = {}

    def go():
        try:
            out["value"] = fn(*args)
        except BaseException as e:
            out["error"] = e

    t = threading.Thread(target=go, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"{getattr(fn, '__name__', fn)} still waiting after {seconds} s"
    if "error" in out:
        raise out["error"]
    return out["value"]


HANGS = 20  # far below the 60 s a request used to wait on a stopped child, far above what it waits now


@pytest.mark.parametrize("asked, lowered", [(None, 10), ("0", 0)])
def test_the_training_child_runs_below_the_page_in_cpu_priority(data, make, monkeypatch, asked, lowered):
    """With the cores short, the server and the browser run first; $BNVIZ_CHILD_NICE=0 keeps one priority."""
    if asked is None:
        monkeypatch.delenv("BNVIZ_CHILD_NICE", raising=False)
    else:
        monkeypatch.setenv("BNVIZ_CHILD_NICE", asked)
    exp = make(ExperimentProcess, data, settings())
    exp.step(2)
    assert exp.wait(60) and [l.step for l in exp.snapshot().lanes] == [2, 2]  # it trains at that priority
    here = os.getpriority(os.PRIO_PROCESS, 0)
    assert os.getpriority(os.PRIO_PROCESS, exp._proc.pid) == min(19, here + lowered)


def test_a_stopped_child_answers_nothing_and_nothing_waits_on_it(data, make, quick_deadlines):
    """kill -STOP: a snapshot gives the last one, marked not responding, without waiting long; so does every
    later one, at once; a command says so; another experiment is not held up; Reset kills it and starts anew."""
    exp, other = make(ExperimentProcess, data, settings(epochs=50)), make(ExperimentProcess, data, settings())
    exp.step(3)
    assert exp.wait(60)
    before = exp.snapshot()
    assert before.responding and [l.step for l in before.lanes] == [3, 3]
    old_pid = exp._proc.pid
    with Stopped(exp):
        snap = within(HANGS, exp.snapshot)
        assert not snap.responding and not exp.responding
        assert snap.status == "paused" and [l.step for l in snap.lanes] == [3, 3]  # the curves it had
        assert snap.lanes[1].tables["steps"]["step"].tolist() == [1, 2, 3]
        for _ in range(5):  # nothing more is sent to it: each later snapshot returns at once
            assert not within(1.0, exp.snapshot).responding
        with pytest.raises(TimeoutError, match="not responding"):
            within(HANGS, exp.start)  # a command waits a moment for a late reply, then says so
        with pytest.raises(TimeoutError):
            within(1.0, exp.refresh)
        assert within(HANGS, exp.wait, 5)  # a wait gives up on it
        other.step(2)  # another experiment goes on as ever
        assert other.wait(60) and [l.step for l in within(HANGS, other.snapshot).lanes] == [2, 2]
        header = within(HANGS, exp.header)  # from the last snapshot: the curves can still be saved
        assert [l["norm"] for l in header["lanes"]] == ["none", "scratch"] and header["settings"]["epochs"] == 50
        within(HANGS, exp.reset)  # kills it (a stopped process acts on SIGKILL only) and starts a new one
        assert gone(old_pid) and exp._proc.pid != old_pid
    assert exp.alive and exp.responding and exp.status == "idle"
    assert [l.step for l in exp.snapshot().lanes] == [0, 0] and exp.snapshot().settings.epochs == 50
    exp.step(2)
    assert exp.wait(60) and [l.step for l in exp.snapshot().lanes] == [2, 2]


def test_a_request_in_flight_on_a_stopped_child_blocks_no_other_caller(data, make, quick_deadlines):
    """A command sent just before the child froze waits for its reply; meanwhile a snapshot does not queue
    behind it for long, and Reset ends the wait at once."""
    exp = make(ExperimentProcess, data, settings(epochs=50))
    with Stopped(exp) as frozen:
        outcome = {}

        def command():
            try:
                exp.extend(1)  # a command's own deadline is exp.timeout (60 s)
            except Exception as e:
                outcome["error"] = e

        t = threading.Thread(target=command, daemon=True)
        t.start()
        assert until(lambda: exp._channel.sent_at is not None, timeout=10)
        snap = within(HANGS, exp.snapshot)  # waits for the pipe at most a status call's deadline
        assert not snap.responding and snap.lanes and [l.step for l in snap.lanes] == [0, 0]
        assert not within(1.0, exp.snapshot).responding  # the request in flight is stale now: no waiting at all
        within(HANGS, exp.reset)
        t.join(HANGS)
        assert not t.is_alive() and isinstance(outcome.get("error"), RuntimeError)
        assert gone(frozen.pid)
    assert exp.alive and exp.responding and exp.status == "idle"
    exp.step(1)
    assert exp.wait(60) and [l.step for l in exp.snapshot().lanes] == [1, 1]


def test_a_child_that_answers_again_is_shown_as_responding_again(data, make, quick_deadlines):
    exp = make(ExperimentProcess, data, settings())
    with Stopped(exp):
        assert not within(HANGS, exp.snapshot).responding
    assert until(lambda: exp.snapshot().responding, timeout=30)  # its late reply is read: it answers again
    exp.step(2)
    assert exp.wait(60) and [l.step for l in exp.snapshot().lanes] == [2, 2]


def test_stop_kills_a_child_that_does_not_answer(data, make, quick_deadlines):
    exp = make(ExperimentProcess, data, settings())
    with Stopped(exp) as frozen:
        assert not within(HANGS, exp.snapshot).responding
        within(HANGS, exp.stop, 0)  # the janitor's stop: at once
        assert gone(frozen.pid)
    assert exp.status == "stopped" and not exp.alive


def test_with_stops_the_child(data):
    with ExperimentProcess(data, settings()) as exp:
        pid = exp._proc.pid
        exp.step(1)
        assert exp.wait(60)
    assert not exp.alive and exp.status == "stopped" and gone(pid)
    with pytest.raises(KeyError):
        with ExperimentProcess(data, settings()) as failing:
            pid = failing._proc.pid
            raise KeyError("inside")
    assert not failing.alive and gone(pid)


@pytest.mark.slow  # child processes or large memory: several seconds
def test_the_child_does_not_outlive_a_server_that_is_killed(tmp_path):
    """A server killed with SIGKILL runs no clean-up: its training process must notice and end by itself."""
    script = tmp_path / "server.py"
    script.write_text(
        textwrap.dedent("""
        import time
        from bnviz.data.fashion_mnist import random_dataset
        from bnviz.live.snapshot import Settings
        from bnviz.live.experiment_process import ExperimentProcess
        exp = ExperimentProcess(random_dataset(256, 100), Settings(batch_size=32, epochs=1000, val_size=50))
        exp.start()
        print(exp._proc.pid, flush=True)
        time.sleep(600)
    """)
    )
    server = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        child = int(server.stdout.readline())
        assert not gone(child, timeout=0.5)  # training
        server.kill()
        server.wait(10)
        assert gone(child), "the training process kept running after its server was killed"
    finally:
        server.kill()


def test_the_learning_rate_race_gives_the_same_results_in_child_processes(data):
    """The dashboard races through ExperimentProcess; the verdicts must not depend on where it trains."""
    from bnviz.studies.batch_and_lr import lr_race

    kwargs = dict(lrs=(0.1, 30.0), steps=8, batch_size=BATCH, val_size=50)
    here = lr_race(data, **kwargs)
    there = lr_race(data, **kwargs, experiment=ExperimentProcess)
    assert [(r.lr, r.norm, r.diverged_at, r.verdict) for r in here] == [
        (r.lr, r.norm, r.diverged_at, r.verdict) for r in there
    ]
    for a, b in zip(here, there):
        if torch.cuda.is_available():  # "auto" trains on the GPU, whose kernels are not bitwise deterministic
            np.testing.assert_allclose(a.loss, b.loss, rtol=1e-5, atol=1e-6)
        else:  # on the CPU the same arithmetic in another process gives the same bits
            np.testing.assert_array_equal(a.loss, b.loss)


@pytest.mark.slow  # child processes or large memory: several seconds
@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_a_main_script_without_a_guard_is_not_run_again_in_the_child(tmp_path, method):
    """Under Streamlit the page is __main__ and has no `if __name__ == "__main__"` guard: multiprocessing
    would run it again in every child. Here a script without a guard starts an experiment, with each start
    method (spawn is what macOS and Windows use); it must train, once, and print its result."""
    script = tmp_path / "page.py"
    script.write_text(
        textwrap.dedent("""
        import sys
        print("page ran", flush=True)
        from bnviz.data.fashion_mnist import random_dataset
        from bnviz.live.snapshot import Settings
        from bnviz.live.experiment_process import ExperimentProcess
        from bnviz.live.processes import start_method
        exp = ExperimentProcess(random_dataset(256, 100), Settings(batch_size=32, epochs=1, val_size=50))
        exp.step(3)
        exp.wait(60)
        print(start_method(), [lane.step for lane in exp.snapshot().lanes], flush=True)
        exp.stop()
    """)
    )
    out = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "BNVIZ_START_METHOD": method},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines() == ["page ran", f"{method} [3, 3]"]


def test_ctrl_c_does_not_reach_the_training_process(data):
    """Ctrl-C in the terminal of `make run` signals the whole process group: the child must not print a
    traceback and die on its own; it ends when the server closes its pipe."""
    import signal

    with ExperimentProcess(data, Settings(batch_size=BATCH, epochs=1, val_size=50)) as exp:
        os.kill(exp._proc.pid, signal.SIGINT)
        exp.step(1)
        assert exp.wait(30) and exp.alive
        assert [lane.step for lane in exp.snapshot().lanes] == [1, 1]


def test_stop_while_a_request_waits_kills_the_child_and_it_shows_as_stopped(data, make, quick_deadlines):
    """The janitor's stop(timeout=0) does not queue behind a request in flight: the child is killed, the
    request ends, and the experiment reads as stopped (not as a crash)."""
    exp = make(ExperimentProcess, data, settings())
    with Stopped(exp) as frozen:
        t = threading.Thread(target=exp.snapshot, daemon=True)
        t.start()
        assert until(lambda: exp._channel.sent_at is not None, timeout=10)
        within(HANGS, exp.stop, 0)
        t.join(HANGS)
        assert not t.is_alive() and gone(frozen.pid)
    assert exp.status == "stopped" and exp.snapshot().status == "stopped" and not exp.alive
