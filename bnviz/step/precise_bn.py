"""Recompute BN's statistics ("PreciseBN", Wu & Johnson 2021): running averages that fit the weights as they are.

During training, BN's running mean and variance are exponential moving averages over the last ~1/momentum
batches, each batch seen by slightly different weights. At test time they stand in for the statistics of the
whole data under the final weights; where they are off (a high learning rate, small or skewed batches), the
network in eval mode is not the network that was trained. PreciseBN freezes the weights and re-estimates the
statistics as a plain average over many training batches:

    for each of K batches (train mode, weights frozen):    mean_k, var_k = the batch's statistics at each layer
    running_mean = (1/K) sum_k mean_k                        running_var = (1/K) sum_k var_k

The batch statistics are read through the layer's own update rule: with momentum 1, ``(1 - m) * running +
m * batch`` is the batch's own statistic (the unbiased variance, as the layer keeps it), so this works for
every layer in bnviz that keeps running statistics, ours and torch's, without knowing their formulas.
"""

import torch

from bnviz.data.fashion_mnist import batches
from bnviz.step.training import STATISTICS  # the running-statistics buffers' names, torch's and ours


def layers_with_statistics(model):
    """[(layer, [buffer names])] for every layer that keeps running statistics and a momentum."""
    found = []
    for m in model.modules():
        names = [n for n in STATISTICS if isinstance(getattr(m, n, None), torch.Tensor)]
        if names and getattr(m, "momentum", None) is not None:
            found.append((m, names))
    return found


@torch.no_grad()
def recompute_statistics(model, images, labels, batch_size, num_batches=200, seed=0):
    """Replace every running mean and variance by its average over ``num_batches`` training batches.

    The weights do not change, nor anything else train mode would touch (a renorm layer's step counter, a
    noisy layer's random state). Returns the number of batches averaged (fewer if the data runs out).
    """
    layers = layers_with_statistics(model)
    if not layers:
        return 0
    others = {n: b.clone() for n, b in model.named_buffers()}  # put back, except the statistics recomputed
    generators = [m.generator for m in model.modules() if isinstance(getattr(m, "generator", None), torch.Generator)]
    states = [g.get_state() for g in generators]
    momenta = [m.momentum for m, _ in layers]
    sums = [{n: torch.zeros_like(getattr(m, n)) for n in names} for m, names in layers]
    was_training = model.training
    model.train()
    count = 0
    try:
        for m, _ in layers:
            m.momentum = 1.0
        order = batches(images, labels, batch_size, shuffle=True, seed=seed, epoch=2**20)  # an epoch of its own
        for X, _ in order:
            if count == num_batches:
                break
            model(X)
            for (m, names), total in zip(layers, sums):
                for n in names:
                    total[n] += getattr(m, n)
            count += 1
    finally:
        for (m, _), momentum in zip(layers, momenta):
            m.momentum = momentum
        model.train(was_training)
        recomputed = {id(getattr(m, n)) for m, names in layers for n in names}
        for n, b in model.named_buffers():
            if id(b) not in recomputed:
                b.copy_(others[n])
        for g, state in zip(generators, states):
            g.set_state(state)
    names_of = {id(b): n for n, b in model.named_buffers()}
    for (m, names), total in zip(layers, sums):
        for n in names:
            buffer = getattr(m, n)
            buffer.copy_(total[n] / count if count else others[names_of[id(buffer)]])
    return count
