"""What every tab of one server shares: one snapshot per experiment per refresh, and each figure built once.

A class of 40 following the teacher's run (``?watch=``) would otherwise ask the training process for 40
snapshots a second and build 40 copies of every chart. Here a snapshot younger than the page's ``max_age`` is
handed to every page that asks, and a figure is keyed by the snapshot it was drawn from (by identity) and its
arguments: the second viewer of a frame gets the first viewer's figure.

Both are taken once even when many pages ask at the same moment (a class whose tabs refresh in step): the first
page takes the snapshot or builds the figure, the others wait for it instead of doing the same work again. Before
that, 30 viewers arriving together each took a snapshot of their own and each built its figures, 30 times the
work of one, and on 2 cores their redraws fell so far behind that none finished.

A new snapshot whose content equals the last one (a paused or finished run) is replaced by the last one, so
its figures, and their JSON (ui/charts.py), are reused rather than built again for the same picture.
"""

import threading
import time
from collections import OrderedDict
from concurrent.futures import Future

import numpy as np
import streamlit as st

MAX_AGE_S = 0.5  # below the pages' 1 s refresh: every refresh still shows a new frame
MAX_FIGURES = 48  # 7 views x at most 5 figures, for a few frames: each entry keeps its snapshot alive
WAIT_S = 30.0  # the longest a page waits for another page's snapshot or figure before doing it itself


class SharedFrames:
    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self._lock = threading.Lock()
        self._snapshots = {}  # experiment id -> (taken at, snapshot)
        self._taking = {}  # experiment id -> Future of the snapshot one page is taking now
        self._figures = OrderedDict()  # (builder, argument ids) -> (arguments, Future of the figure)
        self.built = self.reused = 0  # figures built, and figures handed out again (for the benchmark)
        self.taken = self.kept = 0  # snapshots taken, and of those how many equalled the last one (kept)

    def snapshot(self, key, exp, max_age=MAX_AGE_S):
        """The experiment's latest snapshot, taken at most ``max_age`` seconds ago; 0 takes a new one (the
        teacher's page, which must show what a click just did) and hands it to the viewers. While one page
        takes a snapshot, the viewers that ask wait for it rather than take their own."""
        with self._lock:
            taken = self._snapshots.get(key)
            if max_age > 0 and taken is not None and self.clock() - taken[0] < max_age:
                return taken[1]
            pending = self._taking.get(key) if max_age > 0 else None
            if pending is None:
                pending = self._taking[key] = Future()
                mine = True
            else:
                mine = False
        if not mine:
            try:
                return pending.result(WAIT_S)
            except Exception:  # the page taking it failed or is stuck: take one here
                return exp.snapshot()
        try:
            snap = exp.snapshot()  # outside the lock: a slow child process holds up no other experiment's pages
        except BaseException as e:
            with self._lock:
                if self._taking.get(key) is pending:
                    del self._taking[key]
            pending.set_exception(e)
            raise
        with self._lock:
            last = self._snapshots.get(key)
            self.taken += 1
            if last is not None and same_content(last[1], snap):
                snap = last[1]  # the same picture: its figures are already built
                self.kept += 1
            self._snapshots[key] = (self.clock(), snap)
            if self._taking.get(key) is pending:
                del self._taking[key]
        pending.set_result(snap)
        return snap

    def figure(self, build, *args):
        """build(*args), built once for the same builder and the same argument objects; a page asking while
        another builds it waits for that one."""
        key = (build, tuple(id(a) for a in args))
        with self._lock:
            hit = self._figures.get(key)
            if hit is not None and all(a is b for a, b in zip(hit[0], args)):
                self._figures.move_to_end(key)
                self.reused += 1
                pending, mine = hit[1], False
            else:
                pending, mine = Future(), True
                self._figures[key] = (args, pending)  # the arguments are kept, so their ids stay theirs
                while len(self._figures) > MAX_FIGURES:
                    self._figures.popitem(last=False)
        if not mine:
            try:
                return pending.result(WAIT_S)
            except TimeoutError:
                return build(*args)
        try:
            fig = build(*args)
        except BaseException as e:
            with self._lock:
                if self._figures.get(key, (None, None))[1] is pending:
                    del self._figures[key]  # the next page tries again
            pending.set_exception(e)
            raise
        with self._lock:
            self.built += 1
        pending.set_result(fig)
        return fig

    def forget_figures(self):
        """Drop every figure kept, and the snapshots they keep alive (a closed tab's replay: its copies of the
        recording's tables). Every page builds its figures again once."""
        with self._lock:
            self._figures.clear()


def same_content(a, b):
    """Whether two snapshots show the same thing: every field but the time they were taken, every table equal
    value for value (NaN included). Anything else than two snapshots is never the same (compared by identity)."""
    fields = ("status", "error", "settings", "device", "responding")
    if a is b:
        return True
    if not (hasattr(a, "lanes") and hasattr(b, "lanes")) or any(getattr(a, f) != getattr(b, f) for f in fields):
        return False
    if len(a.lanes) != len(b.lanes):
        return False
    lane_fields = ("index", "spec", "status", "error", "step", "epoch", "steps_per_epoch", "images_per_s")
    lane_fields += ("diverged_at", "bn_bypassed")
    for la, lb in zip(a.lanes, b.lanes):
        if any(getattr(la, f) != getattr(lb, f) for f in lane_fields):
            return False
    for la, lb in zip(a.lanes, b.lanes):  # the tables last: only a paused run gets this far
        if la.tables.keys() != lb.tables.keys():
            return False
        for name, ta in la.tables.items():
            tb = lb.tables[name]
            if ta.keys() != tb.keys() or not all(_same_values(ta[c], tb[c]) for c in ta):
                return False
    return True


def _same_values(x, y):
    if x is y:
        return True
    x, y = np.asarray(x), np.asarray(y)
    if x.shape != y.shape or x.dtype != y.dtype:
        return False
    if x.dtype.hasobject:
        return bool(np.array_equal(x, y))
    return x.tobytes() == y.tobytes()  # bit for bit: NaN equals NaN, 0.0 and -0.0 differ


@st.cache_resource
def frames():
    return SharedFrames()
