"""The chapter's exercises on BN: a "lite" BN that only centres or only scales, and BN with gamma and beta frozen.

    centre only:    Y = gamma * (X - mean) + beta                     (no division by the spread)
    scale only:     Y = gamma * X / sqrt(var + eps) + beta            (no centring; var is still about the mean)
    frozen affine:  Y = (X - mean) / sqrt(var + eps)                  (gamma = 1 and beta = 0, never learned)

mean and var are a channel's batch statistics, as in ``bnviz/norms/batchnorm.py``; in evaluation the moving ones.
Each layer keeps only the moving statistic it uses: the centring layer a moving mean, the scaling layer a
moving variance (updated with the unbiased batch variance, as BatchNorm's). Their gradients are autograd's.
The frozen layer is BatchNorm with gamma and beta as buffers fixed at 1 and 0: not parameters, so no
optimiser sees them, and the paper's backward as in BatchNorm.
"""

import torch

from bnviz.norms.batchnorm import BatchNorm


def centre_only(X, gamma, beta, moving_mean, *, momentum, training):
    """Subtract the batch mean (the moving one in evaluation); return (Y, new_moving_mean)."""
    if not training:
        return gamma * (X - moving_mean) + beta, moving_mean
    dims = (0,) if X.dim() == 2 else (0, 2, 3)
    mean = X.mean(dim=dims, keepdim=True)
    Y = gamma * (X - mean) + beta
    with torch.no_grad():
        new_moving_mean = (1 - momentum) * moving_mean + momentum * mean
    return Y, new_moving_mean


def scale_only(X, gamma, beta, moving_var, *, eps, momentum, training):
    """Divide by the batch standard deviation (the moving one in evaluation); return (Y, new_moving_var)."""
    if not training:
        return gamma * X / torch.sqrt(moving_var + eps) + beta, moving_var
    dims = (0,) if X.dim() == 2 else (0, 2, 3)
    m = X.numel() // X.shape[1]
    if m < 2:
        raise ValueError(f"scale_only in training mode needs more than 1 value per channel, got {tuple(X.shape)}")
    var = ((X - X.mean(dim=dims, keepdim=True)) ** 2).mean(dim=dims, keepdim=True)  # biased, as in BN
    Y = gamma * X / torch.sqrt(var + eps) + beta
    with torch.no_grad():
        new_moving_var = (1 - momentum) * moving_var + momentum * var * m / (m - 1)  # unbiased, as BatchNorm
    return Y, new_moving_var


class CentreOnlyBatchNorm(BatchNorm):
    """BN without the division: learnable gamma and beta, a moving mean and no moving variance."""

    def __init__(self, num_features, num_dims, *, eps=1e-5, momentum=0.1):
        super().__init__(num_features, num_dims, eps=eps, momentum=momentum, backward="autograd")
        del self.moving_var  # never used: this layer does not divide

    def forward(self, X):
        self.check_input(X)
        Y, new_moving_mean = centre_only(
            X, self.gamma, self.beta, self.moving_mean, momentum=self.momentum, training=self.training
        )
        if self.training:
            self.moving_mean.copy_(new_moving_mean)
        return Y


class ScaleOnlyBatchNorm(BatchNorm):
    """BN without the centring: learnable gamma and beta, a moving variance and no moving mean."""

    def __init__(self, num_features, num_dims, *, eps=1e-5, momentum=0.1):
        super().__init__(num_features, num_dims, eps=eps, momentum=momentum, backward="autograd")
        del self.moving_mean  # never used: this layer does not centre

    def forward(self, X):
        self.check_input(X)
        Y, new_moving_var = scale_only(
            X, self.gamma, self.beta, self.moving_var, eps=self.eps, momentum=self.momentum, training=self.training
        )
        if self.training:
            self.moving_var.copy_(new_moving_var)
        return Y


class FrozenAffineBatchNorm(BatchNorm):
    """BatchNorm with gamma = 1 and beta = 0 for good: buffers, not parameters."""

    def __init__(self, num_features, num_dims, *, eps=1e-5, momentum=0.1, backward="paper"):
        super().__init__(num_features, num_dims, eps=eps, momentum=momentum, backward=backward)
        ones, zeros = torch.ones_like(self.gamma), torch.zeros_like(self.beta)
        del self.gamma, self.beta  # no longer parameters ...
        self.register_buffer("gamma", ones)  # ... but fixed values that move with the layer and are saved
        self.register_buffer("beta", zeros)
