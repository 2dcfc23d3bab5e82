"""Reports of a sweep: Markdown, self-contained HTML, a LaTeX table and PNG figures.

Data flow, one direction: ``build`` reads the store and calls ``ctrain_dist.analysis.stats`` (every
number is computed there) → ``sections`` lays the frames out as a ``Document`` →
``document`` renders it (Markdown, HTML, LaTeX) and ``figures`` draws the PNGs.

Files ``write_report`` puts in its folder: ``report.md`` (figures linked), ``report.html``
(figures inlined; open or send it alone), ``table.tex`` (booktabs tables for a paper) and
``convergence.png``, ``pareto.png``, ``profiles.png``, ``group_rates.png``.
"""

from __future__ import annotations

from pathlib import Path

from ctrain_dist.analysis.report import figures
from ctrain_dist.analysis.report.build import (
    Comparison,
    Report,
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
from ctrain_dist.analysis.report.sections import comparison_document, latex_tables, report_document
from ctrain_dist.store import Store

__all__ = [
    "Comparison",
    "Document",
    "Report",
    "build_comparison",
    "build_report",
    "convergence_frame",
    "plot_convergence",
    "write_comparison",
    "write_report",
]


def _write_figures(report: Report, out: Path) -> None:
    figures.plot_convergence(report.convergence, out / "convergence.png")
    figures.plot_pareto(report, out / "pareto.png")
    figures.plot_profiles(report, out / "profiles.png")
    figures.plot_group_rates(report, out / "group_rates.png")


def write_report(store: Store, out_dir: Path | str, sweep_id: str | None = None) -> str:
    """Write the report files (see the module docstring) into ``out_dir``; return the Markdown."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = build_report(store, sweep_id)
    _write_figures(report, out)
    document = report_document(report)
    markdown = render_markdown(document)
    (out / "report.md").write_text(markdown, encoding="utf-8")
    (out / "report.html").write_text(render_html(document, out), encoding="utf-8")
    if report.status_counts:
        latex = "\n".join(render_latex_table(*table) for table in latex_tables(report))
        (out / "table.tex").write_text(latex, encoding="utf-8")
    return markdown


def write_comparison(
    store: Store, a: str, b: str, out_dir: Path | str, sweep_id: str | None = None
) -> str:
    """Write ``compare-<a>-vs-<b>.md`` and ``.html`` into ``out_dir``; return the Markdown.

    Raises:
        KeyError: naming an algorithm the store's trials do not hold.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    document = comparison_document(build_comparison(store, a, b, sweep_id))
    markdown = render_markdown(document)
    stem = f"compare-{a}-vs-{b}"
    (out / f"{stem}.md").write_text(markdown, encoding="utf-8")
    (out / f"{stem}.html").write_text(render_html(document, out), encoding="utf-8")
    return markdown
