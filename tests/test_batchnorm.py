"""Our BatchNorm against torch.nn.BatchNorm1d / BatchNorm2d, with both backward passes ("paper", "autograd")."""

import copy
import inspect
import textwrap
import threading

import pytest
import torch
from conftest import code_that_ran, lane_of
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from bnviz.norms.batchnorm import BACKWARDS, BatchNorm, batch_norm
from bnviz.step.models import build_lenet

both_backwards = pytest.mark.parametrize("backward", BACKWARDS)


def pair(num_features, num_dims, dtype, seed, backward):
    """Our layer and torch's, with the same random gamma and beta."""
    g = torch.Generator().manual_seed(seed)
    ours = BatchNorm(num_features, num_dims, backward=backward).to(dtype)
    ref = (nn.BatchNorm2d if num_dims == 4 else nn.BatchNorm1d)(num_features).to(dtype)
    with torch.no_grad():
        gamma = torch.rand(num_features, generator=g, dtype=dtype) + 0.5
        beta = torch.randn(num_features, generator=g, dtype=dtype)
        ref.weight.copy_(gamma)
        ref.bias.copy_(beta)
        ours.gamma.copy_(gamma.view_as(ours.gamma))
        ours.beta.copy_(beta.view_as(ours.beta))
    return ours, ref


def is_paper(Y):
    """Whether Y came out of the hand-written backward pass (bnviz/norms/batchnorm_backward.py)."""
    return type(Y.grad_fn).__name__ == "PaperBatchNormBackward"


def shape_for(num_dims, n, c, hw):
    return (n, c) if num_dims == 2 else (n, c, hw, hw)


def check_against_torch(num_dims, n, c, hw, seed, dtype, tol, backward, steps=4):
    """Outputs, input/gamma/beta gradients, running statistics over several steps, then eval outputs.

    The tolerance is ``tol`` plus torch's own round-off in this dtype (measured against torch in float64):
    for a well-conditioned batch that is ~1e-7, but two close values per channel (variance near eps) make
    any float32 implementation, torch's included, err by more than 1e-5.
    """
    ours, ref = pair(c, num_dims, dtype, seed, backward)
    exact = copy.deepcopy(ref).double()  # the same gamma and beta, in float64
    g = torch.Generator().manual_seed(seed + 1)

    def close(actual, expected, truth, scale=1.0):
        slack = (expected.double() - truth).abs().max().item() if dtype != torch.float64 else 0.0
        torch.testing.assert_close(actual, expected, atol=tol * scale + 2 * slack, rtol=tol)

    for _ in range(steps):  # several training steps: outputs, gradients, running statistics
        X = torch.randn(shape_for(num_dims, n, c, hw), generator=g, dtype=torch.float64) * 3 + 2
        X1, X2, X3 = (X.to(t).clone().requires_grad_() for t in (dtype, dtype, torch.float64))
        Y1, Y2, Y3 = ours(X1), ref(X2), exact(X3)
        assert is_paper(Y1) == (backward == "paper")  # the path asked for is the one that ran
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


@both_backwards
@settings(max_examples=40, deadline=None)
@given(
    num_dims=st.sampled_from([2, 4]),
    n=st.integers(2, 16),
    c=st.integers(1, 12),
    hw=st.integers(1, 7),
    seed=st.integers(0, 2**16),
)
def test_matches_torch_float32(backward, num_dims, n, c, hw, seed):
    check_against_torch(num_dims, n, c, hw, seed, torch.float32, 1e-5, backward)


@both_backwards
@settings(max_examples=20, deadline=None)
@given(
    num_dims=st.sampled_from([2, 4]),
    n=st.integers(2, 16),
    c=st.integers(1, 12),
    hw=st.integers(1, 7),
    seed=st.integers(0, 2**16),
)
def test_matches_torch_float64(backward, num_dims, n, c, hw, seed):
    check_against_torch(num_dims, n, c, hw, seed, torch.float64, 1e-10, backward)


@both_backwards
def test_matches_torch_at_lenet_shape(backward):
    check_against_torch(4, 128, 6, 24, seed=0, dtype=torch.float32, tol=1e-5, backward=backward)


def functional(num_dims, backward, seed=0, n=5, c=3, hw=3):
    """f(X, gamma, beta) = Y of batch_norm in training mode, and float64 inputs that need gradients."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(shape_for(num_dims, n, c, hw), generator=g, dtype=torch.float64) * 3 + 2
    pshape = (1, c) if num_dims == 2 else (1, c, 1, 1)
    gamma = torch.rand(pshape, generator=g, dtype=torch.float64) + 0.5
    beta = torch.randn(pshape, generator=g, dtype=torch.float64)
    mm, mv = torch.zeros(pshape, dtype=torch.float64), torch.ones(pshape, dtype=torch.float64)

    def f(X, gamma, beta):
        return batch_norm(X, gamma, beta, mm, mv, eps=1e-5, momentum=0.1, training=True, backward=backward)[0]

    return f, tuple(t.requires_grad_() for t in (X, gamma, beta))


@both_backwards
@pytest.mark.parametrize("num_dims", [2, 4])
def test_gradcheck_float64(num_dims, backward):
    f, inputs = functional(num_dims, backward)
    assert is_paper(f(*inputs)) == (backward == "paper")
    assert torch.autograd.gradcheck(f, inputs)  # against finite differences
    X = inputs[0]
    if backward == "autograd":  # autograd's gradient is differentiable in turn
        assert torch.autograd.gradgradcheck(f, inputs)
    else:  # the written-out backward pass is once-differentiable: a second derivative says so instead of being wrong
        (dX,) = torch.autograd.grad(f(*inputs).pow(2).sum(), X, create_graph=True)
        with pytest.raises(RuntimeError, match="once_differentiable|double backward|differentiable"):
            dX.sum().backward()


@pytest.mark.parametrize("num_dims, n, c, hw", [(2, 5, 3, 1), (4, 5, 3, 3), (2, 128, 120, 1), (4, 16, 6, 24)])
def test_the_two_backward_passes_agree_float64(num_dims, n, c, hw):
    """The same outputs, moving statistics and gradients (X, gamma, beta) from both paths, to round-off."""
    results = {}
    for backward in BACKWARDS:
        _, (X, gamma, beta) = functional(num_dims, backward, seed=7, n=n, c=c, hw=hw)
        Y, mean, var = batch_norm(
            X,
            gamma,
            beta,
            torch.zeros_like(gamma),
            torch.ones_like(gamma),
            eps=1e-5,
            momentum=0.1,
            training=True,
            backward=backward,
        )
        upstream = torch.randn(Y.shape, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
        grads = torch.autograd.grad((Y * upstream).sum(), (X, gamma, beta))
        results[backward] = (Y, mean, var, *grads)
    for name, paper, autograd in zip(("Y", "moving_mean", "moving_var", "dX", "dgamma", "dbeta"), *results.values()):
        torch.testing.assert_close(paper, autograd, rtol=1e-12, atol=1e-12, msg=name)


def test_models_train_with_the_paper_backward_by_default():
    assert BatchNorm(3, 2).backward == "paper"
    assert all(layer.backward == "paper" for layer in build_lenet("scratch").bn_layers().values())
    assert "backward='autograd'" in repr(BatchNorm(3, 4, backward="autograd"))


def test_unknown_backward_is_named():
    with pytest.raises(ValueError, match="backward must be 'paper' .* or 'autograd', got 'numpy'"):
        BatchNorm(3, 2, backward="numpy")
    for training in (True, False):
        with pytest.raises(ValueError, match="backward must be .*got 'Paper'"):
            batch_norm(
                torch.randn(4, 3),
                torch.ones(1, 3),
                torch.zeros(1, 3),
                torch.zeros(1, 3),
                torch.ones(1, 3),
                eps=1e-5,
                momentum=0.1,
                training=training,
                backward="Paper",
            )


@both_backwards
def test_running_variance_is_unbiased(backward):
    X = torch.tensor([[0.0], [2.0]])  # biased variance 1, unbiased 2
    _, mean, var = batch_norm(
        X,
        torch.ones(1, 1),
        torch.zeros(1, 1),
        torch.zeros(1, 1),
        torch.ones(1, 1),
        eps=1e-5,
        momentum=1.0,
        training=True,
        backward=backward,
    )
    assert mean.item() == pytest.approx(1.0)
    assert var.item() == pytest.approx(2.0)


@both_backwards
def test_mode_follows_module_training_not_grad_mode(backward):
    bn = BatchNorm(3, 2, backward=backward)
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


@pytest.mark.parametrize(
    "num_dims, shape, message",
    [
        (4, (8, 3), "expects 4-D"),
        (2, (8, 3, 2, 2), "expects 2-D"),
        (2, (8, 5), "expects 3 channels"),
        (4, (1, 3, 1, 1), "more than 1 value per channel"),
        (2, (1, 3), "more than 1 value per channel"),
    ],
)
@both_backwards
def test_bad_input_is_named(num_dims, shape, message, backward):
    with pytest.raises(ValueError, match=message):
        BatchNorm(3, num_dims, backward=backward)(torch.randn(shape))


def test_single_value_per_channel_is_fine_in_eval_mode():
    bn = BatchNorm(3, 2).eval()
    assert bn(torch.randn(1, 3)).shape == (1, 3)


def test_functional_rejects_other_ranks():
    with pytest.raises(ValueError, match="2-D .* or 4-D"):
        batch_norm(
            torch.randn(4, 3, 2),
            torch.ones(1, 3, 1),
            torch.zeros(1, 3, 1),
            torch.zeros(1, 3, 1),
            torch.ones(1, 3, 1),
            eps=1e-5,
            momentum=0.1,
            training=True,
        )


def test_bad_num_dims():
    with pytest.raises(ValueError, match="num_dims"):
        BatchNorm(3, 3)


# ------------------------------------------------------------------- the Lesson prints what a lane trains with
def test_the_lesson_prints_the_functions_a_default_bn_lane_trains_with():
    from ui.views.lesson import functions_of, printed, source_of

    lane = lane_of()  # the default BN lane
    lane.train_one_step(threading.Lock())  # the first step: one-time set-up out of the way
    ran = code_that_ran(lambda: lane.train_one_step(threading.Lock()))
    forward, backward = functions_of(lane.spec.norm)
    assert forward and backward  # the default BN lane's Lesson prints its layer and its gradient
    for f in (*forward, *backward):
        assert f.__code__ in ran, f"the Lesson prints {f.__qualname__}, which a training step never called"
    # What the page shows is those functions' source, read from the code that ran, one after the other.
    for shown, functions in ((source_of(lane.spec.norm)[1], forward), (printed(backward)[1], backward)):
        assert shown == "\n\n".join(textwrap.dedent(inspect.getsource(f.__code__)) for f in functions)
        for words in ("import ", "PERFORMANCE", "addcmul", "_ ="):
            assert words not in shown


def test_the_backward_that_trains_is_the_papers_six_equations_in_order():
    from ui.views.lesson import functions_of, printed

    _, text = printed(functions_of("scratch")[1])
    assigned = [line.split("=")[0].strip() for line in text.splitlines() if " = " in line and "(" not in line[:9]]
    assert assigned == ["m", "dX_hat", "dvar", "dmean", "dX", "dgamma", "dbeta"]
