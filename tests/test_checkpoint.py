"""Checkpoints: a run interrupted at step k and resumed equals an uninterrupted one, for one
model and for a pack of seeds; and the launchers that train in their own process (``ctrain
train``, SLURM array tasks) checkpoint each pack to the store's ``_checkpoints/`` folder, so a
retried or re-run trial resumes from its last checkpoint. Real kills: test_kill_resume.py."""

from pathlib import Path

import pytest
import torch
from bitwise import assert_bitwise_equal

from ctrain_dist import store
from ctrain_dist.algorithms import ALGORITHMS
from ctrain_dist.launch import local
from ctrain_dist.launch.local import train_locally
from ctrain_dist.launch.slurm import jobs
from ctrain_dist.launch.slurm.jobs import ArrayTrials
from ctrain_dist.spec import load_spec
from ctrain_dist.store.layout import CHECKPOINTS
from ctrain_dist.store.sink import StoreSink
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


CLOCKS = (
    "attempt_id",
    "time_s",
    "started_at",
    "ended_at",
    "wall_time_s",
    "train_time_s",
    "resumed_from_step",
)
"""What differs between two attempts of one trajectory: the attempt, its clocks, and the step
it started from."""


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
    started = {row["seed"]: row["resumed_from_step"] for row in resumed.trials}
    assert started == {0: K, 5: K // 2}  # seed 5 had ended before: this attempt trained it 0
    assert len({row["attempt_id"] for row in resumed.trials}) == 2
    _assert_same_rows(_by(whole.trials, "seed"), _by(resumed.trials, "seed"))
    _assert_same_rows(
        _by(whole.rows, "trial_id", "step", "split"), _by(resumed.rows, "trial_id", "step", "split")
    )


# --- launchers: `ctrain train` and SLURM array tasks checkpoint to the store's folder ---------

FAIL_AT = K + K // 2
"""An evaluation point after the checkpoint at step K and before the next one."""


def _preempting(sink_class: type[StoreSink]) -> type[StoreSink]:
    """``sink_class`` whose first evaluation rows of step ``FAIL_AT`` raise, as a lost node
    would end the attempt there: the checkpoint of step K is then the last."""

    class Preempting(sink_class):
        fired = False

        def evals(self, rows):
            if rows and rows[0]["step"] == FAIL_AT and not Preempting.fired:
                Preempting.fired = True
                raise RuntimeError(f"preempted at step {FAIL_AT}")
            super().evals(rows)

    return Preempting


def _launcher_spec(*overrides: str):
    return load_spec(
        QUICKSTART,
        [
            "name=ckpt",
            "seeds=[1]",
            "algorithms=[{name: ssl_alm}]",
            f"training.budget.steps={2 * K}",
            f"training.eval_every={K // 2}",
            f"training.checkpoint_every={K}",
            *overrides,
        ],
    )


def _kept_curve(root: Path) -> tuple[dict, dict[tuple, dict]]:
    """The kept ``trials`` row of the one trial and its attempt's evaluation rows."""
    reader = store.open(root)
    (row,) = reader.trials("ckpt").to_dict("records")
    evals = reader.evals("ckpt").to_dict("records")
    return row, _by(evals, "step", "split")


def test_ctrain_train_run_again_after_a_failure_resumes_from_the_last_checkpoint(
    tmp_path, monkeypatch
):
    spec = _launcher_spec("max_failures=0")
    whole = tmp_path / "whole"
    assert train_locally(spec, whole, 1, log=lambda _: None) == {"finished": 1}

    root = tmp_path / "store"
    monkeypatch.setattr(local, "StoreSink", _preempting(StoreSink))
    assert train_locally(spec, root, 1, log=lambda _: None) == {"error": 1}
    (saved,) = (root / CHECKPOINTS / "ckpt").glob("*.pt")
    assert torch.load(saved, weights_only=True)["step"] == K

    lines: list[str] = []
    assert train_locally(spec, root, 1, log=lines.append) == {"finished": 1}
    row, curve = _kept_curve(root)
    assert (row["steps"], row["resumed_from_step"]) == (2 * K, K)
    assert not saved.exists()  # dropped once the trial ended
    whole_row, whole_curve = _kept_curve(whole)
    assert whole_row["resumed_from_step"] == 0
    _assert_same_rows(whole_curve, curve)

    assert train_locally(spec, root, 1, log=lines.append) == {}
    assert "1 of 1 trials already finished in the store; skipping them" in lines


def test_an_array_task_retries_a_failed_pack_from_its_last_checkpoint(tmp_path, monkeypatch):
    spec = _launcher_spec()
    whole = tmp_path / "whole"
    assert ArrayTrials(whole, attempts=1)([spec.trials()]) == {"finished": 1}

    root = tmp_path / "store"
    monkeypatch.setattr(jobs, "StoreSink", _preempting(StoreSink))
    assert ArrayTrials(root, attempts=2)([spec.trials()]) == {"finished": 1}
    attempts = store.open(root).trials("ckpt", all_attempts=True)
    assert sorted(attempts["status"]) == ["error", "finished"]
    row, curve = _kept_curve(root)
    assert (row["steps"], row["resumed_from_step"]) == (2 * K, K)
    assert list((root / CHECKPOINTS / "ckpt").glob("*.pt")) == []
    _assert_same_rows(_kept_curve(whole)[1], curve)
