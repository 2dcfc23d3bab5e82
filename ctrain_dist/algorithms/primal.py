r"""The primal step of the gradient-based constrained algorithms: a torch optimiser.

ALM, SSL-ALM, νPI, PBM and the penalty baseline each compute a primal *direction*, the gradient
:math:`g^k` of their Lagrangian, augmented Lagrangian, barrier or penalty at :math:`x^k` (SSL-ALM's
includes the smoothing term :math:`\mu(x^k - z^k)`), into the parameters' ``.grad``. The step
that follows is chosen by the hyperparameter ``primal``, as humancompatible.train and Cooper
let any ``torch.optim`` optimiser take it:

* ``sgd``: :math:`x^{k+1} = x^k - \tau g^k` (the default: the papers' step);
* ``momentum``: heavy ball, :math:`v^{k+1} = \beta v^k + g^k`, :math:`x^{k+1} = x^k - \tau
  v^{k+1}` (``torch.optim.SGD`` with ``momentum`` β);
* ``adam`` / ``adamw``: Kingma & Ba (2015) with ``beta1``, ``beta2``, ``eps``; AdamW
  (Loshchilov & Hutter 2019) decouples ``weight_decay`` from the moments.

``weight_decay`` is an L2 term added to :math:`g^k` for ``sgd``, ``momentum`` and ``adam``, and
decoupled decay for ``adamw``; its default 0 leaves the problem what the spec says. A setting
that the chosen ``primal`` does not read (``momentum`` with ``adam``, ``beta1`` with
``sgd``) is refused rather than ignored, so no two trial ids name the same run.

What the analyses cover: each paper's guarantee is for ``sgd`` (SSL-ALM: Huang, Zhang &
Alacaoglu's linearised step; ALM and νPI: gradient descent-ascent; PBM: any inner solver that
minimises the penalty-barrier function, SGD in the stochastic single-loop form; the penalty:
any method minimising a fixed objective). νPI's paper and Cooper train the primal with
momentum and Adam in practice, as the Folktables benchmark does; the others are heuristics
there, swept like any other hyperparameter. The switching subgradient method (its step size
is the switch) and Stochastic Ghost (an SQP direction, not a gradient) take no ``primal``.

Packed seeds (``base``): SGD, momentum, Adam and AdamW act elementwise with scalar
hyperparameters, so over stacked ``[K, ...]`` parameters each seed's slice is updated exactly
as it would be alone. Host work: none of the device's. Adam's step counter is a CPU tensor by
torch's design (``capturable=False``, the default), read on the host without waiting for the
device; ``capturable=True`` would move it to the device for CUDA-graph capture only, at the cost
of extra kernels a step, so it is not set. The optimiser's state (momentum buffers, moments,
counters) is part of the algorithm's ``state_dict`` as ``optimizer``. A step compiled whole
(``training.compile``) takes the same step through ``functional_primal.FunctionalOptimizer``,
tensor arithmetic on this optimiser's state, which Dynamo can trace into the step's graph.

Packed configurations (``base``): members whose settings differ (``lr``, ``momentum``,
``beta1``, ``beta2``, ``eps``, ``weight_decay``: ``PRIMAL_MEMBER_HYPERPARAMETERS``) cannot share
one ``torch.optim`` optimiser, which takes one value per parameter group; they get
``member_optimizers.MemberOptimizer``, the same arithmetic with a ``[K]`` tensor per differing
setting. Members that agree, and one model, keep ``torch.optim`` (:func:`optimizer_for`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import torch
from pydantic import Field, ValidationInfo, field_validator

from ctrain_dist.algorithms.base import Hyperparameters
from ctrain_dist.algorithms.member_optimizers import MemberOptimizer
from ctrain_dist.algorithms.members import member_tensor
from ctrain_dist.algorithms.plain_sgd import PlainSGD

Primal = Literal["sgd", "momentum", "adam", "adamw"]

_READ_BY: dict[str, tuple[str, ...]] = {
    "momentum": ("momentum",),
    "beta1": ("adam", "adamw"),
    "beta2": ("adam", "adamw"),
    "eps": ("adam", "adamw"),
}
"""The settings that only some primal optimisers read, and which."""


class PrimalHyperparameters(Hyperparameters):
    """The primal optimiser's choice and settings, shared by the algorithms that take one."""

    lr: float = Field(0.05, gt=0, description="primal step size τ")
    primal: Primal = Field(
        "sgd", description="primal step over the computed gradient: sgd, momentum, adam, adamw"
    )
    momentum: float = Field(0.9, gt=0, lt=1, description="heavy-ball momentum (primal: momentum)")
    beta1: float = Field(0.9, ge=0, lt=1, description="first-moment decay (primal: adam, adamw)")
    beta2: float = Field(0.999, ge=0, lt=1, description="second-moment decay (primal: adam, adamw)")
    eps: float = Field(1e-8, gt=0, description="denominator guard (primal: adam, adamw)")
    weight_decay: float = Field(
        0.0, ge=0, description="L2 term in the gradient; decoupled decay for adamw"
    )

    @field_validator(*_READ_BY)
    @classmethod
    def _read_by_the_chosen_primal(cls, value: float, info: ValidationInfo) -> float:
        """Runs on given values only (defaults are not validated), after ``primal``, which is
        declared first; an invalid ``primal`` is reported on its own."""
        primal = info.data.get("primal")
        if primal is not None and primal not in _READ_BY[info.field_name]:
            readers = " or ".join(_READ_BY[info.field_name])
            raise ValueError(f"{info.field_name} is read by primal {readers}, not by {primal}")
        return value


PRIMAL_MEMBER_HYPERPARAMETERS = frozenset(
    {"lr", "momentum", "beta1", "beta2", "eps", "weight_decay"}
)
"""The primal settings a pack's members may disagree on (``base.Algorithm.hyper``): all of
them act elementwise, so over stacked parameters they can be one value per member."""

_SETTINGS: dict[str, tuple[str, ...]] = {
    "sgd": ("lr", "weight_decay"),
    "momentum": ("lr", "momentum", "weight_decay"),
    "adam": ("lr", "beta1", "beta2", "eps", "weight_decay"),
    "adamw": ("lr", "beta1", "beta2", "eps", "weight_decay"),
}
"""What each optimiser reads."""
_TORCH_DEFAULTS = {"eps": 1e-8, "weight_decay": 0.0}
"""``torch.optim``'s values of the settings a baseline's model has no field for."""


def primal_optimizer(
    params: Iterable[torch.nn.Parameter], hp: PrimalHyperparameters
) -> torch.optim.Optimizer | MemberOptimizer:
    """The torch optimiser ``hp.primal`` over ``params`` with ``hp``'s settings."""
    return optimizer_for(params, hp.primal, hp)


def optimizer_for(
    params: Iterable[torch.nn.Parameter], kind: Primal, hp: Hyperparameters
) -> torch.optim.Optimizer | MemberOptimizer:
    """Optimiser ``kind`` over ``params`` with the settings ``hp`` holds (``lr``,
    ``weight_decay`` and the kind's own; torch's default for one it lacks).

    ``hp`` of a pack whose members disagree on one of those settings
    (``members.MemberHyperparameters``) gives a :class:`MemberOptimizer` with that setting
    per member; otherwise the ``torch.optim`` optimiser, as for one model.
    """
    params = list(params)
    names = _SETTINGS[kind]
    differing = getattr(hp, "differing", frozenset()) & set(names)
    if differing:
        settings = {
            name: _member_values(hp, name, params[0]) if name in differing else _read(hp, name)
            for name in names
        }
        return MemberOptimizer(params, kind, settings)
    read = {name: _read(hp, name) for name in names}
    if kind in ("sgd", "momentum"):
        return PlainSGD(  # torch.optim.SGD, faster without momentum or decay (plain_sgd.py)
            params,
            lr=read["lr"],
            momentum=read.get("momentum", 0.0),
            weight_decay=read["weight_decay"],
        )
    adam = torch.optim.Adam if kind == "adam" else torch.optim.AdamW
    return adam(
        params,
        lr=read["lr"],
        betas=(read["beta1"], read["beta2"]),
        eps=read["eps"],
        weight_decay=read["weight_decay"],
    )


def _read(hp: Hyperparameters, name: str) -> float:
    """A setting every member shares (a differing one is never read here: it would raise)."""
    return getattr(hp, name, _TORCH_DEFAULTS.get(name))


def _member_values(hp: Hyperparameters, name: str, like: torch.Tensor) -> torch.Tensor:
    """The members' values of ``name`` as a ``[K]`` tensor on ``like``'s device and dtype."""
    return member_tensor(hp.values(name), like.device, like.dtype)  # type: ignore[attr-defined]
