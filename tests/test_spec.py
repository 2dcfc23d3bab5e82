"""Spec validation: every mistake is caught up front and named by its field."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ctrain_dist.errors import SpecError
from ctrain_dist.spec import apply_overrides, load_spec, parse_spec

QUICKSTART = Path(__file__).parents[1] / "sweeps" / "quickstart.yaml"


def _raw() -> dict:
    """A spec of the tests' own, so that they name list positions they chose themselves."""
    return {
        "name": "spec-tests",
        "data": {"dataset": "adult", "sensitive": "sex"},
        "constraints": [{"kind": "loss_gap", "bound": 0.05}],
        "training": {"batch_size": 64, "budget": {"steps": 20}, "eval_every": 10},
        "algorithms": [
            {"name": "sgd", "params": {"lr": 0.05}},
            {"name": "adam", "params": {"lr": 0.001}},
            {"name": "ssl_alm", "params": {"lr": 0.05, "rho": 1.0}},
        ],
        "seeds": 2,
    }


def _error_field(raw: dict) -> str:
    with pytest.raises(SpecError) as caught:
        parse_spec(raw)
    return caught.value.field


def test_quickstart_is_valid_and_expands_algorithms_times_seeds():
    spec = load_spec(QUICKSTART)
    assert len(spec.trials()) == len(spec.algorithms) * 5


def test_listed_hyperparameter_values_expand_into_a_grid():
    raw = _raw()
    raw["algorithms"][2]["params"]["lr"] = [0.01, 0.05]
    raw["algorithms"][2]["params"]["rho"] = [0.5, 1.0, 2.0]
    spec = parse_spec(raw)
    labels = {t.config_label for t in spec.trials() if t.algorithm == "ssl_alm"}
    assert len(labels) == 6


def test_trial_ids_are_stable_and_distinct():
    first = [t.trial_id for t in load_spec(QUICKSTART).trials()]
    second = [t.trial_id for t in load_spec(QUICKSTART).trials()]
    assert first == second
    assert len(set(first)) == len(first)


def test_unknown_algorithm_is_named():
    raw = _raw()
    raw["algorithms"][0]["name"] = "sdg"
    assert _error_field(raw) == "algorithms.0.name"


def test_the_renamed_pbm_is_refused_with_both_methods_it_could_mean():
    raw = _raw()
    raw["algorithms"][0]["name"] = "pbm"
    with pytest.raises(SpecError, match=r"renamed: use classical_pbm .* or spbm") as error:
        parse_spec(raw)
    assert error.value.field == "algorithms.0.name"


def test_negative_learning_rate_is_named_with_its_index():
    raw = _raw()
    raw["algorithms"][2]["params"]["lr"] = [0.1, -0.5]
    assert _error_field(raw) == "algorithms.2.params.lr"


def test_unknown_hyperparameter_is_named():
    raw = _raw()
    raw["algorithms"][1]["params"]["learning_rate"] = 0.1
    assert _error_field(raw) == "algorithms.1.params.learning_rate"


def test_unknown_key_is_named():
    raw = _raw()
    raw["training"]["batchsize"] = 32
    assert _error_field(raw) == "training.batchsize"


def test_missing_data_file_is_named(tmp_path):
    raw = _raw()
    raw["data"]["path"] = str(tmp_path / "nowhere")
    assert _error_field(raw) == "data.path"


def test_budget_needs_exactly_one_of_steps_and_seconds():
    raw = _raw()
    raw["training"]["budget"] = {"steps": 10, "seconds": 5}
    assert _error_field(raw) == "training.budget"


def test_group_quotas_larger_than_the_batch_are_refused():
    raw = _raw()
    raw["training"]["min_group_count"] = 40
    assert _error_field(raw) == "training"


def test_overrides_reach_nested_fields_and_list_items():
    raw = apply_overrides(_raw(), ["training.budget.steps=7", "algorithms.2.params.lr=[0.1, 0.2]"])
    assert raw["training"]["budget"]["steps"] == 7
    assert raw["algorithms"][2]["params"]["lr"] == [0.1, 0.2]


def test_override_past_the_end_of_a_list_is_refused():
    with pytest.raises(SpecError):
        apply_overrides(_raw(), ["algorithms.9.name=sgd"])


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("algorithms.0.name=nosuch", "algorithms.0.name"),
        ("algorithms.0.params.lr=-0.1", "algorithms.0.params.lr"),
        ("data.path=/nonexistent/adult", "data.path"),
        ("training.nosuchkey=1", "training.nosuchkey"),
    ],
)
def test_ctrain_sweep_exits_2_with_one_line_naming_the_field(tmp_path, override, field):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(_raw()))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ctrain_dist.cli",
            "sweep",
            str(spec),
            "--set",
            override,
            "--store",
            str(tmp_path / "store"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert field in lines[0]
    assert not (tmp_path / "store").exists()
