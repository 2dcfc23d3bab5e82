r"""SGD, heavy ball, Adam and AdamW with one set of settings per packed member.

``torch.optim`` takes one learning rate (and one momentum, one pair of betas, ...) per
parameter group, and a pack's members share every parameter tensor (stacked on the leading
dimension, ``trial/packed.py``), so a pack whose members differ in a primal optimiser setting
cannot use it. These optimisers do the same arithmetic as ``torch.optim``'s single-tensor
implementations, operation for operation, with each setting either a Python number (shared)
or a ``[K]`` tensor broadcast over the member dimension; each member's slice therefore moves
exactly as ``torch.optim`` would move it alone, to rounding (``tests/test_config_packing.py``):

* SGD with L2 weight decay :math:`\omega` and heavy-ball momentum :math:`\beta`:
  :math:`g \leftarrow g + \omega x`, :math:`v \leftarrow \beta v + g` (:math:`v_0 = g_0`),
  :math:`x \leftarrow x - \tau v`; a member with :math:`\beta = 0` gets :math:`v = g`, as
  torch's SGD without momentum.
* Adam (Kingma & Ba 2015) with L2 decay, or AdamW (Loshchilov & Hutter 2019) with decoupled
  decay :math:`x \leftarrow (1 - \tau\omega) x`: :math:`m \leftarrow m + (1 - \beta_1)(g - m)`,
  :math:`s \leftarrow \beta_2 s + (1 - \beta_2) g^2`, :math:`x \leftarrow x - \frac{\tau}{1 -
  \beta_1^t} \frac{m}{\sqrt{s} / \sqrt{1 - \beta_2^t} + \epsilon}`.

Used only when the members disagree on a setting (``primal.py``); one model, and seeds of one
configuration, keep ``torch.optim`` and its trajectories bit for bit. Nothing is read on the
host: the step count is a Python number and every per-member value lives on the device.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

Setting = float | torch.Tensor
"""A shared value, or one value per member (``[K]``)."""


def _shaped(value: Setting, like: torch.Tensor) -> Setting:
    """``value`` shaped to broadcast against a stacked ``[K, ...]`` tensor."""
    if isinstance(value, torch.Tensor):
        return value.reshape(-1, *([1] * (like.ndim - 1)))
    return value


class MemberOptimizer:
    """The primal step of ``kind`` (``sgd``, ``momentum``, ``adam``, ``adamw``) over stacked
    parameters, with settings ``lr``, ``weight_decay`` and, by kind, ``momentum`` or
    ``beta1``, ``beta2``, ``eps``; ``torch.optim``'s ``step``/``zero_grad``/``state_dict``."""

    def __init__(
        self, params: Sequence[torch.nn.Parameter], kind: str, settings: Mapping[str, Setting]
    ) -> None:
        self.params = list(params)
        self.kind = kind
        self.settings = dict(settings)
        self.steps = 0
        zeros = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        self.buffers: dict[str, list[torch.Tensor]] = {}
        if kind in ("adam", "adamw"):
            self.buffers = {"exp_avg": zeros, "exp_avg_sq": [z.clone() for z in zeros]}
        elif kind == "momentum":
            self.buffers = {"momentum": zeros}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        self.steps += 1
        if self.kind in ("adam", "adamw"):
            self._adam()
        else:
            self._sgd()

    def _sgd(self) -> None:
        lr, decay = self.settings["lr"], self.settings["weight_decay"]
        momentum = self.settings.get("momentum")
        for index, p in enumerate(self.params):
            if p.grad is None:
                continue
            grad = p.grad
            if _nonzero(decay):
                grad = grad + p * _shaped(decay, p)
            if momentum is not None:
                # v0 = 0 makes the first step v = g, torch's clone of the first gradient
                grad = self.buffers["momentum"][index].mul_(_shaped(momentum, p)).add_(grad)
            p.addcmul_(grad, _shaped(lr, p), value=-1)

    def _adam(self) -> None:
        settings = self.settings
        lr, decay, eps = settings["lr"], settings["weight_decay"], settings["eps"]
        beta1, beta2 = settings["beta1"], settings["beta2"]
        step_size = lr / (1 - beta1**self.steps)
        root_correction = (1 - beta2**self.steps) ** 0.5
        for index, p in enumerate(self.params):
            if p.grad is None:
                continue
            grad = p.grad
            if _nonzero(decay) and self.kind == "adamw":
                p.mul_(1 - _shaped(lr, p) * _shaped(decay, p))
            elif _nonzero(decay):
                grad = grad + p * _shaped(decay, p)
            exp_avg = self.buffers["exp_avg"][index]
            exp_avg_sq = self.buffers["exp_avg_sq"][index]
            exp_avg.lerp_(grad, 1 - _shaped(beta1, p))
            exp_avg_sq.mul_(_shaped(beta2, p)).addcmul_(grad * (1 - _shaped(beta2, p)), grad)
            denom = (exp_avg_sq.sqrt() / _shaped(root_correction, p)).add_(_shaped(eps, p))
            p.addcmul_(exp_avg / denom, _shaped(step_size, p), value=-1)

    def state_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "buffers": {name: [b.clone() for b in bs] for name, bs in self.buffers.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = int(state["steps"])
        for name, saved in state["buffers"].items():
            self.buffers[name] = [
                s.to(device=b.device, dtype=b.dtype).clone()
                for b, s in zip(self.buffers[name], saved, strict=True)
            ]


def _nonzero(value: Setting) -> bool:
    """Whether a decay term is there at all (a per-member tensor always is: some member's
    value is non-zero, and ``g + 0·x`` is ``g`` for the others)."""
    return isinstance(value, torch.Tensor) or value != 0
