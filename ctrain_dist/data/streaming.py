"""A user's map-style ``Dataset`` read as it trains: items by DataLoader workers, ahead of use.

Why a second path beside the in-memory one (``tabular.py``): images and other large rows do
not fit the device, so only labels, groups and split indices are held in memory (what the
splits, the samplers and the constraints need) and the inputs ``x`` are read per minibatch.

Why the in-memory sampler still decides: the rows of every minibatch are drawn by the very
sampler (``sampler.py``, ``stratified.py``) the in-memory path uses, with the same seed, so a
streamed trial sees exactly the rows an in-memory one sees. The sampler's batches are handed
to a ``DataLoader`` as its ``batch_sampler``; under exact data parallelism each rank hands on
only its slice (``select``) of each global minibatch and so reads only those items. The loader
pulls batches ahead (``prefetch_factor`` per worker), so :class:`StreamingSampler` keeps the
rows drawn but not yet used; its state is the sampler's plus those rows, replayed first on
resume, so a resumed trial follows the uninterrupted trajectory.

On CUDA the workers' batches come in pinned memory and go over without blocking.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from ctrain_dist.data.stratified import design_weights


def stack_inputs(items: Sequence[Any]) -> torch.Tensor:
    """A batch of items' inputs ``x`` (labels and groups are already in memory)."""
    return torch.stack([torch.as_tensor(item[0]) for item in items])


@dataclass(frozen=True)
class StreamingData:
    """The :class:`~ctrain_dist.data.tabular.TabularData` interface without ``features``.

    ``labels`` and ``groups`` follow :meth:`to` onto the device; ``splits`` stay on the host,
    where the samplers draw and the loader's indices are made. Reads are cast to ``dtype``
    and moved to ``device``.
    """

    name: str
    dataset: Dataset
    labels: torch.Tensor
    groups: torch.Tensor
    group_names: tuple[str, ...]
    splits: dict[str, torch.Tensor]
    input_shape: tuple[int, ...]
    loader_workers: int
    dtype: torch.dtype = torch.float32
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    feature_names: tuple[str, ...] = ()

    @property
    def num_features(self) -> int:
        return math.prod(self.input_shape)

    @property
    def num_groups(self) -> int:
        return len(self.group_names)

    def to(
        self, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> StreamingData:
        """The same data read as ``dtype`` onto ``device`` (labels cast, groups moved)."""
        target = torch.device(device) if device is not None else self.device
        dtype = dtype or self.dtype
        return replace(
            self,
            labels=self.labels.to(target, dtype),
            groups=self.groups.to(target),
            dtype=dtype,
            device=target,
        )

    def move(self, batch: torch.Tensor) -> torch.Tensor:
        """A host batch on the device in the data's dtype (asynchronous from pinned memory)."""
        return batch.to(self.device, self.dtype, non_blocking=batch.is_pinned())

    def read(self, rows: torch.Tensor) -> torch.Tensor:
        """The inputs of ``rows`` read here, in this process (evaluation, checks)."""
        items = [self.dataset[index] for index in rows.tolist()]
        batch = stack_inputs(items)
        return self.move(batch.pin_memory() if self.device.type == "cuda" else batch)

    def split(self, name: str) -> tuple[StreamedRows, torch.Tensor, torch.Tensor]:
        """Inputs (read lazily, chunk by chunk), labels and groups of one split."""
        index = self.splits[name]
        on_device = index.to(self.device)
        return StreamedRows(self, index), self.labels[on_device], self.groups[on_device]

    def stream(
        self, sampler: Any, select: Callable[[torch.Tensor], torch.Tensor]
    ) -> StreamingSampler:
        """Minibatches of ``sampler`` (drawn over host rows) read by the loader's workers;
        ``select`` picks this rank's share of each global minibatch."""
        return StreamingSampler(sampler, self, select)


@dataclass(frozen=True)
class StreamedRows:
    """A split's inputs as a sequence: slicing reads those rows (``metrics.predict_logits``
    evaluates in chunks of rows, so a split is never held whole)."""

    data: StreamingData
    index: torch.Tensor
    chunk_rows: int = 1024
    """Rows read and evaluated at a time (images need not fit the device together)."""

    def __len__(self) -> int:
        return int(self.index.numel())

    def __getitem__(self, part: slice) -> torch.Tensor:
        return self.data.read(self.index[part])


def batch_indices(
    sampler: Any,
    unused: deque[torch.Tensor],
    replay: deque[torch.Tensor],
    select: Callable[[torch.Tensor], torch.Tensor],
) -> Iterator[list[int]]:
    """A loader's batch sampler, pulled in the trial's process ahead of use: the rows of
    ``replay`` first, then ``sampler``'s, each noted in ``unused`` until it is used.

    A function rather than a method: the loader then holds no reference back to its
    :class:`StreamingSampler`, so dropping the sampler stops the workers at once (no cycle
    waiting for the garbage collector).
    """
    while True:
        rows = replay.popleft() if replay else sampler.next()
        unused.append(rows)
        yield select(rows).tolist()


class StreamingSampler:
    """A sampler's minibatches, each read by DataLoader workers before it is asked for.

    The sampler interface the loop reads (``samples_drawn``, ``epochs``, ``state_dict``),
    counting only the batches used; :meth:`next_batch` gives the next global minibatch's rows
    (on the device) and this rank's inputs.
    """

    def __init__(
        self, sampler: Any, data: StreamingData, select: Callable[[torch.Tensor], torch.Tensor]
    ) -> None:
        self.inner = sampler
        self.data = data
        self.select = select
        self.rows = sampler.rows
        self.batch_size = sampler.batch_size
        weights = design_weights(sampler)
        self.weights = None if weights is None else weights.to(data.device)
        self._unused: deque[torch.Tensor] = deque()
        """Global rows drawn from ``inner`` and given to the loader, not yet used."""
        self._replay: deque[torch.Tensor] = deque()
        """Rows a checkpoint held unused: given to the loader again before new draws."""
        self._batches: Any = None

    def _loader(self) -> Any:
        workers = self.data.loader_workers
        return iter(
            DataLoader(
                self.data.dataset,
                batch_sampler=batch_indices(self.inner, self._unused, self._replay, self.select),
                num_workers=workers,
                collate_fn=stack_inputs,
                pin_memory=self.data.device.type == "cuda",
                generator=torch.Generator(),  # never draws from the trial's global generator
                persistent_workers=False,
                prefetch_factor=4 if workers else None,
            )
        )

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next global minibatch's rows on the device, and this rank's inputs of it."""
        if self._batches is None:
            self._batches = self._loader()
        inputs = next(self._batches)
        rows = self._unused.popleft()
        if self.data.device.type == "cuda":
            rows = rows.pin_memory()
        return rows.to(self.data.device, non_blocking=True), self.data.move(inputs)

    def close(self) -> None:
        """Stop the loader's workers (they also stop when this sampler is collected)."""
        self._replay = deque([*self._unused, *self._replay])
        self._unused.clear()
        self._batches = None

    @property
    def samples_drawn(self) -> int:
        ahead = (len(self._unused) + len(self._replay)) * self.batch_size
        return self.inner.samples_drawn - ahead

    @property
    def epochs(self) -> float:
        return self.samples_drawn / self.rows.numel()

    def state_dict(self) -> dict[str, Any]:
        return {
            "sampler": self.inner.state_dict(),
            "unused": [rows.clone() for rows in (*self._unused, *self._replay)],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state["sampler"])
        self._batches = None
        self._unused.clear()
        self._replay = deque(state["unused"])
