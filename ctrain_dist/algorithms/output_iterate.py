r"""The iterate a method outputs when it is not the last one: a random or an averaged one.

Why: some analyses bound not the last iterate but one drawn at random from a set of
iterations, or their average: the switching subgradient's guarantee (Huang & Lin 2023) is for
an iterate of its objective steps :math:`I`, as is the averaged output of Lan & Zhou's
cooperative subgradient method. An evaluation of the last iterate measures a point that the
guarantee says nothing about. :class:`OutputIterate` keeps the output online, in one copy of
the parameters, and the algorithm swaps it into the parameters for the time of an evaluation
(``Algorithm.output_iterate``).

Rules, over the iterates :math:`x^k` that ``record`` is told belong to the set, each with a
weight :math:`w_k > 0` (the step size taken from it), :math:`W_k = \sum_{s \le k} w_s`:

* ``last``: nothing is kept; the output is the current parameters.
* ``average``: :math:`\bar x = \sum_k w_k x^k / \sum_k w_k`, the step-size-weighted average
  (the plain average when the steps are equal), kept as
  :math:`\bar x \leftarrow \operatorname{lerp}(\bar x, x^k, w_k / W_k)`;
* ``random``: :math:`x^\tau` with :math:`P(\tau = k) = w_k / \sum_s w_s` (uniform when the
  steps are equal), by weighted reservoir sampling (Chao 1982): the kept copy becomes
  :math:`x^k` with probability :math:`w_k / W_k`, which is
  :math:`\operatorname{lerp}(\bar x, x^k, \mathbb 1[u_k < w_k / W_k])`.

``lerp`` is exact at weights 0 and 1 (torch computes it from the nearer end), so an iterate
outside the set leaves the copy bitwise as it was, and a replacement copies :math:`x^k`
bitwise. A member whose set is still empty outputs its current parameters.

Random numbers: :math:`u_k` is a hash of the member's key and :math:`k` (a counter-based
generator, Salmon et al. 2011, with the 32-bit "lowbias32" mix), not a generator's stream.
So member :math:`i`'s draws depend on its key alone, and the key is its trial seed: a packed
member draws what it draws alone. The draw at :math:`k` is the same however the run was
interrupted, so a resumed run draws on bitwise. And the draws are made on the device: eagerly
a block of :data:`BLOCK` iterations at a time, so a step reads a column of a table (a view)
and never the host; in a step compiled whole (``torch.compiler.is_compiling``) the one
iteration's hash, which the compiler fuses into one kernel, the same numbers either way.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import torch

OutputRule = Literal["last", "random", "average"]
BLOCK = 1024
"""Iterations whose uniforms are drawn at once (one small kernel sequence per block)."""
_MASK32 = 0xFFFFFFFF
_SALT = 0x5EED0F17
"""Keeps the keys apart from other uses of the same seed (the minibatch stream's)."""


def _multiply32(x: torch.Tensor, constant: int) -> torch.Tensor:
    """``x · constant mod 2³²`` for ``x`` in ``[0, 2³²)``, by 16-bit halves: no int64
    product overflows, so the result is defined on every backend."""
    low, high = x & 0xFFFF, x >> 16
    return (low * constant + (((high * constant) & 0xFFFF) << 16)) & _MASK32


def mix32(x: torch.Tensor) -> torch.Tensor:
    """The "lowbias32" integer hash (C. Wellons' hash-prospector) of int64 values in
    ``[0, 2³²)``: every input bit flips about half the output bits."""
    x = x ^ (x >> 16)
    x = _multiply32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _multiply32(x, 0x846CA68B)
    return x ^ (x >> 16)


def member_keys(seeds: Sequence[int], device: torch.device) -> torch.Tensor:
    """The int64 keys of members with these trial seeds, ``[len(seeds)]``."""
    raw = torch.tensor([seed & _MASK32 for seed in seeds], dtype=torch.int64, device=device)
    return mix32(raw ^ _SALT)


def counter_uniforms(keys: torch.Tensor, start: int, count: int) -> torch.Tensor:
    """Float64 uniforms in ``[0, 1)`` for counters ``start, …, start + count − 1``, one row per
    key: ``[*keys.shape, count]``, each a function of its key and counter alone."""
    counters = torch.arange(count, dtype=torch.int64, device=keys.device) + start
    mixed = mix32((mix32(counters & _MASK32) + keys.unsqueeze(-1)) & _MASK32)
    return mixed.to(torch.float64) / 2.0**32


def _shaped(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-member ``value`` (``[K]`` or 0-dim) shaped to broadcast against ``like``."""
    return value.reshape(-1, *([1] * (like.ndim - 1))) if value.ndim else value


class OutputIterate:
    """The output of ``rule`` over ``params`` (stacked members: a leading ``[K]``); the
    maths is in the module docstring."""

    def __init__(
        self, rule: OutputRule, params: Sequence[torch.Tensor], keys: torch.Tensor
    ) -> None:
        """``keys``: int64, one per member (``[K]``, or 0-dim for one model)."""
        self.rule = rule
        self.params = list(params)
        self.iterate = [p.detach().clone() for p in self.params] if rule != "last" else []
        """The kept copy: the average, or the drawn iterate."""
        like = self.params[0]
        self.weight = torch.zeros(keys.shape, device=like.device, dtype=like.dtype)
        """``W``: each member's summed weight of the iterates recorded so far."""
        self.keys = keys
        self._block: tuple[int, torch.Tensor] | None = None
        """The first counter of the uniforms table and the table, ``[*keys.shape, BLOCK]``."""

    def _uniform(self, iteration: int) -> torch.Tensor:
        """Each member's ``u`` at ``iteration``: a column of the current block's table, or
        (compiled) its own hash, which the table caches."""
        if torch.compiler.is_compiling():
            return counter_uniforms(self.keys, iteration, 1)[..., 0]
        start = iteration - iteration % BLOCK
        if self._block is None or self._block[0] != start:
            self._block = (start, counter_uniforms(self.keys, start, BLOCK))
        return self._block[1][..., iteration - start]

    def record(
        self, chosen: torch.Tensor | None, weight: float | torch.Tensor, iteration: int
    ) -> None:
        """Count the current parameters (before the step moves them) as iteration
        ``iteration``'s iterate, with ``weight`` (a number, or one per member), for the
        members where ``chosen`` is true (``None``: all of them)."""
        if self.rule == "last":
            return
        if chosen is None:
            chosen = torch.ones(self.weight.shape, dtype=torch.bool, device=self.weight.device)
        w = chosen.to(self.weight.dtype) * weight  # exact: w_k or 0
        self.weight = self.weight + w
        share = w / torch.where(chosen, self.weight, 1.0)
        if self.rule == "random":
            share = (self._uniform(iteration) < share.to(torch.float64)).to(w.dtype)
        with torch.no_grad():
            for copy, p in zip(self.iterate, self.params, strict=True):
                copy.lerp_(p.detach(), _shaped(share, p))

    @contextmanager
    def swapped_in(self) -> Iterator[None]:
        """The output in the parameters for the body of the ``with``; the current parameters
        restored bitwise after it (a member with nothing recorded keeps its own)."""
        if self.rule == "last":
            yield
            return
        with torch.no_grad():
            current = [p.detach().clone() for p in self.params]
            recorded = self.weight > 0
            for p, copy in zip(self.params, self.iterate, strict=True):
                p.copy_(torch.where(_shaped(recorded, p), copy, p))
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_(self.params, current)

    def state_dict(self) -> dict[str, Any]:
        return {
            "iterate": [copy.clone() for copy in self.iterate],
            "weight": self.weight.clone(),
            "keys": self.keys.clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from ``state_dict()``, on this object's device and dtype."""
        self.iterate = [
            saved.to(device=copy.device, dtype=copy.dtype).clone()
            for copy, saved in zip(self.iterate, state["iterate"], strict=True)
        ]
        self.weight = state["weight"].to(self.weight).clone()
        self.keys = state["keys"].to(self.keys).clone()
        self._block = None
