"""Training: loss and accuracy of every lane on shared axes, and when each reached 50/70/80%."""

import streamlit as st

from bnviz.live.snapshot import Snapshot
from bnviz.pictures import captions, figures

from ..charts import chart, placeholder, svg_row, warm_up
from ..context import ViewContext, figure
from ..layout import headline, rest, why

CAPTION = (
    "Same network, same batches: only the normalisation differs between the lanes (BN, another kind, or none). "
    "Thin lines: training accuracy (smoothed); thick: the validation subset; diamonds: the full test set."
)

NAME = "Training"  # in the view picker and in a lesson link (?view=)
SCOREBOARD_TITLE = "**When did each lane first reach 50 / 70 / 80 % validation accuracy?**"
CHART_HEIGHT = 380  # the loss and accuracy figures' height (bnviz.pictures.figures.styled's default)
# What fills the two charts, and what brings it (the status bar above says what runs)
LOSS = ("Training loss per step", "the training loss of every lane at every step")
ACCURACY = ("Accuracy", "every lane's training accuracy and its validation checks")


def waiting(snap, ctx, what):
    """What a chart with no point yet says: true for the page it is on (a viewer and a replay have no Start)."""
    if not ctx.live:
        return f"No step trained yet: {what} will appear here once a lane has trained."
    if snap.status == "running" and snap.responding:
        return f"Training has started: {what} will appear here after the first step."
    if snap.error or not snap.responding:
        return "No step was trained: the training process stopped (see above). Press Reset to start a new one."
    return f"Press Start: {what} will appear here."


def trained(snap):
    """Whether any lane has a step to draw."""
    return any(len(lane.tables["steps"].get("step", [])) for lane in snap.lanes)


def charts(snap, ctx):
    """The loss and the accuracy charts; before any lane has a step, a light placeholder where each will be."""
    if not trained(snap):
        return (
            lambda: placeholder("loss", LOSS[0], waiting(snap, ctx, LOSS[1]), CHART_HEIGHT),
            lambda: placeholder("acc", ACCURACY[0], waiting(snap, ctx, ACCURACY[1]), CHART_HEIGHT),
        )
    return (
        lambda: chart(figure(figures.loss_figure, snap, ctx.last_n, ctx.log_loss), "loss"),
        lambda: chart(figure(figures.accuracy_figure, snap, ctx.last_n), "acc"),
    )


def svg_charts(snap, ctx):
    """A viewer's two charts, without Plotly (bnviz/pictures/svg_chart.py), in one element."""
    figs = (
        figure(figures.loss_figure, snap, ctx.last_n, ctx.log_loss),
        figure(figures.accuracy_figure, snap, ctx.last_n),
    )
    svg_row(figs, ("loss", "acc"))


def render(snap: Snapshot, ctx: ViewContext) -> None:
    """One headline, then the charts in the first screen; the scoreboard and the full words below them."""
    said = captions.training(snap)
    headline(said, CAPTION)
    loss, accuracy = charts(snap, ctx)
    if ctx.light and trained(snap):
        svg_charts(snap, ctx)
    elif ctx.present:  # one chart per row at full width, for the back row
        loss()
        accuracy()
    else:
        c1, c2 = st.columns(2)
        with c1:
            loss()
        with c2:
            accuracy()
    scoreboard(snap)
    why(rest(said), captions.plateau(snap), CAPTION)
    if ctx.light or not trained(snap):
        warm_up()  # last: the charts after Start (or a viewer's other views) find Plotly loaded


def scoreboard(snap):
    """The scoreboard, a Markdown table made once per frame for every page (no data grid to load)."""
    table = figure(figures.scoreboard_markdown, snap)
    st.markdown(f"{SCOREBOARD_TITLE}\n\n{table}" if table else SCOREBOARD_TITLE)  # one element: one message
