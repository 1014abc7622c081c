"""The live panel: the status bar and the chosen view, redrawn once a second while training runs."""

import streamlit as st

from . import presenter, views
from .context import ViewContext
from .controls import status_bar
from .feedback import guard
from .shared import frames
from .state import WINDOWS, Key
from .views.experiments import running_jobs

REFRESH_S = 1.0
HEARTBEAT_S = 10.0


def render(exp, registry, key, data):
    """Refreshes while training runs or a study of this page runs (its progress bar moves, training or not).

    A training process that stops answering (or answers again) redraws the whole page once, so the buttons
    say what can act; its refresh costs nothing while it is silent (the snapshot is the last one it sent).
    """
    ss = st.session_state
    running = exp.status == "running"
    responding = getattr(exp, "responding", True)  # what the buttons were drawn for
    studying = bool(running_jobs(registry, key))
    live = (running or studying) and not ss[Key.FREEZE]
    ctx = ViewContext(WINDOWS[ss[Key.WINDOW]], ss[Key.LOG_LOSS], exp, data, registry, key, presenter.requested())

    @st.fragment(run_every=REFRESH_S if live else None)
    def panel():
        registry.touch(key)
        snap = frames().snapshot(key, exp, max_age=0)  # always new here; the viewers share it
        with guard():
            status_bar(snap)
            views.render(ss[Key.VIEW], snap, ctx)
        if live and ((running and snap.status != "running") or (studying and not running_jobs(registry, key))):
            st.rerun()  # training or the study ended: redraw the page once, and stop refreshing
        if snap.responding != responding:
            st.rerun()  # the process stopped answering, or answers again: the buttons change

    panel()


@st.fragment(run_every=HEARTBEAT_S)
def heartbeat(registry, key):
    registry.touch(key)  # keeps a paused experiment alive while its tab is open
