"""Our BatchNorm against torch.nn.BatchNorm1d / BatchNorm2d."""
import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from bnviz.batchnorm import BatchNorm, batch_norm


def pair(num_features, num_dims, dtype, seed):
    """Our layer and torch's, with the same random gamma and beta."""
    g = torch.Generator().manual_seed(seed)
    ours = BatchNorm(num_features, num_dims).to(dtype)
    ref = (nn.BatchNorm2d if num_dims == 4 else nn.BatchNorm1d)(num_features).to(dtype)
    with torch.no_grad():
        gamma = torch.rand(num_features, generator=g, dtype=dtype) + 0.5
        beta = torch.randn(num_features, generator=g, dtype=dtype)
        ref.weight.copy_(gamma)
        ref.bias.copy_(beta)
        ours.gamma.copy_(gamma.view_as(ours.gamma))
        ours.beta.copy_(beta.view_as(ours.beta))
    return ours, ref


def shape_for(num_dims, n, c, hw):
    return (n, c) if num_dims == 2 else (n, c, hw, hw)


def check_against_torch(num_dims, n, c, hw, seed, dtype, tol, steps=4):
    """Outputs, input/gamma/beta gradients, running statistics over several steps, then eval outputs.

    The tolerance is ``tol`` plus torch's own round-off in this dtype (measured against torch in float64):
    for a well-conditioned batch that is ~1e-7, but two close values per channel (variance near eps) make
    any float32 implementation, torch's included, err by more than 1e-5.
    """
    ours, ref = pair(c, num_dims, dtype, seed)
    exact = copy.deepcopy(ref).double()  # the same gamma and beta, in float64
    g = torch.Generator().manual_seed(seed + 1)

    def close(actual, expected, truth, scale=1.0):
        slack = (expected.double() - truth).abs().max().item() if dtype != torch.float64 else 0.0
        torch.testing.assert_close(actual, expected, atol=tol * scale + 2 * slack, rtol=tol)

    for _ in range(steps):  # several training steps: outputs, gradients, running statistics
        X = (torch.randn(shape_for(num_dims, n, c, hw), generator=g, dtype=torch.float64) * 3 + 2)
        X1, X2, X3 = (X.to(t).clone().requires_grad_() for t in (dtype, dtype, torch.float64))
        Y1, Y2, Y3 = ours(X1), ref(X2), exact(X3)
        close(Y1, Y2, Y3)
        upstream = torch.randn(Y1.shape, generator=g, dtype=torch.float64)
        (Y1 * upstream.to(dtype)).sum().backward()
        (Y2 * upstream.to(dtype)).sum().backward()
        (Y3 * upstream).sum().backward()
        close(X1.grad, X2.grad, X3.grad)
        close(ours.gamma.grad.flatten(), ref.weight.grad, exact.weight.grad, scale=10)
        close(ours.beta.grad.flatten(), ref.bias.grad, exact.bias.grad, scale=10)
        for m in (ours, ref, exact):
            m.zero_grad()
        close(ours.moving_mean.flatten(), ref.running_mean, exact.running_mean)
        close(ours.moving_var.flatten(), ref.running_var, exact.running_var)
    for m in (ours, ref, exact):
        m.eval()
    X = torch.randn(shape_for(num_dims, n, c, hw), generator=g, dtype=torch.float64)
    close(ours(X.to(dtype)), ref(X.to(dtype)), exact(X))


@settings(max_examples=40, deadline=None)
@given(num_dims=st.sampled_from([2, 4]), n=st.integers(2, 16), c=st.integers(1, 12), hw=st.integers(1, 7),
       seed=st.integers(0, 2**16))
def test_matches_torch_float32(num_dims, n, c, hw, seed):
    check_against_torch(num_dims, n, c, hw, seed, torch.float32, 1e-5)


@settings(max_examples=20, deadline=None)
@given(num_dims=st.sampled_from([2, 4]), n=st.integers(2, 16), c=st.integers(1, 12), hw=st.integers(1, 7),
       seed=st.integers(0, 2**16))
def test_matches_torch_float64(num_dims, n, c, hw, seed):
    check_against_torch(num_dims, n, c, hw, seed, torch.float64, 1e-10)


def test_matches_torch_at_lenet_shape():
    check_against_torch(4, 128, 6, 24, seed=0, dtype=torch.float32, tol=1e-5)


@pytest.mark.parametrize("num_dims", [2, 4])
def test_gradcheck_float64(num_dims):
    g = torch.Generator().manual_seed(0)
    shape = shape_for(num_dims, 5, 3, 3)
    X = torch.randn(shape, generator=g, dtype=torch.float64, requires_grad=True)
    pshape = (1, 3) if num_dims == 2 else (1, 3, 1, 1)
    gamma = torch.rand(pshape, generator=g, dtype=torch.float64, requires_grad=True)
    beta = torch.randn(pshape, generator=g, dtype=torch.float64, requires_grad=True)
    mm, mv = torch.zeros(pshape, dtype=torch.float64), torch.ones(pshape, dtype=torch.float64)

    def f(X, gamma, beta):
        return batch_norm(X, gamma, beta, mm, mv, eps=1e-5, momentum=0.1, training=True)[0]
    assert torch.autograd.gradcheck(f, (X, gamma, beta))  # the written-out backward against finite differences
    # the backward pass is once-differentiable: asking for a second derivative says so instead of being wrong
    dX, = torch.autograd.grad(f(X, gamma, beta).pow(2).sum(), X, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|double backward|differentiable"):
        dX.sum().backward()


def test_running_variance_is_unbiased():
    X = torch.tensor([[0.0], [2.0]])  # biased variance 1, unbiased 2
    _, mean, var = batch_norm(X, torch.ones(1, 1), torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1, 1),
                              eps=1e-5, momentum=1.0, training=True)
    assert mean.item() == pytest.approx(1.0)
    assert var.item() == pytest.approx(2.0)


def test_mode_follows_module_training_not_grad_mode():
    bn = BatchNorm(3, 2)
    X = torch.randn(8, 3) * 5 + 7
    with torch.no_grad():  # train mode under no_grad: still batch statistics, still updates the buffers
        Y = bn(X)
    assert Y.mean(0).abs().max() < 1e-5
    assert not torch.equal(bn.moving_mean, torch.zeros(1, 3))
    bn.eval()
    before = bn.moving_mean.clone()
    Y = bn(X.requires_grad_())  # eval mode with grad on: running statistics, no update
    torch.testing.assert_close(Y, (X - bn.moving_mean) / torch.sqrt(bn.moving_var + 1e-5))
    assert torch.equal(bn.moving_mean, before)


def test_buffers_in_state_dict_and_load_back():
    bn = BatchNorm(4, 4)
    bn(torch.randn(6, 4, 3, 3) + 3)
    sd = bn.state_dict()
    assert set(sd) == {"gamma", "beta", "moving_mean", "moving_var"}
    fresh = BatchNorm(4, 4)
    fresh.load_state_dict(sd)
    assert torch.equal(fresh.moving_mean, bn.moving_mean) and torch.equal(fresh.moving_var, bn.moving_var)
    assert [n for n, _ in bn.named_buffers()] == ["moving_mean", "moving_var"]


def test_buffers_follow_the_device():
    bn = BatchNorm(2, 2).to(torch.float64)
    assert bn.moving_mean.dtype == torch.float64  # .to() reaches the buffers
    if torch.cuda.is_available():
        bn = bn.cuda()
        assert bn.moving_var.device.type == "cuda"
        bn(torch.randn(4, 2, dtype=torch.float64, device="cuda"))


@pytest.mark.parametrize("num_dims, shape, message", [
    (4, (8, 3), "expects 4-D"),
    (2, (8, 3, 2, 2), "expects 2-D"),
    (2, (8, 5), "expects 3 channels"),
    (4, (1, 3, 1, 1), "more than 1 value per channel"),
    (2, (1, 3), "more than 1 value per channel"),
])
def test_bad_input_is_named(num_dims, shape, message):
    with pytest.raises(ValueError, match=message):
        BatchNorm(3, num_dims)(torch.randn(shape))


def test_single_value_per_channel_is_fine_in_eval_mode():
    bn = BatchNorm(3, 2).eval()
    assert bn(torch.randn(1, 3)).shape == (1, 3)


def test_functional_rejects_other_ranks():
    with pytest.raises(ValueError, match="2-D .* or 4-D"):
        batch_norm(torch.randn(4, 3, 2), torch.ones(1, 3, 1), torch.zeros(1, 3, 1), torch.zeros(1, 3, 1),
                   torch.ones(1, 3, 1), eps=1e-5, momentum=0.1, training=True)


def test_bad_num_dims():
    with pytest.raises(ValueError, match="num_dims"):
        BatchNorm(3, 3)
