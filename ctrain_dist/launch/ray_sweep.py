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

Before Ray starts (:func:`preflight`, which ``--dry-run`` runs too): resources and the device
are checked against this machine (Ray waits forever on a request that cannot fit, so it is
refused up front), the store must be writable and readable whole, and trials it already shows
finished are dropped, so a resumed sweep never re-runs them. The driver holds the sweep's
driver lock (``plan.driver_lock``) from planning to its last flush.

A local Ray is private to the sweep: every server binds to the loopback interface, and the
cluster requires a token (``RAY_AUTH_MODE=token``) kept in a 0600 file inside a 0700 folder
made for this run and removed after it (:func:`_private_ray`).

Checkpoints: each pack saves to ``<store>/_checkpoints/<sweep>/<pack>.pt`` (``plan``), so a
retried or resumed pack continues from its last checkpoint as a new attempt.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
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
from ray.tune.schedulers import TrialScheduler
from ray.tune.search import Searcher

from ctrain_dist import store as store_module
from ctrain_dist.data.cache import open_tabular
from ctrain_dist.data.config import AdultDataSpec, CustomDataSpec
from ctrain_dist.data.load import prepare_data
from ctrain_dist.errors import SpecError
from ctrain_dist.launch.plan import (
    checkpoint_path,
    driver_lock,
    drop_finished_checkpoint,
    pending_trials,
    plan_packs,
    prepare_compile_cache,
)
from ctrain_dist.launch.progress import ProgressCallback
from ctrain_dist.launch.score import STEP_KEY, PackScore
from ctrain_dist.launch.user_code import user_python_path
from ctrain_dist.spec import SweepSpec, TrialSpec, require_batch_fits, require_device
from ctrain_dist.store.layout import require_writable_root
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
    STATUS_STOPPED,
    STEPS,
    TEST,
    TRIAL_ID,
    final_column,
)
from ctrain_dist.trial import runner
from ctrain_dist.trial.probe import check_plugins
from ctrain_dist.trial.records import error_row, trial_row

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
    """The loop's sink inside a Tune trial: every batch of rows becomes one ``report``, with
    the pack's tuning score beside it (``launch.score``: what a searcher or scheduler reads)."""

    def __init__(self, tolerance: float = 0.0) -> None:
        self.score = PackScore(tolerance)

    def evals(self, rows: list[dict[str, Any]]) -> None:
        tune.report({"ctrain_evals": _encode(rows), **self.score.evals(rows)})

    def finish(self, trial_row: dict[str, Any] | None) -> None:
        if trial_row is not None:
            tune.report({"ctrain_trial": _encode(trial_row), **self.score.finish(trial_row)})


def pack_of(config: dict[str, Any]) -> list[TrialSpec]:
    """The trials of a Tune trial's config: one seed, or seeds trained together (a pack)."""
    return [TrialSpec.model_validate(trial) for trial in config["pack"]]


def run_trial(config: dict[str, Any]) -> None:
    """The Tune function trainable: one pack of the spec through the runner, every seed's
    rows (its ``error`` rows included) to the driver."""
    pack = pack_of(config)
    checkpoint = checkpoint_path(Path(config["store_root"]), pack)
    prepare_compile_cache(Path(config["store_root"]), pack)
    sink = TuneSink(config.get("tolerance", 0.0))
    rows = runner.run_pack(pack, sink, attempts=config["attempts"], checkpoint=checkpoint)
    drop_finished_checkpoint(checkpoint, rows)


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

    def on_trial_complete(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        """A ``stopped`` row for each seed of a pack that ended without its own row: the
        tuning scheduler (ASHA) stopped it, and the row makes that verdict terminal."""
        step = (trial.last_result or {}).get(STEP_KEY, 0)
        for spec in pack_of(trial.config):
            if spec.trial_id not in self.latest:
                reason = f"stopped early by the tuning scheduler at step {step}"
                row = trial_row(spec, uuid.uuid4().hex, STATUS_STOPPED, error=reason)
                self._record({**row, STEPS: step})

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
        """Evaluation rows first, then trial rows (see ``store.sink``); each buffer is emptied
        once its file is written, so a failed flush is retried without writing a row twice."""
        self.writer.write_evals(self.evals)
        self.evals = []
        self.writer.write_trials(self.trials)
        self.trials = []
        self.last_flush = time.monotonic()


WRAPPER_CPUS = 0.01
"""CPU asked by the Tune trial that drives a Ray Train run: it only waits, but Ray needs a
non-zero request for it, and that request must be counted when checking that a trial fits."""


def check_resources(spec: SweepSpec, cpus: int, gpus: int) -> None:
    """Refuse a per-trial request this machine can never satisfy (Ray would wait forever),
    and CUDA where there is none or where trials are given no GPU."""
    require_device(spec, gpus)
    request = spec.resources
    if spec.training.device == "cuda" and request.gpus_per_trial == 0:
        raise SpecError(
            "resources.gpus_per_trial",
            "0 with training.device cuda: Ray would hide every GPU from the trials; "
            "ask for a GPU share or set training.device to auto",
        )
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
    checkpoint = Path(config["checkpoint"])  # every rank resumes from it; rank 0 saves it
    rows = runner.run_pack(
        [TrialSpec.model_validate(config["trial"])], RayTrainSink(), checkpoint=checkpoint
    )
    drop_finished_checkpoint(checkpoint, rows)  # rows: rank 0's only


def run_trial_with_workers(config: dict[str, Any]) -> None:
    """The Tune trainable of a multi-worker trial: a Ray Train TorchTrainer, metrics to Tune."""
    (trial,) = pack_of(config)  # several workers: never packed (spec.require_single_process_packs)
    workers = config["workers"]
    per_worker = {"CPU": config["cpus_per_trial"] / workers}
    if config["gpus_per_trial"]:
        per_worker["GPU"] = config["gpus_per_trial"] / workers
    TorchTrainer(
        _ray_train_worker,
        train_loop_config={
            "trial": trial.model_dump(mode="json"),
            "checkpoint": str(checkpoint_path(Path(config["store_root"]), [trial])),
        },
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
        fixed = {
            "attempts": spec.max_failures + 1,
            "store_root": str(store_root.resolve()),
            "tolerance": spec.analysis.feasibility_tolerance,
        }
        return tune.with_resources(run_trial, resources), fixed
    fixed = {
        "workers": request.workers_per_trial,
        "cpus_per_trial": request.cpus_per_trial,
        "gpus_per_trial": request.gpus_per_trial,
        "storage_path": str((store_root / "_train").resolve()),
        "store_root": str(store_root.resolve()),
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


def preflight(spec: SweepSpec, store_root: Path, resume: bool) -> tuple[list[TrialSpec], int]:
    """Every check that can run before Ray, then the pending trials and how many are finished
    (see :func:`~ctrain_dist.launch.plan.pending_trials`); ``--dry-run`` runs exactly this."""
    check_resources(spec, os.cpu_count() or 1, torch.cuda.device_count())
    require_writable_root(store_root, "--store")
    check_plugins(spec)  # user code on one minibatch (trial.probe), for library callers too
    pending, skipped = pending_trials(spec, store_root, resume)
    if pending and not isinstance(spec.data, AdultDataSpec | CustomDataSpec):
        # Built once here, before any job: a data problem exits 2 instead of failing trials,
        # and trials on this node map the finished cache instead of racing to build it.
        entry = prepare_data(spec.data, spec.split)
        require_batch_fits(spec, open_tabular(entry.path).splits["train"].numel())
    return pending, skipped


@contextlib.contextmanager
def _private_ray() -> Iterator[dict[str, Any]]:
    """The settings of a local Ray reachable by this user only; yields ``ray.init`` options.

    Ray turns a loopback ``_node_ip_address`` into the machine's address unless it believes
    clusters are off (``ray_constants.ENABLE_RAY_CLUSTER``, read when the address is chosen;
    the environment variable carries it to Ray's processes), and then binds every server to
    loopback. Ray reads ``RAY_AUTH_MODE`` into its C++ config when it is imported, so the
    config and the token cache are reloaded after the settings change and after they are
    restored (what Ray's own ``authentication_test_utils.reset_auth_token_state`` does).
    tests/test_security.py reads /proc/net/tcp and the token's mode to notice if any of this
    ever changes.
    """
    from ray._private import ray_constants  # private: see the docstring
    from ray._raylet import AuthenticationTokenLoader, Config

    def reload_auth() -> None:
        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()

    folder = Path(tempfile.mkdtemp(prefix="ctrain-ray-"))  # 0700, an unpredictable name
    token = folder / "token"
    fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_hex(32))
    settings = {
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token),
        ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR: "0",
    }
    saved = {name: os.environ.get(name) for name in settings}
    enabled = ray_constants.ENABLE_RAY_CLUSTER
    os.environ.update(settings)
    ray_constants.ENABLE_RAY_CLUSTER = False
    reload_auth()
    try:
        # address "local": a new Ray of this run's own, never one found through RAY_ADDRESS or
        # the last `ray start` on this machine (another user's, or a SLURM test's, whose token
        # differs: joining it fails with InvalidAuthToken, or worse, succeeds).
        yield {"address": "local", "num_cpus": os.cpu_count(), "_node_ip_address": "127.0.0.1"}
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = enabled
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        reload_auth()
        shutil.rmtree(folder, ignore_errors=True)


@dataclass
class TuneSearch:
    """What a tuning study adds to the plain grid of pending packs (``launch.search``): a
    searcher suggesting up to ``samples`` more packs (holding ``trials`` trials; ``skipped``
    are the finished ones its history holds), a scheduler stopping packs early, or both."""

    searcher: Searcher | None = None
    scheduler: TrialScheduler | None = None
    samples: int = 0
    trials: int = 0
    skipped: int = 0


def run_sweep(
    spec: SweepSpec,
    store_root: Path,
    *,
    resume: bool = False,
    log: Callable[[str], None] = print,
    address: str | None = None,
    search: Callable[[], TuneSearch] | None = None,
) -> SweepOutcome:
    """Run every trial of ``spec`` not yet finished in the store, on a local Ray.

    With ``address`` (``host:port`` of a running cluster's GCS, e.g. the one ``slurm`` starts
    inside an allocation) the driver joins that cluster instead of starting a local Ray.
    ``search`` builds the tuning study's searcher and scheduler, under the driver lock, from
    the store as it then is.

    Every refusal comes before the store is touched; the plan is then made again under the
    driver lock, since another driver may have run trials between the two.
    """
    pending, skipped = preflight(spec, store_root, resume)
    if not pending and search is None:
        return _report_skipped(SweepOutcome(total=skipped, skipped=skipped), log)
    with driver_lock(spec, store_root):
        pending, skipped = pending_trials(spec, store_root, resume)
        plan = search() if search else TuneSearch()
        skipped += plan.skipped
        total = len(pending) + plan.trials + skipped
        outcome = _report_skipped(SweepOutcome(total=total, skipped=skipped), log)
        if pending or plan.samples:
            _run_on_ray(spec, store_root, pending, outcome, log, address, plan)
    return outcome


def _report_skipped(outcome: SweepOutcome, log: Callable[[str], None]) -> SweepOutcome:
    if outcome.skipped:
        log(
            f"{outcome.skipped} of {outcome.total} trials already finished in the store; "
            "skipping them"
        )
    return outcome


def _run_on_ray(
    spec: SweepSpec,
    store_root: Path,
    pending: list[TrialSpec],
    outcome: SweepOutcome,
    log: Callable[[str], None],
    address: str | None,
    search: TuneSearch,
) -> None:
    """Start (or join) Ray, tune ``pending``, and stop Ray again."""
    # Both read when Ray starts and when Tune builds its callbacks, not when Ray is imported.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    # Tune's new output engine prints its experiment table even at verbose=0; the legacy one
    # at verbose=0 prints nothing, so ``launch.progress`` is the only display.
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    with contextlib.ExitStack() as stack:
        where = {"address": address} if address else stack.enter_context(_private_ray())
        python_path = user_python_path(spec)  # user modules reach every worker of the job
        ray.init(
            **where,
            runtime_env={"env_vars": {"PYTHONPATH": python_path}} if python_path else None,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.ERROR,
            ignore_reinit_error=True,
        )
        stack.callback(ray.shutdown)
        _tune(spec, store_root, pending, outcome, log, address, search)


def _tune(
    spec: SweepSpec,
    store_root: Path,
    pending: list[TrialSpec],
    outcome: SweepOutcome,
    log: Callable[[str], None],
    address: str | None,
    search: TuneSearch,
) -> None:
    """The Tune run of ``pending`` on the Ray this process is connected to: the grid of their
    packs, or, with a searcher, its suggestions (which then include the pending packs)."""
    writer = store_module.StoreWriter(store_root, spec.name)
    callback = StoreCallback(writer, len(pending) + search.trials, log)
    progress = ProgressCallback(callback, spec.analysis.feasibility_tolerance, spec.name, log)
    packs = plan_packs(spec, pending, log)  # the pending seeds only: resume is exact
    trainable, fixed = _trainable(spec, store_root)
    grid = [[t.model_dump(mode="json") for t in pack] for pack in packs]
    tuner = tune.Tuner(
        trainable,
        param_space={**({} if search.searcher else {"pack": tune.grid_search(grid)}), **fixed},
        tune_config=tune.TuneConfig(
            search_alg=search.searcher,
            scheduler=search.scheduler,
            num_samples=search.samples if search.searcher else 1,
            reuse_actors=spec.resources.reuse_actors and spec.resources.workers_per_trial == 1,
            max_concurrent_trials=_max_concurrent(spec, os.cpu_count() or 1),
        ),
        run_config=tune.RunConfig(
            name=spec.name,
            storage_path=str((store_root / "_tune").resolve()),
            callbacks=[callback, progress],  # progress reads the store callback's counts
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            verbose=0,
        ),
    )
    on = f"the Ray cluster at {address}" if address else "a local Ray"
    packed = f" in {len(packs)} packs" if len(packs) < len(pending) else ""
    log(f"running {len(pending)} trials{packed} of sweep {spec.name!r} on {on}")
    with progress:
        tuner.fit()
    callback.flush()
    outcome.statuses = callback.statuses
