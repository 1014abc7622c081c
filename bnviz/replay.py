"""A recorded experiment, seen as the live engine's snapshots: every chart works the same on it.

``Recording.snapshot(at_step)`` cuts every table at a step, so a timeline can play a run back. A recording
is read-only: it offers what ``interface.ExperimentView`` declares (``settings``, ``snapshot()``, ``header()``).
"""

import math

from .data import num_batches
from .history import RecordingError, load_experiment
from .snapshot import LaneSpec, LaneStatus, LaneView, Settings, Snapshot, Status


class Recording:
    def __init__(self, meta, lane_tables, name=""):
        """meta: the experiment file's header (name, settings, device, lanes, ...); lane_tables: one per lane."""
        self.meta, self.lane_tables, self.name = meta, lane_tables, name or meta.get("name", "recording")
        try:
            known = Settings.__dataclass_fields__
            self.settings = Settings(**{k: v for k, v in meta.get("settings", {}).items() if k in known})
            self.specs = [LaneSpec(**l) for l in meta["lanes"]]
        except (TypeError, ValueError, KeyError) as e:
            raise RecordingError(f"The experiment's settings cannot be read ({e}).") from e
        if not self.specs or len(self.specs) != len(lane_tables):
            raise RecordingError("The experiment holds no lanes.")

    @classmethod
    def load(cls, source, name=""):
        meta, lanes = load_experiment(source)
        return cls(meta, lanes, name)

    def header(self):
        """What the experiment file records besides the tables (as ``Experiment.header()``): ``self.meta``."""
        return self.meta

    @property
    def last_step(self):
        return max(
            (int(t["steps"]["step"][-1]) for t in self.lane_tables if len(t["steps"].get("step", []))), default=0
        )

    def snapshot(self, at_step=None):
        """The run as it stood after ``at_step`` steps (the end when None)."""
        end = self.last_step
        at = end if at_step is None else max(0, min(int(at_step), end))
        lanes = []
        for i, (spec, tables) in enumerate(zip(self.specs, self.lane_tables)):
            cut = {name: _rows_up_to(cols, at) for name, cols in tables.items()}
            steps = cut["steps"].get("step", [])
            step = int(steps[-1]) if len(steps) else 0
            lane_end = int(tables["steps"]["step"][-1]) if len(tables["steps"].get("step", [])) else 0
            losses = cut["steps"].get("train_loss", [])
            diverged = first_divergence(steps, losses, self.settings)
            epochs = cut["epochs"].get("epoch", [])
            status = (
                LaneStatus.DIVERGED if diverged else (LaneStatus.FINISHED if step >= lane_end else LaneStatus.TRAINING)
            )
            per_epoch = _steps_per_epoch(tables, self.settings)
            ips = float(cut["epochs"]["images_per_s"][-1]) if len(epochs) else 0.0
            epoch = int(cut["steps"]["epoch"][-1]) if len(steps) else 1
            lanes.append(LaneView(i, spec, status, None, step, epoch, per_epoch, ips, diverged, cut))
        status = Status.FINISHED if at >= end else Status.PAUSED
        return Snapshot(status, None, self.settings, f"replay of {self.name}", tuple(lanes))


def first_divergence(steps, losses, settings):
    """The step where a lane diverged, by the engine's rule (NaN or inf, or too high for too long)."""
    run = []
    for step, loss in zip(steps, losses):
        run = run + [step] if not loss <= settings.diverge_loss else []  # too high, or NaN
        if not math.isfinite(loss) or len(run) >= settings.diverge_steps:
            return int(run[0])
    return None


def _rows_up_to(cols, at):
    steps = cols.get("step")
    if steps is None:
        return cols
    keep = steps <= at
    return {k: v[keep] for k, v in cols.items()}


def _steps_per_epoch(tables, settings):
    """From the first epoch's row; before any epoch ended, what the engine's ``data.num_batches`` gives."""
    e = tables["epochs"]
    if len(e.get("step", [])):
        return int(e["step"][0])
    n = settings.train_size or 60_000
    return max(1, num_batches(n, settings.batch_size))
