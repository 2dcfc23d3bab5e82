"""Throughput for large searches: configuration packing, and the driver's CPU per trial.

**Configuration packing.** ``C`` configurations × 1 seed of one algorithm, drawn log-uniform
in every step size it reads per member (a random search's trials), trained as one packed
trial (``configurations_per_trial C``) against the same ``C`` trials trained one after
another, in this process, through the real loop (``loop.train``: data on the device, model,
algorithm, samplers, evaluation at the first and last step, rows to a sink). The figures are
whole trials, set-up and evaluation included; ``ratio`` is separate over packed, in CPU
seconds of this process (what 2 shared cores distort least) and in training seconds
(``train_time_s``, evaluation excluded). Algorithms: ``ssl_alm`` (SGD primal, two minibatches
a step) and ``alm`` with an Adam primal (the per-member optimiser, ``member_optimizers.py``).

**Driver CPU per trial.** What a sweep's driver does per trial, with the real components,
for ``N`` short trials of 4 algorithms (each trial's rows are those of one real 10-step trial,
relabelled with each trial's identity), timed as this process's CPU time (not wall):

- ``plan``: ``plan.pending_trials`` over an empty store, ``plan.plan_packs``, and the Tune
  ``param_space`` that ``ray_sweep._tune`` builds from the packs (each trial as JSON);
- ``callback``: ``ray_sweep.StoreCallback`` receiving every trial's results as Tune hands them
  to it (its evaluation rows, then its ``trials`` row, each JSON-encoded as ``TuneSink`` does)
  and flushing to the Parquet store every 100 trials (a 5 s flush at 20 trials a second), the
  final flush included;
- ``resume``: ``plan.pending_trials`` and ``plan_packs`` again over the store now holding the
  ``N`` finished trials (what ``--resume`` does: nothing left to run).

Ray Tune's own trial loop is not in these phases; ``--ray-trials 48 100 200`` adds whole real
sweeps of one-step trials (``ray_sweep.run_sweep`` on a local Ray) and the driver's marginal
CPU per trial between sizes (a 2,000-trial Ray run does not fit a benchmark on 2 shared
cores). ``flat`` is CPU per trial at the largest ``N`` over the smallest.

Prints one JSON object (``--markdown``: the section). ``.venv/bin/python -m
benchmarks.bench_config_packing [--configurations 64] [--steps 200] [--trials 200 1000 2000]
[--ray-trials 48 100 200]``; ``benchmarks/run.py --only config_packing`` runs it with Ray.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import random
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import torch

from benchmarks import Section
from ctrain_dist import store as store_module
from ctrain_dist.launch.plan import pending_trials, plan_packs
from ctrain_dist.launch.ray_sweep import StoreCallback, run_sweep
from ctrain_dist.launch.ray_sweep import _encode as encode  # TuneSink's encoding, exactly
from ctrain_dist.spec import SweepSpec, TrialSpec, load_spec
from ctrain_dist.trial.loop import train
from ctrain_dist.trial.records import identity, trial_row

QUICKSTART = Path(__file__).parents[1] / "sweeps" / "quickstart.yaml"
SEARCHES: dict[str, tuple[dict[str, Any], dict[str, tuple[float, float]]]] = {
    "ssl_alm": (
        {},
        {"lr": (0.005, 0.2), "dual_lr": (0.01, 1.0), "rho": (0.1, 10.0), "mu": (0.1, 4.0)},
    ),
    "alm": ({"primal": "adam"}, {"lr": (1e-4, 0.02), "dual_lr": (0.01, 1.0), "rho": (0.1, 10.0)}),
}
"""Each algorithm's fixed settings and its log-uniform ranges."""
DRIVER_ALGORITHMS = ("sgd", "alm", "ssl_alm", "switching_subgradient")
FLUSH_EVERY = 100
REPEATS = 3


class _Discard:
    def evals(self, rows: list[dict[str, Any]]) -> None:
        pass

    def finish(self, trial_row: dict[str, Any] | None) -> None:
        pass


def _search(algorithm: str, configurations: int, steps: int) -> SweepSpec:
    """``configurations`` log-uniform draws of ``algorithm``'s step sizes, 1 seed each."""
    fixed, ranges = SEARCHES[algorithm]
    draw = random.Random(0)
    entries = []
    for _ in range(configurations):
        params = {
            name: round(math.exp(draw.uniform(math.log(low), math.log(high))), 6)
            for name, (low, high) in ranges.items()
        }
        entries.append(f"{{name: {algorithm}, params: {json.dumps({**fixed, **params})}}}")
    return load_spec(
        QUICKSTART,
        [
            "seeds=1",
            f"algorithms=[{', '.join(entries)}]",
            f"training.budget.steps={steps}",
            f"training.eval_every={steps}",
            "training.device=cpu",
            f"configurations_per_trial={configurations}",
        ],
    )


def _timed(run: Any) -> dict[str, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    rows = run()
    return {
        "cpu_s": time.process_time() - cpu,
        "wall_s": time.perf_counter() - wall,
        "train_s": sum(row["train_time_s"] for row in rows),
    }


def packing(configurations: int, steps: int) -> dict[str, Any]:
    """Separate trials against one pack, per algorithm (module docstring)."""
    results: dict[str, Any] = {}
    for algorithm in SEARCHES:
        spec = _search(algorithm, configurations, steps)
        (pack,) = spec.packs()
        train(pack[:1], _Discard())  # warm-up: data load, first-call allocations
        separate = _timed(lambda pack=pack: [r for t in pack for r in train([t], _Discard())])
        packed = _timed(lambda pack=pack: train(pack, _Discard()))
        results[algorithm] = {
            "separate": _rounded(separate),
            "packed": _rounded(packed),
            "cpu_ratio": round(separate["cpu_s"] / packed["cpu_s"], 2),
            "train_time_ratio": round(separate["train_s"] / (packed["train_s"] / len(pack)), 2),
        }
    return results


def _driver_spec(trials: int, steps: int = 10) -> SweepSpec:
    """``trials`` short trials of 4 algorithms (a multiple of 4)."""
    if trials % len(DRIVER_ALGORITHMS):
        raise ValueError(f"give trial counts that are multiples of {len(DRIVER_ALGORITHMS)}")
    per_algorithm = trials // len(DRIVER_ALGORITHMS)
    values = [round(0.001 * (1 + i), 6) for i in range(per_algorithm)]
    entries = ", ".join(f"{{name: {a}, params: {{lr: {values}}}}}" for a in DRIVER_ALGORITHMS)
    return load_spec(
        QUICKSTART,
        [
            "name=driver",
            "seeds=1",
            f"algorithms=[{entries}]",
            f"training.budget.steps={steps}",
            f"training.eval_every={steps}",
            "training.device=cpu",
        ],
    )


class _Keep(_Discard):
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def evals(self, rows: list[dict[str, Any]]) -> None:
        self.rows.extend(rows)


def _template() -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The rows of one real short trial: its evaluation rows and its ``trials`` row."""
    sink = _Keep()
    (row,) = train([_driver_spec(len(DRIVER_ALGORITHMS)).trials()[0]], sink)
    return sink.rows, row


def _results(trial: TrialSpec, evals: list[dict[str, Any]], row: dict[str, Any]) -> list[dict]:
    """What Tune hands the driver's callback for ``trial``: the template's rows under its
    identity and configuration, JSON-encoded as ``TuneSink`` sends them."""
    attempt = uuid.uuid4().hex
    ident = identity(trial, attempt)
    own = {**row, **trial_row(trial, attempt, row["status"], device="cpu")}
    return [
        {"ctrain_evals": encode([{**e, **ident} for e in evals])},
        {"ctrain_trial": encode(own)},
    ]


def driver(sizes: tuple[int, ...]) -> dict[str, Any]:
    """CPU milliseconds per trial of each driver phase at each size, the least of ``REPEATS``
    runs of all three phases (other processes only ever add time; module docstring)."""
    evals, row = _template()
    figures: dict[str, Any] = {}
    for size in sizes:
        spec = _driver_spec(size)
        runs = [_driver_phases(spec, size, evals, row) for _ in range(REPEATS)]
        figures[str(size)] = {
            f"{phase}_ms_per_trial": round(1000 * min(r[phase] for r in runs) / size, 3)
            for phase in ("plan", "callback", "resume", "total")
        }
    small, large = figures[str(min(sizes))], figures[str(max(sizes))]
    figures["flat"] = {key: round(large[key] / small[key], 2) for key in small}
    return figures


def _driver_phases(
    spec: SweepSpec, size: int, evals: list[dict[str, Any]], row: dict[str, Any]
) -> dict[str, float]:
    """One run of the three phases over a fresh store: CPU seconds of each."""
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        cpu = time.process_time()
        pending, _ = pending_trials(spec, root, resume=False)
        packs = plan_packs(spec, pending, log=lambda _: None)
        space = [[t.model_dump(mode="json") for t in pack] for pack in packs]
        plan_s = time.process_time() - cpu
        results = [_results(t, evals, row) for t in pending]  # built outside the timing
        writer = store_module.StoreWriter(root, spec.name)
        callback = StoreCallback(writer, size, lambda _: None)
        cpu = time.process_time()
        for index, results_of_trial in enumerate(results, start=1):
            for result in results_of_trial:
                callback.on_trial_result(index, [], None, result)
            if index % FLUSH_EVERY == 0:
                callback.flush()
        callback.on_experiment_end([])
        callback_s = time.process_time() - cpu
        cpu = time.process_time()
        left, finished = pending_trials(spec, root, resume=True)
        plan_packs(spec, left, log=lambda _: None)
        resume_s = time.process_time() - cpu
        assert finished == len(space) == size and not left, (finished, len(left))
    total = plan_s + callback_s + resume_s
    return {"plan": plan_s, "callback": callback_s, "resume": resume_s, "total": total}


def ray_driver(sizes: tuple[int, ...]) -> dict[str, Any]:
    """The driver's CPU seconds over a whole real sweep (``ray_sweep.run_sweep`` on a local
    Ray: Ray's start and stop, Tune's trial loop, the callback and the store) of ``N``
    one-step trials, and the marginal CPU per trial between consecutive sizes, which cancels
    the fixed start-up cost: flat when Tune's loop costs the same per trial at every size."""
    figures: dict[str, Any] = {}
    for size in sizes:
        spec = _driver_spec(size, steps=1)
        with tempfile.TemporaryDirectory() as folder:
            cpu = time.process_time()
            outcome = run_sweep(spec, Path(folder), log=lambda _: None)
            seconds = time.process_time() - cpu
        assert outcome.statuses == {"finished": spec.trial_count()}, outcome.statuses
        figures[str(size)] = {"driver_cpu_s": round(seconds, 2)}
    for small, large in itertools.pairwise(sizes):
        extra = figures[str(large)]["driver_cpu_s"] - figures[str(small)]["driver_cpu_s"]
        figures[f"marginal_ms_per_trial_{small}_to_{large}"] = round(
            1000 * extra / (large - small), 2
        )
    return figures


def measure(
    configurations: int = 64,
    steps: int = 200,
    sizes: tuple[int, ...] = (200, 1000, 2000),
    ray_sizes: tuple[int, ...] = (),
) -> dict[str, Any]:
    torch.set_num_threads(1)
    load_before = os.getloadavg()[0]
    # The driver's phases first, in a process that has trained nothing yet, as a sweep's
    # driver never trains: timed after the packing runs, the same phases cost up to 2x more
    # per trial at 2,000 trials (plan 0.26 against 0.12 ms), a cost of that process's heap
    # that no driver pays; in a fresh process they are flat (BENCHMARKS.md).
    timed_driver = driver(sizes)
    result = {
        "configurations": configurations,
        "steps": steps,
        "packing": packing(configurations, steps),
        "driver_trials": list(sizes),
        "driver": timed_driver,
    }
    if ray_sizes:
        result["ray_driver"] = ray_driver(ray_sizes)
    result["load_average"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    return result


def _rounded(figures: dict[str, float]) -> dict[str, float]:
    return {key: round(value, 3) for key, value in figures.items()}


QUICK = {"configurations": 8, "steps": 20, "sizes": (40, 120)}
COMMAND = ".venv/bin/python benchmarks/run.py --only config_packing"


def render(figures: dict[str, Any]) -> str:
    """The section's Markdown: the packing ratios, then the driver's CPU per trial."""
    count = figures["configurations"]
    lines = [
        f"{count} configurations × 1 seed, {figures['steps']} steps each, as one packed trial "
        f"against {count} separate trials, in one process (whole trials: set-up and "
        "evaluation included). Ratio: separate over packed.",
        "",
        "| algorithm | separate CPU s | packed CPU s | CPU ratio | training-time ratio |",
        "|---|---|---|---|---|",
    ]
    for algorithm, row in figures["packing"].items():
        lines.append(
            f"| {algorithm} | {row['separate']['cpu_s']:.2f} | {row['packed']['cpu_s']:.2f} | "
            f"{row['cpu_ratio']:.1f}× | {row['train_time_ratio']:.1f}× |"
        )
    driver = figures["driver"]
    sizes = figures["driver_trials"]
    phases = [key for key in driver[str(sizes[0])]]
    lines += [
        "",
        "Driver CPU per trial (ms, this process's CPU time), real plan, callback and store: "
        "see the module docstring for exactly what is timed.",
        "",
        "| phase | " + " | ".join(f"{n:,} trials" for n in sizes) + " | largest ÷ smallest |",
        "|---|" + "---|" * (len(sizes) + 1),
    ]
    for phase in phases:
        values = " | ".join(f"{driver[str(n)][phase]:.2f}" for n in sizes)
        lines.append(
            f"| {phase.removesuffix('_ms_per_trial')} | {values} | {driver['flat'][phase]:.2f} |"
        )
    if "ray_driver" in figures:
        ray = figures["ray_driver"]
        whole = ", ".join(
            f"{n} trials {v['driver_cpu_s']} s" for n, v in ray.items() if n.isdigit()
        )
        marginal = ", ".join(
            f"{k.removeprefix('marginal_ms_per_trial_').replace('_to_', '→')}: {v} ms"
            for k, v in ray.items()
            if not k.isdigit()
        )
        lines += [
            "",
            f"Whole Ray sweeps of one-step trials, driver CPU: {whole}; marginal CPU per trial "
            f"between sizes: {marginal}.",
        ]
    lines += ["", f"Load average before and after: {figures['load_average']}."]
    return "\n".join(lines)


def run(quick: bool) -> Section:
    figures = measure(**QUICK) if quick else measure(ray_sizes=(48, 100, 200))
    return Section(
        "Throughput: configuration packing and driver CPU", COMMAND, render(figures), figures
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configurations", type=int, default=64)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--trials", type=int, nargs="+", default=[200, 1000, 2000])
    parser.add_argument(
        "--ray-trials", type=int, nargs="*", default=[], help="also whole Ray sweeps of these sizes"
    )
    parser.add_argument("--markdown", action="store_true", help="print the section's Markdown")
    args = parser.parse_args(argv)
    figures = measure(args.configurations, args.steps, tuple(args.trials), tuple(args.ray_trials))
    print(render(figures) if args.markdown else json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
