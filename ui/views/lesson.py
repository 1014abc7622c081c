"""Lesson: the formula, the layer each lane runs (which values it pools, and its source), the gradient."""

import inspect
import textwrap
from collections.abc import Callable, Sequence

import streamlit as st

import bnviz.step.models
from bnviz.live.snapshot import Snapshot
from bnviz.norms.batch_renorm import batch_renorm, renorm_limits
from bnviz.norms.batchnorm import batch_norm, normalize
from bnviz.norms.batchnorm_backward import paper_backward
from bnviz.norms.batchnorm_lite import FrozenAffineBatchNorm, centre_only, scale_only
from bnviz.norms.ghost_batchnorm import ghost_batch_norm
from bnviz.norms.noisy_batchnorm import NoisyBatchNorm
from bnviz.pictures.norm_groups import describe, groups_at, norm_groups_figure
from bnviz.step.models import NORM_INFO

from ..charts import chart
from ..context import ViewContext, figure, position_picker
from ..state import Key

FORMULA = (
    r"\mathrm{BN}(\mathbf{x}) = \boldsymbol{\gamma} \odot "
    r"\frac{\mathbf{x} - \hat{\boldsymbol{\mu}}_\mathcal{B}}"
    r"{\sqrt{\hat{\boldsymbol{\sigma}}^2_\mathcal{B} + \epsilon}}"
    r" + \boldsymbol{\beta}"
)
SYMBOLS = (
    "- $\\hat\\mu_\\mathcal{B}$, $\\hat\\sigma^2_\\mathcal{B}$: mean and variance of the minibatch, per "
    "channel (over the batch, and over height and width after a convolution).\n"
    "- $\\gamma$, $\\beta$: learned scale and shift, one per channel.\n"
    "- At test time the running averages replace the batch statistics (`model.eval()`)."
)
GROUPS_CAPTION = (
    "Normalisations differ in which values share a mean and a variance. Found by asking the lane's own layer: "
    "nudge one image's values in one channel (in train mode) and see whose outputs move. Cells with the same "
    "number (and shade) are normalised with the same statistics."
)
BACKWARD_INTRO = (
    "Autograd can differentiate `normalize` above by itself. Ioffe & Szegedy (2015, Section 3) also wrote the "
    "gradient out by hand: six equations, here one line each with the paper's names. This lane trains with it "
    '(`BatchNorm(..., backward="paper")`, the default); `backward="autograd"` would let autograd do it.'
)
WHAT_TO_LOOK_FOR = (
    "### What to look for\n"
    "1. **Training** (the default lanes): the BN lane leaves chance accuracy within the first hundred steps; "
    "without BN the sigmoid LeNet stays at 10% for a long time at this learning rate.\n"
    "2. **Inside BN**: BN's output starts centred with unit spread in every channel; as gamma and beta are "
    "learned it moves to the scale and shift the network chooses (in the recorded run bn1's output ends with a "
    "spread near 2).\n"
    "3. **BN state**: running statistics settle; gamma and beta move away from 1 and 0.\n"
    "4. **Gradients**: without BN the first layers get tiny gradients."
)

NAME = "Lesson"  # in the view picker and in a lesson link (?view=)
# The functions each normalisation's lane runs, printed in this order; torch's own layers: where bnviz builds them.
FUNCTIONS: dict[str, tuple[Callable, ...]] = {
    "scratch": (batch_norm, normalize),
    "renorm": (renorm_limits, batch_renorm),
    "ghost": (ghost_batch_norm, batch_norm, normalize),
    "noisy": (NoisyBatchNorm.forward, NoisyBatchNorm.draw),
    "centre": (centre_only,),
    "scale": (scale_only,),
    "frozen": (FrozenAffineBatchNorm.__init__, batch_norm, normalize),
}
BACKWARDS: dict[str, tuple[Callable, ...]] = {
    norm: (paper_backward,) for norm in ("scratch", "ghost", "frozen")
}  # their gradient, written out
TORCH_LAYERS = ("torch", "layernorm", "groupnorm")


def functions_of(norm: str) -> tuple[tuple[Callable, ...], tuple[Callable, ...]]:
    """The functions the Lesson prints for a lane with ``norm``: (forward, backward), each a tuple."""
    return FUNCTIONS.get(norm, (bnviz.step.models.norm_layer,)), BACKWARDS.get(norm, ())


def printed(functions: Sequence[Callable]) -> tuple[str, str]:
    """(the files they are read from, their source one after the other), as the Lesson prints them."""
    files = ", ".join(dict.fromkeys(f"`{f.__module__.replace('.', '/')}.py`" for f in functions))
    return files, "\n\n".join(textwrap.dedent(inspect.getsource(f)) for f in functions)


def source_of(norm: str) -> tuple[str, str]:
    """(files, source) of the code a lane with ``norm`` runs at each BN position."""
    return printed(functions_of(norm)[0])


def render(snap: Snapshot, ctx: ViewContext) -> None:
    st.markdown("### Batch Normalization, in one line")
    st.latex(FORMULA)
    st.markdown(SYMBOLS)
    lanes = list(snap.lanes)
    choice = next((l.index for l in lanes if l.spec.norm != "none"), 0)
    if len(lanes) > 1:
        st.session_state.setdefault(Key.LESSON_LANE, choice)
        if st.session_state[Key.LESSON_LANE] not in range(len(lanes)):
            st.session_state[Key.LESSON_LANE] = choice
        choice = st.radio(
            "Lane", range(len(lanes)), format_func=lambda i: lanes[i].label, horizontal=True, key=Key.LESSON_LANE
        )
    lane = lanes[choice]
    norm = lane.spec.norm
    info = NORM_INFO[norm]
    st.markdown(f"### What {lane.label.split(' · ')[0]} normalises: {info.label}")
    st.markdown(info.description)
    st.caption(GROUPS_CAPTION)
    position = position_picker()
    chart(figure(norm_groups_figure, norm, position, snap.settings.batch_size, info.label), "norm-groups")
    st.markdown(describe(*groups_at(norm, position, snap.settings.batch_size)))
    if norm == "none":
        st.markdown(WHAT_TO_LOOK_FOR)
        return
    name, code = source_of(norm)
    st.markdown(f"### The layer {lane.label.split(' · ')[0]} runs (read from {name})")
    if norm in TORCH_LAYERS:
        same = (
            " Our from-scratch BN (`bnviz/norms/batchnorm.py`, 'BN scratch') computes the same formula in Python."
            if norm == "torch"
            else ""
        )
        st.caption(f"{info.label} is torch's own layer (its kernels are C++); this is where bnviz builds it.{same}")
    st.code(code, language="python", line_numbers=True, wrap_lines=True)
    backward = functions_of(norm)[1]
    if backward:
        name, code = printed(backward)
        st.markdown(f"### The gradient, written out (read from {name})")
        st.caption(BACKWARD_INTRO)
        st.code(code, language="python", line_numbers=True, wrap_lines=True)
    st.markdown(WHAT_TO_LOOK_FOR)
