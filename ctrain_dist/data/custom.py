"""Data from the user's code (``data: {dataset: custom, factory: ..., options: ...}``), checked.

The factory is ``factory(**options)`` and returns one of:

* tensors (or arrays) ``(features, labels, groups)`` or ``(features, labels, groups,
  splits)``: ``features`` floating ``[n, ...]`` (rows of any shape), ``labels`` ``[n]`` of 0/1,
  ``groups`` integer ``[n]`` using every id ``0..G-1`` (G ≥ 2), ``splits`` a mapping of
  ``train``, ``val`` and ``test`` to disjoint row indices. They become a ``TabularData``, the
  in-memory path every built-in dataset takes;
* a map-style ``torch.utils.data.Dataset`` whose items are ``(x, y, group)``: the streaming
  path (``streaming.py``). Labels and groups of every row are needed up front (the split is
  stratified by them, the samplers draw by group), so they are read in one pass over the
  items, or taken from the dataset's ``labels`` and ``groups`` attributes when it has both
  (then item 0 is checked against them); ``splits`` may be an attribute too.

Without ``splits`` the rows are split as the built-in datasets are (``split.py``, stratified by
label × group with the spec's ``split`` fractions and seed). Every problem is a
:class:`~ctrain_dist.errors.SpecError` on ``data.factory`` naming what to fix, raised when the
spec is checked, before anything starts.

Factories also come from installed packages: the entry-point group ``ctrain_dist.datasets``
(``ctrain algorithms`` lists them), a name in place of the import path.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ctrain_dist.data.config import CustomDataSpec, SplitSpec
from ctrain_dist.data.factories import dataset_factory
from ctrain_dist.data.split import stratified_split
from ctrain_dist.data.streaming import StreamingData
from ctrain_dist.data.tabular import SPLITS, TabularData
from ctrain_dist.errors import SpecError
from ctrain_dist.plugins import is_import_path

FIELD = "data.factory"
RETURNS = (
    "return (features, labels, groups[, splits]) tensors or a map-style torch Dataset of "
    "(x, y, group) items"
)
SCAN_BATCH = 512
"""Items per loader batch in the one pass that reads a Dataset's labels and groups."""


def problem(message: str) -> SpecError:
    return SpecError(FIELD, message)


@functools.lru_cache(maxsize=4)
def load_custom(spec: CustomDataSpec, split: SplitSpec) -> TabularData | StreamingData:
    """The data ``spec``'s factory returns, checked (module docstring), on the host.

    Raises:
        SpecError: on ``data.factory``: the factory raised, or what it returned breaks the
            contract.
    """
    factory = dataset_factory(spec.factory)
    try:
        made = factory(**spec.options)
    except Exception as error:  # user code may raise anything
        raise problem(
            f"{spec.factory} failed: {type(error).__name__}: {error}; it is called as "
            "factory(**data.options)"
        ) from None
    name = spec.factory if is_import_path(spec.factory) else f"custom:{spec.factory}"
    if isinstance(made, Dataset):
        return _streaming(spec, split, made, name)
    if isinstance(made, tuple | list) and len(made) in (3, 4):
        return _in_memory(spec, split, made, name)
    raise problem(f"{spec.factory} returned a {type(made).__name__}; {RETURNS}")


def _in_memory(
    spec: CustomDataSpec, split: SplitSpec, made: tuple | list, name: str
) -> TabularData:
    features = _tensor(made[0], "features")
    if features.ndim < 2 or not features.is_floating_point():
        raise problem(
            f"features must be a floating tensor [n, ...], got {features.dtype} of shape "
            f"{tuple(features.shape)}; {RETURNS}"
        )
    labels = _labels(_tensor(made[1], "labels"), len(features))
    groups = _groups(_tensor(made[2], "groups"), len(features))
    splits = _splits(made[3] if len(made) == 4 else None, labels, groups, split)
    group_names = _group_names(spec, groups, splits)
    flat = features.ndim == 2
    return TabularData(
        name=name,
        features=features,
        labels=labels,
        groups=groups,
        feature_names=tuple(f"x{i}" for i in range(features.shape[1])) if flat else (),
        group_names=group_names,
        splits=splits,
    )


def _streaming(
    spec: CustomDataSpec, split: SplitSpec, dataset: Dataset, name: str
) -> StreamingData:
    try:
        size = len(dataset)  # type: ignore[arg-type]
        first = dataset[0]
    except Exception as error:  # user code may raise anything
        raise problem(
            f"the Dataset cannot be read by index: {type(error).__name__}: {error}; give it "
            "__len__ and __getitem__ (a map-style Dataset)"
        ) from None
    if not isinstance(first, tuple | list) or len(first) != 3:
        raise problem(f"item 0 of the Dataset is a {type(first).__name__}; yield (x, y, group)")
    x = _tensor(first[0], "item 0's x")
    if not x.is_floating_point():
        raise problem(f"item 0's x is {x.dtype}; yield floating inputs")
    if hasattr(dataset, "labels") and hasattr(dataset, "groups"):
        labels = _labels(_tensor(dataset.labels, "labels"), size)
        groups = _groups(_tensor(dataset.groups, "groups"), size)
        said = (float(labels[0]), int(groups[0]))
        if (float(first[1]), int(first[2])) != said:
            raise problem(
                f"item 0 yields label {first[1]}, group {first[2]} but the Dataset's labels and "
                f"groups attributes say {said[0]:g}, {said[1]}; make them agree"
            )
    else:
        labels, groups = _scan(dataset, spec.loader_workers, size)
    splits = _splits(getattr(dataset, "splits", None), labels, groups, split)
    return StreamingData(
        name=name,
        dataset=dataset,
        labels=labels,
        groups=groups,
        group_names=_group_names(spec, groups, splits),
        splits=splits,
        input_shape=tuple(x.shape),
        loader_workers=spec.loader_workers,
        dtype=x.dtype,
    )


def _labels_and_groups(items: list[Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """A scan batch: the items' labels and groups, their inputs left behind in the worker."""
    try:
        return (
            torch.stack([torch.as_tensor(item[1]) for item in items]),
            torch.stack([torch.as_tensor(item[2]) for item in items]),
        )
    except Exception as error:  # user code may yield anything
        raise ValueError(f"an item is not (x, y, group) with scalar y and group: {error}") from None


def _scan(dataset: Dataset, workers: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every item's label and group, in one pass by the loader's workers."""
    loader = DataLoader(
        dataset,
        batch_size=SCAN_BATCH,
        num_workers=workers,
        collate_fn=_labels_and_groups,
        generator=torch.Generator(),
    )
    try:
        parts = list(loader)
    except Exception as error:  # user code may raise anything
        last = (str(error).strip().splitlines() or [""])[-1]  # a worker's traceback, last line
        raise problem(f"reading the Dataset's items failed: {last}") from None
    labels = _labels(torch.cat([part[0].reshape(-1) for part in parts]), size)
    groups = _groups(torch.cat([part[1].reshape(-1) for part in parts]), size)
    return labels, groups


def _tensor(value: Any, what: str) -> torch.Tensor:
    try:
        return torch.as_tensor(np.asarray(value) if not isinstance(value, torch.Tensor) else value)
    except Exception:
        raise problem(f"{what} is a {type(value).__name__}, not a tensor or array") from None


def _labels(labels: torch.Tensor, rows: int) -> torch.Tensor:
    """``[rows]`` float32 labels, refused unless every one is 0 or 1."""
    if tuple(labels.shape) != (rows,):
        raise problem(f"labels have shape {tuple(labels.shape)}, not [{rows}] (one per row)")
    odd = labels[(labels != 0) & (labels != 1)]
    if odd.numel():
        raise problem(f"labels must be 0 or 1, found {odd[0].item()!r}; map them to 0/1")
    return labels.to(torch.float32)


def _groups(groups: torch.Tensor, rows: int) -> torch.Tensor:
    """``[rows]`` int64 group ids, refused unless integers using every id ``0..G-1``, G ≥ 2."""
    if tuple(groups.shape) != (rows,):
        raise problem(f"groups have shape {tuple(groups.shape)}, not [{rows}] (one per row)")
    if groups.is_floating_point() or groups.is_complex() or groups.dtype == torch.bool:
        raise problem(f"groups are {groups.dtype}; give integer group ids 0..G-1")
    groups = groups.to(torch.int64)
    if rows and int(groups.min()) < 0:
        raise problem(f"group id {int(groups.min())} is negative; give ids 0..G-1")
    present = torch.bincount(groups) if rows else torch.zeros(0, dtype=torch.int64)
    if len(present) < 2:
        raise problem("every row is in one group; constraints compare at least two")
    missing = (present == 0).nonzero().flatten().tolist()
    if missing:
        raise problem(f"group ids {missing} have no rows; number the groups 0..G-1 without gaps")
    return groups


def _splits(
    given: Any, labels: torch.Tensor, groups: torch.Tensor, split: SplitSpec
) -> dict[str, torch.Tensor]:
    """The factory's splits (checked), else the spec's stratified split."""
    rows = len(labels)
    if given is None:
        made = stratified_split(labels.numpy(), groups.numpy(), split.val, split.test, split.seed)
        return {name: torch.from_numpy(index) for name, index in made.items()}
    if not isinstance(given, Mapping) or set(given) != set(SPLITS):
        raise problem(f"splits must map exactly {', '.join(SPLITS)} to row indices")
    splits = {name: _tensor(given[name], f"splits[{name!r}]").reshape(-1) for name in SPLITS}
    for name, index in splits.items():
        if index.is_floating_point() or index.dtype == torch.bool:
            raise problem(f"splits[{name!r}] holds {index.dtype}; give integer row indices")
        if index.numel() == 0 or int(index.min()) < 0 or int(index.max()) >= rows:
            raise problem(f"splits[{name!r}] must be non-empty row indices in 0..{rows - 1}")
    every = torch.cat(list(splits.values()))
    if every.unique().numel() != every.numel():
        raise problem("splits overlap or repeat a row; give each row to one split at most")
    return {name: index.to(torch.int64).sort().values for name, index in splits.items()}


def _group_names(
    spec: CustomDataSpec, groups: torch.Tensor, splits: dict[str, torch.Tensor]
) -> tuple[str, ...]:
    """``data.group_names`` or ``group_<i>``; every group must have rows in every split."""
    count = int(groups.max()) + 1
    names = spec.group_names or tuple(f"group_{g}" for g in range(count))
    if len(names) != count:
        raise SpecError(
            "data.group_names", f"names {len(names)} groups but the data has {count}; name each"
        )
    for split_name, index in splits.items():
        absent = sorted(set(range(count)) - set(groups[index].unique().tolist()))
        if absent:
            raise problem(
                f"group {names[absent[0]]!r} has no rows in the {split_name} split; give it "
                "more rows or other splits"
            )
    return names
