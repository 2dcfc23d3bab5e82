"""A real two-trial sweep on a local Ray into a temporary store, and the report on that store."""

from pathlib import Path
from types import SimpleNamespace

import duckdb
import pytest

from ctrain_dist import store
from ctrain_dist.analysis.report import write_report
from ctrain_dist.cli.main import main
from ctrain_dist.errors import SpecError
from ctrain_dist.launch import ray_sweep
from ctrain_dist.launch.plan import checkpoint_path
from ctrain_dist.launch.ray_sweep import run_sweep
from ctrain_dist.spec import load_spec
from ctrain_dist.store import StoreWriter
from ctrain_dist.store.schema import TEST, final_column
from ctrain_dist.trial import runner
from ctrain_dist.trial.records import error_row, trial_row

QUICKSTART = Path(__file__).parents[1] / "sweeps" / "quickstart.yaml"
SMALL = [
    "name=two-trials",
    "seeds=1",
    "algorithms=[{name: sgd, params: {lr: 0.05}}, {name: ssl_alm}]",
    "training.budget.steps=60",
    "training.eval_every=25",
]


@pytest.fixture(scope="module")
def swept(tmp_path_factory) -> tuple[Path, list[str]]:
    """One sweep for the whole module: starting Ray costs seconds."""
    root = tmp_path_factory.mktemp("store")
    logged: list[str] = []
    outcome = run_sweep(load_spec(QUICKSTART, SMALL), root, log=logged.append)
    assert outcome.statuses == {"finished": 2}
    return root, logged


def test_every_trial_has_one_finished_row_with_final_test_metrics(swept):
    trials = store.open(swept[0]).trials("two-trials")
    assert sorted(trials["algorithm"]) == ["sgd", "ssl_alm"]
    assert set(trials["status"]) == {"finished"}
    for metric in ("objective", "max_violation", "accuracy"):
        assert trials[final_column(TEST, metric)].notna().all()


def test_evals_hold_every_evaluation_point_for_every_split(swept):
    evals = store.open(swept[0]).evals("two-trials")
    trial_ids = store.open(swept[0]).trials("two-trials")["trial_id"]
    assert set(evals["trial_id"]) == set(trial_ids) and len(trial_ids) == 2
    for _, rows in evals.groupby("trial_id"):
        assert sorted(set(rows["step"])) == [0, 25, 50, 60]
        assert len(rows) == 4 * 3


def test_duckdb_reads_the_store_directly(swept):
    pattern = str(swept[0] / "trials" / "*" / "*.parquet")
    count = duckdb.sql(
        f"select count(*) from read_parquet('{pattern}', hive_partitioning=true, "
        "union_by_name=true) where sweep_id = 'two-trials'"
    ).fetchall()[0][0]
    assert count == 2


def test_progress_is_logged_one_line_per_trial(swept):
    assert sum("finished" in line for line in swept[1]) == 2


def test_report_on_the_swept_store_compares_against_the_baseline(swept, tmp_path):
    markdown = write_report(store.open(swept[0]), tmp_path)
    assert "ssl_alm" in markdown and "sgd" in markdown
    assert (tmp_path / "convergence.png").read_bytes().startswith(b"\x89PNG")


def test_a_sweep_already_in_the_store_needs_resume(swept):
    with pytest.raises(SpecError) as caught:
        run_sweep(load_spec(QUICKSTART, SMALL), swept[0])
    assert caught.value.field == "name"


def test_resume_skips_finished_trials_without_starting_ray(swept):
    outcome = run_sweep(load_spec(QUICKSTART, SMALL), swept[0], resume=True, log=lambda _: None)
    assert outcome.skipped == 2 and outcome.statuses == {}


def test_a_trial_request_larger_than_the_machine_exits_2(tmp_path, capsys):
    code = main(
        [
            "sweep",
            str(QUICKSTART),
            "--set",
            "resources.cpus_per_trial=4096",
            "--store",
            str(tmp_path),
        ]
    )
    assert code == 2
    assert "resources.cpus_per_trial" in capsys.readouterr().err


def test_a_tune_trial_trains_its_pack_through_the_runner_retrying_max_failures_times(
    monkeypatch, tmp_path
):
    spec = load_spec(QUICKSTART, [*SMALL, "seeds=3", "seeds_per_trial=3", "max_failures=2"])
    (pack,) = [pack for pack in spec.packs() if pack[0].algorithm == "sgd"]
    calls = []
    monkeypatch.setattr(
        runner, "run_pack", lambda trials, sink, **options: calls.append((trials, sink, options))
    )
    _, fixed = ray_sweep._trainable(spec, tmp_path)
    ray_sweep.run_trial({"pack": [trial.model_dump(mode="json") for trial in pack], **fixed})
    ((trials, sink, options),) = calls
    assert trials == pack and isinstance(sink, ray_sweep.TuneSink)
    assert options == {"attempts": 3, "checkpoint": checkpoint_path(tmp_path, pack)}


def test_the_driver_counts_each_trial_by_its_latest_row_and_records_an_actor_crash_per_seed(
    tmp_path,
):
    spec = load_spec(QUICKSTART, [*SMALL, "seeds=2"])
    retried, *crashed = spec.trials()[:3]
    logged: list[str] = []
    callback = ray_sweep.StoreCallback(StoreWriter(tmp_path, spec.name), 3, logged.append)
    for row in (error_row(retried, "the oracle broke"), trial_row(retried, "a" * 32, "finished")):
        callback.on_trial_result(0, [], None, {"ctrain_trial": ray_sweep._encode(row)})
    actor = SimpleNamespace(
        config={"pack": [t.model_dump(mode="json") for t in crashed]},
        get_error=lambda: "the actor died",
    )
    callback.on_trial_error(0, [], actor)
    callback.on_experiment_end([])
    assert callback.statuses == {"finished": 1, "error": 2}
    attempts = store.open(tmp_path).trials(spec.name, all_attempts=True)
    assert sorted(attempts["status"]) == ["error", "error", "error", "finished"]
    assert len(logged) == 4 and "the actor died" in logged[-1]
