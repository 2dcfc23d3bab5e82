"""Cheap checks of the files a data section names: header and existence only, never the rows.

The spec's validators call these (through :mod:`.config`), so a missing file or column is one
line naming the field before anything starts; the loaders import them too. Kept apart from the
loaders because they must not import the models they validate.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
from folktables.load_acs import state_list

from ctrain_dist.data.synth import expected_file

PUMS_URL = "https://www2.census.gov/programs-surveys/acs/data/pums"


def resolve_states(states: tuple[str, ...] | str) -> list[str]:
    """The states of a spec, ``"all"`` being every state folktables knows (and Puerto Rico)."""
    return list(state_list) if states == "all" else list(states)


def missing_file_problem(
    root: Path | None, states: tuple[str, ...] | str, year: int, horizon: str
) -> str | None:
    """One line naming the first expected person file that is absent and how to get it."""
    if root is None:
        return (
            "give the folder holding ACS PUMS person files (<root>/<year>/<horizon>/"
            "psam_p<FIPS>.csv); `ctrain data synth --root DIR --states OK` writes synthetic ones, "
            "and data.download: true fetches real ones on a machine with internet"
        )
    for state in resolve_states(states):
        path = expected_file(root, state, year, horizon)
        if not path.is_file():
            remote = f"{PUMS_URL}/{year}/{horizon}/csv_p{state.lower()}.zip"
            return (
                f"{path} not found; download {remote} and unzip it into {path.parent}, or set "
                "data.download: true where the census server is reachable"
            )
    return None


SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq")


def is_parquet(path: Path) -> bool:
    return path.name.endswith((".parquet", ".pq"))


def table_problem(path: Path) -> str | None:
    """Why ``path`` cannot be a table, or None."""
    if not path.is_file():
        return f"{path} not found; give the path of a CSV or Parquet file"
    if not path.name.endswith(SUFFIXES):
        return f"{path} must end in one of {', '.join(SUFFIXES)}"
    return None


@functools.lru_cache(maxsize=16)
def _header(path: Path, size: int, mtime_ns: int) -> tuple[str, ...]:
    if is_parquet(path):
        return tuple(pq.read_schema(path).names)
    return tuple(str(name) for name in pd.read_csv(path, nrows=0).columns)


def table_columns(path: Path) -> tuple[str, ...]:
    """The column names of a table, from its header or schema only (memoised per file version)."""
    stat = path.stat()
    return _header(path, stat.st_size, stat.st_mtime_ns)


def missing_column_problem(path: Path, names: Sequence[str]) -> str | None:
    """Which of ``names`` the table lacks, in one line with the columns it has, or None."""
    columns = table_columns(path)
    missing = [name for name in names if name not in columns]
    if not missing:
        return None
    shown = ", ".join(columns[:30]) + (", ..." if len(columns) > 30 else "")
    return f"column {', '.join(map(repr, missing))} not in {path}; its columns: {shown}"
