"""Specification of confirmation sweeps: selected configurations, fresh seeds."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from ctrain_dist import store
from ctrain_dist.analysis.confirm import confirm_spec
from ctrain_dist.cli.main import main
from ctrain_dist.errors import SpecError
from ctrain_dist.spec import SweepSpec, parse_spec
from ctrain_dist.store import StoreWriter

VAL = {  # (algorithm, lr) -> (median validation objective, validation violation)
    ("sgd", 0.01): (0.30, 0.10),
    ("sgd", 0.1): (0.35, 0.05),
    ("ssl_alm", 0.01): (0.40, 0.0),
    ("ssl_alm", 0.1): (0.38, 0.0),
}


def original_spec(seeds: int | list[int] = 3) -> SweepSpec:
    return parse_spec(
        {
            "name": "study",
            "constraints": [{"kind": "loss_gap", "bound": 0.05}],
            "algorithms": [
                {"name": "sgd", "params": {"lr": [0.01, 0.1]}},
                {"name": "ssl_alm", "params": {"lr": [0.01, 0.1], "dual_lr": 0.05}},
            ],
            "seeds": seeds,
        }
    )


def write_trials(root: Path, spec: SweepSpec) -> None:
    rows = []
    for trial in spec.trials():
        objective, violation = VAL[(trial.algorithm, trial.hyperparameters["lr"])]
        rows.append(
            {
                "trial_id": trial.trial_id,
                "attempt_id": f"{trial.trial_id}-a",
                "algorithm": trial.algorithm,
                "config_label": trial.config_label,
                "seed": trial.seed,
                "status": "finished",
                "ended_at": datetime(2025, 1, 1, tzinfo=UTC),
                "final_val_objective": objective,
                "final_val_max_violation": violation,
            }
        )
    StoreWriter(root, spec.name).write_trials(rows)


def test_confirm_keeps_only_each_algorithms_selected_configuration(tmp_path: Path) -> None:
    spec = original_spec()
    write_trials(tmp_path, spec)
    confirmed = confirm_spec(spec, store.open(tmp_path))
    chosen = {(a.name, a.params["lr"]) for a in confirmed.algorithms}
    # sgd: nothing feasible, least violation wins; ssl_alm: best objective among feasible.
    assert chosen == {("sgd", 0.1), ("ssl_alm", 0.1)}
    assert {a.params.get("dual_lr") for a in confirmed.algorithms if a.name == "ssl_alm"} == {0.05}


def test_confirm_runs_as_a_new_sweep_on_seeds_the_original_never_used(tmp_path: Path) -> None:
    spec = original_spec(seeds=[0, 4, 7])
    write_trials(tmp_path, spec)
    confirmed = confirm_spec(spec, store.open(tmp_path))
    assert confirmed.name == "study-confirm"
    assert confirmed.seed_list() == [8, 9, 10]
    assert len(confirmed.trials()) == 2 * 3
    assert confirmed.training == spec.training and confirmed.data == spec.data


def test_confirm_takes_a_seed_count(tmp_path: Path) -> None:
    spec = original_spec()
    write_trials(tmp_path, spec)
    assert confirm_spec(spec, store.open(tmp_path), seeds=10).seed_list() == list(range(3, 13))


def test_confirm_without_the_original_sweep_in_the_store_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"--confirm.*run the sweep first"):
        confirm_spec(original_spec(), store.open(tmp_path))


def test_ctrain_sweep_confirm_lists_the_confirmation_trials(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec_path = tmp_path / "study.yaml"
    spec_path.write_text(
        "name: study\nconstraints: [{kind: loss_gap, bound: 0.05}]\n"
        "algorithms:\n  - {name: sgd, params: {lr: [0.01, 0.1]}}\n"
        "  - {name: ssl_alm, params: {lr: [0.01, 0.1], dual_lr: 0.05}}\nseeds: 3\n"
    )
    write_trials(tmp_path / "store", original_spec())
    argv = ["sweep", str(spec_path), "--store", str(tmp_path / "store"), "--confirm", "--dry-run"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "sweep 'study-confirm': 2 algorithms, 6 trials" in out
    assert "sgd(lr=0.1) seed 3" in out and "sgd(lr=0.01)" not in out


def test_ctrain_sweep_confirm_on_an_empty_store_exits_2(tmp_path: Path) -> None:
    spec_path = tmp_path / "study.yaml"
    spec_path.write_text(
        "name: study\nconstraints: [{kind: loss_gap, bound: 0.05}]\nalgorithms: [{name: sgd}]\n"
    )
    assert main(["sweep", str(spec_path), "--store", str(tmp_path), "--confirm"]) == 2
