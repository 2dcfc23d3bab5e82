"""A spec from YAML and ``--set`` overrides, validated whole, or one line naming the field.

Why one entry point (:func:`parse_spec`) runs every check that needs only the spec, in a fixed
order (finite numbers, tuning, trial count, each configuration, data, batch): the first
problem found is the one reported, so the same bad spec always gets the same one line, and
nothing downstream sees a spec that skipped a check.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import (
    BaseModel,
    ValidationError,
)

from ctrain_dist.algorithms import ALGORITHMS, Hyperparameters
from ctrain_dist.data.config import DATASETS, AdultDataSpec
from ctrain_dist.errors import SpecError
from ctrain_dist.spec.checks import (
    require_batch_fits,
    require_data_parallel,
    require_single_process_packs,
)
from ctrain_dist.spec.packing import packing_obstacle
from ctrain_dist.spec.sweep import SweepSpec
from ctrain_dist.spec.trial import TrialSpec
from ctrain_dist.tuning import (
    probe_configurations,
    refuse_per_algorithm_budgets,
    spaces_of,
)

MAX_TRIALS = 100_000
"""More trials than this no store or scheduler of this package is sized for."""
ADULT_ROWS = 48_842
"""Rows of the embedded UCI Adult copy (``data/adult.py``), for a check that needs no load."""
ModelT = TypeVar("ModelT", bound=BaseModel)


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
    bounds = [(i, c.dual_bound) for i, c in enumerate(spec.constraints) if c.dual_bound]
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
            hp = _validate_configuration(algorithm.name, combo, index)
            _check_dual_bound(algorithm.name, hp, bounds)


def _check_dual_bound(algorithm: str, hp: Hyperparameters, bounds: list[tuple[int, float]]) -> None:
    """A constraint's own ``dual_bound`` caps its multipliers, which some methods start above
    0 (the penalty-barrier methods' stay positive): it must not lie below where they start."""
    cls = ALGORITHMS[algorithm]
    if "dual_bound" not in cls.dual_overrides:
        return
    start = cls.initial_multiplier(hp)
    for i, bound in bounds:
        if bound < start:
            raise SpecError(
                f"constraints.{i}.dual_bound",
                f"{bound:g} lies below {algorithm}'s initial multiplier {start:g}; "
                "raise it, or start the multipliers lower (init_multiplier)",
            )


def _validate_configuration(algorithm: str, combo: dict[str, Any], index: int) -> Hyperparameters:
    model = ALGORITHMS[algorithm].hyperparameters
    try:
        hp = model(**combo)
    except ValidationError as error:
        first = error.errors()[0]
        name = _field_path(first["loc"])
        known = ", ".join(model.model_fields)
        hint = f" (known: {known})" if first["type"] == "extra_forbidden" else ""
        raise SpecError(
            f"algorithms.{index}.params.{name}",
            f"{first['msg']}, got {first.get('input')!r}{hint}",
        ) from None
    _require_finite(hp, f"algorithms.{index}.params")
    return hp


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
