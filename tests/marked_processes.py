"""Processes a test started, found by a marker in their environment, and ended for certain.

Why: a sweep's driver spawns Ray's GCS, raylets and workers in their own sessions, so neither
the driver's pid nor its process group reaches them all; every one inherits the environment,
so a unique variable set for the test names them all, and a test that kills or waits for
"its" processes touches no other session's.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path


def marked_processes(marker: str) -> list[int]:
    """Pids of live processes whose environment carries ``marker`` (``NAME=value``)."""
    found = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if entry.name.isdigit() and marker.encode() in (entry / "environ").read_bytes().split(
                b"\0"
            ):
                found.append(int(entry.name))
    return found


def kill_marked(marker: str, seconds: float = 60) -> list[int]:
    """SIGKILL every marked process until none is left; returns those left after ``seconds``."""
    deadline = time.monotonic() + seconds
    while (left := marked_processes(marker)) and time.monotonic() < deadline:
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
    return left


@contextlib.contextmanager
def marked_environment(name: str, seconds: float = 30) -> Iterator[tuple[dict[str, str], str]]:
    """The environment for a test's sweep subprocesses, and its marker ``name=<unique>``: this
    process's environment plus the marker and a private Ray temp dir (short: Ray's socket
    paths). At the end every marked process is killed (for up to ``seconds``) and the dir
    removed, whatever the test did."""
    value = uuid.uuid4().hex
    ray_tmp = tempfile.mkdtemp(prefix="ct-", dir="/tmp")
    try:
        yield {**os.environ, name: value, "RAY_TMPDIR": ray_tmp}, f"{name}={value}"
    finally:
        kill_marked(f"{name}={value}", seconds)
        shutil.rmtree(ray_tmp, ignore_errors=True)
