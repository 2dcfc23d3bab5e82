"""Start-up benchmark: how long a ``ctrain`` command takes to begin, beside ``python -c pass``.

Why: the store, report and status commands are what a researcher types many times a day
while a sweep runs; they import neither torch nor Ray (``tests/test_architecture.py``), and
this measures what that buys. Each command runs in a fresh interpreter, the commands in
rotating order within each repetition (``benchmarks.interleave``), so the page cache and the
machine's load are shared; figures are wall times and ratios to ``python -c pass`` in the
same repetition. ``ctrain algorithms`` (which loads torch, for its hyperparameter models) is
the contrast.

    .venv/bin/python benchmarks/bench_startup.py [--quick]
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks import Section, interleave, print_figures, ratios, spread

COMMAND = ".venv/bin/python benchmarks/run.py --only startup"
BASELINE = "python -c pass"


def commands(store: Path) -> dict[str, list[str]]:
    """Each timed command as an argument vector for a fresh interpreter."""
    ctrain = [sys.executable, "-m", "ctrain_dist.cli"]
    return {
        BASELINE: [sys.executable, "-c", "pass"],
        "import ctrain_dist": [sys.executable, "-c", "import ctrain_dist"],
        "ctrain --help": [*ctrain, "--help"],
        "ctrain store ls (empty store)": [*ctrain, "store", "ls", str(store)],
        "ctrain report --help": [*ctrain, "report", "--help"],
        "ctrain status --help": [*ctrain, "status", "--help"],
        "ctrain algorithms (loads torch)": [*ctrain, "algorithms"],
    }


def measure(quick: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as folder:
        argvs = commands(Path(folder))
        candidates = {
            name: lambda argv=argv: subprocess.run(argv, check=True, capture_output=True)
            for name, argv in argvs.items()
        }
        timings = interleave(candidates, repeats=3 if quick else 15, steps=1, warmup=1)
    baseline = timings[BASELINE].wall
    return {
        "repeats": len(baseline),
        "commands": {
            name: {
                "seconds": spread(timing.wall).as_dict(),
                "vs_python_pass": spread(ratios(timing.wall, baseline)).as_dict(),
            }
            for name, timing in timings.items()
        },
    }


def render(figures: dict[str, Any]) -> str:
    lines = [
        f"{figures['repeats']} interleaved repetitions, each command in a fresh interpreter; "
        "median [interquartile range].",
        "",
        "| command | start-up (s) | × `python -c pass` |",
        "|---|---|---|",
    ]
    for name, row in figures["commands"].items():
        seconds, ratio = row["seconds"], row["vs_python_pass"]
        lines.append(
            f"| `{name}` | {seconds['median']:.3f} [{seconds['q25']:.3f}–{seconds['q75']:.3f}]"
            f" | {ratio['median']:.1f} [{ratio['q25']:.1f}–{ratio['q75']:.1f}] |"
        )
    return "\n".join(lines)


def run(quick: bool) -> Section:
    figures = measure(quick)
    return Section("Start-up: commands beside python -c pass", COMMAND, render(figures), figures)


def main(argv: list[str] | None = None) -> None:
    print_figures(measure, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    main()
