"""What a run leaves behind: growing tables of metrics, a bounded store of distributions, and the
experiment file (save, load, CSV and JSON export).

A ``Table`` holds named columns that grow together, one row per record; a column may hold scalars or
fixed-shape vectors (a histogram, one value per channel). ``ThinnedTable`` keeps at most ``capacity``
rows: when full it drops every other row and from then on keeps every second offer, so the kept rows stay
evenly spread over the whole run and memory stays flat however long it goes.

The experiment file is a NumPy ``.npz`` (no pickle: safe to load from anyone) holding every column as
``lane{i}/{table}/{column}`` plus a JSON header; it is written to a temporary file and renamed, so a crash
mid-write never leaves a half file.
"""

import csv
import io
import json
import os
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np

FORMAT = "bnviz-experiment"
FORMAT_VERSION = 1
TABLES = ("steps", "val", "epochs", "probes", "dists", "landscape", "events")


class RecordingError(ValueError):
    """A file that is not a bnviz experiment, or a damaged one; the message says what to do."""


class Table:
    def __init__(self):
        self._cols = {}
        self._n = 0  # rows
        self._cap = 0  # rows allocated
        self.generation = 0  # changes whenever rows already read may have changed (a thinning, a clear)

    def __len__(self):
        return self._n

    def append(self, row):
        if self._n == self._cap:
            self._grow(max(64, 2 * self._cap))
        for key, value in row.items():
            value = np.asarray(value)
            if key not in self._cols:  # a new column: earlier rows read NaN
                dtype = np.float64 if value.ndim == 0 else np.float32
                self._cols[key] = np.full((self._cap,) + value.shape, np.nan, dtype=dtype)
            self._cols[key][self._n] = value
        for key in self._cols.keys() - row.keys():
            self._cols[key][self._n] = np.nan
        self._n += 1

    def _grow(self, capacity):
        for key, col in self._cols.items():
            new = np.full((capacity,) + col.shape[1:], np.nan, dtype=col.dtype)
            new[: self._n] = col[: self._n]
            self._cols[key] = new
        self._cap = capacity

    def extend(self, cols):
        """Append rows given as columns ({column: array of m rows}), as ``rows()`` returns them."""
        m = len(next(iter(cols.values()))) if cols else 0
        if m == 0:
            return
        if self._n + m > self._cap:
            self._grow(max(64, 2 * self._cap, self._n + m))
        for key, a in cols.items():
            a = np.asarray(a)
            if key not in self._cols:  # a new column: earlier rows read NaN
                self._cols[key] = np.full((self._cap,) + a.shape[1:], np.nan, dtype=a.dtype)
            self._cols[key][self._n : self._n + m] = a
        for key in self._cols.keys() - cols.keys():
            self._cols[key][self._n : self._n + m] = np.nan
        self._n += m

    def rows(self, start=0):
        """Copies of the rows from ``start`` on, as columns."""
        return {key: col[start : self._n].copy() for key, col in self._cols.items()}

    def clear(self):
        self._cols, self._n, self._cap = {}, 0, 0
        self.generation += 1

    def _keep_every_other(self):
        kept = len(range(0, self._n, 2))
        for col in self._cols.values():
            col[:kept] = col[: self._n : 2].copy()
        self._n = kept
        self.generation += 1

    def view(self):
        """An immutable copy: {column: read-only array of the rows so far}."""
        out = {}
        for key, col in self._cols.items():
            a = col[: self._n].copy()
            a.setflags(write=False)
            out[key] = a
        return out

    def nbytes(self):
        return sum(c.nbytes for c in self._cols.values())


class ThinnedTable(Table):
    """At most ``capacity`` rows, evenly spread over every row ever offered."""

    def __init__(self, capacity=200):
        super().__init__()
        if capacity < 2:
            raise ValueError("capacity must be at least 2")
        self.capacity, self.stride, self.offered = capacity, 1, 0

    def offer(self, row):
        """Keep this row if it falls on the current stride; thin when full."""
        if self.offered % self.stride == 0:
            self.append(row)
            if len(self) > self.capacity:  # thin only past capacity: capacity 2 keeps 2 rows, not just the first
                self._keep_every_other()
                self.stride *= 2
        self.offered += 1

    def clear(self):
        super().clear()
        self.stride, self.offered = 1, 0


class LaneHistory:
    """Everything recorded for one lane."""

    def __init__(self, dist_capacity=200):
        self.steps = Table()  # step, epoch, lr, train_loss, train_acc: every step, kept whole
        self.val = Table()  # step, val_loss, val_acc: the fixed validation subset, every K steps
        self.epochs = Table()  # epoch, step, train_loss, train_acc, val_loss, val_acc, images_per_s
        self.probes = Table()  # step and scalar probe results (percentiles, mean, std, grad norms...)
        self.dists = ThinnedTable(dist_capacity)  # step, histograms and per-channel vectors: bounded
        self.landscape = Table()  # step, loss_spread, grad_change, smoothness (when switched on)
        self.events = Table()  # step, bn_on: BN switched off (0) or back on (1) mid-training

    def view(self):
        return {name: getattr(self, name).view() for name in TABLES}

    def rows_since(self, marks):
        """What a mirror lacks: ({table: (replace, columns)}, new marks) given its marks {table: (generation, rows)}.

        A table whose rows the mirror already read are unchanged sends only its new rows; one that was
        thinned since (or that the mirror has never seen) is sent whole, to replace the mirror's copy.
        """
        changes, new_marks = {}, {}
        for name in TABLES:
            table = getattr(self, name)
            generation, n = marks.get(name, (None, 0))
            replace = generation != table.generation or n > len(table)
            changes[name] = (replace, table.rows(0 if replace else n))
            new_marks[name] = (table.generation, len(table))
        return changes, new_marks

    def apply(self, changes):
        """Bring this mirror up to date with what ``rows_since`` returned (in another process)."""
        for name, (replace, cols) in changes.items():
            table = getattr(self, name)
            if replace:
                table.clear()
            table.extend(cols)

    def nbytes(self):
        return sum(getattr(self, name).nbytes() for name in TABLES)


# ---------------------------------------------------------------------------------------------------
# The experiment file


def save_experiment(path, header, lane_views):
    """Write header (JSON-able dict) and each lane's tables (as from LaneHistory.view()) atomically."""
    path = Path(path)
    arrays = {"header": np.array(json.dumps({"format": FORMAT, "version": FORMAT_VERSION, **header}))}
    for i, tables in enumerate(lane_views):
        for table, cols in tables.items():
            for col, a in cols.items():
                arrays[f"lane{i}/{table}/{col}"] = a
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def experiment_bytes(header, lane_views):
    """The experiment file's bytes (for a download button)."""
    with tempfile.TemporaryDirectory() as d:
        return save_experiment(Path(d) / "run.npz", header, lane_views).read_bytes()


def load_experiment(source):
    """(header, [lane tables]) from a path or bytes; RecordingError for anything that is not ours."""
    what = "the file" if isinstance(source, (bytes, bytearray)) else str(source)
    try:
        f = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
        npz = np.load(f, allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):  # a single .npy array
            raise RecordingError(f"{what} is not a bnviz experiment (it holds one NumPy array).")
        with npz:
            header = json.loads(str(npz["header"]))
            if not isinstance(header, dict) or header.get("format") != FORMAT:
                raise RecordingError(f"{what} is not a bnviz experiment.")
            if not isinstance(header.get("version"), int):
                raise RecordingError(f"{what} is not a bnviz experiment (its header has no format version).")
            if header["version"] > FORMAT_VERSION:
                raise RecordingError(f"{what} was written by a newer bnviz (format {header['version']}); update bnviz.")
            lanes = [{t: {} for t in TABLES} for _ in header.get("lanes", [])]
            for key in npz.files:
                if key == "header":
                    continue
                lane, table, col = key.split("/", 2)
                a = npz[key]
                a.setflags(write=False)
                lanes[int(lane[4:])][table][col] = a
    except RecordingError:
        raise
    except (
        OSError,
        ValueError,
        KeyError,
        IndexError,
        EOFError,
        zipfile.BadZipFile,
        json.JSONDecodeError,
        zlib.error,
        NotImplementedError,
        RuntimeError,
    ) as e:  # RuntimeError: zipfile's "encrypted"
        raise RecordingError(
            f"{what} is not a bnviz experiment or is damaged ({type(e).__name__}: {e}). "
            "Load a file saved by bnviz (Export → experiment, or `python -m bnviz train --out`)."
        ) from e
    return header, lanes


def metrics_csv(lane_names, lane_views):
    """Per-step metrics of every lane as CSV text, one row per step.

    Columns: lane, step, epoch, lr, train_loss, train_acc, val_loss, val_acc, test_loss, test_acc. ``val_*`` are
    filled on the steps where the validation subset was checked; ``test_*`` (the full test set, from the
    ``epochs`` table) on the step where an epoch ended; both are empty elsewhere.
    """

    def by_step(table, loss, acc):
        steps = table.get("step", np.array([])).astype(int).tolist()
        return dict(zip(steps, zip(table.get(loss, []), table.get(acc, []))))

    def number(x):
        return x if x == "" else f"{x:.6g}"

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(
        ["lane", "step", "epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc"]
    )
    for name, tables in zip(lane_names, lane_views):
        steps = tables["steps"]
        val_at = by_step(tables["val"], "val_loss", "val_acc")
        test_at = by_step(tables["epochs"], "val_loss", "val_acc")  # the epochs table's val_* are the full test set
        for i in range(len(steps.get("step", []))):
            s = int(steps["step"][i])
            vl, va = val_at.get(s, ("", ""))
            tl, ta = test_at.get(s, ("", ""))
            w.writerow(
                [
                    name,
                    s,
                    int(steps["epoch"][i]),
                    f"{steps['lr'][i]:g}",
                    f"{steps['train_loss'][i]:.6g}",
                    f"{steps['train_acc'][i]:.6g}",
                    number(vl),
                    number(va),
                    number(tl),
                    number(ta),
                ]
            )
    return buf.getvalue()


def to_jsonable(tables):
    """Tables as nested lists (NaN as null), for JSON export."""

    def clean(a):
        a = np.asarray(a, dtype=float)
        return np.where(np.isfinite(a), a, None).tolist() if a.size else []

    return {t: {c: clean(a) for c, a in cols.items()} for t, cols in tables.items()}
