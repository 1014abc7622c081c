"""Benchmark bnviz against the chapter's code, every number next to a baseline measured in the same run.

    python bench/benchmark.py [--device auto|cpu|cuda] [--steps 150] [--quick] [--json PATH] [--markdown]
                              [--only layer]

What it measures (all on one device, one process, one run):

1. Training images/s of LeNet with norm none / scratch / torch (seed 0, lr 0.1, batch 128, SGD through
   ``bnviz.step.training.train_step``) fed by OUR pipeline (the whole dataset in memory as uint8 tensors, on the
   device, cut into batches by ``bnviz.data.fashion_mnist.batches``) and by THE CHAPTER'S pipeline
   (``torchvision.datasets.FashionMNIST`` + ``transforms.ToTensor()`` + ``DataLoader(batch_size=128,
   shuffle=True, num_workers=4)``, each batch moved with ``.to(device)``). ``--steps`` timed steps after
   ``--warmup`` untimed ones (which also absorb the DataLoader's worker start-up, reported apart).
   Target: BNLeNetScratch ours >= 3x the chapter's pipeline.
2. Forward + backward of one BN layer in training mode: ours (``bnviz.norms.batchnorm.BatchNorm``) with each
   backward pass (``backward="paper"``, the default the models use, and ``backward="autograd"``),
   ``torch.nn.BatchNorm1d/2d``, the chapter's layer (copied below as ``chapter_batch_norm``) and our layer
   as it was before 2026-11-26 (addcmul/rsqrt, copied below as ``BeforeBatchNorm``), the last two for
   comparison only, on (128, 6, 24, 24), (128, 16, 8, 8) and (128, 120). Target: ours (the default)
   <= 2.5x torch at (128, 6, 24, 24). ``--only layer`` runs this part alone.
3. One epoch of 60,000 images for none + scratch together, interleaved step by step on the same batches
   as ``python -m bnviz train`` does, plus both validations on the 10,000 test images with
   ``bnviz.step.training.evaluate``. Target: <= 9 s.
4. Threads: BNLeNetScratch on our pipeline with ``torch.set_num_threads(1)`` and ``(2)``.

Times are wall-clock (``time.perf_counter``), with ``torch.cuda.synchronize()`` before each clock read
on CUDA. Other processes on the machine slow everything down; the load average at the start is
printed with the results so that a reader can judge.
"""

import argparse
import contextlib
import datetime
import json
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # `python bench/benchmark.py` from anywhere finds the package

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.autograd.function import once_differentiable  # noqa: E402

from bnviz.data.fashion_mnist import DataError, _find_files, batches, endless_batches, load_fashion_mnist, locate  # noqa: E402
from bnviz.machine import device as devices  # noqa: E402
from bnviz.norms.batchnorm import BACKWARDS, BatchNorm  # noqa: E402
from bnviz.step.models import build_lenet  # noqa: E402
from bnviz.step.training import evaluate, make_optimizer, train_step  # noqa: E402

BATCH_SIZE = 128
LR = 0.1
SEED = 0
VARIANTS = ("none", "scratch", "torch")
EPOCH_VARIANTS = ("none", "scratch")  # the CLI's default --norm
LAYER_SHAPES = ((128, 6, 24, 24), (128, 16, 8, 8), (128, 120))
TARGETS = {
    "training_scratch_ours_over_chapter_min": 3.0,
    "layer_128x6x24x24_ours_over_torch_max": 2.5,
    "epoch_seconds_max": 9.0,
}


# ---------------------------------------------------------------------------------------------------
# The chapter's BN layer (Dive into Deep Learning, "Batch Normalization"), copied for comparison only.
# ---------------------------------------------------------------------------------------------------


def chapter_batch_norm(X, gamma, beta, moving_mean, moving_var, eps, momentum):
    # Use is_grad_enabled to determine whether we are in training mode
    if not torch.is_grad_enabled():
        # In prediction mode, use mean and variance obtained by moving average
        X_hat = (X - moving_mean) / torch.sqrt(moving_var + eps)
    else:
        assert len(X.shape) in (2, 4)
        if len(X.shape) == 2:
            # When using a fully connected layer, calculate the mean and
            # variance on the feature dimension
            mean = X.mean(dim=0)
            var = ((X - mean) ** 2).mean(dim=0)
        else:
            # When using a two-dimensional convolutional layer, calculate the
            # mean and variance on the channel dimension (axis=1). Here we
            # need to maintain the shape of X, so that the broadcasting
            # operation can be carried out later
            mean = X.mean(dim=(0, 2, 3), keepdim=True)
            var = ((X - mean) ** 2).mean(dim=(0, 2, 3), keepdim=True)
        # In training mode, the current mean and variance are used
        X_hat = (X - mean) / torch.sqrt(var + eps)
        # Update the mean and variance using moving average
        moving_mean = (1.0 - momentum) * moving_mean + momentum * mean
        moving_var = (1.0 - momentum) * moving_var + momentum * var
    Y = gamma * X_hat + beta  # Scale and shift
    return Y, moving_mean.data, moving_var.data


class ChapterBatchNorm(nn.Module):
    """The chapter's ``BatchNorm`` module, as printed there."""

    def __init__(self, num_features, num_dims):
        super().__init__()
        shape = (1, num_features) if num_dims == 2 else (1, num_features, 1, 1)
        self.gamma = nn.Parameter(torch.ones(shape))
        self.beta = nn.Parameter(torch.zeros(shape))
        self.moving_mean = torch.zeros(shape)
        self.moving_var = torch.ones(shape)

    def forward(self, X):
        if self.moving_mean.device != X.device:
            self.moving_mean = self.moving_mean.to(X.device)
            self.moving_var = self.moving_var.to(X.device)
        Y, self.moving_mean, self.moving_var = chapter_batch_norm(
            X, self.gamma, self.beta, self.moving_mean, self.moving_var, eps=1e-5, momentum=0.1
        )
        return Y


# ---------------------------------------------------------------------------------------------------
# Our layer before 2026-11-26 (fused operators: addcmul, rsqrt, lerp), copied for comparison only.
# ---------------------------------------------------------------------------------------------------


class BeforeTrainingBatchNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, X, gamma, beta, eps, dims):
        mean = X.mean(dim=dims, keepdim=True)
        X_centered = X - mean
        var = (X_centered * X_centered).mean(dim=dims, keepdim=True)
        inv_std = torch.rsqrt(var + eps)
        X_hat = X_centered * inv_std
        Y = torch.addcmul(beta, X_hat, gamma)
        ctx.save_for_backward(X_hat, gamma, inv_std)
        ctx.dims = dims
        ctx.mark_non_differentiable(mean, var)
        return Y, mean, var

    @staticmethod
    @once_differentiable
    def backward(ctx, dY, _, __):
        X_hat, gamma, inv_std = ctx.saved_tensors
        m = X_hat.numel() // X_hat.shape[1]
        dbeta = dY.sum(dim=ctx.dims, keepdim=True)
        dgamma = (dY * X_hat).sum(dim=ctx.dims, keepdim=True)
        dX = torch.addcmul(dY - dbeta / m, X_hat, dgamma / m, value=-1) * (gamma * inv_std)
        return dX, dgamma.reshape(gamma.shape), dbeta.reshape(gamma.shape), None, None


class BeforeBatchNorm(BatchNorm):
    """``bnviz.norms.batchnorm.BatchNorm`` as it was before 2026-11-26, training mode only."""

    def forward(self, X):
        dims = (0,) if X.dim() == 2 else (0, 2, 3)
        m = X.numel() // X.shape[1]
        Y, mean, var = BeforeTrainingBatchNorm.apply(X, self.gamma, self.beta, self.eps, dims)
        with torch.no_grad():
            self.moving_mean.copy_(torch.lerp(self.moving_mean, mean, self.momentum))
            self.moving_var.copy_(torch.lerp(self.moving_var, var * (m / (m - 1)), self.momentum))
        return Y


# ---------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clock(device):
    sync(device)
    return time.perf_counter()


def ratio(a, b):
    return a / b if b else float("nan")


@contextlib.contextmanager
def num_threads(n):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def find_data_root():
    """The torchvision root holding Fashion-MNIST, never downloading: $BNVIZ_DATA, ./data, then <repo>/data
    (for a run started from another folder), then the rest of bnviz's search (Debian's package, which
    bnviz unpacks into ./data). Raises DataError when none holds it."""
    repo_data = REPO / "data"
    if (
        not os.environ.get("BNVIZ_DATA")
        and repo_data.resolve() != Path("data").resolve()
        and not _find_files(Path("data"))
        and _find_files(repo_data)
    ):
        os.environ["BNVIZ_DATA"] = str(repo_data)
        try:
            return locate(download=False)
        finally:
            del os.environ["BNVIZ_DATA"]
    return locate(download=False)


def machine_info(device):
    cpu = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    info = dict(
        cpu=cpu or platform.processor() or platform.machine(),
        cores=os.cpu_count(),
        usable_cores=usable,
        python=platform.python_version(),
        torch=torch.__version__,
        torch_threads=torch.get_num_threads(),
        device=str(device),
        gpu=None,
        load_average_at_start=load,
    )
    try:
        import torchvision

        info["torchvision"] = torchvision.__version__
    except ImportError:
        info["torchvision"] = None
    # Busy: other processes already keep most of the cores running. Then torch's threads and the
    # DataLoader's workers are oversubscribed and every number here can be several times too slow.
    info["busy_at_start"] = bool(load and usable and load[0] >= 0.75 * usable)
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


# ---------------------------------------------------------------------------------------------------
# 1. Training throughput: our pipeline vs the chapter's
# ---------------------------------------------------------------------------------------------------


def our_stream(images, labels, epoch=1):
    """Endless shuffled batches from the in-memory tensors, epoch after epoch."""
    return endless_batches(images, labels, BATCH_SIZE, seed=SEED, epoch=epoch)


def chapter_dataset(root):
    from torchvision import datasets, transforms

    return datasets.FashionMNIST(root=str(root), train=True, transform=transforms.ToTensor(), download=False)


def chapter_stream(dataset, device, workers):
    """Endless batches from the chapter's DataLoader, moved to the device; workers shut down on close()."""
    from torch.utils.data import DataLoader

    with warnings.catch_warnings():  # "suggested max number of worker": 4 workers is the chapter's choice
        warnings.filterwarnings("ignore", message="This DataLoader will create")
        loader = DataLoader(dataset, batch_size=BATCH_SIZE, shuffle=True, num_workers=workers)
    while True:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="This DataLoader will create")
            it = iter(loader)
        try:
            for X, y in it:
                yield X.to(device), y.to(device)
        finally:
            shutdown = getattr(it, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()
            del it


def torch_sgd(model, lr):
    """The chapter's optimiser (d2l's ``configure_optimizers``): torch's own SGD."""
    return torch.optim.SGD(model.parameters(), lr=lr)


def chapter_model(seed=SEED):
    """The chapter's BNLeNetScratch: our LeNet layout with the chapter's own BN layer in the four places."""
    model = build_lenet("scratch", seed=seed)
    for name, layer in model.bn_layers().items():
        setattr(model, name, ChapterBatchNorm(layer.num_features, layer.num_dims))
    return model


def measure_training(norm, stream, steps, warmup, device, model=None, optimizer=make_optimizer):
    """Images/s of `steps` SGD steps of a fresh LeNet after `warmup` untimed ones.

    ``optimizer(model, lr)``: ours (``bnviz.step.training.SGD``) or, for the chapter, ``torch.optim.SGD``.

    data_wait_share is the part of the timed wall-clock spent getting the next batch (in ``next()``);
    on CUDA it is approximate, since kernels run asynchronously.
    """
    model = (model or build_lenet(norm, seed=SEED)).to(device)
    opt = optimizer(model, LR)
    first_batch_s = None
    t0 = clock(device)
    for i in range(warmup):
        X, y = next(stream)
        if i == 0:
            first_batch_s = clock(device) - t0  # includes the DataLoader's worker start-up
        train_step(model, opt, X, y)
    images, wait = 0, 0.0
    t0 = clock(device)
    for _ in range(steps):
        t = time.perf_counter()
        X, y = next(stream)
        wait += time.perf_counter() - t
        train_step(model, opt, X, y)
        images += X.shape[0]
    seconds = clock(device) - t0
    return dict(
        images_per_s=images / seconds,
        seconds=seconds,
        steps=steps,
        images=images,
        data_wait_share=wait / seconds,
        first_batch_s=first_batch_s,
    )


def best_of(runs):
    """The fastest of repeated measurements (the one least slowed by other processes), all rates kept."""
    best = dict(max(runs, key=lambda r: r["images_per_s"]))
    best["all_images_per_s"] = [r["images_per_s"] for r in runs]
    return best


def bench_training(data, root, device, steps, warmup, workers, repeats, log):
    dataset = chapter_dataset(root)
    runs = {norm: {"ours": [], "chapter": []} for norm in VARIANTS}
    runs["scratch"]["chapter_full"] = []
    for _ in range(repeats):  # repeats interleaved, so that a burst of outside load hits both paths alike
        for norm in VARIANTS:
            stream = our_stream(data.train_images, data.train_labels)
            runs[norm]["ours"].append(measure_training(norm, stream, steps, warmup, device))
            stream.close()
            stream = chapter_stream(dataset, device, workers)
            try:
                runs[norm]["chapter"].append(measure_training(norm, stream, steps, warmup, device, optimizer=torch_sgd))
            finally:
                stream.close()  # stop the workers before the next measurement
            if norm == "scratch":  # the chapter's whole pipeline: its DataLoader and its layer
                stream = chapter_stream(dataset, device, workers)
                try:
                    runs[norm]["chapter_full"].append(
                        measure_training(
                            norm, stream, steps, warmup, device, model=chapter_model(), optimizer=torch_sgd
                        )
                    )
                finally:
                    stream.close()
    results = {}
    for norm in VARIANTS:
        row = {path: best_of(r) for path, r in runs[norm].items()}
        row["ours_over_chapter"] = ratio(row["ours"]["images_per_s"], row["chapter"]["images_per_s"])
        if "chapter_full" in row:
            row["ours_over_chapter_full"] = ratio(row["ours"]["images_per_s"], row["chapter_full"]["images_per_s"])
            log(
                f"  {'scratch':>8}: the chapter's whole pipeline (its DataLoader and its BN layer) "
                f"{row['chapter_full']['images_per_s']:>9,.0f} images/s   "
                f"ours / it {row['ours_over_chapter_full']:.2f}x"
            )
        results[norm] = row
        log(
            f"  {norm:>8}: ours {row['ours']['images_per_s']:>9,.0f} images/s   chapter "
            f"{row['chapter']['images_per_s']:>9,.0f} images/s   ours/chapter {row['ours_over_chapter']:.2f}x   "
            f"(waiting for data: ours {row['ours']['data_wait_share']:.0%}, "
            f"chapter {row['chapter']['data_wait_share']:.0%})"
        )
    return results


# ---------------------------------------------------------------------------------------------------
# 2. One BN layer, forward + backward
# ---------------------------------------------------------------------------------------------------


DEFAULT_BACKWARD = BatchNorm(1, 2).backward  # the one the models train with
LAYER_IMPLS = (*BACKWARDS, "torch", "chapter", "before")  # our layer with each backward pass, then the baselines


def layer_impls(shape, device):
    c, dims = shape[1], len(shape)
    torch_cls = nn.BatchNorm2d if dims == 4 else nn.BatchNorm1d
    impls = {backward: BatchNorm(c, dims, backward=backward).to(device) for backward in BACKWARDS}
    impls.update(
        torch=torch_cls(c).to(device),
        chapter=ChapterBatchNorm(c, dims).to(device),
        before=BeforeBatchNorm(c, dims).to(device),
    )
    assert tuple(impls) == LAYER_IMPLS
    return impls


def fwd_bwd(layer, X, G):
    X.grad = None
    for p in layer.parameters():
        p.grad = None
    layer(X).backward(G)


def bench_layers(device, rounds, target_block_s, log):
    results = {}
    g = torch.Generator().manual_seed(SEED)
    for shape in LAYER_SHAPES:
        X = torch.randn(shape, generator=g).to(device).requires_grad_(True)
        G = torch.randn(shape, generator=g).to(device)
        impls = layer_impls(shape, device)
        for layer in impls.values():
            layer.train()
        # All agree on the output (a sanity check that we time the same computation).
        outs = {k: m(X).detach() for k, m in impls.items()}
        agree = all(torch.allclose(outs["torch"], o, atol=1e-4, rtol=1e-4) for o in outs.values())
        # Calibrate the block length so that one block lasts about target_block_s.
        iters = {}
        for name, layer in impls.items():
            for _ in range(3):
                fwd_bwd(layer, X, G)
            t0 = clock(device)
            for _ in range(5):
                fwd_bwd(layer, X, G)
            per = (clock(device) - t0) / 5
            iters[name] = max(3, int(target_block_s / max(per, 1e-7)))
        times = {k: [] for k in impls}
        for _ in range(rounds):  # round robin: background load hits all alike
            for name, layer in impls.items():
                t0 = clock(device)
                for _ in range(iters[name]):
                    fwd_bwd(layer, X, G)
                times[name].append((clock(device) - t0) / iters[name])
        us = {k: min(v) * 1e6 for k, v in times.items()}  # best block: least outside load
        median_us = {k: statistics.median(v) * 1e6 for k, v in times.items()}
        key = "x".join(map(str, shape))
        results[key] = r = dict(
            shape=list(shape),
            torch_layer=("BatchNorm2d" if len(shape) == 4 else "BatchNorm1d"),
            ours_backward=DEFAULT_BACKWARD,  # "ours" is our layer as the models use it
            ours_us=us[DEFAULT_BACKWARD],
            **{f"{k}_us": v for k, v in us.items()},
            median_us=median_us,
            iters_per_block=iters,
            ours_over_torch=ratio(us[DEFAULT_BACKWARD], us["torch"]),
            **{f"{k}_over_torch": ratio(v, us["torch"]) for k, v in us.items() if k != "torch"},
            ours_over_chapter=ratio(us[DEFAULT_BACKWARD], us["chapter"]),
            ours_over_before=ratio(us[DEFAULT_BACKWARD], us["before"]),
            outputs_agree=bool(agree),
            rounds=rounds,
        )
        log(
            f"  {str(tuple(shape)):>16}: torch {r['torch_us']:>8.1f} us, then us and x torch:"
            + "".join(f"   {k} {r[k + '_us']:.1f} {r[k + '_over_torch']:.2f}x" for k in LAYER_IMPLS if k != "torch")
            + f"   (ours = {DEFAULT_BACKWARD}; ours/before {r['ours_over_before']:.2f}x)"
        )
    return results


# ---------------------------------------------------------------------------------------------------
# 3. One epoch, none + scratch interleaved, plus validation
# ---------------------------------------------------------------------------------------------------


def bench_epoch(data, device, train_size=None, test_size=None):
    train_x, train_y = data.train_images, data.train_labels
    test_x, test_y = data.test_images, data.test_labels
    if train_size:
        train_x, train_y = train_x[:train_size], train_y[:train_size]
    if test_size:
        test_x, test_y = test_x[:test_size], test_y[:test_size]
    models = {n: build_lenet(n, seed=SEED).to(device) for n in EPOCH_VARIANTS}
    opts = {n: make_optimizer(m, LR) for n, m in models.items()}
    sums = {n: [torch.zeros((), device=device), torch.zeros((), dtype=torch.long, device=device)] for n in models}
    seen = steps = 0
    t0 = clock(device)
    for X, y in batches(train_x, train_y, BATCH_SIZE, shuffle=True, seed=SEED, epoch=1):
        for n, m in models.items():  # lockstep on the same batch, as `python -m bnviz train`
            loss, correct = train_step(m, opts[n], X, y)
            sums[n][0] += loss
            sums[n][1] += correct
        seen += X.shape[0]
        steps += 1
    t1 = clock(device)
    val = {n: evaluate(m, test_x, test_y) for n, m in models.items()}
    t2 = clock(device)
    return dict(
        variants=list(EPOCH_VARIANTS),
        train_images=seen,
        test_images=int(test_x.shape[0]),
        steps=steps,
        train_s=t1 - t0,
        validation_s=t2 - t1,
        total_s=t2 - t0,
        train_acc={n: s[1].item() / seen for n, s in sums.items()},
        val_acc={n: v[1] for n, v in val.items()},
        val_loss={n: v[0] for n, v in val.items()},
    )


# ---------------------------------------------------------------------------------------------------
# 4. Thread count
# ---------------------------------------------------------------------------------------------------


def bench_threads(data, device, steps, warmup, repeats):
    runs = {"1": [], "2": []}
    for _ in range(repeats):
        for n in runs:
            with num_threads(int(n)):  # restored afterwards
                stream = our_stream(data.train_images, data.train_labels)
                runs[n].append(measure_training("scratch", stream, steps, warmup, device))
                stream.close()
    best = {n: best_of(r) for n, r in runs.items()}
    return dict(
        variant="scratch",
        pipeline="ours",
        images_per_s={n: b["images_per_s"] for n, b in best.items()},
        all_images_per_s={n: b["all_images_per_s"] for n, b in best.items()},
        two_over_one=ratio(best["2"]["images_per_s"], best["1"]["images_per_s"]),
    )


# ---------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------


def verdicts(results):
    t = results["targets"]
    layer = results["layer"]["128x6x24x24"]["ours_over_torch"]
    quick = results["settings"]["quick"]  # a smoke run's numbers say nothing about the targets
    out = {}
    if "training" in results:  # not with --only layer
        scratch = results["training"]["scratch"]["ours_over_chapter_full"]
        out["training_scratch_ours_over_chapter"] = dict(
            value=scratch,
            target=f">= {t['training_scratch_ours_over_chapter_min']}",
            met=scratch >= t["training_scratch_ours_over_chapter_min"],
        )
    out["layer_128x6x24x24_ours_over_torch"] = dict(
        value=layer,
        target=f"<= {t['layer_128x6x24x24_ours_over_torch_max']}",
        met=layer <= t["layer_128x6x24x24_ours_over_torch_max"],
    )
    if "epoch" in results:
        epoch = results["epoch"]["total_s"]
        full_epoch = results["epoch"]["train_images"] >= 60_000 and results["epoch"]["test_images"] >= 10_000
        out["epoch_seconds"] = dict(
            value=epoch,
            target=f"<= {t['epoch_seconds_max']}",
            met=(epoch <= t["epoch_seconds_max"]) if full_epoch else None,
        )
    if quick:
        for v in out.values():
            v["met"] = None
    return out


def met_text(v):
    return "n/a (--quick)" if v is None else ("met" if v else "MISSED")


def markdown(results):
    m, s = results["machine"], results["settings"]
    v = results["verdicts"]
    lines = [f"## Benchmark, {results['date']} ({m['device']})", ""]
    machine = (
        f"- Machine: {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable), "
        f"torch {m['torch']} with {m['torch_threads']} thread(s), Python {m['python']}"
    )
    if m["gpu"]:
        machine += f", GPU {m['gpu']}"
    lines.append(machine)
    if m["load_average_at_start"]:
        end = m.get("load_average_at_end")
        lines.append(
            f"- Load average (1/5/15 min) at start {' / '.join(map(str, m['load_average_at_start']))}"
            + (f", at end {' / '.join(map(str, end))}" if end else "")
            + " (other processes on the cores slow every number here)"
        )
    if m.get("busy_at_start"):
        lines.append(
            "- **Warning: the machine was busy with other processes when the run started; these numbers "
            "are not representative of this code, rerun on a quiet machine.**"
        )
    lines.append(f"- Command: `{results['command']}`")
    lines.append(
        f"- Settings: batch {BATCH_SIZE}, lr {LR}, seed {SEED}, {s['steps']} timed steps after "
        f"{s['warmup']} warm-up step(s) per measurement, best of {s['repeats']} interleaved measurements; "
        f"BN layer: best of {s['layer_rounds']} round-robin rounds; chapter pipeline: torchvision FashionMNIST + "
        f"ToTensor() + DataLoader(shuffle=True, num_workers={s['workers']})"
        + ("; **--quick (smoke run, numbers not meaningful)**" if s["quick"] else "")
    )
    if "training" in results:  # not with --only layer
        lines += [
            "",
            "### Training throughput (images/s, same model and optimiser, two input pipelines)",
            "",
            "| variant | ours (in-memory + `batches`) | chapter (DataLoader + ToTensor) | ours / chapter | "
            "waiting for data, ours / chapter | chapter first batch (s) |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for norm, r in results["training"].items():
            fb = r["chapter"]["first_batch_s"]
            lines.append(
                f"| {norm} | {r['ours']['images_per_s']:,.0f} | {r['chapter']['images_per_s']:,.0f} | "
                f"{r['ours_over_chapter']:.2f}x | {r['ours']['data_wait_share']:.0%} / "
                f"{r['chapter']['data_wait_share']:.0%} | {'-' if fb is None else f'{fb:.2f}'} |"
            )
        x = v["training_scratch_ours_over_chapter"]
        full = results["training"]["scratch"]["chapter_full"]["images_per_s"]
        lines += [
            "",
            f"The chapter's whole pipeline for BNLeNetScratch (its DataLoader and its own BN layer): "
            f"{full:,.0f} images/s.",
            "",
            f"Target, BNLeNetScratch ours / the chapter's pipeline {x['target']}: {x['value']:.2f}x, "
            f"{met_text(x['met'])}. (With our model on both sides, the data pipeline alone: "
            f"{results['training']['scratch']['ours_over_chapter']:.2f}x.)",
        ]
    names = dict(paper="ours, paper", autograd="ours, autograd", chapter="chapter", before="before (addcmul/rsqrt)")
    names[DEFAULT_BACKWARD] += " (default)"
    others = [k for k in LAYER_IMPLS if k != "torch"]
    lines += [
        "",
        "### One BN layer, training mode, forward + backward (µs, best of the rounds)",
        "",
        "| input | torch | "
        + " | ".join(names[k] for k in others)
        + " | "
        + " | ".join(f"{k} / torch" for k in others)
        + " | outputs agree |",
        "| --- | " + "---: | " * (1 + 2 * len(others)) + "--- |",
    ]
    for r in results["layer"].values():
        lines.append(
            f"| {tuple(r['shape'])} vs {r['torch_layer']} | {r['torch_us']:.1f} | "
            + " | ".join(f"{r[k + '_us']:.1f}" for k in others)
            + " | "
            + " | ".join(f"{r[k + '_over_torch']:.2f}x" for k in others)
            + f" | {'yes' if r['outputs_agree'] else 'NO'} |"
        )
    x = v["layer_128x6x24x24_ours_over_torch"]
    lines += [
        "",
        f"Target, ours ({DEFAULT_BACKWARD}) / torch at (128, 6, 24, 24) {x['target']}: {x['value']:.2f}x, "
        f"{met_text(x['met'])}.",
    ]
    if "epoch" in results:
        e = results["epoch"]
        lines += [
            "",
            f"### One epoch: {' + '.join(e['variants'])} interleaved on the same batches, then validation",
            "",
            "| training images | test images | training (s) | validation (s) | total (s) | val acc |",
            "| ---: | ---: | ---: | ---: | ---: | --- |",
            f"| {e['train_images']:,} | {e['test_images']:,} | {e['train_s']:.2f} | {e['validation_s']:.2f} | "
            f"{e['total_s']:.2f} | {', '.join(f'{n} {a:.3f}' for n, a in e['val_acc'].items())} |",
        ]
        x = v["epoch_seconds"]
        lines += ["", f"Target, total {x['target']} s: {x['value']:.2f} s, {met_text(x['met'])}."]
    if "threads" in results:
        th = results["threads"]
        lines += [
            "",
            "### Threads (scratch, our pipeline)",
            "",
            "| 1 thread (images/s) | 2 threads (images/s) | 2 / 1 |",
            "| ---: | ---: | ---: |",
            f"| {th['images_per_s']['1']:,.0f} | {th['images_per_s']['2']:,.0f} | {th['two_over_one']:.2f}x |",
        ]
    lines.append("")
    return "\n".join(lines)


def parse_args(argv):
    def positive(text):
        value = int(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    p = argparse.ArgumentParser(description="Benchmark bnviz against the chapter's pipeline and BN layer.")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--steps", type=positive, default=None, help="timed training steps per measurement (150)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps before each measurement (10)")
    p.add_argument(
        "--repeats",
        type=positive,
        default=None,
        help="training measurements per variant and pipeline, best kept (3; 1 with --quick)",
    )
    p.add_argument("--workers", type=int, default=4, help="DataLoader workers of the chapter's pipeline (4)")
    p.add_argument("--quick", action="store_true", help="tiny step counts and a slice of an epoch: a smoke run")
    p.add_argument("--json", metavar="PATH", default=None, help="write all results as JSON to PATH")
    p.add_argument("--markdown", action="store_true", help="print a section for docs/PERFORMANCE.md")
    p.add_argument("--only", choices=("layer",), default=None, help="run one part alone: layer (one BN layer)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    threads_before = torch.get_num_threads()
    try:
        return run(args, argv)
    finally:
        torch.set_num_threads(threads_before)  # main() may run inside another process (the smoke test)


def run(args, argv):
    log = lambda text="": print(text, flush=True)  # noqa: E731
    devices.set_torch_threads(shared=False)
    try:
        device = devices.resolve_device(args.device)
        root = find_data_root()
        t0 = time.perf_counter()
        data = load_fashion_mnist(root)
        load_s = time.perf_counter() - t0
    except (DataError, devices.DeviceError) as e:
        print(f"benchmark: {e}", file=sys.stderr)
        return 2
    steps = args.steps or (3 if args.quick else 150)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 10)
    rounds, block_s = (2, 0.005) if args.quick else (25, 0.02)
    repeats = args.repeats or (1 if args.quick else 3)
    epoch_sizes = (2 * BATCH_SIZE * 4, 1000) if args.quick else (None, None)

    info = machine_info(device)
    cmd = "python bench/benchmark.py" + (
        "" if argv is None and not sys.argv[1:] else " " + " ".join(sys.argv[1:] if argv is None else argv)
    )
    log(
        f"bnviz benchmark on {devices.describe(device)}; torch {torch.__version__}, "
        f"torch threads: {torch.get_num_threads()}"
    )
    log(
        f"  CPU: {info['cpu']}, {info['cores']} cores ({info['usable_cores']} usable), load average "
        f"{info['load_average_at_start']}; data from {Path(root).resolve()} (loaded in {load_s:.2f} s)"
    )
    if info["busy_at_start"]:
        log(
            f"  WARNING: the machine is busy (load {info['load_average_at_start'][0]} on {info['usable_cores']} "
            "cores) before we start: expect every number to be too slow, and rerun on a quiet machine"
        )
    data_dev = data.to(device)
    sync(device)

    results = dict(
        date=datetime.datetime.now().isoformat(timespec="seconds"),
        command=cmd,
        machine=info,
        settings=dict(
            device=str(device),
            steps=steps,
            warmup=warmup,
            workers=args.workers,
            batch_size=BATCH_SIZE,
            lr=LR,
            seed=SEED,
            quick=args.quick,
            layer_rounds=rounds,
            repeats=repeats,
            data_root=str(root),
            data_load_s=load_s,
        ),
        targets=dict(TARGETS),
    )

    log(f"\n1. BN layer, training mode, forward + backward (best of {rounds} rounds)")
    results["layer"] = bench_layers(device, rounds, block_s, log)

    if args.only != "layer":
        log(
            f"\n2. Training images/s, {steps} steps after {warmup} warm-up, best of {repeats}: our pipeline vs the "
            f"chapter's (DataLoader, {args.workers} workers)"
        )
        results["training"] = bench_training(data_dev, root, device, steps, warmup, args.workers, repeats, log)

        log("\n3. Threads: scratch on our pipeline")
        results["threads"] = bench_threads(data_dev, device, steps, warmup, repeats)
        th = results["threads"]
        log(
            f"  1 thread {th['images_per_s']['1']:,.0f} images/s, 2 threads {th['images_per_s']['2']:,.0f} images/s, "
            f"2/1 {th['two_over_one']:.2f}x (restored to {torch.get_num_threads()} threads)"
        )

        log(f"\n4. One epoch, {' + '.join(EPOCH_VARIANTS)} interleaved, then validation")
        results["epoch"] = e = bench_epoch(data_dev, device, *epoch_sizes)
        log(
            f"  {e['train_images']:,} images x 2 variants in {e['train_s']:.2f} s, validation of {e['test_images']:,} "
            f"in {e['validation_s']:.2f} s, total {e['total_s']:.2f} s; val acc "
            f"{', '.join(f'{n} {a:.3f}' for n, a in e['val_acc'].items())}"
        )

    try:
        results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        results["machine"]["load_average_at_end"] = None
    results["verdicts"] = v = verdicts(results)
    log("\nTargets:")
    for name, x in v.items():
        log(f"  {name}: {x['value']:.2f} (target {x['target']}) {met_text(x['met'])}")

    if args.markdown:
        log("\n" + markdown(results))
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2))
        log(f"benchmark: wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
