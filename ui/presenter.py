"""Presenter mode (a toggle, or ``?present=1``): for a projector at 1280×800 in front of a class.

The sidebar starts collapsed, charts take one row each at full width under one headline in large type, the
captions are as large and as dark as the axis labels, and Plotly's toolbar is hidden (it covered the titles).
"""

import streamlit as st

from .state import Key

CSS = """<style>
[data-testid="stCaptionContainer"] {opacity: 1 !important;}
[data-testid="stCaptionContainer"], [data-testid="stCaptionContainer"] p {
  font-size: 1.05rem !important; color: #111111 !important;}
[data-testid="stMain"] [data-testid="stMarkdown"] p {font-size: 1.3rem; line-height: 1.45;}
[data-testid="stMain"] [data-testid="stProgress"] p {font-size: 1.1rem;}
.block-container {max-width: 100%;}
.modebar-container {display: none !important;}
</style>"""


def requested():
    """Presenter mode asked for by the toggle (this tab) or by the URL (?present=1 / ?present=true).

    The toggle is bound to the URL; before it is drawn, a ?present=1 is turned into its value, because
    the binding itself only reads true/false.
    """
    ss = st.session_state
    raw = st.query_params.get(Key.PRESENT)
    if Key.PRESENT not in ss and raw is not None:
        ss[Key.PRESENT] = str(raw).lower() in ("1", "true", "yes", "on")
    return bool(ss.get(Key.PRESENT, False))


def style():
    if requested():
        st.markdown(CSS, unsafe_allow_html=True)
