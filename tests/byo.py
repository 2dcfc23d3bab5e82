"""A user's own model, data and constraint, as source written outside the package.

Tests write :data:`USER_SOURCE` into a temporary folder (``user_module``), so the code is
found the way a user's is: by import path, from a folder on ``sys.path`` / ``PYTHONPATH``.
"""

from __future__ import annotations

from pathlib import Path

MODULE = "mylab_data"
USER_SOURCE = '''
"""A lab's images, model and constraint, outside ctrain_dist."""
import torch
from torch import nn
from torch.nn import functional
from torch.utils.data import Dataset

from ctrain_dist.constraints import Constraint


def blobs(rows=400, seed=0, flat=False):
    """Tiny 1x4x4 "images": the label and the group both shift the pixels."""
    g = torch.Generator().manual_seed(seed)
    groups = (torch.rand(rows, generator=g) < 0.3).long()
    labels = (torch.rand(rows, generator=g) < 0.4 + 0.3 * groups).float()
    shift = (labels + 0.5 * groups).view(-1, 1, 1, 1)
    x = torch.randn(rows, 1, 4, 4, generator=g) + shift
    return (x.flatten(1) if flat else x), labels, groups


def with_splits(rows=400):
    x, y, g = blobs(rows)
    order = torch.arange(rows)
    return x, y, g, {"train": order[::2], "val": order[1::4], "test": order[3::4]}


class Blobs(Dataset):
    """The same rows, one item at a time; ``attributes`` also exposes labels and groups."""

    def __init__(self, rows=400, attributes=False):
        self.x, self.y, self.g = blobs(rows)
        if attributes:
            self.labels, self.groups = self.y, self.g

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i], self.g[i]


def streamed(rows=400, attributes=False):
    return Blobs(rows, attributes)


def cnn(num_features, num_outputs, dtype, input_shape, width=4):
    return nn.Sequential(
        nn.Conv2d(input_shape[0], width, 3, padding=1, dtype=dtype),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(width * num_features // input_shape[0], num_outputs, dtype=dtype),
    )


class MeanLoss(Constraint):
    """Mean loss at most the bound; statistics [sum of w * loss, sum of w] add up."""

    kind, num_values, num_statistics = "mean_loss", 1, 2

    def __init__(self, bound, num_groups, decide_on="strict"):
        super().__init__(bound, decide_on)

    def statistics(self, logits, labels, groups, weights=None, losses=None):
        w = torch.ones_like(logits) if weights is None else weights.to(logits.dtype)
        if losses is None:
            losses = functional.binary_cross_entropy_with_logits(logits, labels, reduction="none")
        return torch.stack([(w * losses).sum(), w.sum()])

    def value(self, stats, strict=False):
        return (stats[0] / stats[1]).reshape(1) - self.bound

    def names(self, group_names):
        return [f"mean_loss<={self.bound:g}"]


# Factories that break the contract, one way each.
def raising():
    raise RuntimeError("no image folder here")


def a_dict():
    return {"x": blobs()[0]}


def float_groups():
    x, y, g = blobs()
    return x, y, g.float()


def labels_of_two():
    x, y, g = blobs()
    return x, y * 2, g


def short_groups():
    x, y, g = blobs()
    return x, y, g[:-1]


def one_group():
    x, y, g = blobs()
    return x, y, torch.zeros_like(g)


def overlapping_splits():
    x, y, g, splits = with_splits()
    return x, y, g, {**splits, "test": splits["val"]}


class Pairs(Blobs):
    def __getitem__(self, i):
        return self.x[i], self.y[i]


def pairs():
    return Pairs()


class Disagreeing(Blobs):
    def __init__(self):
        super().__init__(attributes=True)
        self.labels = 1 - self.labels


def disagreeing():
    return Disagreeing()
'''


def write_user_module(folder: Path) -> Path:
    """The user's module in ``folder`` (made if needed); returns the file."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{MODULE}.py"
    path.write_text(USER_SOURCE)
    return path
