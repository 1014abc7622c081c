"""The live panel: the status bar and the chosen view, redrawn once a second while training runs."""

import streamlit as st

from . import views
from .context import ViewContext
from .controls import status_bar
from .feedback import guard
from .state import WINDOWS, Key
from .views.experiments import running_jobs

REFRESH_S = 1.0
HEARTBEAT_S = 10.0
JOB_POLL_S = 1.0


def render(exp, registry, key, data):
    ss = st.session_state
    running = exp.status == "running" and not ss[Key.FREEZE]
    ctx = ViewContext(WINDOWS[ss[Key.WINDOW]], ss[Key.LOG_LOSS], exp, data, registry, key)

    @st.fragment(run_every=REFRESH_S if running else None)
    def panel():
        registry.touch(key)
        snap = exp.snapshot()
        with guard():
            status_bar(snap)
            views.render(ss[Key.VIEW], snap, ctx)
        if running and snap.status != "running":
            st.rerun()  # training ended: redraw the page once, and stop refreshing

    if running_jobs(registry, key):
        poll_jobs(registry, key)
    panel()


def poll_jobs(registry, key):
    """While a study runs, refresh once a second; one full redraw when it ends."""

    @st.fragment(run_every=JOB_POLL_S)
    def poll():
        if not running_jobs(registry, key):
            st.rerun()

    poll()


@st.fragment(run_every=HEARTBEAT_S)
def heartbeat(registry, key):
    registry.touch(key)  # keeps a paused experiment alive while its tab is open
