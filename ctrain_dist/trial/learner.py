"""What the training loop trains: the model, algorithm and minibatch streams of K ≥ 1 seeds.

Why one interface for two kinds: the loop (``loop.py``) is then written once. It needs, for
seeds ``0..K-1`` of one configuration: the algorithm and the oracle its ``step`` calls
(``estimate``), each seed's sampler (for the progress axes), each seed's model (for
evaluation), every seed's dual variables, and a state that fixes the rest of the trajectory.

* :class:`ModelLearner`: one trial (K = 1), any algorithm and constraint, data parallel
  under DDP with exact statistics (``distributed.py``). A single model is a pack of one.
* ``packed.PackedLearner``: K seeds stacked on a leading dimension, one batched step.

Both build each seed's initialisation and minibatch stream from its seed alone
(:func:`trial_model`, :func:`trial_sampler`), which is what makes a packed seed start and draw
exactly as it would alone. Both count, per seed and constraint value, the oracle calls whose
minibatch left the value undefined (an empty group or (group, label) cell; under data
parallelism empty in the global minibatch, so every rank counts the same): a device tensor
the calls' masks are added to in batches, read at evaluation points only, and part of the
state that resumes.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ctrain_dist.algorithms import ALGORITHMS, Sample, build_algorithm
from ctrain_dist.constraints import ConstrainedProblem, Estimate, build_constraints
from ctrain_dist.data.sampler import MinibatchSampler
from ctrain_dist.data.stratified import (
    ConstraintBatchSampler,
    StratifiedSampler,
    build_sampler,
    constraint_weights,
    design_weights,
)
from ctrain_dist.data.streaming import StreamingData, StreamingSampler
from ctrain_dist.data.tabular import SPLITS, TabularData
from ctrain_dist.spec import TrialSpec
from ctrain_dist.trial.distributed import Workers, exact_statistics, local_slice, wrap_model
from ctrain_dist.trial.metrics import evaluate_split
from ctrain_dist.trial.model import build_model

Sampler = MinibatchSampler | StratifiedSampler | ConstraintBatchSampler | StreamingSampler
Data = TabularData | StreamingData
"""In memory, or a user's ``Dataset`` read per minibatch (``data/streaming.py``)."""

PENDING_MASKS = 64
"""How many oracle calls' ``defined`` masks ``Learner.estimate`` keeps before adding them to
its counts (memory: that many ``[K, m]`` bool tensors)."""


def trial_data(trial: TrialSpec, data: Data, device: torch.device) -> Data:
    """``data`` in the trial's dtype on ``device``."""
    return data.to(dtype=getattr(torch, trial.training.dtype), device=device)


def trial_model(
    trial: TrialSpec,
    num_features: int,
    device: torch.device,
    input_shape: tuple[int, ...] | None = None,
) -> nn.Module:
    """The trial's model (``model.build_model``) in its dtype on ``device``, initialised
    from its seed.

    Seeds torch's global generator: the initialisation depends on the seed alone, so packed
    seeds (``packed.py``) start from exactly the weights their unpacked runs start from.
    """
    torch.manual_seed(trial.seed)
    dtype = getattr(torch, trial.training.dtype)
    return build_model(trial.model, num_features, dtype, input_shape).to(device)


def trial_problem(
    trial: TrialSpec, num_groups: int, model: nn.Module | None = None
) -> ConstrainedProblem:
    """The trial's constraints (what it is judged on) and the training terms its algorithm
    reads besides them (``Algorithm.training_terms``: the ``fairret`` baseline's loss)."""
    cls = ALGORITHMS[trial.algorithm]
    terms = cls.training_terms(cls.hyperparameters(**trial.hyperparameters))
    return ConstrainedProblem(
        build_constraints(trial.constraints, num_groups, model),
        build_constraints(terms, num_groups),
    )


def trial_sampler(trial: TrialSpec, data: Data) -> Sampler:
    """The trial's minibatch stream over ``data``'s training rows, fixed by its seed (drawn
    where the rows are: a streamed dataset keeps them on the host for its loader)."""
    rows = data.splits["train"]
    return build_sampler(
        rows,
        data.groups.to(rows.device),
        data.num_groups,
        trial.training.batch_size,
        trial.seed,
        min_group_count=trial.training.min_group_count,
        rows_per_group=trial.training.rows_per_group,
        constraint_rows_per_group=trial.training.constraint_rows_per_group,
    )


def per_value_setting(
    trial: TrialSpec, problem: ConstrainedProblem, name: str
) -> list[float | None]:
    """Each constraint value's own ``name`` (``dual_lr``, ``dual_bound``) from the spec
    constraint it comes from, None where that sets none (``Algorithm.dual_overrides``)."""
    return [
        getattr(spec, name, None)
        for spec, constraint in zip(trial.constraints, problem.constraints, strict=True)
        for _ in range(constraint.num_values)
    ]


class Learner(ABC):
    """The state of K ≥ 1 seeds of one configuration while they train.

    Built in a fixed order (data, then the models, then problem, algorithm and samplers), the
    order both kinds share, so that whatever draws from torch's global generator after the
    models were seeded draws the same in both.
    """

    packed: bool
    """Whether the parameters carry a leading seed dimension (``seeds=K`` algorithms)."""

    def __init__(
        self,
        trials: Sequence[TrialSpec],
        data: TabularData,
        model: nn.Module,
        problem: ConstrainedProblem,
    ) -> None:
        first = trials[0]
        self.data = data
        self.model = model
        self.problem = problem
        self.algorithm = build_algorithm(
            first.algorithm,
            model.parameters(),
            problem.num_constraints,
            [trial.hyperparameters for trial in trials] if self.packed else first.hyperparameters,
            seeds=len(trials) if self.packed else None,
            equality=problem.equality,
            member_seeds=[trial.seed for trial in trials],
            dual_lrs=per_value_setting(first, problem, "dual_lr"),
            dual_bounds=per_value_setting(first, problem, "dual_bound"),
        )
        self.samplers = [trial_sampler(trial, data) for trial in trials]
        self.estimates = 0
        """Oracle calls so far (per seed: every seed draws at every call)."""
        self._defined = torch.zeros(
            (len(trials), problem.num_constraints), dtype=torch.int64, device=data.labels.device
        )
        """``[K, m]``: of the calls up to the pending ones, how many defined each seed's
        value ``i``."""
        self._pending: list[torch.Tensor] = []
        """The ``defined`` masks of the latest calls, not yet added to :attr:`_defined`."""

    def estimate(self) -> Sample:
        """The oracle the algorithm calls: fresh minibatches' :class:`Sample` (loss 0-dim and
        the rest ``[m]`` for one model, ``[K]`` and ``[K, m]`` for a pack), counted.

        Its ``defined`` mask is kept and counted with the next ones, in one addition per
        :data:`PENDING_MASKS` calls rather than one a call: on a small model a step is
        mostly per-operation dispatch. A traced step adds it at once (a list whose length
        decided the addition would be a guard, one graph per length).
        """
        sample = Sample(*self._draw())
        self.estimates += 1
        if torch.compiler.is_compiling():
            self._defined.add_(sample.defined)
        else:
            self._pending.append(sample.defined)
            if len(self._pending) == PENDING_MASKS:
                self._settle()
        return sample

    def _settle(self) -> None:
        """Add the pending masks to the counts."""
        if self._pending:
            self._defined.add_(torch.stack(self._pending).sum(0))
            self._pending = []

    @property
    def empty_group_estimates(self) -> torch.Tensor:
        """``[K, m]``: of the oracle calls, how many left each seed's value ``i`` undefined."""
        self._settle()
        return self.estimates - self._defined

    @abstractmethod
    def _draw(self) -> Estimate:
        """Fresh minibatches' loss and constraint readings (``ConstrainedProblem``)."""

    @abstractmethod
    def seed_model(self, seed: int) -> nn.Module:
        """Seed ``seed``'s model as a plain module, for evaluation."""

    def evaluate(self, seeds: Sequence[int]) -> list[dict[str, dict[str, float]]]:
        """Each of ``seeds``' metrics on every split, ``split → metric → value``.

        Each split is gathered once for all seeds, and only for the time of the evaluation,
        so memory stays that of the data itself. What is evaluated is the algorithm's output
        (``Algorithm.output_iterate``: the last iterate, or the random or averaged one its
        guarantee is for), swapped in for the evaluation and out after it.
        """
        results: list[dict[str, dict[str, float]]] = [{} for _ in seeds]
        with self.algorithm.output_iterate():
            for split in SPLITS:
                features, labels, groups = self.data.split(split)
                for result, seed in zip(results, seeds, strict=True):
                    result[split] = evaluate_split(
                        self.seed_model(seed),
                        self.problem,
                        features,
                        labels,
                        groups,
                        self.data.num_groups,
                    )
        return results

    def multipliers(self) -> torch.Tensor:
        """Every seed's dual variables on the host, ``[K, m]`` (one read per evaluation)."""
        duals = self.algorithm.multipliers()
        return duals.reshape(len(self.samplers), duals.shape[-1]).cpu()

    def state_dict(self) -> dict[str, Any]:
        """Everything of the learner that fixes the rest of the trajectory."""
        return {
            "model": self.model.state_dict(),
            "algorithm": self.algorithm.state_dict(),
            "samplers": [sampler.state_dict() for sampler in self.samplers],
            "estimates": self.estimates,
            "empty_group_estimates": self.empty_group_estimates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.algorithm.load_state_dict(state["algorithm"])
        for sampler, saved in zip(self.samplers, state["samplers"], strict=True):
            sampler.load_state_dict(saved)
        self.estimates = int(state["estimates"])
        empty = state["empty_group_estimates"].to(self._defined.device)
        self._pending = []
        self._defined = self.estimates - empty


def rank_slice(workers: Workers, rows: torch.Tensor) -> torch.Tensor:
    """This rank's share of a global minibatch's rows (all of them in one process)."""
    return local_slice(rows, workers) if workers.distributed else rows


class ModelLearner(Learner):
    """One trial's model, algorithm and sampler; DDP when there are several workers.

    Under data parallelism every rank holds the same model and draws the same global minibatch
    (same seed), takes its slice, and sees global statistics through one all-reduce
    (``distributed.exact_statistics``).
    """

    packed = False

    def __init__(
        self, trial: TrialSpec, data: Data, workers: Workers, device: torch.device
    ) -> None:
        data = trial_data(trial, data, device)
        model = trial_model(trial, data.num_features, device, data.input_shape)
        self.workers = workers
        self.forward = wrap_model(model, workers, device)
        problem = trial_problem(trial, data.num_groups, model)
        super().__init__([trial], data, model, problem)
        if isinstance(data, StreamingData):
            # Same rows as in memory; each rank's loader reads only its slice of them.
            select = functools.partial(rank_slice, workers)
            self.samplers = [data.stream(self.samplers[0], select)]

    def _draw(self) -> Estimate:
        (sampler,) = self.samplers
        if isinstance(sampler, StreamingSampler):
            rows, features = sampler.next_batch()  # global rows; this rank's inputs
            weights, for_constraints = sampler.weights, constraint_weights(sampler.inner)
        else:
            rows, features, weights = sampler.next(), None, design_weights(sampler)
            for_constraints = constraint_weights(sampler)
        if for_constraints is not None:
            for_constraints = for_constraints.to(self.data.labels.device)
        if self.workers.distributed:
            rows = local_slice(rows, self.workers)
            weights = None if weights is None else local_slice(weights, self.workers)
            if for_constraints is not None:
                for_constraints = local_slice(for_constraints, self.workers)
        if features is None:  # index_select: half the price of advanced indexing on a CPU
            features = self.data.features.index_select(0, rows)
        logits = self.forward(features).squeeze(-1)
        labels = self.data.labels.index_select(0, rows)
        groups = self.data.groups.index_select(0, rows)
        if not self.workers.distributed:
            return self.problem.batch_estimate(logits, labels, groups, weights, for_constraints)
        stats = self.problem.statistics(logits, labels, groups, weights, for_constraints)
        return self.problem.estimate(exact_statistics(stats, self.workers))

    def seed_model(self, seed: int) -> nn.Module:
        return self.model
