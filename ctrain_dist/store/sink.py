"""A trainer sink that writes straight to the store: ``ctrain train`` and other standalone runs.

Rows are buffered and flushed as one file per table when ``flush_rows`` rows are waiting, when
the oldest waiting row is ``flush_seconds`` old (a timer thread flushes even while the trainer
is busy, so a long trial is visible mid-run), and when the trial finishes.

Order invariant: a flush writes evaluation rows before trial rows, so a reader that sees an
attempt's ``trials`` row also sees every evaluation row sent before it. A process killed
between flushes loses at most its buffer; rows already flushed stay, and readers hide the
evaluation rows of an attempt without a ``trials`` row unless asked for all attempts.
"""

from __future__ import annotations

import threading
from pathlib import Path
from types import TracebackType
from typing import Any

from ctrain_dist.store.write import StoreWriter

FLUSH_SECONDS = 5.0
FLUSH_ROWS = 10_000


class StoreSink:
    """The trainer's ``Sink`` over a :class:`~ctrain_dist.store.StoreWriter` of one sweep.

    Use it as a context manager (or call :meth:`close`) so rows of an attempt that raised are
    flushed too. An error in the timer's flush is raised by the next call.
    """

    def __init__(
        self,
        root: Path | str,
        sweep_id: str,
        *,
        flush_seconds: float = FLUSH_SECONDS,
        flush_rows: int = FLUSH_ROWS,
    ) -> None:
        if flush_seconds <= 0 or flush_rows <= 0:
            raise ValueError("flush_seconds and flush_rows must be positive")
        self.writer = StoreWriter(root, sweep_id)
        self.flush_seconds = flush_seconds
        self.flush_rows = flush_rows
        self._evals: list[dict[str, Any]] = []
        self._trials: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._error: BaseException | None = None

    def evals(self, rows: list[dict[str, Any]]) -> None:
        """Buffer evaluation rows; flush now if ``flush_rows`` are waiting."""
        self._raise_timer_error()
        with self._lock:
            self._evals.extend(rows)
            due = len(self._evals) + len(self._trials) >= self.flush_rows
            if not due and self._timer is None and self._evals:
                self._timer = threading.Timer(self.flush_seconds, self._flush_from_timer)
                self._timer.daemon = True
                self._timer.start()
        if due:
            self.flush()

    def finish(self, trial_row: dict[str, Any] | None) -> None:
        """Buffer the attempt's ``trials`` row and flush everything: the attempt is over.

        ``None`` comes from the ranks other than 0 of a multi-worker trial: nothing to add.
        """
        self._raise_timer_error()
        with self._lock:
            if trial_row is not None:
                self._trials.append(trial_row)
        self.flush()

    def flush(self) -> None:
        """Write what is buffered: evaluation rows first, then trial rows.

        A buffer is emptied only once its file is written, so a failed flush can be retried
        without writing a row twice.
        """
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self.writer.write_evals(self._evals)
            self._evals = []
            self.writer.write_trials(self._trials)
            self._trials = []

    def close(self) -> None:
        self.flush()
        self._raise_timer_error()

    def __enter__(self) -> StoreSink:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _flush_from_timer(self) -> None:
        try:
            self.flush()
        except BaseException as error:  # surfaced on the trainer's thread by the next call
            self._error = error

    def _raise_timer_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error
