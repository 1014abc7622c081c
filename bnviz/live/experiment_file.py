"""The experiment file: a run's tables saved as one ``.npz``, its limits, and reading it back safely; CSV and JSON.

The file is a NumPy ``.npz`` (no pickle: safe to load from anyone) holding every column as
``lane{i}/{table}/{column}`` plus a JSON header; it is written to a temporary file and renamed
(``run_folder.write_file``), so a crash mid-write never leaves a half file. Every file is checked member by
member against the limits below before any column is read (docs/LIMITS.md).
"""

import csv
import io
import json
import math
import re
import tempfile
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np

from bnviz.live.history import TABLES
from bnviz.live.lane_events import lane_events
from bnviz.live.run_folder import write_file
from bnviz.live.snapshot import MAX_LANES
from bnviz.step.probes import ACT_BINS, HIST_BINS

FORMAT = "bnviz-experiment"
FORMAT_VERSION = 1


class RecordingError(ValueError):
    """A file that is not a bnviz experiment, or a damaged one; the message says what to do."""


def save_experiment(path: str | Path, header: dict, lane_views: Sequence[Mapping]) -> Path:
    """Write header (JSON-able dict) and each lane's tables (as from LaneHistory.view()) atomically."""
    path = Path(path)
    arrays = {"header": np.array(json.dumps({"format": FORMAT, "version": FORMAT_VERSION, **header}))}
    for i, tables in enumerate(lane_views):
        for table, cols in tables.items():
            for col, a in cols.items():
                arrays[f"lane{i}/{table}/{col}"] = a
    return write_file(path, lambda f: np.savez_compressed(f, **arrays))  # type: ignore[arg-type]


def experiment_bytes(header: dict, lane_views: Sequence[Mapping]) -> bytes:
    """The experiment file's bytes (for a download button)."""
    with tempfile.TemporaryDirectory() as d:
        return save_experiment(Path(d) / "run.npz", header, lane_views).read_bytes()


# ---------------------------------------------------------------------------------------------------
# Limits on an experiment file (docs/LIMITS.md). A file is checked against them before any column is read,
# so a small upload cannot make the server allocate gigabytes (a zip bomb), and after reading, so nothing
# else in bnviz meets a column it does not expect.
#
# Rows: every table gets at most one row per training step (epochs: one per epoch; dists: dist_capacity; val
# and events also one per click on a BN switch), and a step is at most the number of steps a run can take:
# the dashboard trains up to 100 epochs, and an epoch is at most 30,000 steps (60,000 images at batch size 2,
# the smallest BN accepts), so 3,000,000.
MAX_ROWS = 100 * 30_000
# Columns per table: the probes table has 75 (bn1..bn4 x in/out/act x p15/p50/p85/mean/std, saturation,
# grad norm and update ratio of 5 layers, step), the dists table 37: 256 leaves room for new probes.
MAX_COLUMNS = 256
# A vector (one dists row of a column) is a histogram (HIST_BINS or ACT_BINS bins) or one value per BN
# channel (6, 16, 120 and 84 channels: at most 120, fc1's width, where bn3 sits).
MAX_CHANNELS = 120
MAX_VECTOR = max(HIST_BINS, ACT_BINS, MAX_CHANNELS)
# All columns together, uncompressed (what loading takes in memory). The shipped 10-epoch run of 2 lanes is
# 2.45 MB (1.26 MB on disk): per lane, 40 bytes a step (steps: 5 columns x 8), 641 bytes a probe (75 columns),
# 24 a validation, and at most 200 distribution rows of 9.3 kB (1.9 MB). A 100-epoch run at the defaults
# (batch 128: 46,900 steps, a probe every 20) is then 5.3 MB a lane, 16 MB for 3 lanes; the heaviest the
# dashboard records (3 lanes, 100 epochs at batch 16: 375,000 steps, a probe every 5) 66 MB a lane, 200 MB in
# all. 512 MiB holds that 2.7 times over, and any run of 3 lanes up to 100 epochs at batch 3 or more with a
# probe every 20 steps (72 bytes a step: 20,000 steps x 100 epochs x 3 lanes = 430 MB).
MAX_TOTAL_BYTES = 512 * 2**20
MAX_HEADER_BYTES = 2**20  # the JSON header (settings, lanes, names): 2.2 kB in the shipped run
MAX_MEMBERS = 1 + MAX_LANES * len(TABLES) * MAX_COLUMNS  # the header and every column of every table
# The zip's directory: ZipFile builds an object for each entry it lists before anything can be checked
# (500,000 empty entries, a 60 MB file, take 300 MB and 6 s), so its size is read from the zip's end record
# first, with zipfile's own reader of it (private, but there since Python 2; were it gone, the check is skipped
# and the upload limit bounds the directory). An entry of ours takes 74 bytes in the shipped run.
MAX_DIRECTORY_BYTES = MAX_MEMBERS * 256
# How a member may be compressed: as NumPy writes it, stored (np.savez) or deflated (np.savez_compressed).
# zipfile inflates a deflated member at most as far as it reads, but a bzip2 or LZMA member in one go, whatever
# size it declares: a 3 kB bzip2 member declaring 128 bytes unpacked to 2 GiB on reading its first 8 bytes.
COMPRESSIONS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}
METHOD_NAMES = {zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "LZMA"}
# The columns that bnviz writes to every table that has rows: what the charts read.
REQUIRED = {
    "steps": ("step", "epoch", "lr", "train_loss", "train_acc"),
    "val": ("step", "val_loss", "val_acc"),
    "epochs": ("epoch", "step", "train_loss", "train_acc", "val_loss", "val_acc", "images_per_s"),
    "probes": ("step",),
    "dists": ("step",),
    "landscape": ("step", "loss_min", "loss_max", "loss_spread", "grad_change", "smoothness"),
    "events": ("step", "bn_on"),
    "starts": ("step", "restart"),
}
# ... and those that replay.Recording itself reads (a Recording built by hand needs only these).
READ = {"steps": ("step", "epoch"), "epochs": ("step", "images_per_s")}
VECTOR_TABLES = ("dists",)  # the one table whose columns may hold a vector per row
NUMERIC_KINDS = "biuf"  # bool, int, unsigned, float: never objects, strings, structures or dates
HINT = "Load a file saved by bnviz (Export → experiment, or `python -m bnviz train --out`)."
_HEADER = "header.npy"
_COLUMN = re.compile(r"lane(0|[1-9][0-9]*)/([a-z]+)/([A-Za-z0-9_.\-]{1,100})\.npy")


def _damaged(what, reason):
    return RecordingError(f"{what} is not a bnviz experiment or is damaged: {reason}. {HINT}")


def _mb(n):
    return f"{n / 2**20:,.1f} MB" if n < 2**30 else f"{n / 2**30:,.1f} GB"


def load_experiment(source: str | Path | bytes | BinaryIO) -> tuple[dict, list[dict]]:
    """(header, [lane tables]) from a path, bytes or a binary file; RecordingError for anything that is not ours.

    Every limit above is checked on what the zip and each column's .npy header declare, before any column
    is read, and the values afterwards (``check_tables``): a hostile file gets a sentence, never a traceback,
    and never takes more memory than ``MAX_TOTAL_BYTES``.
    """
    what = "The file" if isinstance(source, (bytes, bytearray, memoryview)) else str(source)
    try:
        f: BinaryIO
        if isinstance(source, (bytes, bytearray, memoryview)):
            f, close = io.BytesIO(source), False
        elif hasattr(source, "read"):
            f, close = source, False  # type: ignore[assignment]  # a file object (hasattr read)
            what = str(getattr(source, "name", "The file"))
        else:
            f, close = open(source, "rb"), True
        try:
            header, lanes = _read_experiment(f, what)
        finally:
            if close:
                f.close()
        check_tables(lanes, what, required=REQUIRED)
    except RecordingError:
        raise
    except (
        OSError,
        ValueError,
        TypeError,
        KeyError,
        IndexError,
        EOFError,
        OverflowError,
        zipfile.BadZipFile,
        zlib.error,
        NotImplementedError,
        RuntimeError,
    ) as e:  # RuntimeError: zipfile's "encrypted" and json's RecursionError
        raise RecordingError(f"{what} is not a bnviz experiment or is damaged ({type(e).__name__}: {e}). {HINT}") from e
    return header, lanes


def _read_experiment(f, what):
    start = f.tell()
    if f.read(6) == b"\x93NUMPY":
        raise RecordingError(f"{what} is not a bnviz experiment (it holds one NumPy array). {HINT}")
    f.seek(start)
    end = zipfile._EndRecData(f) if hasattr(zipfile, "_EndRecData") else None  # what ZipFile reads first
    if end and end[zipfile._ECD_SIZE] > MAX_DIRECTORY_BYTES:
        raise _damaged(what, f"its zip directory lists about {end[zipfile._ECD_ENTRIES_TOTAL]:,} entries")
    f.seek(start)
    with zipfile.ZipFile(f) as z:
        infos = z.infolist()
        names = [i.filename for i in infos]
        if _HEADER not in names:
            raise _damaged(what, "it has no header")
        if len(infos) > MAX_MEMBERS:
            raise _damaged(what, f"it holds {len(infos):,} entries, and an experiment at most {MAX_MEMBERS:,}")
        if len(set(names)) != len(names):
            raise _damaged(what, "it holds the same entry twice")
        for info in infos:  # before any member is opened: opening one may unpack all of it
            if info.compress_type not in COMPRESSIONS:
                method = METHOD_NAMES.get(info.compress_type, f"method {info.compress_type}")
                raise _damaged(
                    what,
                    f"its entry {info.filename[:80]!r} is compressed with {method}, and bnviz reads only what "
                    "NumPy writes (stored or deflate)",
                )
        total = sum(i.file_size for i in infos)
        if total > MAX_TOTAL_BYTES:
            raise _too_big(what, total)
        header_info = infos[names.index(_HEADER)]
        header = _check_header(_read_header(z, header_info, what), what)

        # Every column's name, type and shape, from its .npy header alone.
        plan, rows = [], {}
        for info in infos:
            if info is header_info:
                continue
            m = _COLUMN.fullmatch(info.filename)
            if not m:
                raise _damaged(what, f"it holds {info.filename[:80]!r}, which is not a column of a bnviz run")
            lane, table, col = int(m[1]), m[2], m[3]
            if table not in TABLES:
                raise _damaged(what, f"it holds a table called {table!r}, and bnviz writes only {', '.join(TABLES)}")
            if lane >= len(header["lanes"]):
                raise _damaged(
                    what, f"it holds columns of lane {lane + 1}, and its header lists {len(header['lanes'])}"
                )
            name = f"lane {lane + 1}, {table}.{col}"
            with z.open(info) as member:
                shape, dtype, offset = _column_header(member, name)
            _check_column(shape, dtype, table, name, what)
            if info.file_size != offset + math.prod(shape) * dtype.itemsize:
                raise _damaged(what, f"the column {name} is not as long as its header says")
            n = rows.setdefault((lane, table), shape[0])
            if shape[0] != n:
                raise _damaged(what, f"the columns of lane {lane + 1}'s {table} table differ in length")
            plan.append((lane, table, col, info))
        for (lane, table), _ in rows.items():
            if sum(1 for p in plan if p[:2] == (lane, table)) > MAX_COLUMNS:
                raise _damaged(what, f"lane {lane + 1}'s {table} table has more than {MAX_COLUMNS} columns")

        # Only now the data: at most what the headers declared, which is at most MAX_TOTAL_BYTES.
        lanes = [{t: {} for t in TABLES} for _ in header["lanes"]]
        for lane, table, col, info in plan:
            with z.open(info) as member:
                a = np.lib.format.read_array(member, allow_pickle=False)
            a.setflags(write=False)
            lanes[lane][table][col] = a
    return header, lanes


def _too_big(what, nbytes):
    return RecordingError(
        f"{what} is too big to open: its tables would take {_mb(nbytes)} of memory, and a bnviz experiment "
        f"holds at most {_mb(MAX_TOTAL_BYTES)} (a 100-epoch run of three lanes takes about 15 MB). It is "
        f"damaged or was not saved by bnviz. {HINT}"
    )


def _column_header(f, name):
    """(shape, dtype, bytes before the data) of the .npy in ``f``, reading its header only."""
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        raise ValueError(f"the column {name} is in NumPy format {version}, which bnviz does not write")
    return tuple(shape), dtype, f.tell()


def _read_header(z, info, what):
    if info.file_size > MAX_HEADER_BYTES:
        raise _damaged(what, f"its header takes {_mb(info.file_size)}")
    with z.open(info) as member:
        shape, dtype, _ = _column_header(member, "header")
        if dtype.kind != "U" or shape != ():
            raise _damaged(what, "its header is not a text")
        member.seek(0)
        text = str(np.lib.format.read_array(member, allow_pickle=False)[()])
    return json.loads(text)


def _check_header(header, what):
    """The header's shape as bnviz writes it; what the values mean (settings, BN, activation) is for Recording."""
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise RecordingError(f"{what} is not a bnviz experiment. {HINT}")
    version = header.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise RecordingError(f"{what} is not a bnviz experiment (its header has no format version). {HINT}")
    if version > FORMAT_VERSION:
        raise RecordingError(f"{what} was written by a newer bnviz (format {version}); update bnviz.")
    lanes = header.get("lanes")
    if not isinstance(lanes, list) or not 1 <= len(lanes) <= MAX_LANES:
        raise _damaged(what, f"its header must list 1 to {MAX_LANES} lanes")
    if not all(isinstance(lane, dict) for lane in lanes):
        raise _damaged(what, "a lane in its header is not a set-up (BN and activation)")
    if not isinstance(header.get("settings", {}), dict):
        raise _damaged(what, "the settings in its header are not a table of values")
    for key in ("name", "device", "torch", "saved_at"):
        if not isinstance(header.get(key, ""), str):
            raise _damaged(what, f"the {key} in its header is not a text")
    return header


def _check_column(shape, dtype, table, name, what):
    """A column's declared type and shape, against the limits."""
    if dtype.kind not in NUMERIC_KINDS or dtype.hasobject or dtype.fields is not None or dtype.shape != ():
        raise _damaged(what, f"the column {name} holds {dtype} values, not numbers")
    ndim = 2 if table in VECTOR_TABLES else 1
    if not 1 <= len(shape) <= ndim:
        raise _damaged(what, f"the column {name} has {len(shape)} dimensions, and a {table} column 1 to {ndim}")
    if shape[0] > MAX_ROWS:
        raise _damaged(
            what, f"the column {name} claims {shape[0]:,} rows, more than the {MAX_ROWS:,} steps a run takes"
        )
    if len(shape) == 2 and not 1 <= shape[1] <= MAX_VECTOR:
        raise _damaged(what, f"the column {name} claims {shape[1]:,} values a row, and bnviz records 1 to {MAX_VECTOR}")
    if math.prod(shape) * dtype.itemsize > MAX_TOTAL_BYTES:
        raise _too_big(what, math.prod(shape) * dtype.itemsize)


def check_tables(lane_tables, what="The experiment", required=READ):
    """Every lane's tables as bnviz writes them, or RecordingError with a plain sentence.

    Known tables only; every column a 1-D numeric array (a dists column may hold a vector per row, 2-D);
    the columns of a table equally long; a table with rows has ``step`` and the columns in ``required``;
    step numbers finite, from 0 to MAX_ROWS and never going back (the steps table's rising one by one or
    more, from 1); epoch numbers finite.
    """
    for i, tables in enumerate(lane_tables):
        lane = f"lane {i + 1}"
        if not isinstance(tables, dict):
            raise _damaged(what, f"{lane} has no tables")
        unknown = [str(t)[:40] for t in tables if t not in TABLES]
        if unknown:
            raise _damaged(what, f"{lane} has a table called {unknown[0]!r}, and bnviz writes only {', '.join(TABLES)}")
        for table, cols in tables.items():
            if not isinstance(cols, dict) or len(cols) > MAX_COLUMNS:
                raise _damaged(what, f"{lane}'s {table} table is not a set of columns")
            lengths = set()
            for col, a in cols.items():
                name = f"{lane}, {table}.{str(col)[:40]}"
                if not isinstance(col, str) or not isinstance(a, np.ndarray):
                    raise _damaged(what, f"the column {name} is not an array")
                _check_column(a.shape, a.dtype, table, name, what)
                lengths.add(len(a))
            if len(lengths) > 1:
                raise _damaged(what, f"the columns of {lane}'s {table} table differ in length")
            if not cols or not lengths.pop():
                continue
            missing = [c for c in ("step", *required.get(table, ())) if c not in cols]
            if missing:
                raise _damaged(what, f"{lane}'s {table} table has no {missing[0]} column")
            for col in ("step", "epoch"):
                if col in cols:
                    _check_counts(cols[col], table, col, f"{lane}'s {table} table", what)


def _check_counts(a, table, col, where, what):
    """Step (or epoch) numbers: 1-D, finite, in range, never going back."""
    if a.ndim != 1:
        raise _damaged(what, f"{where} has {col} numbers that are not one per row")
    x = a.astype(np.float64)
    if not np.isfinite(x).all():
        raise _damaged(what, f"{where} has {col} numbers that are not numbers (NaN or infinite)")
    low = 1 if table in ("steps", "epochs") else 0
    if x.min() < low or x.max() > MAX_ROWS:
        raise _damaged(what, f"{where} has {col} numbers outside {low} to {MAX_ROWS:,}")
    d = np.diff(x)
    if (d < 0).any() or (col == "step" and table == "steps" and (d <= 0).any()):
        raise _damaged(what, f"{where} has {col} numbers that go back")


def metrics_csv(lane_names: Sequence[str], lane_views: Sequence[Mapping]) -> str:
    """Per-step metrics of every lane as CSV text, one row per step.

    Columns: lane, step, epoch, lr, train_loss, train_acc, val_loss, val_acc, test_loss, test_acc. ``val_*`` are
    filled on the steps where the validation subset was checked; ``test_*`` (the full test set, from the
    ``epochs`` table) on the step where an epoch ended; both are empty elsewhere. ``event`` says what happened
    to the lane at that step, with the validation accuracy before and after (lane_events): "BN switched off at
    step 400: 80.6% → 13.0%" (then val_acc is the accuracy after the switch), a learning-rate change; a
    restart (or a lane added late) on the lane's first row. ``lane_events`` reads each lane's tables whole.
    """

    def by_step(table, loss, acc):
        steps = table.get("step", np.array([])).astype(int).tolist()
        return dict(zip(steps, zip(table.get(loss, []), table.get(acc, []))))

    def number(x):
        return x if x == "" else f"{x:.6g}"

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(
        [
            "lane",
            "step",
            "epoch",
            "lr",
            "train_loss",
            "train_acc",
            "val_loss",
            "val_acc",
            "test_loss",
            "test_acc",
            "event",
        ]
    )
    for name, tables in zip(lane_names, lane_views):
        steps = tables["steps"]
        said: dict[int, str] = {}  # step: what happened there
        first = int(steps["step"][0]) if len(steps.get("step", [])) else 0
        for e in lane_events(dict(tables)):
            at = first if e.kind in ("restart", "added") else e.step
            said[at] = "; ".join(filter(None, [said.get(at), e.describe()]))
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
                    said.get(s, ""),
                ]
            )
    return buf.getvalue()


def to_jsonable(tables: Mapping) -> dict:
    """Tables as nested lists (NaN as null), for JSON export."""

    def clean(a):
        a = np.asarray(a, dtype=float)
        return np.where(np.isfinite(a), a, None).tolist() if a.size else []

    return {t: {c: clean(a) for c, a in cols.items()} for t, cols in tables.items()}
