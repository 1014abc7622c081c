"""What an experiment is set up with, and what a viewer sees of it: plain, immutable data.

``Settings`` and ``LaneSpec`` say what to train; ``Snapshot`` (with one ``LaneView`` per lane) is what the
dashboard, the CLI and the exports read. The live engine (``engine.Experiment``), the engine in a child
process (``experiment_process.ExperimentProcess``) and a saved run (``replay.Recording``) all hand out these.
No tensors here: a snapshot's tables are read-only numpy arrays.
"""

import math
import time
from dataclasses import dataclass, field
from enum import Enum

from bnviz.machine import device as devices
from bnviz.step.models import ACTIVATIONS, NORM_INFO, NORMS


class _Plain(str, Enum):
    """A status that is also its plain string: equal to it, hashed like it, printed as it, pickled by value.

    Page code compares with strings (``snap.status == "running"``) and prints statuses in f-strings; both
    keep working, and a typo in a member name fails at once instead of comparing false forever.
    """

    def __str__(self):
        return self.value

    def __format__(self, spec):
        return format(self.value, spec)


class Status(_Plain):
    """What an experiment as a whole is doing."""

    IDLE = "idle"  # built, or reset: nothing trained yet
    RUNNING = "running"
    PAUSED = "paused"  # paused by hand, or after step(n)
    FINISHED = "finished"  # no lane left to train
    STOPPED = "stopped"  # its worker (or child process) has ended
    ERROR = "error"  # its worker (or child process) failed; the message is in ``error``


class LaneStatus(_Plain):
    """What one lane is doing."""

    READY = "ready"  # not trained yet (or restarted)
    TRAINING = "training"
    FINISHED = "finished"  # all its epochs done
    DIVERGED = "diverged"  # stopped at a divergence, see ``diverged_at``
    ERROR = "error"  # stopped by an exception, see ``error``


STATUSES = tuple(s.value for s in Status)
LANE_STATUSES = tuple(s.value for s in LaneStatus)
MAX_LANES = 3


@dataclass(frozen=True)
class Settings:
    lr: float = 0.1
    batch_size: int = 128
    epochs: int = 10
    bn_momentum: float = 0.1
    bn_eps: float = 1e-5
    seed: int = 0
    device: str = "auto"
    train_size: int | None = None  # None: all 60,000
    probe_every: int = 20  # steps between probes
    val_every: int = 100  # steps between checks on the validation subset
    val_size: int = 1000  # images in that subset (the first of the test set)
    dist_capacity: int = 200  # distribution snapshots kept per lane
    landscape_every: int = 0  # steps between loss-landscape measurements (0: off)
    diverge_loss: float = 20.0  # a lane has diverged when its loss is NaN or infinite, or above this
    diverge_steps: int = 5  # ... for this many steps in a row (chance is 2.3; BN lanes can spike once)
    classes_per_batch: int = 10  # each training batch holds this many of the 10 classes (10: i.i.d. batches)

    def __post_init__(self):
        problems = []
        if not (self.lr > 0 and math.isfinite(self.lr)):
            problems.append(f"learning rate must be a positive number (got {self.lr})")
        if not self.diverge_loss > 0:
            problems.append(f"the divergence limit must be a positive loss (got {self.diverge_loss})")
        if self.landscape_every < 0:
            problems.append(f"landscape every must be 0 (off) or more (got {self.landscape_every})")
        for name in ("batch_size", "epochs", "probe_every", "val_every", "val_size", "dist_capacity", "diverge_steps"):
            if int(getattr(self, name)) < 1:
                problems.append(f"{name.replace('_', ' ')} must be at least 1 (got {getattr(self, name)})")
        if not 1 <= self.classes_per_batch <= 10:
            problems.append(f"classes per batch must be 1 to 10 (got {self.classes_per_batch})")
        if self.dist_capacity == 1:
            problems.append("dist capacity must be at least 2 (got 1): the first and the latest snapshot")
        if self.batch_size < 2:
            problems.append("batch size must be at least 2: BN needs two values per channel")
        if not 0 <= self.bn_momentum <= 1:
            problems.append(f"BN momentum must be between 0 and 1 (got {self.bn_momentum})")
        if not self.bn_eps > 0:
            problems.append(f"BN eps must be positive (got {self.bn_eps})")
        if self.train_size is not None and self.train_size < 2:
            problems.append(f"training-set size must be at least 2 (got {self.train_size})")
        if self.device not in devices.DEVICES:
            problems.append(f"device must be one of {', '.join(devices.DEVICES)} (got {self.device!r})")
        if problems:
            raise ValueError("; ".join(problems))


@dataclass(frozen=True)
class LaneSpec:
    norm: str = "scratch"  # one of models.NORMS: none | scratch | torch | layernorm | groupnorm | renorm | ...
    activation: str = "sigmoid"  # sigmoid | relu

    def __post_init__(self):
        if self.norm not in NORMS:
            names = ", ".join(NORMS)
            raise ValueError(f"normalisation (the BN implementation) must be one of {names} (got {self.norm!r})")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)} (got {self.activation!r})")

    @property
    def label(self):
        bn = NORM_INFO[self.norm].label
        return bn if self.activation == "sigmoid" else f"{bn} · {self.activation}"


DEFAULT_LANES = (LaneSpec("none"), LaneSpec("scratch"))


@dataclass(frozen=True)
class LaneView:
    """One lane as a viewer sees it: immutable."""

    index: int
    spec: LaneSpec
    status: LaneStatus
    error: str | None
    step: int
    epoch: int  # the epoch in progress (or the last one, when finished)
    steps_per_epoch: int
    images_per_s: float
    diverged_at: int | None
    tables: dict  # {table: {column: read-only array}}, see history.LaneHistory
    bn_bypassed: bool = False  # BN switched off mid-training (the layers act as identity)

    @property
    def label(self):
        """'A · BN off', 'B · BN scratch': the letter tells apart two lanes with the same set-up."""
        return f"{'ABC'[self.index]} · {self.spec.label}"  # BN switched off mid-run shows as marks on the charts


@dataclass(frozen=True)
class Snapshot:
    status: Status
    error: str | None
    settings: Settings
    device: str
    lanes: tuple
    wall_s: float = 0.0
    taken_at: float = field(default_factory=time.time)
    responding: bool = True  # False: its training process did not answer in time; this is the last it sent

    @property
    def max_step(self):
        return max((lane.step for lane in self.lanes), default=0)
