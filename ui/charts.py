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
from pathlib import Path

import streamlit as st

from bnviz.pictures import figures, svg_chart

from .context import figure

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


# Charts side by side that wrap one under the other where the page is narrow (a phone), as st.columns does
ROW = '<div style="display:flex;flex-wrap:wrap;gap:1rem;align-items:flex-start">%s</div>'
CELL = '<div style="flex:1 1 300px;min-width:0">%s</div>'


def row_html(*svgs: str) -> str:
    """SVG charts in one row of HTML (made once per frame for every viewer: ui/shared.py)."""
    return ROW % "".join(CELL % s for s in svgs)


def svg_row(figs, keys):
    """Line figures side by side as static SVGs in one element: a viewer's redraw sends one message for them
    where ``st.columns`` and a chart per column send seven (each message is a round trip through the server's
    event loop: with 100 viewers, the largest part of a redraw's cost). Any figure SVG cannot draw: all by Plotly."""
    try:
        svgs = [figure(svg_chart.to_svg, fig) for fig in figs]
    except svg_chart.Unsupported:
        for column, fig, key in zip(st.columns(len(figs)), figs, keys):
            with column:
                chart(fig, key)
        return
    st.markdown(figure(row_html, *svgs), unsafe_allow_html=True)


def placeholder(key, title, text, height):
    """Where a chart will be, before it has anything to draw: a light box as tall as the chart, with its title
    and what will fill it. A page with no chart on it does not load Plotly's bundle (4.6 MB, about 0.8 s of a
    fresh tab's browser time on two cores): a fresh tab's empty charts paid that for nothing to show."""
    with st.container(
        height=height,
        border=True,
        key=f"placeholder-{key}",
        horizontal_alignment="center",
        vertical_alignment="center",
    ):
        st.markdown(f"**{title}**\n\n:gray[{text}]", text_alignment="center")


def _plotly_module():
    """The path of Streamlit's Plotly module (its bundle, loaded by the browser on the first chart), or None."""
    found = sorted((Path(st.__file__).parent / "static" / "static" / "js").glob("PlotlyChart.*.js"))
    return f"static/js/{found[0].name}" if len(found) == 1 else None


PLOTLY_MODULE = _plotly_module()
# Once the browser has drawn the page and has nothing else to do, it loads Plotly's module (the module Streamlit
# itself imports for its first chart, so it is not loaded twice): the charts that replace the placeholders after
# Start do not wait for it, and the page is drawn before it.
WARM_UP_JS = """<script>
(window.requestIdleCallback || (f => setTimeout(f, 500)))(() => {
  import(new URL("%s", document.baseURI).href).catch(() => {});
}, {timeout: 5000});
</script>"""


def warm_up():
    """Plotly's bundle loaded in the background once the page is drawn (nothing shown)."""
    if PLOTLY_MODULE:
        st.html(WARM_UP_JS % PLOTLY_MODULE, unsafe_allow_javascript=True)
