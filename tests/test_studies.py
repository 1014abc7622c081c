"""The studies beyond the chapter: each one's result has the right shape, and points the right way.

Shapes on tiny random data; directions on a slice of the real Fashion-MNIST (skipped without it).
"""

import math

import numpy as np
import pytest
import torch
from conftest import tiny_dataset

from bnviz.data.fashion_mnist import FashionMNISTData
from bnviz.live.engine import Experiment
from bnviz.live.snapshot import LaneSpec, Settings
from bnviz.step import landscape
from bnviz.step.models import build_lenet
from bnviz.step.training import evaluate, make_optimizer, train_step
from bnviz.studies.batch_and_lr import BATCH_SIZES, batch_statistics, lr_race


def tiny(n_train=256, n_test=128, seed=0):
    return tiny_dataset(n_train, n_test, seed)


@pytest.fixture(scope="module")
def small_real(real_data):
    """The first 6,400 training and 1,000 test images of the real data set."""
    return FashionMNISTData(
        real_data.train_images[:6400],
        real_data.train_labels[:6400],
        real_data.test_images[:1000],
        real_data.test_labels[:1000],
    )


def trained_bn_model(data, steps=100):
    model = build_lenet("scratch", seed=0)
    opt = make_optimizer(model, 0.1)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(0, data.train_images.shape[0], (128,), generator=g)
        train_step(model, opt, data.train_images[idx].unsqueeze(1).float() / 255, data.train_labels[idx])
    return model


# ------------------------------------------------------------------------------------ learning-rate race
def test_race_shape_on_tiny_data():
    progress = []
    results = lr_race(tiny(), lrs=(0.1, 1.0), steps=6, batch_size=32, val_size=64, progress=progress.append)
    assert [(r.lr, r.norm) for r in results] == [(0.1, "none"), (0.1, "scratch"), (1.0, "none"), (1.0, "scratch")]
    assert progress[-1] == 1.0 and 0.5 in progress and progress == sorted(progress)  # it only moves forward
    for r in results:
        np.testing.assert_array_equal(r.steps, np.arange(1, 7))
        assert len(r.loss) == 6 and r.verdict in ("learns", "stalls") and r.diverged_at is None
        assert math.isfinite(r.final_loss) and 0 <= r.val_acc <= 1


def test_race_can_be_stopped_between_rates():
    calls = []

    def after_the_first_rate():
        calls.append(1)
        return len(calls) > 1  # the first look (before lr 0.1) says go; the run of 3 steps ends before another

    results = lr_race(
        tiny(), lrs=(0.1, 1.0, 3.0), steps=3, batch_size=32, val_size=64, should_stop=after_the_first_rate
    )
    assert {r.lr for r in results} == {0.1}


def test_a_stop_ends_the_race_in_the_middle_of_a_rate():
    """A rate of 100,000 steps would take an hour: the race must notice Stop while that rate trains."""
    import threading

    stop = threading.Event()
    threading.Timer(1.0, stop.set).start()
    results = lr_race(tiny(), lrs=(0.1,), steps=100_000, batch_size=32, val_size=64, should_stop=stop.is_set)
    assert results == []  # stopped before the rate's end: nothing half-measured is reported


def test_a_stop_ends_the_batch_statistics_study_in_the_middle_of_a_batch_size():
    data = tiny()
    model = trained_bn_model(data, steps=5)
    looks = []

    def stop_on_the_third_look():
        looks.append(1)
        return len(looks) >= 3

    result = batch_statistics(model, data.test_images, data.test_labels, should_stop=stop_on_the_third_look)
    assert result.batch_sizes == ()  # batch size 2 was started (the first look said go) but never finished


@pytest.mark.slow  # child processes or large memory: several seconds
def test_race_without_bn_blows_up_where_bn_does_not(small_real):
    """lr 30, sigmoid: without BN the loss leaves for the sky (diverged); with BN it does not, and at lr 1
    BN learns while the network without BN stalls at chance."""
    results = {(r.lr, r.norm): r for r in lr_race(small_real, lrs=(1.0, 30.0), steps=60, val_size=1000)}
    assert results[30.0, "none"].diverged_at is not None
    assert results[30.0, "scratch"].diverged_at is None
    assert results[1.0, "scratch"].verdict == "learns"
    assert results[1.0, "none"].verdict == "stalls"


# ------------------------------------------------------------------------------------ batch vs running
def test_batch_statistics_shape_on_tiny_data():
    data = tiny()
    model = trained_bn_model(data, steps=5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    r = batch_statistics(model, data.test_images, data.test_labels, batch_sizes=(2, 8, 32))
    assert r.batch_sizes == (2, 8, 32) and len(r.train_mode_acc) == 3 and len(r.mean_spread) == 3
    assert all(0 <= a <= 1 for a in r.train_mode_acc) and 0 <= r.eval_mode_acc <= 1
    # the spread of batch means shrinks as batches grow (about 1 / sqrt(batch size))
    assert r.mean_spread[0] > r.mean_spread[1] > r.mean_spread[2]
    for k, v in model.state_dict().items():  # the study works on a copy
        assert torch.equal(v, before[k]), k


def test_batch_statistics_needs_bn():
    with pytest.raises(ValueError, match="no BN layers"):
        batch_statistics(build_lenet("none"), tiny().test_images, tiny().test_labels)


@pytest.mark.slow  # trains a LeNet on real data for the study (minutes on a loaded machine)
def test_small_batches_hurt_train_mode_only(small_real):
    model = trained_bn_model(small_real, steps=150)
    r = batch_statistics(
        model, small_real.test_images, small_real.test_labels, batch_sizes=BATCH_SIZES, max_images=1000
    )
    acc = dict(zip(r.batch_sizes, r.train_mode_acc))
    assert acc[2] < acc[256] - 0.05  # batch statistics of 2 images are noise
    assert abs(acc[1024] - r.eval_mode_acc) < 0.03  # a big batch's statistics are about the running ones
    assert r.eval_mode_acc > 0.6
    assert r.var_spread[0] > 3 * r.var_spread[-2]


# ------------------------------------------------------------------------------------ flip BN
@pytest.mark.slow  # child processes or large memory: several seconds
def test_switching_bn_off_collapses_a_trained_network_and_back_on_restores_it(small_real):
    with Experiment(
        small_real, Settings(probe_every=10, val_every=25, val_size=1000, epochs=10), [LaneSpec("scratch")], name="flip"
    ) as exp:
        exp.step(100)
        assert exp.wait(60)
        model = exp.clone_model(0)
        _, acc_on = evaluate(model, small_real.test_images, small_real.test_labels)
        exp.set_bn_bypass(0, True)
        off = exp.clone_model(0)
        assert not off.bn_layers()
        _, acc_off = evaluate(off, small_real.test_images, small_real.test_labels)
        exp.step(1)
        assert exp.wait(30)
        exp.set_bn_bypass(0, False)
        snap = exp.snapshot()
    assert acc_on > 0.6 and acc_off < acc_on - 0.3
    ev = snap.lanes[0].tables["events"]
    np.testing.assert_array_equal(ev["step"], [100, 101])
    np.testing.assert_array_equal(ev["bn_on"], [0, 1])
    assert not snap.lanes[0].bn_bypassed


def test_flip_restores_the_same_function():
    data = tiny()
    with Experiment(data, Settings(batch_size=32, val_size=64, device="cpu"), [LaneSpec("torch")], name="flip2") as exp:
        exp.step(3)
        assert exp.wait(30)
        X = data.test_images[:16].unsqueeze(1).float() / 255
        before = exp.clone_model(0).eval()(X)
        exp.set_bn_bypass(0, True)
        assert exp.snapshot().lanes[0].bn_bypassed
        exp.set_bn_bypass(0, False)
        torch.testing.assert_close(exp.clone_model(0).eval()(X), before)
        exp.set_lane(0, LaneSpec("none"))
        with pytest.raises(ValueError, match="no BN layers"):
            exp.set_bn_bypass(0, True)


# ------------------------------------------------------------------------------------ landscape
def test_landscape_measure_is_sane_and_leaves_the_model_alone():
    model = build_lenet("scratch", seed=0)
    X, y = torch.rand(32, 1, 28, 28), torch.randint(0, 10, (32,))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    r = landscape.measure(model, X, y, lr=0.1)
    assert set(r) == {"loss_min", "loss_max", "loss_spread", "grad_change", "smoothness"}
    assert all(math.isfinite(v) for v in r.values())
    assert r["loss_spread"] == pytest.approx(r["loss_max"] - r["loss_min"]) and r["loss_spread"] >= 0
    assert r["grad_change"] > 0 and r["smoothness"] > 0
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    # bigger steps along the gradient move the loss more
    small = landscape.measure(model, X, y, lr=0.1, factors=(0.01, 0.02))
    assert small["loss_spread"] < r["loss_spread"]


def test_engine_records_the_landscape_every_k_steps():
    with Experiment(
        tiny(), Settings(batch_size=32, val_size=64, landscape_every=3, device="cpu"), name="landscape"
    ) as exp:
        exp.step(9)
        assert exp.wait(60)
        snap = exp.snapshot()
    for lane in snap.lanes:
        t = lane.tables["landscape"]
        np.testing.assert_array_equal(t["step"], [3, 6, 9])
        assert np.isfinite(t["smoothness"]).all()


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_the_batch_statistics_study_runs_on_the_lanes_device_with_the_same_result(device):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA GPU here")
    data = tiny()
    model = trained_bn_model(data, steps=5)
    here = batch_statistics(model, data.test_images, data.test_labels, batch_sizes=(2, 8, 32))
    there = batch_statistics(model, data.test_images, data.test_labels, batch_sizes=(2, 8, 32), device=device)
    assert next(model.parameters()).device.type == "cpu"  # the caller's model is not moved
    assert there.batch_sizes == here.batch_sizes and there.eval_mode_acc == pytest.approx(here.eval_mode_acc, abs=1e-3)
    assert there.train_mode_acc == pytest.approx(here.train_mode_acc, abs=2e-3)
    assert there.mean_spread == pytest.approx(here.mean_spread, rel=1e-3, abs=1e-5)
