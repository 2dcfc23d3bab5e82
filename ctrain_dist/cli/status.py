"""``ctrain status``: SLURM jobs' states beside the trials' progress in the store.

The job folder's ``submissions.jsonl`` (written when a sweep is submitted) ties each job to its
sweep and store; SLURM states come from ``sacct`` (:mod:`ctrain_dist.launch.slurm.accounting`,
imported at the top because it loads only the standard library), trial counts from the store,
so the two can be read side by side: a job RUNNING while its sweep's counts grow, or a job
FAILED with trials still pending.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ctrain_dist.errors import SpecError
from ctrain_dist.launch.slurm.accounting import job_states, read_submissions


def sweep_progress(store_root: Path) -> dict[str, dict[str, int]]:
    """Counts of each sweep's trials by the status of their kept attempt."""
    from ctrain_dist import store

    trials = store.open(store_root).trials()
    if trials.empty:
        return {}
    counts = trials.groupby(["sweep_id", "status"]).size()
    progress: dict[str, dict[str, int]] = {}
    for (sweep_id, status), count in counts.items():
        progress.setdefault(str(sweep_id), {})[str(status)] = int(count)
    return progress


def _format_counts(counts: dict[str, int], total: int | None) -> str:
    done = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "no trials yet"
    return f"{done} (of {total})" if total is not None else done


def _status(args: argparse.Namespace) -> int:
    if args.store is None and args.job_folder is None:
        raise SpecError("--store", "give --store DIR, --job-folder DIR, or both")
    stores: dict[Path, dict[str, int]] = {}
    if args.job_folder is not None:
        submissions = read_submissions(args.job_folder)
        if not submissions:
            raise SpecError("--job-folder", f"{args.job_folder} holds no ctrain submissions")
        states = job_states([record["job_id"] for record in submissions])
        print(f"jobs in {args.job_folder}:")
        for record in submissions:
            own = {
                job: state
                for job, state in states.items()
                if job == record["job_id"] or job.startswith(f"{record['job_id']}_")
            }
            shown = ", ".join(f"{job} {state}" for job, state in sorted(own.items()))
            print(
                f"  job {record['job_id']} ({record['mode']}, sweep {record['sweep']}, "
                f"submitted {record['submitted_at']}): {shown or 'not in accounting'}"
            )
            stores.setdefault(Path(record["store"]), {})[record["sweep"]] = record["trials"]
    if args.store is not None:
        stores.setdefault(args.store, {})
    for root, totals in stores.items():
        print(f"store {root}:")
        progress = sweep_progress(root)
        for sweep_id in sorted(set(progress) | set(totals)):
            counts = progress.get(sweep_id, {})
            print(f"  {sweep_id}: {_format_counts(counts, totals.get(sweep_id))}")
    return 0


def add_status_parser(commands: argparse._SubParsersAction) -> None:
    status = commands.add_parser("status", help="SLURM jobs' states and the trials' progress")
    status.add_argument("--store", type=Path, help="store to count trials in")
    status.add_argument(
        "--job-folder", type=Path, help="a cluster profile's job folder (its SLURM jobs)"
    )
    status.set_defaults(handler=_status)
