"""Lesson: the formula, the layer students watch train (its source), and the gradient written out."""

import inspect

import streamlit as st

import bnviz.batchnorm
import bnviz.batchnorm_backward

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
BACKWARD_INTRO = (
    "Autograd can differentiate the layer above by itself. Ioffe & Szegedy (2015, Section 3) also wrote the "
    'gradient out by hand; here it is, with the paper\'s names, chosen by `BatchNorm(..., backward="paper")`.'
)
WHAT_TO_LOOK_FOR = (
    "### What to look for\n"
    "1. **Training**: the BN lane leaves chance accuracy within the first hundred steps; without BN "
    "the sigmoid LeNet stays at 10% for a long time at this learning rate.\n"
    "2. **Inside BN**: before BN the distributions wander; after BN they are centred with unit spread.\n"
    "3. **BN state**: running statistics settle; gamma and beta move away from 1 and 0.\n"
    "4. **Gradients**: without BN the first layers get tiny gradients."
)


def render(snap, ctx):
    st.markdown("### Batch Normalization, in one line")
    st.latex(FORMULA)
    st.markdown(SYMBOLS)
    st.markdown("### The layer you are watching train (read from `bnviz/batchnorm.py`)")
    st.code(inspect.getsource(bnviz.batchnorm), language="python", line_numbers=True, wrap_lines=True)
    st.markdown("### The gradient, written out (read from `bnviz/batchnorm_backward.py`)")
    st.caption(BACKWARD_INTRO)
    st.code(inspect.getsource(bnviz.batchnorm_backward), language="python", line_numbers=True, wrap_lines=True)
    st.markdown(WHAT_TO_LOOK_FOR)
