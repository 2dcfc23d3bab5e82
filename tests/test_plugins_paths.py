"""Where user code is found by the processes that run trials: the folder each user module
was imported from, then the driver's ``PYTHONPATH`` made absolute (``launch/user_code.py``),
handed to Ray's runtime environment and exported by SLURM job scripts."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from byo import MODULE, write_user_module

from ctrain_dist.launch.slurm.profile import load_profile
from ctrain_dist.launch.slurm.submit import job_script, make_executor
from ctrain_dist.launch.user_code import import_root, user_import_paths, user_python_path
from ctrain_dist.spec import parse_spec


def spec_naming(module: str):
    return parse_spec(
        {
            "name": "paths",
            "data": {"dataset": "custom", "factory": f"{module}:blobs"},
            "model": {"factory": f"{module}:cnn"},
            "constraints": [{"kind": f"{module}:MeanLoss", "bound": 0.5}],
            "training": {"batch_size": 32},
            "algorithms": [{"name": "sgd"}],
            "seeds": 1,
        }
    )


def test_a_module_inside_a_package_is_found_from_the_folder_above_the_package(
    tmp_path, monkeypatch
):
    write_user_module(tmp_path / "lab" / "vision")
    for folder in (tmp_path / "lab", tmp_path / "lab" / "vision"):
        (folder / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert import_root(f"lab.vision.{MODULE}:cnn") == tmp_path.resolve()


def test_the_python_path_holds_each_user_folder_then_the_inherited_entries_absolute(
    tmp_path, monkeypatch
):
    write_user_module(tmp_path / "user")
    monkeypatch.syspath_prepend(str(tmp_path / "user"))
    monkeypatch.delitem(sys.modules, MODULE, raising=False)  # imported here, not by another test
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", "relative")
    spec = spec_naming(MODULE)
    assert len(user_import_paths(spec)) == 3
    expected = [str((tmp_path / "user").resolve()), str((tmp_path / "relative").resolve())]
    assert user_python_path(spec).split(os.pathsep) == expected


def test_a_slurm_job_script_exports_the_python_path_after_the_profile_s_setup(tmp_path):
    local = Path(__file__).parents[1] / "slurm" / "profiles" / "local.yaml"
    profile = load_profile(local, [f"job_folder={tmp_path / 'jobs'}", "setup=[module load python]"])
    executor = make_executor(profile, "ctrain-x", script_only=True, python_path="/lab/code")
    script = job_script(executor)
    assert script.index("module load python") < script.index(
        'export PYTHONPATH=/lab/code"${PYTHONPATH:+:$PYTHONPATH}"'
    )
