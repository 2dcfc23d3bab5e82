"""Folktables tasks through folktables' own reader, checked against an independent reading."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ctrain_dist.cli.main import main
from ctrain_dist.data.cache import open_tabular
from ctrain_dist.data.config import FolktablesDataSpec, SplitSpec
from ctrain_dist.data.load import prepare_data
from ctrain_dist.data.synth import MARKER, write_synthetic
from ctrain_dist.data.tabular import TabularData
from ctrain_dist.errors import SpecError
from ctrain_dist.spec import parse_spec

STATES = ("OK", "CA")
FILES = {"OK": "psam_p40.csv", "CA": "psam_p06.csv"}
# The two tasks as folktables 0.0.12 defines them, written out here so that the reference
# computation below shares nothing with the loader under test.
TASKS = {
    "ACSIncome": {
        "features": ["AGEP", "COW", "SCHL", "MAR", "OCCP", "POBP", "RELP", "WKHP", "SEX", "RAC1P"],
        "rows": lambda p: (p.AGEP > 16) & (p.PINCP > 100) & (p.WKHP > 0) & (p.PWGTP >= 1),
        "label": lambda p: p.PINCP > 50_000,
    },
    "ACSEmployment": {
        "features": (
            [
                "AGEP",
                "SCHL",
                "MAR",
                "RELP",
                "DIS",
                "ESP",
                "CIT",
                "MIG",
                "MIL",
                "ANC",
                "NATIVITY",
                "DEAR",
                "DEYE",
                "DREM",
                "SEX",
                "RAC1P",
            ]
        ),
        "rows": lambda p: np.ones(len(p), dtype=bool),
        "label": lambda p: p.ESR == 1,
    },
}
NUMERIC = {"AGEP", "SCHL", "WKHP"}


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pums")
    write_synthetic(root, STATES, rows=2500, seed=7)
    return root


def _spec(root: Path | None, cache: Path, **data) -> tuple[FolktablesDataSpec, SplitSpec]:
    located = {} if root is None else {"root": str(root)}
    raw = {
        "name": "t",
        "data": {"dataset": "folktables", "states": list(STATES), **located, **data},
        "constraints": [{"kind": "loss_gap", "bound": 0.01}],
        "algorithms": [{"name": "sgd"}],
    }
    spec = parse_spec(raw)
    return spec.data, spec.split


def _load(root: Path, cache: Path, **data) -> TabularData:
    return open_tabular(prepare_data(*_spec(root, cache, **data), cache).path)


def _reference(root: Path, task: str) -> pd.DataFrame:
    """The task's rows read with plain pandas, states in order, filter applied by hand."""
    people = pd.concat(
        [pd.read_csv(root / "2018" / "1-Year" / FILES[state]) for state in STATES],
        ignore_index=True,
    )
    return people[TASKS[task]["rows"](people)].reset_index(drop=True)


@pytest.mark.parametrize("task", sorted(TASKS))
def test_features_labels_and_groups_match_an_independent_reading(root, tmp_path, task):
    data = _load(root, tmp_path, task=task)
    rows = _reference(root, task)
    train = data.splits["train"].numpy()
    features = data.features.numpy()
    assert features.shape[0] == len(rows)
    np.testing.assert_array_equal(data.labels.numpy(), TASKS[task]["label"](rows).to_numpy())
    np.testing.assert_array_equal(data.groups.numpy(), (rows.RAC1P == 1).to_numpy())
    expected_names = []
    for column in TASKS[task]["features"]:
        raw = rows[column]
        if column in NUMERIC:
            expected_names.append(column)
        else:
            categories = sorted(raw.iloc[train].dropna().unique())
            expected_names += [f"{column}={int(value)}" for value in categories]
        if raw.isna().any():
            expected_names.append(f"{column}__missing")
    assert sorted(data.feature_names) == sorted(expected_names)
    for index, name in enumerate(data.feature_names):
        column, _, value = name.partition("=")
        if name.endswith("__missing"):
            expected = rows[name.removesuffix("__missing")].isna().to_numpy()
        elif value:
            expected = (rows[column] == int(value)).to_numpy()
        else:
            raw = rows[column].to_numpy(dtype=float)
            filled = np.where(np.isnan(raw), np.nanmedian(raw[train]), raw)
            expected = (filled - filled[train].mean()) / filled[train].std()
        np.testing.assert_allclose(features[:, index], expected, atol=1e-5, err_msg=name)


def test_a_missing_categorical_value_is_never_merged_with_a_real_code(root, tmp_path):
    edited = tmp_path / "pums"
    write_synthetic(edited, ["OK"], rows=2000, seed=7)
    path = edited / "2018" / "1-Year" / "psam_p40.csv"
    people = pd.read_csv(path, dtype={"SERIALNO": str})
    unknown = people.index % 7 == 0
    people["RELP"] = people["RELP"].astype("Int64").mask(unknown)
    people.to_csv(path, index=False, na_rep="")
    data = _load(edited, tmp_path / "cache", task="ACSEmployment", states=["OK"])
    names = list(data.feature_names)
    code_zero = data.features[:, names.index("RELP=0")].numpy()
    missing = data.features[:, names.index("RELP__missing")].numpy()
    np.testing.assert_array_equal(missing, unknown)
    np.testing.assert_array_equal(code_zero, (people["RELP"] == 0).fillna(False))
    relp = [i for i, name in enumerate(names) if name.startswith("RELP=")]
    assert data.features[unknown][:, relp].abs().sum() == 0


def test_intersection_groups_are_numbered_with_readable_names(root, tmp_path):
    data = _load(root, tmp_path, sensitive=["sex", "race_binary"])
    assert data.group_names == tuple(
        f"{sex} & {race} (synthetic)"
        for sex in ("female", "male")
        for race in ("non-white", "white")
    )
    rows = _reference(root, "ACSIncome")
    expected = 2 * (rows.SEX == 1).to_numpy() + (rows.RAC1P == 1).to_numpy()
    np.testing.assert_array_equal(data.groups.numpy(), expected)


def test_sex_groups_female_then_male(root, tmp_path):
    data = _load(root, tmp_path, sensitive="sex")
    rows = _reference(root, "ACSIncome")
    np.testing.assert_array_equal(data.groups.numpy(), (rows.SEX == 1).to_numpy())
    assert data.group_names == ("female (synthetic)", "male (synthetic)")


def test_synthetic_files_make_a_dataset_that_says_synthetic(root, tmp_path):
    entry = prepare_data(*_spec(root, tmp_path), tmp_path)
    assert "synthetic" in entry.manifest["name"]
    assert entry.manifest["synthetic"] is True
    assert all("synthetic" in name for name in entry.manifest["group_names"])


def test_real_files_make_a_dataset_that_does_not(root, tmp_path):
    real = tmp_path / "pums"
    write_synthetic(real, ["OK"], rows=800, seed=7)
    (real / MARKER).unlink()
    data = _load(real, tmp_path / "cache", states=["OK"])
    assert data.group_names == ("non-white", "white")
    assert "synthetic" not in data.name


def test_leaving_out_sensitive_features_drops_every_protected_column(root, tmp_path):
    data = _load(root, tmp_path, include_sensitive_feature=False)
    assert not [name for name in data.feature_names if name.startswith(("SEX", "RAC"))]


def test_a_group_with_no_row_in_some_split_is_refused(tmp_path):
    edited = tmp_path / "pums"
    write_synthetic(edited, ["OK"], rows=2000, seed=7)
    path = edited / "2018" / "1-Year" / "psam_p40.csv"
    people = pd.read_csv(path, dtype={"SERIALNO": str})
    people["RAC1P"] = people["RAC1P"].replace(7, 8)
    people.loc[TASKS["ACSIncome"]["rows"](people).idxmax(), "RAC1P"] = 7
    people.to_csv(path, index=False, na_rep="")
    data, split = _spec(edited, tmp_path, states=["OK"], sensitive="race")
    with pytest.raises(SpecError, match="group 'pacific islander' has no rows in the val split"):
        prepare_data(data, split, tmp_path)


def test_a_missing_state_file_exits_2_naming_the_path_and_where_to_get_it(root, tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "name: t\nconstraints: [{kind: loss_gap, bound: 0.01}]\nalgorithms: [{name: sgd}]\n"
        f"data: {{dataset: folktables, root: {root}, states: [OK, TX]}}\n"
    )
    assert main(["data", "prepare", str(spec), "--cache", str(tmp_path)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert str(root / "2018" / "1-Year" / "psam_p48.csv") in line
    assert "csv_ptx.zip" in line
    assert line.startswith("ctrain: error: data.root:")


def test_states_all_needs_every_state_file(root, tmp_path):
    with pytest.raises(SpecError, match=r"psam_p01\.csv not found") as caught:
        _spec(root, tmp_path, states="all")
    assert caught.value.field == "data.root"


def test_no_root_and_no_download_is_refused_with_the_ways_out(tmp_path):
    with pytest.raises(SpecError, match="ctrain data synth") as caught:
        _spec(None, tmp_path)
    assert caught.value.field == "data.root"


def test_an_unknown_state_is_named(root, tmp_path):
    with pytest.raises(SpecError, match="XX") as caught:
        _spec(root, tmp_path, states=["XX"])
    assert caught.value.field == "data.states"
