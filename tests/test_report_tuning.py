"""The report's tuning stage: shown when an algorithm tried several configurations, apart from
its confirmation stage, with tuning curves, the feasible share, the selection and sensitivity."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from ctrain_dist import store
from ctrain_dist.analysis import stats
from ctrain_dist.analysis.report import Settings, build_report, write_report
from ctrain_dist.analysis.report.tuning import build_tuning, stage_comparison
from ctrain_dist.store import StoreWriter

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
T0 = datetime(2025, 1, 1, tzinfo=UTC)
LRS = (0.001, 0.01, 0.1, 1.0)
# Validation (objective, max violation) per learning rate: a realistic U-shape in the objective;
# sgd ignores the constraint (violations above 0.02 except at the smallest step), alm meets it
# except at the largest, whose seed 1 diverges.
VALUES = {
    "sgd": {0.001: (0.60, 0.01), 0.01: (0.45, 0.05), 0.1: (0.38, 0.09), 1.0: (0.41, 0.12)},
    "alm": {0.001: (0.62, 0.00), 0.01: (0.48, 0.004), 0.1: (0.40, 0.01), 1.0: (0.39, 0.03)},
}
TOLERANCE = 0.02


def row(sweep: str, algorithm: str, lr: float, seed: int, objective: float, violation: float):
    diverged = algorithm == "alm" and lr == 1.0 and seed == 1
    finals = {
        f"final_{split}_{metric}": value
        for split in ("train", "val", "test")
        for metric, value in {
            "objective": objective + 0.01 * seed,
            "max_violation": violation,
            "accuracy": 0.82,
        }.items()
    }
    return {
        "sweep_id": sweep,
        "trial_id": f"{algorithm}-{lr:g}-{seed}",
        "attempt_id": f"{algorithm}-{lr:g}-{seed}-a",
        "algorithm": algorithm,
        "constrained": algorithm != "sgd",
        "config_label": f"{algorithm}(lr={lr:g})",
        "seed": seed,
        "status": "diverged" if diverged else "finished",
        "error": None,
        "hp_lr": lr,
        "hp_rho": 1.0,
        "started_at": T0,
        "ended_at": T0 + timedelta(seconds=20),
        "wall_time_s": 20.0,
        "steps": 300,
        "group_names": json.dumps(["female", "male"]),
        "config_json": json.dumps({"data": {"dataset": "adult", "sensitive": "sex"}}),
        **finals,
    }


@pytest.fixture(scope="module")
def tuned_store(tmp_path_factory: pytest.TempPathFactory) -> store.Store:
    """Sweep ``tune``: 2 algorithms × 4 learning rates × 2 seeds; ``tune-confirm``: each
    algorithm's selected configuration on 3 fresh seeds; ``plain``: one configuration each."""
    root = tmp_path_factory.mktemp("tuning") / "store"
    tune = [
        row("tune", algorithm, lr, seed, *VALUES[algorithm][lr])
        for algorithm in VALUES
        for lr in LRS
        for seed in (0, 1)
    ]
    StoreWriter(root, "tune").write_trials(tune)
    selected = {"sgd": 0.001, "alm": 0.1}  # feasible first, then the lowest median objective
    confirm = [
        row("tune-confirm", algorithm, lr, seed, VALUES[algorithm][lr][0] + 0.02, 0.015)
        for algorithm, lr in selected.items()
        for seed in (2, 3, 4)
    ]
    StoreWriter(root, "tune-confirm").write_trials(confirm)
    plain = [row("plain", "sgd", 0.01, seed, 0.45, 0.0) for seed in (0, 1)]
    StoreWriter(root, "plain").write_trials(plain)
    return store.open(root)


@pytest.fixture(scope="module")
def report_dir(tuned_store: store.Store, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tuning-report")
    write_report(tuned_store, out, "tune", Settings(tolerance=TOLERANCE))
    return out


@pytest.mark.slow  # the report_dir fixture writes a two-part report: ~15 s here
def test_the_tuning_stage_and_the_confirmation_stage_are_labelled_apart(report_dir: Path) -> None:
    markdown = (report_dir / "report.md").read_text()
    assert "## Task tune, selection (configurations chosen on these seeds" in markdown
    assert "optimistic), sweep `tune`: Tuning stage (validation)" in markdown
    assert "## Task tune, confirmation (the selected configurations on fresh seeds" in markdown
    assert "## Task tune: tuning stage and confirmation stage" in markdown
    assert markdown.index("Tuning stage (validation)") < markdown.index("sweep `tune-confirm`")


@pytest.mark.slow  # the report_dir fixture writes a two-part report: ~15 s here
def test_the_tuning_table_shows_n_feasible_share_with_its_interval_and_the_selection(
    report_dir: Path,
) -> None:
    markdown = (report_dir / "report.md").read_text()
    lines = [line for line in markdown.splitlines() if line.startswith("| sgd | 4 | 2 |")]
    assert len(lines) == 1, markdown
    assert "1/4 [" in lines[0]  # only lr 0.001 is within the tolerance
    assert "`sgd(lr=0.001)`" in lines[0]
    alm = next(line for line in markdown.splitlines() if line.startswith("| alm | 4 | 2 |"))
    assert "3/4 [" in alm and "`alm(lr=0.1)`" in alm  # lr 1 infeasible: violation, divergence
    assert "Wilson 95%" in markdown and "family: none" in markdown


@pytest.mark.slow  # the report_dir fixture writes a two-part report: ~15 s here
def test_the_stage_table_shows_both_stages_numbers_with_their_n_and_method(
    report_dir: Path,
) -> None:
    markdown = (report_dir / "report.md").read_text()
    section = markdown.split("## Task tune: tuning stage and confirmation stage")[1]
    alm = next(line for line in section.splitlines() if line.startswith("| alm |"))
    cells = [c.strip() for c in alm.strip("|").split("|")]
    assert cells[2] == "2" and cells[4] == "3"  # seeds in each stage
    assert cells[3].startswith("0.405 / 0.01")  # median of 0.40 and 0.41
    assert cells[5].startswith("0.45 [")  # fresh seeds 2, 3, 4: 0.44, 0.45, 0.46
    assert cells[6].startswith("3/3 [")
    assert "95% Student t" in section and "Wilson 95%" in section


@pytest.mark.slow  # the report_dir fixture writes a two-part report: ~15 s here
def test_tuning_figures_exist_and_are_linked(report_dir: Path) -> None:
    markdown = (report_dir / "report.md").read_text()
    for name in ("tune.tuning_curves.png", "tune.sensitivity.png"):
        assert (report_dir / name).read_bytes().startswith(PNG_MAGIC)
        assert f"]({name})" in markdown
    assert not (report_dir / "tune-confirm.tuning_curves.png").exists()


def test_the_curve_falls_with_n_and_ends_at_the_selected_configuration(
    tuned_store: store.Store,
) -> None:
    tuning = build_report(tuned_store, "tune", Settings(tolerance=TOLERANCE)).tuning
    assert tuning is not None
    alm = tuning.curves[tuning.curves["algorithm"] == "alm"]
    assert alm["expected_best"].is_monotonic_decreasing
    assert alm["expected_best"].iloc[0] == pytest.approx((0.625 + 0.485 + 0.405) / 3)
    assert alm["p_any_feasible"].iloc[-1] == pytest.approx(1 - 0.25**4)
    assert set(tuning.sensitivity["hyperparameter"]) == {"lr"}  # rho was never varied


def test_a_sweep_with_one_configuration_per_algorithm_has_no_tuning_section(
    tuned_store: store.Store, tmp_path: Path
) -> None:
    markdown = write_report(tuned_store, tmp_path, "plain")
    assert "Tuning stage" not in markdown and "tuning stage" not in markdown
    assert not (tmp_path / "tuning_curves.png").exists()
    assert build_report(tuned_store, "plain").tuning is None


def test_a_configuration_stopped_early_counts_as_infeasible_and_is_counted() -> None:
    rows = [
        row("tune", "alm", lr, seed, *VALUES["alm"][lr]) for lr in (0.001, 0.01) for seed in (0, 1)
    ]
    stopped = {**row("tune", "alm", 0.1, 0, 0.0, 0.0), "status": "stopped"}
    for column in [c for c in stopped if c.startswith("final_")]:
        stopped[column] = None  # a stopped row has no final metrics
    trials = pd.DataFrame([*rows, stopped])
    tuning = build_tuning(trials, stats.select_configurations(trials), TOLERANCE)
    assert tuning is not None
    (alm,) = tuning.algorithms.to_dict("records")
    assert (alm["configurations"], alm["feasible"], alm["stopped"]) == (3, 2, 1)
    assert tuning.curves["p_any_feasible"].iloc[0] == pytest.approx(2 / 3)


def test_the_stage_table_names_a_confirmation_that_ran_another_configuration(
    tuned_store: store.Store,
) -> None:
    trials = tuned_store.trials("tune")
    strict = build_tuning(trials, stats.select_configurations(trials, tolerance=0.0), 0.0)
    assert strict is not None
    confirmed = stats.select_configurations(tuned_store.trials("tune-confirm"))
    frame = stage_comparison(strict, confirmed, 0.0).set_index("algorithm")
    assert frame.loc["alm", "config_label"] == "alm(lr=0.001)"  # only exactly feasible one
    assert frame.loc["alm", "confirmation_label"] == "alm(lr=0.1)"  # selected at 0.02
