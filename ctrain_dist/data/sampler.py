"""Minibatches as index gathers: epochs of seeded permutations of the training rows.

Why indices on the device: tabular rows are tiny, so a per-sample ``Dataset`` and a
``DataLoader`` cost more than the model's forward pass; a permutation and a slice cost nothing
(DESIGN.md, performance principles). The generator is the trial's own, so a seed fixes the
minibatch stream, and its state is part of :meth:`state_dict` for exact resume.
"""

from __future__ import annotations

from typing import Any

import torch


class MinibatchSampler:
    """Draws ``batch_size`` row indices at a time, without replacement within an epoch."""

    def __init__(self, rows: torch.Tensor, batch_size: int, seed: int) -> None:
        if batch_size > rows.numel():
            raise ValueError(f"batch_size {batch_size} exceeds the {rows.numel()} training rows")
        self.rows = rows
        self.batch_size = batch_size
        self.generator = torch.Generator(device="cpu").manual_seed(seed)
        self.samples_drawn = 0
        self._order = self._permutation()
        self._position = 0

    def _permutation(self) -> torch.Tensor:
        """The next epoch's rows. On a GPU the permutation (drawn by the host generator) goes
        over from pinned memory without blocking, so a step that starts an epoch never waits
        for the device."""
        order = torch.randperm(self.rows.numel(), generator=self.generator)
        if self.rows.device.type == "cuda":
            order = order.pin_memory().to(self.rows.device, non_blocking=True)
        return self.rows[order]

    def next(self) -> torch.Tensor:
        """The next minibatch; a batch never straddles two epochs (the tail is reshuffled)."""
        if self._position + self.batch_size > self._order.numel():
            self._order = self._permutation()
            self._position = 0
        batch = self._order[self._position : self._position + self.batch_size]
        self._position += self.batch_size
        self.samples_drawn += self.batch_size
        return batch

    @property
    def epochs(self) -> float:
        return self.samples_drawn / self.rows.numel()

    def state_dict(self) -> dict[str, Any]:
        return {
            "generator": self.generator.get_state(),
            "order": self._order.cpu(),
            "position": self._position,
            "samples_drawn": self.samples_drawn,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self._order = state["order"].to(self.rows.device)
        self._position = int(state["position"])
        self.samples_drawn = int(state["samples_drawn"])
