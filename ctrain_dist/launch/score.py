"""A pack's running tuning score, from the rows its trial sends: what Tune's searcher and
scheduler read in every report.

What each ``tune.report`` of a Tune trial carries beside its rows: :data:`SCORE`
(``tuning.configuration_score`` over the pack's seeds so far: selection's rule on validation;
Tune requires a searcher's or scheduler's metric in every result); at an evaluation point
:data:`STEP_KEY` (the training step ASHA's rungs count); at a seed's end :data:`FINALS` (each
ended seed's final validation objective and violation, from which ``launch.search`` scores a
configuration whole, even one split over several packs). Ends carry no step on purpose: ASHA
skips a result without its time attribute, so it never stops a pack between its seeds' final
rows (which would lose the rows still to come).
"""

from __future__ import annotations

import json
import math
from typing import Any

from ctrain_dist.store.schema import (
    MAX_VIOLATION,
    OBJECTIVE,
    SPLIT,
    STATUS,
    STATUS_DIVERGED,
    STATUS_FINISHED,
    STEP,
    TRIAL_ID,
    VAL,
    final_column,
)
from ctrain_dist.tuning import configuration_score, finite_or_inf

SCORE = "ctrain_score"
STEP_KEY = "ctrain_step"
FINALS = "ctrain_finals"


class PackScore:
    """Per seed of a pack, its latest validation (objective, violation); the pack's score.

    A diverged seed is +inf on both from then on; a seed whose attempt failed is forgotten
    (its retry reports again); a finished seed keeps its final values.
    """

    def __init__(self, tolerance: float) -> None:
        self.tolerance = tolerance
        self.latest: dict[str, tuple[float, float]] = {}
        self.ended: dict[str, tuple[float, float]] = {}
        self.step = 0

    def evals(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """The report fields after one evaluation point's rows."""
        for row in rows:
            if row.get(SPLIT) == VAL:
                objective, violation = finite_or_inf([row.get(OBJECTIVE), row.get(MAX_VIOLATION)])
                self.latest[row[TRIAL_ID]] = (objective, violation)
                self.step = max(self.step, int(row.get(STEP) or 0))
        return self.fields()

    def finish(self, row: dict[str, Any]) -> dict[str, Any]:
        """The report fields after one seed's ``trials`` row: the ended seeds' values."""
        trial_id, status = row[TRIAL_ID], row[STATUS]
        if status == STATUS_FINISHED:
            final = finite_or_inf(
                [row.get(final_column(VAL, OBJECTIVE)), row.get(final_column(VAL, MAX_VIOLATION))]
            )
            self.ended[trial_id] = self.latest[trial_id] = (final[0], final[1])
        elif status == STATUS_DIVERGED:
            self.ended[trial_id] = self.latest[trial_id] = (math.inf, math.inf)
        else:
            self.latest.pop(trial_id, None)
        return {SCORE: self.fields()[SCORE], FINALS: json.dumps(list(self.ended.values()))}

    def fields(self) -> dict[str, Any]:
        values = list(self.latest.values())
        score = configuration_score([v[0] for v in values], [v[1] for v in values], self.tolerance)
        return {SCORE: score, STEP_KEY: self.step}
