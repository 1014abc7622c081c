"""Issue 13's targets: the training step as a CUDA graph against eager, bare and in the engine, and the CLI's wall.

    python bench/gpu_speed.py [--device auto|cuda|cpu] [--steps 468] [--cli-epochs 10] [--json PATH]

Measured in one run, on the same data on the device, each the best of ``--repeats``:
1. bare loops, one epoch (468 steps of 128) of BN off + BN scratch, no probes, no validation: ``train_step``
   (eager) against ``GraphedStep`` (captured once, replayed): the floor the engine is held to;
2. the engine (``bnviz.live.engine.Experiment``), one epoch of both lanes at the chapter's settings (probes every 20
   steps, validation every 100, the full test set at the epoch's end), with CUDA graphs on and off
   (``BNVIZ_CUDA_GRAPHS``); the target is at most 0.8 s on an H100, within 2x of the bare graphed loop;
3. the CLI: ``python -m bnviz train --epochs 10 --device <device>`` from the command to summary.json, graphs on
   (and off, with ``--cli-eager``); the target is at most 15 s on an H100.
On a CPU there is no graph: the "graphed" rows are the eager step again (the script runs, for its smoke test).
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bnviz.data.fashion_mnist import batches, load_fashion_mnist
from bnviz.live.engine import Experiment
from bnviz.live.snapshot import LaneSpec, Settings
from bnviz.machine import device as devices
from bnviz.step.graphed_step import GraphedStep
from bnviz.step.models import build_lenet
from bnviz.step.training import make_optimizer, train_step

ROOT = Path(__file__).resolve().parent.parent
LANES = ("none", "scratch")


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def bare_epoch(data, dev, steps, graphed):
    """Seconds for ``steps`` lockstep steps of both lanes after one warm-up epoch's first 10 steps (and capture)."""
    x, y = data.train_images.to(dev), data.train_labels.to(dev)
    lanes = []
    for norm in LANES:
        model = build_lenet(norm).to(dev)
        opt = make_optimizer(model, 0.9)
        step = GraphedStep(model, opt, 0.9, 128, name=f"bare {norm}") if graphed else None
        lanes.append((model, opt, step))
    warm = list(batches(x, y, 128, shuffle=True, seed=0, epoch=0))[:10]
    for X, Y in warm:
        for model, opt, step in lanes:
            step(X, Y) if step else train_step(model, opt, X, Y)
    epoch = list(batches(x, y, 128, shuffle=True, seed=0, epoch=1))[:steps]
    sync(dev)
    t = time.perf_counter()
    for X, Y in epoch:
        for model, opt, step in lanes:
            step(X, Y) if step else train_step(model, opt, X, Y)
    sync(dev)
    return time.perf_counter() - t


def engine_epoch(data, dev, graphs, **overrides):
    """Seconds of training for one epoch of both lanes at the chapter's settings (start to finished)."""
    os.environ["BNVIZ_CUDA_GRAPHS"] = "1" if graphs else "0"
    settings = Settings(device=str(dev), epochs=1, **overrides)  # probes every 20 steps, validation every 100
    with Experiment(data, settings, [LaneSpec(n) for n in LANES], shared_cpu=False, name="gpu-speed") as exp:
        sync(dev)
        t = time.perf_counter()
        exp.start()
        assert exp.wait(600), "the epoch did not finish in 10 minutes"
        sync(dev)
        elapsed = time.perf_counter() - t
        snap = exp.snapshot()
        graphed = [bool(lane.stepper.graphed) for lane in exp.lanes]
    accs = [float(lane.tables["epochs"]["val_acc"][-1]) for lane in snap.lanes]
    return elapsed, graphed, accs


def cli_wall(dev, epochs, graphs):
    env = dict(os.environ, BNVIZ_CUDA_GRAPHS="1" if graphs else "0")
    with tempfile.TemporaryDirectory() as out:
        t = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "bnviz", "train", "--epochs", str(epochs), "--device", dev.type, "--out", out],
            env=env,
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        wall = time.perf_counter() - t
        if done.returncode != 0 or not (Path(out) / "summary.json").exists():
            raise RuntimeError(f"the CLI failed ({done.returncode}): {done.stderr[-2000:]}")
        summary = json.loads((Path(out) / "summary.json").read_text())
    return wall, summary


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--steps", type=int, default=468, help="steps of the bare loops (468: one epoch at 128)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cli-epochs", type=int, default=10, help="0: skip the CLI")
    p.add_argument("--skip-engine", action="store_true")
    p.add_argument("--cli-eager", action="store_true", help="also time the CLI with graphs off (slow)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    dev = devices.resolve_device(args.device)
    data = load_fashion_mnist()
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or platform.machine()
    out = dict(
        device=str(dev), name=name, torch=torch.__version__, date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    )
    print(f"# {name} ({dev}), torch {torch.__version__}, {out['date']}")

    eager = min(bare_epoch(data, dev, args.steps, graphed=False) for _ in range(args.repeats))
    graphed = min(bare_epoch(data, dev, args.steps, graphed=True) for _ in range(args.repeats))
    out["bare"] = dict(steps=args.steps, eager_s=eager, graphed_s=graphed)
    print(
        f"bare loop, {args.steps} steps of both lanes: eager {eager:.3f} s, graphed {graphed:.3f} s "
        f"({eager / graphed:.1f}x)"
    )

    if not args.skip_engine:
        rows = {}
        for graphs in (True, False):
            runs = [engine_epoch(data, dev, graphs) for _ in range(args.repeats)]
            best = min(runs, key=lambda r: r[0])
            rows["graphed" if graphs else "eager"] = dict(seconds=best[0], lanes_graphed=best[1], test_acc=best[2])
            print(
                f"engine, one chapter epoch of both lanes, graphs {'on ' if graphs else 'off'}: {best[0]:.3f} s "
                f"(lanes graphed: {best[1]}; test accuracy {', '.join(f'{a:.3f}' for a in best[2])})"
            )
        out["engine"] = rows
        # where the engine's time goes beyond the bare loop: the same epoch without probes (but step 0's), validation
        # (but the full test set at the epoch's end), or both
        never = 10**9
        for label, overrides in (
            ("no probes", dict(probe_every=never)),
            ("no validation", dict(val_every=never)),
            ("neither", dict(probe_every=never, val_every=never)),
        ):
            seconds = min(engine_epoch(data, dev, True, **overrides)[0] for _ in range(args.repeats))
            rows[label] = dict(seconds=seconds)
            print(f"engine, graphs on, {label}: {seconds:.3f} s")
        e = rows["graphed"]["seconds"]
        print(
            f"engine (graphs on) / bare graphed loop: {e / graphed:.2f}x   target: at most 0.8 s on an H100 "
            f"({'met' if e <= 0.8 else 'missed'}) and within 2x of the bare graphed loop"
        )

    if args.cli_epochs:
        out["cli"] = {}
        for graphs in (True, False) if args.cli_eager else (True,):
            wall, summary = cli_wall(dev, args.cli_epochs, graphs)
            key = "graphed" if graphs else "eager"
            out["cli"][key] = dict(wall_s=wall, epochs=args.cli_epochs)
            accs = [round(v["test_acc"], 3) for v in summary["variants"] if v["test_acc"] is not None]
            print(
                f"CLI, {args.cli_epochs} epochs of both lanes, graphs {'on ' if graphs else 'off'}: {wall:.1f} s "
                f"wall, command to summary.json (final test accuracy: {accs})"
            )
        print(f"target: at most 15 s on an H100 ({'met' if out['cli']['graphed']['wall_s'] <= 15 else 'missed'})")
    os.environ.pop("BNVIZ_CUDA_GRAPHS", None)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
