"""Compiled steps (``training.compile``) follow the eager trajectory, for every algorithm.

100 float64 steps of the same trial, one learner eager and one compiled (``default`` mode:
Dynamo and Inductor; the whole step as one graph for ALM, SSL-ALM, iALM and the switching
method, the oracle alone for the others): parameters, multipliers and
every tensor of the algorithm's state (the switching method's count of objective steps among
them, so its branch decisions too) agree to
1e-10 relative. A ``state_dict`` taken in one mode resumes in the other. Compiling is slow
(about 20 s a step on two shared cores, more under load), so the model is small and every
test here is ``slow``; the compiled oracle does not depend on the algorithm, so Dynamo's
process-wide cache serves every oracle-only algorithm after the first (one compile per shape),
and each whole-step algorithm's graph serves its later tests.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from ctrain_dist import store
from ctrain_dist.algorithms import ALGORITHMS
from ctrain_dist.data.load import load_data
from ctrain_dist.spec import TrialSpec, compile_warnings, parse_spec
from ctrain_dist.store.schema import COMPILE_TIME_S, STATUS, STATUS_FINISHED
from ctrain_dist.trial.compiled import Step
from ctrain_dist.trial.distributed import Workers
from ctrain_dist.trial.learner import Learner, ModelLearner
from ctrain_dist.trial.loop import learner_for, train

pytestmark = pytest.mark.slow

STEPS = 100
TIGHT = 1e-10
CPU = torch.device("cpu")
SETTINGS: dict[str, dict[str, Any]] = {
    "switching_subgradient": {"lr_constraint": 0.5},
    "classical_pbm": {"inner_steps": 20},
    "nupi": {"primal": "momentum"},
    "ssl_alm": {"primal": "adam", "lr": 0.01},
}
"""Settings that exercise more of a step within 100 steps (dual updates, optimiser state)."""


def _trial(algorithm: str, **training: Any) -> TrialSpec:
    spec = parse_spec(
        {
            "name": "compiled",
            "data": {"dataset": "adult", "sensitive": "sex"},
            "model": {"hidden": [8]},
            "constraints": [{"kind": "loss_gap", "bound": 0.02}],
            "training": {
                "batch_size": 64,
                "device": "cpu",
                "dtype": "float64",
                "budget": {"steps": STEPS},
                **training,
            },
            "algorithms": [{"name": algorithm, "params": SETTINGS.get(algorithm, {})}],
            "seeds": 1,
        }
    )
    return spec.trials()[0]


@pytest.fixture(scope="module")
def data():
    trial = _trial("sgd")
    return load_data(trial.data, trial.split)


def _tensors(value: Any) -> list[torch.Tensor]:
    """Every tensor in a (nested) state dict, in a fixed order."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for key in sorted(value, key=str) for t in _tensors(value[key])]
    if isinstance(value, list | tuple):
        return [t for item in value for t in _tensors(item)]
    return []


def _state(learner: Learner) -> list[torch.Tensor]:
    return [
        *(p.detach() for p in learner.model.parameters()),
        learner.algorithm.multipliers(),
        *_tensors(learner.algorithm.state_dict()),
    ]


def _assert_same(eager: Learner, compiled: Learner) -> None:
    for expected, actual in zip(_state(eager), _state(compiled), strict=True):
        if expected.dtype == torch.bool or not expected.is_floating_point():
            assert torch.equal(expected, actual)
            continue
        scale = expected.abs().max().item() if expected.numel() else 0.0
        error = (expected - actual).abs().max().item() if expected.numel() else 0.0
        assert error <= TIGHT * max(scale, 1e-300) or error == 0, (error, scale)


def _run(step: Step, steps: int) -> None:
    for _ in range(steps):
        info = step()
    assert all(math.isfinite(v) for v in info["loss"].reshape(-1).tolist())


@pytest.mark.parametrize("algorithm", list(ALGORITHMS.builtins))
def test_a_compiled_step_follows_the_eager_trajectory(algorithm, data):
    trial = _trial(algorithm)
    eager = ModelLearner(trial, data, Workers(), CPU)
    compiled = ModelLearner(trial, data, Workers(), CPU)
    _run(Step(eager, False), STEPS)
    step = Step(compiled, "default")
    _run(step, STEPS)
    _assert_same(eager, compiled)
    assert compiled.samplers[0].samples_drawn == eager.samplers[0].samples_drawn
    assert step.whole == type(compiled.algorithm).compiles_whole


def test_a_step_that_cannot_be_traced_whole_falls_back_to_its_compiled_oracle(data):
    trial = _trial("alm")
    eager, compiled = (ModelLearner(trial, data, Workers(), CPU) for _ in range(2))
    algorithm = compiled.algorithm
    step_of = type(algorithm).step

    def breaking_the_graph(estimate):  # as a host read would; a whole step refuses it
        info = step_of(algorithm, estimate)
        torch._dynamo.graph_break()
        return info

    algorithm.step = breaking_the_graph
    step = Step(compiled, "default")
    with pytest.warns(RuntimeWarning, match="cannot be compiled whole"):
        _run(step, 10)
    _run(Step(eager, False), 10)
    assert not step.whole and not algorithm.gradients_by_grad
    assert isinstance(algorithm.optimizer, torch.optim.SGD)
    _assert_same(eager, compiled)


def test_the_switching_method_takes_the_same_branches_compiled(data):
    trial = _trial("switching_subgradient")
    eager, compiled = (ModelLearner(trial, data, Workers(), CPU) for _ in range(2))
    steps = (Step(eager, False), Step(compiled, "default"))
    shares = []
    for _ in range(STEPS):
        shares.append(tuple(float(step()["objective_step_share"]) for step in steps))
    assert all(a == b for a, b in shares)
    assert 0 < shares[-1][0] < 1, "both branches are taken within the run"


@pytest.mark.parametrize("first, then", [("default", False), (False, "default")])
def test_a_state_dict_resumes_across_compiled_and_eager(first, then, data):
    trial = _trial("alm")
    whole = ModelLearner(trial, data, Workers(), CPU)
    _run(Step(whole, False), STEPS)
    before = ModelLearner(trial, data, Workers(), CPU)
    _run(Step(before, first), STEPS // 2)
    after = ModelLearner(trial, data, Workers(), CPU)
    after.load_state_dict(before.state_dict())
    _run(Step(after, then), STEPS - STEPS // 2)
    _assert_same(whole, after)


def test_packed_seeds_with_stratified_batches_compile_to_the_eager_trajectory(data):
    trials = [
        _trial("alm", min_group_count=24).model_copy(update={"seed": seed}) for seed in (0, 1)
    ]
    eager = learner_for(trials, data, Workers(), CPU)
    compiled = learner_for(trials, data, Workers(), CPU)
    _run(Step(eager, False), STEPS)
    _run(Step(compiled, "default"), STEPS)
    _assert_same(eager, compiled)


def test_a_host_solving_algorithm_is_warned_of_and_compiles_its_oracle_only(data):
    spec_warnings = compile_warnings(
        parse_spec(
            {
                "name": "w",
                "data": {"dataset": "adult"},
                "constraints": [{"kind": "loss_gap", "bound": 0.02}],
                "training": {"compile": "default"},
                "algorithms": [{"name": "alm"}, {"name": "ghost"}],
            }
        )
    )
    assert spec_warnings == [
        "algorithms.1.name: ghost solves subproblems on the host; training.compile "
        "compiles its oracle, its solves stay on the host"
    ]
    step = Step(ModelLearner(_trial("ghost"), data, Workers(), CPU), "default")
    assert not step.prefetched


class _Rows:
    """A sink that keeps the ``trials`` rows."""

    def __init__(self) -> None:
        self.trials: list[dict[str, Any]] = []

    def evals(self, rows: list[dict[str, Any]]) -> None:
        pass

    def finish(self, row: dict[str, Any] | None) -> None:
        self.trials.append(row)


@pytest.mark.parametrize("algorithm, changed", [("nupi", {}), ("alm", {"lr": 0.02, "rho": 2.0})])
def test_a_trial_records_its_compile_time_and_the_next_of_its_shape_compiles_nothing(
    algorithm, changed, data
):
    """What a reused Ray actor sees: the second trial of a shape finds its graphs compiled,
    the oracle's (νPI) or the whole step's (ALM), whose step sizes are graph inputs: another
    seed with other values of them is the same graph."""
    rows = []
    for seed, settings in ((3, {}), (4, changed)):
        trial = _trial(algorithm, compile="default", eval_every=50)
        update = {"seed": seed, "hyperparameters": {**trial.hyperparameters, **settings}}
        (row,) = train([trial.model_copy(update=update)], _Rows(), data=data)
        rows.append(row)
    assert [row[STATUS] for row in rows] == [STATUS_FINISHED] * 2
    assert rows[0][COMPILE_TIME_S] >= 0.0
    assert rows[1][COMPILE_TIME_S] == 0.0


QUICKSTART = Path(__file__).parents[1] / "sweeps" / "quickstart.yaml"


def _two_ranks(root: Path, compile_mode: str) -> dict[str, Any]:
    """``ctrain train --nproc 2`` of one float64 ALM trial; its ``trials`` row."""
    sets = [
        "algorithms=[{name: alm}]",
        "seeds=1",
        "training.budget.steps=100",
        "training.eval_every=100",
        "training.dtype=float64",
        f"training.compile={compile_mode}",
    ]
    command = [sys.executable, "-m", "ctrain_dist.cli", "train", str(QUICKSTART)]
    command += ["--store", str(root), "--nproc", "2", *(w for s in sets for w in ("--set", s))]
    subprocess.run(command, check=True, capture_output=True, timeout=600)
    return store.open(root).trials().iloc[0].to_dict()


def test_two_data_parallel_ranks_compiled_end_where_they_end_eager(tmp_path):
    """Exact DDP statistics with the all-reduce between graphs (``distributed.py``)."""
    eager, compiled = (_two_ranks(tmp_path / mode, mode) for mode in ("false", "default"))
    assert eager[STATUS] == compiled[STATUS] == STATUS_FINISHED
    for key in ("final_test_objective", "final_train_max_violation", "final_val_accuracy"):
        assert math.isclose(eager[key], compiled[key], rel_tol=TIGHT), key


def test_compile_is_not_part_of_a_trials_identity():
    assert _trial("alm").trial_id == _trial("alm", compile="default").trial_id
    assert _trial("alm", compile="reduce-overhead").training.compile == "reduce-overhead"
