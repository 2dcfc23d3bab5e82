"""Checkpoints: a run interrupted at step k and resumed equals an uninterrupted one, for one
model and for a pack of seeds."""

from pathlib import Path

import pytest
import torch
from bitwise import assert_bitwise_equal

from ctrain_dist.algorithms import ALGORITHMS
from ctrain_dist.spec import load_spec
from ctrain_dist.trial.loop import train

QUICKSTART = Path(__file__).parents[1] / "sweeps" / "quickstart.yaml"
K = 40


class Interrupted(Exception):
    pass


class Sink:
    """Collects rows; optionally dies when the run reports step ``die_at`` (a preemption)."""

    def __init__(self, die_at: int | None = None) -> None:
        self.die_at = die_at
        self.rows: list[dict] = []
        self.trials: list[dict] = []

    def evals(self, rows):
        if rows and rows[0]["step"] == self.die_at:
            raise Interrupted
        self.rows.extend(rows)

    def finish(self, trial_row):
        self.trials.append(trial_row)


def _trials(algorithm: str, *overrides: str):
    spec = load_spec(
        QUICKSTART,
        [
            "seeds=[1]",
            f"algorithms=[{{name: {algorithm}}}]",
            f"training.budget.steps={2 * K}",
            f"training.eval_every={K // 2}",
            f"training.checkpoint_every={K}",
            *overrides,
        ],
    )
    return spec.trials()


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_resumed_run_equals_uninterrupted_run_bitwise(tmp_path, algorithm):
    (trial,) = _trials(algorithm)
    whole, resumed = tmp_path / "whole.pt", tmp_path / "resumed.pt"
    train([trial], Sink(), checkpoint=whole)

    with pytest.raises(Interrupted):
        train([trial], Sink(die_at=K + K // 2), checkpoint=resumed)
    assert torch.load(resumed, weights_only=False)["step"] == K
    sink = Sink()
    train([trial], sink, checkpoint=resumed)

    a, b = (torch.load(p, weights_only=False) for p in (whole, resumed))
    assert a["step"] == b["step"] == 2 * K
    for key in ("model", "algorithm", "samplers"):
        assert_bitwise_equal(a[key], b[key], key)
    assert [r["step"] for r in sink.rows] == [r["step"] for r in a["seeds"][0]["history"]]
    assert sink.trials[0]["status"] == "finished"


def _same(a, b) -> bool:
    """Equal values, NaN equal to NaN (a diverged seed's metrics)."""
    return a == b or (a != a and b != b)


CLOCKS = ("attempt_id", "time_s", "started_at", "ended_at", "wall_time_s", "train_time_s")
"""What differs between two attempts of one trajectory: the attempt and its clocks."""


def _by(rows: list[dict], *key: str) -> dict[tuple, dict]:
    """``rows`` by ``key``, without what differs between attempts."""
    return {
        tuple(row[k] for k in key): {k: v for k, v in row.items() if k not in CLOCKS}
        for row in rows
    }


def _assert_same_rows(a: dict[tuple, dict], b: dict[tuple, dict]) -> None:
    assert a and a.keys() == b.keys()
    for key, row in a.items():
        assert row.keys() == b[key].keys(), key
        assert all(_same(value, b[key][name]) for name, value in row.items()), key


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_a_resumed_pack_equals_an_uninterrupted_one_and_re_records_a_seed_that_had_diverged(
    tmp_path,
):
    # lr 20: seed 5 overflows float32 by the first evaluation after step 0, seed 0 does not
    trials = _trials("sgd", "seeds=[0, 5]", "algorithms.0.params={lr: 20.0, momentum: 0.9}")
    whole, resumed = Sink(), Sink()
    train(trials, whole, checkpoint=tmp_path / "whole.pt")
    with pytest.raises(Interrupted):
        train(trials, Sink(die_at=K + K // 2), checkpoint=tmp_path / "resumed.pt")
    saved = torch.load(tmp_path / "resumed.pt", weights_only=False)
    assert saved["step"] == K and saved["seeds"][1]["end"]["status"] == "diverged"
    train(trials, resumed, checkpoint=tmp_path / "resumed.pt")

    statuses = {row["seed"]: (row["status"], row["steps"]) for row in resumed.trials}
    assert statuses == {0: ("finished", 2 * K), 5: ("diverged", K // 2)}
    assert len({row["attempt_id"] for row in resumed.trials}) == 2
    _assert_same_rows(_by(whole.trials, "seed"), _by(resumed.trials, "seed"))
    _assert_same_rows(
        _by(whole.rows, "trial_id", "step", "split"), _by(resumed.rows, "trial_id", "step", "split")
    )
