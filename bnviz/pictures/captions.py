"""Captions computed from a snapshot: every sentence states what the numbers in that snapshot show.

One function per caption: a ``Snapshot`` in (and the BN position where the view has one), a short Markdown
string out, naming lanes by ``lane.label``. A caption judges ("saturated", "drifts", "at chance") only by
the thresholds below, and says which numbers it judged; with nothing to read yet (no probe, no validation,
NaN from a diverged lane) it says so. Fixed prose that is always true stays in the views. No Streamlit here.
"""

import math

import numpy as np

from bnviz.live.lane_events import CHANCE, CHANCE_MARGIN, at_chance, lane_events, left_chance  # noqa: F401 (CHANCE_MARGIN: read here by the tests)
from bnviz.pictures.figures import window
from bnviz.step.models import BN_LAYERS
from bnviz.step.probes import SATURATION, WEIGHT_LAYERS

PLATEAU_STEPS = 50  # "still at chance after 50 steps": the fast preset's BN lane is past 70% by then
SATURATES = 0.05  # "saturates" from 5% of units in sigmoid's flat ends (< 0.05 or > 0.95, slope under a fifth of 0.25)
SMALL_SPREAD = 0.15  # activation std below this is small: sigmoid of a unit-variance input (what BN gives) has 0.21
MIDDLE = (0.4, 0.6)  # activation means in here sit in sigmoid's near-linear middle, around 0.5
VANISHING = 0.1  # conv1's gradient norm under a tenth of fc3's: the gradient vanishes toward the input
TINY_UPDATE = 1e-3  # lr*|grad|/|w| below 1e-3: a step barely moves the layer (the usual rule of thumb is ~1e-3)
DRIFT = 0.25  # a percentile that moves more than this drifts: a quarter of the unit spread BN normalises to
TARGET = 0.5  # the accuracy the training caption races to (the scoreboard's first mark)
LANDSCAPE_RECENT = 5  # the landscape comparison takes the median of each lane's latest 5 measurements

LOW, HIGH = SATURATION


# ------------------------------------------------------------------------------------------------ reading
def _finite(*xs):
    return all(x is not None and math.isfinite(x) for x in xs)


def _probe(lane, step=None):
    """The probe row {column: float} at ``step`` (the latest when None or not probed); None without probes."""
    p = lane.tables.get("probes", {})
    steps = p.get("step")
    if steps is None or not len(steps):
        return None
    i = len(steps) - 1
    if step is not None:
        hit = np.flatnonzero(np.asarray(steps) == step)
        i = int(hit[-1]) if len(hit) else i
    return {k: float(v[i]) for k, v in p.items() if np.ndim(v) == 1}


def _val_now(lane):
    """(step, accuracy) of the latest validation check with a number; None before the first."""
    v = lane.tables.get("val", {})
    acc, steps = np.asarray(v.get("val_acc", [])), np.asarray(v.get("step", []))
    ok = np.flatnonzero(np.isfinite(acc))
    return (int(steps[ok[-1]]), float(acc[ok[-1]])) if len(ok) else None


def on_plateau(lane):
    """Still at chance by its latest validation check, after at least PLATEAU_STEPS steps (and not diverged),
    and never above it since its (re)start: a lane that fell back to chance (BN switched off, a learning rate
    too large) is not "still" there; ``events`` says what happened to it."""
    now = _val_now(lane)
    return (
        now is not None
        and lane.diverged_at is None
        and lane.step >= PLATEAU_STEPS
        and at_chance(now[1])
        and not left_chance(lane.tables)
    )


def letter(lane):
    """'A', 'B' or 'C': how a sentence about a lane's events names it."""
    return lane.label.split(" · ")[0]


def _num(x):
    """Two significant digits, without a long exponent: 0.25, 0.00099, 7.5e-5."""
    s = f"{x:.2g}"
    return s.replace("e-0", "e-").replace("e+0", "e+")


def _times(ratio):
    """'256x smaller than' / '2.1x larger than' for a ratio a/b."""
    if ratio == 0:
        return "zero against"
    big = 1 / ratio if ratio < 1 else ratio
    n = f"{big:,.0f}" if big >= 10 else f"{big:.1f}"
    return f"{n}x {'smaller' if ratio < 1 else 'larger'} than"


def _nothing(what):
    return f"Nothing to read yet: {what}."


def _check(position):
    if position not in BN_LAYERS:
        raise ValueError(f"position must be one of {', '.join(BN_LAYERS)} (got {position!r})")


# ------------------------------------------------------------------------------------------------ captions
def inside_bn(snap, position):
    """Per lane, at the histograms' step: the share of saturated units after the activation, and where the
    middle 70% of the activations (15th to 85th percentile) sit."""
    _check(position)
    out = []
    for lane in snap.lanes:
        d = lane.tables.get("dists", {})
        shown = int(d["step"][-1]) if len(d.get("step", [])) else None  # the step the histograms show
        row = _probe(lane, shown)
        if row is None:
            out.append(f"{lane.label}: no probe yet.")
            continue
        step = int(row["step"])
        sat, lo, hi = (row.get(f"{position}.{k}") for k in ("saturated", "act.p15", "act.p85"))
        if not _finite(sat, lo, hi):
            out.append(f"{lane.label} (step {step:,}): no numbers for {position} in this probe (NaN or missing).")
            continue
        if lane.spec.activation == "relu":
            units = f"{sat:.1%} of units inactive (ReLU output 0)"
        elif sat >= SATURATES:
            units = f"{sat:.1%} of units saturated (below {LOW} or above {HIGH})"
        else:
            units = f"{sat:.1%} of units near 0 or 1 (below {LOW} or above {HIGH})"
        spread = f"its activations sit within {lo:.2f}–{hi:.2f} (15th–85th percentile)"
        out.append(f"{lane.label} (step {step:,}): {units}; {spread}.")
    return " ".join(out) or _nothing("no lanes")


def percentiles(snap, position, last_n=None):
    """Per lane, over the probes the chart shows: how far the 15th, 50th and 85th percentiles of what leaves BN
    (the input to the activation) moved; they "drift" when one moved more than DRIFT."""
    _check(position)
    out = []
    for lane in snap.lanes:
        p = window(lane.tables.get("probes", {}), last_n)
        steps = np.asarray(p.get("step", []))
        cols = [
            np.asarray(p.get(f"{position}.out.p{q}", np.full(len(steps), np.nan)), dtype=float) for q in (15, 50, 85)
        ]
        ok = np.isfinite(cols[0]) & np.isfinite(cols[1]) & np.isfinite(cols[2])
        if np.count_nonzero(ok) < 2:
            out.append(f"{lane.label}: fewer than two probes yet, nothing to compare.")
            continue
        p15, p50, p85 = (c[ok] for c in cols)
        moved = [float(c.max() - c.min()) for c in (p15, p50, p85)]
        verdict = (
            f"they drift (one moved more than {DRIFT})" if max(moved) > DRIFT else f"they stay put (all within {DRIFT})"
        )
        first, last = int(steps[ok][0]), int(steps[ok][-1])
        out.append(
            f"{lane.label}, steps {first:,}–{last:,}: the median ranged over {p50.min():.2f} to {p50.max():.2f} "
            f"(moved {moved[1]:.2f}), the 15th percentile moved {moved[0]:.2f}, the 85th {moved[2]:.2f}: {verdict}."
        )
    return " ".join(out) or _nothing("no lanes")


def _gradient_facts(row):
    """(norms per weight layer, conv1/fc3 ratio, shrinks at every layer on the way down); None when unreadable."""
    norms = [row.get(f"{name}.grad_norm") for name in WEIGHT_LAYERS]
    if not _finite(*norms) or norms[-1] <= 0:
        return None
    return norms, norms[0] / norms[-1], all(a < b for a, b in zip(norms, norms[1:]))


def _most_saturated(row):
    """(share, position) of the position with the most saturated units; None when unreadable."""
    sats = [(row.get(f"{pos}.saturated"), pos) for pos in BN_LAYERS]
    if not _finite(*(s for s, _ in sats)):
        return None
    return max(sats)


def gradients(snap):
    """Per lane, at the latest probe: conv1's gradient norm against fc3's, whether it shrinks at every layer on
    the way down, and the saturation at the same step ("saturates" only from SATURATES)."""
    out = []
    for lane in snap.lanes:
        row = _probe(lane)
        if row is None:
            out.append(f"{lane.label}: no probe yet.")
            continue
        step, facts, sat = int(row["step"]), _gradient_facts(row), _most_saturated(row)
        if facts is None or sat is None:
            out.append(f"{lane.label} (step {step:,}): nothing to read in this probe (NaN or missing numbers).")
            continue
        norms, ratio, shrinks = facts
        text = (
            f"{lane.label} (step {step:,}): conv1's gradient norm is {_times(ratio)} fc3's "
            f"({_num(norms[0])} vs {_num(norms[-1])}); it {'shrinks' if shrinks else 'does not shrink'} "
            f"at every layer on the way down"
        )
        share, pos = sat
        if lane.spec.activation == "relu":
            text += f"; up to {share:.1%} of units (at {pos}) are inactive (ReLU output 0)."
        elif share >= SATURATES:
            text += f"; it saturates: {share:.1%} of units at {pos} are below {LOW} or above {HIGH}."
        else:
            text += f"; at most {share:.1%} of units at any position are near 0 or 1."
        out.append(text)
    return " ".join(out) or _nothing("no lanes")


def plateau(snap):
    """For each lane still at chance after PLATEAU_STEPS steps: what its latest probe shows (activation spread,
    gradient toward the input, update ratios, saturation), with the numbers. "" when no lane is on a plateau."""
    out = []
    for lane in snap.lanes:
        if not on_plateau(lane):
            continue
        _, acc = _val_now(lane)
        out.append(
            f"**{lane.label} is still at chance** after {lane.step:,} steps "
            f"(validation accuracy {acc:.1%}; guessing scores {CHANCE:.0%})."
        )
        row = _probe(lane)
        if row is None:
            out.append("It has no probe yet to say why.")
            continue
        stds = [row.get(f"{pos}.act.std") for pos in BN_LAYERS]
        means = [row.get(f"{pos}.act.mean") for pos in BN_LAYERS]
        facts, sat = _gradient_facts(row), _most_saturated(row)
        ur = [row.get(f"{name}.update_ratio") for name in ("conv1", "conv2", "fc3")]
        signs = []
        if lane.spec.activation == "sigmoid" and _finite(*stds, *means) and max(stds) < SMALL_SPREAD:
            middle = all(MIDDLE[0] <= m <= MIDDLE[1] for m in means)
            signs.append(
                f"its activations barely spread (std {min(stds):.2f}–{max(stds):.2f} across bn1–bn4, "
                f"means {min(means):.2f}–{max(means):.2f}"
                + ("; sigmoid's near-linear middle, so each layer passes on little signal)" if middle else ")")
            )
        if facts is not None and facts[1] < VANISHING:
            norms, ratio, shrinks = facts
            signs.append(
                f"its gradient vanishes toward the input: conv1's gradient norm is {_times(ratio)} fc3's "
                f"({_num(norms[0])} vs {_num(norms[-1])}){', shrinking at every layer' if shrinks else ''}"
            )
        if _finite(*ur) and max(ur[:2]) < TINY_UPDATE:
            signs.append(
                f"a step barely moves its first layers (update-to-weight ratio conv1 {_num(ur[0])}, "
                f"conv2 {_num(ur[1])}, against fc3 {_num(ur[2])})"
            )
        if signs:
            out.append(f"At step {int(row['step']):,}: " + "; ".join(signs) + ".")
        else:
            out.append(f"Its probe at step {int(row['step']):,} shows none of the signs checked here.")
        if sat is not None and lane.spec.activation == "sigmoid":
            share, pos = sat
            if share >= SATURATES:
                out.append(f"{share:.1%} of units at {pos} are saturated, where the sigmoid's gradient is nearly 0.")
            else:
                out.append(f"At most {share:.1%} of its units sit near 0 or 1: this plateau is not saturation.")
    return " ".join(out)


def events(snap):
    """Every lane's events, one sentence each, in lane order: "B: BN switched off at step 400: 80.6% → 13.0%.",
    "A: learning rate 0.1 → 10 at step 153: 76.0% → 10.3% (step 200), it collapsed to chance.", "B restarted
    when the others were at step 400: it counts its steps from 0 there." "" when nothing happened."""
    out = []
    for lane in snap.lanes:
        out += [f"{e.describe(letter(lane))}." for e in lane_events(lane.tables, lane.diverged_at)]
    return " ".join(out)


def training(snap):
    """Which lane reached TARGET validation accuracy first, and at what step; or that none has yet. Then what
    happened to the lanes (``events``): a flip, an lr change, a restart, each with its step and accuracies."""
    race = _race_to_target(snap)
    happened = events(snap)
    return f"{race} {happened}" if happened else race


def _race_to_target(snap):
    firsts, now = {}, {}
    for lane in snap.lanes:
        v = lane.tables.get("val", {})
        acc = np.asarray(v.get("val_acc", []), dtype=float)
        hit = np.flatnonzero(acc >= TARGET)
        if len(hit):
            firsts[lane.index] = int(v["step"][hit[0]])
        if _val_now(lane):
            now[lane.index] = _val_now(lane)[1]
    if not now and not firsts:
        return _nothing("no validation check")

    def at(lane):
        s = firsts[lane.index]
        return f"step {s:,} (epoch {s / max(lane.steps_per_epoch, 1):.1f})"

    def current(lane):
        return f"{now[lane.index]:.1%}" if lane.index in now else "no number"

    mark = f"{TARGET:.0%} validation accuracy"
    if not firsts:
        state = ", ".join(f"{lane.label} {current(lane)}" for lane in snap.lanes)
        return f"No lane has reached {mark} yet (now: {state})."
    first = min(firsts.values())
    leaders = [l for l in snap.lanes if firsts.get(l.index) == first]
    rest = [l for l in snap.lanes if l not in leaders]
    if len(snap.lanes) == 1:
        text = f"{leaders[0].label} reached {mark} at {at(leaders[0])}."
    elif len(leaders) == 1:
        text = f"{leaders[0].label} reached {mark} first, at {at(leaders[0])}."
    else:
        text = f"{' and '.join(l.label for l in leaders)} reached {mark} at the same check, {at(leaders[0])}."
    later = [f"{l.label} at {at(l)}" if l.index in firsts else f"{l.label} not yet (now {current(l)})" for l in rest]
    return text + (f" {'; '.join(later)}." if later else "")


def landscape(snap, last_n=None):
    """The landscape study, like with like: a lane still at chance looks flat because it is not learning; lanes
    that learn are compared by the median loss spread along the gradient of their latest measurements."""
    measured, out = [], []
    for lane in snap.lanes:
        t = window(lane.tables.get("landscape", {}), last_n)
        spread, smooth = (np.asarray(t.get(k, []), dtype=float) for k in ("loss_spread", "smoothness"))
        ok = np.isfinite(spread) & np.isfinite(smooth) if len(spread) == len(smooth) else np.zeros(0, bool)
        if not np.any(ok):
            continue
        steps = np.asarray(t["step"])[ok][-LANDSCAPE_RECENT:]
        measured.append((lane, spread[ok][-LANDSCAPE_RECENT:], smooth[ok][-LANDSCAPE_RECENT:], steps))
    if not measured:
        return _nothing("no landscape measurements (switch the landscape probe on and train)")
    learning, flat = [], []
    for lane, spread, smooth, steps in measured:
        now = _val_now(lane)
        if lane.diverged_at is not None:
            out.append(f"{lane.label} diverged at step {lane.diverged_at:,}: its landscape is not comparable.")
        elif now is None:
            out.append(f"{lane.label}: no validation check yet, so whether it learns is not known.")
        elif at_chance(now[1]):
            flat.append(lane)
            out.append(
                f"{lane.label} is {'back' if left_chance(lane.tables) else 'still'} at chance (validation accuracy "
                f"{now[1]:.1%}): its landscape looks flat "
                "because it is not learning, not because it is smooth."
            )
        else:
            learning.append((lane, float(np.median(spread)), float(np.median(smooth)), steps))
    if flat:
        out.append("To compare like with like, use ReLU (it learns without BN), or wait until every lane learns.")
    if len(learning) >= 2:
        learning.sort(key=lambda x: x[1])  # by loss spread: the smoothest first
        (best, least, _, _), (runner_up, next_least, _, _) = learning[0], learning[1]
        lo, hi = min(int(x[3][0]) for x in learning), max(int(x[3][-1]) for x in learning)
        numbers = ", ".join(f"{l.label} {_num(s)} (smoothness {_num(m)})" for l, s, m, _ in learning)
        than = f": its spread is {_times(least / next_least)} {runner_up.label}'s" if least > 0 else ""
        out.append(
            f"Lanes that learn, median of each one's latest {LANDSCAPE_RECENT} measurements or fewer "
            f"(steps {lo:,}–{hi:,}): loss spread along the gradient {numbers}. "
            f"{best.label}'s loss changes least along the gradient{than}."
        )
    elif len(learning) == 1:
        lane, s, m, _ = learning[0]
        out.append(
            f"{lane.label} learns: loss spread along the gradient {_num(s)}, smoothness {_num(m)} (median of its "
            "latest measurements); no other learning lane to compare it with yet."
        )
    return " ".join(out)


# ---------------------------------------------------------------------------------- the studies' results
LEARNS = 0.5  # the race's verdict: a lane "learns" at a rate when its validation accuracy reaches 50%
CLOSE = 0.01  # train-mode accuracy within 1 point of eval-mode counts as "the same"


def race(results):
    """The learning-rate race, per lane: at which rates it learned, stalled or diverged (studies.RaceResult)."""
    if not results:
        return _nothing("race results")
    sentences = []
    for lane in dict.fromkeys(r.lane for r in results):
        mine = sorted((r for r in results if r.lane == lane), key=lambda r: r.lr)
        learned = [r.lr for r in mine if not r.diverged_at and r.val_acc >= LEARNS]
        stalled = [r.lr for r in mine if not r.diverged_at and not r.val_acc >= LEARNS]
        diverged = [r.lr for r in mine if r.diverged_at]
        parts = []
        if learned:
            parts.append(f"learned (≥ {LEARNS:.0%} validation accuracy) at {_rates(learned)}")
        if stalled:
            parts.append(f"stalled below {LEARNS:.0%} at {_rates(stalled)}")
        if diverged:
            parts.append(f"diverged at {_rates(diverged)}")
        largest = f"; its largest rate that learned: {max(learned):g}" if learned else "; it learned at no rate tried"
        sentences.append(f"**{lane}** " + ", ".join(parts) + largest + ".")
    steps = len(results[0].steps)
    return " ".join(sentences) + f" Each run: {steps} steps on the same batches."


def _rates(lrs):
    return ", ".join(f"{lr:g}" for lr in lrs)


def batch_statistics(result):
    """Train-mode (batch statistics) against eval-mode (running statistics) accuracy (studies.BatchStatsResult)."""
    if result is None or not result.batch_sizes:
        return _nothing("batch-statistics results")
    sizes, accs, ev = result.batch_sizes, result.train_mode_acc, result.eval_mode_acc
    smallest, worst = sizes[0], accs[0]
    same = [b for b, a in zip(sizes, accs) if abs(a - ev) <= CLOSE]
    text = (
        f"With the running statistics (eval mode) the accuracy is {ev:.1%} whatever the batch. With each batch's "
        f"own statistics (train mode) it is {worst:.1%} at batch size {smallest}"
    )
    if same:
        text += f", and first within {CLOSE:.0%} of eval mode at batch size {same[0]:,}"
    else:
        text += f", and never within {CLOSE:.0%} of eval mode up to batch size {sizes[-1]:,}"
    return text + "."


def train_eval(snap):
    """What the train/eval chart shows at the latest validation of each lane: the two accuracies and their gap."""
    normalised = [lane for lane in snap.lanes if lane.spec.norm != "none"]
    if not normalised:
        return "No lane has normalisation: train mode and eval mode are the same network."
    parts, unrecorded = [], []
    for lane in normalised:
        v = lane.tables.get("val", {})
        name = lane.label.split(" · ")[0]
        if not len(v.get("step", [])):
            continue
        if "val_acc_batch" not in v:
            unrecorded.append(name)
            continue
        ev, tr = float(v["val_acc"][-1]), float(v["val_acc_batch"][-1])
        if not _finite(ev, tr):
            continue
        gap = 100 * (tr - ev)
        if round(100 * ev, 1) == round(100 * tr, 1):
            parts.append(f"{name}: {100 * ev:.1f}% in both modes")
        else:
            better = "train mode" if gap > 0 else "eval mode"
            parts.append(
                f"{name}: {100 * ev:.1f}% in eval mode, {100 * tr:.1f}% in train mode ({better} ahead by "
                f"{abs(gap):.1f} points)"
            )
    steps = sorted(
        {int(lane.tables["val"]["step"][-1]) for lane in normalised if len(lane.tables["val"].get("step", []))}
    )
    when = f"At step {steps[-1]:,}" if len(steps) == 1 else "At each lane's latest check"
    text = f"{when}: " + "; ".join(parts) + "." if parts else ""
    if unrecorded:
        note = f"{' and '.join(unrecorded)} recorded no train-mode accuracy (a run saved before bnviz measured it)."
        text = f"{text} {note}".strip()
    return text or "No validation check yet."
