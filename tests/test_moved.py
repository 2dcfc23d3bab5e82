"""A job queued under ctrain-dist 0.1 module paths fails with one clear line after an upgrade.

SLURM (submitit) and Ray pickle callables by module path; these tests unpickle 0.1 references
in a fresh interpreter, as a requeued job's Python would.
"""

from __future__ import annotations

import importlib
import importlib.util
import pickle
import subprocess
import sys

import pytest

from ctrain_dist.moved import MOVED, ModuleMovedError, moved_message

QUEUED_BEFORE_THE_UPGRADE = [
    ("ctrain_dist.slurm", "ArrayTrials"),
    ("ctrain_dist.slurm", "AllocationSweep"),
    ("ctrain_dist.sweep", "run_trial"),
    ("ctrain_dist.local", "_train_rank"),
]


def pickled_reference(module: str, name: str) -> bytes:
    """What pickle writes for a module-level callable: its module path and name (protocol 0)."""
    return f"c{module}\n{name}\n.".encode()


@pytest.mark.parametrize(("module", "name"), QUEUED_BEFORE_THE_UPGRADE)
def test_unpickling_a_callable_of_a_moved_module_names_the_move_and_the_fix(module, name):
    probe = (
        "import pickle, sys\n"
        "try:\n"
        "    pickle.loads(sys.stdin.buffer.read())\n"
        "except Exception as error:\n"
        "    print(type(error).__name__)\n"
        "    print(error)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        input=pickled_reference(module, name),
        capture_output=True,
        timeout=120,
    )
    kind, message = result.stdout.decode().strip().splitlines()
    assert kind == "ModuleMovedError"
    assert message == moved_message(module)
    assert MOVED[module] in message and "--resume" in message


def test_every_new_home_exists_and_no_old_path_shadows_a_module():
    for old, new in MOVED.items():
        assert importlib.util.find_spec(new) is not None, new
        with pytest.raises(ModuleMovedError):
            importlib.import_module(old)


def test_the_current_modules_import_as_usual():
    """Control: the finder refuses only the table's paths."""
    for name in ("ctrain_dist.launch.ray_sweep", "ctrain_dist.store", "ctrain_dist.cli.main"):
        assert importlib.import_module(name).__name__ == name
    assert pickle.loads(pickle.dumps(moved_message)) is moved_message
