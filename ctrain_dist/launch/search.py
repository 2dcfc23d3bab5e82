"""A tuning study on Ray Tune: equal budgets, Optuna's TPE through Ray's ``OptunaSearch``, ASHA.

``grid`` and ``random`` need no searcher: their configurations are fixed up front
(``tuning.py``), so they run as the plain sweep does, exactly once, resumed from the store,
with ASHA when ``tuning.scheduler`` asks for it. ``optuna`` chooses configurations while it
runs; :class:`EqualBudgetSearch` keeps one ``OptunaSearch`` per algorithm and serves each
exactly ``budget`` configurations, one Tune trial per pack of a configuration's seeds.

Resume, with the store as the source of truth (:func:`history`): under the driver lock, every
configuration of the spec that the store holds a row of counts against its algorithm's
budget. One with every seed ended is told to its ``OptunaSearch`` (``points_to_evaluate`` with
``evaluated_rewards``); one with seeds still to run (the driver died mid-configuration) has
those seeds run first, and is told on the next resume. The searchers then ask for
``budget − started`` new configurations only, and a suggestion equal to a configuration
already started (TPE may repeat one, a small space will) is told its known score and asked
again, so no configuration is ever trained twice. A configuration that was in flight without
any row when the driver died is lost and replaced by a new suggestion: the total stays the
budget. ``seeds_per_configuration`` seeds of one configuration pack together as any sweep's.

ASHA (Ray's ``ASHAScheduler``) stops packs at step rungs on ``launch.score.SCORE``, selection's
rule as one number: every feasible configuration ranks above every infeasible one, infeasible
ones by violation. So a configuration that is infeasible at a rung is stopped whenever enough
feasible ones are ahead of it, even if its violation is falling: the same verdict selection
would give if training ended there. What protects the late-feasible is the grace period: no
configuration is judged before ``grace_period`` steps, time for multipliers to act, and it is
the knob to raise when constrained methods need long to become feasible. Its stopped seeds get
``stopped`` rows (terminal: never run again, never selected, since they hold no final
metrics). ASHA is asynchronous: a rung's cutoff is the quantile of what has reached it so
far, so an early arrival passes against few; its guarantee is per decision, see the tests.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from ctrain_dist import store as store_module
from ctrain_dist.launch.ray_sweep import SweepOutcome, TuneSearch, run_sweep
from ctrain_dist.launch.score import FINALS, SCORE, STEP_KEY
from ctrain_dist.spec import SweepSpec, TrialSpec, pack_trials
from ctrain_dist.store.schema import (
    CONFIG_JSON,
    MAX_VIOLATION,
    OBJECTIVE,
    STATUS,
    STATUS_DIVERGED,
    STATUS_FINISHED,
    TERMINAL_STATUSES,
    TRIAL_ID,
    VAL,
    final_column,
)
from ctrain_dist.tuning import (
    WORST_SCORE,
    Space,
    configuration_key,
    configuration_score,
    finite_or_inf,
    round_drawn,
    spaces_of,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)  # a line per study is noise here

REPEATS_BEFORE_DRAWING = 20
"""Suggestions equal to a started configuration tolerated before drawing one at random."""


def asha_scheduler(spec: SweepSpec) -> ASHAScheduler | None:
    """Ray's ASHA over training steps on the feasibility-aware score, or None."""
    scheduler = spec.tuning.scheduler if spec.tuning else None
    if scheduler is None:
        return None
    return ASHAScheduler(
        time_attr=STEP_KEY,
        metric=SCORE,
        mode="min",
        max_t=spec.training.budget.steps,
        grace_period=scheduler.asha.grace_period,
        reduction_factor=scheduler.asha.reduction_factor,
        stop_last_trials=False,  # a pack at the budget ends by itself, with its rows
    )


def tune_domain(space: Space) -> Any:
    """The Ray Tune search domain of a spec space (``OptunaSearch`` converts it)."""
    low, high = space.values[0], space.values[-1]
    if space.kind == "loguniform":
        return tune.loguniform(low, high)
    if space.kind == "uniform":
        return tune.uniform(low, high)
    if space.kind == "randint":
        return tune.randint(low, high)
    return tune.choice(list(space.values))


@dataclass
class Configuration:
    """One configuration of the study as the store shows it."""

    hyperparameters: dict[str, Any]
    trials: list[TrialSpec]
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Trial id → its kept ``trials`` row."""

    @property
    def pending(self) -> list[TrialSpec]:
        return [
            t
            for t in self.trials
            if self.rows.get(t.trial_id, {}).get(STATUS) not in TERMINAL_STATUSES
        ]

    def score(self, tolerance: float) -> float:
        """Selection's score over its seeds; a seed stopped early makes it worst."""
        values = []
        for trial in self.trials:
            row = self.rows[trial.trial_id]
            if row[STATUS] == STATUS_FINISHED:
                values.append(
                    finite_or_inf(
                        [row[final_column(VAL, OBJECTIVE)], row[final_column(VAL, MAX_VIOLATION)]]
                    )
                )
            elif row[STATUS] == STATUS_DIVERGED:
                values.append([math.inf, math.inf])
            else:
                return WORST_SCORE
        return configuration_score([v[0] for v in values], [v[1] for v in values], tolerance)


def history(spec: SweepSpec, store_root: Path) -> dict[str, list[Configuration]]:
    """Per algorithm, the configurations of ``spec`` the store holds rows of, in first-seen
    order. A row counts only if its trial id is what ``spec`` would give that configuration
    and seed, and its searched values lie in the spec's spaces: rows of an earlier, different
    spec under the same name are not this study's."""
    rows = store_module.open(store_root).trials(spec.name)
    found: dict[str, dict[str, Configuration]] = {a.name: {} for a in spec.algorithms}
    spaces = {
        a.name: spaces_of(a.params, f"algorithms.{i}.params") for i, a in enumerate(spec.algorithms)
    }
    for row in rows.to_dict("records"):
        stored = json.loads(row[CONFIG_JSON])  # not validated: an older spec may not parse
        algorithm, hyperparameters = stored["algorithm"], stored["hyperparameters"]
        if algorithm not in found or not all(
            space.contains(hyperparameters.get(name)) for name, space in spaces[algorithm].items()
        ):
            continue
        key = configuration_key(algorithm, hyperparameters)
        configurations = found[algorithm]
        if key not in configurations:
            trials = spec.configuration_trials(algorithm, hyperparameters)
            configurations[key] = Configuration(hyperparameters, trials)
        configuration = configurations[key]
        if row[TRIAL_ID] in {t.trial_id for t in configuration.trials}:
            configuration.rows[row[TRIAL_ID]] = row
    return {
        name: [c for c in configurations.values() if c.rows]
        for name, configurations in found.items()
    }


@dataclass
class _Open:
    """A configuration in flight: its packs not yet ended, what they reported."""

    algorithm: str
    searched: dict[str, Any]
    inner_id: str | None
    packs_left: int
    finals: list[list[float]] = field(default_factory=list)
    failed: bool = False


class EqualBudgetSearch(Searcher):
    """One ``OptunaSearch`` per algorithm behind one Tune searcher: each algorithm gets exactly
    its remaining budget of new configurations, never one the store already holds.

    Suggestions go to the algorithm with the most budget left (ties in spec order), so the
    algorithms advance together and all cores stay busy. A Tune trial is one pack; a
    configuration whose seeds need several packs is told to its searcher when its last pack
    ends, scored over all its seeds (``launch.score.FINALS``).
    """

    def __init__(self, spec: SweepSpec, started: dict[str, list[Configuration]]) -> None:
        super().__init__(metric=SCORE, mode="min")
        assert spec.tuning is not None
        self.spec = spec
        tolerance = spec.analysis.feasibility_tolerance
        budget = spec.tuning.configurations(
            spec.training.budget.steps, spec.training.budget.seconds
        )
        self.queue: list[list[TrialSpec]] = []
        self.fixed: dict[str, dict[str, Any]] = {}
        self.spaces: dict[str, dict[str, Space]] = {}
        self.inner: dict[str, OptunaSearch] = {}
        self.remaining: dict[str, int] = {}
        self.known: dict[str, float] = {}
        self.open: dict[str, _Open] = {}
        self.owner: dict[str, str] = {}
        for index, algorithm in enumerate(spec.algorithms):
            name = algorithm.name
            spaces = spaces_of(algorithm.params, f"algorithms.{index}.params")
            self.spaces[name] = spaces
            self.fixed[name] = {k: v for k, v in algorithm.params.items() if k not in spaces}
            ended, points, rewards = started[name], [], []
            for configuration in ended:
                key = configuration_key(name, configuration.hyperparameters)
                pending = configuration.pending
                if pending:
                    self.queue.extend(pack_trials(pending, spec.seeds_per_trial))
                    self.known[key] = WORST_SCORE
                    continue
                self.known[key] = configuration.score(tolerance)
                points.append({k: configuration.hyperparameters[k] for k in spaces})
                rewards.append(self.known[key])
            self.remaining[name] = budget - len(ended)
            self.inner[name] = OptunaSearch(
                space=OptunaSearch.convert_search_space(
                    {k: tune_domain(space) for k, space in spaces.items()}
                ),
                metric=SCORE,
                mode="min",
                points_to_evaluate=points or None,
                evaluated_rewards=rewards or None,
                seed=_seed(spec.tuning.seed, name),
            )
        self.rng = random.Random(f"ctrain-tuning-fallback:{spec.tuning.seed}")

    def packs_per_configuration(self, name: str) -> int:
        probe = self.spec.configuration_trials(name, self.fixed[name])
        return len(pack_trials(probe, self.spec.seeds_per_trial))

    def plan(self) -> TuneSearch:
        """The Tune settings: at most this many Tune trials, holding this many trials."""
        seeds = len(self.spec.seed_list())
        new = sum(self.remaining.values())
        samples = len(self.queue) + sum(
            n * self.packs_per_configuration(name) for name, n in self.remaining.items()
        )
        queued = sum(len(pack) for pack in self.queue)
        return TuneSearch(self, None, samples, queued + new * seeds)

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if not self.queue:
            name = max(self.remaining, key=lambda n: (self.remaining[n], -self._order(n)))
            if self.remaining[name] <= 0:
                return Searcher.FINISHED
            self._open_configuration(name)
        pack = self.queue.pop(0)
        key = configuration_key(pack[0].algorithm, pack[0].hyperparameters)
        if key in self.open:
            self.owner[trial_id] = key
        return {"pack": [t.model_dump(mode="json") for t in pack]}

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        key = self.owner.pop(trial_id, None)
        if key is None:
            return  # a configuration completed on resume: told on the next resume
        configuration = self.open[key]
        configuration.packs_left -= 1
        if error or not result or FINALS not in result:
            configuration.failed = True
        else:
            configuration.finals.extend(json.loads(result[FINALS]))
        if configuration.packs_left:
            return
        del self.open[key]
        seeds = len(self.spec.seed_list())
        finals = configuration.finals
        score = (
            WORST_SCORE
            if configuration.failed or len(finals) < seeds
            else configuration_score(
                [f[0] for f in finals],
                [f[1] for f in finals],
                self.spec.analysis.feasibility_tolerance,
            )
        )
        self.known[key] = score
        inner = self.inner[configuration.algorithm]
        if configuration.inner_id is None:
            inner.add_evaluated_point(configuration.searched, score)
        else:
            inner.on_trial_complete(configuration.inner_id, {SCORE: score})

    def _order(self, name: str) -> int:
        return list(self.remaining).index(name)

    def _open_configuration(self, name: str) -> None:
        """Ask ``name``'s searcher for a configuration not yet started; queue its packs."""
        inner, spaces = self.inner[name], self.spaces[name]
        for attempt in range(REPEATS_BEFORE_DRAWING):
            inner_id = f"{name}-{len(self.known)}-{attempt}"
            suggested = inner.suggest(inner_id) or {}
            searched = {k: _concrete(spaces[k], v) for k, v in suggested.items()}
            key = configuration_key(name, {**self.fixed[name], **searched})
            if key not in self.known:
                break
            inner.on_trial_complete(inner_id, {SCORE: self.known[key]})
        else:
            inner_id, key, searched = None, "", {}
            while not key or key in self.known:
                searched = {k: space.draw(self.rng) for k, space in spaces.items()}
                key = configuration_key(name, {**self.fixed[name], **searched})
        hyperparameters = {**self.fixed[name], **searched}
        packs = pack_trials(
            self.spec.configuration_trials(name, hyperparameters), self.spec.seeds_per_trial
        )
        self.known[key] = WORST_SCORE  # started: never suggested again
        self.open[key] = _Open(name, searched, inner_id, len(packs))
        self.remaining[name] -= 1
        self.queue.extend(packs)


def _concrete(space: Space, value: Any) -> Any:
    """A suggested value as a trial takes it: floats rounded as drawn ones are."""
    if space.kind in ("loguniform", "uniform"):
        return round_drawn(float(value), space.values[0], space.values[1])
    if space.kind == "randint":
        return int(value)
    return value


def _seed(seed: int, algorithm: str) -> int:
    """The TPE sampler's seed of one algorithm: from the study's seed and the name."""
    digest = hashlib.sha256(f"ctrain-tuning:{seed}:{algorithm}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def run_tuning(
    spec: SweepSpec,
    store_root: Path,
    *,
    resume: bool = False,
    log: Callable[[str], None] = print,
    address: str | None = None,
) -> SweepOutcome:
    """The tuning stage of ``spec`` (sweep ``spec.name``): every algorithm its budget."""
    assert spec.tuning is not None
    if spec.tuning.search != "optuna":
        scheduler = asha_scheduler(spec)
        search = (lambda: TuneSearch(scheduler=scheduler)) if scheduler else None
        return run_sweep(spec, store_root, resume=resume, log=log, address=address, search=search)

    def searcher() -> TuneSearch:
        started = history(spec, store_root)
        search = EqualBudgetSearch(spec, started)
        plan = search.plan()
        plan.scheduler = asha_scheduler(spec)
        plan.skipped = sum(
            len(c.trials) - len(c.pending)
            for configurations in started.values()
            for c in configurations
        )
        for name, left in search.remaining.items():
            log(f"{name}: {len(started[name])} configurations in the store, {left} to search")
        return plan

    return run_sweep(spec, store_root, resume=resume, log=log, address=address, search=searcher)
