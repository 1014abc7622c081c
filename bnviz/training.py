"""The training step and evaluation, shared by the CLI and the live engine.

Nothing here synchronises with the device: losses and correct counts stay tensors until a caller
asks for numbers, so a GPU is never held up by the Python loop.
"""

import torch
from torch import nn

from .data import batches

loss_fn = nn.CrossEntropyLoss(reduction="sum")


def make_optimizer(model, lr):
    """The chapter's optimiser: plain minibatch SGD."""
    return torch.optim.SGD(model.parameters(), lr=lr)


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
    return loss.item() / n, correct.item() / n
