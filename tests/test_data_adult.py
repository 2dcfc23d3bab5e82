"""Specification of the embedded UCI Adult loader and the shared tabular preprocessing."""

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ctrain_dist.data import SPLITS, TabularData, load_adult
from ctrain_dist.data.adult import CATEGORICAL_COLUMNS, NUMERIC_COLUMNS, read_adult
from ctrain_dist.data.preprocess import preprocess
from ctrain_dist.data.split import stratified_split

RAW_DIR = Path(__file__).parents[1] / "ctrain_dist" / "data" / "adult"
RACE, SEX, INCOME = 8, 9, 14


def _raw_column(position: int) -> pd.Series:
    """One column of both raw UCI files, read independently of the loader under test."""
    parts = [
        pd.read_csv(RAW_DIR / name, header=None, skiprows=skip, skipinitialspace=True)
        for name, skip in (("adult.data.gz", 0), ("adult.test.gz", 1))
    ]
    return pd.concat(parts, ignore_index=True)[position].str.strip()


@pytest.fixture(scope="module")
def adult() -> TabularData:
    return load_adult()


def _columns(data: TabularData, prefix: str) -> list[int]:
    return [i for i, name in enumerate(data.feature_names) if name.startswith(prefix)]


def test_both_files_are_pooled_into_48842_rows(adult):
    assert adult.features.shape[0] == 48_842
    assert adult.labels.shape == adult.groups.shape == (48_842,)


def test_labels_are_income_above_50k_in_both_files(adult):
    above = _raw_column(INCOME).str.removesuffix(".") == ">50K"
    assert torch.equal(adult.labels, torch.from_numpy(above.to_numpy(dtype=np.float32)))


def test_splits_are_disjoint_and_cover_every_row(adult):
    everything = torch.cat([adult.splits[name] for name in SPLITS])
    assert torch.equal(everything.sort().values, torch.arange(48_842))


def test_features_are_finite_float32(adult):
    assert adult.features.dtype == torch.float32
    assert torch.isfinite(adult.features).all()


def test_sampling_weight_and_duplicate_education_are_not_features(adult):
    assert not any(name.startswith(("fnlwgt", "education=")) for name in adult.feature_names)
    assert "education-num" in adult.feature_names


def test_numeric_columns_are_standardised_on_train_rows(adult):
    numeric = [adult.feature_names.index(column) for column in NUMERIC_COLUMNS]
    train = adult.features[adult.splits["train"]][:, numeric].double()
    zeros = torch.zeros(len(numeric), dtype=torch.float64)
    assert torch.allclose(train.mean(dim=0), zeros, atol=1e-5)
    assert torch.allclose(train.std(dim=0, correction=0), zeros + 1, atol=1e-5)


def test_only_numeric_columns_are_standardised(adult):
    onehot = _columns(adult, "workclass")
    values = adult.features[:, onehot].unique()
    assert set(values.tolist()) == {0.0, 1.0}


def _perturb_non_train_rows(frame: pd.DataFrame, train: np.ndarray) -> pd.DataFrame:
    """Non-train rows with wildly different numbers and never-seen categories, same missingness."""
    other = np.setdiff1d(np.arange(len(frame)), train)
    perturbed = frame.copy()
    for column in NUMERIC_COLUMNS:
        perturbed.iloc[other, perturbed.columns.get_loc(column)] = (
            frame[column].iloc[other] * 1000.0 + 1e6
        )
    for column in CATEGORICAL_COLUMNS:
        values = frame[column].iloc[other]
        perturbed.iloc[other, perturbed.columns.get_loc(column)] = values.where(
            values.isna(), "never-seen-" + values
        )
    return perturbed


def _adult_split(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    labels = (frame["income"] == ">50K").to_numpy(dtype=np.float32)
    groups = (frame["sex"] == "Male").to_numpy(dtype=np.int64)
    return stratified_split(labels, groups, 0.2, 0.2, seed=0)


def test_non_train_rows_do_not_change_the_encoded_train_rows():
    frame = read_adult()
    train = _adult_split(frame)["train"]
    perturbed = _perturb_non_train_rows(frame.astype({c: float for c in NUMERIC_COLUMNS}), train)
    features, names = preprocess(frame, NUMERIC_COLUMNS, CATEGORICAL_COLUMNS, train)
    leaked, leaked_names = preprocess(perturbed, NUMERIC_COLUMNS, CATEGORICAL_COLUMNS, train)
    assert names == leaked_names
    assert np.array_equal(features[train], leaked[train])


def test_category_unseen_in_train_rows_encodes_as_all_zeros():
    frame = read_adult()
    splits = _adult_split(frame)
    perturbed = _perturb_non_train_rows(
        frame.astype({c: float for c in NUMERIC_COLUMNS}), splits["train"]
    )
    features, names = preprocess(perturbed, [], ["workclass"], splits["train"])
    assert not any("never-seen" in name for name in names)
    onehot = [i for i, name in enumerate(names) if name.startswith("workclass=")]
    assert features[np.ix_(splits["test"], onehot)].sum() == 0


def test_missing_workclass_is_an_explicit_indicator_column(adult):
    unknown = (_raw_column(1) == "?").to_numpy(copy=True)
    indicator = adult.feature_names.index("workclass__missing")
    assert unknown.sum() == 2799
    assert np.array_equal(adult.features[:, indicator].numpy(), unknown.astype(np.float32))
    assert "workclass=?" not in adult.feature_names
    categories = _columns(adult, "workclass=")
    assert adult.features[unknown][:, categories].sum() == 0


def test_missing_numeric_value_takes_train_median_and_an_indicator():
    frame = pd.DataFrame({"x": [1.0, 2.0, 9.0, np.nan, 100.0]})
    train = np.array([0, 1, 2, 3])
    features, names = preprocess(frame, ["x"], [], train)
    assert names == ("x", "x__missing")
    assert features[:, 1].tolist() == [0, 0, 0, 1, 0]
    imputed = np.array([1.0, 2.0, 9.0, 2.0])
    assert features[3, 0] == pytest.approx((2.0 - imputed.mean()) / imputed.std())


def test_sex_groups_match_the_raw_counts(adult):
    counts = _raw_column(SEX).value_counts()
    assert adult.group_names == ("female", "male")
    assert torch.bincount(adult.groups).tolist() == [counts["Female"], counts["Male"]]


def test_race_groups_are_white_against_everyone_else():
    data = load_adult(sensitive="race")
    white = int((_raw_column(RACE) == "White").sum())
    assert data.group_names == ("non-white", "white")
    assert torch.bincount(data.groups).tolist() == [48_842 - white, white]


def test_excluding_the_sensitive_feature_drops_race_and_sex_columns():
    data = load_adult(include_sensitive_feature=False)
    assert not any(name.startswith(("race=", "sex=")) for name in data.feature_names)


def test_unknown_sensitive_attribute_raises_value_error():
    with pytest.raises(ValueError, match=r"sex.*race"):
        load_adult(sensitive="age")


def test_missing_directory_raises_file_not_found_naming_the_path(tmp_path):
    absent = tmp_path / "no-adult-here"
    with pytest.raises(FileNotFoundError, match=re.escape(str(absent / "adult.data.gz"))):
        load_adult(path=absent)
