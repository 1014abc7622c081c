"""The training step and evaluation, shared by the CLI and the live engine.

Nothing here synchronises with the device: losses and correct counts stay tensors until a caller
asks for numbers, so a GPU is never held up by the Python loop.
"""

import torch
from torch import nn

from bnviz.data.fashion_mnist import batches

loss_fn = nn.CrossEntropyLoss(reduction="sum")
STATISTICS = ("running_mean", "running_var", "moving_mean", "moving_var")  # running-statistics buffers: torch's, ours


class SGD:
    """Plain minibatch SGD, the chapter's optimiser: ``p <- p - lr * p.grad`` for every parameter with a gradient.

    What ``torch.optim.SGD`` does without momentum or weight decay, written out: torch's first optimiser
    imports ``torch._dynamo`` (1-2 s at every start of the CLI, of the dashboard's forkserver and of the tests).
    The same interface: ``param_groups[0]["lr"]`` (the live lr slider writes it), ``zero_grad``, ``step``.
    """

    def __init__(self, params, lr):
        self.param_groups = [{"params": list(params), "lr": float(lr), "momentum": 0, "weight_decay": 0}]

    def zero_grad(self, set_to_none=True):
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad.zero_()

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]  # a bypassed BN layer has none
            if params:
                torch._foreach_add_(params, [p.grad for p in params], alpha=-group["lr"])  # one launch on a GPU


def make_optimizer(model, lr):
    """The chapter's optimiser: plain minibatch SGD."""
    return SGD(model.parameters(), lr)


def train_step(model, optimizer, X, y):
    """One SGD step on (X, y); returns (summed loss, number correct) as 0-d tensors, not yet synced."""
    model.train()
    logits = model(X)
    loss = loss_fn(logits, y)
    optimizer.zero_grad(set_to_none=True)
    (loss / X.shape[0]).backward()
    optimizer.step()
    return loss.detach(), (logits.detach().argmax(1) == y).sum()


@torch.no_grad()
def evaluate(model, images, labels, batch_size=1024):
    """(mean loss, accuracy) over the given images in eval mode (running BN statistics)."""
    was_training = model.training
    model.eval()
    try:
        loss = torch.zeros((), device=images.device)
        correct = torch.zeros((), dtype=torch.long, device=images.device)
        for X, y in batches(images, labels, batch_size):
            logits = model(X)
            loss += loss_fn(logits, y)
            correct += (logits.argmax(1) == y).sum()
    finally:  # a forward pass that raises leaves the model in the mode it came in
        model.train(was_training)
    n = images.shape[0]
    loss, correct = torch.stack([loss, correct.to(loss.dtype)]).tolist()  # one transfer, one sync
    return loss / n, correct / n


def has_running_statistics(model):
    """Whether train mode and eval mode differ: BN-like layers keep running averages for eval mode."""
    return any(name.endswith(STATISTICS) for name, _ in model.named_buffers())


@torch.no_grad()
def evaluate_train_mode(model, images, labels, batch_size):
    """(mean loss, accuracy) with BN in train mode: each batch normalized by its own statistics, as in training.

    The images go in batches of the training batch size (the statistics BN saw while learning); a last batch
    of one image is left out (BN needs two values per channel). What train mode changes is put back: the
    running statistics and counters (every buffer), and the random state of any layer that draws noise.
    Set beside ``evaluate`` (eval mode, running statistics), the gap between the two is what BN's running
    averages get wrong.
    """
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    generators = [m.generator for m in model.modules() if isinstance(getattr(m, "generator", None), torch.Generator)]
    states = [g.get_state() for g in generators]
    was_training = model.training
    model.train()
    try:
        loss = torch.zeros((), device=images.device)
        correct = torch.zeros((), dtype=torch.long, device=images.device)
        n = 0
        for X, y in batches(images, labels, batch_size):
            if X.shape[0] < 2:
                break
            logits = model(X)
            loss += loss_fn(logits, y)
            correct += (logits.argmax(1) == y).sum()
            n += X.shape[0]
    finally:
        model.train(was_training)
        for name, b in model.named_buffers():
            b.copy_(buffers[name])
        for g, state in zip(generators, states):
            g.set_state(state)
    loss, correct = torch.stack([loss, correct.to(loss.dtype)]).tolist()  # one transfer, one sync
    return loss / max(n, 1), correct / max(n, 1)
