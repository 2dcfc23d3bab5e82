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
import time
import traceback
import uuid
from typing import Any, Protocol

import torch

from .algorithms import build_algorithm
from .constraints import ConstrainedProblem, build_constraints
from .data.load import load_data
from .data.sampler import MinibatchSampler
from .data.tabular import SPLITS, TabularData
from .metrics import evaluate_split
from .model import build_mlp
from .records import identity, trial_row, utc_now
from .spec import TrialSpec


class Sink(Protocol):
    """Where a trial's rows go; called on the trial's own process."""

    def evals(self, rows: list[dict[str, Any]]) -> None: ...

    def finish(self, trial_row: dict[str, Any]) -> None: ...


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class _Run:
    """The state of one trial while it trains (model, algorithm, sampler, clocks)."""

    def __init__(self, trial: TrialSpec, data: TabularData, device: torch.device) -> None:
        dtype = getattr(torch, trial.training.dtype)
        self.trial = trial
        self.data = data.to(dtype=dtype, device=device)
        self.device = device
        torch.manual_seed(trial.seed)
        self.model = build_mlp(data.num_features, trial.model.hidden, dtype).to(device)
        self.problem = ConstrainedProblem(build_constraints(trial.constraints, data.num_groups))
        self.algorithm = build_algorithm(
            trial.algorithm,
            self.model.parameters(),
            self.problem.num_constraints,
            trial.hyperparameters,
        )
        self.sampler = MinibatchSampler(
            self.data.splits["train"], trial.training.batch_size, trial.seed
        )
        self.step = 0
        self.train_seconds = 0.0

    def estimate(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The oracle algorithms call: a fresh minibatch's mean loss and constraint values."""
        rows = self.sampler.next()
        logits = self.model(self.data.features[rows]).squeeze(-1)
        stats = self.problem.statistics(logits, self.data.labels[rows], self.data.groups[rows])
        return self.problem.evaluate(stats)

    def budget_left(self) -> bool:
        budget = self.trial.training.budget
        if budget.steps is not None:
            return self.step < budget.steps
        return self.train_seconds < budget.seconds

    def evaluate(self, base: dict[str, Any]) -> list[dict[str, Any]]:
        """One row per split at the current point, with all four progress axes."""
        axes = {
            "step": self.step,
            "samples": self.sampler.samples_drawn,
            "epoch": self.sampler.epochs,
            "time_s": self.train_seconds,
        }
        rows = []
        for split in SPLITS:
            features, labels, groups = self.data.split(split)
            metrics = evaluate_split(
                self.model, self.problem, features, labels, groups, self.data.num_groups
            )
            rows.append({**base, "split": split, **axes, **metrics})
        multipliers = self.algorithm.multipliers()
        for row in rows:
            row.update({f"multiplier_{i}": float(v) for i, v in enumerate(multipliers)})
        return rows


def train(trial: TrialSpec, sink: Sink, data: TabularData | None = None) -> dict[str, Any]:
    """Train one trial to its budget; returns (and sends to ``sink``) its ``trials`` row.

    A non-finite loss ends the trial with status ``diverged`` rather than an exception, so one
    unstable configuration cannot kill a sweep. Other exceptions propagate: the caller (Ray,
    the CLI) records them as an ``error`` attempt and decides about retries.
    """
    torch.set_num_threads(trial.training.threads)
    started_at = utc_now()
    attempt_id = uuid.uuid4().hex
    base = identity(trial, attempt_id)
    data = data if data is not None else load_data(trial.data, trial.split)
    run = _Run(trial, data, resolve_device(trial.training.device))
    every = trial.training.eval_every

    last_rows = run.evaluate(base)
    sink.evals(last_rows)
    status = "finished"
    while run.budget_left():
        tick = time.perf_counter()
        info = run.algorithm.step(run.estimate)
        run.train_seconds += time.perf_counter() - tick
        run.step += 1
        if not math.isfinite(info["loss"]):
            status = "diverged"
            break
        if run.step % every == 0:
            last_rows = run.evaluate(base)
            sink.evals(last_rows)
    if last_rows[0]["step"] != run.step:
        last_rows = run.evaluate(base)
        sink.evals(last_rows)

    final = {
        f"final_{row['split']}_{key}": value
        for row in last_rows
        for key, value in row.items()
        if key not in base and key not in ("split", "step", "samples", "epoch", "time_s")
    }
    row = trial_row(
        trial,
        attempt_id,
        status,
        started_at=started_at,
        device=str(run.device),
        extra={
            "steps": run.step,
            "samples": run.sampler.samples_drawn,
            "epochs": run.sampler.epochs,
            "train_time_s": run.train_seconds,
            "constraint_names": json.dumps(run.problem.names(data.group_names)),
            "group_names": json.dumps(list(data.group_names)),
            **final,
        },
    )
    sink.finish(row)
    return row


def error_row(trial: TrialSpec, error: BaseException | str) -> dict[str, Any]:
    """The ``trials`` row of an attempt that raised (written by whoever caught it)."""
    text = error if isinstance(error, str) else "".join(traceback.format_exception(error))
    return trial_row(trial, uuid.uuid4().hex, "error", error=text[-4000:])
