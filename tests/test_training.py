"""The training step and evaluation."""

import copy

import pytest
import torch
from torch import nn

from bnviz.step.models import build_lenet, set_bn_bypass
from bnviz.step.training import evaluate, evaluate_train_mode, has_running_statistics, make_optimizer, train_step

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_batch(n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


@pytest.mark.parametrize("norm", ["none", "scratch", "torch"])
def test_train_step_lowers_the_loss_on_a_fixed_batch(norm):
    torch.manual_seed(0)
    model = build_lenet(norm, "relu", seed=0)
    opt = make_optimizer(model, lr=0.1)
    X, y = tiny_batch()
    losses = [train_step(model, opt, X, y)[0].item() / X.shape[0] for _ in range(30)]
    assert losses[-1] < 0.95 * losses[0], losses
    assert max(losses[-5:]) < min(losses[:5]), losses
    if norm != "none":  # BN trains this batch much faster than the plain network
        assert losses[-1] < 0.5 * losses[0], losses


def test_train_step_returns_the_loss_before_the_step_and_the_correct_count():
    model = build_lenet("scratch", "sigmoid", seed=1)
    opt = make_optimizer(model, lr=0.5)
    X, y = tiny_batch(16, seed=2)
    before = copy.deepcopy(model).train()
    with torch.no_grad():
        logits = before(X)
    loss, correct = train_step(model, opt, X, y)
    assert loss.shape == () and correct.shape == ()
    torch.testing.assert_close(loss, nn.functional.cross_entropy(logits, y, reduction="sum"))
    assert correct.item() == (logits.argmax(1) == y).sum().item()
    assert 0 <= correct.item() <= 16
    assert not loss.requires_grad
    assert model.training
    # The step moved the weights by -lr * grad of the mean loss.
    before.zero_grad()
    nn.functional.cross_entropy(before(X), y).backward()
    torch.testing.assert_close(model.fc3.weight, before.fc3.weight - 0.5 * before.fc3.weight.grad)


def test_make_optimizer_moves_each_parameter_by_minus_lr_times_its_gradient():
    """One step of plain SGD in float64: p <- p - lr * p.grad for every parameter of the model, nothing else
    (no momentum, no weight decay); the lr is read from param_groups at each step (the live slider writes it),
    and a parameter without a gradient (a bypassed BN layer) does not move."""
    model = build_lenet("scratch", seed=1).double()
    X, y = tiny_batch(16, seed=4)
    X = X.double()
    opt = make_optimizer(model, 0.05)
    for lr in (0.05, 0.3):  # the second step after the slider moved
        opt.param_groups[0]["lr"] = lr
        opt.zero_grad()
        nn.functional.cross_entropy(model(X), y).backward()
        model.bn2.gamma.grad = None  # as a bypassed layer leaves it
        before = {
            name: (p.detach().clone(), None if p.grad is None else p.grad.clone())
            for name, p in model.named_parameters()
        }
        opt.step()
        for name, p in model.named_parameters():
            old, grad = before[name]
            if grad is None:
                assert torch.equal(p, old), name
                continue
            # One rounding for lr * grad and one for the sum (or one for a fused multiply-add): each at most half
            # a float64 ulp of its operand's size, so the gap to p - lr * grad is within 2**-52 of their sizes.
            expected = old - lr * grad
            bound = 2.0**-52 * (old.abs() + (lr * grad).abs())
            assert ((p - expected).abs() <= bound).all(), name
            assert (p != old).any(), name  # every parameter with a gradient moved


@pytest.mark.parametrize("norm", ["scratch", "none"])
def test_our_sgd_is_torchs_sgd_bit_for_bit(norm):
    # ten steps with an lr change and a bypassed BN layer (parameters without a gradient) on the way
    ours, ref = build_lenet(norm, seed=2), build_lenet(norm, seed=2)
    opt, ref_opt = make_optimizer(ours, 0.5), torch.optim.SGD(ref.parameters(), lr=0.5)
    X, y = images_and_labels(64, seed=3)
    X = X.unsqueeze(1).float() / 255
    for i in range(10):
        if i == 4:
            for o in (opt, ref_opt):
                o.param_groups[0]["lr"] = 0.2
        if i == 7 and norm == "scratch":
            for m in (ours, ref):
                set_bn_bypass(m, True)
        for model, o in ((ours, opt), (ref, ref_opt)):
            o.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(X), y).backward()
            o.step()
    for (name, a), b in zip(ours.state_dict().items(), ref.state_dict().values()):
        assert torch.equal(a, b), name
    # every parameter the optimisers hold, the bypassed BN layers' too (state_dict no longer lists them)
    for a, b in zip(opt.param_groups[0]["params"], ref_opt.param_groups[0]["params"], strict=True):
        assert torch.equal(a, b)
    opt.zero_grad(set_to_none=False)
    assert all(p.grad is None or not p.grad.any() for p in ours.parameters())
    opt.zero_grad()
    assert all(p.grad is None for p in ours.parameters())


def images_and_labels(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 28, 28), generator=g, dtype=torch.uint8), torch.randint(0, 10, (n,), generator=g)


@pytest.mark.parametrize("train_mode", [True, False])
def test_evaluate_matches_a_direct_computation_and_restores_the_mode(train_mode):
    model = build_lenet("scratch", "sigmoid", seed=0)
    opt = make_optimizer(model, 0.1)
    for s in range(3):  # move the running statistics and weights away from their start
        train_step(model, opt, *tiny_batch(32, seed=s))
    images, labels = images_and_labels(23)
    model.train(train_mode)
    state = copy.deepcopy(model.state_dict())
    loss, acc = evaluate(model, images, labels, batch_size=5)  # 5 does not divide 23: a last batch of 3
    assert model.training is train_mode
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())  # BN statistics untouched
    assert isinstance(loss, float) and isinstance(acc, float)
    assert 0.0 <= acc <= 1.0 and loss > 0
    ref = copy.deepcopy(model).eval()
    with torch.no_grad():
        logits = ref(images.unsqueeze(1).float() / 255)
    assert loss == pytest.approx(nn.functional.cross_entropy(logits, labels).item(), rel=1e-5)
    assert acc == (logits.argmax(1) == labels).sum().item() / 23


def test_evaluate_accuracy_reaches_one_on_a_memorised_batch():
    model = build_lenet("scratch", "relu", seed=0)
    opt = make_optimizer(model, 0.1)
    images, labels = images_and_labels(20, seed=4)
    X = images.unsqueeze(1).float() / 255
    for _ in range(150):
        train_step(model, opt, X, labels)
    model.train()
    loss, acc = evaluate(model, images, labels)
    assert acc == 1.0
    assert model.training
    _, acc_wrong = evaluate(model, images, (labels + 1) % 10)
    assert acc_wrong == 0.0


@pytest.mark.parametrize("train_mode", [True, False])
def test_evaluate_restores_the_mode_when_the_forward_pass_raises(train_mode):
    model = build_lenet("scratch", "sigmoid", seed=0)
    model.fc2 = nn.Linear(7, 84)  # the wrong shape: the forward pass raises
    model.train(train_mode)
    images, labels = images_and_labels(8)
    with pytest.raises(RuntimeError, match="shape"):
        evaluate(model, images, labels)
    assert model.training is train_mode
    assert all(m.training is train_mode for m in model.modules())


@pytest.mark.parametrize("norm", ["scratch", "torch"])
def test_train_mode_accuracy_uses_each_batch_s_statistics_and_changes_nothing(norm):
    model = build_lenet(norm, "relu", seed=0)
    opt = make_optimizer(model, lr=0.1)
    for i in range(5):
        train_step(model, opt, *tiny_batch(seed=i))
    model.eval()
    images = (torch.rand(37, 28, 28, generator=torch.Generator().manual_seed(9)) * 255).to(torch.uint8)
    labels = torch.randint(0, 10, (37,), generator=torch.Generator().manual_seed(9))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loss, acc = evaluate_train_mode(model, images, labels, batch_size=12)
    # the reference: a copy in train mode, batch by batch (12, 12, 12; the last batch of 1 is left out)
    ref, X = copy.deepcopy(model).train(), images.unsqueeze(1).float() / 255
    with torch.no_grad():
        logits = torch.cat([ref(X[i : i + 12]) for i in (0, 12, 24)])
    assert acc == pytest.approx((logits.argmax(1) == labels[:36]).float().mean().item())
    assert loss == pytest.approx(nn.functional.cross_entropy(logits, labels[:36]).item(), rel=1e-5)
    assert not model.training  # the mode it came in, and every buffer as it was
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert evaluate(model, images, labels)[1] != acc or norm == "none"
    assert has_running_statistics(model) and not has_running_statistics(build_lenet("none"))


@pytest.mark.parametrize(
    "norm,differs", [("none", False), ("layernorm", False), ("groupnorm", False), ("scale", True), ("centre", True)]
)
def test_a_network_keeps_running_statistics_exactly_when_its_modes_differ(norm, differs):
    assert has_running_statistics(build_lenet(norm)) == differs
