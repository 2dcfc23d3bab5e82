"""What several ``ctrain`` commands share: exit codes and the spec arguments.

Kept free of heavy imports: every command's parser is built on each start, ``--help`` included.
"""

from __future__ import annotations

import argparse
from pathlib import Path

EXIT_BAD_INPUT = 2
"""Bad input: one line naming the field, printed before any job or Ray starts."""
EXIT_FAILURE = 1
"""A runtime failure, e.g. trials that errored (their errors are in the store)."""


def add_spec_arguments(parser: argparse.ArgumentParser, example: str) -> None:
    """``SPEC`` and the repeatable ``--set KEY=VALUE`` overrides (``example`` in the help)."""
    parser.add_argument("spec", type=Path, help="sweep spec (YAML)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override a spec field, e.g. --set {example} (repeatable)",
    )
