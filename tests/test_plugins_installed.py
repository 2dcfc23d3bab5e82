"""An entry-point plug-in installed for real: a tiny distribution built in the test, pip
installed into this venv (and uninstalled after, whatever happens), is listed by ``ctrain
algorithms`` and runs in a local Ray sweep by its registered names: its algorithm, its
constraint and its dataset."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ctrain_dist import store
from ctrain_dist.store.schema import STATUS, STATUS_FINISHED

DEADLINE_S = 300  # a deadline for a hung command, not a measure of speed
DISTRIBUTION = "ctrain-test-plugin-19"
PACKAGE = "ctrain_test_plugin_19"
PLUGIN = '''
"""A lab's algorithm, constraint and dataset, registered as ctrain_dist entry points."""
import torch
from torch.nn import functional

from ctrain_dist.algorithms.unconstrained import SGD
from ctrain_dist.constraints import Constraint


class LabSGD(SGD):
    name = "lab_sgd"
    paper = "an installed lab baseline"


class MeanLoss(Constraint):
    kind, num_values, num_statistics = "lab_mean_loss", 1, 2

    def __init__(self, bound, num_groups, decide_on="strict"):
        super().__init__(bound, decide_on)

    def statistics(self, logits, labels, groups, weights=None, losses=None):
        w = torch.ones_like(logits) if weights is None else weights.to(logits.dtype)
        if losses is None:
            losses = functional.binary_cross_entropy_with_logits(logits, labels, reduction="none")
        return torch.stack([(w * losses).sum(), w.sum()])

    def value(self, stats, strict=False):
        return (stats[0] / stats[1]).reshape(1) - self.bound

    def names(self, group_names):
        return [f"lab_mean_loss<={self.bound:g}"]


def lab_table(rows=300):
    g = torch.Generator().manual_seed(0)
    groups = (torch.rand(rows, generator=g) < 0.4).long()
    labels = (torch.rand(rows, generator=g) < 0.5).float()
    features = torch.randn(rows, 5, generator=g) + labels[:, None]
    return features, labels, groups
'''
PYPROJECT = f"""
[build-system]
requires = ["setuptools>=69"]
build-backend = "setuptools.build_meta"

[project]
name = "{DISTRIBUTION}"
version = "0.1"

[project.entry-points."ctrain_dist.algorithms"]
lab_sgd = "{PACKAGE}:LabSGD"

[project.entry-points."ctrain_dist.constraints"]
lab_mean_loss = "{PACKAGE}:MeanLoss"

[project.entry-points."ctrain_dist.datasets"]
lab_table = "{PACKAGE}:lab_table"
"""
SPEC = """
name: installed
data: {dataset: custom, factory: lab_table}
model: {hidden: [8]}
constraints: [{kind: lab_mean_loss, bound: 0.9}]
training: {batch_size: 32, budget: {steps: 10}, eval_every: 5}
algorithms: [{name: lab_sgd, params: {lr: 0.05}}]
seeds: 2
"""


def pip(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pip", *arguments, "--quiet", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
    )


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory, request) -> str:
    """The distribution, built from source here and pip installed; uninstalled at the end."""
    source = tmp_path_factory.mktemp("plugin")
    (source / "pyproject.toml").write_text(textwrap.dedent(PYPROJECT))
    (source / f"{PACKAGE}.py").write_text(PLUGIN)
    request.addfinalizer(lambda: pip("uninstall", "--yes", DISTRIBUTION))
    result = pip("install", "--no-deps", "--no-build-isolation", str(source))
    assert result.returncode == 0, result.stderr
    return DISTRIBUTION


def ctrain(*arguments: str, cwd: Path) -> subprocess.CompletedProcess:
    # From another folder, without PYTHONPATH: the plug-in is found only as installed.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [sys.executable, "-m", "ctrain_dist.cli", *arguments],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
    )


@pytest.mark.slow
def test_an_installed_plugin_is_listed_and_runs_in_a_sweep(installed_plugin, tmp_path):
    listed = ctrain("algorithms", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "lab_sgd (unconstrained) — an installed lab baseline" in listed.stdout
    assert f"    lab_mean_loss — {PACKAGE}:MeanLoss" in listed.stdout
    assert f"    lab_table — {PACKAGE}:lab_table" in listed.stdout

    (tmp_path / "spec.yaml").write_text(SPEC)
    swept = ctrain("sweep", "spec.yaml", "--store", "store", cwd=tmp_path)
    assert swept.returncode == 0, swept.stderr
    trials = store.open(tmp_path / "store").trials("installed")
    assert sorted(trials["seed"]) == [0, 1]
    assert set(trials[STATUS]) == {STATUS_FINISHED}
    assert set(trials["algorithm"]) == {"lab_sgd"}
