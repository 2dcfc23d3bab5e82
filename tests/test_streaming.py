"""The streaming path: a user's ``Dataset`` trains on exactly the rows, and to exactly the
values, of the same data in memory; it resumes exactly; 2 data-parallel workers equal 1
process (float64, 1e-9) through ``ctrain train --nproc 2``; and a local Ray sweep runs user
model, data and constraint found only on the driver's ``sys.path`` (Ray's runtime
environment carries them to the workers)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from byo import MODULE, write_user_module

from ctrain_dist import store
from ctrain_dist.spec import parse_spec
from ctrain_dist.store.schema import PLUGINS, STATUS, STATUS_FINISHED
from ctrain_dist.trial.loop import train

DEADLINE_S = 300  # a deadline for a hung command, not a measure of speed
TOLERANCE = 1e-9
COMPARED = ("objective", "max_violation", "accuracy", "constraint_0", "constraint_1")


class Interrupted(Exception):
    pass


class ListSink:
    def __init__(self, die_at: int | None = None) -> None:
        self.rows: list[dict] = []
        self.die_at = die_at

    def evals(self, rows):
        if rows and rows[0]["step"] == self.die_at:
            raise Interrupted
        self.rows.extend(rows)

    def finish(self, trial_row):
        pass


@pytest.fixture
def user_code(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "user"
    write_user_module(folder)
    monkeypatch.syspath_prepend(str(folder))
    return folder


def raw_spec(factory: str, name: str = "streaming", steps: int = 30, **data) -> dict:
    return {
        "name": name,
        "data": {"dataset": "custom", "factory": f"{MODULE}:{factory}", **data},
        "model": {"factory": f"{MODULE}:cnn"},
        "constraints": [
            {"kind": "loss_gap", "bound": 0.02},
            {"kind": f"{MODULE}:MeanLoss", "bound": 0.6},
        ],
        "training": {
            "batch_size": 32,
            "budget": {"steps": steps},
            "eval_every": 10,
            "dtype": "float64",
            "checkpoint_every": 10,
        },
        "algorithms": [{"name": "alm", "params": {"lr": 0.05}}],
        "seeds": [3],
    }


def curve(rows: list[dict]) -> list[tuple]:
    return [(r["split"], r["step"], r["samples"], *(r[k] for k in COMPARED)) for r in rows]


def assert_close(a: list[tuple], b: list[tuple]) -> None:
    assert len(a) == len(b) > 0
    for x, y in zip(a, b, strict=True):
        assert x[:3] == y[:3]
        assert x[3:] == pytest.approx(y[3:], abs=TOLERANCE, rel=0)


def run(raw: dict, **kwargs) -> list[dict]:
    sink = ListSink()
    train(parse_spec(raw).trials(), sink, **kwargs)
    return sink.rows


@pytest.mark.parametrize("workers", [0, 2], ids=["in-process", "2-loader-workers"])
def test_a_streamed_dataset_trains_exactly_as_its_tensors_in_memory(user_code, workers):
    in_memory = run(raw_spec("blobs"))
    streamed = run(raw_spec("streamed", loader_workers=workers))
    assert curve(streamed) == curve(in_memory)


def test_a_streamed_trial_resumes_on_the_uninterrupted_trajectory(user_code, tmp_path):
    raw = raw_spec("streamed")
    whole = run(raw, checkpoint=tmp_path / "whole.pt")
    trials = parse_spec(raw).trials()
    with pytest.raises(Interrupted):
        train(trials, ListSink(die_at=20), checkpoint=tmp_path / "resumed.pt")
    resumed = ListSink()
    train(trials, resumed, checkpoint=tmp_path / "resumed.pt")
    assert curve(resumed.rows) == curve(whole)


def ctrain(*arguments: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ctrain_dist.cli", *arguments],
        env=env,
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
    )


def stored_curve(root: Path, sweep: str) -> list[tuple]:
    trials = store.open(root).trials(sweep)
    assert set(trials[STATUS]) == {STATUS_FINISHED}
    evals = store.open(root).evals(sweep).sort_values(["step", "split"])
    return curve(evals.to_dict("records"))


@pytest.mark.slow
@pytest.mark.parametrize("factory", ["streamed", "blobs"])
def test_two_workers_equal_one_process_through_ctrain_train(user_code, tmp_path, factory):
    one = sorted(curve(run(raw_spec(factory))), key=lambda r: (r[1], r[0]))
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(raw_spec(factory, name="ddp")))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(user_code), os.environ.get("PYTHONPATH", "")]),
    }
    result = ctrain(
        "train", str(spec_file), "--nproc", "2", "--store", str(tmp_path / "s"), env=env
    )
    assert result.returncode == 0, result.stderr
    assert_close(stored_curve(tmp_path / "s", "ddp"), one)


DRIVER = """
import sys
sys.path.insert(0, {folder!r})  # on the driver's sys.path only, not in PYTHONPATH
import yaml
from pathlib import Path
from ctrain_dist.launch.ray_sweep import run_sweep
from ctrain_dist.spec import parse_spec
outcome = run_sweep(parse_spec(yaml.safe_load(Path({spec!r}).read_text())), Path({store!r}))
sys.exit(1 if outcome.failed else 0)
"""


@pytest.mark.slow
def test_a_ray_sweep_carries_user_code_on_the_driver_s_path_to_its_workers(user_code, tmp_path):
    spec_file = tmp_path / "spec.yaml"
    raw = raw_spec("streamed", name="ray-byo", steps=10)
    raw["seeds"] = [0, 1]
    spec_file.write_text(yaml.safe_dump(raw))
    script = DRIVER.format(folder=str(user_code), spec=str(spec_file), store=str(tmp_path / "s"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    trials = store.open(tmp_path / "s").trials("ray-byo")
    assert sorted(trials["seed"]) == [0, 1] and set(trials[STATUS]) == {STATUS_FINISHED}
    assert all("data.factory" in text and "constraints.1.kind" in text for text in trials[PLUGINS])
