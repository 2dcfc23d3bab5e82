"""A SLURM cluster profile (``slurm/profiles/*.yaml``): what to ask SLURM for, and how Ray runs.

A profile is validated whole before anything is submitted, like a sweep spec: a
:class:`~ctrain_dist.spec.SpecError` names the field (``cluster.<path>``) and the CLI exits 2.
It knows nothing of submitit; :mod:`~ctrain_dist.launch.slurm.submit` turns it into executor
parameters.

Ports: every Ray node opens the per-node ports of :class:`PortsSpec` (the head also the
head-only ones). With ``stride > 0`` task ``r`` shifts its per-node ports by ``r * stride``, so
several tasks of one job may share a host (the dev cluster's virtual nodes share one network);
the model checks that no two tasks' ports collide and that all stay below 65536.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ctrain_dist.errors import SpecError
from ctrain_dist.spec import apply_overrides, read_yaml_mapping, validate_model

PROFILE_DIR = Path("slurm") / "profiles"
"""Where ``--cluster NAME`` looks for ``NAME.yaml`` (relative to the working directory)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PortsSpec(_Strict):
    """Ray's ports, all explicit: firewalled clusters open a known range, never a random one."""

    gcs: int = Field(6379, ge=1024, le=65535, description="head: GCS (the cluster address)")
    client_server: int | None = Field(
        None, ge=1024, le=65535, description="head: Ray client server (needs ray[client])"
    )
    dashboard: int = Field(8265, ge=1024, le=65535, description="head: dashboard")
    node_manager: int = Field(6380, ge=1024, le=65535, description="every node: raylet")
    object_manager: int = Field(6381, ge=1024, le=65535, description="every node")
    runtime_env_agent: int = Field(6382, ge=1024, le=65535, description="every node")
    dashboard_agent_grpc: int = Field(6383, ge=1024, le=65535, description="every node")
    dashboard_agent_listen: int = Field(6384, ge=1024, le=65535, description="every node")
    metrics_export: int = Field(6385, ge=1024, le=65535, description="every node")
    min_worker: int = Field(10002, ge=1024, le=65535, description="every node: first worker port")
    max_worker: int = Field(10101, ge=1024, le=65535, description="every node: last worker port")
    stride: int = Field(0, ge=0, description="per-task shift of per-node ports (shared hosts)")

    @model_validator(mode="after")
    def _worker_range(self) -> PortsSpec:
        if self.max_worker < self.min_worker:
            raise ValueError("max_worker must not be below min_worker")
        return self

    def head_only(self) -> dict[str, int]:
        ports = {"port": self.gcs, "dashboard-port": self.dashboard}
        if self.client_server is not None:
            ports["ray-client-server-port"] = self.client_server
        return ports

    def per_node(self, rank: int) -> dict[str, int]:
        """The per-node ports of task ``rank`` (as ``ray start`` flag names)."""
        shift = rank * self.stride
        return {
            "node-manager-port": self.node_manager + shift,
            "object-manager-port": self.object_manager + shift,
            "runtime-env-agent-port": self.runtime_env_agent + shift,
            "dashboard-agent-grpc-port": self.dashboard_agent_grpc + shift,
            "dashboard-agent-listen-port": self.dashboard_agent_listen + shift,
            "metrics-export-port": self.metrics_export + shift,
            "min-worker-port": self.min_worker + shift,
            "max-worker-port": self.max_worker + shift,
        }

    def opened(self, rank: int) -> set[int]:
        """Every port task ``rank`` opens, worker range included."""
        ports = self.per_node(rank)
        opened = set(range(ports["min-worker-port"], ports["max-worker-port"] + 1))
        opened |= {v for k, v in ports.items() if k not in ("min-worker-port", "max-worker-port")}
        return opened | (set(self.head_only().values()) if rank == 0 else set())


class ArraySpec(_Strict):
    """Array mode: how the pending trials are cut into array tasks (``layout.array_tasks``)."""

    trials_per_task: int = Field(
        1,
        gt=0,
        description="trials (seeds) of one array task: whole packs, a pack never split",
    )
    parallelism: int = Field(64, gt=0, description="array tasks running at once (%N)")


class ClusterProfile(_Strict):
    """What to ask SLURM for. Allocation mode: ``nodes`` nodes, one task (one Ray node) each.

    Array mode: single-node tasks of up to ``array.trials_per_task`` trials (whole packs of
    seeds), each with ``cpus_per_task`` CPUs, ``gpus_per_node`` GPUs and ``mem``.
    """

    mode: Literal["allocation", "array"] = "allocation"
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    nodes: int = Field(1, gt=0)
    gpus_per_node: int = Field(0, ge=0)
    cpus_per_task: int = Field(1, gt=0, description="CPUs of each task, i.e. of each Ray node")
    mem: str | None = Field(
        None, pattern=r"^[0-9]+[KMGT]?$", description="memory per node, SLURM syntax, e.g. 64G"
    )
    time_minutes: int = Field(60, gt=0, description="time limit of one run of the job")
    constraint: str | None = None
    sbatch_extra: dict[str, str | int | bool] = Field(
        default_factory=dict, description="further #SBATCH directives, e.g. {mail-type: END}"
    )
    setup: list[str] = Field(
        default_factory=list, description="shell lines run before the job (module load, ...)"
    )
    python: str | None = Field(
        None, description="command that runs Python on the nodes (default: this interpreter)"
    )
    job_folder: Path = Field(description="shared storage for job files, logs and the Ray token")
    ray_temp_dir: Path = Field(
        Path("/tmp"), description="node-local root of Ray's temp dirs (Unix sockets: keep short)"
    )
    requeues: int = Field(3, ge=0, description="times a timed-out job is requeued")
    signal_delay_s: int = Field(120, gt=0, description="USR2 this long before the time limit")
    join_timeout_s: float = Field(300, gt=0, description="how long Ray nodes wait for each other")
    array: ArraySpec = Field(default_factory=ArraySpec)
    ports: PortsSpec = Field(default_factory=PortsSpec)


def _check_ports(profile: ClusterProfile) -> None:
    """Every task's ports below 65536, and no two tasks' ports (or one task's) colliding."""
    if profile.mode != "allocation":
        return
    ports = profile.ports
    if max(ports.per_node(profile.nodes - 1).values()) > 65535:
        raise SpecError(
            "cluster.ports.stride",
            f"{ports.stride} pushes task {profile.nodes - 1}'s ports past 65535; "
            "lower the stride or the base ports",
        )
    node = ports.per_node(0)
    singles = [v for k, v in node.items() if "worker" not in k] + list(ports.head_only().values())
    workers = range(node["min-worker-port"], node["max-worker-port"] + 1)
    if len(set(singles)) != len(singles) or any(port in workers for port in singles):
        raise SpecError("cluster.ports", "ports must be distinct and outside the worker range")
    if ports.stride:
        seen: set[int] = set()
        for rank in range(profile.nodes):
            opened = ports.opened(rank)
            if seen & opened:
                raise SpecError(
                    "cluster.ports.stride",
                    f"{ports.stride} makes task {rank}'s ports collide with another task's; "
                    "use a stride above the span of the per-node ports",
                )
            seen |= opened


def _field_path(loc: tuple[Any, ...]) -> str:
    return ".".join(["cluster", *(str(part) for part in loc)])


def parse_profile(raw: dict[str, Any], base: Path = Path(".")) -> ClusterProfile:
    """A validated profile; ``$VARS`` in paths expanded, relative paths taken from ``base``."""
    profile = validate_model(
        ClusterProfile,
        raw,
        _field_path,
        "see slurm/profiles/example-4x4gpu.yaml for every field",
    )
    _check_ports(profile)
    paths = {
        name: (base / os.path.expandvars(str(getattr(profile, name)))).absolute()
        for name in ("job_folder", "ray_temp_dir")
    }
    return profile.model_copy(update=paths)


def resolve_profile_path(name: Path | str) -> Path:
    """A profile file from a path, or from a bare name found in ``slurm/profiles/``."""
    path = Path(name)
    if path.is_file():
        return path
    candidate = PROFILE_DIR / f"{name}.yaml"
    if path.suffix == "" and candidate.is_file():
        return candidate
    raise SpecError("--cluster", f"{name} is neither a profile file nor a name in {PROFILE_DIR}/")


def load_profile(name: Path | str, overrides: list[str] | None = None) -> ClusterProfile:
    """Read and validate a profile; ``overrides`` are ``a.b=v`` strings as for specs."""
    path = resolve_profile_path(name)
    raw = read_yaml_mapping(path, "--cluster")
    return parse_profile(apply_overrides(raw, overrides or []), base=Path.cwd())
