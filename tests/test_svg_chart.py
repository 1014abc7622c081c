"""bnviz/pictures/svg_chart.py: a viewer's static charts say what the figure says.

The reference is the chart's own axis labels: every tick label's value at its position defines the map from
data to drawing, and every drawn point of every trace must sit where that map puts the trace's value (a
chart whose curves disagree with its own labels would tell the class something false). The figures are the
dashboard's own (``bnviz.pictures.figures``), from the shipped 10-epoch recording and from made-up tables.
"""

import dataclasses
import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest

from bnviz.live.replay import Recording
from bnviz.pictures import figures, svg_chart

NS = {"s": "http://www.w3.org/2000/svg"}
SHIPPED = Path(__file__).resolve().parents[1] / "assets" / "chapter-run" / "experiment.npz"


@pytest.fixture(scope="module")
def shipped():
    return Recording.load(SHIPPED)


def parse(fig):
    return ET.fromstring(svg_chart.to_svg(fig))


def ticks(root, axis):
    """[(value, position)] of one axis's tick labels."""
    at = "x" if axis == "x" else "y"
    group = root.find(f".//s:g[@class='{axis}ticks']", NS)
    shift = 0 if axis == "x" else -5  # a y label's baseline sits 5 below its tick
    return [(float(t.text), float(t.get(at)) + shift) for t in group.findall("s:text", NS)]


def label_map(root, axis, log):
    """The data -> drawing map that the axis's labels state (a straight line through every label)."""
    pairs = ticks(root, axis)
    assert len(pairs) >= 2, pairs
    v = np.array([math.log10(p[0]) if log else p[0] for p in pairs])
    pos = np.array([p[1] for p in pairs])
    slope, offset = np.polyfit(v, pos, 1)
    assert np.allclose(slope * v + offset, pos, atol=0.6), "the labels themselves are not evenly spaced"
    return lambda data: slope * (np.log10(data) if log else np.asarray(data, dtype=float)) + offset


def runs(line):
    """The runs of a line's path (``M x y l dx dy ...`` per run, in its own units), as vertices in the drawing's
    units: its transform is ``scale(1/STEPS)``."""
    assert line.get("transform") == f"scale({1 / svg_chart.STEPS:g})"
    out = []
    for run in line.get("d").split("M")[1:]:
        start, _, moves = run.partition("l")
        numbers = [int(v) for v in re.findall(r"-?\d+", start + " " + moves)]
        out.append(np.cumsum(np.array(numbers).reshape(-1, 2), axis=0) / svg_chart.STEPS)
    return out


def drawn(root, name):
    """(vertices of the trace's lines, centres of its markers) for the trace called ``name``."""
    group = root.find(f".//s:g[@data-trace='{name}']", NS)
    assert group is not None, name
    vertices = [tuple(v) for line in group.findall("s:path[@class='line']", NS) for v in np.vstack(runs(line))]
    centres = [(float(c.get("cx")), float(c.get("cy"))) for c in group.findall(".//s:circle", NS)]
    for diamond in group.findall(".//s:path[@d]", NS):  # M x,top L right,y L x,bottom L left,y Z
        if diamond.get("class") == "line":
            continue
        (x, top), _, (_, bottom), _ = (tuple(map(float, p.split(","))) for p in diamond.get("d")[1:-1].split("L"))
        centres.append((x, (top + bottom) / 2))
    return np.array(vertices).reshape(-1, 2), np.array(centres).reshape(-1, 2)


def plot_area(root):
    """(left, top, right, bottom) of the plot, as its clip rectangle says."""
    r = root.find(".//s:clipPath/s:rect", NS)
    x, y, w, h = (float(r.get(k)) for k in ("x", "y", "width", "height"))
    return x, y, x + w, y + h


def check_every_point(fig, root):
    """Every vertex and marker where the axis labels put its value, and the axes spanning what the figure
    asks: its y range (given by every figure here) from the plot's bottom to its top, and on x the data's
    extent from edge to edge (lines only) or a little inside the edges (markers: Plotly pads for them)."""
    log = fig.layout.yaxis.type == "log"
    to_x, to_y = label_map(root, "x", False), label_map(root, "y", log)
    left, top, right, bottom = plot_area(root)
    lo, hi = fig.layout.yaxis.range
    ends = (10.0**lo, 10.0**hi) if log else (lo, hi)
    assert to_y(ends[0]) == pytest.approx(bottom, abs=0.5) and to_y(ends[1]) == pytest.approx(top, abs=0.5)
    xs = np.concatenate([np.asarray(t.x, dtype=float) for t in fig.data] + [[s.x0 for s in fig.layout.shapes]])
    first, last = to_x(np.nanmin(xs)), to_x(np.nanmax(xs))
    if not any("markers" in t.mode for t in fig.data):
        assert first == pytest.approx(left, abs=0.5) and last == pytest.approx(right, abs=0.5)
    else:
        assert left < first < left + 0.05 * (right - left) and right - 0.05 * (right - left) < last < right
    for trace in fig.data:
        x, y = np.asarray(trace.x, dtype=float), np.asarray(trace.y, dtype=float)
        keep = np.isfinite(x) & np.isfinite(y) & ((y > 0) if log else True)
        vertices, centres = drawn(root, trace.name)
        want = np.column_stack([to_x(x[keep]), to_y(y[keep])])
        if "markers" in trace.mode:
            assert len(centres) == len(want), trace.name  # every value, once
            assert np.allclose(centres, want, atol=0.2), trace.name
        if "lines" in trace.mode:
            check_line(vertices, want, trace.name)


def check_line(vertices, want, name):
    """A line's vertices are the values' places, in order, the first and the last included; where a column
    (svg_chart.COLUMN units wide) holds more values than two, the line keeps its lowest and its highest
    (svg_chart._thin)."""
    if len(vertices) == len(want):
        assert np.allclose(vertices, want, atol=0.2), name
        return
    assert 0 < len(vertices) < len(want), name
    at = [int(np.argmin(np.abs(want - v).sum(axis=1))) for v in vertices]  # which value each vertex is
    assert np.allclose(vertices, want[at], atol=0.2) and at == sorted(at), name
    assert at[0] == 0 and at[-1] == len(want) - 1, name
    column = svg_chart.COLUMN  # the width in units within which the line keeps two values
    cols, drawn_cols = np.floor(want[:, 0] / column), np.floor(want[at][:, 0] / column)
    for c in np.unique(cols):  # per column, the line reaches as low and as high as the values there
        here = want[cols == c][:, 1]
        kept = want[at][np.abs(drawn_cols - c) <= 1][:, 1]  # a neighbour's column too: a value on a column's
        assert kept.min() <= here.min() + 0.2 and kept.max() >= here.max() - 0.2, (name, c)  # edge may flip


@pytest.mark.parametrize("at", [300, 2000, None])
def test_every_point_of_the_loss_and_accuracy_sits_where_the_axis_labels_put_it(shipped, at):
    snap = shipped.snapshot(at)
    for fig in (figures.loss_figure(snap), figures.loss_figure(snap, log_y=False), figures.accuracy_figure(snap)):
        check_every_point(fig, parse(fig))


def test_a_diverged_lane_keeps_the_others_readable_as_the_figure_says(shipped):
    snap = shipped.snapshot(1000)
    a, b = snap.lanes
    steps = dict(a.tables["steps"])
    steps["train_loss"] = steps["train_loss"].copy()
    steps["train_loss"][-100:] = np.r_[np.geomspace(10, 1e18, 98), np.inf, np.nan]  # up, and over
    diverged = dataclasses.replace(a, tables={**a.tables, "steps": steps})
    fig = figures.loss_figure(dataclasses.replace(snap, lanes=(diverged, b)))
    assert 10 ** fig.layout.yaxis.range[1] < 100  # the figure's range holds the healthy losses only
    check_every_point(fig, parse(fig))  # which the SVG keeps: its y axis is that range, the rest is clipped


def test_a_window_of_the_last_steps_is_drawn_as_the_figure_holds_it(shipped):
    fig = figures.loss_figure(shipped.snapshot(2000), last_n=200)
    root = parse(fig)
    check_every_point(fig, root)
    assert min(v for v, _ in ticks(root, "x")) >= 1800 - 200  # the axis spans the window, not the run


def test_the_axis_labels_are_the_figures_own_where_it_sets_them(shipped):
    fig = figures.loss_figure(shipped.snapshot(300))  # one decade of loss: six round values as tick labels
    assert fig.layout.yaxis.tickvals is not None
    lo, hi = fig.layout.yaxis.range
    wanted = [t for t in fig.layout.yaxis.ticktext if lo <= math.log10(float(t)) <= hi]
    labels = [t.text for t in parse(fig).find(".//s:g[@class='yticks']", NS).findall("s:text", NS)]
    assert labels == wanted and len(labels) >= 4


def test_log_ticks_are_1_2_5_per_decade_and_nice_ticks_are_round():
    assert svg_chart.log_ticks(-1, math.log10(3)) == pytest.approx([0.1, 0.2, 0.5, 1, 2])
    assert svg_chart.nice_ticks(0, 1) == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1])
    assert svg_chart.nice_ticks(-190, 4870) == pytest.approx([0, 1000, 2000, 3000, 4000])
    assert svg_chart.label(0.25) == "0.25" and svg_chart.label(2000.0) == "2000"
    assert svg_chart.label(1e-5) == "0.00001" and svg_chart.label(1e-7) == "1e-7"  # as Plotly's ~g writes them


def test_a_gap_in_a_curve_stays_a_gap():
    fig = go.Figure(go.Scatter(x=[0, 1, 2, 3, 4], y=[1, 2, np.nan, 3, 4], mode="lines", name="a"))
    group = parse(fig).find(".//s:g[@data-trace='a']", NS)
    assert [len(run) for run in runs(group.find("s:path[@class='line']", NS))] == [2, 2]


def legend(fig):
    return [t.text for t in parse(fig).find(".//s:g[@class='legend']", NS).findall("s:text", NS)]


def test_the_legend_lists_exactly_the_traces_that_plotly_would(shipped):
    fig = figures.accuracy_figure(shipped.snapshot(2000))  # train and test traces are left out of the legend
    shown = [t.name for t in fig.data if t.showlegend is not False]
    assert legend(fig) == shown == ["A · BN off · validation", "B · BN scratch · validation"]
    one_lane = dataclasses.replace(shipped.snapshot(2000), lanes=shipped.snapshot(2000).lanes[1:])
    assert legend(figures.loss_figure(one_lane)) == []  # one trace: Plotly draws no legend
    assert legend(figures.loss_figure(one_lane).update_layout(showlegend=True)) == ["B · BN scratch"]


def test_the_teachers_marks_are_drawn_at_their_steps_with_their_labels():
    fig = go.Figure(go.Scatter(x=[0, 100, 200], y=[2.3, 1.0, 0.5], mode="lines", name="B"))
    fig.update_layout(
        shapes=[dict(type="line", x0=120, x1=120, xref="x", y0=0, y1=1, yref="paper", line=dict(dash="dash"))],
        annotations=[dict(text="B: BN off", x=120, xref="x", y=0.99, yref="paper", xanchor="left", showarrow=False)],
    )
    root = parse(fig)
    mark = root.find(".//s:g[@class='marks']/s:line", NS)
    assert float(mark.get("x1")) == pytest.approx(label_map(root, "x", False)(120), abs=0.2)
    assert mark.get("stroke-dasharray") == svg_chart.DASHES["dash"]
    assert "B: BN off" in [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]


def test_a_label_at_the_right_edge_turns_to_the_left_of_its_mark():
    fig = go.Figure(go.Scatter(x=[0, 100], y=[1, 2], mode="lines", name="B"))
    label = dict(text="B: BN off", x=100, xref="x", y=0.99, yref="paper", xanchor="left", xshift=3, showarrow=False)
    fig.update_layout(annotations=[label])
    text = next(t for t in parse(fig).iter("{http://www.w3.org/2000/svg}text") if t.text == "B: BN off")
    assert text.get("text-anchor") == "end" and float(text.get("x")) <= svg_chart.W  # inside the drawing


def test_text_from_a_figure_is_escaped():
    fig = go.Figure(go.Scatter(x=[0, 1], y=[0, 1], name="a <b> & c"))
    fig.update_layout(title=dict(text="loss < 1 & rising"))
    root = parse(fig)  # well-formed XML: nothing in a name or a title can open a tag
    assert root.get("data-chart") == "loss < 1 & rising"


def test_bars_heat_maps_and_subplots_go_to_plotly(shipped):
    snap = shipped.snapshot(2000)
    with pytest.raises(svg_chart.Unsupported):
        svg_chart.to_svg(figures.histogram_figure(snap, "bn1"))  # bars, in three subplots
    with pytest.raises(svg_chart.Unsupported):
        svg_chart.to_svg(go.Figure(go.Heatmap(z=[[1, 2], [3, 4]])))
    with pytest.raises(svg_chart.Unsupported):
        svg_chart.to_svg(go.Figure(go.Scatter(x=[0], y=[0], mode="markers", marker=dict(symbol="star"))))
