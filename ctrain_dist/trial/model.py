"""The network a trial trains: the benchmark's ReLU MLP d → hidden… → 1 logit, or the user's
module from ``model.factory``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ctrain_dist.plugins import resolve
from ctrain_dist.spec import ModelSpec


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


def build_model(spec: ModelSpec, num_features: int, dtype: torch.dtype) -> nn.Module:
    """The model ``spec`` names: ``factory(num_features=, num_outputs=1, dtype=, **options)``
    when it has a factory (its parameters then cast to ``dtype``, whatever it built them
    in), else the built-in MLP.

    Raises:
        TypeError: the factory returned something that is not an ``nn.Module``.
    """
    if spec.factory is None:
        return build_mlp(num_features, spec.hidden, dtype)
    factory = resolve(spec.factory)
    model = factory(num_features=num_features, num_outputs=1, dtype=dtype, **spec.options)
    if not isinstance(model, nn.Module):
        raise TypeError(f"returned a {type(model).__name__}, not a torch.nn.Module")
    return model.to(dtype)
