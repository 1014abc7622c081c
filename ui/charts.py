"""A Plotly chart on the page, its JSON made once per figure for every page that shows it.

``st.plotly_chart`` turns its figure into JSON at every call: ``to_dict`` (a deep copy, every array in base64),
the JSON itself, then a hash of it for the element's id. A class of 30 watching the teacher's run gets the same
figure objects (ui/shared.py), so that was 30 copies of the same work per frame, most of a viewer's redraw.
Here the JSON is made once and kept on the figure itself (figures handed out by ui/shared.py are shared and
never changed once built), and the element is put on the page as ``st.plotly_chart(fig, key=..., config=...,
theme=None)`` puts it: the same message, field for field (tests/test_charts.py compares the two).

The element is made with Streamlit's own helpers (the ones ``st.plotly_chart`` calls); if a Streamlit version
moves them, every chart falls back to ``st.plotly_chart`` itself, and the test says so.
"""

import json
import threading

import streamlit as st

from bnviz import figures

try:
    import plotly.io
    from streamlit.elements.lib import agent_spec
    from streamlit.elements.lib.form_utils import current_form_id
    from streamlit.elements.lib.layout_utils import LayoutConfig
    from streamlit.elements.lib.utils import compute_and_register_element_id
    from streamlit.elements.plotly_chart import _plotly_data, _resolve_content_height
    from streamlit.proto.PlotlyChart_pb2 import PlotlyChart as PlotlyChartProto

    FAST = True
except ImportError:  # another Streamlit: st.plotly_chart does it all
    FAST = False

SELECTION_MODE = ("points", "box", "lasso")  # st.plotly_chart's default, part of the element's id
_LOCK = threading.Lock()  # one page serialises a figure; the others wait for it, then reuse it


class Serialised:
    """A figure as st.plotly_chart sends it: its JSON and its height in pixels."""

    __slots__ = ("spec", "height")

    def __init__(self, fig):
        as_dict = fig.to_dict()  # what st.plotly_chart makes of a figure before it writes the JSON
        self.spec = plotly.io.to_json(as_dict, validate=False)
        self.height = _resolve_content_height("content", as_dict)


def serialised(fig):
    """The figure's Serialised form, made at the first call and kept on the figure."""
    done = getattr(fig, "_bnviz_serialised", None)
    if done is None:
        with _LOCK:
            done = getattr(fig, "_bnviz_serialised", None)
            if done is None:
                done = Serialised(fig)
                fig._bnviz_serialised = done  # plotly lets a figure carry attributes whose name starts with _
    return done


def plotly_chart(fig, key, config=None):
    """``st.plotly_chart(fig, key=key, config=config, theme=None)`` with the figure's JSON made once."""
    config = config or {}
    if not FAST or not hasattr(fig, "to_dict"):
        return st.plotly_chart(fig, key=key, config=config, theme=None)
    done = serialised(fig)
    dg = st._main
    proto = PlotlyChartProto()
    proto.theme = ""
    proto.form_id = current_form_id(dg)
    proto.spec = done.spec
    proto.config = json.dumps(config)
    key = None if key is None else str(key)
    proto.id = compute_and_register_element_id(
        "plotly_chart",
        user_key=key,
        key_as_main_identity=False,
        dg=dg,
        plotly_spec=proto.spec,
        plotly_config=proto.config,
        selection_mode=SELECTION_MODE,
        is_selection_activated=False,
        theme=None,
        width="stretch",
        height="content",
        alt=None,
    )
    return dg._enqueue(
        "plotly_chart",
        proto,
        layout_config=LayoutConfig(width="stretch", height=done.height),
        agent_props=agent_spec.element(
            "plotly_chart", key=key, data_builder=lambda: _plotly_data(proto.spec), alt=None
        ),
    )


def chart(fig, key):
    """A Plotly figure at the page's width, with the PNG download button (the views' one way to draw one)."""
    plotly_chart(fig, key, figures.PNG_CONFIG)
