"""The data section of a spec (which dataset, which split) as validated models.

The data package owns these models so that it never imports ``spec``: the spec composes them,
and the loaders take them. Their validators run the cheap file probes of :mod:`.probes`, so a
missing file or column is named before anything starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SerializerFunctionWrapHandler,
    Tag,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from ctrain_dist.data.probes import missing_column_problem, missing_file_problem, table_problem

ADULT_FILES = ("adult.data.gz", "adult.test.gz")


class StrictModel(BaseModel):
    """Unknown keys refused, values frozen: the base of every spec model."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class AdultDataSpec(StrictModel):
    """The embedded UCI Adult data (or a copy of its two files in ``path``)."""

    dataset: Literal["adult"] = "adult"
    sensitive: Literal["sex", "race"] = Field("sex", description="group attribute")
    path: Path | None = Field(None, description="folder with adult.data.gz and adult.test.gz")
    include_sensitive_feature: bool = True

    @field_validator("path")
    @classmethod
    def _files_exist(cls, path: Path | None) -> Path | None:
        if path is None:
            return None
        for name in ADULT_FILES:
            if not (path / name).is_file():
                raise ValueError(
                    f"{path / name} not found; point data.path at a folder holding "
                    f"{' and '.join(ADULT_FILES)}, or drop data.path to use the embedded copy"
                )
        return path.resolve()


FOLKTABLES_TASKS = (
    "ACSIncome",
    "ACSEmployment",
    "ACSEmploymentFiltered",
    "ACSPublicCoverage",
    "ACSMobility",
    "ACSTravelTime",
    "ACSHealthInsurance",
    "ACSIncomePovertyRatio",
)
GroupAttribute = Literal["race_binary", "sex", "race"]


def as_tuple(value: Any) -> Any:
    """A single name given where a list is allowed, as a one-item tuple."""
    return (value,) if isinstance(value, str) else value


def no_repeats(names: tuple[str, ...]) -> tuple[str, ...]:
    if not names or len(set(names)) != len(names):
        raise ValueError("give at least one name, without repeats")
    return names


class FolktablesDataSpec(StrictModel):
    """A Folktables task (Ding et al. 2021) on ACS PUMS person files, read by folktables itself.

    The files come from ``root`` in the census layout ``<root>/<year>/<horizon>/psam_p<FIPS>.csv``
    (what cluster users keep on shared storage; ``ctrain data synth`` writes synthetic ones), or
    are downloaded there by folktables when ``download`` is true. ``sensitive`` with several
    attributes groups by their intersection (e.g. ``[sex, race_binary]``: four groups).
    """

    dataset: Literal["folktables"]
    task: Literal[FOLKTABLES_TASKS] = "ACSIncome"
    states: tuple[str, ...] | Literal["all"] = Field(("OK",), description="codes, or 'all'")
    year: int = Field(2018, ge=2014)
    horizon: Literal["1-Year", "5-Year"] = "1-Year"
    sensitive: tuple[GroupAttribute, ...] = Field(
        ("race_binary",), description="race_binary (white vs non-white), sex, race, or a list"
    )
    include_sensitive_feature: bool = True
    encoding: Literal["one_hot", "reference"] = Field(
        "one_hot",
        description="one_hot: nominal codes one-hot, quantities standardised; reference: every "
        "feature's raw code as one standardised column, as humancompatible.train's loader did",
    )
    download: bool = Field(False, description="let folktables fetch missing files (needs internet)")
    root: Path | None = Field(None, validate_default=True, description="PUMS root folder")

    @model_serializer(mode="wrap")
    def _encoding_only_when_set(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """``encoding`` is written only when not the default, so the trial ids of one-hot
        specs, which hash this dump, are what they were before the field existed."""
        dumped = handler(self)
        if self.encoding == "one_hot":
            dumped.pop("encoding", None)
        return dumped

    @field_validator("states", mode="before")
    @classmethod
    def _statesas_tuple(cls, states: Any) -> Any:
        return states if states == "all" else as_tuple(states)

    @field_validator("states")
    @classmethod
    def _known_states(cls, states: tuple[str, ...] | str) -> tuple[str, ...] | str:
        from folktables.load_acs import state_list

        if states == "all":
            return states
        unknown = [state for state in no_repeats(states) if state not in state_list]
        if unknown:
            raise ValueError(f"unknown state code(s) {unknown}; known: {', '.join(state_list)}")
        return states

    @field_validator("sensitive", mode="before")
    @classmethod
    def _sensitiveas_tuple(cls, sensitive: Any) -> Any:
        return as_tuple(sensitive)

    @field_validator("sensitive")
    @classmethod
    def _sensitive_distinct(cls, sensitive: tuple[str, ...]) -> tuple[str, ...]:
        return no_repeats(sensitive)

    @field_validator("root")
    @classmethod
    def _files_exist(cls, root: Path | None, info: ValidationInfo) -> Path | None:
        if not {"states", "year", "horizon", "download"} <= info.data.keys():
            return root
        problem = missing_file_problem(
            root, info.data["states"], info.data["year"], info.data["horizon"]
        )
        if problem and not info.data["download"]:
            raise ValueError(problem)
        return None if root is None else root.resolve()


class TableDataSpec(StrictModel):
    """A user's own table (CSV or Parquet): one row per example, a binary target, group columns.

    ``positive`` names the target value that means 1; it may be left out only when the target's
    values are 0 and 1 (or true and false). Feature columns default to every other column;
    numeric columns are standardised and the others one-hot encoded unless listed in
    ``categorical`` (for integer codes that are categories).
    """

    dataset: Literal["table"]
    path: Path = Field(description="a .csv, .csv.gz, .parquet or .pq file")
    target: str
    positive: bool | int | float | str | None = None
    sensitive: tuple[str, ...] = Field(description="group column(s); several: intersection")
    features: tuple[str, ...] | None = None
    categorical: tuple[str, ...] = ()
    include_sensitive_feature: bool = True

    @field_validator("path")
    @classmethod
    def _table_exists(cls, path: Path) -> Path:
        problem = table_problem(path)
        if problem:
            raise ValueError(problem)
        return path.resolve()

    @field_validator("sensitive", "features", "categorical", mode="before")
    @classmethod
    def _namesas_tuple(cls, names: Any) -> Any:
        return as_tuple(names)

    @field_validator("target", "sensitive", "features", "categorical")
    @classmethod
    def _columns_exist(cls, names: Any, info: ValidationInfo) -> Any:
        if names is None or "path" not in info.data:
            return names
        listed = (names,) if isinstance(names, str) else names
        if info.field_name in ("sensitive", "features"):
            no_repeats(listed)
        problem = missing_column_problem(info.data["path"], listed)
        if problem:
            raise ValueError(problem)
        return names

    @model_validator(mode="after")
    def _roles_distinct(self) -> TableDataSpec:
        if self.target in self.sensitive or self.target in (self.features or ()):
            raise ValueError(f"target {self.target!r} cannot also be a sensitive or feature column")
        return self


class CustomDataSpec(StrictModel):
    """Data from the user's code: ``factory(**options)`` returns tensors or a torch Dataset.

    ``factory`` is an import path (``package.module:function``) or the name of an installed
    ``ctrain_dist.datasets`` entry point. What it may return, and how each is checked and
    read, is ``custom.py``'s contract: ``(features, labels, groups[, splits])`` (the
    in-memory path) or a map-style ``Dataset`` of ``(x, y, group)`` items (streamed by
    ``loader_workers`` DataLoader processes, ``streaming.py``). It is resolved here, so a
    path that does not import is refused by name; it is called, and its result checked,
    before anything starts (``load.check_data``).
    """

    dataset: Literal["custom"]
    factory: str = Field(description="package.module:function or a ctrain_dist.datasets name")
    options: dict[str, Any] = Field(default_factory=dict, description="keyword arguments")
    group_names: tuple[str, ...] | None = Field(
        None, description="a name per group id (default group_0, group_1, ...)"
    )
    loader_workers: int = Field(
        2, ge=0, description="DataLoader processes reading a Dataset's items (0: in process)"
    )

    @field_validator("factory")
    @classmethod
    def _resolves(cls, factory: str) -> str:
        from ctrain_dist.data.factories import dataset_factory

        dataset_factory(factory)
        return factory

    def __hash__(self) -> int:  # ``options`` is a dict; the loaders cache by spec
        return hash(self.model_dump_json())


DATASETS = ("adult", "folktables", "table", "custom")


def _dataset_tag(value: Any) -> str:
    """The ``dataset`` of a raw or validated data section; ``adult`` when left out."""
    if isinstance(value, dict):
        return value.get("dataset", "adult")
    return getattr(value, "dataset", "adult")


DataSpec = Annotated[
    Annotated[AdultDataSpec, Tag("adult")]
    | Annotated[FolktablesDataSpec, Tag("folktables")]
    | Annotated[TableDataSpec, Tag("table")]
    | Annotated[CustomDataSpec, Tag("custom")],
    Discriminator(
        _dataset_tag,
        custom_error_type="unknown_dataset",
        custom_error_message=f"unknown dataset; use one of {', '.join(DATASETS)}",
    ),
]


class SplitSpec(StrictModel):
    val: float = Field(0.2, gt=0, lt=1)
    test: float = Field(0.2, gt=0, lt=1)
    seed: int = Field(0, ge=0, description="split seed, fixed across training seeds")

    @model_validator(mode="after")
    def _leaves_training_rows(self) -> SplitSpec:
        if self.val + self.test >= 1:
            raise ValueError("val + test must be below 1 so that rows remain for training")
        return self
