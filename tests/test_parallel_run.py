"""bnviz train --devices K --bn-sync ...: a local gloo group started by the CLI, and under torchrun."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import bnviz.devices.parallel_run
from bnviz.cli import main
from bnviz.data.fashion_mnist import random_dataset
from bnviz.devices.data_parallel import ParallelSettings, train
from bnviz.live.replay import Recording

DATA = random_dataset(256, 100, seed=5)
ARGS = ["--epochs", "1", "--train-size", "256", "--batch-size", "64", "--seed", "0"]


def test_devices_and_bn_sync_write_rank_zeros_files(tmp_path, monkeypatch, one_thread):
    monkeypatch.setattr(bnviz.devices.parallel_run, "load_fashion_mnist", lambda: DATA)
    out = tmp_path / "run"
    code = main(["train", "--norm", "scratch", "--devices", "2", "--bn-sync", "global", *ARGS, "--out", str(out)])
    assert code == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["bn1_statistics.npz", "experiment.npz", "history.csv", "summary.json"]
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["devices"], summary["bn_sync"], summary["launcher"]) == (2, "global", "local gloo group")
    lane = summary["variants"][0]
    assert {"norm", "steps", "test_acc", "test_loss", "train_loss", "images_per_s"} <= set(lane)  # the CLI's keys
    rows = list(csv.DictReader((out / "history.csv").open()))
    assert lane["steps"] == len(rows) == 4
    # the same numbers as one process on the whole batch: synchronised BN
    one = train(DATA, ParallelSettings(batch_size=64, train_size=256, bn_sync="global"))
    np.testing.assert_allclose([float(r["train_loss"]) for r in rows], one.loss, rtol=1e-4)
    assert lane["test_acc"] == pytest.approx(one.test_acc, abs=0.002)
    # the same experiment file as a one-process run: the dashboard replays it
    rec = Recording.load(out / "experiment.npz")
    snap = rec.snapshot()
    assert [l.spec.norm for l in snap.lanes] == ["scratch"] and rec.last_step == 4
    np.testing.assert_allclose(snap.lanes[0].tables["steps"]["train_loss"], one.loss, rtol=1e-4)
    assert snap.lanes[0].tables["epochs"]["val_acc"][-1] == pytest.approx(lane["test_acc"])
    stats = np.load(out / "bn1_statistics.npz")
    assert stats["scratch/bn1_means"].shape == (1, 2, 6)  # step 1: 2 devices, 6 channels


def test_torch_sync_batchnorm_on_the_cpu_is_a_message(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bnviz.devices.parallel_run, "load_fashion_mnist", lambda: DATA)
    code = main(["train", "--norm", "torch", "--devices", "2", "--bn-sync", "global", *ARGS])
    assert code == 1
    assert "CUDA GPUs only" in capsys.readouterr().err


def test_bn_sync_needs_a_norm_that_has_one(capsys):
    assert main(["train", "--norm", "ghost", "--devices", "2", "--bn-sync", "global", *ARGS]) == 2
    assert "synchronised BN is for norm scratch or torch" in capsys.readouterr().err


@pytest.mark.slow
def test_torchrun_runs_the_same_command(tmp_path, real_data_root):
    torchrun = Path(sys.executable).parent / "torchrun"
    if not torchrun.exists():
        pytest.skip("no torchrun next to this Python")
    out = tmp_path / "run"
    env = {**os.environ, "BNVIZ_DATA": str(real_data_root), "OMP_NUM_THREADS": "1"}
    command = [str(torchrun), "--nproc-per-node", "2", "-m", "bnviz", "train", "--norm", "scratch"]
    command += ["--bn-sync", "global", *ARGS, "--out", str(out)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["devices"], summary["launcher"]) == (2, "torchrun")
