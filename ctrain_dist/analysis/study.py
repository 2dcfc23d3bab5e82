"""Which sweeps a report covers, and in which role: tasks, selection and confirmation.

A store may hold several sweeps. Pooling their rows would mix data sets, and would mix a
sweep whose configurations were *selected* on its seeds with its ``<name>-confirm`` sweep,
which re-ran the selected configurations on fresh seeds precisely so that the confirmation is
free of the selection's optimism. So a report never pools sweeps:

* each sweep that is not a confirmation is a *task* (its data, constraints and budget);
* a task's ``<name>-confirm`` sweep is its *confirmation*, reported beside, never merged;
* several tasks form a study across tasks, summarised by the aggregates of ``stats.tasks``
  (each task's confirmation runs where it has them, else its selection runs).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ctrain_dist.analysis.confirm import CONFIRM_SUFFIX

SELECTION, CONFIRMATION = "selection", "confirmation"


@dataclass(frozen=True)
class Task:
    """One task of a study: its selection sweep and, when run, its confirmation sweep."""

    name: str
    selection: str | None
    confirmation: str | None

    @property
    def parts(self) -> list[tuple[str, str]]:
        """(role, sweep id) of each sweep the task has, selection first."""
        found = [(SELECTION, self.selection), (CONFIRMATION, self.confirmation)]
        return [(role, sweep) for role, sweep in found if sweep is not None]


def base_name(sweep_id: str) -> str:
    """The task a sweep belongs to: its own name, or the name its ``-confirm`` suffix extends."""
    return sweep_id.removesuffix(CONFIRM_SUFFIX)


def plan_study(available: Sequence[str], chosen: Sequence[str] | None = None) -> list[Task]:
    """The tasks of the sweeps ``chosen`` (default: every sweep ``available``), by name.

    Naming either a sweep or its confirmation brings in both, when the store holds both.

    Raises:
        KeyError: for a chosen sweep that is not available.
    """
    present = set(available)
    for sweep in chosen or ():
        if sweep not in present:
            raise KeyError(sweep)
    names = sorted({base_name(sweep) for sweep in (chosen or available)})
    return [
        Task(
            name,
            name if name in present else None,
            f"{name}{CONFIRM_SUFFIX}" if f"{name}{CONFIRM_SUFFIX}" in present else None,
        )
        for name in names
    ]
