"""Fair hyperparameter tuning in the spec: search spaces, the ``tuning:`` block, and the score.

Why equal budgets: an optimiser compared after more tuning looks better for that reason alone
(Sivaprasad et al. 2020; Dodge et al. 2019), so every algorithm gets the same number of
configurations (``tuning.budget``), each trained on ``seeds_per_configuration`` seeds.

A parameter value in ``algorithms.<i>.params`` is fixed (``lr: 0.05``), a grid (a list), or a
search space, a one-key mapping: ``{loguniform: [lo, hi]}``, ``{uniform: [lo, hi]}``,
``{randint: [lo, hi]}`` (``lo ≤ n < hi``) or ``{choice: [a, b, ...]}``. A configuration is
an algorithm and its concrete hyperparameters; it is what a trial id hashes beside the seed.

Resume without a searcher's state: ``grid`` and ``random`` configurations are fixed by the
spec and ``tuning.seed`` (:func:`draw_configurations` draws them up front, the same on every
run), so they are ordinary trials that the planner skips once the store holds them. ``optuna``
is adaptive: ``launch.search`` rebuilds its history from the store's finished configurations.

The score (:func:`feasibility_score`) is selection's rule (``analysis.stats.selection``) as
one number that a searcher minimises and ASHA compares: feasible (median validation violation
≤ ``analysis.feasibility_tolerance``) before infeasible, feasible ones by median validation
objective, infeasible ones by median violation, a diverged seed worst on both.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, model_validator

from ctrain_dist.data.config import StrictModel
from ctrain_dist.errors import SpecError

SPACE_KINDS = ("loguniform", "uniform", "randint", "choice")
SIGNIFICANT_DIGITS = 6
"""Drawn floats are rounded to what a configuration label prints (``:g``), so two configurations
never share a label and a stored value reads back exactly."""
ENUMERATE_UP_TO = 100_000
"""A finite space up to this size is enumerated and sampled without replacement."""


@dataclass(frozen=True)
class Space:
    """One hyperparameter's search space; ``values`` are the choices or ``(low, high)``."""

    kind: str
    values: tuple[Any, ...]

    @property
    def size(self) -> float:
        """How many distinct values it holds (``inf`` for a continuous range)."""
        if self.kind == "choice":
            return len(self.values)
        if self.kind == "randint":
            return self.values[1] - self.values[0]
        return math.inf

    def enumerate(self) -> list[Any]:
        """Every value of a finite space, in order."""
        if self.kind == "choice":
            return list(self.values)
        if self.kind == "randint":
            return list(range(*self.values))
        raise ValueError(f"a {self.kind} space has no finite list of values")

    def draw(self, rng: random.Random) -> Any:
        low, high = self.values[0], self.values[-1]
        if self.kind == "choice":
            return rng.choice(self.values)
        if self.kind == "randint":
            return rng.randrange(low, high)
        if self.kind == "uniform":
            return round_drawn(rng.uniform(low, high), low, high)
        return round_drawn(math.exp(rng.uniform(math.log(low), math.log(high))), low, high)

    def contains(self, value: Any) -> bool:
        if self.kind == "choice":
            return value in self.values
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if self.kind == "randint":
            return isinstance(value, int) and self.values[0] <= value < self.values[1]
        return self.values[0] <= value <= self.values[1]

    def probes(self) -> list[Any]:
        """The values to validate against the algorithm's hyperparameter model: a range's
        bounds (both are reachable), every choice."""
        if self.kind == "randint":
            return [self.values[0], self.values[1] - 1]
        return list(self.values)


def round_drawn(value: float, low: float, high: float) -> float:
    """``value`` to :data:`SIGNIFICANT_DIGITS`, kept inside ``[low, high]``."""
    return min(max(float(f"{value:.{SIGNIFICANT_DIGITS}g}"), low), high)


def parse_space(value: Any, field: str) -> Space | None:
    """The space ``value`` describes, None for a fixed value or a grid; a malformed space is a
    :class:`SpecError` naming ``field``."""
    if not (isinstance(value, dict) and len(value) == 1 and next(iter(value)) in SPACE_KINDS):
        if isinstance(value, dict) and set(value) & set(SPACE_KINDS):
            raise SpecError(field, f"a search space is one key of {', '.join(SPACE_KINDS)}")
        return None
    ((kind, arguments),) = value.items()
    where = f"{field}.{kind}"
    if not isinstance(arguments, list) or not arguments:
        raise SpecError(where, "give a list: [low, high], or the choices")
    if kind == "choice":
        if any(isinstance(item, dict | list) for item in arguments):
            raise SpecError(where, "choices are plain values (numbers, strings, booleans)")
        if len({json.dumps(item) for item in arguments}) != len(arguments):
            raise SpecError(where, "a choice is listed twice; drop the repeat")
        if len({_kind_of(item) for item in arguments}) > 1:
            raise SpecError(where, "choices must be of one type")
        return Space(kind, tuple(arguments))
    if len(arguments) != 2:
        raise SpecError(where, f"give [low, high], got {len(arguments)} values")
    low, high = arguments
    number = int if kind == "randint" else int | float
    if any(isinstance(bound, bool) or not isinstance(bound, number) for bound in arguments):
        what = "integers" if kind == "randint" else "numbers"
        raise SpecError(where, f"low and high must be {what}, got {arguments!r}")
    if not all(math.isfinite(bound) for bound in arguments):
        raise SpecError(where, "low and high must be finite numbers")
    if not low < high:
        raise SpecError(where, f"low {low} must be below high {high}")
    if kind == "loguniform" and low <= 0:
        raise SpecError(where, f"a log scale needs low > 0, got {low}")
    if kind == "randint":
        return Space(kind, (low, high))
    return Space(kind, (float(low), float(high)))


def _kind_of(value: Any) -> str:
    """A choice's type as a spec reads it: ints and floats are both numbers, a bool is not."""
    if isinstance(value, bool):
        return "bool"
    return "number" if isinstance(value, int | float) else type(value).__name__


def spaces_of(params: dict[str, Any], field: str) -> dict[str, Space]:
    """The searched parameters of ``params`` (``field`` is its dotted path)."""
    found = {name: parse_space(value, f"{field}.{name}") for name, value in params.items()}
    return {name: space for name, space in found.items() if space is not None}


class TuningBudget(StrictModel):
    """Per algorithm, the same for every algorithm: configurations, or total training."""

    configurations: int | None = Field(None, gt=0, description="configurations per algorithm")
    steps: int | None = Field(
        None, gt=0, description="training steps per algorithm, all configurations and seeds"
    )
    seconds: float | None = Field(
        None, gt=0, description="training seconds per algorithm, all configurations and seeds"
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> TuningBudget:
        given = [v for v in (self.configurations, self.steps, self.seconds) if v is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of configurations, steps or seconds")
        return self


class AshaSpec(StrictModel):
    """Ray Tune's ASHAScheduler, over training steps (see ``launch.search``)."""

    grace_period: int = Field(
        gt=0, description="steps every configuration trains before it can be stopped"
    )
    reduction_factor: float = Field(3.0, gt=1, description="keep 1/η of a rung")


class SchedulerSpec(StrictModel):
    asha: AshaSpec


class TuningSpec(StrictModel):
    """How each algorithm is tuned on validation, then confirmed on fresh seeds."""

    budget: TuningBudget
    search: Literal["grid", "random", "optuna"] = Field(
        "random", description="grid (lists and choices), random (drawn up front), optuna (TPE)"
    )
    seed: int = Field(0, ge=0, description="the search's seed (draws, TPE sampler)")
    seeds_per_configuration: int = Field(1, gt=0, description="seeds of each configuration")
    confirm_seeds: int = Field(10, gt=0, description="fresh seeds of the selected configuration")
    scheduler: SchedulerSpec | None = None

    def configurations(self, step_budget: int | None, seconds_budget: float | None) -> int:
        """Configurations per algorithm, from the budget and one trial's training budget."""
        budget = self.budget
        if budget.configurations is not None:
            return budget.configurations
        per_configuration, total, name = (
            (step_budget, budget.steps, "steps")
            if budget.steps is not None
            else (seconds_budget, budget.seconds, "seconds")
        )
        if per_configuration is None:
            raise SpecError(
                f"tuning.budget.{name}",
                f"counts training {name}, but training.budget is not in {name}; give "
                f"training.budget.{name} or tuning.budget.configurations",
            )
        per_configuration *= self.seeds_per_configuration
        count = total / per_configuration
        if count < 1 or not math.isclose(count, round(count)):
            raise SpecError(
                f"tuning.budget.{name}",
                f"{total:g} is not a whole number of configurations of {per_configuration:g} "
                f"{name} (training.budget × seeds_per_configuration); give a multiple",
            )
        return round(count)


def configuration_key(algorithm: str, hyperparameters: dict[str, Any]) -> str:
    """What makes two configurations the same: algorithm and concrete hyperparameters."""
    return json.dumps([algorithm, hyperparameters], sort_keys=True, default=str)


def space_size(spaces: dict[str, Space]) -> float:
    """Distinct configurations the searched parameters can make."""
    return math.prod(space.size for space in spaces.values())


def tuned_configurations(
    tuning: TuningSpec,
    entries: Sequence[tuple[str, dict[str, Any]]],
    step_budget: int | None,
    seconds_budget: float | None,
) -> list[list[dict[str, Any]]]:
    """Per ``algorithms`` entry (name, params), the configurations the search fixes up front:
    a ``grid``'s every combination, ``random``'s draws, none for ``optuna``.

    Refuses, naming the field, every way one algorithm could get more tuning than another:
    grids of different sizes, a space too small for the budget (it would repeat a
    configuration or run fewer), an algorithm listed twice under a searched space.
    """
    count = tuning.configurations(step_budget, seconds_budget)
    per_algorithm: dict[str, list[int]] = {}
    found: list[list[dict[str, Any]]] = []
    for index, (name, params) in enumerate(entries):
        field = f"algorithms.{index}.params"
        spaces = spaces_of(params, field)
        per_algorithm.setdefault(name, []).append(index)
        if tuning.search == "grid":
            continuous = [k for k, space in spaces.items() if space.size == math.inf]
            if continuous:
                raise SpecError(
                    f"{field}.{continuous[0]}",
                    "a continuous range has no grid; use tuning.search random or optuna, or "
                    "list values",
                )
            found.append(grid_configurations(params, spaces))
            continue
        if len(per_algorithm[name]) > 1:
            raise SpecError(
                f"algorithms.{index}.name",
                f"{name} is listed twice (also algorithms.{per_algorithm[name][0]}); under "
                f"tuning.search {tuning.search} each algorithm has one space and one budget",
            )
        grids = [k for k, v in params.items() if isinstance(v, list)]
        if grids:
            raise SpecError(
                f"{field}.{grids[0]}",
                f"a list is a grid; under tuning.search {tuning.search} write {{choice: [...]}}",
            )
        size = space_size(spaces)
        if size < count:
            raise SpecError(
                field,
                f"its space holds {size:g} distinct configurations, fewer than the "
                f"{count} of tuning.budget; widen it or lower the budget",
            )
        if tuning.search == "random":
            found.append(draw_configurations(name, params, spaces, count, tuning.seed))
        else:
            found.append([])
    if tuning.search == "grid":
        sizes = {name: sum(len(found[i]) for i in where) for name, where in per_algorithm.items()}
        unequal = {name: n for name, n in sizes.items() if n != count}
        if unequal:
            name, n = next(iter(unequal.items()))
            raise SpecError(
                f"algorithms.{per_algorithm[name][0]}.params",
                f"{name}'s grid has {n} configurations, but tuning.budget gives every "
                f"algorithm {count} (budgets: {sizes}); equal budgets keep the comparison fair",
            )
    return found


def probe_configurations(params: dict[str, Any], field: str) -> list[dict[str, Any]]:
    """Configurations that put each space's every probe value (``Space.probes``) and each
    listed grid value in front of the algorithm's hyperparameter model, the others at their
    first (``field``: the dotted path of ``params``)."""
    spaces = spaces_of(params, field)
    values = {
        name: spaces[name].probes() if name in spaces else (v if isinstance(v, list) else [v])
        for name, v in params.items()
    }
    base = {name: listed[0] for name, listed in values.items() if listed}
    probes = [base]
    for name, listed in values.items():
        probes.extend({**base, name: value} for value in listed[1:])
    return probes


PER_ALGORITHM_BUDGET_KEYS = ("budget", "configurations", "tuning", "seeds")


def refuse_per_algorithm_budgets(raw: dict[str, Any]) -> None:
    """A budget or seeds inside an algorithm's entry would tune it more than the others:
    refused by name (the strict models would only call the key unknown). ``seeds`` beside
    ``tuning`` too: under tuning the seeds are ``tuning.seeds_per_configuration``."""
    for index, entry in enumerate(raw.get("algorithms") or []):
        if not isinstance(entry, dict):
            continue
        for key in PER_ALGORITHM_BUDGET_KEYS:
            if key in entry:
                raise SpecError(
                    f"algorithms.{index}.{key}",
                    "budgets and seeds are the same for every algorithm (equal budgets keep "
                    "the comparison fair); set tuning.budget and "
                    "tuning.seeds_per_configuration",
                )
    if isinstance(raw.get("tuning"), dict) and "seeds" in raw:
        raise SpecError(
            "seeds",
            "under tuning the seeds are tuning.seeds_per_configuration (tuning) and "
            "tuning.confirm_seeds (confirmation); drop seeds",
        )


def draw_configurations(
    algorithm: str, params: dict[str, Any], spaces: dict[str, Space], count: int, seed: int
) -> list[dict[str, Any]]:
    """``count`` distinct configurations of ``params``, the same for the same arguments.

    The generator is seeded by ``seed`` and the algorithm's name (not its position), so adding
    an algorithm to the spec changes no other algorithm's draws, and a resumed sweep draws the
    configurations it drew before: they are ordinary trials with the same ids.
    """
    rng = random.Random(f"ctrain-tuning:{seed}:{algorithm}")
    names = sorted(spaces)
    fixed = {name: value for name, value in params.items() if name not in spaces}
    if space_size(spaces) <= ENUMERATE_UP_TO:
        every = list(itertools.product(*(spaces[name].enumerate() for name in names)))
        combos = rng.sample(every, count)
        return [{**fixed, **dict(zip(names, combo, strict=True))} for combo in combos]
    drawn: dict[str, dict[str, Any]] = {}
    while len(drawn) < count:
        config = {**fixed, **{name: spaces[name].draw(rng) for name in names}}
        drawn.setdefault(json.dumps(config, sort_keys=True), config)
    return list(drawn.values())


def grid_configurations(params: dict[str, Any], spaces: dict[str, Space]) -> list[dict[str, Any]]:
    """Every combination of lists and finite spaces, in a stable order."""
    keys = sorted(params)
    values = [
        spaces[k].enumerate() if k in spaces else (v if isinstance(v, list) else [v])
        for k, v in ((k, params[k]) for k in keys)
    ]
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*values)]


WORST_SCORE = 1.0
"""A diverged or unmeasured configuration: behind every infeasible one."""


def feasibility_score(objective: float, violation: float, tolerance: float) -> float:
    """Selection's order as one number to minimise; lower is better.

    Feasible (``violation ≤ tolerance``): ``atan(objective)/π − 1/2`` in (−1, 0); infeasible:
    ``1/2 + atan(violation)/π`` in (1/2, 1); diverged or missing (NaN, ±inf): 1. Each branch is
    strictly increasing, and the branches' ranges do not overlap, so every feasible value ranks
    before every infeasible one, whatever its objective: what a scheduler comparing this one
    number must respect for its decisions to agree with the selection that follows.
    """
    if not (math.isfinite(objective) and math.isfinite(violation)):
        return WORST_SCORE
    if violation <= tolerance:
        return math.atan(objective) / math.pi - 0.5
    return 0.5 + math.atan(violation) / math.pi


def configuration_score(
    objectives: Sequence[float], violations: Sequence[float], tolerance: float
) -> float:
    """The score of one configuration over its seeds: of the medians, as selection takes them
    (a diverged seed's values are +inf, so half the seeds diverging makes it worst)."""
    if not objectives:
        return WORST_SCORE
    return feasibility_score(
        statistics.median(objectives), statistics.median(violations), tolerance
    )


def finite_or_inf(values: Iterable[float | None]) -> list[float]:
    """Missing values as +inf, the worst (a seed that left no measurement)."""
    return [math.inf if v is None or math.isnan(v) else float(v) for v in values]
