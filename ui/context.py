"""What a view gets besides the snapshot: the chart options, and the live experiment when there is one."""

from dataclasses import dataclass
from typing import Any

import streamlit as st

from bnviz.step.models import BN_LAYERS

from . import lesson_url
from .shared import frames
from .state import Key


@dataclass(frozen=True)
class ViewContext:
    last_n: int | None = None  # the window: the last N steps, or None for all of them
    log_loss: bool = True
    exp: Any = None  # the live experiment (a LiveExperiment); None in a replay
    data: Any = None  # the dataset (the studies test on it)
    registry: Any = None  # the server's Registry
    key: str | None = None  # the experiment's id in the registry
    present: bool = False  # presenter mode: one chart per row, the scoreboard first
    light: bool = False  # the viewer page: the Training charts as static SVG (bnviz.pictures.svg_chart), before Plotly

    @property
    def live(self):
        return self.exp is not None


def figure(build, *args):
    """``build(*args)``, shared by every page that shows the same frame (see ui/shared.py)."""
    return frames().figure(build, *args)


def position_picker():
    """The BN position shared by the views that look at one layer."""
    st.segmented_control(
        "BN position",
        BN_LAYERS,
        key=Key.POSITION,
        label_visibility="collapsed",
        required=True,  # a second click keeps the position (it would otherwise show nothing highlighted)
        help="bn1, bn2 follow the convolutions; bn3, bn4 the fully connected layers",
    )
    if not st.session_state.get(Key.RECORDING):
        lesson_url.write_position()  # a click reruns only the live fragment, not the page that writes the rest
    return st.session_state[Key.POSITION] or BN_LAYERS[0]
