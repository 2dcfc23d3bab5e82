"""The configuration-packing and driver-CPU benchmark runs for real, at toy sizes."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PHASES = {"plan_ms_per_trial", "callback_ms_per_trial", "resume_ms_per_trial", "total_ms_per_trial"}


def _run(*arguments: str) -> str:
    command = [sys.executable, "-m", "benchmarks.bench_config_packing", *arguments]
    return subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True).stdout


def test_the_throughput_benchmark_reports_packing_ratios_and_driver_cpu_per_trial():
    figures = json.loads(_run("--configurations", "2", "--steps", "4", "--trials", "8", "16"))
    for algorithm in ("ssl_alm", "alm"):
        row = figures["packing"][algorithm]
        assert row["cpu_ratio"] > 0 and row["train_time_ratio"] > 0
        assert row["separate"]["cpu_s"] > 0 and row["packed"]["cpu_s"] > 0
    for size in ("8", "16"):
        assert set(figures["driver"][size]) == PHASES
        assert all(value > 0 for value in figures["driver"][size].values())
    assert set(figures["driver"]["flat"]) == PHASES
