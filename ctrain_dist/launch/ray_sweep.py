"""A sweep spec as a Ray Tune run whose results land in the store.

Ray's place in the package: this module runs sweeps on Ray Tune (and multi-worker trials on
Ray Train inside it); ``launch/slurm`` starts the Ray cluster inside an allocation that this
module's driver then joins (``address``). The trial side knows no Ray: it writes to a sink.

Data path: each trial is one pack (one trial, or seeds trained together) run by
:func:`ctrain_dist.trial.runner.run_pack`, the runner every launcher uses, in a Tune function
trainable with a :class:`TuneSink`, which ships its rows to the driver through
``tune.report``; the driver's :class:`StoreCallback` writes them to the store. Only the driver
writes, so trials need no access to the store's file system and a store never sees two writers
per sweep.

Failures and ``max_failures``: a trial that raises is retried in its own process by
``run_pack`` (``attempts = max_failures + 1``), each failed attempt an ``error`` row per seed
that reaches the store like any row. What ``run_pack`` cannot catch, an actor that dies or a
multi-worker trial (whose ranks re-raise, see ``runner``), Tune retries up to
``max_failures`` times, and the callback records an ``error`` row per seed of each failure.

Before Ray starts: resources are checked against this machine (Ray waits forever on a request
that cannot fit, so it is refused up front) and trials the store already shows finished are
dropped, so a resumed sweep never re-runs them.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import ray
import ray.train
import torch
from ray import tune
from ray.train import RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from ray.tune.experiment import Trial
from ray.tune.integration.ray_train import TuneReportCallback

from ctrain_dist import store as store_module
from ctrain_dist.data.config import AdultDataSpec
from ctrain_dist.data.load import prepare_data
from ctrain_dist.errors import SpecError
from ctrain_dist.launch.plan import pending_trials, plan_packs
from ctrain_dist.spec import SweepSpec, TrialSpec
from ctrain_dist.store.schema import (
    CONFIG_LABEL,
    ENDED_AT,
    ERROR,
    MAX_VIOLATION,
    OBJECTIVE,
    SEED,
    STARTED_AT,
    STATUS,
    STATUS_ERROR,
    TEST,
    TRIAL_ID,
    final_column,
)
from ctrain_dist.trial import runner
from ctrain_dist.trial.records import error_row

_TIMESTAMP_COLUMNS = (STARTED_AT, ENDED_AT)
FLUSH_SECONDS = 5.0
"""How often the driver writes buffered rows, so a running sweep is visible to readers."""


def _encode(rows: list[dict[str, Any]] | dict[str, Any]) -> str:
    return json.dumps(rows, default=lambda v: v.isoformat() if isinstance(v, datetime) else str(v))


def _decode_trial_row(text: str) -> dict[str, Any]:
    row = json.loads(text)
    for key in _TIMESTAMP_COLUMNS:
        row[key] = datetime.fromisoformat(row[key])
    return row


class TuneSink:
    """The loop's sink inside a Tune trial: every batch of rows becomes one ``report``."""

    def evals(self, rows: list[dict[str, Any]]) -> None:
        tune.report({"ctrain_evals": _encode(rows)})

    def finish(self, trial_row: dict[str, Any] | None) -> None:
        if trial_row is not None:
            tune.report({"ctrain_trial": _encode(trial_row)})


def pack_of(config: dict[str, Any]) -> list[TrialSpec]:
    """The trials of a Tune trial's config: one seed, or seeds trained together (a pack)."""
    return [TrialSpec.model_validate(trial) for trial in config["pack"]]


def run_trial(config: dict[str, Any]) -> None:
    """The Tune function trainable: one pack of the spec through the runner, every seed's
    rows (its ``error`` rows included) to the driver."""
    runner.run_pack(pack_of(config), TuneSink(), attempts=config["attempts"])


@dataclass
class SweepOutcome:
    """What happened: counts by status, and the trials skipped as already finished."""

    total: int
    skipped: int
    statuses: dict[str, int] = field(default_factory=dict)

    @property
    def failed(self) -> int:
        return self.statuses.get(STATUS_ERROR, 0)


class StoreCallback(tune.Callback):
    """Driver side: buffers rows from trial results and flushes them to the store.

    A trial's outcome is the status of its latest ``trials`` row: an ``error`` row of an
    attempt that was retried (in its process by ``run_pack``, or by Tune) is stored, and
    superseded by the rows of the attempt after it.
    """

    def __init__(
        self, writer: store_module.StoreWriter, total: int, log: Callable[[str], None]
    ) -> None:
        self.writer = writer
        self.total = total
        self.log = log
        self.evals: list[dict[str, Any]] = []
        self.trials: list[dict[str, Any]] = []
        self.latest: dict[str, str] = {}
        """Trial id → the status of its latest ``trials`` row."""
        self.last_flush = time.monotonic()

    @property
    def statuses(self) -> dict[str, int]:
        """Counts of the trials' outcomes (their latest rows' statuses)."""
        return dict(Counter(self.latest.values()))

    def on_trial_result(
        self,
        iteration: int,
        trials: list[Trial],
        trial: Trial,
        result: dict[str, Any],
        **info: Any,
    ) -> None:
        if "ctrain_evals" in result:
            self.evals.extend(json.loads(result["ctrain_evals"]))
        if "ctrain_trial" in result:
            self._record(_decode_trial_row(result["ctrain_trial"]))
        if time.monotonic() - self.last_flush > FLUSH_SECONDS:
            self.flush()

    def on_trial_error(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        self._record_failure(trial, retrying=False)

    def on_trial_recover(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        self._record_failure(trial, retrying=True)

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        self.flush()

    def _record_failure(self, trial: Trial, retrying: bool) -> None:
        """An ``error`` row for every seed of a Tune trial that failed outside ``run_pack``."""
        text = str(trial.get_error() or "trial raised; see the Tune log")
        for spec in pack_of(trial.config):
            self._record(error_row(spec, text), retrying)
        self.flush()

    def _record(self, row: dict[str, Any], retrying: bool = False) -> None:
        self.trials.append(row)
        self.latest[row[TRIAL_ID]] = row[STATUS]
        label = f"{row[CONFIG_LABEL]} seed {row[SEED]}"
        if retrying:
            self.log(f"  {label}: {row[STATUS]}, retrying")
            return
        objective = row.get(final_column(TEST, OBJECTIVE))
        violation = row.get(final_column(TEST, MAX_VIOLATION))
        if objective is not None and violation is not None:
            detail = f"test objective {objective:.4f}, test max violation {violation:.4f}"
        else:
            detail = ((row.get(ERROR) or "").strip().splitlines() or [""])[-1]
        self.log(f"[{len(self.latest)}/{self.total}] {label}: {row[STATUS]}, {detail}")

    def flush(self) -> None:
        self.writer.write_evals(self.evals)
        self.writer.write_trials(self.trials)
        self.evals, self.trials = [], []
        self.last_flush = time.monotonic()


WRAPPER_CPUS = 0.01
"""CPU asked by the Tune trial that drives a Ray Train run: it only waits, but Ray needs a
non-zero request for it, and that request must be counted when checking that a trial fits."""


def check_resources(spec: SweepSpec, cpus: int, gpus: int) -> None:
    """Refuse a per-trial request this machine can never satisfy (Ray would wait forever)."""
    request = spec.resources
    workers = request.workers_per_trial
    wrapper = WRAPPER_CPUS if workers > 1 else 0.0
    needed = request.cpus_per_trial + wrapper
    if needed > cpus:
        layout = f" ({workers} workers × {request.cpus_per_trial / workers:g} + {wrapper:g})"
        raise SpecError(
            "resources",
            f"a trial asks {needed:g} CPUs{layout if workers > 1 else ''} but this machine "
            f"has {cpus}; lower resources.cpus_per_trial or resources.workers_per_trial",
        )
    if request.gpus_per_trial > gpus:
        raise SpecError(
            "resources.gpus_per_trial",
            f"asks {request.gpus_per_trial:g} GPUs per trial but this machine has {gpus}",
        )


class RayTrainSink:
    """The sink of a multi-worker trial: every rank reports equally often (Ray Train requires
    it); Tune receives rank 0's report, which carries the rows."""

    def evals(self, rows: list[dict[str, Any]]) -> None:
        ray.train.report({"ctrain_evals": _encode(rows)})

    def finish(self, trial_row: dict[str, Any] | None) -> None:
        ray.train.report({"ctrain_trial": _encode(trial_row) if trial_row else ""})


def _ray_train_worker(config: dict[str, Any]) -> None:
    """One Ray Train worker: the process group is Ray's; the loop joins it. An exception is
    raised by ``run_pack`` on every rank (see ``runner``): Tune records and retries it."""
    os.environ["LOCAL_RANK"] = str(ray.train.get_context().get_local_rank())
    runner.run_pack([TrialSpec.model_validate(config["trial"])], RayTrainSink())


def run_trial_with_workers(config: dict[str, Any]) -> None:
    """The Tune trainable of a multi-worker trial: a Ray Train TorchTrainer, metrics to Tune."""
    (trial,) = pack_of(config)  # several workers: never packed (spec.require_single_process_packs)
    workers = config["workers"]
    per_worker = {"CPU": config["cpus_per_trial"] / workers}
    if config["gpus_per_trial"]:
        per_worker["GPU"] = config["gpus_per_trial"] / workers
    TorchTrainer(
        _ray_train_worker,
        train_loop_config={"trial": trial.model_dump(mode="json")},
        scaling_config=ScalingConfig(
            num_workers=workers,
            use_gpu=bool(config["gpus_per_trial"]),
            resources_per_worker=per_worker,
        ),
        run_config=RunConfig(
            name=f"{trial.trial_id}-{uuid.uuid4().hex[:8]}",
            storage_path=config["storage_path"],
            callbacks=[TuneReportCallback()],
        ),
    ).fit()


def _trainable(spec: SweepSpec, store_root: Path) -> tuple[Any, dict[str, Any]]:
    """The Tune trainable and its fixed config, for one or several workers per trial."""
    request = spec.resources
    if request.workers_per_trial == 1:
        resources = {"cpu": request.cpus_per_trial, "gpu": request.gpus_per_trial}
        return tune.with_resources(run_trial, resources), {"attempts": spec.max_failures + 1}
    fixed = {
        "workers": request.workers_per_trial,
        "cpus_per_trial": request.cpus_per_trial,
        "gpus_per_trial": request.gpus_per_trial,
        "storage_path": str((store_root / "_train").resolve()),
    }
    return tune.with_resources(run_trial_with_workers, {"cpu": WRAPPER_CPUS}), fixed


def _max_concurrent(spec: SweepSpec, cpus: int) -> int | None:
    """Multi-worker trials: no more wrappers than there is room for their workers, since a
    wrapper that started without room for its workers would hold its slot while waiting."""
    request = spec.resources
    if request.workers_per_trial == 1:
        return request.max_concurrent_trials
    room = max(1, int(cpus // (request.cpus_per_trial + WRAPPER_CPUS)))
    return min(room, request.max_concurrent_trials or room)


def run_sweep(
    spec: SweepSpec,
    store_root: Path,
    *,
    resume: bool = False,
    log: Callable[[str], None] = print,
    address: str | None = None,
) -> SweepOutcome:
    """Run every trial of ``spec`` not yet finished in the store, on a local Ray.

    With ``address`` (``host:port`` of a running cluster's GCS, e.g. the one ``slurm`` starts
    inside an allocation) the driver joins that cluster instead of starting a local Ray.
    """
    check_resources(spec, os.cpu_count() or 1, torch.cuda.device_count())
    pending, skipped = pending_trials(spec, store_root, resume)
    if pending and not isinstance(spec.data, AdultDataSpec):
        # Built once here, before any job: a data problem exits 2 instead of failing trials,
        # and trials on this node map the finished cache instead of racing to build it.
        prepare_data(spec.data, spec.split)
    outcome = SweepOutcome(total=len(pending) + skipped, skipped=skipped)
    if skipped:
        log(f"{skipped} of {outcome.total} trials already finished in the store; skipping them")
    if not pending:
        return outcome

    # Both read when Ray starts and when Tune builds its callbacks, not when Ray is imported.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    where = {"address": address} if address else {"num_cpus": os.cpu_count()}
    ray.init(
        **where,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.ERROR,
        ignore_reinit_error=True,
    )
    try:
        writer = store_module.StoreWriter(store_root, spec.name)
        callback = StoreCallback(writer, len(pending), log)
        packs = plan_packs(spec, pending, log)  # the pending seeds only: resume is exact
        trainable, fixed = _trainable(spec, store_root)
        tuner = tune.Tuner(
            trainable,
            param_space={
                "pack": tune.grid_search(
                    [[t.model_dump(mode="json") for t in pack] for pack in packs]
                ),
                **fixed,
            },
            tune_config=tune.TuneConfig(
                reuse_actors=spec.resources.reuse_actors and spec.resources.workers_per_trial == 1,
                max_concurrent_trials=_max_concurrent(spec, os.cpu_count() or 1),
            ),
            run_config=tune.RunConfig(
                name=spec.name,
                storage_path=str((store_root / "_tune").resolve()),
                callbacks=[callback],
                failure_config=tune.FailureConfig(max_failures=spec.max_failures),
                verbose=0,
            ),
        )
        on = f"the Ray cluster at {address}" if address else "a local Ray"
        packed = f" in {len(packs)} packs" if len(packs) < len(pending) else ""
        log(f"running {len(pending)} trials{packed} of sweep {spec.name!r} on {on}")
        tuner.fit()
        callback.flush()
        outcome.statuses = callback.statuses
    finally:
        ray.shutdown()
    return outcome
