"""Recomputed BN statistics (bnviz.step.precise_bn) against the average of the batch statistics, read by hooks."""

import pytest
import torch

from bnviz.data.fashion_mnist import batches
from bnviz.step.models import BN_LAYERS, NORMS, build_lenet
from bnviz.step.precise_bn import STATISTICS, layers_with_statistics, recompute_statistics
from bnviz.step.training import evaluate, make_optimizer, train_step


def images(n=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8, generator=g), torch.randint(0, 10, (n,), generator=g)


def trained(norm, steps=5):
    model = build_lenet(norm, "relu", seed=0)
    opt = make_optimizer(model, 0.5)
    x, y = images()
    for X, t in list(batches(x, y, 32, shuffle=True))[:steps]:
        train_step(model, opt, X, t)
    return model


@pytest.mark.parametrize("norm", ["scratch", "torch"])
def test_the_statistics_become_the_average_of_the_batch_statistics(norm):
    model = trained(norm)
    x, y = images(seed=1)
    seen = {name: [] for name in BN_LAYERS}
    hooks = [
        getattr(model, name).register_forward_hook(lambda m, inp, out, name=name: seen[name].append(inp[0].double()))
        for name in BN_LAYERS
    ]
    weights = {k: v.clone() for k, v in model.state_dict().items() if "weight" in k or "bias" in k or "gamma" in k}
    count = recompute_statistics(model, x, y, batch_size=16, num_batches=7, seed=3)
    for h in hooks:
        h.remove()
    assert count == 7
    for name in BN_LAYERS:
        layer, inputs = getattr(model, name), seen[name]
        dims = (0, 2, 3) if inputs[0].dim() == 4 else (0,)
        mean = torch.stack([X.mean(dims) for X in inputs]).mean(0)
        var = torch.stack([X.var(dims, unbiased=True) for X in inputs]).mean(0)
        got_mean = getattr(layer, "running_mean", getattr(layer, "moving_mean", None)).flatten()
        got_var = getattr(layer, "running_var", getattr(layer, "moving_var", None)).flatten()
        torch.testing.assert_close(got_mean.double(), mean, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(got_var.double(), var, rtol=1e-4, atol=1e-5)
        assert layer.momentum == 0.1  # the layer's own momentum is back
    for k, v in weights.items():  # the weights did not move
        assert torch.equal(model.state_dict()[k], v), k


def test_a_network_without_statistics_is_left_alone_and_no_batch_changes_nothing():
    plain = build_lenet("none")
    x, y = images()
    assert layers_with_statistics(plain) == [] and recompute_statistics(plain, x, y, 16) == 0
    model = trained("scratch", steps=8)
    before = evaluate(model, x, y)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert recompute_statistics(model, x, y, 16, num_batches=0) == 0  # no batch: nothing changes
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    recompute_statistics(model, x, y, 16, num_batches=10)
    assert evaluate(model, x, y) != before  # the eval-mode network changed, its weights did not


@pytest.mark.parametrize("norm", NORMS)
def test_every_normalisation_keeps_what_train_mode_would_have_changed(norm):
    model = trained(norm, steps=3)
    x, y = images(seed=2)
    keep = {n: b.clone() for n, b in model.named_buffers() if not n.endswith(STATISTICS)}
    generators = [m.generator.get_state() for m in model.modules() if hasattr(m, "generator")]
    count = recompute_statistics(model, x, y, 16, num_batches=4)
    assert count == (4 if layers_with_statistics(model) else 0)
    for n, b in model.named_buffers():
        if n in keep:
            assert torch.equal(b, keep[n]), n  # a renorm layer's step counter, a counter of batches
    after = [m.generator.get_state() for m in model.modules() if hasattr(m, "generator")]
    assert all(torch.equal(a, b) for a, b in zip(generators, after))
