"""A local sweep's Ray is reachable by this user only: loopback ports, a private token.

The sweep runs as a subprocess whose every process carries a marker in its environment; its
sockets are found through ``/proc/<pid>/fd`` and their addresses in ``/proc/net/tcp{,6}``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from marked_processes import marked_processes

QUICKSTART = Path(__file__).parents[1] / "sweeps" / "quickstart.yaml"
LISTEN = "0A"
LOOPBACK = ("0100007F", "00000000000000000000000001000000", "0000000000000000FFFF00000100007F")
"""127.0.0.1 as /proc/net/tcp writes it, ::1 and ::ffff:127.0.0.1 as /proc/net/tcp6 does."""


def _environment_of(pid: int) -> dict[str, str]:
    pairs = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(pair.decode(errors="replace").partition("=")[::2] for pair in pairs if pair)


def _socket_inodes(pids: list[int]) -> set[str]:
    inodes = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        inodes.add(target[len("socket:[") : -1])
    return inodes


def _listening(inodes: set[str]) -> list[str]:
    """Local addresses (hex, as /proc writes them) of listening sockets among ``inodes``."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == LISTEN and fields[9] in inodes:
                found.append(fields[1])
    return found


def _private(path: Path) -> bool:
    return stat.S_IMODE(path.stat().st_mode) & 0o077 == 0


@pytest.mark.slow
def test_a_local_sweep_listens_on_loopback_only_and_keeps_its_token_private(tmp_path):
    marker = f"CTRAIN_SECURITY_TEST={uuid.uuid4().hex}"
    key, value = marker.split("=")
    ray_tmp = tempfile.mkdtemp(prefix="ctr-", dir="/tmp")  # short: Ray's socket paths
    home = tmp_path / "home"
    home.mkdir()
    environment = {**os.environ, key: value, "RAY_TMPDIR": ray_tmp, "HOME": str(home)}
    sets = ["name=security", "seeds=2", "algorithms=[{name: sgd, params: {lr: 0.05}}]"]
    sets += ["training.budget={seconds: 20}", "training.eval_every=500"]
    command = [sys.executable, "-m", "ctrain_dist.cli", "sweep", str(QUICKSTART)]
    command += [arg for item in sets for arg in ("--set", item)]
    command += ["--store", str(tmp_path / "store")]
    log = tmp_path / "sweep.log"
    with log.open("w") as output:
        sweep = subprocess.Popen(
            command,
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 300
        addresses: list[str] = []
        tokens: set[str] = set()
        while sweep.poll() is None and time.monotonic() < deadline:
            pids = marked_processes(marker)
            addresses += _listening(_socket_inodes(pids))
            for pid in pids:
                with contextlib.suppress(OSError):
                    tokens.add(_environment_of(pid).get("RAY_AUTH_TOKEN_PATH", ""))
            tokens.discard("")
            for token in map(Path, tokens):
                with contextlib.suppress(FileNotFoundError):
                    assert _private(token) and _private(token.parent), token
            if (tmp_path / "store" / "trials").exists():
                break  # a trial finished: every server has been up for a while
            time.sleep(0.5)
        assert sweep.wait(timeout=300) == 0, log.read_text()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(sweep.pid, signal.SIGKILL)
    assert addresses, "no listening socket was seen: the test looked at the wrong processes"
    outside = [a for a in addresses if a.rsplit(":", 1)[0] not in LOOPBACK]
    assert outside == [], f"Ray listens beyond loopback: {outside}"
    assert tokens, "the sweep's Ray ran without a token file"
    default_token = home / ".ray" / "auth_token"
    assert not default_token.exists() or _private(default_token)
    assert not any(Path(t).exists() for t in tokens), "the token outlived the sweep"
