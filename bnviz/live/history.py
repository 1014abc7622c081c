"""What a run leaves behind while it trains: growing tables of metrics and a bounded store of distributions.

A ``Table`` holds named columns that grow together, one row per record; a column may hold scalars or
fixed-shape vectors (a histogram, one value per channel). ``ThinnedTable`` keeps at most ``capacity``
rows: when full it drops every other row and from then on keeps every second offer, so the kept rows stay
evenly spread over the whole run and memory stays flat however long it goes. A lane's ``LaneHistory`` holds
one of each of its ``TABLES``; ``experiment_file`` saves them and reads them back.
"""

import numpy as np

TABLES = ("steps", "val", "epochs", "probes", "dists", "landscape", "events", "starts")


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
        # step, restart: this lane began again from step 0 (restart 1: a new set-up; 0: a lane added) while
        # the others were at ``step``, where the charts mark it. Kept across the lane's restarts.
        self.starts = Table()

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
