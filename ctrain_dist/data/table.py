"""Users' own tables (CSV or Parquet) as datasets; the group and label rules all datasets share.

A table is one row per example: a target column, one or more sensitive columns, feature
columns. It goes through the same preprocessing (``preprocess.py``: train-only statistics,
one-hot categoricals, explicit missing indicators), the same stratified split and the same
cache as the built-in datasets.

Problems are found before any job starts and named in one line (a :class:`SpecError`, exit 2):
a column that is not in the file (spec validation reads only the header), a target that is not
binary without a ``positive`` value, a missing target or group value, a single group, and a
group with no row in some split (its constraint could not be estimated there) — the last ones
from :func:`check_table`, which reads only the target and sensitive columns.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ctrain_dist.data.cache import Prepared
from ctrain_dist.data.config import SplitSpec, TableDataSpec
from ctrain_dist.data.preprocess import preprocess
from ctrain_dist.data.probes import is_parquet
from ctrain_dist.data.split import stratified_split
from ctrain_dist.data.tabular import SPLITS
from ctrain_dist.errors import SpecError


def read_table(path: Path, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """The table, or only ``columns`` of it, with missing values as NaN/NA."""
    if is_parquet(path):
        return pd.read_parquet(path, columns=list(columns) if columns else None)
    return pd.read_csv(path, usecols=list(columns) if columns else None)


def binary_labels(column: pd.Series, positive: Any) -> np.ndarray:
    """Float32 0/1 labels: 1 where the target equals ``positive``.

    Without ``positive`` the target must hold only 0 and 1 (or false and true). Numbers compare
    as numbers (``1`` matches ``1.0``), anything else as text.

    Raises:
        SpecError: naming ``data.target`` or ``data.positive`` and the values found.
    """
    name = str(column.name)
    missing = int(column.isna().sum())
    if missing:
        raise SpecError("data.target", f"column {name!r} has {missing} missing values; drop them")
    values = pd.unique(column)
    preview = ", ".join(map(repr, sorted(values.tolist(), key=str)[:10]))
    preview += ", ..." if len(values) > 10 else ""
    if positive is None:
        if set(values.tolist()) <= {0, 1}:
            return column.to_numpy(dtype=np.float32)
        raise SpecError(
            "data.positive",
            f"target {name!r} has {len(values)} values ({preview}), not 0/1; "
            "set data.positive to the value that means 1 (all others mean 0)",
        )
    match = _equals(column, positive)
    if not match.any():
        raise SpecError(
            "data.positive", f"{positive!r} never occurs in target {name!r}; its values: {preview}"
        )
    return match.astype(np.float32)


def _equals(column: pd.Series, value: Any) -> np.ndarray:
    if pd.api.types.is_numeric_dtype(column) and not isinstance(value, str | bool):
        return (column == value).to_numpy()
    if pd.api.types.is_bool_dtype(column) and isinstance(value, bool):
        return (column == value).to_numpy()
    return (column.astype(str) == str(value)).to_numpy()


def group_ids(frame: pd.DataFrame, columns: Sequence[str]) -> tuple[np.ndarray, tuple[str, ...]]:
    """Int64 group id per row and group names: the observed combinations of ``columns``' values.

    Values are ordered by their categorical order if the column is categorical, else sorted;
    combinations are numbered in that order (first column slowest) and only those that occur
    get an id, so ids run over ``0..G-1`` with no empty group. A value's name is its text when
    the column holds text or categories, else ``<column>=<value>``; several columns join with
    " & ".

    Raises:
        SpecError: on ``data.sensitive`` if a column has missing values or there is one group.
    """
    codes, labels = [], []
    for column in columns:
        series = frame[column]
        missing = int(series.isna().sum())
        if missing:
            raise SpecError(
                "data.sensitive",
                f"column {column!r} has {missing} missing values; a group needs a known value, "
                "so fill them (e.g. 'unknown') or drop those rows",
            )
        if not isinstance(series.dtype, pd.CategoricalDtype):
            series = series.astype(pd.CategoricalDtype(_sorted(pd.unique(series))))
        textual = isinstance(frame[column].dtype, pd.CategoricalDtype) or not (
            pd.api.types.is_numeric_dtype(series.cat.categories)
        )
        codes.append(series.cat.codes.to_numpy(dtype=np.int64))
        labels.append([str(v) if textual else f"{column}={v}" for v in series.cat.categories])
    combined = np.zeros(len(frame), dtype=np.int64)
    for part, names in zip(codes, labels, strict=True):
        combined = combined * len(names) + part
    observed, ids = np.unique(combined, return_inverse=True)
    names = []
    for value in observed.tolist():
        parts = []
        for names_k in reversed(labels):
            value, index = divmod(value, len(names_k))
            parts.append(names_k[index])
        names.append(" & ".join(reversed(parts)))
    if len(names) < 2:
        raise SpecError(
            "data.sensitive",
            f"every row is in one group ({names[0] if names else 'none'}); "
            "a fairness constraint compares at least two",
        )
    return ids.reshape(-1).astype(np.int64), tuple(names)


def _sorted(values: np.ndarray) -> list[Any]:
    try:
        return sorted(values.tolist())
    except TypeError:
        return sorted(values.tolist(), key=str)


def check_groups(groups: np.ndarray, names: Sequence[str], splits: dict[str, np.ndarray]) -> None:
    """Refuse a group with no row in some split: its constraint could not be estimated there.

    Raises:
        SpecError: on ``data.sensitive``, naming the group, the split and the group's size.
    """
    totals = np.bincount(groups, minlength=len(names))
    for split in SPLITS:
        counts = np.bincount(groups[splits[split]], minlength=len(names))
        for group in np.flatnonzero(counts == 0):
            raise SpecError(
                "data.sensitive",
                f"group {names[group]!r} has no rows in the {split} split (group size "
                f"{totals[group]}); merge it with another group or drop its rows",
            )


def _feature_columns(data: TableDataSpec, columns: Sequence[str]) -> list[str]:
    chosen = list(data.features) if data.features else [c for c in columns if c != data.target]
    chosen = [c for c in chosen if c not in data.sensitive]
    if data.include_sensitive_feature:
        chosen += list(data.sensitive)
    if not chosen:
        raise SpecError("data.features", "no feature column is left; list some in data.features")
    return chosen


def _labels_groups_splits(
    frame: pd.DataFrame, data: TableDataSpec, split: SplitSpec
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], dict[str, np.ndarray]]:
    labels = binary_labels(frame[data.target], data.positive)
    groups, group_names = group_ids(frame, data.sensitive)
    splits = stratified_split(labels, groups, split.val, split.test, split.seed)
    check_groups(groups, group_names, splits)
    return labels, groups, group_names, splits


def check_table(data: TableDataSpec, split: SplitSpec) -> None:
    """Every value-level problem of a table spec, reading only the target and sensitive columns."""
    frame = read_table(data.path, [data.target, *data.sensitive])
    _labels_groups_splits(frame, data, split)


def cache_request(data: TableDataSpec, split: SplitSpec) -> tuple[list[Path], dict[str, Any]]:
    """The cache inputs (the file) and options (everything that changes the arrays)."""
    options = {
        "dataset": "table",
        **data.model_dump(mode="json", exclude={"dataset", "path"}),
        "positive_type": type(data.positive).__name__,
        "split": split.model_dump(mode="json"),
    }
    return [data.path], options


def build_table(data: TableDataSpec, split: SplitSpec) -> Prepared:
    """The table preprocessed: features fitted on the train split, labels, groups, splits."""
    frame = read_table(data.path)
    labels, groups, group_names, splits = _labels_groups_splits(frame, data, split)
    columns = _feature_columns(data, list(frame.columns))
    categorical = [c for c in columns if c in data.categorical or not _is_number(frame[c])]
    numeric = [c for c in columns if c not in categorical]
    try:
        features, names = preprocess(frame, numeric, categorical, splits["train"])
    except ValueError as error:
        raise SpecError("data.features", str(error)) from None
    return Prepared(
        name=f"table:{data.path.name}",
        features=features,
        labels=labels,
        groups=groups,
        splits=splits,
        feature_names=names,
        group_names=group_names,
    )


def _is_number(column: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)
