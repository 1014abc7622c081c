"""bnviz train --devices K --bn-sync ...: a local gloo group started by the CLI, and under torchrun."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import bnviz.devices.parallel_run
from bnviz.cli import main
from bnviz.data.fashion_mnist import random_dataset
from bnviz.devices.data_parallel import ParallelSettings, train
from bnviz.live.replay import Recording
from bnviz.machine import capacity

DATA = random_dataset(256, 100, seed=5)
ROOT = Path(__file__).resolve().parents[1]  # a child's `import bnviz` finds this checkout, whatever is installed


def child_env(data_root, **more):
    """The environment of a `python -m bnviz` child: this checkout first on its path, the real data, one thread."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "BNVIZ_DATA": str(data_root), "OMP_NUM_THREADS": "1", **more}


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
    # rtol: the CSV's 6 significant digits (5e-6) and the float32 rounding between ranks and one process (under 3e-7
    # measured, tests/test_data_parallel.py), with room to spare
    np.testing.assert_allclose([float(r["train_loss"]) for r in rows], one.loss, rtol=1e-4)
    # the weights agree to float32 rounding, not bit for bit (tests/test_data_parallel.py), so of the 100 test images
    # one near a decision boundary may flip on another CPU: 0.01, no more
    assert lane["test_acc"] == pytest.approx(one.test_acc, abs=0.011)
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
    env = child_env(real_data_root)
    command = [str(torchrun), "--nproc-per-node", "2", "-m", "bnviz", "train", "--norm", "scratch"]
    command += ["--bn-sync", "global", *ARGS, "--out", str(out)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["devices"], summary["launcher"]) == (2, "torchrun")


def test_more_devices_than_the_machine_holds_is_refused_before_any_start(monkeypatch, capsys):
    monkeypatch.setattr(capacity, "cores", lambda: 2)
    monkeypatch.setattr(capacity, "available_memory", lambda: 64 * 2**30)
    started = []
    monkeypatch.setattr(bnviz.devices.parallel_run, "run_local_group", lambda *a, **k: started.append(a))
    monkeypatch.setattr(bnviz.devices.parallel_run, "load_fashion_mnist", lambda: started.append("data") or DATA)
    assert main(["train", "--norm", "scratch", "--devices", "1000", *ARGS]) == 2
    err = capsys.readouterr().err
    assert "--devices 1000 is more than this machine can hold: at most 4 (2 cores x 2 ranks each = 4;" in err
    assert "BN across devices" in err and "Traceback" not in err
    assert started == []  # refused before the data, the forkserver or any rank


def test_the_capacity_is_the_smaller_of_cores_and_memory():
    lots = capacity.Capacity(cores=8, memory=64 * 2**30)
    assert lots.limit == 16 and lots.refuse(16) is None and "at most 16" in lots.refuse(17)
    little = capacity.Capacity(cores=8, memory=capacity.RANK_MEMORY_BYTES * 5)
    assert little.by_memory == 4 and little.limit == 4  # 80% of the memory of 5 ranks holds 4
    assert "= 4)" in little.words() and "--devices 4 or fewer" in little.refuse(5)
    assert capacity.Capacity(cores=1, memory=None).limit == 2
    assert capacity.rank_capacity().limit >= 1


def _group(pgid):
    """(pid, state, command) of every live process (not a zombie) in the process group pgid, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            found.append((int(entry.name), fields[0], command))
    return found


def _wait_for(condition, seconds, what):
    """Poll ``condition`` until it is true or ``seconds`` pass; ``what()`` says what did not happen."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)  # polling /proc: there is no event to wait on for another process's children
    raise AssertionError(f"not within {seconds} s: {what()}")


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("moment", ["starting", "training"])
def test_kill_9_of_the_cli_leaves_no_process_behind(tmp_path, real_data_root, moment):
    """kill -9 of `bnviz train --devices 2` while its ranks start, or mid-run: within 5 s nothing of its process
    group lives on (the ranks, the forkserver, multiprocessing's resource tracker)."""
    env = child_env(real_data_root, BNVIZ_DATA_UNCHECKED="1")
    command = [sys.executable, "-m", "bnviz", "train", "--norm", "scratch", "--devices", "2", *ARGS[2:]]
    command += ["--epochs", "100000"]  # far more than the test lets it train
    err = tmp_path / "stderr.txt"
    with err.open("w") as stderr:
        cli = subprocess.Popen(command, env=env, stderr=stderr, start_new_session=True, cwd=tmp_path)
    try:
        if moment == "starting":  # the forkserver is up, or a rank: the group is being made
            _wait_for(lambda: any("forkserver" in c for _, _, c in _group(cli.pid)), 120, lambda: "a forkserver")
        else:
            _wait_for(lambda: "step 50:" in err.read_text(), 120, lambda: "50 steps: " + err.read_text()[-500:])
            assert len([c for _, _, c in _group(cli.pid) if "forkserver" in c]) == 3  # the forkserver, 2 ranks
        os.kill(cli.pid, signal.SIGKILL)
        cli.wait(10)
        _wait_for(lambda: not _group(cli.pid), 5, lambda: f"the group ends; left: {_group(cli.pid)}")
    finally:
        for pid, _, _ in _group(cli.pid):
            os.kill(pid, signal.SIGKILL)
        cli.kill()


def _rank_pids(torchrun_pid):
    """{RANK: pid} of the workers torchrun started (its children, each in a session of its own), from /proc."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            if (
                not entry.name.isdigit()
                or int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) != torchrun_pid
            ):
                continue
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        ranks = [e[5:].decode() for e in environ if e.startswith(b"RANK=")]
        if ranks:
            found[int(ranks[0])] = int(entry.name)
    return found


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("fault", ["SIGKILL", "SIGSTOP"])
def test_torchrun_names_a_dead_or_stopped_rank(tmp_path, real_data_root, fault):
    """Rank 1 of torchrun's 2 is killed or stopped mid-run: rank 0 names rank 1 within 15 s in one line and exits
    1, no traceback, rank 0 never blamed by bnviz; the run ends."""
    torchrun = Path(sys.executable).parent / "torchrun"
    if not torchrun.exists():
        pytest.skip("no torchrun next to this Python")
    command = [str(torchrun), "--nproc-per-node", "2", "-m", "bnviz", "train", "--norm", "scratch"]
    command += ["--bn-sync", "global", *ARGS[2:], "--epochs", "100000"]
    err = tmp_path / "stderr.txt"
    env = child_env(real_data_root, BNVIZ_DATA_UNCHECKED="1")
    with err.open("w") as stderr:
        run = subprocess.Popen(command, env=env, stderr=stderr, stdout=stderr, start_new_session=True, cwd=tmp_path)
    try:
        _wait_for(lambda: "step 50:" in err.read_text(), 180, lambda: "50 steps: " + err.read_text()[-800:])
        ranks = _wait_for(lambda: _rank_pids(run.pid) if len(_rank_pids(run.pid)) == 2 else None, 10, lambda: "ranks")
        os.kill(ranks[1], getattr(signal, fault))
        faulted = time.monotonic()
        _wait_for(lambda: "bnviz: rank 1 of 2" in err.read_text(), 15, lambda: err.read_text()[-1500:])
        assert time.monotonic() - faulted < 15
        run.wait(60)
        text = err.read_text()
        ours = [line for line in text.splitlines() if line.startswith("bnviz: rank")]
        assert ours and all(line.startswith("bnviz: rank 1 of 2 ") for line in ours), ours
        assert "rank 0 ends the run (exit 1)" in text
        ranks_said, torchrun_said = text.split("torch/distributed/elastic/multiprocessing/api.py", 1)
        assert "Traceback" not in ranks_said  # the ranks: one line each; then torchrun's own report
        root_cause = torchrun_said.split("Root Cause", 1)[1]
        assert "rank      : 1 (local_rank: 1)" in root_cause  # torchrun too blames the faulty rank, not rank 0
        assert run.returncode != 0
    finally:
        for pid in list(_rank_pids(run.pid).values()) + [p for p, _, _ in _group(run.pid)]:
            os.kill(pid, signal.SIGKILL)
        run.kill()
