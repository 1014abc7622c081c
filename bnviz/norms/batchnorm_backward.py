"""The backward pass of Batch Normalization written out, as Ioffe & Szegedy (2015) derive it in Section 3.

``bnviz/norms/batchnorm.py`` normalises with the formula ``Y = gamma * (X - mean) / sqrt(var + eps) + beta``;
``backward="autograd"`` lets autograd differentiate it, ``backward="paper"`` uses ``PaperBatchNorm`` below:
the same forward pass, and the paper's gradient by hand. For one channel, with its m values x_i (over the
batch, and over H and W for a convolution) and dy_i the gradient of the loss with respect to y_i:

    dx_hat_i = dy_i * gamma
    dvar     = sum_i dx_hat_i * (x_i - mean) * -1/2 * (var + eps)^(-3/2)
    dmean    = sum_i dx_hat_i * -1 / sqrt(var + eps)  +  dvar * sum_i -2 * (x_i - mean) / m
    dx_i     = dx_hat_i / sqrt(var + eps)  +  dvar * 2 * (x_i - mean) / m  +  dmean / m
    dgamma   = sum_i dy_i * x_hat_i
    dbeta    = sum_i dy_i

``backward`` computes these six in plain operators, with shortcuts that the comments spell out: dx_hat is
folded into dx and not stored, the paper's two sums over dx_hat are dgamma and dbeta times per-channel
factors, and the last term of dmean is zero. A factor in brackets is per channel (worked out once per
channel, not once per value), and dx is added up term by term, in place. The forward pass makes x_hat in
the buffer of x - mean and scales and shifts it in one pass (``addcmul``): two fewer full-size tensors.
"""

import torch
from torch.autograd.function import once_differentiable


class PaperBatchNorm(torch.autograd.Function):
    """Training-mode BN: ``Y, mean, var = PaperBatchNorm.apply(X, gamma, beta, eps, dims)``.

    ``dims`` are the axes of one channel's m values: (0,) for (N, C), (0, 2, 3) for (N, C, H, W).
    mean and var are the batch statistics, for the moving averages; no gradient flows through them.
    """

    @staticmethod
    def forward(ctx, X, gamma, beta, eps, dims):
        mean = X.mean(dim=dims, keepdim=True)
        X_centered = X - mean
        var = (X_centered * X_centered).mean(dim=dims, keepdim=True)  # biased, as in the formula
        std = torch.sqrt(var + eps)
        X_hat = X_centered.div_(std)  # in place: x - mean is not needed again
        Y = torch.addcmul(beta, gamma, X_hat)  # gamma * X_hat + beta, in one pass
        ctx.save_for_backward(X_hat, gamma, std)
        ctx.dims, ctx.m = dims, X.numel() // X.shape[1]
        ctx.mark_non_differentiable(mean, var)
        return Y, mean, var

    @staticmethod
    @once_differentiable  # the saved tensors carry no graph: a second derivative would be wrong, so it raises
    def backward(ctx, dY, _dmean, _dvar):
        X_hat, gamma, std = ctx.saved_tensors
        dims, m = ctx.dims, ctx.m
        dbeta = dY.sum(dim=dims, keepdim=True)  # sum dy
        dgamma = (dY * X_hat).sum(dim=dims, keepdim=True)  # sum dy * x_hat
        # The paper's sums over dx_hat = dy * gamma, with x - mean = x_hat * std:
        # sum dx_hat * (x - mean) = gamma * std * dgamma, and sum dx_hat = gamma * dbeta.
        dvar = gamma * std * dgamma * -0.5 / std**3  # (var + eps)^(-3/2) = 1 / std^3
        dmean = gamma * dbeta * -1 / std  # + dvar * sum -2 * (x - mean) / m, which is 0: x - mean sums to 0
        dx = (gamma / std) * dY  # dx_hat / sqrt(var + eps)
        dx.addcmul_(X_hat, dvar * 2 * std / m)  # + dvar * 2 * (x - mean) / m
        dx += dmean / m  # + dmean / m
        return dx, dgamma, dbeta, None, None
