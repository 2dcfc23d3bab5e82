"""scikit-learn's embedded 8×8 handwritten digits as a fairness problem with a known shortcut.

Task: is the digit 5 or above (label 1) or below 5 (label 0)? Group: a synthetic attribute,
"tinted" (1) or "plain" (0): a tinted image has its background (every pixel the scanner left
at 0) lifted to a grey level. The tint is tied to the label on purpose: a positive is tinted
with probability ``tie`` (0.8), a negative with ``1 - tie``. So the tint predicts the label
well on its own, and a model that leans on it misses plain positives (a high false-negative
rate on the plain group) and flags tinted negatives: the group gap a constraint has to close,
much as a camera, a hospital or a background stands in for the label in real image data.

The groups are drawn by a seeded generator from the label alone, so the same ``seed`` gives
the same groups on every machine; the 1,797 images ship inside scikit-learn, nothing is
downloaded.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch.utils.data import Dataset

GROUP_NAMES = ("plain", "tinted")


def tinted_digits_tensors(
    tie: float = 0.8, tint: float = 0.5, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images ``[1797, 1, 8, 8]`` in [0, 1], labels (digit ≥ 5) and groups (tinted or not)."""
    digits = load_digits()
    images = torch.tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)
    labels = torch.tensor(digits.target >= 5, dtype=torch.float32)
    rng = np.random.default_rng(seed)
    chance = np.where(labels.numpy() > 0.5, tie, 1.0 - tie)
    groups = torch.tensor(rng.random(len(labels)) < chance, dtype=torch.int64)
    background = (images == 0) & (groups.view(-1, 1, 1, 1) == 1)
    return images.masked_fill(background, tint), labels, groups


class TintedDigits(Dataset):
    """The same images one at a time, ``(image [1, 8, 8], label, group)``: the streaming path.

    ``labels`` and ``groups`` are attributes too, so ctrain-dist needs no pass over the items
    to split and stratify them.
    """

    def __init__(self, tie: float = 0.8, tint: float = 0.5, seed: int = 0) -> None:
        self.images, self.labels, self.groups = tinted_digits_tensors(tie, tint, seed)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index], self.groups[index]


def tinted_digits(
    tie: float = 0.8, tint: float = 0.5, seed: int = 0, streaming: bool = True
) -> TintedDigits | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``data.factory``: a ``Dataset`` (streamed by DataLoader workers), or with
    ``streaming: false`` the tensors (the in-memory path)."""
    if streaming:
        return TintedDigits(tie, tint, seed)
    return tinted_digits_tensors(tie, tint, seed)
