"""Packing benchmark: seed-steps per second, one seed per trial against K seeds per trial.

The spec is the quickstart's (embedded Adult, MLP 64-32, batch 64, a loss-gap constraint,
float32, one thread per trial) for ``sgd`` and ``ssl_alm`` (two minibatches a step). Every
figure comes from the real loop, ``loop.train``, for a separate trial and for a pack, each run
twice, for ``base`` and ``base + steps`` steps with
evaluation only at the first and the last step: the difference is the cost of ``steps`` training
steps alone, setup and evaluation cancelled out (the least of 3 such measurements).

- ``separate``: one seed trained alone (one seed per trial);
- ``packed[K]``: a pack of K seeds, with ``ratio`` = its seed-steps per second over separate's;
- ``cpu_*``: from this process's CPU time, which other processes on the machine distort far
  less than the clock (2 shared cores here); ``wall_*``: from the trials' ``train_time_s``;
- ``matmul_floor``: the stacked model's forward and backward passes of a step alone, at the
  largest K (the batched matmuls every packed step must do, nothing else): the ratio packing
  could reach if everything else in a step were free;
- ``profile``: the share of the packed step's CPU self time per operator at the largest K.

Prints one JSON object. ``python benchmarks/bench_packing.py [--steps N] [--sizes 1 8 64]``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

from ctrain_dist.data.load import load_data
from ctrain_dist.spec import TrialSpec, load_spec
from ctrain_dist.trial.loop import train
from ctrain_dist.trial.packed import PackedLearner

QUICKSTART = Path(__file__).parents[1] / "sweeps" / "quickstart.yaml"
ALGORITHMS = ("sgd", "ssl_alm")
REPEATS = 3


class _Discard:
    """A sink that keeps nothing: the benchmark reads the returned ``trials`` rows."""

    def evals(self, rows: list[dict[str, Any]]) -> None:
        pass

    def finish(self, trial_row: dict[str, Any] | None) -> None:
        pass


def _trials(algorithm: str, seeds: int, steps: int, device: str = "cpu") -> list[TrialSpec]:
    return load_spec(
        QUICKSTART,
        [
            f"seeds={seeds}",
            f"algorithms=[{{name: {algorithm}}}]",
            f"training.budget.steps={steps}",
            f"training.eval_every={steps}",
            f"training.device={device}",
        ],
    ).trials()


def _cost(run: Callable[[int], list[dict[str, Any]]], base: int, steps: int) -> dict[str, float]:
    """CPU and training seconds of ``steps`` steps: ``run(base + steps)`` minus ``run(base)``,
    the least of ``REPEATS`` measurements (other processes only ever add time)."""
    costs: dict[str, list[float]] = {"cpu_s": [], "wall_s": []}
    for _ in range(REPEATS):
        figures = []
        for budget in (base, base + steps):
            cpu = time.process_time()
            rows = run(budget)
            figures.append((time.process_time() - cpu, rows[0]["train_time_s"]))
        costs["cpu_s"].append(figures[1][0] - figures[0][0])
        costs["wall_s"].append(figures[1][1] - figures[0][1])
    return {key: min(values) for key, values in costs.items()}


def _throughput(algorithm: str, seeds: int | None, base: int, steps: int) -> dict[str, float]:
    """Seed-steps per second of one seed alone (``seeds`` None) or of a pack of ``seeds``."""
    if seeds is None:
        cost = _cost(lambda n: train(_trials(algorithm, 1, n), _Discard()), base, steps)
        seeds = 1
    else:
        cost = _cost(lambda n: train(_trials(algorithm, seeds, n), _Discard()), base, steps)
    return {
        "cpu_seed_steps_per_s": seeds * steps / cost["cpu_s"],
        "wall_seed_steps_per_s": seeds * steps / cost["wall_s"],
    }


def _matmul_floor(algorithm: str, seeds: int, steps: int) -> float:
    """CPU seconds per step of the stacked model's share of a packed step: its forward passes
    (with a backward pass where the step takes gradients) on the step's minibatches, and
    nothing else. A step's passes are read off one real step of the algorithm."""
    trials = _trials(algorithm, seeds, steps)
    pack = PackedLearner(trials, load_data(trials[0].data, trials[0].split), torch.device("cpu"))
    with_gradient: list[bool] = []

    def counted() -> tuple[torch.Tensor, torch.Tensor]:
        with_gradient.append(torch.is_grad_enabled())
        return pack.estimate()

    pack.algorithm.step(counted)
    rows = torch.stack([sampler.next() for sampler in pack.samplers]).reshape(-1)
    features = pack.data.features.index_select(0, rows).view(seeds, -1, pack.data.num_features)
    parameters = list(pack.model.parameters())

    def passes() -> None:
        for gradient in with_gradient:
            with torch.set_grad_enabled(gradient):
                logits = pack.model(features)
            if gradient:
                for parameter in parameters:
                    parameter.grad = None
                logits.sum().backward()

    for _ in range(5):
        passes()
    best = float("inf")
    for _ in range(REPEATS):
        started = time.process_time()
        for _ in range(steps):
            passes()
        best = min(best, (time.process_time() - started) / steps)
    return best


def _profile(algorithm: str, seeds: int, steps: int = 20, top: int = 8) -> dict[str, float]:
    """Share of the packed step's CPU self time by operator, the ``top`` largest."""
    trials = _trials(algorithm, seeds, steps)
    pack = PackedLearner(trials, load_data(trials[0].data, trials[0].split), torch.device("cpu"))
    for _ in range(3):
        pack.algorithm.step(pack.estimate)
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        for _ in range(steps):
            pack.algorithm.step(pack.estimate)
    events = profiler.key_averages()
    total = sum(event.self_cpu_time_total for event in events)
    ranked = sorted(events, key=lambda event: -event.self_cpu_time_total)[:top]
    return {event.key: round(event.self_cpu_time_total / total, 3) for event in ranked}


def run(steps: int = 300, sizes: tuple[int, ...] = (1, 8, 64), base: int = 20) -> dict[str, Any]:
    torch.set_num_threads(1)
    load_before = os.getloadavg()[0]
    results: dict[str, Any] = {}
    for algorithm in ALGORITHMS:
        _throughput(algorithm, None, base, base)  # warm-up: data load, first-call allocations
        separate = _throughput(algorithm, None, base, steps)
        packed = {}
        for seeds in sizes:
            figures = _throughput(algorithm, seeds, base, steps)
            for axis in ("cpu", "wall"):
                figures[f"{axis}_ratio"] = (
                    figures[f"{axis}_seed_steps_per_s"] / separate[f"{axis}_seed_steps_per_s"]
                )
            packed[str(seeds)] = _rounded(figures)
        largest = max(sizes)
        floor = largest / _matmul_floor(algorithm, largest, 50)
        results[algorithm] = {
            "separate": _rounded(separate),
            "packed": packed,
            "matmul_floor": _rounded(
                {
                    "seeds": largest,
                    "cpu_seed_steps_per_s": floor,
                    "cpu_ratio": floor / separate["cpu_seed_steps_per_s"],
                }
            ),
            "profile": _profile(algorithm, largest),
        }
    return {
        "steps": steps,
        "threads": 1,
        "cpu_count": os.cpu_count(),
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "results": results,
    }


def _rounded(figures: dict[str, float]) -> dict[str, float]:
    return {key: round(value, 2) for key, value in figures.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 8, 64])
    args = parser.parse_args()
    print(json.dumps(run(args.steps, tuple(args.sizes)), indent=2))


if __name__ == "__main__":
    main()
