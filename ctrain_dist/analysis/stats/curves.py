"""Convergence: curves of many seeds against samples or time, as a median and a band."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ctrain_dist.store.schema import ALGORITHM, ATTEMPT_ID, STEP


def convergence_bands(
    evals: pd.DataFrame,
    metrics: list[str],
    x: str = STEP,
    by: str = ALGORITHM,
    curve: str = ATTEMPT_ID,
    points: int = 100,
) -> pd.DataFrame:
    """Median and interquartile band across seeds of each metric against ``x``, per group.

    Each curve (one trial attempt of an evals frame) is linearly interpolated onto a common
    grid, because seeds rarely share x values on a time axis. The grid is the union of the
    curves' x values when there are at most ``points`` of them (exact, no interpolation, on an
    aligned step axis), else ``points`` evenly spaced values. A curve contributes only inside
    its own x range — never extrapolated — so ``n`` says how many seeds a point rests on.

    Returns:
        One row per group × metric × grid point: ``by, metric, axis`` (= ``x``),
        ``x, n, median, q25, q75``.
    """
    pieces = [
        _bands(group, metric, x, curve, points).assign(**{by: key, "metric": metric, "axis": x})
        for key, group in evals.groupby(by, sort=True)
        for metric in metrics
    ]
    columns = [by, "metric", "axis", "x", "n", "median", "q25", "q75"]
    if not pieces:
        return pd.DataFrame(columns=columns)
    return pd.concat(pieces, ignore_index=True)[columns]


def _bands(group: pd.DataFrame, metric: str, x: str, curve: str, points: int) -> pd.DataFrame:
    """The band of one group and metric; see ``convergence_bands``."""
    finite = group[np.isfinite(group[x].astype(float)) & np.isfinite(group[metric].astype(float))]
    curves = [c.sort_values(x).drop_duplicates(x, keep="last") for _, c in finite.groupby(curve)]
    if not curves:
        return pd.DataFrame(columns=["x", "n", "median", "q25", "q75"])
    xs = np.unique(finite[x].to_numpy(dtype=float))
    grid = xs if xs.size <= points else np.linspace(xs[0], xs[-1], points)
    values = np.full((len(curves), grid.size), np.nan)
    for row, c in enumerate(curves):
        cx, cy = c[x].to_numpy(dtype=float), c[metric].to_numpy(dtype=float)
        inside = (grid >= cx[0]) & (grid <= cx[-1])
        values[row, inside] = np.interp(grid[inside], cx, cy)
    counts = np.sum(~np.isnan(values), axis=0)
    covered = counts > 0
    q25, median, q75 = np.nanquantile(values[:, covered], [0.25, 0.5, 0.75], axis=0)
    return pd.DataFrame(
        {"x": grid[covered], "n": counts[covered], "median": median, "q25": q25, "q75": q75}
    )
