"""The switching subgradient's output rule: the random or averaged objective-step iterate, and
that evaluation reads it.

On the unit problem (f = (x − 2)², c = x − 1) the switch is deterministic, so which steps are
objective steps, and from which iterates, is computed here by hand and compared with what
the algorithm keeps (``output_iterate``). At the trial level, a trial's evaluation rows must be
the metrics of the output iterate, not of the last one.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch
from bitwise import assert_bitwise_equal

from ctrain_dist.algorithms import build_algorithm
from ctrain_dist.algorithms.output_iterate import counter_uniforms, member_keys
from ctrain_dist.data.load import load_data
from ctrain_dist.spec import load_spec
from ctrain_dist.trial.distributed import Workers
from ctrain_dist.trial.learner import ModelLearner
from ctrain_dist.trial.loop import train
from ctrain_dist.trial.metrics import evaluate_split

QUICKSTART = Path(__file__).parents[1] / "sweeps" / "quickstart.yaml"
TOL = 0.3


def _unit(start: float = 3.0, seeds: int | None = None):
    """The unit problem's parameter (packed: starts 3, 3.5, 4, …) and exact oracle."""
    batch = () if seeds is None else (seeds,)
    starts = start + 0.5 * torch.arange(seeds or 1, dtype=torch.float64)
    x = torch.nn.Parameter(starts.reshape(*batch, 1))

    def estimate():
        return ((x - 2) ** 2).sum(-1), x - 1

    return x, estimate


def _run(settings: dict, steps: int, start: float = 3.0, member_seeds=None):
    """``steps`` steps alone; the algorithm, parameter, and each step's (iterate, η_k,
    objective?) as computed by hand from the switch rule."""
    x, estimate = _unit(start)
    algorithm = build_algorithm("switching_subgradient", [x], 1, settings, None, None, member_seeds)
    history = []
    for k in range(steps):
        iterate = x.detach().clone()
        lr = settings["lr"] / (
            math.sqrt(k + 1) if settings.get("step_rule") == "diminishing" else 1
        )
        history.append((iterate, lr, iterate.item() - 1 <= TOL))
        algorithm.step(estimate)
    return algorithm, x, history


def _output(algorithm, x) -> torch.Tensor:
    with algorithm.output_iterate():
        return x.detach().clone()


@pytest.mark.parametrize("step_rule", ["constant", "diminishing"])
def test_average_output_is_the_step_weighted_average_of_the_objective_step_iterates(step_rule):
    settings = {"lr": 0.2, "tol": TOL, "output": "average", "step_rule": step_rule}
    algorithm, x, history = _run(settings, 40)
    chosen = [(iterate, lr) for iterate, lr, objective in history if objective]
    assert 5 < len(chosen) < 35  # both branches taken
    expected = sum(lr * iterate for iterate, lr in chosen) / sum(lr for _, lr in chosen)
    torch.testing.assert_close(_output(algorithm, x), expected, rtol=1e-12, atol=0)
    assert not torch.allclose(_output(algorithm, x), x.detach())  # not the last iterate


def test_random_output_is_an_objective_step_iterate_drawn_from_the_trial_seed():
    settings = {"lr": 0.2, "tol": TOL, "output": "random"}
    picks = []
    for seed in range(12):
        algorithm, x, history = _run(settings, 40, member_seeds=[seed])
        output = _output(algorithm, x)
        objective = [iterate for iterate, _, chosen in history if chosen]
        assert any(torch.equal(output, iterate) for iterate in objective)
        again, y, _ = _run(settings, 40, member_seeds=[seed])
        assert torch.equal(_output(again, y), output)  # reproducible from the seed
        picks.append(output.item())
    assert len(set(picks)) > 4  # different seeds draw different iterates


def test_random_output_draws_each_objective_step_with_probability_proportional_to_its_step():
    """2000 packed members, every step an objective step, diminishing steps: iterate k is kept
    with probability η_k / Σ η_s. The hash is deterministic, so this cannot flake; a bias
    in it (or in the reservoir rule) would fail it."""
    members, steps = 2000, 4
    x = torch.nn.Parameter(torch.zeros(members, 1, dtype=torch.float64))
    settings = {"lr": 1.0, "tol": 10.0, "output": "random", "step_rule": "diminishing"}
    algorithm = build_algorithm(
        "switching_subgradient", [x], 1, settings, members, None, range(members)
    )

    def estimate():  # ∇f = −1: x^k = Σ_{s<k} η_s identifies the step
        return -x.sum(-1), x - 100

    iterates = []
    for _ in range(steps):
        iterates.append(x[0].item())
        algorithm.step(estimate)
    output = _output(algorithm, x).squeeze(-1)
    weights = torch.tensor([1 / math.sqrt(k + 1) for k in range(steps)])
    counts = torch.tensor([(output == value).sum().item() for value in iterates])
    assert counts.sum() == members
    expected = members * weights / weights.sum()
    assert ((counts - expected).abs() < 4 * expected.sqrt()).all(), (counts, expected)


def test_counter_uniforms_are_a_function_of_key_and_counter_alone():
    keys = member_keys([3, 5, 8], torch.device("cpu"))
    table = counter_uniforms(keys, 0, 64)
    assert torch.equal(counter_uniforms(keys[1], 32, 32), table[1, 32:])
    assert table.min() >= 0 and table.max() < 1
    assert len(set(table.flatten().tolist())) == table.numel()


@pytest.mark.parametrize("rule", ["random", "average"])
def test_output_swaps_in_for_the_body_and_restores_the_last_iterate_bitwise(rule):
    algorithm, x, _ = _run({"lr": 0.2, "tol": TOL, "output": rule}, 30, member_seeds=[1])
    last = x.detach().clone()
    with algorithm.output_iterate():
        assert not torch.equal(x, last)
    assert torch.equal(x, last)


def test_before_any_objective_step_the_output_is_the_current_iterate():
    algorithm, x, history = _run({"lr": 0.01, "tol": 0.0, "output": "average"}, 5, start=50.0)
    assert not any(objective for _, _, objective in history)
    assert torch.equal(_output(algorithm, x), x.detach())


@pytest.mark.parametrize("rule", ["random", "average"])
def test_packed_members_keep_the_output_they_keep_alone(rule):
    settings = {"lr": 0.2, "tol": TOL, "output": rule, "step_rule": "diminishing"}
    x, estimate = _unit(seeds=3)
    packed = build_algorithm("switching_subgradient", [x], 1, settings, 3, None, [7, 8, 9])
    for _ in range(40):
        packed.step(estimate)
    outputs = _output(packed, x)
    for member, seed in enumerate([7, 8, 9]):
        algorithm, y, _ = _run(settings, 40, start=3.0 + 0.5 * member, member_seeds=[seed])
        torch.testing.assert_close(_output(algorithm, y), outputs[member], rtol=0, atol=1e-12)


@pytest.mark.parametrize("rule", ["random", "average"])
def test_the_output_resumes_bitwise_across_a_draw_block(rule, monkeypatch):
    """Interrupted at step 7 with blocks of 5 draws: the resumed run redraws the block."""
    monkeypatch.setattr("ctrain_dist.algorithms.output_iterate.BLOCK", 5)
    settings = {"lr": 0.2, "tol": TOL, "output": rule}
    x, estimate = _unit()
    algorithm = build_algorithm("switching_subgradient", [x], 1, settings, None, None, [4])
    for _ in range(7):
        algorithm.step(estimate)
    saved_x, saved = x.detach().clone(), copy.deepcopy(algorithm.state_dict())
    for _ in range(13):
        algorithm.step(estimate)
    y, other = _unit(start=9.0)
    with torch.no_grad():
        y.copy_(saved_x)
    resumed = build_algorithm("switching_subgradient", [y], 1, settings, None, None, [99])
    resumed.load_state_dict(saved)
    for _ in range(13):
        resumed.step(other)
    assert_bitwise_equal(resumed.state_dict(), algorithm.state_dict())
    assert torch.equal(_output(resumed, y), _output(algorithm, x))


def test_a_checkpoint_from_before_the_output_rule_resumes_with_the_last_iterate():
    x, estimate = _unit()
    algorithm = build_algorithm("switching_subgradient", [x], 1, {"tol": TOL})
    for _ in range(3):
        algorithm.step(estimate)
    old = {key: value for key, value in algorithm.state_dict().items() if key != "output"}
    resumed = build_algorithm("switching_subgradient", [x], 1, {"tol": TOL})
    resumed.load_state_dict(old)
    assert resumed.iteration == 3
    assert torch.equal(resumed.objective_steps, algorithm.objective_steps)


class _Rows:
    def __init__(self) -> None:
        self.eval_rows: list[dict] = []

    def evals(self, rows):
        self.eval_rows.extend(rows)

    def finish(self, trial_row):
        self.trial_row = trial_row


def _trials(rule: str, seeds: str = "[3]"):
    params = json.dumps({"lr": 0.05, "tol": 0.0, "output": rule})
    return load_spec(
        QUICKSTART,
        [
            f"seeds={seeds}",
            f"algorithms=[{{name: switching_subgradient, params: {params}}}]",
            "training.budget.steps=30",
            "training.eval_every=30",
            "training.checkpoint_every=30",
            "training.dtype=float64",
        ],
    ).trials()


def test_a_trial_with_average_output_evaluates_the_averaged_model(tmp_path):
    (trial,) = _trials("average")
    sink, path = _Rows(), tmp_path / "checkpoint.pt"
    train([trial], sink, checkpoint=path)
    state = torch.load(path, weights_only=True)
    learner = ModelLearner(
        trial, load_data(trial.data, trial.split), Workers(), torch.device("cpu")
    )
    learner.load_state_dict(state)
    model = learner.model
    features, labels, groups = learner.data.split("test")

    def test_metrics():
        return evaluate_split(model, learner.problem, features, labels, groups, 2)

    last = test_metrics()
    with torch.no_grad():
        torch._foreach_copy_(list(model.parameters()), state["algorithm"]["output"]["iterate"])
    averaged = test_metrics()
    (row,) = [r for r in sink.eval_rows if r["step"] == 30 and r["split"] == "test"]
    assert row["objective"] == pytest.approx(averaged["objective"], rel=1e-12)
    assert row["objective"] != pytest.approx(last["objective"], rel=1e-6)
    assert sink.trial_row["final_test_objective"] == row["objective"]


def test_a_packed_trial_with_random_output_writes_the_rows_it_writes_alone():
    trials = _trials("random", "[3, 5]")
    packed = _Rows()
    train(trials, packed)
    for trial in trials:
        alone = _Rows()
        train([trial], alone)
        mine = [r for r in packed.eval_rows if r["trial_id"] == trial.trial_id]
        for a, p in zip(alone.eval_rows, mine, strict=True):
            assert p["objective"] == pytest.approx(a["objective"], rel=0, abs=1e-10)
            assert p["accuracy"] == pytest.approx(a["accuracy"], rel=0, abs=1e-10)


@pytest.mark.slow
def test_a_step_compiled_whole_keeps_the_random_output_the_eager_step_keeps():
    """Compiled, the draw is the iteration's own hash rather than a column of the eager
    table: the same numbers, so the same output (the average has no compiled path of its
    own; ``test_compiled`` covers the step at its defaults)."""
    from ctrain_dist.trial.compiled import Step

    (trial,) = _trials("random")
    data = load_data(trial.data, trial.split)
    eager, compiled = (ModelLearner(trial, data, Workers(), torch.device("cpu")) for _ in range(2))
    steps = (Step(eager, False), Step(compiled, "default"))
    for _ in range(30):
        for step in steps:
            step()
    assert steps[1].whole
    for a, b in zip(eager.algorithm.output.iterate, compiled.algorithm.output.iterate, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)
    assert torch.equal(eager.algorithm.output.weight, compiled.algorithm.output.weight)


@pytest.mark.parametrize("rule", ["random", "average"])
def test_packed_configurations_with_their_own_step_sizes_keep_the_output_they_keep_alone(rule):
    members = [{"lr": lr, "tol": TOL, "output": rule} for lr in (0.1, 0.2, 0.3)]
    x, estimate = _unit(seeds=3)
    packed = build_algorithm("switching_subgradient", [x], 1, members, 3, None, [7, 8, 9])
    assert set(packed._member_values) == {"lr"}
    for _ in range(40):
        packed.step(estimate)
    outputs = _output(packed, x)
    for member, (settings, seed) in enumerate(zip(members, [7, 8, 9], strict=True)):
        algorithm, y, _ = _run(settings, 40, start=3.0 + 0.5 * member, member_seeds=[seed])
        torch.testing.assert_close(_output(algorithm, y), outputs[member], rtol=0, atol=1e-12)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_random_output_draws_on_cuda_what_it_draws_on_the_cpu():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    table = counter_uniforms(member_keys([3, 5, 2**40], cpu), 1000, 2048)
    assert torch.equal(counter_uniforms(member_keys([3, 5, 2**40], cuda), 1000, 2048).cpu(), table)
    settings = {"lr": 0.2, "tol": TOL, "output": "random", "step_rule": "diminishing"}
    outputs = []
    for device in (cpu, cuda):
        x = torch.nn.Parameter((3.0 + 0.5 * torch.arange(3, dtype=torch.float64)).reshape(3, 1))
        x = torch.nn.Parameter(x.detach().to(device))

        def estimate(x=x):
            return ((x - 2) ** 2).sum(-1), x - 1

        algorithm = build_algorithm("switching_subgradient", [x], 1, settings, 3, None, [7, 8, 9])
        for _ in range(40):
            algorithm.step(estimate)
        outputs.append(_output(algorithm, x).cpu())
    torch.testing.assert_close(outputs[1], outputs[0], rtol=0, atol=1e-12)
