"""A line figure of ``bnviz.pictures.figures`` drawn as a static SVG: the charts of a viewer's page (``?watch=``).

A student's fresh viewer tab spent about half the time to its first chart loading and running Plotly's
4.7 MB bundle (docs/PERFORMANCE.md). The Training
view's two figures are lines, markers, vertical marks and their labels, so a viewer gets them drawn here,
from the same figure objects the teacher's page shows: no script to wait for, the same colours, axes,
ranges and marks, without Plotly's hover and zoom. (The page still fetches Plotly's bundle once it is idle,
for the other views: later, not before the first chart.) A figure with anything else in it (bars, heat maps,
subplots) raises ``Unsupported``, and the page draws it with Plotly.

``to_svg(fig)`` reads the figure as Plotly would draw it: an axis range given in the layout is used as is
(a log axis's range in decades), otherwise the data's extent (padded a little where markers are drawn); a
log axis's ticks are its ``tickvals`` or 1, 2, 5 per decade (``dtick="D2"``); NaN breaks a line; points
outside the plot are clipped; the legend is drawn where Plotly would draw one.
"""

import math
from html import escape

import numpy as np

# The drawing's width in its own units; it is scaled to the column's width on the page. On a phone (a column of
# about 356 px at 390 px) the legend's 15 units are drawn at 12 px, the smallest a student's phone should show.
W = 440
MARGIN = dict(l=78, r=16, t=46)
TICK_FONT, TITLE_FONT, LEGEND_FONT = 16, 19, 15
CHAR = 0.55  # a character's width per unit of font size, to lay out the legend and label boxes
GRID, AXIS, TEXT = "#E5ECF6", "#B0B8C4", "#2A3F5F"
DASHES = {"solid": None, "dot": "2,3", "dash": "7,4", "longdash": "12,5", "dashdot": "7,3,2,3"}
MARKERS = {"circle", "diamond"}
COLUMN = 3  # a line keeps at most two vertices (its lowest and highest) per this many units of width
STEPS = 10  # a line's vertices are placed in tenths of a unit (the path's d in whole numbers, drawn at 1/10)


class Unsupported(ValueError):
    """The figure holds something this module does not draw; draw it with Plotly."""


def nice_ticks(lo, hi, n=6):
    """Round values (1, 2, 2.5 or 5 times a power of ten apart) from lo to hi, about n of them."""
    if not hi > lo:
        return [lo]
    raw = (hi - lo) / n  # the step: the first round value at least this, so at most n + 1 ticks
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return [round(first + i * step, 12) for i in range(int((hi - first) / step + 1e-9) + 1)]


def log_ticks(lo, hi):
    """1, 2 and 5 times each power of ten between 10**lo and 10**hi (lo, hi in decades), as dtick='D2' does."""
    decades = range(math.floor(lo), math.ceil(hi) + 1)
    return [m * 10.0**d for d in decades for m in (1, 2, 5) if lo <= math.log10(m) + d <= hi]


def label(v):
    """A tick label as Plotly's ``~g`` writes it: as few digits as the value needs (0.2, 1.5, 0.00001), in
    exponent form only below 1e-6 or from 1e6 (1e-7, 1e+6)."""
    if v != 0 and 1e-6 <= abs(v) < 1e-4:  # Python's g turns to exponents sooner than d3's
        return np.format_float_positional(v, precision=6, unique=True, trim="-")
    text = f"{v:.6g}"
    return text.replace("e-0", "e-").replace("e+0", "e+")


class Axis:
    """One axis: its range in drawing units and the map from a data value to a pixel along it."""

    def __init__(self, layout_axis, values, log, px0, px1, pad=0.04):
        self.log = log
        given = layout_axis.range
        if given is not None and None not in given:
            lo, hi = (float(v) for v in given)
        else:
            v = np.asarray(values, dtype=float)
            v = v[np.isfinite(v) & (v > 0)] if log else v[np.isfinite(v)]
            if log:
                v = np.log10(v)
            lo, hi = (float(v.min()), float(v.max())) if len(v) else (0.0, 1.0)
            margin = (hi - lo) * pad if hi > lo else 1.0  # a single value still gets an axis around it
            lo, hi = lo - margin, hi + margin
        self.lo, self.hi, self.px0, self.px1 = lo, hi, px0, px1
        if layout_axis.tickvals is not None:
            self.ticks = [float(t) for t in layout_axis.tickvals]
            text = layout_axis.ticktext
            self.labels = list(text) if text is not None else [label(t) for t in self.ticks]
        else:
            self.ticks = log_ticks(lo, hi) if log else nice_ticks(lo, hi)
            self.labels = [label(t) for t in self.ticks]
        inside = [(t, s) for t, s in zip(self.ticks, self.labels) if self.lo - 1e-9 <= self.unit(t) <= self.hi + 1e-9]
        self.ticks, self.labels = [t for t, _ in inside], [s for _, s in inside]

    def unit(self, v):
        """A data value in the axis's own units (decades on a log axis); NaN where it cannot be drawn."""
        v = np.asarray(v, dtype=float)
        if self.log:
            with np.errstate(divide="ignore", invalid="ignore"):
                return np.where(v > 0, np.log10(np.where(v > 0, v, 1.0)), np.nan)
        return v

    def px(self, v):
        return self.px0 + (self.unit(v) - self.lo) / (self.hi - self.lo) * (self.px1 - self.px0)

    def paper(self, p):
        return self.px0 + p * (self.px1 - self.px0)


def _check(fig):
    layout = fig.layout
    for trace in fig.data:
        if trace.type != "scatter" or (trace.xaxis or "x") != "x" or (trace.yaxis or "y") != "y":
            raise Unsupported(f"a {trace.type} trace on axes {trace.xaxis}/{trace.yaxis}")
        symbol = trace.marker.symbol
        if "markers" in (trace.mode or "") and symbol is not None and symbol not in MARKERS:
            raise Unsupported(f"marker symbol {symbol}")
        if trace.fill not in (None, "none") or trace.line.shape not in (None, "linear"):
            raise Unsupported(f"a filled or shaped line ({trace.fill}, {trace.line.shape})")
        if trace.visible not in (None, True) or (trace.line.dash or "solid") not in DASHES:
            raise Unsupported(f"a trace drawn {trace.visible} with dash {trace.line.dash}")
    if layout.xaxis.type == "log":
        raise Unsupported("a log x axis")
    for a in layout.annotations:
        if a.showarrow is not False or a.xref not in ("x", "paper") or a.yref != "paper":
            raise Unsupported("an annotation with an arrow, or placed on the y axis")
    axes = [k for k in layout.to_plotly_json() if k.startswith(("xaxis", "yaxis")) and k not in ("xaxis", "yaxis")]
    if axes:
        raise Unsupported(f"subplots ({', '.join(axes)})")
    for shape in layout.shapes:
        if shape.type != "line" or shape.xref != "x" or shape.yref != "paper" or shape.x0 != shape.x1:
            raise Unsupported(f"a {shape.type} shape")
        if (shape.line.dash or "solid") not in DASHES or shape.layer == "below":
            raise Unsupported(f"a shape drawn {shape.line.dash}, {shape.layer}")


def _legend(fig):
    """(name, trace) of every trace the legend lists; none, as in Plotly, where the layout says so or where
    at most one trace would be listed and none asks to be."""
    items = [(t.name, t) for t in fig.data if t.showlegend is not False]
    shown = fig.layout.showlegend
    if shown is False or (shown is None and len(items) < 2 and not any(t.showlegend for _, t in items)):
        return []
    return [(name or "", t) for name, t in items]


def _legend_rows(items, width):
    """The legend's entries laid out left to right, wrapped at ``width``: [[(x, name, trace), ...], ...]."""
    rows, row, x = [], [], 0.0
    for name, trace in items:
        w = 34 + len(name) * CHAR * LEGEND_FONT + 18
        if row and x + w > width:
            rows.append(row)
            row, x = [], 0.0
        row.append((x, name, trace))
        x += w
    return rows + ([row] if row else [])


def _segments(xs, ys):
    """Runs of drawable points (a NaN ends a run, as Plotly's lines break there)."""
    ok = np.isfinite(xs) & np.isfinite(ys)
    runs, start = [], None
    for i, good in enumerate(ok):
        if good and start is None:
            start = i
        elif not good and start is not None:
            runs.append((start, i))
            start = None
    if start is not None:
        runs.append((start, len(ok)))
    return runs


def _thin(xs, ys):
    """At most two vertices per COLUMN units of x: in each column its lowest and its highest point, in their
    order, and the run's first and last. The line spans the same band with a fraction of the points: a long run's
    4,700 steps per trace are about 290 vertices. A column of 3 units is 2.4 px on a phone, about 3.7 px on a
    laptop: a noisy loss curve keeps its band and its trend, drawn with a slightly coarser zigzag. (Of 2 units, a
    long run's two charts were 20.7 kB; of 3, 18.4 kB: a class of 100 then stays under 5 kB/s a viewer.)"""
    n = len(xs)
    if n < 4 or np.any(np.diff(xs) < 0):  # x goes back (not a curve over steps): drawn as it is
        return xs, ys
    col = np.floor(xs / COLUMN).astype(np.int64)
    if n <= 2 * (col[-1] - col[0] + 1):
        return xs, ys
    order = np.lexsort((ys, col))  # by column, then by height
    starts = np.flatnonzero(np.r_[True, col[order][1:] != col[order][:-1]])
    ends = np.r_[starts[1:], n] - 1
    keep = np.unique(np.r_[order[starts], order[ends], 0, n - 1])
    return xs[keep], ys[keep]


def _path(xs, ys):
    """A line's vertices as a path's ``d``, in steps of 1/STEPS of a unit (the path is drawn scaled by
    1/STEPS): the first point, then each next one relative to the last, whole numbers, a repeated point left
    out. Each point is rounded where it is (the rounding does not add up along the line), so a vertex is at
    most half a step (0.05 units, as the "%.1f" it replaced) from its value, and a point takes about 6
    characters instead of the 12 of "123.4,256.7"."""
    q = np.rint(np.column_stack([xs, ys]) * STEPS).astype(np.int64)
    keep = np.r_[True, np.any(q[1:] != q[:-1], axis=1)]
    q = q[keep]
    d = np.diff(q, axis=0).ravel()
    moves = " ".join(map(str, d.tolist())).replace(" -", "-")
    return f"M{q[0, 0]} {q[0, 1]}" + (f"l{moves}" if len(d) else "")


def _marker_style(fill, edge, edge_width):
    stroke = f' stroke="{edge}" stroke-width="{edge_width}"' if edge and edge_width else ""
    return f'fill="{fill}"{stroke}'


def _marker(x, y, symbol, size, style=""):
    """One marker; its fill and edge are ``style``, or its group's (a trace's markers share theirs)."""
    r = size / 2
    style = f" {style}" if style else ""
    if symbol == "diamond":
        d = r * 1.3
        path = f"M{x:.1f},{y - d:.1f}L{x + d:.1f},{y:.1f}L{x:.1f},{y + d:.1f}L{x - d:.1f},{y:.1f}Z"
        return f'<path d="{path}"{style}/>'
    return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r:.1f}"{style}/>'


def _trace(trace, xa, ya):
    """The SVG of one scatter trace: its line, then its markers."""
    mode = trace.mode or "lines"
    color = trace.line.color or trace.marker.color or TEXT
    xs, ys = xa.px(np.asarray(trace.x, dtype=float)), ya.px(np.asarray(trace.y, dtype=float))
    opacity = 1.0 if trace.opacity is None else trace.opacity
    out = [f'<g data-trace="{escape(trace.name or "")}" opacity="{opacity:g}">']
    if "lines" in mode:
        width = 2 if trace.line.width is None else trace.line.width
        dash = DASHES.get(trace.line.dash or "solid")  # in the path's scaled units
        dash = f' stroke-dasharray="{",".join(str(int(v) * STEPS) for v in dash.split(","))}"' if dash else ""
        lines = [_path(*_thin(xs[a:b], ys[a:b])) for a, b in _segments(xs, ys)]
        if lines:  # one path for every run of the trace (an M starts each), its style said once
            out.append(
                f'<path class="line" d="{"".join(lines)}" transform="scale({1 / STEPS:g})" fill="none"'
                f' stroke="{color}" stroke-width="{width * STEPS:g}" stroke-linejoin="round"{dash}/>'
            )
    if "markers" in mode:
        m = trace.marker
        size = 6 if m.size is None else m.size
        fill = m.color or color
        out.append(f"<g {_marker_style(fill, m.line.color, m.line.width or 0)}>")  # the style once, not per marker
        for x, y in zip(xs, ys):
            if np.isfinite(x) and np.isfinite(y):
                out.append(_marker(x, y, m.symbol or "circle", size))
        out.append("</g>")
    out.append("</g>")
    return "".join(out)


def _text(x, y, text, size, color=TEXT, anchor="middle", extra=""):
    at = f'x="{x:.1f}" y="{y:.1f}" font-size="{size}" fill="{color}" text-anchor="{anchor}"'
    return f"<text {at}{extra}>{escape(text)}</text>"


def to_svg(fig):
    """The figure as one ``<svg>`` element (a string), as wide as its container. Raises Unsupported.

    A line break follows the opening tag and there is none after it, so Markdown takes the whole element as one
    block of HTML and leaves the text inside it alone."""
    _check(fig)
    layout = fig.layout
    height = layout.height or 380
    items = _legend(fig)
    legend = _legend_rows(items, W - MARGIN["l"])
    legend_h = 24 * len(legend)
    bottom = 62 + legend_h  # tick labels, the axis title, then the legend's rows
    left, right, top = MARGIN["l"], W - MARGIN["r"], MARGIN["t"]
    plot_bottom = height - 62  # the plot keeps the height Plotly gives it; the legend adds below
    total_h = plot_bottom + bottom
    xs = [np.asarray(t.x, dtype=float) for t in fig.data] + [np.array([s.x0 for s in layout.shapes], dtype=float)]
    ys = [np.asarray(t.y, dtype=float) for t in fig.data]
    markers = any("markers" in (t.mode or "") for t in fig.data)  # Plotly pads an axis for markers, not lines
    xa = Axis(layout.xaxis, np.concatenate(xs) if xs else [], False, left, right, pad=0.03 if markers else 0.0)
    ya = Axis(layout.yaxis, np.concatenate(ys) if ys else [], layout.yaxis.type == "log", plot_bottom, top)
    clip = f"clip-{id(fig):x}"  # one per figure on the page (the loss and the accuracy charts sit side by side)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {total_h}" width="100%" role="img"'
        f' style="font-family:inherit; display:block" data-chart="{escape(layout.title.text or "")}">\n',
        f"<title>{escape(layout.title.text or 'chart')}</title>",
        f'<defs><clipPath id="{clip}"><rect x="{left}" y="{top}" width="{right - left}" height="{plot_bottom - top}"/>'
        "</clipPath></defs>",
    ]
    xpx, ypx = [float(xa.px(t)) for t in xa.ticks], [float(ya.px(t)) for t in ya.ticks]
    grid = "".join(f"M{x:.1f} {top}V{plot_bottom}" for x in xpx) + "".join(f"M{left} {y:.1f}H{right}" for y in ypx)
    ticks = "".join(f"M{x:.1f} {plot_bottom}v5" for x in xpx) + "".join(f"M{left - 5} {y:.1f}h5" for y in ypx)
    if grid:  # the grid, then the axes' lines and tick marks, each one path
        out.append(f'<path d="{grid}" fill="none" stroke="{GRID}"/>')
    out.append(f'<path d="M{left},{top}V{plot_bottom}H{right}{ticks}" fill="none" stroke="{AXIS}"/>')
    out.append('<g class="xticks">')
    for x, s in zip(xpx, xa.labels):
        out.append(_text(x, plot_bottom + 21, s, TICK_FONT))
    out.append('</g><g class="yticks">')
    for y, s in zip(ypx, ya.labels):
        out.append(_text(left - 8, y + 5, s, TICK_FONT, anchor="end"))
    out.append("</g>")
    if layout.xaxis.title.text:
        out.append(_text((left + right) / 2, plot_bottom + 44, layout.xaxis.title.text, TICK_FONT))
    if layout.yaxis.title.text:
        mid = (top + plot_bottom) / 2
        out.append(_text(18, mid, layout.yaxis.title.text, TICK_FONT, extra=f' transform="rotate(-90 18 {mid:.1f})"'))
    out.append(f'<g clip-path="url(#{clip})">')
    out += [_trace(t, xa, ya) for t in fig.data]
    out.append('<g class="marks">')
    for shape in layout.shapes:  # the teacher's marks, over the curves (Plotly's layer "above")
        x = float(xa.px(shape.x0))
        dash = DASHES.get(shape.line.dash or "solid")
        dash = f' stroke-dasharray="{dash}"' if dash else ""
        y0, y1 = ya.paper(shape.y0), ya.paper(shape.y1)
        out.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y0:.1f}" y2="{y1:.1f}" stroke="{shape.line.color or AXIS}"'
            f' stroke-width="{shape.line.width or 1:g}"{dash}/>'
        )
    out.append("</g></g>")
    for a in layout.annotations:
        out.append(_annotation(a, xa, ya))
    if layout.title.text:
        out.append(_text(W / 2, 26, layout.title.text, TITLE_FONT))
    out.append('<g class="legend">')
    for r, row in enumerate(legend):
        y = plot_bottom + 62 + 12 + 24 * r
        for x, name, trace in row:
            x += left
            out.append(_legend_item(x, y, name, trace))
    out.append("</g></svg>")
    return "".join(out)


def _legend_item(x, y, name, trace):
    color = trace.line.color or trace.marker.color or TEXT
    mode = trace.mode or "lines"
    parts = []
    if "lines" in mode:
        width = 2 if trace.line.width is None else trace.line.width
        at = f'x1="{x:.1f}" x2="{x + 26:.1f}" y1="{y:.1f}" y2="{y:.1f}"'
        parts.append(f'<line {at} stroke="{color}" stroke-width="{width:g}"/>')
    if "markers" in mode:
        m = trace.marker
        size = min(m.size or 6, 10)
        style = _marker_style(m.color or color, m.line.color, m.line.width or 0)
        parts.append(_marker(x + 13, y, m.symbol or "circle", size, style))
    parts.append(_text(x + 32, y + 5, name, LEGEND_FONT, anchor="start"))
    return "".join(parts)


def _annotation(a, xa, ya):
    """A label: at a step (xref x) or a fraction of the plot (xref paper), its height a fraction of the plot."""
    x = float(xa.px(a.x)) if a.xref == "x" else xa.paper(a.x)
    y = ya.paper(a.y)  # _check: every label's height is a fraction of the plot
    size = a.font.size or TICK_FONT
    anchor = {"left": "start", "right": "end"}.get(a.xanchor, "middle")
    width = len(a.text) * CHAR * size
    if anchor == "start" and x + (a.xshift or 0) + width > W:  # a mark near the right edge: its label goes left
        anchor, x = "end", x - (a.xshift or 0)
    else:
        x += a.xshift or 0
    y_text = y + size * 0.9 if a.yanchor == "top" else y + size * 0.35
    box = ""
    if a.bgcolor:
        x0 = {"start": x, "end": x - width}.get(anchor, x - width / 2)
        at = f'x="{x0 - 2:.1f}" y="{y_text - size:.1f}" width="{width + 4:.1f}" height="{size * 1.25:.1f}"'
        box = f'<rect {at} fill="{a.bgcolor}"/>'
    return box + _text(x, y_text, a.text, size, a.font.color or TEXT, anchor=anchor)
