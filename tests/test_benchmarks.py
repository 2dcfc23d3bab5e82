"""The benchmark suite's entry point, run for real in its quick mode."""

from __future__ import annotations

import json
import numbers
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = (
    "Start-up: commands beside python -c pass",
    "Trainer: time per step",
    "Sweep efficiency",
    "DDP: one process against two",
    "Data: cache prepare and load",
    "Store: write, read, compact",
    "Throughput: configuration packing and driver CPU",
)


def _numbers(figures) -> list[float]:
    if isinstance(figures, dict):
        return [n for value in figures.values() for n in _numbers(value)]
    if isinstance(figures, list):
        return [n for value in figures for n in _numbers(value)]
    if isinstance(figures, numbers.Real) and not isinstance(figures, bool):
        return [float(figures)]
    return []


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple[str, dict]:
    folder = tmp_path_factory.mktemp("bench")
    markdown, figures = folder / "BENCHMARKS.md", folder / "figures.json"
    subprocess.run(
        [sys.executable, "benchmarks/run.py", "--quick", "--out", markdown, "--json", figures],
        cwd=ROOT,
        check=True,
        timeout=300,
    )
    return markdown.read_text(), json.loads(figures.read_text())


@pytest.mark.slow
def test_quick_suite_writes_every_section_with_the_machine(quick_run):
    markdown, _ = quick_run
    for title in SECTIONS:
        assert f"## {title}" in markdown
    assert "load average" in markdown and "torch" in markdown


@pytest.mark.slow
def test_every_section_produces_positive_finite_figures(quick_run):
    _, figures = quick_run
    for title in SECTIONS:
        values = _numbers(figures[title])
        assert values, title
        assert all(v == v and abs(v) != float("inf") for v in values), title


@pytest.mark.slow
def test_trainer_compares_each_constrained_algorithm_with_its_bare_loop(quick_run):
    _, figures = quick_run
    rows = figures["Trainer: time per step"]["candidates"]
    for algorithm in ("ssl_alm", "switching_subgradient"):
        assert rows[f"framework:{algorithm}"][f"vs_bare:{algorithm}"]["median"] > 0


@pytest.mark.slow
def test_startup_measures_the_light_commands_beside_python_pass(quick_run):
    _, figures = quick_run
    commands = figures["Start-up: commands beside python -c pass"]["commands"]
    assert commands["python -c pass"]["vs_python_pass"]["median"] == 1.0
    for name in ("ctrain store ls (empty store)", "ctrain report --help", "ctrain status --help"):
        assert commands[name]["seconds"]["median"] > 0
