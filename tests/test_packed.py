"""Packed seeds (``seeds_per_trial``): K seeds trained as one batched computation are the same
K seeds trained alone, and are recorded as if they had been.

Equality is to rounding (1e-10 in float64): batched and plain matmuls sum in different orders.
Rank metrics (``auc``, ``auc_m``, ``group_auc_<g>``) are compared to 1e-5: rows whose logits
are equal in exact arithmetic (they differ only in features that dead ReLU units read) get
logits a rounding apart, so their order, and the AUC with it, may flip by a pair or two, about
3e-7 each; any real difference is orders of magnitude larger.
"""

import json
import math
from pathlib import Path

import pytest
import torch
from list_sink import ListSink
from seed_slices import TIGHT, assert_slice_close

from ctrain_dist import store
from ctrain_dist.algorithms import ALGORITHMS, build_algorithm
from ctrain_dist.cli.main import main
from ctrain_dist.data.load import load_data
from ctrain_dist.errors import SpecError
from ctrain_dist.launch.ray_sweep import run_sweep
from ctrain_dist.spec import load_spec, pack_trials
from ctrain_dist.store.schema import SPLITS, final_column, group_column
from ctrain_dist.trial import loop, runner
from ctrain_dist.trial.loop import train
from ctrain_dist.trial.packed import PackedLearner

QUICKSTART = Path(__file__).parents[1] / "sweeps" / "quickstart.yaml"
STEPS = 100
RANK = 1e-5
PACKABLE = sorted(name for name, cls in ALGORITHMS.items() if cls.batchable)
SETTINGS = {
    "sgd": {"momentum": 0.9},
    "switching_subgradient": {"step_rule": "adaptive", "lr_constraint": 0.5},
    "classical_pbm": {"inner_steps": 20},
    "alm": {"primal": "adamw", "lr": 0.01, "weight_decay": 0.1},
    "ssl_alm": {"primal": "adam", "lr": 0.01},
    "nupi": {"primal": "momentum"},
}
"""Settings that exercise more of a step in 100 steps (momentum, Polyak steps, dual updates,
each primal optimiser over stacked parameters; penalty and PBM keep the SGD primal)."""
UNCOMPARED = {"attempt_id", "time_s", "train_time_s", "wall_time_s", "started_at", "ended_at"}


def _spec(algorithm: str, *overrides: str):
    params = json.dumps(SETTINGS.get(algorithm, {}))
    return load_spec(
        QUICKSTART,
        [
            "seeds=[3, 5, 8, 13]",
            f"algorithms=[{{name: {algorithm}, params: {params}}}]",
            "constraints=[{kind: loss_gap, bound: 0.01}, {kind: positive_rate_gap, bound: 0.05}]",
            f"training.budget.steps={STEPS}",
            "training.eval_every=50",
            f"training.checkpoint_every={STEPS}",
            "training.dtype=float64",
            *overrides,
        ],
    )


@pytest.fixture(scope="module", params=PACKABLE)
def runs(request, tmp_path_factory):
    """One algorithm's 4 seeds: trained alone (rows and final checkpoint) and packed."""
    trials = _spec(request.param, "training.min_group_count=8").trials()
    folder = tmp_path_factory.mktemp(request.param)
    alone = []
    for trial in trials:
        sink, path = ListSink(), folder / f"{trial.trial_id}.pt"
        train([trial], sink, checkpoint=path)
        alone.append((sink, torch.load(path, weights_only=False)))
    packed = ListSink()
    train(trials, packed)
    pack = PackedLearner(trials, load_data(trials[0].data, trials[0].split), torch.device("cpu"))
    for _ in range(STEPS):
        pack.algorithm.step(pack.estimate)
    return trials, alone, packed, pack


def _is_rank_metric(key: str) -> bool:
    """An AUC column of an evaluation row, or its ``final_<split>_`` column in a trials row."""
    finals = [final_column(split, "") for split in SPLITS]
    metric = next((key.removeprefix(f) for f in finals if key.startswith(f)), key)
    return metric.startswith(("auc", group_column("auc", "")))


def _assert_rows_close(alone: dict, packed: dict, where: str) -> None:
    assert alone.keys() == packed.keys(), where
    for key, value in alone.items():
        other = packed[key]
        if key in UNCOMPARED or key == "packed_with":
            continue
        if isinstance(value, float):
            tolerance = RANK if _is_rank_metric(key) else TIGHT
            assert (math.isnan(value) and math.isnan(other)) or abs(value - other) <= tolerance, (
                f"{where}.{key}: {value!r} alone, {other!r} packed"
            )
        else:
            assert value == other, f"{where}.{key}: {value!r} alone, {other!r} packed"


def test_packed_seeds_end_with_the_parameters_of_the_seeds_trained_alone(runs):
    trials, alone, _, pack = runs
    for seed, (_, state) in enumerate(alone):
        stacked = dict(zip(state["model"], pack.model.parameters(), strict=True))
        assert_slice_close(state["model"], stacked, seed, trials[seed].trial_id)


def test_packed_seeds_end_with_the_duals_and_algorithm_state_of_the_seeds_trained_alone(runs):
    trials, alone, _, pack = runs
    for seed, (_, state) in enumerate(alone):
        packed_state = pack.algorithm.state_dict()
        assert_slice_close(state["algorithm"], packed_state, seed, trials[seed].trial_id)


def test_packed_seeds_write_the_rows_of_the_seeds_trained_alone(runs):
    trials, alone, packed, _ = runs
    for seed, (sink, _) in enumerate(alone):
        trial_id = trials[seed].trial_id
        mine = [row for row in packed.eval_rows if row["trial_id"] == trial_id]
        assert len(mine) == len(sink.eval_rows)
        for a, p in zip(sink.eval_rows, mine, strict=True):
            _assert_rows_close(a, p, f"{trial_id} step {a['step']} {a['split']}")
        (row,) = [row for row in packed.trial_rows if row["trial_id"] == trial_id]
        _assert_rows_close(sink.trial_rows[0], row, trial_id)


def test_each_packed_seed_has_its_own_attempt_and_names_its_pack(runs):
    trials, alone, packed, _ = runs
    pack = [trial.trial_id for trial in trials]
    assert [json.loads(row["packed_with"]) for row in packed.trial_rows] == [pack] * len(pack)
    assert len({row["attempt_id"] for row in packed.trial_rows}) == len(pack)
    assert all(sink.trial_rows[0]["packed_with"] is None for sink, _ in alone)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_a_seed_that_diverges_ends_there_as_alone_while_the_rest_of_its_pack_trains_on():
    params = "{lr: 20.0, momentum: 0.9}"  # seed 5 overflows float32 by step 10; seed 0 does not
    spec = load_spec(
        QUICKSTART,
        [
            "seeds=[0, 5]",
            f"algorithms=[{{name: sgd, params: {params}}}]",
            "training.budget.steps=20",
            "training.eval_every=10",
        ],
    )
    packed = ListSink()
    train(spec.trials(), packed)
    for trial in spec.trials():
        sink = ListSink()
        train([trial], sink)
        (row,) = [row for row in packed.trial_rows if row["trial_id"] == trial.trial_id]
        assert (row["status"], row["steps"]) == (
            sink.trial_rows[0]["status"],
            sink.trial_rows[0]["steps"],
        )
        assert sum(r["trial_id"] == trial.trial_id for r in packed.eval_rows) == len(sink.eval_rows)
    assert sorted(row["status"] for row in packed.trial_rows) == ["diverged", "finished"]


def test_seeds_of_one_configuration_are_packed_up_to_seeds_per_trial():
    spec = load_spec(
        QUICKSTART,
        ["seeds=5", "seeds_per_trial=2", "algorithms=[{name: alm, params: {lr: [0.01, 0.05]}}]"],
    )
    packs = spec.packs()
    assert [len(pack) for pack in packs] == [2, 2, 1, 2, 2, 1]
    for pack in packs:
        assert len({trial.config_label for trial in pack}) == 1


def test_an_algorithm_that_cannot_batch_seeds_trains_one_seed_per_trial():
    spec = load_spec(
        QUICKSTART, ["seeds=3", "seeds_per_trial=3", "algorithms=[{name: ghost}, {name: sgd}]"]
    )
    assert [[t.algorithm for t in pack] for pack in spec.packs()] == [
        ["ghost"],
        ["ghost"],
        ["ghost"],
        ["sgd", "sgd", "sgd"],
    ]


def test_a_weight_norm_constraint_trains_one_seed_per_trial():
    spec = load_spec(
        QUICKSTART,
        ["seeds=2", "seeds_per_trial=2", "constraints=[{kind: weight_norm, bound: 5.0}]"],
    )
    assert {len(pack) for pack in spec.packs()} == {1}


def test_resume_packs_only_the_seeds_still_to_run():
    trials = load_spec(QUICKSTART, ["seeds=6", "algorithms=[{name: sgd}]"]).trials()
    unfinished = [trials[1], trials[4], trials[5]]
    assert pack_trials(unfinished, 4) == [unfinished]


def test_ghost_refuses_packed_parameters():
    stacked = torch.nn.Parameter(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="cannot train packed seeds"):
        build_algorithm("ghost", [stacked], 1, {}, seeds=2)


def test_packing_with_a_time_budget_is_refused_naming_seeds_per_trial():
    with pytest.raises(SpecError, match=r"^seeds_per_trial: .*budget\.steps"):
        load_spec(QUICKSTART, ["seeds_per_trial=4", "training.budget={seconds: 10}"])


def test_packing_with_several_workers_per_trial_is_refused():
    with pytest.raises(SpecError, match=r"^resources\.workers_per_trial: packed seeds"):
        load_spec(QUICKSTART, ["seeds_per_trial=4", "resources.workers_per_trial=2"])


def test_ctrain_train_with_seeds_records_every_seed_as_its_own_trial(tmp_path, capsys):
    overrides = [
        "algorithms=[{name: ssl_alm}, {name: ghost}]",
        "seeds=3",
        "training.budget.steps=4",
        "training.eval_every=2",
    ]
    arguments = [item for override in overrides for item in ("--set", override)]
    code = main(["train", str(QUICKSTART), *arguments, "--seeds", "3", "--store", str(tmp_path)])
    assert code == 0
    trials = store.open(tmp_path).trials("quickstart").set_index("trial_id")
    assert set(trials.index) == {t.trial_id for t in load_spec(QUICKSTART, overrides).trials()}
    assert (trials["status"] == "finished").all()
    ssl_alm = trials[trials["algorithm"] == "ssl_alm"]
    assert all(sorted(json.loads(ids)) == sorted(ssl_alm.index) for ids in ssl_alm["packed_with"])
    assert trials.loc[trials["algorithm"] == "ghost", "packed_with"].isna().all()
    assert "ghost(): ghost solves per-seed subproblems" in capsys.readouterr().out


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_packed_seeds_train_on_cuda_as_on_the_cpu():
    trials = _spec("ssl_alm").trials()
    data = load_data(trials[0].data, trials[0].split)
    states = []
    for device in ("cpu", "cuda"):
        pack = PackedLearner(trials, data, torch.device(device))
        for _ in range(STEPS):
            pack.algorithm.step(pack.estimate)
        states.append([p.detach().cpu() for p in pack.model.parameters()])
    for cpu, cuda in zip(*states, strict=True):
        torch.testing.assert_close(cuda, cpu, rtol=0, atol=1e-8)


@pytest.mark.slow
def test_a_packed_sweep_records_every_seed_and_its_resume_packs_only_the_new_seeds(tmp_path):
    overrides = [
        "name=packed",
        "algorithms=[{name: ssl_alm}, {name: ghost}]",
        "seeds_per_trial=3",
        "training.budget.steps=4",
        "training.eval_every=2",
    ]
    logged: list[str] = []
    first = run_sweep(load_spec(QUICKSTART, [*overrides, "seeds=3"]), tmp_path, log=logged.append)
    again = run_sweep(
        load_spec(QUICKSTART, [*overrides, "seeds=5"]), tmp_path, resume=True, log=logged.append
    )
    assert first.statuses == {"finished": 6} and again.statuses == {"finished": 4}
    assert again.skipped == 6
    trials = store.open(tmp_path).trials("packed").set_index("seed")
    packs = trials.loc[trials["algorithm"] == "ssl_alm", "packed_with"].map(json.loads)
    assert [len(ids) for ids in packs.sort_index()] == [3, 3, 3, 2, 2]
    assert trials.loc[trials["algorithm"] == "ghost", "packed_with"].isna().all()
    assert sum("ghost(): ghost solves per-seed subproblems" in line for line in logged) == 2


# --- the runner: every launcher's way to train a pack ------------------------------------------


def _small_pack(*overrides: str):
    return _spec("sgd", "training.budget.steps=4", "training.eval_every=2", *overrides).trials()


def _failing_estimate(failures: int):
    """A stand-in for ``PackedLearner.estimate`` that raises on its first ``failures`` calls."""
    real, calls = PackedLearner.estimate, []

    def estimate(learner: PackedLearner):
        calls.append(learner)
        if len(calls) <= failures:
            raise RuntimeError("the oracle broke")
        return real(learner)

    return estimate


def test_a_pack_that_keeps_raising_records_an_error_row_per_seed_for_every_attempt(monkeypatch):
    trials = _small_pack()
    monkeypatch.setattr(PackedLearner, "estimate", _failing_estimate(10**9))
    sink, logged = ListSink(), []
    rows = runner.run_pack(trials, sink, attempts=3, log=logged.append)
    assert [row["trial_id"] for row in rows] == [trial.trial_id for trial in trials]
    assert {row["status"] for row in rows} == {"error"}
    assert len(sink.trial_rows) == 3 * 4
    for trial in trials:
        mine = [row for row in sink.trial_rows if row["trial_id"] == trial.trial_id]
        assert len({row["attempt_id"] for row in mine}) == 3
        assert all("the oracle broke" in row["error"] for row in mine)
    assert len(logged) == 3 and all("the oracle broke" in line for line in logged)


def test_a_pack_that_fails_once_is_retried_as_a_new_attempt_and_finishes(monkeypatch):
    trials = _small_pack()
    monkeypatch.setattr(PackedLearner, "estimate", _failing_estimate(1))
    sink = ListSink()
    rows = runner.run_pack(trials, sink, attempts=2, log=lambda _: None)
    assert {row["status"] for row in rows} == {"finished"}
    assert [row["status"] for row in sink.trial_rows] == ["error"] * 4 + ["finished"] * 4
    errors, finished = sink.trial_rows[:4], sink.trial_rows[4:]
    assert not {row["attempt_id"] for row in errors} & {row["attempt_id"] for row in finished}


def test_a_trial_whose_data_fails_to_load_is_an_error_attempt_not_an_exception(monkeypatch):
    (trial, *_) = _small_pack()

    def unreadable(*args):
        raise OSError("the data folder vanished")

    monkeypatch.setattr(loop, "load_data", unreadable)
    sink = ListSink()
    (row,) = runner.run_pack([trial], sink, attempts=2, log=lambda _: None)
    assert row["status"] == "error" and "the data folder vanished" in row["error"]
    assert [r["status"] for r in sink.trial_rows] == ["error", "error"]


def test_a_pack_whose_seeds_differ_in_more_than_their_seed_is_refused():
    trials = _small_pack()
    other = trials[1].model_copy(update={"hyperparameters": {"lr": 0.5}})
    with pytest.raises(ValueError, match="differ in their seed only"):
        runner.run_pack([trials[0], other], ListSink())


def test_one_trial_trained_by_the_loop_and_as_a_pack_of_one_writes_the_same_rows():
    (trial, *_) = _small_pack()
    alone, pack_of_one = ListSink(), ListSink()
    train([trial], alone)
    runner.run_pack([trial], pack_of_one)
    assert len(alone.eval_rows) == len(pack_of_one.eval_rows) == 3 * len(SPLITS)
    for a, b in zip(
        [*alone.eval_rows, *alone.trial_rows],
        [*pack_of_one.eval_rows, *pack_of_one.trial_rows],
        strict=True,
    ):
        assert a.keys() == b.keys()
        assert {k: v for k, v in a.items() if k not in UNCOMPARED} == {
            k: v for k, v in b.items() if k not in UNCOMPARED
        }


@pytest.mark.parametrize(
    "packing", [["--seeds", "4"], ["--set", "seeds_per_trial=4"]], ids=["--seeds", "spec"]
)
def test_ctrain_train_trains_each_pack_through_the_runner(tmp_path, monkeypatch, packing):
    packs = []
    run_pack = runner.run_pack

    def spy(trials, sink, **options):
        packs.append([trial.seed for trial in trials])
        return run_pack(trials, sink, **options)

    monkeypatch.setattr(runner, "run_pack", spy)
    overrides = ["seeds=4", "algorithms=[{name: sgd}]", "training.budget.steps=4"]
    arguments = [item for override in overrides for item in ("--set", override)]
    assert main(["train", str(QUICKSTART), *arguments, *packing, "--store", str(tmp_path)]) == 0
    assert packs == [[0, 1, 2, 3]]
    trials = store.open(tmp_path).trials("quickstart")
    assert len(trials) == 4 and (trials["status"] == "finished").all()


def test_ctrain_train_records_every_failed_attempt_of_a_pack_and_exits_1(tmp_path, monkeypatch):
    monkeypatch.setattr(PackedLearner, "estimate", _failing_estimate(10**9))
    overrides = ["seeds=2", "algorithms=[{name: sgd}]", "max_failures=1"]
    arguments = [item for override in overrides for item in ("--set", override)]
    code = main(["train", str(QUICKSTART), *arguments, "--seeds", "2", "--store", str(tmp_path)])
    assert code == 1
    attempts = store.open(tmp_path).trials("quickstart", all_attempts=True)
    assert sorted(attempts["status"]) == ["error"] * 4  # 2 seeds × (1 + max_failures)
    assert attempts.groupby("trial_id")["attempt_id"].nunique().tolist() == [2, 2]


SPARSE = ["alm", "classical_pbm", "nupi", "ssl_alm", "switching_subgradient"]
"""The algorithms whose multipliers or switching read which values a minibatch defines."""


@pytest.fixture(scope="module", params=SPARSE)
def sparse_runs(request, tmp_path_factory):
    """Batches of 8 over race groups (a third of them without a non-white row) and equalized
    odds (more cells empty still): 4 seeds alone (final checkpoints) and as a pack."""
    trials = _spec(
        request.param,
        "data.sensitive=race",
        "training.batch_size=8",
        "constraints=[{kind: equalized_odds, bound: 0.05}, {kind: loss_gap, bound: 0.02}]",
    ).trials()
    folder = tmp_path_factory.mktemp(f"sparse-{request.param}")
    alone = []
    for trial in trials:
        path = folder / f"{trial.trial_id}.pt"
        train([trial], ListSink(), checkpoint=path)
        alone.append(torch.load(path, weights_only=False))
    pack = PackedLearner(trials, load_data(trials[0].data, trials[0].split), torch.device("cpu"))
    for _ in range(STEPS):
        pack.algorithm.step(pack.estimate)
    return alone, pack


def test_seeds_whose_batches_lack_a_group_train_packed_as_alone(sparse_runs):
    alone, pack = sparse_runs
    counts = pack.empty_group_estimates
    assert counts.sum() > 0 and len({tuple(row) for row in counts.tolist()}) > 1
    for seed, state in enumerate(alone):
        stacked = dict(zip(state["model"], pack.model.parameters(), strict=True))
        assert_slice_close(state["model"], stacked, seed, f"seed {seed} model")
        algorithm = pack.algorithm.state_dict()
        assert_slice_close(state["algorithm"], algorithm, seed, f"seed {seed} algorithm")
        assert torch.equal(state["empty_group_estimates"][0], counts[seed])
