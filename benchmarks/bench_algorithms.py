"""Algorithm benchmark: each newer method's framework step against its hand-written twin.

Setting: ``bench_trainer``'s (embedded Adult, MLP d → 64 → 32 → 1, batch 64, float32, one
thread, loss-gap bound 0.05). Candidates, each with its own model and state:

- ``framework:<label>``: ``bench_trainer.framework_step`` for a trial of the algorithm with
  the options in :data:`CONFIGURATIONS` (the whole oracle, the step, the budget check);
- ``bare:<label>``: the same update written as a minimal loop (``bench_trainer._Bare``: a
  permutation sliced into batches, the loss-gap values inline from two masks), with the
  framework's ``primal: sgd`` arithmetic at its cheapest (``_Bare.sgd_step``:
  ``torch.optim.SGD``'s ``add_(g, alpha=-lr)`` as one multi-tensor call, what the framework
  runs, ``algorithms/plain_sgd.py``);
- ``bare:adam``: a bare Adam step, the common baseline; ``framework:alm`` against its twin
  is the reference pair: the framework's plumbing (sampler, statistics, empty-group masks)
  without any of the newer options.

The target (issue 17, done-when 3) is a framework step within 1.1× its twin.

``python -m benchmarks.bench_algorithms [--quick]`` prints the figures as JSON.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

from benchmarks import Section, in_turn, interleave, print_figures, ratios, spread
from benchmarks.bench_trainer import BOUND, CPU, BareAdam, _Bare, framework_step
from ctrain_dist.algorithms.spbm import (
    quadratic_logarithmic,
    quadratic_logarithmic_derivative,
)
from ctrain_dist.data.load import load_data
from ctrain_dist.spec import TrialSpec, parse_spec

COMMAND = ".venv/bin/python benchmarks/bench_algorithms.py"
TARGET = 1.1
LR = 0.05
CONFIGURATIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "ialm": ("ialm", {"lr": LR, "penalty": 0.5, "growth": 1.0001, "dual_step_bound": 0.1}),
    "spbm": ("spbm", {"lr": LR, "init_multiplier": 0.01}),
    "alm_quadratic": ("alm", {"lr": LR, "augmentation": "quadratic"}),
    "alm_dual_momentum": ("alm", {"lr": LR, "dual_momentum": 0.5}),
    "alm": ("alm", {"lr": LR}),
}
"""Label: (algorithm, hyperparameters) of each framework candidate."""


def trial_specs() -> dict[str, TrialSpec]:
    """One CPU trial per configuration, on a budget no benchmark reaches."""
    spec = parse_spec(
        {
            "name": "bench-algorithms",
            "data": {"dataset": "adult", "sensitive": "sex"},
            "model": {"hidden": [64, 32]},
            "constraints": [{"kind": "loss_gap", "bound": BOUND}],
            "training": {"batch_size": 64, "device": "cpu", "budget": {"steps": 10**9}},
            "algorithms": [{"name": name, "params": hp} for name, hp in CONFIGURATIONS.values()],
            "seeds": 1,
        }
    )
    return dict(zip(CONFIGURATIONS, spec.trials(), strict=True))


class _BareWithSGD(_Bare):
    """A bare loop whose primal step is the framework's ``primal: sgd`` arithmetic."""

    def __init__(self, *tensors: torch.Tensor) -> None:
        super().__init__(*tensors)
        self.duals = torch.zeros(2, device=self.features.device)

    def primal_step(self, target: torch.Tensor) -> None:
        self.backward(target)
        self.sgd_step(LR)


class BareIALM(_BareWithSGD):
    """iALM by hand: dual step min(β, γ/‖c‖) first, then the primal step, then β ← σβ. The
    defaults are ``CONFIGURATIONS["ialm"]``; ``bench_compile`` times it at iALM's own defaults
    (β = 1 held, γ = 1)."""

    def __init__(
        self,
        *tensors: torch.Tensor,
        penalty: float = 0.5,
        growth: float = 1.0001,
        dual_step_bound: float = 0.1,
    ) -> None:
        super().__init__(*tensors)
        self.beta, self.growth, self.dual_step_bound = penalty, growth, dual_step_bound

    def step(self) -> None:
        loss, c = self.loss_and_gap()
        observed = c.detach()
        gamma = self.dual_step_bound
        weight = (gamma / torch.linalg.vector_norm(observed)).clamp(max=self.beta)
        self.duals = (self.duals + weight * observed).clamp(0, 100)
        self.primal_step(loss + ((self.duals + self.beta * observed.clamp_min(0)) * c).sum())
        self.beta *= self.growth


class BareSPBM(_BareWithSGD):
    def __init__(self, *tensors: torch.Tensor) -> None:
        super().__init__(*tensors)
        self.duals = torch.full((2,), 0.01, device=self.features.device)
        self.penalties = torch.ones(2, device=self.features.device)

    def step(self) -> None:
        loss, c = self.loss_and_gap()
        duals, penalties, observed = self.duals, self.penalties, c.detach()
        slope = quadratic_logarithmic_derivative(observed / penalties)
        self.duals = (0.1 * duals + 0.9 * slope * duals).clamp(1e-9, 100)
        adapt = quadratic_logarithmic_derivative(observed)
        self.penalties = (0.1 * penalties + 0.9 * penalties / (adapt + 1e-8)).clamp(0.1, 1.0)
        self.primal_step(loss + (duals * penalties * quadratic_logarithmic(c / penalties)).sum())


class BareALMQuadratic(_BareWithSGD):
    def step(self) -> None:
        loss, c = self.loss_and_gap()
        self.primal_step(loss + ((self.duals + c.detach().clamp_min(0)) * c).sum())
        self.duals = (self.duals + 0.05 * c.detach()).clamp(0, 100)


class BareALMDualMomentum(_BareWithSGD):
    def __init__(self, *tensors: torch.Tensor) -> None:
        super().__init__(*tensors)
        self.buffer = torch.zeros(2, device=self.features.device)

    def step(self) -> None:
        loss, c = self.loss_and_gap()
        self.primal_step(loss + ((self.duals + c.detach()).clamp_min(0) * c).sum())
        self.buffer = 0.5 * self.buffer + c.detach()
        self.duals = (self.duals + 0.05 * self.buffer).clamp(0, 100)


class BareALM(_BareWithSGD):
    """The default ALM (HPR weights), the plumbing's reference pair (``bench_trainer``'s twin
    with a ``torch.optim.SGD`` step)."""

    def step(self) -> None:
        loss, c = self.loss_and_gap()
        self.primal_step(loss + ((self.duals + c.detach()).clamp_min(0) * c).sum())
        self.duals = (self.duals + 0.05 * c.detach()).clamp(0, 100)


BARE: dict[str, type[_Bare]] = {
    "alm": BareALM,
    "ialm": BareIALM,
    "spbm": BareSPBM,
    "alm_quadratic": BareALMQuadratic,
    "alm_dual_momentum": BareALMDualMomentum,
}


def candidates() -> dict[str, Callable[[], None]]:
    trials = trial_specs()
    first = next(iter(trials.values()))
    data = load_data(first.data, first.split)
    train = data.splits["train"]
    tensors = (data.features[train], data.labels[train], data.groups[train])
    steps = {
        f"framework:{label}": in_turn(functools.partial(framework_step, trials[label], data, CPU))
        for label in trials
    }
    steps |= {
        f"bare:{label}": in_turn(functools.partial(lambda cls: cls(*tensors).step, cls))
        for label, cls in BARE.items()
    }
    steps["bare:adam"] = in_turn(lambda: BareAdam(*tensors).step)
    return steps


def measure(quick: bool) -> dict[str, Any]:
    """Interleaved per-step times and each framework candidate's ratio to its twin."""
    torch.set_num_threads(1)
    repeats, steps, warmup = (5, 40, 20) if quick else (41, 200, 200)
    timings = interleave(candidates(), repeats, steps, warmup)
    figures: dict[str, Any] = {"repeats": repeats, "steps": steps, "candidates": {}}
    for name, timing in timings.items():
        row = {
            "ms_per_step": spread([t * 1e3 for t in timing.wall]).as_dict(),
            "vs_bare_adam": spread(ratios(timing.wall, timings["bare:adam"].wall)).as_dict(),
        }
        kind, label = name.split(":")
        if kind == "framework":
            twin = timings[f"bare:{label}"]
            row["vs_twin"] = spread(ratios(timing.wall, twin.wall)).as_dict()
            row["cpu_vs_twin"] = spread(ratios(timing.cpu, twin.cpu)).as_dict()
        figures["candidates"][name] = row
    return figures


def _cell(row: dict[str, Any], key: str) -> str:
    if key not in row:
        return "–"
    value = row[key]
    return f"{value['median']:.2f} [{value['q25']:.2f}, {value['q75']:.2f}]"


def render(figures: dict[str, Any]) -> str:
    lines = [
        f"{figures['repeats']} repetitions × {figures['steps']} steps, interleaved. Target: a "
        f"framework step within {TARGET}× its hand-written twin.",
        "",
        "| candidate | ms/step | vs twin | CPU vs twin | vs bare Adam |",
        "|---|---|---|---|---|",
    ]
    for name, row in figures["candidates"].items():
        lines.append(
            f"| `{name}` | {_cell(row, 'ms_per_step')} | {_cell(row, 'vs_twin')} "
            f"| {_cell(row, 'cpu_vs_twin')} | {_cell(row, 'vs_bare_adam')} |"
        )
    return "\n".join(lines)


def run(quick: bool) -> Section:
    figures = measure(quick)
    return Section(
        "Algorithms: newer methods against their twins", COMMAND, render(figures), figures
    )


def main(argv: list[str] | None = None) -> None:
    print_figures(measure, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    main()
