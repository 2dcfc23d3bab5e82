"""One trial: what the trainer receives, and what its ``trial_id`` hashes.

Why its own module: the trial id is what makes "nothing run twice" hold across sessions and
machines, so what goes into it (and what is left out, ``_HOW_NOT_WHAT``) sits in one place.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ctrain_dist.data.config import DataSpec, SplitSpec, StrictModel
from ctrain_dist.spec.parts import (
    ConstraintSpec,
    ModelSpec,
    TrainingSpec,
)

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
