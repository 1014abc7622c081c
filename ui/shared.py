"""What every tab of one server shares: one snapshot per experiment per refresh, and each figure built once.

A class of 40 following the teacher's run (``?watch=``) would otherwise ask the training process for 40
snapshots a second and build 40 copies of every chart. Here a snapshot younger than ``MAX_AGE_S`` is handed
to every page that asks, and a figure is keyed by the snapshot it was drawn from (by identity) and its
arguments: the second viewer of a frame gets the first viewer's figure.
"""

import threading
import time
from collections import OrderedDict

import streamlit as st

MAX_AGE_S = 0.5  # below the pages' 1 s refresh: every refresh still shows a new frame
MAX_FIGURES = 48  # 7 views x at most 5 figures, for a few frames: each entry keeps its snapshot alive


class SharedFrames:
    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self._lock = threading.Lock()
        self._snapshots = {}  # experiment id -> (taken at, snapshot)
        self._figures = OrderedDict()  # (builder, argument ids) -> (arguments, figure)
        self.built = self.reused = 0  # figures built, and figures handed out again (for the benchmark)

    def snapshot(self, key, exp, max_age=MAX_AGE_S):
        """The experiment's latest snapshot, taken at most ``max_age`` seconds ago; 0 takes a new one (the
        teacher's page, which must show what a click just did) and hands it to the viewers."""
        with self._lock:
            taken = self._snapshots.get(key)
            if taken is not None and self.clock() - taken[0] < max_age:
                return taken[1]
        snap = exp.snapshot()  # outside the lock: a slow child process holds up no other experiment's pages
        with self._lock:
            self._snapshots[key] = (self.clock(), snap)
        return snap

    def figure(self, build, *args):
        """build(*args), built once for the same builder and the same argument objects."""
        key = (build, tuple(id(a) for a in args))
        with self._lock:
            hit = self._figures.get(key)
            if hit is not None and all(a is b for a, b in zip(hit[0], args)):
                self._figures.move_to_end(key)
                self.reused += 1
                return hit[1]
        fig = build(*args)
        with self._lock:
            self._figures[key] = (args, fig)  # the arguments are kept, so their ids stay theirs
            self.built += 1
            while len(self._figures) > MAX_FIGURES:
                self._figures.popitem(last=False)
        return fig

    def forget_figures(self):
        """Drop every figure kept, and the snapshots they keep alive (a closed tab's replay: its copies of the
        recording's tables). Every page builds its figures again once."""
        with self._lock:
            self._figures.clear()


@st.cache_resource
def frames():
    return SharedFrames()
