"""Every column name of the store, and the families of names built from a split or a metric.

The schema owns the names: writers (trainer records, metrics) and readers (stats, reports)
take them from here, so a renamed column is one edit and a typo is an ``AttributeError``.
"""

from __future__ import annotations

PAPER_METRICS: dict[str, str] = {
    "auc_m": "AUC_M",
    "ind": "Ind",
    "sp": "Sp",
    "ina": "Ina",
    "sf": "Sf",
    "wd": "Wd",
    "loss_gap": "|L0−L1|",
}
"""Column → the paper's name, in the order of the paper's results table."""

GROUP_RATES: tuple[str, ...] = ("loss", "positive_rate", "tpr", "fpr", "ppv", "npv", "auc")
"""Per-group columns, written ``group_<rate>_<g>`` for each group id ``g``."""


def final_column(split: str, metric: str) -> str:
    """The ``trials`` column holding an attempt's last ``metric`` on ``split``."""
    return f"final_{split}_{metric}"


def group_column(rate: str, group: int) -> str:
    """The ``evals`` column holding ``rate`` of group ``group``."""
    return f"group_{rate}_{group}"
