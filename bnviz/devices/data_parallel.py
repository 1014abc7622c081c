"""Data-parallel training of a LeNet lane on k devices: torch.distributed and DistributedDataParallel (DDP).

Every rank walks the same seeded order (``data.batches``, as the live lanes) and takes its slice of each global
minibatch: ``X.tensor_split(k)[rank]``. So k = 1 is today's run, and k ranks see exactly the images one process
would see in one step. Each rank's loss is its slice's summed loss times k / B (B the global minibatch); DDP
averages the k gradients, which gives the gradient of the whole minibatch's mean loss, whatever the slices.

    bn_sync="device"   BN per device (DDP's default): each slice normalised with its own statistics; the running
                       statistics are rank 0's, which DDP broadcasts before every forward pass
    bn_sync="global"   synchronised BN: ours (``sync_batchnorm.SyncBatchNorm``) for norm="scratch", torch's
                       ``nn.SyncBatchNorm.convert_sync_batchnorm`` for norm="torch" (CUDA only: its kernels are)

With synchronised BN, k ranks train the same weights as one process on the whole minibatch, to float round-off;
with BN per device they do not (tests/test_data_parallel.py). ``train`` is what one rank runs, in a group that
``process_group.run_local_group`` or torchrun set up; with ``world_size=1`` and ``devices=k`` it computes the same
k devices inside one process (``device_slices``), which is how a study or a benchmark tries k = 64 on 2 cores.

bn1's per-device batch statistics are recorded every ``stats_every`` steps: each device's per-channel mean and
(biased) variance of the values entering bn1, and those of the whole minibatch, merged from them.
"""

import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from bnviz.data.fashion_mnist import batches
from bnviz.devices.device_slices import per_device
from bnviz.devices.sync_batchnorm import SyncBatchNorm
from bnviz.step.models import build_lenet
from bnviz.step.training import evaluate, make_optimizer

BN_SYNCS = ("device", "global")
SYNC_NORMS = ("scratch", "torch")  # the normalisations that have a synchronised version here
NO_BATCH_STATISTICS = ("none", "layernorm", "groupnorm")  # nothing to synchronise: the same with either bn_sync


@dataclass(frozen=True)
class ParallelSettings:
    norm: str = "scratch"
    activation: str = "sigmoid"
    lr: float = 0.1
    batch_size: int = 128  # the global minibatch, cut into k slices
    epochs: int = 1
    steps: int | None = None  # stop after this many steps (None: after the epochs)
    seed: int = 0
    train_size: int | None = None  # None: all 60,000
    bn_sync: str = "device"  # device | global
    stats_every: int = 50  # steps between records of bn1's per-device statistics
    eval_size: int | None = None  # test images for the final evaluation (None: all 10,000)

    def __post_init__(self):
        if self.bn_sync not in BN_SYNCS:
            raise ValueError(f"bn_sync must be one of {BN_SYNCS}, got {self.bn_sync!r}")
        if self.bn_sync == "global" and self.norm not in SYNC_NORMS + NO_BATCH_STATISTICS:
            raise ValueError(f"synchronised BN is for norm {' or '.join(SYNC_NORMS)}, got {self.norm!r}")
        if (
            self.batch_size < 2
            or self.epochs < 1
            or self.stats_every < 1
            or (self.steps is not None and self.steps < 1)
        ):
            raise ValueError(f"batch_size >= 2, epochs, stats_every and steps >= 1, got {self}")


@dataclass
class RunRecord:
    """What a run gives back (rank 0's: the numbers of the whole minibatch; another rank's hold its weights)."""

    rank: int
    devices: int
    steps: np.ndarray | None = None  # (S,) step number, from 1
    loss: np.ndarray | None = None  # (S,) the whole minibatch's mean loss at that step
    acc: np.ndarray | None = None  # (S,) its accuracy
    step_s: np.ndarray | None = None  # (S,) wall seconds of each step on this rank
    stats_steps: np.ndarray | None = None  # (R,) steps whose bn1 statistics were recorded
    bn1_means: np.ndarray | None = None  # (R, k, C) each device's per-channel mean entering bn1
    bn1_vars: np.ndarray | None = None  # (R, k, C) ... and biased variance
    bn1_global_means: np.ndarray | None = None  # (R, C) the whole minibatch's
    bn1_global_vars: np.ndarray | None = None  # (R, C)
    test_loss: float | None = None  # eval mode (running statistics), rank 0 only
    test_acc: float | None = None
    state: dict = field(default_factory=dict)  # the model's state_dict on the CPU

    def spread(self):
        """Per recorded step: how far the devices' bn1 statistics stray from the whole minibatch's.

        mean_spread: the largest |device mean - global mean| over devices and channels, in global standard
        deviations; var_low, var_high: the smallest and largest device variance / global variance.
        """
        if self.bn1_means is None or not len(self.stats_steps):
            return []
        std = np.sqrt(self.bn1_global_vars)[:, None, :]
        mean_gap = np.abs(self.bn1_means - self.bn1_global_means[:, None, :]) / std
        ratio = self.bn1_vars / self.bn1_global_vars[:, None, :]
        return [
            dict(step=int(s), mean_spread=float(m.max()), var_low=float(r.min()), var_high=float(r.max()))
            for s, m, r in zip(self.stats_steps, mean_gap, ratio)
        ]


def build_model(settings, *, world_size=1, devices=1, device="cpu"):
    """LeNet for one rank: synchronised BN in a group (bn_sync="global"), or k devices' per-device BN in one
    process (world_size=1, devices=k, bn_sync="device"); the plain model otherwise."""
    s = settings
    model = build_lenet(s.norm, s.activation, seed=s.seed).to(device)
    if world_size > 1 and s.bn_sync == "global" and s.norm in SYNC_NORMS:
        if s.norm == "scratch":
            SyncBatchNorm.convert(model)
        elif torch.device(device).type != "cuda":
            raise ValueError(
                "torch's nn.SyncBatchNorm runs on CUDA GPUs only (its kernels are CUDA's); on the CPU use --norm "
                "scratch for bnviz's synchronised BN"
            )
        else:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if world_size == 1 and devices > 1 and s.bn_sync == "device":
        per_device(model, devices)
    return model


def global_batches(data, settings, devices):
    """(step, epoch, X, y) over the seeded order, global minibatches; one too small to give each device two
    images (the last of an epoch, at most) is skipped."""
    s = settings
    n = s.train_size or data.train_images.shape[0]
    train_x, train_y = data.train_images[:n], data.train_labels[:n]
    step = 0
    for epoch in range(1, s.epochs + 1):
        for X, y in batches(train_x, train_y, s.batch_size, shuffle=True, seed=s.seed, epoch=epoch):
            if X.shape[0] < 2 * devices:
                continue
            step += 1
            yield step, epoch, X, y
            if s.steps is not None and step >= s.steps:
                return


def slice_statistics(X, pieces):
    """Per slice of X (tensor_split into ``pieces``): per-channel mean, biased variance and count, float64,
    as one (pieces, 2C + 1) tensor."""
    rows = []
    for X_d in X.detach().double().tensor_split(pieces):
        dims = (0,) if X_d.dim() == 2 else (0, 2, 3)
        count = X_d.numel() // X_d.shape[1]
        mean = X_d.mean(dim=dims)
        var = ((X_d - mean.view(1, -1, *([1] * (X_d.dim() - 2)))) ** 2).mean(dim=dims)
        rows.append(torch.cat([mean, var, torch.tensor([float(count)], dtype=torch.float64)]))
    return torch.stack(rows)


def merge_statistics(rows):
    """The whole minibatch's mean and biased variance from each device's (mean, var, count)."""
    C = (rows.shape[1] - 1) // 2
    means, variances, counts = rows[:, :C], rows[:, C : 2 * C], rows[:, -1:]
    w = counts / counts.sum()
    mean = (w * means).sum(0)
    var = (w * (variances + (means - mean) ** 2)).sum(0)
    return mean, var


def train(data, settings, *, rank=0, world_size=1, devices=None, report=None, should_stop=None, device="cpu"):
    """Train as one rank of ``world_size`` (a torch.distributed group when more than 1), or as ``devices``
    devices inside this one process (world_size=1); return this rank's ``RunRecord``."""
    s = settings
    k = devices or world_size
    if world_size > 1 and k != world_size:
        raise ValueError(f"in a group of {world_size} processes each is one device, got devices={k}")
    model = build_model(s, world_size=world_size, devices=k, device=device)
    bare = model
    if world_size > 1:
        model = nn.parallel.DistributedDataParallel(model)  # broadcast_buffers=True: rank 0's running statistics
    optimizer = make_optimizer(model, s.lr)
    loss_fn = nn.CrossEntropyLoss(reduction="sum")

    seen = {}
    hook = bare.bn1.register_forward_pre_hook(
        lambda module, inputs: seen.__setitem__("bn1", inputs[0]) if seen.get("want") else None
    )
    rec = dict(steps=[], loss=[], acc=[], step_s=[], stats_steps=[], stats=[])
    try:
        for step, _epoch, X, y in global_batches(data, s, k):
            if should_stop and should_stop():
                break
            t0 = time.perf_counter()
            B = X.shape[0]
            if world_size > 1:
                X, y = X.tensor_split(world_size)[rank], y.tensor_split(world_size)[rank]
            X, y = X.to(device), y.to(device)
            seen["want"] = step % s.stats_every == 0 or step == 1
            model.train()
            logits = model(X)
            loss = loss_fn(logits, y)
            optimizer.zero_grad(set_to_none=True)
            (loss * world_size / B).backward()  # DDP averages over the ranks: the whole minibatch's mean loss
            optimizer.step()
            numbers = torch.stack([loss.detach().double(), (logits.argmax(1) == y).sum().double()])
            if world_size > 1:
                dist.all_reduce(numbers)
            rec["step_s"].append(time.perf_counter() - t0)
            rec["steps"].append(step)
            rec["loss"].append(numbers[0].item() / B)
            rec["acc"].append(numbers[1].item() / B)
            if seen.pop("want"):
                rows = slice_statistics(seen.pop("bn1"), 1 if world_size > 1 else k)
                if world_size > 1:
                    gathered = [torch.empty_like(rows) for _ in range(world_size)]
                    dist.all_gather(gathered, rows)
                    rows = torch.cat(gathered)
                rec["stats_steps"].append(step)
                rec["stats"].append(rows)
            if report:
                report(dict(step=step, loss=rec["loss"][-1], acc=rec["acc"][-1]))
    finally:
        hook.remove()
    out = RunRecord(rank=rank, devices=k)
    out.steps, out.loss, out.acc, out.step_s = (np.asarray(rec[n]) for n in ("steps", "loss", "acc", "step_s"))
    out.stats_steps = np.asarray(rec["stats_steps"], dtype=int)
    if rec["stats"]:
        stats = torch.stack(rec["stats"])  # (R, k, 2C + 1)
        C = (stats.shape[-1] - 1) // 2
        out.bn1_means, out.bn1_vars = stats[..., :C].numpy(), stats[..., C : 2 * C].numpy()
        merged = [merge_statistics(rows) for rows in stats]
        out.bn1_global_means = torch.stack([m for m, _ in merged]).numpy()
        out.bn1_global_vars = torch.stack([v for _, v in merged]).numpy()
    out.state = {key.replace(".bn.", "."): v.detach().cpu().clone() for key, v in bare.state_dict().items()}
    if rank == 0:
        n = s.eval_size or data.test_images.shape[0]
        test_x, test_y = data.test_images[:n].to(device), data.test_labels[:n].to(device)
        out.test_loss, out.test_acc = evaluate(bare, test_x, test_y)
    return out


def train_rank(rank, world_size, data, settings, report=None):
    """What one process of ``run_local_group`` runs: ``train`` as rank ``rank`` of the group."""
    return train(data, settings, rank=rank, world_size=world_size, report=report)
