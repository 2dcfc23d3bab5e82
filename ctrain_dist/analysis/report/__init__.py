"""Reports of a study: Markdown, self-contained HTML, a LaTeX table and PNG figures.

Data flow, one direction: ``build`` reads one sweep from the store and calls
``ctrain_dist.analysis.stats`` (every number is computed there); ``study`` builds one report
per sweep of each task (selection and confirmation apart) and ``across`` the across-task
frames → ``sections`` and ``study_sections`` lay the frames out as a ``Document`` →
``document`` renders it (Markdown, HTML, LaTeX) and ``figures`` draws the PNGs.

Files ``write_report`` puts in its folder: ``report.md`` (figures linked), ``report.html``
(figures inlined; open or send it alone), ``table.tex`` (booktabs tables for a paper) and
``convergence.png``, ``pareto.png``, ``profiles.png``, ``group_rates.png`` per sweep (with
``tuning_curves.png`` and ``sensitivity.png`` for a tuning stage; named
``<sweep>.convergence.png`` … when the report has several sweeps), and
``critical_difference.png`` for a study across tasks.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ctrain_dist.analysis.report import figures, tuning_figures
from ctrain_dist.analysis.report.build import (
    Comparison,
    Report,
    Settings,
    build_comparison,
    build_report,
    convergence_frame,
)
from ctrain_dist.analysis.report.document import (
    Document,
    render_html,
    render_latex_table,
    render_markdown,
)
from ctrain_dist.analysis.report.figures import plot_convergence
from ctrain_dist.analysis.report.sections import CD_FIGURE, comparison_document, latex_tables
from ctrain_dist.analysis.report.study import StudyReport, build_study
from ctrain_dist.analysis.report.study_sections import figure_prefix, study_document
from ctrain_dist.analysis.report.tuning_figures import SENSITIVITY_FIGURE, TUNING_FIGURE
from ctrain_dist.store import Store

__all__ = [
    "Comparison",
    "Document",
    "Report",
    "Settings",
    "StudyReport",
    "build_comparison",
    "build_report",
    "build_study",
    "convergence_frame",
    "plot_convergence",
    "write_comparison",
    "write_report",
]


def _write_figures(report: Report, out: Path, prefix: str) -> None:
    figures.plot_convergence(report.convergence, out / f"{prefix}convergence.png")
    figures.plot_pareto(report, out / f"{prefix}pareto.png")
    figures.plot_profiles(report, out / f"{prefix}profiles.png")
    figures.plot_group_rates(report, out / f"{prefix}group_rates.png")
    if report.tuning is not None:
        tuning_figures.plot_tuning_curves(report.tuning, out / f"{prefix}{TUNING_FIGURE}")
        tuning_figures.plot_sensitivity(report.tuning, out / f"{prefix}{SENSITIVITY_FIGURE}")


def damage_notice(store: Store, sweeps: Sequence[str] | None = None) -> str:
    """What heads a report of a damaged store: every file it could not count and the trials
    each held, since every number after it lacks their rows (empty for an intact store)."""
    losses = [loss for sweep in sweeps or [None] for loss in store.losses(sweep)]
    if not losses:
        return ""
    lines = [f"> - {loss.describe()}" for loss in losses]
    heading = "> **Incomplete store:** the results below lack the rows of these files."
    return "\n".join([heading, *lines, "", ""])


def write_report(
    store: Store,
    out_dir: Path | str,
    sweep_id: str | Sequence[str] | None = None,
    settings: Settings | None = None,
) -> str:
    """Write the report files (see the module docstring) into ``out_dir``; return the Markdown.

    Args:
        sweep_id: the sweep(s) to report (each with its confirmation); default every sweep.

    Raises:
        KeyError: for a sweep the store does not hold, or a baseline a sweep lacks.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    chosen = [sweep_id] if isinstance(sweep_id, str) else sweep_id
    study = build_study(store, chosen, settings)
    parts = study.parts or [Report([], {}, 0)]
    for report in parts:
        _write_figures(report, out, figure_prefix(study, report))
    if study.across is not None:
        figures.plot_critical_difference(study.across, out / CD_FIGURE)
    document = study_document(study)
    markdown = damage_notice(store, chosen) + render_markdown(document)
    (out / "report.md").write_text(markdown, encoding="utf-8")
    (out / "report.html").write_text(render_html(document, out), encoding="utf-8")
    tables = [
        table
        for report in parts
        if report.status_counts
        for table in latex_tables(report, _label_suffix(study, report))
    ]
    if tables:
        latex = "\n".join(render_latex_table(*table) for table in tables)
        (out / "table.tex").write_text(latex, encoding="utf-8")
    return markdown


def _label_suffix(study: StudyReport, report: Report) -> str:
    return "" if len(study.parts) <= 1 else f"-{report.sweep_ids[0]}"


def write_comparison(
    store: Store,
    a: str,
    b: str,
    out_dir: Path | str,
    sweep_id: str,
    settings: Settings | None = None,
) -> str:
    """Write ``compare-<a>-vs-<b>.md`` and ``.html`` into ``out_dir``; return the Markdown.

    Raises:
        KeyError: naming an algorithm the sweep's trials do not hold.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    document = comparison_document(build_comparison(store, a, b, sweep_id, settings))
    markdown = render_markdown(document)
    stem = f"compare-{a}-vs-{b}"
    (out / f"{stem}.md").write_text(markdown, encoding="utf-8")
    (out / f"{stem}.html").write_text(render_html(document, out), encoding="utf-8")
    return markdown
