"""A trainer sink that keeps every row in memory, shared by the tests that compare rows.

Why a module: six test files each wrote the same class; ``tests/`` is on ``sys.path`` (as for
``marked_processes``), so each imports this one.
"""

from __future__ import annotations

from typing import Any


class ListSink:
    """Keeps the evaluation rows and the ``trials`` rows a trial sends (``trial.sink.Sink``)."""

    def __init__(self) -> None:
        self.eval_rows: list[dict[str, Any]] = []
        self.trial_rows: list[dict[str, Any]] = []

    def evals(self, rows: list[dict[str, Any]]) -> None:
        self.eval_rows.extend(rows)

    def finish(self, trial_row: dict[str, Any] | None) -> None:
        if trial_row is not None:  # a rank other than 0 sends None
            self.trial_rows.append(trial_row)
