"""bnviz: Batch Normalization, live. Start with `make run` (or `streamlit run dashboard.py`).

The router: the page's settings, then ui.page, which draws the sidebar, the controls and one view of the
``ui/`` package. Training, probes and figures live in the ``bnviz`` package, which never imports Streamlit.
"""

import streamlit as st

from ui import page, presenter

st.set_page_config(
    page_title="bnviz · Batch Normalization, live",
    page_icon="🧪",
    layout="wide",
    initial_sidebar_state="collapsed" if presenter.requested() or "watch" in st.query_params else "auto",
)
st.markdown("<style>.block-container {padding-top: 2.2rem;}</style>", unsafe_allow_html=True)
presenter.style()

page.run()
