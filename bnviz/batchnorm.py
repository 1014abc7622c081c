"""Batch Normalization from scratch, to be read next to the formula.

    BN(x) = gamma * (x - mu_B) / sqrt(sigma_B^2 + eps) + beta

mu_B and sigma_B^2 are the mean and (biased) variance of the minibatch B, per channel: over the batch
for a fully connected layer (N, C), over the batch and both spatial axes for a convolution (N, C, H, W).

Three things differ from the chapter's code (Dive into Deep Learning, "Batch Normalization"):

1. Training vs inference follows ``module.training`` (``model.train()`` / ``model.eval()``), not
   ``torch.is_grad_enabled()``: evaluating under ``no_grad`` in train mode still uses batch statistics,
   and an eval-mode forward pass that needs gradients still uses the running ones.
2. The running mean and variance are registered buffers: they follow ``.to(device)``, are saved in
   ``state_dict()`` and load back.
3. The running variance is updated with the *unbiased* batch variance (times n / (n - 1)), as PyTorch
   and Ioffe & Szegedy (2015) do; the chapter uses the biased one. The batch itself is still normalised
   with the biased variance, exactly as in the formula above.

With these, the layer agrees with ``torch.nn.BatchNorm1d`` / ``BatchNorm2d`` (momentum 0.1, eps 1e-5).
"""
import torch
from torch import nn
from torch.autograd.function import once_differentiable


class TrainingBatchNorm(torch.autograd.Function):
    """Training-mode BN: the forward pass (the formula above) and its gradient, written out.

    Autograd could differentiate the forward pass by itself; the backward pass below is the paper's own
    derivation (Ioffe & Szegedy 2015, Section 3), with m values per channel:

        dbeta  = sum(dY)
        dgamma = sum(dY * X_hat)
        dX     = gamma / sqrt(var + eps) * (dY - mean(dY) - X_hat * mean(dY * X_hat))

    It touches the big tensor a few times instead of autograd's dozen, which makes the layer about twice
    as fast on a CPU. The sums run over the batch (and H, W for a convolution): ``dims``.
    """

    @staticmethod
    def forward(ctx, X, gamma, beta, eps, dims):
        mean = X.mean(dim=dims, keepdim=True)
        X_centered = X - mean
        var = (X_centered * X_centered).mean(dim=dims, keepdim=True)  # biased, as in the formula
        inv_std = torch.rsqrt(var + eps)
        X_hat = X_centered * inv_std
        Y = torch.addcmul(beta, X_hat, gamma)  # gamma * X_hat + beta: scale and shift
        ctx.save_for_backward(X_hat, gamma, inv_std)
        ctx.dims = dims
        ctx.mark_non_differentiable(mean, var)
        return Y, mean, var

    @staticmethod
    @once_differentiable
    def backward(ctx, dY, _, __):
        X_hat, gamma, inv_std = ctx.saved_tensors
        m = X_hat.numel() // X_hat.shape[1]
        dbeta = dY.sum(dim=ctx.dims, keepdim=True)
        dgamma = (dY * X_hat).sum(dim=ctx.dims, keepdim=True)
        dX = torch.addcmul(dY - dbeta / m, X_hat, dgamma / m, value=-1) * (gamma * inv_std)
        return dX, dgamma.reshape(gamma.shape), dbeta.reshape(gamma.shape), None, None


def batch_norm(X, gamma, beta, moving_mean, moving_var, *, eps, momentum, training):
    """Normalise X per channel; return (Y, new_moving_mean, new_moving_var).

    X is (N, C) or (N, C, H, W); gamma, beta, moving_mean and moving_var broadcast against it,
    shaped (1, C) or (1, C, 1, 1).
    """
    if X.dim() not in (2, 4):
        raise ValueError(f"batch_norm expects 2-D (N, C) or 4-D (N, C, H, W) input, got shape {tuple(X.shape)}")
    if not training:
        # Inference: normalise with the running statistics gathered during training.
        Y = (X - moving_mean) * (gamma * torch.rsqrt(moving_var + eps)) + beta
        return Y, moving_mean, moving_var

    # Training: the statistics of this minibatch, per channel (dim 1).
    dims = (0,) if X.dim() == 2 else (0, 2, 3)
    n = X.numel() // X.shape[1]  # values per channel
    if n < 2:
        raise ValueError(
            f"batch_norm in training mode needs more than 1 value per channel, got input of shape {tuple(X.shape)}; "
            "use a batch of at least 2, or call model.eval() to use the running statistics")
    Y, mean, var = TrainingBatchNorm.apply(X, gamma, beta, eps, dims)

    # Moving averages for inference; the variance is made unbiased (n / (n - 1)), as in PyTorch.
    with torch.no_grad():
        new_mean = torch.lerp(moving_mean, mean, momentum)  # (1 - momentum) * moving + momentum * batch
        new_var = torch.lerp(moving_var, var * (n / (n - 1)), momentum)
    return Y, new_mean, new_var


class BatchNorm(nn.Module):
    """Learnable scale ``gamma`` and shift ``beta``; running statistics as buffers.

    num_features: outputs of a fully connected layer, or channels of a convolution.
    num_dims: 2 for a fully connected layer (N, C), 4 for a convolution (N, C, H, W).
    """

    def __init__(self, num_features, num_dims, *, eps=1e-5, momentum=0.1):
        super().__init__()
        if num_dims not in (2, 4):
            raise ValueError(f"num_dims must be 2 (fully connected) or 4 (convolution), got {num_dims}")
        shape = (1, num_features) if num_dims == 2 else (1, num_features, 1, 1)
        self.num_features, self.num_dims, self.eps, self.momentum = num_features, num_dims, eps, momentum
        self.gamma = nn.Parameter(torch.ones(shape))   # scale, starts as identity
        self.beta = nn.Parameter(torch.zeros(shape))   # shift
        self.register_buffer("moving_mean", torch.zeros(shape))
        self.register_buffer("moving_var", torch.ones(shape))

    def forward(self, X):
        if X.dim() != self.num_dims:
            layout = "(N, C)" if self.num_dims == 2 else "(N, C, H, W)"
            raise ValueError(f"BatchNorm(num_dims={self.num_dims}) expects {self.num_dims}-D input {layout}, "
                             f"got shape {tuple(X.shape)}")
        if X.shape[1] != self.num_features:
            raise ValueError(f"BatchNorm expects {self.num_features} channels (dim 1), got shape {tuple(X.shape)}")
        Y, new_mean, new_var = batch_norm(
            X, self.gamma, self.beta, self.moving_mean, self.moving_var,
            eps=self.eps, momentum=self.momentum, training=self.training)
        if self.training:
            self.moving_mean.copy_(new_mean)  # in place: the buffers stay registered
            self.moving_var.copy_(new_var)
        return Y

    def extra_repr(self):
        return f"{self.num_features}, num_dims={self.num_dims}, eps={self.eps}, momentum={self.momentum}"
