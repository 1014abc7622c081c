"""Smoke test of bench/benchmark.py: a --quick run in this process writes the JSON it promises.

Checks keys and that every number is positive; never timings against thresholds (they depend on the machine).
"""

import importlib.util
import json
import math
from pathlib import Path

import pytest
from conftest import missing

BENCH = Path(__file__).resolve().parent.parent / "bench" / "benchmark.py"


def load_benchmark():
    spec = importlib.util.spec_from_file_location("bnviz_benchmark", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def positive_number(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


@pytest.mark.slow
@pytest.mark.real_data
def test_quick_run_writes_expected_json(tmp_path):
    import torch

    bench = load_benchmark()
    try:
        bench.find_data_root()
    except bench.DataError:
        missing("Fashion-MNIST is not available ($BNVIZ_DATA, ./data, Debian's dataset-fashion-mnist)")
    threads = torch.get_num_threads()
    out = tmp_path / "bench.json"
    assert bench.main(["--quick", "--device", "cpu", "--json", str(out)]) == 0
    assert torch.get_num_threads() == threads  # main() restores the thread count it changed

    r = json.loads(out.read_text())
    assert {"machine", "settings", "targets", "layer", "training", "threads", "epoch", "verdicts"} <= r.keys()
    assert r["settings"]["quick"] is True and r["settings"]["device"] == "cpu"
    assert positive_number(r["machine"]["torch_threads"]) and r["machine"]["torch"]

    assert set(r["training"]) == {"none", "scratch", "torch"}
    for row in r["training"].values():
        for path in ("ours", "chapter"):
            assert positive_number(row[path]["images_per_s"])
            assert positive_number(row[path]["seconds"])
            assert row[path]["images"] > 0
        assert positive_number(row["ours_over_chapter"])

    assert set(r["layer"]) == {"128x6x24x24", "128x16x8x8", "128x120"}
    for row in r["layer"].values():
        for key in ("ours_us", "torch_us", "chapter_us", "ours_over_torch", "chapter_over_torch"):
            assert positive_number(row[key]), key
        assert row["outputs_agree"] is True

    assert set(r["threads"]["images_per_s"]) == {"1", "2"}
    assert all(positive_number(v) for v in r["threads"]["images_per_s"].values())
    assert positive_number(r["threads"]["two_over_one"])

    e = r["epoch"]
    assert e["variants"] == ["none", "scratch"] and e["train_images"] > 0 and e["test_images"] > 0
    for key in ("train_s", "validation_s", "total_s"):
        assert positive_number(e[key]), key
    assert all(0 <= a <= 1 for a in e["val_acc"].values())

    assert set(r["verdicts"]) == {
        "training_scratch_ours_over_chapter",
        "layer_128x6x24x24_ours_over_torch",
        "epoch_seconds",
    }
    assert all(v["met"] is None for v in r["verdicts"].values())  # a smoke run judges no target
