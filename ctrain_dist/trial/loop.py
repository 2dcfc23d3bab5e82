"""The one training loop: K ≥ 1 seeds of one configuration to their budget, rows to a sink.

A single model is a pack of one. :func:`train` runs the same loop over a ``learner.Learner``:
a ``ModelLearner`` for one trial (any algorithm, constraint or worker count), a
``packed.PackedLearner`` for K seeds stacked. So budget, evaluation cadence, divergence,
checkpoints and records are written once, and a seed in a pack writes the rows it writes alone.

The loop knows neither Ray nor SLURM nor the store: it sends evaluation rows and each seed's
``trials`` row to the :class:`~ctrain_dist.trial.sink.Sink` it is given. It raises on failure;
``runner.run_pack`` is what records a failed attempt and retries.

Invariants:

* time axis: ``time_s`` is training time only (the clock stops at evaluation points, after
  queued CUDA work is done, and while a compiled step compiles: ``compiled.py``, recorded
  apart as ``compile_time_s``), so curves of algorithms with different evaluation costs (or
  compile caches) compare fairly, and a ``budget.seconds`` buys training steps only; every
  row also carries ``step``, ``samples`` and ``epoch``, so analysis can plot against any of
  the four.
* evaluation at step 0, every ``eval_every`` steps and at the last step: the loop only ends
  at an evaluation point, so every attempt's curve ends where its ``trials`` row does.
* divergence: a seed whose loss is non-finite at an evaluation point ends there with status
  ``diverged``, not an exception, so one unstable configuration cannot kill a sweep; the rest
  of its pack trains on. Checked only at evaluation points: reading the loss every step would
  force a device-to-host sync per step.
* workers: every rank runs the loop and calls the sink at the same points; rank 0 alone
  evaluates and writes (rows, checkpoints). Ranks' clocks differ, so with several workers a
  time budget is checked only at evaluation points, where the ranks agree through one small
  collective (``distributed.any_rank``).
* checkpoints: with ``checkpoint`` set, a run resumes from that file if it exists and saves
  it, atomically, every ``training.checkpoint_every`` steps (at evaluation points), or, when
  that is unset, at the first evaluation point after each ``CHECKPOINT_SECONDS`` of training.
  The state is plain tensors, numbers, strings, lists and dicts, so it loads with
  ``torch.load(weights_only=True)``: a checkpoint file cannot run code. A resumed
  run is a new attempt: it re-emits each seed's evaluation history, and the ``trials`` row of
  a seed that had already ended, under its own attempt ids, so each attempt in the store is a
  whole curve; its trajectory is that of an uninterrupted run, bit for bit.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ctrain_dist.data.load import load_data
from ctrain_dist.data.tabular import SPLITS, TabularData
from ctrain_dist.files import write_atomically
from ctrain_dist.spec import BudgetSpec, TrialSpec
from ctrain_dist.store.schema import (
    ATTEMPT_ID,
    COMPILE_TIME_S,
    CONSTRAINT_NAMES,
    DATASET,
    EPOCHS,
    GROUP_NAMES,
    RESUMED_FROM_STEP,
    SAMPLES,
    SPLIT,
    STATUS,
    STATUS_DIVERGED,
    STATUS_FINISHED,
    STEPS,
    TRAIN_TIME_S,
    WORKERS,
    multiplier_column,
)
from ctrain_dist.trial.compiled import Step
from ctrain_dist.trial.distributed import (
    Workers,
    any_rank,
    join_workers,
    local_rank,
    trial_device,
)
from ctrain_dist.trial.learner import Learner, ModelLearner
from ctrain_dist.trial.packed import PackedLearner, check_pack
from ctrain_dist.trial.records import (
    PROGRESS_AXES,
    estimate_columns,
    final_columns,
    identity,
    trial_row,
    utc_now,
)
from ctrain_dist.trial.sink import Sink

CHECKPOINT_SECONDS = 60.0
"""Training time between checkpoints when ``training.checkpoint_every`` is unset."""


@dataclass
class SeedRecord:
    """One seed's share of the attempt: its identity, evaluation rows, and how it ended."""

    trial: TrialSpec
    base: dict[str, Any]
    """The identity columns of its rows, its own attempt id among them."""
    history: list[dict[str, Any]] = field(default_factory=list)
    end: dict[str, Any] | None = None
    """``status`` and the ``trials`` row's counters at the seed's last step; None while it
    trains. Kept apart from the row itself so that a resumed attempt rebuilds its row."""


def budget_spent(budget: BudgetSpec, step: int, train_seconds: float) -> bool:
    """Whether a run at ``step`` after ``train_seconds`` of training has used its budget."""
    if budget.steps is not None:
        return step >= budget.steps
    return train_seconds >= budget.seconds


def learner_for(
    trials: Sequence[TrialSpec], data: TabularData, workers: Workers, device: torch.device
) -> Learner:
    """A ``ModelLearner`` for one trial, a ``PackedLearner`` for several seeds."""
    if len(trials) == 1:
        return ModelLearner(trials[0], data, workers, device)
    if workers.distributed:
        raise ValueError("packed seeds train in one process")
    return PackedLearner(trials, data, device)


def multiplier_columns(duals: torch.Tensor) -> dict[str, float]:
    """``multiplier_<i>`` columns from one seed's dual variables (on the host)."""
    return {multiplier_column(i): float(v) for i, v in enumerate(duals)}


def synchronise(device: torch.device) -> None:
    """Wait for the work queued on a CUDA device, so that a clock read after it counts it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Loop:
    """One attempt at K ≥ 1 seeds of one configuration (see the module docstring)."""

    def __init__(
        self,
        trials: Sequence[TrialSpec],
        sink: Sink,
        *,
        data: TabularData | None = None,
        checkpoint: Path | None = None,
    ) -> None:
        check_pack(trials)
        first = trials[0]
        self.training = first.training
        torch.set_num_threads(self.training.threads)
        self.started_at = utc_now()
        self.seeds = [SeedRecord(trial, identity(trial, uuid.uuid4().hex)) for trial in trials]
        self.data = data if data is not None else load_data(first.data, first.split)
        self.device = trial_device(self.training.device, local_rank())
        self.workers = join_workers(self.device)
        self.learner = learner_for(trials, self.data, self.workers, self.device)
        self.step_once = Step(self.learner, self.training.compile)
        """The learner's step, eager or compiled (``compiled.py``), which counts compile time."""
        self.sink = sink
        self.checkpoint = checkpoint
        self.packed_with = [trial.trial_id for trial in trials] if len(trials) > 1 else None
        self.step = 0
        self.train_seconds = 0.0
        self.checkpointed_at = 0.0
        """``train_seconds`` at the last checkpoint (for the time-based default)."""
        self.resumed_from = 0
        """The step of the checkpoint this attempt resumed from (0: from the start)."""
        self.summaries: dict[int, dict[str, Any]] = {}
        """Each ended seed's ``trials`` row (rank 0), by its index in the pack."""

    def run(self) -> list[dict[str, Any]]:
        """Train to the budget; returns each seed's ``trials`` row in the pack's order (``[]``
        on ranks other than 0)."""
        if self.checkpoint is not None and self.checkpoint.is_file():
            self._resume(torch.load(self.checkpoint, weights_only=True))
        else:
            self.sink.evals(self._evaluate(self._active()))
        budget = self.training.budget
        local_clock = not self.workers.distributed or budget.steps is not None
        segment_start = time.perf_counter()

        def spent() -> bool:
            elapsed = self.train_seconds + time.perf_counter() - segment_start
            return local_clock and budget_spent(budget, self.step, elapsed)

        done = not self._active() or spent()
        while not done:
            compiling = self.step_once.compile_seconds
            info = self.step_once()
            segment_start += self.step_once.compile_seconds - compiling  # not training time
            self.step += 1
            last = spent()
            if self.step % self.training.eval_every and not last:
                continue
            synchronise(self.device)
            self.train_seconds += time.perf_counter() - segment_start
            self._evaluation_point(torch.isfinite(info["loss"]).reshape(-1).tolist())
            done = last or not self._active() or self._out_of_time_on_any_rank()
            segment_start = time.perf_counter()
        self._end(self._active(), STATUS_FINISHED)
        return [self.summaries[index] for index in sorted(self.summaries)]

    def _active(self) -> list[int]:
        """The indices of the seeds still training."""
        return [index for index, seed in enumerate(self.seeds) if seed.end is None]

    def _out_of_time_on_any_rank(self) -> bool:
        """A time budget spent on any rank, agreed on by all (one collective per evaluation)."""
        budget = self.training.budget
        return budget.seconds is not None and any_rank(
            budget_spent(budget, self.step, self.train_seconds), self.workers, self.device
        )

    def _evaluation_point(self, finite: list[bool]) -> None:
        """Rows of the seeds still training, the end of those whose loss is not ``finite``,
        then a checkpoint if one is due and a seed still trains."""
        active = self._active()
        self.sink.evals(self._evaluate(active))
        self._end([index for index in active if not finite[index]], STATUS_DIVERGED)
        every = self.training.checkpoint_every
        if every is None:
            due = self.train_seconds - self.checkpointed_at >= CHECKPOINT_SECONDS
        else:
            due = self.step % every == 0
        if due and self.checkpoint is not None and self.workers.is_main and self._active():
            state = self._state_dict()
            write_atomically(self.checkpoint, lambda handle: torch.save(state, handle))
            self.checkpointed_at = self.train_seconds

    def _evaluate(self, seeds: list[int]) -> list[dict[str, Any]]:
        """The rows of ``seeds`` at this point (rank 0; ``[]`` elsewhere), kept in history."""
        if not self.workers.is_main:
            return []
        duals = self.learner.multipliers()
        empty = self.learner.empty_group_estimates.tolist()
        rows = []
        for index, metrics in zip(seeds, self.learner.evaluate(seeds), strict=True):
            seed = self.seeds[index]
            sampler = self.learner.samplers[index]
            progress = (self.step, sampler.samples_drawn, sampler.epochs, self.train_seconds)
            axes = dict(zip(PROGRESS_AXES, progress, strict=True))
            multipliers = multiplier_columns(duals[index])
            counts = estimate_columns(self.learner.estimates, empty[index])
            new = [
                {**seed.base, SPLIT: split, **axes, **values, **multipliers, **counts}
                for split, values in metrics.items()
            ]
            seed.history.extend(new)
            rows.extend(new)
        return rows

    def _end(self, seeds: list[int], status: str) -> None:
        """End ``seeds`` here with ``status``: their counters now, their ``trials`` rows."""
        for index in seeds:
            sampler = self.learner.samplers[index]
            self.seeds[index].end = {
                STATUS: status,
                STEPS: self.step,
                SAMPLES: sampler.samples_drawn,
                EPOCHS: sampler.epochs,
                TRAIN_TIME_S: self.train_seconds,
                COMPILE_TIME_S: self.step_once.compile_seconds,
            }
            self._finish(index)

    def _finish(self, index: int) -> None:
        """Send an ended seed's ``trials`` row (rank 0; ``None`` elsewhere, see ``Sink``)."""
        if not self.workers.is_main:
            self.sink.finish(None)
            return
        seed = self.seeds[index]
        counters = dict(seed.end or {})
        row = trial_row(
            seed.trial,
            seed.base[ATTEMPT_ID],
            counters.pop(STATUS),
            started_at=self.started_at,
            device=str(self.device),
            packed_with=self.packed_with,
            extra={
                **counters,
                WORKERS: self.workers.world_size,
                RESUMED_FROM_STEP: min(self.resumed_from, counters[STEPS]),
                DATASET: self.data.name,
                CONSTRAINT_NAMES: json.dumps(self.learner.problem.names(self.data.group_names)),
                GROUP_NAMES: json.dumps(list(self.data.group_names)),
                **final_columns(seed.history[-len(SPLITS) :]),
            },
        )
        self.sink.finish(row)
        self.summaries[index] = row

    def _state_dict(self) -> dict[str, Any]:
        """Everything that fixes the rest of the attempt: the learner's state, the counters,
        and each seed's history and end (rank 0's: only rank 0 saves)."""
        return {
            "trial_ids": [seed.trial.trial_id for seed in self.seeds],
            "step": self.step,
            "train_seconds": self.train_seconds,
            **self.learner.state_dict(),
            "seeds": [{"history": seed.history, "end": seed.end} for seed in self.seeds],
        }

    def _resume(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint as a new attempt: re-emit what it holds under this
        attempt's ids, the ``trials`` rows of seeds that had already ended included."""
        trial_ids = [seed.trial.trial_id for seed in self.seeds]
        if state["trial_ids"] != trial_ids:
            raise ValueError(f"checkpoint of trials {state['trial_ids']}, not {trial_ids}")
        self.step = self.resumed_from = int(state["step"])
        self.train_seconds = self.checkpointed_at = float(state["train_seconds"])
        self.learner.load_state_dict(state)
        for seed, saved in zip(self.seeds, state["seeds"], strict=True):
            seed.history = [{**row, **seed.base} for row in saved["history"]]
            seed.end = saved["end"]
        rows = [row for seed in self.seeds for row in seed.history]
        self.sink.evals(rows if self.workers.is_main else [])
        for index, seed in enumerate(self.seeds):
            if seed.end is not None:
                self._finish(index)


def train(
    trials: Sequence[TrialSpec],
    sink: Sink,
    *,
    data: TabularData | None = None,
    checkpoint: Path | None = None,
) -> list[dict[str, Any]]:
    """Train one trial, or K seeds of one configuration together, to the budget; returns (and
    sends to ``sink``) one ``trials`` row per seed, in the order of ``trials``.

    ``data``: the trials' data already loaded (loaded here otherwise). Several workers
    (``distributed.launch_local``, torchrun, submitit or Ray Train): every rank calls
    ``train``; rank 0 evaluates and writes to ``sink``, the others call it with nothing (see
    ``Sink``) and return ``[]``. Exceptions propagate (see ``runner.run_pack``).
    """
    return Loop(trials, sink, data=data, checkpoint=checkpoint).run()
