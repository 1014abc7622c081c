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
"""

from dataclasses import dataclass

import torch
from torch import nn

from .batchnorm import BatchNorm

NORMS = ("none", "scratch", "torch")
ACTIVATIONS = ("sigmoid", "relu")
BN_LAYERS = ("bn1", "bn2", "bn3", "bn4")  # where BN sits (or would sit)
BN_INPUTS = ("conv1", "conv2", "fc1", "fc2")  # the layer whose output enters each BN
BN_ACTIVATIONS = ("act1", "act2", "act3", "act4")  # the activation after each BN


@dataclass(frozen=True)
class LeNetConfig:
    norm: str = "scratch"  # none | scratch (ours) | torch (nn.BatchNorm1d/2d)
    activation: str = "sigmoid"  # sigmoid (the chapter) | relu
    first_padding: int = 0  # the chapter's plain LeNet pads the first conv by 2
    num_classes: int = 10
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1

    def __post_init__(self):
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {self.norm!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")


def norm_layer(config, num_features, num_dims):
    """The BN layer for one position: ours, torch's, or nothing."""
    if config.norm == "scratch":
        return BatchNorm(num_features, num_dims, eps=config.bn_eps, momentum=config.bn_momentum)
    if config.norm == "torch":
        cls = nn.BatchNorm2d if num_dims == 4 else nn.BatchNorm1d
        return cls(num_features, eps=config.bn_eps, momentum=config.bn_momentum)
    return nn.Identity()


def activation_layer(config):
    return nn.Sigmoid() if config.activation == "sigmoid" else nn.ReLU()


class LeNet(nn.Module):
    def __init__(self, config=LeNetConfig()):
        super().__init__()
        self.config = c = config
        side = (28 + 2 * c.first_padding - 4) // 2  # after conv1 and pool1: 12 (or 14 with padding 2)
        side = (side - 4) // 2  # after conv2 and pool2: 4 (or 5)
        self.conv1 = nn.Conv2d(1, 6, kernel_size=5, padding=c.first_padding)
        self.bn1, self.act1, self.pool1 = norm_layer(c, 6, 4), activation_layer(c), nn.AvgPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, kernel_size=5)
        self.bn2, self.act2, self.pool2 = norm_layer(c, 16, 4), activation_layer(c), nn.AvgPool2d(2, 2)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(16 * side * side, 120)
        self.bn3, self.act3 = norm_layer(c, 120, 2), activation_layer(c)
        self.fc2 = nn.Linear(120, 84)
        self.bn4, self.act4 = norm_layer(c, 84, 2), activation_layer(c)
        self.fc3 = nn.Linear(84, c.num_classes)

    def forward(self, x):  # (B, 1, 28, 28)
        x = self.pool1(self.act1(self.bn1(self.conv1(x))))  # (B, 6, 12, 12)
        x = self.pool2(self.act2(self.bn2(self.conv2(x))))  # (B, 16, 4, 4)
        x = self.flatten(x)  # (B, 256)
        x = self.act3(self.bn3(self.fc1(x)))  # (B, 120)
        x = self.act4(self.bn4(self.fc2(x)))  # (B, 84)
        return self.fc3(x)  # (B, 10)

    def bn_layers(self):
        """{name: layer} of the BN positions that hold a BN layer (empty with norm='none')."""
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
            nn.init.zeros_(m.bias)
    return model


def build_lenet(norm="scratch", activation="sigmoid", *, first_padding=0, seed=0, bn_eps=1e-5, bn_momentum=0.1):
    config = LeNetConfig(
        norm=norm, activation=activation, first_padding=first_padding, bn_eps=bn_eps, bn_momentum=bn_momentum
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
