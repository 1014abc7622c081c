"""Who may command trainings. On a server shared with a class, only the teacher's page; students watch.

How the teacher's laptop opens the teacher's page: ``bnviz class`` draws a control key (``secrets``, 128 bits),
hands it to the server (``BNVIZ_TEACHER_KEY``), and opens ``http://127.0.0.1:<port>/?key=<key>`` on the laptop,
as Jupyter does with its token. The page takes the key off the address bar at once (the projector shows it)
and keeps it in a cookie of the teacher's browser, so a reload, or a new tab on the laptop, is the teacher's
page again. The key is never put in anything a student sees: not the watch link or its QR code, not a lesson
link, not an export. Loopback is not trusted when there is a key, so a test browser on 127.0.0.1 is a stranger.

A page without the key on a shared server starts nothing and commands nothing: it gets the watch page of the
teacher's newest run, or a notice. A server on 127.0.0.1 only (``make run``) is the laptop's own: every page
commands. A server someone bound to the network by hand, without ``bnviz class`` (no key), trusts only pages
opened on the laptop itself (``st.context.ip_address`` is loopback).
"""

import hmac
import json

import streamlit as st
import streamlit.components.v1 as components

from bnviz.machine import env, network

from . import watch
from .state import Key

KEY_PARAM = "key"  # ?key=<the teacher's key>, in the URL bnviz class opens on the laptop
COOKIE = "bnviz_teacher"
COOKIE_S = 12 * 3600  # a lecture day: the cookie then expires (a new bnviz class draws a new key anyway)
WRONG_KEY = (
    "That key is not this server's teacher key, so this page can only watch. The teacher's page opens with the URL "
    "that `bnviz class` printed where it was started."
)
NOTHING_YET = (
    "This server is shared with a class: a student's page watches the teacher's run, and nothing is running yet. "
    "Reload this page when the teacher has started, or scan the QR code on the teacher's screen."
)


def shared() -> bool:
    """Whether others on the network can open this server: a teacher's key was given, or it does not listen on
    loopback only."""
    bound = st.get_option("server.address")
    return env.teacher_key() is not None or not network.is_loopback(bound if isinstance(bound, str) else None)


def is_teacher() -> bool:
    """Whether this page may start and command trainings (see the module's docstring)."""
    ss = st.session_state
    if not shared() or ss.get(Key.TEACHER):
        return True
    key = env.teacher_key()
    if key is None:
        ip = st.context.ip_address
        return isinstance(ip, str) and network.is_loopback(ip)
    offered = st.query_params.get(KEY_PARAM)
    if offered is not None:
        del st.query_params[KEY_PARAM]  # off the address bar (the projector), right or wrong
    if offered is not None and matches(offered, key):
        ss[Key.TEACHER] = True
        remember(key)
        return True
    if matches(st.context.cookies.get(COOKIE), key):
        ss[Key.TEACHER] = True
        return True
    if offered is not None:
        st.warning(WRONG_KEY)
    return False


def matches(offered: str | None, key: str) -> bool:
    """``offered`` is the key (compared in constant time)."""
    return isinstance(offered, str) and hmac.compare_digest(offered.encode(), key.encode())


def remember(key: str) -> None:
    """Keep the key in a cookie of this browser, for this server's address (a reload is the teacher's page)."""
    cookie = f"{COOKIE}={key}; path=/; max-age={COOKIE_S}; SameSite=Strict"
    # the component's frame has the page's origin (Streamlit's sandbox allows it), so its cookie is the page's
    components.html(f"<script>document.cookie = {json.dumps(cookie)};</script>", height=0)


def class_page(registry) -> None:
    """A page without the teacher's key: the teacher's newest run, read-only, or a notice when there is none.

    A ``?run=`` in its URL (a watch id, or a guess) attaches to nothing: it is dropped.
    """
    st.query_params.pop("run", None)
    key = registry.newest()
    watch_id = registry.watch_id(key) if key is not None else None
    if watch_id is None:
        st.title("bnviz · watching a run")
        st.info(NOTHING_YET)
        return
    watch.render(registry, watch_id)
