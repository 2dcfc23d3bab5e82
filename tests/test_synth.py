"""The synthetic ACS PUMS generator writes what folktables reads, with plausible structure."""

from pathlib import Path

import folktables
import numpy as np
import pandas as pd
import pytest

from ctrain_dist.cli.main import main
from ctrain_dist.data.config import FOLKTABLES_TASKS
from ctrain_dist.data.synth import MARKER, write_synthetic


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pums")
    write_synthetic(root, ["OK", "CA"], rows=6000, seed=1)
    return root


def _people(root: Path, state_file: str = "psam_p40.csv") -> pd.DataFrame:
    return pd.read_csv(root / "2018" / "1-Year" / state_file)


def test_files_sit_where_folktables_looks_and_start_with_rt_serialno(root):
    for name in ("psam_p40.csv", "psam_p06.csv"):
        header = (root / "2018" / "1-Year" / name).read_text().splitlines()[0].split(",")
        assert header[:2] == ["RT", "SERIALNO"]
    assert (root / MARKER).is_file()


def test_folktables_reads_the_files_offline_for_every_task(root):
    source = folktables.ACSDataSource("2018", "1-Year", "person", root_dir=str(root))
    people = source.get_data(states=["OK", "CA"], download=False)
    assert len(people) == 12_000
    for name in FOLKTABLES_TASKS:
        task = getattr(folktables, name)
        rows = task._preprocess(people)
        assert set(task.features) | {task.target} <= set(rows.columns), name
        assert 0.1 < task.target_transform(rows[task.target]).mean() < 0.9, name


def test_the_same_seed_writes_identical_files(tmp_path):
    first = write_synthetic(tmp_path / "a", ["OK"], rows=500, seed=3)[0]
    second = write_synthetic(tmp_path / "b", ["OK"], rows=500, seed=3)[0]
    other = write_synthetic(tmp_path / "c", ["OK"], rows=500, seed=4)[0]
    assert first.read_bytes() == second.read_bytes() != other.read_bytes()


def test_income_rises_with_education_hours_and_age(root):
    workers = folktables.ACSIncome._preprocess(_people(root))
    correlations = workers[["PINCP", "SCHL", "WKHP", "AGEP"]].corr(method="spearman")["PINCP"]
    assert correlations["SCHL"] > 0.4
    assert correlations["WKHP"] > 0.2
    assert correlations["AGEP"] > 0.1


def test_income_has_a_sex_gap_and_a_white_non_white_gap(root):
    workers = folktables.ACSIncome._preprocess(_people(root))
    high = workers["PINCP"] > 50_000
    white = workers["RAC1P"] == 1
    male = workers["SEX"] == 1
    assert high[white].mean() - high[~white].mean() > 0.05
    assert high[male].mean() - high[~male].mean() > 0.05


def test_missing_values_follow_the_census_skip_patterns(root):
    people = _people(root)
    assert (people["SCHL"].isna() == (people["AGEP"] < 3)).all()
    assert (people["ESR"].isna() == (people["AGEP"] < 16)).all()
    assert (people["PINCP"].isna() == (people["AGEP"] < 15)).all()
    assert people.loc[people["WKHP"].notna(), "COW"].notna().all()
    assert people.loc[people["COW"].isna(), "OCCP"].isna().all()


def test_state_race_shares_differ_as_in_the_census(root):
    oklahoma, california = _people(root), _people(root, "psam_p06.csv")
    assert (oklahoma["RAC1P"] == 3).mean() > 0.04 > (california["RAC1P"] == 3).mean()
    assert (california["RAC1P"] == 6).mean() > 0.1 > (oklahoma["RAC1P"] == 6).mean()


def test_cli_writes_the_files_and_the_marker(tmp_path, capsys):
    assert main(["data", "synth", "--root", str(tmp_path), "--states", "TX", "--rows", "50"]) == 0
    assert (tmp_path / "2018" / "1-Year" / "psam_p48.csv").is_file()
    assert (tmp_path / MARKER).is_file()
    assert "synthetic" in capsys.readouterr().out


def test_an_unknown_state_exits_2(tmp_path, capsys):
    assert main(["data", "synth", "--root", str(tmp_path), "--states", "XX", "--rows", "5"]) == 2
    assert "XX" in capsys.readouterr().err


def test_a_2016_file_takes_the_old_census_name(tmp_path):
    (path,) = write_synthetic(tmp_path, ["OK"], rows=10, year=2016)
    assert path == tmp_path / "2016" / "1-Year" / "ss16pok.csv"
    assert np.isin(pd.read_csv(path)["ST"], [40]).all()
