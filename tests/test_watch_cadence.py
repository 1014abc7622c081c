"""ui/watch.py: a watch page redraws its charts while the run trains, and is drawn again otherwise only when what
it shows changed (issue 22 part 4: 100 phones on one laptop). The frames come from ui/shared.py, as on the page."""

import numpy as np
from conftest import Clock

from bnviz.live.snapshot import LaneSpec, LaneStatus, LaneView, Settings, Snapshot, Status
from ui import watch
from ui.shared import SharedFrames


class Run:
    """An experiment as the shared frames see it: each snapshot a new object, its content as the run is now."""

    def __init__(self, status=Status.RUNNING, step=10):
        self.status, self.step = status, step

    def snapshot(self):
        steps = {"step": np.arange(1, self.step + 1), "loss": np.linspace(2.3, 1.0, self.step)}
        lane = LaneView(
            0, LaneSpec("scratch"), LaneStatus.TRAINING, None, self.step, 0, 469, 2000.0, None, {"steps": steps}
        )
        return Snapshot(self.status, None, Settings(), "cpu", (lane,))


def frame(frames, clock, run):
    clock.now += watch.CHECK_S  # each check comes CHECK_S after the last: older than the frames' MAX_AGE_S
    return frames.snapshot("run", run, max_age=watch.MAX_AGE_S)


def test_a_training_run_redraws_every_few_seconds_and_any_other_not_at_all():
    for status in Status:
        snap = Run(status).snapshot()
        assert watch.cadence(snap) == (watch.TRAINING_S if status == Status.RUNNING else None), status
    assert watch.MAX_AGE_S < watch.TRAINING_S  # each redraw while training is a newer frame


def test_a_paused_run_is_not_drawn_again_until_a_step_or_start():
    clock, run = Clock(), Run(Status.PAUSED)
    frames = SharedFrames(clock)
    drawn = frame(frames, clock, run)
    every = watch.cadence(drawn)
    for _ in range(3):  # the same content: the shared frames hand out the drawn object, nothing to draw
        now = frame(frames, clock, run)
        assert now is drawn and not watch.stale(every, drawn, now, None, None)
    run.step += 1  # the teacher's Step: a new frame, drawn again although the run is still paused
    assert watch.stale(every, drawn, frame(frames, clock, run), None, None)
    run.status = Status.RUNNING  # Start: drawn again, at the training cadence
    assert watch.stale(every, drawn, frame(frames, clock, run), None, None)


def test_a_training_run_redraws_itself_and_is_drawn_again_when_it_stops_or_a_question_comes():
    clock, run = Clock(), Run(Status.RUNNING)
    frames = SharedFrames(clock)
    drawn = frame(frames, clock, run)
    every = watch.cadence(drawn)
    run.step += 40
    now = frame(frames, clock, run)
    assert now is not drawn and not watch.stale(every, drawn, now, None, None)  # the panel's own redraw shows it
    assert watch.stale(every, drawn, now, None, "q1")  # a question asked: on the phones before the next redraw
    assert watch.stale(every, drawn, now, "q1", None)  # and closed
    assert not watch.stale(every, drawn, now, "q1", "q1")
    for status in (Status.PAUSED, Status.FINISHED, Status.ERROR):
        run.status = status
        assert watch.stale(every, drawn, frame(frames, clock, run), None, None), status
