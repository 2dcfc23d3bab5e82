"""Every user-facing configuration, validated whole before anything starts.

A sweep spec is YAML; ``--set a.b=v`` overrides any field (``v`` read as YAML, list items by
index: ``algorithms.1.params.lr=0.1``). Validation is strict and complete up front (unknown
keys, bounds, algorithm names, every listed hyperparameter value, data files) because a
mistake found by a Ray worker minutes into a sweep costs the whole sweep; a :class:`SpecError`
names the field in one line and the CLI exits 2 on it.

One module per job: ``parts`` (model, constraints, training, algorithms, resources, analysis),
``sweep`` (the study and its trials), ``trial`` (one trial and its id), ``packing`` (which
trials may share a batched computation), ``parse`` (YAML, overrides, every check that needs
only the spec), ``checks`` (what the launchers check against the data and the machine). The
names below are the layer's surface; the rest of the package imports them from here.
"""

from ctrain_dist.spec.checks import (
    check_sampling,
    compile_warnings,
    require_batch_fits,
    require_data_parallel,
    require_device,
    require_single_process_packs,
)
from ctrain_dist.spec.packing import (
    can_share_a_pack,
    member_obstacle,
    pack_trials,
    packing_obstacle,
    record_packing_obstacle,
)
from ctrain_dist.spec.parse import (
    apply_overrides,
    load_spec,
    parse_spec,
    read_yaml_mapping,
    validate_model,
)
from ctrain_dist.spec.parts import (
    AlgorithmSpec,
    AnalysisSpec,
    BudgetSpec,
    ConstraintSpec,
    ModelSpec,
    ResourcesSpec,
    TrainingSpec,
)
from ctrain_dist.spec.sweep import SweepSpec
from ctrain_dist.spec.trial import TrialSpec

__all__ = [
    "AlgorithmSpec",
    "AnalysisSpec",
    "BudgetSpec",
    "ConstraintSpec",
    "ModelSpec",
    "ResourcesSpec",
    "SweepSpec",
    "TrainingSpec",
    "TrialSpec",
    "apply_overrides",
    "can_share_a_pack",
    "check_sampling",
    "compile_warnings",
    "load_spec",
    "member_obstacle",
    "pack_trials",
    "packing_obstacle",
    "parse_spec",
    "read_yaml_mapping",
    "record_packing_obstacle",
    "require_batch_fits",
    "require_data_parallel",
    "require_device",
    "require_single_process_packs",
    "validate_model",
]
