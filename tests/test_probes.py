"""Probes: hooks that clean up after themselves, and the numbers read from one real training step,
checked against the same quantities computed independently from a copy of the model."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from bnviz.step.models import BN_ACTIVATIONS, BN_INPUTS, BN_LAYERS, NORM_INFO, NORMS, build_lenet
from bnviz.step.probes import (
    ACT_BINS,
    ACT_RANGES,
    HIST_BINS,
    HIST_RANGE,
    HIST_SAMPLE,
    PERCENTILES,
    SATURATION,
    WEIGHT_LAYERS,
    Hook,
    Hooks,
    Probe,
    _histogram,
    _sample,
    bin_edges,
)
from bnviz.step.training import make_optimizer, train_step

LR = 0.1
BATCH = 64
CHANNELS = {"bn1": 6, "bn2": 16, "bn3": 120, "bn4": 84}
BN_STATE = ("running_mean", "running_var", "gamma", "beta")


def batch(n=BATCH, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


def forward_tensors(model, X):
    """{(position, kind): tensor} of a train-mode forward pass, by calling the layers one by one."""
    out = {}
    x = X
    for i, pos in enumerate(BN_LAYERS):
        if pos == "bn3":
            x = model.flatten(x)
        x = getattr(model, BN_INPUTS[i])(x)
        out[pos, "in"] = x
        x = getattr(model, pos)(x)
        out[pos, "out"] = x
        x = getattr(model, BN_ACTIVATIONS[i])(x)
        out[pos, "act"] = x
        if pos in ("bn1", "bn2"):
            x = getattr(model, f"pool{i + 1}")(x)
    return {k: v.detach() for k, v in out.items()}


def sampled(x):
    """The values a probe reads from x: all of them, or its fixed random subset of HIST_SAMPLE."""
    return _sample(x.reshape(-1), HIST_SAMPLE).double()


class Read:
    """One probed training step: the model before and after, the tensors it saw, and what the probe read."""

    def __init__(self, norm, activation, seed=0):
        torch.manual_seed(0)
        self.model = build_lenet(norm, activation, seed=seed)
        self.before = copy.deepcopy(self.model)
        self.X, self.y = batch(seed=seed)
        with torch.no_grad():
            self.tensors = forward_tensors(copy.deepcopy(self.before).train(), self.X)
        opt = make_optimizer(self.model, LR)
        with Probe(self.model, activation) as self.probe:
            train_step(self.model, opt, self.X, self.y)
        self.scalars, self.vectors = self.probe.read(LR)


@pytest.fixture(
    scope="module", params=[(n, a) for n in NORMS for a in ("sigmoid", "relu")], ids=lambda p: f"{p[0]}-{p[1]}"
)
def read(request):
    return Read(*request.param)


def all_forward_hooks(model):
    return [h for m in model.modules() for h in m._forward_hooks.values()]


# --------------------------------------------------------------------------------------------- hooks


def test_hook_keeps_detached_output_and_removes_itself():
    lin = nn.Linear(3, 2)
    x = torch.randn(4, 3)
    with Hook(lin) as h:
        assert len(lin._forward_hooks) == 1
        y = lin(x)
        assert torch.equal(h.stored, y.detach())
        assert not h.stored.requires_grad
    assert len(lin._forward_hooks) == 0
    lin(x)  # after removal the hook no longer runs
    assert torch.equal(h.stored, y.detach())


def test_hook_removed_when_the_body_raises():
    lin = nn.Linear(3, 2)
    with pytest.raises(RuntimeError, match="inside"):
        with Hook(lin):
            raise RuntimeError("inside")
    assert len(lin._forward_hooks) == 0


def test_hook_custom_function():
    lin = nn.Linear(3, 2)

    def keep_input(hook, module, inputs, output):
        hook.stored = inputs[0].sum().item()

    with Hook(lin, keep_input) as h:
        lin(torch.ones(2, 3))
    assert h.stored == 6.0
    assert len(lin._forward_hooks) == 0


def test_hooks_remove_together_even_on_error():
    mods = [nn.Linear(3, 3) for _ in range(4)]
    with pytest.raises(ValueError):
        with Hooks(mods) as hs:
            assert len(hs) == 4 and all(len(m._forward_hooks) == 1 for m in mods)
            x = torch.randn(2, 3)
            for m in mods:
                x = m(x)
            assert all(h.stored is not None for h in hs)
            raise ValueError("boom")
    assert all(len(m._forward_hooks) == 0 for m in mods)


@pytest.mark.parametrize("norm", NORMS)
def test_probe_leaves_no_hook_behind(norm):
    model = build_lenet(norm)
    X, y = batch(8)
    with Probe(model) as probe:
        assert len(all_forward_hooks(model)) == 12  # in, out and act at four positions
        train_step(model, make_optimizer(model, LR), X, y)
    assert all_forward_hooks(model) == []
    probe.read(LR)  # what it caught stays readable after the hooks are gone
    with pytest.raises(KeyError):
        with Probe(model):
            raise KeyError("inside the step")
    assert all_forward_hooks(model) == []


# --------------------------------------------------------------------------------------------- histograms, percentiles


def test_bin_edges():
    e = bin_edges("in")
    assert len(e) == HIST_BINS + 1 and e[0] == HIST_RANGE[0] and e[-1] == HIST_RANGE[1]
    assert len(bin_edges("out")) == HIST_BINS + 1
    for act, (lo, hi) in ACT_RANGES.items():
        e = bin_edges("act", act)
        assert len(e) == ACT_BINS + 1 and e[0] == lo and e[-1] == hi


def test_histogram_clamps_outliers_into_end_bins():
    h = _histogram(torch.tensor([-100.0, 0.1, 100.0, 5.99]), -6.0, 6.0, 12)
    assert h.sum().item() == pytest.approx(1.0)
    assert h[0].item() == pytest.approx(0.25) and h[-1].item() == pytest.approx(0.5)
    assert h[6].item() == pytest.approx(0.25)


def test_histograms_are_fractions_matching_numpy(read):
    activation = read.probe.activation
    for pos in BN_LAYERS:
        for kind in ("in", "out", "act"):
            h = read.vectors[f"{pos}.{kind}.hist"]
            assert h.shape == ((ACT_BINS,) if kind == "act" else (HIST_BINS,))
            assert h.sum() == pytest.approx(1.0, abs=1e-5)
            assert (h >= 0).all()
            edges = bin_edges(kind, activation)

            def hist(x, edges=edges):
                x = x.numpy().ravel()
                return np.histogram(np.clip(x, edges[0], edges[-1]), bins=edges)[0] / x.size

            # exactly the histogram of the values it sampled (a few may sit on a bin edge) ...
            assert np.abs(h - hist(sampled(read.tensors[pos, kind]))).sum() < 2e-3, (pos, kind)
            # ... and close to the whole tensor's
            assert np.abs(h - hist(read.tensors[pos, kind].double())).sum() < 0.05, (pos, kind)


def test_percentiles_ordered_and_close_to_full_quantiles(read):
    for pos in BN_LAYERS:
        for kind in ("in", "out", "act"):
            p = [read.scalars[f"{pos}.{kind}.p{round(q * 100)}"] for q in PERCENTILES]
            assert p[0] <= p[1] <= p[2], (pos, kind, p)
            # each reported percentile sits at the right rank of the whole tensor, within 3 points
            # (the probe reads 4,096 random values: the rank's standard error is under 0.6 points)
            full = read.tensors[pos, kind].double().ravel()
            for q, v in zip(PERCENTILES, p):
                below, at_or_below = (full < v).double().mean().item(), (full <= v).double().mean().item()
                assert below - 0.03 <= q <= at_or_below + 0.03, (pos, kind, q, v, below, at_or_below)
            x = sampled(read.tensors[pos, kind])
            assert read.scalars[f"{pos}.{kind}.mean"] == pytest.approx(x.mean().item(), rel=1e-4, abs=1e-5)
            assert read.scalars[f"{pos}.{kind}.std"] == pytest.approx(x.std().item(), rel=1e-4, abs=1e-5)
            full = read.tensors[pos, kind].double()
            assert read.scalars[f"{pos}.{kind}.mean"] == pytest.approx(
                full.mean().item(), abs=0.02 * full.std().item() + 1e-6
            )
            assert read.scalars[f"{pos}.{kind}.std"] == pytest.approx(full.std().item(), rel=0.02, abs=1e-6)


# --------------------------------------------------------------------------------------------- BN statistics


@pytest.mark.parametrize("norm", ["scratch", "torch"])
def test_after_bn_is_standardised(norm):
    r = Read(norm, "sigmoid")
    for pos in BN_LAYERS:  # gamma = 1, beta = 0 in the forward pass that was probed
        assert r.scalars[f"{pos}.out.mean"] == pytest.approx(0.0, abs=0.02)  # from a 32,768-value sample
        assert r.scalars[f"{pos}.out.std"] == pytest.approx(1.0, abs=0.02)
        out = r.probe.hooks["out"][BN_LAYERS.index(pos)].stored
        dims = (0, 2, 3) if out.dim() == 4 else (0,)
        var, mean = torch.var_mean(out, dim=dims, correction=0)
        assert mean.abs().max().item() < 1e-4
        assert (var - 1).abs().max().item() < 1e-2
        # while the tensor entering BN is anything but standardised
        assert abs(r.scalars[f"{pos}.in.std"] - 1) > 0.05 or abs(r.scalars[f"{pos}.in.mean"]) > 0.05


def test_batch_stats_match_the_bn_input(read):
    for pos in BN_LAYERS:
        x = read.tensors[pos, "in"].double()
        dims = (0, 2, 3) if x.dim() == 4 else (0,)
        mean, var = x.mean(dim=dims), x.var(dim=dims, unbiased=False)
        assert read.vectors[f"{pos}.batch_mean"].shape == (CHANNELS[pos],)
        np.testing.assert_allclose(read.vectors[f"{pos}.batch_mean"], mean.numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(read.vectors[f"{pos}.batch_var"], var.numpy(), rtol=1e-4, atol=1e-6)


def test_bn_state_present_only_with_bn(read):
    """A probe reads what the layer holds, as NORM_INFO states it: no running statistics that do not exist."""
    norm = read.model.config.norm
    for pos in BN_LAYERS:
        keys = {f"{pos}.{name}" for name in BN_STATE}
        held = {f"{pos}.{name}" for name in NORM_INFO[norm].state}
        assert keys & set(read.vectors) == held
        for key in held:
            assert read.vectors[key].shape == (CHANNELS[pos],)
    if norm == "none":
        assert NORM_INFO[norm].state == ()
    elif norm in ("layernorm", "groupnorm"):
        assert NORM_INFO[norm].state == ("gamma", "beta")


@pytest.mark.parametrize("norm", ["scratch", "torch"])
def test_bn_state_values_after_one_step(norm):
    r = Read(norm, "relu")
    for pos in BN_LAYERS:
        x = r.tensors[pos, "in"].double()
        dims = (0, 2, 3) if x.dim() == 4 else (0,)
        n = x.numel() // x.shape[1]
        mean, var = x.mean(dim=dims).numpy(), x.var(dim=dims, unbiased=False).numpy()
        v = r.vectors
        # from running mean 0 and variance 1, momentum 0.1, unbiased variance in the running average
        np.testing.assert_allclose(v[f"{pos}.running_mean"], 0.1 * mean, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(v[f"{pos}.running_var"], 0.9 + 0.1 * var * n / (n - 1), rtol=1e-4)
        layer = getattr(r.model, pos)
        gamma, beta = (layer.gamma, layer.beta) if norm == "scratch" else (layer.weight, layer.bias)
        np.testing.assert_array_equal(v[f"{pos}.gamma"], gamma.detach().reshape(-1).numpy())
        np.testing.assert_array_equal(v[f"{pos}.beta"], beta.detach().reshape(-1).numpy())
        assert not np.allclose(v[f"{pos}.gamma"], 1.0)  # the step moved it: read after the update


@pytest.mark.parametrize("activation", ["sigmoid", "relu"])
def test_without_bn_out_is_in(activation):
    r = Read("none", activation)
    for pos in BN_LAYERS:
        np.testing.assert_array_equal(r.vectors[f"{pos}.out.hist"], r.vectors[f"{pos}.in.hist"])
        for stat in ("p15", "p50", "p85", "mean", "std"):
            assert r.scalars[f"{pos}.out.{stat}"] == r.scalars[f"{pos}.in.{stat}"]


# --------------------------------------------------------------------------------------------- gradients, saturation


def test_grad_norm_and_update_ratio(read):
    for name in WEIGHT_LAYERS:
        w = getattr(read.model, name).weight
        g = w.grad.double().norm().item()
        assert g > 0
        assert read.scalars[f"{name}.grad_norm"] == pytest.approx(g, rel=1e-4)
        ratio = LR * g / w.detach().double().norm().item()
        assert read.scalars[f"{name}.update_ratio"] == pytest.approx(ratio, rel=1e-4)
        # plain SGD: the update that was made is lr * grad, up to float32 rounding: storing w - lr * grad rounds each
        # weight by at most half an ulp (eps/2 of its size) and lr * grad by as much of its own, so the update's norm
        # is within eps * (|w| + lr |grad|) of lr |grad| on any CPU (measured: under 3.3e-6 relative)
        step = (w.detach() - getattr(read.before, name).weight.detach()).double().norm().item()
        eps32 = torch.finfo(torch.float32).eps
        assert abs(step - LR * g) <= eps32 * (w.detach().double().norm().item() + LR * g), name


def test_saturation(read):
    for pos in BN_LAYERS:
        s = read.scalars[f"{pos}.saturated"]
        assert 0.0 <= s <= 1.0

        def saturated(a):
            if read.probe.activation == "relu":
                return (a == 0).double().mean().item()
            return ((a < SATURATION[0]) | (a > SATURATION[1])).double().mean().item()

        a = read.tensors[pos, "act"]
        if read.probe.activation == "relu":
            assert 0.0 < saturated(a) < 1.0  # a real check: some units are off, some on
        assert s == pytest.approx(saturated(sampled(a)), abs=1e-6)
        assert s == pytest.approx(saturated(a), abs=0.01)


def test_sigmoid_saturation_of_large_inputs():
    model = build_lenet("none", "sigmoid")
    with torch.no_grad():
        model.fc2.weight.mul_(1000.0)  # fc2's outputs are huge: sigmoid at bn4 is pinned to 0 or 1
    X, y = batch(16)
    with Probe(model, "sigmoid") as probe:
        train_step(model, make_optimizer(model, 1e-6), X, y)
    scalars, _ = probe.read(1e-6)
    assert scalars["bn4.saturated"] > 0.95
    assert scalars["bn1.saturated"] < 0.5


def test_read_gives_every_scalar():
    r = Read("torch", "sigmoid")
    expected = {
        f"{pos}.{kind}.{stat}"
        for pos in BN_LAYERS
        for kind in ("in", "out", "act")
        for stat in ("p15", "p50", "p85", "mean", "std")
    }
    expected |= {f"{pos}.saturated" for pos in BN_LAYERS}
    expected |= {f"{name}.{what}" for name in WEIGHT_LAYERS for what in ("grad_norm", "update_ratio")}
    assert set(r.scalars) == expected
    assert all(isinstance(v, float) and np.isfinite(v) for v in r.scalars.values())
    assert all(isinstance(v, np.ndarray) and v.dtype == np.float32 for v in r.vectors.values())


def test_remove_twice_is_harmless_and_leaves_other_hooks_alone():
    lin = nn.Linear(3, 2)
    x = torch.randn(4, 3)
    first = Hook(lin)
    first.remove()
    second = Hook(lin)  # a newer hook on the same module
    first.remove()  # a second remove: nothing, and not the newer hook
    first.__exit__(None, None, None)  # nor a third, through the context manager
    assert len(lin._forward_hooks) == 1
    torch.testing.assert_close(lin(x), second.stored)
    hooks = Hooks([lin, nn.Linear(2, 2)])
    hooks.remove()
    hooks.remove()
    with hooks:  # entering and leaving a removed Hooks is harmless too
        pass
    assert len(lin._forward_hooks) == 1 and first.stored is None
    second.remove()
    assert len(lin._forward_hooks) == 0
