"""Store figures: write, read, compaction and full-store aggregates at study scale.

Default scale: 200 trials × 5,000 evaluation rows (1,000,000 rows of the real evaluation
columns: 4 algorithms, 2 constraints, 2 groups). Rows are written as the writers write them,
one ``evals`` and one ``trials`` file per trial from lists of dicts; building the dicts is not
timed. Prints one JSON object::

    .venv/bin/python benchmarks/bench_store.py [--trials 200] [--rows 5000] [--root DIR]

The aggregate is the mean test objective per algorithm and split over every evaluation row,
through ``store.open(root).evals(columns=...)`` + pandas, and through DuckDB on the files.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from ctrain_dist import store
from ctrain_dist.store.schema import TEST, final_column

ALGORITHMS = ("sgd", "adam", "ssl_alm", "switching_subgradient")
SPLITS = ("train", "val", "test")
METRICS = (
    "objective",
    "accuracy",
    "auc",
    "max_violation",
    "dp_gap",
    "auc_m",
    "ind",
    "sp",
    "ina",
    "sf",
    "wd",
    "loss_gap",
    "constraint_0",
    "constraint_1",
    *(
        f"group_{rate}_{g}"
        for rate in ("loss", "positive_rate", "tpr", "fpr", "ppv", "npv", "auc")
        for g in (0, 1)
    ),
    "multiplier_0",
    "multiplier_1",
)
SWEEP = "bench"


def _trial(index: int, rows: int, rng: np.random.Generator) -> tuple[list[dict], dict]:
    """One trial's evaluation rows (points × splits) and its finished ``trials`` row."""
    algorithm = ALGORITHMS[index % len(ALGORITHMS)]
    base = {
        "trial_id": f"{algorithm}-s{index}-{index:012x}",
        "attempt_id": uuid.uuid4().hex,
        "algorithm": algorithm,
        "config_label": f"{algorithm}(lr=0.05)",
        "seed": index,
    }
    values = rng.random((rows, len(METRICS)))
    evals = [
        {
            **base,
            "split": SPLITS[r % 3],
            "step": r // 3 * 10,
            "samples": r // 3 * 640,
            "epoch": r / 3 * 640 / 29_305,
            "time_s": r * 0.001,
            **dict(zip(METRICS, row.tolist(), strict=True)),
        }
        for r, row in enumerate(values)
    ]
    now = datetime.now(UTC)
    trial = {**base, "status": "finished", "started_at": now, "ended_at": now, "hp_lr": 0.05}
    last = zip(METRICS, values[-1], strict=True)
    trial.update({final_column(TEST, m): float(v) for m, v in last})
    return evals, trial


def _timed(function: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def _best_of(repeats: int, function: Callable[[], Any]) -> tuple[float, Any]:
    runs = [_timed(function) for _ in range(repeats)]
    return min(seconds for seconds, _ in runs), runs[-1][1]


def _aggregates(root: Path) -> dict[str, Any]:
    """Read and aggregate figures for the store as it is now (best of three runs each)."""
    reader = store.open(root)
    columns = ["algorithm", "split", "objective"]

    def through_store():
        frame = reader.evals(SWEEP, columns=columns)
        return frame.groupby(["algorithm", "split"])["objective"].mean()

    files = f"{root}/evals/*/part-*.parquet"
    query = (
        f"SELECT algorithm, split, avg(objective) AS objective, count(*) AS n FROM read_parquet("
        f"'{files}', hive_partitioning=true, union_by_name=true) GROUP BY algorithm, split"
    )
    connection = duckdb.connect()
    store_s, by_store = _best_of(3, through_store)
    duckdb_s, by_duckdb = _best_of(3, lambda: connection.sql(query).fetchall())
    rows = sum(n for *_, n in by_duckdb)
    agree = all(
        abs(by_store[(algorithm, split)] - mean) < 1e-9 for algorithm, split, mean, _ in by_duckdb
    )
    read_all_s, frame = _best_of(3, lambda: reader.evals(SWEEP))
    trials_s, trials = _best_of(3, lambda: reader.trials(SWEEP))
    return {
        "eval_files": len(list((root / "evals").glob("*/part-*.parquet"))),
        "read_trials_s": round(trials_s, 4),
        "read_all_eval_columns_s": round(read_all_s, 4),
        "read_eval_rows": len(frame),
        "read_eval_columns": frame.shape[1],
        "aggregate_rows": rows,
        "aggregate_via_store_s": round(store_s, 4),
        "aggregate_via_duckdb_s": round(duckdb_s, 4),
        "aggregates_agree": bool(agree) and len(trials) > 0,
    }


def run(root: Path, trials: int, rows: int) -> dict[str, Any]:
    writer = store.StoreWriter(root, SWEEP)
    rng = np.random.default_rng(0)
    write_s = 0.0
    for index in range(trials):
        evals, trial = _trial(index, rows, rng)
        seconds, _ = _timed(
            lambda e=evals, t=trial: (writer.write_evals(e), writer.write_trials([t]))
        )
        write_s += seconds
    files = list(root.rglob("part-*.parquet"))
    figures: dict[str, Any] = {
        "trials": trials,
        "eval_rows": trials * rows,
        "write_s": round(write_s, 3),
        "write_rows_per_s": round(trials * rows / write_s),
        "written_files": len(files),
        "store_bytes": sum(f.stat().st_size for f in files),
    }
    figures["before_compaction"] = _aggregates(root)
    compact_s, results = _timed(lambda: store.compact(root))
    figures["compaction_s"] = round(compact_s, 3)
    figures["compacted_files"] = sum(r.merged for r in results)
    figures["after_compaction"] = _aggregates(root)
    figures["store_bytes_after_compaction"] = sum(
        f.stat().st_size for f in root.rglob("part-*.parquet")
    )
    return figures


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--rows", type=int, default=5_000, help="evaluation rows per trial")
    parser.add_argument("--root", type=Path, help="store to create (default: a temporary one)")
    args = parser.parse_args(argv)
    root = args.root or Path(tempfile.mkdtemp(prefix="bench-store-"))
    if root.exists() and any(root.iterdir()):
        parser.error(f"--root {root} must be empty or absent")
    try:
        figures = run(root, args.trials, args.rows)
    finally:
        if args.root is None:
            shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main()
