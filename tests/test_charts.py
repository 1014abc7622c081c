"""ui/charts.py: a chart whose JSON is made once puts on the page exactly what st.plotly_chart puts there."""

import json
import re

import plotly.graph_objects as go
from streamlit.testing.v1 import AppTest

from bnviz.live.replay import Recording
from bnviz.pictures import figures
from ui import charts
from ui.server import SHIPPED_RUN


def sent(fast):
    """Every chart the app put on the page, as the elements Streamlit sent (layout included)."""
    at = AppTest.from_function(app, default_timeout=60, args=(fast,)).run()
    assert not at.exception, [e.value for e in at.exception]
    return at, list(at.session_state["sent"])


def app(fast):
    """The Training view's two charts (the shipped run at step 1,000), drawn twice each, by one path or the other."""
    import streamlit as st
    import streamlit.delta_generator as dg

    from bnviz.live.replay import Recording
    from bnviz.pictures import figures
    from ui import charts
    from ui.server import SHIPPED_RUN

    st.session_state["sent"] = sent = []
    enqueue = dg._enqueue_message

    def capture(msg):
        if msg.delta.new_element.WhichOneof("type") == "plotly_chart":
            sent.append(msg.delta.new_element.SerializeToString(deterministic=True))
        return enqueue(msg)

    dg._enqueue_message = capture
    try:
        snap = Recording.load(SHIPPED_RUN).snapshot(1000)
        for key, fig in (("loss", figures.loss_figure(snap)), ("acc", figures.accuracy_figure(snap))):
            if fast:
                charts.chart(fig, key)
                charts.chart(fig, key + "-again")  # the second draw of the same figure reuses its JSON
            else:
                st.plotly_chart(fig, key=key, config=figures.PNG_CONFIG, theme=None)
                st.plotly_chart(fig, key=key + "-again", config=figures.PNG_CONFIG, theme=None)
    finally:
        dg._enqueue_message = enqueue


def test_the_fast_path_is_there():
    assert charts.FAST, "Streamlit moved the helpers ui/charts.py uses: every chart now goes through st.plotly_chart"


def test_a_chart_sends_what_st_plotly_chart_sends():
    at_fast, fast = sent(True)
    at_slow, slow = sent(False)
    assert len(fast) == len(slow) == 4
    assert fast == slow  # the element, its id, its JSON, its width and height: byte for byte
    spec = json.loads(at_fast.get("plotly_chart")[0].proto.spec)
    assert spec["layout"]["title"]["text"].startswith("Training loss")


def test_the_json_is_made_once_per_figure(monkeypatch):
    snap = Recording.load(SHIPPED_RUN).snapshot(500)
    fig = figures.accuracy_figure(snap)
    made = []
    real = charts.Serialised.__init__

    def counting(self, f):
        made.append(f)
        real(self, f)

    monkeypatch.setattr(charts.Serialised, "__init__", counting)
    first = charts.serialised(fig)
    assert charts.serialised(fig) is first and len(made) == 1
    assert json.loads(first.spec) == json.loads(fig.to_json())  # the figure itself, nothing dropped
    other = go.Figure(fig)
    assert charts.serialised(other) is not first and len(made) == 2  # a new figure gets its own


def test_the_warm_up_names_streamlits_own_plotly_module():
    """warm_up() imports the module Streamlit loads for its first chart: a Streamlit that renames it fails here."""
    import streamlit as st

    assert charts.PLOTLY_MODULE is not None, "no single PlotlyChart.*.js among Streamlit's static files"
    assert (charts.Path(st.__file__).parent / "static" / charts.PLOTLY_MODULE).is_file()


def viewer_app(light):
    """The Training view of the shipped run at step 1,000, as a viewer (``light``) or the teacher draws it; every
    message it sends is kept."""
    import streamlit as st
    import streamlit.delta_generator as dg

    from bnviz.live.replay import Recording
    from ui.context import ViewContext
    from ui.server import SHIPPED_RUN
    from ui.views import training

    st.session_state["sent"] = sent = []
    enqueue = dg._enqueue_message

    def capture(msg):
        sent.append(msg.SerializeToString(deterministic=True))
        return enqueue(msg)

    dg._enqueue_message = capture
    try:
        training.render(Recording.load(SHIPPED_RUN).snapshot(1000), ViewContext(light=light))
    finally:
        dg._enqueue_message = enqueue


def unclipped(svg):
    """An SVG with its clip path's id (unique per drawing) named the same every time."""
    return re.sub(r"clip-[0-9a-z]+", "clip", svg)


def test_a_viewers_training_charts_are_the_svg_pictures_in_one_element_and_few_messages():
    """A viewer's redraw is a round trip through the server's event loop per message (issue 22 part 4): its two
    charts come as one element holding exactly the two pictures svg_chart draws, without the three blocks of
    st.columns the teacher's page has (its two Plotly charts), so it sends at least three messages fewer than the
    teacher's view although it also loads Plotly for the other views."""
    from bnviz.pictures import svg_chart

    views = {}
    for light in (True, False):
        at = AppTest.from_function(viewer_app, default_timeout=60, args=(light,)).run()
        assert not at.exception, [e.value for e in at.exception]
        views[light] = at
    snap = Recording.load(SHIPPED_RUN).snapshot(1000)
    pictures = [svg_chart.to_svg(figures.loss_figure(snap)), svg_chart.to_svg(figures.accuracy_figure(snap))]
    rows = [unclipped(m.value) for m in views[True].markdown if "<svg" in m.value]
    assert rows == [unclipped(charts.row_html(*pictures))]  # both pictures, in one element, the loss first
    assert rows[0].index(unclipped(pictures[0])) < rows[0].index(unclipped(pictures[1]))
    assert len(views[False].get("plotly_chart")) == 2 and not views[True].get("plotly_chart")
    viewer, teacher = len(views[True].session_state["sent"]), len(views[False].session_state["sent"])
    assert viewer + 3 <= teacher, (viewer, teacher)


def row_of_bars():
    import plotly.graph_objects as go

    from ui import charts

    bars = go.Figure(go.Bar(x=[1, 2], y=[3, 4]))
    charts.svg_row((bars, go.Figure(go.Bar(x=[1], y=[2]))), ("one", "two"))


def test_a_row_svg_cannot_draw_comes_as_plotly_charts_side_by_side():
    at = AppTest.from_function(row_of_bars, default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    assert len(at.get("plotly_chart")) == 2 and len(at.columns) == 2
    assert not [m for m in at.markdown if "<svg" in m.value]
