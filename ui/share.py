"""Sharing with the class: the watch link and its QR code, named by the laptop's network address; a lesson link;
and *Show the QR*, a code big enough to scan from the back of a room, on the main page.

Nothing here shows the run's control key or the teacher's key: the watch link carries the run's public watch id
(bnviz/live/registry.py), and a lesson link drops every parameter that names a run or a key.
"""

import io
import math
import urllib.parse

import streamlit as st

from bnviz.machine import network

from .state import Key

NOT_LESSON = ("run", "watch", "replay", "key")  # a lesson link opens a fresh run of its own: no run id, no key
QR_BORDER = 2  # modules of white around the code
BIG_QR_PX = 360  # scanned from the back of a room: at least 300 px on the projected page
LOCAL_ONLY = (
    "This server only answers this laptop, so a phone cannot open these links. Stop it and start `make class` "
    "(or `bnviz class`): it serves the class on this laptop's network address (README, Teaching with it)."
)


def link(base_url: str, watch_id: str) -> str:
    """The viewer link of a run: the address with ``?watch=<watch id>`` and nothing else."""
    return f"{base_url.split('?')[0].rstrip('/')}/?watch={watch_id}"


def lesson_link(base_url: str) -> str:
    """This page's set-up as a link (the bound widgets' URL parameters), without the run's id or any key."""
    params = {k: v for k, v in st.query_params.to_dict().items() if k not in NOT_LESSON}
    query = "&".join(f"{k}={urllib.parse.quote(str(v))}" for k, v in params.items())
    return f"{base_url.split('?')[0].rstrip('/')}/" + (f"?{query}" if query else "")


def qr_png(text: str, min_px: int = 180) -> tuple[bytes, int]:
    """A QR code of ``text`` as PNG bytes at least ``min_px`` wide, and its width (segno: pure Python, offline).

    Each module is a whole number of pixels, and the page shows the image at its own width: a QR code scaled by
    the browser or by Streamlit blurs its modules' edges, which a phone's camera then reads less well.
    """
    import segno

    qr = segno.make(text, error="m")
    scale = max(1, math.ceil(min_px / qr.symbol_size(scale=1, border=QR_BORDER)[0]))
    out = io.BytesIO()
    qr.save(out, kind="png", scale=scale, border=QR_BORDER)
    return out.getvalue(), int(qr.symbol_size(scale=scale, border=QR_BORDER)[0])


def base_url() -> str:
    """The address students open: the laptop's network address when the server listens on the network."""
    page = st.context.url or "http://127.0.0.1:8501/"
    bound = st.get_option("server.address")
    bound = bound if isinstance(bound, str) else ""  # unset: Streamlit listens on every interface
    return network.share_base(page, bound, network.lan_address())


def reachable(base: str) -> bool:
    """Whether a phone on the network can open ``base`` (it does not name this laptop's loopback)."""
    return not network.is_loopback(urllib.parse.urlsplit(base).hostname)


def panel(sb, registry, key: str) -> None:
    """The class follows along: a read-only watch link with its QR code, and this set-up as a lesson link."""
    # A toggle, not an expander: an expander's content is built and highlighted on every page load even closed
    # (0.45 s of a fresh tab's browser time for the two code blocks); this is built only when asked for.
    if not sb.toggle("Share with the class", key=Key.SHARE, help="A read-only link and QR code, and a lesson link"):
        return
    base = base_url()
    with sb.container(border=True):
        url = link(base, registry.watch_id(key) or "")
        st.caption("Students watch this run live, read-only (no button can change it):")
        st.code(url, language=None, wrap_lines=True)
        png, px = qr_png(url)
        st.image(png, width=px, caption="the watch link, for a phone's camera", output_format="PNG")
        st.toggle("Show the QR", key=Key.SHOW_QR, help="The watch link's QR code on the page, big enough for a room")
        st.caption("This set-up as a lesson link (whoever opens it gets a fresh run of their own):")
        st.code(lesson_link(base), language=None, wrap_lines=True)
        if not reachable(base):
            st.caption(LOCAL_ONLY)


def big_qr(registry, key: str) -> None:
    """*Show the QR*: the watch link's QR code on the main page, at least 300 px, with the link under it."""
    if not (st.session_state.get(Key.SHARE) and st.session_state.get(Key.SHOW_QR)):
        return
    base = base_url()
    url = link(base, registry.watch_id(key) or "")
    with st.container(border=True, key="big-qr"):
        png, px = qr_png(url, BIG_QR_PX)
        st.image(png, width=px, caption=f"Scan to watch this run: {url}", output_format="PNG")
        if not reachable(base):
            st.caption(LOCAL_ONLY)
