"""Fixtures shared by several test modules.

``slurm_cluster`` lives here, not in one module, because a session fixture imported into a
second module becomes a second fixture: pytest would start a second dev cluster on the same
ports while the first runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

DEV_CLUSTER = Path(__file__).parents[1] / "slurm" / "dev-cluster"


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory) -> Iterator[Path]:
    """A running dev cluster (installed if needed), SLURM_CONF exported; stopped at the end."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None or shutil.which("unshare") is None:
        pytest.skip("the SLURM dev cluster needs root, apt-get and unshare")
    state = tmp_path_factory.mktemp("slurm-state")
    subprocess.run(["bash", str(DEV_CLUSTER / "install.sh")], check=True)
    started = subprocess.run(
        ["bash", str(DEV_CLUSTER / "start.sh"), str(state)], capture_output=True, text=True
    )
    if started.returncode != 0:
        subprocess.run(["bash", str(DEV_CLUSTER / "stop.sh"), str(state)], check=False)
        pytest.fail(f"dev cluster did not start:\n{started.stdout}\n{started.stderr}")
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(state / "etc" / "slurm.conf")
    yield state
    subprocess.run(["bash", str(DEV_CLUSTER / "stop.sh"), str(state)], check=True)
    if previous is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = previous
