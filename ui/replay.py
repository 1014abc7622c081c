"""A recorded run on a timeline: play it at a chosen speed, or drag to any step. Every view works on it."""

import streamlit as st

from . import presenter, views
from .context import ViewContext
from .controls import status_bar
from .feedback import guard, plain
from .state import SPEEDS, WINDOWS, Key

TICK_S = 0.5
TICKS_PER_RUN = 600  # at 1× a whole recording plays in about 600 ticks (5 minutes)


def back_to_live():
    for k in (Key.RECORDING, Key.REPLAY_STEP, Key.PLAYING):
        st.session_state.pop(k, None)
    st.query_params.pop("replay", None)  # a reload stays live


def toggle_play(rec):
    ss = st.session_state
    if not ss[Key.PLAYING] and ss[Key.REPLAY_STEP] >= rec.last_step:
        ss[Key.REPLAY_STEP] = 0
    ss[Key.PLAYING] = not ss[Key.PLAYING]


def replay_state(rec):
    """What the status bar says of the replay itself: playing, paused, or at its end (never the recording's own
    last state, which was "paused" or "finished" when it was saved)."""
    ss = st.session_state
    if ss.get(Key.PLAYING):
        return "replay playing"
    return "replay at its end" if ss.get(Key.REPLAY_STEP, rec.last_step) >= rec.last_step else "replay paused"


def title(rec):
    """The page's title in a replay: what is replayed, and that nothing trains."""
    st.title(
        f"bnviz · Replay of {plain(rec.name)}",
        help="Every chart works as live, on the recording cut at the slider's step; nothing trains.",
    )


def render(rec):
    """One row (Play, speed, what is replayed, Back), the view picker, the timeline, then the view."""
    ss = st.session_state
    ss.setdefault(Key.REPLAY_STEP, rec.last_step)
    ss.setdefault(Key.PLAYING, False)
    playing = ss[Key.PLAYING]
    with st.container(horizontal=True, vertical_alignment="center", gap="small"):
        st.button(
            "Pause" if playing else "Play",
            icon=":material/pause:" if playing else ":material/play_arrow:",
            key="play",
            width="content",
            help="Play runs the recording forward; drag the slider below to any step.",
            on_click=toggle_play,
            args=(rec,),
        )
        st.selectbox("Speed", list(SPEEDS), index=1, key=Key.SPEED, label_visibility="collapsed", width=90)
        st.markdown(
            f"{rec.last_step:,} steps · {len(rec.specs)} lanes · recorded on {plain(rec.header().get('device', '?'))}",
            width="stretch",
        )
        st.button("Back to live training", width="content", on_click=back_to_live)
    st.segmented_control("View", list(views.VIEWS), key=Key.VIEW, label_visibility="collapsed", required=True)
    ctx = ViewContext(WINDOWS[ss[Key.WINDOW]], ss[Key.LOG_LOSS], present=presenter.requested())

    @st.fragment(run_every=TICK_S if playing else None)
    def frame():
        if ss[Key.PLAYING]:  # advance before the slider is drawn, so it shows the new step
            per_tick = SPEEDS[ss.get(Key.SPEED, "5×")] * max(1, rec.last_step // TICKS_PER_RUN)
            ss[Key.REPLAY_STEP] = min(rec.last_step, ss[Key.REPLAY_STEP] + per_tick)
            if ss[Key.REPLAY_STEP] >= rec.last_step:
                ss[Key.PLAYING] = False
                st.rerun()
        st.slider("Step", 0, max(rec.last_step, 1), key=Key.REPLAY_STEP, label_visibility="collapsed")
        snap = rec.snapshot(ss[Key.REPLAY_STEP])
        with guard():
            status_bar(snap, state=replay_state(rec))
            views.render(ss[Key.VIEW], snap, ctx)

    frame()
