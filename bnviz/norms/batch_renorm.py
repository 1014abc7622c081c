"""Batch Renormalization (Ioffe 2017) from scratch, to be read next to the paper's Algorithm 1.

BN normalises a training batch with the batch's own mean and standard deviation, and inference with the
moving ones: the network learns on one thing and is evaluated on another, and the two differ most when
batches are small or not representative. Batch Renorm corrects the batch statistics towards the moving
ones, per channel:

    sigma_B = sqrt(var_B + eps)            sigma = sqrt(moving_var + eps)
    r = clip(sigma_B / sigma, 1/r_max, r_max)
    d = clip((mean_B - moving_mean) / sigma, -d_max, d_max)
    x_hat = (x - mean_B) / sigma_B * r + d
    y = gamma * x_hat + beta

r and d are constants for the gradient (the paper's stop_gradient): they are computed under ``no_grad``.
If r and d were not clipped, x_hat would be (x - moving_mean) / sigma, the inference formula itself; with
r = 1 and d = 0 (r_max = 1, d_max = 0) it is plain BN.

Warm-up, as in the paper's experiments: r_max = 1 and d_max = 0 (plain BN) while the moving averages settle,
then both relaxed linearly to r_max = 3 and d_max = 5. The paper held for 5,000 steps and reached the limits
at 40,000; LeNet on Fashion-MNIST trains 4,690 steps in 10 epochs at batch 128, so here the hold is 500 steps
(about one epoch) and the limits are reached at 2,500. A ``steps`` buffer counts the training batches.

How this layer differs from the paper: it keeps the moving *variance* (updated with the unbiased batch
variance, as ``BatchNorm`` does) and takes sigma = sqrt(moving_var + eps), where the paper averages sigma
itself. So the moving statistics, and inference, are exactly BN's, and the probes read them the same way.
"""

import torch

from bnviz.norms.batchnorm import BatchNorm

R_MAX, D_MAX = 3.0, 5.0  # the paper's final limits
HOLD_STEPS, FULL_STEPS = 500, 2_500  # plain BN for the first 500 steps, the full limits from step 2,500


def renorm_limits(step, *, r_max=R_MAX, d_max=D_MAX, hold=HOLD_STEPS, full=FULL_STEPS):
    """(r_max, d_max) at training step ``step`` (a tensor): 1 and 0 until ``hold``, linear up to ``full``."""
    t = ((step - hold) / max(full - hold, 1)).clamp(0.0, 1.0)
    return 1.0 + (r_max - 1.0) * t, d_max * t


def batch_renorm(X, gamma, beta, moving_mean, moving_var, *, r_max, d_max, eps, momentum, training):
    """Batch Renorm of X per channel; return (Y, new_moving_mean, new_moving_var). As ``batch_norm``'s shapes."""
    if not training:  # inference: exactly BN's, with the moving statistics
        X_hat = (X - moving_mean) / torch.sqrt(moving_var + eps)
        return gamma * X_hat + beta, moving_mean, moving_var

    dims = (0,) if X.dim() == 2 else (0, 2, 3)
    m = X.numel() // X.shape[1]
    if m < 2:
        raise ValueError(f"batch_renorm in training mode needs more than 1 value per channel, got {tuple(X.shape)}")
    mean = X.mean(dim=dims, keepdim=True)
    var = ((X - mean) ** 2).mean(dim=dims, keepdim=True)  # biased, as in the formula
    std = torch.sqrt(var + eps)
    with torch.no_grad():  # r and d: corrections towards the moving statistics, constants for the gradient
        moving_std = torch.sqrt(moving_var + eps)
        r = (std / moving_std).clamp(1 / r_max, r_max)
        d = ((mean - moving_mean) / moving_std).clamp(-d_max, d_max)
    X_hat = (X - mean) / std * r + d
    Y = gamma * X_hat + beta

    with torch.no_grad():  # the moving averages, as BatchNorm's
        new_moving_mean = (1 - momentum) * moving_mean + momentum * mean
        new_moving_var = (1 - momentum) * moving_var + momentum * var * m / (m - 1)
    return Y, new_moving_mean, new_moving_var


class BatchRenorm(BatchNorm):
    """``BatchNorm`` with the r and d corrections; gamma, beta and the moving statistics as in BatchNorm.

    r_max, d_max: the final limits; hold, full: the warm-up in training steps (see the module's text).
    ``BatchRenorm(..., r_max=1, d_max=0)`` is BatchNorm at every step. Autograd's backward.
    """

    def __init__(
        self,
        num_features,
        num_dims,
        *,
        eps=1e-5,
        momentum=0.1,
        r_max=R_MAX,
        d_max=D_MAX,
        hold=HOLD_STEPS,
        full=FULL_STEPS,
    ):
        super().__init__(num_features, num_dims, eps=eps, momentum=momentum, backward="autograd")
        self.r_max, self.d_max, self.hold, self.full = r_max, d_max, hold, full
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))  # training batches seen

    def limits(self):
        """(r_max, d_max) now, as tensors on the layer's device (no wait for the device to read the step)."""
        return renorm_limits(self.steps, r_max=self.r_max, d_max=self.d_max, hold=self.hold, full=self.full)

    def forward(self, X):
        self.check_input(X)
        r_max, d_max = self.limits()
        Y, new_moving_mean, new_moving_var = batch_renorm(
            X,
            self.gamma,
            self.beta,
            self.moving_mean,
            self.moving_var,
            r_max=r_max,
            d_max=d_max,
            eps=self.eps,
            momentum=self.momentum,
            training=self.training,
        )
        if self.training:
            self.moving_mean.copy_(new_moving_mean)
            self.moving_var.copy_(new_moving_var)
            self.steps += 1
        return Y

    def extra_repr(self):
        return f"{super().extra_repr()}, r_max={self.r_max}, d_max={self.d_max}, warm-up={self.hold}..{self.full}"
