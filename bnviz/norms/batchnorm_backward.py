"""The backward pass of Batch Normalization written out, as Ioffe & Szegedy (2015) derive it in Section 3.

``bnviz/norms/batchnorm.py`` normalises with the formula ``Y = gamma * (X - mean) / sqrt(var + eps) + beta``
(``normalize``); ``backward="autograd"`` lets autograd differentiate it, ``backward="paper"`` (the default)
uses ``paper_backward`` below. For one channel, with its m values x_i (over the batch, and over H and W for a
convolution) and dy_i the gradient of the loss with respect to y_i, the paper's six equations are:

    dx_hat_i = dy_i * gamma
    dvar     = sum_i dx_hat_i * (x_i - mean) * -1/2 * (var + eps)^(-3/2)
    dmean    = sum_i dx_hat_i * -1 / sqrt(var + eps)  +  dvar * sum_i -2 * (x_i - mean) / m
    dx_i     = dx_hat_i / sqrt(var + eps)  +  dvar * 2 * (x_i - mean) / m  +  dmean / m
    dgamma   = sum_i dy_i * x_hat_i
    dbeta    = sum_i dy_i

``paper_backward`` is these six lines, one each, in the same order and with the same names; no shortcut.
"""

import torch


def paper_backward(
    dY: torch.Tensor,
    X: torch.Tensor,
    X_hat: torch.Tensor,
    gamma: torch.Tensor,
    mean: torch.Tensor,
    var: torch.Tensor,
    eps: float,
    dims: tuple[int, ...],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dX, dgamma, dbeta) from dY, the paper's six equations; each sum runs over one channel's m values."""
    m = X.numel() // X.shape[1]

    def total(t: torch.Tensor) -> torch.Tensor:
        return t.sum(dim=dims, keepdim=True)  # sum_i over each channel's m values, shaped (1, C) or (1, C, 1, 1)

    dX_hat = dY * gamma
    dvar = total(dX_hat * (X - mean)) * -0.5 * (var + eps) ** -1.5
    dmean = total(dX_hat * -1 / torch.sqrt(var + eps)) + dvar * total(-2 * (X - mean)) / m
    dX = dX_hat / torch.sqrt(var + eps) + dvar * 2 * (X - mean) / m + dmean / m
    dgamma = total(dY * X_hat)
    dbeta = total(dY)
    return dX, dgamma, dbeta
