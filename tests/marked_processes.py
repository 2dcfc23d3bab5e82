"""Processes a test started, found by a marker in their environment, and ended for certain.

Why: a sweep's driver spawns Ray's GCS, raylets and workers in their own sessions, so neither
the driver's pid nor its process group reaches them all; every one inherits the environment,
so a unique variable set for the test names them all, and a test that kills or waits for
"its" processes touches no other session's.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
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
