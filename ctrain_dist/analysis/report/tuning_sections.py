"""What a report says of a tuning stage, and of the tuning stage beside its confirmation.

Formatting only: the numbers come from ``report.tuning`` (which calls ``stats``). Like every
other claim of the report, each table names its n (configurations, or seeds), its interval
method and its family; the tuning stage makes no test, so its family is none, and says so.
"""

from __future__ import annotations

import pandas as pd

from ctrain_dist.analysis.report.build import Report
from ctrain_dist.analysis.report.document import Figure, Section, Table
from ctrain_dist.analysis.report.sections import number, part_sections
from ctrain_dist.analysis.report.tuning import Tuning, stage_comparison
from ctrain_dist.analysis.report.tuning_figures import SENSITIVITY_FIGURE, TUNING_FIGURE
from ctrain_dist.analysis.study import CONFIRMATION, SELECTION
from ctrain_dist.store.schema import ALGORITHM

CURVE_TEXT = (
    "Tuning curve (Dodge et al. 2019): the expected best validation objective among the "
    "feasible configurations of n drawn with replacement from the N tried, in closed form "
    "from their empirical distribution, given that one of the n is feasible (an infeasible "
    "configuration loses to any feasible one); beside it P(a feasible one among n) = "
    "1 − (1 − K/N)^n. The band is ± one standard deviation of that best of n (its spread "
    "over draws, not a confidence interval), clipped to the feasible values' range. The "
    "estimator treats the N configurations as draws from one distribution: exact for random "
    "search; for a grid or TPE it describes what was tried. A configuration a scheduler "
    "(ASHA) stopped early has no final value and counts as infeasible: it lost to one kept."
)


def share_interval(low: float, high: float) -> str:
    """``[low, high]`` of a share, without the float dust of a bound at 0 or 1 (5.6e-17)."""
    return f"[{number(round(low, 12))}, {number(round(high, 12))}]"


def _seeds(row: pd.Series) -> str:
    low, high = row["seeds_min"], row["seeds_max"]
    return str(low) if low == high else f"{low}–{high}"


def _point(curves: pd.DataFrame, algorithm: str, at_n: int) -> str:
    curve = curves[(curves[ALGORITHM] == algorithm) & (curves["n"] == at_n)]
    if curve.empty or curve["expected_best"].isna().all():
        return "n/a (none feasible)"
    row = curve.iloc[0]
    return f"{number(row['expected_best'])} ± {number(row['std'])}"


def tuning_table(tuning: Tuning) -> Table:
    """Per algorithm: N, seeds, K/N [Wilson], the curve at n = 1 and n = N, the selection."""
    rows = []
    for _, r in tuning.algorithms.iterrows():
        algorithm, total = r[ALGORITHM], int(r["configurations"])
        rows.append(
            [
                algorithm,
                str(total),
                _seeds(r),
                f"{r['feasible']}/{total} {share_interval(r['feasible_low'], r['feasible_high'])}"
                + (f", {r['stopped']} stopped early" if r["stopped"] else ""),
                _point(tuning.curves, algorithm, 1),
                _point(tuning.curves, algorithm, total),
                f"`{r['selected']}`" + ("" if r["selected_feasible"] else " (infeasible)"),
                f"{number(r['selected_objective'])} / {number(r['selected_violation'])}",
            ]
        )
    header = [
        "Algorithm",
        "Configurations N",
        "Seeds each",
        "Feasible K/N [Wilson 95%]",
        "Expected best at n = 1 (± sd)",
        "Expected best at n = N (± sd)",
        "Selected configuration",
        "Its validation objective / violation",
    ]
    return Table(header, rows)


def tuning_section(report: Report, prefix: str = "") -> Section | None:
    """The tuning stage of a sweep whose algorithms tried several configurations."""
    tuning = report.tuning
    if tuning is None:
        return None
    sweep = ", ".join(f"`{s}`" for s in report.sweep_ids)
    return Section(
        "Tuning stage (validation)",
        [
            f"Tuning stage: sweep {sweep}, every number on validation. A configuration's value "
            "is the median over its seeds of the validation objective and of the validation "
            "max violation (a diverged seed counts as the worst value); it is feasible when "
            f"that violation is ≤ {tuning.tolerance:g}. The selected configuration is the "
            "feasible one with the lowest value (else the least violation), as in "
            "the rest of this report. n here is configurations (N per algorithm, K feasible), "
            "the feasible share's interval Wilson 95% over configurations. No test is made on "
            "this stage (family: none): its scores are optimistic, the selection having "
            "picked the best of them; the claims are the test results and verdicts of the "
            "selected configurations, and their confirmation on fresh seeds where it ran.",
            tuning_table(tuning),
            CURVE_TEXT,
            Figure(
                f"{prefix}{TUNING_FIGURE}",
                "Left: expected best validation objective (feasible, given a feasible one is "
                "drawn) against the number of configurations n, ±1 sd band of the best of n. "
                "Right: P(a feasible one among n) (K/N feasible in the legend). An algorithm "
                "with no feasible configuration has no curve on the left.",
            ),
            Figure(
                f"{prefix}{SENSITIVITY_FIGURE}",
                "Sensitivity: each configuration's validation objective and max violation "
                "(medians over its seeds) against each hyperparameter its algorithm tuned; "
                "filled: feasible, hollow: infeasible, dashed: the tolerance; log axis where "
                "the values span a decade or more. A configuration whose median is infinite "
                "(half its seeds diverged) is not drawn.",
            ),
        ],
    )


def tuned_part_sections(report: Report, prefix: str = "", heading: str = "") -> list[Section]:
    """``part_sections`` with the tuning stage after the selected configurations, if any."""
    sections = part_sections(report, prefix, heading)
    tuning = tuning_section(report, prefix)
    if tuning is None:
        return sections
    if heading:
        tuning = Section(f"{heading}: {tuning.title}", tuning.blocks)
    after = next(
        (i + 1 for i, s in enumerate(sections) if s.title.endswith("Selected configurations")),
        len(sections),
    )
    return [*sections[:after], tuning, *sections[after:]]


def stages_section(parts: list[Report], name: str) -> Section | None:
    """The selected configurations' validation scores in the tuning and confirmation stages,
    apart, for a task that has both."""
    roles = {part.role: part for part in parts}
    tuned, confirmed = roles.get(SELECTION), roles.get(CONFIRMATION)
    if tuned is None or confirmed is None or tuned.tuning is None or confirmed.selected.empty:
        return None
    frame = stage_comparison(tuned.tuning, confirmed.selected, tuned.tuning.tolerance)
    rows = [
        [
            r[ALGORITHM],
            f"`{r['config_label']}`"
            + (
                ""
                if r["confirmation_label"] == r["config_label"]
                else f" (the confirmation ran `{r['confirmation_label']}`, selected under "
                "another feasibility tolerance)"
            ),
            str(r["tuning_n"]),
            f"{number(r['tuning_objective'])} / {number(r['tuning_violation'])}",
            str(r["confirmation_n"]),
            f"{number(r['confirmation_mean'])} [{number(r['confirmation_low'])}, "
            f"{number(r['confirmation_high'])}]",
            f"{r['confirmation_feasible']}/{r['confirmation_n']} "
            + share_interval(r["confirmation_feasible_low"], r["confirmation_feasible_high"]),
        ]
        for _, r in frame.iterrows()
    ]
    header = [
        "Algorithm",
        "Selected configuration",
        "Tuning: seeds",
        "Tuning: validation objective / violation (median)",
        "Confirmation: fresh seeds",
        "Confirmation: validation objective [95% Student t]",
        "Confirmation: feasible on validation [Wilson 95%]",
    ]
    return Section(
        f"Task {name}: tuning stage and confirmation stage",
        [
            f"The configuration each algorithm selected in the tuning stage (sweep "
            f"`{tuned.sweep_ids[0]}`), scored on validation in each stage apart: in the tuning "
            "stage by the median over the seeds it was selected on (optimistic: it won on "
            f"them), in the confirmation stage (sweep `{confirmed.sweep_ids[0]}`) over fresh "
            "seeds. Descriptive (family: none); the tested claims are the confirmation part's "
            "verdicts on test.",
            Table(header, rows),
        ],
    )
