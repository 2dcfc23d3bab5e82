"""Streaming benchmark: a step on a user's ``Dataset`` read per minibatch against the same
step on the same data in memory, in the same process.

Setting: the shipped digits example (``examples/digits``: 1,797 8×8 images, the small CNN,
batch 64, float32, one torch thread, SGD with a loss-gap constraint); the data factory's two
forms, tensors (the in-memory path: an index gather on the device) and its ``Dataset`` (the
streaming path, ``data/streaming.py``: the same sampler's rows handed to a ``DataLoader`` as
its batch sampler, items read and stacked, then moved). Candidates, each a ``ModelLearner``
built as ``loop.train`` builds it, timed per ``learner.algorithm.step(learner.estimate)``:

- ``in_memory``: the baseline;
- ``streaming_0``: the loader in this process (``data.loader_workers: 0``);
- ``streaming_2``: two DataLoader worker processes reading ahead (``loader_workers: 2``).

The wall-time ratio is the figure (the workers' CPU is not this thread's); the target is
``TARGET``. What limits it is per-item work the in-memory path does not do: 64
``__getitem__`` calls and a ``torch.stack`` per batch, plus, with workers, passing each batch
between processes through shared memory; the CNN step itself is about a millisecond.

``python -m benchmarks.bench_streaming [--quick]`` prints the figures as JSON.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from benchmarks import Section, interleave, print_figures, ratios, spread
from ctrain_dist.data.load import load_data
from ctrain_dist.spec import parse_spec
from ctrain_dist.trial.distributed import Workers
from ctrain_dist.trial.learner import ModelLearner

TARGET = 1.5
"""Done-when 5 of issue 19: a streaming step costs at most 1.5× the in-memory step."""
COMMAND = ".venv/bin/python benchmarks/run.py --only streaming"
CANDIDATES = {"in_memory": (False, 0), "streaming_0": (True, 0), "streaming_2": (True, 2)}


def learner(streaming: bool, workers: int) -> ModelLearner:
    raw = {
        "name": "bench-streaming",
        "data": {
            "dataset": "custom",
            "factory": "examples.digits.data:tinted_digits",
            "options": {"streaming": streaming},
            "loader_workers": workers,
        },
        "model": {"factory": "examples.digits.cnn:small_cnn"},
        "constraints": [{"kind": "loss_gap", "bound": 0.05}],
        "training": {"batch_size": 64, "dtype": "float32", "threads": 1},
        "algorithms": [{"name": "sgd", "params": {"lr": 0.05}}],
        "seeds": 1,
    }
    spec = parse_spec(raw)
    (trial,) = spec.trials()
    return ModelLearner(trial, load_data(spec.data, spec.split), Workers(), torch.device("cpu"))


def measure(quick: bool) -> dict[str, Any]:
    torch.set_num_threads(1)
    load_before = os.getloadavg()[0]
    learners = {name: learner(*form) for name, form in CANDIDATES.items()}
    calls = {
        name: (lambda each=each: each.algorithm.step(each.estimate))
        for name, each in learners.items()
    }
    repeats, steps = (3, 20) if quick else (15, 100)
    timings = interleave(calls, repeats=repeats, steps=steps, warmup=20)
    base = timings["in_memory"]
    figures: dict[str, Any] = {
        "in_memory_step_ms": spread(base.wall).median * 1e3,
    }
    for name in ("streaming_0", "streaming_2"):
        figures[f"{name}_step_ms"] = spread(timings[name].wall).median * 1e3
        figures[f"{name}_over_in_memory"] = spread(ratios(timings[name].wall, base.wall)).as_dict()
    figures["repeats"], figures["steps"] = repeats, steps
    figures["load_average"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    for each in learners.values():  # stop the loader workers now, not at collection
        sampler = each.samplers[0]
        if hasattr(sampler, "close"):
            sampler.close()
    return figures


def render(figures: dict[str, Any]) -> str:
    lines = [
        "The digits example's CNN step (batch 64, float32, one thread) on its `Dataset` "
        "(streaming) against the same data as tensors (in memory), timed alternately in one "
        f"process; target ≤ {TARGET}× (wall time, median [quartiles] of per-repetition ratios).",
        "",
        "| path | step (ms) | over in memory |",
        "|---|---|---|",
        f"| in memory | {figures['in_memory_step_ms']:.2f} | 1 |",
    ]
    for name, label in (
        ("streaming_0", "streaming, loader in process"),
        ("streaming_2", "streaming, 2 loader workers"),
    ):
        ratio = figures[f"{name}_over_in_memory"]
        lines.append(
            f"| {label} | {figures[f'{name}_step_ms']:.2f} | {ratio['median']:.2f} "
            f"[{ratio['q25']:.2f}–{ratio['q75']:.2f}] |"
        )
    lines += [
        "",
        f"Load average {figures['load_average'][0]} → {figures['load_average'][1]}. The extra "
        "cost is per item: a `__getitem__` call each and one `torch.stack` a batch, in the "
        "trial's process without workers; with workers that work moves to them and what is "
        "left is the hand-over of each batch through shared memory. A ratio below 1 is no "
        "saving (the model's work per step is the same): on a loaded machine a trial with "
        "reader processes simply gets more of the scheduler's time.",
    ]
    return "\n".join(lines)


def run(quick: bool) -> Section:
    figures = measure(quick)
    return Section(
        "Streaming: a Dataset read per minibatch against in memory",
        COMMAND,
        render(figures),
        figures,
    )


def main(argv: list[str] | None = None) -> None:
    print_figures(measure, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    main()
