"""How smooth is the loss around the current weights? A light version of Santurkar et al. (2018),
"How Does Batch Normalization Help Optimization?", Figure 4.

On a fixed batch, take the gradient g at the weights w, then step along it by several sizes eta:
- loss spread: max - min of L(w - eta g) over the steps (how much the loss changes along the way);
- gradient change: max of |grad L(w - eta g) - g| (how much the gradient one trusts changes);
- smoothness: max of |grad L(w - eta g) - g| / |eta g| (an "effective beta-smoothness").
With BN all three are smaller: the landscape is smoother, so larger steps are safe.

It works on a copy of the model, so training is not disturbed.
"""

import copy

import torch
from torch import nn

STEP_FACTORS = (0.25, 0.5, 1.0, 2.0, 4.0)  # step sizes, as multiples of the learning rate


def _loss_and_grad(model, params, X, y):
    loss = nn.functional.cross_entropy(model(X), y)
    grads = torch.autograd.grad(loss, params)
    return loss.detach(), grads


def measure(model, X, y, lr, factors=STEP_FACTORS):
    """{'loss_spread', 'grad_change', 'smoothness', 'loss_min', 'loss_max'} at the current weights."""
    m = copy.deepcopy(model)
    m.train()
    params = [p for p in m.parameters() if p.requires_grad]
    _, g0 = _loss_and_grad(m, params, X, y)
    w0 = [p.detach().clone() for p in params]
    g0_norm = torch.sqrt(sum((g * g).sum() for g in g0))
    losses, changes, ratios = [], [], []
    for f in factors:
        eta = lr * f
        with torch.no_grad():
            for p, w, g in zip(params, w0, g0):
                p.copy_(w - eta * g)
        loss, g1 = _loss_and_grad(m, params, X, y)
        change = torch.sqrt(sum(((a - b) ** 2).sum() for a, b in zip(g1, g0)))
        losses.append(loss)
        changes.append(change)
        ratios.append(change / (eta * g0_norm + 1e-12))
    numbers = (
        torch.stack(
            [
                torch.stack(losses).min(),
                torch.stack(losses).max(),
                torch.stack(changes).max(),
                torch.stack(ratios).max(),
            ]
        )
        .cpu()
        .tolist()
    )  # one transfer
    lo, hi, change, smooth = numbers
    return {"loss_min": lo, "loss_max": hi, "loss_spread": hi - lo, "grad_change": change, "smoothness": smooth}
