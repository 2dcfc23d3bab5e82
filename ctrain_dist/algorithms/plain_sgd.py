r"""``torch.optim.SGD`` without momentum or weight decay, stepping in one multi-tensor call.

Why: ``primal: sgd`` (the default of every constrained method) and the ``sgd`` baseline take
the plainest step there is, :math:`x \leftarrow x - \tau g`, yet ``torch.optim.SGD.step`` pays
for its generality on every call: the profiler ``record_function`` and hook dispatch torch
wraps around each optimiser's ``step``, ``_use_grad``'s grad-mode switch, the scan that builds
its lists, then one ``add_`` per parameter on a CPU. On the benchmark MLP (107 → 64 → 32 → 1,
six tensors, one thread) that is about 65 µs a call against 17 µs here
(``benchmarks/bench_trainer.py`` measures the step it is part of).

Bit for bit torch's step: for these settings torch computes ``param.add_(grad, alpha=-lr)`` per
parameter (its single-tensor path, the CPU default) or ``torch._foreach_add_(params, grads,
alpha=-lr)`` (its multi-tensor path, the CUDA default). This is the second, which on a CPU runs
the first, one ``add_`` per tensor. The state is torch's (it keeps none for these settings), so
``state_dict`` and checkpoints are unchanged, and ``isinstance(optimizer, torch.optim.SGD)``
holds for the code that reads it (``functional_primal``). Anything else, a closure, a
registered step hook, a setting the fast path does not write (momentum, weight decay,
``maximize``, a tensor ``lr``, sparse gradients), takes torch's own step, hooks included.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.optim.optimizer import (
    Optimizer,
    _global_optimizer_post_hooks,
    _global_optimizer_pre_hooks,
)

_TORCH_STEP = (
    torch.optim.SGD.step
    if getattr(torch.optim.SGD.step, "hooked", False)
    else Optimizer.profile_hook_step(torch.optim.SGD.step)
)
"""torch's ``SGD.step`` with its profiling and hooks (torch wraps it when it builds its first
``SGD``, which may not have happened yet)."""

Lists = list[tuple[list[torch.Tensor], list[torch.Tensor], float]]


class PlainSGD(torch.optim.SGD):
    """``torch.optim.SGD`` whose plain step skips torch's per-call overhead (module docstring)."""

    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        lists = None if closure is not None else self._plain_lists()
        if lists is None:
            return _TORCH_STEP(self, closure)
        with torch.no_grad():
            for params, grads, lr in lists:
                torch._foreach_add_(params, grads, alpha=-lr)
        return None

    step.hooked = True  # type: ignore[attr-defined]
    """Tells torch not to wrap this ``step`` in its profiling and hook dispatch: the fast path
    runs only when no hook is registered, and every other path is torch's wrapped step."""

    def _plain_lists(self) -> Lists | None:
        """Each group's parameters with a gradient, their gradients and ``lr``; None when the
        fast path does not apply (a hook to run, a setting it does not write)."""
        if (
            self._optimizer_step_pre_hooks
            or self._optimizer_step_post_hooks
            or _global_optimizer_pre_hooks
            or _global_optimizer_post_hooks
        ):
            return None
        lists: Lists = []
        for group in self.param_groups:
            lr = group["lr"]
            if isinstance(lr, torch.Tensor) or not _plain(group):
                return None
            params, grads = [], []
            for p in group["params"]:
                grad = p.grad
                if grad is not None:
                    if grad.is_sparse:
                        return None
                    params.append(p)
                    grads.append(grad)
            lists.append((params, grads, lr))
        return lists


def _plain(group: dict[str, Any]) -> bool:
    """Whether a group's step is ``x - lr·g`` exactly (``dampening`` and ``nesterov`` act
    only with momentum)."""
    return not (
        group["momentum"] or group["weight_decay"] or group["maximize"] or group["differentiable"]
    )
