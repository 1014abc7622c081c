"""The viewer page, ``?watch=<watch id>``: the teacher's live charts for a class, with no control at all.

Students open it on their own laptops (the link and a QR code are on the teacher's page, ui/share.py). Nothing
here can change the run: no Start, no Reset, no lanes, no sidebar. Every viewer gets the same shared frame. The
watch id is not the run's control key (bnviz/live/registry.py), and the control key is never put on this page.

A lecture hall of 100 phones on the teacher's laptop (issue 22 part 4, docs/PERFORMANCE.md): a viewer redraws its
charts only while the run trains, every TRAINING_S; while it is paused, finished or stopped nothing is redrawn.
The page is drawn again as a whole only when something a student should see changed: the run started or stopped
training, a step was trained while paused (the teacher's Step), a question was asked or closed. While the run
trains each redraw looks for that (a script run per viewer costs the server more than its bytes, so there is no
other); while it does not, a small check every CHECK_S that writes nothing on the page (a few hundred bytes on
the wire) does.
"""

import threading

import streamlit as st

from . import views, vote
from .context import ViewContext
from .controls import status_bar
from .feedback import guard
from .shared import frames
from .state import BOUND, Key

TRAINING_S = 5.0  # while the run trains, a viewer's charts redraw every 5 s (about 100 steps at 20 steps/s)
# While it does not: a question asked, Start or a Step shows on the phones within this (plus a redraw); while it
# trains, a question or Pause shows at the next redraw (TRAINING_S).
CHECK_S = 2.0
# A viewer takes the frame the teacher's page took (a new one each second while it trains) when it is at most this
# old, so every viewer shares the teacher's frame and its figures; below TRAINING_S, so each redraw is a newer frame.
MAX_AGE_S = 1.5
# At most this many viewers' redraws run at once. On one interpreter lock, 100 redraws in 100 script threads each
# wait for all the others at every switch, so each takes longer than the cadence (measured: 100 viewers got 0.15
# redraws a second of the 20 asked and the teacher's page stopped). A viewer waiting here holds no lock and costs
# nothing; the teacher's page never waits here.
REDRAWS = threading.BoundedSemaphore(1)
GONE = "This run has ended, or the link is not complete. Ask for a new watch link."
NOTE = "You are watching a run live, read-only: choose a view; the teacher runs it."


def cadence(snap) -> float | None:
    """Seconds between a viewer's redraws of the charts: TRAINING_S while the run trains, else None (none)."""
    return TRAINING_S if snap.status == "running" else None


def stale(every: float | None, drawn, now, asked: str | None, now_asked: str | None) -> bool:
    """Whether a watch page must be drawn again: drawn at cadence ``every`` with the open question ``asked``,
    its charts last drawn from frame ``drawn``; the run now at frame ``now`` with the open question ``now_asked``.
    A run that trains redraws itself every TRAINING_S; a run that does not is drawn again only when its frame
    changed (ui/shared.py hands out the same object while the content is the same)."""
    if cadence(now) != every or now_asked != asked:
        return True
    return every is None and now is not drawn


def question_id(polls) -> str | None:
    """The open question's id, or None (no question, or none open)."""
    poll = polls.current() if polls is not None else None
    return poll.qid if poll is not None else None


def render(registry, watch_id):
    st.title("bnviz · watching a run")
    found = registry.watched(watch_id) if watch_id else None  # a watched run stays alive: viewers count as watching
    if found is None:
        st.info(GONE)
        return
    key, exp = found  # the control key stays here: the shared frames are kept under it
    st.caption(NOTE)
    polls = registry.watched_polls(watch_id)
    asked = question_id(polls)
    if polls is not None:
        vote.render(polls)  # the teacher's open question, first on a phone's screen
    st.session_state.setdefault(Key.VIEW, "Training")
    st.segmented_control(
        "View", list(views.VIEWS), key=Key.VIEW, label_visibility="collapsed", required=True, bind=BOUND
    )
    ctx = ViewContext(light=True)  # no experiment to command: the views show charts only, Training's as SVG
    every = cadence(frames().snapshot(key, exp, max_age=MAX_AGE_S))

    def redraw_if_stale(now):
        if stale(every, st.session_state.get(Key.WATCH_FRAME), now, asked, question_id(polls)):
            st.rerun()  # the whole page: the question, the cadence

    @st.fragment(run_every=every)
    def panel():
        with REDRAWS:
            snap = frames().snapshot(key, exp, max_age=MAX_AGE_S)
            st.session_state[Key.WATCH_FRAME] = snap
            with guard():
                status_bar(snap, commands=False)
                views.render(st.session_state[Key.VIEW], snap, ctx)
        redraw_if_stale(snap)

    panel()
    if every is None:

        @st.fragment(run_every=CHECK_S)
        def check():
            """Nothing on the page: the whole page again when what it shows is no longer the run's."""
            redraw_if_stale(frames().snapshot(key, exp, max_age=MAX_AGE_S))

        check()
