"""``benchmarks/gpu_check.sh``, run for real without CUDA: every step runs its CPU fallback or
says why it skipped, and both report files are written, so the check cannot rot before the
first GPU reaches it. Also the report's rules the shell relies on: a step it had to kill is
still reported, one already recorded is kept, and the summary's exit code says whether any step
failed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
STEPS = ("device", "tests", "ddp", "packing", "trainer", "compile", "sweep")
JSON, MARKDOWN = "gpu_check.json", "gpu_check.md"


def _check(out: Path, **env: str) -> subprocess.CompletedProcess:
    # No device, whatever this machine has: the test is of the fallbacks (a GPU run takes
    # minutes and is the check's own job).
    environment = {**os.environ, "CUDA_VISIBLE_DEVICES": "", **env}
    return subprocess.run(
        ["bash", str(SCRIPT), str(out)],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path_factory.mktemp("gpu-check")
    return _check(out), out


@pytest.mark.slow
def test_without_cuda_the_check_exits_0_with_both_reports(cpu_run):
    result, out = cpu_run
    assert result.returncode == 0, result.stdout + result.stderr
    assert (out / JSON).is_file()
    assert (out / MARKDOWN).is_file()


@pytest.mark.slow
def test_without_cuda_every_step_is_skipped_or_passed_and_a_skip_names_its_reason(cpu_run):
    _, out = cpu_run
    steps = json.loads((out / JSON).read_text())["steps"]
    assert list(steps) == list(STEPS)
    for name, step in steps.items():
        assert step["status"] in ("passed", "skipped"), (name, step["reason"])
        if step["status"] == "skipped":
            assert "no CUDA device" in step["reason"], name


@pytest.mark.slow
def test_the_markdown_has_a_section_per_step_with_its_status_and_a_summary(cpu_run):
    _, out = cpu_run
    markdown = (out / MARKDOWN).read_text()
    steps = json.loads((out / JSON).read_text())["steps"]
    for name, step in steps.items():
        assert f"## {name}: {step['status']} (" in markdown
    assert "## Summary" in markdown


def test_without_its_python_the_check_says_to_run_setup_first(tmp_path):
    result = _check(tmp_path / "out", CTRAIN_PYTHON=str(tmp_path / "missing" / "python"))
    assert result.returncode == 2
    assert "run bash scripts/setup.sh first" in result.stderr


def _report(*arguments: str) -> int:
    """``python -m benchmarks.gpu_report``, as the shell runs it."""
    command = [sys.executable, "-m", "benchmarks.gpu_report", *arguments]
    return subprocess.run(command, cwd=ROOT, capture_output=True, timeout=60).returncode


def _recorded(out: Path, status: str) -> None:
    step = {"status": status, "reason": "", "figures": {}, "markdown": "", "seconds": 1.0}
    (out / JSON).write_text(json.dumps({"about": {}, "steps": {"tests": step}}))


def test_a_step_the_shell_had_to_kill_is_reported_failed_and_a_recorded_one_kept(tmp_path):
    _recorded(tmp_path, "passed")
    for step in ("tests", "sweep"):
        assert _report("missing", str(tmp_path), step, "ran past its 110 s box") == 0
    steps = json.loads((tmp_path / JSON).read_text())["steps"]
    assert steps["tests"]["status"] == "passed"
    assert (steps["sweep"]["status"], steps["sweep"]["reason"]) == (
        "failed",
        "ran past its 110 s box",
    )
    assert "## sweep: failed" in (tmp_path / MARKDOWN).read_text()


def test_the_summary_exits_1_exactly_when_a_step_failed(tmp_path):
    _recorded(tmp_path, "passed")
    assert _report("summary", str(tmp_path)) == 0
    _report("missing", str(tmp_path), "ddp", "exited 1 unrecorded")
    assert _report("summary", str(tmp_path)) == 1
