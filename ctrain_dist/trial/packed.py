"""Several seeds of one configuration trained as one batched computation (``seeds_per_trial``).

Why: a tabular MLP step is almost all per-step overhead (Python, dispatch, tiny kernels), and
one seed per trial pays it once per seed. A pack stacks its K seeds' parameters on a leading
dimension and runs every step as batched matmuls, paying the overhead once for all K.

Invariants, which make a packed seed indistinguishable from the same seed trained alone:

* initialisation: each seed's model is built as it is built alone (``learner.trial_model``),
  then the K models are stacked, so a packed seed starts from its unpacked weights bitwise:
  the built-in MLP as a :class:`StackedMLP` (batched matmuls), a user's ``model.factory``
  model as a ``stacked_module.StackedModule`` (``torch.func`` ``vmap``, when the model allows
  it: the driver's probe checks on one minibatch, ``trial.probe``);
* data: each seed draws from its own sampler, seeded as alone; a step gathers ``[K, B]`` rows;
* statistics: ``ConstrainedProblem.batch_estimate`` (what a single model calls in one
  process) vmapped over the seeds, so ``estimate()`` returns ``loss: [K]`` and ``c``,
  ``decision`` and ``defined``, each ``[K, m]``: an empty group masks the values of the seeds
  whose minibatch lacks it (a ``torch.where``, no data-dependent Python), nobody else's;
* algorithm: one algorithm over the stacked parameters with ``seeds=K`` (``algorithms.base``):
  its state (duals, centres, switching decisions, optimiser moments) gains the leading seed
  dimension, and backward runs on the sum of the seeds' objectives, whose gradient in each
  seed's slice of the stacked parameters is that seed's own (the slices are disjoint);
* records: each seed writes its own evaluation rows and ``trials`` row under its own trial id
  and attempt id, evaluated by ``metrics.evaluate_split`` on a view of its slice; only
  ``packed_with`` says it trained in a pack.

Packed configurations (``configurations_per_trial``): the members may also be configurations
of one algorithm that differ only in the scalar hyperparameters it reads per member
(``Algorithm.member_hyperparameters``); those values become ``[K]`` tensors broadcast against
the stacked parameters and duals (``algorithms.members``), so each member still steps exactly
as alone. Anything else (a choice, a count, a shape, a budget) keeps configurations apart
(``spec.pack_trials``), and a member's rows name its pack in ``packed_with`` as a seed's do;
``tests/test_config_packing.py`` checks every such algorithm as below.

Batched and plain matmuls sum in different orders, so "the same" means to rounding:
``tests/test_packed.py`` checks parameters, duals and metrics to 1e-10 after 100 float64 steps.

The loop is the one every trial trains in (``loop.py``): a pack is a :class:`PackedLearner`
where a single model is a ``learner.ModelLearner``. Divergence is per seed there: a seed whose
loss is non-finite at an evaluation point ends with status ``diverged``, its rows exactly those
it would write alone; its slice keeps computing until the pack ends, harmlessly, since no
operation mixes seeds. Packs train in one process on a step budget
(``spec.require_single_process_packs``); algorithms that cannot batch seeds and the
``weight_norm`` constraint are never packed (``spec.packing_obstacle``), nor is user code
(a model, a constraint) that the driver's probe found ``vmap`` cannot batch exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional

from ctrain_dist.algorithms import ALGORITHMS
from ctrain_dist.constraints import Estimate
from ctrain_dist.data.stratified import constraint_weights, design_weights
from ctrain_dist.data.tabular import TabularData
from ctrain_dist.spec import TrialSpec, can_share_a_pack, packing_obstacle
from ctrain_dist.trial.learner import Learner, trial_data, trial_model, trial_problem
from ctrain_dist.trial.stacked_module import StackedModule


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
    """Refuse a pack whose members could not train exactly as alone (a programming error:
    the spec validates ``seeds_per_trial`` and ``configurations_per_trial``, and
    ``spec.pack_trials`` forms packs). A pack of one is its trial alone, whatever its
    algorithm, constraints or budget."""
    if not trials:
        raise ValueError("a pack needs at least one trial")
    if len(trials) == 1:
        return
    if not can_share_a_pack(list(trials)):
        per_member = ", ".join(sorted(ALGORITHMS[trials[0].algorithm].member_hyperparameters))
        raise ValueError(
            "a pack's trials must differ in their seed only, or in the hyperparameters "
            f"{trials[0].algorithm} reads per member ({per_member or 'none'})"
        )
    if len({t.trial_id for t in trials}) != len(trials):
        raise ValueError("a pack's members must be distinct trials")
    obstacle = packing_obstacle(trials[0])
    if obstacle is not None:
        raise ValueError(obstacle)
    if trials[0].training.budget.steps is None:
        raise ValueError("packed seeds train on a step budget")


class PackedLearner(Learner):
    """K seeds of one configuration as one computation: stacked model (:class:`StackedMLP`
    or, for a ``model.factory`` model, ``StackedModule``), one algorithm over the stacked
    parameters (``seeds=K``), K samplers, in one process."""

    packed = True

    def __init__(
        self, trials: Sequence[TrialSpec], data: TabularData, device: torch.device
    ) -> None:
        check_pack(trials)
        first = trials[0]
        data = trial_data(first, data, device)
        models = [trial_model(t, data.num_features, device, data.input_shape) for t in trials]
        model = StackedMLP(models) if first.model.factory is None else StackedModule(models)
        problem = trial_problem(first, data.num_groups)
        super().__init__(trials, data, model, problem)
        self.weights = design_weights(self.samplers[0])
        self.constraint_weights = constraint_weights(self.samplers[0])
        self.seed_statistics = torch.func.vmap(self._one_seed, in_dims=(0, 0, 0, None, None))

    def _one_seed(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        groups: torch.Tensor,
        weights: torch.Tensor | None,
        for_constraints: torch.Tensor | None,
    ) -> Estimate:
        return self.problem.batch_estimate(logits, labels, groups, weights, for_constraints)

    def _draw(self) -> Estimate:
        """Every seed's fresh minibatch: mean losses ``[K]`` and readings ``[K, m]``."""
        seeds = len(self.samplers)
        rows = torch.stack([sampler.next() for sampler in self.samplers]).reshape(-1)
        features = self.data.features.index_select(0, rows)
        features = features.view(seeds, -1, *self.data.input_shape)
        logits = self.model(features).squeeze(-1)
        labels = self.data.labels.index_select(0, rows).view(seeds, -1)
        groups = self.data.groups.index_select(0, rows).view(seeds, -1)
        return self.seed_statistics(logits, labels, groups, self.weights, self.constraint_weights)

    def seed_model(self, seed: int) -> nn.Module:
        return self.model.seed_model(seed)
