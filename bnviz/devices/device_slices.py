"""k devices' per-device BN, computed in one process: each slice of the minibatch normalised with its own statistics.

In data-parallel training with plain BN (DistributedDataParallel's default), device d normalises its slice
X_d of the minibatch with the slice's own mean and variance, and the gradients of the k devices are averaged.
The same arithmetic fits in one process: cut X into the same k slices (``torch.tensor_split``, as the ranks
do), normalise each with its own statistics, and take one step on the mean loss of the whole minibatch:

    Y = [BN(X_1); BN(X_2); ...; BN(X_k)]          each BN(X_d) with X_d's mean and variance

The moving statistics follow device 0's slices only: DDP broadcasts rank 0's buffers to every rank before
each forward pass (``broadcast_buffers=True``, its default), so rank 0's running averages are the model's.
Synchronised BN needs no such layer: in one process it is BN of the whole minibatch, the plain model.

This is Ghost BN (``bnviz/norms/ghost_batchnorm.py``) with k sub-batches, except for the moving statistics (Ghost
BN averages the sub-batches'). tests/test_data_parallel.py checks it against k processes at k = 2 and 4.
"""

import torch
import torch.nn.functional as F
from torch import nn

from bnviz.norms.batchnorm import BatchNorm, batch_norm


class PerDeviceBatchNorm(BatchNorm):
    """Our ``BatchNorm`` as k devices would compute it: each of ``devices`` slices with its own statistics."""

    def __init__(self, num_features, num_dims, *, devices, eps=1e-5, momentum=0.1):
        super().__init__(num_features, num_dims, eps=eps, momentum=momentum)
        self.devices = int(devices)

    def forward(self, X):
        self.check_input(X)
        if not self.training:
            return super().forward(X)
        outputs = []
        for d, X_d in enumerate(X.tensor_split(self.devices)):
            Y, new_mean, new_var = batch_norm(
                X_d, self.gamma, self.beta, self.moving_mean, self.moving_var,
                eps=self.eps, momentum=self.momentum, training=True,
            )  # fmt: skip
            if d == 0:  # device 0's running averages are the model's (DDP broadcasts rank 0's buffers)
                moving = new_mean, new_var
            outputs.append(Y)
        self.moving_mean.copy_(moving[0])
        self.moving_var.copy_(moving[1])
        return torch.cat(outputs)

    def extra_repr(self):
        return f"{super().extra_repr()}, devices={self.devices}"


class PerDeviceTorchBatchNorm(nn.Module):
    """torch's nn.BatchNorm1d/2d as k devices would compute it: ``F.batch_norm`` on each slice, device 0's
    slice updating the running statistics. It holds the original layer (as ``.bn``: its keys gain ``bn.``)."""

    def __init__(self, bn, devices):
        super().__init__()
        self.bn, self.devices = bn, int(devices)

    def forward(self, X):
        bn = self.bn
        if not self.training:
            return bn(X)
        bn.num_batches_tracked.add_(1)
        outputs = []
        for d, X_d in enumerate(X.tensor_split(self.devices)):
            mean, var = (bn.running_mean, bn.running_var) if d == 0 else (None, None)
            outputs.append(F.batch_norm(X_d, mean, var, bn.weight, bn.bias, True, bn.momentum, bn.eps))
        return torch.cat(outputs)


def per_device(model, devices):
    """Make the BN layers of ``model`` (ours, plain, or torch's) compute per-device statistics over ``devices``
    slices; returns ``model``. With one device nothing changes."""
    if devices == 1:
        return model
    for name, child in model.named_children():
        if type(child) is BatchNorm:
            layer = PerDeviceBatchNorm(
                child.num_features, child.num_dims, devices=devices, eps=child.eps, momentum=child.momentum
            )
            layer.load_state_dict(child.state_dict())
            setattr(model, name, layer)
        elif isinstance(child, (nn.BatchNorm1d, nn.BatchNorm2d)):
            setattr(model, name, PerDeviceTorchBatchNorm(child, devices))
        else:
            per_device(child, devices)
    return model
