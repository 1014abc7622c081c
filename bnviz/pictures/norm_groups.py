"""Which values a normalisation layer standardises together, found by asking the layer itself.

BN, LayerNorm, GroupNorm and their variants differ in one thing: the set of values whose mean and variance
normalise each value. For a conv layer's input (N images, C channels, H x W positions), BN pools a channel
over the batch and the positions; LayerNorm pools an image over its channels and positions; GroupNorm an
image over a group of channels; Ghost BN a channel over a sub-batch. Rather than restate each rule, we find
the sets from the layer: nudge the values of one (image, channel) cell and see which other cells' outputs
move (in train mode, the weights and running statistics untouched). Cells that move together share
statistics; the picture draws them in one colour.

    groups = statistic_groups(layer, batch=8, channels=6, side=12)   # (8, 6) ints: a group id per cell
"""

import copy
import functools

import numpy as np
import plotly.graph_objects as go
import torch

from bnviz.step.models import BN_INPUTS, BN_LAYERS, build_lenet

SIDES = {"bn1": 24, "bn2": 8}  # the positions per side where BN sits after each conv (none after fc1, fc2)
TOL = 1e-6


@torch.no_grad()
def statistic_groups(layer, batch, channels, side=None, seed=0):
    """(batch, channels) int array: cells with the same number are normalised with the same statistics.

    A cell is one image's values of one channel (all side x side positions after a conv, one value after a
    fully connected layer). A layer that mixes no cells (the identity) gives every cell its own group. The
    sets partition the cells, so one nudge per set finds it: a cell already placed is not nudged again.
    """
    layer = copy.deepcopy(layer).double().train()
    state = copy.deepcopy(layer.state_dict())  # before every forward: the same running statistics, step, noise
    shape = (batch, channels, side, side) if side else (batch, channels)
    X = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)

    def forward(x):
        layer.load_state_dict(state)
        return layer(x)

    base = forward(X)
    groups = np.full((batch, channels), -1)
    for n in range(batch):
        for c in range(channels):
            if groups[n, c] >= 0:
                continue
            nudged = X.clone()
            nudged[n, c] += 1.0 + torch.linspace(0, 1, nudged[n, c].numel(), dtype=X.dtype).view(nudged[n, c].shape)
            moved = (forward(nudged) - base).abs()
            moved = (moved.flatten(2).amax(2) if side else moved).numpy() > TOL
            moved[n, c] = True
            groups[moved & (groups < 0)] = groups.max() + 1
    return groups


def rows_shown(norm, batch_size):
    """How many images to draw: the batch when small, else enough to show the pattern (two ghost sub-batches)."""
    from bnviz.norms.ghost_batchnorm import GHOST_BATCH

    return min(batch_size, 2 * GHOST_BATCH if norm == "ghost" else 8)


def layer_at(norm, position):
    """The normalisation layer a lane with ``norm`` has at ``position`` (bn1..bn4), as the models build it."""
    return getattr(build_lenet(norm, "relu"), position)


def describe(groups, side):
    """One sentence on what the sets are, counted from them."""
    n, c = groups.shape
    count = groups.max() + 1
    if count == n * c:
        return f"Each of the {n} × {c} cells is left as it is: nothing is pooled."
    rows = [len(set(np.nonzero(groups == g)[0])) for g in range(count)]
    cols = [len(set(np.nonzero(groups == g)[1])) for g in range(count)]
    unit = "channel" if side else "feature"
    if max(rows) == 1:
        how = f"one per image, over all its {unit}s" if min(cols) == c else f"one per image and group of {unit}s"
    elif max(cols) == 1:
        how = f"one per {unit}, over the images" if min(rows) == n else f"one per {unit} and sub-batch of images"
    else:
        how = "each spanning several images and several channels"
    sizes = np.bincount(groups.ravel())
    size = f"{sizes.min()}" if sizes.min() == sizes.max() else f"{sizes.min()} to {sizes.max()}"
    values = f" (each cell: {side}×{side} positions)" if side else ""
    return f"{count} sets of statistics, {how}; each pools {size} cells{values}. {n} × {c} cells shown."


CHANNELS = {"bn1": 6, "bn2": 16, "bn3": 120, "bn4": 84}
MAX_NUMBERED = 200  # up to this many cells, each shows its set's number


@functools.lru_cache(maxsize=64)
def groups_at(norm, position, batch_size):
    """The sets for a lane's ``norm`` at ``position``, as drawn: (groups, side). Cached (up to a second to find;
    the page asks again at every refresh); callers must not change the array."""
    side = SIDES.get(position)
    groups = statistic_groups(layer_at(norm, position), rows_shown(norm, batch_size), CHANNELS[position], side)
    return groups, side


@functools.lru_cache(maxsize=64)
def norm_groups_figure(norm, position, batch_size, label=""):
    """The (images × channels) grid at ``position``: each cell shows which set of statistics normalises it, by
    its number (on small grids) and by a shade of its own (sets numbered in reading order, shades along a
    scale, so no two sets share one). Cached; callers must not change it."""
    groups, side = groups_at(norm, position, batch_size)
    rows, channels = groups.shape
    count = int(groups.max()) + 1
    fig = go.Figure(layout=dict(template="none"))
    fig.add_trace(
        go.Heatmap(
            z=groups,
            x=list(range(1, channels + 1)),
            y=list(range(1, rows + 1)),
            colorscale="Turbo",
            zmin=0,
            zmax=max(count - 1, 1),
            showscale=False,
            xgap=1,
            ygap=1,
            text=groups + 1 if groups.size <= MAX_NUMBERED else None,
            texttemplate="%{text}" if groups.size <= MAX_NUMBERED else None,
            customdata=groups + 1,
            hovertemplate="image %{y}, channel %{x}: set %{customdata}<extra></extra>",
        )
    )
    where = BN_INPUTS[BN_LAYERS.index(position)]
    unit = "channel" if side else "feature"
    fig.update_layout(
        title=dict(text=f"{label or norm} at {position} (after {where}): one number and shade per set of statistics"),
        height=340,
        margin=dict(l=70, r=20, t=60, b=50),
        font=dict(size=15),
        xaxis=dict(title=f"{unit} (C = {channels})", constrain="domain"),
        yaxis=dict(title=f"image (N = {rows} of {batch_size})", autorange="reversed"),
    )
    return fig
