"""The benchmark suite: every figure a ratio against a baseline measured in the same run.

Why ratios: the machine is shared, so absolute times drift with load from one minute to the
next; a candidate and its baseline timed in alternation within the same repetition see the
same load, and the ratio of the two cancels most of it. :func:`interleave` does that
alternation; :func:`spread` summarises the per-repetition figures (median and quartiles).

One entry point, ``benchmarks/run.py``, runs every section and rewrites ``BENCHMARKS.md``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Timing:
    """Per-step times of one candidate, one entry per repetition (seconds)."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)


INSTANCES = 3
"""Independent instances per step candidate (``in_turn``)."""


def in_turn(build: Callable[[], Callable[[], Any]], count: int = INSTANCES) -> Callable[[], Any]:
    """One candidate made of ``count`` instances that ``build`` makes (each its own model,
    state and batches), called in turn, one call each.

    Why: where an instance's tensors happen to lie in memory moves a small model's step
    time by a few percent (3% between four instances of one loop here), which a candidate of
    one instance against a baseline of one would report as a difference of code.
    """
    calls = itertools.cycle([build() for _ in range(count)])
    return lambda: next(calls)()


def interleave(
    candidates: dict[str, Callable[[], Any]],
    repeats: int,
    steps: int,
    warmup: int,
    steps_for: dict[str, int] | None = None,
    synchronize: Callable[[], None] | None = None,
) -> dict[str, Timing]:
    """Time ``steps`` calls of every candidate per repetition, candidates in rotating order.

    ``steps_for`` gives a candidate far slower than the rest fewer calls (and warm-up calls),
    so that it does not dominate the run; its times are per step all the same.

    Each candidate first runs ``warmup`` calls (allocator, autograd and optimiser state). The
    order rotates by one each repetition, so no candidate always follows the same neighbour.
    Besides wall time it records the thread's CPU time, which excludes the time this process
    waits for a core while other processes run (robust under load, blind to contention).

    ``synchronize`` (on a GPU, ``torch.cuda.synchronize``) runs before the clocks start and
    before they stop: a CUDA call returns once its work is queued, so without it the clock
    would time the queueing, not the work.
    """
    steps_for = steps_for or {}
    for name, call in candidates.items():
        for _ in range(min(warmup, steps_for.get(name, warmup))):
            call()
    names = list(candidates)
    timings = {name: Timing() for name in names}
    for repeat in range(repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            call, calls = candidates[name], steps_for.get(name, steps)
            if synchronize is not None:
                synchronize()
            wall, cpu = time.perf_counter(), time.thread_time()
            for _ in range(calls):
                call()
            if synchronize is not None:
                synchronize()
            timings[name].cpu.append((time.thread_time() - cpu) / calls)
            timings[name].wall.append((time.perf_counter() - wall) / calls)
    return timings


def ratios(candidate: list[float], baseline: list[float]) -> list[float]:
    """Per-repetition ratios: each candidate time over the baseline time of its repetition."""
    return [c / b for c, b in zip(candidate, baseline, strict=True)]


@dataclass(frozen=True)
class Spread:
    """Median and interquartile range of a sample (quartiles by the inclusive method)."""

    median: float
    low: float
    high: float

    def format(self, digits: int = 2, scale: float = 1.0) -> str:
        return (
            f"{self.median * scale:.{digits}f} "
            f"[{self.low * scale:.{digits}f}–{self.high * scale:.{digits}f}]"
        )

    def as_dict(self) -> dict[str, float]:
        return {"median": self.median, "q25": self.low, "q75": self.high}


def spread(values: list[float]) -> Spread:
    """Median and quartiles; a sample of one is its own quartiles."""
    if len(values) < 2:
        return Spread(values[0], values[0], values[0])
    low, _, high = statistics.quantiles(values, n=4, method="inclusive")
    return Spread(statistics.median(values), low, high)


@dataclass
class Section:
    """One section of BENCHMARKS.md: its Markdown and its figures (numbers, for checking)."""

    title: str
    command: str
    markdown: str
    figures: dict[str, Any]


def print_figures(
    measure: Callable[[bool], dict[str, Any]], description: str, argv: list[str] | None = None
) -> None:
    """A section's standalone entry point: its figures as JSON (``--quick``: small runs)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.quick), indent=2, default=str))
