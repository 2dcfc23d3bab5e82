"""Every user-facing configuration, validated whole before anything starts.

A sweep spec is YAML; ``--set a.b=v`` overrides any field (``v`` read as YAML, list items by
index: ``algorithms.1.params.lr=0.1``). Validation is strict and complete up front (unknown
keys, bounds, algorithm names, every listed hyperparameter value, data files) because a
mistake found by a Ray worker minutes into a sweep costs the whole sweep; a :class:`SpecError`
names the field in one line and the CLI exits 2 on it.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ctrain_dist.algorithms import ALGORITHMS
from ctrain_dist.constraints import CONSTRAINTS
from ctrain_dist.data.config import DATASETS, AdultDataSpec, DataSpec, SplitSpec, StrictModel
from ctrain_dist.errors import SpecError

ModelT = TypeVar("ModelT", bound=BaseModel)


class ModelSpec(StrictModel):
    hidden: list[Annotated[int, Field(gt=0)]] = Field(
        default_factory=lambda: [64, 32], description="hidden widths of the ReLU MLP"
    )


class ConstraintSpec(StrictModel):
    kind: str = Field(description=f"one of {sorted(CONSTRAINTS)}")
    bound: float = Field(ge=0, description="gap bound, or the Frobenius norm bound (weight_norm)")
    pairs: Literal["all", "vs_rest", "vs_population"] = Field(
        "all",
        description="which groups a gap compares: every pair, each vs the rest, each vs all rows",
    )

    @field_validator("kind")
    @classmethod
    def _known(cls, kind: str) -> str:
        if kind not in CONSTRAINTS:
            raise ValueError(
                f"unknown constraint {kind!r}; known: {', '.join(sorted(CONSTRAINTS))}"
            )
        return kind


class BudgetSpec(StrictModel):
    steps: int | None = Field(None, gt=0)
    seconds: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _exactly_one(self) -> BudgetSpec:
        if (self.steps is None) == (self.seconds is None):
            raise ValueError("give exactly one of budget.steps or budget.seconds")
        return self


class TrainingSpec(StrictModel):
    batch_size: int = Field(64, gt=0)
    budget: BudgetSpec = Field(default_factory=lambda: BudgetSpec(steps=1000))
    eval_every: int = Field(100, gt=0, description="evaluate every this many steps")
    dtype: Literal["float32", "float64"] = "float32"
    device: Literal["cpu", "cuda", "auto"] = "auto"
    threads: int = Field(1, gt=0, description="torch intra-op threads per trial")
    min_group_count: int | None = Field(
        None,
        gt=0,
        description="group-stratified batches with at least this many rows of every group "
        "(objective reweighted to stay unbiased); unset: plain uniform batches",
    )
    checkpoint_every: int | None = Field(
        None, gt=0, description="save a checkpoint every this many steps (at evaluation points)"
    )

    @model_validator(mode="after")
    def _quota_fits_the_batch(self) -> TrainingSpec:
        """Every dataset has at least two groups, so two quotas must fit in one batch."""
        if self.min_group_count is not None and 2 * self.min_group_count > self.batch_size:
            raise ValueError(
                f"min_group_count {self.min_group_count} for at least two groups exceeds "
                f"batch_size {self.batch_size}; lower it or raise batch_size"
            )
        return self


class AlgorithmSpec(StrictModel):
    """One algorithm; a list as a parameter value means "sweep over these values"."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in ALGORITHMS:
            raise ValueError(f"unknown algorithm {name!r}; known: {', '.join(sorted(ALGORITHMS))}")
        return name

    def grid(self) -> list[dict[str, Any]]:
        """Every combination of the listed values, in a stable order."""
        keys = sorted(self.params)
        values = [v if isinstance(v, list) else [v] for v in (self.params[k] for k in keys)]
        return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*values)]


class ResourcesSpec(StrictModel):
    """What one trial asks of the cluster; with several workers, split evenly among them."""

    cpus_per_trial: float = Field(1.0, gt=0)
    gpus_per_trial: float = Field(0.0, ge=0)
    workers_per_trial: int = Field(
        1, gt=0, description="data-parallel workers per trial (Ray Train, exact statistics)"
    )
    max_concurrent_trials: int | None = Field(None, gt=0)
    reuse_actors: bool = Field(
        True,
        description="run a worker's next trial in the same Ray actor (no process start, data "
        "already loaded); single-worker trials only",
    )


class SweepSpec(StrictModel):
    """A study: data × constraints × algorithms × hyperparameters × seeds."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    data: DataSpec = Field(default_factory=AdultDataSpec)
    split: SplitSpec = Field(default_factory=SplitSpec)
    model: ModelSpec = Field(default_factory=ModelSpec)
    constraints: list[ConstraintSpec] = Field(min_length=1)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    algorithms: list[AlgorithmSpec] = Field(min_length=1)
    seeds: int | list[int] = Field(5, description="a count (0..n-1) or an explicit list")
    seeds_per_trial: int = Field(
        1,
        gt=0,
        description="seeds of one configuration trained together as one batched computation "
        "(each still recorded as its own trial)",
    )
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    max_failures: int = Field(1, ge=0, description="retries of a failed trial")

    @field_validator("seeds")
    @classmethod
    def _seeds_sane(cls, seeds: int | list[int]) -> int | list[int]:
        if isinstance(seeds, int) and seeds <= 0:
            raise ValueError("seeds must be a positive count or a non-empty list")
        if isinstance(seeds, list) and (not seeds or len(set(seeds)) != len(seeds)):
            raise ValueError("seeds must be a non-empty list without repeats")
        return seeds

    def seed_list(self) -> list[int]:
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)

    def trials(self) -> list[TrialSpec]:
        """One trial per algorithm × hyperparameter combination × seed."""
        shared = self.model_dump(
            mode="json", include={"data", "split", "model", "constraints", "training"}
        )
        return [
            TrialSpec(sweep_id=self.name, algorithm=a.name, hyperparameters=hp, seed=seed, **shared)
            for a in self.algorithms
            for hp in a.grid()
            for seed in self.seed_list()
        ]

    def packs(self) -> list[list[TrialSpec]]:
        """The trials grouped into packs of up to ``seeds_per_trial`` (see :func:`pack_trials`)."""
        return pack_trials(self.trials(), self.seeds_per_trial)


class TrialSpec(StrictModel):
    """Everything one trial needs: what the trainer receives, and what a trial id hashes."""

    sweep_id: str
    algorithm: str
    hyperparameters: dict[str, Any]
    seed: int
    data: DataSpec
    split: SplitSpec
    model: ModelSpec
    constraints: list[ConstraintSpec]
    training: TrainingSpec

    @property
    def trial_id(self) -> str:
        """Stable across runs and machines, so a finished trial is recognised on resume."""
        payload = self.model_dump(mode="json", exclude={"sweep_id"})
        digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
        return f"{self.algorithm}-s{self.seed}-{digest[:12]}"

    @property
    def config_label(self) -> str:
        """The configuration without the seed: what results are grouped by across seeds."""
        params = ", ".join(
            f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in sorted(self.hyperparameters.items())
        )
        return f"{self.algorithm}({params})"


def packing_obstacle(trial: TrialSpec) -> str | None:
    """Why ``trial`` cannot train packed with other seeds, or None when it can."""
    if not ALGORITHMS[trial.algorithm].batchable:
        return f"{trial.algorithm} solves per-seed subproblems on the host and cannot batch seeds"
    if any(c.kind == "weight_norm" for c in trial.constraints):
        return "the weight_norm constraint reads one model's weights and cannot batch seeds"
    return None


def pack_trials(trials: list[TrialSpec], size: int) -> list[list[TrialSpec]]:
    """Trials that differ only in seed, in packs of up to ``size``, in the order given.

    A trial that cannot be packed (:func:`packing_obstacle`) is a pack of one. Packing the
    pending trials rather than the spec's keeps resume exact: seeds already finished are not
    run again, and the unfinished ones of a configuration are packed together.
    """
    groups: dict[str, list[TrialSpec]] = {}
    for trial in trials:
        key = trial.model_dump_json(exclude={"seed"})
        alone = size == 1 or packing_obstacle(trial) is not None
        groups.setdefault(trial.trial_id if alone else key, []).append(trial)
    return [group[i : i + size] for group in groups.values() for i in range(0, len(group), size)]


def _field_path(loc: tuple[Any, ...]) -> str:
    """Dotted field path; the dataset tag pydantic puts after ``data`` is left out."""
    parts = [str(part) for part in loc]
    if len(parts) > 1 and parts[0] == "data" and parts[1] in DATASETS:
        del parts[1]
    return ".".join(parts)


def _check_hyperparameters(spec: SweepSpec) -> None:
    """Validate every listed hyperparameter value against its algorithm's declared model."""
    for index, algorithm in enumerate(spec.algorithms):
        model = ALGORITHMS[algorithm.name].hyperparameters
        for combo in algorithm.grid():
            try:
                model(**combo)
            except ValidationError as error:
                first = error.errors()[0]
                name = _field_path(first["loc"])
                known = ", ".join(model.model_fields)
                hint = f" (known: {known})" if first["type"] == "extra_forbidden" else ""
                raise SpecError(
                    f"algorithms.{index}.params.{name}",
                    f"{first['msg']}, got {first.get('input')!r}{hint}",
                ) from None


def _check_data(spec: SweepSpec) -> None:
    """Data problems a file header cannot show (target values, empty groups), before any job."""
    from ctrain_dist.data.load import check_data

    check_data(spec.data, spec.split)


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=v`` overrides (``v`` parsed as YAML) to a raw spec mapping, in order."""
    for override in overrides:
        key, sep, text = override.partition("=")
        if not sep or not key:
            raise SpecError(override, "an override must look like key.path=value")
        node: Any = raw
        parts = key.split(".")
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise SpecError(key, f"{part!r} is not an index of a {len(node)}-item list")
                index = int(part)
                if last:
                    node[index] = yaml.safe_load(text)
                else:
                    node = node[index]
            elif isinstance(node, dict):
                if last:
                    node[part] = yaml.safe_load(text)
                else:
                    node = node.setdefault(part, {})
            else:
                raise SpecError(key, f"{'.'.join(parts[:depth])} is not a mapping or a list")
    return raw


def require_single_process_packs(spec: SweepSpec, workers: int, field: str) -> None:
    """Refuse packing where its seeds would not train exactly as alone.

    Packs train in one process, and a time budget would be shared by the pack's seeds, each
    then training fewer steps than alone: packing takes a step budget.
    """
    if spec.seeds_per_trial == 1:
        return
    if workers > 1:
        raise SpecError(
            field,
            f"packed seeds (seeds_per_trial {spec.seeds_per_trial}) train in one process; "
            "set it to 1 or seeds_per_trial to 1",
        )
    if spec.training.budget.steps is None:
        raise SpecError(
            "seeds_per_trial",
            "packed seeds share one clock, so each would train fewer steps than alone under "
            "budget.seconds; give budget.steps or set seeds_per_trial to 1",
        )


def require_data_parallel(spec: SweepSpec, workers: int, field: str) -> None:
    """Refuse several workers per trial for an algorithm whose update DDP cannot make exact."""
    if workers == 1:
        return
    for index, algorithm in enumerate(spec.algorithms):
        if not ALGORITHMS[algorithm.name].data_parallel:
            raise SpecError(
                f"algorithms.{index}.name",
                f"{algorithm.name} runs on one worker only; drop it or set {field} to 1",
            )


def validate_model(
    model: type[ModelT],
    raw: dict[str, Any],
    field_path: Callable[[tuple[Any, ...]], str],
    unknown_key_hint: str,
) -> ModelT:
    """``model`` from ``raw``, or a :class:`SpecError` naming the first bad field in one line."""
    try:
        return model.model_validate(raw)
    except ValidationError as error:
        first = error.errors()[0]
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = f"unknown key; {unknown_key_hint}"
        raise SpecError(field_path(first["loc"]), message) from None


def read_yaml_mapping(path: Path, field: str) -> dict[str, Any]:
    """The mapping a YAML file holds; a missing, malformed or non-mapping file names ``field``."""
    if not path.is_file():
        raise SpecError(field, f"{path} not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise SpecError(field, f"{path} is not valid YAML: {error}".splitlines()[0]) from None
    if not isinstance(raw, dict):
        raise SpecError(field, f"{path} must hold a mapping at the top level")
    return raw


def parse_spec(raw: dict[str, Any]) -> SweepSpec:
    """A validated spec from a raw mapping, or a :class:`SpecError` naming the first bad field."""
    spec = validate_model(
        SweepSpec, raw, _field_path, "check its spelling against the spec reference in README.md"
    )
    _check_hyperparameters(spec)
    require_data_parallel(spec, spec.resources.workers_per_trial, "resources.workers_per_trial")
    require_single_process_packs(
        spec, spec.resources.workers_per_trial, "resources.workers_per_trial"
    )
    _check_data(spec)
    return spec


def load_spec(path: Path | str, overrides: list[str] | None = None) -> SweepSpec:
    """Read a YAML spec, apply overrides and validate it whole."""
    raw = read_yaml_mapping(Path(path), "SPEC")
    return parse_spec(apply_overrides(raw, overrides or []))
