"""Plotly figures as pure functions: a snapshot (or lane) in, a figure out. No Streamlit here.

Every lane keeps one colour everywhere; histograms arrive pre-binned; no trace carries more than
``MAX_POINTS`` points (long runs are averaged into buckets), so a refresh stays cheap in the browser.
"""

import math

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from bnviz.live.lane_events import latest as latest_event
from bnviz.step.models import BN_LAYERS
from bnviz.step.probes import bin_edges

LANE_COLORS = ("#E4572E", "#1F77B4", "#2CA02C")  # lane A, B, C: one colour each, everywhere
CHANNEL_COLORS = ("#636EFA", "#EF553B", "#00CC96", "#AB63FA", "#FFA15A", "#19D3F3", "#FF6692", "#B6E880")
MAX_POINTS = 2000
FONT = dict(size=16)
LOG_TICKS = dict(tickformat="~g", dtick="D2")  # log axes labelled 0.1 / 0.2 / 0.5 / 1 / 2, not bare digits
THRESHOLDS = (0.5, 0.7, 0.8)
POSITION_NAMES = {
    "bn1": "bn1 · after conv1 (6 channels)",
    "bn2": "bn2 · after conv2 (16 channels)",
    "bn3": "bn3 · after fc1 (120 units)",
    "bn4": "bn4 · after fc2 (84 units)",
}
KIND_NAMES = {"in": "entering BN", "out": "leaving BN", "act": "after the activation"}


def lane_color(lane):
    return LANE_COLORS[lane.index % len(LANE_COLORS)]


def downsample(x, y, max_points=MAX_POINTS):
    """Average consecutive points into at most max_points buckets (keeps the trend, drops the noise)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) <= max_points:
        return x, y
    edges = np.linspace(0, len(x), max_points + 1).astype(int)
    xs = np.add.reduceat(x, edges[:-1]) / np.diff(edges)
    finite = np.isfinite(y)
    counts = np.add.reduceat(finite.astype(float), edges[:-1])  # missing values are not zeros
    with np.errstate(invalid="ignore", divide="ignore"):
        ys = np.add.reduceat(np.where(finite, y, 0.0), edges[:-1]) / counts
    return xs, np.where(counts > 0, ys, np.nan)


def window(cols, last_n, key="step"):
    """Rows of a table whose step is within the last ``last_n`` steps of it (all rows if last_n is None)."""
    steps = cols.get(key)
    if last_n is None or steps is None or not len(steps):
        return cols
    keep = steps > steps[-1] - last_n
    return {k: v[keep] for k, v in cols.items()}


def smooth(y, n=20):
    """Trailing moving average, for the noisy per-step accuracy."""
    y = np.asarray(y, dtype=float)
    if len(y) < 2:
        return y
    c = np.cumsum(np.insert(np.nan_to_num(y), 0, 0.0))
    idx = np.arange(1, len(y) + 1)
    lo = np.maximum(0, idx - n)
    return (c[idx] - c[lo]) / (idx - lo)


GRID = dict(
    showgrid=True, gridcolor="#E5ECF6", zeroline=False, linecolor="#B0B8C4", ticks="outside", tickcolor="#B0B8C4"
)


def new_figure(**subplots):
    """An empty figure (or grid of subplots) without a plotly template.

    Expanding a named template costs more than all the rest of a figure (a deep copy per figure, about
    10 ms): on a live page refreshed every second, in the server that also trains, that time is taken
    from training. The few styles we want are set directly in _layout.
    """
    base = go.Figure(layout=dict(template="none"))
    return make_subplots(figure=base, **subplots) if subplots else base


def styled(fig, title, height=380, **kw):
    fig.update_layout(
        title=dict(text=title, font=dict(size=19)),
        font=FONT,
        height=height,
        margin=dict(l=60, r=20, t=60, b=48),
        modebar=dict(orientation="v"),  # down the right edge: a row along the top covered the title on hover
        legend=dict(orientation="h", y=-0.4, yanchor="top"),  # below the x-axis title, never on it
        paper_bgcolor="white",
        plot_bgcolor="white",
        **kw,
    )
    fig.update_xaxes(title_standoff=8, **GRID)  # the axis title clear of the tick numbers
    fig.update_yaxes(exponentformat="power", **GRID)
    return fig


def empty_note(fig, text="No data yet: press Start"):
    fig.add_annotation(text=text, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper", font=dict(size=18))
    return fig


MARK_HEIGHTS = (0.99, 0.88, 0.77, 0.66)  # labels of neighbouring marks sit at different heights, never on top
MAX_EPOCH_MARKS = 200  # epoch boundaries drawn (the dashboard trains up to 100 epochs); more: none drawn
MAX_MARKS = 20  # of each kind per lane: the first 20 (a teacher's clicks are fewer; a crafted file may hold more)


def teacher_marks(snap, last_n=None):
    """What happened during the run, as (step, label, colour, dash): divergences, BN switched off and on,
    lanes restarted or added (at the step the others had reached), learning-rate changes and epoch boundaries
    (no label), sorted by step."""
    marks = []
    for lane in snap.lanes:
        c = lane_color(lane)
        if lane.diverged_at:
            marks.append((float(lane.diverged_at), f"{lane.label.split(' · ')[0]} diverged", c, "dot"))
        ev = lane.tables.get("events", {})  # cut before zip: a crafted file may hold 3,000,000 rows
        for step, on in zip(ev.get("step", [])[:MAX_MARKS], ev.get("bn_on", [])[:MAX_MARKS]):
            marks.append((float(step), f"{lane.label.split(' · ')[0]}: BN {'on' if on else 'off'}", c, "dash"))
        starts = lane.tables.get("starts", {})
        for step, restart in zip(starts.get("step", [])[:MAX_MARKS], starts.get("restart", [])[:MAX_MARKS]):
            what = "restarted from 0" if restart else "added, from 0"
            marks.append((float(step), f"{lane.label.split(' · ')[0]} {what}", c, "longdash"))
    lead = max(snap.lanes, key=lambda l: len(l.tables["steps"].get("step", [])), default=None)
    if lead is not None:
        steps = lead.tables["steps"]
        lr = np.asarray(steps.get("lr", []), dtype=float)
        changes = np.flatnonzero(lr[1:] != lr[:-1]) + 1
        for i in changes[:MAX_MARKS]:  # a recording that changes the rate at every step would draw thousands
            marks.append((float(steps["step"][i]), f"lr {lr[i - 1]:g} → {lr[i]:g}", "#555555", "dashdot"))
        last = float(steps["step"][-1]) if len(steps.get("step", [])) else 0.0
        boundaries = lead.tables["epochs"].get("step", [])
        if len(boundaries) > MAX_EPOCH_MARKS:  # so many lines would paint the chart grey: none
            boundaries = []
        for step in boundaries:
            if float(step) < last:  # an epoch boundary inside the curves, not their end
                marks.append((float(step), "", "#D9D9D9", "dot"))
    if last_n is not None and lead is not None and len(lead.tables["steps"].get("step", [])):
        first = float(lead.tables["steps"]["step"][-1]) - last_n
        marks = [m for m in marks if m[0] > first]
    return sorted(marks, key=lambda m: m[0])


LABEL_SHARE_PER_CHAR = 1 / 80  # a 13 px character's share of a chart's plot width (about 600 px at 1280)


def _free_height(step, label, ends, span):
    """The highest of MARK_HEIGHTS whose last label ends before ``step`` (and keep this label's end there), or
    None: then the mark is a line without a label, instead of a label over another one."""
    for height in MARK_HEIGHTS:
        if ends.get(height, -math.inf) < step:
            ends[height] = step + (len(label) + 1) * LABEL_SHARE_PER_CHAR * span
            return height
    return None


def _marks(fig, snap, last_n=None):
    """Vertical lines for teacher_marks(), labelled at staggered heights so neighbouring labels do not collide.

    The lines and labels are plain dicts added in one layout update: ``fig.add_vline`` validates the whole
    figure for each line (20 ms a line; with the epoch boundaries of a 10-epoch run, 0.2 s a chart, once a
    second, on the server that also trains).
    """
    shapes, labels = [], []
    marks = teacher_marks(snap, last_n)
    last = [float(l.tables["steps"]["step"][-1]) for l in snap.lanes if len(l.tables["steps"].get("step", []))]
    x_hi = max([*last, *(m[0] for m in marks), 1.0])
    span = min(x_hi, last_n) if last_n else x_hi  # the x axis's extent, about: the window or the whole run
    ends = {}  # each height's last label's right end, in steps
    for step, label, color, dash in marks:
        shapes.append(
            dict(
                type="line",
                x0=step,
                x1=step,
                xref="x",
                y0=0,
                y1=1,
                yref="paper",
                line=dict(color=color, dash=dash, width=1.5 if label else 1),
            )
        )
        height = _free_height(step, label, ends, span) if label else None
        if height is not None:
            labels.append(
                dict(
                    text=label,
                    x=step,
                    xref="x",
                    xanchor="left",
                    xshift=3,  # beside the line, not through its first letter
                    y=height,
                    yref="paper",
                    yanchor="top",
                    font=dict(size=13, color=color),
                    bgcolor="rgba(255,255,255,0.8)",
                    showarrow=False,
                )
            )
    if shapes:
        fig.update_layout(shapes=list(fig.layout.shapes) + shapes, annotations=list(fig.layout.annotations) + labels)


# --------------------------------------------------------------------------------------- training
def loss_figure(snap, last_n=None, log_y=True):
    """The loss of every lane per step. The y axis spans the healthy losses (at most the divergence limit),
    so one diverged lane (losses up to 1e18) neither squashes the others flat nor floods the axis with ticks;
    its divergence is a marked line."""
    fig = new_figure()
    healthy = []
    for lane in snap.lanes:
        t = window(lane.tables["steps"], last_n)
        if len(t.get("step", [])):
            x, y = downsample(t["step"], t["train_loss"])
            mode = "lines" if len(x) > 1 else "markers"  # a single step is a point, not an invisible line
            fig.add_trace(go.Scatter(x=x, y=y, mode=mode, name=f"{lane.label}", line=dict(color=lane_color(lane))))
            healthy.append(y[np.isfinite(y) & (y > 0) & (y <= snap.settings.diverge_loss)])
    _marks(fig, snap, last_n)
    values = np.concatenate(healthy) if healthy else np.array([])
    if not fig.data:
        empty_note(fig)
        fig.update_yaxes(range=[-1, 1] if log_y else [0, 3])  # 0.1 to 10: where a loss starts (chance is 2.3)
    elif len(values):
        lo, hi = float(values.min()), float(values.max())
        if log_y:
            fig.update_yaxes(range=[np.log10(lo / 1.15), np.log10(hi * 1.15)])
        else:
            fig.update_yaxes(range=[0, hi * 1.05])
    if log_y:
        narrow = len(values) and values.max() / max(values.min(), 1e-12) < 10
        if narrow:  # within one decade 1-2-5 ticks leave 1-3 labels: six round values spread over the range
            spread = np.geomspace(values.min(), values.max(), 6)
            for digits in (2, 3, 4):  # as few digits as tell the six apart
                ticks = sorted({float(f"{v:.{digits}g}") for v in spread})
                if len(ticks) >= 5:
                    break
            fig.update_yaxes(type="log", tickvals=ticks, ticktext=[f"{t:g}" for t in ticks])
        else:
            fig.update_yaxes(type="log", **LOG_TICKS)
    else:
        fig.update_yaxes(type="linear")
    return styled(fig, "Training loss per step", xaxis_title="step", yaxis_title="cross-entropy")


def train_eval_figure(snap, last_n=None):
    """Validation accuracy of every lane with running statistics, in eval mode (solid: what the network is at
    test time) and in train mode (dotted: each batch normalised by its own statistics, as in training)."""
    fig = new_figure()
    for lane in snap.lanes:
        v = window(lane.tables["val"], last_n)
        if not len(v.get("step", [])) or "val_acc_batch" not in v or lane.spec.norm == "none":
            continue
        c = lane_color(lane)
        x, y = downsample(v["step"], v["val_acc"])
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines", name=f"{lane.label} · eval mode", line=dict(color=c, width=3)))
        if np.array_equal(v["val_acc_batch"], v["val_acc"]):
            continue  # no running statistics (LayerNorm, GroupNorm): one network in both modes, one line
        x, y = downsample(v["step"], v["val_acc_batch"])
        fig.add_trace(
            go.Scatter(
                x=x, y=y, mode="lines", name=f"{lane.label} · train mode", line=dict(color=c, width=2, dash="dot")
            )
        )
    if not fig.data:
        empty_note(fig, "No lane with normalisation has been validated yet")
    return styled(
        fig,
        "Validation accuracy: running statistics (eval) vs batch statistics (train mode)",
        xaxis_title="step",
        yaxis_title="accuracy",
        yaxis_range=[0, 1],
    )


def accuracy_figure(snap, last_n=None):
    fig = new_figure()
    for lane in snap.lanes:
        c = lane_color(lane)
        t = window(lane.tables["steps"], last_n)
        if len(t.get("step", [])):
            x, y = downsample(t["step"], smooth(t["train_acc"]))
            fig.add_trace(
                go.Scatter(
                    x=x, y=y, mode="lines", name=f"{lane.label} · train", line=dict(color=c, width=1.5), opacity=0.6
                )
            )
        v = window(lane.tables["val"], last_n)
        if len(v.get("step", [])):
            x, y = downsample(v["step"], v["val_acc"])
            fig.add_trace(
                go.Scatter(
                    x=x, y=y, mode="lines+markers", name=f"{lane.label} · validation", line=dict(color=c, width=3)
                )
            )
        e = window(lane.tables["epochs"], last_n)
        if len(e.get("step", [])):
            shown = np.unique(np.linspace(0, len(e["step"]) - 1, MAX_POINTS).astype(int))  # every epoch, up to 2,000
            fig.add_trace(
                go.Scatter(
                    x=e["step"][shown],
                    y=e["val_acc"][shown],
                    mode="markers",
                    name=f"{lane.label} · test (epoch)",
                    marker=dict(color=c, size=13, symbol="diamond", line=dict(color="black", width=1)),
                )
            )
    _marks(fig, snap, last_n)
    if not fig.data:
        empty_note(fig)
    # one legend entry per lane (its validation curve); the caption says thin = train, diamonds = test set
    for trace in fig.data:
        if not trace.name.endswith("· validation"):
            trace.showlegend = False
    return styled(fig, "Accuracy", xaxis_title="step", yaxis_title="accuracy", yaxis_range=[0, 1])


NOW = "now (validation subset)"  # the latest check, on the validation subset: not the test set


def scoreboard(snap, thresholds=THRESHOLDS):
    """Rows {lane, 50%: 'step 120 (epoch 1)' | 'not yet', ..., now}: when validation accuracy first crossed each
    mark; with a column 'latest event' ("BN switched off at step 400: 80.6% → 13.0%") when a lane had one.
    A restarted lane's marks count from its restart (its tables begin there)."""
    rows = []
    for lane in snap.lanes:
        row = {"lane": lane.label}
        v = lane.tables["val"]
        for th in thresholds:
            label = f"{int(th * 100)}%"
            hit = np.flatnonzero(v.get("val_acc", np.array([])) >= th)
            if len(hit):
                s = int(v["step"][hit[0]])
                row[label] = f"step {s:,} · epoch {s / max(lane.steps_per_epoch, 1):.1f}"
            else:
                row[label] = "not yet"
        last = v.get("val_acc", np.array([]))
        row[NOW] = f"{last[-1]:.1%}" if len(last) else "-"
        event = latest_event(lane.tables, lane.diverged_at)
        row["latest event"] = event.describe() if event else "-"
        rows.append(row)
    if all(r["latest event"] == "-" for r in rows):  # no column of dashes on a run where nothing happened
        for r in rows:
            del r["latest event"]
    return rows


def scoreboard_markdown(snap, thresholds=THRESHOLDS):
    """The scoreboard as a Markdown table: a page draws it as plain HTML, without loading a data grid (on a
    student's fresh viewer tab the grid's scripts took 0.6-1 s of the first chart's 4-5 s)."""
    rows = scoreboard(snap, thresholds)
    if not rows:
        return ""
    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join([":---"] + ["---:"] * (len(head) - 1)) + "|"]
    lines += ["| " + " | ".join(str(r[k]) for k in head) + " |" for r in rows]  # labels hold no pipe
    return "\n".join(lines)


# --------------------------------------------------------------------------------------- inside BN
def _latest(lane, key):
    d = lane.tables["dists"]
    return (d[key][-1], int(d["step"][-1])) if key in d and len(d[key]) else (None, None)


def histogram_figure(snap, position, activation="sigmoid"):
    """Before BN | after BN | after the activation, latest probe, lanes overlaid on shared bins."""
    fig = new_figure(
        rows=1, cols=3, subplot_titles=[KIND_NAMES[k] for k in ("in", "out", "act")], horizontal_spacing=0.06
    )
    step = None
    for col, kind in enumerate(("in", "out", "act"), 1):
        for lane in snap.lanes:
            h, step = _latest(lane, f"{position}.{kind}.hist")
            if h is None:
                continue
            edges = bin_edges(kind, lane.spec.activation, bins=len(h))
            centers = (edges[:-1] + edges[1:]) / 2
            fig.add_trace(
                go.Bar(
                    x=centers,
                    y=h,
                    width=np.diff(edges),
                    name=lane.label,
                    legendgroup=lane.label,
                    showlegend=col == 1,
                    marker=dict(color=lane_color(lane)),
                    opacity=0.55,
                ),
                row=1,
                col=col,
            )
    fig.update_layout(barmode="overlay", bargap=0)
    fig.update_yaxes(title_text="fraction", row=1, col=1)  # "fraction of values" was cut in the short panel
    if not fig.data:
        empty_note(fig)
    where = f" (step {step:,})" if step else ""
    return styled(fig, f"{POSITION_NAMES[position]}: distributions now{where}", height=400)


def percentile_figure(snap, position, kind="out", last_n=None):
    """15/50/85th percentiles over training (Ioffe & Szegedy 2015, Fig. 1): a band and a median per lane."""
    fig = new_figure()
    for lane in snap.lanes:
        p = window(lane.tables["probes"], last_n)
        key = f"{position}.{kind}"
        if f"{key}.p50" not in p or not len(p["step"]):
            continue
        c = lane_color(lane)
        x, lo = downsample(p["step"], p[f"{key}.p15"])
        _, mid = downsample(p["step"], p[f"{key}.p50"])
        _, hi = downsample(p["step"], p[f"{key}.p85"])
        fig.add_trace(
            go.Scatter(
                x=x,
                y=hi,
                mode="lines",
                line=dict(width=0, color=c),
                showlegend=False,
                legendgroup=lane.label,
                hoverinfo="skip",
            )
        )
        fig.add_trace(
            go.Scatter(
                x=x,
                y=lo,
                mode="lines",
                line=dict(width=0, color=c),
                fill="tonexty",
                opacity=0.25,
                name=f"{lane.label} · 15–85%",
                legendgroup=lane.label,
            )
        )
        fig.add_trace(
            go.Scatter(
                x=x,
                y=mid,
                mode="lines",
                line=dict(color=c, width=3),
                name=f"{lane.label} · median",
                legendgroup=lane.label,
            )
        )
    if not fig.data:
        empty_note(fig)
    return styled(
        fig,
        f"{position}: percentiles of the input to the activation over training",
        xaxis_title="step",
        yaxis_title="value",
    )


def heatmap_figure(lane, position, kind="in"):
    """The histogram over time: one column per kept probe, colour = fraction of values in the bin."""
    d = lane.tables["dists"]
    key = f"{position}.{kind}.hist"
    fig = new_figure()
    if key in d and len(d[key]):
        edges = bin_edges(kind, lane.spec.activation, bins=np.asarray(d[key]).shape[1])
        fig.add_trace(
            go.Heatmap(
                x=d["step"],
                y=(edges[:-1] + edges[1:]) / 2,
                z=np.asarray(d[key]).T,
                colorscale="Viridis",
                colorbar=dict(title="fraction"),
            )
        )
    else:
        empty_note(fig)
    return styled(
        fig,
        f"{lane.label}: {position} {KIND_NAMES[kind]}, over time",
        xaxis_title="step",
        yaxis_title="value",
        height=340,
    )


# --------------------------------------------------------------------------------------- BN state
MAX_CHANNEL_LINES = 8


def _no_running_stats(lane):
    """What an empty running-statistics chart says: LayerNorm and GroupNorm keep none, a lane without BN no BN."""
    return "No BN in this lane" if lane.spec.norm == "none" else "No running statistics in this lane"


def running_stats_figure(lane, position):
    """Running mean and variance of the first channels over training."""
    d = lane.tables["dists"]
    fig = new_figure(rows=1, cols=2, subplot_titles=("running mean", "running variance"))
    keys = [k for k in ("running_mean", "running_var") if f"{position}.{k}" in d]  # BN that only centres: one
    if not keys or not len(d["step"]):
        return styled(
            empty_note(fig, _no_running_stats(lane) if len(d.get("step", [])) else "No data yet"),
            f"{lane.label}: {position} running statistics",
        )
    for col, key in enumerate(("running_mean", "running_var"), 1):
        if key not in keys:
            continue
        values = np.asarray(d[f"{position}.{key}"])
        for ch in range(min(values.shape[1], MAX_CHANNEL_LINES)):
            x, y = downsample(d["step"], values[:, ch])
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=y,
                    mode="lines",
                    name=f"channel {ch}",
                    legendgroup=str(ch),
                    showlegend=col == 1,
                    line=dict(color=CHANNEL_COLORS[ch % len(CHANNEL_COLORS)]),  # the same colour in both panels
                ),
                row=1,
                col=col,
            )
    more = values.shape[1] - MAX_CHANNEL_LINES
    return styled(
        fig,
        f"{lane.label}: {position} running statistics"
        + (f" (first {MAX_CHANNEL_LINES} of {values.shape[1]} channels)" if more > 0 else ""),
    )


def batch_vs_running_figure(lane, position):
    """Latest probe: this batch's mean/variance per channel against the running ones."""
    d = lane.tables["dists"]
    fig = new_figure(rows=1, cols=2, subplot_titles=("mean per channel", "variance per channel"))
    stats = [s for s in ("mean", "var") if f"{position}.running_{s}" in d]  # BN that only centres: one
    if not stats or not len(d["step"]):
        return styled(
            empty_note(fig, _no_running_stats(lane) if len(d.get("step", [])) else "No data yet"),
            f"{lane.label}: {position} batch vs running statistics",
        )
    for col, stat in enumerate(("mean", "var"), 1):
        if stat not in stats:
            continue
        batch, running = d[f"{position}.batch_{stat}"][-1], d[f"{position}.running_{stat}"][-1]
        ch = np.arange(len(batch))
        fig.add_trace(
            go.Bar(x=ch, y=batch, name="this batch", marker_color="#9E9E9E", showlegend=col == 1), row=1, col=col
        )
        fig.add_trace(
            go.Scatter(
                x=ch,
                y=running,
                mode="markers",
                name="running",
                showlegend=col == 1,
                marker=dict(color=lane_color(lane), size=9),
            ),
            row=1,
            col=col,
        )
    fig.update_xaxes(title_text="channel")
    return styled(fig, f"{lane.label}: {position} batch vs running statistics (step {int(d['step'][-1]):,})")


def gamma_beta_figure(lane, position):
    """gamma and beta per channel now (bars), and each over training (mean, with a min–max band)."""
    d = lane.tables["dists"]
    fig = new_figure(
        rows=1,
        cols=3,
        subplot_titles=("now, per channel", "gamma over training (starts at 1)", "beta over training (starts at 0)"),
    )
    if f"{position}.gamma" not in d or not len(d["step"]):
        return styled(
            empty_note(fig, "No BN in this lane" if len(d.get("step", [])) else "No data yet"),
            f"{lane.label}: {position} gamma and beta",
        )
    gamma, beta = np.asarray(d[f"{position}.gamma"]), np.asarray(d[f"{position}.beta"])
    ch = np.arange(gamma.shape[1])
    fig.add_trace(go.Bar(x=ch, y=gamma[-1], name="gamma (scale)", marker_color="#1F77B4"), row=1, col=1)
    fig.add_trace(go.Bar(x=ch, y=beta[-1], name="beta (shift)", marker_color="#FF7F0E"), row=1, col=1)
    for col, values, name, color in ((2, gamma, "gamma", "#1F77B4"), (3, beta, "beta", "#FF7F0E")):
        fig.add_trace(
            go.Scatter(
                x=d["step"],
                y=values.max(1),
                mode="lines",
                line=dict(width=0, color=color),
                showlegend=False,
                hoverinfo="skip",
            ),
            row=1,
            col=col,
        )
        fig.add_trace(
            go.Scatter(
                x=d["step"],
                y=values.min(1),
                mode="lines",
                line=dict(width=0, color=color),
                fill="tonexty",
                opacity=0.3,
                showlegend=False,
                hoverinfo="skip",
            ),
            row=1,
            col=col,
        )
        fig.add_trace(
            go.Scatter(
                x=d["step"],
                y=values.mean(1),
                mode="lines",
                name=f"{name}: mean and min–max",
                line=dict(color=color, width=3),
            ),
            row=1,
            col=col,
        )
    fig.update_layout(barmode="group")
    fig.update_xaxes(title_text="channel", row=1, col=1)
    fig.update_xaxes(title_text="step", row=1, col=2)
    fig.update_xaxes(title_text="step", row=1, col=3)
    return styled(fig, f"{lane.label}: {position} gamma and beta")


# --------------------------------------------------------------------------------------- gradients
def _probe_lines(snap, names, suffix, last_n):
    """One line per lane and per name (told apart by dash) of the probe column f"{name}.{suffix}"."""
    fig = new_figure()
    dashes = ("solid", "dash", "dot", "dashdot", "longdash")
    for lane in snap.lanes:
        p = window(lane.tables["probes"], last_n)
        for name, dash in zip(names, dashes):
            key = f"{name}.{suffix}"
            if key in p and len(p[key]):
                x, y = downsample(p["step"], p[key])
                fig.add_trace(
                    go.Scatter(
                        x=x,
                        y=y,
                        mode="lines",
                        name=f"{lane.label} · {name}",
                        line=dict(color=lane_color(lane), dash=dash),
                    )
                )
    if not fig.data:
        empty_note(fig)
    return fig


def gradient_figure(snap, metric="grad_norm", last_n=None, layers=("conv1", "conv2", "fc1", "fc2", "fc3")):
    """Per layer, per lane, over training (log scale): gradient norm or update-to-weight ratio."""
    fig = _probe_lines(snap, layers, metric, last_n)
    title = "Gradient norm per layer" if metric == "grad_norm" else "Update-to-weight ratio per layer (lr·|g|/|w|)"
    fig.update_yaxes(dtick=1)  # one label per power of ten
    return styled(fig, title, xaxis_title="step", yaxis_type="log", height=440)


def saturation_figure(snap, last_n=None):
    """Fraction of saturated sigmoid units (or inactive ReLUs) per BN position, per lane."""
    fig = _probe_lines(snap, BN_LAYERS, "saturated", last_n)
    fig.update_yaxes(rangemode="tozero")
    return styled(
        fig,
        "Saturated units (sigmoid < 0.05 or > 0.95; ReLU = 0)",
        xaxis_title="step",
        yaxis_title="fraction",
        height=440,
    )


# --------------------------------------------------------------------------------------- studies
def landscape_figure(snap, last_n=None):
    """Santurkar et al. (2018), light: loss spread and gradient change along the gradient, per lane."""
    fig = new_figure(
        rows=1,
        cols=2,
        subplot_titles=(
            "loss spread along the gradient (max − min)",
            "effective smoothness: max |Δ gradient| / |step|",
        ),
    )
    for lane in snap.lanes:
        t = window(lane.tables.get("landscape", {}), last_n)
        if not len(t.get("step", [])):
            continue
        for col, key in enumerate(("loss_spread", "smoothness"), 1):
            fig.add_trace(
                go.Scatter(
                    x=t["step"],
                    y=t[key],
                    mode="lines+markers",
                    name=lane.label,
                    legendgroup=lane.label,
                    showlegend=col == 1,
                    line=dict(color=lane_color(lane), width=3),
                ),
                row=1,
                col=col,
            )
    fig.update_yaxes(type="log", **LOG_TICKS)
    fig.update_xaxes(title_text="step")
    if not fig.data:
        empty_note(fig, "No measurements yet: switch the landscape probe on and train")
    return styled(fig, "How smooth is the loss around the weights?", height=420)


def race_figure(results):
    """Loss curves of the learning-rate race: one panel per lane, one line per learning rate."""
    lanes = list(dict.fromkeys(r.lane for r in results))
    lrs = sorted({r.lr for r in results})
    fig = new_figure(rows=1, cols=max(1, len(lanes)), subplot_titles=lanes or [""], shared_yaxes=True)
    palette = ("#440154", "#3B528B", "#21908C", "#5DC863", "#B8DE29", "#FDE725", "#F98E09", "#D62728")
    for r in results:
        col = lanes.index(r.lane) + 1
        color = palette[lrs.index(r.lr) % len(palette)]
        x, y = downsample(r.steps, np.clip(r.loss, 1e-3, 1e3))
        fig.add_trace(
            go.Scatter(
                x=x,
                y=y,
                mode="lines",
                name=f"lr {r.lr:g}",
                legendgroup=f"{r.lr:g}",
                showlegend=col == 1,
                line=dict(color=color, width=2.5),
            ),
            row=1,
            col=col,
        )
        if r.diverged_at:
            at = min(int(np.searchsorted(r.steps, r.diverged_at)), len(r.loss) - 1)
            mark = float(np.clip(np.nan_to_num(r.loss[at], nan=1e3, posinf=1e3), 1e-3, 1e3))
            fig.add_trace(
                go.Scatter(
                    x=[r.diverged_at],
                    y=[mark],
                    mode="markers",
                    marker=dict(symbol="x", size=16, color=color),
                    showlegend=False,
                    hovertext=f"lr {r.lr:g} diverged at step {r.diverged_at}",
                ),
                row=1,
                col=col,
            )
    fig.update_yaxes(type="log", **LOG_TICKS)
    fig.update_yaxes(title_text="training loss", col=1)
    fig.update_xaxes(title_text="step")
    if not fig.data:
        empty_note(fig, "Press Run to race the learning rates")
    return styled(fig, "Learning-rate race: which learn, which stall, which diverge (×)", height=400)


def race_table(results):
    return [
        {
            "learning rate": f"{r.lr:g}",
            "lane": r.lane,
            "result": r.verdict,
            "final loss": "-" if r.diverged_at else f"{r.final_loss:.3f}",
            "validation accuracy": "-" if r.diverged_at else f"{r.val_acc:.1%}",
        }
        for r in results
    ]


def batch_stats_figure(result):
    """Train-mode vs eval-mode accuracy over batch sizes, and how far batch statistics stray."""
    fig = new_figure(
        rows=1,
        cols=2,
        subplot_titles=("test accuracy", f"{result.position}: spread around the running ones"),
    )
    bs = list(result.batch_sizes)
    fig.add_trace(
        go.Scatter(
            x=bs,
            y=result.train_mode_acc,
            mode="lines+markers",
            name="batch statistics (train mode)",
            line=dict(color="#E4572E", width=3),
        ),
        row=1,
        col=1,
    )
    fig.add_trace(
        go.Scatter(
            x=bs,
            y=[result.eval_mode_acc] * len(bs),
            mode="lines",
            name="running statistics (eval mode)",
            line=dict(color="#1F77B4", width=3, dash="dash"),
        ),
        row=1,
        col=1,
    )
    fig.add_trace(
        go.Scatter(
            x=bs,
            y=result.mean_spread,
            mode="lines+markers",
            name="mean: std of (batch − running)",
            line=dict(color="#2CA02C", width=3),
        ),
        row=1,
        col=2,
    )
    fig.add_trace(
        go.Scatter(
            x=bs,
            y=result.var_spread,
            mode="lines+markers",
            name="variance: std of (batch − running) / running",
            line=dict(color="#9467BD", width=3),
        ),
        row=1,
        col=2,
    )
    fig.update_annotations(font_size=15)  # the panel titles fit their half at 1280 px
    # every batch size tested, as it is (the log axis's own ticks read "10 2 5 100")
    fig.update_xaxes(type="log", title_text="batch size", tickmode="array", tickvals=bs, ticktext=[str(b) for b in bs])
    fig.update_yaxes(title_text="accuracy", row=1, col=1)
    fig.update_yaxes(type="log", row=1, col=2, **LOG_TICKS)
    return styled(fig, "Batch statistics against running statistics", height=400)


PNG_CONFIG = {
    "displaylogo": False,
    "toImageButtonOptions": {"format": "png", "scale": 2},
    "modeBarButtonsToRemove": ["select2d", "lasso2d", "pan2d", "zoomIn2d", "zoomOut2d", "autoScale2d"],
}
