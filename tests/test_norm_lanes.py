"""Every normalisation as a lane: it trains in the engine, its probes read what the layer holds (and only that),
BN can be switched off and on, its charts draw, its recording round-trips, and the CLI takes its name."""

import argparse
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from bnviz.cli import parse_norms
from bnviz.live.experiment_file import save_experiment
from bnviz.live.replay import Recording
from bnviz.live.snapshot import LaneSpec, Settings
from bnviz.pictures import figures
from bnviz.step.models import BN_LAYERS, NORM_INFO, NORMS, build_lenet, set_bn_bypass
from bnviz.step.probes import Probe, bn_state, norm_state
from bnviz.step.training import evaluate, make_optimizer, train_step
from bnviz.studies import batch_and_lr as studies

ROOT = Path(__file__).resolve().parents[1]
NEW = [n for n in NORMS if n not in ("none", "scratch", "torch")]
CHANNELS = {"bn1": 6, "bn2": 16, "bn3": 120, "bn4": 84}
SETTINGS = Settings(
    lr=0.1, batch_size=64, epochs=1, probe_every=2, val_every=2, val_size=50, dist_capacity=4, device="cpu"
)


def test_the_new_norms():
    """The README's `--norm` table names every norm the CLI takes, in NORMS' order; each lane has its norm's label."""
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("| `--norm` | network |") :].split("\n\n")[0]
    named = [name for row in table.splitlines()[2:] for name in re.findall(r"`([a-z]+)`", row.split(" | ")[0])]
    assert named == list(NORMS) and parse_norms(",".join(named)) == named
    labels = [LaneSpec(n).label for n in NORMS]
    assert labels == [NORM_INFO[n].label for n in NORMS] and len(set(labels)) == len(labels)
    assert LaneSpec("groupnorm", "relu").label == "GroupNorm · relu"
    with pytest.raises(ValueError, match=r"BN implementation\) must be one of none, scratch, torch, layernorm"):
        LaneSpec("batchnorm")


@pytest.mark.parametrize("norm", NORMS)
def test_state_is_what_the_layer_holds(norm):
    model = build_lenet(norm)
    for pos in BN_LAYERS:
        state = norm_state(getattr(model, pos))
        assert tuple(state) == NORM_INFO[norm].state
        assert all(t.numel() == CHANNELS[pos] for t in state.values())


@pytest.mark.parametrize("norm", NEW)
def test_switching_bn_off_and_on_keeps_the_layer(norm):
    model = build_lenet(norm, "relu")
    images, y = torch.randint(0, 256, (32, 28, 28), dtype=torch.uint8), torch.randint(0, 10, (32,))
    X = images.unsqueeze(1).float() / 255
    train_step(model, make_optimizer(model, 0.1), X, y)
    layers = model.bn_layers()
    before = evaluate(model, images, y)
    assert set_bn_bypass(model, True) and model.bn_layers() == {}
    with Probe(model, "relu") as probe:  # a switched-off lane probes as a lane without BN
        train_step(model, make_optimizer(model, 0.0), X, y)
    assert not any(k.endswith(("running_mean", "running_var", "gamma")) for k in probe.read(0.0)[1])
    assert set_bn_bypass(model, False)
    assert model.bn_layers() == layers
    assert evaluate(model, images, y) == pytest.approx(before)


@pytest.mark.parametrize("lanes", [NEW[0:3], NEW[3:6], NEW[6:8]], ids=lambda lanes: ",".join(lanes))
def test_every_norm_trains_probes_switches_and_records(make_experiment, lanes, tmp_path):
    specs = [LaneSpec(n, "relu" if i % 2 else "sigmoid") for i, n in enumerate(lanes)]
    e = make_experiment(SETTINGS, specs)
    e.step(3)
    assert e.wait(timeout=120)
    for i in range(len(specs)):
        before, _ = e.set_bn_bypass(i, True)
        _, on = e.set_bn_bypass(i, False)
        assert on == pytest.approx(before)
    e.start()  # the rest of the epoch: 4 steps of 64 images
    assert e.wait(timeout=120)
    snap = e.snapshot()
    assert snap.status == "finished" and snap.error is None
    for lane, spec in zip(snap.lanes, specs):
        assert lane.status == "finished" and lane.step == 4 and lane.error is None
        assert lane.label.endswith(spec.label)
        assert np.isfinite(lane.tables["steps"]["train_loss"]).all()
        assert list(lane.tables["events"]["bn_on"]) == [0.0, 1.0]
        dists = lane.tables["dists"]
        for pos in BN_LAYERS:
            held = {k.split(".", 1)[1] for k in dists if k.startswith(f"{pos}.") and "." not in k.split(".", 1)[1]}
            assert held & {"running_mean", "running_var", "gamma", "beta"} == set(NORM_INFO[spec.norm].state)
            for name in NORM_INFO[spec.norm].state:
                assert dists[f"{pos}.{name}"].shape[1] == CHANNELS[pos]
        # the BN-state charts draw, or say there is nothing to draw
        for build in (figures.running_stats_figure, figures.batch_vs_running_figure, figures.gamma_beta_figure):
            fig = build(lane, "bn1")
            assert fig.data or "running" in fig.layout.title.text
        stats = [s for s in ("running_mean", "running_var") if s in NORM_INFO[spec.norm].state]
        assert len(figures.running_stats_figure(lane, "bn1").data) == len(stats) * CHANNELS["bn1"]
    path = save_experiment(tmp_path / "run.npz", e.header(), [lane.tables for lane in snap.lanes])
    rec = Recording.load(path)
    assert rec.specs == specs
    replayed = rec.snapshot()
    assert [l.label for l in replayed.lanes] == [l.label for l in snap.lanes]
    for a, b in zip(replayed.lanes, snap.lanes):
        assert sorted(a.tables["dists"]) == sorted(b.tables["dists"])


@pytest.mark.parametrize("norm", NEW)
def test_the_batch_statistics_study_takes_the_lanes_with_running_statistics(norm, tiny_data):
    model = build_lenet(norm)
    images, labels = tiny_data.test_images, tiny_data.test_labels
    if bn_state(model.bn1) is None:  # no running mean and variance to compare with
        assert norm in ("layernorm", "groupnorm", "centre", "scale")
        with pytest.raises(ValueError, match="no BN layers with a running mean and variance"):
            studies.batch_statistics(model, images, labels, batch_sizes=(4, 32))
        return
    result = studies.batch_statistics(model, images, labels, batch_sizes=(4, 32))
    assert result.batch_sizes == (4, 32) and all(0 <= a <= 1 for a in result.train_mode_acc)


@pytest.mark.parametrize("norm", NEW)
def test_state_dict_is_tensors_and_loads_into_a_fresh_model(norm):
    """As ExperimentProcess.clone_model carries a model: state_dict() to numpy, and back into a new build."""
    model = build_lenet(norm)
    train_step(model, make_optimizer(model, 0.1), torch.rand(16, 1, 28, 28), torch.randint(0, 10, (16,)))
    state = {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}
    clone = build_lenet(norm)
    clone.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    X = torch.rand(16, 1, 28, 28)
    torch.testing.assert_close(clone(X), model(X))  # training mode: the same noise, the same renorm step


def test_ghost_lane_uses_sub_batches_of_the_minibatch():
    model = build_lenet("ghost")
    assert [layer.size for layer in model.bn_layers().values()] == [32] * 4
    assert build_lenet("ghost", ghost_batch=16).bn1.size == 16


def test_old_recordings_load_with_their_labels():
    from pathlib import Path

    shipped = Path(__file__).resolve().parents[1] / "assets" / "chapter-run" / "experiment.npz"
    rec = Recording.load(shipped)
    assert all(spec.norm in ("none", "scratch", "torch") for spec in rec.specs)
    assert [l.label.split(" · ", 1)[1] for l in rec.snapshot(100).lanes] == [spec.label for spec in rec.specs]


def test_cli_norm_takes_the_new_names():
    assert parse_norms("none,groupnorm,renorm") == ["none", "groupnorm", "renorm"]
    assert parse_norms(",".join(NEW)) == NEW
    with pytest.raises(argparse.ArgumentTypeError, match="layernorm, groupnorm, renorm, ghost, noisy, centre"):
        parse_norms("batchrenorm")
