"""The report's figures, drawn from a ``Report``'s frames; nothing is computed here.

Each function writes one PNG and returns its path. ``matplotlib.figure.Figure`` is used
directly rather than pyplot, so drawing never changes the caller's backend or leaks figures in
a long-running process. Colours are fixed per algorithm (sorted order), so an algorithm has the
same colour in every figure.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ctrain_dist.analysis.report.across import AcrossTasks
from ctrain_dist.analysis.report.build import (
    COMPARED_METRICS,
    CURVE_AXES,
    CURVE_METRICS,
    GROUP_RATE_LABELS,
    TEST_MAX_VIOLATION,
    TEST_OBJECTIVE,
    Report,
    by_algorithm_and_metric,
    group_rate_column,
)
from ctrain_dist.store.schema import ALGORITHM, MAX_VIOLATION

DPI = 120


def colours(algorithms: list[str]) -> dict[str, str]:
    return {algorithm: f"C{i % 10}" for i, algorithm in enumerate(sorted(algorithms))}


def _no_data(ax: Axes) -> None:
    ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)


def _save(figure: Figure, path: Path | str) -> Path:
    path = Path(path)
    figure.savefig(path, dpi=DPI)
    return path


def plot_convergence(bands: pd.DataFrame, path: Path | str) -> Path:
    """Metrics in columns, axes (samples, time) in rows: median and interquartile band.

    Args:
        bands: ``Report.convergence`` (``stats.convergence_bands`` rows).
        path: where to write the PNG.
    """
    palette = colours(list(set(bands[ALGORITHM])) if len(bands) else [])
    figure = Figure(figsize=(5 * len(CURVE_METRICS), 3.5 * len(CURVE_AXES)), layout="constrained")
    grid = figure.subplots(len(CURVE_AXES), len(CURVE_METRICS), squeeze=False)
    for row, (axis, axis_label) in enumerate(CURVE_AXES.items()):
        for column, (metric, metric_label) in enumerate(CURVE_METRICS.items()):
            ax = grid[row][column]
            _draw_bands(ax, bands, axis, metric, palette)
            ax.set(xlabel=axis_label, ylabel=metric_label)
    if palette:
        grid[0][0].legend(loc="best", fontsize="small")
    return _save(figure, path)


def _draw_bands(ax: Axes, bands: pd.DataFrame, axis: str, metric: str, palette: dict) -> None:
    """Median line and interquartile band of each algorithm in one panel.

    Only points that at least half of an algorithm's seeds reach are drawn: on a time axis the
    last few points rest on the one slowest seed and would read as a jump in the median.
    """
    if metric == MAX_VIOLATION:
        ax.axhline(0.0, color="grey", linewidth=0.8, linestyle="--")
    panel = bands[(bands["axis"] == axis) & (bands["metric"] == metric)] if len(bands) else bands
    if panel.empty:
        _no_data(ax)
        return
    for algorithm, band in panel.groupby(ALGORITHM, sort=True):
        curve = band[2 * band["n"] >= band["n"].max()]
        colour = palette[algorithm]
        ax.plot(curve["x"], curve["median"], color=colour, label=algorithm)
        ax.fill_between(curve["x"], curve["q25"], curve["q75"], color=colour, alpha=0.2)


def plot_pareto(report: Report, path: Path | str) -> Path:
    """Test objective against test max violation: every seed, each algorithm's mean with its
    95% t interval, and each algorithm's Pareto front through its seeds (lower-left is better)."""
    figure = Figure(figsize=(6.5, 4.5), layout="constrained")
    ax = figure.subplots()
    points = report.pareto
    ax.axvline(0.0, color="grey", linewidth=0.8, linestyle="--")
    ax.set(xlabel="Test max violation (≤ 0 feasible)", ylabel="Test objective")
    if points.empty:
        _no_data(ax)
        return _save(figure, path)
    palette = colours(report.algorithms)
    summary = by_algorithm_and_metric(report.summary)
    x, y = TEST_MAX_VIOLATION, TEST_OBJECTIVE
    for algorithm, seeds in points.groupby(ALGORITHM, sort=True):
        colour = palette[algorithm]
        ax.scatter(seeds[x], seeds[y], color=colour, alpha=0.35, s=14, linewidths=0)
        front = seeds[seeds["on_front"]].sort_values(x)
        ax.step(front[x], front[y], where="post", color=colour, linewidth=0.9, alpha=0.8)
        if (algorithm, x) in summary.index and (algorithm, y) in summary.index:
            sx, sy = summary.loc[(algorithm, x)], summary.loc[(algorithm, y)]
            if not np.isfinite([sx["mean"], sy["mean"], sx["ci_low"], sy["ci_low"]]).all():
                continue  # a diverged seed makes the mean infinite: nothing to place
            ax.errorbar(
                sx["mean"],
                sy["mean"],
                xerr=[[sx["mean"] - sx["ci_low"]], [sx["ci_high"] - sx["mean"]]],
                yerr=[[sy["mean"] - sy["ci_low"]], [sy["ci_high"] - sy["mean"]]],
                color=colour,
                marker="o",
                markersize=7,
                markeredgecolor="black",
                capsize=3,
                label=algorithm,
            )
    ax.legend(loc="best", fontsize="small")
    return _save(figure, path)


def plot_group_rates(report: Report, path: Path | str) -> Path:
    """Per-group test rates (positive rate, TPR, FPR, loss): mean over seeds with 95% CI."""
    figure = Figure(figsize=(4 * len(GROUP_RATE_LABELS), 3.8), layout="constrained")
    axes = figure.subplots(1, len(GROUP_RATE_LABELS), squeeze=False)[0]
    summary = by_algorithm_and_metric(report.summary) if len(report.summary) else None
    algorithms, groups = report.algorithms, report.group_names
    palette = colours(algorithms)
    width = 0.8 / max(1, len(algorithms))
    for ax, (rate, label) in zip(axes, GROUP_RATE_LABELS.items(), strict=True):
        ax.set(title=label, xticks=range(len(groups)), xticklabels=groups)
        drawn = False
        for i, algorithm in enumerate(algorithms):
            keys = [(algorithm, group_rate_column(rate, g)) for g in range(len(groups))]
            if summary is None or not all(k in summary.index for k in keys):
                continue
            rows = summary.loc[keys]
            means = rows["mean"].to_numpy(dtype=float)
            errors = np.abs(rows[["ci_low", "ci_high"]].to_numpy(dtype=float).T - means)
            offsets = np.arange(len(groups)) - 0.4 + width * (i + 0.5)
            ax.bar(
                offsets,
                means,
                width,
                yerr=errors,
                color=palette[algorithm],
                capsize=2,
                label=algorithm,
            )
            drawn = True
        if not drawn:
            _no_data(ax)
    if algorithms:
        axes[0].legend(loc="best", fontsize="small")
    return _save(figure, path)


def plot_profiles(report: Report, path: Path | str) -> Path:
    """Performance profiles: share of seeds with a test value ≤ τ, with Wilson bands."""
    figure = Figure(figsize=(5 * len(COMPARED_METRICS), 3.8), layout="constrained")
    axes = figure.subplots(1, len(COMPARED_METRICS), squeeze=False)[0]
    profiles = report.profiles
    palette = colours(report.algorithms)
    for ax, (metric, label) in zip(axes, COMPARED_METRICS.items(), strict=True):
        ax.set(xlabel=f"τ ({label})", ylabel="Share of seeds ≤ τ", ylim=(-0.02, 1.02))
        panel = profiles[profiles["metric"] == metric] if len(profiles) else profiles
        if panel.empty:
            _no_data(ax)
            continue
        if metric == TEST_MAX_VIOLATION:
            ax.axvline(0.0, color="grey", linewidth=0.8, linestyle="--")
        for algorithm, curve in panel.groupby(ALGORITHM, sort=True):
            colour = palette[algorithm]
            ax.step(curve["tau"], curve["share"], where="post", color=colour, label=algorithm)
            ax.fill_between(
                curve["tau"],
                curve["ci_low"],
                curve["ci_high"],
                step="post",
                color=colour,
                alpha=0.15,
            )
    if palette:
        axes[0].legend(loc="best", fontsize="small")
    return _save(figure, path)


def plot_critical_difference(across: AcrossTasks, path: Path | str) -> Path:
    """Demšar's critical-difference diagram: mean ranks on an axis (1 best, left), a bar of
    length CD, and a thick line under each clique of algorithms not significantly different."""
    ranks = across.mean_ranks.sort_values()
    k = len(ranks)
    figure = Figure(figsize=(7, 1.6 + 0.3 * k), layout="constrained")
    ax = figure.subplots()
    ax.set(xlim=(k + 0.3, 0.7), ylim=(-0.4 * (k + 1), 1.2), yticks=[])
    ax.xaxis.set_ticks_position("top")
    ax.set_xlabel("Mean rank across tasks (1 best)")
    ax.xaxis.set_label_position("top")
    for side in ("left", "right", "bottom"):
        ax.spines[side].set_visible(False)
    for i, (name, rank) in enumerate(ranks.items()):
        y = -0.4 * (i + 1)
        ax.plot([rank, rank], [1.0, y], color="black", linewidth=0.8)
        ax.text(rank, y - 0.05, f"{name} ({rank:.2f})", ha="center", va="top", fontsize="small")
    cd = across.critical_difference
    if np.isfinite(cd):
        ax.plot([1, 1 + cd], [0.75, 0.75], color="black", linewidth=2)
        ax.text(1 + cd / 2, 0.8, f"CD = {cd:.2f}", ha="center", va="bottom", fontsize="small")
    for i, clique in enumerate(across.cliques):
        low, high = ranks[clique].min(), ranks[clique].max()
        y = 0.45 - 0.12 * i
        ax.plot([low - 0.03, high + 0.03], [y, y], color="black", linewidth=4)
    return _save(figure, path)
