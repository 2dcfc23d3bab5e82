"""The prepared GPU check's steps (issue 21), one per process: ``gpu_check.sh`` time-boxes each.

    python -m benchmarks.bench_gpu STEP OUT [--seconds N]

Why: the product is for SLURM GPU nodes and a GPU is lent for minutes at a time, so the
check must be right the first time and bring back whatever it got. Each step records itself
in OUT (``gpu_report``) as soon as it ends:

- ``device``: starts the report with the machine; on CUDA a pinned host-to-device copy and
  a float64 product, checked against the CPU;
- ``tests``: every ``@pytest.mark.cuda`` test (``tests/test_cuda.py``: placement and dtype,
  packed seeds, no host sync inside a step, pinned copies, an evaluation's reads);
- ``ddp``: exact data parallelism on one device (``gpu_ddp.py``);
- ``packing``: seed-steps per second of K packed seeds against one seed per trial;
- ``trainer``: every algorithm's step against its bare loop (``bench_trainer.measure``);
- ``compile``: compiled steps and CUDA graphs (``training.compile: default`` and
  ``reduce-overhead``) against eager ones (``bench_compile.device_figures``);
- ``sweep``: a local ``ctrain sweep`` of 4 trials sharing the device
  (``resources.gpus_per_trial: 0.25``) into a store under OUT.

Without CUDA each step runs its CPU fallback, the same code on the CPU where there is one,
and reports itself ``skipped`` with the reason, so the check is exercised wherever the test
suite runs (``tests/test_gpu_check.py``) and cannot rot before the first GPU reaches it.
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import importlib.util
import os
import platform
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import torch
import torch.distributed as dist

from benchmarks import bench_compile, bench_packing, bench_trainer
from benchmarks.gpu_ddp import ddp_step
from benchmarks.gpu_report import FAILED, PASSED, SKIPPED, StepResult, append, begin
from ctrain_dist.data.load import load_data
from ctrain_dist.data.tabular import TabularData
from ctrain_dist.spec import TrialSpec
from ctrain_dist.store.schema import DEVICE, ENDED_AT, STARTED_AT, STATUS, STATUS_FINISHED
from ctrain_dist.trial.distributed import Workers
from ctrain_dist.trial.loop import learner_for, synchronise

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("ray", "pydantic", "osqp", "pytest")
"""What the steps import besides torch, reported up front: a GPU image may lack some."""
MARGIN_S = 15.0
"""Seconds of a step's box kept back from its subprocess, so that a subprocess that runs
long is stopped here and the step still records itself before the shell's box ends."""


def cuda_missing() -> str | None:
    """Why there is no usable CUDA device here, or None when there is one."""
    if torch.cuda.is_available():
        return None
    if torch.version.cuda is None:
        return f"no CUDA device (torch {torch.__version__} is built without CUDA)"
    return f"no CUDA device (torch {torch.__version__}, CUDA {torch.version.cuda}, sees none)"


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def about() -> dict[str, Any]:
    """The machine and software the figures come from."""
    info: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_runtime": torch.version.cuda,
        "cpu_cores": os.cpu_count(),
        "cuda": cuda_missing() or "available",
        "packages": {name: _version(name) for name in PACKAGES},
    }
    if cuda_missing() is None:
        properties = torch.cuda.get_device_properties(0)
        nccl = torch.cuda.nccl.version() if dist.is_nccl_available() else None
        info.update(
            device=properties.name,
            capability=f"{properties.major}.{properties.minor}",
            memory_gib=round(properties.total_memory / 2**30, 1),
            devices=torch.cuda.device_count(),
            nccl=".".join(map(str, nccl)) if isinstance(nccl, tuple) else nccl,
        )
    return info


def header(info: dict[str, Any]) -> str:
    device = (
        f"{info['device']}, compute capability {info['capability']}, {info['memory_gib']} GiB"
        f", {info['devices']} device(s), NCCL {info['nccl']}"
        if "device" in info
        else info["cuda"]
    )
    packages = ", ".join(
        f"{name} {version or 'missing'}" for name, version in info["packages"].items()
    )
    return "\n".join(
        [
            "# GPU check",
            "",
            f"`bash benchmarks/gpu_check.sh OUT` (issue 21), {info['date']}. Each step ran in "
            "its own process under its own time box; one that ran out says so.",
            "",
            "| machine | |",
            "|---|---|",
            f"| device | {device} |",
            f"| software | Python {info['python']}, torch {info['torch']}, CUDA runtime "
            f"{info['cuda_runtime'] or 'none'} |",
            f"| CPU | {info['cpu_cores']} cores |",
            f"| packages | {packages} |",
        ]
    )


def device_step(out: Path, seconds: float) -> StepResult:
    """Start the report; on CUDA, a pinned non-blocking copy in and a product out, equal to
    the CPU's (float64, so no TF32 or reduced-precision path can hide a wrong copy)."""
    info = about()
    begin(out, info, header(info))
    missing = cuda_missing()
    if missing is not None:
        return StepResult(SKIPPED, f"{missing}: every GPU step runs its CPU fallback", info)
    host = torch.randn(512, 512, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    on_device = host.pin_memory().to("cuda", non_blocking=True)
    torch.testing.assert_close((on_device @ on_device).cpu(), host @ host, rtol=1e-12, atol=1e-9)
    return StepResult(PASSED, "", info, "A pinned copy in and a float64 product out agree.")


def _run_logged(command: Sequence[str], log: Path, seconds: float) -> int | None:
    """Run ``command`` from the repository root, output to ``log``, in its own process group,
    killed whole (Ray's processes too) after ``seconds``; its exit code, None if killed."""
    with log.open("w") as handle:
        process = subprocess.Popen(
            command, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            return process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return None


def _tail(log: Path, lines: int = 15) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def _fenced(text: str) -> str:
    return f"```\n{text}\n```"


CUDA_MARK = "pytest.mark.cuda"


def cuda_test_files() -> list[Path]:
    """The test files holding a ``cuda``-marked test: collecting only these keeps the step
    short, and clear of other files' test-only packages that a GPU image may lack."""
    return sorted(p for p in (ROOT / "tests").glob("test_*.py") if CUDA_MARK in p.read_text())


def junit_outcomes(junit: Path) -> list[dict[str, Any]]:
    """Each test case of a pytest JUnit XML report: its id, outcome, seconds and message."""
    cases = []
    for case in ElementTree.parse(junit).iter("testcase"):
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error"):
                outcome, message = child.tag, child.get("message", "")
                break
            if child.tag == "skipped":
                xfail = child.get("type") == "pytest.xfail"
                outcome, message = ("xfailed" if xfail else "skipped"), child.get("message", "")
        cases.append(
            {
                "test": f"{case.get('classname')}::{case.get('name')}",
                "outcome": outcome,
                "seconds": float(case.get("time") or 0),
                "message": message[:400],
            }
        )
    return cases


def tests_step(out: Path, seconds: float) -> StepResult:
    """``pytest -m cuda`` on the files that hold CUDA tests; a JUnit report read back."""
    files = cuda_test_files()
    if not files:
        return StepResult(FAILED, f"no test file under tests/ uses {CUDA_MARK}")
    junit, log = out / "cuda_tests.xml", out / "cuda_tests.log"
    junit.unlink(missing_ok=True)
    command = [sys.executable, "-m", "pytest", "-m", "cuda", "-p", "no:cacheprovider", "-v"]
    code = _run_logged([*command, f"--junitxml={junit}", *map(str, files)], log, seconds - MARGIN_S)
    names = ", ".join(str(p.relative_to(ROOT)) for p in files)
    if code is None or not junit.is_file():
        why = "ran out of time" if code is None else f"exited {code} without a report"
        return StepResult(FAILED, f"pytest {why}; see cuda_tests.log", {}, _fenced(_tail(log)))
    cases = junit_outcomes(junit)
    counts = {o: sum(c["outcome"] == o for c in cases) for o in {c["outcome"] for c in cases}}
    figures = {"files": names, "exit_code": code, "counts": counts, "cases": cases}
    rows = [
        f"| `{c['test']}` | {c['outcome']} | {c['seconds']:.2f} | "
        f"{c['message'].splitlines()[0][:160].replace('|', '/') if c['message'] else ''} |"
        for c in cases
    ]
    table = "\n".join(["| test | outcome | s | message |", "|---|---|---|---|", *rows])
    broken = [c["test"] for c in cases if c["outcome"] in ("failure", "error")]
    if broken or code not in (0, 1):
        why = f"{len(broken)} of {len(cases)} CUDA tests failed: {', '.join(broken)}"
        return StepResult(FAILED, why if broken else f"pytest exited {code}", figures, table)
    missing = cuda_missing()
    if missing is not None:
        why = f"{missing}: the {len(cases)} CUDA tests of {names} were collected, each skipped"
        return StepResult(SKIPPED, why, figures)
    return StepResult(PASSED, "", figures, f"{counts} in {names}.\n\n{table}")


PACK_SIZES = (1, 8, 64, 256, 1024)
WARMUP_STEPS, TIMED_STEPS = 5, 50
FALLBACK_SIZES, FALLBACK_STEPS = (1, 8), 10
"""The CPU fallback: the same measurement at two small sizes, a few steps."""


def seed_steps_per_second(
    trials: list[TrialSpec], data: TabularData, device: torch.device, steps: int
) -> dict[str, float]:
    """Seed-steps per second of ``trials`` trained as one learner (one trial: the
    ``ModelLearner`` a trial of one seed trains), training steps alone.

    Evaluation, which the loop runs on the host for every seed, is left out: at K = 1,024 it
    would take longer than the whole step's time box, and ``bench_packing`` cancels it anyway.
    The clock starts and stops with the device's queue drained; the best of
    ``bench_packing.REPEATS`` windows (other work only ever adds time).
    """
    if device.type == "cuda":
        gc.collect()  # a learner holds a cycle (its vmapped bound method): free the last one
        torch.cuda.reset_peak_memory_stats(device)
    learner = learner_for(trials, data, Workers(), device)

    def window(count: int) -> float:
        synchronise(device)
        started = time.perf_counter()
        for _ in range(count):
            learner.algorithm.step(learner.estimate)
        synchronise(device)
        return time.perf_counter() - started

    window(WARMUP_STEPS)
    best = min(window(steps) for _ in range(bench_packing.REPEATS))
    figures = {"seed_steps_per_s": len(trials) * steps / best}
    if device.type == "cuda":
        figures["peak_memory_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return figures


def compiled_variant() -> str:
    """Where the compiled variant is measured: the ``compile`` step (one seed per trial)."""
    return "measured by the compile step (bench_compile.device_figures), one seed per trial"


def packing_step(out: Path, seconds: float) -> StepResult:
    """K packed seeds against one seed per trial (K = 1), for ``bench_packing``'s algorithms."""
    missing = cuda_missing()
    sizes, steps = (
        (PACK_SIZES, TIMED_STEPS) if missing is None else (FALLBACK_SIZES, FALLBACK_STEPS)
    )
    device = torch.device("cuda" if missing is None else "cpu")
    first = bench_packing._trials(bench_packing.ALGORITHMS[0], 1, steps)[0]
    data = load_data(first.data, first.split)
    results: dict[str, dict[str, dict[str, float]]] = {}
    for algorithm in bench_packing.ALGORITHMS:
        results[algorithm] = {}
        for seeds in sizes:
            trials = bench_packing._trials(algorithm, seeds, steps, device=device.type)
            results[algorithm][str(seeds)] = seed_steps_per_second(trials, data, device, steps)
        alone = results[algorithm]["1"]["seed_steps_per_s"]
        for figures in results[algorithm].values():
            figures["ratio"] = figures["seed_steps_per_s"] / alone
    compiled = compiled_variant()
    figures = {"device": str(device), "steps": steps, "packed": results, "compiled": compiled}
    markdown = _packing_table(results, device, steps) + f"\n\nCompiled variant: {compiled}."
    if missing is not None:
        why = f"{missing}: ran the CPU fallback, K = {', '.join(map(str, sizes))}"
        return StepResult(SKIPPED, why, figures, markdown)
    return StepResult(PASSED, "", figures, markdown)


def _packing_table(results: dict[str, Any], device: torch.device, steps: int) -> str:
    algorithms = list(results)
    sizes = list(results[algorithms[0]])
    memory = device.type == "cuda"
    head = [f"`{a}` seed-steps/s (× K = 1)" for a in algorithms]
    head += [f"`{a}` peak MiB" for a in algorithms] if memory else []
    lines = [
        f"Training steps alone on `{device}`, best of {bench_packing.REPEATS} windows of "
        f"{steps} steps; K = 1 is one seed per trial (a plain `ModelLearner`), K > 1 a "
        "`PackedLearner`.",
        "",
        "| K | " + " | ".join(head) + " |",
        "|---" * (len(head) + 1) + "|",
    ]
    for size in sizes:
        cells = [
            f"{results[a][size]['seed_steps_per_s']:,.0f} ({results[a][size]['ratio']:.2f}×)"
            for a in algorithms
        ]
        cells += (
            [f"{results[a][size]['peak_memory_mib']:.0f}" for a in algorithms] if memory else []
        )
        lines.append(f"| {size} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


TRAINER_NOTE = (
    "The bare loops pick each group's rows with boolean masks (`losses[groups == g]`), whose "
    "result size depends on the data, so on a GPU each waits for the device, twice an "
    "estimate; `bare:switching_subgradient` also branches in Python on a value. The "
    "framework's step does neither (`tests/test_cuda.py`), so on a GPU the framework can "
    "beat its bare twin by those waits. `ghost` solves its subproblems on the host by design."
)


def trainer_step(out: Path, seconds: float) -> StepResult:
    """``bench_trainer.timed`` on the device (its quick repetitions, to fit the box)."""
    missing = cuda_missing()
    device = "cuda" if missing is None else "cpu"
    figures = bench_trainer.timed(quick=True, device=device)
    figures["device"] = device
    drained = ", the clocks read with the device's queue drained" if missing is None else ""
    lines = [
        f"{figures['repeats']} interleaved repetitions × {figures['steps']} steps per "
        f"candidate on `{device}`{drained}; median [interquartile range] of the "
        "per-repetition figures, ratios of wall times.",
        "",
        "| candidate | ms/step | × same algorithm, bare | × bare Adam | × bare SGD |",
        "|---|---|---|---|---|",
    ]
    for name, row in figures["candidates"].items():
        twin = f"vs_bare:{name.split(':')[1].removesuffix('_sync_free')}"
        cells = [bench_trainer._cell(row, key) for key in (twin, "vs_bare_adam", "vs_bare_sgd")]
        lines.append(
            f"| `{name}` | {bench_trainer._cell(row, 'ms_per_step', 3)} | "
            + " | ".join(cells)
            + " |"
        )
    markdown = "\n".join([*lines, "", TRAINER_NOTE])
    if missing is not None:
        why = f"{missing}: ran the CPU fallback (quick); the CPU's figures are BENCHMARKS.md's"
        return StepResult(SKIPPED, why, figures, markdown)
    return StepResult(PASSED, "", figures, markdown)


SWEEP = "gpu-check-sweep"
SWEEP_TRIALS = 4
SWEEP_OVERRIDES = (
    f"name={SWEEP}",
    f"seeds={SWEEP_TRIALS}",
    "algorithms=[{name: ssl_alm}]",
    "training.budget.steps=2000",
    "training.eval_every=1000",
    "training.device=auto",
    "resources.cpus_per_trial=1",
    f"resources.gpus_per_trial={1 / SWEEP_TRIALS}",
)
"""Four trials of a quarter GPU each: all four fit on one device at once. ``auto``, not
``cuda``: the spec refuses ``cuda`` on a machine without it, even for the CPU fallback's
``--dry-run``, and the store's ``device`` column says where the trials did run."""


def sweep_command(store: Path, dry_run: bool) -> list[str]:
    sets = [word for override in SWEEP_OVERRIDES for word in ("--set", override)]
    command = [sys.executable, "-m", "ctrain_dist.cli", "sweep", str(bench_packing.QUICKSTART)]
    return [*command, "--store", str(store), *sets, *(["--dry-run"] if dry_run else [])]


def most_at_once(starts: Sequence[Any], ends: Sequence[Any]) -> int:
    """The most intervals ``[start, end)`` open at one instant (an end before a start that
    falls at the same instant)."""
    events = sorted([(end, -1) for end in ends] + [(start, 1) for start in starts])
    running = most = 0
    for _, change in events:
        running += change
        most = max(most, running)
    return most


REFUSED = "resources.gpus_per_trial"
"""The field ``ctrain sweep`` names when it refuses a GPU request the machine cannot meet."""


def sweep_step(out: Path, seconds: float) -> StepResult:
    """``ctrain sweep`` of 4 trials sharing the device; the store read back. Without CUDA,
    the same command with ``--dry-run``: the spec and overrides must be accepted and the GPU
    request refused up front (exit 2 naming ``resources.gpus_per_trial``), as it is on any
    machine without a GPU."""
    if importlib.util.find_spec("ray") is None:
        return StepResult(SKIPPED, "ray is not installed (ctrain sweep runs trials on Ray)")
    missing = cuda_missing()
    store_root, log = out / "sweep-store", out / "sweep.log"
    started = time.perf_counter()
    code = _run_logged(sweep_command(store_root, missing is not None), log, seconds - MARGIN_S)
    wall = time.perf_counter() - started
    output = _fenced(_tail(log))
    refused = code == 2 and REFUSED in log.read_text()
    if missing is not None and (code == 0 or refused):
        said = f"refused up front as it should be (exit 2, {REFUSED})" if refused else "accepted"
        why = f"{missing}: ctrain sweep --dry-run of the same spec and overrides {said}"
        return StepResult(SKIPPED, why, {"dry_run_exit_code": code}, output)
    if code != 0:
        why = "ran out of time" if code is None else f"exited {code}"
        return StepResult(FAILED, f"ctrain sweep {why}; see sweep.log", {}, output)
    return _sweep_result(store_root, wall, output)


def _sweep_result(store_root: Path, wall: float, output: str) -> StepResult:
    from ctrain_dist import store

    trials = store.open(store_root).trials(SWEEP)
    figures = {
        "wall_s": wall,
        "statuses": {str(k): int(n) for k, n in trials[STATUS].value_counts().items()},
        "devices": sorted(set(trials[DEVICE].astype(str))),
        "most_trials_at_once": most_at_once(list(trials[STARTED_AT]), list(trials[ENDED_AT])),
    }
    markdown = (
        f"{len(trials)} trials in {wall:.1f} s, statuses {figures['statuses']}, devices "
        f"{figures['devices']}; at most {figures['most_trials_at_once']} trials ran at once "
        f"(more than one: the quarter-GPU requests shared the device).\n\n{output}"
    )
    finished = (trials[STATUS] == STATUS_FINISHED).sum()
    on_cuda = all(device.startswith("cuda") for device in figures["devices"])
    if len(trials) != SWEEP_TRIALS or finished != SWEEP_TRIALS or not on_cuda:
        why = f"{finished} of {SWEEP_TRIALS} trials finished, on {figures['devices']}"
        return StepResult(FAILED, why, figures, markdown)
    return StepResult(PASSED, "", figures, markdown)


def compile_step(out: Path, seconds: float) -> StepResult:
    """Compiled steps (``default``) and CUDA graphs (``reduce-overhead``) against eager on the
    device (``bench_compile.device_figures``); without CUDA one eager step each."""
    missing = cuda_missing()
    figures = bench_compile.device_figures(torch.device("cuda" if missing is None else "cpu"))
    markdown = bench_compile.render_device(figures)
    if missing is not None:
        why = f"{missing}: ran the CPU fallback; the CPU's compiled figures are BENCHMARKS.md's"
        return StepResult(SKIPPED, why, figures, markdown)
    return StepResult(PASSED, "", figures, markdown)


STEPS: dict[str, Callable[[Path, float], StepResult]] = {
    "device": device_step,
    "tests": tests_step,
    "ddp": lambda out, seconds: ddp_step(cuda_missing()),
    "packing": packing_step,
    "trainer": trainer_step,
    "compile": compile_step,
    "sweep": sweep_step,
}


def main(argv: list[str] | None = None) -> int:
    """Run one step and record it, whatever happens short of being killed; exit 1 if it
    failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=list(STEPS))
    parser.add_argument("out", type=Path)
    parser.add_argument("--seconds", type=float, default=60.0, help="the step's time box")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    try:
        result = STEPS[args.step](args.out, args.seconds)
    except Exception as error:  # a step that breaks is a result: record it, go on
        trace = traceback.format_exc()[-4000:]
        why = f"{type(error).__name__}: {error}".splitlines()[0][:300]
        result = StepResult(FAILED, why, {"traceback": trace}, _fenced(trace))
    result.seconds = time.perf_counter() - started
    append(args.out, args.step, result)
    said = f": {result.reason}" if result.reason else ""
    print(f"gpu_check: {args.step}: {result.status}{said}", flush=True)
    return 1 if result.status == FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
