"""The page, top to bottom: data, experiment, sidebar, title, view picker, then live training or a replay."""

import streamlit as st

from bnviz.data.fashion_mnist import DataError
from bnviz.live.engine import describe_error

from . import access, controls, live, preload, replay, server, share, sidebar, watch  # noqa: F401 (preload: see there)
from .state import Key, init_widgets, show_flash
from .views import VIEWS

TITLE = "bnviz · Batch Normalization, live"


def main():
    watching = st.query_params.get("watch")
    if watching is not None:  # a viewer: nothing is made for this tab, nothing can be changed
        watch.render(server.server(), watching)
        return
    if not access.is_teacher():  # a student on a shared server: the teacher's run, read-only (ui/access.py)
        access.class_page(server.server())
        return
    try:
        data = server.dataset()
    except DataError as e:
        without_data(no_data_message(e))
        return
    registry = server.server()
    key, exp = server.attach(registry, data)
    if (
        st.query_params.get_all("replay") == ["chapter"]  # anything else: named by url_problems
        and Key.RECORDING not in st.session_state
        and not st.session_state.get(Key.REPLAY_OPENED)
    ):
        st.session_state[Key.REPLAY_OPENED] = True
        server.open_shipped_run()
    rec = st.session_state.get(Key.RECORDING)
    if rec is None:
        sidebar.render(exp, registry, data, exp.snapshot())
        key = st.session_state[Key.RUN_KEY]  # Apply may have made a new experiment (a new device)
        exp = registry.get(key) or exp
    else:
        sidebar.render_replay(rec)

    if rec is None:
        st.title(TITLE)
    else:
        replay.title(rec)  # the title names the recording: one line less above the charts
    show_flash()
    server.data_notice(data)
    share.big_qr(registry, key)
    live.heartbeat(registry, key)  # the live run stays alive while this tab is open, replaying or not
    if rec is not None:
        replay.render(rec)  # its explainer first, above the fold, then the view picker and the timeline
        return
    view_picker()
    controls.render(exp, registry, key)
    live.render(exp, registry, key, data)


REPLAY_WITHOUT_DATA = (
    "The recorded run needs no dataset: [open it](?replay=chapter) (every view of it works, the Lesson and the "
    "Story too); training, the studies and the exercises need the data."
)


def no_data_message(error):
    """The one sentence that says the data is missing and how to fix it, wherever something needs it."""
    return f"**The Fashion-MNIST data could not be used.** {server.no_maths(error)}"


def without_data(message):
    """The page without Fashion-MNIST: the shipped recording (``?replay=chapter``, or one already open) works in
    full; what needs the data (live training) says so where it stands, with the same message."""
    init_widgets(tuple(VIEWS))  # the view picker, window and the rest, as a fresh experiment would set them
    if st.query_params.get("replay") == "chapter" and not st.session_state.get(Key.REPLAY_OPENED):
        st.session_state[Key.REPLAY_OPENED] = True
        server.open_shipped_run()
    rec = st.session_state.get(Key.RECORDING)
    if rec is not None:
        sidebar.render_replay(rec)
        replay.title(rec)  # as with the data: the title names the recording
    else:
        st.title(TITLE)
    show_flash()
    st.error(message)  # where the live run's controls would stand
    if rec is None:
        st.info(REPLAY_WITHOUT_DATA)
        return
    replay.render(rec)


# Keys 1-7 pick a view. Streamlit's segmented control has no shortcut, so a row of buttons (hidden; the
# picker is what the class sees) carries them: a button's shortcut listens on the page, visible or not.
VIEW_KEYS_CSS = "<style>.st-key-view-keys {display: none;}</style>"


def pick_view(name):
    st.session_state[Key.VIEW] = name


def view_picker():
    st.segmented_control(
        "View",
        list(VIEWS),
        key=Key.VIEW,
        label_visibility="collapsed",
        required=True,
        help="Keys 1-" + str(len(VIEWS)) + " pick a view: " + ", ".join(f"{i} {v}" for i, v in enumerate(VIEWS, 1)),
    )
    st.markdown(VIEW_KEYS_CSS, unsafe_allow_html=True)
    with st.container(key="view-keys", horizontal=True):
        for i, name in enumerate(VIEWS, 1):
            st.button(name, key=f"view-key-{i}", shortcut=str(i), on_click=pick_view, args=(name,))


def run():
    try:
        main()
    except Exception as e:  # the last line of defence: a message, never a traceback in front of a class
        st.error(
            f"Something went wrong: {describe_error(e)}. Reload the page; if it happens again, restart "
            "`make run` and tell us what you did."
        )
