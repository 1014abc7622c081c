"""Experiments shared by a whole server, so a page reload or a dropped connection finds its run again.

Each experiment has an id (the page puts it in its URL). A page that shows an experiment touches it
every few seconds; one that nobody has touched for ``grace_s`` is stopped and forgotten. At most
``max_training`` experiments train at once: a class of 30 on one laptop gets a clear message, not a
machine that crawls. Thread-safe; no Streamlit here.
"""
import secrets
import threading
import time


class CapacityError(RuntimeError):
    """Too many experiments are training on this server; the message says what to do."""


class Registry:
    def __init__(self, max_training=2, grace_s=120.0, max_kept=24, clock=time.monotonic):
        self.max_training, self.grace_s, self.max_kept, self.clock = max_training, grace_s, max_kept, clock
        self._lock = threading.Lock()
        self._items = {}   # id -> [experiment, last_seen]
        self._jobs = {}    # (id, name) -> Job: studies started from that experiment's page

    def add(self, experiment):
        """Register an experiment; returns its id. Makes room by dropping the oldest idle ones."""
        self.reap()
        with self._lock:
            key = secrets.token_urlsafe(6)
            self._items[key] = [experiment, self.clock()]
            idle = sorted((seen, k) for k, (e, seen) in self._items.items() if e.status != "running")
            extra = len(self._items) - self.max_kept
            dropped = [self._items.pop(k)[0] for _, k in idle[:max(0, extra)] if k != key]
        for e in dropped:
            e.stop(timeout=0)
        return key

    def get(self, key):
        """The experiment with this id (and mark it watched), or None."""
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            item[1] = self.clock()
            return item[0]

    touch = get

    def start(self, key):
        """Start (or resume) an experiment unless the server is at its cap."""
        with self._lock:
            exp = self._items[key][0]
            others = self._busy() - (exp.status == "running")
        if exp.status != "running" and others >= self.max_training:
            raise CapacityError(f"{others} experiments or studies are already running on this server (the limit is "
                                f"{self.max_training}). Pause one of them, or wait for one to finish, then press Start.")
        exp.start()

    def start_job(self, key, name, factory):
        """Start a study (``factory()`` returns a running Job) for experiment ``key``; it counts against the cap."""
        with self._lock:
            busy = self._busy()
            old = self._jobs.get((key, name))
            if old is not None and not old.done:
                return old
            if busy >= self.max_training:
                raise CapacityError(f"{busy} experiments or studies are already running on this server (the limit "
                                    f"is {self.max_training}). Pause one, or wait for one to finish, then try again.")
            job = self._jobs[(key, name)] = factory()
        return job

    def job(self, key, name):
        with self._lock:
            return self._jobs.get((key, name))

    def _busy(self):
        return (sum(1 for e, _ in self._items.values() if e.status == "running")
                + sum(1 for j in self._jobs.values() if not j.done))

    def reap(self):
        """Stop and forget every experiment unwatched for longer than the grace period, and its studies."""
        now = self.clock()
        with self._lock:
            gone = [k for k, (_, seen) in self._items.items() if now - seen > self.grace_s]
            stopped = [(k, self._items.pop(k)[0]) for k in gone]
            jobs = [self._jobs.pop(jk) for jk in list(self._jobs) if jk[0] in gone]
        for _, e in stopped:
            e.stop(timeout=0)
        for j in jobs:
            j.stop(timeout=0)
        return [k for k, _ in stopped]

    def training(self):
        with self._lock:
            return sum(1 for e, _ in self._items.values() if e.status == "running")

    def __len__(self):
        with self._lock:
            return len(self._items)

    def close(self):
        with self._lock:
            items, self._items = list(self._items.values()), {}
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
