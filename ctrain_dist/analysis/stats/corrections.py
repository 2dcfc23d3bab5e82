"""Multiple-testing corrections over a family of p-values (stacks corrected row by row)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def _sorted_family(pvalues: Sequence[float] | np.ndarray) -> tuple[np.ndarray, ...]:
    """p-values sorted ascending along the last axis (NaN last), the order, and m per family."""
    p = np.asarray(pvalues, dtype=float)
    order = np.argsort(p, axis=-1, kind="stable")
    return np.take_along_axis(p, order, axis=-1), order, np.sum(~np.isnan(p), axis=-1)


def _unsort(values: np.ndarray, order: np.ndarray) -> np.ndarray:
    result = np.empty_like(values)
    np.put_along_axis(result, order, values, axis=-1)
    return result


def holm(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values (step-down, monotone, capped at 1).

    With the m tested p-values sorted ascending, ``p_(i)`` becomes
    ``max_{j <= i} min(1, (m - j + 1) p_(j))``. NaN marks a hypothesis that was not tested: it
    stays NaN and does not count in m. Holm controls the family-wise error rate under any
    dependence between tests, which many comparisons sharing one algorithm have. A stack,
    shape ``(..., m)``, is corrected family by family along the last axis.
    """
    ordered, order, m = _sorted_family(pvalues)
    rank = np.arange(ordered.shape[-1])
    scaled = (np.expand_dims(m, -1) - rank) * ordered
    adjusted = np.minimum(1.0, np.maximum.accumulate(scaled, axis=-1))
    return _unsort(adjusted, order)


def benjamini_hochberg(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (step-up, monotone, capped at 1).

    With the m tested p-values sorted ascending, ``p_(i)`` becomes
    ``min_{j >= i} min(1, m p_(j) / j)``. Controls the false discovery rate (the expected share
    of false claims among the claimed differences) for independent or positively dependent
    tests; less strict than Holm, so it finds more when many differences are real. NaN and
    stacks as in ``holm``.
    """
    ordered, order, m = _sorted_family(pvalues)
    rank = np.arange(1, ordered.shape[-1] + 1)
    scaled = np.where(np.isnan(ordered), np.inf, np.expand_dims(m, -1) * ordered / rank)
    stepped = np.flip(np.minimum.accumulate(np.flip(scaled, -1), axis=-1), -1)
    adjusted = np.where(np.isnan(ordered), np.nan, np.minimum(1.0, stepped))
    return _unsort(adjusted, order)


CORRECTIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "holm": holm,
    "bh": benjamini_hochberg,
}
