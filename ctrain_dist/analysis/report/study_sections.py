"""A study's document: each task's parts under their role, then the across-task section."""

from __future__ import annotations

import pandas as pd

from ctrain_dist.analysis.report.across import AcrossTasks
from ctrain_dist.analysis.report.build import Report
from ctrain_dist.analysis.report.document import Document, Figure, Section, Table
from ctrain_dist.analysis.report.sections import CD_FIGURE, number, p_value
from ctrain_dist.analysis.report.study import StudyReport
from ctrain_dist.analysis.report.tuning_sections import stages_section, tuned_part_sections
from ctrain_dist.analysis.stats import tasks
from ctrain_dist.analysis.study import CONFIRMATION
from ctrain_dist.store.schema import ALGORITHM

ROLE_TEXT: dict[str, str] = {
    "selection": "selection (configurations chosen on these seeds: optimistic)",
    CONFIRMATION: "confirmation (the selected configurations on fresh seeds: unbiased)",
}


def figure_prefix(study: StudyReport, report: Report) -> str:
    """File-name prefix of a part's PNGs: none for a study of one part, else its sweep id."""
    return "" if len(study.parts) <= 1 else f"{report.sweep_ids[0]}."


def _aggregate_rows(frame: pd.DataFrame) -> list[list[str]]:
    return [
        [
            r[ALGORITHM],
            f"{r['tasks']} / {r['runs']}",
            *(
                f"{number(r[name])} [{number(r[f'{name}_low'])}, {number(r[f'{name}_high'])}]"
                for name in tasks.TASK_AGGREGATES
            ),
        ]
        for _, r in frame.iterrows()
    ]


AGGREGATE_HEADER = ["Algorithm", "Tasks / runs", "Mean [95% CI]", "Median [95% CI]", "IQM [95% CI]"]


def across_section(across: AcrossTasks, alpha: float) -> Section:
    """Aggregates with CIs, P(improvement) averaged over tasks, Friedman, post-hoc, CD."""
    sources = ", ".join(f"{task} ← `{sweep}`" for task, sweep in across.sources.items())
    friedman = across.friedman
    ranks = across.mean_ranks.sort_values()
    rank_rows = [[name, number(rank)] for name, rank in ranks.items()]
    posthoc = [
        [f"{r['a']} vs {r['b']}", number(r["z"]), p_value(r["p"]), p_value(r["p_holm"])]
        for _, r in across.posthoc.iterrows()
    ]
    improvement = [
        [
            f"{r['a']} vs {r['b']}",
            str(r["tasks"]),
            f"{number(r['poi'])} [{number(r['poi_low'])}, {number(r['poi_high'])}]",
        ]
        for _, r in across.improvement.iterrows()
    ]
    cliques = "; ".join(", ".join(c) for c in across.cliques) or "none"
    return Section(
        "Across tasks",
        [
            f"Tasks and the sweep each contributes (its confirmation where run): {sources}. "
            "Intervals: percentile bootstrap resampling seeds within each task (stratified, "
            "rliable), 10,000 resamples.",
            "Normalised test objective (per task, 1 = its best seed, 0 = its worst; diverged 0):",
            Table(AGGREGATE_HEADER, _aggregate_rows(across.objective)),
            "Feasibility (share of seeds feasible on test, all tasks):",
            Table(AGGREGATE_HEADER, _aggregate_rows(across.feasibility)),
            "P(a seed of a beats a seed of b), lexicographic (feasible first, then objective), "
            "per task and averaged over tasks:",
            Table(["Pair (a vs b)", "Tasks", "Average P(a better) [95% CI]"], improvement),
            f"Friedman test of equal mean ranks over {friedman['tasks']} tasks × "
            f"{friedman['algorithms']} algorithms (rank within a task: feasibility rate, then "
            f"median objective of feasible seeds): χ² = {number(friedman['statistic'])}, exact "
            f"permutation p = {p_value(friedman['p_exact'])} (chi-square approximation "
            f"{p_value(friedman['p_chi2'])}, unreliable with few tasks).",
            Table(["Algorithm", "Mean rank (1 best)"], rank_rows),
            f"Post-hoc (Demšar 2006): Nemenyi critical difference CD = "
            f"{number(across.critical_difference)} mean ranks at α = {alpha:g} (family: all "
            f"pairs); not significantly different (joined in the diagram): {cliques}. "
            "Holm-corrected z tests of mean ranks:",
            Table(["Pair (a vs b)", "z", "p raw", "p Holm"], posthoc),
            Figure(
                CD_FIGURE,
                "Critical-difference diagram: mean ranks across tasks (1 best); "
                "bars join algorithms whose ranks differ by less than Nemenyi's CD.",
            ),
        ],
    )


def study_document(study: StudyReport) -> Document:
    """The whole report: one part per sweep, headed by task and role, then across tasks."""
    if len(study.parts) <= 1:
        only = study.parts[0] if study.parts else Report([], {}, 0)
        return Document(
            "Constrained-training report: sweep "
            + (", ".join(f"`{s}`" for s in only.sweep_ids) or "(none)"),
            tuned_part_sections(only),
        )
    sections = []
    for task in study.tasks:
        for report in task.parts:
            heading = (
                f"Task {task.task.name}, {ROLE_TEXT[report.role]}, sweep `{report.sweep_ids[0]}`"
            )
            sections += tuned_part_sections(report, figure_prefix(study, report), heading)
        stages = stages_section(task.parts, task.task.name)
        sections += [stages] if stages is not None else []
    if study.across is not None:
        sections.append(across_section(study.across, study.settings.alpha))
    names = ", ".join(f"`{t.task.name}`" for t in study.tasks) or "(none)"
    kind = "task" if len(study.tasks) == 1 else "tasks"
    return Document(f"Constrained-training report: {kind} {names}", sections)
