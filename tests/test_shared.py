"""ui/shared.py: one snapshot per experiment per refresh, one figure per frame, for every tab of a server."""

import itertools

from conftest import Clock

from ui.shared import MAX_FIGURES, SharedFrames


class Counting:
    def __init__(self):
        self.taken = itertools.count(1)

    def snapshot(self):
        return ("frame", next(self.taken))


def test_viewers_share_a_young_snapshot_and_the_teacher_takes_a_new_one():
    clock, exp = Clock(), Counting()
    frames = SharedFrames(clock)
    first = frames.snapshot("run", exp)
    assert frames.snapshot("run", exp) is first  # a second viewer within the refresh: the same frame
    clock.now = 0.6
    second = frames.snapshot("run", exp)
    assert second is not first and second == ("frame", 2)
    assert frames.snapshot("run", exp, max_age=0) == ("frame", 3)  # the teacher's page: always new
    assert frames.snapshot("run", exp) == ("frame", 3)  # and the viewers get that one


def test_a_figure_is_built_once_per_frame_and_arguments():
    frames, calls = SharedFrames(Clock()), []

    def build(snap, position):
        calls.append((snap, position))
        return object()

    snap, other = ["a"], ["b"]
    fig = frames.figure(build, snap, "bn1")
    assert frames.figure(build, snap, "bn1") is fig and len(calls) == 1
    assert frames.figure(build, snap, "bn2") is not fig and frames.figure(build, other, "bn1") is not fig
    assert len(calls) == 3 and frames.built == 3 and frames.reused == 1


def test_the_figure_cache_is_bounded():
    frames = SharedFrames(Clock())
    snaps = [[i] for i in range(MAX_FIGURES + 10)]
    for s in snaps:
        frames.figure(lambda s: object(), s)
    assert len(frames._figures) == MAX_FIGURES
