"""``ctrain study SPEC``: the whole fair-tuning protocol in one command.

1. tune each algorithm on validation with the same budget (``tuning``), as sweep ``<name>``;
2. select each algorithm's configuration on validation (``analysis.stats.selection``);
3. confirm the selected configurations on ``tuning.confirm_seeds`` fresh seeds, as sweep
   ``<name>-confirm`` (``analysis.confirm``);
4. write the report, which shows the two stages apart (``ctrain report``).

Every stage resumes from the store: run again after an interruption, it skips what is done.
The tuning and confirmation sweeps keep their names, which the report relies on.
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ctrain_dist.cli.arguments import EXIT_FAILURE, add_spec_arguments
from ctrain_dist.errors import SpecError

if TYPE_CHECKING:
    from ctrain_dist.launch.ray_sweep import SweepOutcome
    from ctrain_dist.spec import SweepSpec


def require_tuning_launcher(spec: SweepSpec, launcher: str) -> None:
    """Refuse what only the Ray driver can run: an adaptive search or a scheduler."""
    tuning = spec.tuning
    if tuning is None:
        return
    if tuning.search == "optuna":
        raise SpecError(
            "tuning.search",
            f"optuna chooses configurations as results arrive, on the Ray driver; {launcher} "
            "cannot: use ctrain sweep / ctrain study here, or tuning.search random",
        )
    if tuning.scheduler is not None:
        raise SpecError(
            "tuning.scheduler",
            f"ASHA stops trials through Ray Tune; {launcher} cannot: use ctrain sweep / ctrain "
            "study, or drop tuning.scheduler",
        )


def describe_outcome(outcome: SweepOutcome) -> str:
    counts = ", ".join(f"{n} {status}" for status, n in sorted(outcome.statuses.items()))
    return f"{counts or 'nothing to run'}; {outcome.skipped} skipped as already finished"


def _study(args: argparse.Namespace, check: Callable[[SweepSpec], None]) -> int:
    from ctrain_dist import store
    from ctrain_dist.analysis.confirm import confirm_spec
    from ctrain_dist.analysis.report import Settings, write_report
    from ctrain_dist.launch.ray_sweep import run_sweep
    from ctrain_dist.launch.search import run_tuning
    from ctrain_dist.spec import load_spec
    from ctrain_dist.store.layout import require_writable_root

    spec = load_spec(args.spec, args.overrides)
    if spec.tuning is None:
        raise SpecError("tuning", "ctrain study tunes each algorithm: add a tuning block")
    store_root = args.store or Path("runs") / spec.name
    require_writable_root(store_root, "--store")
    check(spec)
    started = time.monotonic()
    print(f"study {spec.name!r}: tuning stage, sweep {spec.name!r} -> store {store_root}")
    tuned = run_tuning(spec, store_root, resume=True)
    print(f"tuning done: {describe_outcome(tuned)}")
    confirmation = confirm_spec(spec, store.open(store_root))
    for algorithm in confirmation.algorithms:
        print(f"  selected on validation: {algorithm.name} {algorithm.params}")
    print(
        f"confirmation stage, sweep {confirmation.name!r}: "
        f"{len(confirmation.seed_list())} fresh seeds"
    )
    confirmed = run_sweep(confirmation, store_root, resume=True)
    print(f"confirmation done: {describe_outcome(confirmed)}")
    out = store_root / "report"
    settings = Settings(tolerance=spec.analysis.feasibility_tolerance)
    write_report(store.open(store_root), out, [spec.name], settings)
    print(f"report written to {out}/ ({time.monotonic() - started:.0f} s in all)")
    return EXIT_FAILURE if tuned.failed or confirmed.failed else 0


def add_study_parser(
    commands: argparse._SubParsersAction, check: Callable[[SweepSpec], None]
) -> None:
    """``check``: the checks ``ctrain sweep`` runs on a spec before anything starts."""
    study = commands.add_parser(
        "study",
        help="tune every algorithm with equal budgets, select, confirm on fresh seeds, report",
    )
    add_spec_arguments(study, "tuning.search=optuna")
    study.add_argument("--store", type=Path, help="store directory (default runs/<name>)")
    study.set_defaults(handler=functools.partial(_study, check=check))
