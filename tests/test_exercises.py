"""The exercises (bnviz.studies.exercises): each reveal names the answer its own numbers support, on real data and on
made-up results at each branch; the sentence quotes the measured numbers."""

import dataclasses
import math
import re

import pytest

from bnviz.studies.exercises import EXERCISES, SAME, Variant, VariantResult, pct, run
from bnviz.studies.norm_findings import DIRECTIONS


def result(name, acc, batch=None, diverged_at=None, steps=300, bias=None, **variant):
    v = Variant(name, **variant)
    return VariantResult(v, steps, (2.3,) * steps, acc, acc if batch is None else batch, diverged_at, bias)


def expected_answer(key, r):
    """The answer each exercise's rule gives, written out here independently of the reveal functions."""
    acc = {n: 0.1 if math.isnan(x.val_acc) else x.val_acc for n, x in r.items()}

    def side(a, b, same=SAME):  # 0: a below b, 1: about the same, 2: a above b
        return 1 if abs(acc[a] - acc[b]) < same else 2 if acc[a] > acc[b] else 0

    if key == "bias":
        return side("BN, no bias", "BN, with bias")
    if key == "race":
        best = {}
        for x in r.values():
            if x.diverged_at is None and x.val_acc >= 0.5:
                best[x.variant.norm] = max(best.get(x.variant.norm, 0), x.variant.lr)
        bn, plain = best.get("scratch"), best.get("none")
        if bn is None and plain is None:
            return 1
        return 0 if plain is None or (bn or 0) > plain else 1 if bn == plain else 2
    if key == "positions":
        return {2: 0, 0: 1, 1: 2}[side("BN at bn1, bn2 only", "BN at bn3, bn4 only", 0.03)]
    if key == "lite":
        return {2: 0, 0: 1, 1: 2}[side("centre only", "scale only", 0.03)]
    if key == "ioffe":
        learns = [r[n].diverged_at is None and r[n].val_acc >= 0.5 for n in ("BN, lr 0.5", "BN, lr 3")]
        return 0 if all(learns) else 1 if learns[0] else 2
    if key == "noisy":
        if acc["noisy BN"] > acc["BN"] - 0.05:
            return 0
        return 1 if abs(acc["noisy BN"] - acc["no BN"]) < 0.05 else 2
    if key == "small":
        return {0: 1, 2: 0, 1: 2}[side("BN, batch 2", "GroupNorm, batch 2", 0.03)]
    if key == "skewed":
        return {0: 0, 2: 1, 1: 2}[side("BN, 2 classes a batch", "BN renorm, 2 classes a batch")]
    if key == "pooling":
        gap = acc["BN, avg pool"] - acc["no BN, avg pool"]
        closed = acc["no BN, max pool"] - acc["no BN, avg pool"]
        return 2 if gap <= 0 else 0 if closed >= 0.5 * gap else 1
    raise KeyError(key)


def check(key, results):
    exercise = EXERCISES[key]
    answer, text = exercise.reveal(results)
    assert answer == expected_answer(key, results), (key, text)
    assert 0 <= answer < len(exercise.choices)
    for r in results.values():  # every accuracy the sentence quotes is a measured one
        if r.name in text and key not in ("race", "small", "skewed"):
            assert pct(r.val_acc) in text, (r.name, text)
    for number in re.findall(r"(\d+\.\d)%", text):
        assert any(
            abs(float(number) - 100 * x) < 0.051 for r in results.values() for x in (r.val_acc, r.val_acc_batch)
        ), (number, text)
    return answer, text


def test_each_exercise_names_its_variants_and_has_a_reveal_for_every_result():
    for key, e in EXERCISES.items():
        names = [v.name for v in e.variants]
        assert len(set(names)) == len(names) and len(e.choices) == 3, key
        assert not e.finding or e.finding in DIRECTIONS, key
        # every branch: all variants equal, then each variant far ahead of the others in turn
        for leader in [None, *names]:
            r = {n: result(n, 0.9 if n == leader else 0.3, norm=v.norm, lr=v.lr) for n, v in zip(names, e.variants)}
            check(key, r)
        diverged = {n: result(n, math.nan, diverged_at=7, norm=v.norm, lr=v.lr) for n, v in zip(names, e.variants)}
        check(key, diverged)


@pytest.mark.slow  # trains every exercise's variants on real data (5-10 s each)
@pytest.mark.real_data
@pytest.mark.parametrize("key", list(EXERCISES))
def test_on_real_data_each_reveal_states_what_its_run_shows(key, real_data, one_thread):
    exercise = EXERCISES[key]
    # shorter than the dashboard's runs (the check is of the reveal against its own numbers, whatever they are)
    short = dataclasses.replace(exercise, steps=max(40, exercise.steps // 5), train_size=6_400)
    results = run(short, real_data)
    assert list(results) == [v.name for v in exercise.variants]
    check(key, results)
