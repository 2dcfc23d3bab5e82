"""The hyperparameters of a pack's members: shared values as on one model, differing ones apart.

A pack (``trial/packed.py``) trains K members as one computation: seeds of one configuration,
and, with ``configurations_per_trial``, configurations of one algorithm that differ only in
scalar hyperparameters (step sizes, ρ, μ, ...). One algorithm object steps them all, so a
hyperparameter the members disagree on cannot be a Python number: it becomes a ``[K]`` tensor,
one value per member, broadcast against the stacked ``[K, ...]`` parameters and duals, and
every elementwise operation then computes for each member what it computes alone.

Which hyperparameters may differ is the algorithm's declaration
(``Algorithm.member_hyperparameters``): the scalars its step reads through
``Algorithm.hyper``. Everything else (choices, counts, shapes, bounds of the dual box) must be
equal across a pack, since it changes shapes or control flow. :class:`MemberHyperparameters`
enforces the split at run time: reading a differing value as a plain attribute raises, so a
step that forgot the accessor fails at once instead of training every member with the first
member's value.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from pydantic import BaseModel


def differing_fields(members: Sequence[BaseModel]) -> frozenset[str]:
    """The fields whose values are not the same in every member."""
    first = members[0]
    return frozenset(
        name
        for name in type(first).model_fields
        if any(getattr(member, name) != getattr(first, name) for member in members[1:])
    )


class MemberHyperparameters:
    """A pack's hyperparameters read as one model's: a shared field gives its value, a field
    the members disagree on raises (read it through ``Algorithm.hyper``)."""

    def __init__(self, members: Sequence[BaseModel], differing: Iterable[str]) -> None:
        self.members = tuple(members)
        self.differing = frozenset(differing)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("members", "differing"):
            raise AttributeError(name)  # copy and pickle probe before __init__ has run
        if name in self.differing:
            raise AttributeError(
                f"{name} differs between the packed members; read it with hyper({name!r})"
            )
        return getattr(self.members[0], name)

    def values(self, name: str) -> list[Any]:
        """Every member's value of ``name``, in pack order."""
        return [getattr(member, name) for member in self.members]


def member_tensor(
    values: Sequence[float], device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """``[K]`` per-member values on ``device``: one host copy when the algorithm is built,
    never during a step. A ``None`` among them (an optional setting left unset) cannot
    become a number; ``spec.pack_trials`` never packs it beside a set one."""
    if any(value is None for value in values):
        raise ValueError("a setting unset in some members and set in others cannot be packed")
    return torch.tensor([float(value) for value in values], dtype=dtype).to(device)
