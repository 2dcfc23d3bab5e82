"""Packed seeds of a user's model (``model.factory``): K seeds stacked through ``torch.func``
(``trial/stacked_module.py``) train as the same K seeds alone, to rounding (1e-10 in float64:
a convolution under ``vmap`` sums in another order); a model ``vmap`` cannot batch trains one
seed per trial and the plan says why; a packed factory trial resumes; and ``ctrain train``
writes one ``trials`` row per seed, each naming its pack.

The user's code lives outside the package, in a temporary folder on ``sys.path``: the CNN,
data and constraint of ``tests/byo.py``, plus :data:`NETS`, models that pack and models that
do not.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from byo import MODULE, write_user_module
from list_sink import ListSink
from seed_slices import TIGHT, assert_slice_close

from ctrain_dist import store
from ctrain_dist.data.load import load_data
from ctrain_dist.errors import SpecError
from ctrain_dist.launch.plan import plan_packs
from ctrain_dist.spec import packing_obstacle, parse_spec
from ctrain_dist.store.schema import PACKED_WITH, STATUS, STATUS_FINISHED
from ctrain_dist.trial.distributed import Workers
from ctrain_dist.trial.learner import ModelLearner
from ctrain_dist.trial.loop import train
from ctrain_dist.trial.packed import PackedLearner
from ctrain_dist.trial.probe import check_plugins
from ctrain_dist.trial.stacked_module import StackedModule

STEPS = 100
DEADLINE_S = 300  # a deadline for a hung command, not a measure of speed
SEEDS = [3, 5, 8]
NETS_MODULE = "mylab_nets"
NETS = '''
"""A lab's other networks: one with BatchNorm (packs), two vmap cannot batch."""
import torch
from torch import nn


def bn_cnn(num_features, num_outputs, dtype, input_shape, width=3):
    return nn.Sequential(
        nn.Conv2d(input_shape[0], width, 3, padding=1, bias=False, dtype=dtype),
        nn.BatchNorm2d(width, dtype=dtype),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(width * num_features // input_shape[0], num_outputs, dtype=dtype),
    )


class Thresholded(nn.Module):
    """Reads a tensor's value on the host in its forward (``.item()``)."""

    def __init__(self, num_features, dtype):
        super().__init__()
        self.linear = nn.Linear(num_features, 1, dtype=dtype)

    def forward(self, x):
        x = x.flatten(1)
        scale = 1.0 if x.abs().max().item() < 100 else 0.01
        return self.linear(x * scale)


def thresholded(num_features, num_outputs, dtype):
    return Thresholded(num_features, dtype)


class Masked(nn.Module):
    """Keeps a seeded tensor as a plain attribute, neither parameter nor buffer."""

    def __init__(self, num_features, dtype):
        super().__init__()
        self.mask = (torch.rand(num_features) < 0.5).to(dtype)
        self.linear = nn.Linear(num_features, 1, dtype=dtype)

    def forward(self, x):
        return self.linear(x.flatten(1) * self.mask)


def masked(num_features, num_outputs, dtype):
    return Masked(num_features, dtype)


def dropout_net(num_features, num_outputs, dtype):
    return nn.Sequential(
        nn.Flatten(), nn.Dropout(0.2), nn.Linear(num_features, num_outputs, dtype=dtype)
    )
'''
SETTINGS = {
    "alm": {"primal": "adam", "lr": 0.01},
    "switching_subgradient": {"step_rule": "adaptive", "lr_constraint": 0.5},
    "adam": {"lr": 0.01},
}
"""Each a different state over the stacked parameters: duals and Adam moments, switching
decisions and Polyak steps, Adam alone."""


@pytest.fixture(scope="module")
def user_code(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("user")
    write_user_module(folder)
    (folder / f"{NETS_MODULE}.py").write_text(NETS)
    sys.path.insert(0, str(folder))
    yield folder
    sys.path.remove(str(folder))


def raw_spec(algorithm: str = "alm", model: str = f"{MODULE}:cnn", **training) -> dict:
    return {
        "name": "packed-factory",
        "data": {"dataset": "custom", "factory": f"{MODULE}:blobs"},
        "model": {"factory": model},
        "constraints": [
            {"kind": "loss_gap", "bound": 0.02},
            {"kind": f"{MODULE}:MeanLoss", "bound": 0.6},
        ],
        "training": {
            "batch_size": 32,
            "budget": {"steps": STEPS},
            "eval_every": 50,
            "checkpoint_every": STEPS,
            "dtype": "float64",
            **training,
        },
        "algorithms": [{"name": algorithm, "params": SETTINGS.get(algorithm, {})}],
        "seeds": SEEDS,
        "seeds_per_trial": len(SEEDS),
    }


def assert_rows_close(alone: dict, packed: dict, where: str, resumed: bool = False) -> None:
    skip = {"attempt_id", "time_s", "train_time_s", "wall_time_s", "started_at", "ended_at"}
    skip |= {"resumed_from_step"} if resumed else set()
    assert alone.keys() == packed.keys(), where
    for key, value in alone.items():
        if key in skip or key == PACKED_WITH:
            continue
        other = packed[key]
        if isinstance(value, float):
            both_nan = math.isnan(value) and math.isnan(other)
            assert both_nan or abs(value - other) <= TIGHT, f"{where}.{key}: {value} vs {other}"
        else:
            assert value == other, f"{where}.{key}: {value!r} alone, {other!r} packed"


@pytest.fixture(scope="module", params=sorted(SETTINGS))
def runs(request, user_code, tmp_path_factory):
    """One algorithm's 3 seeds of the user CNN: alone (rows, final checkpoint) and packed."""
    spec = parse_spec(raw_spec(request.param))
    check_plugins(spec)
    trials = spec.trials()
    assert packing_obstacle(trials[0]) is None
    (pack,) = spec.packs()
    assert len(pack) == len(SEEDS)
    folder = tmp_path_factory.mktemp(request.param)
    alone = []
    for trial in trials:
        sink, path = ListSink(), folder / f"{trial.trial_id}.pt"
        train([trial], sink, checkpoint=path)
        alone.append((sink, torch.load(path, weights_only=False)))
    packed, path = ListSink(), folder / "pack.pt"
    train(trials, packed, checkpoint=path)
    return trials, alone, packed, torch.load(path, weights_only=False)


def test_packed_factory_seeds_end_with_the_parameters_and_duals_of_the_seeds_alone(runs):
    trials, alone, _, state = runs
    for seed, (_, mine) in enumerate(alone):
        stacked = dict(zip(mine["model"], state["model"].values(), strict=True))
        assert_slice_close(mine["model"], stacked, seed, f"{trials[seed].trial_id} model")
        assert_slice_close(mine["algorithm"], state["algorithm"], seed, "algorithm")


def test_packed_factory_seeds_write_the_rows_of_the_seeds_alone(runs):
    trials, alone, packed, _ = runs
    ids = [trial.trial_id for trial in trials]
    for seed, (sink, _) in enumerate(alone):
        mine = [row for row in packed.eval_rows if row["trial_id"] == ids[seed]]
        assert len(mine) == len(sink.eval_rows) > 0
        for a, p in zip(sink.eval_rows, mine, strict=True):
            assert_rows_close(a, p, f"{ids[seed]} step {a['step']} {a['split']}")
        (row,) = [row for row in packed.trial_rows if row["trial_id"] == ids[seed]]
        assert_rows_close(sink.trial_rows[0], row, ids[seed])
        assert json.loads(row[PACKED_WITH]) == ids


def test_batchnorm_running_statistics_pack_exactly_as_alone(user_code):
    """BatchNorm updates its buffers in place; stacked, each seed's slice updates as alone.

    (Its convolution has no bias: one before a BatchNorm has a zero gradient in exact
    arithmetic, rounding noise that Adam scales up to full steps, alone and packed alike.)"""
    spec = parse_spec(raw_spec("adam", f"{NETS_MODULE}:bn_cnn", budget={"steps": 20}))
    check_plugins(spec)
    trials = spec.trials()
    assert packing_obstacle(trials[0]) is None
    data = load_data(spec.data, spec.split)
    pack = PackedLearner(trials, data, torch.device("cpu"))
    assert isinstance(pack.model, StackedModule) and len(list(pack.model.buffers())) == 3
    for _ in range(20):
        pack.algorithm.step(pack.estimate)
    packed = [*pack.model.parameters(), *pack.model.buffers()]
    for seed, trial in enumerate(trials):
        alone = ModelLearner(trial, data, Workers(), torch.device("cpu"))
        for _ in range(20):
            alone.algorithm.step(alone.estimate)
        mine = [*alone.model.parameters(), *alone.model.buffers()]
        assert_slice_close(mine, packed, seed, f"seed {trial.seed}")
    # evaluated in eval mode: each seed reads its own running statistics, and leaves them be
    buffers = [b.clone() for b in pack.model.buffers()]
    evaluated = pack.evaluate(range(len(trials)))
    assert all(torch.equal(a, b) for a, b in zip(buffers, pack.model.buffers(), strict=True))
    for seed, trial in enumerate(trials):
        alone = ModelLearner(trial, data, Workers(), torch.device("cpu"))
        for _ in range(20):
            alone.algorithm.step(alone.estimate)
        before = [b.clone() for b in alone.model.buffers()]
        [row] = alone.evaluate([0])
        assert all(torch.equal(b, a) for b, a in zip(before, alone.model.buffers(), strict=True))
        assert row["test"] == pytest.approx(evaluated[seed]["test"], rel=1e-10, nan_ok=True)


@pytest.mark.parametrize(
    ("model", "why"),
    [
        ("thresholded", ".item()"),
        ("dropout_net", "draws random numbers"),
        ("masked", "other values under vmap than alone"),
    ],
)
def test_a_model_vmap_cannot_batch_trains_one_seed_per_trial_and_the_plan_says_why(
    user_code, model, why
):
    spec = parse_spec(raw_spec("alm", f"{NETS_MODULE}:{model}", budget={"steps": 4}))
    check_plugins(spec)
    obstacle = packing_obstacle(spec.trials()[0])
    assert obstacle is not None and why in obstacle and f"{NETS_MODULE}:{model}" in obstacle
    lines: list[str] = []
    packs = plan_packs(spec, spec.trials(), lines.append)
    assert [len(pack) for pack in packs] == [1, 1, 1]
    assert len(lines) == 1 and "its seeds run one per trial" in lines[0]
    assert "\n" not in lines[0]
    sink = ListSink()
    for pack in packs:
        train(pack, sink)
    assert [row[PACKED_WITH] for row in sink.trial_rows] == [None] * 3
    assert [row[STATUS] for row in sink.trial_rows] == [STATUS_FINISHED] * 3


def test_asha_refuses_a_model_vmap_cannot_batch_naming_its_field(user_code):
    """ASHA judges a configuration on all its seeds in one trial, so it cannot fall back."""
    raw = raw_spec("alm", f"{NETS_MODULE}:thresholded", budget={"steps": 4})
    raw["algorithms"] = [{"name": "alm", "params": {"lr": {"loguniform": [0.001, 0.1]}}}]
    raw["tuning"] = {
        "budget": {"configurations": 2},
        "seeds_per_configuration": len(SEEDS),
        "scheduler": {"asha": {"grace_period": 2}},
    }
    del raw["seeds"]
    with pytest.raises(SpecError) as caught:
        check_plugins(parse_spec(raw))
    message = str(caught.value)
    assert message.startswith("tuning.scheduler.asha") and ".item()" in message
    assert "\n" not in message


def test_packed_configurations_of_a_factory_model_train_as_alone(user_code):
    """``configurations_per_trial``: two step sizes of one CNN as one pack, each as alone."""
    raw = raw_spec("alm", budget={"steps": 30}, eval_every=15, checkpoint_every=30)
    raw["algorithms"] = [{"name": "alm", "params": {"lr": [0.01, 0.05], "primal": "adam"}}]
    raw["seeds"], raw["seeds_per_trial"], raw["configurations_per_trial"] = [3], 1, 2
    spec = parse_spec(raw)
    check_plugins(spec)
    (pack,) = spec.packs()
    assert len(pack) == 2 and pack[0].hyperparameters != pack[1].hyperparameters
    packed = ListSink()
    train(pack, packed)
    for trial in pack:
        alone = ListSink()
        train([trial], alone)
        mine = [row for row in packed.eval_rows if row["trial_id"] == trial.trial_id]
        assert len(mine) == len(alone.eval_rows) > 0
        for a, b in zip(alone.eval_rows, mine, strict=True):
            assert_rows_close(a, b, f"{trial.config_label} step {a['step']} {a['split']}")


class Interrupted(Exception):
    pass


class DyingSink(ListSink):
    def __init__(self, die_at: int) -> None:
        super().__init__()
        self.die_at = die_at

    def evals(self, rows):
        if rows and rows[0]["step"] == self.die_at:
            raise Interrupted
        super().evals(rows)


def test_a_packed_factory_trial_resumes_on_the_uninterrupted_trajectory(user_code, tmp_path):
    raw = raw_spec("alm", budget={"steps": 20}, eval_every=10, checkpoint_every=10)
    trials = parse_spec(raw).trials()
    whole = ListSink()
    train(trials, whole, checkpoint=tmp_path / "whole.pt")
    with pytest.raises(Interrupted):
        train(trials, DyingSink(die_at=20), checkpoint=tmp_path / "resumed.pt")
    resumed = ListSink()
    train(trials, resumed, checkpoint=tmp_path / "resumed.pt")
    assert any(row["step"] == 20 for row in resumed.eval_rows)

    def order(rows: list[dict]) -> list[dict]:
        return sorted(rows, key=lambda row: (row["trial_id"], row["step"], row["split"]))

    assert len(resumed.eval_rows) == len(whole.eval_rows)
    for a, b in zip(order(whole.eval_rows), order(resumed.eval_rows), strict=True):
        assert_rows_close(a, b, f"{a['trial_id']} step {a['step']} {a['split']}")
    finished = [
        sorted(sink.trial_rows, key=lambda row: row["trial_id"]) for sink in (whole, resumed)
    ]
    for a, b in zip(*finished, strict=True):
        assert_rows_close(a, b, a["trial_id"], resumed=True)


@pytest.mark.slow
def test_ctrain_train_packs_a_factory_model_s_seeds_and_writes_a_row_per_seed(user_code, tmp_path):
    raw = raw_spec("alm", budget={"steps": 10}, eval_every=5, checkpoint_every=10)
    raw["name"], raw["seeds_per_trial"] = "packed-cli", 1  # --seeds 3 sets it
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(user_code), os.environ.get("PYTHONPATH", "")]),
    }
    command = [sys.executable, "-m", "ctrain_dist.cli", "train", str(path), "--seeds", "3"]
    result = subprocess.run(
        [*command, "--store", str(tmp_path / "s")],
        capture_output=True,
        text=True,
        env=env,
        timeout=DEADLINE_S,
    )
    assert result.returncode == 0, result.stderr
    rows = store.open(tmp_path / "s").trials("packed-cli")
    assert sorted(rows["seed"]) == SEEDS and set(rows[STATUS]) == {STATUS_FINISHED}
    pack = sorted(rows["trial_id"])
    assert [sorted(json.loads(text)) for text in rows[PACKED_WITH]] == [pack] * 3
