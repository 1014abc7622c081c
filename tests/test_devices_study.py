"""The BN-across-devices study (bnviz.studies.devices_study): both modes for each k, and a summary read from them."""

import re

import pytest

from bnviz.data.fashion_mnist import random_dataset
from bnviz.pictures.exercise_figures import devices_figure
from bnviz.studies.devices_study import MODES, devices_study, devices_summary

pytestmark = pytest.mark.usefixtures("one_thread")


def test_both_modes_for_each_k_and_the_summary_quotes_them():
    seen = []
    both = devices_study(random_dataset(640, 200), ks=(1, 4), steps=4, progress=seen.append)
    assert list(both) == list(MODES) and all(sorted(runs) == [1, 4] for runs in both.values())
    assert seen and seen[-1] == pytest.approx(1.0) and seen == sorted(seen)
    # synchronised BN is the same arithmetic for every k: the same network after the same steps
    sync = both["synchronised"]
    assert sync[1].loss == pytest.approx(sync[4].loss, rel=1e-4, abs=1e-5)
    text = devices_summary(both)
    for mode, runs in both.items():
        m = re.search(re.escape(mode) + r": ([\d.]+)% on 1 device .* ([\d.]+)% on 4 \(32 each\)", text)
        assert m, text
        assert float(m.group(1)) == pytest.approx(100 * runs[1].test_acc, abs=0.051)
        assert float(m.group(2)) == pytest.approx(100 * runs[4].test_acc, abs=0.051)
    fig = devices_figure(both)
    assert [t.name for t in fig.data] == ["BN per device", "BN synchronised"]
    assert list(fig.data[0].x) == [1, 4]
    assert devices_summary({}) == "Not run yet."
