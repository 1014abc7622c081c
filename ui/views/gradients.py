"""Gradients: the gradient norm and the update-to-weight ratio per layer, and the saturated units."""

import streamlit as st

from bnviz.live.snapshot import Snapshot
from bnviz.pictures import captions, figures

from ..charts import chart
from ..context import ViewContext, figure
from ..layout import headline, rest, why

GRAD_CAPTION = (
    "The gradient norm of each layer's weights at every probe, from the first layer (conv1) to the last (fc3)."
)

NAME = "Gradients"  # in the view picker and in a lesson link (?view=)
UPDATE_CAPTION = "Update-to-weight ratio: how much a step changes each layer's weights, relative to their size."


def render(snap: Snapshot, ctx: ViewContext) -> None:
    said = captions.gradients(snap)
    headline(said, GRAD_CAPTION)
    chart(figure(figures.gradient_figure, snap, "grad_norm", ctx.last_n), "gn")
    why(rest(said), GRAD_CAPTION)
    st.markdown(UPDATE_CAPTION)
    chart(figure(figures.gradient_figure, snap, "update_ratio", ctx.last_n), "ur")
    chart(figure(figures.saturation_figure, snap, ctx.last_n), "sat")
