"""What the readable backward pass costs against the fused one it replaced, on the CPU, as ratios.

    python bench/bn_backward_cost.py [--repeats 15] [--threads 1] [--clock cpu|wall] [--json PATH]

"readable": the default ``backward="paper"`` as it trains now: ``normalize`` (the formula) forward and
``paper_backward`` (the paper's six equations, one line each) backward, ``bnviz/norms/``.
"fused": the path the models trained with before (commit 3d026d8), kept here only to be measured: x_hat made
in the buffer of x - mean, ``addcmul``, dvar read from dgamma, dx added up in place.

Two measurements, both variants in the same process, timed alternately (the order flips every repeat) so
that the machine's drift hits both alike; each repeat gives a ratio readable / fused, and the medians are
reported, never absolute times (on a shared machine they move 3-6x). The clock is this process's CPU time by
default (``--clock cpu``: time spent waiting for a core that other processes hold is not counted; with one
thread it is the work itself), or the wall clock (``--clock wall``) on a machine of one's own:
- the layer alone: a training-mode forward + backward at bn1's shape (128, 6, 24, 24) and bn3's (128, 120);
- a whole training step of the scratch LeNet (forward, loss, backward, SGD) on a batch of 128 random images.
"""

import argparse
import json
import platform
import statistics
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from torch.autograd.function import once_differentiable

import bnviz.norms.batchnorm as batchnorm
from bnviz.norms.batchnorm import BatchNorm
from bnviz.step.models import build_lenet
from bnviz.step.training import make_optimizer, train_step


class FusedBatchNorm(torch.autograd.Function):
    """The fused path as it was (bnviz/norms/batchnorm_backward.py at 3d026d8), for comparison only."""

    @staticmethod
    def forward(ctx, X, gamma, beta, eps, dims):
        mean = X.mean(dim=dims, keepdim=True)
        X_centered = X - mean
        var = (X_centered * X_centered).mean(dim=dims, keepdim=True)
        std = torch.sqrt(var + eps)
        X_hat = X_centered.div_(std)
        Y = torch.addcmul(beta, gamma, X_hat)
        ctx.save_for_backward(X_hat, gamma, std)
        ctx.dims, ctx.m = dims, X.numel() // X.shape[1]
        ctx.mark_non_differentiable(mean, var)
        return Y, mean, var

    @staticmethod
    @once_differentiable
    def backward(ctx, dY, _dmean, _dvar):
        X_hat, gamma, std = ctx.saved_tensors
        dims, m = ctx.dims, ctx.m
        dbeta = dY.sum(dim=dims, keepdim=True)
        dgamma = (dY * X_hat).sum(dim=dims, keepdim=True)
        dvar = gamma * std * dgamma * -0.5 / std**3
        dmean = gamma * dbeta * -1 / std
        dx = (gamma / std) * dY
        dx.addcmul_(X_hat, dvar * 2 * std / m)
        dx += dmean / m
        return dx, dgamma, dbeta, None, None


@contextmanager
def variant(name):
    """Train through the readable path (as shipped) or the fused one (swapped in where batch_norm looks)."""
    shipped = batchnorm.PaperBatchNorm
    batchnorm.PaperBatchNorm = FusedBatchNorm if name == "fused" else shipped
    try:
        yield
    finally:
        batchnorm.PaperBatchNorm = shipped


def layer_work(shape):
    layer = BatchNorm(shape[1], len(shape))
    X = torch.randn(shape).requires_grad_()
    dY = torch.randn(shape)

    def run():
        X.grad = None
        layer(X).backward(dY)

    return run


def step_work():
    model = build_lenet("scratch", seed=0)
    optimizer = make_optimizer(model, 0.1)
    g = torch.Generator().manual_seed(0)
    X, y = torch.rand(128, 1, 28, 28, generator=g), torch.randint(0, 10, (128,), generator=g)
    return lambda: train_step(model, optimizer, X, y)


CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}
clock = CLOCKS["cpu"]


def timed(run, calls):
    run()  # warm: the allocator, the first call's set-up
    t = clock()
    for _ in range(calls):
        run()
    return (clock() - t) / calls


def ratios(make_work, calls, repeats):
    """Per repeat: time(readable) / time(fused), both timed in the same repeat, the order flipped each time."""
    works = {}
    for name in ("readable", "fused"):
        with variant(name):
            works[name] = make_work()
            timed(works[name], 3)
    out = []
    for r in range(repeats):
        order = ("readable", "fused") if r % 2 == 0 else ("fused", "readable")
        seconds = {}
        for name in order:
            with variant(name):
                seconds[name] = timed(works[name], calls)
        out.append(seconds["readable"] / seconds["fused"])
    return out


def check_same_gradients():
    """Both paths give the same gradient (float64), so the ratios compare like with like."""
    X = torch.randn(16, 6, 5, 5, dtype=torch.float64).requires_grad_()
    dY = torch.randn(16, 6, 5, 5, dtype=torch.float64)
    grads = []
    for name in ("readable", "fused"):
        with variant(name):
            layer = BatchNorm(6, 4).double()
            X.grad = None
            layer(X).backward(dY)
            grads.append(X.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-10, atol=1e-12)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1, help="torch's CPU threads (0: torch's own choice)")
    parser.add_argument("--clock", choices=tuple(CLOCKS), default="cpu")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.threads < 0:
        parser.error("--threads must be 0 (torch's choice) or more")
    if args.threads:
        torch.set_num_threads(args.threads)
    global clock
    clock = CLOCKS[args.clock]
    check_same_gradients()
    runs = {
        "layer (128, 6, 24, 24)": ratios(lambda: layer_work((128, 6, 24, 24)), 20, args.repeats),
        "layer (128, 120)": ratios(lambda: layer_work((128, 120)), 100, args.repeats),
        "LeNet training step": ratios(step_work, 8, args.repeats),
    }
    result = {
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "repeats": args.repeats,
        "clock": args.clock,
        "ratio readable / fused": {k: {"median": statistics.median(v), "all": v} for k, v in runs.items()},
    }
    for k, v in runs.items():
        print(f"{k:>24}: readable / fused = {statistics.median(v):.2f} (median of {len(v)}; {min(v):.2f}-{max(v):.2f})")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
