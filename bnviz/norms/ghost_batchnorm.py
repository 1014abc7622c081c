"""Ghost Batch Normalization (Hoffer, Hubara & Soudry 2017): BN over virtual sub-batches.

A large minibatch is cut into "ghost" batches of ``size`` images, and each is normalised with its own
statistics, exactly as ``bnviz/norms/batchnorm.py`` normalises a whole minibatch:

    X = [X_1; X_2; ...; X_k]                k = ceil(N / size) sub-batches of near-equal size
    Y_j = gamma * (X_j - mean_j) / sqrt(var_j + eps) + beta

So the noise of small-batch statistics (which regularises) comes back while the gradient step still
averages over the whole minibatch. The moving averages take the mean over the k sub-batches of their
means and of their unbiased variances. With one sub-batch (N <= size) the layer is BatchNorm.

Sub-batches are cut by ``torch.tensor_split``: 128 images in sub-batches of 32 are 4 of 32; a last
minibatch of 100 is 4 of 25. ``size`` is at least 4, so every sub-batch of a minibatch of 2 or more
holds at least 2 images. Inference uses the moving statistics, as BN.
"""

import math

import torch

from bnviz.norms.batchnorm import BatchNorm, batch_norm

GHOST_BATCH = 32  # images per sub-batch: Hoffer et al. used 128 on ImageNet; 32 is a quarter of our 128


def ghost_batch_norm(X, gamma, beta, moving_mean, moving_var, *, size, eps, momentum, training):
    """BN of each sub-batch of ``size`` images; return (Y, new_moving_mean, new_moving_var)."""
    if not training:
        return batch_norm(X, gamma, beta, moving_mean, moving_var, eps=eps, momentum=momentum, training=False)
    outputs, means, variances = [], [], []
    for chunk in X.tensor_split(math.ceil(X.shape[0] / size)):
        # The plain BN of this sub-batch. With momentum 1 the "moving" statistics it returns are the
        # sub-batch's own mean and unbiased variance: 0 * moving + 1 * batch.
        Y, mean, var = batch_norm(chunk, gamma, beta, moving_mean, moving_var, eps=eps, momentum=1.0, training=True)
        outputs.append(Y)
        means.append(mean)
        variances.append(var)
    with torch.no_grad():
        new_moving_mean = (1 - momentum) * moving_mean + momentum * torch.stack(means).mean(dim=0)
        new_moving_var = (1 - momentum) * moving_var + momentum * torch.stack(variances).mean(dim=0)
    return torch.cat(outputs), new_moving_mean, new_moving_var


class GhostBatchNorm(BatchNorm):
    """``BatchNorm`` whose training statistics come from sub-batches of ``size`` images (the paper's backward)."""

    def __init__(self, num_features, num_dims, *, size=GHOST_BATCH, eps=1e-5, momentum=0.1):
        super().__init__(num_features, num_dims, eps=eps, momentum=momentum)
        if int(size) < 4:
            raise ValueError(f"a ghost batch holds at least 4 images, got size={size}")
        self.size = int(size)

    def forward(self, X):
        self.check_input(X)
        Y, new_moving_mean, new_moving_var = ghost_batch_norm(
            X,
            self.gamma,
            self.beta,
            self.moving_mean,
            self.moving_var,
            size=self.size,
            eps=self.eps,
            momentum=self.momentum,
            training=self.training,
        )
        if self.training:
            self.moving_mean.copy_(new_moving_mean)
            self.moving_var.copy_(new_moving_var)
        return Y

    def extra_repr(self):
        return f"{super().extra_repr()}, size={self.size}"
