"""The network a trial trains: the benchmark's ReLU MLP d → hidden… → 1 logit."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def build_mlp(num_features: int, hidden: Sequence[int], dtype: torch.dtype) -> nn.Module:
    """A ReLU MLP with one output logit, default (Kaiming-uniform) initialisation.

    Initialisation draws from torch's global generator, which ``learner.trial_model`` seeds
    per trial.
    """
    layers: list[nn.Module] = []
    width = num_features
    for out in hidden:
        layers += [nn.Linear(width, out, dtype=dtype), nn.ReLU()]
        width = out
    layers.append(nn.Linear(width, 1, dtype=dtype))
    return nn.Sequential(*layers)
