"""What a report says, laid out as a ``Document``: formatting only, every number from stats.

Every claim carries its n, its interval method and its family: the tables show n (and the
diverged and errored counts) per algorithm, each section names the method behind its
intervals, and the verdicts name their family (hypotheses, correction, per-test α).
"""

from __future__ import annotations

from collections.abc import Callable

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
    Settings,
    by_algorithm_and_metric,
    group_rate_column,
)
from ctrain_dist.analysis.report.document import Block, Document, Figure, Section, Table
from ctrain_dist.analysis.stats.pairwise import TESTS
from ctrain_dist.store.schema import ALGORITHM

FIGURES: dict[str, str] = {
    "convergence.png": "Test objective and test max violation against samples drawn and training "
    "time: median over seeds with the interquartile band, drawn where at least half of an "
    "algorithm's seeds have reached.",
    "pareto.png": "Test objective against test max violation: one dot per seed, each "
    "algorithm's mean with its 95% Student t interval, and each algorithm's Pareto front "
    "through its seeds.",
    "profiles.png": "Performance profiles: the share of seeds whose test value is at most τ, with "
    "Wilson 95% bands; at τ = 0 the violation profile is the feasibility rate (diverged seeds "
    "never count).",
    "group_rates.png": "Per-group test rates: mean over seeds with 95% Student t intervals.",
}
CD_FIGURE = "critical_difference.png"
LOCATION_METHODS = stats.INTERVAL_METHODS


def number(value: float | None) -> str:
    """Four significant digits; ``∞`` for an infinite value; ``n/a`` for one that is missing."""
    if value is None or np.isnan(value):
        return "n/a"
    if np.isinf(value):
        return "∞" if value > 0 else "−∞"
    return f"{value:.4g}"


def p_value(value: float) -> str:
    if not np.isfinite(value):
        return "n/a"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def interval(row: pd.Series, prefix: str = "") -> str:
    """``estimate [low, high]``; ``worst (k diverged)`` when diverged seeds make it infinite."""
    estimate = row["mean" if not prefix else prefix.rstrip("_")]
    if np.isinf(estimate) and row.get("diverged", 0):
        return f"worst ({int(row['diverged'])} diverged)"
    low, high = row[f"{prefix}ci_low"], row[f"{prefix}ci_high"]
    return f"{number(estimate)} [{number(low)}, {number(high)}]"


def mean_std(row: pd.Series) -> str:
    if np.isinf(row["mean"]) and row.get("diverged", 0):
        return f"worst ({int(row['diverged'])} diverged)"
    if not np.isfinite(row["mean"]):
        return "n/a"
    return f"{number(row['mean'])} ± {number(row['std'])}"


def feasible_cell(row: pd.Series) -> str:
    return (
        f"{row['count']}/{row['n']} ({number(100 * row['share'])}%) "
        f"[{number(row['ci_low'])}, {number(row['ci_high'])}]"
    )


def _lookup(summary: pd.DataFrame, algorithm: str, metric: str, cell: Callable) -> str:
    key = (algorithm, metric)
    return cell(summary.loc[key]) if key in summary.index else "n/a"


def settings_line(settings: Settings) -> str:
    """The settings every statistic below is computed under, in one sentence."""
    return (
        f"Feasible: test max violation ≤ {settings.tolerance:g} (feasibility tolerance) and not "
        f"diverged; a diverged seed counts as infeasible and as the worst seed on every metric, "
        f"whatever its row says; errored trials carry no measurement and are left out (counted). "
        f"α = {settings.alpha:g} family-wise."
    )


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
            "whose median validation violation is within the tolerance first, then the lowest "
            "median validation objective; else the least violation; diverged seeds count as "
            "the worst value); every result below is on test, across seeds of the selected "
            "configuration.",
            settings_line(report.settings),
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


def results_table(report: Report) -> Table:
    """n, diverged, errored, mean [95% t CI] of the table metrics and feasibility, per algorithm."""
    summary = by_algorithm_and_metric(report.summary)
    rows = [
        [
            feasible[ALGORITHM],
            str(feasible["n"]),
            str(feasible["diverged"]),
            str(feasible["errored"]),
            *(_lookup(summary, feasible[ALGORITHM], m, interval) for m in TABLE_METRICS),
            feasible_cell(feasible),
        ]
        for _, feasible in report.feasibility.iterrows()
    ]
    header = [
        "Algorithm",
        "n",
        "Diverged",
        "Errored",
        *TABLE_METRICS.values(),
        "Feasible on test [95% CI]",
    ]
    return Table(header, rows)


def _results(report: Report) -> Section:
    return Section(
        "Results on test",
        [
            f"n: seeds measured (errored trials left out). Cells: mean over the n seeds [95% "
            f"{LOCATION_METHODS['mean']}]. Feasible: seeds meeting the constraints on test, with "
            "the Wilson 95% interval of that share.",
            results_table(report),
        ],
    )


def _robust(report: Report) -> Section:
    summary = by_algorithm_and_metric(report.summary)
    rows = [
        [
            algorithm,
            label,
            _lookup(summary, algorithm, metric, lambda r: str(r["n"])),
            _lookup(summary, algorithm, metric, lambda r: interval(r, "median_")),
            _lookup(summary, algorithm, metric, lambda r: interval(r, "iqm_")),
            _lookup(summary, algorithm, metric, lambda r: number(r["std"])),
        ]
        for algorithm in report.algorithms
        for metric, label in COMPARED_METRICS.items()
    ]
    header = ["Algorithm", "Metric", "n", "Median [95% CI]", "IQM [95% CI]", "Std"]
    return Section(
        "Robust aggregates",
        [
            "Median and interquartile mean (IQM, the mean of the middle half of seeds) stay "
            "finite while fewer than half (a quarter) of the seeds diverge. Median: "
            f"{LOCATION_METHODS['median']} (with n ≤ 5 seeds [min, max], which covers "
            f"{number(100 * stats.median_interval_coverage(5))}% at n = 5); IQM: "
            f"{LOCATION_METHODS['iqm']}.",
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
            "Mean ± std over seeds (descriptive). AUC_M: mean of per-group AUCs; Ind: "
            "|PR₀−PR₁|; Sp: |TPR₀−TPR₁|+|FPR₀−FPR₁|; Ina: error rate; Sf: |PPV₀−PPV₁|+|NPV₀−NPV₁|; "
            "Wd: Wasserstein-1 distance between the groups' predicted probabilities; |L0−L1|: gap "
            "of the groups' mean losses. With more than two groups, the worst pair.",
            table,
        ],
    )


def verdict_cell(row: pd.Series) -> str:
    if pd.isna(row["winner"]):  # None, or NaN once pandas has aligned the column
        return "no significant difference"
    return f"**{row['winner']}** better ({row['basis']})"


def verdict_rows(verdicts: pd.DataFrame) -> list[list[str]]:
    """One formatted row per pair: feasibility, objective among feasible seeds, verdict."""
    return [
        [
            f"{r['a']} vs {r['b']}",
            f"{r['n_a']} / {r['n_b']}",
            f"{r['feasible_a']}/{r['n_a']} vs {r['feasible_b']}/{r['n_b']}",
            f"{number(r['rate_diff'])} [{number(r['rate_diff_low'])}, "
            f"{number(r['rate_diff_high'])}]",
            f"{p_value(r['rate_p'])} / {p_value(r['rate_p_holm'])}",
            f"{r['pairing']}, {r['objective_n_a']} / {r['objective_n_b']}",
            f"{number(r['mean_diff'])} [{number(r['diff_low'])}, {number(r['diff_high'])}]",
            f"{p_value(r['objective_p'])} / {p_value(r['objective_p_holm'])}",
            f"{p_value(r['rank_p'])} (floor {p_value(r['rank_min_p'])})",
            f"{number(r['poi'])} [{number(r['poi_low'])}, {number(r['poi_high'])}]",
            number(r["seeds_needed"]),
            verdict_cell(r),
        ]
        for _, r in verdicts.iterrows()
    ]


VERDICT_HEADER = [
    "Pair (a vs b)",
    "n a / b",
    "Feasible a vs b",
    "Rate a − b [Newcombe 95%]",
    "Barnard p raw / Holm",
    "Pairing, n feasible a / b",
    "Objective a − b among feasible [95% t]",
    "t p raw / Holm",
    "Rank check p (smallest attainable)",
    "P(a better), lexicographic [95% bootstrap]",
    "Seeds for 80% power at α/m",
    "Verdict",
]


def unreachable_notes(verdicts: pd.DataFrame) -> list[str]:
    """Where a test cannot reach significance at this n and family size, say so."""
    notes = []
    for _, r in verdicts.iterrows():
        cut = r["family_alpha"]
        pair = f"{r['a']} vs {r['b']}"
        if r["rate_min_p"] >= cut:
            notes.append(
                f"{pair}: the feasibility test cannot be significant at {r['n_a']} vs "
                f"{r['n_b']} seeds in this family: its smallest attainable p, "
                f"{p_value(r['rate_min_p'])}, is not below α/m = {cut:.3g}."
            )
        if np.isnan(r["objective_p"]):
            notes.append(
                f"{pair}: the objective among feasible seeds is not tested ("
                f"{r['objective_n_a']} / {r['objective_n_b']} feasible seeds, or no variation)."
            )
        rank_name = TESTS[r["pairing"]][3]
        if r["rank_min_p"] >= cut:
            notes.append(
                f"{pair}: the rank check ({rank_name}) cannot be significant at "
                f"{r['objective_n_a']} / {r['objective_n_b']} feasible seeds: its smallest "
                f"attainable p, {p_value(r['rank_min_p'])}, is not below α/m = {cut:.3g}."
            )
    return notes


def family_line(verdicts: pd.DataFrame, alpha: float) -> str:
    """The family of the verdicts: hypotheses, correction, per-test α, tests by pairing."""
    first = verdicts.iloc[0]
    pairings = sorted(set(verdicts["pairing"]))
    tests = "; ".join(
        f"{pairing}: {TESTS[pairing][2]}, rank check {TESTS[pairing][3]}" for pairing in pairings
    )
    return (
        f"Family: {first['family']} hypotheses ({len(verdicts)} pair(s) × {{feasibility rate, "
        f"objective among feasible seeds}}), Holm-corrected at α = {alpha:g} (α/m = "
        f"{first['family_alpha']:.3g}). Feasibility: Barnard's exact test, Newcombe's hybrid "
        f"score interval. Objective: {tests}. Seeds are paired when both sides' feasible seeds "
        "are the same seeds (same seed: same initialisation and data order), unpaired "
        "otherwise. Verdict, lexicographic: a significant feasibility difference decides; "
        "else a significant objective difference; else none. P(a better) compares every seed "
        "of a with every seed of b, feasible before infeasible, then by objective (diverged "
        "last)."
    )


def verdict_blocks(verdicts: pd.DataFrame, alpha: float) -> list[Block]:
    if verdicts.empty:
        return ["Fewer than two algorithms: nothing to compare."]
    notes = unreachable_notes(verdicts)
    blocks: list[Block] = [
        family_line(verdicts, alpha),
        Table(VERDICT_HEADER, verdict_rows(verdicts)),
    ]
    return blocks + (
        ["**Cannot reach significance or not tested:** " + " ".join(notes)] if notes else []
    )


def descriptive_rows(descriptive: pd.DataFrame, labels: dict[str, str]) -> list[list[str]]:
    return [
        [
            labels.get(r["metric"], r["metric"]),
            f"{r['a']} vs {r['b']}",
            f"{r['pairing']}, {r['n_a']} / {r['n_b']}",
            f"{number(r['mean_diff'])} [{number(r['diff_low'])}, {number(r['diff_high'])}]",
            p_value(r["p"]),
            p_value(r["rank_p"]),
            f"{number(r['poi'])} [{number(r['poi_low'])}, {number(r['poi_high'])}]",
        ]
        for _, r in descriptive.iterrows()
    ]


DESCRIPTIVE_HEADER = [
    "Metric",
    "Pair (a vs b)",
    "Pairing, n a / b",
    "Mean a − b [95% t]",
    "t p (raw)",
    "Rank p (raw)",
    "P(a better) [95% bootstrap]",
]


def descriptive_blocks(descriptive: pd.DataFrame, labels: dict[str, str]) -> list[Block]:
    if descriptive.empty:
        return []
    return [
        "**Descriptive, not tested:** secondary metrics over all measured seeds (diverged "
        "seeds worst, which leaves the t columns undefined), raw p-values outside any family; "
        "they describe, they do not decide. Metrics another one determines are left out (Ind "
        "is the DP gap, Ina is 1 − accuracy, a lone constraint's gap is its max violation).",
        Table(DESCRIPTIVE_HEADER, descriptive_rows(descriptive, labels)),
    ]


def _verdicts(report: Report) -> Section:
    labels = {**COMPARISON_METRICS, **TABLE_METRICS}
    return Section(
        "Pairwise verdicts",
        [
            *verdict_blocks(report.verdicts, report.settings.alpha),
            *descriptive_blocks(report.descriptive, labels),
        ],
    )


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
            f"Mean over seeds [95% {LOCATION_METHODS['mean']}] (descriptive).",
            Table(["Algorithm", "Group", *GROUP_RATE_LABELS.values()], rows),
        ],
    )


def _figures(prefix: str) -> Section:
    return Section(
        "Figures", [Figure(f"{prefix}{name}", caption) for name, caption in FIGURES.items()]
    )


def part_sections(report: Report, prefix: str = "", heading: str = "") -> list[Section]:
    """The sections of one sweep's report; ``heading`` leads each title, ``prefix`` each PNG."""
    if not report.status_counts:
        sections = [Section("", ["No trials to report."])]
    else:
        sections = [
            _overview(report),
            Section("Selected configurations", [configurations_table(report.configurations)]),
            _results(report),
            _robust(report),
            _paper(report),
            _verdicts(report),
            _groups(report),
        ]
    sections = [s for s in sections if s is not None] + [_figures(prefix)]
    if not heading:
        return sections
    return [Section(f"{heading}: {s.title}" if s.title else heading, s.blocks) for s in sections]


def latex_tables(report: Report, suffix: str = "") -> list[tuple[Table, str, str]]:
    """(table, caption, label) of the tables worth pasting into a paper."""
    tables = [
        (
            results_table(report),
            "Test results per algorithm (configuration selected on validation): n seeds "
            "measured, diverged and errored; mean over seeds [95% Student t interval]; "
            "feasible: share of seeds meeting the constraints on test [Wilson 95%].",
            f"tab:ctrain-results{suffix}",
        )
    ]
    paper = paper_table(report.summary, report.algorithms)
    if paper is not None:
        tables.append(
            (paper, "Fairness metrics on test: mean ± std over seeds.", f"tab:ctrain-fair{suffix}")
        )
    return tables


def comparison_document(comparison: Comparison) -> Document:
    """``ctrain report --compare A B``: the pair's verdict, then descriptive differences."""
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
        for m in comparison.summary["metric"].unique()
    ]
    feasible = [
        [name, str(feasibility.loc[name, "n"]), feasible_cell(feasibility.loc[name])]
        for name in (a, b)
        if name in feasibility.index
    ]
    return Document(
        f"`{a}` vs `{b}`",
        [
            Section("", [settings_line(comparison.settings)]),
            Section("Selected configurations", [configurations_table(comparison.configurations)]),
            Section(
                "Means on test",
                [
                    f"Mean over seeds [95% {LOCATION_METHODS['mean']}]; the last column says "
                    "which direction is better.",
                    Table(["Metric", a, b, "Better"], means),
                    Table(["Algorithm", "n", "Feasible on test [95% CI]"], feasible),
                ],
            ),
            Section(
                "Verdict",
                [
                    *verdict_blocks(comparison.verdict, comparison.settings.alpha),
                    *descriptive_blocks(comparison.descriptive, COMPARISON_METRICS),
                ],
            ),
        ],
    )
