"""A report as a small document model, and its Markdown, HTML and LaTeX renderings.

One layout, several formats: ``sections.py`` decides what a report says as a ``Document``
(paragraphs, tables, figures); this module only writes it out. The HTML is self-contained:
figures are inlined as base64 PNG and the styling is an inline ``<style>``, so the file can be
mailed or attached to a paper's supplement and still show everything.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Table:
    """A table of already formatted cells; ``note`` is a line printed under it."""

    header: list[str]
    rows: list[list[str]]
    note: str = ""


@dataclass(frozen=True)
class Figure:
    """A PNG in the report folder, referenced by file name."""

    filename: str
    caption: str


Block = str | Table | Figure
"""A paragraph (Markdown inline syntax: ``code`` and **bold** only), a table or a figure."""


@dataclass(frozen=True)
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)


@dataclass(frozen=True)
class Document:
    title: str
    sections: list[Section] = field(default_factory=list)


def _markdown_cell(text: str) -> str:
    return str(text).replace("|", "\\|")


def _markdown_table(table: Table) -> list[str]:
    header = " | ".join(_markdown_cell(c) for c in table.header)
    lines = [f"| {header} |", "|" + "---|" * len(table.header)]
    lines += ["| " + " | ".join(_markdown_cell(c) for c in row) + " |" for row in table.rows]
    return lines + (["", table.note] if table.note else [])


def render_markdown(document: Document) -> str:
    """GitHub-flavoured Markdown; figures are linked by file name, beside ``report.md``."""
    parts = [f"# {document.title}"]
    for section in document.sections:
        lines = [f"## {section.title}"] if section.title else []
        for block in section.blocks:
            if isinstance(block, Table):
                lines += ["", *_markdown_table(block)]
            elif isinstance(block, Figure):
                lines += [
                    "",
                    f"![{Path(block.filename).stem}]({block.filename})",
                    "",
                    block.caption,
                ]
            else:
                lines += ["", block]
        parts.append("\n".join(lines).strip("\n"))
    return "\n\n".join(parts) + "\n"


_INLINE = re.compile(r"`([^`]+)`|\*\*([^*]+)\*\*")
_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 72rem; margin: 2rem auto; padding: 0 1rem;
       color: #222; line-height: 1.45; }
table { border-collapse: collapse; margin: 0.8rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: left; }
th { background: #f2f2f2; }
tr:nth-child(even) td { background: #fafafa; }
figure { margin: 1rem 0; }
figure img { max-width: 100%; }
figcaption, .note { font-size: 0.85rem; color: #555; }
code { background: #f2f2f2; padding: 0 0.2rem; }
"""


def _inline_html(text: str) -> str:
    """Escape text, then turn ``code`` and **bold** into tags."""

    def tag(match: re.Match[str]) -> str:
        code, bold = match.groups()
        return f"<code>{code}</code>" if code is not None else f"<strong>{bold}</strong>"

    return _INLINE.sub(tag, html.escape(str(text), quote=False))


def _html_table(table: Table) -> list[str]:
    head = "".join(f"<th>{_inline_html(c)}</th>" for c in table.header)
    body = [
        "<tr>" + "".join(f"<td>{_inline_html(c)}</td>" for c in row) + "</tr>" for row in table.rows
    ]
    lines = ["<table>", f"<thead><tr>{head}</tr></thead>", "<tbody>", *body, "</tbody>", "</table>"]
    return lines + ([f'<p class="note">{_inline_html(table.note)}</p>'] if table.note else [])


def _html_figure(figure: Figure, folder: Path) -> list[str]:
    data = base64.b64encode((folder / figure.filename).read_bytes()).decode("ascii")
    alt = html.escape(figure.caption)
    return [
        "<figure>",
        f'<img alt="{alt}" src="data:image/png;base64,{data}">',
        f"<figcaption>{_inline_html(figure.caption)}</figcaption>",
        "</figure>",
    ]


def render_html(document: Document, folder: Path | str) -> str:
    """One self-contained HTML page; the figures are read from ``folder`` and inlined."""
    folder = Path(folder)
    body = [f"<h1>{_inline_html(document.title)}</h1>"]
    for section in document.sections:
        if section.title:
            body.append(f"<h2>{_inline_html(section.title)}</h2>")
        for block in section.blocks:
            if isinstance(block, Table):
                body += _html_table(block)
            elif isinstance(block, Figure):
                body += _html_figure(block, folder)
            else:
                body.append(f"<p>{_inline_html(block)}</p>")
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            f"<title>{html.escape(document.title)}</title>",
            f"<style>{_STYLE}</style>",
            "</head>",
            "<body>",
            *body,
            "</body>",
            "</html>",
            "",
        ]
    )


_LATEX_SPECIAL = {c: "\\" + c for c in "&%$#_{}"} | {
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "\\": r"\textbackslash{}",
    "±": r"$\pm$",
    "−": "-",
    "≤": r"$\leq$",
    "|": r"$|$",
}


def latex_escape(text: str) -> str:
    """Text safe inside a LaTeX table cell (the characters LaTeX treats specially)."""
    return "".join(_LATEX_SPECIAL.get(c, c) for c in str(text).replace("`", ""))


def render_latex_table(table: Table, caption: str, label: str) -> str:
    """A ``booktabs`` table environment, first column left-aligned, the rest right-aligned."""
    columns = "l" + "r" * (len(table.header) - 1)
    lines = [
        r"% Generated by ctrain report; needs \usepackage{booktabs}.",
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{latex_escape(caption)}}}",
        rf"\label{{{label}}}",
        rf"\begin{{tabular}}{{{columns}}}",
        r"\toprule",
        " & ".join(latex_escape(c) for c in table.header) + r" \\",
        r"\midrule",
        *(" & ".join(latex_escape(c) for c in row) + r" \\" for row in table.rows),
        r"\bottomrule",
        r"\end{tabular}",
        r"\end{table}",
        "",
    ]
    return "\n".join(lines)
