"""Tabular preprocessing shared by every dataset: one-hot categoricals, standardised numerics.

Why every statistic comes from the train rows alone: a median, mean, standard deviation or
category list that has seen validation or test rows leaks them into the model's inputs, and a
comparison of algorithms on test is then no longer on held-out data. Rows outside
``train_index`` are only transformed, never fitted on; changing them leaves the encoded train
rows unchanged.

Why missing values are explicit: silently imputing a code (or a mean) makes "unknown" look like a
real answer, and missingness is often informative (Adult's unknown occupation goes with a low
income). So a missing value always sets its own indicator column ``<col>__missing``, created for
a column exactly when it has a missing value in any row, and its value columns are filled
neutrally: all zeros for a categorical, the train median for a numeric. Whether that column
exists is the only thing non-train rows decide, and it carries none of their values.

A category that never occurs in the train rows has no column; its rows get all zeros in that
column's one-hot block, as they would for a model that never saw the category.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

MISSING_SUFFIX = "__missing"


def preprocess(
    frame: pd.DataFrame,
    numeric: Sequence[str],
    categorical: Sequence[str],
    train_index: np.ndarray,
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Encode feature columns into one float32 matrix, fitted on the train rows only.

    Args:
        frame: one row per example; any index (rows are addressed by position).
        numeric: columns to impute, standardise and keep as one value column each.
        categorical: columns to one-hot encode.
        train_index: positions of the train rows, the only rows statistics are fitted on.

    Returns:
        ``(features, names)``: float32 ``[n, d]`` and the ``d`` column names, numeric blocks
        first, in the order given. Numeric value columns are named after their column,
        one-hot columns ``<col>=<category>`` (categories sorted), indicators
        ``<col>__missing``.

    Raises:
        ValueError: if a column is in both lists, no column is given, ``train_index`` is
            empty, or a numeric column has no observed value in the train rows.
    """
    overlap = set(numeric) & set(categorical)
    if overlap:
        raise ValueError(f"columns cannot be both numeric and categorical: {sorted(overlap)}")
    if not numeric and not categorical:
        raise ValueError("no feature columns given")
    train_index = np.asarray(train_index, dtype=np.int64)
    if train_index.size == 0:
        raise ValueError("train_index is empty: there are no rows to fit on")
    blocks = [encode_numeric(frame[column], train_index) for column in numeric]
    blocks += [encode_categorical(frame[column], train_index) for column in categorical]
    features = np.concatenate([block for block, _ in blocks], axis=1).astype(np.float32)
    names = tuple(name for _, block_names in blocks for name in block_names)
    return features, names


def encode_numeric(column: pd.Series, train_index: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """One standardised value column, plus a missing indicator if any value is missing.

    Missing values take the train median before standardising, so they sit at a typical value
    and the indicator alone says they were unknown. The indicator is 0/1 and not standardised.
    """
    name = str(column.name)
    values = pd.to_numeric(column).to_numpy(dtype=np.float64, na_value=np.nan)
    missing = np.isnan(values)
    observed_train = values[train_index][~missing[train_index]]
    if observed_train.size == 0:
        raise ValueError(f"numeric column {name!r} has no observed value in the train rows")
    filled = np.where(missing, np.median(observed_train), values)
    standardised = standardise(filled, filled[train_index])
    if not missing.any():
        return standardised[:, None], [name]
    return np.column_stack([standardised, missing]), [name, name + MISSING_SUFFIX]


def standardise(values: np.ndarray, train_values: np.ndarray) -> np.ndarray:
    """``(values - mean) / std`` with the train rows' mean and population std.

    A column constant on train keeps std 1 (it is only centred): dividing by its zero spread
    would turn the non-train rows' differences into infinities.
    """
    mean = train_values.mean()
    std = 1.0 if np.ptp(train_values) == 0 else train_values.std()
    return (values - mean) / std


def encode_categorical(column: pd.Series, train_index: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """One-hot columns for the categories seen in the train rows, plus a missing indicator.

    Values are compared as strings, so a user's CSV with integer codes works the same as text.
    Missing values and categories unseen in train get zeros in every one-hot column.
    """
    name = str(column.name)
    missing = column.isna().to_numpy()
    text = column.astype("string")
    categories = sorted(text.iloc[train_index].dropna().unique())
    codes = pd.Index(categories, dtype="string").get_indexer(text)
    onehot = np.zeros((len(column), len(categories)), dtype=np.float32)
    known = np.flatnonzero(codes >= 0)
    onehot[known, codes[known]] = 1.0
    names = [f"{name}={category}" for category in categories]
    if not missing.any():
        return onehot, names
    return np.column_stack([onehot, missing]), [*names, name + MISSING_SUFFIX]
