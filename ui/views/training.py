"""Training: loss and accuracy of every lane on shared axes, and when each reached 50/70/80%."""

import pyarrow as pa
import streamlit as st

from bnviz import captions, figures

from ..charts import chart
from ..context import figure

CAPTION = (
    "Same network, same batches: only the normalisation differs between the lanes (BN, another kind, or none). "
    "Thin lines: training accuracy (smoothed); thick: the validation subset; diamonds: the full test set."
)
SCOREBOARD_TITLE = "**When did each lane first reach 50 / 70 / 80 % validation accuracy?**"


def render(snap, ctx):
    st.caption(CAPTION)
    st.markdown(captions.training(snap))
    plateau = captions.plateau(snap)
    if plateau:
        st.markdown(plateau)
    if ctx.present:  # the scoreboard first, then one chart per row at full width
        scoreboard(snap)
        chart(figure(figures.loss_figure, snap, ctx.last_n, ctx.log_loss), "loss")
        chart(figure(figures.accuracy_figure, snap, ctx.last_n), "acc")
        return
    c1, c2 = st.columns(2)
    with c1:
        chart(figure(figures.loss_figure, snap, ctx.last_n, ctx.log_loss), "loss")
    with c2:
        chart(figure(figures.accuracy_figure, snap, ctx.last_n), "acc")
    scoreboard(snap)


def scoreboard_table(snap):
    """The scoreboard as an Arrow table, made once per frame for every page (st.dataframe then sends it as is)."""
    return pa.Table.from_pylist(figures.scoreboard(snap))


def scoreboard(snap):
    st.markdown(SCOREBOARD_TITLE)
    st.dataframe(figure(scoreboard_table, snap), hide_index=True, width="stretch")
