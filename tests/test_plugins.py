"""Bring your own model, constraint and algorithm: user code outside the package, by import
path or by entry point, trains through ``ctrain train`` and a local Ray sweep; bad plug-ins
exit 2 naming the field before anything (Ray included) starts.

User code lives in a temporary folder on ``PYTHONPATH`` (the driver's ``sys.path`` too, for
the in-process checks); ``ctrain`` runs as a subprocess, which local Ray workers inherit the
environment of, exactly as a user's shell would have it.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ctrain_dist import store
from ctrain_dist.spec import load_spec, packing_obstacle
from ctrain_dist.store.schema import PLUGINS, STATUS, STATUS_FINISHED
from ctrain_dist.trial.probe import check_plugins

QUICKSTART = Path(__file__).parents[1] / "sweeps" / "quickstart.yaml"
DEADLINE_S = 300  # a deadline for a hung command, not a measure of speed
USER_MODULE = "mylab_ctrain"
USER_CODE = '''
"""A user's model factories and constraints, outside ctrain_dist."""
import torch
from torch import nn
from torch.nn import functional

from ctrain_dist.algorithms.unconstrained import SGD
from ctrain_dist.constraints import Constraint


def linear(num_features, num_outputs, dtype, bias=True):
    return nn.Linear(num_features, num_outputs, bias=bias, dtype=dtype)


def raising(num_features, num_outputs, dtype):
    raise RuntimeError("no weights file here")


def two_logits(num_features, num_outputs, dtype):
    return nn.Linear(num_features, 2, dtype=dtype)


class MeanLoss(Constraint):
    """Mean loss at most the bound; statistics [sum of w * loss, sum of w] add up."""

    kind = "mean_loss"
    num_values = 1
    num_statistics = 2

    def __init__(self, bound, num_groups, decide_on="strict"):
        super().__init__(bound, decide_on)

    def statistics(self, logits, labels, groups, weights=None, losses=None):
        w = torch.ones_like(logits) if weights is None else weights.to(logits.dtype)
        if losses is None:
            losses = functional.binary_cross_entropy_with_logits(
                logits, labels, reduction="none"
            )
        return torch.stack([(w * losses).sum(), w.sum()])

    def value(self, stats, strict=False):
        return (stats[0] / stats[1]).reshape(1) - self.bound

    def names(self, group_names):
        return [f"mean_loss<={self.bound:g}"]


class MeanNotSum(MeanLoss):
    """Breaks the contract: per-batch means do not add across shards."""

    def statistics(self, logits, labels, groups, weights=None, losses=None):
        stats = super().statistics(logits, labels, groups, weights, losses)
        return stats / stats[1].detach()


class SlowSGD(SGD):
    name = "slow_sgd"
    paper = "a lab's own baseline"
'''
BASE = [
    "seeds=1",
    "algorithms=[{name: sgd, params: {lr: 0.05}}]",
    "training.budget.steps=20",
    "training.eval_every=10",
]
USER_MODEL = 'model={factory: "mylab_ctrain:linear", options: {bias: true}}'
USER_CONSTRAINT = 'constraints=[{kind: "mylab_ctrain:MeanLoss", bound: 0.9}]'


@pytest.fixture
def user_code(tmp_path, monkeypatch) -> Path:
    """The user's module in a folder outside the package, on PYTHONPATH and sys.path."""
    folder = tmp_path / "user"
    folder.mkdir()
    (folder / f"{USER_MODULE}.py").write_text(USER_CODE)
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")])
    )
    monkeypatch.syspath_prepend(str(folder))
    return folder


def ctrain(*arguments: str, ray_tmp: Path | None = None) -> subprocess.CompletedProcess:
    environment = dict(os.environ)
    if ray_tmp is not None:
        environment["RAY_TMPDIR"] = str(ray_tmp)
    return subprocess.run(
        [sys.executable, "-m", "ctrain_dist.cli", *arguments],
        env=environment,
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
    )


def sets(name: str, *overrides: str) -> list[str]:
    return [arg for value in [f"name={name}", *BASE, *overrides] for arg in ("--set", value)]


def finished_rows(root: Path, sweep: str):
    trials = store.open(root).trials(sweep)
    assert not trials.empty
    assert set(trials[STATUS]) == {STATUS_FINISHED}
    return trials


def test_a_user_model_and_constraint_train_through_ctrain_train(user_code, tmp_path):
    root = tmp_path / "store"
    result = ctrain(
        "train", str(QUICKSTART), *sets("byo", USER_MODEL, USER_CONSTRAINT), "--store", str(root)
    )
    assert result.returncode == 0, result.stderr
    (plugins,) = finished_rows(root, "byo")[PLUGINS]
    digest = hashlib.sha256((user_code / f"{USER_MODULE}.py").read_bytes()).hexdigest()
    assert json.loads(plugins) == {
        "model.factory": {
            "path": "mylab_ctrain:linear",
            "options": {"bias": True},
            "sha256": digest,
        },
        "constraints.0.kind": {"path": "mylab_ctrain:MeanLoss", "options": {}, "sha256": digest},
    }


def test_a_local_ray_sweep_runs_user_code_found_on_pythonpath(user_code, tmp_path):
    root = tmp_path / "store"
    overrides = sets("byo-ray", USER_MODEL, USER_CONSTRAINT)
    result = ctrain("sweep", str(QUICKSTART), *overrides, "--store", str(root))
    assert result.returncode == 0, result.stderr
    assert len(finished_rows(root, "byo-ray")) == 1


def test_built_in_models_record_no_plugins(tmp_path):
    root = tmp_path / "store"
    result = ctrain("train", str(QUICKSTART), *sets("builtin"), "--store", str(root))
    assert result.returncode == 0, result.stderr
    assert finished_rows(root, "builtin")[PLUGINS].isna().all()


def test_seeds_of_a_factory_model_pack_once_the_probe_finds_vmap_batches_it(user_code):
    """Packing user models: tests/test_packed_factory.py (exactness, and models that do not)."""
    spec = load_spec(QUICKSTART, [*BASE, USER_MODEL, "seeds=3", "seeds_per_trial=3"])
    check_plugins(spec)
    assert packing_obstacle(spec.trials()[0]) is None
    assert [len(pack) for pack in spec.packs()] == [3]


@pytest.fixture
def installed_plugin(user_code, tmp_path, monkeypatch) -> Path:
    """A distribution with entry points, "installed" as a dist-info folder on PYTHONPATH."""
    site = tmp_path / "site"
    info = site / "mylab_ctrain-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mylab-ctrain\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        textwrap.dedent(
            """\
            [ctrain_dist.algorithms]
            slow_sgd = mylab_ctrain:SlowSGD

            [ctrain_dist.constraints]
            mean_loss = mylab_ctrain:MeanLoss
            """
        )
    )
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), os.environ["PYTHONPATH"]]))
    return site


def test_an_entry_point_algorithm_is_listed_by_ctrain_algorithms(installed_plugin):
    result = ctrain("algorithms")
    assert result.returncode == 0, result.stderr
    assert "slow_sgd (unconstrained) — a lab's own baseline" in result.stdout


def test_entry_point_algorithm_and_constraint_train_by_their_names(installed_plugin, tmp_path):
    root = tmp_path / "store"
    overrides = sets(
        "entry-points",
        "algorithms=[{name: slow_sgd, params: {lr: 0.05}}]",
        "constraints=[{kind: mean_loss, bound: 0.9}]",
    )
    result = ctrain("train", str(QUICKSTART), *overrides, "--store", str(root))
    assert result.returncode == 0, result.stderr
    (plugins,) = finished_rows(root, "entry-points")[PLUGINS]
    assert set(json.loads(plugins)) == {"algorithm", "constraints.0.kind"}


BAD_PLUGINS = {
    "unresolvable model": (
        'model={factory: "mylab_nowhere:build"}',
        "model.factory",
        "cannot import 'mylab_nowhere'",
    ),
    "missing function": (
        'model={factory: "mylab_ctrain:nothing"}',
        "model.factory",
        "has no 'nothing'",
    ),
    "factory that raises": (
        'model={factory: "mylab_ctrain:raising"}',
        "model.factory",
        "RuntimeError: no weights file here",
    ),
    "two logits per row": (
        'model={factory: "mylab_ctrain:two_logits"}',
        "model.factory",
        "return one logit per row",
    ),
    "unknown factory option": (
        'model={factory: "mylab_ctrain:linear", options: {width: 3}}',
        "model.factory",
        "unexpected keyword argument 'width'",
    ),
    "unresolvable constraint": (
        'constraints=[{kind: "mylab_ctrain:Nothing", bound: 0.1}]',
        "constraints.0.kind",
        "has no 'Nothing'",
    ),
    "constraint that is not additive": (
        'constraints=[{kind: "mylab_ctrain:MeanNotSum", bound: 0.1}]',
        "constraints.0.kind",
        "not additive",
    ),
    "bad rate_bound option": (
        "constraints=[{kind: rate_bound, bound: 0.1, options: {rate: recall}}]",
        "constraints.0.kind",
        "unknown rate 'recall'",
    ),
}


@pytest.mark.parametrize("case", BAD_PLUGINS, ids=str)
def test_a_bad_plugin_exits_2_naming_the_field_before_ray_starts(case, user_code, tmp_path):
    override, field, message = BAD_PLUGINS[case]
    ray_tmp = tmp_path / "ray"
    ray_tmp.mkdir()
    root = tmp_path / "store"
    result = ctrain(
        "sweep", str(QUICKSTART), *sets("bad", override), "--store", str(root), ray_tmp=ray_tmp
    )
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"ctrain: error: {field}"), line
    assert message in line
    assert not list(ray_tmp.iterdir()), "Ray started"
    assert not root.exists()
