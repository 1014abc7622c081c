"""A run saved as one web page: a self-contained HTML file a teacher can post on a course page.

``run_page(source)`` draws the run's main charts with ``bnviz.pictures.figures`` and puts them in one HTML file with a
step slider (and a Play button) over ``FRAMES`` moments spread evenly from the run's first step to its last;
the slider moves every chart to the same moment. A chart over steps (loss, accuracy, gradients, running
statistics) is drawn once, from the whole run, and cut in the browser at the slider's step, as
``Recording.snapshot(step)`` cuts the tables; a chart of one moment (the histograms) is drawn at every frame.
Plotly's JavaScript is inlined, so the page needs no server and opens offline. A table gives the run's
settings and lanes, and a sentence under each heading says what a chart shows.
"""

import base64
import dataclasses
import html
import json

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.io.json import to_json_plotly
from plotly.offline import get_plotlyjs

from bnviz.live.lane_events import lane_events
from bnviz.live.replay import Recording
from bnviz.live.snapshot import Snapshot
from bnviz.pictures import figures
from bnviz.step.models import BN_LAYERS, NORM_INFO

FRAMES = 30  # moments of the run on the slider
PAGE_POINTS = 400  # points per line at most (the dashboard allows more; this keeps the file small)
COLORWAY = qualitative.D3  # plotly.js's own colours, in its order
CONFIG = {"displaylogo": False, "responsive": True, "modeBarButtonsToRemove": ["select2d", "lasso2d"]}


@dataclasses.dataclass(frozen=True)
class Chart:
    heading: str
    caption: str
    draw: object  # snapshot -> go.Figure
    timeline: bool  # x is the step: drawn once, cut in the browser; its axes stay as at the end of the run


def charts_of(recording):
    """The charts of this run's page, in order."""
    charts = [
        Chart(
            "Training loss",
            "The cross-entropy of each lane on every training batch (log scale): the lower, the better it fits.",
            figures.loss_figure,
            True,
        ),
        Chart(
            "Accuracy",
            "Thin lines: accuracy on the training batches (smoothed). Thick lines: on a fixed validation subset of "
            "the test set. Diamonds: on the full 10,000 test images at the end of each epoch.",
            figures.accuracy_figure,
            True,
        ),
    ]
    for position in BN_LAYERS:
        charts.append(
            Chart(
                f"Inside the network: {figures.POSITION_NAMES[position]}",
                f"How the values at {position} are spread over one batch: entering BN (the layer's raw output), "
                "leaving BN (normalised, then scaled and shifted), and after the activation. In the lane without BN "
                "the layer does nothing, so its first two panels match.",
                lambda snap, position=position: figures.histogram_figure(snap, position),
                False,
            )
        )
    charts.append(
        Chart(
            "Gradient norms",
            "The size of each layer's gradient over training (log scale): how hard each layer is being pushed.",
            figures.gradient_figure,
            True,
        )
    )
    for i, spec in enumerate(recording.specs):
        if {"running_mean", "running_var"} & set(NORM_INFO[spec.norm].state):  # not LayerNorm, GroupNorm
            charts.append(
                Chart(
                    f"Running statistics of lane {'ABC'[i]} · {spec.label}",
                    "The running mean and variance BN keeps for bn1 (one line per channel): the averages it "
                    "uses in place of the batch's own statistics once the network is evaluated.",
                    lambda snap, i=i: figures.running_stats_figure(snap.lanes[i], "bn1"),
                    True,
                )
            )
    return charts


def as_recording(source):
    """A ``Recording`` as it is; a ``Snapshot``, or anything with ``snapshot()``, as a recording of its tables."""
    if isinstance(source, Recording):
        return source
    snap = source if isinstance(source, Snapshot) else source.snapshot()
    meta = {
        "name": "run",
        **(source.header() if hasattr(source, "header") else {}),
        "settings": dataclasses.asdict(snap.settings),
        "device": snap.device,
        "lanes": [dataclasses.asdict(lane.spec) for lane in snap.lanes],
    }
    return Recording(meta, [lane.tables for lane in snap.lanes])


def frame_steps(recording, n=FRAMES):
    """``n`` steps (fewer in a short run) spread evenly from the run's first step to its last ([0] before any)."""
    firsts = [int(t["steps"]["step"][0]) for t in recording.lane_tables if len(t["steps"].get("step", []))]
    first, last = min(firsts, default=0), recording.last_step
    return sorted({int(round(s)) for s in np.linspace(first, last, n)})


def _lighter(fig):
    """The figure as a dict, with at most PAGE_POINTS points per line and numbers as float32: fewer bytes."""
    groups = {}
    for trace in fig.data:
        if isinstance(trace, go.Scatter) and trace.x is not None and len(trace.x) > PAGE_POINTS:
            x, y = figures.downsample(trace.x, trace.y, PAGE_POINTS)
            trace.update(x=x, y=y)
        if isinstance(trace, go.Scatter) and trace.line.color is None and trace.legendgroup:
            # one colour per legend entry in every panel (a channel's mean and variance alike)
            trace.line.color = COLORWAY[groups.setdefault(trace.legendgroup, len(groups)) % len(COLORWAY)]
    out = fig.to_plotly_json()
    if out["layout"].get("xaxis", {}).get("title"):  # the legend below the axis title, with room between them
        out["layout"]["legend"] = {**out["layout"].get("legend", {}), "y": -0.4}
    for trace in out["data"]:
        for key, value in trace.items():
            if isinstance(value, dict) and value.get("dtype") == "f8" and "bdata" in value:  # a float64 array
                single = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.float64).astype(np.float32)
                trace[key] = {"dtype": "f4", "bdata": base64.b64encode(single.tobytes()).decode()}
    return out


def _frame_label(snap, total):
    epoch = max((lane.epoch for lane in snap.lanes), default=1)
    return f"step {snap.max_step:,} of {total:,} · epoch {epoch}"


def _table(head, rows):
    """An HTML table with a heading row, every cell escaped."""
    lines = ["<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    lines += ["<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows]
    return "".join(lines + ["</table>"])


def _settings_table(recording, per_row=3):
    """The run's settings as (name, value) pairs, ``per_row`` pairs a row, every cell escaped."""
    st, meta = recording.settings, recording.meta
    pairs = [
        ("learning rate", f"{st.lr:g}"),
        ("batch size", st.batch_size),
        ("epochs", st.epochs),
        ("training images", f"{st.train_size or 60_000:,}"),
        ("validation subset", f"{st.val_size:,} test images"),
        ("checked every", f"{st.val_every} steps"),
        ("BN momentum", f"{st.bn_momentum:g}"),
        ("BN eps", f"{st.bn_eps:g}"),
        ("seed", st.seed),
        ("probes every", f"{st.probe_every} steps"),
        ("trained on", meta.get("device", "?")),
        ("saved", str(meta.get("saved_at", "-")).replace("T", " ")),
    ]
    rows = []
    for i in range(0, len(pairs), per_row):
        cells = "".join(
            f"<th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td>" for k, v in pairs[i : i + per_row]
        )
        rows.append(f"<tr>{cells}</tr>")
    return f"<table>{''.join(rows)}</table>"


def _lane_rows(snap):
    rows = []
    for lane in snap.lanes:
        test = lane.tables["epochs"].get("val_acc", [])
        val = lane.tables["val"].get("val_acc", [])
        state = f"diverged at step {lane.diverged_at:,}" if lane.diverged_at else str(lane.status)
        events = [e.describe() for e in lane_events(lane.tables, lane.diverged_at)]
        rows.append(
            (
                lane.label,
                "none" if lane.spec.norm == "none" else NORM_INFO[lane.spec.norm].label,
                lane.spec.activation,
                f"{lane.step:,}",
                f"{test[-1]:.1%}" if len(test) else "-",
                f"{val[-1]:.1%}" if len(val) else "-",
                state,
                "; ".join(events) or "none",
            )
        )
    return rows


NUMBERS = {2: "Two", 3: "Three"}


def _lanes_sentence(recording):
    n = len(recording.specs)
    if n == 1:
        return "One LeNet network learns Fashion-MNIST."
    return (
        f"{NUMBERS.get(n, n)} LeNet networks learn Fashion-MNIST side by side, from the same starting weights and "
        "on the same batches in the same order: they differ only as the Lanes table says."
    )


GENERIC_NAMES = ("dashboard", "run", "recording")  # what a dashboard's live run or an unnamed file is called


def which_run(name: str) -> str:
    """The run in the page's lead sentence: "this run" for a dashboard's live run, else its name in bold."""
    return "this run" if name in GENERIC_NAMES else f"the run <b>{html.escape(name)}</b>"


def run_page(source, title=None, frames=FRAMES):
    """One self-contained HTML page of a run (a ``Recording``, a ``Snapshot`` or a live experiment).

    ``title`` defaults to one naming the run; ``frames`` is how many moments of the run the slider offers.
    """
    recording = as_recording(source)
    name = recording.name
    title = title or "Batch Normalization, side by side" + ("" if name in GENERIC_NAMES else f": {name}")
    charts = charts_of(recording)
    steps = frame_steps(recording, frames)
    snaps = [recording.snapshot(s) for s in steps]
    final = snaps[-1]
    data = {
        "labels": [_frame_label(snap, recording.last_step) for snap in snaps],
        "steps": steps,
        "charts": [
            {"timeline": True, "frames": [_lighter(c.draw(final))]}
            if c.timeline
            else {"timeline": False, "frames": [_lighter(c.draw(snap)) for snap in snaps]}
            for c in charts
        ],
    }
    # Inside <script>, "</" would end it: JSON may write <, > and & as \u escapes, which read back the same.
    payload = to_json_plotly(data).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    sections = "\n".join(
        f'<section><h2>{html.escape(c.heading)}</h2><p class="caption">{html.escape(c.caption)}</p>'
        f'<div class="chart" id="chart-{i}"></div></section>'
        for i, c in enumerate(charts)
    )
    lanes = _table(
        (
            "lane",
            "normalisation",
            "activation",
            "steps",
            "test accuracy (last epoch)",
            "validation",
            "status",
            "events (validation accuracy before → after)",
        ),
        _lane_rows(final),
    )
    return PAGE.format(
        title=html.escape(title),
        which=which_run(name),
        plotlyjs=get_plotlyjs(),
        settings=_settings_table(recording),
        lanes=lanes,
        last_index=len(steps) - 1,
        first=f"{steps[0]:,}",
        last=f"{steps[-1]:,}",
        sections=sections,
        lanes_sentence=html.escape(_lanes_sentence(recording)),
        payload=payload,
        config=json.dumps(CONFIG),
    )


PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="bnviz">
<title>{title}</title>
<style>
  body {{ font-family: system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif; font-size: 17px;
         color: #1d2330; margin: 0; background: #f6f7f9; line-height: 1.45; }}
  header, main {{ max-width: 1200px; margin: 0 auto; padding: 0 24px; }}
  header {{ padding-top: 20px; }}
  h1 {{ font-size: 28px; margin: 0 0 6px; }}
  h2 {{ font-size: 21px; margin: 0 0 4px; }}
  header h2 {{ font-size: 18px; margin: 10px 0 4px; }}
  .lead {{ margin: 0 0 14px; max-width: 70em; }}
  table {{ border-collapse: collapse; background: white; font-size: 15px; margin-bottom: 12px; }}
  th, td {{ border: 1px solid #d7dce4; padding: 4px 10px; text-align: left; }}
  th {{ background: #eef1f5; font-weight: 600; }}
  .timeline {{ position: sticky; top: 0; z-index: 10; background: #1d2330; color: white; }}
  .timeline div {{ max-width: 1200px; margin: 0 auto; padding: 10px 24px; display: flex; gap: 16px;
                  align-items: center; }}
  .timeline input {{ flex: 1; accent-color: #E4572E; height: 22px; }}
  .timeline button {{ font-size: 16px; padding: 4px 14px; border-radius: 6px; border: 0; cursor: pointer; }}
  #step-label {{ min-width: 17em; font-variant-numeric: tabular-nums; font-weight: 600; }}
  section {{ background: white; border: 1px solid #e1e5ec; border-radius: 8px; margin: 18px 0;
            padding: 14px 16px 6px; }}
  .caption {{ margin: 0 0 6px; color: #3c4556; }}
  footer {{ max-width: 1200px; margin: 0 auto; padding: 10px 24px 30px; color: #5b6575; font-size: 14px; }}
</style>
<script>{plotlyjs}</script>
</head>
<body>
<header>
<h1>{title}</h1>
<p class="lead">{lanes_sentence} Drag the slider (or press Play) to watch
{which} unfold from step {first} to step {last}: every chart shows the run as it stood at that step.</p>
<h2>Lanes</h2>
{lanes}
<h2>Settings</h2>
{settings}
</header>
<nav class="timeline" aria-label="step of the run"><div>
<button id="play" type="button">&#9654; Play</button>
<input id="step-slider" type="range" min="0" max="{last_index}" step="1" value="{last_index}"
       aria-label="step of the run">
<span id="step-label"></span>
</div></nav>
<main>
{sections}
</main>
<footer>Made with bnviz. The charts are interactive: hover for values, drag to zoom, double-click to zoom out.
</footer>
<script type="application/json" id="bnviz-data">{payload}</script>
<script>
(function () {{
  const page = JSON.parse(document.getElementById("bnviz-data").textContent);
  const config = {config};
  const slider = document.getElementById("step-slider");
  const label = document.getElementById("step-label");
  const play = document.getElementById("play");
  const TYPED = {{f8: Float64Array, f4: Float32Array, i4: Int32Array, u4: Uint32Array, i2: Int16Array,
                 u2: Uint16Array, i1: Int8Array, u1: Uint8Array}};

  function decode(v) {{  // Plotly's {{dtype, bdata}} (base64) as a typed array
    if (!v || !v.bdata) return v;
    const bytes = Uint8Array.from(atob(v.bdata), ch => ch.charCodeAt(0));
    return new TYPED[v.dtype](bytes.buffer);
  }}

  function cut(trace, step) {{  // the points up to this step, as Recording.snapshot(step) keeps them
    const x = decode(trace.x), y = decode(trace.y);
    if (!x || !y || !x.length || x.length !== y.length) return trace;
    let n = 0;
    while (n < x.length && x[n] <= step) n++;
    if (n === 0) return Object.assign({{}}, trace, {{x: [x[0]], y: [NaN]}});  // nothing yet, but in the legend
    return Object.assign({{}}, trace, {{x: x.slice(0, n), y: y.slice(0, n)}});
  }}

  const charts = page.charts.map((c, i) => ({{
    div: document.getElementById("chart-" + i), timeline: c.timeline, frames: c.frames, ranges: null
  }}));

  function axisRanges(div) {{  // the axes as drawn for the whole run
    const out = {{}};
    for (const key of Object.keys(div._fullLayout)) {{
      if (/^[xy]axis[0-9]*$/.test(key)) out[key] = div._fullLayout[key].range.slice();
    }}
    return out;
  }}

  function figureAt(chart, i) {{
    const frame = chart.timeline ? chart.frames[0] : chart.frames[i];
    const data = chart.timeline && chart.ranges ? frame.data.map(t => cut(t, page.steps[i])) : frame.data;
    const layout = JSON.parse(JSON.stringify(frame.layout));
    for (const [key, range] of Object.entries(chart.ranges || {{}})) {{
      layout[key] = Object.assign(layout[key] || {{}}, {{range: range, autorange: false}});
    }}
    return [data, layout];
  }}

  function show(i) {{
    slider.value = i;
    label.textContent = page.labels[i] || "";
    return Promise.all(charts.map(c => Plotly.react(c.div, ...figureAt(c, i), config)))
      .then(() => {{ document.body.dataset.step = page.steps[i]; }});  // drawn: tests wait on it
  }}

  let timer = null;
  function stop() {{ clearInterval(timer); timer = null; play.innerHTML = "&#9654; Play"; }}
  play.addEventListener("click", () => {{
    if (timer) return stop();
    if (+slider.value >= +slider.max) show(0);
    play.innerHTML = "&#10074;&#10074; Pause";
    timer = setInterval(() => {{
      if (+slider.value >= +slider.max) return stop();
      show(+slider.value + 1);
    }}, 400);
  }});
  slider.addEventListener("input", () => {{ stop(); show(+slider.value); }});

  const last = page.labels.length - 1;
  show(Math.max(last, 0)).then(() => {{  // the whole run first: its axes then stay put
    for (const c of charts) if (c.timeline) c.ranges = axisRanges(c.div);
    document.body.dataset.ready = "yes";
  }});
}})();
</script>
</body>
</html>
"""
