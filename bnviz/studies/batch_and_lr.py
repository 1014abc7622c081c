"""Short studies beyond the chapter, run through the same engine and layers as the live lanes.

- ``lr_race``: the same network with and without BN at several learning rates; which learn, which stall,
  which diverge (and at which step). The chapter's exercise: how large can the learning rate be?
- ``batch_statistics``: on a trained BN network, test accuracy with the batch's statistics (train mode)
  against the running ones (eval mode), over batch sizes from 2 to 1,024, and how far the batch mean and
  variance stray from the running values as the batch shrinks. Why running averages exist.
"""

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch

from bnviz.data.fashion_mnist import batches
from bnviz.live.engine import Experiment
from bnviz.live.snapshot import LaneSpec, Settings
from bnviz.machine import device as devices
from bnviz.step.probes import Hook, bn_state

RACE_LRS = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
STOP_POLL_S = 0.25  # how often a running study looks at its Stop button (and reports its progress)
BATCH_SIZES = (2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


@dataclass(frozen=True)
class RaceResult:
    lr: float
    lane: str
    norm: str
    steps: np.ndarray  # the loss curve
    loss: np.ndarray
    final_loss: float  # mean of the last tenth of the steps (NaN if diverged)
    val_acc: float  # on the validation subset at the end (NaN if diverged)
    diverged_at: int | None

    @property
    def verdict(self):
        if self.diverged_at:
            return f"diverged at step {self.diverged_at}"
        return "learns" if self.val_acc >= 0.5 else "stalls"


def lr_race(
    data,
    lrs=RACE_LRS,
    steps=300,
    norms=("none", "scratch"),
    *,
    activation="sigmoid",
    batch_size=128,
    seed=0,
    train_size=None,
    val_size=1000,
    progress=None,
    should_stop=lambda: False,
    experiment=Experiment,
):
    """Train each norm at each learning rate for ``steps`` steps; a list of RaceResult.

    ``experiment``: the engine to train with; the dashboard passes ``ExperimentProcess`` so that the race,
    like the live lanes, trains outside the web server's process.
    """
    results = []
    for i, lr in enumerate(lrs):
        if should_stop():
            break
        settings = Settings(
            lr=lr,
            batch_size=batch_size,
            epochs=10_000,
            seed=seed,
            train_size=train_size,
            probe_every=10**9,
            val_every=steps,
            val_size=val_size,
        )
        with experiment(data, settings, [LaneSpec(n, activation) for n in norms], name=f"race-{lr:g}") as exp:
            exp.step(steps)
            while not exp.wait(timeout=STOP_POLL_S):  # a Stop ends the race within a fraction of a second
                if should_stop():
                    return results
                if progress:
                    progress((i + min(1.0, exp.snapshot().max_step / steps)) / len(lrs))
            snap = exp.snapshot()
        for lane in snap.lanes:
            t, v = lane.tables["steps"], lane.tables["val"]
            loss = t["train_loss"]
            tail = loss[-max(1, len(loss) // 10) :]
            val = float(v["val_acc"][-1]) if len(v.get("val_acc", [])) else math.nan
            results.append(
                RaceResult(
                    lr,
                    lane.label,
                    lane.spec.norm,
                    t["step"],
                    loss,
                    float(np.mean(tail)) if lane.diverged_at is None else math.nan,
                    val if lane.diverged_at is None else math.nan,
                    lane.diverged_at,
                )
            )
        if progress:
            progress((i + 1) / len(lrs))
    return results


@dataclass(frozen=True)
class BatchStatsResult:
    batch_sizes: tuple
    train_mode_acc: tuple  # BN normalises with each test batch's own statistics
    eval_mode_acc: float  # BN uses the running statistics (independent of the batch size)
    mean_spread: tuple  # bn1: mean over channels of std(batch mean - running mean) across batches
    var_spread: tuple  # bn1: the same for the variance, relative to the running variance
    position: str = "bn1"


@torch.no_grad()
def batch_statistics(
    model,
    images,
    labels,
    batch_sizes=BATCH_SIZES,
    position="bn1",
    max_images=1024,
    progress=None,
    should_stop=lambda: False,
    device=None,
):
    """Train-mode vs eval-mode test accuracy of a trained BN network, over batch sizes, on ``device`` (the
    live lanes' setting, auto|cpu|cuda|mps: a GPU where there is one) or where the model is. One sync per
    batch size."""
    model = copy.deepcopy(model)
    if device is not None:
        device = devices.resolve_device(device)
        model = model.to(device)
        images, labels = images.to(device), labels.to(device)
    layers = [m for m in model.modules() if bn_state(m) is not None]
    if not layers:
        raise ValueError(
            "This network has no BN layers with a running mean and variance (LayerNorm, GroupNorm and BN that only "
            "centres or only scales keep none, or only one): train a lane with BN first."
        )
    for m in layers:  # train mode below must not move the running statistics
        m.momentum = 0.0
    images, labels = images[:max_images], labels[:max_images]
    model.eval()
    eval_acc = _accuracy(model, images, labels, 1024)
    running_mean, running_var = (t.reshape(-1).float() for t in bn_state(getattr(model, position))[:2])
    train_accs, mean_spreads, var_spreads = [], [], []
    entering = dict(model.named_modules())[{"bn1": "conv1", "bn2": "conv2", "bn3": "fc1", "bn4": "fc2"}[position]]
    for k, bs in enumerate(batch_sizes):
        if should_stop():
            break
        if progress:
            progress(k / len(batch_sizes))
        model.train()
        correct, seen, means, vars_ = torch.zeros((), dtype=torch.long, device=images.device), 0, [], []
        with Hook(entering) as hook:
            for X, y in batches(images, labels, bs):
                if should_stop():
                    break
                if X.shape[0] < 2:
                    continue
                correct += (model(X).argmax(1) == y).sum()
                seen += y.shape[0]
                x = hook.stored
                dims = (0, 2, 3) if x.dim() == 4 else (0,)
                v, m = torch.var_mean(x.float(), dim=dims, correction=0)
                means.append(m)
                vars_.append(v)
        if should_stop():  # a batch size measured only in part is left out
            break
        train_accs.append(correct.item() / seen)
        means, vars_ = torch.stack(means), torch.stack(vars_)
        # one batch has no spread to measure: NaN (left out of the chart), not 0
        mean_spreads.append(float((means - running_mean).std(0, correction=0).mean()) if len(means) > 1 else math.nan)
        var_spreads.append(
            float(((vars_ - running_var) / running_var).std(0, correction=0).mean()) if len(vars_) > 1 else math.nan
        )
    return BatchStatsResult(
        tuple(batch_sizes[: len(train_accs)]),
        tuple(train_accs),
        eval_acc,
        tuple(mean_spreads),
        tuple(var_spreads),
        position,
    )


def _accuracy(model, images, labels, batch_size):
    correct = sum((model(X).argmax(1) == y).sum() for X, y in batches(images, labels, batch_size))
    return int(correct) / images.shape[0]
