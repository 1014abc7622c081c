"""Synchronised Batch Normalization from scratch: one minibatch spread over k devices, normalised as one.

Data-parallel training gives each of k devices (processes) a slice of the minibatch. Plain BN on each device
normalises with that slice's statistics; synchronised BN normalises with the statistics of the whole
minibatch, as ``bnviz/norms/batchnorm.py`` would on one device:

    on each device d:   s_d = sum of x,   q_d = sum of x^2,   m_d = values per channel   (per channel)
    all-reduce (sum):   S = sum_d s_d,    Q = sum_d q_d,      M = sum_d m_d
    then, everywhere:   mean = S / M,     var = Q / M - mean^2       (biased, as in the formula)
                        Y = gamma * (x - mean) / sqrt(var + eps) + beta

The backward pass is the paper's (``bnviz/norms/batchnorm_backward.py``), whose dx needs two sums over the batch
(sum dy and sum dy * x_hat): each device sums its own, they are all-reduced, and dx is the paper's formula
with the whole batch's sums and M. dgamma and dbeta stay per device, as in torch's SyncBatchNorm:
DistributedDataParallel averages every parameter's gradient across devices afterwards.

So a forward pass costs one all-reduce of 2C + 1 numbers per layer, and a backward pass one of 2C. The moving
statistics are updated from the global mean and the unbiased global variance (var * M / (M - 1)), as torch's
``nn.SyncBatchNorm``; every device computes the same values, so they stay equal without being broadcast.

``var = Q / M - mean^2`` is the textbook one-pass variance; torch's SyncBatchNorm instead gathers each
device's mean and variance and merges them (Chan et al.'s parallel formula), which loses less precision when
the mean is large against the spread. For LeNet's activations (mean and spread of the same order) the two
agree to float32 round-off (tests/test_sync_batchnorm.py).

The collectives are torch.distributed's (gloo between CPU processes, NCCL between GPUs). Without a process
group, or in a group of one, nothing is exchanged and the layer is ``BatchNorm`` exactly. torch's own
``nn.SyncBatchNorm`` runs on GPUs only (its kernels are CUDA's); this one runs wherever torch.distributed does.
"""

import torch
import torch.distributed as dist
from torch.autograd.function import once_differentiable

from bnviz.norms.batchnorm import BatchNorm, batch_norm


def group_size(group=None):
    """Processes in ``group`` (the default group when None); 1 when torch.distributed is not set up."""
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size(group)


class SyncBatchNormFunction(torch.autograd.Function):
    """Training-mode synchronised BN: ``Y, mean, var, M = SyncBatchNormFunction.apply(X, gamma, beta, eps, dims,
    group)``; mean and var are the whole batch's (biased), M its values per channel, for the moving averages."""

    @staticmethod
    def forward(ctx, X, gamma, beta, eps, dims, group):
        m = X.numel() // X.shape[1]  # values per channel on this device
        sums = torch.cat(
            [
                X.sum(dim=dims).flatten(),  # s_d, per channel
                (X * X).sum(dim=dims).flatten(),  # q_d, per channel
                torch.tensor([float(m)], dtype=X.dtype, device=X.device),  # m_d
            ]
        )
        dist.all_reduce(sums, op=dist.ReduceOp.SUM, group=group)  # S, Q, M: the whole batch's
        C = X.shape[1]
        shape = (1, C) if X.dim() == 2 else (1, C, 1, 1)
        S, Q, M = sums[:C].view(shape), sums[C : 2 * C].view(shape), sums[-1]
        mean = S / M
        var = (Q / M - mean * mean).clamp_min(0)  # biased; round-off could make it a hair below 0
        std = torch.sqrt(var + eps)
        X_hat = (X - mean) / std
        Y = gamma * X_hat + beta
        ctx.save_for_backward(X_hat, gamma, std)
        ctx.dims, ctx.M, ctx.group = dims, M.item(), group
        M = M.clone()
        ctx.mark_non_differentiable(mean, var, M)
        return Y, mean, var, M

    @staticmethod
    @once_differentiable
    def backward(ctx, dY, _dmean, _dvar, _dM):
        X_hat, gamma, std = ctx.saved_tensors
        dims, M, C = ctx.dims, ctx.M, X_hat.shape[1]
        dbeta = dY.sum(dim=dims, keepdim=True)  # sum dy, this device's values
        dgamma = (dY * X_hat).sum(dim=dims, keepdim=True)  # sum dy * x_hat, this device's values
        sums = torch.cat([dbeta.flatten(), dgamma.flatten()])
        dist.all_reduce(sums, op=dist.ReduceOp.SUM, group=ctx.group)  # the same two sums over the whole batch
        sum_dy, sum_dy_xhat = sums[:C].view_as(dbeta), sums[C:].view_as(dgamma)
        # The paper's dx (paper_backward, bnviz/norms/batchnorm_backward.py) with its sums over dx_hat = dy * gamma
        # read from these two (sum dx_hat * (x - mean) = gamma * std * sum dy * x_hat), the whole batch's, and M:
        dvar = gamma * std * sum_dy_xhat * -0.5 / std**3
        dmean = gamma * sum_dy * -1 / std
        dx = (gamma / std) * dY
        dx += (dvar * 2 * std / M) * X_hat
        dx += dmean / M
        return dx, dgamma, dbeta, None, None, None  # dgamma, dbeta per device: DDP averages them


def sync_batch_norm(X, gamma, beta, moving_mean, moving_var, *, eps, momentum, training, group=None):
    """``batch_norm`` (bnviz/norms/batchnorm.py) with the whole group's statistics; return (Y, new_moving_mean,
    new_moving_var). In a group of one (or with no group) it is ``batch_norm`` itself."""
    if not training or group_size(group) == 1:
        return batch_norm(X, gamma, beta, moving_mean, moving_var, eps=eps, momentum=momentum, training=training)
    if X.dim() not in (2, 4):
        raise ValueError(f"sync_batch_norm expects 2-D (N, C) or 4-D (N, C, H, W) input, got {tuple(X.shape)}")
    dims = (0,) if X.dim() == 2 else (0, 2, 3)
    Y, mean, var, M = SyncBatchNormFunction.apply(X, gamma, beta, eps, dims, group)
    M = M.item()
    if M < 2:
        raise ValueError(f"synchronised BN needs more than 1 value per channel over the group, got {int(M)}")
    with torch.no_grad():  # the same update on every device: the whole batch's mean and unbiased variance
        new_moving_mean = (1 - momentum) * moving_mean + momentum * mean
        new_moving_var = (1 - momentum) * moving_var + momentum * var * M / (M - 1)
    return Y, new_moving_mean, new_moving_var


class SyncBatchNorm(BatchNorm):
    """``BatchNorm`` (the same parameters and buffers, so the same state_dict) whose training statistics are the
    whole group's. ``group``: a torch.distributed process group, None for the default one."""

    def __init__(self, num_features, num_dims, *, eps=1e-5, momentum=0.1, group=None):
        super().__init__(num_features, num_dims, eps=eps, momentum=momentum)
        self.group = group

    def forward(self, X):
        self.check_input(X)
        Y, new_moving_mean, new_moving_var = sync_batch_norm(
            X,
            self.gamma,
            self.beta,
            self.moving_mean,
            self.moving_var,
            eps=self.eps,
            momentum=self.momentum,
            training=self.training,
            group=self.group,
        )
        if self.training:
            self.moving_mean.copy_(new_moving_mean)
            self.moving_var.copy_(new_moving_var)
        return Y

    @classmethod
    def convert(cls, model, group=None):
        """Replace every plain ``BatchNorm`` in ``model`` (not its variants) by a SyncBatchNorm holding the same
        gamma, beta and moving statistics, as torch's ``nn.SyncBatchNorm.convert_sync_batchnorm``; returns
        ``model``."""
        for name, child in model.named_children():
            if type(child) is BatchNorm:
                sync = cls(child.num_features, child.num_dims, eps=child.eps, momentum=child.momentum, group=group)
                sync.load_state_dict(child.state_dict())
                setattr(model, name, sync.to(child.gamma.device))
            else:
                cls.convert(child, group)
        return model
