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
import math
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import (
    BaseModel,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from ctrain_dist.algorithms import ALGORITHMS, RENAMED
from ctrain_dist.constraints import BUILTIN_SPECIFIC_CONSTRAINTS, CONSTRAINTS, GAP_CONSTRAINTS
from ctrain_dist.data.config import DATASETS, AdultDataSpec, DataSpec, SplitSpec, StrictModel
from ctrain_dist.errors import SpecError
from ctrain_dist.plugins import resolve
from ctrain_dist.tuning import (
    TuningSpec,
    probe_configurations,
    refuse_per_algorithm_budgets,
    spaces_of,
    tuned_configurations,
)

ModelT = TypeVar("ModelT", bound=BaseModel)

MAX_SEEDS = 10_000
"""More seeds than this is a typo (``seeds: 1000000000`` would build a list of 1e9 seeds)."""
MAX_TRIALS = 100_000
"""More trials than this no store or scheduler of this package is sized for."""
ADULT_ROWS = 48_842
"""Rows of the embedded UCI Adult copy (``data/adult.py``), for a check that needs no load."""


class ModelSpec(StrictModel):
    """The built-in ReLU MLP (``hidden``), or the user's ``nn.Module`` from ``factory``.

    A factory is called as ``factory(num_features=d, num_outputs=1, dtype=..., **options)``
    (plus ``input_shape``, one row's shape, when it declares that parameter) and returns a
    module mapping ``[B, ...]`` rows to ``[B, 1]`` logits; it is resolved
    here, so a path that does not import is refused by name, and run on one minibatch before
    anything starts (``trial.probe``).
    """

    hidden: list[Annotated[int, Field(gt=0)]] = Field(
        default_factory=lambda: [64, 32], description="hidden widths of the ReLU MLP"
    )
    factory: str | None = Field(
        None, description="package.module:function returning your nn.Module (replaces the MLP)"
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="keyword arguments passed to factory"
    )

    @field_validator("factory")
    @classmethod
    def _resolves(cls, factory: str | None) -> str | None:
        if factory is not None and not callable(resolve(factory)):
            raise ValueError(f"{factory} is not callable; name a function returning an nn.Module")
        return factory

    @model_validator(mode="after")
    def _options_need_a_factory(self) -> ModelSpec:
        if self.options and self.factory is None:
            raise ValueError("model.options are passed to model.factory; set factory or drop them")
        return self


class ConstraintSpec(StrictModel):
    kind: str = Field(description="a built-in kind, an entry point or package.module:Class")
    bound: float = Field(ge=0, description="gap bound, or the Frobenius norm bound (weight_norm)")
    pairs: Literal["all", "vs_rest", "vs_population"] = Field(
        "all",
        description="which groups a gap compares: every pair, each vs the rest, each vs all rows",
    )
    decide_on: Literal["strict", "surrogate"] = Field(
        "strict",
        description="the value multiplier updates, switching and feasibility tests inside an "
        "algorithm read: strict (the hard 0/1 rate of a rate constraint) or surrogate (its "
        "sigmoid); the primal gradient always follows the surrogate, and loss and norm "
        "constraints are their own surrogate",
    )

    options: dict[str, Any] = Field(
        default_factory=dict,
        description="keyword arguments of a rate_bound or a user's constraint class",
    )
    equality: bool = Field(
        False,
        description="an equality: the value must be 0 (a rate equal to its bound), with a "
        "free-sign multiplier; rate_bound and user kinds (a gap is two-sided already: bound 0)",
    )
    dual_lr: float | None = Field(
        None,
        gt=0,
        description="this constraint's own dual step size, in place of the algorithm's dual_lr "
        "(alm, ssl_alm, nupi)",
    )
    dual_bound: float | None = Field(
        None,
        gt=0,
        description="this constraint's own multiplier bound, in place of the algorithm's "
        "dual_bound (alm, ssl_alm, nupi, ialm)",
    )

    @model_serializer(mode="wrap")
    def _equality_only_when_set(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """``equality``, ``dual_lr`` and ``dual_bound`` are written only when set, so the
        trial ids of specs without them, which hash this dump, are what they were before the
        fields existed."""
        dumped = handler(self)
        if not self.equality:
            dumped.pop("equality", None)
        for name in ("dual_lr", "dual_bound"):
            if getattr(self, name) is None:
                dumped.pop(name, None)
        return dumped

    @field_validator("kind")
    @classmethod
    def _known(cls, kind: str) -> str:
        """A built-in, an installed entry point or a ``package.module:Class`` that imports
        (a failing import raises ``plugins.PluginError``, a ``ValueError``, naming it)."""
        if kind not in CONSTRAINTS:
            raise ValueError(
                f"unknown constraint {kind!r}; known: {', '.join(sorted(CONSTRAINTS))}, or "
                "package.module:Class"
            )
        return kind

    @model_validator(mode="after")
    def _options_for_generic_kinds(self) -> ConstraintSpec:
        if self.options and self.kind in BUILTIN_SPECIFIC_CONSTRAINTS:
            raise ValueError(f"{self.kind} takes no options; drop constraints.options")
        if self.equality and self.kind in BUILTIN_SPECIFIC_CONSTRAINTS:
            raise ValueError(
                f"{self.kind} cannot be an equality (a gap is |gap| <= bound, two-sided "
                "already: bound 0 asks for no gap); drop constraints.equality"
            )
        return self


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
    rows_per_group: int | None = Field(
        None,
        gt=0,
        description="group-balanced batches: exactly this many rows of every group, batch_size "
        "= rows_per_group × groups (objective reweighted to stay unbiased)",
    )
    constraint_rows_per_group: int | None = Field(
        None,
        gt=0,
        description="constraint estimates from their own group-balanced draw of this many "
        "rows of every group per oracle call, as humancompatible.train's benchmark drew them; "
        "the objective keeps its batch_size rows; unset: constraints read the objective's batch",
    )
    checkpoint_every: int | None = Field(
        None, gt=0, description="save a checkpoint every this many steps (at evaluation points)"
    )
    compile: Literal[False, "default", "reduce-overhead", "max-autotune"] = Field(
        False,
        description="torch.compile each step's oracle (forward, backward, constraint "
        "statistics) in this mode (trial/compiled.py); false: eager. How a trial runs, not "
        "what it computes: not part of its trial_id",
    )

    @model_validator(mode="after")
    def _quota_fits_the_batch(self) -> TrainingSpec:
        """Every dataset has at least two groups, so two quotas must fit in one batch; the
        quotas' checks against the data are ``check_sampling``'s."""
        if self.min_group_count is not None and self.rows_per_group is not None:
            raise ValueError("give min_group_count or rows_per_group, not both")
        for name in ("min_group_count", "rows_per_group"):
            quota = getattr(self, name)
            if quota is not None and 2 * quota > self.batch_size:
                raise ValueError(
                    f"{name} {quota} for at least two groups exceeds "
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
        if name in RENAMED:
            raise ValueError(f"algorithm {name!r} was renamed: use {RENAMED[name]}")
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


class AnalysisSpec(StrictModel):
    """How results are judged; never part of a trial's identity (its ``trial_id``).

    ``ctrain sweep --confirm`` selects under it; ``ctrain report`` is given the same value with
    ``--feasibility-tolerance`` (the report reads only the store, not the spec).
    """

    feasibility_tolerance: float = Field(
        0.0,
        ge=0,
        description="a seed is feasible when its max violation is at most this (0: exactly met)",
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
    configurations_per_trial: int = Field(
        1,
        gt=0,
        description="configurations of one algorithm that differ only in scalar "
        "hyperparameters (step sizes, rho, mu, ...) trained together as one batched "
        "computation, each with seeds_per_trial seeds (each still recorded as its own trial)",
    )
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    max_failures: int = Field(1, ge=0, description="retries of a failed trial")
    analysis: AnalysisSpec = Field(default_factory=AnalysisSpec)
    tuning: TuningSpec | None = Field(
        None, description="tune each algorithm with an equal budget (README: Tuning)"
    )

    @field_validator("seeds")
    @classmethod
    def _seeds_sane(cls, seeds: int | list[int]) -> int | list[int]:
        if isinstance(seeds, int) and seeds <= 0:
            raise ValueError("seeds must be a positive count or a non-empty list")
        if isinstance(seeds, list) and (not seeds or len(set(seeds)) != len(seeds)):
            raise ValueError("seeds must be a non-empty list without repeats")
        count = seeds if isinstance(seeds, int) else len(seeds)
        if count > MAX_SEEDS:
            raise ValueError(f"{count} seeds is more than the {MAX_SEEDS} allowed; give fewer")
        return seeds

    @model_validator(mode="after")
    def _equalities_taken(self) -> SweepSpec:
        """An equality constraint goes only to algorithms with free-sign multipliers."""
        if any(c.equality for c in self.constraints):
            for algorithm in self.algorithms:
                cls = ALGORITHMS[algorithm.name]
                if cls.constrained and not cls.takes_equalities:
                    takers = sorted(n for n, c in ALGORITHMS.items() if c.takes_equalities)
                    raise ValueError(
                        f"{algorithm.name} takes inequality constraints only; with an "
                        f"equality constraint use {', '.join(takers)}"
                    )
        return self

    @model_validator(mode="after")
    def _dual_overrides_taken(self) -> SweepSpec:
        """A constraint's own ``dual_lr`` / ``dual_bound`` goes only to constrained algorithms
        with that dual step or bound (``Algorithm.dual_overrides``)."""
        for index, constraint in enumerate(self.constraints):
            for name in ("dual_lr", "dual_bound"):
                if getattr(constraint, name) is None:
                    continue
                for algorithm in self.algorithms:
                    cls = ALGORITHMS[algorithm.name]
                    if cls.constrained and name not in cls.dual_overrides:
                        takers = sorted(
                            n for n, c in ALGORITHMS.items() if name in c.dual_overrides
                        )
                        raise ValueError(
                            f"constraints[{index}].{name}: {algorithm.name} has no {name} to "
                            f"set per constraint; drop it or use {', '.join(takers)}"
                        )
        return self

    def trial_count(self) -> int:
        """How many trials :meth:`trials` would build, computed without building them."""
        seeds = self.seeds if isinstance(self.seeds, int) else len(self.seeds)
        if self.tuning is not None:
            return len(self.configurations()) * len(self.seed_list())
        grids = sum(
            math.prod(len(v) if isinstance(v, list) else 1 for v in a.params.values())
            for a in self.algorithms
        )
        return grids * seeds

    def seed_list(self) -> list[int]:
        if self.tuning is not None:
            return list(range(self.tuning.seeds_per_configuration))
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)

    def configurations(self) -> list[tuple[AlgorithmSpec, dict[str, Any]]]:
        """Each algorithm entry with each of its concrete hyperparameter sets: its grid, or
        under ``tuning`` the configurations the search fixes up front (``tuning.py``; none for
        ``optuna``, whose configurations are chosen while it runs)."""
        if self.tuning is None:
            return [(a, hp) for a in self.algorithms for hp in a.grid()]
        entries = [(a.name, a.params) for a in self.algorithms]
        steps, seconds = self.training.budget.steps, self.training.budget.seconds
        per_entry = tuned_configurations(self.tuning, entries, steps, seconds)
        return [(a, hp) for a, hps in zip(self.algorithms, per_entry, strict=True) for hp in hps]

    def trials(self) -> list[TrialSpec]:
        """One trial per algorithm × hyperparameter combination × seed."""
        return [
            trial
            for a, hp in self.configurations()
            for trial in self.configuration_trials(a.name, hp)
        ]

    def configuration_trials(
        self, algorithm: str, hyperparameters: dict[str, Any]
    ) -> list[TrialSpec]:
        """The trials, one per seed, of one configuration (also one a searcher chose)."""
        shared = self.model_dump(
            mode="json", include={"data", "split", "model", "constraints", "training"}
        )
        return [
            TrialSpec(
                sweep_id=self.name,
                algorithm=algorithm,
                hyperparameters=hyperparameters,
                seed=seed,
                **shared,
            )
            for seed in self.seed_list()
        ]

    def packs(self) -> list[list[TrialSpec]]:
        """The trials grouped into packs of up to ``seeds_per_trial`` seeds of up to
        ``configurations_per_trial`` configurations (see :func:`pack_trials`)."""
        return pack_trials(self.trials(), self.seeds_per_trial, self.configurations_per_trial)


_HOW_NOT_WHAT: dict[str, Any] = {"training": {"compile"}}
"""Fields that change how a trial runs, not what it computes, left out of its ``trial_id``: a
compiled step follows the eager trajectory to rounding (``tests/test_compiled.py``), so a
sweep resumed with ``training.compile`` changed never re-runs a finished trial."""


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
        payload = self.model_dump(mode="json", exclude={"sweep_id": True, **_HOW_NOT_WHAT})
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
    """Why ``trial`` cannot train packed with other seeds, or None when it can (for user
    code, as far as the driver's probe found: :func:`record_packing_obstacle`)."""
    if not ALGORITHMS[trial.algorithm].batchable:
        return f"{trial.algorithm} solves per-seed subproblems on the host and cannot batch seeds"
    if any(c.kind == "weight_norm" for c in trial.constraints):
        return "the weight_norm constraint reads one model's weights and cannot batch seeds"
    return _USER_CODE_OBSTACLES.get(_user_code_key(trial)) if _USER_CODE_OBSTACLES else None


_USER_CODE_OBSTACLES: dict[str, str] = {}
"""Why user code cannot train packed, as the driver's probe found it on one minibatch
(``trial.probe``: a ``model.factory`` model or a constraint class that ``vmap`` cannot batch
exactly), by :func:`_user_code_key`. Only running the code can tell, so the probe records its
finding here before any pack is planned, and :func:`packing_obstacle` reads it."""


def _user_code_key(trial: TrialSpec) -> str:
    """What the probe's finding depends on: the data, model, constraints and dtype."""
    payload = trial.model_dump(mode="json", include={"data", "split", "model", "constraints"})
    return json.dumps([payload, trial.training.dtype], sort_keys=True)


def record_packing_obstacle(trial: TrialSpec, obstacle: str | None) -> None:
    """Note that the user code of ``trial`` (and of every trial sharing its data, model,
    constraints and dtype) trains one seed per trial, and why (``trial.probe``); None
    forgets an earlier finding (the probe starts afresh: the user may have changed the code)."""
    key = _user_code_key(trial)
    if obstacle is None:
        _USER_CODE_OBSTACLES.pop(key, None)
    else:
        _USER_CODE_OBSTACLES[key] = obstacle


def member_obstacle(algorithm: str, name: str) -> str | None:
    """Why configurations of ``algorithm`` that differ in hyperparameter ``name`` cannot share
    a pack, or None when they can (``Algorithm.member_hyperparameters``: the scalars its step
    reads as one value per member)."""
    cls = ALGORITHMS[algorithm]
    if name in cls.member_hyperparameters:
        return None
    field = cls.hyperparameters.model_fields.get(name)
    annotation = "" if field is None else str(field.annotation)
    if "Literal" in annotation or "bool" in annotation or "str" in annotation:
        why = "a choice that selects the step's code path"
    elif "int" in annotation and "float" not in annotation:
        why = "a count that sets shapes or when an update happens"
    else:
        why = "read once for the whole pack (it sets a bound, an initial value or a code path)"
    return f"{name} is {why}"


def _pack_key(trial: TrialSpec, configurations: bool) -> str:
    """What the members of one pack share: everything but the seed and, when configurations
    pack, the values of the hyperparameters the algorithm reads per member (whether such a
    value is set at all stays in the key: unset means another code path)."""
    payload = trial.model_dump(mode="json", exclude={"seed"})
    if configurations:
        per_member = ALGORITHMS[trial.algorithm].member_hyperparameters
        payload["hyperparameters"] = {
            name: "per member" if name in per_member and value is not None else value
            for name, value in payload["hyperparameters"].items()
        }
    return json.dumps(payload, sort_keys=True)


def can_share_a_pack(trials: list[TrialSpec]) -> bool:
    """Whether ``trials`` differ only in seed and in hyperparameters read per member."""
    return len({_pack_key(trial, configurations=True) for trial in trials}) == 1


def pack_trials(
    trials: list[TrialSpec], size: int, configurations: int = 1
) -> list[list[TrialSpec]]:
    """Trials in packs of up to ``size`` seeds of one configuration, in the order given; with
    ``configurations`` above 1, up to that many such seed packs of configurations that differ
    only in the hyperparameters the algorithm reads per member (:func:`_pack_key`) form one
    pack: round by round, the first seed pack of each configuration, then the second, so a
    pack spans configurations rather than one configuration's seeds.

    A trial that cannot be packed (:func:`packing_obstacle`) is a pack of one. Packing the
    pending trials rather than the spec's keeps resume exact: trials already finished are not
    run again, and the unfinished ones are packed together.
    """
    packing = size * configurations > 1
    seed_groups: dict[str, list[TrialSpec]] = {}
    for trial in trials:
        alone = not packing or packing_obstacle(trial) is not None
        key = trial.trial_id if alone else _pack_key(trial, configurations=False)
        seed_groups.setdefault(key, []).append(trial)
    seed_packs = [
        [group[i : i + size] for i in range(0, len(group), size)] for group in seed_groups.values()
    ]
    if configurations == 1:
        return [pack for packs in seed_packs for pack in packs]
    families: dict[str, list[list[list[TrialSpec]]]] = {}
    for packs in seed_packs:
        first = packs[0][0]
        alone = packing_obstacle(first) is not None
        key = first.trial_id if alone else _pack_key(first, configurations=True)
        families.setdefault(key, []).append(packs)
    return [pack for family in families.values() for pack in _across(family, configurations)]


def _across(family: list[list[list[TrialSpec]]], configurations: int) -> list[list[TrialSpec]]:
    """The seed packs of a family's configurations merged ``configurations`` at a time, round
    by round (every configuration's first seed pack, then every second one, ...)."""
    rounds = [packs[r] for r in range(max(map(len, family))) for packs in family if r < len(packs)]
    return [
        [trial for chunk in rounds[i : i + configurations] for trial in chunk]
        for i in range(0, len(rounds), configurations)
    ]


def _field_path(loc: tuple[Any, ...]) -> str:
    """Dotted field path; the dataset tag pydantic puts after ``data`` is left out."""
    parts = [str(part) for part in loc]
    if len(parts) > 1 and parts[0] == "data" and parts[1] in DATASETS:
        del parts[1]
    return ".".join(parts)


def non_finite_field(value: Any, path: str = "") -> str | None:
    """The dotted path of the first infinite or NaN number in ``value``, or None.

    Bounds such as ``gt=0`` let ``.inf`` through, and JSON (Ray's configs, the store's config
    column) turns it into null, so a non-finite number is refused by name before anything runs.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return path
    if isinstance(value, BaseModel):
        value = value.model_dump()
    if isinstance(value, list | tuple):
        value = dict(enumerate(value))
    if not isinstance(value, dict):
        return None
    for key, item in value.items():
        found = non_finite_field(item, f"{path}.{key}" if path else str(key))
        if found is not None:
            return found
    return None


def _require_finite(value: Any, path: str = "") -> None:
    field = non_finite_field(value, path)
    if field is not None:
        raise SpecError(_field_path(tuple(field.split("."))), "must be a finite number")


def _check_trial_count(spec: SweepSpec) -> None:
    count = spec.trial_count()
    if count > MAX_TRIALS:
        raise SpecError(
            "algorithms",
            f"the grid × seeds makes {count} trials, more than the {MAX_TRIALS} allowed; "
            "list fewer values or seeds",
        )


def _check_hyperparameters(spec: SweepSpec) -> None:
    """Validate every listed hyperparameter value against its algorithm's declared model,
    and refuse a configuration listed twice: both would be one trial id, trained twice."""
    seen: dict[str, str] = {}
    concrete = spec.configurations()
    for index, algorithm in enumerate(spec.algorithms):
        combos = [hp for a, hp in concrete if a is algorithm]
        for position, combo in enumerate(combos):
            here = f"algorithms.{index}" + (f" (grid item {position})" if position else "")
            key = json.dumps([algorithm.name, combo], sort_keys=True, default=str)
            if key in seen:
                raise SpecError(
                    f"algorithms.{index}",
                    f"{here} repeats the configuration of {seen[key]}: the same trial would "
                    "train twice; drop one of them",
                )
            seen[key] = here
            _validate_configuration(algorithm.name, combo, index)


def _validate_configuration(algorithm: str, combo: dict[str, Any], index: int) -> None:
    model = ALGORITHMS[algorithm].hyperparameters
    try:
        _require_finite(model(**combo), f"algorithms.{index}.params")
    except ValidationError as error:
        first = error.errors()[0]
        name = _field_path(first["loc"])
        known = ", ".join(model.model_fields)
        hint = f" (known: {known})" if first["type"] == "extra_forbidden" else ""
        raise SpecError(
            f"algorithms.{index}.params.{name}",
            f"{first['msg']}, got {first.get('input')!r}{hint}",
        ) from None


def _check_tuning(spec: SweepSpec) -> None:
    """A search space needs ``tuning``, and its bounds and choices must be values the
    algorithm takes (named before any configuration is drawn from it); ASHA compares Tune
    trials, so each must be exactly one configuration's seeds, trained over steps (its rungs)."""
    if spec.tuning is None:
        for index, algorithm in enumerate(spec.algorithms):
            searched = spaces_of(algorithm.params, f"algorithms.{index}.params")
            if searched:
                raise SpecError(
                    f"algorithms.{index}.params.{next(iter(searched))}",
                    "a search space needs a tuning block (tuning.budget and tuning.search)",
                )
        return
    for index, algorithm in enumerate(spec.algorithms):
        for probe in probe_configurations(algorithm.params, f"algorithms.{index}.params"):
            _validate_configuration(algorithm.name, probe, index)
    adaptive = spec.tuning.search == "optuna" or spec.tuning.scheduler is not None
    if adaptive and spec.resources.workers_per_trial > 1:
        raise SpecError(
            "resources.workers_per_trial",
            "optuna and ASHA read each trial's score from one process; set it to 1, or use "
            "tuning.search random without a scheduler",
        )
    asha = spec.tuning.scheduler.asha if spec.tuning.scheduler else None
    if asha is None:
        return
    steps = spec.training.budget.steps
    if steps is None:
        raise SpecError("tuning.scheduler.asha", "stops at step rungs; give training.budget.steps")
    if asha.grace_period >= steps:
        raise SpecError(
            "tuning.scheduler.asha.grace_period",
            f"{asha.grace_period} is not below training.budget.steps {steps}; nothing would stop",
        )
    if spec.configurations_per_trial > 1:
        raise SpecError(
            "configurations_per_trial",
            "ASHA stops one configuration at a time; set it to 1 with tuning.scheduler.asha",
        )
    seeds = spec.tuning.seeds_per_configuration
    if seeds > 1 and spec.seeds_per_trial < seeds:
        raise SpecError(
            "seeds_per_trial",
            f"ASHA judges a configuration on all its seeds at once; set seeds_per_trial to "
            f"tuning.seeds_per_configuration ({seeds}), or drop tuning.scheduler",
        )
    shared = spec.model_dump(
        mode="json", include={"data", "split", "model", "constraints", "training"}
    )
    for algorithm in spec.algorithms if seeds > 1 else []:
        probe = TrialSpec(
            sweep_id=spec.name, algorithm=algorithm.name, hyperparameters={}, seed=0, **shared
        )
        obstacle = packing_obstacle(probe)
        if obstacle is not None:
            raise SpecError(
                "tuning.scheduler.asha",
                f"{obstacle}; ASHA needs each configuration's seeds in one trial: set "
                "tuning.seeds_per_configuration to 1",
            )


def _check_data(spec: SweepSpec) -> None:
    """Data problems a file header cannot show (target values, empty groups), before any job."""
    from ctrain_dist.data.load import check_data

    check_data(spec.data, spec.split)


EMPTY_GROUP_WARNING_SHARE = 0.01
"""Warn when more than this share of minibatches leaves a compared group or cell empty."""


def check_sampling(spec: SweepSpec) -> list[str]:
    """Minibatch problems only the training split shows, before anything starts.

    Refuses a quota (``training.rows_per_group``, ``training.min_group_count``,
    ``training.constraint_rows_per_group``) the split cannot meet, with a :class:`SpecError`
    naming the field; returns warnings (one line each, naming the field) when more than
    ``EMPTY_GROUP_WARNING_SHARE`` of the minibatches the constraints read (the separate
    constraint draw, when there is one) would
    hold no row of a group, or (group, label) cell, that a gap constraint compares: those
    estimates skip the comparison (``constraints``), so it is estimated and enforced on fewer
    steps than the budget. Loads the data (what every trial then reuses), so the launchers'
    callers call it once, not ``parse_spec``.
    """
    from ctrain_dist.data.coverage import empty_probability, split_strata, worst_cell
    from ctrain_dist.data.load import load_data
    from ctrain_dist.data.stratified import constraint_quotas, group_sizes, sampler_quotas

    gaps = [c for c in spec.constraints if c.kind in GAP_CONSTRAINTS]
    training = spec.training
    separate = training.constraint_rows_per_group
    if not gaps and separate is None:
        return []
    data = load_data(spec.data, spec.split)
    sizes = group_sizes(data.splits["train"], data.groups, data.num_groups)
    quota_field = "rows_per_group" if training.rows_per_group is not None else "min_group_count"
    try:
        quotas = sampler_quotas(
            sizes, training.batch_size, training.min_group_count, training.rows_per_group
        )
    except ValueError as error:
        raise SpecError(f"training.{quota_field}", str(error)) from None
    if separate is not None:
        try:
            quotas, quota_field = constraint_quotas(sizes, separate), "constraint_rows_per_group"
        except ValueError as error:
            raise SpecError("training.constraint_rows_per_group", str(error)) from None
    if not gaps:
        return []
    by_label = any(c.kind == "equalized_odds" for c in gaps)
    drawn = training.batch_size if quotas is None else sum(quotas)
    strata = split_strata(data, "train", drawn, quotas, by_label)
    share = empty_probability(strata)
    if share <= EMPTY_GROUP_WARNING_SHARE:
        return []
    cell, cell_share = worst_cell(strata)
    name = data.group_names[cell.group]
    what = name if cell.label is None else f"{name} with label {cell.label}"
    field = "batch_size" if quotas is None else quota_field
    fix = (
        "set training.constraint_rows_per_group (a separate draw of that many rows of every "
        "group for the constraints, as the reference benchmark did), training.rows_per_group "
        f"(group-balanced batches of batch_size / {data.num_groups} rows per group) or raise "
        "training.batch_size"
        if quotas is None
        else f"raise training.{quota_field}"
        + ("" if separate is not None else " and training.batch_size")
    )
    return [
        f"training.{field}: {share:.1%} of minibatches would leave a compared group or cell "
        f"empty (most often {what}: {cell_share:.1%}, {cell.rows} of "
        f"{sum(sizes)} training rows), and those estimates skip its comparisons; {fix}"
    ]


def require_batch_fits(spec: SweepSpec, training_rows: int) -> None:
    """Refuse a batch larger than the training split (every trial's sampler would raise)."""
    if spec.training.batch_size > training_rows:
        raise SpecError(
            "training.batch_size",
            f"{spec.training.batch_size} is larger than the training split's {training_rows} "
            "rows; lower it, or lower split.val and split.test",
        )


def _check_batch_fits(spec: SweepSpec) -> None:
    """The batch against the training split of the embedded Adult data, loading it only when
    the batch is near the split's size (each of its 4 label × group cells rounds by at most
    one row). Cached datasets are checked by the launchers once their entry is built."""
    if not isinstance(spec.data, AdultDataSpec):
        return
    least = ADULT_ROWS * (1 - spec.split.val - spec.split.test) - 4
    if spec.data.path is None and spec.training.batch_size <= least:
        return
    from ctrain_dist.data.load import load_data

    require_batch_fits(spec, load_data(spec.data, spec.split).splits["train"].numel())


def require_device(spec: SweepSpec, cuda_devices: int) -> None:
    """Refuse ``training.device: cuda`` where no CUDA device is visible (checked where the
    trials run, not in :func:`parse_spec`: a login node may lack the cluster's GPUs)."""
    if spec.training.device == "cuda" and cuda_devices == 0:
        raise SpecError(
            "training.device",
            "cuda, but this machine has no CUDA device; set it to auto or cpu",
        )


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
    knob = "seeds_per_trial" if spec.seeds_per_trial > 1 else "configurations_per_trial"
    count = getattr(spec, knob)
    if count == 1:
        return
    what = "seeds" if knob == "seeds_per_trial" else "configurations"
    if workers > 1:
        raise SpecError(
            field,
            f"packed {what} ({knob} {count}) train in one process; set it to 1 or {knob} to 1",
        )
    if spec.training.budget.steps is None:
        raise SpecError(
            knob,
            f"packed {what} share one clock, so each would train fewer steps than alone under "
            f"budget.seconds; give budget.steps or set {knob} to 1",
        )


def compile_warnings(spec: SweepSpec) -> list[str]:
    """One line for each algorithm that ``training.compile`` speeds up less than the others.

    An algorithm that solves subproblems on the host (``batchable = False``: Stochastic
    Ghost's LP and QPs, on a multilevel sample whose size varies) keeps those solves on the
    host and draws its minibatches between graphs (``trial/compiled.py``); a warning, not a
    refusal, so that one sweep can still compare it with the compiled methods.
    """
    if not spec.training.compile:
        return []
    return [
        f"algorithms.{index}.name: {algorithm.name} solves subproblems on the host; "
        "training.compile compiles its oracle, its solves stay on the host"
        for index, algorithm in enumerate(spec.algorithms)
        if not ALGORITHMS[algorithm.name].batchable
    ]


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
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise SpecError(field, f"{path} is not valid YAML: {error}".splitlines()[0]) from None
    if raw is None:
        raise SpecError(field, f"{path} is empty; write a spec (sweeps/quickstart.yaml shows one)")
    if not isinstance(raw, dict):
        raise SpecError(field, f"{path} must hold a mapping at the top level")
    return raw


def parse_spec(raw: dict[str, Any]) -> SweepSpec:
    """A validated spec from a raw mapping, or a :class:`SpecError` naming the first bad field."""
    _require_finite(raw)
    refuse_per_algorithm_budgets(raw)
    spec = validate_model(
        SweepSpec, raw, _field_path, "check its spelling against the spec reference in README.md"
    )
    _require_finite(spec)
    _check_tuning(spec)
    _check_trial_count(spec)
    _check_hyperparameters(spec)
    require_data_parallel(spec, spec.resources.workers_per_trial, "resources.workers_per_trial")
    require_single_process_packs(
        spec, spec.resources.workers_per_trial, "resources.workers_per_trial"
    )
    _check_data(spec)
    _check_batch_fits(spec)
    return spec


def load_spec(path: Path | str, overrides: list[str] | None = None) -> SweepSpec:
    """Read a YAML spec, apply overrides and validate it whole."""
    raw = read_yaml_mapping(Path(path), "SPEC")
    return parse_spec(apply_overrides(raw, overrides or []))
