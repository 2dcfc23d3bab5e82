"""A study's report: each task's selection and confirmation apart, then across tasks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ctrain_dist.analysis.report.across import AcrossTasks, build_across
from ctrain_dist.analysis.report.build import Report, Settings, build_report
from ctrain_dist.analysis.study import Task, plan_study
from ctrain_dist.store import Store


@dataclass(frozen=True)
class TaskReport:
    """One task: a report per sweep it has (selection, then confirmation)."""

    task: Task
    parts: list[Report]

    @property
    def contributes(self) -> Report:
        """The report whose runs the across-task section uses: confirmation when run."""
        return self.parts[-1]


@dataclass(frozen=True)
class StudyReport:
    tasks: list[TaskReport]
    across: AcrossTasks | None
    settings: Settings

    @property
    def parts(self) -> list[Report]:
        return [part for task in self.tasks for part in task.parts]


def build_study(
    store: Store, sweeps: Sequence[str] | None = None, settings: Settings | None = None
) -> StudyReport:
    """Plan the study (``analysis.study``) and build every part's report and the aggregates.

    Raises:
        KeyError: for a named sweep the store does not hold, or a baseline a sweep lacks.
    """
    settings = settings or Settings()
    tasks = [
        TaskReport(task, [build_report(store, sweep, settings, role) for role, sweep in task.parts])
        for task in plan_study(store.sweeps(), sweeps)
    ]
    across = build_across({t.task.name: t.contributes for t in tasks}, settings)
    return StudyReport(tasks, across, settings)
