"""Batches that hold only k of the 10 classes: the non-i.i.d. batches under which BN's statistics go wrong.

BN normalizes each batch with the batch's own mean and variance, and at test time with running averages of
them. When every batch is a fair sample of the data (i.i.d., k = 10) the two agree; when each batch holds
only a few classes (k = 1 or 2), a batch's statistics describe those classes, not the data, and the running
averages describe no batch the network ever saw. Batch Renormalization (Ioffe, 2017) studies this case.

    class_skewed_order(labels, batch_size=4, k=2)      batch 1: [7 7 2 2]   batch 2: [0 0 5 5]   ...

Each batch picks k classes at random and takes an equal share of its images from each (the first
``batch_size % k`` classes one more). Every class's images come in a shuffled order and start again, newly
shuffled, when they run out. An epoch has as many batches as an i.i.d. epoch, so lanes are compared at the
same steps; the order is drawn from (seed, epoch), like the i.i.d. order, so every lane sees the same batches.
"""

import torch

NUM_CLASSES = 10


def class_skewed_order(labels, batch_size, k, *, seed=0, epoch=0, num_batches):
    """Indices into ``labels`` for ``num_batches`` batches of ``batch_size``, each from k classes only.

    labels: (N,) int64 on any device. Returns (num_batches * batch_size,) int64 on the CPU.
    """
    if not 1 <= k <= NUM_CLASSES:
        raise ValueError(f"classes per batch must be 1 to {NUM_CLASSES}, got {k}")
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    labels = labels.cpu()
    classes = [c for c in range(NUM_CLASSES) if (labels == c).any()]
    if len(classes) < k:
        raise ValueError(f"the data holds {len(classes)} classes, fewer than {k} per batch")
    pools = {c: torch.nonzero(labels == c).flatten() for c in classes}
    queue = {c: pools[c][torch.randperm(len(pools[c]), generator=g)] for c in classes}
    used = dict.fromkeys(classes, 0)
    share = [batch_size // k + (1 if i < batch_size % k else 0) for i in range(k)]

    def take(c, m):
        parts = []
        while m > 0:
            if used[c] == len(queue[c]):  # this class ran out: its images again, newly shuffled
                queue[c], used[c] = pools[c][torch.randperm(len(pools[c]), generator=g)], 0
            got = queue[c][used[c] : used[c] + m]
            used[c] += len(got)
            m -= len(got)
            parts.append(got)
        return parts

    order = []
    for _ in range(num_batches):
        chosen = torch.randperm(len(classes), generator=g)[:k].tolist()
        for i, m in zip(chosen, share):
            order += take(classes[i], m)
    return torch.cat(order) if order else torch.zeros(0, dtype=torch.int64)
