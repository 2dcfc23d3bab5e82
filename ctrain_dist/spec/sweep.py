"""The sweep spec: data × constraints × algorithms × hyperparameters × seeds, and its trials.

Why the cross-part rules live on the model: an equality constraint needs an algorithm with
free-sign multipliers, a per-constraint dual step one that has a dual step; pydantic reports
them with the field's path like any other validation error.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from ctrain_dist.algorithms import ALGORITHMS
from ctrain_dist.data.config import AdultDataSpec, DataSpec, SplitSpec, StrictModel
from ctrain_dist.spec.packing import pack_trials
from ctrain_dist.spec.parts import (
    AlgorithmSpec,
    AnalysisSpec,
    ConstraintSpec,
    ModelSpec,
    ResourcesSpec,
    TrainingSpec,
)
from ctrain_dist.spec.trial import TrialSpec
from ctrain_dist.tuning import (
    TuningSpec,
    tuned_configurations,
)

MAX_SEEDS = 10_000
"""More seeds than this is a typo (``seeds: 1000000000`` would build a list of 1e9 seeds)."""


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
        ``configurations_per_trial`` configurations (see :func:`packing.pack_trials`)."""
        return pack_trials(self.trials(), self.seeds_per_trial, self.configurations_per_trial)
