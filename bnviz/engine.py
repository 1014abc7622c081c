"""The live training engine: an experiment of 1 to 3 lanes trained in lockstep by one background thread.

Every lane trains on the same batches in the same order: step s of every lane is the same minibatch
(drawn from the seed and the epoch), so BN on and BN off are compared fairly. A lane restarted with a
new set-up starts again from step 0 with the same seed while the others go on.

Commands (start, pause, resume, step, stop, reset, set_lane, set_lr) may come from any thread: they are
queued and carried out by the worker between steps, so the models are only ever touched by one thread.
``snapshot()`` copies what a viewer needs under a lock that the worker takes only to append a row.
"""
import copy
import dataclasses
import math
import threading
import time
import traceback
from dataclasses import dataclass, field

import torch

from . import device as devices
from . import landscape
from .data import batches, num_batches
from .history import LaneHistory
from .models import ACTIVATIONS, NORMS, build_lenet, set_bn_bypass
from .probes import Probe
from .training import evaluate, make_optimizer, train_step

STATUSES = ("idle", "running", "paused", "finished", "stopped", "error")
LANE_STATUSES = ("ready", "training", "finished", "diverged", "error")
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
    train_size: int | None = None   # None: all 60,000
    probe_every: int = 20           # steps between probes
    val_every: int = 100            # steps between checks on the validation subset
    val_size: int = 1000            # images in that subset (the first of the test set)
    dist_capacity: int = 200        # distribution snapshots kept per lane
    landscape_every: int = 0        # steps between loss-landscape measurements (0: off)
    diverge_loss: float = 20.0      # a lane has diverged when its loss is NaN or infinite, or above this
    diverge_steps: int = 5          # ... for this many steps in a row (chance is 2.3; BN lanes can spike once)

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
    norm: str = "scratch"        # none | scratch | torch
    activation: str = "sigmoid"  # sigmoid | relu

    def __post_init__(self):
        if self.norm not in NORMS:
            raise ValueError(f"BN implementation must be one of {', '.join(NORMS)} (got {self.norm!r})")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)} (got {self.activation!r})")

    @property
    def label(self):
        bn = {"none": "BN off", "scratch": "BN scratch", "torch": "BN torch"}[self.norm]
        return bn if self.activation == "sigmoid" else f"{bn} · {self.activation}"


DEFAULT_LANES = (LaneSpec("none"), LaneSpec("scratch"))


@dataclass(frozen=True)
class LaneView:
    """One lane as a viewer sees it: immutable."""
    index: int
    spec: LaneSpec
    status: str
    error: str | None
    step: int
    epoch: int                 # the epoch in progress (or the last one, when finished)
    steps_per_epoch: int
    images_per_s: float
    diverged_at: int | None
    tables: dict               # {table: {column: read-only array}}, see history.LaneHistory
    bn_bypassed: bool = False  # BN switched off mid-training (the layers act as identity)

    @property
    def label(self):
        """'A · BN off', 'B · BN scratch': the letter tells apart two lanes with the same set-up."""
        return f"{'ABC'[self.index]} · {self.spec.label}"  # BN switched off mid-run shows as marks on the charts


@dataclass(frozen=True)
class Snapshot:
    status: str
    error: str | None
    settings: Settings
    device: str
    lanes: tuple
    wall_s: float = 0.0
    taken_at: float = field(default_factory=time.time)

    @property
    def max_step(self):
        return max((lane.step for lane in self.lanes), default=0)


class Lane:
    """One network, its optimiser, where it is in the data, and its history."""

    def __init__(self, index, spec, settings, data, device):
        self.index, self.spec, self.settings, self.data, self.device = index, spec, settings, data, device
        self.restart()

    def restart(self):
        s = self.settings
        self.model = build_lenet(self.spec.norm, self.spec.activation, seed=s.seed, bn_eps=s.bn_eps,
                                 bn_momentum=s.bn_momentum).to(self.device)
        self.optimizer = make_optimizer(self.model, s.lr)
        self.history = LaneHistory(s.dist_capacity)
        self.status, self.error, self.diverged_at, self.bn_bypassed = "ready", None, None, False
        self.step, self.epoch, self._batches = 0, 1, None
        self.epoch_loss = self.epoch_correct = self.epoch_images = 0
        self.compute_s, self.images, self._pending, self._above = 0.0, 0, [], []
        self.steps_per_epoch = num_batches(self.data.n_train, s.batch_size)

    @property
    def images_per_s(self):
        return self.images / self.compute_s if self.compute_s > 0 else 0.0

    def set_lr(self, lr):
        self.settings = dataclasses.replace(self.settings, lr=lr)
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    FLUSH_EVERY = 32  # on a GPU, steps whose loss stays on the device before one transfer fetches them all

    def train_one_step(self, lock):
        """One SGD step on this lane's next batch, then the records due at this step.

        On a GPU nothing here waits for the device except a probe, a validation and every FLUSH_EVERY
        steps, when the pending losses come back in one transfer; on the CPU every step is recorded at once.
        """
        s = self.settings
        if self._batches is None:
            self._batches = batches(self.data.train_x, self.data.train_y, s.batch_size, shuffle=True,
                                    seed=s.seed, epoch=self.epoch)
        X, y = next(self._batches)
        probing = self.step % s.probe_every == 0
        t0 = time.perf_counter()
        if probing:
            with Probe(self.model, self.spec.activation) as probe:
                loss, correct = train_step(self.model, self.optimizer, X, y)
            scalars, vectors = probe.read(s.lr)  # the one sync a probe needs
        else:
            loss, correct = train_step(self.model, self.optimizer, X, y)
        self.step += 1
        self._pending.append((self.step, self.epoch, s.lr, loss, correct, X.shape[0]))
        landscape_due = s.landscape_every and self.step % s.landscape_every == 0
        val_due = self.step % s.val_every == 0
        epoch_end = self.step % self.steps_per_epoch == 0
        if (self.device.type == "cpu" or probing or landscape_due or val_due or epoch_end
                or len(self._pending) >= self.FLUSH_EVERY):
            self.flush(lock)
        if probing:  # after its step's row, so a snapshot never shows a probe of a step it lacks
            with lock:
                self.history.probes.append(dict(step=self.step, **scalars))
                self.history.dists.offer(dict(step=self.step, **vectors))
        self.compute_s += time.perf_counter() - t0
        if self.status == "diverged":
            return
        if landscape_due:
            numbers = landscape.measure(self.model, self.data.train_x[:s.batch_size].unsqueeze(1).float() / 255,
                                        self.data.train_y[:s.batch_size], s.lr)
            with lock:
                self.history.landscape.append(dict(step=self.step, **numbers))
        if val_due:
            val_loss, val_acc = evaluate(self.model, self.data.val_x, self.data.val_y)
            with lock:
                self.history.val.append(dict(step=self.step, val_loss=val_loss, val_acc=val_acc))
        if epoch_end:
            self.end_epoch(lock)

    def flush(self, lock):
        """Fetch the pending losses in one transfer, record them, and stop the lane at a divergence."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        numbers = torch.stack([torch.stack([p[3].float(), p[4].float()]) for p in pending]).cpu().tolist()
        rows = []
        for (step, epoch, lr, _, _, n), (loss, correct) in zip(pending, numbers):
            self.images += n
            self.epoch_loss += loss
            self.epoch_correct += correct
            self.epoch_images += n
            rows.append(dict(step=step, epoch=epoch, lr=lr, train_loss=loss / n, train_acc=correct / n))
            bad = not loss / n <= self.settings.diverge_loss  # too high, or NaN
            self._above = self._above + [step] if bad else []
            if not math.isfinite(loss) or len(self._above) >= self.settings.diverge_steps:
                self.status, self.diverged_at = "diverged", self._above[0]
                break
        with lock:
            for row in rows:
                self.history.steps.append(row)

    def set_bn_bypass(self, bypass, lock):
        if set_bn_bypass(self.model, bypass) and bypass != self.bn_bypassed:
            self.bn_bypassed = bypass
            with lock:
                self.history.events.append(dict(step=self.step, bn_on=0.0 if bypass else 1.0))

    def end_epoch(self, lock):
        val_loss, val_acc = evaluate(self.model, self.data.test_x, self.data.test_y)
        with lock:
            self.history.epochs.append(dict(
                epoch=self.epoch, step=self.step, train_loss=self.epoch_loss / self.epoch_images,
                train_acc=self.epoch_correct / self.epoch_images, val_loss=val_loss, val_acc=val_acc,
                images_per_s=self.images_per_s))
        self.epoch_loss = self.epoch_correct = self.epoch_images = 0
        self._batches = None
        if self.epoch >= self.settings.epochs:
            self.status = "finished"
        else:
            self.epoch += 1

    def view(self, lock):
        with lock:
            tables = self.history.view()
        return LaneView(self.index, self.spec, self.status, self.error, self.step, self.epoch,
                        self.steps_per_epoch, self.images_per_s, self.diverged_at, tables, self.bn_bypassed)


@dataclass(frozen=True)
class ExperimentData:
    """The tensors an experiment trains and validates on, already on its device."""
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor

    @property
    def n_train(self):
        return self.train_x.shape[0]

    @classmethod
    def from_dataset(cls, data, settings, device):
        n = settings.train_size or data.train_images.shape[0]
        train_x, train_y = data.train_images[:n], data.train_labels[:n]
        test_x, test_y = data.test_images, data.test_labels
        return cls(*(t.to(device) for t in (train_x, train_y, test_x[:settings.val_size],
                                            test_y[:settings.val_size], test_x, test_y)))


class _ThreadBudget:
    """Share the CPU threads among the experiments training at once in this process."""
    lock = threading.Lock()
    running = set()

    @classmethod
    def update(cls, experiment, running):
        with cls.lock:
            (cls.running.add if running else cls.running.discard)(experiment)
            shared = any(e.shared_cpu for e in cls.running) if cls.running else experiment.shared_cpu
            n = max(1, devices.choose_threads(shared) // max(1, len(cls.running)))
            if torch.get_num_threads() != n:
                torch.set_num_threads(n)


class Experiment:
    """1 to 3 lanes, one worker thread, commands from anywhere, snapshots for viewers."""

    def __init__(self, data, settings=Settings(), lanes=DEFAULT_LANES, *, name="experiment", shared_cpu=True):
        """shared_cpu: something else (a web server, a browser) uses this machine's cores too."""
        self.shared_cpu = shared_cpu
        if not 1 <= len(lanes) <= MAX_LANES:
            raise ValueError(f"an experiment has 1 to {MAX_LANES} lanes, got {len(lanes)}")
        self.name, self.dataset = name, data
        self.device = devices.resolve_device(settings.device)
        self.settings = settings
        self._lock = threading.Lock()        # guards the histories (held only to append or copy)
        self._cv = threading.Condition()     # guards the command queue and the state below
        self._commands, self._status, self._error = [], "idle", None
        self._step_budget, self._stopping, self._closed = 0, False, False
        self._build(settings, lanes)
        self._started_at, self._wall = None, 0.0
        self._thread = threading.Thread(target=self._work, name=f"bnviz-{name}", daemon=True)
        self._thread.start()

    def _build(self, settings, specs):
        self.settings = settings
        self.data = ExperimentData.from_dataset(self.dataset, settings, self.device)
        self.lanes = [Lane(i, spec, settings, self.data, self.device) for i, spec in enumerate(specs)]

    # ------------------------------------------------------------------ commands (any thread)
    def _call(self, fn, wait=True, timeout=30.0):
        """Run fn on the worker between steps; wait for it and re-raise what it raised."""
        done, box = threading.Event(), {}
        with self._cv:
            if self._closed or not self._thread.is_alive():  # _closed: the worker has stopped taking commands
                raise RuntimeError(f"the experiment is {self._status}: its worker has stopped")
            self._commands.append((fn, done, box))
            self._cv.notify_all()
        if wait:
            if not done.wait(timeout):
                raise TimeoutError("the training thread did not answer in time")
            if "error" in box:
                raise box["error"]
            return box.get("result")

    def start(self):
        def go():
            if self._status in ("idle", "paused", "finished", "stopped"):
                self._set_status("running")
        return self._call(go)

    resume = start

    def pause(self):
        def halt():
            self._step_budget = 0
            if self._status == "running":
                self._set_status("paused")
        return self._call(halt)

    def step(self, n=1):
        """Train n steps (every lane), then pause."""
        def advance():
            self._step_budget = int(n)
            self._set_status("paused")
        return self._call(advance)

    def set_lr(self, lr):
        """Change the learning rate of every lane now, without a reset."""
        settings = dataclasses.replace(self.settings, lr=float(lr))  # validates
        def apply():
            self.settings = settings
            for lane in self.lanes:
                lane.set_lr(settings.lr)
        return self._call(apply)

    def set_lane(self, index, spec):
        """Give lane ``index`` a new set-up; it restarts from step 0 with the same seed, the others go on."""
        def apply():
            lane = self.lanes[index]
            lane.spec = spec
            with self._lock:
                lane.restart()
        return self._call(apply)

    def set_bn_bypass(self, index, bypass):
        """Switch BN off (identity) or back on in a trained lane, keeping its weights: no restart."""
        def apply():
            lane = self.lanes[index]
            if lane.spec.norm == "none":
                raise ValueError(f"{lane.spec.label} has no BN layers to switch")
            lane.set_bn_bypass(bypass, self._lock)
        return self._call(apply)

    def clone_model(self, index):
        """A copy of lane ``index``'s network as it is now (taken between steps), for side studies."""
        return self._call(lambda: copy.deepcopy(self.lanes[index].model))

    def add_lane(self, spec):
        """A new lane that starts from step 0 with the same seed; the others go on."""
        def apply():
            if len(self.lanes) >= MAX_LANES:
                raise ValueError(f"an experiment has at most {MAX_LANES} lanes")
            with self._lock:
                self.lanes = self.lanes + [Lane(len(self.lanes), spec, self.settings, self.data, self.device)]
            if self._status == "finished":
                self._set_status("paused")
        return self._call(apply)

    def remove_lane(self, index):
        def apply():
            if len(self.lanes) <= 1:
                raise ValueError("an experiment keeps at least one lane")
            if not 0 <= index < len(self.lanes):
                raise ValueError(f"there is no lane {index}")
            with self._lock:
                lanes = [l for i, l in enumerate(self.lanes) if i != index]
                for i, lane in enumerate(lanes):
                    lane.index = i
                self.lanes = lanes
        return self._call(apply)

    def reset(self, settings=None, lanes=None):
        """Rebuild every lane from the seed (with new settings or lanes if given); history is cleared."""
        settings = settings or self.settings
        specs = tuple(lanes) if lanes is not None else tuple(l.spec for l in self.lanes)
        if not 1 <= len(specs) <= MAX_LANES:
            raise ValueError(f"an experiment has 1 to {MAX_LANES} lanes, got {len(specs)}")
        if devices.resolve_device(settings.device) != self.device:
            raise ValueError("the device is chosen when an experiment is created; make a new experiment")
        def apply():
            self._step_budget = 0
            with self._lock:
                self._build(settings, specs)
            self._wall, self._started_at, self._error = 0.0, None, None
            self._set_status("idle")
        return self._call(apply)

    def stop(self, timeout=1.0):
        """Stop training and end the worker thread; returns True when it is gone."""
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    close = stop

    # ------------------------------------------------------------------ state (any thread)
    @property
    def status(self):
        return self._status

    @property
    def alive(self):
        return self._thread.is_alive()

    @property
    def busy(self):
        """Training, stepping, or with commands still to carry out."""
        return self._status == "running" or self._step_budget > 0 or bool(self._commands)

    def snapshot(self):
        lanes = tuple(lane.view(self._lock) for lane in list(self.lanes))
        return Snapshot(self._status, self._error, self.settings, devices.describe(self.device), lanes,
                        self._wall_s())

    def header(self):
        """What the experiment file records besides the tables."""
        return {"name": self.name, "settings": dataclasses.asdict(self.settings), "device": str(self.device),
                "lanes": [dataclasses.asdict(l.spec) for l in self.lanes],
                "torch": torch.__version__, "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S")}

    def wait(self, timeout=None, poll=0.02):
        """Block until the experiment is no longer running (or stepping); True if it stopped in time."""
        end = None if timeout is None else time.monotonic() + timeout
        while self.busy:
            if not self._thread.is_alive() or (end is not None and time.monotonic() > end):
                return not self._thread.is_alive()
            time.sleep(poll)
        return True

    # ------------------------------------------------------------------ the worker
    def _set_status(self, status):
        if status != "running" and threading.current_thread() is self._thread:
            for lane in self.lanes:  # a paused GPU run shows every step it took
                lane.flush(self._lock)
        self._status = status
        if status == "running" and self._started_at is None:
            self._started_at = time.monotonic()
        elif status != "running" and self._started_at is not None:
            self._wall += time.monotonic() - self._started_at
            self._started_at = None
        _ThreadBudget.update(self, status == "running" or self._step_budget > 0)

    def _wall_s(self):
        return self._wall + (time.monotonic() - self._started_at if self._started_at else 0.0)

    def _training(self):
        return (self._status == "running" or self._step_budget > 0) and any(
            l.status in ("ready", "training") for l in self.lanes)

    def _work(self):
        try:
            while True:
                with self._cv:
                    while not (self._commands or self._stopping or self._training()):
                        self._cv.wait(0.5)
                    if self._stopping:
                        break
                    commands, self._commands = self._commands, []
                for fn, done, box in commands:
                    try:
                        box["result"] = fn()
                    except BaseException as e:  # handed back to the caller
                        box["error"] = e
                    done.set()
                if self._training():
                    self._round()
                elif self._status == "running" or self._step_budget > 0:  # started with no lane left to train
                    self._step_budget = 0
                    self._set_status("finished")
        except BaseException as e:
            self._error = f"{type(e).__name__}: {e}"
            self._status = "error"
            traceback.print_exc()
        finally:
            if self._status != "error":
                self._set_status("stopped")
            _ThreadBudget.update(self, False)
            with self._cv:  # nobody waits forever on a command the worker will never run
                self._closed = True
                for _, done, box in self._commands:
                    box["error"] = RuntimeError("the experiment has stopped")
                    done.set()
                self._commands = []

    def _round(self):
        """One step of every lane still training, on the same batch index."""
        for lane in self.lanes:
            if lane.status not in ("ready", "training"):
                continue
            lane.status = "training"
            try:
                lane.train_one_step(self._lock)
            except Exception as e:  # this lane stops, the others go on
                lane.status, lane.error = "error", describe_error(e)
        if self._step_budget > 0:
            self._step_budget -= 1
            if self._step_budget == 0:
                self._set_status("paused")
        if not any(l.status in ("ready", "training") for l in self.lanes):
            self._step_budget = 0
            self._set_status("finished")


def describe_error(e):
    """A message a person can act on."""
    if isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower():
        return "Out of memory: lower the batch size or the training-set size, or use the CPU."
    return f"{type(e).__name__}: {e}"
