"""An experiment that trains in a child process, behind the same interface as ``engine.Experiment``.

Why: the dashboard's server builds its pages in Python. With the training thread in the same process,
every chart built for a refresh holds the GIL that the training thread needs between torch operations;
with the page open, training ran at 61% of its headless speed. Here the child process owns the models,
the optimisers and the histories; the server keeps a mirror of the tables and asks, once per refresh,
only for the rows it lacks.

    server process (ExperimentProcess)                child process (_serve)
    start(), pause(), set_lane(...) ──── request ──►  the same method of an engine.Experiment,
                                    ◄─── reply ────   whose own worker thread trains
    snapshot(): marks per table ──────── "sync" ───►  LaneHistory.rows_since(marks) under the history lock
    mirror LaneHistory.apply(rows) ◄─────────────────  new rows only (a thinned table whole)
    └─► Snapshot, exactly as engine.Experiment.snapshot() would return it

Every reply carries the child's state (status, error, settings, lanes), and ``status`` answers from the last
one: reading it never waits on the child. ``refresh()`` asks for the state now, with a short deadline.

The child is started and asked through ``processes`` (the start context, the request/reply channel with its
deadlines). The dataset's tensors travel as shared memory (torch's multiprocessing reductions): no copy per
experiment.

If the child dies (killed, out of memory), the experiment shows status "error" with a message, keeps the
curves it had, and ``reset()`` starts a new child.

If the child lives but does not answer (stopped with SIGSTOP, swapped out, starved of CPU), nothing waits on it
for long: a snapshot gives up after ``silent_after`` seconds and returns the last one, marked ``responding=False``;
from then on nothing more is sent to it (a snapshot returns at once, a command raises ``TimeoutError``) until a
late reply shows that it answers again. The pipe's lock is only waited on up to the caller's own deadline, and
never behind a request that has itself gone unanswered. ``reset()`` kills a child that does not answer and
starts a new one; ``stop()`` kills it.
"""

import dataclasses
import itertools
import signal
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.multiprocessing  # noqa: F401  (registers the reductions that share tensors through shared memory)

from bnviz.live.engine import COMMANDS, Experiment
from bnviz.live.history import LaneHistory
from bnviz.live.processes import NOT_RESPONDING, Channel, ChildGone, portable, start
from bnviz.live.snapshot import DEFAULT_LANES, MAX_LANES, LaneSpec, LaneView, Settings, Snapshot, Status
from bnviz.machine import device as devices
from bnviz.machine import env
from bnviz.step.models import build_lenet, set_bn_bypass

SERVED = tuple(c for c in COMMANDS if c != "clone_model") + ("header",)  # a model comes back as its state ("clone")


@dataclass(frozen=True)
class LaneInfo:
    """What the server knows of a lane between snapshots."""

    index: int
    spec: object


class ExperimentProcess:
    """engine.Experiment's interface; the experiment itself lives in a child process."""

    _running: "weakref.WeakSet[ExperimentProcess]" = (
        weakref.WeakSet()
    )  # experiments of this server last seen training: they share the CPU threads

    def __init__(
        self,
        data: Any,
        settings: Settings = Settings(),
        lanes: Sequence[LaneSpec] = DEFAULT_LANES,
        *,
        name: str = "experiment",
        shared_cpu: bool = True,
        timeout: float = 60.0,
        silent_after: float | None = None,
    ) -> None:
        """``silent_after``: seconds without a reply after which the child is "not responding" (default
        ``processes.STATUS_TIMEOUT_S``)."""
        if not 1 <= len(lanes) <= MAX_LANES:
            raise ValueError(f"an experiment has 1 to {MAX_LANES} lanes, got {len(lanes)}")
        self.name, self.shared_cpu, self.timeout = name, shared_cpu, timeout
        self.device = devices.resolve_device(settings.device)  # a DeviceError here, as in engine.Experiment
        self._dataset = data
        self._channel = Channel(silent_after=silent_after)
        self._stopped = False
        self._spawn(settings, tuple(lanes))

    # ------------------------------------------------------------------ the child process
    def _spawn(self, settings, lanes):
        threads = self._threads()
        self._proc, conn = start(
            _serve,
            self._dataset,
            settings,
            lanes,
            self.name,
            self.shared_cpu,
            threads,
            env.child_nice(),
            name=self.name,
        )
        self._channel.attach(conn)
        self._dead, self._mirrors = None, {}
        self._last = getattr(self, "_last", None)  # after a failed restart, the page keeps the old curves
        self.settings, self.lanes = settings, [LaneInfo(i, s) for i, s in enumerate(lanes)]
        self._state = {"status": Status.IDLE, "error": None, "busy": False}
        try:
            self._mirror_snapshot()  # waits for the child: raises what its set-up raised
        except BaseException:
            self._proc.terminate()
            raise

    def _threads(self):
        """This experiment's share of the threads that a process sharing the machine may use."""
        others = sum(1 for e in list(self._running) if e is not self)
        return max(1, devices.choose_threads(self.shared_cpu) // (others + 1))

    def _drain(self, wait=0.0):
        """Under the lock: read the late replies that have come in (a child that answers again), waiting for the
        first up to ``wait`` seconds."""
        try:
            for state in self._channel.late_replies(wait):
                if state:
                    self._update(state)
        except ChildGone:
            self._died()

    def _request(self, op, *args, timeout=None):
        timeout = timeout or self.timeout
        channel = self._channel
        if not channel.acquire(timeout):
            raise self._silent()
        try:
            if channel.unanswered and not self._dead:
                self._drain(0.0 if timeout <= channel.silent_after else channel.silent_after)  # a command waits
                if channel.unanswered:
                    raise TimeoutError(NOT_RESPONDING)  # nothing is sent to a child that has not answered the last
            if self._dead or self._stopped:
                raise RuntimeError(self._dead or "the experiment has stopped")
            try:
                ok, value, state = channel.ask(op, args, timeout)
            except ChildGone:
                self._died()
                raise RuntimeError(self._dead) from None
            if state:
                self._update(state)
            if not ok:
                raise value
            return value
        finally:
            channel.release()

    def _silent(self):
        return TimeoutError(NOT_RESPONDING if not self.responding else "the training process did not answer in time")

    @property
    def responding(self) -> bool:
        """False while the child, alive, has not answered in time: a request gave up on it and no reply has
        come since, or the request in flight has waited longer than ``silent_after``. Asks nothing."""
        return self._channel.responding

    def _answers(self):
        """Whether the child answers, after reading any late reply (when nobody else is using the pipe)."""
        channel = self._channel
        if not channel.responding and channel.lock.acquire(blocking=False):
            try:
                if channel.unanswered and not self._dead:
                    self._drain()
            finally:
                channel.release()
        return channel.responding

    def _update(self, state):
        self._state = state
        self.settings = state["settings"]
        self.lanes = [LaneInfo(i, spec) for i, spec in enumerate(state["lanes"])]
        (self._running.add if state["status"] == Status.RUNNING else self._running.discard)(self)

    def _died(self):
        self._proc.join(1.0)
        code = self._proc.exitcode
        why = (
            "it was killed, perhaps for lack of memory"
            if code == -9
            else f"exit code {code}"
            if code is not None
            else "it stopped answering"
        )
        self._dead = f"the training process ended unexpectedly ({why}). Press Reset to start it again."
        if not self._stopped:  # a child killed by stop() (its pipe was busy) is stopped, not failed
            self._state = dict(self._state, status=Status.ERROR, error=self._dead, busy=False)
        self._running.discard(self)
        self._channel.close()  # it is not silent, it is gone: the status says so

    # ------------------------------------------------------------------ commands
    def start(self) -> None:
        if not self._dead:
            self._request("threads", self._threads())
        return self._request("call", "start")

    resume = start

    def pause(self) -> None:
        return self._request("call", "pause")

    def step(self, n: int = 1) -> None:
        return self._request("call", "step", n)

    def set_lr(self, lr: float) -> None:
        dataclasses.replace(self.settings, lr=float(lr))  # validates here, with the same message
        return self._request("call", "set_lr", lr)

    def set_lane(self, index: int, spec: LaneSpec) -> None:
        return self._request("call", "set_lane", index, spec)

    def set_bn_bypass(self, index: int, bypass: bool) -> tuple[float, float]:
        return self._request("call", "set_bn_bypass", index, bypass)

    def extend(self, epochs: int = 1) -> int:
        return self._request("call", "extend", epochs)

    def recompute_statistics(self, index: int, batches: int = 200) -> dict:
        return self._request("call", "recompute_statistics", index, batches)

    def add_lane(self, spec: LaneSpec) -> None:
        return self._request("call", "add_lane", spec)

    def remove_lane(self, index: int) -> None:
        return self._request("call", "remove_lane", index)

    def reset(self, settings: Settings | None = None, lanes: Sequence[LaneSpec] | None = None) -> None:
        """As engine.Experiment.reset; after the child died, or while it does not answer, a new child with the
        same set-up (one that does not answer is killed first)."""
        if self._stopped or (not self._dead and self._answers()):
            return self._request("call", "reset", settings, lanes)
        settings = settings or self.settings
        specs = tuple(lanes) if lanes is not None else tuple(l.spec for l in self.lanes)
        if devices.resolve_device(settings.device) != self.device:
            raise ValueError("the device is chosen when an experiment is created; make a new experiment")
        self._proc.kill()  # SIGKILL, outside the lock: a stopped process acts on nothing else; a waiter sees EOF
        self._proc.join(5.0)
        if not self._channel.lock.acquire(timeout=10.0):  # whoever waited on the old child has seen it end by now
            raise TimeoutError("the old training process could not be ended; reload the page")
        try:
            self._channel.close()
            return self._spawn(settings, specs)
        finally:
            self._channel.release()

    def clone_model(self, index: int) -> torch.nn.Module:
        """A copy of lane ``index``'s network as it is now, on the CPU."""
        spec, settings, state, bypassed = self._request("clone", index)
        model = build_lenet(
            spec.norm, spec.activation, seed=settings.seed, bn_eps=settings.bn_eps, bn_momentum=settings.bn_momentum
        )
        model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
        if bypassed:
            set_bn_bypass(model, True)
        return model

    def header(self) -> dict:
        """The child's header; when it has died or does not answer, the same fields from the server's last
        snapshot (so the curves it had can still be saved and replayed)."""
        try:
            return self._request("call", "header", timeout=self._channel.silent_after)
        except (RuntimeError, TimeoutError):
            snap = self._last
            return {
                "name": self.name,
                "settings": dataclasses.asdict(snap.settings),
                "device": str(self.device),
                "lanes": [dataclasses.asdict(lane.spec) for lane in snap.lanes],
                "torch": torch.__version__,
                "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            }

    def stop(self, timeout: float = 1.0) -> bool:
        """Stop training and end the child process; returns True when it is gone.

        A child that does not answer (or whose pipe is busy with a request) is not told: it is killed."""
        silent = not self._answers()
        lock = self._channel.lock
        got = lock.acquire(timeout=min(timeout, self._channel.silent_after)) if timeout else lock.acquire(False)
        try:
            if got and not silent and not self._dead and not self._stopped:
                self._channel.tell("stop")
            self._stopped = True
            self._state = dict(self._state, status=Status.STOPPED, busy=False)
            self._running.discard(self)
        finally:
            if got:
                lock.release()
        if (silent or not got) and not self._dead:
            self._proc.kill()
        if timeout:
            self._proc.join(timeout)
            if self._proc.is_alive():
                self._proc.terminate()
                self._proc.join(1.0)
        return not self._proc.is_alive()

    close = stop

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    # ------------------------------------------------------------------ state
    @property
    def status(self) -> Status:
        """The status in the child's last reply (every command, snapshot and refresh brings one): no waiting."""
        return self._state["status"]

    def refresh(self, timeout: float = 2.0) -> Status:
        """Ask the child for its state now and return the status; TimeoutError if it does not answer in time.

        A child that has died or was stopped is not asked: its status says so.
        """
        if not self._dead and not self._stopped:
            try:
                self._request("state", timeout=timeout)
            except RuntimeError:  # it died just now: _died() set the status to "error"
                pass
        return self._state["status"]

    @property
    def alive(self) -> bool:
        return not self._dead and not self._stopped and self._proc.is_alive()

    def wait(self, timeout: float | None = None, poll: float = 0.02) -> bool:
        """Block until the experiment is no longer running (or stepping); True if it stopped in time."""
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                self.refresh(timeout=self.timeout)
            except TimeoutError:  # as ever: a child that stops answering is not waited on forever
                return True
            if not self._state["busy"]:
                return True
            if end is not None and time.monotonic() > end:
                return False
            time.sleep(poll)

    def snapshot(self) -> Snapshot:
        """The experiment now, as engine.Experiment.snapshot() gives it; the last one seen if the child died,
        or if it did not answer within ``silent_after`` seconds (then marked ``responding=False``)."""
        try:
            return self._mirror_snapshot(self._channel.silent_after)
        except (RuntimeError, TimeoutError):
            return dataclasses.replace(
                self._last,
                status=self._state["status"],
                error=self._state["error"],
                responding=self._dead is not None or self._stopped or self.responding,
            )

    def _mirror_snapshot(self, timeout=None):
        if not self._channel.acquire(timeout or self.timeout):
            raise self._silent()
        try:
            reply = self._request("sync", {sid: m[1] for sid, m in self._mirrors.items()}, timeout=timeout)
            mirrors, views = {}, []
            for sid, meta, changes, marks in reply["lanes"]:
                history = self._mirrors.get(sid, (LaneHistory(), None))[0]
                history.apply(changes)
                mirrors[sid] = (history, marks)
                views.append(LaneView(tables=history.view(), **meta))
            self._mirrors = mirrors
            self._last = Snapshot(
                self._state["status"],
                self._state["error"],
                self.settings,
                reply["device"],
                tuple(views),
                reply["wall_s"],
            )
            return self._last
        finally:
            self._channel.release()


# ---------------------------------------------------------------------- in the child process
def _state(exp):
    return {
        "status": exp.status,
        "error": exp._error,
        "busy": exp.busy,
        "settings": exp.settings,
        "lanes": [lane.spec for lane in exp.lanes],
    }


_sync_ids = itertools.count(1)


def _rows_for_mirror(exp, marks):
    """Each lane's metadata and the rows the server's mirror lacks."""
    lanes = []
    with exp._lock:  # the worker takes it only to append a row, or to replace the lanes
        for lane in list(exp.lanes):
            history = lane.history
            sid = history.__dict__.setdefault("sync_id", next(_sync_ids))  # a new history: a new mirror
            changes, new_marks = history.rows_since(marks.get(sid, {}))
            meta = dict(
                index=lane.index,
                spec=lane.spec,
                status=lane.status,
                error=lane.error,
                step=lane.step,
                epoch=lane.epoch,
                steps_per_epoch=lane.steps_per_epoch,
                images_per_s=lane.images_per_s,
                diverged_at=lane.diverged_at,
                bn_bypassed=lane.bn_bypassed,
            )
            lanes.append((sid, meta, changes, new_marks))
    return {"lanes": lanes, "device": devices.describe(exp.device), "wall_s": exp._wall_s()}


def _clone(exp, index):
    model = exp.clone_model(index)
    lane = exp.lanes[index]
    bypassed = lane.bn_bypassed
    set_bn_bypass(model, False)  # the BN layers set aside come back, so the state holds them
    state = {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}
    return lane.spec, lane.settings, state, bypassed


def _serve(conn, data, settings, lanes, name, shared_cpu, threads, nice=0):
    """The child's main thread: answer the server's requests until it says stop or goes away."""
    # Ctrl-C in the terminal reaches every process of the group: the server shuts down and closes the pipe,
    # which ends this child quietly; a KeyboardInterrupt here would only print a traceback per experiment.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    devices.yield_to_the_page(nice)  # the server and the browser come first when the cores are short
    env.set_threads_variable(threads)  # the engine's thread budget reads it
    torch.set_num_threads(threads)
    try:
        exp = Experiment(data, settings, lanes, name=name, shared_cpu=shared_cpu)
    except BaseException as e:
        try:
            rid, _, _ = conn.recv()
            conn.send((rid, False, portable(e), None))  # the answer to the first request, whichever it is
        except (EOFError, OSError):
            pass
        return
    try:
        while True:
            try:
                rid, op, args = conn.recv()
            except (EOFError, OSError):  # the server is gone: so are we
                break
            if op == "stop":
                break
            state = None
            try:
                if op == "sync":
                    state = _state(exp)  # before the tables: a snapshot that says "finished" holds every row
                    value = _rows_for_mirror(exp, *args)
                elif op == "state":
                    value = None
                elif op == "threads":
                    env.set_threads_variable(args[0])
                    value = None
                elif op == "clone":
                    value = _clone(exp, *args)
                elif op == "call" and args[0] in SERVED:
                    value = getattr(exp, args[0])(*args[1:])
                else:
                    raise ValueError(f"unknown request {op!r}")
                reply = (rid, True, value, state or _state(exp))
            except Exception as e:
                reply = (rid, False, portable(e), _state(exp))
            try:
                conn.send(reply)
            except (EOFError, OSError):
                break
    finally:
        exp.stop(timeout=5.0)
