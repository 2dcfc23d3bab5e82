"""The one in-memory form every dataset is turned into.

Why tensors and index splits: minibatches are index gathers on the device (DESIGN.md,
performance principles), so a dataset is three aligned tensors plus index tensors per split,
never a per-sample ``Dataset``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

SPLITS: tuple[str, ...] = ("train", "val", "test")


@dataclass(frozen=True)
class TabularData:
    """Features, labels and group ids of every row, with the rows of each split.

    Invariants: ``features`` is float32 ``[n, d]`` (a user's ``data.factory`` may give rows
    of any shape, ``[n, *input_shape]``) already standardised with statistics fitted
    on the train split only; ``labels`` is float32 ``[n]`` in {0, 1}; ``groups`` is int64 ``[n]``
    in ``0..len(group_names)-1``; ``splits`` maps each of ``SPLITS`` to a sorted int64 index
    tensor, the three disjoint and covering ``0..n-1``.
    """

    name: str
    features: torch.Tensor
    labels: torch.Tensor
    groups: torch.Tensor
    feature_names: tuple[str, ...]
    group_names: tuple[str, ...]
    splits: dict[str, torch.Tensor]

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One row's shape: ``(d,)`` for a table, e.g. ``(1, 8, 8)`` for a user's images."""
        return tuple(self.features.shape[1:])

    @property
    def num_features(self) -> int:
        """Values per row (the product of :attr:`input_shape`)."""
        return math.prod(self.input_shape)

    @property
    def num_groups(self) -> int:
        return len(self.group_names)

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Features, labels and groups of one split (copies made by index gather)."""
        index = self.splits[name]
        return self.features[index], self.labels[index], self.groups[index]

    def to(self, dtype: torch.dtype | None = None, device: torch.device | str | None = None):
        """The same data with features (and labels) cast to ``dtype`` and moved to ``device``."""
        feature_dtype = dtype or self.features.dtype
        target = torch.device(device) if device is not None else self.features.device

        def move(tensor: torch.Tensor, cast: torch.dtype | None = None) -> torch.Tensor:
            tensor = tensor.to(dtype=cast) if cast is not None else tensor
            if target.type == "cuda" and tensor.device.type == "cpu":
                # Pinned host memory lets the copy run asynchronously at full bandwidth.
                return tensor.pin_memory().to(target, non_blocking=True)
            return tensor.to(target)

        return TabularData(
            name=self.name,
            features=move(self.features, feature_dtype),
            labels=move(self.labels, feature_dtype),
            groups=move(self.groups),
            feature_names=self.feature_names,
            group_names=self.group_names,
            splits={k: move(v) for k, v in self.splits.items()},
        )
