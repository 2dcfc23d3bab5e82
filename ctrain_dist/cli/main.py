"""The ``ctrain`` command.

Exit codes: 0 success; 2 bad input (one line naming the field, printed before any job or Ray
starts); 1 a runtime failure (e.g. trials that errored).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ctrain_dist.cli.arguments import EXIT_BAD_INPUT, EXIT_FAILURE, add_spec_arguments
from ctrain_dist.cli.data import add_data_commands
from ctrain_dist.cli.status import add_status_parser
from ctrain_dist.cli.store import add_store_parser
from ctrain_dist.cli.study import add_study_parser, describe_outcome, require_tuning_launcher
from ctrain_dist.errors import SpecError

if TYPE_CHECKING:
    from ctrain_dist.spec import SweepSpec


def _check_before_running(spec: SweepSpec) -> None:
    """Refuse quotas the data cannot meet and user code that fails on one minibatch, and
    print sampling warnings, before anything runs."""
    from ctrain_dist.spec import check_sampling, compile_warnings
    from ctrain_dist.trial.probe import check_plugins

    check_plugins(spec)
    for warning in [*compile_warnings(spec), *check_sampling(spec)]:
        print(f"ctrain: warning: {warning}", file=sys.stderr)


def _sweep(args: argparse.Namespace) -> int:
    from ctrain_dist.launch.ray_sweep import preflight, run_sweep
    from ctrain_dist.spec import load_spec
    from ctrain_dist.store.layout import require_writable_root

    spec = load_spec(args.spec, args.overrides)
    store_root = args.store or Path("runs") / spec.name
    require_writable_root(store_root, "--store")
    if args.confirm:
        from ctrain_dist import store
        from ctrain_dist.analysis.confirm import confirm_spec

        spec = confirm_spec(spec, store.open(store_root))
    _check_before_running(spec)
    trials = spec.trials()
    if args.cluster:
        require_tuning_launcher(spec, "--cluster")
    print(
        f"sweep {spec.name!r}: {len(spec.algorithms)} algorithms, {len(trials)} trials "
        f"({len(spec.seed_list())} seeds each) -> store {store_root}"
    )
    if spec.tuning is not None and spec.tuning.search == "optuna":
        print("tuning.search optuna: the configurations are chosen as results arrive")
    if args.cluster:
        from ctrain_dist.launch.slurm.submit import sweep_on_cluster

        done = sweep_on_cluster(spec, store_root, args.cluster, args.resume, args.dry_run)
        return 0 if done else EXIT_FAILURE
    if args.dry_run:
        pending, skipped = preflight(spec, store_root, args.resume)
        print(f"would run {len(pending)} trials; {skipped} already finished in the store")
        for trial in pending:
            print(f"  {trial.trial_id}  {trial.config_label} seed {trial.seed}")
        return 0
    if spec.tuning is not None:
        from ctrain_dist.launch.search import run_tuning

        outcome = run_tuning(spec, store_root, resume=args.resume)
    else:
        outcome = run_sweep(spec, store_root, resume=args.resume)
    print(f"done: {describe_outcome(outcome)}")
    return EXIT_FAILURE if outcome.failed else 0


def _train(args: argparse.Namespace) -> int:
    from ctrain_dist.launch.local import train_locally
    from ctrain_dist.spec import load_spec
    from ctrain_dist.store.layout import require_writable_root

    packing = [f"seeds_per_trial={args.seeds}"] if args.seeds is not None else []
    spec = load_spec(args.spec, [*args.overrides, *packing])
    store_root = args.store or Path("runs") / spec.name
    require_writable_root(store_root, "--store")
    require_tuning_launcher(spec, "ctrain train")
    _check_before_running(spec)
    print(f"training {len(spec.trials())} trials of {spec.name!r} on {args.nproc} process(es)")
    statuses = train_locally(spec, store_root, args.nproc)
    print("done: " + ", ".join(f"{n} {status}" for status, n in sorted(statuses.items())))
    return EXIT_FAILURE if statuses.get("error") else 0


def _report(args: argparse.Namespace) -> int:
    from ctrain_dist import store
    from ctrain_dist.analysis.report import Settings, write_comparison, write_report

    if not (args.store / "trials").is_dir():
        raise SpecError("--store", f"{args.store} holds no trials table; run `ctrain sweep` first")
    if args.feasibility_tolerance < 0:
        raise SpecError("--feasibility-tolerance", "must be ≥ 0")
    if not 0 < args.alpha < 1:
        raise SpecError("--alpha", "must lie strictly between 0 and 1")
    opened = store.open(args.store)
    unknown = sorted(set(args.sweep or ()) - set(opened.sweeps()))
    if unknown:  # before anything is written, so a mistyped id leaves the store as it was
        raise SpecError("--sweep", f"{unknown[0]!r} is not a sweep of {args.store}")
    out = args.out or args.store / "report"
    settings = Settings(args.feasibility_tolerance, args.baseline, args.alpha)
    if args.compare:
        sweeps = args.sweep or opened.sweeps()
        if len(sweeps) != 1:
            raise SpecError("--sweep", f"--compare reads one sweep; {args.store} holds {sweeps}")
        try:
            markdown = write_comparison(opened, *args.compare, out, sweeps[0], settings)
        except KeyError as error:
            raise SpecError(
                "--compare", f"no trials of algorithm {error.args[0]!r} in sweep {sweeps[0]!r}"
            ) from None
    else:
        try:
            markdown = write_report(opened, out, args.sweep, settings)
        except KeyError as error:
            field = "--baseline" if error.args[0] == args.baseline else "--sweep"
            raise SpecError(field, f"{error.args[0]!r} is not in {args.store}") from None
    print(markdown)
    print(f"\nwritten to {out}/")
    return 0


def _algorithms(args: argparse.Namespace) -> int:
    from ctrain_dist.algorithms import ALGORITHMS

    for name, cls in sorted(ALGORITHMS.items()):
        kind = "constrained" if cls.constrained else "unconstrained"
        print(f"{name} ({kind}) — {cls.paper}")
        own = (["equality"] if cls.takes_equalities else []) + sorted(cls.dual_overrides)
        if cls.constrained and own:  # settings of a spec constraint that this method reads
            print(f"    constraints may set: {', '.join(own)}")
        for field_name, field in cls.hyperparameters.model_fields.items():
            print(f"    {field_name} = {field.default!r}: {field.description}")
    _installed_plugins()
    return 0


def _installed_plugins() -> None:
    """Constraints and datasets that installed packages register as entry points."""
    from ctrain_dist.constraints import CONSTRAINTS
    from ctrain_dist.data.factories import DATASET_FACTORIES

    for registry, how in (
        (CONSTRAINTS, "constraints: [{kind: NAME, ...}]"),
        (DATASET_FACTORIES, "data: {dataset: custom, factory: NAME}"),
    ):
        names = sorted(set(registry) - set(registry.builtins))
        if names:
            print(f"{registry.group} entry points ({how}):")
        for name in names:
            found = registry[name]
            print(f"    {name} — {found.__module__}:{found.__qualname__}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ctrain", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    sweep = commands.add_parser("sweep", help="run a sweep spec on Ray Tune into a store")
    add_spec_arguments(sweep, "training.budget.steps=500")
    sweep.add_argument("--store", type=Path, help="store directory (default runs/<name>)")
    sweep.add_argument("--resume", action="store_true", help="continue a sweep the store holds")
    sweep.add_argument("--dry-run", action="store_true", help="validate and list trials only")
    sweep.add_argument(
        "--cluster",
        metavar="PROFILE",
        help="submit to SLURM with this profile (a file, or a name in slurm/profiles/); "
        "with --dry-run print the job script and Ray layout instead",
    )
    sweep.add_argument(
        "--confirm",
        action="store_true",
        help="re-run each algorithm's configuration selected on validation on fresh seeds, "
        "as sweep <name>-confirm in the same store",
    )
    sweep.set_defaults(handler=_sweep)

    train = commands.add_parser("train", help="train a spec's trials here, without Ray")
    add_spec_arguments(train, "training.budget.steps=500")
    train.add_argument("--store", type=Path, help="store directory (default runs/<name>)")
    train.add_argument("--nproc", type=int, default=1, help="data-parallel processes per trial")
    train.add_argument(
        "--seeds",
        type=int,
        metavar="K",
        help="train K seeds of a configuration together as one batched computation "
        "(sets seeds_per_trial; each seed is still recorded as its own trial)",
    )
    train.set_defaults(handler=_train)

    report = commands.add_parser("report", help="statistics across seeds from a store")
    report.add_argument("--store", type=Path, required=True)
    report.add_argument(
        "--sweep",
        action="append",
        help="a sweep to report, with its -confirm sweep (repeat for several tasks; default: "
        "every sweep in the store, each a task, never pooled)",
    )
    report.add_argument("--out", type=Path, help="output folder (default STORE/report)")
    report.add_argument(
        "--compare",
        nargs=2,
        metavar=("A", "B"),
        help="two algorithms of one sweep head to head: their verdict, then every other metric "
        "descriptively",
    )
    report.add_argument(
        "--baseline",
        metavar="ALGORITHM",
        help="compare each algorithm with this one only (a smaller family than all pairs)",
    )
    report.add_argument(
        "--feasibility-tolerance",
        type=float,
        default=0.0,
        metavar="T",
        help="a seed is feasible when its test max violation is ≤ T (default 0; pass the "
        "spec's analysis.feasibility_tolerance)",
    )
    report.add_argument(
        "--alpha", type=float, default=0.05, help="family-wise error rate of the verdicts"
    )
    report.set_defaults(handler=_report)

    algorithms = commands.add_parser("algorithms", help="list algorithms and hyperparameters")
    algorithms.set_defaults(handler=_algorithms)
    add_store_parser(commands)
    add_data_commands(commands)
    add_status_parser(commands)
    add_study_parser(commands, _check_before_running)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except SpecError as error:
        print(f"ctrain: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BrokenPipeError:
        # The reader left (``ctrain sweep --dry-run | head``): nothing more to say, and the
        # interpreter's own flush of stdout at exit must not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
