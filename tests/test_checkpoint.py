"""Trainer checkpoints: a run interrupted at step k and resumed equals an uninterrupted one."""

from pathlib import Path

import pytest
import torch

from ctrain_dist.algorithms import ALGORITHMS
from ctrain_dist.spec import load_spec
from ctrain_dist.trial.trainer import train

QUICKSTART = Path(__file__).parents[1] / "sweeps" / "quickstart.yaml"
K = 40


class Interrupted(Exception):
    pass


class Sink:
    """Collects rows; optionally dies when the run reports step ``die_at`` (a preemption)."""

    def __init__(self, die_at: int | None = None) -> None:
        self.die_at = die_at
        self.rows: list[dict] = []
        self.trial: dict | None = None

    def evals(self, rows):
        if rows and rows[0]["step"] == self.die_at:
            raise Interrupted
        self.rows.extend(rows)

    def finish(self, trial_row):
        self.trial = trial_row


def _trial(algorithm: str):
    spec = load_spec(
        QUICKSTART,
        [
            "seeds=[1]",
            f"algorithms=[{{name: {algorithm}}}]",
            f"training.budget.steps={2 * K}",
            f"training.eval_every={K // 2}",
            f"training.checkpoint_every={K}",
        ],
    )
    return spec.trials()[0]


def _assert_bitwise_equal(a, b, where="state"):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_bitwise_equal(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_bitwise_equal(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_resumed_run_equals_uninterrupted_run_bitwise(tmp_path, algorithm):
    trial = _trial(algorithm)
    whole, resumed = tmp_path / "whole.pt", tmp_path / "resumed.pt"
    train(trial, Sink(), checkpoint=whole)

    with pytest.raises(Interrupted):
        train(trial, Sink(die_at=K + K // 2), checkpoint=resumed)
    assert torch.load(resumed, weights_only=False)["step"] == K
    sink = Sink()
    train(trial, sink, checkpoint=resumed)

    a, b = (torch.load(p, weights_only=False) for p in (whole, resumed))
    assert a["step"] == b["step"] == 2 * K
    for key in ("model", "algorithm", "sampler"):
        _assert_bitwise_equal(a[key], b[key], key)
    assert [r["step"] for r in sink.rows] == [r["step"] for r in a["history"]]
    assert sink.trial["status"] == "finished"
