"""The benchmark suite's one entry point: runs every section and rewrites BENCHMARKS.md.

    .venv/bin/python benchmarks/run.py            # the full suite (under 15 minutes here)
    .venv/bin/python benchmarks/run.py --quick    # small repetitions, for tests (< 1 minute)
    .venv/bin/python benchmarks/run.py --only trainer ddp   # some sections, Markdown to stdout

Sections: ``startup`` (``ctrain`` commands beside ``python -c pass``), ``trainer`` (time per
step against hand-written loops), ``compile`` (compiled steps against eager loops and compile
times, ``bench_compile.py``), ``sweep`` (efficiency of many short trials), ``ddp`` (one
process against two), ``data`` (cache prepare and load, ``bench_data.py``), ``store`` (write,
read, compact, ``bench_store.py``), ``streaming`` (a user's ``Dataset`` read per minibatch
against the same data in memory, ``bench_streaming.py``), ``packed_factory`` (3 seeds of the
digits CNN packed through ``vmap`` against 3 single trials, ``bench_packed_factory.py``),
``config_packing`` (configurations
packed into one trial against separate trials, and the driver's CPU per trial at 200 to 2,000
trials, ``bench_config_packing.py``), ``algorithms`` (iALM, SPBM and ALM's options against
hand-written twins, ``bench_algorithms.py``). Absolute times
depend on the machine's load; the ratios, measured within one run, much less so. Run it when
the load average is low (it is recorded at the start and at the end).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import io
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):
    sys.path.insert(0, str(ROOT))

from benchmarks import Section  # noqa: E402

SECTIONS = (
    "startup",
    "trainer",
    "compile",
    "sweep",
    "ddp",
    "data",
    "store",
    "streaming",
    "packed_factory",
    "config_packing",
    "algorithms",
)


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    import ray
    import torch

    model = platform.processor() or "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "ray": ray.__version__,
        "torch_threads_default": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "unset"),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load_average_start": os.getloadavg(),
    }


def _captured_json(main: Callable[[list[str]], Any], argv: list[str]) -> dict[str, Any]:
    """Run another engineer's benchmark ``main(argv)``, which prints one JSON object."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        main(argv)
    text = buffer.getvalue()
    return json.loads(text[text.index("{") :])


def _table(figures: dict[str, Any], prefix: str = "") -> list[str]:
    rows = []
    for key, value in figures.items():
        if isinstance(value, dict):
            rows += _table(value, f"{prefix}{key}.")
        else:
            rows.append(f"| `{prefix}{key}` | {value} |")
    return rows


def data_section(quick: bool) -> Section:
    command = ".venv/bin/python benchmarks/bench_data.py"
    if importlib.util.find_spec("benchmarks.bench_data") is None:
        return Section("Data: cache prepare and load", command, "Skipped: no bench_data.py.", {})
    bench = importlib.import_module("benchmarks.bench_data")
    argv = ["--people", "20000", "--repeats", "2"] if quick else []
    figures = _captured_json(bench.main, argv)
    figures["load_over_prepare"] = figures["load_s"] / figures["prepare_s"]
    text = "\n".join(
        [
            f"Synthetic ACSIncome (CA), {figures['rows']:,} rows after filtering. "
            f"A trial's load costs {figures['load_over_prepare']:.4f}× the one-off prepare.",
            "",
            "| figure | value |",
            "|---|---|",
            *_table(figures),
        ]
    )
    return Section("Data: cache prepare and load", command, text, figures)


def store_section(quick: bool) -> Section:
    command = ".venv/bin/python benchmarks/bench_store.py"
    if importlib.util.find_spec("benchmarks.bench_store") is None:
        return Section("Store: write, read, compact", command, "Skipped: no bench_store.py.", {})
    bench = importlib.import_module("benchmarks.bench_store")
    argv = ["--trials", "10", "--rows", "1000"] if quick else []
    figures = _captured_json(bench.main, argv)
    before, after = figures["before_compaction"], figures["after_compaction"]
    figures["aggregate_store_over_duckdb"] = (
        after["aggregate_via_store_s"] / after["aggregate_via_duckdb_s"]
    )
    figures["read_after_over_before_compaction"] = (
        after["read_all_eval_columns_s"] / before["read_all_eval_columns_s"]
    )
    text = "\n".join(
        [
            f"{figures['eval_rows']:,} evaluation rows from {figures['trials']} trials. "
            f"Reading every column after compaction takes "
            f"{figures['read_after_over_before_compaction']:.2f}× the time before it; the "
            f"aggregate through the store takes {figures['aggregate_store_over_duckdb']:.2f}× "
            "DuckDB's on the same files.",
            "",
            "| figure | value |",
            "|---|---|",
            *_table(figures),
        ]
    )
    return Section("Store: write, read, compact", command, text, figures)


def run_section(name: str, quick: bool) -> Section:
    if name == "data":
        return data_section(quick)
    if name == "store":
        return store_section(quick)
    module = importlib.import_module(f"benchmarks.bench_{name}")
    return module.run(quick)


def document(about: dict[str, Any], sections: list[Section], quick: bool, seconds: float) -> str:
    load_start = ", ".join(f"{x:.2f}" for x in about["load_average_start"])
    load_end = ", ".join(f"{x:.2f}" for x in about["load_average_end"])
    mode = " --quick" if quick else ""
    lines = [
        "# Benchmarks",
        "",
        f"Rewritten by `.venv/bin/python benchmarks/run.py{mode}` ({seconds / 60:.1f} min). "
        "Every figure that compares is a ratio against a baseline measured in the same run, "
        "candidates and baselines interleaved; medians with [interquartile ranges].",
        "",
        "| machine | |",
        "|---|---|",
        f"| CPU | {about['cpu']}, {about['cores']} cores |",
        f"| software | Python {about['python']}, torch {about['torch']}, ray {about['ray']} |",
        f"| threads | torch default {about['torch_threads_default']}, OMP_NUM_THREADS "
        f"{about['omp_num_threads']}; timed steps use `torch.set_num_threads(1)` |",
        f"| date | {about['date']} |",
        f"| load average (1, 5, 15 min) | start {load_start}; end {load_end} |",
    ]
    for section in sections:
        lines += ["", f"## {section.title}", "", f"`{section.command}`", "", section.markdown]
    return "\n".join(lines) + "\n" + kept_gpu_section()


GPU_HEADING = "## GPU"


def kept_gpu_section(path: Path = ROOT / "BENCHMARKS.md") -> str:
    """BENCHMARKS.md's GPU section as it stands: it is filled from ``benchmarks/gpu_check.sh``
    on a GPU machine, which this suite never is, so a rewrite carries it over unchanged."""
    text = path.read_text() if path.is_file() else ""
    start = text.find(f"\n{GPU_HEADING}\n")
    if start < 0:
        return ""
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else len(text)].rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small repetitions (tests)")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, help="run only these sections")
    parser.add_argument("--out", type=Path, help="Markdown file (default: BENCHMARKS.md)")
    parser.add_argument("--json", type=Path, help="also write every section's figures here")
    args = parser.parse_args(argv)
    about = machine()
    if about["load_average_start"][0] > 2:
        print(f"warning: load average {about['load_average_start'][0]:.1f}", file=sys.stderr)
    started = time.perf_counter()
    sections = []
    for name in args.only or SECTIONS:
        print(f"benchmark: {name}", file=sys.stderr, flush=True)
        sections.append(run_section(name, args.quick))
    about["load_average_end"] = os.getloadavg()
    text = document(about, sections, args.quick, time.perf_counter() - started)
    if args.json:
        figures = {"machine": about, **{s.title: s.figures for s in sections}}
        args.json.write_text(json.dumps(figures, indent=2, default=str))
    out = args.out or (None if args.only else ROOT / "BENCHMARKS.md")
    if out is None:
        print(text)
    else:
        out.write_text(text)
        print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
