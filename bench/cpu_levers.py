"""A/B of the CPU levers of issue 13 on a whole BNLeNetScratch training step, each in a fresh process.

    python bench/cpu_levers.py [--rounds 6] [--threads 2] [--norm scratch|chapter|none|torch] [--quick] [LEVER ...]

Levers (default: all); "default" is the baseline, run in every round:
  malloc        glibc's mmap threshold 64 MiB and trim threshold 256 MiB, set in-process (mallopt) before torch
  malloc-env    the same through MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ before the interpreter starts
  channels-last the model and each batch in torch.channels_last
  omp-passive   OMP_WAIT_POLICY=PASSIVE (libgomp's threads sleep at once instead of spinning)
  omp-spin      GOMP_SPINCOUNT=10000 (spin 30x less than libgomp's default before sleeping)
  no-mkldnn     torch.backends.mkldnn.enabled = False (torch's own convolution)
  compile-bn    torch.compile of each BN layer (its compile time is printed as the first step's time)

Every lever runs in its own subprocess (an allocator or OpenMP setting cannot be undone in a process), in an
order reversed every other round so that a burst of outside load hits all alike. Each process trains 10 warm-up
steps, then 6 blocks of 30 steps; its rate is the median block. The report gives each lever's median over the
rounds and its ratio to the baseline's median, and the minor page faults per step (getrusage).
"""

import argparse
import ctypes
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LEVERS = ("malloc", "malloc-env", "channels-last", "omp-passive", "omp-spin", "no-mkldnn", "compile-bn")
ENV = {
    "malloc-env": dict(MALLOC_MMAP_THRESHOLD_=str(64 * 2**20), MALLOC_TRIM_THRESHOLD_=str(256 * 2**20)),
    "omp-passive": dict(OMP_WAIT_POLICY="PASSIVE"),
    "omp-spin": dict(GOMP_SPINCOUNT="10000"),
}


def child(lever, norm, threads, blocks=6, block_steps=30, warmup=10):
    """One process: train with `lever` and print a JSON line with its rate."""
    if lever == "malloc":
        libc = ctypes.CDLL("libc.so.6")
        assert libc.mallopt(-3, 64 * 2**20) and libc.mallopt(-1, 256 * 2**20)  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(REPO / "bench"))
    import torch

    from bnviz.data.fashion_mnist import endless_batches, load_fashion_mnist
    from bnviz.step.models import build_lenet
    from bnviz.step.training import make_optimizer, train_step

    torch.set_num_threads(threads)
    if lever == "no-mkldnn":
        torch.backends.mkldnn.enabled = False
    data = load_fashion_mnist()
    if norm == "chapter":
        import benchmark

        model = benchmark.chapter_model()
    else:
        model = build_lenet(norm, seed=0)
    fmt = torch.channels_last if lever == "channels-last" else torch.contiguous_format
    model = model.to(memory_format=fmt)
    if lever == "compile-bn":
        for layer in model.bn_layers().values():
            layer.compile()
    opt = make_optimizer(model, 0.1)

    def stream(epoch=1):
        for X, y in endless_batches(data.train_images, data.train_labels, 128, seed=0, epoch=epoch):
            yield X.contiguous(memory_format=fmt) if X.dim() == 4 else X, y

    it = stream()
    t0 = time.perf_counter()
    train_step(model, opt, *next(it))
    first_step_s = time.perf_counter() - t0
    for _ in range(warmup):
        train_step(model, opt, *next(it))
    rates = []
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(blocks):
        t = time.perf_counter()
        for _ in range(block_steps):
            train_step(model, opt, *next(it))
        rates.append(block_steps * 128 / (time.perf_counter() - t))
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / (blocks * block_steps)
    rate = statistics.median(rates)
    print(json.dumps(dict(lever=lever, images_per_s=rate, first_step_s=first_step_s, faults=faults)))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("levers", nargs="*", default=list(LEVERS), help=f"any of {', '.join(LEVERS)} (all)")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--norm", default="scratch")
    p.add_argument("--quick", action="store_true", help="1 block of 2 steps per process: a smoke run")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    unknown = set(args.levers) - set(LEVERS)
    if unknown:
        p.error(f"unknown lever(s) {', '.join(sorted(unknown))}: choose among {', '.join(LEVERS)}")
    if args.child:
        sizes = dict(blocks=1, block_steps=2, warmup=1) if args.quick else {}
        return child(args.child, args.norm, args.threads, **sizes)
    modes = ["default", *args.levers]
    runs = {m: [] for m in modes}
    print(f"load average at start {os.getloadavg()}, {args.threads} thread(s), norm {args.norm}", flush=True)
    for r in range(args.rounds):
        for m in modes if r % 2 == 0 else modes[::-1]:
            env = dict(os.environ, **ENV.get(m, {}))
            cmd = [sys.executable, __file__, "--child", m, "--norm", args.norm, "--threads", str(args.threads)]
            cmd += ["--quick"] if args.quick else []
            out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
            runs[m].append(json.loads(out.stdout.strip().splitlines()[-1]))
    base = statistics.median(x["images_per_s"] for x in runs["default"])
    for m, xs in runs.items():
        rate = statistics.median(x["images_per_s"] for x in xs)
        print(
            f"{m:>14}: {rate:8,.0f} images/s  {rate / base:5.2f}x  "
            f"(all {', '.join(format(x['images_per_s'], ',.0f') for x in xs)}; "
            f"first step {statistics.median(x['first_step_s'] for x in xs):.2f} s; "
            f"page faults/step {statistics.median(x['faults'] for x in xs):.0f})"
        )
    print(f"load average at end {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
