"""Inside BN: what enters each BN layer, what leaves it, and what the activation makes of it."""

import streamlit as st

from bnviz.live.snapshot import Snapshot
from bnviz.pictures import captions, figures

from ..charts import chart
from ..context import ViewContext, figure, position_picker
from ..layout import headline, rest, why

HISTOGRAM_CAPTION = (
    "Left: what enters BN (the conv/linear output). Middle: what leaves it: with BN centred and "
    "scaled, without BN unchanged. Right: after the activation. A sigmoid unit near 0 or 1 is saturated: "
    "its gradient is almost zero there."
)
PERCENTILE_CAPTION = (
    "Ioffe & Szegedy (2015), Figure 1: the 15th, 50th and 85th percentiles of the input to the activation, "
    "over training. How far they moved in this run:"
)

NAME = "Inside BN"  # in the view picker and in a lesson link (?view=)
HEATMAP_CAPTION = "The whole distribution over time: each column is one probe."


def render(snap: Snapshot, ctx: ViewContext) -> None:
    pos = position_picker()
    said = captions.inside_bn(snap, pos)
    headline(said, HISTOGRAM_CAPTION)
    chart(figure(figures.histogram_figure, snap, pos), "hist")
    why(rest(said), HISTOGRAM_CAPTION)
    moved = captions.percentiles(snap, pos, ctx.last_n)
    headline(moved, PERCENTILE_CAPTION)
    chart(figure(figures.percentile_figure, snap, pos, "out", ctx.last_n), "pct")
    why(rest(moved), PERCENTILE_CAPTION)
    st.markdown(HEATMAP_CAPTION)
    cols = st.columns(len(snap.lanes))
    for col, lane in zip(cols, snap.lanes):
        with col:
            chart(figure(figures.heatmap_figure, lane, pos, "out"), f"heat{lane.index}")
