"""UCI Adult, embedded: the census income task that Folktables' ACSIncome replaced.

Why embed it: a study, a test or a tutorial can then run offline with no download. The files in
``adult/`` are the UCI originals (see ``adult/LICENSE.md`` for attribution and checksums); all
cleaning happens here, at load time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ctrain_dist.data.preprocess import preprocess
from ctrain_dist.data.split import stratified_split
from ctrain_dist.data.tabular import TabularData

DEFAULT_PATH: Path = Path(__file__).parent / "adult"
DATA_FILES: tuple[str, ...] = ("adult.data.gz", "adult.test.gz")
COLUMNS: tuple[str, ...] = (
    "age",
    "workclass",
    "fnlwgt",
    "education",
    "education-num",
    "marital-status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "capital-gain",
    "capital-loss",
    "hours-per-week",
    "native-country",
    "income",
)
NUMERIC_COLUMNS: tuple[str, ...] = (
    "age",
    "education-num",
    "capital-gain",
    "capital-loss",
    "hours-per-week",
)
CATEGORICAL_COLUMNS: tuple[str, ...] = (
    "workclass",
    "marital-status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "native-country",
)
SENSITIVE_ATTRIBUTES: tuple[str, ...] = ("sex", "race")
LABELS: tuple[str, ...] = ("<=50K", ">50K")


def read_adult(path: Path | None = None) -> pd.DataFrame:
    """Both UCI files pooled into one raw frame of 48,842 rows, cleaned but not encoded.

    Rows of ``adult.data`` come first, then those of ``adult.test`` (its first line, a comment,
    skipped). Text is stripped of whitespace, the test labels of their trailing period, and
    ``?`` (only ``?``) becomes a missing value.

    Args:
        path: directory holding ``adult.data.gz`` and ``adult.test.gz``; the embedded copy if
            None.

    Raises:
        FileNotFoundError: naming the expected path of the first file that is absent.
    """
    directory = DEFAULT_PATH if path is None else Path(path)
    files = [directory / name for name in DATA_FILES]
    for file in files:
        if not file.is_file():
            raise FileNotFoundError(f"Adult data file not found: expected {file}")
    parts = [
        pd.read_csv(
            file,
            header=None,
            names=COLUMNS,
            sep=",",
            skipinitialspace=True,
            na_values=["?"],
            keep_default_na=False,
            skiprows=skip,
        )
        for file, skip in zip(files, (0, 1), strict=True)
    ]
    frame = pd.concat(parts, ignore_index=True)
    for column in (*CATEGORICAL_COLUMNS, "education", "income"):
        frame[column] = frame[column].str.strip()
    frame["income"] = frame["income"].str.removesuffix(".")
    valid = frame["income"].isin(LABELS)
    if not valid.all():
        unknown = sorted(frame["income"][~valid].astype(str).unique())
        raise ValueError(f"unexpected income values {unknown}; expected one of {LABELS}")
    return frame


def load_adult(
    sensitive: str = "sex",
    split_seed: int = 0,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    path: Path | None = None,
    include_sensitive_feature: bool = True,
) -> TabularData:
    """Adult as ``TabularData``: predict income > 50K, groups by sex or race.

    Both UCI files are pooled and re-split here, stratified by (label, group), because the UCI
    train/test cut is not stratified by group and a study needs a validation split too.

    Two columns are dropped: ``fnlwgt`` is the census sampling weight (how many people a row
    stands for), a property of the survey design and not of the person, so as a feature it lets
    the model learn the sampling scheme; ``education`` is a text copy of ``education-num``
    (one-to-one), so keeping both would only duplicate a feature.

    Args:
        sensitive: the attribute defining groups: ``"sex"`` (``("female", "male")`` → ids 0, 1)
            or ``"race"`` (``("non-white", "white")`` → ids 0, 1; white vs everyone else, as the
            Folktables paper groups ACSIncome).
        split_seed: seed of the stratified split.
        val_fraction: share of each (label, group) cell for validation.
        test_fraction: share of each (label, group) cell for test.
        path: directory holding ``adult.data.gz`` and ``adult.test.gz``; the embedded copy if
            None.
        include_sensitive_feature: if False, both ``race`` and ``sex`` are left out of the
            features (not only the one that defines groups), for models that must not see
            protected attributes.

    Returns:
        48,842 rows: numeric age, education-num, capital-gain, capital-loss, hours-per-week
        (standardised on train), then one-hot workclass, marital-status, occupation,
        relationship, race, sex, native-country, with ``<col>__missing`` indicators for
        workclass, occupation and native-country (see ``preprocess``).

    Raises:
        ValueError: if ``sensitive`` is not one of ``SENSITIVE_ATTRIBUTES`` or the fractions are
            invalid.
        FileNotFoundError: if a data file is absent from ``path``.
    """
    if sensitive not in SENSITIVE_ATTRIBUTES:
        raise ValueError(f"sensitive must be one of {SENSITIVE_ATTRIBUTES}, got {sensitive!r}")
    frame = read_adult(path)
    labels = (frame["income"] == ">50K").to_numpy(dtype=np.float32, copy=True)
    groups, group_names = _group_ids(frame, sensitive)
    splits = stratified_split(labels, groups, val_fraction, test_fraction, split_seed)
    categorical = [
        column
        for column in CATEGORICAL_COLUMNS
        if include_sensitive_feature or column not in SENSITIVE_ATTRIBUTES
    ]
    features, feature_names = preprocess(frame, NUMERIC_COLUMNS, categorical, splits["train"])
    return TabularData(
        name="adult",
        features=torch.from_numpy(features),
        labels=torch.from_numpy(labels),
        groups=torch.from_numpy(groups),
        feature_names=feature_names,
        group_names=group_names,
        splits={name: torch.from_numpy(index) for name, index in splits.items()},
    )


def _group_ids(frame: pd.DataFrame, sensitive: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """Int64 group id of every row and the group names, for ``sex`` or ``race``.

    Race is binarised as white vs everyone else: the non-white categories are each too small
    (down to 406 rows) for per-group constraint estimates, and the Folktables paper and the
    reference study group the same way.
    """
    if sensitive == "race":
        white = (frame["race"] == "White").to_numpy(dtype=np.int64, copy=True)
        return white, ("non-white", "white")
    ids = frame["sex"].map({"Female": 0, "Male": 1})
    if ids.isna().any():
        unknown = sorted(frame["sex"][ids.isna()].astype(str).unique())
        raise ValueError(f"unexpected sex values {unknown}; expected Female or Male")
    return ids.to_numpy(dtype=np.int64, copy=True), ("female", "male")
