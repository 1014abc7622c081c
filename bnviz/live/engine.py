"""The live training engine: an experiment of 1 to 3 lanes trained in lockstep by one background thread.

Every lane trains on the same batches in the same order: step s of every lane is the same minibatch
(drawn from the seed and the epoch), so BN on and BN off are compared fairly. A lane restarted with a
new set-up starts again from step 0 with the same seed while the others go on.

Commands (start, pause, resume, step, reset, set_lane, set_lr, ...) may come from any thread: each is a
method marked ``@on_worker``, queued as a ``concurrent.futures.Future`` and carried out by the worker between
steps, so the models are only ever touched by one thread. ``snapshot()`` copies what a viewer needs under a
lock that the worker takes only to append a row. ``with Experiment(...) as exp:`` stops it on the way out.
"""

import concurrent.futures
import copy
import dataclasses
import functools
import math
import threading
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from bnviz.data.fashion_mnist import batches, num_batches
from bnviz.live.history import LaneHistory
from bnviz.live.snapshot import DEFAULT_LANES, MAX_LANES, LaneSpec, LaneStatus, LaneView, Settings, Snapshot, Status
from bnviz.machine import device as devices
from bnviz.machine import env
from bnviz.step import landscape
from bnviz.step.graphed_step import make_step
from bnviz.step.models import build_lenet, set_bn_bypass
from bnviz.step.precise_bn import layers_with_statistics, recompute_statistics
from bnviz.step.probes import look
from bnviz.step.training import evaluate, evaluate_train_mode, has_running_statistics, make_optimizer


@dataclass(frozen=True)
class Due:
    """What a lane records at one step, besides the step's loss and accuracy."""

    probe: bool
    landscape: bool
    val: bool
    epoch_end: bool


class Lane:
    """One network, its optimiser, where it is in the data, and its history."""

    def __init__(self, index, spec, settings, data, device):
        self.index, self.spec, self.settings, self.data, self.device = index, spec, settings, data, device
        self.restart()

    def restart(self):
        s = self.settings
        self.model = build_lenet(
            self.spec.norm, self.spec.activation, seed=s.seed, bn_eps=s.bn_eps, bn_momentum=s.bn_momentum
        ).to(self.device)
        self.optimizer = make_optimizer(self.model, s.lr)
        # on a GPU, the step replays a captured CUDA graph (bnviz/step/graphed_step.py); on the CPU, train_step
        name = f"lane {'ABC'[self.index]} ({self.spec.label})"
        self.stepper = make_step(self.model, self.optimizer, s.lr, s.batch_size, name=name, graphs=env.cuda_graphs())
        self.history = LaneHistory(s.dist_capacity)
        self.status, self.error, self.diverged_at, self.bn_bypassed = LaneStatus.READY, None, None, False
        self.step, self.epoch, self._batches = 0, 1, None
        self.epoch_loss = self.epoch_correct = self.epoch_images = 0
        self.compute_s, self.images, self._pending, self._above = 0.0, 0, [], []
        self.steps_per_epoch = num_batches(self.data.n_train, s.batch_size)

    @property
    def images_per_s(self):
        return self.images / self.compute_s if self.compute_s > 0 else 0.0

    def set_lr(self, lr):
        self.settings = dataclasses.replace(self.settings, lr=lr)
        self.stepper.set_lr(lr)

    FLUSH_EVERY = 32  # on a GPU, steps whose loss stays on the device before one transfer fetches them all

    def due(self, step):
        """What is recorded at ``step`` (counted from 1), besides its loss: a probe taken during the step, the
        loss landscape, a validation, the epoch's end (its test evaluation)."""
        s = self.settings
        return Due(
            probe=(step - 1) % s.probe_every == 0,
            landscape=bool(s.landscape_every) and step % s.landscape_every == 0,
            val=step % s.val_every == 0,
            epoch_end=step % self.steps_per_epoch == 0,
        )

    def next_batch(self):
        s = self.settings
        if self._batches is None:
            self._batches = batches(
                self.data.train_x,
                self.data.train_y,
                s.batch_size,
                shuffle=True,
                seed=s.seed,
                epoch=self.epoch,
                classes_per_batch=s.classes_per_batch,
            )
        return next(self._batches)

    def train_one_step(self, lock):
        """One SGD step on this lane's next batch, then the records due at this step.

        On a GPU nothing here waits for the device except a probe, a validation and every FLUSH_EVERY
        steps, when the pending losses come back in one transfer; on the CPU every step is recorded at once.
        """
        s = self.settings
        X, y = self.next_batch()
        due = self.due(self.step + 1)
        t0 = time.perf_counter()
        if due.probe:  # a graphed lane replays a graph of its own for a probed step, once warm (graphed_step.py)
            loss, correct, scalars, vectors = self.stepper.probed(X, y, self.spec.activation)
        else:
            loss, correct = self.stepper(X, y)
        self.step += 1
        probed_step = self.step
        self._pending.append((self.step, self.epoch, s.lr, loss, correct, X.shape[0]))
        if self.device.type == "cpu" or any(dataclasses.astuple(due)) or len(self._pending) >= self.FLUSH_EVERY:
            self.flush(lock)
        # after its step's row, so a snapshot never shows a probe of a step it lacks; a lane that the flush
        # found diverged at an earlier step went back there, and this step's probe is of no step it kept
        if due.probe and self.step == probed_step:
            with lock:
                self.history.probes.append(dict(step=self.step, **scalars))
                self.history.dists.offer(dict(step=self.step, **vectors))
        self.compute_s += time.perf_counter() - t0
        if self.status == LaneStatus.DIVERGED:
            return
        if due.landscape:
            numbers = landscape.measure(
                self.model,
                self.data.train_x[: s.batch_size].unsqueeze(1).float() / 255,
                self.data.train_y[: s.batch_size],
                s.lr,
            )
            with lock:
                self.history.landscape.append(dict(step=self.step, **numbers))
        if due.val:
            row = self.validate()
            with lock:
                self.history.val.append(row)
        if due.epoch_end:
            self.end_epoch(lock)

    def flush(self, lock):
        """Fetch the pending losses in one transfer, record them, and stop the lane at a divergence.

        Off the CPU the lane may have taken steps past the one that diverged before this flush saw it: those
        steps are dropped, and the lane's step goes back to the last one recorded, so ``step`` always
        matches the ``steps`` table of a diverged lane.
        """
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        numbers = torch.stack([t.float() for p in pending for t in p[3:5]]).cpu().tolist()  # one transfer
        rows = []
        for (step, epoch, lr, _, _, n), loss, correct in zip(pending, numbers[::2], numbers[1::2]):
            self.images += n
            self.epoch_loss += loss
            self.epoch_correct += correct
            self.epoch_images += n
            rows.append(dict(step=step, epoch=epoch, lr=lr, train_loss=loss / n, train_acc=correct / n))
            bad = not loss / n <= self.settings.diverge_loss  # too high, or NaN
            self._above = self._above + [step] if bad else []
            if not math.isfinite(loss) or len(self._above) >= self.settings.diverge_steps:
                self.status, self.diverged_at = LaneStatus.DIVERGED, self._above[0]
                break
        with lock:
            for row in rows:
                self.history.steps.append(row)
            if self.status == LaneStatus.DIVERGED:  # under the lock: a snapshot sees rows and step agree
                self.step, self.epoch = rows[-1]["step"], rows[-1]["epoch"]

    def set_bn_bypass(self, bypass, lock):
        """Switch BN off or on, and measure the validation accuracy at once, before and after the switch.

        The measurement after is recorded as a validation row at this step, so the accuracy chart changes
        at once, whether the lane is training, paused or finished. Returns (accuracy before, accuracy after).
        """
        before = evaluate(self.model, self.data.val_x, self.data.val_y)[1]
        if not (set_bn_bypass(self.model, bypass) and bypass != self.bn_bypassed):
            return before, before
        self.bn_bypassed = bypass  # a graphed step sees its tensors change and captures again (graphed_step.py)
        row = self.validate()
        event = dict(step=self.step, bn_on=0.0 if bypass else 1.0, val_before=before, val_after=row["val_acc"])
        seen = self.look() if self.step > 0 else None
        with lock:
            self.history.events.append(event)
            self.history.val.append(row)
            if seen is not None:  # the histograms show the network as it is now, after the switch
                self.history.probes.append(dict(step=self.step, **seen[0]))
                self.history.dists.offer(dict(step=self.step, **seen[1]))
        return before, row["val_acc"]

    def look(self):
        """A probe of the network as it is, on the first training batch, without training it (probes.look)."""
        s = self.settings
        X = self.data.train_x[: s.batch_size].unsqueeze(1).float() / 255
        return look(self.model, self.spec.activation, s.lr, X, self.data.train_y[: s.batch_size])

    def validate(self):
        """The validation row at this step: loss and accuracy in eval mode (BN's running statistics), and the
        accuracy in train mode (each batch's own statistics; the same number for a lane without them)."""
        val_loss, val_acc = evaluate(self.model, self.data.val_x, self.data.val_y)
        batch_acc = val_acc
        if has_running_statistics(self.model):
            batch_acc = evaluate_train_mode(self.model, self.data.val_x, self.data.val_y, self.settings.batch_size)[1]
        return dict(step=self.step, val_loss=val_loss, val_acc=val_acc, val_acc_batch=batch_acc)

    def extend(self, epochs):
        """Train ``epochs`` more epochs: a finished lane goes on from where it stopped."""
        self.settings = dataclasses.replace(self.settings, epochs=self.settings.epochs + epochs)
        if self.status == LaneStatus.FINISHED:
            self.status, self.epoch, self._batches = LaneStatus.READY, self.epoch + 1, None

    def end_epoch(self, lock):
        val_loss, val_acc = evaluate(self.model, self.data.test_x, self.data.test_y)
        with lock:
            self.history.epochs.append(
                dict(
                    epoch=self.epoch,
                    step=self.step,
                    train_loss=self.epoch_loss / self.epoch_images,
                    train_acc=self.epoch_correct / self.epoch_images,
                    val_loss=val_loss,
                    val_acc=val_acc,
                    images_per_s=self.images_per_s,
                )
            )
        self.epoch_loss = self.epoch_correct = self.epoch_images = 0
        self._batches = None
        if self.epoch >= self.settings.epochs:
            self.status = LaneStatus.FINISHED
        else:
            self.epoch += 1

    def view(self):
        """This lane as a viewer sees it; the caller holds the history lock (one for every lane of a frame)."""
        tables = self.history.view()
        return LaneView(
            self.index,
            self.spec,
            self.status,
            self.error,
            self.step,
            self.epoch,
            self.steps_per_epoch,
            self.images_per_s,
            self.diverged_at,
            tables,
            self.bn_bypassed,
        )


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
        return cls(
            *(
                t.to(device)
                for t in (train_x, train_y, test_x[: settings.val_size], test_y[: settings.val_size], test_x, test_y)
            )
        )


class _ThreadBudget:
    """Share the CPU threads among the experiments training at once in this process."""

    lock = threading.Lock()
    running: set = set()

    @classmethod
    def update(cls, experiment, running):
        with cls.lock:
            (cls.running.add if running else cls.running.discard)(experiment)
            shared = any(e.shared_cpu for e in cls.running) if cls.running else experiment.shared_cpu
            n = max(1, devices.choose_threads(shared) // max(1, len(cls.running)))
            if torch.get_num_threads() != n:
                torch.set_num_threads(n)


COMMANDS: list[str] = []  # every @on_worker method's name, in order: the one list of the experiment's commands


def on_worker(method):
    """Make ``method`` a command: any thread may call it, the worker thread runs it between steps.

    Its name joins ``COMMANDS``, which the child process serves (``experiment_process``) and the tests check
    against both experiments and the ``LiveExperiment`` protocol.

    The call is queued as a ``concurrent.futures.Future``; the caller waits for it (at most the
    experiment's ``COMMAND_TIMEOUT`` seconds, then TimeoutError) and gets what the method returned, or the
    exception it raised. A command still queued when its caller gives up is cancelled, never run late.
    """

    @functools.wraps(method)
    def command(self, *args, **kwargs):
        future = self._submit(functools.partial(method, self, *args, **kwargs))
        concurrent.futures.wait([future], self.COMMAND_TIMEOUT)
        if not future.done():
            future.cancel()  # still queued: it will never run (one already running finishes unobserved)
            raise TimeoutError("the training thread did not answer in time")
        return future.result()  # what it returned, or raises what it raised

    COMMANDS.append(method.__name__)
    return command


class Experiment:
    """1 to 3 lanes, one worker thread, commands from anywhere, snapshots for viewers."""

    COMMAND_TIMEOUT = 30.0  # seconds a command's caller waits for the worker

    def __init__(self, data, settings=Settings(), lanes=DEFAULT_LANES, *, name="experiment", shared_cpu=True):
        """shared_cpu: something else (a web server, a browser) uses this machine's cores too."""
        self.shared_cpu = shared_cpu
        if not 1 <= len(lanes) <= MAX_LANES:
            raise ValueError(f"an experiment has 1 to {MAX_LANES} lanes, got {len(lanes)}")
        self.name, self.dataset = name, data
        self.device = devices.resolve_device(settings.device)
        self.settings = settings
        self._lock = threading.Lock()  # guards the histories and the lane list (held only to append or copy)
        self._cv = threading.Condition()  # guards the command queue and the state below
        self._commands, self._status, self._error = [], Status.IDLE, None  # commands: [(fn, Future)]
        self._step_budget, self._stopping, self._closed = 0, False, False
        self._build(settings, lanes)
        self._started_at, self._wall = None, 0.0
        self._thread = threading.Thread(target=self._work, name=f"bnviz-{name}", daemon=True)
        self._thread.start()

    def _build(self, settings, specs):
        self.settings = settings
        self.data = ExperimentData.from_dataset(self.dataset, settings, self.device)
        self.lanes = [Lane(i, spec, settings, self.data, self.device) for i, spec in enumerate(specs)]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    # ------------------------------------------------------------------ commands (any thread)
    def _submit(self, fn):
        """Queue fn for the worker; its Future."""
        future = concurrent.futures.Future()
        with self._cv:
            if self._closed or not self._thread.is_alive():  # _closed: the worker has stopped taking commands
                raise RuntimeError(f"the experiment is {self._status}: its worker has stopped")
            self._commands.append((fn, future))
            self._cv.notify_all()
        return future

    def _lane(self, index):
        if not 0 <= index < len(self.lanes):
            raise ValueError(f"there is no lane {index}")
        return self.lanes[index]

    @on_worker
    def start(self) -> None:
        if self._status in (Status.IDLE, Status.PAUSED, Status.FINISHED, Status.STOPPED):
            self._set_status(Status.RUNNING)

    resume = start

    @on_worker
    def pause(self) -> None:
        self._step_budget = 0
        if self._status == Status.RUNNING:
            self._set_status(Status.PAUSED)

    @on_worker
    def step(self, n: int = 1) -> None:
        """Train n steps (every lane), then pause."""
        self._step_budget = int(n)
        self._set_status(Status.PAUSED)

    @on_worker
    def set_lr(self, lr: float) -> None:
        """Change the learning rate of every lane now, without a reset."""
        self.settings = dataclasses.replace(self.settings, lr=float(lr))  # validates
        for lane in self.lanes:
            lane.set_lr(self.settings.lr)

    @on_worker
    def set_lane(self, index: int, spec: LaneSpec) -> None:
        """Give lane ``index`` a new set-up; it restarts from step 0 with the same seed, the others go on."""
        lane = self._lane(index)
        lane.spec = spec
        starts = lane.history.starts.rows(0)
        with self._lock:
            lane.restart()
            lane.history.starts.extend(starts)
            self._mark_start(lane, restart=True)
        if self._status == Status.FINISHED:  # the restarted lane trains on Start; the others stay finished
            self._set_status(Status.PAUSED)

    def _mark_start(self, lane, restart):
        """Record that ``lane`` begins at step 0 while the others are further on (the charts mark the place)."""
        others = max((l.step for l in self.lanes if l is not lane), default=0)
        if others > 0:
            lane.history.starts.append(dict(step=others, restart=1.0 if restart else 0.0))

    @on_worker
    def set_bn_bypass(self, index: int, bypass: bool) -> tuple[float, float]:
        """Switch BN off (identity) or back on in a trained lane, keeping its weights: no restart.

        Returns the validation accuracy (before, after) the switch, measured at once.
        """
        lane = self._lane(index)
        if lane.spec.norm == "none":
            raise ValueError(f"{lane.spec.label} has no BN layers to switch")
        return lane.set_bn_bypass(bypass, self._lock)

    @on_worker
    def recompute_statistics(self, index: int, batches: int = 200) -> dict:
        """PreciseBN on lane ``index``: its running statistics re-estimated over ``batches`` training batches with
        the weights frozen (bnviz/step/precise_bn.py). Recorded as a validation row at the lane's step, so the
        accuracy chart shows the change at once. Returns {before, after, batch (train mode), batches}."""
        lane = self._lane(index)
        batches = int(batches)
        if not 1 <= batches <= 10_000:
            raise ValueError(f"recompute over 1 to 10,000 batches, not {batches}")
        if not layers_with_statistics(lane.model):
            raise ValueError(f"{lane.spec.label} keeps no running statistics to recompute")
        before = evaluate(lane.model, self.data.val_x, self.data.val_y)[1]
        s = lane.settings
        count = recompute_statistics(
            lane.model, self.data.train_x, self.data.train_y, s.batch_size, num_batches=batches, seed=s.seed
        )
        row = lane.validate()
        with self._lock:
            lane.history.val.append(row)
        return dict(before=before, after=row["val_acc"], batch=row["val_acc_batch"], batches=count)

    @on_worker
    def extend(self, epochs: int = 1) -> int:
        """Train ``epochs`` more epochs (1 to 100): finished lanes go on from their last step; nothing restarts."""
        epochs = int(epochs)
        if not 1 <= epochs <= 100:
            raise ValueError(f"train 1 to 100 more epochs, not {epochs}")
        self.settings = dataclasses.replace(self.settings, epochs=self.settings.epochs + epochs)
        for lane in self.lanes:
            lane.extend(epochs)
        if self._status == Status.FINISHED:
            self._set_status(Status.PAUSED)
        return self.settings.epochs

    @on_worker
    def clone_model(self, index: int) -> torch.nn.Module:
        """A copy of lane ``index``'s network as it is now (taken between steps), for side studies."""
        return copy.deepcopy(self._lane(index).model)

    @on_worker
    def add_lane(self, spec: LaneSpec) -> None:
        """A new lane that starts from step 0 with the same seed; the others go on."""
        if len(self.lanes) >= MAX_LANES:
            raise ValueError(f"an experiment has at most {MAX_LANES} lanes")
        with self._lock:
            self.lanes = self.lanes + [Lane(len(self.lanes), spec, self.settings, self.data, self.device)]
            self._mark_start(self.lanes[-1], restart=False)
        if self._status == Status.FINISHED:
            self._set_status(Status.PAUSED)

    @on_worker
    def remove_lane(self, index: int) -> None:
        if len(self.lanes) <= 1:
            raise ValueError("an experiment keeps at least one lane")
        self._lane(index)
        with self._lock:
            lanes = [l for i, l in enumerate(self.lanes) if i != index]
            for i, lane in enumerate(lanes):
                lane.index = i
            self.lanes = lanes

    @on_worker
    def reset(self, settings: Settings | None = None, lanes: Sequence[LaneSpec] | None = None) -> None:
        """Rebuild every lane from the seed (with new settings or lanes if given); history is cleared."""
        settings = settings or self.settings
        specs = tuple(lanes) if lanes is not None else tuple(l.spec for l in self.lanes)
        if not 1 <= len(specs) <= MAX_LANES:
            raise ValueError(f"an experiment has 1 to {MAX_LANES} lanes, got {len(specs)}")
        if devices.resolve_device(settings.device) != self.device:
            raise ValueError("the device is chosen when an experiment is created; make a new experiment")
        self._step_budget = 0
        with self._lock:
            self._build(settings, specs)
        self._wall, self._started_at, self._error = 0.0, None, None
        self._set_status(Status.IDLE)

    def stop(self, timeout: float = 1.0) -> bool:
        """Stop training and end the worker thread; returns True when it is gone."""
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    close = stop

    # ------------------------------------------------------------------ state (any thread)
    @property
    def status(self) -> Status:
        return self._status

    def refresh(self, timeout: float = 2.0) -> Status:
        """The status, as fresh as can be: here it always is (``ExperimentProcess`` asks its child)."""
        return self._status

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def busy(self):
        """Training, stepping, or with commands still to carry out."""
        return self._status == Status.RUNNING or self._step_budget > 0 or bool(self._commands)

    def snapshot(self) -> Snapshot:
        """Every lane as it stands, copied under the history lock taken once: one frame, one moment.

        The status is read first: a snapshot that says "finished" holds every row of the run.
        """
        status, error = self._status, self._error
        with self._lock:
            settings = self.settings
            lanes = tuple(lane.view() for lane in self.lanes)
        return Snapshot(status, error, settings, devices.describe(self.device), lanes, self._wall_s())

    def header(self) -> dict:
        """What the experiment file records besides the tables."""
        return {
            "name": self.name,
            "settings": dataclasses.asdict(self.settings),
            "device": str(self.device),
            "lanes": [dataclasses.asdict(l.spec) for l in self.lanes],
            "torch": torch.__version__,
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }

    def wait(self, timeout: float | None = None, poll: float = 0.02) -> bool:
        """Block until the experiment is no longer running (or stepping); True if it stopped in time."""
        end = None if timeout is None else time.monotonic() + timeout
        while self.busy:
            if not self._thread.is_alive() or (end is not None and time.monotonic() > end):
                return not self._thread.is_alive()
            time.sleep(poll)
        return True

    # ------------------------------------------------------------------ the worker
    def _set_status(self, status):
        if status != Status.RUNNING and threading.current_thread() is self._thread:
            for lane in self.lanes:  # a paused GPU run shows every step it took
                lane.flush(self._lock)
        self._status = status
        if status == Status.RUNNING and self._started_at is None:
            self._started_at = time.monotonic()
        elif status != Status.RUNNING and self._started_at is not None:
            self._wall += time.monotonic() - self._started_at
            self._started_at = None
        _ThreadBudget.update(self, status == Status.RUNNING or self._step_budget > 0)

    def _wall_s(self):
        return self._wall + (time.monotonic() - self._started_at if self._started_at else 0.0)

    def _training(self):
        return (self._status == Status.RUNNING or self._step_budget > 0) and any(
            l.status in (LaneStatus.READY, LaneStatus.TRAINING) for l in self.lanes
        )

    def _work(self):
        try:
            while True:
                with self._cv:
                    while not (self._commands or self._stopping or self._training()):
                        self._cv.wait(0.5)
                    if self._stopping:
                        break
                    commands, self._commands = self._commands, []
                for fn, future in commands:
                    if not future.set_running_or_notify_cancel():
                        continue  # its caller gave up waiting
                    try:
                        future.set_result(fn())
                    except BaseException as e:  # handed back to the caller
                        future.set_exception(e)
                if self._training():
                    self._round()
                elif self._status == Status.RUNNING or self._step_budget > 0:  # started with no lane left to train
                    self._step_budget = 0
                    self._set_status(Status.FINISHED)
        except BaseException as e:
            self._error = f"{type(e).__name__}: {e}"
            self._status = Status.ERROR
            traceback.print_exc()
        finally:
            if self._status != Status.ERROR:
                self._set_status(Status.STOPPED)
            _ThreadBudget.update(self, False)
            with self._cv:  # nobody waits forever on a command the worker will never run
                self._closed = True
                for _, future in self._commands:
                    if future.set_running_or_notify_cancel():
                        future.set_exception(RuntimeError("the experiment has stopped"))
                self._commands = []

    def _round(self):
        """One step of every lane still training, on the same batch index."""
        for lane in self.lanes:
            if lane.status not in (LaneStatus.READY, LaneStatus.TRAINING):
                continue
            lane.status = LaneStatus.TRAINING
            try:
                lane.train_one_step(self._lock)
            except Exception as e:  # this lane stops, the others go on
                lane.status, lane.error = LaneStatus.ERROR, describe_error(e)
        if self._step_budget > 0:
            if self._step_budget == 1:  # rows first: once the budget is spent, wait() returns and may snapshot
                for lane in self.lanes:
                    lane.flush(self._lock)
            self._step_budget -= 1
            if self._step_budget == 0:
                self._set_status(Status.PAUSED)
        if not any(l.status in (LaneStatus.READY, LaneStatus.TRAINING) for l in self.lanes):
            self._step_budget = 0
            self._set_status(Status.FINISHED)


def describe_error(e):
    """A message a person can act on."""
    if isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower():
        return "Out of memory: lower the batch size or the training-set size, or use the CPU."
    return f"{type(e).__name__}: {e}"
