"""Recipe: the results table of the Folktables benchmark paper, from a store.

Kliachkin, Lepšová, Bareilles & Mareček (arXiv 2507.04033) report, per algorithm, the mean ± std
over seeds of their test metrics: AUC_M, Ind, Sp, Ina, Sf, Wd and |L0−L1| (defined in
``ctrain_dist.trial.metrics``). This recipe lays out the same table from any store: each algorithm's
configuration is selected on validation (one configuration per algorithm, as in the paper,
makes that a no-op), then the final test metrics of its seeds are summarised.

Data made by ``ctrain data synth`` carries "synthetic" in its group names; the table's title then
says "synthetic data", so a number from invented people is never mistaken for a census result.

Usage::

    python analysis/paper_table.py --store runs/paper-acsincome [--sweep ID] [--latex table.tex]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from ctrain_dist import store
from ctrain_dist.analysis import stats
from ctrain_dist.analysis.report.build import PAPER_COLUMNS, group_names
from ctrain_dist.analysis.report.document import (
    Document,
    Section,
    render_latex_table,
    render_markdown,
)
from ctrain_dist.analysis.report.sections import paper_table
from ctrain_dist.store.schema import ALGORITHM, CONFIG_JSON, SEED

SYNTHETIC_WORD = "synthetic"
DATA_KEYS: tuple[str, ...] = ("dataset", "task", "states", "year", "horizon", "sensitive")


def _configs(trials: pd.DataFrame) -> pd.Series:
    """The trials' configurations as JSON text, where recorded."""
    return trials[CONFIG_JSON].dropna() if CONFIG_JSON in trials else pd.Series()


def is_synthetic(trials: pd.DataFrame) -> bool:
    """Whether the trials' data is synthetic: its group names or data spec say so."""
    names = " ".join(group_names(trials)).lower()
    configs = _configs(trials)
    data = json.dumps(json.loads(configs.iloc[0]).get("data", {})).lower() if len(configs) else ""
    return SYNTHETIC_WORD in names or SYNTHETIC_WORD in data


def dataset_label(trials: pd.DataFrame) -> str:
    """A short description of the data, e.g. ``folktables ACSIncome OK 2018 1-Year race``."""
    configs = _configs(trials)
    if not len(configs):
        return "unknown data"
    data = json.loads(configs.iloc[0]).get("data", {})
    parts = [data[key] for key in DATA_KEYS if data.get(key) not in (None, "")]
    return " ".join(" ".join(map(str, p)) if isinstance(p, list) else str(p) for p in parts)


def build(trials: pd.DataFrame) -> tuple[str, Document]:
    """The table's caption and a one-table ``Document`` for it."""
    selected = stats.select_configurations(trials)
    algorithms = sorted(set(selected[ALGORITHM]))
    metrics = [m for m in PAPER_COLUMNS if m in selected.columns]
    table = paper_table(stats.summarise(selected, metrics), algorithms)
    if table is None:
        raise ValueError("the store's trials carry none of the paper's test metrics")
    seeds = selected.groupby(ALGORITHM)[SEED].nunique()
    count = str(seeds.min()) if seeds.min() == seeds.max() else f"{seeds.min()}–{seeds.max()}"
    kind = "SYNTHETIC data" if is_synthetic(trials) else "data"
    caption = (
        f"Test metrics, mean ± std over seeds ({count} per algorithm), on "
        f"{kind}: {dataset_label(trials)}; groups: {', '.join(group_names(trials))}."
    )
    title = "Paper-style results table" + (" (synthetic data)" if is_synthetic(trials) else "")
    return caption, Document(title, [Section("", [caption, table])])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--sweep", help="sweep id (default: every sweep in the store)")
    parser.add_argument("--latex", type=Path, help="also write the table as LaTeX (booktabs)")
    args = parser.parse_args(argv)
    trials = store.open(args.store).trials(args.sweep)
    if trials.empty:
        print(f"paper_table: no trials in {args.store}", file=sys.stderr)
        return 2
    caption, document = build(trials)
    print(render_markdown(document), end="")
    if args.latex:
        table = document.sections[0].blocks[1]
        args.latex.write_text(render_latex_table(table, caption, "tab:paper-results"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
