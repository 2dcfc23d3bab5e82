"""The one runner of a pack, used by every launcher: ``ctrain train`` (one process or
``--nproc``), the Ray sweep's trainables and SLURM array tasks.

Why one: what happens to a trial that fails (its record, its retries) is then the same
wherever it runs. A pack is one trial, or K seeds of one configuration trained together
(``packed.py``); each seed keeps its own rows and its own ``trials`` row.

Failures:

* one process: an exception in an attempt (loading the data included) is recorded, never
  raised: every seed of the pack gets an ``error`` row through ``sink.finish``, one line is
  logged, and the pack trains again from the start as a new attempt (new attempt ids), up to
  ``attempts`` tries in all. The rows returned are the last attempt's.
* several processes (DDP): every rank calls :func:`run_pack`, and an exception is raised, not
  retried nor recorded here. The other ranks are then waiting in a collective that the failed
  rank will never join, so only the launcher can end them: ``distributed.launch_local``
  terminates the remaining processes, Ray Train its worker group, torchrun its agent. And a
  retry needs a fresh process group. So the launcher records the ``error`` rows and retries:
  ``ctrain train --nproc`` through :func:`retry` around the whole group, the Ray sweep through
  Tune (``on_trial_recover``/``on_trial_error`` and ``max_failures``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ctrain_dist.data.tabular import TabularData
from ctrain_dist.spec import TrialSpec
from ctrain_dist.trial import loop
from ctrain_dist.trial.distributed import world_size
from ctrain_dist.trial.packed import check_pack
from ctrain_dist.trial.records import error_row
from ctrain_dist.trial.sink import Sink


def run_pack(
    trials: Sequence[TrialSpec],
    sink: Sink,
    *,
    data: TabularData | None = None,
    checkpoint: Path | None = None,
    attempts: int = 1,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Train ``trials`` (one, or seeds of one configuration) as one pack; returns one
    ``trials`` row per seed, in their order, also sent to ``sink``.

    ``data``: the pack's data already loaded, else loaded in each attempt. ``checkpoint``: see
    ``loop``. A pack that is not one (seeds that differ in more than their seed, say) is a
    caller's error and raises ``ValueError`` at once. Failures: see the module docstring.
    """
    check_pack(trials)

    def attempt() -> list[dict[str, Any]]:
        return loop.train(trials, sink, data=data, checkpoint=checkpoint)

    if world_size() > 1:
        return attempt()
    return retry(trials, sink, attempt, attempts=attempts, log=log)


def retry(
    trials: Sequence[TrialSpec],
    sink: Sink,
    attempt: Callable[[], list[dict[str, Any]]],
    *,
    attempts: int,
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    """``attempt()`` until it returns, at most ``attempts`` times; each failure sends an
    ``error`` row per seed of ``trials`` to ``sink`` and logs one line. Returns what the last
    try gave: its rows, or the ``error`` rows of its failure."""
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    seeds = ", ".join(str(trial.seed) for trial in trials)
    label = f"{trials[0].config_label} seed{'s' if len(trials) > 1 else ''} {seeds}"
    rows: list[dict[str, Any]] = []
    for number in range(1, attempts + 1):
        try:
            return attempt()
        except Exception as error:  # a failed trial must not stop its launcher
            rows = [error_row(trial, error) for trial in trials]
            for row in rows:
                sink.finish(row)
            again = "; retrying" if number < attempts else ""
            log(f"{label}: attempt {number} of {attempts} failed: {error!r}{again}")
    return rows
