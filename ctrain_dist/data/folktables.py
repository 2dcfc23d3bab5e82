"""Folktables tasks (Ding et al. 2021, "Retiring Adult") on ACS PUMS person files.

Folktables' own code reads the files and defines the tasks: ``ACSDataSource(...).get_data``
(``root_dir``, ``download``) loads a state's person file, and the task's filter, feature list,
target and target transform (``folktables.ACSIncome`` etc.) say which rows and columns form the
task and what the label is. What folktables gets wrong is left out: ``df_to_numpy`` and
``df_to_pandas`` pass the matrix through ``np.nan_to_num(x, -1)``, whose second argument is
``copy``, so a missing value becomes 0 — for ``RELP``, ``ESP`` and others a real category code.
Here the task's filter is applied (``BasicProblem._preprocess``, the only way to get the filter
alone) and the raw columns go to the shared ``preprocess``, where a missing value is its own
indicator column and never a category.

Feature types (:data:`NUMERIC_FEATURES`; every other feature is one-hot): ``AGEP``, ``WKHP``,
``JWMNP``, ``PINCP`` and ``POVPIP`` are quantities; ``SCHL`` is numeric too, because its codes
1-24 are ordered by attainment (no schooling … doctorate), an order one-hot would throw away at
the cost of 24 columns. Everything else (``COW``, ``MAR``, ``OCCP``, ``POBP``, ``RELP``,
``SEX``, ``RAC1P``, ``CIT``, ``ESP``, ``ST``, ``PUMA`` …) is a nominal code. ``OCCP`` and
``POBP`` have hundreds of codes in real data (one column each, seen in train); ``PUMA`` and
``POWPUMA`` are used as folktables gives them (unique only within a state; ``ST`` is a feature
too).

Encodings (``encoding``): ``one_hot`` (the default) is the above. ``reference`` is what the
Folktables benchmark trained on (Kliachkin et al., arXiv 2507.04033; humancompatible.train's
``experiments/utils/load_folktables.py`` with ``onehot=False``): every feature's raw ACS code as
one numeric column, as folktables' ``df_to_numpy`` returns it (its postprocess included, so a
missing value reads 0, the quirk above), each standardised with the train rows' mean and
population standard deviation (scikit-learn's ``StandardScaler``), the group-defining column
dropped (``RAC1P``; SEX stayed). For ACSIncome that is 9 columns where one-hot ``OCCP`` and
``POBP`` give about a thousand on the real Oklahoma file. With it ``include_sensitive_feature:
false`` drops the columns that define the groups, as the reference did, not every protected one.

Groups (``sensitive``): ``race_binary`` is ``RAC1P`` white alone vs everyone else (the paper's
grouping), ``sex`` is ``SEX``, ``race`` the nine ``RAC1P`` codes; several attributes group by
their intersection. Only groups that occur get ids (``table.group_ids``), and a group with no
row in some split is refused. ``include_sensitive_feature: false`` drops every protected
column (``SEX``, ``RAC1P`` and the ``RAC*`` flags), not only those that define the groups.

Files under a root holding a ``SYNTHETIC`` marker (``ctrain data synth``) make a dataset whose
name and group names say "synthetic".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import folktables
import numpy as np
import pandas as pd
from folktables.load_acs import initialize_and_download

from ctrain_dist.data.cache import Prepared, cache_root
from ctrain_dist.data.config import FolktablesDataSpec, SplitSpec
from ctrain_dist.data.preprocess import preprocess, standardise
from ctrain_dist.data.probes import PUMS_URL, resolve_states
from ctrain_dist.data.split import stratified_split
from ctrain_dist.data.synth import MARKER, expected_file
from ctrain_dist.data.table import check_groups, group_ids
from ctrain_dist.errors import SpecError

NUMERIC_FEATURES = frozenset({"AGEP", "WKHP", "JWMNP", "PINCP", "POVPIP", "SCHL"})
PROTECTED_FEATURES = frozenset(
    {"SEX", "RAC1P", "RACAIAN", "RACASN", "RACBLK", "RACNH", "RACPI", "RACSOR", "RACWHT"}
)
RACE_NAMES = {
    1: "white",
    2: "black",
    3: "american indian",
    4: "alaska native",
    5: "american indian and alaska native",
    6: "asian",
    7: "pacific islander",
    8: "other race",
    9: "two or more races",
}
SYNTHETIC_SUFFIX = " (synthetic)"
GROUP_COLUMNS = {"race_binary": "RAC1P", "race": "RAC1P", "sex": "SEX"}
"""The ACS column each group attribute is read from."""


def default_root() -> Path:
    """Where downloads go when ``download: true`` and no ``root`` is given."""
    return cache_root() / "pums"


def _census_url(data: FolktablesDataSpec, state: str) -> str:
    return f"{PUMS_URL}/{data.year}/{data.horizon}/csv_p{state.lower()}.zip"


def input_files(data: FolktablesDataSpec) -> list[Path]:
    """The person files of the spec's states, downloaded by folktables first if asked to."""
    root = data.root or default_root()
    files = []
    for state in resolve_states(data.states):
        path = expected_file(root, state, data.year, data.horizon)
        if data.download and not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            initialize_and_download(
                str(path.parent), state, data.year, data.horizon, "person", download=True
            )
            if not path.is_file():
                raise SpecError(
                    "data.download",
                    f"folktables could not download {path.name} from {_census_url(data, state)}"
                    f"; fetch it elsewhere, unzip it into {path.parent} and set download: false",
                )
        files.append(path)
    return files


def is_synthetic(data: FolktablesDataSpec) -> bool:
    return (data.root or default_root()).joinpath(MARKER).is_file()


def cache_request(data: FolktablesDataSpec, split: SplitSpec) -> tuple[list[Path], dict[str, Any]]:
    """The cache inputs (the person files) and options (everything that changes the arrays)."""
    task = getattr(folktables, data.task)
    options = {
        "dataset": "folktables",
        "task": data.task,
        "states": resolve_states(data.states),
        "year": data.year,
        "horizon": data.horizon,
        "sensitive": list(data.sensitive),
        "include_sensitive_feature": data.include_sensitive_feature,
        "numeric": sorted(NUMERIC_FEATURES & set(task.features)),
        "synthetic": is_synthetic(data),
        "folktables": folktables.__version__,
        "split": split.model_dump(mode="json"),
    }
    if data.encoding != "one_hot":  # one-hot caches keep their keys
        options["encoding"] = data.encoding
    return input_files(data), options


def read_task(data: FolktablesDataSpec) -> pd.DataFrame:
    """The task's rows (its filter applied) with its feature, target and group columns.

    States are read one at a time through ``ACSDataSource.get_data`` and cut to the needed
    columns at once, so memory holds one state's full file at most; the result has the rows of
    the states in order, each state's rows in file order, as folktables would return them.
    """
    task = getattr(folktables, data.task)
    source = folktables.ACSDataSource(
        survey_year=str(data.year),
        horizon=data.horizon,
        survey="person",
        root_dir=str(data.root or default_root()),
    )
    columns = list(dict.fromkeys([*task.features, task.target, "SEX", "RAC1P"]))
    parts = []
    for state in resolve_states(data.states):
        raw = source.get_data(states=[state], download=data.download)
        parts.append(task._preprocess(raw)[columns])
    return pd.concat(parts, ignore_index=True)


def _group_frame(frame: pd.DataFrame, attributes: tuple[str, ...]) -> pd.DataFrame:
    """One categorical column per group attribute, values named in a fixed order."""
    race = frame["RAC1P"]
    columns = {}
    for attribute in attributes:
        if attribute == "race_binary":
            values = np.where(race == 1, "white", "non-white")
            categories = ["non-white", "white"]
        elif attribute == "sex":
            values = frame["SEX"].map({1: "male", 2: "female"})
            categories = ["female", "male"]
        else:
            values = race.map(RACE_NAMES)
            categories = list(RACE_NAMES.values())
        columns[attribute] = pd.Categorical(values, categories=categories)
    return pd.DataFrame(columns)


def _as_codes(column: pd.Series) -> pd.Series:
    """Integer-valued codes as nullable integers (``COW=1``, not ``COW=1.0``); NaN stays NA."""
    numbers = pd.to_numeric(column, errors="coerce")
    if numbers.notna().sum() == column.notna().sum() and (numbers.dropna() % 1 == 0).all():
        return numbers.astype("Int64")
    return column


def feature_columns(data: FolktablesDataSpec) -> list[str]:
    """The task's features the model reads, in folktables' order (module docstring: with
    ``include_sensitive_feature: false`` one-hot drops every protected column, the reference
    encoding the group-defining ones)."""
    task = getattr(folktables, data.task)
    if data.include_sensitive_feature:
        dropped: set[str] = set()
    elif data.encoding == "reference":
        dropped = {GROUP_COLUMNS[attribute] for attribute in data.sensitive}
    else:
        dropped = set(PROTECTED_FEATURES)
    return [column for column in task.features if column not in dropped]


def reference_encoding(
    frame: pd.DataFrame, task: folktables.BasicProblem, features: list[str], train: np.ndarray
) -> tuple[np.ndarray, tuple[str, ...]]:
    """The reference's matrix: each feature's code as ``task.df_to_numpy`` gives it, one column
    each, standardised on the train rows (module docstring).

    ``_postprocess`` is folktables' private name for the task's postprocess, read because the
    reference's values went through it (``df_to_numpy`` would re-run the filter on columns
    this frame no longer has); ``tests/test_folktables_encoding.py`` notices if it changes.
    """
    codes = np.column_stack([frame[column].to_numpy() for column in features])
    values = np.asarray(task._postprocess(codes), dtype=np.float64)
    columns = [standardise(values[:, j], values[train, j]) for j in range(len(features))]
    return np.column_stack(columns).astype(np.float32), tuple(features)


def build_folktables(data: FolktablesDataSpec, split: SplitSpec) -> Prepared:
    """The task preprocessed: features fitted on the train split, labels, groups, splits."""
    task = getattr(folktables, data.task)
    frame = read_task(data)
    labels = np.asarray(task.target_transform(frame[task.target]), dtype=np.float32)
    groups, group_names = group_ids(_group_frame(frame, data.sensitive), data.sensitive)
    splits = stratified_split(labels, groups, split.val, split.test, split.seed)
    check_groups(groups, group_names, splits)
    features = feature_columns(data)
    if data.encoding == "reference":
        matrix, names = reference_encoding(frame, task, features, splits["train"])
    else:
        numeric = [column for column in features if column in NUMERIC_FEATURES]
        categorical = [column for column in features if column not in NUMERIC_FEATURES]
        encoded = frame[features].copy()
        for column in categorical:
            encoded[column] = _as_codes(encoded[column])
        matrix, names = preprocess(encoded, numeric, categorical, splits["train"])
    synthetic = is_synthetic(data)
    suffix = SYNTHETIC_SUFFIX if synthetic else ""
    states = "all states" if data.states == "all" else "+".join(data.states)
    return Prepared(
        name=f"{data.task} {states} {data.year} {data.horizon}{suffix}",
        features=matrix,
        labels=labels,
        groups=groups,
        splits=splits,
        feature_names=names,
        group_names=tuple(name + suffix for name in group_names),
        synthetic=synthetic,
    )
