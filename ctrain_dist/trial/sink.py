"""Where a trial's rows go: the one interface between the training loop and its launcher.

Why a protocol of two calls: the loop (``loop.py``) and the runner (``runner.py``) know
neither Ray nor SLURM nor the store's files. Each launcher hands them a sink: ``ctrain train``
and SLURM array tasks one that writes the store (``store.sink.StoreSink``), a Tune trial one
that ships rows to the sweep's driver (``launch.ray_sweep.TuneSink``).
"""

from __future__ import annotations

from typing import Any, Protocol


class Sink(Protocol):
    """Receives evaluation rows as they are made and each seed's ``trials`` row at its end.

    Called on the trial's own process(es). A pack of K seeds sends every evaluation point's
    rows of its seeds still training in one ``evals`` call and calls ``finish`` once per seed
    (a failed attempt too: the runner sends each seed's ``error`` row). With several workers
    every rank calls the sink at the same points (Ray Train requires its ``report`` on all
    workers equally often); only rank 0 passes rows, the others pass ``[]`` to ``evals`` and
    ``None`` to ``finish``.
    """

    def evals(self, rows: list[dict[str, Any]]) -> None: ...

    def finish(self, trial_row: dict[str, Any] | None) -> None: ...
