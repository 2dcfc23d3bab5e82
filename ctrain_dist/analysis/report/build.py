"""Gather a report's numbers: read the store once, select, and call ``ctrain_dist.analysis.stats``.

Everything here is a tidy frame from ``stats`` (DESIGN.md: report computes nothing it could
get from stats); the rest of the package only lays these frames out and draws them, so a
notebook can take a ``Report`` apart and restyle it without recomputing anything.

Protocol: each algorithm's configuration is selected on validation; every claim is then made
on test across seeds: per pair, the lexicographic verdict (feasibility rate, then objective
among feasible seeds), Holm-corrected over the family of those two hypotheses per pair.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

import pandas as pd
import pyarrow.compute as pc

from ctrain_dist.analysis import stats
from ctrain_dist.analysis.report.tuning import Tuning, build_tuning
from ctrain_dist.analysis.study import SELECTION
from ctrain_dist.store import Store
from ctrain_dist.store.schema import (
    ACCURACY,
    ALGORITHM,
    ATTEMPT_ID,
    AUC,
    AUC_M,
    CONFIG_LABEL,
    CONSTRAINT_NAMES,
    DATASET,
    DP_GAP,
    GROUP_NAMES,
    INA,
    IND,
    LOSS_GAP,
    MAX_VIOLATION,
    OBJECTIVE,
    PAPER_METRICS,
    SAMPLES,
    SEED,
    SPLIT,
    SPLITS,
    STATUS,
    STATUS_DIVERGED,
    STATUS_ERROR,
    STATUS_FINISHED,
    TEST,
    TIME_S,
    final_column,
    group_column,
)

TEST_OBJECTIVE = final_column(TEST, OBJECTIVE)
TEST_MAX_VIOLATION = final_column(TEST, MAX_VIOLATION)
TABLE_METRICS: dict[str, str] = {
    TEST_OBJECTIVE: "Test objective",
    TEST_MAX_VIOLATION: "Test max violation",
    final_column(TEST, ACCURACY): "Test accuracy",
    final_column(TEST, DP_GAP): "Test DP gap",
}
PAPER_COLUMNS: dict[str, str] = {final_column(TEST, k): name for k, name in PAPER_METRICS.items()}
COMPARED_METRICS: dict[str, str] = {
    TEST_OBJECTIVE: TABLE_METRICS[TEST_OBJECTIVE],
    TEST_MAX_VIOLATION: TABLE_METRICS[TEST_MAX_VIOLATION],
}
"""What the profiles compare."""
DESCRIBED_METRICS: tuple[str, ...] = (
    TEST_MAX_VIOLATION,
    final_column(TEST, ACCURACY),
    final_column(TEST, DP_GAP),
)
"""Secondary metrics the sweep report compares descriptively (no family, no claim)."""
COMPARISON_METRICS: dict[str, str] = {
    final_column(TEST, metric): metric
    for metric in (OBJECTIVE, MAX_VIOLATION, ACCURACY, DP_GAP, AUC, *PAPER_METRICS)
}
"""Test columns ``--compare`` shows, where they have values → the metric name it shows."""
SAME_METRIC: dict[str, str] = {IND: DP_GAP, INA: ACCURACY}
"""Metrics that are another one (Ind is the DP gap; Ina is 1 − accuracy)."""
CONSTRAINT_METRICS: dict[str, tuple[str, ...]] = {
    "loss_gap": (LOSS_GAP,),
    "positive_rate_gap": (DP_GAP, IND),
}
"""Constraint kind → the metrics its max violation is a function of, when it is the only kind."""
HIGHER_IS_BETTER: frozenset[str] = frozenset(
    final_column(split, metric) for split in SPLITS for metric in (ACCURACY, AUC, AUC_M)
)
GROUP_RATE_LABELS: dict[str, str] = {
    "positive_rate": "Positive rate",
    "tpr": "True positive rate",
    "fpr": "False positive rate",
    "loss": "Mean loss",
}
"""The per-group rates (of ``store.schema.GROUP_RATES``) the report shows, and their labels."""
CURVE_METRICS: dict[str, str] = {
    OBJECTIVE: "Test objective",
    MAX_VIOLATION: "Test max violation",
}
CURVE_AXES: dict[str, str] = {SAMPLES: "Samples", TIME_S: "Training time (s)"}
STATUS_ORDER: tuple[str, ...] = (STATUS_FINISHED, STATUS_DIVERGED, STATUS_ERROR)


def group_rate_column(rate: str, group: int) -> str:
    """The ``trials`` column of group ``group``'s last ``rate`` on test."""
    return final_column(TEST, group_column(rate, group))


def by_algorithm_and_metric(summary: pd.DataFrame) -> pd.DataFrame:
    """A ``stats.summarise`` frame indexed by (algorithm, metric), for cell lookups."""
    return summary.set_index([ALGORITHM, "metric"])


@dataclass(frozen=True)
class Settings:
    """What every statistic of a report is computed under; the report names each."""

    tolerance: float = stats.DEFAULT_TOLERANCE
    baseline: str | None = None
    alpha: float = stats.SIGNIFICANCE


@dataclass(frozen=True)
class Report:
    """Everything a report shows of one sweep, as tidy frames from ``ctrain_dist.analysis.stats``.

    Attributes:
        sweep_ids: the sweep reported (one; a list for the title's sake).
        status_counts: kept trials (latest attempt of each) by status.
        attempts: all attempts, retries included.
        settings: feasibility tolerance, baseline and α the statistics use.
        role: ``selection`` or ``confirmation`` (``analysis.study``).
        group_names: names of the data's groups, by group id.
        datasets: the datasets the trials trained on (names say "synthetic" where they are).
        configurations: per algorithm, the configurations tried and the one selected.
        selected: the trials of the selected configurations (one row per seed).
        summary: ``stats.summarise`` of ``selected`` on the table, paper and group metrics.
        feasibility: ``stats.feasibility`` of ``selected`` on test (n, diverged, errored too).
        verdicts: ``stats.verdicts`` of ``selected``: the lexicographic family per pair.
        descriptive: ``stats.descriptive_differences`` on ``DESCRIBED_METRICS``.
        pareto: per-seed test objective and max violation with ``on_front`` per algorithm.
        profiles: ``stats.performance_profile`` of each compared metric.
        convergence: ``stats.convergence_bands`` of test curves against each of ``CURVE_AXES``.
        tuning: the tuning stage (``report.tuning``) when an algorithm tried several
            configurations, else None.
    """

    sweep_ids: list[str]
    status_counts: dict[str, int]
    attempts: int
    settings: Settings = field(default_factory=Settings)
    role: str = SELECTION
    group_names: list[str] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)
    configurations: pd.DataFrame = field(default_factory=pd.DataFrame)
    selected: pd.DataFrame = field(default_factory=pd.DataFrame)
    summary: pd.DataFrame = field(default_factory=pd.DataFrame)
    feasibility: pd.DataFrame = field(default_factory=pd.DataFrame)
    verdicts: pd.DataFrame = field(default_factory=pd.DataFrame)
    descriptive: pd.DataFrame = field(default_factory=pd.DataFrame)
    pareto: pd.DataFrame = field(default_factory=pd.DataFrame)
    profiles: pd.DataFrame = field(default_factory=pd.DataFrame)
    convergence: pd.DataFrame = field(default_factory=pd.DataFrame)
    tuning: Tuning | None = None

    @property
    def algorithms(self) -> list[str]:
        return sorted(set(self.selected[ALGORITHM])) if len(self.selected) else []


def build_report(
    store: Store, sweep_id: str, settings: Settings | None = None, role: str = SELECTION
) -> Report:
    """Read one sweep from the store and gather the report's frames.

    Raises:
        KeyError: for a baseline the sweep's trials do not hold.
    """
    settings = settings or Settings()
    trials = store.trials(sweep_id)
    attempts = len(store.trials(sweep_id, all_attempts=True))
    status_counts = _status_counts(trials)
    if trials.empty:
        return Report([sweep_id], status_counts, attempts, settings, role)
    selected = stats.select_configurations(trials, tolerance=settings.tolerance)
    groups = group_names(trials)
    described = [
        m
        for m in [*TABLE_METRICS, *PAPER_COLUMNS, *_group_columns(len(groups))]
        if m in selected.columns
    ]
    compared = [m for m in COMPARED_METRICS if m in selected.columns]
    pairs = stats.pairs_to_compare(sorted(set(selected[ALGORITHM])), settings.baseline)
    return Report(
        sweep_ids=[sweep_id],
        status_counts=status_counts,
        attempts=attempts,
        settings=settings,
        role=role,
        group_names=groups,
        datasets=sorted(set(trials[DATASET].dropna())) if DATASET in trials else [],
        configurations=_configurations(trials, selected),
        selected=selected,
        summary=stats.summarise(selected, described, higher_is_better=HIGHER_IS_BETTER),
        feasibility=stats.feasibility(selected, tolerance=settings.tolerance),
        verdicts=_verdicts(selected, pairs, settings),
        descriptive=stats.descriptive_differences(
            selected,
            pairs,
            distinct_metrics(selected, DESCRIBED_METRICS),
            higher_is_better=HIGHER_IS_BETTER,
        ),
        pareto=_pareto(selected),
        profiles=_profiles(selected, compared),
        convergence=convergence_frame(_selected_test_evals(store, sweep_id, selected)),
        tuning=build_tuning(trials, selected, settings.tolerance),
    )


def _verdicts(selected: pd.DataFrame, pairs: list, settings: Settings) -> pd.DataFrame:
    if not {TEST_OBJECTIVE, TEST_MAX_VIOLATION} <= set(selected.columns):
        return pd.DataFrame()
    return stats.verdicts(selected, pairs, tolerance=settings.tolerance, alpha=settings.alpha)


def constraint_kinds(trials: pd.DataFrame) -> set[str]:
    """The constraint kinds the trials trained under, from ``constraint_names`` (JSON)."""
    if CONSTRAINT_NAMES not in trials.columns:
        return set()
    names = [n for text in trials[CONSTRAINT_NAMES].dropna().unique() for n in json.loads(text)]
    return {name.split("[")[0].split(".")[0] for name in names}


def distinct_metrics(trials: pd.DataFrame, metrics: Iterable[str]) -> list[str]:
    """``metrics`` that have values, without any that another kept one determines.

    Ind is the DP gap and Ina is 1 − accuracy (with two groups, the same numbers), and under a
    single kind of constraint its metric is a function of the max violation: testing both
    would count one question twice in a family.
    """
    present = [m for m in metrics if m in trials and trials[m].notna().any()]
    duplicates = {
        final_column(TEST, copy): final_column(TEST, original)
        for copy, original in SAME_METRIC.items()
    }
    kinds = constraint_kinds(trials)
    if len(kinds) == 1:
        for metric in CONSTRAINT_METRICS.get(kinds.pop(), ()):
            duplicates[final_column(TEST, metric)] = TEST_MAX_VIOLATION
    return [m for m in present if duplicates.get(m) not in present]


def group_names(trials: pd.DataFrame) -> list[str]:
    """The data's group names from the trials' ``group_names`` JSON (first row that has it)."""
    if GROUP_NAMES not in trials.columns:
        return []
    present = trials[GROUP_NAMES].dropna()
    return list(json.loads(present.iloc[0])) if len(present) else []


def _group_columns(num_groups: int) -> list[str]:
    return [group_rate_column(r, g) for r in GROUP_RATE_LABELS for g in range(num_groups)]


def _status_counts(trials: pd.DataFrame) -> dict[str, int]:
    """Counts in the order finished, diverged, error, then any other status."""
    counts = trials[STATUS].value_counts() if STATUS in trials.columns else pd.Series()
    order = [s for s in STATUS_ORDER if s in counts] + sorted(set(counts.index) - set(STATUS_ORDER))
    return {status: int(counts[status]) for status in order}


def _configurations(trials: pd.DataFrame, selected: pd.DataFrame) -> pd.DataFrame:
    """Per algorithm: configurations tried, the selected one and its seeds."""
    tried = trials.groupby(ALGORITHM, sort=True)[CONFIG_LABEL].nunique()
    chosen = selected.groupby(ALGORITHM, sort=True).agg(
        selected=(CONFIG_LABEL, "first"), seeds=(SEED, "nunique")
    )
    return chosen.assign(configurations=tried).reset_index()


def _pareto(selected: pd.DataFrame) -> pd.DataFrame:
    """Per-seed (test objective, test max violation) and each algorithm's Pareto front."""
    columns = [ALGORITHM, SEED, TEST_OBJECTIVE, TEST_MAX_VIOLATION]
    if not set(columns) <= set(selected.columns):
        return pd.DataFrame()
    points = selected[columns].reset_index(drop=True)
    front = stats.pareto_front(points, TEST_MAX_VIOLATION, TEST_OBJECTIVE, by=ALGORITHM)
    return points.assign(on_front=front)


def _profiles(selected: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    frames = [stats.performance_profile(selected, m) for m in metrics if selected[m].notna().any()]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _selected_test_evals(
    store: Store, sweep_id: str | None, selected: pd.DataFrame
) -> pd.DataFrame:
    """Test-split curves of the selected configurations' kept attempts."""
    columns = [ALGORITHM, CONFIG_LABEL, ATTEMPT_ID, *CURVE_AXES, *CURVE_METRICS]
    labels = sorted(set(selected[CONFIG_LABEL]))
    condition = (pc.field(SPLIT) == TEST) & pc.field(CONFIG_LABEL).isin(labels)
    evals = store.evals(sweep_id, columns=columns, filters=condition)
    if evals.empty:
        return evals
    pairs = pd.MultiIndex.from_frame(selected[[ALGORITHM, CONFIG_LABEL]].drop_duplicates())
    return evals[pd.MultiIndex.from_frame(evals[[ALGORITHM, CONFIG_LABEL]]).isin(pairs)]


def convergence_frame(evals: pd.DataFrame) -> pd.DataFrame:
    """``stats.convergence_bands`` of the curve metrics against each axis the evals have."""
    if SPLIT in evals.columns:
        evals = evals[evals[SPLIT] == TEST]
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
    """Two algorithms head to head (``ctrain report --compare A B``).

    Attributes:
        a, b: the algorithms, as named on the command line.
        verdict: ``stats.verdicts`` of the pair: its family is the pair's two hypotheses.
        descriptive: ``stats.descriptive_differences`` on every other distinct test metric.
        summary: ``stats.summarise`` of the compared metrics.
        feasibility: ``stats.feasibility`` of the two on test.
        configurations: the selected configuration of each.
        settings: tolerance and α.
    """

    a: str
    b: str
    verdict: pd.DataFrame
    descriptive: pd.DataFrame
    summary: pd.DataFrame
    feasibility: pd.DataFrame
    configurations: pd.DataFrame
    settings: Settings


def build_comparison(
    store: Store, a: str, b: str, sweep_id: str, settings: Settings | None = None
) -> Comparison:
    """Select each algorithm's configuration on validation, then test ``a`` against ``b``.

    Raises:
        KeyError: naming the algorithm the store's trials do not hold.
    """
    settings = settings or Settings()
    trials = store.trials(sweep_id)
    known = set(trials.get(ALGORITHM, []))
    for name in (a, b):
        if name not in known:
            raise KeyError(name)
    pair = trials[trials[ALGORITHM].isin([a, b])]
    selected = stats.select_configurations(pair, tolerance=settings.tolerance)
    secondary = [m for m in distinct_metrics(selected, COMPARISON_METRICS) if m != TEST_OBJECTIVE]
    return Comparison(
        a=a,
        b=b,
        verdict=_verdicts(selected, [(a, b)], settings),
        descriptive=stats.descriptive_differences(
            selected, [(a, b)], secondary, higher_is_better=HIGHER_IS_BETTER
        ),
        summary=stats.summarise(
            selected,
            distinct_metrics(selected, COMPARISON_METRICS),
            higher_is_better=HIGHER_IS_BETTER,
        ),
        feasibility=stats.feasibility(selected, tolerance=settings.tolerance),
        configurations=_configurations(pair, selected),
        settings=settings,
    )
