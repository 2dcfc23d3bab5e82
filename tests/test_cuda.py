"""The CUDA path, on a CUDA device: placement and dtype, pinned copies, seeds packed or alone
through the loop, no host sync inside a step, and how often an evaluation reads the device.

Skipped without a device (CI has none); ``bash benchmarks/gpu_check.sh OUT`` runs every test
marked ``cuda`` on the first GPU at hand. Host syncs are caught by
``torch.cuda.set_sync_debug_mode``: in ``"error"`` mode an operation that makes the host wait
for the device (``.item()``, ``float(t)``, a copy between the device and pageable host
memory, a boolean-mask index) raises; in ``"warn"`` mode each one warns, which counts them.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from list_sink import ListSink

from ctrain_dist.algorithms import ALGORITHMS
from ctrain_dist.data.load import load_data
from ctrain_dist.data.tabular import SPLITS, TabularData
from ctrain_dist.spec import TrialSpec, load_spec
from ctrain_dist.store.schema import DEVICE, OBJECTIVE, STATUS, STATUS_FINISHED, TRIAL_ID
from ctrain_dist.trial.distributed import Workers
from ctrain_dist.trial.learner import Learner
from ctrain_dist.trial.loop import learner_for, train

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

QUICKSTART = Path(__file__).parents[1] / "sweeps" / "quickstart.yaml"
CUDA = torch.device("cuda", 0)
STEPS, EVAL_EVERY = 6, 3
SYNC_FREE = sorted(set(ALGORITHMS) - {"ghost"})
"""Every algorithm but Stochastic Ghost, which solves its LP and QPs on the host by design."""
SEEDS = [pytest.param(1, id="alone"), pytest.param(3, id="packed")]
SAMPLERS = {"uniform": [], "stratified": ["training.min_group_count=8"]}


def _trials(algorithm: str, seeds: int = 1, *overrides: str) -> list[TrialSpec]:
    return load_spec(
        QUICKSTART,
        [
            f"seeds={seeds}",
            f"algorithms=[{{name: {algorithm}}}]",
            f"training.device={CUDA.type}",
            f"training.budget.steps={STEPS}",
            f"training.eval_every={EVAL_EVERY}",
            *overrides,
        ],
    ).trials()


@pytest.fixture(scope="module")
def data() -> TabularData:
    trial = _trials("sgd")[0]
    return load_data(trial.data, trial.split)


def _learner(algorithm: str, seeds: int, data: TabularData, *overrides: str) -> Learner:
    return learner_for(_trials(algorithm, seeds, *overrides), data, Workers(), CUDA)


def _step(learner: Learner) -> dict[str, torch.Tensor]:
    return learner.algorithm.step(learner.estimate)


@contextmanager
def _host_syncs(mode: str) -> Iterator[None]:
    """Inside, every host sync raises (``"error"``) or warns (``"warn"``)."""
    torch.cuda.set_sync_debug_mode(mode)
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("seeds", SEEDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_learner_keeps_data_model_and_duals_on_the_device_in_the_trials_dtype(data, dtype, seeds):
    learner = _learner("ssl_alm", seeds, data, f"training.dtype={dtype}")
    info = _step(learner)
    floating = [
        learner.data.features,
        learner.data.labels,
        *learner.model.parameters(),
        learner.algorithm.multipliers(),
        info["loss"],
    ]
    assert {(t.device, t.dtype) for t in floating} == {(CUDA, getattr(torch, dtype))}
    indices = [learner.data.groups, *learner.data.splits.values()]
    assert {(t.device, t.dtype) for t in indices} == {(CUDA, torch.int64)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_data_reach_the_device_through_pinned_memory_unchanged(data, dtype):
    moved = data.to(dtype=dtype, device=CUDA)
    assert torch.equal(moved.features.cpu(), data.features.to(dtype))
    assert torch.equal(moved.labels.cpu(), data.labels.to(dtype))
    assert torch.equal(moved.groups.cpu(), data.groups)
    for split in SPLITS:
        assert torch.equal(moved.splits[split].cpu(), data.splits[split])


@pytest.mark.parametrize("sampler", list(SAMPLERS))
@pytest.mark.parametrize("seeds", SEEDS)
@pytest.mark.parametrize("algorithm", SYNC_FREE)
def test_a_training_step_never_waits_for_the_device(data, algorithm, seeds, sampler):
    if seeds > 1 and not ALGORITHMS[algorithm].batchable:
        pytest.skip(f"{algorithm} trains one seed at a time")
    learner = _learner(algorithm, seeds, data, *SAMPLERS[sampler])
    for _ in range(2):  # lazily built state: optimiser moments, cached constraint constants
        _step(learner)
    with _host_syncs("error"):
        for _ in range(3):
            _step(learner)


def test_a_step_that_starts_a_new_epoch_never_waits_for_the_device(data):
    batch, warm = 4096, 2
    learner = _learner("sgd", 1, data, f"training.batch_size={batch}")
    for _ in range(warm):
        _step(learner)
    batches_an_epoch = data.splits["train"].numel() // batch
    with _host_syncs("error"):
        for _ in range(batches_an_epoch - warm + 1):  # the last one starts the next epoch
            _step(learner)


def test_ghost_steps_on_the_device_with_its_subproblems_on_the_host(data):
    learner = _learner("ghost", 1, data)
    before = [p.detach().clone() for p in learner.model.parameters()]
    info = _step(learner)
    after = list(learner.model.parameters())
    assert {p.device for p in after} == {CUDA}
    assert torch.isfinite(info["loss"]).all()
    assert any(not torch.equal(a, b) for a, b in zip(after, before, strict=True))


@pytest.mark.parametrize("seeds", SEEDS)
def test_seeds_train_through_the_loop_on_the_device_into_plain_rows(data, seeds):
    trials = _trials("ssl_alm", seeds)
    sink = ListSink()
    returned = train(trials, sink, data=data)
    assert [row[TRIAL_ID] for row in returned] == [trial.trial_id for trial in trials]
    assert {(row[STATUS], row[DEVICE]) for row in returned} == {(STATUS_FINISHED, str(CUDA))}
    evaluation_points = STEPS // EVAL_EVERY + 1
    assert len(sink.eval_rows) == seeds * evaluation_points * len(SPLITS)
    values = [value for row in sink.eval_rows + sink.trial_rows for value in row.values()]
    assert not any(isinstance(value, torch.Tensor) for value in values)  # a sink never syncs


def test_a_trial_reaches_on_the_device_the_values_it_reaches_on_the_cpu(data):
    rows = {}
    for device in ("cpu", CUDA.type):
        sink = ListSink()
        overrides = ("training.dtype=float64", f"training.device={device}")
        train(_trials("ssl_alm", 1, *overrides), sink, data=data)
        rows[device] = sink.eval_rows
    for on_cpu, on_device in zip(rows["cpu"], rows[CUDA.type], strict=True):
        for key in [OBJECTIVE, *(key for key in on_cpu if key.startswith("constraint_"))]:
            assert on_device[key] == pytest.approx(on_cpu[key], rel=1e-9, abs=1e-12), key


MANY_CONSTRAINTS = (
    "constraints=[{kind: loss_gap, bound: 0.05}, {kind: positive_rate_gap, bound: 0.05}, "
    "{kind: equalized_odds, bound: 0.05}]"
)


def test_an_evaluation_waits_for_the_device_once_a_split_not_once_a_metric(data):
    learner = _learner("ssl_alm", 1, data, MANY_CONSTRAINTS)
    _step(learner)
    learner.evaluate([0])  # lazily built constants
    with warnings.catch_warnings(record=True) as caught, _host_syncs("warn"):
        warnings.simplefilter("always")
        learner.evaluate([0])
    waits = [w for w in caught if "synchronizing CUDA operation" in str(w.message)]
    assert len(waits) <= len(SPLITS)
