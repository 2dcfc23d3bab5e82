"""Users' own CSV and Parquet tables: same preprocessing, cache and one-line errors."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ctrain_dist import store
from ctrain_dist.cli.main import main
from ctrain_dist.data.cache import open_tabular
from ctrain_dist.data.load import prepare_data
from ctrain_dist.errors import SpecError
from ctrain_dist.launch.ray_sweep import run_sweep
from ctrain_dist.spec import parse_spec


def _table(rows: int = 1200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    hours = rng.normal(40, 8, rows).round()
    hours[rng.random(rows) < 0.05] = np.nan
    job = rng.choice(["clerk", "driver", "nurse", "engineer"], rows).astype(object)
    job[rng.random(rows) < 0.08] = None
    sex = rng.choice(["female", "male"], rows)
    score = 0.04 * np.nan_to_num(hours, nan=40) + (job == "engineer") + 0.4 * (sex == "male")
    high = score + rng.normal(0, 0.6, rows) > 2.4
    return pd.DataFrame(
        {
            "age": rng.integers(18, 70, rows),
            "hours": hours,
            "job": job,
            "region": rng.integers(1, 5, rows),
            "sex": sex,
            "race": rng.choice(["black", "white"], rows, p=[0.3, 0.7]),
            "income": np.where(high, ">50K", "<=50K"),
            "high": high.astype(int),
            "grade": rng.integers(1, 6, rows),
        }
    )


@pytest.fixture(scope="module")
def tables(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("tables")
    frame = _table()
    frame.to_csv(folder / "people.csv", index=False)
    frame.to_parquet(folder / "people.parquet", index=False)
    return {"csv": folder / "people.csv", "parquet": folder / "people.parquet"}


def _raw(path: Path, **data) -> dict:
    return {
        "name": "table-study",
        "data": {
            "dataset": "table",
            "path": str(path),
            "target": "income",
            "positive": ">50K",
            "sensitive": "sex",
            "features": ["age", "hours", "job", "region"],
            **data,
        },
        "constraints": [{"kind": "loss_gap", "bound": 0.05}],
        "algorithms": [{"name": "sgd", "params": {"lr": 0.05}}, {"name": "ssl_alm"}],
        "seeds": 1,
        "training": {"batch_size": 32, "budget": {"steps": 40}, "eval_every": 20},
    }


def _load(path: Path, cache: Path, **data):
    spec = parse_spec(_raw(path, **data))
    return open_tabular(prepare_data(spec.data, spec.split, cache).path)


def test_csv_and_parquet_give_the_same_dataset(tables, tmp_path):
    from_csv = _load(tables["csv"], tmp_path)
    from_parquet = _load(tables["parquet"], tmp_path)
    assert from_csv.feature_names == from_parquet.feature_names
    assert from_csv.group_names == from_parquet.group_names == ("female", "male")
    for name in ("features", "labels", "groups"):
        assert np.array_equal(getattr(from_csv, name).numpy(), getattr(from_parquet, name).numpy())


def test_the_positive_value_defines_the_labels(tables, tmp_path):
    data = _load(tables["csv"], tmp_path)
    frame = pd.read_csv(tables["csv"])
    assert np.array_equal(data.labels.numpy(), (frame["income"] == ">50K").to_numpy())
    assert np.array_equal(data.groups.numpy(), (frame["sex"] == "male").to_numpy())


def test_a_0_1_target_needs_no_positive_value(tables, tmp_path):
    data = _load(tables["csv"], tmp_path, target="high", positive=None)
    assert np.array_equal(data.labels.numpy(), pd.read_csv(tables["csv"])["high"].to_numpy())


def test_a_missing_text_value_is_its_own_indicator_and_no_category(tables, tmp_path):
    data = _load(tables["parquet"], tmp_path)
    frame = pd.read_parquet(tables["parquet"])
    names = list(data.feature_names)
    job = [i for i, name in enumerate(names) if name.startswith("job=")]
    missing = np.array(frame["job"].isna())
    assert np.array_equal(data.features[:, names.index("job__missing")].numpy(), missing)
    assert data.features[missing][:, job].abs().sum() == 0
    assert (data.features[~missing][:, job].sum(dim=1) == 1).all()


def test_numbers_are_standardised_and_listed_integer_codes_one_hot(tables, tmp_path):
    data = _load(tables["csv"], tmp_path, categorical=["region"])
    names = data.feature_names
    assert "age" in names and "hours" in names and "hours__missing" in names
    regions = [name for name in names if name.startswith("region")]
    assert regions == ["region=1", "region=2", "region=3", "region=4"]
    train = data.splits["train"]
    age = data.features[train, names.index("age")]
    assert abs(age.mean().item()) < 1e-5 and abs(age.std(unbiased=False).item() - 1) < 1e-4


def test_several_sensitive_columns_group_by_their_intersection(tables, tmp_path):
    data = _load(tables["csv"], tmp_path, sensitive=["sex", "race"])
    assert data.group_names == ("female & black", "female & white", "male & black", "male & white")


def test_sensitive_columns_are_features_unless_left_out(tables, tmp_path):
    assert "sex=male" in _load(tables["csv"], tmp_path).feature_names
    left_out = _load(tables["csv"], tmp_path, include_sensitive_feature=False)
    assert not [name for name in left_out.feature_names if name.startswith("sex")]


def _sweep_exit(path: Path, tmp_path: Path, capsys, *overrides: str) -> tuple[int, str]:
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "name: t\nconstraints: [{kind: loss_gap, bound: 0.05}]\nalgorithms: [{name: sgd}]\n"
        f"data: {{dataset: table, path: {path}, target: income, positive: '>50K', "
        "sensitive: sex}\n"
    )
    code = main(["sweep", str(spec), "--dry-run", *(f"--set={o}" for o in overrides)])
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    return code, lines[0]


def test_a_missing_column_exits_2_naming_it(tables, tmp_path, capsys):
    code, line = _sweep_exit(tables["csv"], tmp_path, capsys, "data.sensitive=gender")
    assert code == 2
    assert line.startswith("ctrain: error: data.sensitive: column 'gender' not in")
    assert "sex" in line


def test_a_target_with_more_than_two_values_and_no_positive_exits_2(tables, tmp_path, capsys):
    code, line = _sweep_exit(
        tables["csv"], tmp_path, capsys, "data.target=grade", "data.positive=null"
    )
    assert code == 2
    assert line.startswith("ctrain: error: data.positive: target 'grade' has 5 values")


def test_an_empty_group_exits_2_naming_it(tmp_path, capsys):
    frame = _table(rows=300)
    frame.loc[0, "sex"] = "unknown"
    path = tmp_path / "people.csv"
    frame.to_csv(path, index=False)
    code, line = _sweep_exit(path, tmp_path, capsys)
    assert code == 2
    assert line.startswith("ctrain: error: data.sensitive: group 'unknown' has no rows in the")


def test_a_positive_value_that_never_occurs_is_named(tables):
    with pytest.raises(SpecError, match="'yes' never occurs in target 'income'") as caught:
        parse_spec(_raw(tables["csv"], positive="yes"))
    assert caught.value.field == "data.positive"


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(SpecError, match=r"nowhere\.csv not found") as caught:
        parse_spec(_raw(tmp_path / "nowhere.csv"))
    assert caught.value.field == "data.path"


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_a_table_runs_through_a_sweep(tables, tmp_path, monkeypatch, kind):
    monkeypatch.setenv("CTRAIN_CACHE", str(tmp_path / "cache"))
    spec = parse_spec(_raw(tables[kind]))
    outcome = run_sweep(spec, tmp_path / "store", log=lambda line: None)
    assert outcome.statuses == {"finished": 2}
    trials = store.open(tmp_path / "store").trials("table-study")
    assert trials["final_test_accuracy"].notna().all()
    assert len(list((tmp_path / "cache").iterdir())) >= 1
