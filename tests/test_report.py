"""Specification of the sweep report: Markdown content and the convergence figure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from ctrain_dist import store
from ctrain_dist.report import build_report, plot_convergence, write_report
from ctrain_dist.store import StoreWriter

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
T0 = datetime(2025, 1, 1, tzinfo=UTC)
SEEDS = 5
# Test max violation per seed: sgd meets the bound on 1 seed of 5, ssl_alm on 4 of 5.
VIOLATIONS = {"sgd": [0.02, 0.0, 0.03, 0.05, 0.01], "ssl_alm": [0.0, -0.001, 0.0, 0.004, 0.0]}


def trial_rows(algorithm: str, constrained: bool) -> list[dict]:
    label = f"{algorithm}(lr=0.01)"
    rows = []
    for seed, violation in enumerate(VIOLATIONS[algorithm]):
        finals = {
            f"final_{split}_{metric}": value
            for split in ("train", "val", "test")
            for metric, value in {
                "objective": 0.40 + 0.01 * seed + (0.02 if constrained else 0.0),
                "accuracy": 0.80 + 0.001 * seed,
                "auc": 0.85,
                "max_violation": violation,
                "dp_gap": 0.1 if constrained else 0.2,
            }.items()
        }
        rows.append(
            {
                "sweep_id": "demo",
                "trial_id": f"{algorithm}-{seed}",
                "attempt_id": f"{algorithm}-{seed}-a",
                "algorithm": algorithm,
                "constrained": constrained,
                "config_label": label,
                "seed": seed,
                "status": "finished",
                "error": None,
                "hp_lr": 0.01,
                "started_at": T0,
                "ended_at": T0 + timedelta(seconds=30),
                "wall_time_s": 30.0,
                "steps": 100,
                **finals,
            }
        )
    return rows


def eval_rows(trial: dict) -> list[dict]:
    return [
        {key: trial[key] for key in ("trial_id", "attempt_id", "algorithm", "config_label", "seed")}
        | {
            "split": split,
            "step": step,
            "epoch": step / 50,
            "samples": step * 64,
            "time_s": step * 0.3 + 0.01 * trial["seed"],
            "objective": 1.0 / (1 + step) + 0.01 * trial["seed"],
            "max_violation": 0.1 / (1 + step),
        }
        for split in ("train", "test")
        for step in range(0, 101, 20)
    ]


@pytest.fixture
def demo_store(tmp_path: Path) -> store.Store:
    writer = StoreWriter(tmp_path / "store", "demo")
    for algorithm, constrained in (("sgd", False), ("ssl_alm", True)):
        rows = trial_rows(algorithm, constrained)
        writer.write_trials(rows)
        writer.write_evals([e for trial in rows for e in eval_rows(trial)])
    writer.write_trials([{**rows[0], "attempt_id": "crashed", "status": "error"}])
    return store.open(tmp_path / "store")


def test_markdown_names_the_sweep_counts_and_every_algorithm(
    demo_store: store.Store, tmp_path: Path
) -> None:
    markdown = write_report(demo_store, tmp_path / "out")
    assert "`demo`" in markdown
    assert "10 trials (finished 10) from 11 attempts" in markdown
    assert "| sgd | sgd(lr=0.01) |" in markdown
    assert "| ssl_alm | ssl_alm(lr=0.01) |" in markdown
    assert (tmp_path / "out" / "report.md").read_text() == markdown


def test_markdown_feasibility_counts_match_the_rows(
    demo_store: store.Store, tmp_path: Path
) -> None:
    markdown = write_report(demo_store, tmp_path / "out")
    assert "1/5 (20%)" in markdown
    assert "4/5 (80%)" in markdown


def test_markdown_compares_the_constrained_algorithm_with_sgd(
    demo_store: store.Store, tmp_path: Path
) -> None:
    markdown = write_report(demo_store, tmp_path / "out")
    assert "Constrained algorithms vs `sgd`" in markdown
    assert "| ssl_alm | Test objective |" in markdown
    assert "| ssl_alm | Test max violation |" in markdown
    assert "convergence.png" in markdown


def test_convergence_figure_is_a_png(demo_store: store.Store, tmp_path: Path) -> None:
    write_report(demo_store, tmp_path / "out")
    assert (tmp_path / "out" / "convergence.png").read_bytes().startswith(PNG_MAGIC)


def test_report_frames_come_from_the_selected_configurations(demo_store: store.Store) -> None:
    report = build_report(demo_store, "demo")
    assert report.baseline == "sgd"
    assert report.feasibility.set_index("algorithm")["count"].to_dict() == {"sgd": 1, "ssl_alm": 4}
    assert set(report.convergence["axis"]) == {"step", "time_s"}
    assert (report.convergence["n"] <= SEEDS).all()


def test_without_an_unconstrained_algorithm_the_report_says_so(tmp_path: Path) -> None:
    StoreWriter(tmp_path, "demo").write_trials(trial_rows("ssl_alm", constrained=True))
    markdown = write_report(store.open(tmp_path), tmp_path / "out")
    assert "No unconstrained algorithm" in markdown


def test_an_empty_store_still_gives_a_report_and_a_figure(tmp_path: Path) -> None:
    markdown = write_report(store.open(tmp_path / "empty"), tmp_path / "out")
    assert "No trials to report." in markdown
    assert (tmp_path / "out" / "convergence.png").read_bytes().startswith(PNG_MAGIC)


def test_convergence_can_be_plotted_from_an_evals_frame(tmp_path: Path) -> None:
    trial = trial_rows("sgd", constrained=False)[0]
    path = plot_convergence(pd.DataFrame(eval_rows(trial)), tmp_path / "curves.png")
    assert path.read_bytes().startswith(PNG_MAGIC)
