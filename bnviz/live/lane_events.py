"""What happened to a lane during its run, read off its tables: BN switched off or on, a learning-rate change,
a restart (or the lane added late), each with the validation accuracy before it and after it.

Every caption, the scoreboard, the status line and every export (CSV, the HTML page) says a lane's events
with ``describe``, so a sentence about a lane that fell to chance names why ("B: BN switched off at step 400:
80.6% → 13.0%") instead of calling it "still at chance". The tables are the ones ``history.LaneHistory``
keeps: ``events`` (step, bn_on, and since this module val_before and val_after: the accuracies measured at
the switch), ``steps`` (its lr column), ``starts`` (step: where the others were; restart 1, or 0 for a lane
added) and ``val``. No Streamlit, no torch here.
"""

import math
from dataclasses import dataclass

import numpy as np

CHANCE = 0.10  # ten classes: guessing, or always answering one class, scores about 10%
CHANCE_MARGIN = 0.05  # "at chance" within 5 points of 10%: a net that favours one or two classes scores 8-15%
COLLAPSE_DROP = 0.25  # an lr change "collapses" a lane that falls to chance, or loses more than 25 points of accuracy
KINDS = ("bn_off", "bn_on", "lr", "restart", "added")


def at_chance(acc: float) -> bool:
    """Validation accuracy within CHANCE_MARGIN of chance (10%)."""
    return abs(acc - CHANCE) <= CHANCE_MARGIN


def left_chance(tables: dict) -> bool:
    """Whether any validation check of this lane (since its latest restart) scored above chance's margin."""
    acc = np.asarray(tables.get("val", {}).get("val_acc", []), dtype=float)
    return bool(np.any(acc[np.isfinite(acc)] > CHANCE + CHANCE_MARGIN))


@dataclass(frozen=True)
class LaneEvent:
    """One thing that happened to a lane. ``step`` is the lane's own step (for a restart or an added lane:
    the step the other lanes had reached, where the charts mark it; the lane itself counts from 0 there)."""

    step: int
    kind: str  # one of KINDS
    before: float | None = None  # validation accuracy before (None: no check yet)
    after: float | None = None  # after: measured at once for a BN switch; the latest check since for an lr change
    after_step: int | None = None  # the step of ``after``
    lr_from: float | None = None
    lr_to: float | None = None
    collapsed: bool = False  # an lr change after which the lane fell to chance, lost COLLAPSE_DROP, or diverged
    diverged_at: int | None = None  # the lane diverged after this lr change, at this step

    def describe(self, letter: str = "") -> str:
        """One sentence without its full stop, e.g. 'B: BN switched off at step 400: 80.6% → 13.0%'; without
        ``letter`` (a table's row names the lane already): 'BN switched off at step 400: 80.6% → 13.0%'."""
        if self.kind in ("restart", "added"):
            what = "restarted" if self.kind == "restart" else "was added"
            text = f"{what} when the others were at step {self.step:,}: it counts its steps from 0 there"
            return f"{letter} {text}" if letter else text
        if self.kind in ("bn_off", "bn_on"):
            what = "BN switched off" if self.kind == "bn_off" else "BN switched back on"
            text = f"{what} at step {self.step:,}: {_acc(self.before)} → {_acc(self.after)}"
        else:
            text = f"learning rate {self.lr_from:g} → {self.lr_to:g} at step {self.step:,}"
            if self.diverged_at is not None:
                text += f": {_acc(self.before)} before, then it diverged at step {self.diverged_at:,}"
            elif self.after is None:
                text += f": {_acc(self.before)} before, no validation check since"
            else:
                drop = 100 * (self.before - self.after) if self.before is not None else 0.0
                verdict = ""
                if self.collapsed:
                    verdict = (
                        ", it collapsed to chance"
                        if at_chance(self.after)
                        else f", it collapsed ({drop:.1f} points down)"
                    )
                text += f": {_acc(self.before)} → {_acc(self.after)} (step {self.after_step:,}){verdict}"
        return f"{letter}: {text}" if letter else text

    def short(self) -> str:
        """A few words for a status line: 'BN off at step 400', 'lr 0.1 → 10 at step 153, collapsed', 'restarted'."""
        if self.kind in ("restart", "added"):
            return f"{'restarted' if self.kind == 'restart' else 'added'} at the others' step {self.step:,}"
        if self.kind in ("bn_off", "bn_on"):
            return f"BN {'off' if self.kind == 'bn_off' else 'back on'} at step {self.step:,}"
        text = f"lr {self.lr_from:g} → {self.lr_to:g} at step {self.step:,}"
        return f"{text}, collapsed" if self.collapsed else text


def _acc(x):
    return "no check yet" if x is None else f"{x:.1%}"


def _finite(x):
    return x is not None and math.isfinite(x)


def _val(tables):
    v = tables.get("val", {})
    steps = np.asarray(v.get("step", []), dtype=float)
    acc = np.asarray(v.get("val_acc", []), dtype=float)
    return steps, acc


def _flips(tables):
    ev = tables.get("events", {})
    steps, acc = _val(tables)
    used = set()  # val rows already taken as some switch's "after"
    out = []
    for i, (step, on) in enumerate(zip(ev.get("step", []), ev.get("bn_on", []))):
        step = int(step)
        before = ev["val_before"][i] if "val_before" in ev else None
        after = ev["val_after"][i] if "val_after" in ev else None
        if not (_finite(before) and _finite(after)):  # a run saved before these columns: the val rows at the switch
            at = [j for j in np.flatnonzero(steps == step) if j not in used]
            j = at[-1] if at else None
            if j is not None and np.isfinite(acc[j]):
                used.add(j)
                after = float(acc[j])
                earlier = np.flatnonzero(np.isfinite(acc[:j]))
                before = float(acc[earlier[-1]]) if len(earlier) else None
            else:
                before = after = None
        out.append(LaneEvent(step, "bn_on" if on else "bn_off", _num(before), _num(after), step))
    return out


def _num(x):
    return float(x) if _finite(x) else None


def _lr_changes(tables, diverged_at, flips):
    s = tables.get("steps", {})
    lr = np.asarray(s.get("lr", []), dtype=float)
    steps = np.asarray(s.get("step", []), dtype=float)
    vsteps, acc = _val(tables)
    changes = np.flatnonzero(lr[1:] != lr[:-1]) + 1 if len(lr) > 1 else []
    bounds = [int(steps[i]) for i in changes]
    out = []
    for k, i in enumerate(changes):
        step = int(steps[i])  # the first step trained at the new rate
        end = min(bounds[k + 1 :] + [f.step for f in flips if f.step >= step], default=None)
        ok = np.isfinite(acc)
        prior = np.flatnonzero(ok & (vsteps < step))
        since = np.flatnonzero(ok & (vsteps >= step) & ((vsteps < end) if end is not None else True))
        before = float(acc[prior[-1]]) if len(prior) else None
        after, after_step = (float(acc[since[-1]]), int(vsteps[since[-1]])) if len(since) else (None, None)
        div = int(diverged_at) if diverged_at is not None and diverged_at >= step and end is None else None
        fell = (
            after is not None
            and before is not None
            and (at_chance(after) and not at_chance(before) or before - after > COLLAPSE_DROP)
        )
        rates = float(lr[i - 1]), float(lr[i])
        out.append(LaneEvent(step, "lr", before, after, after_step, *rates, fell or div is not None, div))
    return out


def lane_events(tables: dict, diverged_at: int | None = None) -> list[LaneEvent]:
    """Every event of one lane, in order of step: its restarts first (they came before its current steps)."""
    starts = tables.get("starts", {})
    begun = [
        LaneEvent(int(step), "restart" if restart else "added")
        for step, restart in zip(starts.get("step", []), starts.get("restart", []))
    ]
    flips = _flips(tables)
    rest = sorted(flips + _lr_changes(tables, diverged_at, flips), key=lambda e: e.step)
    return begun + rest


def latest(tables: dict, diverged_at: int | None = None) -> LaneEvent | None:
    """The lane's latest event, None without one."""
    events = lane_events(tables, diverged_at)
    return events[-1] if events else None


def sentences(letter: str, tables: dict, diverged_at: int | None = None) -> list[str]:
    """Each event as a sentence (with its full stop)."""
    return [f"{e.describe(letter)}." for e in lane_events(tables, diverged_at)]
