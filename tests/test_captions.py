"""Every claim a caption makes, checked against the numbers in the snapshot it was made from.

Real data: the shipped 10-epoch run (assets/chapter-run/experiment.npz) replayed at several steps, and a short
run with the dashboard's fast settings. Each check recomputes from the snapshot's tables what a caption
states (numbers, and words such as "saturated", "drift", "at chance") and compares. Hand-made snapshots
cover the edges: empty tables, NaN, a lane without BN, ties, the thresholds themselves.
"""

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest

from bnviz.live.history import TABLES
from bnviz.live.replay import Recording
from bnviz.live.snapshot import LaneSpec, LaneStatus, LaneView, Settings, Snapshot, Status
from bnviz.pictures import captions as c
from bnviz.pictures import figures
from bnviz.step.models import BN_LAYERS
from bnviz.step.probes import WEIGHT_LAYERS

SHIPPED = Path(__file__).resolve().parents[1] / "assets" / "chapter-run" / "experiment.npz"
SHIPPED_STEPS = (0, 1, 20, 200, 1000, 1500, 2000, 2500, 3500, None)  # None: the end (4,690)
FAST = Settings(train_size=12_800, epochs=1, batch_size=128, lr=0.1, probe_every=5, val_every=10, val_size=500)
LANDSCAPE_EVERY = 25  # as the dashboard's landscape study switches it on (bnviz.machine.env.landscape_every)
NUM = r"-?[\d,]*\.?\d+(?:e[-+]?\d+)?"


# ============================================================================================ fixtures
@pytest.fixture(scope="module")
def shipped():
    return Recording.load(SHIPPED)


@pytest.fixture(scope="module")
def fast(real_data):
    """The fast preset on the real data: A (BN off) and B (BN scratch) as the dashboard starts them, with the
    landscape probe on, plus C (BN off, ReLU) so the landscape has two learning lanes to compare. The lanes
    train independently on the same batches: A and B are the same with or without C."""
    from bnviz.live.engine import Experiment

    settings = Settings(**{**FAST.__dict__, "landscape_every": LANDSCAPE_EVERY})
    lanes = (LaneSpec("none"), LaneSpec("scratch"), LaneSpec("none", "relu"))
    exp = Experiment(real_data, settings, lanes, name="test-captions-fast")
    try:
        exp.start()
        assert exp.wait(300)
        return exp.snapshot()
    finally:
        assert exp.stop(timeout=10)


@pytest.fixture(params=[f"shipped@{s}" for s in SHIPPED_STEPS] + ["fast"])
def real_snap(request):
    if request.param == "fast":
        return request.getfixturevalue("fast")
    at = request.param.split("@")[1]
    return request.getfixturevalue("shipped").snapshot(None if at == "None" else int(at))


# ============================================================================================ helpers
def agrees(text, actual):
    """A number as printed (e.g. '0.00099', '7.5e-5', '1,234', '9.5') agrees with ``actual`` to its last digit."""
    text = text.replace(",", "")
    mantissa, _, exponent = text.partition("e")
    tol = 0.5 * 10.0 ** -len(mantissa.partition(".")[2]) * (10.0 ** int(exponent) if exponent else 1.0)
    return abs(float(text) - actual) <= tol * 1.001 + 1e-12


def segment(text, lane, snap):
    """The part of a per-lane caption about ``lane``: from its label to the next lane's."""
    start = text.index(lane.label)
    ends = [e for e in (text.find(o.label, start + 1) for o in snap.lanes if o is not lane) if e > start]
    return text[start : min(ends, default=len(text))]


def probe_row(lane, step=None):
    """{column: value} of the probe at ``step`` (the latest when None), straight from the table."""
    p = lane.tables["probes"]
    i = len(p["step"]) - 1 if step is None else int(np.flatnonzero(p["step"] == step)[-1])
    return {k: float(v[i]) for k, v in p.items()}


def latest_val(lane):
    acc = np.asarray(lane.tables["val"].get("val_acc", []), dtype=float)
    acc = acc[np.isfinite(acc)]
    return float(acc[-1]) if len(acc) else None


def expect_plateau(lane):
    acc = latest_val(lane)
    return (
        acc is not None
        and lane.diverged_at is None
        and lane.step >= c.PLATEAU_STEPS
        and abs(acc - c.CHANCE) <= c.CHANCE_MARGIN
        and not any(a > c.CHANCE + c.CHANCE_MARGIN for a in lane.tables["val"].get("val_acc", []))  # never left it
    )


# ============================================================================================ the checks
def check_inside_bn(snap, position):
    text = c.inside_bn(snap, position)
    for lane in snap.lanes:
        seg = segment(text, lane, snap)
        if not len(lane.tables["probes"].get("step", [])):
            assert "no probe yet" in seg
            continue
        shown = int(lane.tables["dists"]["step"][-1])  # the histograms' step
        row = probe_row(lane, shown)
        m = re.search(rf"\(step ([\d,]+)\): ({NUM})% of units (saturated|near 0 or 1|inactive)", seg)
        assert m, seg
        assert int(m[1].replace(",", "")) == shown
        sat = row[f"{position}.saturated"]
        assert agrees(m[2], 100 * sat), (m[2], sat)
        if lane.spec.activation == "relu":
            assert m[3] == "inactive"
        assert ("saturat" in seg) == (lane.spec.activation == "sigmoid" and sat >= c.SATURATES), seg
        lo, hi = re.search(rf"within ({NUM})–({NUM}) \(15th–85th percentile\)", seg).groups()
        assert agrees(lo, row[f"{position}.act.p15"]) and agrees(hi, row[f"{position}.act.p85"])
    return text


def check_percentiles(snap, position, last_n=None):
    text = c.percentiles(snap, position, last_n)
    for lane in snap.lanes:
        seg = segment(text, lane, snap)
        p = figures.window(lane.tables["probes"], last_n)
        if len(p.get("step", [])) < 2:
            assert "fewer than two probes" in seg
            continue
        cols = {q: np.asarray(p[f"{position}.out.p{q}"]) for q in (15, 50, 85)}
        moved = {q: float(np.nanmax(v) - np.nanmin(v)) for q, v in cols.items()}
        m = re.search(
            rf"steps ([\d,]+)–([\d,]+): the median ranged over ({NUM}) to ({NUM}) \(moved ({NUM})\), "
            rf"the 15th percentile moved ({NUM}), the 85th ({NUM}): they (drift|stay put)",
            seg,
        )
        assert m, seg
        assert int(m[1].replace(",", "")) == int(p["step"][0]) and int(m[2].replace(",", "")) == int(p["step"][-1])
        assert agrees(m[3], np.nanmin(cols[50])) and agrees(m[4], np.nanmax(cols[50]))
        assert agrees(m[5], moved[50]) and agrees(m[6], moved[15]) and agrees(m[7], moved[85])
        assert m[8] == ("drift" if max(moved.values()) > c.DRIFT else "stay put")
    return text


GRADIENT = rf"conv1's gradient norm is ({NUM})x (smaller|larger) than fc3's \(({NUM}) vs ({NUM})\)"


def check_gradient_claim(seg, row):
    m = re.search(GRADIENT, seg)
    assert m, seg
    ratio = row["conv1.grad_norm"] / row["fc3.grad_norm"]
    assert m[2] == ("smaller" if ratio < 1 else "larger")
    assert agrees(m[1], 1 / ratio if ratio < 1 else ratio), (m[1], ratio)
    assert agrees(m[3], row["conv1.grad_norm"]) and agrees(m[4], row["fc3.grad_norm"])
    return m


def check_gradients(snap):
    text = c.gradients(snap)
    for lane in snap.lanes:
        seg = segment(text, lane, snap)
        if not len(lane.tables["probes"].get("step", [])):
            assert "no probe yet" in seg
            continue
        row = probe_row(lane)
        assert f"(step {int(row['step']):,})" in seg
        check_gradient_claim(seg, row)
        norms = [row[f"{n}.grad_norm"] for n in WEIGHT_LAYERS]
        shrinks = all(a < b for a, b in zip(norms, norms[1:]))
        assert ("it shrinks at every layer" in seg) == shrinks and ("does not shrink" in seg) == (not shrinks)
        sat = max(row[f"{pos}.saturated"] for pos in BN_LAYERS)
        assert ("saturates" in seg) == (lane.spec.activation == "sigmoid" and sat >= c.SATURATES), seg
        assert agrees(re.search(rf"({NUM})% of units", seg)[1], 100 * sat)
    return text


def check_plateau(snap):
    text = c.plateau(snap)
    stuck = [lane for lane in snap.lanes if expect_plateau(lane)]
    for lane in snap.lanes:
        assert (lane.label in text) == (lane in stuck), (lane.label, text)
    if not stuck:
        assert text == ""
    for lane in stuck:
        seg = segment(text, lane, snap)
        assert f"still at chance** after {lane.step:,} steps" in seg
        assert agrees(re.search(rf"validation accuracy ({NUM})%", seg)[1], 100 * latest_val(lane))
        if not len(lane.tables["probes"].get("step", [])):
            assert "no probe yet to say why" in seg
            continue
        row = probe_row(lane)
        stds = [row[f"{pos}.act.std"] for pos in BN_LAYERS]
        means = [row[f"{pos}.act.mean"] for pos in BN_LAYERS]
        m = re.search(rf"std ({NUM})–({NUM}) across bn1–bn4, means ({NUM})–({NUM})", seg)
        assert bool(m) == (lane.spec.activation == "sigmoid" and max(stds) < c.SMALL_SPREAD)
        if m:
            assert agrees(m[1], min(stds)) and agrees(m[2], max(stds))
            assert agrees(m[3], min(means)) and agrees(m[4], max(means))
            assert ("near-linear middle" in seg) == all(c.MIDDLE[0] <= x <= c.MIDDLE[1] for x in means)
        ratio = row["conv1.grad_norm"] / row["fc3.grad_norm"]
        assert ("vanishes toward the input" in seg) == (ratio < c.VANISHING)
        if ratio < c.VANISHING:
            check_gradient_claim(seg, row)
        m = re.search(rf"update-to-weight ratio conv1 ({NUM}), conv2 ({NUM}), against fc3 ({NUM})\)", seg)
        assert bool(m) == (max(row["conv1.update_ratio"], row["conv2.update_ratio"]) < c.TINY_UPDATE)
        if m:
            assert agrees(m[1], row["conv1.update_ratio"]) and agrees(m[2], row["conv2.update_ratio"])
            assert agrees(m[3], row["fc3.update_ratio"])
        sat = max(row[f"{pos}.saturated"] for pos in BN_LAYERS)
        if lane.spec.activation == "sigmoid" and sat < c.SATURATES:
            assert "saturates" not in seg and "saturated" not in seg and "this plateau is not saturation" in seg
            assert agrees(re.search(rf"At most ({NUM})% of its units", seg)[1], 100 * sat)
    return text


def check_training(snap):
    text = c.training(snap)
    assert "should" not in text
    board = {row["lane"]: row for row in figures.scoreboard(snap)}
    if not any(len(lane.tables["val"].get("step", [])) for lane in snap.lanes):
        assert text.startswith("Nothing to read yet")
        return text
    reached = {l.label: board[l.label]["50%"] for l in snap.lanes if board[l.label]["50%"] != "not yet"}
    if not reached:
        assert text.startswith("No lane has reached 50% validation accuracy yet")
    for lane in snap.lanes:
        label = re.escape(lane.label)
        if lane.label in reached:
            m = re.search(rf"{label}[^;]*? at (?:the same check, )?step ([\d,]+) \(epoch ({NUM})\)", text)
            assert m, text
            assert reached[lane.label] == f"step {m[1]} · epoch {m[2]}"  # the scoreboard beside it says the same
        elif latest_val(lane) is None:
            assert re.search(rf"{label}(?: not yet \(now)? no number", text), text
        else:
            m = re.search(rf"{label}(?: not yet \(now)? ({NUM})%", text)
            assert m and agrees(m[1], 100 * latest_val(lane)), text
    if reached:
        steps = {k: int(v.split()[1].replace(",", "")) for k, v in reached.items()}
        firsts = [k for k, s in steps.items() if s == min(steps.values())]
        alone = len(firsts) == 1 and len(snap.lanes) > 1  # "first" means ahead of another lane
        for label in steps:
            assert (f"{label} reached 50% validation accuracy first" in text) == (alone and label in firsts)
    return text


def check_landscape(snap, last_n=None):
    text = c.landscape(snap, last_n)
    measured = {}
    for lane in snap.lanes:
        t = figures.window(lane.tables.get("landscape", {}), last_n)
        ok = np.isfinite(np.asarray(t.get("loss_spread", []), dtype=float))
        if np.any(ok):
            measured[lane.label] = (lane, np.asarray(t["loss_spread"])[ok][-c.LANDSCAPE_RECENT :])
    if not measured:
        assert text.startswith("Nothing to read yet")
        return text
    learns = []
    for label, (lane, spread) in measured.items():
        acc = latest_val(lane)
        left = any(a > c.CHANCE + c.CHANCE_MARGIN for a in lane.tables["val"].get("val_acc", []))
        flat = f"{label} is {'back' if left else 'still'} at chance (validation accuracy"
        assert (flat in text) == (acc is not None and lane.diverged_at is None and c.at_chance(acc)), text
        if acc is not None and lane.diverged_at is None and not c.at_chance(acc):
            learns.append((float(np.median(spread)), label))
    comparison = text.partition("Lanes that learn")[2]
    assert bool(comparison) == (len(learns) >= 2)
    if len(learns) >= 2:
        for label in measured:  # a lane that does not learn is never compared
            assert (label in comparison) == (label in [l for _, l in learns]), comparison
        for median, label in learns:
            assert agrees(re.search(rf"{re.escape(label)} ({NUM}) \(smoothness", comparison)[1], median)
        best = min(learns)[1]
        assert f"{best}'s loss changes least along the gradient" in comparison
    return text


# ============================================================================================ real data
def check_train_eval(snap):
    """Each lane's eval-mode and train-mode accuracy, and the gap, as the caption prints them."""
    text = c.train_eval(snap)
    normalised = [lane for lane in snap.lanes if lane.spec.norm != "none"]
    if not normalised:
        assert text.startswith("No lane has normalisation")
        return
    at = re.match(r"At step ([\d,]+):", text)
    if at:  # the step of the checks the caption reads, not the step training has reached
        last = {int(lane.tables["val"]["step"][-1]) for lane in normalised if len(lane.tables["val"].get("step", []))}
        assert last == {int(at.group(1).replace(",", ""))}, text
    for lane in normalised:
        v, name = lane.tables["val"], lane.label.split(" · ")[0]
        if not len(v.get("step", [])):
            continue
        if "val_acc_batch" not in v:
            assert f"{name}" in text and "recorded no train-mode accuracy" in text
            continue
        ev, tr = 100 * float(v["val_acc"][-1]), 100 * float(v["val_acc_batch"][-1])
        pattern = r": ([\d.]+)% in (?:both modes|eval mode, ([\d.]+)% in train mode \((\w+) mode ahead by ([\d.]+) "
        m = re.search(re.escape(name) + pattern + r"points\))", text)
        assert m, text
        assert agrees(m.group(1), ev)
        if m.group(2):
            assert agrees(m.group(2), tr) and agrees(m.group(4), abs(tr - ev))
            assert m.group(3) == ("train" if tr > ev else "eval")
        else:
            assert round(ev, 1) == round(tr, 1)


CHECKS = (check_gradients, check_plateau, check_training, check_landscape, check_train_eval)


@pytest.mark.slow  # trains a real run first
def test_every_caption_agrees_with_the_real_snapshot(real_snap):
    """The shipped run at several steps and the fast preset: each caption's numbers and words, recomputed."""
    for position in BN_LAYERS:
        check_inside_bn(real_snap, position)
        check_percentiles(real_snap, position)
    for check in CHECKS:
        check(real_snap)


def test_percentiles_read_the_window_the_chart_shows(shipped):
    snap = shipped.snapshot()
    text = check_percentiles(snap, "bn2", last_n=500)
    first = int(re.search(r"steps ([\d,]+)–", text)[1].replace(",", ""))
    assert first > snap.max_step - 500
    assert "steps 1–" in check_percentiles(snap, "bn2")  # the whole run starts at the first probe


def test_shipped_run_on_its_plateau_at_step_200(shipped):
    """The plain lane is at chance with no saturated unit: no caption says it saturates; the plateau caption
    gives the reasons the numbers support (small spread, vanishing gradient, tiny first-layer updates)."""
    snap = shipped.snapshot(200)
    plain, bn = snap.lanes
    assert expect_plateau(plain) and not expect_plateau(bn)
    for position in BN_LAYERS:
        assert "saturat" not in segment(check_inside_bn(snap, position), plain, snap)
    grads = segment(check_gradients(snap), plain, snap)
    assert "saturates" not in grads and "it shrinks at every layer" in grads
    text = check_plateau(snap)
    assert text.startswith(f"**{plain.label} is still at chance** after 200 steps")
    for reason in ("barely spread", "near-linear middle", "vanishes toward the input", "barely moves its first"):
        assert reason in text
    assert "this plateau is not saturation" in text and bn.label not in text
    assert check_training(snap).startswith(f"{bn.label} reached 50% validation accuracy first, at step 100")


def test_shipped_run_at_the_end(shipped):
    """The plain lane learned (no plateau any more) and saturates at bn1 by then; the BN lane's gradient does
    not shrink on the way down."""
    snap = shipped.snapshot()
    plain, bn = snap.lanes
    assert latest_val(plain) > c.CHANCE + c.CHANCE_MARGIN
    assert check_plateau(snap) == ""
    assert "saturates" in segment(check_gradients(snap), plain, snap)
    assert "does not shrink" in segment(c.gradients(snap), bn, snap)
    assert f"{plain.label} at step 2,400" in check_training(snap)
    assert check_landscape(snap).startswith("Nothing to read yet: no landscape measurements")


@pytest.mark.slow  # a real run of the fast preset (10 s)
def test_fast_preset(fast):
    """The fast demo: A stays at chance with 0% saturation; B learns; the landscape caption does not set A's
    flat landscape against B's, and compares B with the ReLU lane, which also learns."""
    a, b, relu = fast.lanes
    assert expect_plateau(a) and not expect_plateau(b)
    assert all(np.max(a.tables["probes"][f"{pos}.saturated"]) < 0.001 for pos in BN_LAYERS)  # at every probe
    for position in BN_LAYERS:
        assert "saturat" not in segment(check_inside_bn(fast, position), a, fast)
    plateau = segment(check_plateau(fast), a, fast)
    assert "saturates" not in plateau and "saturated" not in plateau and "this plateau is not saturation" in plateau
    assert f"{b.label} reached 50% validation accuracy first" in check_training(fast)
    text = check_landscape(fast)
    assert f"{a.label} is still at chance" in text and "not because it is smooth" in text
    assert a.label not in text.partition("Lanes that learn")[2]
    assert b.label in text.partition("Lanes that learn")[2] and relu.label in text


# ============================================================================================ hand-made
def table(rows):
    keys = sorted({k for r in rows for k in r})
    return {k: np.array([r.get(k, np.nan) for r in rows], dtype=float) for k in keys}


def probe(step, sat=0.0, std=0.1, mean=0.5, p=(0.45, 0.5, 0.55), out=(-0.5, 0.0, 0.5), norms=None, ur=None):
    """One probe row: the same numbers at every position; norms/ur per weight layer (conv1 .. fc3)."""
    row = {"step": step}
    for pos in BN_LAYERS:
        row.update({f"{pos}.saturated": sat, f"{pos}.act.std": std, f"{pos}.act.mean": mean})
        row.update({f"{pos}.act.p{q}": v for q, v in zip((15, 50, 85), p)})
        row.update({f"{pos}.out.p{q}": v for q, v in zip((15, 50, 85), out)})
    for name, n, u in zip(WEIGHT_LAYERS, norms or (0.001, 0.01, 0.03, 0.1, 0.3), ur or (1e-4, 2e-4, 3e-4, 1e-3, 6e-3)):
        row.update({f"{name}.grad_norm": n, f"{name}.update_ratio": u})
    return row


def lane(index=0, norm="none", activation="sigmoid", step=200, probes=(), val=(), landscape=(), diverged_at=None):
    """A LaneView from rows: probes (dicts), val ((step, acc), ...), landscape ((step, spread, smoothness), ...)."""
    tables = {name: {} for name in TABLES}
    tables["probes"] = table(list(probes))
    tables["dists"] = {"step": tables["probes"]["step"]} if probes else {}
    tables["val"] = table([{"step": s, "val_acc": a} for s, a in val])
    tables["landscape"] = table([{"step": s, "loss_spread": l, "smoothness": m} for s, l, m in landscape])
    status = LaneStatus.DIVERGED if diverged_at else LaneStatus.TRAINING
    return LaneView(index, LaneSpec(norm, activation), status, None, step, 1, 100, 0.0, diverged_at, tables)


def snapshot(*lanes):
    return Snapshot(Status.PAUSED, None, Settings(), "test", tuple(lanes))


def run_all(snap):
    for position in BN_LAYERS:
        check_inside_bn(snap, position)
        check_percentiles(snap, position)
    for check in CHECKS:
        check(snap)


def test_empty_tables_say_there_is_nothing_yet():
    snap = snapshot(lane(0, step=0), lane(1, "scratch", step=0))
    for position in BN_LAYERS:
        assert c.inside_bn(snap, position) == "A · BN off: no probe yet. B · BN scratch: no probe yet."
        assert c.percentiles(snap, position).count("fewer than two probes yet") == 2
    assert c.gradients(snap).count("no probe yet") == 2
    assert c.plateau(snap) == ""
    assert c.training(snap) == "Nothing to read yet: no validation check."
    assert c.landscape(snap).startswith("Nothing to read yet")
    assert c.inside_bn(snapshot(), "bn1").startswith("Nothing to read yet")
    run_all(snap)


def test_a_diverged_lane_with_nan():
    nan = float("nan")
    bad = probe(201, sat=nan, p=(nan, nan, nan), out=(nan, nan, nan), norms=(nan,) * 5, ur=(nan,) * 5)
    diverged = lane(0, step=201, probes=[probe(1), bad], val=[(100, 0.1), (200, nan)], landscape=[(100, nan, nan)])
    diverged = dataclasses.replace(diverged, diverged_at=150, status=LaneStatus.DIVERGED)
    snap = snapshot(diverged, lane(1, "scratch", probes=[probe(1), probe(101)], val=[(100, 0.6)]))
    assert "no numbers for bn1 in this probe (NaN or missing)" in c.inside_bn(snap, "bn1")
    assert "A · BN off: fewer than two probes yet" in c.percentiles(snap, "bn1")  # the NaN row does not count
    assert "A · BN off (step 201): nothing to read in this probe" in c.gradients(snap)
    assert c.plateau(snap) == ""  # a diverged lane is not on a plateau
    assert c.training(snap) == "B · BN scratch reached 50% validation accuracy first, at step 100 (epoch 1.0). " + (
        "A · BN off not yet (now 10.0%)."
    )
    assert c.landscape(snap).startswith("Nothing to read yet")  # NaN measurements are no measurements


def test_a_position_a_lane_did_not_record():
    rows = [{k: v for k, v in probe(s).items() if not k.startswith("bn2.")} for s in (1, 21)]
    snap = snapshot(lane(0, probes=rows))
    assert c.inside_bn(snap, "bn2") == "A · BN off (step 21): no numbers for bn2 in this probe (NaN or missing)."
    assert "fewer than two probes yet" in c.percentiles(snap, "bn2")
    assert "nothing to read in this probe" in c.gradients(snap)  # saturation at bn2 is missing: no half story
    with pytest.raises(ValueError, match="position must be one of"):
        c.inside_bn(snap, "bn5")


@pytest.mark.parametrize("sat", [0.0, c.SATURATES - 0.001, c.SATURATES, 0.3])
def test_saturated_only_from_the_threshold(sat):
    snap = snapshot(lane(0, probes=[probe(1, sat=sat)], val=[(100, 0.1), (200, 0.09)]))
    run_all(snap)
    says = sat >= c.SATURATES
    assert ("saturated" in c.inside_bn(snap, "bn1")) == says
    assert ("saturates" in c.gradients(snap)) == says
    assert ("this plateau is not saturation" in c.plateau(snap)) == (not says)


def test_relu_units_are_inactive_not_saturated():
    snap = snapshot(lane(0, activation="relu", probes=[probe(1, sat=0.55, p=(0.0, 0.1, 0.9))]))
    run_all(snap)
    assert "55.0% of units inactive (ReLU output 0)" in c.inside_bn(snap, "bn1")
    assert "saturat" not in c.inside_bn(snap, "bn1") + c.gradients(snap)


@pytest.mark.parametrize("moved", [0.0, c.DRIFT - 0.01, c.DRIFT + 0.01])
def test_drift_only_past_the_threshold(moved):
    rows = [probe(1, out=(-1.0, 0.0, 1.0)), probe(21, out=(-1.0, moved, 1.0)), probe(41, out=(-1.0, 0.0, 1.0))]
    text = check_percentiles(snapshot(lane(0, probes=rows)), "bn3")
    assert ("they drift" in text) == (moved > c.DRIFT)


def test_gradient_growing_toward_the_input():
    snap = snapshot(lane(0, "scratch", probes=[probe(1, std=0.21, norms=(0.5, 1.0, 0.9, 0.6, 0.25))]))
    run_all(snap)
    assert "2.0x larger than fc3's (0.5 vs 0.25); it does not shrink" in c.gradients(snap)


@pytest.mark.parametrize(
    "val, step, stuck",
    [
        ([(10, 0.1)], c.PLATEAU_STEPS - 1, False),  # too early to call it a plateau
        ([(50, 0.1)], c.PLATEAU_STEPS, True),
        ([(50, 0.1), (100, c.CHANCE + c.CHANCE_MARGIN + 0.01)], 100, False),  # the latest check decides
        ([(50, 0.3), (100, c.CHANCE + c.CHANCE_MARGIN - 0.01)], 100, False),  # fell back: not "still" at chance
        ([(50, c.CHANCE + c.CHANCE_MARGIN), (100, 0.1)], 100, True),  # never above the margin
        ([], 500, False),
    ],
)
def test_plateau_only_at_chance_after_enough_steps(val, step, stuck):
    spread = probe(1, std=0.3, mean=0.7, norms=(0.5,) * 5, ur=(0.01,) * 5)  # none of the signs
    snap = snapshot(lane(0, step=step, probes=[spread], val=val), lane(1, "scratch", step=step))
    text = check_plateau(snap)
    assert bool(text) == stuck
    if stuck:
        assert "shows none of the signs checked here" in text and "vanishes" not in text


def test_training_single_lane_and_tie():
    one = snapshot(lane(0, "scratch", val=[(100, 0.4), (200, 0.55)]))
    assert check_training(one) == "A · BN scratch reached 50% validation accuracy at step 200 (epoch 2.0)."
    tie = snapshot(lane(0, val=[(100, 0.6)]), lane(1, "scratch", val=[(100, 0.7)]), lane(2, "torch", val=[(100, 0.2)]))
    text = check_training(tie)
    assert text.startswith("A · BN off and B · BN scratch reached 50% validation accuracy at the same check, step 100")
    assert "C · BN torch not yet (now 20.0%)" in text
    none = snapshot(lane(0, val=[(100, 0.1)]), lane(1, "scratch", val=[(100, 0.45)]))
    assert (
        check_training(none)
        == "No lane has reached 50% validation accuracy yet (now: A · BN off 10.0%, B · BN scratch 45.0%)."
    )


def test_landscape_compares_only_lanes_that_learn():
    marks = [(25, 0.01, 2.0), (50, 0.02, 2.5)]
    flat = lane(0, val=[(50, 0.1)], landscape=marks)
    bn = lane(1, "scratch", val=[(50, 0.7)], landscape=[(25, 0.1, 9.0), (50, 0.3, 7.0)])
    relu = lane(2, activation="relu", val=[(50, 0.6)], landscape=[(25, 1.0, 20.0), (50, 0.6, 18.0)])
    text = check_landscape(snapshot(flat, bn, relu))
    assert "A · BN off is still at chance (validation accuracy 10.0%): its landscape looks flat" in text
    assert "B · BN scratch's loss changes least along the gradient: its spread is 4.0x smaller than" in text
    only = check_landscape(snapshot(flat, bn))
    assert "Lanes that learn" not in only and "no other learning lane to compare it with yet" in only
    unknown = check_landscape(snapshot(lane(0, landscape=marks)))
    assert "no validation check yet, so whether it learns is not known" in unknown
    assert "B · BN scratch 0.2 (smoothness 8), C · BN off · relu 0.8 (smoothness 19)" in text  # medians


def test_a_zero_gradient_is_said_as_zero():
    snap = snapshot(lane(0, probes=[probe(1, norms=(0.0, 0.01, 0.03, 0.1, 0.3))]))
    assert "conv1's gradient norm is zero against fc3's (0 vs 0.3); it shrinks at every layer" in c.gradients(snap)


# ---------------------------------------------------------------------------------- the studies' results
def _race_result(lr, lane, acc, diverged_at=None, steps=60):
    from bnviz.studies.batch_and_lr import RaceResult

    return RaceResult(lr, lane, "none", np.arange(steps), np.ones(steps), 1.0, acc, diverged_at)


def test_race_caption_states_each_lanes_verdicts_from_the_results():
    results = [
        _race_result(0.1, "A · BN off", 0.10),
        _race_result(1.0, "A · BN off", 0.12),
        _race_result(10.0, "A · BN off", float("nan"), diverged_at=7),
        _race_result(0.1, "B · BN scratch", 0.71),
        _race_result(1.0, "B · BN scratch", 0.80),
        _race_result(10.0, "B · BN scratch", 0.40),
    ]
    text = c.race(results)
    a, b = text.split("**B · BN scratch**")
    assert "stalled below 50% at 0.1, 1" in a and "diverged at 10" in a and "learned at no rate tried" in a
    assert "learned (≥ 50% validation accuracy) at 0.1, 1" in b and "stalled below 50% at 10" in b
    assert "largest rate that learned: 1." in b and "60 steps" in b
    assert "learned" not in a.replace("learned at no rate tried", "")


def test_batch_statistics_caption_states_the_gap_from_the_result():
    from bnviz.studies.batch_and_lr import BatchStatsResult

    result = BatchStatsResult((2, 4, 8, 16), (0.41, 0.70, 0.855, 0.86), 0.862, (1, 1, 1, 1), (1, 1, 1, 1))
    text = c.batch_statistics(result)
    assert "86.2% whatever the batch" in text and "41.0% at batch size 2" in text
    assert "first within 1% of eval mode at batch size 8" in text
    never = BatchStatsResult((2, 4), (0.3, 0.5), 0.86, (1, 1), (1, 1))
    assert "never within 1% of eval mode up to batch size 4" in c.batch_statistics(never)
    assert c.batch_statistics(None).startswith("Nothing to read yet")


def test_the_lessons_fixed_sentences_hold_for_the_shipped_run(shipped):
    """The Lesson view's 'What to look for' quotes the recorded run: each claim checked against it."""
    from ui.views.lesson import WHAT_TO_LOOK_FOR

    early = shipped.snapshot(400)
    plain, bn = early.lanes
    val = bn.tables["val"]
    assert val["val_acc"][val["step"] <= 100][-1] > 0.5  # the BN lane leaves chance within 100 steps
    assert plain.tables["val"]["val_acc"][-1] < 0.15  # the plain one is still at chance at step 400
    grads = plain.tables["probes"]
    assert np.median(grads["conv1.grad_norm"]) < 0.01 * np.median(bn.tables["probes"]["conv1.grad_norm"])
    end = shipped.snapshot().lanes[1].tables["probes"]
    assert abs(end["bn1.out.std"][-1] - 2) < 0.3 and "spread near 2" in WHAT_TO_LOOK_FOR
    assert abs(end["bn1.out.std"][0] - 1) < 0.05  # it starts with unit spread
