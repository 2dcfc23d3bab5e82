"""Gather a report's numbers: read the store once, select, and call ``ctrain_dist.analysis.stats``.

Everything here is a tidy frame from ``stats`` (DESIGN.md: report computes nothing it could
get from stats); the rest of the package only lays these frames out and draws them, so a
notebook can take a ``Report`` apart and restyle it without recomputing anything.

Protocol: each algorithm's configuration is selected on validation; every claim is then made
on test across seeds, and pairwise comparisons are corrected over all pairs × compared metrics.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pandas as pd
import pyarrow.compute as pc

from ctrain_dist.analysis import stats
from ctrain_dist.store import Store
from ctrain_dist.store.schema import PAPER_METRICS

TABLE_METRICS: dict[str, str] = {
    "final_test_objective": "Test objective",
    "final_test_max_violation": "Test max violation",
    "final_test_accuracy": "Test accuracy",
    "final_test_dp_gap": "Test DP gap",
}
PAPER_COLUMNS: dict[str, str] = {f"final_test_{k}": name for k, name in PAPER_METRICS.items()}
COMPARED_METRICS: dict[str, str] = {
    "final_test_objective": "Test objective",
    "final_test_max_violation": "Test max violation",
}
HIGHER_IS_BETTER: frozenset[str] = frozenset(
    f"final_{split}_{metric}"
    for split in ("train", "val", "test")
    for metric in ("accuracy", "auc", "auc_m")
)
GROUP_RATES: dict[str, str] = {
    "positive_rate": "Positive rate",
    "tpr": "True positive rate",
    "fpr": "False positive rate",
    "loss": "Mean loss",
}
CURVE_METRICS: dict[str, str] = {
    "objective": "Test objective",
    "max_violation": "Test max violation",
}
CURVE_AXES: dict[str, str] = {"samples": "Samples", "time_s": "Training time (s)"}
STATUS_ORDER: tuple[str, ...] = ("finished", "diverged", "error")


@dataclass(frozen=True)
class Report:
    """Everything a sweep report shows, as tidy frames from ``ctrain_dist.analysis.stats``.

    Attributes:
        sweep_ids: the sweeps whose trials were pooled.
        status_counts: kept trials (latest attempt of each) by status.
        attempts: all attempts, retries included.
        group_names: names of the data's groups, by group id.
        datasets: the datasets the trials trained on (names say "synthetic" where they are).
        configurations: per algorithm, the configurations tried and the one selected.
        selected: the trials of the selected configurations (one row per seed).
        summary: ``stats.summarise`` of ``selected`` on the table, paper and group metrics.
        feasibility: ``stats.feasibility`` of ``selected`` on test.
        pairwise: ``stats.pairwise_tests`` of ``selected`` on ``COMPARED_METRICS``.
        pareto: per-seed test objective and max violation with ``on_front`` per algorithm.
        profiles: ``stats.performance_profile`` of each compared metric.
        convergence: ``stats.convergence_bands`` of test curves against each of ``CURVE_AXES``.
    """

    sweep_ids: list[str]
    status_counts: dict[str, int]
    attempts: int
    group_names: list[str] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)
    configurations: pd.DataFrame = field(default_factory=pd.DataFrame)
    selected: pd.DataFrame = field(default_factory=pd.DataFrame)
    summary: pd.DataFrame = field(default_factory=pd.DataFrame)
    feasibility: pd.DataFrame = field(default_factory=pd.DataFrame)
    pairwise: pd.DataFrame = field(default_factory=pd.DataFrame)
    pareto: pd.DataFrame = field(default_factory=pd.DataFrame)
    profiles: pd.DataFrame = field(default_factory=pd.DataFrame)
    convergence: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def algorithms(self) -> list[str]:
        return sorted(set(self.selected["algorithm"])) if len(self.selected) else []


def build_report(store: Store, sweep_id: str | None = None) -> Report:
    """Read a sweep (or every sweep, pooled) from the store and gather the report's frames."""
    trials = store.trials(sweep_id)
    attempts = len(store.trials(sweep_id, all_attempts=True))
    sweep_ids = [sweep_id] if sweep_id else sorted(set(trials.get("sweep_id", [])))
    status_counts = _status_counts(trials)
    if trials.empty:
        return Report(sweep_ids, status_counts, attempts)
    selected = stats.select_configurations(trials)
    groups = group_names(trials)
    described = [
        m
        for m in [*TABLE_METRICS, *PAPER_COLUMNS, *_group_columns(len(groups))]
        if m in selected.columns
    ]
    compared = [m for m in COMPARED_METRICS if m in selected.columns]
    return Report(
        sweep_ids=sweep_ids,
        status_counts=status_counts,
        attempts=attempts,
        group_names=groups,
        datasets=sorted(set(trials["dataset"].dropna())) if "dataset" in trials else [],
        configurations=_configurations(trials, selected),
        selected=selected,
        summary=stats.summarise(selected, described),
        feasibility=stats.feasibility(selected),
        pairwise=stats.pairwise_tests(selected, compared, higher_is_better=HIGHER_IS_BETTER),
        pareto=_pareto(selected),
        profiles=_profiles(selected, compared),
        convergence=convergence_frame(_selected_test_evals(store, sweep_id, selected)),
    )


def group_names(trials: pd.DataFrame) -> list[str]:
    """The data's group names from the trials' ``group_names`` JSON (first row that has it)."""
    if "group_names" not in trials.columns:
        return []
    present = trials["group_names"].dropna()
    return list(json.loads(present.iloc[0])) if len(present) else []


def _group_columns(num_groups: int) -> list[str]:
    return [f"final_test_group_{r}_{g}" for r in GROUP_RATES for g in range(num_groups)]


def _status_counts(trials: pd.DataFrame) -> dict[str, int]:
    """Counts in the order finished, diverged, error, then any other status."""
    counts = trials["status"].value_counts() if "status" in trials.columns else pd.Series()
    order = [s for s in STATUS_ORDER if s in counts] + sorted(set(counts.index) - set(STATUS_ORDER))
    return {status: int(counts[status]) for status in order}


def _configurations(trials: pd.DataFrame, selected: pd.DataFrame) -> pd.DataFrame:
    """Per algorithm: configurations tried, the selected one and its seeds."""
    tried = trials.groupby("algorithm", sort=True)["config_label"].nunique()
    chosen = selected.groupby("algorithm", sort=True).agg(
        selected=("config_label", "first"), seeds=("seed", "nunique")
    )
    return chosen.assign(configurations=tried).reset_index()


def _pareto(selected: pd.DataFrame) -> pd.DataFrame:
    """Per-seed (test objective, test max violation) and each algorithm's Pareto front."""
    columns = ["algorithm", "seed", "final_test_objective", "final_test_max_violation"]
    if not set(columns) <= set(selected.columns):
        return pd.DataFrame()
    points = selected[columns].reset_index(drop=True)
    front = stats.pareto_front(
        points, "final_test_max_violation", "final_test_objective", by="algorithm"
    )
    return points.assign(on_front=front)


def _profiles(selected: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    frames = [stats.performance_profile(selected, m) for m in metrics if selected[m].notna().any()]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _selected_test_evals(
    store: Store, sweep_id: str | None, selected: pd.DataFrame
) -> pd.DataFrame:
    """Test-split curves of the selected configurations' kept attempts."""
    columns = ["algorithm", "config_label", "attempt_id", *CURVE_AXES, *CURVE_METRICS]
    labels = sorted(set(selected["config_label"]))
    condition = (pc.field("split") == "test") & pc.field("config_label").isin(labels)
    evals = store.evals(sweep_id, columns=columns, filters=condition)
    if evals.empty:
        return evals
    pairs = pd.MultiIndex.from_frame(selected[["algorithm", "config_label"]].drop_duplicates())
    return evals[pd.MultiIndex.from_frame(evals[["algorithm", "config_label"]]).isin(pairs)]


def convergence_frame(evals: pd.DataFrame) -> pd.DataFrame:
    """``stats.convergence_bands`` of the curve metrics against each axis the evals have."""
    if "split" in evals.columns:
        evals = evals[evals["split"] == "test"]
    metrics = [m for m in CURVE_METRICS if m in evals.columns]
    bands = [
        stats.convergence_bands(evals, metrics, x=axis)
        for axis in CURVE_AXES
        if axis in evals.columns
    ]
    bands = [b for b in bands if not b.empty]
    return pd.concat(bands, ignore_index=True) if bands else pd.DataFrame()


@dataclass(frozen=True)
class Comparison:
    """Two algorithms head to head on every test metric both have (``ctrain report --compare``).

    Attributes:
        a, b: the algorithms, as named on the command line.
        tests: ``stats.pairwise_tests`` of the two selected configurations, one row per metric;
            the corrections' family is these metrics.
        summary: ``stats.summarise`` of the same metrics.
        feasibility: ``stats.feasibility`` of the two on test.
        configurations: the selected configuration of each.
    """

    a: str
    b: str
    tests: pd.DataFrame
    summary: pd.DataFrame
    feasibility: pd.DataFrame
    configurations: pd.DataFrame


def comparison_metrics(frame: pd.DataFrame) -> list[str]:
    """Test metrics worth comparing: the table's, then the paper's, where they have values."""
    candidates = [*TABLE_METRICS, "final_test_auc", *PAPER_COLUMNS]
    return [m for m in dict.fromkeys(candidates) if m in frame and frame[m].notna().any()]


def build_comparison(store: Store, a: str, b: str, sweep_id: str | None = None) -> Comparison:
    """Select each algorithm's configuration on validation, then test ``a`` against ``b``.

    Raises:
        KeyError: naming the algorithm the store's trials do not hold.
    """
    trials = store.trials(sweep_id)
    known = set(trials.get("algorithm", []))
    for name in (a, b):
        if name not in known:
            raise KeyError(name)
    pair = trials[trials["algorithm"].isin([a, b])]
    selected = stats.select_configurations(pair)
    metrics = comparison_metrics(selected)
    tests = stats.pairwise_tests(
        selected, metrics, higher_is_better=HIGHER_IS_BETTER, pairs=[(a, b)]
    )
    return Comparison(
        a=a,
        b=b,
        tests=tests,
        summary=stats.summarise(selected, metrics),
        feasibility=stats.feasibility(selected),
        configurations=_configurations(pair, selected),
    )
