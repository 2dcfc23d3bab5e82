"""The sweep's progress on the driver: a live display on a terminal, plain lines elsewhere.

What it shows, in trials of the store (seeds; a pack of K seeds is K trials): done
(``finished``, ``diverged``; ``stopped`` by a tuning scheduler counted apart), failed (latest
row ``error``), running (seeds of the Tune trials now running), pending (the rest), the ETA
from this run's pace, and per algorithm the best configuration so far by validation under the
rule ``stats.select_configurations`` uses (``BestSoFar``).

Counts come from the :class:`~ctrain_dist.launch.ray_sweep.StoreCallback`, which records every
row: this module reads its ``latest`` statuses and never counts on its own. On a terminal
(stdout is a TTY) a ``rich`` live panel redraws at the bottom while the per-trial lines scroll
above it; in a log or a pipe a plain summary line is printed every tenth of the sweep or
every ``PLAIN_SECONDS``. Ray Tune's own tables stay off (``ray_sweep`` runs Tune silent).
"""

from __future__ import annotations

import json
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any, TextIO

import numpy as np
from ray import tune
from ray.tune.experiment import Trial
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ctrain_dist.store.schema import (
    ALGORITHM,
    CONFIG_LABEL,
    MAX_VIOLATION,
    OBJECTIVE,
    STATUS,
    STATUS_DIVERGED,
    STATUS_ERROR,
    STATUS_FINISHED,
    STATUS_STOPPED,
    TRIAL_ID,
    VAL,
    final_column,
)

PLAIN_SECONDS = 30.0
"""At most this long between two plain summary lines (besides one per tenth of the sweep)."""
REFRESH_PER_SECOND = 2
BAR_WIDTH = 40
"""Columns of the bar, drawn as text: rich's own ``ProgressBar`` takes the terminal's width
and the live panel then hides the line after it (seen in tmux)."""
VAL_OBJECTIVE = final_column(VAL, OBJECTIVE)
VAL_MAX_VIOLATION = final_column(VAL, MAX_VIOLATION)


class BestSoFar:
    """Each algorithm's best configuration among the rows seen, by validation.

    The rule of ``stats.select_configurations`` on the rows so far (the launcher may not
    import the analysis; tests/test_progress.py checks that the two agree): per configuration
    the median over its measured seeds of the validation objective and violation, a diverged
    seed +inf on both, errored seeds left out; the feasible configuration (median violation
    ≤ tolerance) with the lowest median objective, else the least median violation; ties to
    the first configuration label in sort order.
    """

    def __init__(self, tolerance: float) -> None:
        self.tolerance = tolerance
        self.seeds: dict[str, dict[str, dict[str, tuple[float, float]]]] = defaultdict(dict)
        """algorithm → configuration → trial id → (objective, violation) of its latest row."""

    def record(self, row: dict[str, Any]) -> None:
        """Take a trial's latest row (a retry replaces the seed's earlier attempt)."""
        configs = self.seeds[row[ALGORITHM]]
        seeds = configs.setdefault(row[CONFIG_LABEL], {})
        trial = row[TRIAL_ID]
        if row[STATUS] not in (STATUS_FINISHED, STATUS_DIVERGED):
            seeds.pop(trial, None)  # an error (or a stop) measures nothing
            return
        if row[STATUS] == STATUS_DIVERGED:
            seeds[trial] = (np.inf, np.inf)
        else:
            seeds[trial] = (_number(row.get(VAL_OBJECTIVE)), _number(row.get(VAL_MAX_VIOLATION)))

    def best(self) -> dict[str, tuple[str, int, float, float, bool]]:
        """Per algorithm with a measured seed: (configuration, seeds, median objective,
        median violation, feasible)."""
        chosen = {}
        for algorithm in sorted(self.seeds):
            medians = [
                (label, len(values), *_medians(list(values.values())))
                for label, values in sorted(self.seeds[algorithm].items())
                if values
            ]
            if medians:
                chosen[algorithm] = self._choose(medians)
        return chosen

    def _choose(self, medians: list[tuple]) -> tuple[str, int, float, float, bool]:
        """``min`` keeps the first of equals: ties go to the first label in sort order."""
        feasible = [m for m in medians if m[3] <= self.tolerance and not np.isnan(m[2])]
        if feasible:
            return (*min(feasible, key=lambda m: m[2]), True)
        measured = [m for m in medians if not np.isnan(m[3])]
        if measured:
            return (*min(measured, key=lambda m: m[3]), False)
        return (*medians[0], False)


def _number(value: Any) -> float:
    return float("nan") if value is None else float(value)


def _medians(values: list[tuple[float, float]]) -> tuple[float, float]:
    """Median of each column, NaN left out (as pandas does); NaN when a column has none."""
    columns = np.array(values, dtype=float).T
    return tuple(
        float(np.median(c[~np.isnan(c)])) if (~np.isnan(c)).any() else np.nan for c in columns
    )


def _clock(seconds: float | None) -> str:
    if seconds is None or not np.isfinite(seconds):
        return "—"
    whole = round(float(seconds))
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def _value(x: float) -> str:
    return "—" if np.isnan(x) else ("∞" if np.isinf(x) else f"{x:.4f}")


class ProgressCallback(tune.Callback):
    """A Tune callback after the store's: reads its counts, draws the progress.

    Args:
        store: the sweep's ``StoreCallback`` (``latest`` statuses, ``total`` trials).
        tolerance: the feasibility tolerance of the selection rule.
        name: the sweep's name, for the heading.
        log: where plain lines go (the sweep's log: stdout, a file, a list's ``append``).
        stream: the terminal a live panel is drawn on, when it is one (stdout).
        clock: seconds, monotonic (a parameter so the ETA can be tested without waiting).
    """

    def __init__(
        self,
        store: Any,
        tolerance: float,
        name: str,
        log: Callable[[str], None] = print,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.name = name
        self.log = log
        self.best = BestSoFar(tolerance)
        self.given_stream = stream
        self.clock = clock
        self.started = clock()
        self.packs: dict[str, int] = {}
        """Tune trial id → seeds in its pack, for the Tune trials now running."""
        self.first_running: float | None = None
        self.live: Live | None = None
        self.last_draw = -np.inf
        self.last_line = (-1, self.started)
        """(tenth of the sweep, time) of the last plain line."""

    def __getstate__(self) -> dict[str, Any]:
        """Tune pickles its callbacks with the experiment state: the stream (a terminal, or a
        test's capture) and the live panel stay behind."""
        return {**self.__dict__, "given_stream": None, "live": None}

    @property
    def stream(self) -> TextIO:
        """The stream given, else the ``sys.stdout`` of the moment (pytest swaps it)."""
        return self.given_stream or sys.stdout

    @property
    def is_terminal(self) -> bool:
        return bool(getattr(self.stream, "isatty", lambda: False)())

    def counts(self) -> dict[str, int]:
        """done, stopped, failed, running, pending: in trials (seeds) of the store."""
        statuses = self.store.statuses
        done = statuses.get(STATUS_FINISHED, 0) + statuses.get(STATUS_DIVERGED, 0)
        stopped = statuses.get(STATUS_STOPPED, 0)
        failed = statuses.get(STATUS_ERROR, 0)
        left = max(0, self.store.total - done - stopped - failed)
        running = min(self.running, left)  # a pack's rows may arrive before Tune ends it
        pending = left - running
        return {
            "done": done,
            "stopped": stopped,
            "failed": failed,
            "running": running,
            "pending": pending,
        }

    def eta(self, counts: dict[str, int]) -> float | None:
        """Seconds left at this run's pace: time since the first trial started × remaining /
        ended (Ray's start-up left out); None before a trial ends."""
        ended = counts["done"] + counts["stopped"] + counts["failed"]
        if not ended or self.first_running is None:
            return None
        remaining = counts["running"] + counts["pending"]
        return (self.clock() - self.first_running) * remaining / ended

    def summary(self) -> str:
        """One line: the counts, elapsed time and ETA."""
        c = self.counts()
        stopped = f", {c['stopped']} stopped" if c["stopped"] else ""
        return (
            f"{self.name}: {c['done']}/{self.store.total} done{stopped}, {c['running']} running, "
            f"{c['failed']} failed, {c['pending']} pending; elapsed "
            f"{_clock(self.clock() - self.started)}, ETA {_clock(self.eta(c))}"
        )

    def best_lines(self) -> list[str]:
        """Per algorithm, its best configuration so far on validation, as plain text."""
        return [
            f"  best {algorithm}: {label} ({seeds} seed{'s' * (seeds != 1)}), val objective "
            f"{_value(objective)}, val violation {_value(violation)}"
            + ("" if feasible else " (none feasible yet: least violation)")
            for algorithm, (
                label,
                seeds,
                objective,
                violation,
                feasible,
            ) in self.best.best().items()
        ]

    def panel(self) -> Group:
        """The live display: summary, bar, and the best-so-far table."""
        c = self.counts()
        table = Table()
        for column in ("Algorithm", "Configuration", "Seeds", "Val objective", "Val violation"):
            table.add_column(column, overflow="fold")
        for algorithm, (label, seeds, objective, violation, ok) in self.best.best().items():
            note = "" if ok else " (infeasible)"
            table.add_row(algorithm, label, str(seeds), _value(objective), _value(violation) + note)
        ended = c["done"] + c["stopped"] + c["failed"]
        filled = BAR_WIDTH * ended // max(1, self.store.total)
        bar = "█" * filled + "░" * (BAR_WIDTH - filled)
        return Group(
            Text(self.summary(), style="bold"),
            Text(f"{bar} {ended}/{self.store.total}"),
            Text("Best so far, by validation (feasible first, median over seeds):"),
            table,
        )

    def __enter__(self) -> ProgressCallback:
        if self.is_terminal:
            console = Console(file=self.stream)
            self.live = Live(
                self.panel(),
                console=console,
                refresh_per_second=REFRESH_PER_SECOND,
                redirect_stdout=True,
                redirect_stderr=False,
            )
            self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.refresh(final=True)
        if self.live is not None:
            self.live.stop()
            self.live = None

    def on_trial_result(
        self, iteration: int, trials: list[Trial], trial: Trial, result: dict[str, Any], **info: Any
    ) -> None:
        if "ctrain_trial" in result:
            self.best.record(json.loads(result["ctrain_trial"]))

    def on_trial_start(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        self.packs[trial.trial_id] = len(trial.config.get("pack", ()))
        if self.first_running is None:
            self.first_running = self.clock()

    def on_trial_complete(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        self.packs.pop(trial.trial_id, None)

    def on_trial_error(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        self.packs.pop(trial.trial_id, None)

    def on_trial_recover(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        self.packs.pop(trial.trial_id, None)  # Tune starts it again: on_trial_start

    @property
    def running(self) -> int:
        """Seeds of the Tune trials started and not yet ended, kept per event: walking Tune's
        trial list on every step would cost the driver O(trials) per step."""
        return sum(self.packs.values())

    def on_step_end(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        self.refresh()

    def refresh(self, final: bool = False) -> None:
        """Redraw the live panel, or print a plain line when one is due (always when final)."""
        now = self.clock()
        if not final and now - self.last_draw < 1 / REFRESH_PER_SECOND:
            return  # counts and medians are not rebuilt on every Tune step
        self.last_draw = now
        if self.live is not None:
            self.live.update(self.panel(), refresh=final)
            return
        c = self.counts()
        ended = c["done"] + c["stopped"] + c["failed"]
        tenth = 10 * ended // max(1, self.store.total)
        if final or tenth > self.last_line[0] or now - self.last_line[1] >= PLAIN_SECONDS:
            self.last_line = (tenth, now)
            self.log("\n".join([self.summary(), *self.best_lines()]))
