"""Command line: ``python -m bnviz train ...`` (headless training) and ``python -m bnviz data``."""
import argparse
import csv
import json
import sys
import time
from pathlib import Path

import torch

from . import device as devices
from .data import DataError, batches, load_fashion_mnist, locate, num_batches
from .models import NORMS, build_lenet
from .training import evaluate, make_optimizer, train_step

COLUMNS = ("variant", "epoch", "step", "train_loss", "train_acc", "val_loss", "val_acc", "images_per_s", "seconds")


def parse_norms(text):
    norms = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in norms if n not in NORMS]
    if not norms or bad or len(set(norms)) != len(norms):
        raise argparse.ArgumentTypeError(f"--norm takes distinct names from {', '.join(NORMS)}, comma-separated "
                                         f"(got {text!r})")
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
    devices.set_threads(shared=False)
    device = devices.resolve_device(args.device)
    data = load_fashion_mnist().to(device)
    train_x, train_y = data.train_images, data.train_labels
    if args.train_size:
        train_x, train_y = train_x[:args.train_size], train_y[:args.train_size]
    models = {n: build_lenet(n, args.activation, seed=args.seed).to(device) for n in args.norm}
    opts = {n: make_optimizer(m, args.lr) for n, m in models.items()}
    print(f"bnviz: training {', '.join(args.norm)} on {devices.describe(device)}, {train_x.shape[0]:,} images, "
          f"batch {args.batch_size}, lr {args.lr}, {args.epochs} epoch(s), seed {args.seed}", file=sys.stderr)
    rows, step = [], 0
    total_steps = num_batches(train_x.shape[0], args.batch_size)
    for epoch in range(1, args.epochs + 1):
        sums = {n: [torch.zeros((), device=device), torch.zeros((), dtype=torch.long, device=device), 0.0]
                for n in models}
        seen = 0
        for i, (X, y) in enumerate(batches(train_x, train_y, args.batch_size, shuffle=True, seed=args.seed,
                                           epoch=epoch), 1):
            for n, m in models.items():  # the variants in lockstep, on the same batch
                t = time.perf_counter()
                loss, correct = train_step(m, opts[n], X, y)
                sums[n][0] += loss
                sums[n][1] += correct
                if device.type == "cuda":
                    torch.cuda.synchronize()
                sums[n][2] += time.perf_counter() - t
            seen += X.shape[0]
            step += 1
            if i % 20 == 0 or i == total_steps:
                progress(i, total_steps, f"epoch {epoch}/{args.epochs}")
        for n, m in models.items():
            val_loss, val_acc = evaluate(m, data.test_images, data.test_labels)
            rows.append(dict(variant=n, epoch=epoch, step=step, train_loss=sums[n][0].item() / seen,
                             train_acc=sums[n][1].item() / seen, val_loss=val_loss, val_acc=val_acc,
                             images_per_s=seen / sums[n][2], seconds=sums[n][2]))
        print_table(rows[-len(models):], header=epoch == 1)
    if args.out:
        write_outputs(Path(args.out), rows, args)
    return rows


def print_table(rows, header):
    if header:
        print(f"{'epoch':>5} {'variant':>8} {'train loss':>10} {'train acc':>9} {'val loss':>8} {'val acc':>7} "
              f"{'images/s':>9}")
    for r in rows:
        print(f"{r['epoch']:>5} {r['variant']:>8} {r['train_loss']:>10.4f} {r['train_acc']:>9.3f} "
              f"{r['val_loss']:>8.4f} {r['val_acc']:>7.3f} {r['images_per_s']:>9,.0f}", flush=True)


def write_outputs(out, rows, args):
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "history.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)
    last = {r["variant"]: r for r in rows}
    summary = {"settings": {k: getattr(args, k) for k in ("norm", "epochs", "lr", "batch_size", "seed",
                                                          "activation", "device")},
               "variants": [dict(norm=n, val_acc=r["val_acc"], val_loss=r["val_loss"], train_loss=r["train_loss"],
                                 train_acc=r["train_acc"], images_per_s=r["images_per_s"]) for n, r in last.items()]}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"bnviz: wrote {out / 'history.csv'} and {out / 'summary.json'}", file=sys.stderr)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bnviz", description="bnviz: see Batch Normalization work.")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train LeNet variants side by side, headless")
    t.add_argument("--norm", type=parse_norms, default=["none", "scratch"],
                   help="comma-separated variants among none, scratch, torch (default: none,scratch)")
    t.add_argument("--epochs", type=positive(int), default=10)
    t.add_argument("--lr", type=positive(float), default=0.1)
    t.add_argument("--batch-size", type=positive(int), default=128)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--activation", choices=("sigmoid", "relu"), default="sigmoid")
    t.add_argument("--train-size", type=positive(int), default=None, help="train on the first N images only")
    t.add_argument("--device", choices=devices.DEVICES, default="auto")
    t.add_argument("--out", default=None, help="folder for history.csv and summary.json")
    sub.add_parser("data", help="find (or fetch) Fashion-MNIST and check it")
    args = p.parse_args(argv)
    try:
        if args.command == "data":
            root = locate()
            d = load_fashion_mnist(root)
            print(f"bnviz: Fashion-MNIST ready in {root} ({d.train_images.shape[0]:,} + {d.test_images.shape[0]:,} images)")
        else:
            train(args)
    except (DataError, devices.DeviceError) as e:
        print(f"bnviz: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nbnviz: interrupted", file=sys.stderr)
        return 130
    return 0
