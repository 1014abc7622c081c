"""Which values each normalisation pools (pictures.norm_groups), found from the layer, against each method's rule."""

import numpy as np
import pytest

from bnviz.norms.ghost_batchnorm import GHOST_BATCH
from bnviz.pictures.norm_groups import SIDES, describe, layer_at, norm_groups_figure, rows_shown, statistic_groups
from bnviz.step.models import GROUPS, NORMS

CHANNELS = {"bn1": 6, "bn2": 16, "bn3": 120, "bn4": 84}


def groups(norm, position, batch=8):
    return statistic_groups(layer_at(norm, position), batch, CHANNELS[position], SIDES.get(position))


def same_set(g, a, b):
    return g[a] == g[b]


@pytest.mark.parametrize("position", ["bn1", "bn3"])
def test_each_method_pools_what_its_paper_says(position):
    c = CHANNELS[position]
    expected = {  # (image, channel) -> the set's id, by each method's definition
        "none": np.arange(8 * c).reshape(8, c),
        "layernorm": np.repeat(np.arange(8)[:, None], c, axis=1),
        "groupnorm": np.arange(8)[:, None] * GROUPS[["bn1", "bn2", "bn3", "bn4"].index(position)]
        + np.arange(c)[None, :] // (c // GROUPS[["bn1", "bn2", "bn3", "bn4"].index(position)]),
    }
    for norm in ("scratch", "torch", "renorm", "noisy", "centre", "scale", "frozen"):
        expected[norm] = np.repeat(np.arange(c)[None, :], 8, axis=0)  # a channel over the batch
    for norm in NORMS:
        if norm == "ghost":
            continue
        got = groups(norm, position)
        # the same partition, whatever the numbering
        pairs = {(int(a), int(b)) for a, b in zip(got.ravel(), expected[norm].ravel())}
        assert len(pairs) == len(set(got.ravel())) == len(set(expected[norm].ravel())), norm


def test_ghost_bn_pools_a_channel_over_each_sub_batch():
    g = groups("ghost", "bn3", batch=2 * GHOST_BATCH)
    assert len(set(g.ravel())) == 2 * 120
    assert same_set(g, (0, 5), (GHOST_BATCH - 1, 5)) and not same_set(g, (0, 5), (GHOST_BATCH, 5))
    assert not same_set(g, (0, 5), (0, 6))


def test_the_sentence_and_the_figure_say_what_was_found():
    assert describe(groups("scratch", "bn1"), 24).startswith("6 sets of statistics, one per channel, over the images")
    assert describe(groups("layernorm", "bn3"), None).startswith("8 sets of statistics, one per image, over all its")
    assert "one per image and group of channels; each pools 3 cells" in describe(groups("groupnorm", "bn1"), 24)
    assert describe(groups("none", "bn4"), None).startswith("Each of the 8 × 84 cells is left as it is")
    fig = norm_groups_figure("groupnorm", "bn1", 128, "GroupNorm")
    numbers = np.asarray(fig.data[0].customdata)
    assert numbers.shape == (rows_shown("groupnorm", 128), 6) and len(np.unique(numbers)) == 16
    assert np.array_equal(np.asarray(fig.data[0].z), numbers - 1)  # one shade per set: no two sets share one
    assert np.array_equal(np.asarray(fig.data[0].text), numbers)  # a small grid shows each cell's number
    assert fig.data[0].zmax == 15
    assert rows_shown("ghost", 128) == 2 * GHOST_BATCH and rows_shown("scratch", 4) == 4
