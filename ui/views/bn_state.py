"""BN state: the running statistics, one batch's statistics against them, the learned gamma and beta, and the
accuracy with running statistics (eval mode) against batch statistics (train mode)."""

import streamlit as st

from bnviz.live.snapshot import Snapshot
from bnviz.pictures import captions, figures
from bnviz.step.models import NORM_INFO

from ..charts import chart
from ..context import ViewContext, figure, position_picker
from ..layout import headline, rest, why
from ..state import Key

RUNNING_CAPTION = (
    "The running mean and variance are what BN uses at test time: moving averages of the batch statistics. "
    "Each training step moves them a fraction {momentum:g} (the momentum) of the way towards that batch's values."
)
BATCH_CAPTION = "One batch's statistics scatter around the running ones: that noise is part of why BN regularises."
NO_RUNNING_CAPTION = (
    "This lane's normalisation keeps no running statistics: it normalises each image the same way in training "
    "and at test time."
)
FROZEN_CAPTION = "This lane keeps gamma and beta at 1 and 0 (the chapter's exercise): they are not learned."
TRAIN_EVAL_CAPTION = (
    "The same weights, two ways to normalise: eval mode uses the running statistics (what the network is at test "
    "time), train mode each batch's own (batches of the training batch size). Where they differ, the running "
    "statistics do not describe the batches the network learned on (small or skewed batches, a high learning "
    "rate), or train mode adds something of its own (noisy BN's noise, ghost BN's sub-batches)."
)
GAMMA_BETA_CAPTION = (
    "gamma and beta start at 1 and 0 and are learned: the network chooses the scale and shift it wants."
)

NAME = "BN state"  # in the view picker and in a lesson link (?view=)


def render(snap: Snapshot, ctx: ViewContext) -> None:
    bn_lanes = [l for l in snap.lanes if l.spec.norm != "none"] or list(snap.lanes)
    lane = bn_lanes[0]
    with st.container(horizontal=True, vertical_alignment="center", gap="medium"):  # the two pickers, one row
        pos = position_picker()
        if len(bn_lanes) > 1:
            i = st.radio(
                "Lane",
                range(len(bn_lanes)),
                format_func=lambda i: bn_lanes[i].label,
                horizontal=True,
                key=Key.STATE_LANE,
                label_visibility="collapsed",
            )
            lane = bn_lanes[min(i or 0, len(bn_lanes) - 1)]
    state = NORM_INFO[lane.spec.norm].state
    keeps = "running_mean" in state or "running_var" in state
    running = RUNNING_CAPTION.format(momentum=snap.settings.bn_momentum)
    if keeps:
        headline(f"**{lane.label}** at {pos}: the running mean and variance, what BN uses at test time.", running)
    else:
        headline(NO_RUNNING_CAPTION)
    chart(figure(figures.running_stats_figure, lane, pos), "running")
    why(running if keeps else NO_RUNNING_CAPTION)
    st.markdown(BATCH_CAPTION if keeps else NO_RUNNING_CAPTION)
    chart(figure(figures.batch_vs_running_figure, lane, pos), "batchrun")
    st.markdown(GAMMA_BETA_CAPTION if lane.spec.norm != "frozen" else FROZEN_CAPTION)
    chart(figure(figures.gamma_beta_figure, lane, pos), "gb")
    said = captions.train_eval(snap)
    headline(said, TRAIN_EVAL_CAPTION)
    chart(figure(figures.train_eval_figure, snap, ctx.last_n), "traineval")
    why(rest(said), TRAIN_EVAL_CAPTION)
