"""The normalisation variants, each against a reference in float64: our BatchNorm where the variant reduces to
it, torch's own layers where torch has them, and the formula (and the paper's gradient) where it has not."""

import copy
import math
import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import code_that_ran, lane_of
from torch import nn

from bnviz.norms.batch_renorm import D_MAX, FULL_STEPS, HOLD_STEPS, R_MAX, BatchRenorm, batch_renorm, renorm_limits
from bnviz.norms.batchnorm import BatchNorm
from bnviz.norms.batchnorm_lite import (
    CentreOnlyBatchNorm,
    FrozenAffineBatchNorm,
    ScaleOnlyBatchNorm,
    centre_only,
    scale_only,
)
from bnviz.norms.ghost_batchnorm import GHOST_BATCH, GhostBatchNorm
from bnviz.norms.noisy_batchnorm import NOISE_SCALE, NOISE_SHIFT, NoisyBatchNorm
from bnviz.step.models import BN_LAYERS, GROUPS, NORM_INFO, NORMS, build_lenet

SHAPES = {2: (16, 5), 4: (8, 3, 4, 4)}  # (N, C) and (N, C, H, W)
EPS, MOMENTUM = 1e-5, 0.1


def inputs(num_dims, seed=0, n=None):
    g = torch.Generator().manual_seed(seed)
    shape = SHAPES[num_dims] if n is None else (n, *SHAPES[num_dims][1:])
    return (3 + 2 * torch.randn(shape, generator=g, dtype=torch.float64)).requires_grad_()


def upstream(X, seed=1):
    return torch.randn(X.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def dims_of(X):
    return (0,) if X.dim() == 2 else (0, 2, 3)


def randomise_affine(layer, seed=2):
    """gamma and beta away from 1 and 0, so a test sees them act."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        layer.gamma.copy_(1 + 0.5 * torch.randn(layer.gamma.shape, generator=g, dtype=layer.gamma.dtype))
        layer.beta.copy_(0.5 * torch.randn(layer.beta.shape, generator=g, dtype=layer.beta.dtype))
    return layer


def forward_backward(layer, X, dY):
    """(Y, dX, {name: grad}) of one forward and backward pass."""
    X = X.detach().clone().requires_grad_()
    for p in layer.parameters():
        p.grad = None
    Y = layer(X)
    Y.backward(dY)
    return Y.detach(), X.grad, {n: p.grad.clone() for n, p in layer.named_parameters()}


def assert_same_pass(a, b, **tol):
    (Ya, dXa, ga), (Yb, dXb, gb) = a, b
    torch.testing.assert_close(Ya, Yb, **tol)
    torch.testing.assert_close(dXa, dXb, **tol)
    assert ga.keys() == gb.keys()
    for n in ga:
        torch.testing.assert_close(ga[n], gb[n], **tol)


def same_start(cls, num_dims, **kw):
    """A variant and our BatchNorm with the same gamma, beta and moving statistics, in float64."""
    ours = randomise_affine(cls(SHAPES[num_dims][1], num_dims, **kw).double())
    bn = BatchNorm(SHAPES[num_dims][1], num_dims).double()
    bn.load_state_dict(ours.state_dict(), strict=False)
    return ours, bn


# --------------------------------------------------------------------------------------------- Batch Renorm


def renorm_reference(X, gamma, beta, moving_mean, moving_var, dY, r_max, d_max, eps=EPS):
    """Ioffe (2017), Algorithm 1, in float64 numpy: y, and the paper's gradient with r and d held constant."""
    X, dY = X.detach().numpy(), dY.numpy()
    gamma, beta = gamma.detach().numpy(), beta.detach().numpy()
    dims = dims_of(torch.from_numpy(X))
    m = X.size // X.shape[1]
    mu = X.mean(axis=dims, keepdims=True)
    sigma_b = np.sqrt(((X - mu) ** 2).mean(axis=dims, keepdims=True) + eps)
    sigma = np.sqrt(moving_var.numpy() + eps)
    r = np.clip(sigma_b / sigma, 1 / r_max, r_max)
    d = np.clip((mu - moving_mean.numpy()) / sigma, -d_max, d_max)
    x_hat = (X - mu) / sigma_b * r + d
    y = gamma * x_hat + beta
    # backward (the paper's): dx_hat, dsigma_B, dmu_B, then dx
    dx_hat = dY * gamma
    dsigma = (dx_hat * (X - mu) * (-r / sigma_b**2)).sum(axis=dims, keepdims=True)
    dmu = (dx_hat * (-r / sigma_b)).sum(axis=dims, keepdims=True)
    dx = dx_hat * r / sigma_b + dsigma * (X - mu) / (m * sigma_b) + dmu / m
    dgamma = (dY * x_hat).sum(axis=dims, keepdims=True)
    dbeta = dY.sum(axis=dims, keepdims=True)
    return y, dx, dgamma, dbeta, r, d


@pytest.mark.parametrize("num_dims", [2, 4])
@pytest.mark.parametrize("limits", [(1.5, 0.5), (100.0, 100.0)], ids=["clipped", "unclipped"])
def test_batch_renorm_matches_the_papers_algorithm(num_dims, limits):
    r_max, d_max = limits
    X, C = inputs(num_dims), SHAPES[num_dims][1]
    shape = (1, C) if num_dims == 2 else (1, C, 1, 1)
    gamma = (1 + 0.3 * torch.arange(C, dtype=torch.float64)).reshape(shape).requires_grad_()
    beta = (0.1 * torch.arange(C, dtype=torch.float64)).reshape(shape).requires_grad_()
    moving_mean = torch.linspace(1, 5, C, dtype=torch.float64).reshape(shape)  # far from the batch's 3
    moving_var = torch.linspace(0.5, 9, C, dtype=torch.float64).reshape(shape)  # around the batch's 4
    dY = upstream(X)
    Y, new_mean, new_var = batch_renorm(
        X, gamma, beta, moving_mean, moving_var, r_max=r_max, d_max=d_max, eps=EPS, momentum=MOMENTUM, training=True
    )
    Y.backward(dY)
    y, dx, dgamma, dbeta, r, d = renorm_reference(X, gamma, beta, moving_mean, moving_var, dY, r_max, d_max)
    if limits == (1.5, 0.5):  # the test means what it says: some corrections clipped, some not
        assert (np.abs(d) == 0.5).any() and (np.abs(d) < 0.5).any()
    else:
        assert not np.allclose(r, 1) and not np.allclose(d, 0)
    np.testing.assert_allclose(Y.detach().numpy(), y, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(X.grad.numpy(), dx, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(gamma.grad.numpy(), dgamma, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(beta.grad.numpy(), dbeta, rtol=1e-8, atol=1e-10)
    # the moving statistics: BN's update (the unbiased batch variance)
    x = X.detach()
    mean, var = x.mean(dim=dims_of(x), keepdim=True), x.var(dim=dims_of(x), keepdim=True, correction=1)
    torch.testing.assert_close(new_mean, 0.9 * moving_mean + 0.1 * mean)
    torch.testing.assert_close(new_var, 0.9 * moving_var + 0.1 * var)


@pytest.mark.parametrize("num_dims", [2, 4])
def test_batch_renorm_with_r_1_and_d_0_is_batchnorm(num_dims):
    ours, bn = same_start(BatchRenorm, num_dims, r_max=1.0, d_max=0.0)
    for step in range(4):  # the moving statistics move away from 0 and 1: r and d would be far from 1 and 0
        X = inputs(num_dims, seed=step)
        assert_same_pass(forward_backward(ours, X, upstream(X)), forward_backward(bn, X, upstream(X)))
        torch.testing.assert_close(ours.moving_mean, bn.moving_mean)
        torch.testing.assert_close(ours.moving_var, bn.moving_var)
    assert int(ours.steps) == 4
    ours.eval(), bn.eval()
    X = inputs(num_dims, seed=9)
    torch.testing.assert_close(ours(X), bn(X))


def test_batch_renorm_warm_up_schedule():
    assert (HOLD_STEPS, FULL_STEPS, R_MAX, D_MAX) == (500, 2_500, 3.0, 5.0)
    steps = torch.tensor([0, 250, 500, 1_000, 1_500, 2_500, 10_000])
    r_max, d_max = renorm_limits(steps)
    torch.testing.assert_close(r_max, torch.tensor([1, 1, 1, 1.5, 2, 3, 3], dtype=r_max.dtype))
    torch.testing.assert_close(d_max, torch.tensor([0, 0, 0, 1.25, 2.5, 5, 5], dtype=d_max.dtype))


def test_batch_renorm_counts_training_steps_only_and_is_bn_during_the_hold():
    layer, bn = same_start(BatchRenorm, 4)
    X = inputs(4)
    assert_same_pass(forward_backward(layer, X, upstream(X)), forward_backward(bn, X, upstream(X)))  # step 0
    layer.eval()
    layer(X)
    assert int(layer.steps) == 1  # evaluation does not count
    layer.train()
    layer.steps.fill_(FULL_STEPS)
    r_max, d_max = layer.limits()
    assert (float(r_max), float(d_max)) == (R_MAX, D_MAX)
    assert "steps" in layer.state_dict()


# --------------------------------------------------------------------------------------------- Ghost BN


@pytest.mark.parametrize("num_dims", [2, 4])
def test_ghost_bn_with_one_sub_batch_is_batchnorm(num_dims):
    ours, bn = same_start(GhostBatchNorm, num_dims, size=SHAPES[num_dims][0])
    for step in range(3):
        X = inputs(num_dims, seed=step)
        assert_same_pass(forward_backward(ours, X, upstream(X)), forward_backward(bn, X, upstream(X)))
        torch.testing.assert_close(ours.moving_mean, bn.moving_mean)
        torch.testing.assert_close(ours.moving_var, bn.moving_var)
    ours.eval(), bn.eval()
    torch.testing.assert_close(ours(X), bn(X))


@pytest.mark.parametrize("num_dims", [2, 4])
@pytest.mark.parametrize("n, size, chunks", [(16, 4, [4, 4, 4, 4]), (14, 4, [4, 4, 3, 3]), (10, 8, [5, 5])])
def test_ghost_bn_is_batchnorm_of_each_sub_batch(num_dims, n, size, chunks):
    ghost, _ = same_start(GhostBatchNorm, num_dims, size=size)
    start = copy.deepcopy(ghost.state_dict())
    X = inputs(num_dims, n=n)
    dY = upstream(X)
    Y, dX, grads = forward_backward(ghost, X, dY)
    # the reference: a BatchNorm with the same gamma and beta on each sub-batch, gradients summed
    ref_Y, ref_dX, ref_grads, means, variances = [], [], {"gamma": 0, "beta": 0}, [], []
    for x, dy in zip(X.detach().split(chunks), dY.split(chunks)):
        bn = BatchNorm(SHAPES[num_dims][1], num_dims).double()
        bn.load_state_dict(start)
        y, dx, g = forward_backward(bn, x, dy)
        ref_Y.append(y), ref_dX.append(dx)
        ref_grads = {k: ref_grads[k] + g[k] for k in g}
        means.append(x.mean(dim=dims_of(x), keepdim=True))
        variances.append(x.var(dim=dims_of(x), keepdim=True, correction=1))
    assert_same_pass((Y, dX, grads), (torch.cat(ref_Y), torch.cat(ref_dX), ref_grads))
    # moving statistics: the mean over the sub-batches of their means and of their unbiased variances
    mean, var = sum(means) / len(means), sum(variances) / len(variances)
    torch.testing.assert_close(ghost.moving_mean, 0.9 * start["moving_mean"] + 0.1 * mean)
    torch.testing.assert_close(ghost.moving_var, 0.9 * start["moving_var"] + 0.1 * var)


def test_ghost_bn_sub_batches_hold_at_least_two_images():
    with pytest.raises(ValueError, match="at least 4"):
        GhostBatchNorm(5, 2, size=3)
    layer = GhostBatchNorm(5, 2, size=4)
    for n in range(2, 40):  # every minibatch of 2 or more trains (a sub-batch of 1 would raise in (N, C))
        layer(torch.randn(n, 5))


# --------------------------------------------------------------------------------------------- Noisy BN


def test_noisy_bn_in_evaluation_is_batchnorm():
    ours, bn = same_start(NoisyBatchNorm, 4)
    X = inputs(4)
    ours(X), bn(X)  # one training step each: the same moving statistics
    torch.testing.assert_close(ours.moving_mean, bn.moving_mean)
    torch.testing.assert_close(ours.moving_var, bn.moving_var)
    ours.eval(), bn.eval()
    drawn = copy.deepcopy(ours.generator)
    torch.testing.assert_close(ours(X), bn(X))
    assert torch.equal(ours.generator.get_state(), drawn.get_state())  # evaluation draws no noise


@pytest.mark.parametrize("num_dims", [2, 4])
def test_noisy_bn_in_training_is_bn_scaled_and_shifted_per_channel(num_dims):
    ours, bn = same_start(NoisyBatchNorm, num_dims)
    X = inputs(num_dims)
    dY = upstream(X)
    scale, shift = (t.double() for t in copy.deepcopy(ours).draw())  # what the next step draws
    Y, dX, grads = forward_backward(ours, X, dY)
    ref_Y, ref_dX, ref_grads = forward_backward(bn, X, dY * scale)  # y = scale * BN(x) + shift
    torch.testing.assert_close(Y, scale * ref_Y + shift)
    torch.testing.assert_close(dX, ref_dX)
    torch.testing.assert_close(grads["gamma"], ref_grads["gamma"])
    torch.testing.assert_close(grads["beta"], ref_grads["beta"])
    torch.testing.assert_close(ours.moving_mean, bn.moving_mean)  # the noise comes after the statistics


def test_noisy_bn_noise_has_the_stated_statistics_and_changes_every_step():
    layer = NoisyBatchNorm(16, 4).double()  # gamma 1, beta 0: after BN each channel has mean 0 and std 1
    X = inputs(4, n=8).detach()
    X = X.repeat(1, 6, 1, 1)[:, :16]
    seen = []
    for _ in range(200):
        scale, shift = copy.deepcopy(layer).draw()
        Y = layer(X)
        mean, std = Y.mean(dim=(0, 2, 3)), Y.var(dim=(0, 2, 3), correction=0).sqrt()
        torch.testing.assert_close(mean, shift.reshape(-1).double(), atol=1e-10, rtol=0)
        torch.testing.assert_close(std, scale.reshape(-1).double(), atol=1e-4, rtol=1e-4)  # eps in BN's sqrt
        seen.append((shift.reshape(-1), scale.reshape(-1)))
    shifts, scales = torch.stack([s for s, _ in seen]), torch.stack([s for _, s in seen])
    assert shifts.abs().max() <= NOISE_SHIFT and shifts.abs().min() > 0  # non-zero means
    assert NOISE_SCALE[0] <= scales.min() and scales.max() <= NOISE_SCALE[1]
    # uniform: mean 0 and (1/3) NOISE_SHIFT^2 for the shift, the middle of the range for the scale
    assert abs(shifts.mean().item()) < 0.05 and shifts.var().item() == pytest.approx(NOISE_SHIFT**2 / 3, rel=0.1)
    assert scales.mean().item() == pytest.approx(sum(NOISE_SCALE) / 2, abs=0.05)
    assert (shifts[1:] != shifts[:-1]).all() and (scales[1:] != scales[:-1]).all()  # drawn afresh every step
    assert (shifts[:, 1:] != shifts[:, :-1]).all()  # and per channel


def test_noisy_bn_is_reproducible_and_seeded_per_layer():
    X = inputs(2).detach()
    a, b, other = NoisyBatchNorm(5, 2).double(), NoisyBatchNorm(5, 2).double(), NoisyBatchNorm(5, 2, seed=1).double()
    first = [a(X) for _ in range(3)]
    torch.testing.assert_close([b(X) for _ in range(3)], first)
    assert not torch.allclose(other(X), first[0])
    twin = copy.deepcopy(a)  # a copy goes on with the same sequence
    torch.testing.assert_close(twin(X), a(X))
    restored = NoisyBatchNorm(5, 2).double()
    restored.load_state_dict(a.state_dict())  # the generator's state is saved with the layer
    torch.testing.assert_close(restored(X), a(X))
    model = build_lenet("noisy")
    assert [layer.seed for layer in model.bn_layers().values()] == [0, 1, 2, 3]


# --------------------------------------------------------------------------------------------- the exercises


@pytest.mark.parametrize("num_dims", [2, 4])
def test_centre_only_against_its_formula(num_dims):
    layer = randomise_affine(CentreOnlyBatchNorm(SHAPES[num_dims][1], num_dims).double())
    assert set(dict(layer.named_buffers())) == {"moving_mean"}  # no moving variance: it never divides
    X = inputs(num_dims)
    x, g, b = X.detach().numpy(), layer.gamma.detach().numpy(), layer.beta.detach().numpy()
    mean = x.mean(axis=dims_of(X), keepdims=True)
    np.testing.assert_allclose(layer(X).detach().numpy(), g * (x - mean) + b, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.moving_mean.numpy(), 0.1 * mean, rtol=1e-12)
    layer.eval()
    np.testing.assert_allclose(layer(X).detach().numpy(), g * (x - 0.1 * mean) + b, rtol=1e-12, atol=1e-12)
    moving_mean = layer.moving_mean.clone()
    gamma, beta = layer.gamma.detach().clone().requires_grad_(), layer.beta.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda X, g, b: centre_only(X, g, b, moving_mean, momentum=MOMENTUM, training=True)[0], (X, gamma, beta)
    )


@pytest.mark.parametrize("num_dims", [2, 4])
def test_scale_only_against_its_formula(num_dims):
    layer = randomise_affine(ScaleOnlyBatchNorm(SHAPES[num_dims][1], num_dims).double())
    assert set(dict(layer.named_buffers())) == {"moving_var"}  # no moving mean: it never centres
    X = inputs(num_dims)
    x, g, b = X.detach().numpy(), layer.gamma.detach().numpy(), layer.beta.detach().numpy()
    var = x.var(axis=dims_of(X), keepdims=True)  # about the mean, biased
    m = X.numel() // X.shape[1]
    np.testing.assert_allclose(layer(X).detach().numpy(), g * x / np.sqrt(var + EPS) + b, rtol=1e-12)
    moving_var = 0.9 + 0.1 * var * m / (m - 1)
    np.testing.assert_allclose(layer.moving_var.numpy(), moving_var, rtol=1e-12)
    layer.eval()
    np.testing.assert_allclose(layer(X).detach().numpy(), g * x / np.sqrt(moving_var + EPS) + b, rtol=1e-12)
    moving_var = layer.moving_var.clone()
    gamma, beta = layer.gamma.detach().clone().requires_grad_(), layer.beta.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda X, g, b: scale_only(X, g, b, moving_var, eps=EPS, momentum=MOMENTUM, training=True)[0],
        (X, gamma, beta),
    )
    layer.train()
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        layer(torch.ones(1, SHAPES[num_dims][1], *(1,) * (num_dims - 2), dtype=torch.float64))


@pytest.mark.parametrize("num_dims", [2, 4])
def test_frozen_affine_is_batchnorm_with_gamma_1_and_beta_0(num_dims):
    C = SHAPES[num_dims][1]
    frozen, bn = FrozenAffineBatchNorm(C, num_dims).double(), BatchNorm(C, num_dims).double()
    assert list(frozen.parameters()) == []  # nothing to learn
    assert {"gamma", "beta"} <= set(dict(frozen.named_buffers()))
    X = inputs(num_dims)
    Y, dX, grads = forward_backward(frozen, X, upstream(X))
    ref_Y, ref_dX, _ = forward_backward(bn, X, upstream(X))
    torch.testing.assert_close(Y, ref_Y)
    torch.testing.assert_close(dX, ref_dX)
    assert grads == {}
    torch.testing.assert_close(frozen.moving_var, bn.moving_var)
    # a model trained with it keeps gamma = 1 and beta = 0
    model = build_lenet("frozen")
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    F.cross_entropy(model(torch.rand(8, 1, 28, 28)), torch.arange(8)).backward()
    opt.step()
    for layer in model.bn_layers().values():
        assert (layer.gamma == 1).all() and (layer.beta == 0).all()


# --------------------------------------------------------------------------------------------- LayerNorm, GroupNorm


def test_layernorm_lane_normalises_each_image_over_the_whole_layer():
    model = build_lenet("layernorm").double()
    assert isinstance(model.bn3, nn.LayerNorm) and isinstance(model.bn4, nn.LayerNorm)
    assert model.bn3.normalized_shape == (120,) and model.bn4.normalized_shape == (84,)
    for name, C in (("bn1", 6), ("bn2", 16)):  # after a conv: GroupNorm with one group, torch's LayerNorm
        layer = getattr(model, name)
        assert isinstance(layer, nn.GroupNorm) and (layer.num_groups, layer.num_channels) == (1, C)
        X = inputs(4, n=4).detach().repeat(1, 6, 1, 1)[:, :C]
        torch.testing.assert_close(layer(X), F.layer_norm(X, X.shape[1:], eps=EPS))
    X = torch.randn(3, 120, dtype=torch.float64)
    torch.testing.assert_close(model.bn3(X), F.layer_norm(X, (120,), eps=EPS))


def test_groupnorm_lane_groups():
    model = build_lenet("groupnorm").double()
    channels = {"bn1": 6, "bn2": 16, "bn3": 120, "bn4": 84}
    for name, groups in zip(BN_LAYERS, GROUPS):
        layer = getattr(model, name)
        assert isinstance(layer, nn.GroupNorm) and (layer.num_groups, layer.num_channels) == (groups, channels[name])
        X = torch.randn(5, channels[name], *((6, 6) if name in ("bn1", "bn2") else ()), dtype=torch.float64)
        Y = layer(X).reshape(5, groups, -1)  # each image's group: mean 0, variance 1
        torch.testing.assert_close(Y.mean(-1), torch.zeros(5, groups, dtype=torch.float64), atol=1e-12, rtol=0)
        torch.testing.assert_close(
            Y.var(-1, correction=0), torch.ones(5, groups, dtype=torch.float64), atol=1e-4, rtol=0
        )
    with pytest.raises(ValueError, match="groups"):
        build_lenet("groupnorm", groups=(2, 4))


# --------------------------------------------------------------------------------------------- the table


def test_every_norm_has_a_label_a_description_and_builds():
    labels = [NORM_INFO[n].label for n in NORMS]
    assert len(set(labels)) == len(labels) and all(0 < len(label) <= 16 for label in labels)
    assert NORM_INFO["ghost"].label == f"Ghost BN ({GHOST_BATCH})"
    for norm in NORMS:
        info = NORM_INFO[norm]
        assert info.description.endswith(".") and "\n" not in info.description
        model = build_lenet(norm)
        assert len(model.bn_layers()) == (0 if norm == "none" else 4)
        loss = F.cross_entropy(model(torch.rand(4, 1, 28, 28)), torch.arange(4))
        loss.backward()
        assert math.isfinite(loss.item())


@pytest.mark.parametrize("norm", [n for n in NORMS if n != "none"])
def test_the_lesson_prints_only_functions_the_lane_runs(norm):
    """For every normalisation, each function the Lesson prints runs when such a lane is built or trains."""
    from ui.views.lesson import functions_of, source_of

    lane = None

    def build_and_train():
        nonlocal lane
        lane = lane_of(norm)
        for _ in range(2):
            lane.train_one_step(threading.Lock())

    ran = code_that_ran(build_and_train)
    forward, backward = functions_of(norm)
    for f in (*forward, *backward):
        assert f.__code__ in ran, f"the Lesson prints {f.__qualname__} for {norm}, which its lane never called"
    text = source_of(norm)[1]
    assert "import " not in text and text.count("def ") == len(forward)  # functions, not their module
