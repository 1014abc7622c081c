"""The batch conditions where BN breaks, measured on the real Fashion-MNIST (issue 12, section 2).

    .venv/bin/python bench/norm_conditions.py                 # the full bench (a few minutes on 2 cores)
    .venv/bin/python bench/norm_conditions.py --quick         # half the images and steps
    .venv/bin/python bench/norm_conditions.py --json out.json --only small,skewed

Four measurements, every lane with the same seed (the same initial weights) and the same batches:

(a) small batches: BN (scratch) vs GroupNorm vs LayerNorm vs BN renorm, and none as the reference, at batch
    sizes 2, 4, 8, 32 and 128, each trained on the same number of images (one pass over the first
    ``--images`` training images) with the linear scaling rule, lr = 0.1 * batch / 128 (0.1 at 128, the
    chapter's rate; 0.0016 at 2), so that every batch size makes about the same progress per image.
(b) skewed batches: each training batch drawn from k of the 10 classes (k = 10, 5, 2, 1; bnviz/data/sampling.py)
    for BN vs BN renorm vs GroupNorm, at batch 32, lr 0.025, for ``--skew-steps`` steps over all 60,000
    images: long enough for Batch Renorm's r_max/d_max warm-up (plain BN until step 500, the full limits at
    2,500; bnviz/norms/batch_renorm.py) to act.
(c) PreciseBN: for every lane of (a) and (b) with running statistics, the eval-mode accuracy before and after
    recomputing them (bnviz/step/precise_bn.py, 6,400 training images in i.i.d. batches of the training size, as
    the dashboard's study), against the train-mode accuracy.
(d) noisy BN vs BN vs none: the (b) set-up at k = 10, the same steps.

Each lane reports the validation accuracy in eval mode (running statistics: what a deployed network does) and
in train mode (each validation batch of the training size normalised by its own statistics), over the first
``--val`` test images. ReLU by default: without normalisation a ReLU LeNet learns too, so "none" is a working
reference (a sigmoid LeNet without BN sits at chance for the first epochs); --activation sigmoid for the
chapter's network. Training runs on one CPU thread (tiny tensors; two threads crawl when the cores are shared).

The functions (``train``, ``accuracies``, ``precise``) are what tests/test_norm_directions.py runs at a smaller
scale, so the tests and this bench measure the same thing.
"""

import argparse
import itertools
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bnviz.data.fashion_mnist import endless_batches, load_fashion_mnist  # noqa: E402
from bnviz.step.models import build_lenet  # noqa: E402
from bnviz.step.precise_bn import layers_with_statistics, recompute_statistics  # noqa: E402
from bnviz.step.training import evaluate, evaluate_train_mode, make_optimizer, train_step  # noqa: E402

SMALL_SIZES = (2, 4, 8, 32, 128)
SMALL_NORMS = ("none", "scratch", "groupnorm", "layernorm", "renorm")
SKEW_KS = (10, 5, 2, 1)
SKEW_NORMS = ("scratch", "renorm", "groupnorm")
NOISE_NORMS = ("none", "scratch", "noisy")
SKEW_BATCH = 32
BASE_LR, BASE_BATCH = 0.1, 128
PRECISE_IMAGES = 6_400


def linear_lr(batch_size):
    """The linear scaling rule (Goyal et al. 2017) from the chapter's 0.1 at batch 128."""
    return BASE_LR * batch_size / BASE_BATCH


def stream(data, batch_size, steps, *, classes_per_batch=10, train_size=None, seed=0):
    """``steps`` training batches: epochs of ``data.batches`` (seeded by (seed, epoch)), as many as it takes."""
    n = train_size or data.train_images.shape[0]
    x, y = data.train_images[:n], data.train_labels[:n]
    return itertools.islice(
        endless_batches(x, y, batch_size, seed=seed, epoch=0, classes_per_batch=classes_per_batch), steps
    )


def train(data, norm, *, batch_size, lr, steps, activation="sigmoid", classes_per_batch=10, train_size=None, seed=0):
    """A LeNet with ``norm`` trained for ``steps`` SGD steps; returns (model, last-50-step mean loss)."""
    torch.manual_seed(seed)
    model = build_lenet(norm, activation, seed=seed)
    opt = make_optimizer(model, lr)
    losses = []
    for X, Y in stream(data, batch_size, steps, classes_per_batch=classes_per_batch, train_size=train_size, seed=seed):
        loss, _ = train_step(model, opt, X, Y)
        losses.append(loss.item() / X.shape[0])
    tail = losses[-50:]
    return model, sum(tail) / max(len(tail), 1)


def accuracies(model, data, batch_size, val_size):
    """{'eval': accuracy with running statistics, 'train': with each batch's own} on the first val_size test
    images (the same in both modes for a network without batch statistics)."""
    x, y = data.test_images[:val_size], data.test_labels[:val_size]
    out = {"eval": evaluate(model, x, y)[1]}
    out["train"] = evaluate_train_mode(model, x, y, batch_size)[1] if layers_with_statistics(model) else out["eval"]
    return out


def precise(model, data, batch_size, val_size, *, train_size=None, images=PRECISE_IMAGES, seed=0):
    """Eval-mode accuracy after PreciseBN over ``images`` training images in batches of ``batch_size`` (the model
    is changed in place); None for a model without running statistics."""
    if not layers_with_statistics(model):
        return None
    n = train_size or data.train_images.shape[0]
    recompute_statistics(
        model,
        data.train_images[:n],
        data.train_labels[:n],
        batch_size,
        num_batches=max(images // batch_size, 1),
        seed=seed,
    )
    return accuracies(model, data, batch_size, val_size)["eval"]


def lane(data, norm, *, batch_size, lr, steps, val_size, activation, classes_per_batch=10, train_size=None, seed=0):
    """Train one lane and measure it: eval/train-mode accuracy, then the eval-mode accuracy after PreciseBN."""
    t = time.perf_counter()
    model, loss = train(
        data,
        norm,
        batch_size=batch_size,
        lr=lr,
        steps=steps,
        activation=activation,
        classes_per_batch=classes_per_batch,
        train_size=train_size,
        seed=seed,
    )
    acc = accuracies(model, data, batch_size, val_size)
    after = precise(model, data, batch_size, val_size, train_size=train_size, seed=seed)
    row = {
        "norm": norm,
        "batch_size": batch_size,
        "classes_per_batch": classes_per_batch,
        "lr": lr,
        "steps": steps,
        "images": steps * batch_size,
        "train_loss": round(loss, 4),
        "eval_acc": round(acc["eval"], 4),
        "train_mode_acc": round(acc["train"], 4),
        "precise_eval_acc": None if after is None else round(after, 4),
        "seconds": round(time.perf_counter() - t, 1),
    }
    print(
        f"  {norm:9s} B={batch_size:3d} k={classes_per_batch:2d} lr={lr:.4g} steps={steps:5d}  "
        f"eval {row['eval_acc']:.3f}  train-mode {row['train_mode_acc']:.3f}  "
        f"precise {'-' if after is None else format(after, '.3f')}  loss {loss:.3f}  ({row['seconds']} s)",
        flush=True,
    )
    return row


def machine():
    import subprocess

    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor()
    return {
        "uname": " ".join(platform.uname()),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "load": open("/proc/loadavg").read().split()[:3] if Path("/proc/loadavg").exists() else None,
        "git": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip(),
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="half the images and steps")
    p.add_argument("--images", type=int, default=6_400, help="training images per lane in (a) (default 6,400)")
    p.add_argument("--skew-steps", type=int, default=2_000, help="steps per lane in (b) and (d) (default 2,000)")
    p.add_argument("--val", type=int, default=2_000, help="test images for validation (default 2,000)")
    p.add_argument("--activation", default="relu", choices=("sigmoid", "relu"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", default="small,skewed,noise", help="comma-separated parts: small, skewed, noise")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    args = p.parse_args(argv)
    if args.quick:
        args.images, args.skew_steps = args.images // 2, args.skew_steps // 2
    parts = set(args.only.split(","))

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = load_fashion_mnist()
        started = time.perf_counter()
        out = {
            "machine": machine(),
            "settings": {
                "activation": args.activation,
                "seed": args.seed,
                "val_images": args.val,
                "small": {"images": args.images, "sizes": SMALL_SIZES, "lr": "0.1 * batch / 128"},
                "skewed": {"batch_size": SKEW_BATCH, "lr": linear_lr(SKEW_BATCH), "steps": args.skew_steps},
                "precise_images": PRECISE_IMAGES,
            },
        }
        common = dict(val_size=args.val, activation=args.activation, seed=args.seed)
        if "small" in parts:
            print(f"(a) small batches: {args.images:,} images per lane, lr = 0.1 * B / 128, {args.activation}")
            out["small"] = [
                lane(
                    data, norm, batch_size=b, lr=linear_lr(b), steps=args.images // b, train_size=args.images, **common
                )
                for b in SMALL_SIZES
                for norm in SMALL_NORMS
            ]
        skew = dict(batch_size=SKEW_BATCH, lr=linear_lr(SKEW_BATCH), steps=args.skew_steps, **common)
        if "skewed" in parts:
            print(f"(b) skewed batches: B={SKEW_BATCH}, {args.skew_steps} steps, k classes per batch")
            out["skewed"] = [lane(data, norm, classes_per_batch=k, **skew) for k in SKEW_KS for norm in SKEW_NORMS]
        if "noise" in parts:
            print(f"(d) noisy BN: B={SKEW_BATCH}, {args.skew_steps} steps, i.i.d. batches")
            reuse = {r["norm"]: r for r in out.get("skewed", []) if r["classes_per_batch"] == 10}
            out["noise"] = [reuse.get(norm) or lane(data, norm, **skew) for norm in NOISE_NORMS]
        out["seconds"] = round(time.perf_counter() - started, 1)
        print(f"total {out['seconds']} s")
        if args.json:
            args.json.write_text(json.dumps(out, indent=1) + "\n")
            print(f"wrote {args.json}")
    finally:
        torch.set_num_threads(threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
