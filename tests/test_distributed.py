"""Exact data parallelism: R workers on slices of one minibatch equal one process on all of it.

Real process groups: gloo on CPU, spawned processes, float64, the embedded Adult data.
"""

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch.multiprocessing import ProcessRaisedException

from ctrain_dist.algorithms import ALGORITHMS
from ctrain_dist.constraints import ConstrainedProblem, LossGap
from ctrain_dist.data.load import load_data
from ctrain_dist.data.sampler import MinibatchSampler
from ctrain_dist.spec import load_spec
from ctrain_dist.store.schema import TEST, final_column
from ctrain_dist.trial import distributed, runner
from ctrain_dist.trial.loop import train

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


DATA_PARALLEL = sorted(name for name, cls in ALGORITHMS.items() if cls.data_parallel)


SPARSE = [
    "data.sensitive=race",
    "training.batch_size=8",
    "constraints=[{kind: equalized_odds, bound: 0.05}, {kind: loss_gap, bound: 0.02}]",
]
"""Batches of 8 over race groups with equalized odds: many global batches lack a group or a
(group, label) cell, and a rank's 4-row slice lacks one far more often."""


def _trials(name: str = "invariance", *overrides: str):
    spec = load_spec(
        QUICKSTART,
        [
            f"name={name}",
            "seeds=[3]",
            f"algorithms={[{'name': n} for n in DATA_PARALLEL]}",
            f"training.budget.steps={STEPS}",
            f"training.eval_every={STEPS // 2}",
            f"training.checkpoint_every={STEPS}",
            "training.dtype=float64",
            *overrides,
        ],
    )
    return spec.trials()


def _train_all(folder: str, *overrides: str) -> None:
    """Every rank trains every algorithm's trial; rank 0 checkpoints each at the last step."""
    for trial in _trials("invariance", *overrides):
        train([trial], ListSink(), checkpoint=Path(folder) / f"{trial.algorithm}.pt")


def _counting_worker(folder: str) -> None:
    """Counts this package's collectives and the oracle's calls during each algorithm's run."""
    from ctrain_dist.trial.learner import ModelLearner

    calls = {"all_reduce": 0, "estimate": 0}
    all_reduce, estimate = dist.all_reduce, ModelLearner.estimate

    def counted_all_reduce(*args, **kwargs):
        calls["all_reduce"] += 1
        return all_reduce(*args, **kwargs)

    def counted_estimate(self):
        calls["estimate"] += 1
        return estimate(self)

    dist.all_reduce = counted_all_reduce
    ModelLearner.estimate = counted_estimate
    results = {}
    for trial in _trials():
        no_evaluation = trial.training.model_copy(update={"eval_every": 10 * STEPS})
        calls.update(all_reduce=0, estimate=0)
        train([trial.model_copy(update={"training": no_evaluation})], ListSink())
        results[trial.algorithm] = (calls["all_reduce"], calls["estimate"])
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


@pytest.fixture(scope="module")
def sparse_checkpoints(tmp_path_factory) -> tuple[Path, Path]:
    one = tmp_path_factory.mktemp("sparse-one")
    two = tmp_path_factory.mktemp("sparse-two")
    _train_all(str(one), *SPARSE)
    distributed.launch_local(2, _train_all, (str(two), *SPARSE))
    return one, two


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", DATA_PARALLEL)
def test_two_workers_equal_one_process(checkpoints, algorithm):
    _assert_same_run(checkpoints, algorithm)


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", DATA_PARALLEL)
def test_two_workers_equal_one_process_where_batches_lack_a_group(sparse_checkpoints, algorithm):
    one, two = _assert_same_run(sparse_checkpoints, algorithm)
    assert one["empty_group_estimates"].sum() > 0
    assert torch.equal(one["empty_group_estimates"], two["empty_group_estimates"])


def _assert_same_run(checkpoints: tuple[Path, Path], algorithm: str) -> tuple[dict, dict]:
    """One process's and two workers' runs agree to 1e-9: parameters, state, curves."""
    one, two = (
        torch.load(folder / f"{algorithm}.pt", weights_only=False) for folder in checkpoints
    )
    assert one["step"] == two["step"] == STEPS
    for name, value in one["model"].items():
        torch.testing.assert_close(two["model"][name], value, rtol=1e-9, atol=1e-11)
    for key, value in one["algorithm"].items():
        if isinstance(value, torch.Tensor):
            torch.testing.assert_close(two["algorithm"][key], value, rtol=1e-9, atol=1e-11)
    histories = (state["seeds"][0]["history"] for state in (one, two))
    for row_one, row_two in zip(*histories, strict=True):
        constraints = [k for k in row_one if k.startswith(("constraint_", "multiplier_"))]
        for key in [*constraints, "objective"]:
            assert row_two[key] == pytest.approx(row_one[key], rel=1e-9, abs=1e-11), key
    return one, two


def test_an_algorithm_that_is_not_data_parallel_is_refused_several_workers():
    from ctrain_dist.errors import SpecError

    single = sorted(set(ALGORITHMS) - set(DATA_PARALLEL))
    assert single, "every algorithm is data parallel: this test has nothing to check"
    with pytest.raises(SpecError) as caught:
        load_spec(
            QUICKSTART,
            [f"algorithms=[{{name: {single[0]}}}]", "resources.workers_per_trial=2"],
        )
    assert caught.value.field == "algorithms.0.name"


def test_averaging_per_rank_constraint_values_is_biased():
    trial = _trials()[0]
    data = load_data(trial.data, trial.split).to(dtype=torch.float64)
    rows = MinibatchSampler(data.splits["train"], trial.training.batch_size, trial.seed).next()
    torch.manual_seed(0)
    logits = torch.randn(len(rows), dtype=torch.float64)
    problem = ConstrainedProblem([LossGap(0.05, num_groups=2)])

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


@pytest.mark.slow
def test_a_sweep_of_two_worker_trials_completes(tmp_path):
    from ctrain_dist import store
    from ctrain_dist.launch.ray_sweep import run_sweep

    spec = load_spec(
        QUICKSTART,
        [
            "name=two-workers",
            "seeds=[0, 1]",
            "algorithms=[{name: ssl_alm}]",
            "training.budget.steps=40",
            "training.eval_every=20",
            "resources.workers_per_trial=2",
            "resources.cpus_per_trial=1",
        ],
    )
    outcome = run_sweep(spec, tmp_path, log=lambda _: None)
    assert outcome.statuses == {"finished": 2}
    trials = store.open(tmp_path).trials("two-workers")
    assert list(trials["workers"]) == [2, 2]
    evals = store.open(tmp_path).evals("two-workers")
    assert sorted(set(evals["step"])) == [0, 20, 40]


def test_a_worker_request_that_cannot_fit_exits_2_naming_the_resources(tmp_path, capsys):
    import os

    from ctrain_dist.cli.main import main

    cpus = os.cpu_count()
    code = main(
        [
            "sweep",
            str(QUICKSTART),
            "--set",
            "resources.workers_per_trial=2",
            "--set",
            f"resources.cpus_per_trial={cpus}",
            "--store",
            str(tmp_path / "store"),
        ]
    )
    assert code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("ctrain: error: resources:") and "workers" in error
    assert not (tmp_path / "store").exists()


@pytest.mark.slow
def test_ctrain_train_with_two_processes_writes_the_metrics_of_one(tmp_path):
    import subprocess
    import sys

    from ctrain_dist import store

    finals = []
    for nproc in (1, 2):
        root = tmp_path / f"nproc{nproc}"
        subprocess.run(
            [
                sys.executable, "-m", "ctrain_dist.cli", "train", str(QUICKSTART),
                "--set", "seeds=[0]", "--set", "algorithms=[{name: ssl_alm}]",
                "--set", "training.budget.steps=200", "--store", str(root),
                "--nproc", str(nproc),
            ],
            check=True,
            capture_output=True,
            timeout=300,
        )  # fmt: skip
        trials = store.open(root).trials()
        assert len(trials) == 1 and trials["status"].iloc[0] == "finished"
        finals.append(trials.iloc[0])
    columns = [c for c in finals[0].index if c.startswith(final_column(TEST, ""))]
    assert final_column(TEST, "objective") in columns
    for column in columns:
        assert finals[1][column] == pytest.approx(finals[0][column], abs=1e-4, nan_ok=True), column
    assert finals[1]["workers"] == 2


class _BrokenSink(ListSink):
    """Fails on rank 0 at the first evaluation after step 0; the other ranks get no rows."""

    def evals(self, rows):
        if rows and rows[0]["step"] > 0:
            raise RuntimeError("rank 0's sink broke")
        super().evals(rows)


def _rank_zero_fails(log_path: str) -> None:
    def log(line: str) -> None:
        with open(log_path, "a") as handle:
            handle.write(line + "\n")

    runner.run_pack([_trials()[0]], _BrokenSink(), attempts=3, log=log)


@pytest.mark.slow
def test_a_rank_that_raises_ends_every_rank_and_reaches_the_launcher_without_a_retry(tmp_path):
    """Rank 1 waits in a collective rank 0 never joins: only the launcher can end it.

    torch's launcher raises the error of the first failed rank it sees; when rank 1's
    consequent "connection closed" ends at nearly the same moment as rank 0, that one may be
    the rank it reports (seen once under load), so either message counts as reaching it."""
    log = tmp_path / "runner.log"
    with pytest.raises(
        ProcessRaisedException, match=r"rank 0's sink broke|Connection closed by peer"
    ):
        distributed.launch_local(2, _rank_zero_fails, (str(log),))
    assert not log.exists(), "run_pack recorded or retried inside a process group"


WORKER_ONLY_FAILURE = """
import os

from torch import nn


def model(num_features, num_outputs, dtype):
    # Builds on the driver (its plug-in check passes) and fails in the ranks, as a model that
    # needs something only the workers lack would: a failure no check before the run can see.
    if "RANK" in os.environ:
        raise RuntimeError("the workers cannot build this model")
    return nn.Linear(num_features, num_outputs, dtype=dtype)
"""


@pytest.mark.slow
def test_ctrain_train_with_two_processes_records_and_retries_a_failed_trial(
    tmp_path, capsys, monkeypatch
):
    from ctrain_dist import store
    from ctrain_dist.cli.main import main

    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "worker_only_failure.py").write_text(WORKER_ONLY_FAILURE)
    monkeypatch.syspath_prepend(str(plugins))
    monkeypatch.setenv("PYTHONPATH", str(plugins))  # the spawned ranks import it too
    overrides = [
        "seeds=[0]",
        "algorithms=[{name: ssl_alm}]",
        "model.factory=worker_only_failure:model",
        "max_failures=1",
    ]
    arguments = [item for override in overrides for item in ("--set", override)]
    store_root = tmp_path / "store"
    code = main(["train", str(QUICKSTART), *arguments, "--nproc", "2", "--store", str(store_root)])
    assert code == 1
    attempts = store.open(store_root).trials(all_attempts=True)
    assert list(attempts["status"]) == ["error", "error"]
    assert attempts["attempt_id"].nunique() == 2
    assert all("the workers cannot build this model" in error for error in attempts["error"])
    assert "attempt 1 of 2 failed" in capsys.readouterr().out
