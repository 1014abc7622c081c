"""Noisy BN (Santurkar, Tsipras, Ilyas & Madry 2018, Section 2): BN, then deliberate covariate shift.

The chapter repeats the original claim that BN helps because it reduces "internal covariate shift", the
change of each layer's input distribution as the layers below it learn. Santurkar et al. test it: they add
noise after every BN layer, with a non-zero mean and a non-unit variance that change at every training step,
so the next layer's input distribution moves all the time, more than without BN. In their experiments the
noisy network trained about as well as the one with plain BN, and better than the one without: whatever BN
does, it is not (only) keeping the distributions still. A noisy lane beside a BN lane and a lane without BN
asks the same question of LeNet.

Here, at each training step and for each channel j, a shift and a scale are drawn afresh:

    shift_j ~ U(-shift, shift)              a non-zero mean       (shift = 1 by default)
    scale_j ~ U(scale_low, scale_high)      a non-unit variance   (0.5 to 2 by default)
    y = scale_j * BN(x) + shift_j

so right after the layer (at gamma = 1, beta = 0) channel j's batch has mean shift_j and standard deviation
scale_j, different at every step. All the values of a channel share one draw: the channel's distribution moves
as a whole, which is what covariate shift is. The noise is added in training only; evaluation is BN's.

The draws come from the layer's own generator (on the CPU, seeded): the same run gives the same noise, a
restarted lane the same noise again, a copy of the layer (``copy.deepcopy``) goes on with the same sequence,
and ``state_dict()`` carries the generator's state.
The BN part, its moving statistics and its gradient (the paper's backward) are ``BatchNorm``'s.
"""

import torch

from bnviz.norms.batchnorm import BatchNorm

NOISE_SHIFT = 1.0  # shift_j ~ U(-1, 1)
NOISE_SCALE = (0.5, 2.0)  # scale_j ~ U(0.5, 2)


class NoisyBatchNorm(BatchNorm):
    """``BatchNorm`` followed, in training, by a per-channel random scale and shift drawn afresh every step."""

    def __init__(self, num_features, num_dims, *, eps=1e-5, momentum=0.1, shift=NOISE_SHIFT, scale=NOISE_SCALE, seed=0):
        super().__init__(num_features, num_dims, eps=eps, momentum=momentum)
        if not (shift >= 0 and 0 < scale[0] <= scale[1]):
            raise ValueError(f"noise needs shift >= 0 and 0 < scale_low <= scale_high, got {shift}, {scale}")
        self.shift, self.scale, self.seed = float(shift), tuple(float(s) for s in scale), int(seed)
        self.generator = torch.Generator().manual_seed(self.seed)  # on the CPU: drawing never waits for the device

    def draw(self):
        """This step's (scale, shift), each shaped like gamma, on the CPU; the generator moves on."""
        low, high = self.scale
        scale = low + (high - low) * torch.rand(self.gamma.shape, generator=self.generator)
        shift = self.shift * (2 * torch.rand(self.gamma.shape, generator=self.generator) - 1)
        return scale, shift

    def forward(self, X):
        Y = super().forward(X)
        if not self.training:
            return Y
        scale, shift = self.draw()
        return Y * scale.to(Y.device, Y.dtype) + shift.to(Y.device, Y.dtype)

    def get_extra_state(self):  # the generator's state travels with state_dict(), as a tensor like the rest
        return self.generator.get_state()

    def set_extra_state(self, state):
        self.generator.set_state(state.to(torch.uint8).cpu())

    def extra_repr(self):
        low, high = self.scale
        return f"{super().extra_repr()}, shift=U(-{self.shift:g}, {self.shift:g}), scale=U({low:g}, {high:g})"
