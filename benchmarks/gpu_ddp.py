"""The GPU check's ``ddp`` step: exact data parallelism on one CUDA device, two ways.

Why two: a check gets one GPU, and NCCL refuses two ranks on one GPU. So

- ``gloo, 2 ranks``: two processes share ``cuda:0`` over gloo, which all-reduces CUDA tensors
  (through the host). DDP's gradient buckets, the statistics' all-reduce
  (``distributed.exact_statistics``) and ``any_rank`` then run on CUDA tensors, and after the
  same steps every parameter and dual must equal one process's to 1e-9 in float64, as on the
  CPU (``tests/test_distributed.py``). No change to the trial code forces the backend: a rank
  joins gloo before the loop starts, and ``distributed.join_workers`` takes a group already
  initialised as it is (as under Ray Train);
- ``NCCL, 1 rank``: the backend the framework picks on CUDA (``distributed.backend_for``),
  with a ``ModelLearner`` whose workers take the process group's path although there is one
  rank (``_OneRankGroup``): DDP with ``device_ids``, the statistics' all-reduce and
  ``any_rank`` all go through NCCL, and the result must equal the same learner alone.

Without CUDA the gloo part runs on the CPU (the fallback) and the NCCL part is skipped.
Checkpoints go to a temporary folder, not OUT: only the report comes back from a lent machine.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.multiprocessing import ProcessExitedException

from benchmarks.bench_packing import QUICKSTART, _Discard
from benchmarks.gpu_report import FAILED, PASSED, SKIPPED, StepResult
from ctrain_dist.algorithms import ALGORITHMS
from ctrain_dist.data.load import load_data
from ctrain_dist.spec import TrialSpec, load_spec
from ctrain_dist.trial.distributed import (
    Workers,
    any_rank,
    backend_for,
    launch_local,
    local_rank,
    trial_device,
)
from ctrain_dist.trial.learner import ModelLearner
from ctrain_dist.trial.loop import train

DATA_PARALLEL = sorted(name for name, cls in ALGORITHMS.items() if cls.data_parallel)
STEPS = 40
FALLBACK = (["ssl_alm"], 20)
"""The CPU fallback's algorithms and steps: the same code, kept small to stay under a minute."""
RTOL, ATOL = 1e-9, 1e-11


class _OneRankGroup(Workers):
    """One rank that takes the process group's path all the same (DDP, the all-reduces), so
    NCCL's code path runs on a single GPU. With one rank the exact-statistics construction is
    the identity in value and gradient, so the trajectory is the learner's alone."""

    @property
    def distributed(self) -> bool:
        return True


def ddp_trials(device: str, algorithms: Sequence[str], steps: int) -> list[TrialSpec]:
    """One float64 trial per algorithm on ``device``, checkpointed at its last step."""
    return load_spec(
        QUICKSTART,
        [
            "name=gpu-check-ddp",
            "seeds=[3]",
            f"algorithms={[{'name': name} for name in algorithms]}",
            f"training.budget.steps={steps}",
            f"training.eval_every={steps // 2}",
            f"training.checkpoint_every={steps}",
            "training.dtype=float64",
            f"training.device={device}",
        ],
    ).trials()


def _train_each(folder: Path, trials: Sequence[TrialSpec]) -> None:
    for trial in trials:
        train([trial], _Discard(), checkpoint=folder / f"{trial.algorithm}.pt")


def _gloo_rank(folder: str, device: str, algorithms: list[str], steps: int) -> None:
    """One of two ranks: gloo joined here, before the loop (which would pick NCCL on CUDA)."""
    dist.init_process_group("gloo", init_method="env://")
    _train_each(Path(folder), ddp_trials(device, algorithms, steps))


def _tensors(state: Any, where: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor in a (nested) state dict, with its path."""
    if isinstance(state, torch.Tensor):
        yield where, state
    elif isinstance(state, dict):
        for key, value in state.items():
            yield from _tensors(value, f"{where}.{key}")
    elif isinstance(state, list | tuple):
        for index, value in enumerate(state):
            yield from _tensors(value, f"{where}[{index}]")


def compare(one: dict[str, Any], two: dict[str, Any]) -> dict[str, Any]:
    """Model and algorithm tensors of two states: the largest difference, and the first
    tensor beyond ``RTOL``/``ATOL`` (None when all agree)."""
    largest, mismatch = 0.0, None
    pairs = zip(
        _tensors({"model": one["model"], "algorithm": one["algorithm"]}),
        _tensors({"model": two["model"], "algorithm": two["algorithm"]}),
        strict=True,
    )
    for (where, a), (_, b) in pairs:
        a, b = a.detach().cpu(), b.detach().cpu()
        if not a.is_floating_point():
            mismatch = mismatch or (None if torch.equal(a, b) else where)
            continue
        largest = max(largest, float((a - b).abs().max()) if a.numel() else 0.0)
        if mismatch is None and not torch.allclose(a, b, rtol=RTOL, atol=ATOL):
            mismatch = where
    return {"max_abs_difference": largest, "mismatch": mismatch}


def _launch(nproc: int, target: Callable[..., None], args: tuple, done: Path) -> None:
    """``launch_local``, tolerating the gloo teardown abort seen after the work is written
    (``bench_ddp.measure`` has the story): only a run that did not write ``done`` failed."""
    try:
        launch_local(nproc, target, args)
    except ProcessExitedException:
        if not done.is_file():
            raise


def gloo_two_ranks(device: str, algorithms: list[str], steps: int) -> dict[str, Any]:
    """Each algorithm's trial in one process and on two gloo ranks; their final states."""
    with tempfile.TemporaryDirectory(prefix="gpu-check-ddp-") as folder:
        one, two = Path(folder) / "one", Path(folder) / "two"
        _train_each(one, ddp_trials(device, algorithms, steps))
        _launch(2, _gloo_rank, (str(two), device, algorithms, steps), two / f"{algorithms[-1]}.pt")
        return {
            name: compare(*(_load(side / f"{name}.pt") for side in (one, two)))
            for name in algorithms
        }


def _load(path: Path) -> dict[str, Any]:
    return torch.load(path, weights_only=False, map_location="cpu")


def _trained(learner: ModelLearner, steps: int) -> dict[str, Any]:
    for _ in range(steps):
        learner.algorithm.step(learner.estimate)
    return learner.state_dict()


def _nccl_rank(out: str, algorithms: list[str], steps: int) -> None:
    """The only rank: NCCL as ``backend_for`` picks it; each algorithm through the group and
    alone; ``any_rank`` through NCCL."""
    device = trial_device("cuda", local_rank())
    dist.init_process_group(backend_for(device), init_method="env://")
    trials = ddp_trials("cuda", algorithms, steps)
    data = load_data(trials[0].data, trials[0].split)
    group = _OneRankGroup()
    results: dict[str, Any] = {
        "backend": dist.get_backend(),
        "device": str(device),
        "any_rank": any_rank(True, group, device),
        "algorithms": {
            trial.algorithm: compare(
                _trained(ModelLearner(trial, data, group, device), steps),
                _trained(ModelLearner(trial, data, Workers(), device), steps),
            )
            for trial in trials
        },
    }
    Path(out).write_text(json.dumps(results))


def nccl_one_rank(algorithms: list[str], steps: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="gpu-check-nccl-") as folder:
        out = Path(folder) / "nccl.json"
        _launch(1, _nccl_rank, (str(out), algorithms, steps), out)
        return json.loads(out.read_text())


def _agree(comparisons: dict[str, Any]) -> bool:
    return all(figure["mismatch"] is None for figure in comparisons.values())


def _rows(gloo: dict[str, Any], nccl: dict[str, Any] | None) -> list[str]:
    """One table row per algorithm: the largest difference each way, and the verdict."""

    def cell(figure: dict[str, Any] | None) -> str:
        if figure is None:
            return "–"
        verdict = "equal" if figure["mismatch"] is None else f"differs at `{figure['mismatch']}`"
        return f"{figure['max_abs_difference']:.1e} ({verdict})"

    algorithms = (nccl or {}).get("algorithms", {})
    return [
        f"| `{name}` | {cell(figure)} | {cell(algorithms.get(name))} |"
        for name, figure in gloo.items()
    ]


def ddp_step(cuda_missing: str | None) -> StepResult:
    """The step: both checks on CUDA; without it the gloo check on the CPU, NCCL skipped."""
    on_cuda = cuda_missing is None
    algorithms, steps = (DATA_PARALLEL, STEPS) if on_cuda else FALLBACK
    device = "cuda" if on_cuda else "cpu"
    gloo = gloo_two_ranks(device, list(algorithms), steps)
    nccl = nccl_one_rank(list(algorithms), steps) if on_cuda else None
    figures = {"device": device, "steps": steps, "gloo_2_ranks": gloo, "nccl_1_rank": nccl}
    markdown = "\n".join(
        [
            f"float64, {steps} steps per algorithm; largest absolute difference of every "
            f"parameter and algorithm state against one process, tolerance rtol {RTOL:g}, "
            f"atol {ATOL:g}.",
            "",
            f"| algorithm | 2 gloo ranks on `{device}` vs 1 process | NCCL, 1 rank through the "
            "group vs alone |",
            "|---|---|---|",
            *_rows(gloo, nccl),
        ]
    )
    broken = [] if _agree(gloo) else ["2 gloo ranks differ from one process"]
    if nccl is not None:
        if nccl["backend"] != "nccl" or not nccl["any_rank"]:
            broken.append(f"NCCL path: backend {nccl['backend']}, any_rank {nccl['any_rank']}")
        if not _agree(nccl["algorithms"]):
            broken.append("NCCL through the group differs from the learner alone")
    if broken:
        return StepResult(FAILED, "; ".join(broken), figures, markdown)
    if not on_cuda:
        reason = (
            f"{cuda_missing}: ran the CPU fallback, 2 gloo ranks on the CPU "
            f"({', '.join(algorithms)}, equal to one process); NCCL needs a CUDA device"
        )
        return StepResult(SKIPPED, reason, figures, markdown)
    return StepResult(PASSED, "", figures, markdown)
