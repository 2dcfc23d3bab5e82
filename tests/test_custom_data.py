"""Data from the user's code (``data: {dataset: custom, factory: ...}``): what a factory may
return, and every way it can break the contract refused as one line naming ``data.factory``
before anything (Ray included) starts, for the CLI and for library callers alike."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import ray
import torch
import yaml
from byo import MODULE, write_user_module

from ctrain_dist.cli.main import main
from ctrain_dist.data.load import load_data
from ctrain_dist.data.split import stratified_split
from ctrain_dist.data.streaming import StreamingData
from ctrain_dist.data.tabular import TabularData
from ctrain_dist.errors import SpecError
from ctrain_dist.launch.local import train_locally
from ctrain_dist.launch.ray_sweep import run_sweep
from ctrain_dist.spec import load_spec, parse_spec
from ctrain_dist.trial.probe import check_plugins


@pytest.fixture
def user_code(tmp_path, monkeypatch):
    folder = tmp_path / "user"
    write_user_module(folder)
    monkeypatch.syspath_prepend(str(folder))
    return folder


def raw_spec(factory: str = "blobs", **data) -> dict:
    return {
        "name": "custom",
        "data": {"dataset": "custom", "factory": f"{MODULE}:{factory}", **data},
        "model": {"factory": f"{MODULE}:cnn"},
        "constraints": [{"kind": "loss_gap", "bound": 0.05}],
        "training": {"batch_size": 32, "budget": {"steps": 4}, "eval_every": 2},
        "algorithms": [{"name": "sgd", "params": {"lr": 0.1}}],
        "seeds": 1,
    }


def test_tensors_become_in_memory_data_split_like_the_built_in_datasets(user_code):
    spec = parse_spec(raw_spec(options={"rows": 300}))
    data = load_data(spec.data, spec.split)
    assert isinstance(data, TabularData)
    assert data.input_shape == (1, 4, 4) and data.num_features == 16
    assert data.group_names == ("group_0", "group_1")
    expected = stratified_split(data.labels.numpy(), data.groups.numpy(), 0.2, 0.2, 0)
    for name, index in expected.items():
        assert data.splits[name].tolist() == index.tolist()


def test_a_factory_s_own_splits_and_group_names_are_kept(user_code):
    spec = parse_spec(raw_spec("with_splits", group_names=["plain", "tinted"]))
    data = load_data(spec.data, spec.split)
    assert data.splits["train"].tolist() == list(range(0, 400, 2))
    assert data.group_names == ("plain", "tinted")


@pytest.mark.parametrize("attributes", [False, True], ids=["scanned", "attributes"])
def test_a_dataset_streams_with_the_labels_groups_and_split_of_its_tensors(user_code, attributes):
    streamed = parse_spec(raw_spec("streamed", options={"attributes": attributes}))
    data = load_data(streamed.data, streamed.split)
    assert isinstance(data, StreamingData)
    tensors = load_data(parse_spec(raw_spec()).data, streamed.split)
    assert torch.equal(data.labels, tensors.labels) and torch.equal(data.groups, tensors.groups)
    assert all(torch.equal(data.splits[k], tensors.splits[k]) for k in tensors.splits)
    assert torch.equal(
        data.read(data.splits["val"][:5]), tensors.features[tensors.splits["val"][:5]]
    )


BAD_DATA = {
    "does not resolve": ("nowhere", "has no 'nowhere'"),
    "raises": ("raising", "RuntimeError: no image folder here"),
    "wrong return type": ("a_dict", "returned a dict; return (features, labels, groups"),
    "float groups": ("float_groups", "groups are torch.float32; give integer group ids"),
    "labels not 0/1": ("labels_of_two", "labels must be 0 or 1, found 2.0"),
    "groups not matching the rows": ("short_groups", "groups have shape (399,), not [400]"),
    "a single group": ("one_group", "every row is in one group"),
    "overlapping splits": ("overlapping_splits", "splits overlap"),
    "items that are not triples": ("pairs", "yield (x, y, group)"),
    "attributes that disagree with the items": ("disagreeing", "make them agree"),
}


@pytest.mark.parametrize("case", BAD_DATA, ids=str)
def test_a_bad_data_factory_exits_2_with_one_line_before_ray_starts(
    case, user_code, tmp_path, capsys, monkeypatch
):
    factory, message = BAD_DATA[case]
    ray_tmp = tmp_path / "ray"
    ray_tmp.mkdir()
    monkeypatch.setenv("RAY_TMPDIR", str(ray_tmp))
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(raw_spec(factory)))
    code = main(["sweep", str(spec_file), "--store", str(tmp_path / "store")])
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert line.startswith("ctrain: error: data.factory: "), line
    assert message in line
    assert not os.listdir(ray_tmp) and not ray.is_initialized()


def test_the_built_in_mlp_refuses_image_rows_naming_model_factory(user_code, tmp_path):
    raw = raw_spec()
    del raw["model"]
    with pytest.raises(SpecError, match=r"^model\.factory: .*shape \(1, 4, 4\)"):
        train_locally(parse_spec(raw), tmp_path / "store", 1)


def test_a_streamed_dataset_refuses_packed_seeds_naming_seeds_per_trial(user_code, tmp_path):
    raw = {**raw_spec("streamed"), "seeds": 2, "seeds_per_trial": 2}
    with pytest.raises(SpecError, match=r"^seeds_per_trial: .*Dataset"):
        run_sweep(parse_spec(raw), tmp_path / "store")
    assert not ray.is_initialized() and not (tmp_path / "store").exists()


def test_library_callers_get_the_plugin_check_before_ray_starts(user_code, tmp_path):
    from ctrain_dist.spec import ModelSpec

    spec = parse_spec(raw_spec())
    broken = spec.model_copy(update={"model": ModelSpec(factory="mylab_data:raising")})
    for launch in (
        lambda: run_sweep(broken, tmp_path / "s"),
        lambda: train_locally(broken, tmp_path / "s", 1),
    ):
        with pytest.raises(SpecError, match=r"^model\.factory: mylab_data:raising failed"):
            launch()
    assert not ray.is_initialized() and not (tmp_path / "s").exists()


def test_the_shipped_digits_example_passes_every_check_before_it_runs(monkeypatch):
    root = Path(__file__).parents[1]
    monkeypatch.syspath_prepend(str(root))  # as PYTHONPATH=. does for the example's command
    spec = load_spec(root / "sweeps" / "digits-cnn.yaml")
    check_plugins(spec)
    data = load_data(spec.data, spec.split)
    assert isinstance(data, TabularData) and data.input_shape == (1, 8, 8)
    assert [len(pack) for pack in spec.packs()] == [3] * 4  # the CNN packs (stacked_module)
    positives = data.labels > 0.5
    tinted = data.groups == 1
    # the tint is tied to the label: about 80 % of positives, 20 % of negatives
    assert 0.75 < tinted[positives].float().mean() < 0.85
    assert 0.15 < tinted[~positives].float().mean() < 0.25
    assert len(spec.algorithms) == 4 and spec.seed_list() == [0, 1, 2]
