r"""A ``torch.optim`` primal step that ``torch.compile`` can trace inside a whole step.

Why: a compiled step (``trial/compiled.py``) is one graph only when everything in it is plain
tensor arithmetic. ``torch.optim.Optimizer.step`` is not: Dynamo breaks the graph around it
(its ``_use_grad``) and guards it by the optimiser's identity, so every trial's new optimiser
would compile again. :class:`FunctionalOptimizer` stands in for the optimiser in a compiled
step: the same update (``SGD`` with or without momentum, ``Adam``, ``AdamW``) written as tensor
arithmetic on the optimiser's own state tensors (momentum buffers, moments, step counters),
updated in place. The optimiser stays the owner of that state, so ``state_dict`` is the
optimiser's, byte for byte, and a run resumes across compiled and eager steps either way.

The arithmetic is torch's single-tensor path (``torch.optim.sgd._single_tensor_sgd``,
``torch.optim.adam._single_tensor_adam``, non-capturable), the one eager CPU steps take, in
the same order, equal to rounding. Two differences: the settings (``lr``, betas, ``eps``,
``weight_decay``, momentum) are 0-dim tensors on the device, so that they are graph inputs
rather than constants Dynamo guards on (a sweep over ``lr`` then shares one compiled step,
where a number would compile once per value), and Adam's bias corrections are computed on the
device from the step counter in float64 rather than on the host from ``step.item()`` (a host
read would break the graph; float64 keeps them what the host's Python floats are).

Supported: one parameter group; no ``nesterov``, ``dampening``, ``amsgrad``, ``maximize``,
``fused`` or tensor learning rate, the settings ``primal.optimizer_for`` never makes. The
state must exist (the optimiser has stepped once: torch builds it lazily), which is why a
compiled step's first step runs eagerly. :func:`functional_optimizer` returns None otherwise,
and the caller keeps the optimiser.
"""

from __future__ import annotations

from typing import Any

import torch

_REFUSED = ("nesterov", "amsgrad", "maximize", "fused", "differentiable", "capturable")
"""Settings whose branch this module does not write; true in a group means no stand-in."""


def functional_optimizer(optimizer: Any) -> FunctionalOptimizer | None:
    """A traceable stand-in for ``optimizer`` (a torch ``SGD``, ``Adam`` or ``AdamW`` that has
    stepped), or None when it is something else or uses a setting not written here."""
    if not isinstance(optimizer, torch.optim.SGD | torch.optim.Adam):
        return None
    if len(optimizer.param_groups) != 1:
        return None
    group = optimizer.param_groups[0]
    if any(group.get(name) for name in _REFUSED) or group.get("dampening", 0) != 0:
        return None
    if isinstance(group["lr"], torch.Tensor):
        return None
    stateful = isinstance(optimizer, torch.optim.Adam) or group.get("momentum", 0) != 0
    if stateful and any(p not in optimizer.state for p in group["params"]):
        return None  # not stepped yet, or a parameter never had a gradient
    return FunctionalOptimizer(optimizer)


class FunctionalOptimizer:
    """``optimizer``'s ``step``/``zero_grad``/``state_dict`` as tensor arithmetic on its state
    (module docstring); what an algorithm holds as ``optimizer`` in a compiled step."""

    def __init__(self, optimizer: torch.optim.SGD | torch.optim.Adam) -> None:
        self.wrapped = optimizer
        group = optimizer.param_groups[0]
        self.params: list[torch.Tensor] = list(group["params"])
        self.adam = isinstance(optimizer, torch.optim.Adam)
        self.decoupled = bool(group.get("decoupled_weight_decay")) or isinstance(
            optimizer, torch.optim.AdamW
        )
        self.decays = group["weight_decay"] != 0
        self.has_momentum = not self.adam and group["momentum"] != 0
        settings = {"lr": group["lr"], "weight_decay": group["weight_decay"]}
        if self.adam:
            settings.update(zip(("beta1", "beta2"), group["betas"], strict=True))
            settings["eps"] = group["eps"]
        elif self.has_momentum:
            settings["momentum"] = group["momentum"]
        like = self.params[0]
        self.settings = {
            name: torch.tensor(float(value), device=like.device, dtype=like.dtype)
            for name, value in settings.items()
        }
        """0-dim tensors, graph inputs rather than constants: trials that differ in them
        share one compiled step. Adam's bias corrections take the betas in float64."""
        self.betas64 = {
            name: self.settings[name].to(torch.float64) for name in ("beta1", "beta2") if self.adam
        }
        self._read_state()

    def _read_state(self) -> None:
        """References to the optimiser's state tensors (again after a ``load_state_dict``,
        which replaces them)."""
        state = [self.wrapped.state[p] for p in self.params]
        if self.adam:
            self.exp_avgs = [s["exp_avg"] for s in state]
            self.exp_avg_sqs = [s["exp_avg_sq"] for s in state]
            self.steps = [s["step"] for s in state]
        elif self.has_momentum:
            self.buffers = [s["momentum_buffer"] for s in state]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        if self.adam:
            self._adam()
        else:
            self._sgd()

    def _sgd(self) -> None:
        lr, decay = self.settings["lr"], self.settings["weight_decay"]
        for index, p in enumerate(self.params):
            if p.grad is None:
                continue
            grad = p.grad
            if self.decays:
                grad = grad + p * decay
            if self.has_momentum:
                grad = self.buffers[index].mul_(self.settings["momentum"]).add_(grad)
            p.sub_(grad * lr)

    def _adam(self) -> None:
        settings = self.settings
        lr, decay, beta1, beta2 = (settings[n] for n in ("lr", "weight_decay", "beta1", "beta2"))
        for index, p in enumerate(self.params):
            if p.grad is None:
                continue
            grad, step = p.grad, self.steps[index]
            exp_avg, exp_avg_sq = self.exp_avgs[index], self.exp_avg_sqs[index]
            step += 1
            if self.decays and self.decoupled:
                p.mul_(1 - lr * decay)
            elif self.decays:
                grad = grad + p * decay
            exp_avg.lerp_(grad, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad * (1 - beta2), grad)
            count = step.to(torch.float64)
            step_size = lr / (1 - self.betas64["beta1"] ** count).to(p.dtype)
            root_correction = ((1 - self.betas64["beta2"] ** count) ** 0.5).to(p.dtype)
            denom = (exp_avg_sq.sqrt() / root_correction).add_(settings["eps"])
            p.sub_(exp_avg / denom * step_size)

    def state_dict(self) -> dict[str, Any]:
        """The optimiser's own (its format: a run saved here resumes eagerly and back)."""
        return self.wrapped.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.wrapped.load_state_dict(state)
        self._read_state()
