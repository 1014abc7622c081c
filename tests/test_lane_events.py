"""Words that follow every event: real runs on Fashion-MNIST with each kind of event (BN switched off, BN
switched back on, the learning rate raised until the lane collapses, the learning rate lowered, a restart),
and every caption builder, the scoreboard, the status line, the CSV and the HTML page checked against them.

The numbers an event sentence prints are recomputed here: a switch's from what ``set_bn_bypass`` returned
when it was clicked (the engine's own measurement), an lr change's from the validation table.
"""

import csv
import io
import re

import numpy as np
import pytest
import torch
from test_captions import NUM, agrees, check_plateau, run_all

from bnviz.live.experiment_file import metrics_csv
from bnviz.live.lane_events import CHANCE, CHANCE_MARGIN, COLLAPSE_DROP, lane_events
from bnviz.live.snapshot import LaneSpec, Settings
from bnviz.pictures import captions as c
from bnviz.pictures import figures
from bnviz.step.models import BN_LAYERS, build_lenet
from bnviz.step.probes import look

FAST = Settings(train_size=12_800, epochs=1, batch_size=128, lr=0.1, probe_every=5, val_every=10, val_size=500)
LANES = (LaneSpec("none"), LaneSpec("scratch"))
COLLAPSE_LR = 50.0  # far past what a sigmoid LeNet with BN survives: it falls to chance or diverges


def run(exp, n):
    exp.step(n)
    assert exp.wait(300)
    return exp.snapshot()


@pytest.fixture(scope="module")
def flips(real_data):
    """A (BN off) and B (BN scratch): 40 steps, B's BN off, then back on, 10 steps, lr 0.1 -> 0.02 and 20
    steps, then A restarted as BN torch and 20 steps. {name: (snapshot, what the switch returned)}."""
    from bnviz.live.engine import Experiment

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    exp = Experiment(real_data, FAST, LANES, name="test-lane-events-flips")
    try:
        out = {}
        run(exp, 40)
        measured = exp.set_bn_bypass(1, True)
        out["off"] = (exp.snapshot(), measured)
        measured = exp.set_bn_bypass(1, False)
        out["on"] = (run(exp, 10), measured)
        exp.set_lr(0.02)
        out["lr down"] = (run(exp, 20), None)
        exp.set_lane(0, LaneSpec("torch"))
        out["restart"] = (run(exp, 20), None)
        return out
    finally:
        assert exp.stop(timeout=10)
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def collapse(real_data):
    """A and B: 40 steps at lr 0.1, then 40 at COLLAPSE_LR."""
    from bnviz.live.engine import Experiment

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    exp = Experiment(real_data, FAST, LANES, name="test-lane-events-collapse")
    try:
        run(exp, 40)
        exp.set_lr(COLLAPSE_LR)
        return run(exp, 40)
    finally:
        assert exp.stop(timeout=10)
        torch.set_num_threads(before)


def recompute_lr_changes(lane):
    """[(step, lr before, lr after, acc before, acc after or None, after step)] straight from the tables."""
    steps, val = lane.tables["steps"], lane.tables["val"]
    out = []
    for i in range(1, len(steps["step"])):
        if steps["lr"][i] != steps["lr"][i - 1]:
            s = int(steps["step"][i])
            prior = val["val_acc"][val["step"] < s]
            later = np.flatnonzero(val["step"] >= s)
            nxt = [
                int(steps["step"][j]) for j in range(i + 1, len(steps["step"])) if steps["lr"][j] != steps["lr"][j - 1]
            ]
            if nxt:
                later = later[val["step"][later] < nxt[0]]
            after = (float(val["val_acc"][later[-1]]), int(val["step"][later[-1]])) if len(later) else (None, None)
            out.append((s, float(steps["lr"][i - 1]), float(steps["lr"][i]), float(prior[-1]), *after))
    return out


def check_events_caption(snap, switches=()):
    """Every sentence of ``captions.events`` (inside the training caption) against the tables; ``switches``:
    [(lane index, off, (before, after) as set_bn_bypass returned)]."""
    text = c.training(snap)
    for index, off, (before, after) in switches:
        lane = snap.lanes[index]
        what = "BN switched off" if off else "BN switched back on"
        sentence = f"{'ABC'[index]}: {what} at step {int(lane.tables['events']['step'][0 if off else -1]):,}: "
        m = re.search(re.escape(sentence) + rf"({NUM})% → ({NUM})%", text)
        assert m, text
        assert agrees(m[1], 100 * before) and agrees(m[2], 100 * after)
    for lane in snap.lanes:
        for step, lr0, lr1, acc0, acc1, at in recompute_lr_changes(lane):
            head = f"{lane.label.split(' · ')[0]}: learning rate {lr0:g} → {lr1:g} at step {step:,}: "
            assert head in text, text
            rest = text[text.index(head) + len(head) :]
            if lane.diverged_at is not None and lane.diverged_at >= step:
                assert rest.startswith(f"{acc0:.1%} before, then it diverged at step {lane.diverged_at:,}")
                continue
            m = re.match(
                rf"({NUM})% → ({NUM})% \(step ([\d,]+)\)(, it collapsed (to chance|\(({NUM}) points down\)))?", rest
            )
            assert m, rest
            assert agrees(m[1], 100 * acc0) and agrees(m[2], 100 * acc1) and int(m[3].replace(",", "")) == at
            to_chance = abs(acc1 - CHANCE) <= CHANCE_MARGIN and abs(acc0 - CHANCE) > CHANCE_MARGIN
            assert bool(m[4]) == (to_chance or acc0 - acc1 > COLLAPSE_DROP), rest
            if m[4]:
                assert (m[5] == "to chance") == (abs(acc1 - CHANCE) <= CHANCE_MARGIN)
                assert m[6] is None or agrees(m[6], 100 * (acc0 - acc1))
    assert "still at chance" not in text
    return text


@pytest.mark.slow  # its fixture trains a real run (15-20 s on 2 busy cores)
def test_bn_switched_off_is_said_with_its_step_and_accuracies(flips):
    snap, (before, after) = flips["off"]
    b = snap.lanes[1]
    assert before > CHANCE + CHANCE_MARGIN and abs(after - CHANCE) <= CHANCE_MARGIN  # B fell to chance
    text = check_events_caption(snap, [(1, True, (before, after))])
    assert f"B: BN switched off at step 40: {before:.1%} → {after:.1%}." in text
    assert b.label not in c.plateau(snap)  # never "still at chance": it was at {before} a moment ago
    check_plateau(snap)
    run_all(snap)
    row = next(r for r in figures.scoreboard(snap) if r["lane"] == b.label)
    assert row["latest event"] == f"BN switched off at step 40: {before:.1%} → {after:.1%}"


@pytest.mark.slow  # its fixture trains a real run (15-20 s on 2 busy cores)
def test_the_flip_studys_histograms_are_probed_after_the_flip(flips):
    snap, _ = flips["off"]
    b = snap.lanes[1]
    flip_step = int(b.tables["events"]["step"][0])
    assert int(b.tables["dists"]["step"][-1]) == flip_step == int(b.tables["probes"]["step"][-1])
    row = {k: float(v[-1]) for k, v in b.tables["probes"].items()}
    for pos in BN_LAYERS:  # BN is the identity now: what leaves it is what enters it
        for q in ("p15", "p50", "p85"):
            assert row[f"{pos}.out.{q}"] == pytest.approx(row[f"{pos}.in.{q}"], abs=1e-6)
    assert f"(step {flip_step:,})" in c.inside_bn(snap, "bn3").partition(b.label)[2]


@pytest.mark.slow  # its fixture trains a real run (15-20 s on 2 busy cores)
def test_bn_switched_back_on_and_the_lr_lowered(flips):
    (snap_on, on), (_, off) = flips["on"], flips["off"]
    text = check_events_caption(snap_on, [(1, True, off), (1, False, on)])
    assert text.count("B: BN switched") == 2
    run_all(snap_on)
    snap, _ = flips["lr down"]
    text = check_events_caption(snap, [(1, True, off), (1, False, on)])
    assert "learning rate 0.1 → 0.02 at step 51" in text and "collapsed" not in text
    run_all(snap)


@pytest.mark.slow  # its fixture trains a real run (15-20 s on 2 busy cores)
def test_a_restarted_lane_counts_from_its_restart(flips):
    snap, _ = flips["restart"]
    a, b = snap.lanes
    assert a.step == 20 and int(a.tables["steps"]["step"][0]) == 1  # its own steps, from the restart
    assert b.step == 90
    text = check_events_caption(snap)
    assert "A restarted when the others were at step 70: it counts its steps from 0 there." in text
    row = figures.scoreboard(snap)[0]
    assert row["lane"] == a.label and row["latest event"].startswith("restarted when the others were at step 70")
    run_all(snap)


@pytest.mark.slow  # its fixture trains a real run (15-20 s on 2 busy cores)
def test_an_lr_that_collapses_a_lane_is_said_with_its_step(collapse):
    b = collapse.lanes[1]
    (event,) = [e for e in lane_events(b.tables, b.diverged_at) if e.kind == "lr"]
    assert event.step == 41 and event.lr_to == COLLAPSE_LR and event.before > CHANCE + CHANCE_MARGIN
    assert event.collapsed  # at chance since, 25 points down, or diverged
    text = check_events_caption(collapse)
    said = f"B: learning rate 0.1 → {COLLAPSE_LR:g} at step 41: {event.before:.1%} "
    assert said in text and ("collapsed" in text or f"diverged at step {b.diverged_at:,}" in text)
    assert b.label not in c.plateau(collapse)
    run_all(collapse)


@pytest.mark.slow  # its fixture trains a real run (15-20 s on 2 busy cores)
def test_the_status_line_names_each_lanes_latest_event(flips):
    from ui.controls import status_text

    snap, (before, after) = flips["off"]
    assert "B: step 40/100 (BN off at step 40)" in status_text(snap)
    snap, _ = flips["restart"]
    assert "A: step 20/100 (restarted at the others' step 70)" in status_text(snap)


@pytest.mark.slow  # its fixture trains a real run (15-20 s on 2 busy cores)
def test_the_csv_carries_each_event_on_its_step(flips):
    snap, _ = flips["restart"]
    (_, off), (_, on) = flips["off"], flips["on"]
    text = metrics_csv([l.label for l in snap.lanes], [l.tables for l in snap.lanes])
    rows = list(csv.reader(io.StringIO(text)))
    head = rows[0]
    assert head[-1] == "event"
    said = {(r[0], int(r[1])): r[-1] for r in rows[1:] if r[-1]}
    assert said[("B · BN scratch", 40)] == (
        f"BN switched off at step 40: {off[0]:.1%} → {off[1]:.1%}; "
        f"BN switched back on at step 40: {on[0]:.1%} → {on[1]:.1%}"
    )
    assert said[("B · BN scratch", 51)].startswith("learning rate 0.1 → 0.02 at step 51: ")
    assert said[("A · BN torch", 1)].startswith("restarted when the others were at step 70")
    assert len(said) == 3


@pytest.mark.slow
def test_the_html_page_lists_each_lanes_events(flips):
    from bnviz.pictures.web_page import run_page

    snap, _ = flips["restart"]
    _, off = flips["off"]
    page = run_page(snap, frames=2)
    assert "events (validation accuracy before → after)" in page
    assert f"BN switched off at step 40: {off[0]:.1%} → {off[1]:.1%}" in page
    assert "restarted when the others were at step 70" in page


def test_look_probes_without_changing_the_network(one_thread):
    torch.manual_seed(0)
    model = build_lenet("scratch", "sigmoid", seed=0)
    X, y = torch.rand(16, 1, 28, 28), torch.randint(0, 10, (16,))
    model(X).sum().backward()  # gradients left by an earlier step
    state = {k: v.clone() for k, v in model.state_dict().items()}
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.eval()
    scalars, vectors = look(model, "sigmoid", 0.1, X, y)
    assert not model.training
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())  # running statistics too
    assert all(torch.equal(p.grad, grads[n]) for n, p in model.named_parameters() if p.grad is not None)
    assert scalars["conv1.grad_norm"] > 0 and "bn1.out.hist" in vectors


def test_a_lane_restarted_on_a_finished_run_trains_on_start(make_experiment, one_thread):
    """Its own budget from step 0 (the run's epochs); the other lane stays finished where it was."""
    exp = make_experiment()
    exp.start()
    assert exp.wait(120) and exp.status == "finished"
    done = exp.snapshot().lanes[0].step
    exp.set_lane(1, LaneSpec("torch"))
    assert exp.status == "paused"  # not "finished": Start and Step are offered
    exp.start()
    assert exp.wait(120) and exp.status == "finished"
    a, b = exp.snapshot().lanes
    assert a.step == done and b.step == b.steps_per_epoch * exp.settings.epochs and b.status == "finished"
