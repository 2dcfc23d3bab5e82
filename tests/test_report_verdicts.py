"""Specification of the report's verdicts: diverged seeds, pairing, feasibility, tasks, roles.

Stores are synthesised as real sweeps write them (``StoreWriter``, the schema's column names):
a diverged trial has status ``diverged``, a NaN objective and the metrics of a model that
predicts the majority class (accuracy 0.754, DP gap 0, max violation 0).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ctrain_dist import store
from ctrain_dist.analysis.report import build_report, build_study, write_report
from ctrain_dist.analysis.report.build import distinct_metrics
from ctrain_dist.analysis.stats import tasks
from ctrain_dist.cli.main import main
from ctrain_dist.store import StoreWriter
from ctrain_dist.store.schema import (
    ACCURACY,
    DP_GAP,
    INA,
    IND,
    LOSS_GAP,
    MAX_VIOLATION,
    OBJECTIVE,
    SPLITS,
    STATUS_DIVERGED,
    STATUS_FINISHED,
    TEST,
    final_column,
)

T0 = datetime(2025, 1, 1, tzinfo=UTC)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MAJORITY_CLASS = {OBJECTIVE: np.nan, ACCURACY: 0.754, DP_GAP: 0.0, MAX_VIOLATION: 0.0}


def trial_row(
    sweep: str,
    label: str,
    seed: int,
    objective: float,
    violation: float,
    status: str = STATUS_FINISHED,
    dataset: str = "adult",
) -> dict:
    """One trials row; a diverged one carries the majority-class metrics, whatever is passed."""
    measured = {OBJECTIVE: objective, ACCURACY: 0.82, DP_GAP: 0.1, MAX_VIOLATION: violation}
    metrics = MAJORITY_CLASS if status == STATUS_DIVERGED else measured
    algorithm = label.split("(")[0]
    return {
        "trial_id": f"{label}-{seed}",
        "attempt_id": f"{label}-{seed}-a",
        "algorithm": algorithm,
        "config_label": label,
        "seed": seed,
        "status": status,
        "ended_at": T0,
        "dataset": dataset,
        "constraint_names": json.dumps(["loss_gap[female-male]<=0.05"]),
        **{final_column(split, m): v for split in SPLITS for m, v in metrics.items()},
    }


def write_sweep(root: Path, sweep: str, configs: dict, dataset: str = "adult") -> None:
    """``configs``: label → list of (objective, violation, status) per seed 0, 1, …"""
    rows = [
        trial_row(sweep, label, seed, *outcome, dataset=dataset)
        for label, outcomes in configs.items()
        for seed, outcome in enumerate(outcomes)
    ]
    StoreWriter(root, sweep).write_trials(rows)


def ok(objective: float, violation: float = 0.0) -> tuple:
    return (objective, violation, STATUS_FINISHED)


DIVERGED = (np.nan, 0.0, STATUS_DIVERGED)


# 1. Diverged seeds ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def diverging(tmp_path_factory: pytest.TempPathFactory) -> store.Store:
    root = tmp_path_factory.mktemp("diverging")
    write_sweep(
        root,
        "study",
        {
            # diverges on 3 of 5 seeds; its 2 finite seeds look best and feasible
            "alm(lr=1)": [DIVERGED, DIVERGED, DIVERGED, ok(0.30), ok(0.31)],
            "alm(lr=0.1)": [ok(0.40 + 0.01 * s) for s in range(5)],
            # its only configuration, diverging on 2 seeds
            "pbm(lr=0.1)": [DIVERGED, ok(0.41), ok(0.42), DIVERGED, ok(0.43)],
            "sgd(lr=0.1)": [ok(0.35 + 0.01 * s, 0.02) for s in range(5)],
        },
    )
    return store.open(root)


def test_a_configuration_diverging_on_most_seeds_is_not_selected(diverging) -> None:
    report = build_report(diverging, "study")
    chosen = report.configurations.set_index("algorithm")["selected"]
    assert chosen["alm"] == "alm(lr=0.1)"


def test_diverged_seeds_are_counted_infeasible_and_shown_with_n(diverging) -> None:
    feasible = build_report(diverging, "study").feasibility.set_index("algorithm").loc["pbm"]
    assert feasible[["n", "diverged", "errored", "count"]].tolist() == [5, 2, 0, 3]


def test_diverged_seeds_rank_worst_in_the_verdict(diverging) -> None:
    verdicts = build_report(diverging, "study").verdicts.set_index(["a", "b"])
    pbm = verdicts.loc[("alm", "pbm")]
    assert (pbm["feasible_a"], pbm["feasible_b"]) == (5, 3)
    # pbm's three finished seeds are feasible like alm's, its two diverged ones lose to all
    assert pbm["poi"] > 0.5


def test_the_report_shows_n_and_the_diverged_count_per_algorithm(diverging, tmp_path: Path) -> None:
    markdown = write_report(diverging, tmp_path)
    assert "| pbm | 5 | 2 | 0 | worst (2 diverged) |" in markdown
    assert "3/5 (60%)" in markdown


# 3. The quickstart: shared seeds, paired tests, feasibility tested, lexicographic verdicts ----

QUICKSTART_SEEDS = range(5)
LUCK = [0.0, 0.02, -0.01, 0.03, 0.01]  # each seed's own luck, shared by every algorithm


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory: pytest.TempPathFactory) -> store.Store:
    root = tmp_path_factory.mktemp("quickstart")
    write_sweep(
        root,
        "quickstart",
        {
            "sgd(lr=0.05)": [ok(0.33 + LUCK[s], 0.04 + 0.01 * s) for s in QUICKSTART_SEEDS],
            "adam(lr=0.001)": [ok(0.32 + LUCK[s], 0.05 + 0.01 * s) for s in QUICKSTART_SEEDS],
            "ssl_alm(lr=0.05)": [ok(0.35 + LUCK[s] + 0.001 * s) for s in QUICKSTART_SEEDS],
            "switching_subgradient(lr=0.05)": [ok(0.37 + LUCK[s]) for s in QUICKSTART_SEEDS],
        },
    )
    return store.open(root)


@pytest.fixture(scope="module")
def quickstart_markdown(quickstart, tmp_path_factory) -> str:
    return write_report(quickstart, tmp_path_factory.mktemp("quickstart-report"))


def test_the_quickstart_report_pairs_seeds_shared_across_algorithms(quickstart_markdown) -> None:
    assert "| ssl_alm vs switching_subgradient | 5 / 5 | 5/5 vs 5/5 |" in quickstart_markdown
    assert "paired: paired t, rank check Wilcoxon signed-rank (exact)" in quickstart_markdown
    assert "| paired, 5 / 5 |" in quickstart_markdown


def test_the_quickstart_report_tests_feasibility_with_an_exact_p_value(quickstart) -> None:
    verdicts = build_report(quickstart, "quickstart").verdicts.set_index(["a", "b"])
    row = verdicts.loc[("sgd", "ssl_alm")]
    assert (row["feasible_a"], row["feasible_b"]) == (0, 5)
    assert row["rate_p"] == pytest.approx(2 / 2**10)  # Barnard, 0/5 vs 5/5
    assert row["family"] == 12


def test_the_quickstart_report_gives_a_lexicographic_verdict_per_pair(
    quickstart_markdown,
) -> None:
    assert "**ssl_alm** better (feasibility rate)" in quickstart_markdown
    assert "**ssl_alm** better (objective among feasible seeds)" in quickstart_markdown
    assert "Barnard's exact test, Newcombe's hybrid score interval" in quickstart_markdown


def test_a_pair_without_a_significant_difference_names_no_winner(quickstart_markdown) -> None:
    (row,) = [
        line for line in quickstart_markdown.splitlines() if line.startswith("| adam vs sgd |")
    ]
    assert row.endswith("| no significant difference |"), row


def test_the_quickstart_report_says_which_tests_cannot_reach_significance(
    quickstart_markdown,
) -> None:
    assert "the rank check (Wilcoxon signed-rank (exact)) cannot be significant" in (
        quickstart_markdown
    )
    assert "smallest attainable p, 0.062, is not below α/m = 0.00417" in quickstart_markdown


def test_a_baseline_makes_the_family_each_algorithm_against_it(quickstart, tmp_path) -> None:
    argv = ["report", "--store", str(quickstart.root), "--out", str(tmp_path)]
    assert main([*argv, "--baseline", "sgd"]) == 0
    markdown = (tmp_path / "report.md").read_text()
    assert "Family: 6 hypotheses (3 pair(s)" in markdown
    assert "| adam vs sgd |" in markdown and "ssl_alm vs switching_subgradient" not in markdown


def test_an_unknown_baseline_exits_2(quickstart, tmp_path) -> None:
    argv = ["report", "--store", str(quickstart.root), "--out", str(tmp_path)]
    assert main([*argv, "--baseline", "nope"]) == 2


def test_compare_tests_one_family_and_describes_the_rest(quickstart, tmp_path) -> None:
    argv = ["report", "--store", str(quickstart.root), "--out", str(tmp_path)]
    assert main([*argv, "--compare", "ssl_alm", "sgd"]) == 0
    markdown = (tmp_path / "compare-ssl_alm-vs-sgd.md").read_text()
    assert "Family: 2 hypotheses (1 pair(s)" in markdown
    assert "**Descriptive, not tested:**" in markdown
    assert "| accuracy | ssl_alm vs sgd |" in markdown


# 5. A sweep and its confirmation are reported apart ---------------------------------------------


@pytest.fixture(scope="module")
def confirmed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("confirmed")
    configs = {
        "sgd(lr=0.05)": [ok(0.33 + LUCK[s], 0.04) for s in QUICKSTART_SEEDS],
        "ssl_alm(lr=0.05)": [ok(0.35 + LUCK[s]) for s in QUICKSTART_SEEDS],
    }
    write_sweep(root, "quickstart", {**configs, "ssl_alm(lr=1)": [ok(0.5)] * 5})
    write_sweep(root, "quickstart-confirm", {k: v[:3] for k, v in configs.items()})
    return root


def test_a_sweep_and_its_confirmation_are_parts_of_one_task(confirmed) -> None:
    study = build_study(store.open(confirmed))
    assert [t.task.name for t in study.tasks] == ["quickstart"]
    roles = [(r.role, r.sweep_ids, sum(r.status_counts.values())) for r in study.parts]
    assert roles == [
        ("selection", ["quickstart"], 15),
        ("confirmation", ["quickstart-confirm"], 6),
    ]
    assert study.across is None


def test_ctrain_report_reports_selection_and_confirmation_apart(confirmed, tmp_path) -> None:
    assert main(["report", "--store", str(confirmed), "--out", str(tmp_path)]) == 0
    markdown = (tmp_path / "report.md").read_text()
    assert "## Task quickstart, selection (configurations chosen on these seeds" in markdown
    assert "## Task quickstart, confirmation (the selected configurations on fresh" in markdown
    assert "15 trials (finished 15)" in markdown and "6 trials (finished 6)" in markdown
    for sweep in ("quickstart", "quickstart-confirm"):
        assert (tmp_path / f"{sweep}.pareto.png").read_bytes().startswith(PNG_MAGIC)
        assert f"]({sweep}.pareto.png)" in markdown


def test_naming_the_confirmation_sweep_brings_in_its_task(confirmed) -> None:
    study = build_study(store.open(confirmed), ["quickstart-confirm"])
    assert [r.sweep_ids[0] for r in study.parts] == ["quickstart", "quickstart-confirm"]


# 4. A study across three tasks ------------------------------------------------------------------

TASKS = {
    "adult-sex": ("adult", 0.30),
    "adult-race": ("adult", 0.32),
    "acs-ok": ("ACSIncome OK 2018 1-Year (synthetic)", 0.45),
}


@pytest.fixture(scope="module")
def across(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("across")
    for sweep, (dataset, base) in TASKS.items():
        write_sweep(
            root,
            sweep,
            {
                "alm(lr=0.1)": [ok(base + LUCK[s]) for s in QUICKSTART_SEEDS],
                "pbm(lr=0.1)": [ok(base + 0.02 + LUCK[s]) for s in QUICKSTART_SEEDS],
                "sgd(lr=0.1)": [ok(base - 0.02 + LUCK[s], 0.03) for s in QUICKSTART_SEEDS],
            },
            dataset=dataset,
        )
    out = tmp_path_factory.mktemp("across-report")
    return out, write_report(store.open(root), out)


def test_a_study_across_tasks_renders_aggregates_with_intervals(across) -> None:
    _, markdown = across
    assert "## Across tasks" in markdown
    assert "| Algorithm | Tasks / runs | Mean [95% CI] | Median [95% CI] | IQM [95% CI] |" in (
        markdown
    )
    assert "| alm | 3 / 15 |" in markdown
    assert "stratified, rliable" in markdown


def test_a_study_across_tasks_averages_p_improvement_over_tasks(across) -> None:
    _, markdown = across
    assert "| alm vs sgd | 3 | 1 [1, 1] |" in markdown  # feasible beats infeasible everywhere


def test_a_study_across_tasks_gives_friedman_and_a_cd_diagram(across) -> None:
    out, markdown = across
    expected = tasks.friedman(
        tasks.task_ranks(
            pd.DataFrame(
                {
                    tasks.TASK: np.repeat(list(TASKS), 3),
                    "algorithm": ["alm", "pbm", "sgd"] * 3,
                    tasks.RUN_OBJECTIVE: [0.0, 1.0, 0.0] * 3,
                    tasks.RUN_VIOLATION: [0.0, 0.0, 1.0] * 3,
                    tasks.RUN_FEASIBLE: [True, True, False] * 3,
                }
            )
        )
    )
    assert f"exact permutation p = {expected['p_exact']:.3f}" in markdown
    assert "Friedman test of equal mean ranks over 3 tasks × 3 algorithms" in markdown
    assert "Nemenyi critical difference CD = 1.914" in markdown
    assert (out / "critical_difference.png").read_bytes().startswith(PNG_MAGIC)
    assert "](critical_difference.png)" in markdown


def test_secondary_metrics_that_another_one_determines_are_left_out() -> None:
    row = trial_row("s", "alm(lr=1)", 0, 0.3, 0.0)
    row.update({final_column(TEST, m): 0.1 for m in (IND, INA, LOSS_GAP)})
    names = [final_column(TEST, m) for m in (MAX_VIOLATION, ACCURACY, DP_GAP, IND, INA, LOSS_GAP)]
    kept = distinct_metrics(pd.DataFrame([row]), names)
    assert kept == [final_column(TEST, m) for m in (MAX_VIOLATION, ACCURACY, DP_GAP)]


def test_the_feasibility_tolerance_is_applied_and_named(tmp_path: Path) -> None:
    write_sweep(tmp_path, "s", {"alm(lr=1)": [ok(0.3, 0.001)] * 3, "sgd(lr=1)": [ok(0.2, 0.1)] * 3})
    out = tmp_path / "out"
    argv = ["report", "--store", str(tmp_path), "--out", str(out)]
    assert main([*argv, "--feasibility-tolerance", "0.002"]) == 0
    markdown = (out / "report.md").read_text()
    assert "test max violation ≤ 0.002 (feasibility tolerance)" in markdown
    assert "3/3 (100%)" in markdown
