"""LeNet with and without Batch Normalization, built by one function so that BN is the only difference.

Reads top to bottom. Shapes are for Fashion-MNIST, (B, 1, 28, 28), with the BN layout (no padding):

    conv1 5x5 -> bn1 -> act1 -> pool1     (B, 6, 24, 24) -> (B, 6, 12, 12)
    conv2 5x5 -> bn2 -> act2 -> pool2     (B, 16, 8, 8)  -> (B, 16, 4, 4)
    flatten -> fc1 -> bn3 -> act3          (B, 256) -> (B, 120)
    fc2 -> bn4 -> act4                     (B, 84)
    fc3                                    (B, 10) logits

With ``norm="none"`` the four BN layers are ``nn.Identity``: they hold no parameters, consume no random
numbers and compute nothing, so the two networks differ only by BN, and every variant has the same layer
names (bn1..bn4 mark the places where BN sits or would sit).

The other normalisations of ``NORM_INFO`` sit at the same four places. Two need a choice for LeNet:
- LayerNorm normalises each sample over all of a layer's units: nn.LayerNorm(120) and (84) after fc1 and fc2;
  after a convolution over (C, H, W), which is torch's nn.GroupNorm with one group (its documentation says
  so), with one gamma and beta per channel (nn.LayerNorm([C, H, W]) would learn one per value: 3,456 at bn1).
- GroupNorm (Wu & He 2018) normalises each sample over groups of channels: 2 groups of 3 channels at bn1,
  4 groups of 4 at bn2; after fc1 and fc2 each feature counts as a channel, in groups of 12 features:
  10 groups at bn3, 7 at bn4 (``LeNetConfig.groups``).
"""

from dataclasses import dataclass

import torch
from torch import nn

from bnviz.norms.batch_renorm import BatchRenorm
from bnviz.norms.batchnorm import BatchNorm
from bnviz.norms.batchnorm_lite import CentreOnlyBatchNorm, FrozenAffineBatchNorm, ScaleOnlyBatchNorm
from bnviz.norms.ghost_batchnorm import GHOST_BATCH, GhostBatchNorm
from bnviz.norms.noisy_batchnorm import NoisyBatchNorm

GROUPS = (2, 4, 10, 7)  # GroupNorm's groups at bn1..bn4: 3 and 4 channels a group, then 12 features a group
FULL_STATE = ("running_mean", "running_var", "gamma", "beta")


@dataclass(frozen=True)
class NormInfo:
    label: str  # short, in a lane's label: "B · GroupNorm"
    description: str  # one line, for a reader choosing a lane
    state: tuple = FULL_STATE  # what a probe reads of the layer: moving statistics, gamma and beta


NORM_INFO = {
    "none": NormInfo("BN off", "No normalisation: bn1..bn4 are identities (the plain LeNet, in BN's layout).", ()),
    "scratch": NormInfo(
        "BN scratch",
        "Batch Normalization from scratch (bnviz/norms/batchnorm.py): each channel standardised with the minibatch's "
        "mean and variance, then scaled by gamma and shifted by beta.",
    ),
    "torch": NormInfo("BN torch", "torch's nn.BatchNorm1d / nn.BatchNorm2d: the same formula, torch's kernels."),
    "layernorm": NormInfo(
        "LayerNorm",
        "Layer Normalization (Ba et al. 2016): each image standardised over all of a layer's units, no batch "
        "statistics, the same in training and evaluation (torch's nn.LayerNorm; nn.GroupNorm(1, C) after a conv).",
        ("gamma", "beta"),
    ),
    "groupnorm": NormInfo(
        "GroupNorm",
        "Group Normalization (Wu & He 2018): each image standardised over groups of channels (2 groups at bn1, 4 "
        "at bn2, groups of 12 features at bn3 and bn4), no batch statistics (torch's nn.GroupNorm).",
        ("gamma", "beta"),
    ),
    "renorm": NormInfo(
        "BN renorm",
        "Batch Renormalization (Ioffe 2017): BN corrected towards the moving statistics by r and d, clipped to "
        "r_max and d_max, which grow from 1 and 0 (plain BN) to 3 and 5 over the first 2,500 steps.",
    ),
    "ghost": NormInfo(
        f"Ghost BN ({GHOST_BATCH})",
        f"Ghost Batch Normalization (Hoffer et al. 2017): BN statistics over sub-batches of {GHOST_BATCH} images, "
        "not over the whole minibatch.",
    ),
    "noisy": NormInfo(
        "Noisy BN",
        "Noisy BN (Santurkar et al. 2018): BN, then each channel scaled by U(0.5, 2) and shifted by U(-1, 1), "
        "drawn afresh every step: deliberate covariate shift, in training only.",
    ),
    "centre": NormInfo(
        "BN centre only",
        "BN that only centres (the chapter's exercise): x minus the batch mean, no division; gamma and beta.",
        ("running_mean", "gamma", "beta"),
    ),
    "scale": NormInfo(
        "BN scale only",
        "BN that only scales (the chapter's exercise): x divided by the batch standard deviation, no centring.",
        ("running_var", "gamma", "beta"),
    ),
    "frozen": NormInfo(
        "BN γ=1 β=0",
        "BN with gamma and beta fixed at 1 and 0 (the chapter's exercise): standardised, never scaled or shifted.",
    ),
}
NORMS = tuple(NORM_INFO)
ACTIVATIONS = ("sigmoid", "relu")
BN_LAYERS = ("bn1", "bn2", "bn3", "bn4")  # where BN sits (or would sit)
BN_INPUTS = ("conv1", "conv2", "fc1", "fc2")  # the layer whose output enters each BN
BN_ACTIVATIONS = ("act1", "act2", "act3", "act4")  # the activation after each BN


@dataclass(frozen=True)
class LeNetConfig:
    norm: str = "scratch"  # one of NORMS: none | scratch (ours) | torch (nn.BatchNorm1d/2d) | layernorm | ...
    activation: str = "sigmoid"  # sigmoid (the chapter) | relu
    first_padding: int = 0  # the chapter's plain LeNet pads the first conv by 2
    num_classes: int = 10
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1
    ghost_batch: int = GHOST_BATCH  # ghost: images per sub-batch
    groups: tuple = GROUPS  # groupnorm: groups at bn1..bn4 (6, 16 channels; 120, 84 features)
    noise_seed: int = 0  # noisy: the noise's seed (each position draws its own)
    # For the chapter's exercises (the live lanes keep the defaults):
    norm_at: tuple = BN_LAYERS  # the positions that hold the normalisation; the others are identities
    bias: bool = True  # the conv/linear layers before each position have a bias (BN cancels a constant shift)
    pool: str = "avg"  # avg (the chapter's LeNet) | max

    def __post_init__(self):
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {self.norm!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if not set(self.norm_at) <= set(BN_LAYERS):
            raise ValueError(f"norm_at names positions among {', '.join(BN_LAYERS)}, got {self.norm_at!r}")
        if self.pool not in ("avg", "max"):
            raise ValueError(f"pool must be avg or max, got {self.pool!r}")
        if len(self.groups) != len(BN_LAYERS):
            raise ValueError(f"groups gives GroupNorm's groups at {', '.join(BN_LAYERS)}, got {self.groups!r}")


def norm_layer(config, num_features, num_dims, position=0):
    """The normalisation layer at one position (0..3 for bn1..bn4), as ``config.norm`` names it."""
    norm, eps, momentum = config.norm, config.bn_eps, config.bn_momentum
    if norm == "none" or BN_LAYERS[position] not in config.norm_at:
        return nn.Identity()
    if norm == "scratch":
        return BatchNorm(num_features, num_dims, eps=eps, momentum=momentum)
    if norm == "torch":
        cls = nn.BatchNorm2d if num_dims == 4 else nn.BatchNorm1d
        return cls(num_features, eps=eps, momentum=momentum)
    if norm == "layernorm":  # over (C, H, W) after a conv: GroupNorm with one group (see the module's text)
        return nn.GroupNorm(1, num_features, eps=eps) if num_dims == 4 else nn.LayerNorm(num_features, eps=eps)
    if norm == "groupnorm":
        return nn.GroupNorm(config.groups[position], num_features, eps=eps)
    if norm == "renorm":
        return BatchRenorm(num_features, num_dims, eps=eps, momentum=momentum)
    if norm == "ghost":
        return GhostBatchNorm(num_features, num_dims, size=config.ghost_batch, eps=eps, momentum=momentum)
    if norm == "noisy":
        seed = config.noise_seed * len(BN_LAYERS) + position
        return NoisyBatchNorm(num_features, num_dims, eps=eps, momentum=momentum, seed=seed)
    lite = {"centre": CentreOnlyBatchNorm, "scale": ScaleOnlyBatchNorm, "frozen": FrozenAffineBatchNorm}
    return lite[norm](num_features, num_dims, eps=eps, momentum=momentum)


def activation_layer(config):
    return nn.Sigmoid() if config.activation == "sigmoid" else nn.ReLU()


class LeNet(nn.Module):
    def __init__(self, config=LeNetConfig()):
        super().__init__()
        self.config = c = config
        side = (28 + 2 * c.first_padding - 4) // 2  # after conv1 and pool1: 12 (or 14 with padding 2)
        side = (side - 4) // 2  # after conv2 and pool2: 4 (or 5)
        pool = nn.AvgPool2d if c.pool == "avg" else nn.MaxPool2d
        self.conv1 = nn.Conv2d(1, 6, kernel_size=5, padding=c.first_padding, bias=c.bias)
        self.bn1, self.act1, self.pool1 = norm_layer(c, 6, 4, 0), activation_layer(c), pool(2, 2)
        self.conv2 = nn.Conv2d(6, 16, kernel_size=5, bias=c.bias)
        self.bn2, self.act2, self.pool2 = norm_layer(c, 16, 4, 1), activation_layer(c), pool(2, 2)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(16 * side * side, 120, bias=c.bias)
        self.bn3, self.act3 = norm_layer(c, 120, 2, 2), activation_layer(c)
        self.fc2 = nn.Linear(120, 84, bias=c.bias)
        self.bn4, self.act4 = norm_layer(c, 84, 2, 3), activation_layer(c)
        self.fc3 = nn.Linear(84, c.num_classes)

    def forward(self, x):  # (B, 1, 28, 28)
        x = self.pool1(self.act1(self.bn1(self.conv1(x))))  # (B, 6, 12, 12)
        x = self.pool2(self.act2(self.bn2(self.conv2(x))))  # (B, 16, 4, 4)
        x = self.flatten(x)  # (B, 256)
        x = self.act3(self.bn3(self.fc1(x)))  # (B, 120)
        x = self.act4(self.bn4(self.fc2(x)))  # (B, 84)
        return self.fc3(x)  # (B, 10)

    def bn_layers(self):
        """{name: layer} of the BN positions that hold a normalisation layer (empty with norm='none')."""
        return {n: getattr(self, n) for n in BN_LAYERS if not isinstance(getattr(self, n), nn.Identity)}


def init_weights(model, seed):
    """Xavier-uniform conv/linear weights (as the chapter), zero biases, from a private generator.

    Layers are initialised in definition order from one seeded generator and BN layers draw nothing,
    so the same seed gives the same conv/linear weights in every variant.
    """
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight, generator=g)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model


def build_lenet(
    norm="scratch", activation="sigmoid", *, first_padding=0, seed=0, bn_eps=1e-5, bn_momentum=0.1, **options
):
    """LeNet with ``norm`` at bn1..bn4, weights from ``seed``; ``options``: other LeNetConfig fields."""
    config = LeNetConfig(
        norm=norm,
        activation=activation,
        first_padding=first_padding,
        bn_eps=bn_eps,
        bn_momentum=bn_momentum,
        **{"noise_seed": seed, **options},
    )
    return init_weights(LeNet(config), seed)


# The chapter's networks, by their names.
def PlainLeNet(seed=0):
    """LeNet without BN, in the BN layout (no padding): the fair comparison."""
    return build_lenet("none", seed=seed)


def BNLeNetScratch(seed=0):
    return build_lenet("scratch", seed=seed)


def BNLeNet(seed=0):
    return build_lenet("torch", seed=seed)


def ChapterLeNet(seed=0):
    """The chapter's plain LeNet: padding 2 in the first conv (a confound in its BN comparison)."""
    return build_lenet("none", first_padding=2, seed=seed)


def set_bn_bypass(model, bypass):
    """Switch the BN layers of a trained network off (identity) or back on, keeping everything learned.

    The BN modules are set aside, not deleted, so switching back restores them with their gamma, beta and
    running statistics. Returns True if the model has BN layers to switch.
    """
    stash = model.__dict__.setdefault("_bypassed_bn", {})
    if bypass:
        for name, layer in model.bn_layers().items():
            stash[name] = layer
            setattr(model, name, nn.Identity())
    else:
        for name, layer in stash.items():
            setattr(model, name, layer)
        stash.clear()
    return bool(stash) or bool(model.bn_layers())
