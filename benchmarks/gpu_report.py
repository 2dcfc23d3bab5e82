"""The GPU check's report: one JSON and one Markdown file under OUT, a step added as it ends.

Why a step at a time: ``gpu_check.sh`` time-boxes every step, and a GPU is lent for minutes,
so a step that hangs or is killed must not take the earlier steps' results with it. Each step
is written the moment it ends: the JSON rewritten whole, atomically (a reader, or a copy taken
while a later step runs, never sees half a file), the Markdown one section longer.

Every step ends ``passed``, ``failed`` or ``skipped``, and a skip always says why (no CUDA
device, a missing package). Torch-free, so the shell can record a step it had to kill in a
fraction of a second:

    python -m benchmarks.gpu_report missing OUT STEP REASON  # failed, unless STEP is recorded
    python -m benchmarks.gpu_report summary OUT  # the closing table; exit 1 if a step failed
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ctrain_dist.files import write_atomically

JSON_NAME = "gpu_check.json"
MARKDOWN_NAME = "gpu_check.md"
PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"
STATUSES = (PASSED, FAILED, SKIPPED)


@dataclass
class StepResult:
    """How one step ended: its status, why (required unless it passed), its figures and its
    Markdown body."""

    status: str
    reason: str = ""
    figures: dict[str, Any] = field(default_factory=dict)
    markdown: str = ""
    seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status {self.status!r} is none of {STATUSES}")
        if self.status != PASSED and not self.reason:
            raise ValueError(f"a {self.status} step must say why")


def begin(out: Path, about: dict[str, Any], header: str) -> None:
    """Start both files afresh: what the check runs on, no steps yet."""
    out.mkdir(parents=True, exist_ok=True)
    write_atomically(out / JSON_NAME, json.dumps({"about": about, "steps": {}}, indent=2))
    write_atomically(out / MARKDOWN_NAME, header.rstrip() + "\n")


def _read(out: Path) -> dict[str, Any]:
    """The report so far; an empty one if the first step died before starting it."""
    path = out / JSON_NAME
    return json.loads(path.read_text()) if path.is_file() else {"about": {}, "steps": {}}


def recorded(out: Path, name: str) -> bool:
    return name in _read(out)["steps"]


def append(out: Path, name: str, result: StepResult) -> None:
    """Add step ``name``'s result to both files (the JSON first: it is the record)."""
    out.mkdir(parents=True, exist_ok=True)
    report = _read(out)
    report["steps"][name] = asdict(result)
    write_atomically(out / JSON_NAME, json.dumps(report, indent=2, default=str))
    title = f"## {name}: {result.status} ({result.seconds:.1f} s)"
    lines = ["", title, ""]
    if result.reason:
        lines += [f"{result.status.capitalize()}: {result.reason}", ""]
    if result.markdown:
        lines += [result.markdown.rstrip(), ""]
    with (out / MARKDOWN_NAME).open("a") as handle:
        handle.write("\n".join(lines))


def summary(out: Path) -> tuple[str, bool]:
    """The closing table of every step (also appended to the Markdown) and whether none
    failed."""
    steps = _read(out)["steps"]
    lines = ["", "## Summary", "", "| step | status | seconds | reason |", "|---|---|---|---|"]
    for name, step in steps.items():
        reason = step["reason"].replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {name} | {step['status']} | {step['seconds']:.1f} | {reason} |")
    text = "\n".join(lines) + "\n"
    with (out / MARKDOWN_NAME).open("a") as handle:
        handle.write(text)
    return text, all(step["status"] != FAILED for step in steps.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    missing = commands.add_parser("missing", help="record STEP as failed unless it is recorded")
    missing.add_argument("out", type=Path)
    missing.add_argument("step")
    missing.add_argument("reason")
    missing.add_argument("--seconds", type=float, default=0.0)
    closing = commands.add_parser("summary", help="append the summary; exit 1 if a step failed")
    closing.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    if args.command == "missing":
        if not recorded(args.out, args.step):
            append(args.out, args.step, StepResult(FAILED, args.reason, seconds=args.seconds))
        return 0
    text, clean = summary(args.out)
    print(text)
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
