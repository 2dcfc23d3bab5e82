"""Ray Tune's real ASHAScheduler on the feasibility-aware score, driven with synthetic results.

The property (issue 18): ASHA never stops a configuration that is feasible and better than one
it keeps. ASHA is asynchronous: each decision compares a configuration with what has reached
the rung before it, so the property is one of decisions made on the same record: given the
same history, a configuration feasible and better at every rung than another survives at
least as long. A naive metric (the objective alone) breaks it; the control shows that the
check can fail.
"""

from __future__ import annotations

import copy
import random

import pytest
from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from ctrain_dist.launch.score import SCORE, STEP_KEY
from ctrain_dist.tuning import feasibility_score

TOLERANCE = 0.0
GRACE, MAX_T, EVERY = 20, 100, 10
Sequence = list[tuple[float, float]]  # (objective, violation) at steps EVERY, 2·EVERY, ...


def scheduler() -> ASHAScheduler:
    return ASHAScheduler(
        time_attr=STEP_KEY,
        metric=SCORE,
        mode="min",
        max_t=MAX_T,
        grace_period=GRACE,
        reduction_factor=2,
    )


def feasibility_aware(objective: float, violation: float) -> float:
    return feasibility_score(objective, violation, TOLERANCE)


def objective_only(objective: float, violation: float) -> float:
    return objective


def run(asha: ASHAScheduler, sequence: Sequence, metric=feasibility_aware) -> int:
    """Feed one configuration's results; the step at which ASHA stopped it (MAX_T: never)."""
    trial = Trial("__fake", stub=True)
    asha.on_trial_add(None, trial)
    for index, (objective, violation) in enumerate(sequence):
        step = (index + 1) * EVERY
        result = {STEP_KEY: step, SCORE: metric(objective, violation)}
        if asha.on_trial_result(None, trial, result) == TrialScheduler.STOP:
            return step
    asha.on_trial_complete(None, trial, result)
    return MAX_T


def random_sequence(rng: random.Random) -> Sequence:
    objective, violation = rng.uniform(0.4, 0.9), rng.uniform(0.0, 0.1)
    sequence = []
    for _ in range(MAX_T // EVERY):
        objective = max(0.05, objective - rng.uniform(-0.02, 0.05))
        violation = max(0.0, violation - rng.uniform(-0.02, 0.03))
        sequence.append((objective, 0.0 if violation < 0.02 else violation))
    return sequence


def better_and_feasible(rng: random.Random, than: Sequence) -> Sequence:
    """A sequence feasible at every step and, by selection's rule, better than ``than`` there:
    when ``than`` is feasible, a lower objective; else any objective at all."""
    return [
        (rng.uniform(0.01, objective) if violation <= TOLERANCE else rng.uniform(0.0, 3.0), 0.0)
        for objective, violation in than
    ]


def history(rng: random.Random, metric=feasibility_aware) -> ASHAScheduler:
    """A scheduler that has already seen a dozen configurations, in a random order."""
    asha = scheduler()
    for _ in range(12):
        run(asha, random_sequence(rng), metric)
    return asha


def test_asha_never_stops_a_feasible_better_configuration_that_it_keeps_a_worse_one_against():
    rng = random.Random(18)
    judged = 0
    for _ in range(150):
        asha = history(rng)
        kept = random_sequence(rng)
        better = better_and_feasible(rng, kept)
        stopped_kept = run(copy.deepcopy(asha), kept)
        stopped_better = run(copy.deepcopy(asha), better)
        assert stopped_better >= stopped_kept, (kept, better)
        judged += stopped_kept < MAX_T
    assert judged > 15  # ASHA did stop the worse one often: the comparison was exercised


def test_control_with_the_objective_alone_asha_stops_a_feasible_one_and_keeps_an_infeasible():
    """The check above can fail: ranked by objective only, an infeasible configuration with a
    lower objective is kept while a feasible, better one is stopped."""
    rng = random.Random(18)
    broken = 0
    for _ in range(50):
        asha = history(rng, objective_only)
        infeasible = [(0.2, 0.05)] * (MAX_T // EVERY)
        feasible = [(0.8, 0.0)] * (MAX_T // EVERY)
        kept = run(copy.deepcopy(asha), infeasible, objective_only)
        stopped = run(copy.deepcopy(asha), feasible, objective_only)
        broken += stopped < kept
        assert run(copy.deepcopy(asha), feasible) >= run(copy.deepcopy(asha), infeasible)
    assert broken > 25


@pytest.mark.parametrize("feasible_from", [GRACE, GRACE + EVERY])
def test_an_infeasible_configuration_is_not_judged_before_the_grace_period(feasible_from):
    """Infeasible early but improving: it trains untouched until ``grace_period``; from then
    on ASHA judges it as selection would if training ended there."""
    asha = scheduler()
    for _ in range(12):
        run(asha, [(0.5, 0.0)] * (MAX_T // EVERY))  # a dozen feasible configurations
    late = [
        (0.3, 0.5 if (index + 1) * EVERY < feasible_from else 0.0)
        for index in range(MAX_T // EVERY)
    ]
    stopped = run(copy.deepcopy(asha), late)
    if feasible_from <= GRACE:
        assert stopped == MAX_T  # feasible when first judged, and better: never stopped
    else:
        assert stopped == GRACE  # still infeasible at the first rung: behind every feasible
