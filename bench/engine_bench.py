"""The live engine's speed and the cost of probing, as ratios measured in one run.

    python bench/engine_bench.py [--device auto|cpu|cuda] [--steps 300] [--json PATH]

For the default pair (BN off, BN scratch), trained in lockstep through bnviz.live.engine.Experiment:
- images/s with probes at the default frequency (every 20 steps) against probes switched off;
- images/s of the engine against the bare training loop (train_step on the same batches, no engine);
- images/s of the engine in a child process (ExperimentProcess, as the dashboard runs it) against in this one;
- the cost of a probe: a plain step and a probed step of one lane timed alternately (medians), so that the
  machine's drift hits both alike; the overhead at the default frequency is (probed - plain) / (20 * plain).
"""

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from bnviz.data.fashion_mnist import batches, load_fashion_mnist
from bnviz.live.engine import Experiment
from bnviz.live.experiment_process import ExperimentProcess
from bnviz.live.processes import warm_up
from bnviz.live.snapshot import LaneSpec, Settings
from bnviz.machine import device as devices
from bnviz.step.models import build_lenet
from bnviz.step.training import make_optimizer, train_step


def engine_rate(data, device, steps, probe_every, warmup=20, cls=Experiment):
    """Images/s (all lanes together) over ``steps`` lockstep steps after a warm-up."""
    settings = Settings(device=device, probe_every=probe_every, val_every=10**9, epochs=100)
    exp = cls(data, settings, [LaneSpec("none"), LaneSpec("scratch")], shared_cpu=False)
    try:
        exp.step(warmup)
        exp.wait()
        if exp.device.type == "cuda" and cls is Experiment:
            torch.cuda.synchronize()
        t = time.perf_counter()
        exp.step(steps)
        exp.wait()  # in a child process, the pause at the end of the steps flushed what the GPU had
        if exp.device.type == "cuda" and cls is Experiment:
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - t
    finally:
        exp.stop()
    return 2 * steps * settings.batch_size / elapsed


def bare_rate(data, device, steps, warmup=20):
    dev = devices.resolve_device(device)
    x, y = data.train_images.to(dev), data.train_labels.to(dev)
    models = [build_lenet(n).to(dev) for n in ("none", "scratch")]
    opts = [make_optimizer(m, 0.1) for m in models]
    it = batches(x, y, 128, shuffle=True, seed=0, epoch=1)
    for i, (X, Y) in enumerate(it):
        if i == warmup:
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
        if i == warmup + steps:
            break
        for m, o in zip(models, opts):
            loss, correct = train_step(m, o, X, Y)
            loss.item(), correct.item()  # as the engine does: one sync per step
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return 2 * steps * 128 / (time.perf_counter() - t)


def probe_cost(data, device, pairs=200):
    """Seconds of a plain step and of a probed step of one lane, alternated so drift hits both alike."""
    import dataclasses

    settings = Settings(device=device, probe_every=10**9, val_every=10**9, epochs=100)
    exp = Experiment(data, settings, [LaneSpec("scratch")], shared_cpu=False)
    lane = exp.lanes[0]  # driven from this thread: the worker stays idle
    plain = dataclasses.replace(settings, probe_every=10**9)
    probed = dataclasses.replace(settings, probe_every=1)
    times = {"plain": [], "probed": []}
    try:
        for i in range(pairs + 10):
            for kind, s in (("plain", plain), ("probed", probed)):
                lane.settings = s
                if exp.device.type == "cuda":
                    torch.cuda.synchronize()
                t = time.perf_counter()
                lane.train_one_step(exp._lock)
                if exp.device.type == "cuda":
                    torch.cuda.synchronize()
                if i >= 10:
                    times[kind].append(time.perf_counter() - t)
    finally:
        exp.stop()
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    return med["plain"], med["probed"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--repeats", type=int, default=3, help="alternate the measurements this many times; keep the best")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    devices.set_torch_threads(shared=False)
    data = load_fashion_mnist()
    warm_up()
    best = {"bare": 0.0, "engine_no_probes": 0.0, "engine_probes": 0.0, "engine_process_probes": 0.0}
    for _ in range(args.repeats):  # interleaved, so a busy moment hurts every variant alike
        best["bare"] = max(best["bare"], bare_rate(data, args.device, args.steps))
        best["engine_no_probes"] = max(best["engine_no_probes"], engine_rate(data, args.device, args.steps, 10**9))
        best["engine_probes"] = max(best["engine_probes"], engine_rate(data, args.device, args.steps, 20))
        best["engine_process_probes"] = max(
            best["engine_process_probes"], engine_rate(data, args.device, args.steps, 20, cls=ExperimentProcess)
        )
    plain_s, probed_s = probe_cost(data, args.device)
    dev = devices.resolve_device(args.device)
    result = {
        "step_s": plain_s,
        "probed_step_s": probed_s,
        "probe_overhead_at_20": (probed_s - plain_s) / (20 * plain_s),
        "device": devices.describe(dev),
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "steps": args.steps,
        "images_per_s": best,
        "probe_overhead": 1 - best["engine_probes"] / best["engine_no_probes"],
        "engine_vs_bare": best["engine_no_probes"] / best["bare"],
        "process_vs_engine": best["engine_process_probes"] / best["engine_probes"],
    }
    # the cost of one probe, in steps: (1/r_probe - 1/r_plain) per image * images per 20 steps
    per_step_plain = 2 * 128 / best["engine_no_probes"]
    per_step_probe = 2 * 128 / best["engine_probes"]
    result["probe_cost_in_steps"] = (per_step_probe - per_step_plain) * 20 / per_step_plain
    print(f"device: {result['device']} · torch {result['torch']} · {result['threads']} threads")
    for k, v in best.items():
        print(f"  {k:>18}: {v:9,.0f} images/s (both lanes together)")
    print(
        f"  throughput with probes every 20 steps vs none: {1 - result['probe_overhead']:.1%} "
        f"(noisy on a shared machine); engine/bare = {result['engine_vs_bare']:.2f}; "
        f"in a child process / in this one = {result['process_vs_engine']:.2f}"
    )
    print(
        f"  one lane step {plain_s * 1e3:.2f} ms, a probed step {probed_s * 1e3:.2f} ms (medians of 200 "
        f"alternated pairs): probing every 20 steps costs {result['probe_overhead_at_20']:.1%} of training"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
