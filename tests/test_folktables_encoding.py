"""``data.encoding: reference``: the Folktables benchmark's own preprocessing of the ACS codes.

The reference's loader (humancompatible.train, ``experiments/utils/load_folktables.py``, with
``onehot=False``) is not part of its PyPI package, so its transformation is written out here
with the two packages it called: folktables' ``ACSIncome.df_to_numpy`` and scikit-learn's
``StandardScaler`` fitted on the train rows, with the ``RAC1P`` column dropped.
"""

from pathlib import Path

import folktables
import numpy as np
import pytest
from sklearn.preprocessing import StandardScaler

from ctrain_dist.data.cache import open_tabular
from ctrain_dist.data.load import prepare_data
from ctrain_dist.data.synth import write_synthetic
from ctrain_dist.data.tabular import TabularData
from ctrain_dist.errors import SpecError
from ctrain_dist.spec import load_spec, parse_spec

PAPER = {"encoding": "reference", "include_sensitive_feature": False}
"""The paper study's data options (``sweeps/paper-acsincome.yaml``)."""


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pums")
    write_synthetic(root, ["OK"], rows=3000, seed=11)
    return root


def _raw(root: Path, **data) -> dict:
    return {
        "name": "encoding",
        "data": {"dataset": "folktables", "states": ["OK"], "root": str(root), **data},
        "constraints": [{"kind": "loss_gap", "bound": 0.01}],
        "algorithms": [{"name": "sgd"}],
    }


def _load(root: Path, cache: Path, **data) -> TabularData:
    spec = parse_spec(_raw(root, **data))
    return open_tabular(prepare_data(spec.data, spec.split, cache).path)


def test_the_reference_encoding_is_one_standardised_column_per_feature(root, tmp_path):
    data = _load(root, tmp_path, **PAPER)
    expected = [column for column in folktables.ACSIncome.features if column != "RAC1P"]
    assert list(data.feature_names) == expected
    train = data.features.numpy()[data.splits["train"].numpy()].astype(np.float64)
    np.testing.assert_allclose(train.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(train.std(0), 1.0, atol=1e-5)
    one_hot = _load(root, tmp_path, include_sensitive_feature=False)
    assert data.num_features == 9 < one_hot.num_features


def test_the_reference_encoding_is_the_reference_loaders_transformation(root, tmp_path):
    data = _load(root, tmp_path, **PAPER)
    source = folktables.ACSDataSource(
        survey_year="2018", horizon="1-Year", survey="person", root_dir=str(root)
    )
    features, labels, race = folktables.ACSIncome.df_to_numpy(source.get_data(states=["OK"]))
    features = features[:, :-1]  # the reference drops the RAC1P column
    train = data.splits["train"].numpy()
    expected = StandardScaler().fit(features[train]).transform(features)
    np.testing.assert_allclose(data.features.numpy(), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(data.labels.numpy(), labels)
    np.testing.assert_array_equal(data.groups.numpy(), race == 1)


def test_keeping_the_sensitive_feature_keeps_every_column_of_the_task(root, tmp_path):
    data = _load(root, tmp_path, encoding="reference")
    assert list(data.feature_names) == folktables.ACSIncome.features


def test_the_default_encoding_leaves_trial_ids_and_dumps_unchanged(root):
    before = parse_spec(_raw(root)).trials()[0]
    explicit = parse_spec(_raw(root, encoding="one_hot")).trials()[0]
    reference = parse_spec(_raw(root, encoding="reference")).trials()[0]
    assert "encoding" not in before.model_dump(mode="json")["data"]
    assert explicit.trial_id == before.trial_id
    assert reference.trial_id != before.trial_id
    assert reference.model_dump(mode="json")["data"]["encoding"] == "reference"


def test_an_unknown_encoding_is_refused_in_one_line_naming_the_field(root):
    with pytest.raises(SpecError) as caught:
        parse_spec(_raw(root, encoding="ordinal"))
    assert caught.value.field == "data.encoding"
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("name", ["paper-acsincome.yaml", "paper-acsincome-cluster.yaml"])
def test_the_paper_sweeps_train_the_reference_network_and_the_fairret_baseline(root, name):
    sweep = Path(__file__).parents[1] / "sweeps" / name
    spec = load_spec(sweep, [f"data.root={root}", "data.states=[OK]"])
    assert (spec.data.encoding, spec.data.include_sensitive_feature) == ("reference", False)
    fairret = [a.params for a in spec.algorithms if a.name == "fairret"]
    assert fairret == [{"lr": 0.05, "weight": 0.5, "statistic": "accuracy", "loss": "norm"}]
