"""Packing benchmark: seed-steps per second, one seed per trial against K seeds per trial.

The spec is the quickstart's (embedded Adult, MLP 64-32, batch 64, a loss-gap constraint,
float32, one thread per trial) for ``sgd`` and ``ssl_alm`` (two minibatches a step). Each
configuration trains through the real loops, ``trainer.train`` for a separate trial and
``packed.train_pack`` for a pack, with evaluation only at the first and the last step, and
throughput is read from the ``train_time_s`` they record (training only, evaluation
excluded):

- ``separate``: ``seed_steps_per_s`` of one seed trained alone (one seed per trial);
- ``packed[K]``: ``K × steps / train_time_s`` of a pack of K seeds, and ``ratio`` to separate;
- ``wall_seed_steps_per_s``: the same with setup and the two evaluations included;
- ``profile``: the share of the packed step's CPU time per operator at the largest K (torch
  profiler, self time), to show what bounds it.

Prints one JSON object. ``python benchmarks/bench_packing.py [--steps N] [--sizes 1 8 64]``.
Other processes on the machine skew every figure: the load average is reported with them.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

from ctrain_dist.data.load import load_data
from ctrain_dist.packed import Pack, train_pack
from ctrain_dist.spec import TrialSpec, load_spec
from ctrain_dist.trainer import train

QUICKSTART = Path(__file__).parents[1] / "sweeps" / "quickstart.yaml"
ALGORITHMS = ("sgd", "ssl_alm")


class _Discard:
    """A sink that keeps nothing: the benchmark reads the returned ``trials`` rows."""

    def evals(self, rows: list[dict[str, Any]]) -> None:
        pass

    def finish(self, trial_row: dict[str, Any] | None) -> None:
        pass


def _trials(algorithm: str, seeds: int, steps: int) -> list[TrialSpec]:
    return load_spec(
        QUICKSTART,
        [
            f"seeds={seeds}",
            f"algorithms=[{{name: {algorithm}}}]",
            f"training.budget.steps={steps}",
            f"training.eval_every={steps}",
            "training.device=cpu",
        ],
    ).trials()


def _separate(algorithm: str, steps: int) -> dict[str, float]:
    (trial,) = _trials(algorithm, 1, steps)
    started = time.perf_counter()
    row = train(trial, _Discard())
    wall = time.perf_counter() - started
    return {
        "seed_steps_per_s": steps / row["train_time_s"],
        "wall_seed_steps_per_s": steps / wall,
    }


def _packed(algorithm: str, seeds: int, steps: int) -> dict[str, float]:
    trials = _trials(algorithm, seeds, steps)
    started = time.perf_counter()
    rows = train_pack(trials, _Discard())
    wall = time.perf_counter() - started
    return {
        "seed_steps_per_s": seeds * steps / rows[0]["train_time_s"],
        "wall_seed_steps_per_s": seeds * steps / wall,
    }


def _profile(algorithm: str, seeds: int, steps: int = 20, top: int = 8) -> dict[str, float]:
    """Share of the packed step's CPU self time by operator, the ``top`` largest."""
    trials = _trials(algorithm, seeds, steps)
    pack = Pack(trials, load_data(trials[0].data, trials[0].split), torch.device("cpu"))
    for _ in range(3):
        pack.algorithm.step(pack.estimate)
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        for _ in range(steps):
            pack.algorithm.step(pack.estimate)
    events = profiler.key_averages()
    total = sum(event.self_cpu_time_total for event in events)
    ranked = sorted(events, key=lambda event: -event.self_cpu_time_total)[:top]
    return {event.key: round(event.self_cpu_time_total / total, 3) for event in ranked}


def run(steps: int = 300, sizes: tuple[int, ...] = (1, 8, 64)) -> dict[str, Any]:
    torch.set_num_threads(1)
    load_before = os.getloadavg()[0]
    results: dict[str, Any] = {}
    for algorithm in ALGORITHMS:
        _separate(algorithm, 20)  # warm-up: data load, first-call allocations
        separate = _separate(algorithm, steps)
        packed = {}
        for seeds in sizes:
            figures = _packed(algorithm, seeds, steps)
            figures["ratio"] = figures["seed_steps_per_s"] / separate["seed_steps_per_s"]
            figures["wall_ratio"] = (
                figures["wall_seed_steps_per_s"] / separate["wall_seed_steps_per_s"]
            )
            packed[str(seeds)] = {key: round(value, 2) for key, value in figures.items()}
        results[algorithm] = {
            "separate": {key: round(value, 2) for key, value in separate.items()},
            "packed": packed,
            "profile": _profile(algorithm, max(sizes)),
        }
    return {
        "steps": steps,
        "threads": 1,
        "cpu_count": os.cpu_count(),
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "results": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 8, 64])
    args = parser.parse_args()
    print(json.dumps(run(args.steps, tuple(args.sizes)), indent=2))


if __name__ == "__main__":
    main()
