"""A small CNN for 8×8 images, built by ``model.factory`` (two 3×3 convolutions, one pool)."""

from __future__ import annotations

import torch
from torch import nn


def small_cnn(
    num_features: int,
    num_outputs: int,
    dtype: torch.dtype,
    input_shape: tuple[int, ...],
    channels: int = 8,
) -> nn.Module:
    """``[B, C, H, W]`` images to ``[B, num_outputs]`` logits (H and W even)."""
    colours, height, width = input_shape
    return nn.Sequential(
        nn.Conv2d(colours, channels, 3, padding=1, dtype=dtype),
        nn.ReLU(),
        nn.Conv2d(channels, 2 * channels, 3, padding=1, dtype=dtype),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(2 * channels * (height // 2) * (width // 2), num_outputs, dtype=dtype),
    )
