"""Which trials may train together as one batched computation (packed seeds and configurations).

Why here and not in ``trial/packed.py``: planning (``launch/plan.py``, a search's queue) must
decide packs on the driver, torch-free, before any trial runs; the packed learner then trusts
that its trials share everything but the seed, or the per-member scalar hyperparameters.
"""

from __future__ import annotations

import json

from ctrain_dist.algorithms import ALGORITHMS
from ctrain_dist.spec.trial import TrialSpec


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
