"""Batches of k classes (bnviz.data.sampling) against their definition, counted on the labels themselves."""

import pytest
import torch

from bnviz.data.fashion_mnist import num_batches
from bnviz.data.sampling import class_skewed_order


def labels(n=2000, seed=0):
    return torch.randint(0, 10, (n,), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("batch_size,k", [(2, 1), (4, 2), (32, 2), (128, 3), (128, 10), (5, 5)])
def test_each_batch_holds_k_classes_in_equal_shares(batch_size, k):
    y = labels()
    n = num_batches(len(y), batch_size)
    order = class_skewed_order(y, batch_size, k, seed=1, epoch=2, num_batches=n)
    assert order.shape == (n * batch_size,) and order.dtype == torch.int64
    for b in order.view(n, batch_size):
        counts = torch.bincount(y[b], minlength=10)
        present = counts[counts > 0]
        assert len(present) == k
        assert present.max() - present.min() <= 1  # equal shares, the remainder one image each


def test_every_image_comes_before_any_comes_twice_and_the_order_is_seeded():
    y = labels(1000)
    n = num_batches(len(y), 10)
    order = class_skewed_order(y, 10, 2, seed=0, epoch=0, num_batches=n)
    for c in range(10):  # within a class, the first pass is a permutation of its images
        mine = order[y[order] == c]
        first = mine[: int((y == c).sum())]
        assert len(set(first.tolist())) == len(first)
    again = class_skewed_order(y, 10, 2, seed=0, epoch=0, num_batches=n)
    other = class_skewed_order(y, 10, 2, seed=0, epoch=1, num_batches=n)
    assert torch.equal(order, again) and not torch.equal(order, other)


def test_k_out_of_range_is_refused():
    for k in (0, 11):
        with pytest.raises(ValueError, match="classes per batch must be 1 to 10"):
            class_skewed_order(labels(), 8, k, num_batches=3)
    with pytest.raises(ValueError, match="fewer than 3 per batch"):
        class_skewed_order(torch.tensor([0, 1, 0, 1]), 2, 3, num_batches=1)


def test_the_training_batches_follow_it_with_as_many_batches_as_iid():
    from bnviz.data.fashion_mnist import batches

    g = torch.Generator().manual_seed(0)
    images, y = torch.randint(0, 256, (300, 28, 28), dtype=torch.uint8, generator=g), labels(300)
    skewed = list(batches(images, y, 16, shuffle=True, seed=3, epoch=1, classes_per_batch=2))
    iid = list(batches(images, y, 16, shuffle=True, seed=3, epoch=1))
    assert len(skewed) == len(iid) == num_batches(300, 16)
    assert all(len(torch.unique(b)) == 2 and len(b) == 16 for _, b in skewed)
    assert max(len(torch.unique(b)) for _, b in iid) > 2
    order = class_skewed_order(y, 16, 2, seed=3, epoch=1, num_batches=len(skewed))
    X, b = skewed[0]
    assert torch.equal(b, y[order[:16]]) and torch.equal(X, images[order[:16]].unsqueeze(1).float() / 255)


def test_settings_refuse_classes_per_batch_out_of_range():
    from bnviz.live.snapshot import Settings

    assert Settings(classes_per_batch=1).classes_per_batch == 1
    for bad in (0, 11):
        with pytest.raises(ValueError, match="classes per batch must be 1 to 10"):
            Settings(classes_per_batch=bad)
