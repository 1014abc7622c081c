"""Experiments shared by a whole server, so a page reload or a dropped connection finds its run again.

Each experiment has two ids. Its control key (``?run=`` in the teacher's URL) is random, 128 bits from
``secrets``, and commands it; its watch id (``?watch=``, the link and QR code students get) is drawn apart, so
nothing a student sees leads to the control key, and a watch id given as a control key finds nothing.

A page that shows an experiment touches it every few seconds; one that nobody has touched for ``grace_s`` is
stopped and forgotten. At most ``max_training`` experiments train at once: a class of 30 on one laptop gets a
clear message, not a machine that crawls. Thread-safe; no Streamlit here.

The lock guards the registry's dicts only. Under it nothing calls into an experiment's child process,
starts, stops, or runs a study's factory: those happen outside, so one slow experiment never holds up
another tab. A start is still atomic against the cap: under the lock, the running experiments (their last
seen status) plus the starts in flight are counted, and a slot is reserved for this one; the lock is let
go for ``exp.start()`` or ``factory()``; then, under the lock again, the result is recorded and the
reservation given back, whatever happened.
"""

import concurrent.futures
import secrets
import threading
import time

from bnviz.live.interface import LiveExperiment
from bnviz.live.snapshot import Status
from bnviz.live.votes import Polls

CONTROL_BYTES = 16  # a control key's randomness: 128 bits
WATCH_BYTES = 9  # a watch id is public: short enough to type, drawn apart from the control key


class CapacityError(RuntimeError):
    """Too many experiments are training on this server; the message says what to do."""


class Registry:
    def __init__(self, max_training=2, grace_s=120.0, max_kept=24, clock=time.monotonic):
        self.max_training, self.grace_s, self.max_kept, self.clock = max_training, grace_s, max_kept, clock
        self._lock = threading.Lock()
        self._items = {}  # id -> [experiment, last_seen]
        self._jobs = {}  # (id, name) -> Job: studies started from that experiment's page
        self._starting = {}  # id -> Future: an experiment's start in flight (a reserved slot)
        self._creating = {}  # (id, name) -> Future of the Job: a study's factory running (a reserved slot)
        self._watch_ids = {}  # control key -> its public watch id
        self._by_watch = {}  # watch id -> control key
        self._polls = {}  # control key -> Polls: the class's predictions on that run (memory only, go with it)

    def add(self, experiment: LiveExperiment) -> str:
        """Register an experiment; returns its id. Makes room by dropping the oldest idle ones."""
        self.reap()
        with self._lock:
            key = secrets.token_urlsafe(CONTROL_BYTES)
            watch = secrets.token_urlsafe(WATCH_BYTES)
            self._items[key] = [experiment, self.clock()]
            self._watch_ids[key], self._by_watch[watch] = watch, key
            self._polls[key] = Polls()
            over = len(self._items) > self.max_kept
            others = [(k, e) for k, (e, _) in self._items.items() if k != key]
        if not over:
            return key
        running = {k for k, e in others if e.status == Status.RUNNING}  # read outside the lock
        with self._lock:
            idle = sorted(
                (seen, k)
                for k, (_, seen) in self._items.items()
                if k != key and k not in running and k not in self._starting
            )
            extra = len(self._items) - self.max_kept
            dropped = [self._pop(k) for _, k in idle[: max(0, extra)]]
        for e in dropped:
            e.stop(timeout=0)
        return key

    def get(self, key: str) -> LiveExperiment | None:
        """The experiment with this id (and mark it watched), or None."""
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            item[1] = self.clock()
            return item[0]

    touch = get

    def watch_id(self, key: str) -> str | None:
        """The public watch id of the experiment with control key ``key`` (None when there is none)."""
        with self._lock:
            return self._watch_ids.get(key)

    def watched(self, watch_id: str) -> tuple[str, object] | None:
        """(control key, experiment) of the run with this watch id, marked watched; None when there is none.

        The control key stays on the server (shared frames are kept under it); it is never put on a viewer's page.
        """
        with self._lock:
            key = self._by_watch.get(watch_id)
            item = self._items.get(key) if key is not None else None
            if item is None:
                return None
            item[1] = self.clock()
            return key, item[0]

    def polls(self, key: str) -> Polls | None:
        """The questions asked of the class on the run with control key ``key`` (None when there is no such run)."""
        with self._lock:
            return self._polls.get(key)

    def watched_polls(self, watch_id: str) -> Polls | None:
        """The questions of the run with this watch id, for its watch pages (None when there is no such run)."""
        with self._lock:
            key = self._by_watch.get(watch_id)
            return self._polls.get(key) if key is not None else None

    def newest(self) -> str | None:
        """The control key of the experiment added last that is still here (what a class follows), or None."""
        with self._lock:
            return next(reversed(self._items), None)

    def _pop(self, key):
        """Under the lock: forget an experiment and its watch id; returns the experiment."""
        self._by_watch.pop(self._watch_ids.pop(key, None), None)
        self._polls.pop(key, None)
        return self._items.pop(key)[0]

    def start(self, key: str) -> None:
        """Start (or resume) an experiment unless the server is at its cap; CapacityError if it is.

        Two tabs that press Start at once cannot both pass a cap with one slot left: the check and the
        reservation of the slot are one step under the lock. The same experiment started from two tabs
        at once is started once; the second caller waits for that start and shares its outcome.
        """
        self._refresh_running()
        with self._lock:
            exp = self._items[key][0]
            in_flight = self._starting.get(key)
            if in_flight is None:
                if exp.status != Status.RUNNING:
                    self._check_cap(self._busy(), "Pause one of them, or wait for one to finish, then press Start.")
                mine: concurrent.futures.Future = concurrent.futures.Future()
                self._starting[key] = mine
        if in_flight is not None:
            in_flight.result()  # raises what that start raised
            return
        try:
            exp.start()
            mine.set_result(None)
        except BaseException as e:
            mine.set_exception(e)
            raise
        finally:
            with self._lock:
                del self._starting[key]  # the experiment's own status counts it from here on

    def start_job(self, key, name, factory):
        """Start a study (``factory()`` returns a running Job) for experiment ``key``; it counts against the cap.

        A study of that name already running (or being started) for that experiment is returned instead.
        """
        self._refresh_running()
        with self._lock:
            old = self._jobs.get((key, name))
            in_flight = self._creating.get((key, name))
            if in_flight is None:
                if old is not None and not old.done:
                    return old
                self._check_cap(self._busy(), "Pause one, or wait for one to finish, then try again.")
                mine = self._creating[(key, name)] = concurrent.futures.Future()
        if in_flight is not None:
            return in_flight.result()
        try:
            job = factory()
        except BaseException as e:
            with self._lock:
                del self._creating[(key, name)]
            mine.set_exception(e)
            raise
        with self._lock:
            self._jobs[(key, name)] = job
            del self._creating[(key, name)]
        mine.set_result(job)
        return job

    def job(self, key, name):
        with self._lock:
            return self._jobs.get((key, name))

    def _check_cap(self, busy, what_to_do):
        if busy >= self.max_training:
            raise CapacityError(
                f"{busy} experiments or studies are already running on this server (the limit is "
                f"{self.max_training}). {what_to_do}"
            )

    def _busy(self):
        """Under the lock: what trains or is about to, from what is known now (no experiment is asked)."""
        running = sum(1 for k, (e, _) in self._items.items() if k not in self._starting and e.status == Status.RUNNING)
        studies = sum(1 for j in self._jobs.values() if not j.done)
        return running + len(self._starting) + studies + len(self._creating)

    def _refresh_running(self):
        """Outside the lock: ask the experiments last seen running whether they still are (one may have
        finished with no page watching it), so that a finished run does not hold a slot."""
        with self._lock:
            running = [e for e, _ in self._items.values() if e.status == Status.RUNNING]
        for e in running:
            try:
                e.refresh()
            except (RuntimeError, TimeoutError):
                pass  # it counts as it was last seen

    def reap(self) -> list[str]:
        """Stop and forget every experiment unwatched for longer than the grace period, and its studies."""
        now = self.clock()
        with self._lock:
            gone = [k for k, (_, seen) in self._items.items() if now - seen > self.grace_s]
            stopped = [(k, self._pop(k)) for k in gone]
            jobs = [self._jobs.pop(jk) for jk in list(self._jobs) if jk[0] in gone]
        for _, e in stopped:
            e.stop(timeout=0)
        for j in jobs:
            j.stop(timeout=0)
        return [k for k, _ in stopped]

    def training(self):
        """How many experiments were last seen running."""
        with self._lock:
            experiments = [e for e, _ in self._items.values()]
        return sum(1 for e in experiments if e.status == Status.RUNNING)

    def __len__(self):
        with self._lock:
            return len(self._items)

    def close(self) -> None:
        with self._lock:
            items, self._items = list(self._items.values()), {}
            self._watch_ids, self._by_watch, self._polls = {}, {}, {}
            jobs, self._jobs = list(self._jobs.values()), {}
        for j in jobs:
            j.stop()
        for e, _ in items:
            e.stop()


class Janitor(threading.Thread):
    """Calls registry.reap() every ``every_s`` seconds, for as long as the server lives."""

    def __init__(self, registry, every_s=5.0):
        super().__init__(name="bnviz-janitor", daemon=True)
        self.registry, self.every_s, self._halt = registry, every_s, threading.Event()

    def run(self):
        while not self._halt.wait(self.every_s):
            self.registry.reap()

    def halt(self):
        self._halt.set()
