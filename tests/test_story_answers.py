"""The Story's answers (bnviz.pictures.story_answers): each question answered from the numbers, or "cannot tell"."""

from types import SimpleNamespace

import numpy as np
import pytest

from bnviz.live.snapshot import LaneSpec
from bnviz.pictures import story_answers
from bnviz.studies.batch_and_lr import RaceResult


def lane(index, norm, val=(), probe=None, bypassed=False, step=100):
    steps = [10 * (k + 1) for k in range(len(val))]
    tables = {"val": {"step": np.array(steps), "val_acc": np.array(val, dtype=float)}}
    if probe is not None:
        tables["probes"] = {"step": np.array([step])} | {k: np.array([v]) for k, v in probe.items()}
    label = f"{'ABC'[index]} · {'BN off' if norm == 'none' else 'BN ' + norm}"
    return SimpleNamespace(
        index=index, spec=LaneSpec(norm), label=label, tables=tables, bn_bypassed=bypassed, step=step,
        diverged_at=None, steps_per_epoch=100,
    )  # fmt: skip


def snap(*lanes):
    return SimpleNamespace(lanes=lanes)


@pytest.mark.parametrize(
    "a, b, option, says",
    [
        ([0.1, 0.2, 0.3], [0.3, 0.6, 0.8], 1, "B · BN scratch reached 50% first, at step 20"),
        ([0.6, 0.7], [0.3, 0.6], 0, "A · BN off reached 50% first, at step 10"),
        ([0.2, 0.55], [0.3, 0.51], 2, "at the same check, step 20"),
        ([0.1, 0.2], [0.1, 0.4], None, "no lane has reached 50% yet"),
    ],
)
def test_question_1_is_answered_by_the_first_lane_at_50_percent(a, b, option, says):
    found = story_answers.first_to_target(snap(lane(0, "none", a), lane(1, "scratch", b)))
    assert found.option == option and says in found.why, found


def probe(sat, std, g1, g3, p15=0.45, p85=0.55):
    row = {}
    for p in ("bn1", "bn2", "bn3", "bn4"):
        row |= {f"{p}.saturated": sat, f"{p}.act.std": std, f"{p}.act.p15": p15, f"{p}.act.p85": p85}
    return row | {"conv1.grad_norm": g1, "fc3.grad_norm": g3}


@pytest.mark.parametrize(
    "row, option, says",
    [
        (probe(0.30, 0.3, 1.0, 1.0), 0, "30.0% of A · BN off's units are saturated"),
        (probe(0.01, 0.3, 0.001, 1.0), 1, "conv1's gradient in A · BN off is 0.1% of fc3's"),
        (probe(0.01, 0.05, 1.0, 1.0), 1, "barely spread (std at most 0.05)"),
        (probe(0.01, 0.3, 1.0, 1.0), None, "none of the signs"),
    ],
)
def test_question_2_reads_the_plateau_lane_s_probe(row, option, says):
    at_chance = [0.1] * 6
    found = story_answers.why_plateau(snap(lane(0, "none", at_chance, row), lane(1, "scratch", [0.8] * 6)))
    assert found.option == option and says in found.why, found


def test_question_2_cannot_tell_without_a_plateau_and_not_for_a_lane_that_fell_back():
    fell = [0.6, 0.7, 0.1, 0.1, 0.1, 0.1]  # above chance once: not "still" at chance (a flip, an lr change)
    found = story_answers.why_plateau(snap(lane(0, "none", fell, probe(0.3, 0.3, 1, 1)), lane(1, "scratch", [0.8])))
    assert found.option is None and "no lane is at chance" in found.why


@pytest.mark.parametrize(
    "bn, plain, option",
    [
        (probe(0.01, 0.2, 1, 1, 0.3, 0.7), probe(0.01, 0.05, 1, 1, 0.45, 0.55), 1),  # 0.40 against 0.10
        (probe(0.20, 0.2, 1, 1, 0.1, 0.9), probe(0.01, 0.05, 1, 1, 0.45, 0.55), 2),  # saturates more
        (probe(0.01, 0.2, 1, 1, 0.4, 0.6), probe(0.01, 0.2, 1, 1, 0.4, 0.6), 0),  # the same width
        (probe(0.01, 0.2, 1, 1, 0.45, 0.55), probe(0.01, 0.2, 1, 1, 0.3, 0.7), None),  # BN narrower: no option says so
    ],
)
def test_question_3_compares_the_middle_of_the_activations(bn, plain, option):
    found = story_answers.what_bn_does(snap(lane(0, "none", probe=plain), lane(1, "scratch", probe=bn)))
    assert found.option == option, found
    assert "the middle 70% spans" in found.why


def test_question_3_needs_both_kinds_of_lane_and_their_probes():
    assert story_answers.what_bn_does(snap(lane(0, "scratch"), lane(1, "torch"))).option is None
    assert "press Start" in story_answers.what_bn_does(snap(lane(0, "none"), lane(1, "scratch"))).why


@pytest.mark.parametrize(
    "before, after, option",
    [(0.806, 0.13, 2), (0.80, 0.795, 0), (0.80, 0.70, 1), (0.80, 0.40, 2), (0.80, 0.81, 0)],
)
def test_question_4_from_the_accuracy_before_and_after_the_flip(before, after, option):
    found = story_answers.after_the_flip(before, after)
    assert found.option == option and f"{before:.1%} with BN, {after:.1%} without" == found.why


def race(lane_norm, lr, acc, diverged=None):
    return RaceResult(lr, lane_norm, lane_norm, np.arange(3), np.ones(3), 1.0, acc, diverged)


@pytest.mark.parametrize(
    "bn, option, says",
    [
        ({0.1: 0.8, 1.0: 0.3}, 0, "learned: 0.1"),
        ({0.1: 0.8, 1.0: 0.7, 10.0: 0.1}, 1, "learned: 1"),
        ({0.1: 0.8, 10.0: 0.7, 100.0: 0.6}, 2, "learned: 100"),
        ({0.1: 0.3}, None, "learned at no rate tried"),
    ],
)
def test_question_5_reads_the_largest_rate_the_bn_network_learned_at(bn, option, says):
    results = [race("none", 0.1, 0.9), race("none", 100.0, 0.9)] + [race("scratch", lr, a) for lr, a in bn.items()]
    found = story_answers.largest_rate(results)
    assert found.option == option and says in found.why, found
    assert story_answers.largest_rate([race("scratch", 10.0, 0.9, diverged=5)]).option is None  # diverged: no
    assert story_answers.largest_rate(None).option is None
