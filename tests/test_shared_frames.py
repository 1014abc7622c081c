"""ui/shared.py under a class: pages that ask at the same moment share one snapshot and one figure, and a frame
that shows the same as the last one keeps the last one's figures."""

import dataclasses
import threading
import time

import numpy as np
import pytest
from conftest import together

from bnviz.live.replay import Recording
from ui.server import SHIPPED_RUN
from ui.shared import SharedFrames, same_content


class Slow:
    """An experiment whose snapshot takes a while (a child process answering), counting the snapshots taken."""

    def __init__(self, make, delay=0.2, hold_first=None):
        self.make, self.delay, self.calls = make, delay, 0
        self.hold_first = hold_first  # an Event: the first snapshot lasts until it is set (10 s at most)
        self.started = threading.Event()  # set when the first snapshot has begun
        self._lock = threading.Lock()

    def snapshot(self):
        with self._lock:
            self.calls += 1
            n = self.calls
        self.started.set()
        if n == 1 and self.hold_first is not None:
            self.hold_first.wait(10)
        else:
            time.sleep(self.delay)
        return self.make(n)


@pytest.fixture(scope="module")
def recording():
    return Recording.load(SHIPPED_RUN)


def test_viewers_asking_together_share_one_snapshot():
    exp, frames = Slow(lambda n: ("frame", n)), SharedFrames()
    got = together(30, lambda _: frames.snapshot("run", exp, max_age=1.5))
    assert exp.calls == 1
    assert all(g is got[0] for g in got)


def test_the_teacher_takes_a_new_snapshot_even_while_a_viewer_takes_one():
    release = threading.Event()
    exp, frames = Slow(lambda n: ("frame", n), hold_first=release), SharedFrames()
    viewer = threading.Thread(target=frames.snapshot, args=("run", exp, 1.5))
    viewer.start()
    assert exp.started.wait(10)  # the viewer's snapshot is being taken, and lasts until released
    try:
        teacher = frames.snapshot("run", exp, max_age=0)  # waiting on the viewer's would give ("frame", 1)
    finally:
        release.set()
    viewer.join()
    assert exp.calls == 2 and teacher == ("frame", 2)


def test_a_figure_asked_for_together_is_built_once():
    frames, calls = SharedFrames(), []

    def build(snap):
        calls.append(snap)
        time.sleep(0.2)
        return object()

    snap = ["frame"]
    got = together(30, lambda _: frames.figure(build, snap))
    assert len(calls) == 1 and all(g is got[0] for g in got)
    assert frames.built == 1 and frames.reused == 29


def test_a_figure_that_fails_fails_for_every_waiter_and_is_tried_again():
    frames, calls = SharedFrames(), []

    def build(snap):
        calls.append(snap)
        time.sleep(0.2)
        if len(calls) == 1:
            raise ValueError("no data")
        return "figure"

    snap = ["frame"]
    got = together(5, lambda _: frames.figure(build, snap))
    assert len(calls) == 1 and all(isinstance(g, ValueError) for g in got)
    assert frames.figure(build, snap) == "figure" and len(calls) == 2  # not kept: the next page builds it


def test_a_snapshot_that_fails_is_not_kept():
    frames = SharedFrames()

    class Failing:
        calls = 0

        def snapshot(self):
            Failing.calls += 1
            raise RuntimeError("the training process is gone")

    with pytest.raises(RuntimeError):
        frames.snapshot("run", Failing())
    with pytest.raises(RuntimeError):
        frames.snapshot("run", Failing())
    assert Failing.calls == 2


def test_a_paused_run_keeps_its_frame_and_its_figures(recording):
    snaps = iter([recording.snapshot(1000), recording.snapshot(1000), recording.snapshot(1001)])
    exp, frames = Slow(lambda n: next(snaps), delay=0), SharedFrames()
    first = frames.snapshot("run", exp, max_age=0)
    again = frames.snapshot("run", exp, max_age=0)  # taken anew, the same content: the same frame
    assert exp.calls == 2 and again is first and frames.kept == 1
    built = []

    def build(snap):
        built.append(snap)
        return "fig"

    frames.figure(build, again)
    frames.figure(build, first)
    assert len(built) == 1  # its figure is built once
    later = frames.snapshot("run", exp, max_age=0)  # one step on: a new frame
    assert later is not first and later.max_step == 1001


def test_same_content_sees_every_change(recording):
    a, b = recording.snapshot(1000), recording.snapshot(1000)
    assert a is not b and same_content(a, b)
    lane = a.lanes[1]
    val = dict(lane.tables["val"])
    val["val_acc"] = np.concatenate([val["val_acc"][:-1], [val["val_acc"][-1] + 0.01]])  # one value differs
    changed = dataclasses.replace(a, lanes=(a.lanes[0], dataclasses.replace(lane, tables={**lane.tables, "val": val})))
    assert not same_content(a, changed)  # e.g. BN switched off on a paused run: a new validation value, same step
    nan = dict(lane.tables["steps"])
    nan["train_loss"] = nan["train_loss"].copy()
    nan["train_loss"][-1] = np.nan
    with_nan = dataclasses.replace(
        a, lanes=(a.lanes[0], dataclasses.replace(lane, tables={**lane.tables, "steps": nan}))
    )
    assert same_content(with_nan, dataclasses.replace(with_nan)) and not same_content(a, with_nan)
    assert not same_content(a, dataclasses.replace(a, status="running"))
    assert not same_content(a, dataclasses.replace(a, responding=False))
    assert not same_content(a, dataclasses.replace(a, lanes=(dataclasses.replace(a.lanes[0], bn_bypassed=True), lane)))
    assert not same_content(a, dataclasses.replace(a, lanes=a.lanes[:1]))
    assert same_content(a, dataclasses.replace(a, taken_at=a.taken_at + 5, wall_s=a.wall_s + 5))  # not shown
