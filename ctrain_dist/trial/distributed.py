r"""Data parallelism that keeps constraint estimates exact: one fused all-reduce per estimate.

Why: a constraint is a function of additive statistics (sums and counts per group, see
``constraints.py``). Averaging per-rank constraint *values*, as the reference toolkit does, is
biased whenever group counts differ between ranks, which they do for the minorities fairness
constraints exist for. Summing the *statistics* is exact.

The exact-gradient construction (DESIGN.md): with ``R`` ranks, each holding local statistics
:math:`s_r` of its slice of the global minibatch,

.. math::
    s^{\text{exact}}_r = \operatorname{sg}(S) + R\, s_r - \operatorname{sg}(R\, s_r),
    \qquad S = \textstyle\sum_r s_r \text{ (one all-reduce)},

where sg stops gradients. Its value is the global :math:`S` on every rank; its gradient is
:math:`R\,\partial s_r/\partial\theta`. DDP averages gradients over ranks, so every rank ends
with :math:`\frac1R \sum_r R\, \partial s_r/\partial\theta \cdot \partial c/\partial S =
\nabla_\theta\, c(S)`: the gradient of the single-process problem on the union batch. Every
rank sees the same loss and constraint values, so switching decisions and dual updates agree
without further messages.

The process group comes from the environment: torchrun's variables (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``; what ``ctrain train --nproc`` and submitit's
``TorchDistributedEnvironment().export()`` set), or one already initialised (Ray Train).
Backend: NCCL when the trial runs on CUDA, gloo otherwise.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn


@dataclass(frozen=True)
class Workers:
    """This process's place among the trial's workers (``world_size == 1``: no process group)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def world_size() -> int:
    """How many processes this trial runs on: the size of the process group this process is
    in (Ray Train's), else what the environment announces (torchrun, ``launch_local``), else 1.

    Read without joining, so a caller can know before training whether it is one of several.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def join_workers(device: torch.device) -> Workers:
    """The process group this process belongs to, initialised from the environment if needed."""
    size = world_size()
    if size == 1:
        return Workers()
    if not dist.is_initialized():
        dist.init_process_group(backend=backend_for(device), init_method="env://")
    return Workers(dist.get_rank(), size, local_rank())


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def trial_device(requested: str, local_rank: int) -> torch.device:
    """The device of this rank: its own GPU (by local rank) on CUDA, else the CPU."""
    use_cuda = requested == "cuda" or (requested == "auto" and torch.cuda.is_available())
    if not use_cuda:
        return torch.device("cpu")
    device = torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1))
    torch.cuda.set_device(device)
    return device


def exact_statistics(local: torch.Tensor, workers: Workers) -> torch.Tensor:
    """Global statistics with the gradient of the local share scaled by R (module docstring).

    Exactly one collective: the all-reduce of the detached flat vector.
    """
    if not workers.distributed:
        return local
    total = _summed_over_ranks(local.detach().clone())
    scaled = workers.world_size * local
    return total + (scaled - scaled.detach())


@torch.compiler.disable
def _summed_over_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` all-reduced in place by sum. Never traced by ``torch.compile``: a compiled
    step (``compiled.py``) breaks its graph here and makes exactly the eager collective."""
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def local_slice(rows: torch.Tensor, workers: Workers) -> torch.Tensor:
    """This rank's contiguous slice of the global minibatch; the slices partition it."""
    return rows.tensor_split(workers.world_size)[workers.rank]


def wrap_model(model: nn.Module, workers: Workers, device: torch.device) -> nn.Module:
    """DDP around ``model`` when there are several workers (it averages gradients)."""
    if not workers.distributed:
        return model
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def any_rank(flag: bool, workers: Workers, device: torch.device) -> bool:
    """True on every rank if ``flag`` is true on any rank (used at evaluation points only)."""
    if not workers.distributed:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _worker_entry(rank: int, world_size: int, port: int, target: Callable, args: tuple) -> None:
    os.environ.update(
        {
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(world_size),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
    )
    try:
        target(*args)
        if dist.is_initialized():
            # Leave together: a rank tearing gloo down while the other still uses it can abort.
            dist.barrier()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def launch_local(nproc: int, target: Callable[..., Any], args: tuple = ()) -> None:
    """Run ``target(*args)`` on ``nproc`` local processes that form one process group.

    The processes are spawned (not forked), as CUDA requires; ``target`` must be importable.
    An exception in any rank is raised here.
    """
    mp.start_processes(
        _worker_entry,
        args=(nproc, free_port(), target, args),
        nprocs=nproc,
        join=True,
        start_method="spawn",
    )
