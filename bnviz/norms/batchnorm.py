"""Batch Normalization from scratch, to be read next to the formula.

    BN(x) = gamma * (x - mean) / sqrt(var + eps) + beta

mean and var are the mean and (biased) variance of a channel's m values in the minibatch: over the batch for
a fully connected layer (N, C), over the batch and both spatial axes for a convolution (N, C, H, W).

How this layer differs from the chapter's code (Dive into Deep Learning, "Batch Normalization"):

1. Training vs inference follows ``model.train()`` / ``model.eval()``, not ``torch.is_grad_enabled()``.
2. The moving mean and variance (torch's ``running_mean`` / ``running_var``) are registered buffers: they
   follow ``.to(device)``, are saved in ``state_dict()`` and load back.
3. The moving variance is updated with the *unbiased* batch variance (times m / (m - 1)), as PyTorch and
   Ioffe & Szegedy (2015) do; the chapter uses the biased one, which still normalises the batch here.
4. The backward pass is the paper's six equations, written out in ``bnviz/norms/batchnorm_backward.py``
   (``backward="paper"``, the default, which the models train with), or autograd's, as in the chapter
   (``backward="autograd"``). Both differentiate ``normalize`` below, the formula as it reads.
5. ``eps`` and ``momentum`` are arguments (default 1e-5 and 0.1, the chapter's fixed values).
6. Bad input raises a ValueError that names the shape: a rank other than 2 or 4 (the chapter asserts it in
   training only), a wrong channel count, or one value per channel in training (the chapter outputs beta).

With these, the layer agrees with ``torch.nn.BatchNorm1d`` / ``BatchNorm2d`` (momentum 0.1, eps 1e-5).
"""

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from bnviz.norms.batchnorm_backward import paper_backward

BACKWARDS = ("paper", "autograd")  # the backward pass written out (the default), or autograd's


def normalize(
    X: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, eps: float, dims: tuple[int, ...]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The formula on one minibatch: (Y, X_hat, mean, var), the statistics over ``dims`` (one channel's values)."""
    mean = X.mean(dim=dims, keepdim=True)
    var = ((X - mean) ** 2).mean(dim=dims, keepdim=True)  # biased, as in the formula
    X_hat = (X - mean) / torch.sqrt(var + eps)
    Y = gamma * X_hat + beta  # scale and shift
    return Y, X_hat, mean, var


class PaperBatchNorm(torch.autograd.Function):
    """``normalize`` forward, ``paper_backward`` backward: ``Y, mean, var = PaperBatchNorm.apply(X, gamma, beta,
    eps, dims)``. mean and var are the batch statistics, for the moving averages; no gradient flows through them."""

    @staticmethod
    def forward(ctx, X, gamma, beta, eps, dims):
        Y, X_hat, mean, var = normalize(X, gamma, beta, eps, dims)
        ctx.save_for_backward(X, X_hat, gamma, mean, var)
        ctx.eps, ctx.dims = eps, dims
        ctx.mark_non_differentiable(mean, var)
        return Y, mean, var

    @staticmethod
    @once_differentiable  # the saved tensors carry no graph: a second derivative would be wrong, so it raises
    def backward(ctx, dY, _dmean, _dvar):
        X, X_hat, gamma, mean, var = ctx.saved_tensors
        dX, dgamma, dbeta = paper_backward(dY, X, X_hat, gamma, mean, var, ctx.eps, ctx.dims)
        return dX, dgamma, dbeta, None, None


def check_batch(X: torch.Tensor, training: bool, backward: str) -> None:
    """A ValueError that says what to do, for input ``batch_norm`` cannot normalise."""
    if X.dim() not in (2, 4):
        raise ValueError(f"batch_norm expects 2-D (N, C) or 4-D (N, C, H, W) input, got shape {tuple(X.shape)}")
    if backward not in BACKWARDS:
        raise ValueError(f"backward must be 'paper' (written out) or 'autograd', got {backward!r}")
    if training and X.numel() // X.shape[1] < 2:
        raise ValueError(
            f"batch_norm in training mode needs more than 1 value per channel, got input of shape {tuple(X.shape)}; "
            "use a batch of at least 2, or call model.eval() to use the running statistics"
        )


def batch_norm(X, gamma, beta, moving_mean, moving_var, *, eps, momentum, training, backward="paper"):
    """Normalise X per channel; return (Y, new_moving_mean, new_moving_var).

    X is (N, C) or (N, C, H, W); gamma, beta, moving_mean and moving_var broadcast against it,
    shaped (1, C) or (1, C, 1, 1). backward: "paper" or "autograd", the same Y (see above).
    """
    check_batch(X, training, backward)
    if not training:  # inference: normalise with the moving statistics gathered during training
        X_hat = (X - moving_mean) / torch.sqrt(moving_var + eps)
        return gamma * X_hat + beta, moving_mean, moving_var

    # Training: the statistics of this minibatch, per channel (dim 1), over its m values.
    dims = (0,) if X.dim() == 2 else (0, 2, 3)
    m = X.numel() // X.shape[1]
    if backward == "paper":  # the paper's gradient, written out (bnviz/norms/batchnorm_backward.py)
        Y, mean, var = PaperBatchNorm.apply(X, gamma, beta, eps, dims)
    else:  # autograd differentiates the formula itself
        Y, _, mean, var = normalize(X, gamma, beta, eps, dims)

    # Moving averages for inference. They are not learned: no gradient flows into them.
    with torch.no_grad():
        new_moving_mean = (1 - momentum) * moving_mean + momentum * mean
        new_moving_var = (1 - momentum) * moving_var + momentum * var * m / (m - 1)  # unbiased, as PyTorch
    return Y, new_moving_mean, new_moving_var


class BatchNorm(nn.Module):
    """Learnable scale ``gamma`` and shift ``beta``; moving statistics as buffers.

    num_features: outputs of a fully connected layer, or channels of a convolution.
    num_dims: 2 for a fully connected layer (N, C), 4 for a convolution (N, C, H, W).
    backward: "paper" (the default, which the models use) or "autograd".
    """

    def __init__(self, num_features, num_dims, *, eps=1e-5, momentum=0.1, backward="paper"):
        super().__init__()
        if num_dims not in (2, 4):
            raise ValueError(f"num_dims must be 2 (fully connected) or 4 (convolution), got {num_dims}")
        if backward not in BACKWARDS:
            raise ValueError(f"backward must be 'paper' (written out) or 'autograd', got {backward!r}")
        shape = (1, num_features) if num_dims == 2 else (1, num_features, 1, 1)
        self.num_features, self.num_dims, self.eps, self.momentum = num_features, num_dims, eps, momentum
        self.backward = backward
        self.gamma = nn.Parameter(torch.ones(shape))  # scale, starts as identity
        self.beta = nn.Parameter(torch.zeros(shape))  # shift
        self.register_buffer("moving_mean", torch.zeros(shape))
        self.register_buffer("moving_var", torch.ones(shape))

    def check_input(self, X):
        """A ValueError that names the shape, for input of the wrong rank or channel count."""
        name = type(self).__name__
        if X.dim() != self.num_dims:
            layout = "(N, C)" if self.num_dims == 2 else "(N, C, H, W)"
            raise ValueError(
                f"{name}(num_dims={self.num_dims}) expects {self.num_dims}-D input {layout}, got shape {tuple(X.shape)}"
            )
        if X.shape[1] != self.num_features:
            raise ValueError(f"{name} expects {self.num_features} channels (dim 1), got shape {tuple(X.shape)}")

    def forward(self, X):
        self.check_input(X)
        Y, new_moving_mean, new_moving_var = batch_norm(
            X,
            self.gamma,
            self.beta,
            self.moving_mean,
            self.moving_var,
            eps=self.eps,
            momentum=self.momentum,
            training=self.training,
            backward=self.backward,
        )
        if self.training:
            self.moving_mean.copy_(new_moving_mean)  # in place: the buffers stay registered
            self.moving_var.copy_(new_moving_var)
        return Y

    def extra_repr(self):
        settings = f"num_dims={self.num_dims}, eps={self.eps}, momentum={self.momentum}, backward={self.backward!r}"
        return f"{self.num_features}, {settings}"
