"""The viewer page, ``?watch=<watch id>``: the teacher's live charts for a class, with no control at all.

Students open it on their own laptops (the link and a QR code are on the teacher's page, ui/share.py). Nothing
here can change the run: no Start, no Reset, no lanes, no sidebar. Every viewer gets the same shared frame. The
watch id is not the run's control key (bnviz/live/registry.py), and the control key is never put on this page.
"""

import streamlit as st

from . import views, vote
from .context import ViewContext
from .controls import status_bar
from .feedback import guard
from .shared import frames
from .state import BOUND, Key

REFRESH_S = 2.0  # a viewer redraws every 2 s: each redraw is a script run of its own on the teacher's server
# A viewer takes the frame the teacher's page took (a new one each second while it trains) when it is at most this
# old, so every viewer shares the teacher's frame and its figures; below REFRESH_S, so each redraw is a newer frame.
MAX_AGE_S = 1.5
GONE = "This run has ended, or the link is not complete. Ask for a new watch link."
NOTE = "You are watching a run live, read-only: choose a view; the teacher runs it."


def render(registry, watch_id):
    st.title("bnviz · watching a run")
    found = registry.watched(watch_id) if watch_id else None  # a watched run stays alive: viewers count as watching
    if found is None:
        st.info(GONE)
        return
    key, exp = found  # the control key stays here: the shared frames are kept under it
    st.caption(NOTE)
    polls = registry.watched_polls(watch_id)
    if polls is not None:
        vote.render(polls)  # the teacher's open question, first on a phone's screen
    st.session_state.setdefault(Key.VIEW, "Training")
    st.segmented_control(
        "View", list(views.VIEWS), key=Key.VIEW, label_visibility="collapsed", required=True, bind=BOUND
    )
    ctx = ViewContext(light=True)  # no experiment to command: the views show charts only, Training's as SVG

    @st.fragment(run_every=REFRESH_S)
    def panel():
        snap = frames().snapshot(key, exp, max_age=MAX_AGE_S)
        with guard():
            status_bar(snap, commands=False)
            views.render(st.session_state[Key.VIEW], snap, ctx)

    panel()
