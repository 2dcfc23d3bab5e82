"""Several seeds of one configuration trained as one batched computation (``seeds_per_trial``).

Why: a tabular MLP step is almost all per-step overhead (Python, dispatch, tiny kernels), and
one seed per trial pays it once per seed. A pack stacks its K seeds' parameters on a leading
dimension and runs every step as batched matmuls, paying the overhead once for all K.

Invariants, which make a packed seed indistinguishable from the same seed trained alone:

* initialisation: each seed's MLP is built as the trainer builds it (``trainer.trial_model``),
  then the K models are stacked, so a packed seed starts from its unpacked weights bitwise;
* data: each seed draws from its own sampler, seeded as alone; a step gathers ``[K, B]`` rows;
* statistics: ``ConstrainedProblem.loss_and_values`` (what the single-process trainer calls)
  vmapped over the seeds, so ``estimate()`` returns ``loss: [K]`` and ``c: [K, m]``;
* algorithm: one algorithm over the stacked parameters with ``seeds=K`` (``algorithms.base``):
  its state (duals, centres, switching decisions, optimiser moments) gains the leading seed
  dimension, and backward runs on the sum of the seeds' objectives, whose gradient in each
  seed's slice of the stacked parameters is that seed's own (the slices are disjoint);
* records: each seed writes its own evaluation rows and ``trials`` row under its own trial id
  and attempt id, evaluated by ``metrics.evaluate_split`` on a view of its slice; only
  ``packed_with`` says it trained in a pack.

Batched and plain matmuls sum in different orders, so "the same" means to rounding:
``tests/test_packed.py`` checks parameters, duals and metrics to 1e-10 after 100 float64 steps.

Divergence is per seed: a seed whose loss is non-finite at an evaluation point ends there with
status ``diverged``, its rows exactly those it would write alone; its slice keeps computing
until the pack ends, harmlessly, since no operation mixes seeds. Packs train in one process on
a step budget (``spec.require_single_process_packs``); algorithms that cannot batch seeds and
the ``weight_norm`` constraint are never packed (``spec.packing_obstacle``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional

from ctrain_dist.algorithms import build_algorithm
from ctrain_dist.constraints import ConstrainedProblem, build_constraints
from ctrain_dist.data.load import load_data
from ctrain_dist.data.stratified import design_weights
from ctrain_dist.data.tabular import SPLITS, TabularData
from ctrain_dist.spec import TrialSpec, packing_obstacle
from ctrain_dist.trial.distributed import local_rank, trial_device
from ctrain_dist.trial.metrics import evaluate_split
from ctrain_dist.trial.records import identity, utc_now
from ctrain_dist.trial.trainer import (
    Sink,
    multiplier_columns,
    progress_axes,
    summary_row,
    synchronise,
    trial_model,
    trial_sampler,
)


class StackedMLP(nn.Module):
    """K ReLU MLPs of one architecture, parameters stacked on a leading seed dimension.

    Built from K models of ``model.build_mlp`` (``Linear`` and ``ReLU`` layers); parameter
    ``i`` is the stack of every model's ``i``-th parameter (``[K, out, in]`` weights, ``[K,
    out]`` biases), in ``parameters()`` order, so an algorithm sees the layout it would see
    for one model, with the seed dimension in front.
    """

    def __init__(self, models: Sequence[nn.Module]) -> None:
        super().__init__()
        layers = list(models[0].children())
        if any(
            not isinstance(layer, nn.ReLU)
            and not (isinstance(layer, nn.Linear) and layer.bias is not None)
            for layer in layers
        ):
            raise TypeError("only an MLP of biased Linear and ReLU layers can be stacked")
        self.relu_after = [
            i + 1 < len(layers) and isinstance(layers[i + 1], nn.ReLU)
            for i, layer in enumerate(layers)
            if isinstance(layer, nn.Linear)
        ]
        per_model = [[p.detach() for p in model.parameters()] for model in models]
        self.stacked = nn.ParameterList(
            nn.Parameter(_gradient_layout(torch.stack(tensors)))
            for tensors in zip(*per_model, strict=True)
        )

    def _linear(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.stacked[2 * index], self.stacked[2 * index + 1]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``[K, B, d]`` features (one minibatch per seed) to ``[K, B, 1]`` logits."""
        hidden = features
        for index, relu in enumerate(self.relu_after):
            weight, bias = self._linear(index)
            hidden = torch.baddbmm(bias.unsqueeze(1), hidden, weight.transpose(1, 2))
            if relu:
                hidden = torch.relu(hidden)
        return hidden

    def seed_model(self, seed: int) -> nn.Module:
        """Seed ``seed``'s model as a module over views of its slice (for evaluation)."""
        return _SeedModel(self, seed)


def _gradient_layout(stacked: torch.Tensor) -> torch.Tensor:
    """``stacked`` with the memory layout of the gradient ``baddbmm`` produces for it.

    The forward multiplies by ``W.mT``, so autograd computes each weight's gradient as a
    contiguous ``[K, in, out]`` tensor seen through ``.mT``. A parameter stored the same way
    (``[K, out, in]`` shape, ``[K, in, out]`` memory) takes that gradient as it is; a contiguous
    one would need a transposing copy of every weight gradient each step (about an eighth of a
    64-seed step). Values, shapes and indexing are unchanged; biases stay contiguous.
    """
    if stacked.ndim < 3:
        return stacked
    return stacked.mT.contiguous().mT


class _SeedModel(nn.Module):
    """One seed of a :class:`StackedMLP`: ``F.linear`` and ``F.relu`` on its slice, the very
    operations of the unpacked ``nn.Linear``/``nn.ReLU`` model."""

    def __init__(self, stacked: StackedMLP, seed: int) -> None:
        super().__init__()
        self.layers = [
            (weight[seed], bias[seed], relu)
            for (weight, bias), relu in zip(
                map(stacked._linear, range(len(stacked.relu_after))),
                stacked.relu_after,
                strict=True,
            )
        ]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        hidden = features
        for weight, bias, relu in self.layers:
            hidden = functional.linear(hidden, weight, bias)
            if relu:
                hidden = functional.relu(hidden)
        return hidden


def check_pack(trials: Sequence[TrialSpec]) -> None:
    """Refuse a pack whose seeds could not train exactly as alone (a programming error: the
    spec validates ``seeds_per_trial`` and ``spec.pack_trials`` forms packs)."""
    if not trials:
        raise ValueError("a pack needs at least one trial")
    if len({t.model_dump_json(exclude={"seed"}) for t in trials}) != 1:
        raise ValueError("a pack's trials must differ in their seed only")
    if len({t.seed for t in trials}) != len(trials):
        raise ValueError("a pack's seeds must be distinct")
    obstacle = packing_obstacle(trials[0])
    if obstacle is not None:
        raise ValueError(obstacle)
    if trials[0].training.budget.steps is None:
        raise ValueError("packed seeds train on a step budget")


class Pack:
    """The state of a pack while it trains: stacked model, one algorithm, K samplers."""

    def __init__(
        self, trials: Sequence[TrialSpec], data: TabularData, device: torch.device
    ) -> None:
        first = trials[0]
        self.data = data.to(dtype=getattr(torch, first.training.dtype), device=device)
        self.model = StackedMLP([trial_model(t, data.num_features, device) for t in trials])
        self.problem = ConstrainedProblem(build_constraints(first.constraints, data.num_groups))
        self.algorithm = build_algorithm(
            first.algorithm,
            self.model.parameters(),
            self.problem.num_constraints,
            first.hyperparameters,
            seeds=len(trials),
        )
        self.samplers = [trial_sampler(t, self.data) for t in trials]
        self.weights = design_weights(self.samplers[0])
        self.splits = {split: self.data.split(split) for split in SPLITS}
        self.seed_statistics = torch.func.vmap(self._one_seed, in_dims=(0, 0, 0, None))

    def _one_seed(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        groups: torch.Tensor,
        weights: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.problem.loss_and_values(logits, labels, groups, weights)

    def estimate(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every seed's fresh minibatch: mean losses ``[K]`` and constraint values ``[K, m]``."""
        seeds = len(self.samplers)
        rows = torch.stack([sampler.next() for sampler in self.samplers]).reshape(-1)
        features = self.data.features.index_select(0, rows).view(seeds, -1, self.data.num_features)
        logits = self.model(features).squeeze(-1)
        labels = self.data.labels.index_select(0, rows).view(seeds, -1)
        groups = self.data.groups.index_select(0, rows).view(seeds, -1)
        return self.seed_statistics(logits, labels, groups, self.weights)

    def evaluate(
        self, seed: int, base: dict[str, Any], step: int, train_seconds: float, duals: torch.Tensor
    ) -> list[dict[str, Any]]:
        """Seed ``seed``'s rows at this point: what its unpacked run would write."""
        model = self.model.seed_model(seed)
        axes = progress_axes(step, self.samplers[seed], train_seconds)
        multipliers = multiplier_columns(duals[seed])
        rows = []
        for split, (features, labels, groups) in self.splits.items():
            metrics = evaluate_split(
                model, self.problem, features, labels, groups, self.data.num_groups
            )
            rows.append({**base, "split": split, **axes, **metrics, **multipliers})
        return rows


def train_pack(
    trials: Sequence[TrialSpec], sink: Sink, data: TabularData | None = None
) -> list[dict[str, Any]]:
    """Train seeds of one configuration together; returns (and sends to ``sink``) one
    ``trials`` row per seed.

    The sink receives every seed's rows: one ``evals`` call per evaluation point for all
    active seeds, and one ``finish`` per seed, when it ends (diverged) or at the budget.
    Exceptions propagate, as in ``trainer.train``; the caller records an error for each seed.
    """
    check_pack(trials)
    first = trials[0]
    torch.set_num_threads(first.training.threads)
    started_at = utc_now()
    bases = [identity(trial, uuid.uuid4().hex) for trial in trials]
    data = data if data is not None else load_data(first.data, first.split)
    device = trial_device(first.training.device, local_rank())
    pack = Pack(trials, data, device)
    packed_with = [trial.trial_id for trial in trials]
    every, budget = first.training.eval_every, first.training.budget.steps
    step, train_seconds = 0, 0.0
    summaries: list[dict[str, Any]] = []

    def evaluate(seeds: list[int]) -> dict[int, list[dict[str, Any]]]:
        duals = pack.algorithm.multipliers().cpu()
        rows = {k: pack.evaluate(k, bases[k], step, train_seconds, duals) for k in seeds}
        sink.evals([row for k in seeds for row in rows[k]])
        return rows

    def finish(seed: int, status: str) -> None:
        row = summary_row(
            trials[seed],
            bases[seed]["attempt_id"],
            status,
            last_rows[seed],
            started_at=started_at,
            device=device,
            steps=step,
            sampler=pack.samplers[seed],
            train_seconds=train_seconds,
            workers=1,
            problem=pack.problem,
            data=data,
            packed_with=packed_with,
        )
        sink.finish(row)
        summaries.append(row)

    active = list(range(len(trials)))
    last_rows = evaluate(active)
    segment_start = time.perf_counter()
    while active and step < budget:
        info = pack.algorithm.step(pack.estimate)
        step += 1
        if step % every and step < budget:
            continue
        synchronise(device)
        train_seconds += time.perf_counter() - segment_start
        finite = torch.isfinite(info["loss"]).tolist()
        last_rows.update(evaluate(active))
        for seed in active:
            if not finite[seed]:
                finish(seed, "diverged")
        active = [seed for seed in active if finite[seed]]
        segment_start = time.perf_counter()
    for seed in active:
        finish(seed, "finished")
    return summaries
