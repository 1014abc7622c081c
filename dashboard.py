"""bnviz: Batch Normalization, live. Start with `make run` (or `streamlit run dashboard.py`).

The router: the page's settings, then ui.page, which draws the sidebar, the controls and one view of the
``ui/`` package. Training, probes and figures live in the ``bnviz`` package, which never imports Streamlit.
"""

import streamlit as st

from ui import layout, page, presenter

st.set_page_config(
    page_title="bnviz · Batch Normalization, live",
    page_icon="🧪",
    layout="wide",
    initial_sidebar_state="collapsed" if presenter.requested() or "watch" in st.query_params else "auto",
)
layout.compact()
presenter.style()

page.run()
