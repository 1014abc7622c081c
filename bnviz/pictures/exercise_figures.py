"""The Exercises view's charts and the BN-across-devices study's: pure Plotly builders, results in, a figure out."""

import math

import plotly.graph_objects as go

from bnviz.pictures.figures import downsample, empty_note, new_figure, smooth, styled

EVAL, TRAIN = "#1F77B4", "#9ECAE9"


def accuracy_bars(results):
    """Each variant's validation accuracy: eval mode (running statistics) and train mode (batch statistics)."""
    fig = new_figure()
    names = list(results)
    if not names:
        return styled(empty_note(fig, "Not run yet"), "Validation accuracy")
    evals = [r.val_acc if not math.isnan(r.val_acc) else 0.0 for r in results.values()]
    trains = [r.val_acc_batch if not math.isnan(r.val_acc_batch) else 0.0 for r in results.values()]
    labels = [r.verdict if r.diverged_at else f"{100 * r.val_acc:.1f}%" for r in results.values()]
    fig.add_trace(go.Bar(x=names, y=evals, name="eval mode", marker_color=EVAL, text=labels, textposition="outside"))
    if any(abs(a - b) > 1e-9 for a, b in zip(evals, trains)):
        fig.add_trace(go.Bar(x=names, y=trains, name="train mode (batch statistics)", marker_color=TRAIN))
    fig.add_hline(y=0.1, line=dict(color="#888888", dash="dot"), annotation_text="chance")
    return styled(fig, "Validation accuracy at the end", yaxis_title="accuracy", yaxis_range=[0, 1.05], barmode="group")


def loss_curves(results):
    """Each variant's training loss per step (smoothed), on a log axis."""
    fig = new_figure()
    for r in results.values():
        if r.losses:
            x, y = downsample(list(range(1, len(r.losses) + 1)), smooth(list(r.losses), 10))
            fig.add_trace(go.Scatter(x=x, y=y, mode="lines", name=r.name))
    if not fig.data:
        empty_note(fig, "Not run yet")
    fig.update_yaxes(type="log")
    return styled(fig, "Training loss per step (smoothed)", xaxis_title="step", yaxis_title="cross-entropy")


def devices_figure(both):
    """Test accuracy against the number of devices sharing one minibatch, BN per device and synchronised."""
    fig = new_figure()
    for mode, color in zip(("per device", "synchronised"), ("#D62728", "#1F77B4")):
        runs = both.get(mode, {})
        if runs:
            ks = sorted(runs)
            fig.add_trace(
                go.Scatter(
                    x=ks,
                    y=[runs[k].test_acc for k in ks],
                    mode="lines+markers",
                    name=f"BN {mode}",
                    line=dict(color=color, width=3),
                    customdata=[runs[k].per_device_batch for k in ks],
                    hovertemplate="%{x} devices, %{customdata:g} images each: %{y:.1%}<extra></extra>",
                )
            )
    if not fig.data:
        empty_note(fig, "Not run yet")
    fig.update_xaxes(type="log", dtick=0.30103, title="devices sharing one minibatch of 128 (log scale)")
    return styled(fig, "Test accuracy after the same steps", yaxis_title="accuracy", yaxis_range=[0, 1])
