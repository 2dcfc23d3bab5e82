"""What a report says, laid out as a ``Document``: formatting only, every number from stats."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ctrain_dist.analysis import stats
from ctrain_dist.analysis.report.build import (
    COMPARED_METRICS,
    COMPARISON_METRICS,
    GROUP_RATE_LABELS,
    HIGHER_IS_BETTER,
    PAPER_COLUMNS,
    TABLE_METRICS,
    Comparison,
    Report,
    by_algorithm_and_metric,
    group_rate_column,
)
from ctrain_dist.analysis.report.document import Document, Figure, Section, Table
from ctrain_dist.store.schema import ALGORITHM

FIGURES: dict[str, str] = {
    "convergence.png": "Test objective and test max violation against samples drawn and training "
    "time: median over seeds with the interquartile band, drawn where at least half of an "
    "algorithm's seeds have reached.",
    "pareto.png": "Test objective against test max violation: one dot per seed, each "
    "algorithm's mean with 95% bootstrap CIs, and each algorithm's Pareto front through its seeds.",
    "profiles.png": "Performance profiles: the share of seeds whose test value is at most τ, with "
    "Wilson 95% bands; at τ = 0 the violation profile is the feasibility rate.",
    "group_rates.png": "Per-group test rates: mean over seeds with 95% bootstrap CIs.",
}


def number(value: float | None) -> str:
    """Four significant digits; ``n/a`` for a value that does not exist."""
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.4g}"


def p_value(value: float) -> str:
    if not np.isfinite(value):
        return "n/a"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def interval(row: pd.Series, prefix: str = "") -> str:
    estimate = row["mean" if not prefix else prefix.rstrip("_")]
    low, high = row[f"{prefix}ci_low"], row[f"{prefix}ci_high"]
    return f"{number(estimate)} [{number(low)}, {number(high)}]"


def mean_std(row: pd.Series) -> str:
    if not np.isfinite(row["mean"]):
        return "n/a"
    return f"{number(row['mean'])} ± {number(row['std'])}"


def feasible_cell(row: pd.Series) -> str:
    return (
        f"{row['count']}/{row['n']} ({number(100 * row['share'])}%) "
        f"[{number(row['ci_low'])}, {number(row['ci_high'])}]"
    )


def _lookup(summary: pd.DataFrame, algorithm: str, metric: str, cell) -> str:
    key = (algorithm, metric)
    return cell(summary.loc[key]) if key in summary.index else "n/a"


def _overview(report: Report) -> Section:
    counts = ", ".join(f"{status} {n}" for status, n in report.status_counts.items())
    total = sum(report.status_counts.values())
    data = ", ".join(report.datasets) or "not recorded"
    synthetic = any("synthetic" in name.lower() for name in [*report.datasets, *report.group_names])
    return Section(
        "",
        [
            f"{total} trials ({counts or 'none'}) from {report.attempts} attempts.",
            f"Data: {data}."
            + (" **SYNTHETIC data: not a finding about real people.**" if synthetic else ""),
            "Protocol: each algorithm's configuration is selected on validation (configurations "
            "whose median validation violation is ≤ 0 first, then the lowest median validation "
            "objective; else the least violation); every result below is on test, across seeds "
            "of the selected configuration.",
        ],
    )


def configurations_table(configurations: pd.DataFrame) -> Table:
    """Per algorithm: the selected configuration, how many were tried, its seeds."""
    rows = [
        [r[ALGORITHM], r["selected"], str(r["configurations"]), str(r["seeds"])]
        for _, r in configurations.iterrows()
    ]
    header = ["Algorithm", "Selected configuration", "Configurations tried", "Seeds"]
    return Table(header, rows)


def _configurations(report: Report) -> Section:
    return Section("Selected configurations", [configurations_table(report.configurations)])


def results_table(report: Report) -> Table:
    """Mean [95% CI] of the table metrics and the feasibility share, per algorithm."""
    summary = by_algorithm_and_metric(report.summary)
    rows = [
        [
            feasible[ALGORITHM],
            *(_lookup(summary, feasible[ALGORITHM], m, interval) for m in TABLE_METRICS),
            feasible_cell(feasible),
        ]
        for _, feasible in report.feasibility.iterrows()
    ]
    header = ["Algorithm", *TABLE_METRICS.values(), "Feasible on test [95% CI]"]
    return Table(header, rows)


def _results(report: Report) -> Section:
    return Section(
        "Results on test",
        [
            "Cells: mean over seeds [95% bootstrap CI]. Feasible: seeds whose test max violation "
            "is ≤ 0, with the Wilson 95% interval of that share (errored trials left out, "
            "diverged ones counted infeasible).",
            results_table(report),
        ],
    )


def _robust(report: Report) -> Section:
    summary = by_algorithm_and_metric(report.summary)
    rows = [
        [
            algorithm,
            label,
            _lookup(summary, algorithm, metric, lambda r: interval(r, "median_")),
            _lookup(summary, algorithm, metric, lambda r: interval(r, "iqm_")),
            _lookup(summary, algorithm, metric, lambda r: number(r["std"])),
        ]
        for algorithm in report.algorithms
        for metric, label in COMPARED_METRICS.items()
    ]
    header = ["Algorithm", "Metric", "Median [95% CI]", "IQM [95% CI]", "Std"]
    return Section(
        "Robust aggregates",
        [
            "Median and interquartile mean (IQM, the mean of the middle half of seeds) resist a "
            "few diverged or lucky seeds; CIs by percentile bootstrap over seeds.",
            Table(header, rows),
        ],
    )


def paper_table(summary: pd.DataFrame, algorithms: list[str]) -> Table | None:
    """Mean ± std over seeds of the paper's test metrics, or None if the store has none."""
    indexed = by_algorithm_and_metric(summary)
    present = [m for m in PAPER_COLUMNS if m in set(summary["metric"])]
    if not present:
        return None
    rows = [[a, *(_lookup(indexed, a, m, mean_std) for m in present)] for a in algorithms]
    return Table(["Algorithm", *(PAPER_COLUMNS[m] for m in present)], rows)


def _paper(report: Report) -> Section | None:
    table = paper_table(report.summary, report.algorithms)
    if table is None:
        return None
    return Section(
        "Fairness metrics on test (the paper's)",
        [
            "Mean ± std over seeds. AUC_M: mean of per-group AUCs; Ind: |PR₀−PR₁|; Sp: "
            "|TPR₀−TPR₁|+|FPR₀−FPR₁|; Ina: error rate; Sf: |PPV₀−PPV₁|+|NPV₀−NPV₁|; Wd: "
            "Wasserstein-1 distance between the groups' predicted probabilities; |L0−L1|: gap "
            "of the groups' mean losses. With more than two groups, the worst pair.",
            table,
        ],
    )


def _matrix(pairwise: pd.DataFrame, metric: str, algorithms: list[str]) -> Table:
    """Cell (row r, column c): mean(r) − mean(c) and the Holm-corrected Welch p-value."""
    cells = {}
    for _, row in pairwise[pairwise["metric"] == metric].iterrows():
        mark = "*" if row["significant"] else ""
        p = p_value(row["welch_p_holm"])
        cells[(row["a"], row["b"])] = f"{number(row['mean_diff'])} (p {p}){mark}"
        cells[(row["b"], row["a"])] = f"{number(-row['mean_diff'])} (p {p}){mark}"
    rows = [[r, *(cells.get((r, c), "—") for c in algorithms)] for r in algorithms]
    return Table([COMPARED_METRICS[metric], *algorithms], rows)


def pairwise_rows(pairwise: pd.DataFrame, labels: dict[str, str]) -> list[list[str]]:
    """One formatted row per metric × pair: effects, P(improvement), corrected p, seeds."""
    return [
        [
            labels.get(r["metric"], r["metric"]),
            f"{r['a']} vs {r['b']}",
            number(r["mean_diff"]),
            number(r["cohens_d"]),
            number(r["cliffs_delta"]),
            f"{number(r['poi'])} [{number(r['poi_low'])}, {number(r['poi_high'])}]",
            f"{p_value(r['welch_p'])} / {p_value(r['welch_p_holm'])}",
            f"{p_value(r['mwu_p'])} / {p_value(r['mwu_p_holm'])}",
            p_value(r["welch_p_bh"]),
            number(r["seeds_needed"]),
        ]
        for _, r in pairwise.iterrows()
    ]


PAIRWISE_HEADER = [
    "Metric",
    "Pair (a vs b)",
    "Mean a − b",
    "Cohen's d",
    "Cliff's δ",
    "P(a better) [95% CI]",
    "Welch p raw / Holm",
    "Mann–Whitney p raw / Holm",
    "Welch p BH",
    "Seeds for 80% power",
]


def _significance(report: Report) -> Section:
    title = "Pairwise comparisons"
    if report.pairwise.empty:
        return Section(title, ["Fewer than two algorithms: nothing to compare."])
    family = len(report.pairwise)
    blocks: list = [
        f"Welch's t-test over seeds for every pair of algorithms; p-values Holm-corrected over "
        f"the {family} comparisons (pairs × metrics) of this section; * marks p < "
        f"{stats.SIGNIFICANCE}. Matrix cell (row, column): mean(row) − mean(column) "
        "(lower is better for both metrics), then the corrected p.",
    ]
    blocks += [_matrix(report.pairwise, m, report.algorithms) for m in COMPARED_METRICS]
    blocks += [
        "Details: effect sizes (Cohen's d on the pooled deviation, Cliff's δ = P(a > b) − "
        "P(a < b)), the probability that a seed of a beats a seed of b (bootstrap CI), "
        "Mann–Whitney U as a rank-based check, Benjamini–Hochberg (false discovery rate) "
        "beside Holm, and the seeds per algorithm Welch's test would need for 80% power at "
        "the observed difference (noncentral t, this sweep as the pilot).",
        Table(PAIRWISE_HEADER, pairwise_rows(report.pairwise, COMPARED_METRICS)),
    ]
    return Section(title, blocks)


def _groups(report: Report) -> Section | None:
    groups = report.group_names
    summary = by_algorithm_and_metric(report.summary)
    if not groups:
        return None
    rows = [
        [
            algorithm,
            name,
            *(
                _lookup(summary, algorithm, group_rate_column(rate, g), interval)
                for rate in GROUP_RATE_LABELS
            ),
        ]
        for algorithm in report.algorithms
        for g, name in enumerate(groups)
    ]
    return Section(
        "Per-group rates on test",
        [
            "Mean over seeds [95% bootstrap CI].",
            Table(["Algorithm", "Group", *GROUP_RATE_LABELS.values()], rows),
        ],
    )


def _figures() -> Section:
    return Section("Figures", [Figure(name, caption) for name, caption in FIGURES.items()])


def report_document(report: Report) -> Document:
    """The whole sweep report; an empty store gives a title and a one-line note."""
    kind = "sweep" if len(report.sweep_ids) == 1 else "sweeps"
    sweeps = ", ".join(f"`{s}`" for s in report.sweep_ids) or "(none)"
    title = f"Constrained-training report: {kind} {sweeps}"
    if not report.status_counts:
        return Document(title, [Section("", ["No trials to report."]), _figures()])
    sections = [
        _overview(report),
        _configurations(report),
        _results(report),
        _robust(report),
        _paper(report),
        _significance(report),
        _groups(report),
        _figures(),
    ]
    return Document(title, [s for s in sections if s is not None])


def latex_tables(report: Report) -> list[tuple[Table, str, str]]:
    """(table, caption, label) of the tables worth pasting into a paper."""
    tables = [
        (
            results_table(report),
            "Test results per algorithm (configuration selected on validation): mean over seeds "
            "[95% bootstrap CI]; feasible: share of seeds meeting the constraints on test.",
            "tab:ctrain-results",
        )
    ]
    paper = paper_table(report.summary, report.algorithms)
    if paper is not None:
        tables.append(
            (paper, "Fairness metrics on test: mean ± std over seeds.", "tab:ctrain-fair")
        )
    return tables


def comparison_document(comparison: Comparison) -> Document:
    """``ctrain report --compare A B``: every test, effect size and P(improvement)."""
    a, b = comparison.a, comparison.b
    summary = by_algorithm_and_metric(comparison.summary)
    feasibility = comparison.feasibility.set_index(ALGORITHM)
    means = [
        [
            COMPARISON_METRICS[m],
            _lookup(summary, a, m, interval),
            _lookup(summary, b, m, interval),
            "higher" if m in HIGHER_IS_BETTER else "lower",
        ]
        for m in comparison.tests["metric"]
    ]
    feasible = [
        [name, feasible_cell(feasibility.loc[name])] for name in (a, b) if name in feasibility.index
    ]
    family = len(comparison.tests)
    return Document(
        f"`{a}` vs `{b}`",
        [
            Section("Selected configurations", [configurations_table(comparison.configurations)]),
            Section(
                "Means on test",
                [
                    "Mean over seeds [95% bootstrap CI]; the last column says which direction is "
                    "better.",
                    Table(["Metric", a, b, "Better"], means),
                    Table(["Algorithm", "Feasible on test [95% CI]"], feasible),
                ],
            ),
            Section(
                "Tests and effect sizes",
                [
                    f"p-values corrected over the {family} metrics below (Holm: family-wise error; "
                    "BH: false discovery rate). P(a better): probability that a seed of "
                    f"`{a}` beats a seed of `{b}` on that metric.",
                    Table(PAIRWISE_HEADER, pairwise_rows(comparison.tests, COMPARISON_METRICS)),
                ],
            ),
        ],
    )
