"""Gather the across-task section's frames from the tasks' reports (``stats.tasks``).

Each task contributes the runs of its selected configurations on test — from its
confirmation sweep when it has one (free of the selection's optimism), else from its
selection sweep — and the section says which.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from ctrain_dist.analysis import stats
from ctrain_dist.analysis.report.build import (
    TEST_MAX_VIOLATION,
    TEST_OBJECTIVE,
    Report,
    Settings,
)
from ctrain_dist.analysis.stats import tasks
from ctrain_dist.analysis.stats.outcomes import feasible, measured, worst_scores
from ctrain_dist.store.schema import ALGORITHM, SEED


@dataclass(frozen=True)
class AcrossTasks:
    """The across-task section: aggregates, P(improvement), Friedman and its post-hoc tests.

    Attributes:
        sources: task → the sweep whose runs it contributes.
        runs: the runs frame (``stats.tasks``), with the normalised objective.
        objective: ``tasks.aggregates`` of the normalised test objective.
        feasibility: ``tasks.aggregates`` of the feasibility indicator (mean = rate).
        improvement: per pair, P(a beats b) averaged over tasks, with its CI.
        ranks: tasks × algorithms, each algorithm's rank within each task.
        friedman: ``tasks.friedman`` of ``ranks``.
        critical_difference: Nemenyi's CD at the settings' α.
        posthoc: ``tasks.holm_posthoc`` of ``ranks``.
        cliques: algorithms not significantly different by Nemenyi, for the CD diagram.
    """

    sources: dict[str, str]
    runs: pd.DataFrame
    objective: pd.DataFrame
    feasibility: pd.DataFrame
    improvement: pd.DataFrame
    ranks: pd.DataFrame
    friedman: dict[str, float]
    critical_difference: float
    posthoc: pd.DataFrame
    cliques: list[list[str]] = field(default_factory=list)

    @property
    def mean_ranks(self) -> pd.Series:
        return self.ranks.mean(axis=0)


def task_runs(task: str, report: Report, settings: Settings) -> pd.DataFrame:
    """The runs frame of one task: its selected configurations' measured seeds on test."""
    rows = measured(report.selected)
    return pd.DataFrame(
        {
            tasks.TASK: task,
            ALGORITHM: rows[ALGORITHM].to_numpy(),
            SEED: rows[SEED].to_numpy(),
            tasks.RUN_OBJECTIVE: worst_scores(rows, TEST_OBJECTIVE),
            tasks.RUN_VIOLATION: worst_scores(rows, TEST_MAX_VIOLATION),
            tasks.RUN_FEASIBLE: feasible(rows, TEST_MAX_VIOLATION, settings.tolerance),
        }
    )


def build_across(sources: dict[str, Report], settings: Settings) -> AcrossTasks | None:
    """The across-task frames of ``sources`` (task → the report whose runs it contributes).

    None below two tasks with runs.
    """
    frames = [
        task_runs(task, report, settings)
        for task, report in sources.items()
        if len(report.selected) and TEST_OBJECTIVE in report.selected
    ]
    if len(frames) < 2:
        return None
    runs = pd.concat(frames, ignore_index=True)
    runs[tasks.NORMALISED] = tasks.normalised_scores(runs)
    pairs = stats.pairs_to_compare(sorted(set(runs[ALGORITHM])), settings.baseline)
    improvement = pd.DataFrame(
        [(a, b, *tasks.average_probability_of_improvement(runs, a, b)) for a, b in pairs],
        columns=["a", "b", "poi", "poi_low", "poi_high", "tasks"],
    )
    ranks = tasks.task_ranks(runs)
    k, n_tasks = ranks.shape[1], ranks.shape[0]
    cd = tasks.nemenyi_critical_difference(k, n_tasks, settings.alpha) if k >= 2 else float("nan")
    return AcrossTasks(
        sources={task: report.sweep_ids[0] for task, report in sources.items()},
        runs=runs,
        objective=tasks.aggregates(runs, tasks.NORMALISED),
        feasibility=tasks.aggregates(runs.astype({tasks.RUN_FEASIBLE: float}), tasks.RUN_FEASIBLE),
        improvement=improvement,
        ranks=ranks,
        friedman=tasks.friedman(ranks),
        critical_difference=cd,
        posthoc=tasks.holm_posthoc(ranks) if k >= 2 else pd.DataFrame(),
        cliques=tasks.cliques(ranks.mean(axis=0), cd) if k >= 2 else [],
    )
