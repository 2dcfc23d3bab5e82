"""The Ray daemons one SLURM task starts: their command line, in their own session, recorded,
stopped by PID.

Why by PID and not ``ray stop``: ``ray stop`` stops every Ray process of the user on the
machine, other jobs' included. Why start times: a pid can be reused once its process exited,
so a process is identified by (pid, start time) and a reused pid is never signalled.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ctrain_dist.files import write_atomically
from ctrain_dist.launch.slurm.layout import RayNode
from ctrain_dist.launch.slurm.private_files import read_own

POLL_SECONDS = 0.5


def node_temp_dir(parent: Path, job_id: str, rank: int) -> Path:
    """A new folder for one Ray node's sockets, logs and session files: ``mkdtemp``'s (0700,
    an unpredictable name), so no other user can prepare it or read it; the caller removes it.
    """
    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"ctrain-{job_id}-{rank}-", dir=parent))


def ray_start_command(
    node: RayNode, temp_dir: Path, node_ip: str, head_address: str | None
) -> list[str]:
    """``ray start`` for ``node``: explicit ports, its own temp dir, blocking, no usage stats.

    The ``ray`` beside this interpreter when there is one: the job's ``PATH`` may not hold the
    environment that runs the task.
    """
    ray = Path(sys.executable).with_name("ray")
    command = [str(ray) if ray.exists() else "ray", "start", "--block", "--disable-usage-stats"]
    if head_address is None:
        command += ["--head", "--include-dashboard=false"]
    else:
        command += [f"--address={head_address}"]
    command += [f"--{flag}={port}" for flag, port in node.ports.items()]
    command += [
        f"--node-ip-address={node_ip}",
        f"--num-cpus={node.cpus}",
        f"--num-gpus={node.gpus}",
        f"--temp-dir={temp_dir}",
    ]
    return command


def _process_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, start time in clock ticks) of every process, from /proc."""
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                table[int(entry.name)] = (int(fields[1]), fields[19])
    return table


def _descendants(pid: int) -> list[tuple[int, str]]:
    """(pid, start time) of every live descendant of ``pid``, parents before children.

    The start time identifies a process beyond its pid, so a pid reused after the process
    exited is never signalled.
    """
    table = _process_table()
    children: dict[int, list[int]] = {}
    for child, (parent, _) in table.items():
        children.setdefault(parent, []).append(child)
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append((child, table[child][1]))
            queue.append(child)
    return found


def _kill_if_same(pid: int, started: str) -> bool:
    """SIGKILL ``pid`` if it is still the process that started at ``started``."""
    table = _process_table()
    if pid in table and table[pid][1] == started:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            return True
    return False


def _ignore_preemption_signal() -> None:
    """In Ray's processes: SLURM sends USR2 (the timeout/preemption warning) to every process
    of the job, and its default action would kill Ray under the driver before submitit's
    handler on task 0 has requeued the job."""
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


class RayProcess:
    """One ``ray start --block`` of ours: started in the task's process tree, stopped by PID.

    ``--block`` keeps Ray's daemons children of this task, so SLURM's process tracking kills
    them with the task on a requeue; ``ray stop`` is never used, since it stops every Ray
    process of the user on the machine, other jobs' included. Its own session, because Ray's
    reaper ends by signalling its whole process group, which must not include the task.
    """

    def __init__(self, command: list[str], log_path: Path, env: dict[str, str]) -> None:
        self.log_path = log_path
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                preexec_fn=_ignore_preemption_signal,
                start_new_session=True,
            )

    def wait_started(self, timeout_s: float) -> None:
        """Return once Ray reports the node up; raise with the log's tail if it died or hung."""
        deadline = time.monotonic() + timeout_s
        while "Ray runtime started" not in self.log_path.read_text(errors="replace"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                tail = self.log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"ray start failed (see {self.log_path}):\n{tail}")
            time.sleep(POLL_SECONDS)

    def alive(self) -> bool:
        return self.process.poll() is None

    def record(self, path: Path, hostname: str) -> None:
        """Write this node's processes (pid, start time) for a later run to clean up."""
        processes = [(self.process.pid, _process_table()[self.process.pid][1])]
        processes += _descendants(self.process.pid)
        write_atomically(path, json.dumps({"host": hostname, "processes": processes}))

    def stop(self, grace_s: float = 20) -> None:
        """SIGTERM ``ray start`` (which stops its daemons), then SIGKILL any survivor by PID."""
        started = _descendants(self.process.pid)
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(grace_s)
        if self.alive():
            self.process.kill()
        self.process.wait()
        for pid, start_time in started:
            _kill_if_same(pid, start_time)


def stop_leftovers(job_dir: Path, rank: int, hostname: str) -> int:
    """Kill the Ray processes an earlier run of this job left on this host; returns how many.

    A requeue kills the task, but a Ray daemon in its own session can outlive it by seconds
    (longer where SLURM tracks processes by parentage, not cgroups) and would hold the ports
    this run needs. Processes are matched by pid and start time, so nothing else is touched.
    """
    killed = 0
    for record in job_dir.glob(f"attempt-*/ray-task{rank}.pids"):
        content = json.loads(read_own(record))  # a planted record would pick the victims
        if content["host"] != hostname:
            continue
        for pid, start_time in content["processes"]:
            killed += _kill_if_same(pid, start_time)
        record.unlink()
    return killed
