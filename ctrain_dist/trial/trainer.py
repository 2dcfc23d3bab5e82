"""The training loop of one trial: budget, evaluation cadence, divergence, records to a sink.

The trainer knows neither Ray nor SLURM: it writes evaluation rows and its final ``trials`` row
to the :class:`Sink` it is given (the sweep hands it one that reports to Tune; ``ctrain train``
one that writes the store directly).

Time axes: ``time_s`` in a record is training time only, evaluation excluded, so that curves of
algorithms with different evaluation costs compare fairly; every record also carries ``step``,
``samples`` and ``epoch``, so analysis can plot against any of the four.
"""

from __future__ import annotations

import json
import math
import os
import time
import traceback
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from ctrain_dist.algorithms import build_algorithm
from ctrain_dist.constraints import ConstrainedProblem, build_constraints
from ctrain_dist.data.load import load_data
from ctrain_dist.data.sampler import MinibatchSampler
from ctrain_dist.data.stratified import StratifiedSampler, build_sampler, design_weights
from ctrain_dist.data.tabular import SPLITS, TabularData
from ctrain_dist.spec import TrialSpec
from ctrain_dist.trial.distributed import (
    Workers,
    any_rank,
    exact_statistics,
    join_workers,
    local_rank,
    local_slice,
    trial_device,
    wrap_model,
)
from ctrain_dist.trial.metrics import evaluate_split
from ctrain_dist.trial.model import build_mlp
from ctrain_dist.trial.records import identity, trial_row, utc_now


class Sink(Protocol):
    """Where a trial's rows go; called on the trial's own process(es).

    With several workers every rank calls the sink at the same points (Ray Train requires its
    ``report`` on all workers equally often); only rank 0 passes rows, the others pass ``[]``
    to ``evals`` and ``None`` to ``finish``.
    """

    def evals(self, rows: list[dict[str, Any]]) -> None: ...

    def finish(self, trial_row: dict[str, Any] | None) -> None: ...


class _Run:
    """The state of one trial while it trains (model, algorithm, sampler, clocks).

    Under data parallelism every rank holds the same model and draws the same global minibatch
    (same seed), takes its slice, and sees global statistics through one all-reduce
    (``distributed.exact_statistics``); only rank 0 evaluates and writes.
    """

    def __init__(
        self, trial: TrialSpec, data: TabularData, workers: Workers, device: torch.device
    ) -> None:
        dtype = getattr(torch, trial.training.dtype)
        self.trial = trial
        self.workers = workers
        self.data = data.to(dtype=dtype, device=device)
        self.device = device
        self.model = trial_model(trial, data.num_features, device)
        self.forward = wrap_model(self.model, workers, device)
        self.problem = ConstrainedProblem(
            build_constraints(trial.constraints, data.num_groups, self.model)
        )
        self.algorithm = build_algorithm(
            trial.algorithm,
            self.model.parameters(),
            self.problem.num_constraints,
            trial.hyperparameters,
        )
        self.sampler = trial_sampler(trial, self.data)
        self.step = 0
        self.train_seconds = 0.0
        self.history: list[dict[str, Any]] = []

    def estimate(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The oracle algorithms call: a fresh minibatch's mean loss and constraint values."""
        rows = self.sampler.next()
        weights = design_weights(self.sampler)
        if self.workers.distributed:
            rows = local_slice(rows, self.workers)
            weights = None if weights is None else local_slice(weights, self.workers)
        logits = self.forward(self.data.features[rows]).squeeze(-1)
        labels, groups = self.data.labels[rows], self.data.groups[rows]
        if not self.workers.distributed:
            return self.problem.loss_and_values(logits, labels, groups, weights)
        stats = self.problem.statistics(logits, labels, groups, weights)
        return self.problem.evaluate(exact_statistics(stats, self.workers))

    def budget_spent(self, segment_seconds: float) -> bool:
        budget = self.trial.training.budget
        if budget.steps is not None:
            return self.step >= budget.steps
        return self.train_seconds + segment_seconds >= budget.seconds

    def evaluate(self, base: dict[str, Any]) -> list[dict[str, Any]]:
        """One row per split at the current point, with all four progress axes."""
        axes = progress_axes(self.step, self.sampler, self.train_seconds)
        multipliers = multiplier_columns(self.algorithm.multipliers())
        rows = []
        for split in SPLITS:
            features, labels, groups = self.data.split(split)
            metrics = evaluate_split(
                self.model, self.problem, features, labels, groups, self.data.num_groups
            )
            rows.append({**base, "split": split, **axes, **metrics, **multipliers})
        self.history.extend(rows)
        return rows

    def state_dict(self) -> dict[str, Any]:
        """Everything that fixes the rest of the trajectory, plus the evaluation history."""
        return {
            "trial_id": self.trial.trial_id,
            "step": self.step,
            "train_seconds": self.train_seconds,
            "model": self.model.state_dict(),
            "algorithm": self.algorithm.state_dict(),
            "sampler": self.sampler.state_dict(),
            "history": self.history,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["trial_id"] != self.trial.trial_id:
            raise ValueError(f"checkpoint of trial {state['trial_id']}, not {self.trial.trial_id}")
        self.step = int(state["step"])
        self.train_seconds = float(state["train_seconds"])
        self.model.load_state_dict(state["model"])
        self.algorithm.load_state_dict(state["algorithm"])
        self.sampler.load_state_dict(state["sampler"])
        self.history = list(state["history"])


def trial_model(trial: TrialSpec, num_features: int, device: torch.device) -> nn.Module:
    """The trial's MLP in its dtype on ``device``, initialised from its seed.

    Seeds torch's global generator: the initialisation depends on the seed alone, so packed
    seeds (``packed.py``) start from exactly the weights their unpacked runs start from.
    """
    torch.manual_seed(trial.seed)
    dtype = getattr(torch, trial.training.dtype)
    return build_mlp(num_features, trial.model.hidden, dtype).to(device)


def trial_sampler(trial: TrialSpec, data: TabularData) -> MinibatchSampler | StratifiedSampler:
    """The trial's minibatch stream over ``data``'s training rows, fixed by its seed."""
    return build_sampler(
        data.splits["train"],
        data.groups,
        data.num_groups,
        trial.training.batch_size,
        trial.training.min_group_count,
        trial.seed,
    )


def progress_axes(
    step: int, sampler: MinibatchSampler | StratifiedSampler, train_seconds: float
) -> dict[str, Any]:
    """The four progress axes every evaluation row carries."""
    return {
        "step": step,
        "samples": sampler.samples_drawn,
        "epoch": sampler.epochs,
        "time_s": train_seconds,
    }


def multiplier_columns(multipliers: torch.Tensor) -> dict[str, float]:
    """``multiplier_<i>`` columns from one model's dual variables (a host read)."""
    return {f"multiplier_{i}": float(v) for i, v in enumerate(multipliers)}


def summary_row(
    trial: TrialSpec,
    attempt_id: str,
    status: str,
    last_rows: list[dict[str, Any]],
    *,
    started_at: datetime,
    device: torch.device,
    steps: int,
    sampler: MinibatchSampler | StratifiedSampler,
    train_seconds: float,
    workers: int,
    problem: ConstrainedProblem,
    data: TabularData,
    packed_with: list[str] | None = None,
) -> dict[str, Any]:
    """The attempt's ``trials`` row: its counters and its last evaluation as ``final_*``."""
    base = identity(trial, attempt_id)
    final = {
        f"final_{row['split']}_{key}": value
        for row in last_rows
        for key, value in row.items()
        if key not in base and key not in ("split", "step", "samples", "epoch", "time_s")
    }
    return trial_row(
        trial,
        attempt_id,
        status,
        started_at=started_at,
        device=str(device),
        packed_with=packed_with,
        extra={
            "steps": steps,
            "samples": sampler.samples_drawn,
            "epochs": sampler.epochs,
            "train_time_s": train_seconds,
            "workers": workers,
            "dataset": data.name,
            "constraint_names": json.dumps(problem.names(data.group_names)),
            "group_names": json.dumps(list(data.group_names)),
            **final,
        },
    )


def synchronise(device: torch.device) -> None:
    """Wait for the work queued on a CUDA device, so that a clock read after it counts it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Atomic: written beside ``path`` under a temporary name, then renamed over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    torch.save(state, temporary)
    os.replace(temporary, path)


def train(
    trial: TrialSpec,
    sink: Sink,
    data: TabularData | None = None,
    checkpoint: Path | None = None,
) -> dict[str, Any]:
    """Train one trial to its budget; returns (and sends to ``sink``) its ``trials`` row.

    Several workers: launched by ``distributed.launch_local``, torchrun, submitit or Ray Train,
    every rank calls ``train``; rank 0 evaluates and writes to ``sink``, the others call it
    with nothing (see :class:`Sink`) and return ``{}``.

    Checkpoints: with ``checkpoint`` set, the run resumes from that file if it exists and
    saves to it every ``training.checkpoint_every`` steps. A resumed run is a new attempt that
    re-emits the evaluation history up to the checkpoint under its own attempt id, so each
    attempt in the store is a whole curve; its trajectory is that of an uninterrupted run.

    A non-finite loss (checked at evaluation points only: reading it every step would force a
    device-to-host sync per step) ends the trial with status ``diverged`` rather than an
    exception, so one unstable configuration cannot kill a sweep. Other exceptions propagate:
    the caller (Ray, the CLI) records them as an ``error`` attempt and decides about retries.
    """
    torch.set_num_threads(trial.training.threads)
    started_at = utc_now()
    attempt_id = uuid.uuid4().hex
    base = identity(trial, attempt_id)
    data = data if data is not None else load_data(trial.data, trial.split)
    device = trial_device(trial.training.device, local_rank())
    workers = join_workers(device)
    run = _Run(trial, data, workers, device)
    every = trial.training.eval_every
    checkpoint_every = trial.training.checkpoint_every

    if checkpoint is not None and checkpoint.is_file():
        run.load_state_dict(torch.load(checkpoint, weights_only=False))
        for row in run.history:
            row.update(base)
        sink.evals(run.history if workers.is_main else [])
        last_rows = run.history[-len(SPLITS) :]
    else:
        last_rows = run.evaluate(base) if workers.is_main else []
        sink.evals(last_rows)
    evaluated_at = run.step
    status = "finished"
    # Ranks' clocks differ: with several workers a time budget is only checked at evaluation
    # points, where the ranks agree through one small collective (``any_rank``).
    local_clock = not workers.distributed or trial.training.budget.steps is not None
    segment_start = time.perf_counter()

    def spent() -> bool:
        return local_clock and run.budget_spent(time.perf_counter() - segment_start)

    while not spent():
        info = run.algorithm.step(run.estimate)
        run.step += 1
        if not (run.step % every == 0 or spent()):
            continue
        synchronise(device)
        run.train_seconds += time.perf_counter() - segment_start
        if not math.isfinite(float(info["loss"])):
            status = "diverged"
            break
        last_rows = run.evaluate(base) if workers.is_main else []
        if (
            workers.is_main
            and checkpoint is not None
            and checkpoint_every
            and run.step % checkpoint_every == 0
        ):
            save_checkpoint(run.state_dict(), checkpoint)
        sink.evals(last_rows)
        evaluated_at = run.step
        if trial.training.budget.seconds is not None and any_rank(
            run.budget_spent(0.0), workers, device
        ):
            break
        segment_start = time.perf_counter()
    if evaluated_at != run.step:
        last_rows = run.evaluate(base) if workers.is_main else []
        sink.evals(last_rows)
    if not workers.is_main:
        sink.finish(None)
        return {}

    row = summary_row(
        trial,
        attempt_id,
        status,
        last_rows,
        started_at=started_at,
        device=device,
        steps=run.step,
        sampler=run.sampler,
        train_seconds=run.train_seconds,
        workers=workers.world_size,
        problem=run.problem,
        data=data,
    )
    sink.finish(row)
    return row


def error_row(trial: TrialSpec, error: BaseException | str) -> dict[str, Any]:
    """The ``trials`` row of an attempt that raised (written by whoever caught it)."""
    text = error if isinstance(error, str) else "".join(traceback.format_exception(error))
    return trial_row(trial, uuid.uuid4().hex, "error", error=text[-4000:])
