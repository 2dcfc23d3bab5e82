"""Packed configurations (``configurations_per_trial``): configurations of one algorithm that
differ only in scalar hyperparameters train as one batched computation, each member exactly as
it trains alone, and each recorded as its own trial.

Equality is to rounding (1e-10 in float64 after 100 steps): batched and plain matmuls sum in
different orders, and a per-member step size multiplies where a shared one is a kernel's scalar.
"""

import io
import json
import math
from pathlib import Path

import pytest
import torch
from list_sink import ListSink

from ctrain_dist import store
from ctrain_dist.algorithms import ALGORITHMS, build_algorithm
from ctrain_dist.algorithms.member_optimizers import MemberOptimizer
from ctrain_dist.data.load import load_data
from ctrain_dist.errors import SpecError
from ctrain_dist.launch.local import train_locally
from ctrain_dist.launch.plan import plan_packs
from ctrain_dist.spec import load_spec
from ctrain_dist.trial.distributed import Workers
from ctrain_dist.trial.learner import ModelLearner
from ctrain_dist.trial.loop import train
from ctrain_dist.trial.packed import PackedLearner, check_pack

QUICKSTART = Path(__file__).parents[1] / "sweeps" / "quickstart.yaml"
STEPS = 100
TIGHT = 1e-10
RANK = 1e-5
CONFIGS = {
    "sgd": [
        {"lr": 0.01, "momentum": 0.0, "weight_decay": 0.0},
        {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.01},
        {"lr": 0.02, "momentum": 0.5, "weight_decay": 0.001},
    ],
    "adam": [
        {"lr": 0.001, "beta1": 0.9, "beta2": 0.999, "weight_decay": 0.0},
        {"lr": 0.005, "beta1": 0.8, "beta2": 0.99, "weight_decay": 0.01},
        {"lr": 0.002, "beta1": 0.7, "beta2": 0.9, "weight_decay": 0.001},
    ],
    "fairret": [
        {"lr": 0.05, "weight": 0.5, "weight_decay": 0.0},
        {"lr": 0.1, "weight": 2.0, "weight_decay": 0.01},
        {"lr": 0.02, "weight": 0.1, "weight_decay": 0.001},
    ],
    "penalty": [
        {"lr": 0.05, "weight": 1.0, "weight_decay": 0.0},
        {"lr": 0.1, "weight": 5.0, "weight_decay": 0.01},
        {"lr": 0.02, "weight": 0.5, "weight_decay": 0.001},
    ],
    "alm": [
        {"primal": "adamw", "lr": 0.01, "dual_lr": 0.1, "rho": 0.5, "beta1": 0.8, "eps": 1e-8},
        {"primal": "adamw", "lr": 0.02, "dual_lr": 0.3, "rho": 2.0, "beta1": 0.9, "eps": 1e-6},
        {"primal": "adamw", "lr": 0.005, "dual_lr": 0.05, "rho": 0.0, "beta1": 0.7, "eps": 1e-7},
    ],
    "ssl_alm": [
        {"primal": "adam", "lr": 0.01, "dual_lr": 0.1, "rho": 0.5, "mu": 2.0, "beta": 0.5},
        {"primal": "adam", "lr": 0.02, "dual_lr": 0.3, "rho": 2.0, "mu": 0.5, "beta": 0.9},
        {"primal": "adam", "lr": 0.005, "dual_lr": 0.05, "rho": 1.0, "mu": 1.0, "beta": 0.2},
    ],
    "nupi": [
        {
            "primal": "momentum",
            "momentum": 0.9,
            "lr": 0.05,
            "dual_lr": 0.1,
            "nu": 0.0,
            "kappa_p": 1.0,
            "kappa_i": 1.0,
        },
        {
            "primal": "momentum",
            "momentum": 0.5,
            "lr": 0.02,
            "dual_lr": 0.5,
            "nu": 0.5,
            "kappa_p": 0.2,
            "kappa_i": 2.0,
        },
        {
            "primal": "momentum",
            "momentum": 0.7,
            "lr": 0.1,
            "dual_lr": 0.05,
            "nu": 0.9,
            "kappa_p": 0.0,
            "kappa_i": 0.5,
        },
    ],
    "ialm": [
        {
            "lr": 0.05,
            "penalty": 0.5,
            "growth": 1.01,
            "max_penalty": 2.0,
            "dual_momentum": 0.0,
            "dual_step_bound": 1.0,
        },
        {
            "lr": 0.02,
            "penalty": 1.0,
            "growth": 1.0,
            "max_penalty": 5.0,
            "dual_momentum": 0.5,
            "dual_step_bound": 0.5,
        },
        {
            "lr": 0.1,
            "penalty": 0.2,
            "growth": 1.05,
            "max_penalty": 1.0,
            "dual_momentum": 0.9,
            "dual_step_bound": 0.3,
        },
    ],
    "spbm": [
        {
            "primal": "adam",
            "lr": 0.01,
            "penalty_mult": 0.1,
            "dual_smoothing": 0.1,
            "delta": 1.0,
            "annealing_period": 30,
        },
        {
            "primal": "adam",
            "lr": 0.02,
            "penalty_mult": 1.0,
            "dual_smoothing": 0.5,
            "delta": 2.0,
            "annealing_period": 30,
        },
        {
            "primal": "adam",
            "lr": 0.005,
            "penalty_mult": 0.5,
            "dual_smoothing": 0.9,
            "delta": 0.5,
            "annealing_period": 30,
        },
    ],
    "classical_pbm": [
        {"primal": "momentum", "momentum": 0.9, "lr": 0.05, "inner_steps": 20},
        {"primal": "momentum", "momentum": 0.5, "lr": 0.02, "inner_steps": 20},
        {"primal": "momentum", "momentum": 0.7, "lr": 0.1, "inner_steps": 20},
    ],
    "switching_subgradient": [
        {"step_rule": "adaptive", "lr": 0.05, "lr_constraint": 0.5, "tol": 0.0},
        {"step_rule": "adaptive", "lr": 0.02, "lr_constraint": 0.2, "tol": 0.01},
        {"step_rule": "adaptive", "lr": 0.1, "lr_constraint": 1.0, "tol": 0.005},
    ],
}
"""Three configurations per algorithm, differing in every kind of setting it reads per member
(primal step sizes, momenta, betas, decays, dual step sizes, ρ, μ, β, ν, tolerances)."""


@pytest.fixture(autouse=True)
def one_thread():
    """As every trial runs (``training.threads``): extra threads only spin on shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _spec(algorithm: str, configs: list[dict], *overrides: str):
    entries = ", ".join(f"{{name: {algorithm}, params: {json.dumps(c)}}}" for c in configs)
    return load_spec(
        QUICKSTART,
        [
            "seeds=[3, 5]",
            f"algorithms=[{entries}]",
            "constraints=[{kind: loss_gap, bound: 0.01}, {kind: positive_rate_gap, bound: 0.05}]",
            f"training.budget.steps={STEPS}",
            "training.eval_every=50",
            "training.dtype=float64",
            "training.min_group_count=8",
            f"configurations_per_trial={len(configs)}",
            "seeds_per_trial=2",
            *overrides,
        ],
    )


def _member_packable() -> list[str]:
    builtins = {name: ALGORITHMS[name] for name in ALGORITHMS.builtins}
    return sorted(n for n, c in builtins.items() if c.batchable and c.member_hyperparameters)


def test_every_algorithm_that_packs_configurations_is_checked_here():
    assert set(CONFIGS) == set(_member_packable())


@pytest.mark.parametrize("algorithm", sorted(CONFIGS))
def test_a_packed_configuration_ends_with_the_parameters_duals_and_state_it_reaches_alone(
    algorithm,
):
    (pack,) = _spec(algorithm, CONFIGS[algorithm]).packs()
    assert len({t.config_label for t in pack}) == 3 and len({t.seed for t in pack}) == 2
    data = load_data(pack[0].data, pack[0].split)
    packed = PackedLearner(pack, data, torch.device("cpu"))
    assert packed.algorithm._member_values, "the members must differ in per-member settings"
    for _ in range(STEPS):
        packed.algorithm.step(packed.estimate)
    packed_state = packed.algorithm.state_dict()
    for member, trial in enumerate(pack):
        alone = ModelLearner(trial, data, Workers(), torch.device("cpu"))
        for _ in range(STEPS):
            alone.algorithm.step(alone.estimate)
        where = f"{trial.config_label} seed {trial.seed}"
        for a, p in zip(alone.model.parameters(), packed.model.parameters(), strict=True):
            torch.testing.assert_close(p[member], a, rtol=0, atol=TIGHT, msg=where)
        duals = alone.algorithm.multipliers()
        torch.testing.assert_close(
            packed.algorithm.multipliers()[member], duals, rtol=0, atol=TIGHT, msg=where
        )
        state = alone.algorithm.state_dict()
        for name in set(state) - {"optimizer"}:
            _assert_member_close(state[name], packed_state[name], member, f"{where}: {name}")


def _assert_member_close(alone, packed, member: int, where: str) -> None:
    if isinstance(alone, float) and isinstance(packed, torch.Tensor):  # a per-member number
        alone = torch.tensor(alone, dtype=packed.dtype)
    if isinstance(alone, torch.Tensor):
        packed = packed[member] if packed.ndim == alone.ndim + 1 else packed
        torch.testing.assert_close(packed, alone, rtol=0, atol=TIGHT, msg=where)
    elif isinstance(alone, dict):
        for key in alone:
            _assert_member_close(alone[key], packed[key], member, f"{where}.{key}")
    elif isinstance(alone, list):
        for a, p in zip(alone, packed, strict=True):
            _assert_member_close(a, p, member, where)
    else:
        assert alone == packed, where


def test_packed_configurations_write_the_rows_they_write_alone_and_name_their_pack():
    small = ["seeds=[3]", "training.budget.steps=20"]
    (pack,) = _spec("alm", CONFIGS["alm"][:2], *small).packs()
    unpacked = _spec("alm", CONFIGS["alm"][:2], *small, "configurations_per_trial=1")
    assert [t.trial_id for t in pack] == [t.trial_id for t in unpacked.trials()]
    packed = ListSink()
    train(pack, packed)
    for trial in pack:
        alone = ListSink()
        train([trial], alone)
        mine = [row for row in packed.eval_rows if row["trial_id"] == trial.trial_id]
        assert len(mine) == len(alone.eval_rows)
        for a, p in zip(alone.eval_rows, mine, strict=True):
            _assert_rows_close(a, p)
        (row,) = [r for r in packed.trial_rows if r["trial_id"] == trial.trial_id]
        _assert_rows_close(alone.trial_rows[0], row)
        assert json.loads(row["packed_with"]) == [t.trial_id for t in pack]
    assert len({row["attempt_id"] for row in packed.trial_rows}) == len(pack)


UNCOMPARED = {"attempt_id", "time_s", "train_time_s", "wall_time_s", "started_at", "ended_at"}


def _assert_rows_close(alone: dict, packed: dict) -> None:
    assert alone.keys() == packed.keys()
    for key, value in alone.items():
        if key in UNCOMPARED or key == "packed_with":
            continue
        other = packed[key]
        if isinstance(value, float):
            tolerance = RANK if "auc" in key else TIGHT
            assert (math.isnan(value) and math.isnan(other)) or abs(value - other) <= tolerance, key
        else:
            assert value == other, key


def test_seeds_and_configurations_fill_packs_configuration_by_configuration():
    configs = [{"lr": lr} for lr in (0.01, 0.02, 0.05)]
    spec = _spec("sgd", configs, "seeds=4", "configurations_per_trial=2", "seeds_per_trial=2")
    packs = spec.packs()
    assert [len(pack) for pack in packs] == [4, 4, 4]
    for pack in packs:
        labels = [t.config_label for t in pack]
        assert len(set(labels)) == 2 and all(labels.count(label) == 2 for label in labels)
    assert sorted(t.trial_id for pack in packs for t in pack) == sorted(
        t.trial_id for t in spec.trials()
    )


def test_configurations_differing_in_a_choice_or_a_count_train_apart_and_say_why():
    alm = [{"order": "simultaneous", "lr": 0.01}, {"order": "dual_primal", "lr": 0.02}]
    spec = _spec("alm", alm, "seeds=[3]")
    logged: list[str] = []
    packs = plan_packs(spec, spec.trials(), logged.append)
    assert [len(pack) for pack in packs] == [1, 1]
    assert logged == [
        "alm: order is a choice that selects the step's code path, so configurations that "
        "differ in it train in separate packs"
    ]
    pbm = [{"inner_steps": 10}, {"inner_steps": 20}]
    spec = _spec("classical_pbm", pbm, "seeds=[3]")
    logged.clear()
    assert [len(pack) for pack in plan_packs(spec, spec.trials(), logged.append)] == [1, 1]
    assert (
        "classical_pbm: inner_steps is a count that sets shapes or when an update happens"
        in logged[0]
    )


def test_an_optional_setting_unset_in_one_configuration_keeps_it_apart():
    configs = [{"lr_constraint": 0.5, "lr": 0.1}, {"lr_constraint": None, "lr": 0.2}]
    spec = _spec("switching_subgradient", configs, "seeds=[3]")
    assert [len(pack) for pack in spec.packs()] == [1, 1]


def test_a_pack_whose_members_differ_in_a_setting_read_once_is_refused():
    (trial, *_) = _spec("alm", CONFIGS["alm"][:1], "seeds=[3]").trials()
    base = {**trial.hyperparameters, "dual_bound": 100.0}
    first = trial.model_copy(update={"hyperparameters": base})
    check_pack([first, first.model_copy(update={"hyperparameters": {**base, "lr": 0.5}})])
    bound = first.model_copy(update={"hyperparameters": {**base, "dual_bound": 10.0}})
    with pytest.raises(ValueError, match=r"reads per member .*dual_lr"):
        check_pack([first, bound])


def test_a_differing_setting_is_read_through_hyper_and_never_as_a_plain_attribute():
    stacked = [torch.nn.Parameter(torch.zeros(2, 3, dtype=torch.float64))]
    members = [{"rho": 0.5, "dual_lr": 0.1}, {"rho": 2.0, "dual_lr": 0.1}]
    algorithm = build_algorithm("alm", stacked, 1, members, seeds=2)
    with pytest.raises(AttributeError, match=r"rho differs .* hyper\('rho'\)"):
        _ = algorithm.hp.rho
    assert algorithm.hyper("dual_lr") == 0.1
    duals = algorithm.duals.value
    assert algorithm.hyper("rho", like=duals).tolist() == [[0.5], [2.0]]
    with pytest.raises(ValueError, match="reads dual_bound once for the whole pack"):
        build_algorithm("alm", stacked, 1, [{"dual_bound": 1.0}, {"dual_bound": 2.0}], seeds=2)


def test_seeds_of_one_configuration_keep_the_torch_optimiser_and_its_exact_steps():
    stacked = [torch.nn.Parameter(torch.zeros(2, 3))]
    same = [{"primal": "adam", "lr": 0.01}] * 2
    assert isinstance(build_algorithm("alm", stacked, 1, same, seeds=2).optimizer, torch.optim.Adam)
    differ = [{"primal": "adam", "lr": 0.01}, {"primal": "adam", "lr": 0.02}]
    optimizer = build_algorithm("alm", stacked, 1, differ, seeds=2).optimizer
    assert isinstance(optimizer, MemberOptimizer)


def test_packed_configurations_resume_from_their_state_on_the_same_trajectory():
    (pack,) = _spec("ssl_alm", CONFIGS["ssl_alm"][:2], "seeds=[3]").packs()
    data = load_data(pack[0].data, pack[0].split)
    run = PackedLearner(pack, data, torch.device("cpu"))
    for _ in range(10):
        run.algorithm.step(run.estimate)
    saved = torch.load(_serialised(run.state_dict()), weights_only=True)
    for _ in range(10):
        run.algorithm.step(run.estimate)
    resumed = PackedLearner(pack, data, torch.device("cpu"))
    resumed.load_state_dict(saved)
    for _ in range(10):
        resumed.algorithm.step(resumed.estimate)
    for a, b in zip(run.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)


def _serialised(state: dict) -> io.BytesIO:
    """``state`` as a checkpoint file holds it (copied now, while training goes on)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return buffer


def test_a_resumed_run_packs_only_the_configurations_still_to_run(tmp_path):
    configs = [{"lr": lr} for lr in (0.01, 0.02, 0.05, 0.1)]
    small = ["seeds=[3]", "training.budget.steps=4", "training.eval_every=2"]
    first = _spec("sgd", configs[:2], *small, "configurations_per_trial=4")
    assert train_locally(first, tmp_path, 1, log=lambda _: None) == {"finished": 2}
    spec = _spec("sgd", configs, *small, "configurations_per_trial=4")
    logged: list[str] = []
    assert train_locally(spec, tmp_path, 1, log=logged.append) == {"finished": 2}
    assert "2 of 4 trials already finished in the store; skipping them" in logged
    trials = store.open(tmp_path).trials("quickstart", all_attempts=True)
    assert sorted(trials["trial_id"]) == sorted(t.trial_id for t in spec.trials())
    later = [json.loads(ids) for ids in trials["packed_with"] if len(json.loads(ids)) == 2]
    assert {tuple(sorted(ids)) for ids in later} == {
        tuple(sorted(t.trial_id for t in first.trials())),
        tuple(sorted(t.trial_id for t in spec.trials()[2:])),
    }


def test_packing_configurations_under_a_time_budget_is_refused_naming_the_field():
    with pytest.raises(SpecError, match=r"^configurations_per_trial: .*budget\.steps"):
        load_spec(QUICKSTART, ["configurations_per_trial=4", "training.budget={seconds: 10}"])


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("algorithm", ["ssl_alm", "alm"])
def test_packed_configurations_train_on_cuda_as_on_the_cpu(algorithm):
    (pack,) = _spec(algorithm, CONFIGS[algorithm]).packs()
    data = load_data(pack[0].data, pack[0].split)
    states = []
    for device in ("cpu", "cuda"):
        packed = PackedLearner(pack, data, torch.device(device))
        for _ in range(STEPS):
            packed.algorithm.step(packed.estimate)
        states.append([p.detach().cpu() for p in packed.model.parameters()])
    for cpu, cuda in zip(*states, strict=True):
        torch.testing.assert_close(cuda, cpu, rtol=0, atol=1e-8)


def test_spbm_members_differing_in_rho_step_as_alone():
    """ρ is read by the ``alm`` penalty rule only, so it is checked apart, on the unit
    problem: member i starts at 3 + i with its own ρ."""
    settings = [{"penalty_update": "alm", "rho": rho, "lr": 0.05} for rho in (0.5, 2.0, 4.0)]

    def estimate_for(x):
        return lambda: (((x - 2) ** 2).sum(-1), x - 1)

    x = torch.nn.Parameter((3.0 + torch.arange(3, dtype=torch.float64)).reshape(3, 1))
    packed = build_algorithm("spbm", [x], 1, settings, seeds=3)
    assert set(packed._member_values) == {"rho"}
    for _ in range(30):
        packed.step(estimate_for(x))
    for member, member_settings in enumerate(settings):
        y = torch.nn.Parameter(torch.tensor([3.0 + member], dtype=torch.float64))
        alone = build_algorithm("spbm", [y], 1, member_settings)
        for _ in range(30):
            alone.step(estimate_for(y))
        torch.testing.assert_close(x[member], y, rtol=0, atol=1e-12)
        torch.testing.assert_close(packed.penalties[member], alone.penalties, rtol=0, atol=1e-12)
