"""K copies of any user model (``model.factory``) as one module with stacked parameters.

Why: packed seeds (``packed.py``) need every seed's parameters on a leading dimension, so that
one algorithm steps all K seeds at once (``seeds=K``). ``packed.StackedMLP`` does this by hand
for the built-in MLP; a user's network (convolutions, normalisation, anything) is stacked here
generically with ``torch.func``: ``stack_module_state`` stacks the K models' parameters and
buffers, and the forward runs the model's own ``forward`` once per seed under ``vmap`` through
``functional_call``, each seed on its own parameters, buffers and minibatch.

Invariants, which make a seed of the stack the same model it is alone:

* layout: parameter ``i`` is the stack of every model's ``i``-th parameter in ``parameters()``
  order (``[K, *shape]``), with its ``requires_grad``, so an algorithm sees what it would see
  for one model with the seed dimension in front, as for ``StackedMLP``;
* buffers (BatchNorm's running statistics, say) are stacked too and updated in place through
  ``vmap``, each seed's slice as the model alone would update its own;
* randomness: ``vmap`` runs with ``randomness="error"``. A forward that draws random numbers
  (dropout in training mode) cannot draw in a pack what each seed draws alone from its own
  generator, so it raises; the driver's probe (``trial.probe``) finds that on one minibatch and
  the spec trains such a model one seed per trial (``spec.packing_obstacle``). So do other
  forwards ``vmap`` cannot batch: ``.item()``, a Python ``if`` on a tensor's value;
* evaluation: :meth:`StackedModule.seed_model` runs the model's ``forward`` through
  ``functional_call`` on views of one seed's slices, the very operations of the model alone
  on the very values, so its metrics are the model's.

Batched and per-seed kernels may sum in different orders (a convolution under ``vmap`` folds
the seeds into its batch or groups), so training "the same" means to rounding:
``tests/test_packed_factory.py`` checks parameters, duals and metrics to 1e-10 in float64.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap


class StackedModule(nn.Module):
    """K models of one architecture, parameters and buffers stacked on a leading seed
    dimension, run under ``vmap``.

    The first model serves as the template whose ``forward`` every seed runs; it is kept out
    of the module's registered children, so ``parameters()`` and ``state_dict()`` hold the
    stacked tensors only. ``train()``/``eval()`` reach it.
    """

    def __init__(self, models: Sequence[nn.Module]) -> None:
        super().__init__()
        params, buffers = stack_module_state(list(models))
        template = models[0]
        grads = {name: p.requires_grad for name, p in template.named_parameters()}
        self.parameter_names = list(params)
        self.buffer_names = list(buffers)
        self.stacked = nn.ParameterList(
            nn.Parameter(params[name].detach(), requires_grad=grads[name])
            for name in self.parameter_names
        )
        for index, name in enumerate(self.buffer_names):
            self.register_buffer(f"buffer_{index}", buffers[name])
        self._template = (template,)  # a tuple: not a registered child
        self.per_seed = vmap(self._one_seed, randomness="error")

    @property
    def template(self) -> nn.Module:
        return self._template[0]

    def train(self, mode: bool = True) -> StackedModule:
        self.template.train(mode)
        return super().train(mode)

    def _stacked_buffers(self) -> list[torch.Tensor]:
        return [getattr(self, f"buffer_{i}") for i in range(len(self.buffer_names))]

    def _state(
        self, params: Sequence[torch.Tensor], buffers: Sequence[torch.Tensor]
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        return (
            dict(zip(self.parameter_names, params, strict=True)),
            dict(zip(self.buffer_names, buffers, strict=True)),
        )

    def _one_seed(
        self, params: list[torch.Tensor], buffers: list[torch.Tensor], features: torch.Tensor
    ) -> torch.Tensor:
        return functional_call(self.template, self._state(params, buffers), (features,))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``[K, B, *row]`` features (one minibatch per seed) to ``[K, B, 1]`` logits."""
        return self.per_seed(list(self.stacked), self._stacked_buffers(), features)

    def seed_model(self, seed: int) -> nn.Module:
        """Seed ``seed``'s model as a module over views of its slices (for evaluation)."""
        return _SeedModel(self, seed)


class _SeedModel(nn.Module):
    """One seed of a :class:`StackedModule`: the template's ``forward`` on views of the seed's
    parameters and buffers (a buffer updated in place updates the stack's slice)."""

    def __init__(self, stack: StackedModule, seed: int) -> None:
        super().__init__()
        self._stack = (stack,)
        self.seed = seed

    def train(self, mode: bool = True) -> _SeedModel:
        """Evaluation mode reaches the template, so BatchNorm reads the seed's running
        statistics and dropout is off (``metrics.predict_logits``)."""
        self._stack[0].template.train(mode)
        return super().train(mode)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        stack = self._stack[0]
        params = [p[self.seed] for p in stack.stacked]
        buffers = [b[self.seed] for b in stack._stacked_buffers()]
        return functional_call(stack.template, stack._state(params, buffers), (features,))
