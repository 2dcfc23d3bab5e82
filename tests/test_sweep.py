"""A real two-trial sweep on a local Ray into a temporary store, and the report on that store."""

from pathlib import Path

import duckdb
import pytest

from ctrain_dist import store
from ctrain_dist.analysis.report import write_report
from ctrain_dist.cli.main import main
from ctrain_dist.errors import SpecError
from ctrain_dist.launch.ray_sweep import run_sweep
from ctrain_dist.spec import load_spec

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
    for column in ("final_test_objective", "final_test_max_violation", "final_test_accuracy"):
        assert trials[column].notna().all()


def test_evals_hold_every_evaluation_point_for_every_split(swept):
    evals = store.open(swept[0]).evals("two-trials")
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
