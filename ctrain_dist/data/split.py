"""Train/validation/test split, stratified by (label, group) cell.

Why stratify by the cell and not only by the label: fairness constraints are estimated per group,
and a minority group's positive rate on validation or test is noisy enough already; stratifying
keeps every split's share of each (label, group) cell equal to the requested fraction, to within
one row, so differences between splits come from the model and not from the draw.
"""

from __future__ import annotations

import numpy as np

from ctrain_dist.data.tabular import SPLITS


def stratified_split(
    labels: np.ndarray,
    groups: np.ndarray,
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> dict[str, np.ndarray]:
    """Row indices of the train, validation and test splits.

    Within each (label, group) cell, in sorted cell order, the cell's rows are shuffled by one
    ``np.random.default_rng(seed)`` and cut: the first ``round(n * test_fraction)`` rows go to
    test, the next ``round(n * val_fraction)`` to validation, the rest to train. Because
    ``val_fraction + test_fraction < 1``, the two rounded counts never exceed ``n``, so every row
    lands in exactly one split.

    Args:
        labels: ``[n]`` labels (any values; each distinct value is one stratum).
        groups: ``[n]`` group ids.
        val_fraction: share of each cell for validation, in (0, 1).
        test_fraction: share of each cell for test, in (0, 1).
        seed: seed of the shuffle; the same seed gives the same split.

    Returns:
        ``{"train", "val", "test"}`` → sorted int64 index arrays, disjoint and covering
        ``0..n-1``.

    Raises:
        ValueError: if a fraction is outside (0, 1), the fractions sum to 1 or more, or labels
            and groups are not 1-D arrays of the same length.
    """
    _check_fractions(val_fraction, test_fraction)
    labels = np.asarray(labels)
    groups = np.asarray(groups)
    if labels.ndim != 1 or labels.shape != groups.shape:
        raise ValueError(
            f"labels and groups must be 1-D and of equal length, got shapes "
            f"{labels.shape} and {groups.shape}"
        )
    _, cell_of_row = np.unique(np.stack([labels, groups], axis=1), axis=0, return_inverse=True)
    cell_of_row = cell_of_row.reshape(-1)
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in SPLITS}
    for cell in range(int(cell_of_row.max(initial=-1)) + 1):
        rows = rng.permutation(np.flatnonzero(cell_of_row == cell))
        n_test = round(len(rows) * test_fraction)
        n_val = round(len(rows) * val_fraction)
        parts["test"].append(rows[:n_test])
        parts["val"].append(rows[n_test : n_test + n_val])
        parts["train"].append(rows[n_test + n_val :])
    return {
        name: np.sort(np.concatenate(chunks or [np.empty(0, np.int64)])).astype(np.int64)
        for name, chunks in parts.items()
    }


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    """Refuse fractions that would leave a split empty by construction or overlap the others."""
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 < value < 1.0:
            raise ValueError(f"{name} must be in (0, 1), got {value}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(
            f"val_fraction + test_fraction must be < 1 to leave rows for training, got "
            f"{val_fraction} + {test_fraction} = {val_fraction + test_fraction}"
        )
