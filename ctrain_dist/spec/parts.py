"""The parts of a sweep spec: model, constraints, training, algorithms, resources, analysis.

Why apart from the sweep itself (``sweep.py``): each part validates what it alone can see (a
bound, a name, an option's type), so a trial (``trial.py``) is built from the very same parts,
and the cross-part checks (``sweep.py``, ``parse.py``) read validated parts only.
"""

from __future__ import annotations

import itertools
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from ctrain_dist.algorithms import ALGORITHMS, RENAMED
from ctrain_dist.constraints import BUILTIN_SPECIFIC_CONSTRAINTS, CONSTRAINTS
from ctrain_dist.data.config import StrictModel
from ctrain_dist.plugins import resolve


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
        "dual_bound (alm, ssl_alm, nupi, ialm) or max_multiplier (classical_pbm, spbm)",
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
