"""The figure builders: pure functions from a snapshot (or a lane) to a Plotly figure."""

import dataclasses

import numpy as np
import plotly.graph_objects as go
import pytest
import torch

from bnviz.data.fashion_mnist import FashionMNISTData
from bnviz.live.engine import Experiment
from bnviz.live.snapshot import LaneSpec, LaneView, Settings, Snapshot
from bnviz.pictures import figures
from bnviz.pictures.figures import LANE_COLORS, MAX_POINTS
from bnviz.step.models import BN_LAYERS

SETTINGS = Settings(train_size=None, batch_size=32, epochs=1, probe_every=2, val_every=4, val_size=100)


@pytest.fixture(scope="module")
def run():
    """A tiny real experiment (BN off | BN scratch, sigmoid) on random images: its snapshot before and after."""
    g = torch.Generator().manual_seed(0)
    data = FashionMNISTData(
        torch.randint(0, 256, (512, 28, 28), dtype=torch.uint8, generator=g),
        torch.arange(512) % 10,
        torch.randint(0, 256, (200, 28, 28), dtype=torch.uint8, generator=g),
        torch.arange(200) % 10,
        "synthetic",
    )
    exp = Experiment(data, SETTINGS, (LaneSpec("none"), LaneSpec("scratch")), name="figures-test")
    try:
        empty = exp.snapshot()
        exp.start()
        assert exp.wait(120), "the tiny experiment did not finish"
        snap = exp.snapshot()
    finally:
        assert exp.stop(timeout=10)
    assert snap.status == "finished" and [l.step for l in snap.lanes] == [16, 16]
    return empty, snap


def annotations(fig):
    return [a.text for a in fig.layout.annotations]


def points(trace):
    for attr in ("x", "z"):
        v = getattr(trace, attr, None)
        if v is not None:
            return len(v)
    return 0


def snapshot_figures(snap, position="bn1"):
    """Every builder that takes a snapshot, with a name."""
    return {
        "loss": figures.loss_figure(snap),
        "loss linear": figures.loss_figure(snap, log_y=False),
        "accuracy": figures.accuracy_figure(snap),
        "histogram": figures.histogram_figure(snap, position),
        "percentiles": figures.percentile_figure(snap, position, "out"),
        "grad norm": figures.gradient_figure(snap, "grad_norm"),
        "update ratio": figures.gradient_figure(snap, "update_ratio"),
        "saturation": figures.saturation_figure(snap),
    }


def lane_figures(lane, position="bn1"):
    return {
        "heatmap in": figures.heatmap_figure(lane, position, "in"),
        "heatmap out": figures.heatmap_figure(lane, position, "out"),
        "running": figures.running_stats_figure(lane, position),
        "batch vs running": figures.batch_vs_running_figure(lane, position),
        "gamma beta": figures.gamma_beta_figure(lane, position),
    }


# ------------------------------------------------------------------------------------------- with data
@pytest.mark.parametrize("position", BN_LAYERS)
def test_every_builder_draws_the_run(run, position):
    _, snap = run
    for name, fig in {**snapshot_figures(snap, position), **lane_figures(snap.lanes[1], position)}.items():
        assert isinstance(fig, go.Figure), name
        assert fig.data, f"{name}: no traces"
        assert all(points(t) > 0 for t in fig.data), f"{name}: an empty trace"
        assert not any("No data yet" in (a or "") for a in annotations(fig)), name
        assert fig.layout.title.text, f"{name}: no title"
        fig.to_json()  # serialisable, as st.plotly_chart needs


def test_the_figures_show_what_was_recorded(run):
    _, snap = run
    off, bn = snap.lanes
    loss = figures.loss_figure(snap)
    assert [t.name for t in loss.data] == ["A · BN off", "B · BN scratch"]
    np.testing.assert_allclose(loss.data[1].x, bn.tables["steps"]["step"])
    np.testing.assert_allclose(loss.data[1].y, bn.tables["steps"]["train_loss"])
    assert loss.layout.yaxis.type == "log"
    assert figures.loss_figure(snap, log_y=False).layout.yaxis.type == "linear"

    acc = figures.accuracy_figure(snap)
    assert [t.name for t in acc.data] == [
        f"{l.label} · {k}" for l in snap.lanes for k in ("train", "validation", "test (epoch)")
    ]
    np.testing.assert_allclose(acc.data[4].y, bn.tables["val"]["val_acc"])
    assert list(acc.layout.yaxis.range) == [0, 1]

    hist = figures.histogram_figure(snap, "bn2")
    assert len(hist.data) == 6 and all(isinstance(t, go.Bar) for t in hist.data)  # 3 panels x 2 lanes
    np.testing.assert_allclose(hist.data[1].y, bn.tables["dists"]["bn2.in.hist"][-1])
    assert f"(step {int(bn.tables['dists']['step'][-1])})" in hist.layout.title.text
    assert [t.showlegend for t in hist.data] == [True, True, False, False, False, False]

    pct = figures.percentile_figure(snap, "bn1")
    assert len(pct.data) == 6  # band top, band bottom, median per lane
    np.testing.assert_allclose(pct.data[5].y, bn.tables["probes"]["bn1.out.p50"])

    grad = figures.gradient_figure(snap)
    assert len(grad.data) == 10 and grad.layout.yaxis.type == "log"
    assert grad.data[0].name == "A · BN off · conv1"

    run_stats = figures.running_stats_figure(bn, "bn3")
    assert len(run_stats.data) == 2 * figures.MAX_CHANNEL_LINES  # 120 units, 8 drawn, in 2 panels
    assert "first 8 of 120 channels" in run_stats.layout.title.text
    means, variances = run_stats.data[: figures.MAX_CHANNEL_LINES], run_stats.data[figures.MAX_CHANNEL_LINES :]
    assert [t.line.color for t in means] == [t.line.color for t in variances]  # channel k: one colour in both panels
    assert len({t.line.color for t in means}) == figures.MAX_CHANNEL_LINES
    bvr = figures.batch_vs_running_figure(bn, "bn1")
    assert [len(t.x) for t in bvr.data] == [6, 6, 6, 6]
    gb = figures.gamma_beta_figure(bn, "bn1")
    np.testing.assert_allclose(gb.data[0].y, bn.tables["dists"]["bn1.gamma"][-1])


def test_the_no_bn_lane_says_it_has_no_bn(run):
    _, snap = run
    off = snap.lanes[0]
    assert off.spec.norm == "none"
    for name in ("running", "batch vs running", "gamma beta"):
        fig = lane_figures(off)[name]
        assert not fig.data, name
        assert any("No BN in this lane" in t for t in annotations(fig)), name
    # but what enters the place where BN would sit is drawn all the same
    assert figures.heatmap_figure(off, "bn1", "in").data


def test_lane_colours_are_the_same_in_every_figure(run):
    _, snap = run

    def colour(trace):
        for c in (getattr(trace, "line", None), getattr(trace, "marker", None)):
            if c is not None and c.color:
                return c.color

    seen = {}
    for fig in snapshot_figures(snap).values():
        for t in fig.data:
            lane = next(l for l in snap.lanes if (t.name or t.legendgroup or "").startswith(l.label))
            seen.setdefault(lane.index, set()).add(colour(t))
    assert seen == {0: {LANE_COLORS[0]}, 1: {LANE_COLORS[1]}}
    # a colour belongs to the lane, not to the order of the traces: lane B alone is still blue
    only_b = Snapshot(snap.status, None, snap.settings, snap.device, (snap.lanes[1],))
    for fig in (figures.loss_figure(only_b), figures.accuracy_figure(only_b), figures.histogram_figure(only_b, "bn1")):
        assert {colour(t) for t in fig.data} == {LANE_COLORS[1]}
    third = dataclasses.replace(snap.lanes[1], index=2, spec=LaneSpec("torch"))
    assert figures.lane_color(third) == LANE_COLORS[2]


# ------------------------------------------------------------------------------------------- no data yet
def test_before_start_every_figure_says_no_data_yet(run):
    empty, _ = run
    assert empty.status == "idle" and all(l.step == 0 for l in empty.lanes)
    for name, fig in {
        **snapshot_figures(empty),
        **lane_figures(empty.lanes[0]),
        **lane_figures(empty.lanes[1]),
    }.items():
        assert isinstance(fig, go.Figure), name
        assert not fig.data, name
        assert any("No data yet" in t for t in annotations(fig)), f"{name}: {annotations(fig)}"
        fig.to_json()
    rows = figures.scoreboard(empty)
    assert [r["lane"] for r in rows] == ["A · BN off", "B · BN scratch"]
    assert all(r[k] == "not yet" for r in rows for k in ("50%", "70%", "80%"))
    assert all(r[figures.NOW] == "-" for r in rows)


def test_a_window_of_zero_rows_is_no_data_not_an_error(run):
    _, snap = run
    fig = figures.loss_figure(snap, last_n=5)
    assert all(len(t.x) == 5 for t in fig.data)  # steps 12..16
    assert figures.accuracy_figure(snap, last_n=1).data


# ------------------------------------------------------------------------------------------- downsampling
def test_downsample_keeps_short_series_as_they_are():
    x, y = np.arange(50), np.random.default_rng(0).normal(size=50)
    xs, ys = figures.downsample(x, y)
    np.testing.assert_array_equal(xs, x)
    np.testing.assert_array_equal(ys, y)


@pytest.mark.parametrize("n", [2001, 10_000, 123_457])
def test_downsample_bounds_the_points_and_keeps_the_mean(n):
    rng = np.random.default_rng(n)
    x = np.arange(1, n + 1, dtype=float)
    y = rng.normal(3.0, 1.0, size=n) + np.linspace(0, 5, n)
    xs, ys = figures.downsample(x, y)
    assert len(xs) == len(ys) <= MAX_POINTS
    assert len(xs) >= MAX_POINTS // 2
    assert np.all(np.diff(xs) > 0)  # still in order
    counts = np.diff(np.linspace(0, n, MAX_POINTS + 1).astype(int))
    np.testing.assert_allclose(np.sum(ys * counts) / n, y.mean(), rtol=1e-12)  # the mean, exactly (weighted)
    np.testing.assert_allclose(ys.mean(), y.mean(), rtol=1e-3)
    assert xs[0] >= 1 and xs[-1] <= n


def _long(tables, n):
    """Tables with n rows (or as many as they hold, for the bounded dists), steps 1..n."""
    out = {}
    for name, cols in tables.items():
        if not cols or "step" not in cols:
            out[name] = cols
            continue
        rows = {"dists": min(n, 200), "epochs": min(n, 100)}.get(name, n)  # bounded tables stay bounded
        step = np.linspace(1, n, rows).round()
        out[name] = {k: (step if k == "step" else np.resize(v, (rows,) + v.shape[1:])) for k, v in cols.items()}
    return out


def test_no_trace_carries_more_than_max_points_however_long_the_run(run):
    _, snap = run
    n = 60_000
    lanes = tuple(
        dataclasses.replace(l, status="training", step=n, epoch=100, steps_per_epoch=600, tables=_long(l.tables, n))
        for l in snap.lanes
    )
    long = Snapshot("running", None, snap.settings, "cpu", lanes)
    figs = {**snapshot_figures(long), **lane_figures(lanes[1])}
    for name, fig in figs.items():
        assert fig.data, name
        for t in fig.data:
            assert points(t) <= MAX_POINTS, f"{name}: {t.name} has {points(t)} points"
    assert points(figs["loss"].data[0]) >= MAX_POINTS // 2  # downsampled, not cut
    assert figs["loss"].data[0].x[-1] > 0.99 * n  # reaches the end of the run
    assert figs["loss"].data[0].x[0] < 0.01 * n  # and starts at its beginning


# ------------------------------------------------------------------------------------------- scoreboard
def _lane_with_val(index, steps, accs, steps_per_epoch=20):
    tables = {
        "steps": {},
        "val": {"step": np.asarray(steps, float), "val_acc": np.asarray(accs, float), "val_loss": np.ones(len(steps))},
        "epochs": {},
        "probes": {},
        "dists": {},
    }
    return LaneView(
        index=index,
        spec=LaneSpec("scratch" if index else "none"),
        status="training",
        error=None,
        step=steps[-1] if steps else 0,
        epoch=1,
        steps_per_epoch=steps_per_epoch,
        images_per_s=0.0,
        diverged_at=None,
        tables=tables,
    )


def test_the_scoreboard_reports_the_first_step_past_each_mark():
    lanes = (_lane_with_val(0, [], []), _lane_with_val(1, [10, 20, 30, 40], [0.3, 0.55, 0.72, 0.69]))
    rows = figures.scoreboard(Snapshot("running", None, SETTINGS, "cpu", lanes))
    assert rows[0] == {"lane": "A · BN off", "50%": "not yet", "70%": "not yet", "80%": "not yet", figures.NOW: "-"}
    assert rows[1] == {
        "lane": "B · BN scratch",
        "50%": "step 20 · epoch 1.0",
        "70%": "step 30 · epoch 1.5",
        "80%": "not yet",
        figures.NOW: "69.0%",
    }


def test_the_scoreboard_counts_exactly_the_threshold_as_reached():
    lanes = (_lane_with_val(1, [100, 2000], [0.5, 0.8], steps_per_epoch=469),)
    row = figures.scoreboard(Snapshot("running", None, SETTINGS, "cpu", lanes))[0]
    assert row["50%"] == "step 100 · epoch 0.2"
    assert row["70%"] == row["80%"] == "step 2,000 · epoch 4.3"


def test_the_scoreboard_as_markdown_holds_every_row_and_cell():
    lanes = (_lane_with_val(0, [], []), _lane_with_val(1, [10, 20, 30, 40], [0.3, 0.55, 0.72, 0.69]))
    snap = Snapshot("running", None, SETTINGS, "cpu", lanes)
    lines = figures.scoreboard_markdown(snap).splitlines()
    cells = [[c.strip() for c in line.strip("|").split(" | ")] for line in lines]
    rows = figures.scoreboard(snap)
    assert cells[0] == list(rows[0])  # the header: lane, 50%, 70%, 80%, now
    assert set(lines[1].strip("|").split("|")) <= {":---", "---:"}  # the separator row of a GFM table
    assert cells[2:] == [list(r.values()) for r in rows]
    assert figures.scoreboard_markdown(Snapshot("running", None, SETTINGS, "cpu", ())) == ""


def test_downsample_leaves_nan_out_of_a_bucket_mean():
    n = 4000  # 2 points per bucket
    y = np.full(n, 2.0)
    y[-1] = np.nan  # the step where a lane diverged
    _, ys = figures.downsample(np.arange(n), y)
    assert ys[-1] == 2.0  # today: 1.0, a dip at the end of the curve that was never there


def test_a_diverged_lane_does_not_stretch_the_loss_axis(run):
    """Losses up to 1e18 in one lane: the axis keeps to the healthy losses, the divergence is a marked line."""
    _, snap = run
    lane = snap.lanes[0]
    steps = dict(lane.tables["steps"])
    loss = np.array(steps["train_loss"], dtype=float)
    healthy_hi = float(np.max(snap.lanes[1].tables["steps"]["train_loss"]))
    loss[len(loss) // 2 :] = 1e18
    steps["train_loss"] = loss
    bad = dataclasses.replace(lane, tables={**lane.tables, "steps": steps}, status="diverged", diverged_at=3)
    fig = figures.loss_figure(dataclasses.replace(snap, lanes=(bad, snap.lanes[1])))
    lo, hi = fig.layout.yaxis.range
    assert 10**hi < 10 * max(healthy_hi, float(loss[: len(loss) // 2].max()))  # nowhere near 1e18
    assert any("diverged" in (a.text or "") for a in fig.layout.annotations)


def test_a_loss_within_one_decade_gets_a_label_per_digit(run):
    _, snap = run
    fig = figures.loss_figure(snap)
    values = np.concatenate([l.tables["steps"]["train_loss"] for l in snap.lanes])
    assert values.max() / values.min() < 10  # a short run on random images stays near 2.3
    ticks = fig.layout.yaxis.tickvals
    assert len(ticks) >= 4 and values.min() / 1.2 <= ticks[0] and ticks[-1] <= values.max() * 1.2


def test_train_eval_draws_both_modes_of_each_normalised_lane(run):
    empty, snap = run
    fig = figures.train_eval_figure(snap)
    assert [t.name for t in fig.data] == ["B · BN scratch · eval mode", "B · BN scratch · train mode"]
    val = snap.lanes[1].tables["val"]
    np.testing.assert_allclose(fig.data[0].y, val["val_acc"])
    np.testing.assert_allclose(fig.data[1].y, val["val_acc_batch"])
    assert fig.data[1].line.dash == "dot"
    assert any("No lane with normalisation" in t for t in annotations(figures.train_eval_figure(empty)))


def test_a_crafted_run_cannot_flood_a_chart_with_marks(run):
    _, snap = run
    lane = snap.lanes[0]
    steps = dict(lane.tables["steps"])
    steps["lr"] = np.arange(len(steps["step"]), dtype=float) + 1.0  # a new rate at every step
    n = 5000
    events = {"step": np.arange(n, dtype=float), "bn_on": np.zeros(n)}
    flooded = dataclasses.replace(lane, tables={**lane.tables, "steps": steps, "events": events})
    crafted = dataclasses.replace(snap, lanes=(flooded, snap.lanes[1]))
    marks = figures.teacher_marks(crafted)
    assert sum(m[1].startswith("lr ") for m in marks) <= figures.MAX_MARKS
    assert sum("BN off" in m[1] for m in marks) == figures.MAX_MARKS


def test_a_legal_file_of_many_epochs_and_distribution_rows_stays_thin(run):
    """Issue 24: a file may hold 3,000,000 rows in any table; the charts a web page draws stay at MAX_POINTS a
    trace (the diamonds: real epochs' values, every n-th), and epoch boundaries beyond MAX_EPOCH_MARKS are not
    drawn (they would paint the chart grey)."""
    _, snap = run
    lane = snap.lanes[1]
    n = 3 * MAX_POINTS
    epochs = {"step": np.arange(1, n + 1, dtype=float), "val_acc": np.linspace(0, 1, n)}
    dists = {
        "step": np.arange(1, n + 1, dtype=float),
        "bn1.running_mean": np.ones((n, 6)),
        "bn1.running_var": np.ones((n, 6)),
    }
    steps = {**lane.tables["steps"], "step": np.arange(1, len(lane.tables["steps"]["step"]) + 1) * n}
    long = dataclasses.replace(lane, tables={**lane.tables, "steps": steps, "epochs": epochs, "dists": dists})
    crafted = dataclasses.replace(snap, lanes=(long,))  # the lane whose steps the epoch boundaries are drawn on
    diamonds = [t for t in figures.accuracy_figure(crafted).data if t.name.endswith("test (epoch)")]
    assert points(diamonds[-1]) == MAX_POINTS and set(diamonds[-1].y) <= set(epochs["val_acc"])
    assert diamonds[-1].x[0] == 1 and diamonds[-1].x[-1] == n  # the first epoch and the last
    for t in figures.running_stats_figure(long, "bn1").data:
        assert 0 < points(t) <= MAX_POINTS, t.name
    assert not [m for m in figures.teacher_marks(crafted) if m[1] == ""]  # 6,000 boundaries: none drawn
    few = {k: v[: figures.MAX_EPOCH_MARKS] for k, v in epochs.items()}
    shown = dataclasses.replace(snap, lanes=(dataclasses.replace(long, tables={**long.tables, "epochs": few}),))
    assert len([m for m in figures.teacher_marks(shown) if m[1] == ""]) == figures.MAX_EPOCH_MARKS


def test_mark_labels_never_sit_on_each_other(run):
    """Learning-rate changes a few steps apart (a teacher dragging the slider): each label takes a height whose
    last label has ended, and a mark with no free height keeps its line without a label."""
    _, snap = run
    lane = snap.lanes[0]
    steps = dict(lane.tables["steps"])
    n = len(steps["step"])
    steps["lr"] = np.where(np.arange(n) < n // 2, 0.1, 0.1 + (np.arange(n) - n // 2 + 1) * 0.1)  # a rate per step
    steps["step"] = np.append(np.asarray(steps["step"][:-1], dtype=float), 2000.0)  # the changes, crowded in a long run
    dragged = dataclasses.replace(lane, tables={**lane.tables, "steps": steps})
    fig = figures.loss_figure(dataclasses.replace(snap, lanes=(dragged, snap.lanes[1])))
    labels = [a for a in fig.layout.annotations if a.text.startswith("lr ")]
    lines = [s for s in fig.layout.shapes if s.line.dash == "dashdot"]
    assert len(lines) == min(n - n // 2, figures.MAX_MARKS) >= 5 and 0 < len(labels) < len(lines)
    span = float(steps["step"][-1])
    for height in figures.MARK_HEIGHTS:
        row = sorted(a.x for a in labels if a.y == height)
        for a, b in zip(row, row[1:]):  # the next label on this row starts after this one's text ends
            assert b - a >= len("lr 0.1 → 1.1") * figures.LABEL_SHARE_PER_CHAR * span, (height, row)
