"""The tuning stage's figures, drawn from a ``Tuning``'s frames; nothing is computed here.

Same conventions as ``figures``: ``matplotlib.figure.Figure`` without pyplot, one colour per
algorithm in sorted order (the colour it has in every other figure of the report).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ctrain_dist.analysis.report.figures import _no_data, _save, colours
from ctrain_dist.analysis.report.tuning import Tuning
from ctrain_dist.analysis.stats.tuning_curves import VAL_MAX_VIOLATION, VAL_OBJECTIVE
from ctrain_dist.store.schema import ALGORITHM

TUNING_FIGURE = "tuning_curves.png"
SENSITIVITY_FIGURE = "sensitivity.png"
DECADES_FOR_LOG = 10.0
"""A hyperparameter axis is logarithmic when its values are positive and max/min ≥ this."""
SENSITIVITY_PANELS: dict[str, str] = {
    VAL_OBJECTIVE: "Validation objective",
    VAL_MAX_VIOLATION: "Validation max violation",
}


def plot_tuning_curves(tuning: Tuning, path: Path | str) -> Path:
    """Expected best feasible validation objective against n with its ±1 sd band, and the
    chance that n configurations include a feasible one, per algorithm."""
    figure = Figure(figsize=(11, 4), layout="constrained")
    best, chance = figure.subplots(1, 2)
    curves = tuning.curves
    palette = colours(list(set(curves[ALGORITHM])))
    best.set(
        xlabel="Configurations tried (n)",
        ylabel="Expected best validation objective\n(feasible, given one is drawn)",
    )
    chance.set(xlabel="Configurations tried (n)", ylabel="P(a feasible one among n)")
    chance.set_ylim(-0.02, 1.02)
    for algorithm, curve in curves.groupby(ALGORITHM, sort=True):
        colour = palette[algorithm]
        share = curve["feasible_share"].iloc[0]
        label = f"{algorithm} ({curve['feasible_configurations'].iloc[0]}/{len(curve)} feasible)"
        chance.plot(curve["n"], curve["p_any_feasible"], color=colour, marker=".", label=label)
        if share == 0:
            continue
        best.plot(curve["n"], curve["expected_best"], color=colour, marker=".", label=algorithm)
        best.fill_between(
            curve["n"], curve["band_low"], curve["band_high"], color=colour, alpha=0.2
        )
    if curves["expected_best"].notna().any():
        best.legend(loc="best", fontsize="small")
    else:
        _no_data(best)
    chance.legend(loc="lower right", fontsize="small")
    for ax in (best, chance):
        ax.xaxis.get_major_locator().set_params(integer=True)
    return _save(figure, path)


def spans_decades(values: pd.Series) -> bool:
    """Whether a hyperparameter's values are positive and span a decade or more."""
    numbers = pd.to_numeric(values, errors="coerce").dropna()
    return (
        bool(len(numbers))
        and numbers.min() > 0
        and numbers.max() / numbers.min() >= DECADES_FOR_LOG
    )


def plot_sensitivity(tuning: Tuning, path: Path | str) -> Path:
    """Each configuration's validation objective and violation against each tuned
    hyperparameter: filled dots feasible, hollow infeasible; the tolerance dashed."""
    frame = tuning.sensitivity
    names = sorted(set(frame["hyperparameter"])) if len(frame) else []
    figure = Figure(figsize=(10, 3.2 * max(1, len(names))), layout="constrained")
    grid = figure.subplots(max(1, len(names)), len(SENSITIVITY_PANELS), squeeze=False)
    if not names:
        for ax in grid[0]:
            _no_data(ax)
        return _save(figure, path)
    palette = colours(list(set(frame[ALGORITHM])))
    for row, name in enumerate(names):
        rows = frame[frame["hyperparameter"] == name]
        numeric = pd.to_numeric(rows["value"], errors="coerce").notna().all()
        for column, (metric, label) in enumerate(SENSITIVITY_PANELS.items()):
            ax = grid[row][column]
            ax.set(xlabel=name, ylabel=label)
            if metric == VAL_MAX_VIOLATION:
                ax.axhline(tuning.tolerance, color="grey", linewidth=0.8, linestyle="--")
            _draw_points(ax, rows, metric, palette, numeric)
            if numeric and spans_decades(rows["value"]):
                ax.set_xscale("log")
    figure.legend(handles=_legend_handles(palette), loc="outside upper center", ncols=6)
    return _save(figure, path)


def _legend_handles(palette: dict[str, str]) -> list[Line2D]:
    """Every algorithm's colour (a panel may lack some), then filled = feasible, hollow = not."""
    dot = {"marker": "o", "linestyle": "", "markersize": 6}
    handles = [Line2D([], [], color=c, label=a, **dot) for a, c in sorted(palette.items())]
    return [
        *handles,
        Line2D([], [], color="grey", label="feasible", **dot),
        Line2D([], [], color="grey", markerfacecolor="none", label="infeasible", **dot),
    ]


def _draw_points(ax: Axes, rows: pd.DataFrame, metric: str, palette: dict, numeric: bool) -> None:
    """One dot per configuration with a finite value; categories placed at 0, 1, …"""
    categories = sorted(set(map(str, rows["value"])))
    for algorithm, points in rows.groupby(ALGORITHM, sort=True):
        finite = points[np.isfinite(points[metric].astype(float))]
        if numeric:
            x = finite["value"].astype(float)
        else:
            x = finite["value"].map(lambda v: categories.index(str(v)))
        colour = palette[algorithm]
        feasible = finite["feasible"].to_numpy(dtype=bool)
        ax.scatter(x[feasible], finite[metric][feasible], color=colour, s=22)
        ax.scatter(
            x[~feasible], finite[metric][~feasible], facecolors="none", edgecolors=colour, s=22
        )
    if not numeric:
        ax.set_xticks(range(len(categories)), categories)
