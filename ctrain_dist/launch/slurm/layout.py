"""How a sweep's trials lie on the cluster: Ray nodes (allocation mode) or array tasks.

Decided on the login node, before anything is submitted, from the profile and the spec alone,
so ``--dry-run`` prints exactly what the jobs will do and a request that cannot fit is
refused (``SpecError``, exit 2) instead of waiting forever in Ray or SLURM.

Array tasks hold **whole packs**: the seeds of one configuration that ``seeds_per_trial``
trains together (:func:`~ctrain_dist.launch.plan.plan_packs`) always share a task, since a
pack is one batched computation. ``array.trials_per_task`` counts trials (seeds), not packs:
a task takes packs in order while their trials fit within it, and a pack of more seeds than
that has a task to itself, exceeding the number rather than splitting the pack (``--dry-run``
shows the tasks). Packed seeds train faster than one after another (BENCHMARKS.md), so such a
task takes less time than that many lone trials would.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ctrain_dist.errors import SpecError
from ctrain_dist.launch.slurm.profile import ClusterProfile
from ctrain_dist.spec import SweepSpec, TrialSpec

TOKEN_FILE = "ray-token"


def token_path(job_folder: Path) -> Path:
    """The Ray token file of a job folder (what ``RAY_AUTH_TOKEN_PATH`` names on every node)."""
    return job_folder / TOKEN_FILE


@dataclass(frozen=True)
class RayNode:
    """One Ray node of an allocation: task ``rank`` (0 is the head), its resources and ports."""

    rank: int
    cpus: int
    gpus: int
    ports: dict[str, int]

    @property
    def role(self) -> str:
        return "head" if self.rank == 0 else "worker"


def ray_layout(profile: ClusterProfile) -> list[RayNode]:
    """The Ray node of every task of an allocation-mode job."""
    nodes = []
    for rank in range(profile.nodes):
        ports = profile.ports.per_node(rank)
        if rank == 0:
            ports = {**profile.ports.head_only(), **ports}
        nodes.append(RayNode(rank, profile.cpus_per_task, profile.gpus_per_node, ports))
    return nodes


def trials_per_node(spec: SweepSpec, node: RayNode) -> int:
    """How many trials of ``spec`` fit on ``node`` at once (CPUs and GPUs both bound it)."""
    request = spec.resources
    fits = int(node.cpus // request.cpus_per_trial)
    if request.gpus_per_trial > 0:
        fits = min(fits, int(node.gpus / request.gpus_per_trial + 1e-9))
    return fits


def check_fits(spec: SweepSpec, profile: ClusterProfile) -> None:
    """Refuse a trial that no task of the profile can hold (Ray or SLURM would wait forever)."""
    request = spec.resources
    if request.cpus_per_trial > profile.cpus_per_task:
        raise SpecError(
            "resources.cpus_per_trial",
            f"asks {request.cpus_per_trial:g} CPUs per trial but the cluster profile gives "
            f"{profile.cpus_per_task} per task; raise cluster.cpus_per_task or lower it",
        )
    if request.gpus_per_trial > profile.gpus_per_node:
        raise SpecError(
            "resources.gpus_per_trial",
            f"asks {request.gpus_per_trial:g} GPUs per trial but the cluster profile gives "
            f"{profile.gpus_per_node} per node; raise cluster.gpus_per_node or lower it",
        )
    if profile.mode == "array" and 0 < request.gpus_per_trial < 1:
        raise SpecError(
            "resources.gpus_per_trial",
            "fractional GPUs need allocation mode (an array task runs its trials one at a time)",
        )
    if profile.mode == "array" and request.workers_per_trial > 1:
        raise SpecError(
            "resources.workers_per_trial",
            "data-parallel trials need allocation mode (an array task trains in one process)",
        )


def array_tasks(packs: list[list[TrialSpec]], trials_per_task: int) -> list[list[list[TrialSpec]]]:
    """The packs of each array task: whole packs, in order, up to ``trials_per_task`` trials
    per task; a pack of more seeds than that is a task alone (see the module docstring)."""
    tasks: list[list[list[TrialSpec]]] = []
    size = 0
    for pack in packs:
        if tasks and size + len(pack) <= trials_per_task:
            tasks[-1].append(pack)
            size += len(pack)
        else:
            tasks.append([pack])
            size = len(pack)
    return tasks


def describe_array_layout(
    spec: SweepSpec, profile: ClusterProfile, tasks: list[list[list[TrialSpec]]]
) -> str:
    """The packing of an array job, as ``--dry-run`` prints it."""
    packs = sum(len(task) for task in tasks)
    pending = sum(len(pack) for task in tasks for pack in task)
    return "\n".join(
        [
            f"Array layout: {pending} pending trials in {packs} packs (up to "
            f"{spec.seeds_per_trial} seeds trained together) -> {len(tasks)} array tasks, "
            f"at most {profile.array.parallelism} at once",
            f"  each task: {profile.cpus_per_task} CPUs, {profile.gpus_per_node} GPUs; whole "
            f"packs up to {profile.array.trials_per_task} trials (a pack is never split, a "
            "larger one has a task alone), run one after another in-process, rows written to "
            "the store directly (a requeued task skips trials the store shows finished)",
        ]
    )


def describe_ray_layout(spec: SweepSpec, profile: ClusterProfile, pending: int) -> str:
    """The Ray cluster of an allocation job, as ``--dry-run`` prints it."""
    layout = ray_layout(profile)
    request = spec.resources
    lines = [
        f"Ray layout: {len(layout)} nodes, one SLURM task each; RAY_AUTH_MODE=token, "
        f"RAY_AUTH_TOKEN_PATH={token_path(profile.job_folder)} (mode 0600)",
    ]
    for node in layout:
        ports = ", ".join(f"{name}={port}" for name, port in node.ports.items())
        lines.append(
            f"  task {node.rank} {node.role:<6} {node.cpus} CPUs, {node.gpus} GPUs, "
            f"temp dir {profile.ray_temp_dir}/ctrain-<job>-{node.rank}-<random>; {ports}"
        )
    per_node = trials_per_node(spec, layout[0])
    lines += [
        f"  head address: <task 0 IP>:{profile.ports.gcs}; sweep driver on task 0 "
        "(resume=True: trials finished in the store are skipped)",
        f"  each trial: {request.cpus_per_trial:g} CPUs, {request.gpus_per_trial:g} GPUs -> "
        f"{per_node} per node, {per_node * len(layout)} at once; {pending} trials pending",
    ]
    return "\n".join(lines)
