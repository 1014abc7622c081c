"""Command line: ``python -m bnviz train ...`` (headless training) and ``python -m bnviz data``."""

import argparse
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

from . import device as devices
from .data import DataError, load_fashion_mnist, locate
from .engine import Experiment
from .history import metrics_csv, save_experiment
from .models import NORMS
from .snapshot import LaneSpec, Settings


class TrainingFailed(RuntimeError):
    """The worker stopped with an error; its message is in the experiment's status."""


def parse_norms(text):
    norms = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in norms if n not in NORMS]
    if not norms or bad or len(set(norms)) != len(norms):
        raise argparse.ArgumentTypeError(
            f"--norm takes distinct names from {', '.join(NORMS)}, comma-separated (got {text!r})"
        )
    return norms


def positive(kind):
    def parse(text):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    return parse


def progress(done, total, text, stream=sys.stderr):
    if not stream.isatty() and done not in (total,):
        return
    width = 30
    filled = int(width * done / max(total, 1))
    stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {text}")
    if done == total:
        stream.write("\n")
    stream.flush()


def train(args):
    """Train the variants side by side through the live engine, printing a table per epoch."""
    settings = Settings(
        lr=args.lr,
        batch_size=args.batch_size,
        epochs=args.epochs,
        seed=args.seed,
        device=args.device,
        train_size=args.train_size,
    )
    devices.resolve_device(args.device)  # a clear error before the data is loaded
    specs = [LaneSpec(n, args.activation) for n in args.norm]
    with Experiment(load_fashion_mnist(), settings, specs, name="cli", shared_cpu=False) as exp:
        print(
            f"bnviz: training {', '.join(args.norm)} on {devices.describe(exp.device)}, {exp.data.n_train:,} "
            f"images, batch {args.batch_size}, lr {args.lr}, {args.epochs} epoch(s), seed {args.seed}",
            file=sys.stderr,
        )
        printed, last_step = 0, -1
        exp.start()
        while True:
            done = exp.wait(timeout=0.25)
            snap = exp.snapshot()
            total = snap.lanes[0].steps_per_epoch * args.epochs
            if snap.max_step != last_step:
                last_step = snap.max_step
                progress(min(snap.max_step, total), total, f"epoch {max(l.epoch for l in snap.lanes)}/{args.epochs}")
            printed = print_epochs(snap, printed)
            if done:
                break
    if snap.error:
        raise TrainingFailed(f"training stopped: {snap.error}")
    for lane in snap.lanes:
        if lane.status in ("diverged", "error"):
            print(
                f"bnviz: {lane.label}: {lane.status}"
                + (f" at step {lane.diverged_at}" if lane.diverged_at else f" ({lane.error})"),
                file=sys.stderr,
            )
    if args.out:
        write_outputs(Path(args.out), exp, snap)
    return snap


def print_epochs(snap, printed):
    """Print the epoch rows that every lane has finished since the last call; return how many are out."""
    epochs = [lane.tables["epochs"] for lane in snap.lanes]
    ready = min(len(e.get("epoch", [])) for e in epochs)
    for i in range(printed, ready):
        if i == 0:
            print(
                f"{'epoch':>5} {'lane':>14} {'train loss':>10} {'train acc':>9} {'val loss':>8} {'val acc':>7} "
                f"{'images/s':>9}"
            )
        for lane, e in zip(snap.lanes, epochs):
            print(
                f"{int(e['epoch'][i]):>5} {lane.label:>14} {e['train_loss'][i]:>10.4f} {e['train_acc'][i]:>9.3f} "
                f"{e['val_loss'][i]:>8.4f} {e['val_acc'][i]:>7.3f} {e['images_per_s'][i]:>9,.0f}",
                flush=True,
            )
    return max(printed, ready)


def summary(snap):
    """Per lane: its set-up and final numbers (val_acc on the full 10k test set)."""
    out = []
    for lane in snap.lanes:
        e = lane.tables["epochs"]
        last = {k: (float(v[-1]) if len(v) else None) for k, v in e.items()}
        out.append(
            dict(
                lane=lane.label,
                norm=lane.spec.norm,
                activation=lane.spec.activation,
                status=lane.status,
                diverged_at=lane.diverged_at,
                epochs=len(e.get("epoch", [])),
                steps=lane.step,
                val_acc=last.get("val_acc"),
                val_loss=last.get("val_loss"),
                train_loss=last.get("train_loss"),
                train_acc=last.get("train_acc"),
                images_per_s=lane.images_per_s,
            )
        )
    return out


def write_outputs(out, exp, snap):
    """experiment.npz (loadable for replay), history.csv and summary.json: the dashboard's export format."""
    out.mkdir(parents=True, exist_ok=True)
    views = [lane.tables for lane in snap.lanes]
    save_experiment(out / "experiment.npz", exp.header(), views)
    (out / "history.csv").write_text(metrics_csv([l.label for l in snap.lanes], views))
    (out / "summary.json").write_text(
        json.dumps(
            {"settings": dataclasses.asdict(snap.settings), "device": snap.device, "variants": summary(snap)}, indent=2
        )
    )
    print(f"bnviz: wrote {out / 'experiment.npz'}, history.csv and summary.json", file=sys.stderr)


DASHBOARD = Path(__file__).resolve().parents[1] / "dashboard.py"


def dashboard(streamlit_args, script=DASHBOARD):
    """`streamlit run dashboard.py` from the checkout, so its .streamlit/config.toml applies; returns its exit code."""
    if not script.is_file():
        print(
            f"bnviz: the dashboard ({script.name}) is not next to this bnviz package ({script.parent}); it ships "
            "with the source checkout: clone the repository and run `make run` there",
            file=sys.stderr,
        )
        return 2
    command = [sys.executable, "-m", "streamlit", "run", str(script), *streamlit_args]
    return subprocess.call(command, cwd=script.parent)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bnviz", description="bnviz: see Batch Normalization work.")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train LeNet variants side by side, headless")
    t.add_argument(
        "--norm",
        type=parse_norms,
        default=["none", "scratch"],
        help="comma-separated variants among none, scratch, torch (default: none,scratch)",
    )
    t.add_argument("--epochs", type=positive(int), default=10)
    t.add_argument("--lr", type=positive(float), default=0.1)
    t.add_argument("--batch-size", type=positive(int), default=128)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--activation", choices=("sigmoid", "relu"), default="sigmoid")
    t.add_argument("--train-size", type=positive(int), default=None, help="train on the first N images only")
    t.add_argument("--device", choices=devices.DEVICES, default="auto")
    t.add_argument("--out", default=None, help="folder for experiment.npz (replayable), history.csv and summary.json")
    sub.add_parser("data", help="find (or fetch) Fashion-MNIST and check it")
    sub.add_parser(
        "dashboard",
        help="open the dashboard (streamlit run dashboard.py); further options go to streamlit, e.g. --server.port",
    )
    args, extra = p.parse_known_args(argv)
    if extra and args.command != "dashboard":
        p.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        if args.command == "dashboard":
            return dashboard(extra)
        if args.command == "data":
            root = locate()
            d = load_fashion_mnist(root)
            print(
                f"bnviz: Fashion-MNIST ready in {root} "
                f"({d.train_images.shape[0]:,} + {d.test_images.shape[0]:,} images)"
            )
        else:
            train(args)
    except (DataError, devices.DeviceError, TrainingFailed, ValueError) as e:  # ValueError: settings out of range
        print(f"bnviz: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nbnviz: interrupted", file=sys.stderr)
        return 130
    return 0
