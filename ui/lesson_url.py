"""The lesson set-up in the URL, written by the page itself on every run: a link, a reload and the share panel's
lesson link reopen exactly this set-up.

Streamlit's own binding (``bind="query-params"``) drops a widget's value from the URL when it equals the
*widget's* default, which is not what a missing parameter means to this page: a toggle's default is off, so
``bn1=false`` (lane B without BN) vanished and the link reopened B with BN; a select slider's default is its first
option, so ``lr=0.01`` vanished and the link reopened with the preset's 0.1. Here each parameter is written when
it differs from what the page reads when the parameter is absent (``absent``), so links stay short and the round
trip is exact.
"""

import streamlit as st

from bnviz.step.models import BN_LAYERS

from .state import DEFAULT_PRESET, PRESETS, URL_PRESETS, Key, keep_in_url

LANE_KEYS = tuple(k for i in range(3) for k in (Key.bn(i), Key.impl(i)))


def default_impl(i: int) -> str:
    """A lane's kind when a link names none: torch's BN for lane C (as *+ add lane* adds it), else ours."""
    return "torch" if i == 2 else "scratch"


def absent(preset: str, lanes: int) -> dict[str, str]:
    """What the page uses for each parameter a link leaves out (``ui/state.py``: init_widgets, url_lanes)."""
    p = PRESETS[preset]
    values = {
        Key.PRESET: DEFAULT_PRESET,
        Key.LR: f"{p['lr']:g}",
        Key.BATCH_SIZE: str(p["batch_size"]),
        Key.EPOCHS: str(p["epochs"]),
        Key.SEED: "0",
        Key.CLASSES: "10",
        Key.ACTIVATION: "sigmoid",
        Key.VIEW: "Training",
        Key.POSITION: BN_LAYERS[0],
        Key.PRESENT: "false",
    }
    for i in range(lanes):
        values[Key.bn(i)] = "false" if i == 0 else "true"
        values[Key.impl(i)] = default_impl(i)
    return values


def setup(lanes: int) -> dict[str, str]:
    """This page's lesson set-up as a link's values (session state, for ``lanes`` lanes)."""
    ss = st.session_state
    preset = ss.get(Key.PRESET, DEFAULT_PRESET)
    short = {name: short for short, name in URL_PRESETS.items()}
    values = {
        Key.PRESET: short.get(preset, preset),
        Key.LR: f"{ss[Key.LR]:g}",
        Key.BATCH_SIZE: str(ss[Key.BATCH_SIZE]),
        Key.EPOCHS: str(int(ss[Key.EPOCHS])),
        Key.SEED: str(int(ss[Key.SEED])),
        Key.CLASSES: str(ss[Key.CLASSES]),
        Key.ACTIVATION: str(ss[Key.ACTIVATION]),
        Key.VIEW: str(ss[Key.VIEW]),
        Key.POSITION: str(ss.get(Key.POSITION) or BN_LAYERS[0]),
        Key.PRESENT: "true" if ss.get(Key.PRESENT) else "false",
    }
    for i in range(lanes):
        values[Key.bn(i)] = "true" if ss.get(Key.bn(i)) else "false"
        values[Key.impl(i)] = str(ss.get(Key.impl(i)) or default_impl(i))
    return values


def write(lanes: int) -> None:
    """Write every lesson parameter that differs from its absent value into the URL; remove the others (and the
    lanes past ``lanes``). The preset's own short name stands for its full name (``preset=chapter``)."""
    preset = st.session_state.get(Key.PRESET, DEFAULT_PRESET)
    wanted = setup(lanes)
    defaults = absent(preset if preset in PRESETS else DEFAULT_PRESET, lanes)
    defaults[Key.PRESET] = "demo"
    kept = {k: v for k, v in wanted.items() if v != defaults.get(k)}
    if lanes == 3 and Key.bn(2) not in kept and Key.impl(2) not in kept:
        kept[Key.bn(2)] = wanted[Key.bn(2)]  # a third lane exists only where the link names it
    for key in (*defaults, *LANE_KEYS):
        keep_in_url(key, kept.get(key))


def write_position() -> None:
    """The BN position alone: its picker lives in the live fragment, whose reruns do not run the whole page."""
    position = st.session_state.get(Key.POSITION) or BN_LAYERS[0]
    keep_in_url(Key.POSITION, position if position != BN_LAYERS[0] else None)
