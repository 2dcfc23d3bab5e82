"""The network a trial trains: the benchmark's ReLU MLP d → hidden… → 1 logit, or the user's
module from ``model.factory``."""

from __future__ import annotations

import inspect
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


def takes_input_shape(factory: object) -> bool:
    """Whether a factory declares ``input_shape`` (older factories need not know of it)."""
    try:
        return "input_shape" in inspect.signature(factory).parameters  # type: ignore[arg-type]
    except (TypeError, ValueError):  # no signature to read (a builtin, say)
        return False


def build_model(
    spec: ModelSpec,
    num_features: int,
    dtype: torch.dtype,
    input_shape: tuple[int, ...] | None = None,
) -> nn.Module:
    """The model ``spec`` names: ``factory(num_features=, num_outputs=1, dtype=, **options)``
    when it has a factory (its parameters then cast to ``dtype``, whatever it built them
    in), else the built-in MLP. A factory with an ``input_shape`` parameter is also given
    one row's shape (``(1, 8, 8)`` for images; ``num_features`` is its product).

    Raises:
        TypeError: the factory returned something that is not an ``nn.Module``.
    """
    if spec.factory is None:
        return build_mlp(num_features, spec.hidden, dtype)
    factory = resolve(spec.factory)
    shape = {"input_shape": input_shape or (num_features,)} if takes_input_shape(factory) else {}
    model = factory(num_features=num_features, num_outputs=1, dtype=dtype, **shape, **spec.options)
    if not isinstance(model, nn.Module):
        raise TypeError(f"returned a {type(model).__name__}, not a torch.nn.Module")
    return model.to(dtype)
