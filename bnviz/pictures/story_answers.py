"""The Story's answers read off the run: for each question, which of its options the numbers support, and why.

Each function takes what its reveal shows (the snapshot, the flip's measurement, the race's results) and returns
an ``Answer``: the index of the option the run supports, or None when the run cannot tell yet (and what it
lacks). The Story then says whether the class's prediction held. The thresholds are the captions' own, so an
answer never contradicts the sentence printed beside it. No Streamlit here.
"""

from dataclasses import dataclass

import numpy as np

from bnviz.live.lane_events import CHANCE, at_chance
from bnviz.pictures import captions
from bnviz.step.models import BN_LAYERS

SAME = 0.02  # the flip: within 2 points of the accuracy before, it "stays about the same"
WIDER = 1.5  # Inside BN: the BN lane's middle 70% at least 1.5x as wide as the plain lane's "spreads them out"
LEARNING_RATES = (
    (0.5, 0),
    (5.0, 1),
)  # the race: largest rate that learned < 0.5: "0.1"; < 5: "around 1"; else "10 or more"


@dataclass(frozen=True)
class Answer:
    option: int | None  # the index of the option the run supports; None: it cannot tell yet
    why: str  # the numbers that decided, or what is missing


def latest_probe(lane) -> dict | None:
    """The lane's latest probe row {column: float}; None before its first probe."""
    p = lane.tables.get("probes", {})
    if not len(p.get("step", [])):
        return None
    return {k: float(v[-1]) for k, v in p.items() if np.ndim(v) == 1}


def _finite(*xs) -> bool:
    return all(x is not None and np.isfinite(x) for x in xs)


def first_to_target(snap) -> Answer:
    """Question 1 (options: A without BN, B with BN, level): which lane reached captions.TARGET validation
    accuracy first, by the first check at or above it."""
    firsts = {}
    for lane in snap.lanes:
        v = lane.tables.get("val", {})
        hit = np.flatnonzero(np.asarray(v.get("val_acc", []), dtype=float) >= captions.TARGET)
        if len(hit):
            firsts[lane.index] = int(v["step"][hit[0]])
    mark = f"{captions.TARGET:.0%}"
    if not firsts:
        return Answer(None, f"no lane has reached {mark} yet: let it train, then Reveal again")
    first = min(firsts.values())
    leaders = [l for l in snap.lanes if firsts.get(l.index) == first]
    with_bn = {l.spec.norm != "none" for l in leaders}
    names = " and ".join(l.label for l in leaders)
    if with_bn == {True}:
        return Answer(1, f"{names} reached {mark} first, at step {first:,}")
    if with_bn == {False}:
        return Answer(0, f"{names} reached {mark} first, at step {first:,}")
    return Answer(2, f"{names} reached {mark} at the same check, step {first:,}")


def why_plateau(snap) -> Answer:
    """Question 2 (options: saturated, signal and gradient fade, lr too high): read from the first lane still at
    chance (captions.on_plateau), by its latest probe: saturation from captions.SATURATES; fading when conv1's
    gradient is under captions.VANISHING of fc3's or the activations barely spread."""
    lane = next((l for l in snap.lanes if captions.on_plateau(l)), None)
    if lane is None:
        return Answer(None, "no lane is at chance after a plateau in this run right now")
    row = latest_probe(lane)
    if row is None:
        return Answer(None, f"{lane.label} has no probe yet")
    sats: list = [row.get(f"{p}.saturated") for p in BN_LAYERS]  # None where a probe lacks a value (_finite)
    stds: list = [row.get(f"{p}.act.std") for p in BN_LAYERS]
    norms: list = [row.get(f"{n}.grad_norm") for n in ("conv1", "fc3")]
    if _finite(*sats) and max(sats) >= captions.SATURATES:
        return Answer(0, f"{max(sats):.1%} of {lane.label}'s units are saturated")
    if _finite(*norms) and norms[1] > 0 and norms[0] / norms[1] < captions.VANISHING:
        return Answer(1, f"conv1's gradient in {lane.label} is {norms[0] / norms[1]:.1%} of fc3's")
    if _finite(*stds) and max(stds) < captions.SMALL_SPREAD:
        return Answer(1, f"{lane.label}'s activations barely spread (std at most {max(stds):.2f})")
    return Answer(None, f"{lane.label}'s probe shows none of the signs checked here")


def what_bn_does(snap, position: str = "bn1") -> Answer:
    """Question 3 (options: nothing visible, spreads them around 0 where the sigmoid is steep, pushes them to 0
    or 1), at ``position``'s latest probe: a BN lane against a lane without BN. The width of the middle 70% of
    the activations (15th to 85th percentile): WIDER times the plain lane's or more "spreads them out", unless
    the BN lane saturates (captions.SATURATES) more than the plain lane, which is "pushes them to 0 or 1"."""
    bn = next((l for l in snap.lanes if l.spec.norm != "none" and not l.bn_bypassed), None)
    plain = next((l for l in snap.lanes if l.spec.norm == "none" or l.bn_bypassed), None)
    if bn is None or plain is None:
        return Answer(None, "it takes a lane with BN and one without")
    rows: list = [latest_probe(bn), latest_probe(plain)]  # dicts once the check below passed
    if rows[0] is None or rows[1] is None:
        return Answer(None, "both lanes need a probe first: press Start")
    pairs: list = [
        (r.get(f"{position}.act.p85", np.nan) - r.get(f"{position}.act.p15", np.nan), r.get(f"{position}.saturated"))
        for r in rows
    ]
    (w_bn, s_bn), (w_plain, s_plain) = pairs
    if not _finite(w_bn, w_plain, s_bn, s_plain):
        return Answer(None, f"no numbers for {position} in the latest probes")
    widths = f"the middle 70% spans {w_bn:.2f} in {bn.label} against {w_plain:.2f} in {plain.label}"
    if s_bn >= captions.SATURATES and s_bn > s_plain:
        return Answer(2, f"{s_bn:.1%} of {bn.label}'s units are near 0 or 1 against {s_plain:.1%}; {widths}")
    if w_bn >= WIDER * w_plain:
        return Answer(1, widths)
    if w_plain >= WIDER * w_bn:
        return Answer(None, widths + ": here BN narrows them")
    return Answer(0, widths + f" (less than {WIDER:g}x apart)")


def after_the_flip(before: float, after: float) -> Answer:
    """Question 4 (options: stays about the same, falls a little, collapses towards chance): the validation
    accuracy before and after BN was switched off. Within SAME: the same; at chance (lane_events.at_chance) or
    more than half its gain over chance lost: a collapse; anything else falls a little."""
    said = f"{before:.1%} with BN, {after:.1%} without"
    if after >= before - SAME:
        return Answer(0, said)
    if at_chance(after) or after - CHANCE < (before - CHANCE) / 2:
        return Answer(2, said)
    return Answer(1, said)


def largest_rate(results) -> Answer:
    """Question 5 (options: 0.1, around 1, 10 or more): the largest learning rate at which the network with BN
    learned in the race (captions.LEARNS validation accuracy, not diverged)."""
    learned = [r.lr for r in results or () if r.norm != "none" and not r.diverged_at and r.val_acc >= captions.LEARNS]
    if not results:
        return Answer(None, "run the race first (Experiments → Learning-rate race)")
    if not learned:
        return Answer(None, "the network with BN learned at no rate tried")
    top = max(learned)
    option = next((i for limit, i in LEARNING_RATES if top < limit), 2)
    return Answer(option, f"the largest rate at which the network with BN learned: {top:g}")
