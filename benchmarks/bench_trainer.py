"""Trainer benchmark: a framework step against hand-written PyTorch loops, in the same run.

Setting (the Folktables benchmark's network): the embedded UCI Adult data in memory, groups
by sex, the MLP d → 64 → 32 → 1, batch 64, float32, one thread, a loss-gap constraint
(bound 0.05). Candidates, each holding its own model and optimiser state across repetitions:

- ``framework:<algorithm>``: exactly what ``trainer.train`` does per step without evaluation:
  ``run.algorithm.step(run.estimate)`` on a ``_Run``, the step counter, the budget check.
  ``estimate`` is the whole oracle: sampler → index gather → forward →
  ``ConstrainedProblem.statistics`` → ``exact_statistics`` → ``evaluate``.
- ``bare:<algorithm>``: the same algorithm written as a minimal loop by hand: a permutation
  sliced into batches, the same forward and backward passes, and for constrained methods the
  loss-gap values computed inline from two boolean masks (SSL-ALM draws two batches a step,
  as it does in the framework).
- ``dataloader:adam``: Adam through ``TensorDataset`` + ``DataLoader`` (batch 64, shuffled),
  the naive baseline.

Stochastic Ghost, PBM and νPI have no hand-written twin here; their figures are against the
bare unconstrained loops only.

Peak memory: each candidate runs alone in a fresh process; the figure is the growth of the
resident set over the process's state after imports and data load (sampled every step).

``python -m benchmarks.bench_trainer [--quick]`` prints the figures as JSON.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional
from torch.utils.data import DataLoader, TensorDataset

from benchmarks import Section, interleave, ratios, spread
from ctrain_dist.algorithms import ALGORITHMS
from ctrain_dist.data.load import load_data
from ctrain_dist.data.tabular import TabularData
from ctrain_dist.distributed import Workers
from ctrain_dist.model import build_mlp
from ctrain_dist.spec import TrialSpec, parse_spec
from ctrain_dist.trainer import _Run

BOUND = 0.05
BATCH = 64
HIDDEN = [64, 32]
TARGET = 1.1
"""Done-when 2 of issue 9: a constrained framework step costs at most 1.1× its bare loop."""
TARGETED = ("ssl_alm", "switching_subgradient")
SLOW = "framework:ghost"
"""Stochastic Ghost solves an LP and QPs on the host each step: timed over fewer steps."""


def trial_specs() -> dict[str, TrialSpec]:
    """One trial per registered algorithm, default hyperparameters, on CPU."""
    spec = parse_spec(
        {
            "name": "bench-trainer",
            "data": {"dataset": "adult", "sensitive": "sex"},
            "model": {"hidden": HIDDEN},
            "constraints": [{"kind": "loss_gap", "bound": BOUND}],
            "training": {"batch_size": BATCH, "device": "cpu", "budget": {"steps": 10**9}},
            "algorithms": [{"name": name} for name in ALGORITHMS],
            "seeds": 1,
        }
    )
    return {trial.algorithm: trial for trial in spec.trials()}


def framework_step(trial: TrialSpec, data: TabularData) -> Callable[[], None]:
    """One trainer step of ``trial``: the body of ``trainer.train``'s loop, evaluation aside."""
    run = _Run(trial, data, Workers(), torch.device("cpu"))
    every = trial.training.eval_every
    started = time.perf_counter()
    evaluations_due = 0

    def step() -> None:
        nonlocal evaluations_due
        if run.budget_spent(time.perf_counter() - started):
            raise RuntimeError("a benchmark step ran past the trial's budget")
        run.algorithm.step(run.estimate)
        run.step += 1
        evaluations_due += run.step % every == 0 or run.budget_spent(time.perf_counter() - started)

    return step


class _Batches:
    """Minimal minibatches: a permutation sliced in order, reshuffled when it runs out."""

    def __init__(self, rows: int, seed: int = 0) -> None:
        self.rows = rows
        self.generator = torch.Generator().manual_seed(seed)
        self.order = torch.randperm(rows, generator=self.generator)
        self.position = 0

    def next(self) -> torch.Tensor:
        if self.position + BATCH > self.rows:
            self.order = torch.randperm(self.rows, generator=self.generator)
            self.position = 0
        batch = self.order[self.position : self.position + BATCH]
        self.position += BATCH
        return batch


class _Bare:
    """Training tensors, a fresh MLP and batches; subclasses write one algorithm's step."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor):
        self.features, self.labels, self.groups = features, labels, groups
        self.model = build_mlp(features.shape[1], HIDDEN, torch.float32)
        self.params = list(self.model.parameters())
        self.batches = _Batches(labels.numel())

    def loss(self) -> torch.Tensor:
        rows = self.batches.next()
        logits = self.model(self.features[rows]).squeeze(-1)
        return functional.binary_cross_entropy_with_logits(logits, self.labels[rows])

    def loss_and_gap(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean loss and ``[gap - b, -gap - b]`` with the gap of the two groups' mean losses."""
        rows = self.batches.next()
        logits = self.model(self.features[rows]).squeeze(-1)
        losses = functional.binary_cross_entropy_with_logits(
            logits, self.labels[rows], reduction="none"
        )
        groups = self.groups[rows]
        gap = losses[groups == 0].mean() - losses[groups == 1].mean()
        return losses.mean(), torch.stack([gap - BOUND, -gap - BOUND])

    def backward(self, target: torch.Tensor) -> None:
        for p in self.params:
            p.grad = None
        target.backward()

    def descend(self, lr: float) -> None:
        with torch.no_grad():
            for p in self.params:
                p.sub_(lr * p.grad)


class BareSGD(_Bare):
    def __init__(self, *tensors: torch.Tensor) -> None:
        super().__init__(*tensors)
        self.optimizer = torch.optim.SGD(self.params, lr=0.01)

    def step(self) -> None:
        loss = self.loss()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()


class BareAdam(BareSGD):
    def __init__(self, *tensors: torch.Tensor) -> None:
        super().__init__(*tensors)
        self.optimizer = torch.optim.Adam(self.params, lr=1e-3)


class BarePenalty(_Bare):
    def step(self) -> None:
        loss, c = self.loss_and_gap()
        self.backward(loss + 1.0 * c.clamp_min(0).sum())
        self.descend(0.05)


class BareALM(_Bare):
    def __init__(self, *tensors: torch.Tensor) -> None:
        super().__init__(*tensors)
        self.duals = torch.zeros(2)

    def step(self) -> None:
        loss, c = self.loss_and_gap()
        weights = (self.duals + 1.0 * c.detach()).clamp_min(0)
        self.backward(loss + (weights * c).sum())
        self.descend(0.05)
        self.duals = (self.duals + 0.05 * c.detach()).clamp(0, 100)


class BareSSLALM(_Bare):
    def __init__(self, *tensors: torch.Tensor) -> None:
        super().__init__(*tensors)
        self.duals = torch.zeros(2)
        self.centres = [p.detach().clone() for p in self.params]

    def step(self) -> None:
        with torch.no_grad():
            _, c_dual = self.loss_and_gap()
        self.duals = (self.duals + 0.05 * c_dual).clamp(0, 100)
        weights = (self.duals + 1.0 * c_dual).clamp_min(0)
        loss, c = self.loss_and_gap()
        self.backward(loss + (weights * c).sum())
        with torch.no_grad():
            for p, centre in zip(self.params, self.centres, strict=True):
                p.sub_(0.05 * (p.grad + 2.0 * (p - centre)))
                centre.add_(p - centre, alpha=0.5)


class BareSwitching(_Bare):
    """The switch as a Python branch: it reads the estimate on the host (a GPU sync)."""

    def step(self) -> None:
        loss, c = self.loss_and_gap()
        worst = c.max()
        self.backward(loss if worst <= 0 else worst)
        self.descend(0.05)


class BareSwitchingSyncFree(_Bare):
    """The switch as the framework makes it, ``torch.where`` (no host read): the backward
    pass then walks both operands' graphs, so this is the same backward as the framework's."""

    def step(self) -> None:
        loss, c = self.loss_and_gap()
        worst = c.max()
        self.backward(torch.where(worst <= 0, loss, worst))
        self.descend(0.05)


BARE: dict[str, type[_Bare]] = {
    "sgd": BareSGD,
    "adam": BareAdam,
    "penalty": BarePenalty,
    "alm": BareALM,
    "ssl_alm": BareSSLALM,
    "switching_subgradient": BareSwitching,
    "switching_subgradient_sync_free": BareSwitchingSyncFree,
}


def dataloader_step(features: torch.Tensor, labels: torch.Tensor) -> Callable[[], None]:
    """Adam fed by a shuffling ``DataLoader`` over a ``TensorDataset`` (the naive loop)."""
    model = build_mlp(features.shape[1], HIDDEN, torch.float32)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = DataLoader(TensorDataset(features, labels), batch_size=BATCH, shuffle=True)
    batches = iter(loader)

    def step() -> None:
        nonlocal batches
        try:
            x, y = next(batches)
        except StopIteration:
            batches = iter(loader)
            x, y = next(batches)
        loss = functional.binary_cross_entropy_with_logits(model(x).squeeze(-1), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def candidates(names: list[str] | None = None) -> dict[str, Callable[[], None]]:
    """Every candidate's step function (or only those named), each with its own state."""
    trials = trial_specs()
    first = next(iter(trials.values()))
    data = load_data(first.data, first.split)
    train = data.splits["train"]
    tensors = (data.features[train], data.labels[train], data.groups[train])
    builders: dict[str, Callable[[], Callable[[], None]]] = {
        **{
            f"framework:{name}": functools.partial(framework_step, trial, data)
            for name, trial in trials.items()
        },
        **{
            f"bare:{name}": functools.partial(lambda cls: cls(*tensors).step, cls)
            for name, cls in BARE.items()
        },
        "dataloader:adam": functools.partial(dataloader_step, tensors[0], tensors[1]),
    }
    torch.manual_seed(0)
    return {name: build() for name, build in builders.items() if names is None or name in names}


def _resident_bytes() -> int:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def memory_probe(name: str, steps: int) -> dict[str, float]:
    """Run one candidate in this (fresh) process; resident-set growth over its setup and steps."""
    torch.set_num_threads(1)
    trials = trial_specs()
    trial = next(iter(trials.values()))
    load_data(trial.data, trial.split)
    baseline = _resident_bytes()
    step = candidates([name])[name]
    peak = _resident_bytes()
    for _ in range(steps):
        step()
        peak = max(peak, _resident_bytes())
    return {"rss_growth_mib": (peak - baseline) / 2**20, "rss_peak_mib": peak / 2**20}


_PROBE = "import json, sys; from benchmarks.bench_trainer import memory_probe; " + (
    "print(json.dumps(memory_probe(sys.argv[1], int(sys.argv[2]))))"
)


def measure_memory(names: list[str], steps: int) -> dict[str, dict[str, float]]:
    """Each candidate in its own process, two at a time (the timing runs are over by then)."""
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root)}
    results: dict[str, dict[str, float]] = {}
    for first in range(0, len(names), 2):
        pair = names[first : first + 2]
        processes = {
            name: subprocess.Popen(
                [sys.executable, "-c", _PROBE, name, str(steps)],
                cwd=root,
                env=env,
                stdout=subprocess.PIPE,
                text=True,
            )
            for name in pair
        }
        for name, process in processes.items():
            out, _ = process.communicate()
            if process.returncode != 0:
                raise RuntimeError(f"memory probe of {name} failed (exit {process.returncode})")
            results[name] = json.loads(out.strip().splitlines()[-1])
    return results


def measure(quick: bool) -> dict[str, Any]:
    """Interleaved per-step times of every candidate, ratios, and peak memory."""
    torch.set_num_threads(1)
    repeats, steps, warmup = (5, 40, 20) if quick else (21, 200, 200)
    steps_of = candidates()
    slow = {SLOW: max(2, steps // 40)}
    timings = interleave(steps_of, repeats, steps, warmup, steps_for=slow)
    baseline = timings["bare:adam"]
    figures: dict[str, Any] = {"repeats": repeats, "steps": steps, "candidates": {}}
    for name, timing in timings.items():
        kind, algorithm = name.split(":")
        row: dict[str, Any] = {
            "ms_per_step": spread([t * 1e3 for t in timing.wall]).as_dict(),
            "cpu_ms_per_step": spread([t * 1e3 for t in timing.cpu]).as_dict(),
            "vs_bare_adam": spread(ratios(timing.wall, baseline.wall)).as_dict(),
            "vs_bare_sgd": spread(ratios(timing.wall, timings["bare:sgd"].wall)).as_dict(),
            "vs_dataloader": spread(ratios(timing.wall, timings["dataloader:adam"].wall)).as_dict(),
        }
        if kind == "framework":
            for twin in (f"bare:{algorithm}", f"bare:{algorithm}_sync_free"):
                if twin in timings:
                    row[f"vs_{twin}"] = spread(ratios(timing.wall, timings[twin].wall)).as_dict()
                    row[f"cpu_vs_{twin}"] = spread(ratios(timing.cpu, timings[twin].cpu)).as_dict()
        figures["candidates"][name] = row
    probed = ["framework:ssl_alm", "bare:ssl_alm", "dataloader:adam"] if quick else list(timings)
    for name, memory in measure_memory(probed, 50 if quick else 300).items():
        figures["candidates"][name]["memory"] = memory
    return figures


def _cell(row: dict[str, Any], key: str, digits: int = 2) -> str:
    if key not in row:
        return "–"
    s = row[key]
    return f"{s['median']:.{digits}f} [{s['q25']:.{digits}f}–{s['q75']:.{digits}f}]"


def render(figures: dict[str, Any]) -> str:
    """The trainer section's Markdown: one table of every candidate, then the target check."""
    rows = figures["candidates"]
    lines = [
        f"{figures['repeats']} interleaved repetitions × {figures['steps']} steps per "
        "candidate; median [interquartile range] of the per-repetition figures. "
        "Ratios are wall time over the baseline's wall time in the same repetition.",
        "",
        "| candidate | ms/step (wall) | ms/step (CPU) | × same algorithm, bare | × bare Adam "
        "| × bare SGD | × DataLoader Adam | peak RSS growth (MiB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        memory = f"{row['memory']['rss_growth_mib']:.1f}" if "memory" in row else "–"
        twin = f"vs_bare:{name.split(':')[1]}"
        lines.append(
            f"| `{name}` | {_cell(row, 'ms_per_step', 3)} | {_cell(row, 'cpu_ms_per_step', 3)} "
            f"| {_cell(row, twin)} | {_cell(row, 'vs_bare_adam')} "
            f"| {_cell(row, 'vs_bare_sgd')} | {_cell(row, 'vs_dataloader')} "
            f"| {memory} |"
        )
    lines += ["", f"**Target** (issue 9): a constrained framework step ≤ {TARGET}× its bare loop."]
    for algorithm in TARGETED:
        row = rows[f"framework:{algorithm}"]
        for twin in (f"bare:{algorithm}", f"bare:{algorithm}_sync_free"):
            if f"vs_{twin}" not in row:
                continue
            wall, cpu = row[f"vs_{twin}"]["median"], row[f"cpu_vs_{twin}"]["median"]
            verdict = "met" if wall <= TARGET else "missed"
            lines.append(
                f"- `{algorithm}` against `{twin}`: {wall:.3f}× wall, {cpu:.3f}× CPU time "
                f"→ {verdict}."
            )
    return "\n".join(lines)


COMMAND = ".venv/bin/python benchmarks/run.py --only trainer"


def run(quick: bool) -> Section:
    figures = measure(quick)
    return Section("Trainer: time per step", COMMAND, render(figures), figures)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.quick), indent=2))


if __name__ == "__main__":
    main()
