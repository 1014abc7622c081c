"""LeNet variants: shapes, what norm='none' leaves out, shared initialisation, and our BN against torch's."""

import pytest
import torch
from torch import nn

from bnviz.norms.batchnorm import BatchNorm
from bnviz.step.models import BN_LAYERS, NORMS, BNLeNet, BNLeNetScratch, ChapterLeNet, PlainLeNet, build_lenet

pytestmark = pytest.mark.usefixtures("one_thread")

WEIGHT_LAYERS = ("conv1", "conv2", "fc1", "fc2", "fc3")


def images(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g)


def weights(model):
    """The conv/linear entries of the state dict."""
    return {k: v for k, v in model.state_dict().items() if k.split(".")[0] in WEIGHT_LAYERS}


@pytest.mark.parametrize("activation", ["sigmoid", "relu"])
@pytest.mark.parametrize("norm", NORMS)
def test_logits_shape(norm, activation):
    model = build_lenet(norm, activation, seed=3)
    for mode in (model.train, model.eval):
        mode()
        out = model(images(5))
        assert out.shape == (5, 10)
        assert out.dtype == torch.float32
        assert torch.isfinite(out).all()
    act = nn.Sigmoid if activation == "sigmoid" else nn.ReLU
    assert all(isinstance(getattr(model, f"act{i}"), act) for i in range(1, 5))


def test_none_has_no_bn():
    model = build_lenet("none", seed=0)
    for name in BN_LAYERS:
        assert type(getattr(model, name)) is nn.Identity
    assert not any(name.startswith("bn") for name, _ in model.named_parameters())
    assert not any(name.startswith("bn") for name, _ in model.named_buffers())
    assert list(model.buffers()) == []
    assert not any(isinstance(m, (BatchNorm, nn.modules.batchnorm._BatchNorm)) for m in model.modules())
    # Exactly the conv/linear parameters: 5 weights and 5 biases.
    assert sorted(n for n, _ in model.named_parameters()) == sorted(
        f"{layer}.{p}" for layer in WEIGHT_LAYERS for p in ("weight", "bias")
    )


@pytest.mark.parametrize("norm, cls", [("scratch", BatchNorm), ("torch", nn.modules.batchnorm._BatchNorm)])
def test_bn_variants_hold_bn(norm, cls):
    model = build_lenet(norm, seed=0)
    layers = model.bn_layers()
    assert list(layers) == list(BN_LAYERS)
    assert all(isinstance(layer, cls) for layer in layers.values())
    assert all(layers[n] is getattr(model, n) for n in BN_LAYERS)
    # Channels: 6 and 16 after the convolutions, 120 and 84 after the linear layers.
    assert [layer.num_features for layer in layers.values()] == [6, 16, 120, 84]


def test_bn_layers_empty_without_bn():
    assert build_lenet("none").bn_layers() == {}
    assert ChapterLeNet().bn_layers() == {}


def test_same_seed_same_weights_across_variants():
    models = [build_lenet(norm, seed=7) for norm in NORMS]
    ref = weights(models[0])
    assert sorted({k.split(".")[0] for k in ref}) == sorted(WEIGHT_LAYERS)
    for m in models[1:]:
        w = weights(m)
        assert w.keys() == ref.keys()
        for k in ref:
            assert torch.equal(w[k], ref[k]), k


def test_seed_changes_weights_and_biases_are_zero():
    a, b, a2 = build_lenet("scratch", seed=0), build_lenet("scratch", seed=1), build_lenet("scratch", seed=0)
    for layer in WEIGHT_LAYERS:
        wa, wb = getattr(a, layer).weight, getattr(b, layer).weight
        assert not torch.equal(wa, wb), layer
        assert torch.equal(wa, getattr(a2, layer).weight), layer
        assert torch.count_nonzero(getattr(a, layer).bias) == 0


def test_named_constructors():
    assert PlainLeNet().bn_layers() == {} and PlainLeNet().conv1.padding == (0, 0)
    assert all(isinstance(m, BatchNorm) for m in BNLeNetScratch().bn_layers().values())
    assert all(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in BNLeNet().bn_layers().values())
    assert torch.equal(PlainLeNet(seed=4).conv1.weight, BNLeNet(seed=4).conv1.weight)


def test_chapter_lenet_layout():
    model = ChapterLeNet(seed=0)
    assert model.conv1.padding == (2, 2)
    assert model.fc1.in_features == 400
    assert PlainLeNet().fc1.in_features == 256
    assert model(images(3)).shape == (3, 10)


@pytest.mark.parametrize(
    "kwargs, word", [(dict(norm="batch"), "batch"), (dict(norm="None"), "None"), (dict(activation="tanh"), "tanh")]
)
def test_bad_choices_raise(kwargs, word):
    with pytest.raises(ValueError, match=repr(word)):
        build_lenet(**kwargs)


def copy_bn_params(scratch, ref):
    """Give torch's BN layers the same gamma/beta as ours (both start at 1/0; this keeps the check honest)."""
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for name in BN_LAYERS:
            ours, theirs = getattr(scratch, name), getattr(ref, name)
            gamma = torch.rand(ours.num_features, generator=g) + 0.5
            beta = torch.randn(ours.num_features, generator=g) * 0.1
            ours.gamma.copy_(gamma.view_as(ours.gamma))
            ours.beta.copy_(beta.view_as(ours.beta))
            theirs.weight.copy_(gamma)
            theirs.bias.copy_(beta)


def train_side_by_side(models, steps=4):
    """Train the models on the same batches with SGD (lr 0.1); each step's training-mode outputs, in float64."""
    opts = [torch.optim.SGD(m.parameters(), lr=0.1) for m in models]
    g = torch.Generator().manual_seed(6)
    outs = []
    for _ in range(steps):
        X = torch.rand(32, 1, 28, 28, generator=g)
        y = torch.randint(0, 10, (32,), generator=g)
        step = []
        for m, opt in zip(models, opts):
            m.train()
            out = m(X.to(next(m.parameters()).dtype))
            loss = nn.functional.cross_entropy(out, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step.append(out.detach().double())
        outs.append(step)
    return outs


# In float64 both layers compute the same formula to ~1e-14 (measured after 4 steps); 1e-10 leaves four orders of
# magnitude for other CPUs' summation orders and still fails on any real difference (a biased running variance,
# a wrong gradient term: 1e-3 and more).
F64 = dict(atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("activation", ["sigmoid", "relu"])
def test_scratch_matches_torch_inside_lenet(activation):
    scratch, ref = build_lenet("scratch", activation, seed=5), build_lenet("torch", activation, seed=5)
    copy_bn_params(scratch, ref)
    scratch.double()
    ref.double()
    for step, (ours, theirs) in enumerate(train_side_by_side((scratch, ref))):
        torch.testing.assert_close(ours, theirs, **F64, msg=f"train step {step}")
    # The weights moved, and moved the same way.
    assert not torch.equal(scratch.conv1.weight, build_lenet("scratch", activation, seed=5).conv1.weight.double())
    for k, v in weights(scratch).items():
        torch.testing.assert_close(v, weights(ref)[k], **F64)
    for name in BN_LAYERS:
        ours, theirs = getattr(scratch, name), getattr(ref, name)
        torch.testing.assert_close(ours.gamma.flatten(), theirs.weight, **F64)
        torch.testing.assert_close(ours.moving_mean.flatten(), theirs.running_mean, **F64)
        torch.testing.assert_close(ours.moving_var.flatten(), theirs.running_var, **F64)
    # Eval mode uses the running statistics gathered above.
    scratch.eval()
    ref.eval()
    X = images(8, seed=9).double()
    torch.testing.assert_close(scratch(X), ref(X), **F64)
    scratch.train()
    assert not torch.allclose(scratch(X), ref.eval()(X), atol=1e-3)  # train vs eval really differ


@pytest.mark.parametrize("activation", ["sigmoid", "relu"])
def test_scratch_in_float32_is_as_close_to_the_truth_as_torch(activation):
    """In float32, what trains, our layer strays from a float64 run no further than torch's own layer does.

    Two float32 runs differ from each other by rounding that grows with each step (up to 2e-5 after 4 steps with
    ReLU, measured), and by how much depends on the CPU's kernels; so each step's tolerance is derived from that
    step's float32 error of torch's layer against the float64 run of the same start: at most 4x that error (the
    two measured within 2x of each other), never below 4 float32 epsilons of the outputs' scale.
    """
    scratch, ref = build_lenet("scratch", activation, seed=5), build_lenet("torch", activation, seed=5)
    copy_bn_params(scratch, ref)
    truth = build_lenet("torch", activation, seed=5)
    truth.load_state_dict(ref.state_dict())
    truth.double()
    eps32 = torch.finfo(torch.float32).eps
    for step, (ours, theirs, exact) in enumerate(train_side_by_side((scratch, ref, truth))):
        torch_error = (theirs - exact).abs().max().item()
        our_error = (ours - exact).abs().max().item()
        allowed = 4 * max(torch_error, 4 * eps32 * exact.abs().max().item())
        assert our_error <= allowed, f"step {step}: ours strays {our_error:.2e}, torch's {torch_error:.2e}"


def test_the_exercise_options_build_what_they_say():
    only_first = build_lenet("scratch", norm_at=("bn1", "bn2"))
    assert set(only_first.bn_layers()) == {"bn1", "bn2"}
    no_bias = build_lenet("scratch", bias=False)
    assert all(getattr(no_bias, n).bias is None for n in ("conv1", "conv2", "fc1", "fc2"))
    assert no_bias.fc3.bias is not None  # the output layer has no BN after it: it keeps its bias
    pooled = build_lenet("none", pool="max")
    assert isinstance(pooled.pool1, nn.MaxPool2d) and pooled(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    # the same seed gives the same weights whatever the options
    assert torch.equal(no_bias.conv1.weight, build_lenet("scratch").conv1.weight)
    with pytest.raises(ValueError, match="norm_at names positions"):
        build_lenet("scratch", norm_at=("bn9",))
    with pytest.raises(ValueError, match="pool must be avg or max"):
        build_lenet("none", pool="min")
