"""A recorded experiment, seen as the live engine's snapshots: every chart works the same on it.

``Recording.snapshot(at_step)`` cuts every table at a step, so a timeline can play a run back. A recording
is read-only: it offers what ``interface.ExperimentView`` declares (``settings``, ``snapshot()``, ``header()``).
"""

import numpy as np

from bnviz.data.fashion_mnist import num_batches
from bnviz.live.experiment_file import RecordingError, check_tables, load_experiment
from bnviz.live.history import TABLES
from bnviz.live.snapshot import MAX_LANES, LaneSpec, LaneStatus, LaneView, Settings, Snapshot, Status


class Recording:
    released = False  # True once release() dropped the tables

    def __init__(self, meta, lane_tables, name=""):
        """meta: the experiment file's header (name, settings, device, lanes, ...); lane_tables: one per lane.

        Anything that does not describe a run bnviz could have made raises RecordingError with a plain sentence:
        settings of the wrong type or out of range, 1 to MAX_LANES lanes of a known BN and activation, tables
        as ``history.check_tables`` wants them, and as many as the lanes.
        """
        if not isinstance(meta, dict):
            raise RecordingError("The experiment has no header.")
        settings, lanes = meta.get("settings", {}), meta.get("lanes")
        if not isinstance(settings, dict):
            raise RecordingError("The experiment's settings cannot be read (they are not a table of values).")
        if not isinstance(lanes, list) or not 1 <= len(lanes) <= MAX_LANES:
            raise RecordingError(f"The experiment holds no lanes (it must list 1 to {MAX_LANES}).")
        try:
            known = Settings.__dataclass_fields__
            values = {k: v for k, v in settings.items() if k in known}
            for key, value in values.items():
                _check_type(key, value, known[key].type)
            self.settings = Settings(**values)
            if not all(isinstance(l, dict) and set(l) <= set(LaneSpec.__dataclass_fields__) for l in lanes):
                raise ValueError("a lane is not a set-up of BN and activation")
            self.specs = [LaneSpec(**l) for l in lanes]
        except (TypeError, ValueError, KeyError, OverflowError) as e:
            raise RecordingError(f"The experiment's settings cannot be read ({e}).") from e
        if not isinstance(lane_tables, (list, tuple)) or len(self.specs) != len(lane_tables):
            raise RecordingError("The experiment holds no lanes (its tables do not match its lanes).")
        check_tables(lane_tables, "The experiment")
        name = name or meta.get("name", "recording")
        self.meta, self.name = meta, name if isinstance(name, str) else "recording"
        self.lane_tables = [{t: tables.get(t, {}) for t in TABLES} for tables in lane_tables]

    @classmethod
    def load(cls, source, name=""):
        meta, lanes = load_experiment(source)
        return cls(meta, lanes, name)

    def header(self):
        """What the experiment file records besides the tables (as ``Experiment.header()``): ``self.meta``."""
        return self.meta

    def release(self):
        """Drop the tables (the memory: up to 512 MiB of columns); the recording is then an empty run.

        For a recording whose page is gone while something may still hold the object itself: Streamlit keeps
        the session state of the last tab it sent messages to until it sends to another (ui/server.py)."""
        self.lane_tables = [{t: {} for t in TABLES} for _ in self.specs]
        self.released = True

    @property
    def last_step(self):
        return max(
            (int(t["steps"]["step"][-1]) for t in self.lane_tables if len(t["steps"].get("step", []))), default=0
        )

    def snapshot(self, at_step=None):
        """The run as it stood after ``at_step`` steps (the end when None); its tables are views of the recording's."""
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


_KINDS = {float: ((int, float), "a number"), int: ((int,), "a whole number"), str: ((str,), "a text")}


def _check_type(key, value, annotation):
    """A setting of the type its field declares (JSON gives any type): int for counts, a number for rates."""
    allowed, words = (), []
    for t in getattr(annotation, "__args__", (annotation,)):  # int | None: either
        types, word = _KINDS.get(t, ((t,), "nothing" if t is type(None) else t.__name__))
        allowed, words = allowed + types, words + [word]
    if isinstance(value, bool) or not isinstance(value, allowed):
        raise TypeError(f"the setting {key} is {value!r:.40}, not {' or '.join(words)}")
    if isinstance(value, int) and float in allowed:
        try:
            float(value)
        except OverflowError:
            raise ValueError(f"the setting {key} is too large a number") from None


def first_divergence(steps, losses, settings):
    """The step where a lane diverged, by the engine's rule (NaN or inf, or too high for too long).

    In array operations: a replay asks at every snapshot, and a run has up to 3,000,000 steps (a Python loop
    over them took 18 s a snapshot)."""
    losses = np.asarray(losses, dtype=float)
    if not len(losses):
        return None
    bad = ~(losses <= settings.diverge_loss)  # too high, or NaN
    index = np.arange(len(losses))
    run = index - np.maximum.accumulate(np.where(bad, -1, index))  # bad steps in a row, ending here
    hit = ~np.isfinite(losses) | (run >= settings.diverge_steps)
    if not hit.any():
        return None
    i = int(np.argmax(hit))
    return int(np.asarray(steps)[i - run[i] + 1])


def _rows_up_to(cols, at):
    """The rows up to step ``at``, as views of the recording's arrays (no copy: a snapshot of a 512 MiB recording
    costs nothing). A table's steps never go back (``check_tables``), so they are its first rows."""
    steps = cols.get("step")
    if steps is None:
        return cols
    n = int(np.searchsorted(steps, at, side="right"))
    return {k: v[:n] for k, v in cols.items()}


def _steps_per_epoch(tables, settings):
    """From the first epoch's row; before any epoch ended, what the engine's ``data.num_batches`` gives."""
    e = tables["epochs"]
    if len(e.get("step", [])):
        return int(e["step"][0])
    n = settings.train_size or 60_000
    return max(1, num_batches(n, settings.batch_size))
