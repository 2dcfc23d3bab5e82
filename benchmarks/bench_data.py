"""Data benchmark: a California-sized synthetic ACSIncome through the preprocessing cache.

Writes synthetic PUMS person files for CA (455,000 people, about 200,000 ACSIncome rows, the
size of the real 2018 task), then measures, in a fresh cache folder:

- ``prepare_s``: the first ``prepare_data`` (folktables read, filter, split, encode, write);
- ``cache_mib``: the entry's size on disk;
- ``load_s``: a trial's load in this process (key from the memoised file digests, manifest,
  memory maps), median of ``repeats``;
- ``load_fresh_process_s``: the same in a new Python process, as a trial starting on the node
  pays it (imports excluded; the files are in the page cache, as after the build);
- ``load_copies_matrix``: whether the loaded features tensor lies outside the mapping of
  ``features.npy`` (it must not).

Prints one JSON object. ``python benchmarks/bench_data.py [--people N] [--repeats K]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ctrain_dist.data import load
from ctrain_dist.data.synth import write_synthetic
from ctrain_dist.spec import parse_spec

_FRESH_LOAD = """
import sys, time
from ctrain_dist.data import load
from ctrain_dist.spec import SweepSpec
spec = SweepSpec.model_validate_json(sys.argv[1])
started = time.perf_counter()
data = load.open_tabular(load.prepare_data(spec.data, spec.split, sys.argv[2]).path)
print(time.perf_counter() - started)
"""


def mapped_file(address: int) -> str | None:
    """The file mapped at ``address`` in this process (``/proc/self/maps``), or None."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split()
        start, end = (int(bound, 16) for bound in fields[0].split("-"))
        if start <= address < end:
            return fields[5] if len(fields) > 5 else None
    return None


def run(people: int = 455_000, repeats: int = 5) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-data-") as folder:
        root, cache = Path(folder) / "pums", Path(folder) / "cache"
        started = time.perf_counter()
        write_synthetic(root, ["CA"], rows=people, seed=0)
        synth_s = time.perf_counter() - started
        spec = parse_spec(
            {
                "name": "bench",
                "data": {"dataset": "folktables", "states": ["CA"], "root": str(root)},
                "constraints": [{"kind": "loss_gap", "bound": 0.005}],
                "algorithms": [{"name": "sgd"}],
            }
        )
        started = time.perf_counter()
        entry = load.prepare_data(spec.data, spec.split, cache)
        prepare_s = time.perf_counter() - started
        loads = []
        for _ in range(repeats):
            started = time.perf_counter()
            data = load.open_tabular(load.prepare_data(spec.data, spec.split, cache).path)
            loads.append(time.perf_counter() - started)
        where = mapped_file(data.features.data_ptr()) or ""
        fresh = subprocess.run(
            [sys.executable, "-c", _FRESH_LOAD, spec.model_dump_json(), str(cache)],
            capture_output=True,
            text=True,
            check=True,
        )
        return {
            "dataset": entry.manifest["name"],
            "people": people,
            "rows": entry.manifest["rows"],
            "features": entry.manifest["num_features"],
            "synth_s": round(synth_s, 2),
            "prepare_s": round(prepare_s, 2),
            "cache_mib": round(entry.size_bytes() / 2**20, 1),
            "load_s": round(statistics.median(loads), 4),
            "load_max_s": round(max(loads), 4),
            "load_fresh_process_s": round(float(fresh.stdout), 4),
            "load_copies_matrix": not where.endswith("features.npy"),
        }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=455_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    print(json.dumps(run(args.people, args.repeats)))


if __name__ == "__main__":
    main()
