"""The report of a sweep: a Markdown summary and a convergence figure.

This module decides what to show and how; every number comes from ``ctrain_dist.stats``
(DESIGN.md: report computes nothing it could get from stats). ``build_report`` gathers the
tidy frames, ``render_markdown`` and ``plot_convergence`` only format and draw them, so a
notebook can take a ``Report`` apart and restyle it without recomputing anything.

Protocol: each algorithm's configuration is selected on validation, then every claim is made on
test across seeds; constrained algorithms are compared with an unconstrained baseline by
Welch's t-test, Holm-corrected over all the comparisons in the report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.compute as pc
from matplotlib.figure import Figure

from ctrain_dist import stats
from ctrain_dist.store import Store

TABLE_METRICS: dict[str, str] = {
    "final_test_objective": "Test objective",
    "final_test_max_violation": "Test max violation",
    "final_test_accuracy": "Test accuracy",
    "final_test_dp_gap": "Test DP gap",
}
COMPARED_METRICS: tuple[str, ...] = ("final_test_objective", "final_test_max_violation")
PREFERRED_BASELINE = "sgd"
CURVE_METRICS: dict[str, str] = {
    "objective": "Test objective",
    "max_violation": "Test max violation",
}
CURVE_AXES: dict[str, str] = {"step": "Step", "time_s": "Time (s)"}
STATUS_ORDER: tuple[str, ...] = ("finished", "diverged", "error")
FIGURE_NAME = "convergence.png"


@dataclass(frozen=True)
class Report:
    """Everything a report shows, as tidy frames from ``ctrain_dist.stats``.

    Attributes:
        sweep_ids: the sweeps whose trials were pooled.
        status_counts: kept trials (latest attempt of each) by status.
        attempts: all attempts, retries included.
        constrained: algorithm → whether it trains under the constraint.
        baseline: the unconstrained algorithm compared against, or None if there is none.
        summary: ``stats.summarise`` of the selected configurations on the test metrics.
        feasibility: ``stats.feasibility`` of the selected configurations on test.
        comparisons: ``stats.compare_to_baseline`` of constrained algorithms vs ``baseline``.
        convergence: ``stats.convergence_bands`` of test curves, against step and time.
    """

    sweep_ids: list[str]
    status_counts: dict[str, int]
    attempts: int
    constrained: dict[str, bool] = field(default_factory=dict)
    baseline: str | None = None
    summary: pd.DataFrame = field(default_factory=pd.DataFrame)
    feasibility: pd.DataFrame = field(default_factory=pd.DataFrame)
    comparisons: pd.DataFrame = field(default_factory=pd.DataFrame)
    convergence: pd.DataFrame = field(default_factory=pd.DataFrame)


def build_report(store: Store, sweep_id: str | None = None) -> Report:
    """Read a sweep (or every sweep, pooled) from the store and gather the report's frames."""
    trials = store.trials(sweep_id)
    attempts = len(store.trials(sweep_id, all_attempts=True))
    sweep_ids = [sweep_id] if sweep_id else sorted(set(trials.get("sweep_id", [])))
    status_counts = _status_counts(trials)
    if trials.empty:
        return Report(sweep_ids, status_counts, attempts)
    selected = stats.select_configurations(trials)
    constrained = _constrained(selected)
    baseline = _baseline(constrained)
    metrics = [m for m in TABLE_METRICS if m in selected.columns]
    return Report(
        sweep_ids=sweep_ids,
        status_counts=status_counts,
        attempts=attempts,
        constrained=constrained,
        baseline=baseline,
        summary=stats.summarise(selected, metrics),
        feasibility=stats.feasibility(selected),
        comparisons=_comparisons(selected, constrained, baseline),
        convergence=convergence_frame(_selected_test_evals(store, sweep_id, selected)),
    )


def _status_counts(trials: pd.DataFrame) -> dict[str, int]:
    """Counts in the order finished, diverged, error, then any other status."""
    counts = trials["status"].value_counts() if "status" in trials.columns else pd.Series()
    order = [s for s in STATUS_ORDER if s in counts] + sorted(set(counts.index) - set(STATUS_ORDER))
    return {status: int(counts[status]) for status in order}


def _constrained(trials: pd.DataFrame) -> dict[str, bool]:
    """Algorithm → constrained; an algorithm without the column is taken as constrained."""
    if "constrained" not in trials.columns:
        return dict.fromkeys(sorted(set(trials["algorithm"])), True)
    flags = trials.groupby("algorithm", sort=True)["constrained"].agg(lambda s: bool(s.any()))
    return {str(algorithm): bool(flag) for algorithm, flag in flags.items()}


def _baseline(constrained: dict[str, bool]) -> str | None:
    """``sgd`` if it is an unconstrained algorithm here, else the first unconstrained one."""
    unconstrained = sorted(a for a, flag in constrained.items() if not flag)
    if PREFERRED_BASELINE in unconstrained:
        return PREFERRED_BASELINE
    return unconstrained[0] if unconstrained else None


def _comparisons(
    selected: pd.DataFrame, constrained: dict[str, bool], baseline: str | None
) -> pd.DataFrame:
    """Constrained algorithms vs the baseline only, so Holm's family is exactly what is shown."""
    compared = {a for a, flag in constrained.items() if flag}
    metrics = [m for m in COMPARED_METRICS if m in selected.columns]
    if baseline is None or not compared or not metrics:
        return pd.DataFrame()
    rows = selected[selected["algorithm"].isin(compared | {baseline})]
    return stats.compare_to_baseline(rows, baseline, metrics)


def _selected_test_evals(
    store: Store, sweep_id: str | None, selected: pd.DataFrame
) -> pd.DataFrame:
    """Test-split curves of the selected configurations' kept attempts."""
    columns = ["algorithm", "config_label", "attempt_id", *CURVE_AXES, *CURVE_METRICS]
    labels = sorted(set(selected["config_label"]))
    condition = (pc.field("split") == "test") & pc.field("config_label").isin(labels)
    evals = store.evals(sweep_id, columns=columns, filters=condition)
    if evals.empty:
        return evals
    pairs = pd.MultiIndex.from_frame(selected[["algorithm", "config_label"]].drop_duplicates())
    return evals[pd.MultiIndex.from_frame(evals[["algorithm", "config_label"]]).isin(pairs)]


def convergence_frame(evals: pd.DataFrame) -> pd.DataFrame:
    """``stats.convergence_bands`` of the curve metrics against each axis the evals have."""
    if "split" in evals.columns:
        evals = evals[evals["split"] == "test"]
    metrics = [m for m in CURVE_METRICS if m in evals.columns]
    bands = [
        stats.convergence_bands(evals, metrics, x=axis)
        for axis in CURVE_AXES
        if axis in evals.columns
    ]
    bands = [b for b in bands if not b.empty]
    return pd.concat(bands, ignore_index=True) if bands else pd.DataFrame()


def _number(value: float) -> str:
    """Four significant digits; ``n/a`` for a value that does not exist."""
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.4g}"


def _interval(row: pd.Series) -> str:
    mean, low, high = (_number(row[k]) for k in ("mean", "ci_low", "ci_high"))
    return f"{mean} [{low}, {high}]"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]


def _title(report: Report) -> list[str]:
    sweeps = ", ".join(f"`{s}`" for s in report.sweep_ids) or "(none)"
    kind = "sweep" if len(report.sweep_ids) == 1 else "sweeps"
    counts = ", ".join(f"{status} {n}" for status, n in report.status_counts.items())
    total = sum(report.status_counts.values())
    return [
        f"# Constrained-training report: {kind} {sweeps}",
        "",
        f"{total} trials ({counts or 'none'}) from {report.attempts} attempts.",
    ]


def _results_section(report: Report) -> list[str]:
    summary = report.summary.set_index(["algorithm", "metric"])
    rows = []
    for _, feasible in report.feasibility.iterrows():
        algorithm = feasible["algorithm"]
        cells = [
            _interval(summary.loc[(algorithm, m)]) if (algorithm, m) in summary.index else "n/a"
            for m in TABLE_METRICS
        ]
        share = f"{feasible['count']}/{feasible['n']} ({_number(100 * feasible['share'])}%)"
        rows.append([algorithm, feasible["config_label"], *cells, share])
    header = ["Algorithm", "Selected configuration", *TABLE_METRICS.values(), "Feasible on test"]
    return [
        "## Results on test",
        "",
        "Each algorithm's configuration was selected on validation (feasible median violation "
        "first, then lowest median objective). Cells: mean over seeds [95% bootstrap CI]; "
        "feasible: seeds with test max violation ≤ 0 (errored trials left out).",
        "",
        *_table(header, rows),
    ]


def _comparison_section(report: Report) -> list[str]:
    if report.baseline is None:
        return [
            "## Comparison with an unconstrained baseline",
            "",
            "No unconstrained algorithm in this sweep, so there is no baseline to compare with.",
        ]
    title = f"## Constrained algorithms vs `{report.baseline}`"
    if report.comparisons.empty:
        return [title, "", "No constrained algorithm in this sweep to compare."]
    rows = [
        [
            row["algorithm"],
            TABLE_METRICS[row["metric"]],
            _number(row["mean_diff"]),
            _number(row["t"]),
            _number(row["p_holm"]),
            "yes" if row["significant"] else "no",
        ]
        for _, row in report.comparisons.iterrows()
    ]
    header = ["Algorithm", "Metric", "Mean difference", "Welch t", "p (Holm)", "Significant"]
    return [
        title,
        "",
        f"Mean difference = algorithm − {report.baseline}; Welch's t-test over seeds, p-values "
        f"Holm-corrected over the {len(rows)} comparisons below; significant at p < "
        f"{stats.SIGNIFICANCE}. Untestable comparisons (fewer than 2 seeds, no variance) "
        "show n/a.",
        "",
        *_table(header, rows),
    ]


def render_markdown(report: Report) -> str:
    """The report as Markdown: title and counts, results table, comparisons, figure link."""
    if not report.status_counts:
        return "\n".join([*_title(report), "", "No trials to report.", ""])
    sections = [
        _title(report),
        _results_section(report),
        _comparison_section(report),
        [
            "## Convergence",
            "",
            f"See [{FIGURE_NAME}]({FIGURE_NAME}): test objective and test max violation "
            "against step and time, median over seeds with the interquartile band (drawn where at "
            "least half of an algorithm's seeds have reached).",
        ],
    ]
    return "\n\n".join("\n".join(lines) for lines in sections) + "\n"


def plot_convergence(source: Report | pd.DataFrame, path: Path | str) -> Path:
    """Draw the convergence figure: metrics in columns, axes (step, time) in rows.

    Args:
        source: a ``Report``, or an evals frame (its test split is used) to plot directly.
        path: where to write the PNG.

    Uses ``matplotlib.figure.Figure`` directly rather than pyplot, so drawing never changes the
    caller's backend or leaks figures in a long-running process.
    """
    bands = source.convergence if isinstance(source, Report) else convergence_frame(source)
    algorithms = sorted(set(bands["algorithm"])) if not bands.empty else []
    colours = {algorithm: f"C{i % 10}" for i, algorithm in enumerate(algorithms)}
    figure = Figure(figsize=(5 * len(CURVE_METRICS), 3.5 * len(CURVE_AXES)), layout="constrained")
    grid = figure.subplots(len(CURVE_AXES), len(CURVE_METRICS), squeeze=False)
    for row, (axis, axis_label) in enumerate(CURVE_AXES.items()):
        for column, (metric, metric_label) in enumerate(CURVE_METRICS.items()):
            ax = grid[row][column]
            _draw_panel(ax, bands, axis, metric, colours)
            ax.set(xlabel=axis_label, ylabel=metric_label)
    if algorithms:
        grid[0][0].legend(loc="best", fontsize="small")
    path = Path(path)
    figure.savefig(path, dpi=120)
    return path


def _draw_panel(ax, bands: pd.DataFrame, axis: str, metric: str, colours: dict) -> None:
    """Median line and interquartile band of each algorithm in one panel.

    Only points that at least half of an algorithm's seeds reach are drawn: on a time axis the
    last few points rest on the one slowest seed and would read as a jump in the median.
    """
    if metric == "max_violation":
        ax.axhline(0.0, color="grey", linewidth=0.8, linestyle="--")
    panel = bands[(bands["axis"] == axis) & (bands["metric"] == metric)] if len(bands) else bands
    if panel.empty:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        return
    for algorithm, band in panel.groupby("algorithm", sort=True):
        curve = band[2 * band["n"] >= band["n"].max()]
        colour = colours[algorithm]
        ax.plot(curve["x"], curve["median"], color=colour, label=algorithm)
        ax.fill_between(curve["x"], curve["q25"], curve["q75"], color=colour, alpha=0.2)


def write_report(store: Store, out_dir: Path | str, sweep_id: str | None = None) -> str:
    """Write ``report.md`` and ``convergence.png`` into ``out_dir``; return the Markdown."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = build_report(store, sweep_id)
    markdown = render_markdown(report)
    (out / "report.md").write_text(markdown, encoding="utf-8")
    plot_convergence(report, out / FIGURE_NAME)
    return markdown
