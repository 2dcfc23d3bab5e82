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
counters) is part of the algorithm's ``state_dict`` as ``optimizer``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import torch
from pydantic import Field, ValidationInfo, field_validator

from ctrain_dist.algorithms.base import Hyperparameters

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


def primal_optimizer(
    params: Iterable[torch.nn.Parameter], hp: PrimalHyperparameters
) -> torch.optim.Optimizer:
    """The torch optimiser ``hp.primal`` over ``params`` with ``hp``'s settings."""
    if hp.primal in ("sgd", "momentum"):
        momentum = hp.momentum if hp.primal == "momentum" else 0.0
        return torch.optim.SGD(params, lr=hp.lr, momentum=momentum, weight_decay=hp.weight_decay)
    adam = torch.optim.Adam if hp.primal == "adam" else torch.optim.AdamW
    return adam(
        params, lr=hp.lr, betas=(hp.beta1, hp.beta2), eps=hp.eps, weight_decay=hp.weight_decay
    )
