"""A sweep of many short trials with ``training.compile: default``, against the same sweep eager.

The study: the embedded Adult data, a loss-gap constraint, ALM × ``--trials`` seeds of
``--steps`` steps each, one CPU per trial, actors reused (the default), through
``ray_sweep.run_sweep`` exactly as ``ctrain sweep`` runs it, into a fresh store each (so the
compiled run starts with an empty Inductor cache, ``<store>/_compile_cache/<host>``).

Figures per run, from the wall clock and the store's ``trials`` rows: trials per minute end to
end; the ``compile_time_s`` column: how many trials compiled (more than
:data:`COMPILED_S` seconds), their median, and the others' largest, which shows whether the
compile was paid once per actor (as many compiling trials as actors ran at once) or per trial.

``python -m benchmarks.bench_compile_sweep [--trials 100] [--steps 1000]`` prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from ctrain_dist import store
from ctrain_dist.launch.ray_sweep import run_sweep
from ctrain_dist.spec import parse_spec
from ctrain_dist.store.schema import COMPILE_TIME_S, STATUS, TRAIN_TIME_S

COMPILED_S = 1.0
"""A trial whose ``compile_time_s`` exceeds this compiled; below it, it found its graphs."""
COMMAND = ".venv/bin/python -m benchmarks.bench_compile_sweep --trials 100 --steps 1000"


def _sweep(root: Path, trials: int, steps: int, compile_mode: str | bool) -> dict[str, Any]:
    spec = parse_spec(
        {
            "name": f"bench-compile-sweep-{uuid.uuid4().hex[:8]}",
            "data": {"dataset": "adult", "sensitive": "sex"},
            "constraints": [{"kind": "loss_gap", "bound": 0.05}],
            "training": {
                "budget": {"steps": steps},
                "eval_every": steps,
                "device": "cpu",
                "compile": compile_mode,
            },
            "algorithms": [{"name": "alm"}],
            "seeds": trials,
            "resources": {"cpus_per_trial": 1, "reuse_actors": True},
        }
    )
    started = time.perf_counter()
    run_sweep(spec, root, log=lambda line: None)
    wall = time.perf_counter() - started
    rows = store.open(root).trials(spec.name)
    compile_s = sorted(float(v) for v in rows[COMPILE_TIME_S])
    compiling = [s for s in compile_s if s > COMPILED_S]
    rest = [s for s in compile_s if s <= COMPILED_S]
    return {
        "trials": len(rows),
        "statuses": {str(k): int(n) for k, n in rows[STATUS].value_counts().items()},
        "wall_s": wall,
        "trials_per_minute": len(rows) / wall * 60,
        "train_time_s_total": float(rows[TRAIN_TIME_S].sum()),
        "compile_time_s_total": sum(compile_s),
        "trials_that_compiled": len(compiling),
        "compile_s_median_of_those": statistics.median(compiling) if compiling else 0.0,
        "compile_s_largest_of_the_rest": max(rest) if rest else 0.0,
        "cores": os.cpu_count(),
    }


def measure(trials: int, steps: int) -> dict[str, Any]:
    figures: dict[str, Any] = {"trials": trials, "steps": steps}
    for label, mode in (("eager", False), ("compiled", "default")):
        with tempfile.TemporaryDirectory(prefix="ctrain-compile-sweep-") as folder:
            os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)  # the store's own, fresh
            figures[label] = _sweep(Path(folder) / "store", trials, steps, mode)
    figures["compiled_over_eager_throughput"] = (
        figures["compiled"]["trials_per_minute"] / figures["eager"]["trials_per_minute"]
    )
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--steps", type=int, default=1000)
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.trials, args.steps), indent=2))


if __name__ == "__main__":
    main()
