"""The command line, run in-process: argument errors, device errors, data errors, and what --out writes."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import until, worker_threads

import bnviz.cli
import bnviz.cli as cli
from bnviz.cli import main
from bnviz.data import FashionMNISTData, num_batches

pytestmark = pytest.mark.usefixtures("one_thread")


def synthetic_data(n_train=300, n_test=100, seed=0):
    """Learnable toy data: the class shows as a bright row, so accuracy can move in a few steps."""
    g = torch.Generator().manual_seed(seed)
    parts = []
    for n in (n_train, n_test):
        labels = torch.randint(0, 10, (n,), generator=g)
        images = torch.randint(0, 60, (n, 28, 28), generator=g, dtype=torch.uint8)
        images[torch.arange(n), 2 + 2 * labels] = 255
        parts += [images, labels]
    return FashionMNISTData(*parts, source="synthetic")


@pytest.fixture
def fake_data(monkeypatch):
    data = synthetic_data()
    calls = []

    def load(*args, **kwargs):
        calls.append((args, kwargs))
        return data

    monkeypatch.setattr(bnviz.cli, "load_fashion_mnist", load)
    return calls


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--norm", "batch"],
        ["train", "--norm", "none,none"],
        ["train", "--norm", ""],
        ["train", "--activation", "tanh"],
        ["train", "--epochs", "0"],
        ["train", "--lr", "-1"],
        ["train", "--device", "tpu"],
        [],
    ],
)
def test_bad_arguments_exit_2(argv, capsys, fake_data):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert "usage: python -m bnviz" in capsys.readouterr().err
    assert fake_data == []  # nothing was loaded


def test_bad_norm_message(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--norm", "none,batch"])
    err = capsys.readouterr().err
    assert "--norm takes distinct names from none, scratch, torch" in err and "'none,batch'" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_returns_2(capsys, fake_data, tmp_path):
    assert main(["train", "--device", "cuda", "--train-size", "64", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bnviz: CUDA was asked for")
    assert "--device auto or cpu" in err
    assert "Traceback" not in err
    assert fake_data == []  # failed before loading anything
    assert not (tmp_path / "out").exists()


def read_outputs(out):
    """(history.csv rows as dicts, summary.json as a dict)."""
    with open(out / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return rows, json.loads((out / "summary.json").read_text())


def by_lane(rows):
    lanes = {}
    for r in rows:
        lanes.setdefault(r["lane"], []).append(r)
    return lanes


def test_out_writes_history_and_summary(tmp_path, capsys, fake_data):
    out = tmp_path / "run" / "out"
    argv = [
        "train",
        "--norm",
        "none,scratch,torch",
        "--epochs",
        "2",
        "--batch-size",
        "64",
        "--lr",
        "0.5",
        "--train-size",
        "200",
        "--seed",
        "3",
        "--activation",
        "relu",
        "--device",
        "cpu",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "200 images" in captured.err and str(out / "experiment.npz") in captured.err
    assert captured.out.count("train loss") == 1  # the table header, once
    assert len(fake_data) == 1

    rows, summary = read_outputs(out)
    steps = 2 * num_batches(200, 64)  # 200 = 3 * 64 + 8: 4 steps an epoch
    variants = summary["variants"]
    assert [v["norm"] for v in variants] == ["none", "scratch", "torch"]
    lanes = by_lane(rows)
    assert list(lanes) == [v["lane"] for v in variants]
    for v in variants:
        assert 0 <= v["val_acc"] <= 1 and v["train_loss"] > 0 and v["images_per_s"] > 0
        assert v["steps"] == steps and v["epochs"] == 2 and v["status"] == "finished"
        assert v["activation"] == "relu"
        history = lanes[v["lane"]]
        assert [int(r["step"]) for r in history] == list(range(1, steps + 1))
        assert [int(r["epoch"]) for r in history] == [1] * (steps // 2) + [2] * (steps // 2)
        assert all(float(r["train_loss"]) > 0 and 0 <= float(r["train_acc"]) <= 1 for r in history)
    for key, value in dict(lr=0.5, batch_size=64, epochs=2, seed=3, train_size=200, device="cpu").items():
        assert summary["settings"][key] == value, key
    by = {v["norm"]: v for v in variants}
    # The lanes trained in lockstep on the same batches from the same weights: ours and torch's BN agree
    # step by step, and BN off does not.
    ours, theirs, off = (lanes[by[n]["lane"]] for n in ("scratch", "torch", "none"))
    for a, b in zip(ours, theirs):
        assert float(a["train_loss"]) == pytest.approx(float(b["train_loss"]), rel=1e-4, abs=1e-5)
    assert by["scratch"]["val_acc"] == pytest.approx(by["torch"]["val_acc"], abs=0.011)
    assert any(float(a["train_loss"]) != pytest.approx(float(c["train_loss"]), rel=1e-3) for a, c in zip(ours, off))
    assert by["scratch"]["val_acc"] > 0.3  # learned something: chance is 0.1


def test_same_seed_same_history(tmp_path, fake_data, capsys):
    argv = [
        "train",
        "--norm",
        "scratch",
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--train-size",
        "128",
        "--device",
        "cpu",
        "--seed",
        "5",
        "--out",
    ]
    assert main(argv + [str(tmp_path / "a")]) == 0
    assert main(argv + [str(tmp_path / "b")]) == 0
    a, sa = read_outputs(tmp_path / "a")
    b, sb = read_outputs(tmp_path / "b")
    assert len(a) == len(b) == 4
    for ra, rb in zip(a, b):
        assert float(ra["train_loss"]) == pytest.approx(float(rb["train_loss"]), rel=1e-6)
    assert sa["variants"][0]["val_acc"] == pytest.approx(sb["variants"][0]["val_acc"])


def test_batch_size_one_is_refused(capsys, fake_data, tmp_path):
    assert main(["train", "--batch-size", "1", "--device", "cpu", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bnviz: ") and "batch size must be at least 2" in err
    assert not (tmp_path / "out").exists()


def test_data_errors_return_2(places, idx, monkeypatch, capsys, tmp_path):
    """A readable set of the wrong size: both commands report it in one line, no traceback, no output."""
    monkeypatch.setenv("BNVIZ_DATA", str(places.env))
    idx.write_dataset(places.env, idx.make_arrays(100, 50), gz=True)
    for argv in (["data"], ["train", "--device", "cpu", "--out", str(tmp_path / "out")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "bnviz: The training set is not Fashion-MNIST" in err
        assert "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_data_command_reports_the_set(places, full_synthetic, monkeypatch, capsys):
    monkeypatch.setenv("BNVIZ_DATA", str(full_synthetic.folder))
    assert main(["data"]) == 0
    out = capsys.readouterr().out
    assert f"Fashion-MNIST ready in {full_synthetic.folder}" in out and "(60,000 + 10,000 images)" in out


def test_chapter_run_on_real_data(real_data_root, tmp_path, monkeypatch, capsys):
    """One epoch at the chapter's settings: BN learns (>= 0.75 validation accuracy), the plain net does not."""
    monkeypatch.setenv("BNVIZ_DATA", str(real_data_root))
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    assert (
        main(
            [
                "train",
                "--norm",
                "none,scratch",
                "--epochs",
                "1",
                "--lr",
                "0.1",
                "--batch-size",
                "128",
                "--seed",
                "0",
                "--activation",
                "sigmoid",
                "--device",
                "cpu",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert "60,000 images" in capsys.readouterr().err
    _, summary = read_outputs(out)
    acc = {v["norm"]: v["val_acc"] for v in summary["variants"]}
    assert [v["steps"] for v in summary["variants"]] == [469, 469]
    assert acc["scratch"] >= 0.75, acc
    assert acc["none"] < 0.5, acc


def test_an_interrupted_run_stops_its_experiment(fake_data, monkeypatch, capsys):
    """Ctrl-C while training: exit code 130, and the engine's worker thread is gone (``with``, not a leak)."""

    def interrupted(snap, printed):
        raise KeyboardInterrupt

    monkeypatch.setattr(bnviz.cli, "print_epochs", interrupted)
    assert main(["train", "--epochs", "50", "--batch-size", "32", "--device", "cpu"]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert until(lambda: not worker_threads("cli"), timeout=10)


def test_bnviz_dashboard_runs_streamlit_on_the_checkouts_page(monkeypatch):
    calls = []
    monkeypatch.setattr(cli.subprocess, "call", lambda command, cwd: calls.append((command, cwd)) or 0)
    assert cli.main(["dashboard", "--server.port", "8600"]) == 0
    ((command, cwd),) = calls
    assert command[1:4] == ["-m", "streamlit", "run"] and command[4] == str(cli.DASHBOARD)
    assert command[5:] == ["--server.port", "8600"]  # what bnviz does not know goes to streamlit
    assert Path(cwd) == cli.DASHBOARD.parent  # so the checkout's .streamlit/config.toml applies
    assert cli.DASHBOARD.is_file()


def test_bnviz_dashboard_without_the_page_says_where_it_lives(tmp_path, capsys):
    assert cli.dashboard([], script=tmp_path / "dashboard.py") == 2
    assert "ships with the source checkout" in capsys.readouterr().err


def test_other_commands_refuse_unknown_options(capsys):
    with pytest.raises(SystemExit):
        cli.main(["data", "--server.port", "1"])
    assert "unrecognized arguments" in capsys.readouterr().err


def test_the_bnviz_console_script_is_installed():
    script = Path(sys.executable).parent / "bnviz"
    assert script.is_file(), "pip install -e . installs the `bnviz` command (make install)"
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "dashboard" in out.stdout and "train" in out.stdout
