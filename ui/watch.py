"""The viewer page, ``?watch=<run id>``: the teacher's live charts for a class, with no control at all.

Students open it on their own laptops (the link and a QR code are on the teacher's page). Nothing here can
change the run: no Start, no Reset, no lanes, no sidebar. Every viewer gets the same shared frame.
"""

import io

import streamlit as st

from . import views
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


def link(base_url, key):
    """The viewer link of run ``key``: the page's address with ``?watch=<key>`` and nothing else."""
    return f"{base_url.split('?')[0].rstrip('/')}/?watch={key}"


def qr_png(text):
    """A QR code of ``text`` as PNG bytes (segno: pure Python, works offline)."""
    import segno

    out = io.BytesIO()
    segno.make(text, error="m").save(out, kind="png", scale=6, border=2)
    return out.getvalue()


def render(registry, key):
    st.title("bnviz · watching a run")
    exp = registry.get(key) if key else None  # a watched run stays alive: viewers count as watching
    if exp is None:
        st.info(GONE)
        return
    st.caption(NOTE)
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
