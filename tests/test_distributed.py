"""Exact data parallelism: R workers on slices of one minibatch equal one process on all of it.

Real process groups: gloo on CPU, spawned processes, float64, the embedded Adult data.
"""

from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from ctrain_dist import distributed
from ctrain_dist.algorithms import ALGORITHMS
from ctrain_dist.constraints import ConstrainedProblem, LossGap
from ctrain_dist.data.load import load_data
from ctrain_dist.data.sampler import MinibatchSampler
from ctrain_dist.spec import load_spec
from ctrain_dist.trainer import train

QUICKSTART = Path(__file__).parents[1] / "sweeps" / "quickstart.yaml"
STEPS = 100


class ListSink:
    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.trial: dict | None = None

    def evals(self, rows):
        self.rows.extend(rows)

    def finish(self, trial_row):
        self.trial = trial_row


def _trials(name: str = "invariance"):
    spec = load_spec(
        QUICKSTART,
        [
            f"name={name}",
            "seeds=[3]",
            f"algorithms={[{'name': n} for n in sorted(ALGORITHMS)]}",
            f"training.budget.steps={STEPS}",
            f"training.eval_every={STEPS // 2}",
            f"training.checkpoint_every={STEPS}",
            "training.dtype=float64",
        ],
    )
    return spec.trials()


def _train_all(folder: str, counts: dict | None = None) -> None:
    """Every rank trains every algorithm's trial; rank 0 checkpoints each at the last step."""
    for trial in _trials():
        train(trial, ListSink(), checkpoint=Path(folder) / f"{trial.algorithm}.pt")


def _counting_worker(folder: str) -> None:
    """Counts this package's collectives per training step for each algorithm."""
    calls = {"all_reduce": 0}
    original = dist.all_reduce

    def counted(*args, **kwargs):
        calls["all_reduce"] += 1
        return original(*args, **kwargs)

    dist.all_reduce = counted
    results = {}
    for trial in _trials():
        trial = trial.model_copy(
            update={"training": trial.training.model_copy(update={"eval_every": 1000})}
        )
        estimates = {"n": 0}
        from ctrain_dist import trainer as trainer_module

        original_estimate = trainer_module._Run.estimate

        def counting_estimate(self, _original=original_estimate):
            estimates["n"] += 1
            return _original(self)

        trainer_module._Run.estimate = counting_estimate
        calls["all_reduce"] = 0
        train(trial, ListSink())
        trainer_module._Run.estimate = original_estimate
        results[trial.algorithm] = (calls["all_reduce"], estimates["n"])
    if dist.get_rank() == 0:
        torch.save(results, Path(folder) / "counts.pt")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> tuple[Path, Path]:
    one = tmp_path_factory.mktemp("one")
    two = tmp_path_factory.mktemp("two")
    _train_all(str(one))
    distributed.launch_local(2, _train_all, (str(two),))
    return one, two


def test_the_ranks_slices_hold_different_minority_counts():
    trial = _trials()[0]
    data = load_data(trial.data, trial.split)
    rows = MinibatchSampler(data.splits["train"], trial.training.batch_size, trial.seed).next()
    counts = [
        int((data.groups[distributed.local_slice(rows, distributed.Workers(r, 2))] == 0).sum())
        for r in range(2)
    ]
    assert counts[0] != counts[1]


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_two_workers_equal_one_process(checkpoints, algorithm):
    one, two = (torch.load(folder / f"{algorithm}.pt", weights_only=False) for folder in checkpoints)
    assert one["step"] == two["step"] == STEPS
    for name, value in one["model"].items():
        torch.testing.assert_close(two["model"][name], value, rtol=1e-9, atol=1e-11)
    for key, value in one["algorithm"].items():
        if isinstance(value, torch.Tensor):
            torch.testing.assert_close(two["algorithm"][key], value, rtol=1e-9, atol=1e-11)
    for row_one, row_two in zip(one["history"], two["history"], strict=True):
        constraints = [k for k in row_one if k.startswith(("constraint_", "multiplier_"))]
        for key in constraints + ["objective"]:
            assert row_two[key] == pytest.approx(row_one[key], rel=1e-9, abs=1e-11), key


def test_averaging_per_rank_constraint_values_is_biased():
    trial = _trials()[0]
    data = load_data(trial.data, trial.split).to(dtype=torch.float64)
    rows = MinibatchSampler(data.splits["train"], trial.training.batch_size, trial.seed).next()
    torch.manual_seed(0)
    logits = torch.randn(len(rows), dtype=torch.float64)
    problem = ConstrainedProblem([LossGap(0.05)])

    def stats(part):
        return problem.statistics(logits[part], data.labels[rows][part], data.groups[rows][part])

    halves = [slice(0, 32), slice(32, 64)]
    _, exact = problem.evaluate(sum(stats(h) for h in halves))
    _, whole = problem.evaluate(stats(slice(0, 64)))
    averaged = sum(problem.evaluate(stats(h))[1] for h in halves) / 2
    torch.testing.assert_close(exact, whole)
    assert (averaged - exact).abs().max() > 1e-3


@pytest.mark.slow
def test_one_collective_per_estimate_besides_ddp(tmp_path):
    distributed.launch_local(2, _counting_worker, (str(tmp_path),))
    counts = torch.load(tmp_path / "counts.pt", weights_only=False)
    for algorithm, (collectives, estimates) in counts.items():
        assert collectives == estimates, algorithm
        assert estimates >= STEPS, algorithm
