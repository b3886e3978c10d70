"""A report as data (sections of tables and figures) and its renderings: text, markdown,
HTML, JSON, CSV; ``write_document`` writes a markdown/HTML document with its figures."""
from __future__ import annotations

import csv
import html
import io
import json
import os
from dataclasses import dataclass, field
from typing import Callable

from tabulate import tabulate

from attnsim.serialize import jsonable

FORMATS = ("text", "markdown", "json", "csv")
PLOT_HINT = ("Figures need matplotlib: pip install -e '.[plot]' (or pip install matplotlib), "
             "then write the report with --output DIR/report.md or .html.")


@dataclass
class Table:
    key: str                    # identifier in JSON/CSV
    title: str
    headers: list[str]
    rows: list[list]            # formatted cells (text/markdown)
    records: list[dict]         # raw values (JSON/CSV)
    notes: list[str] = field(default_factory=list)


@dataclass
class Figure:
    """A figure a section carries: ``draw()`` returns a matplotlib Figure (imported lazily by
    the drawing function, so building a Document never needs matplotlib). It is shown under
    the table whose key is ``after`` (or at the end of its section)."""
    name: str                   # file stem: unique in the document, [a-z0-9_-]
    caption: str
    draw: Callable[[], object]
    after: str | None = None


@dataclass
class Section:
    heading: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)


@dataclass
class Document:
    title: str
    sections: list[Section]
    # the JSON rendering (structured results, not strings), or a function that builds it
    # when it is first asked for (the text renderings never need it)
    data: dict | Callable[[], dict]

    def json_data(self) -> dict:
        if callable(self.data):
            self.data = self.data()
        return self.data

    def render(self, fmt: str, figure_paths: dict | None = None) -> str:
        """``figure_paths`` maps figure names to the (relative) paths written by
        ``write_document``; without it figures are left out of text and markdown."""
        if fmt == "text":
            return _render_tabular(self, "simple", heading=lambda h: f"{h}\n{'=' * len(h)}")
        if fmt == "markdown":
            return _render_tabular(self, "github", heading=lambda h: f"## {h}", md=True,
                                   figure_paths=figure_paths)
        if fmt == "html":
            return _render_html(self, figure_paths or {})
        if fmt == "json":
            return json.dumps(self.json_data(), indent=2, allow_nan=False)
        if fmt == "csv":
            return _render_csv(self)
        raise ValueError(f"unknown format {fmt!r}; valid formats: {', '.join(FORMATS)}")

    def figures(self) -> list[Figure]:
        return [f for sec in self.sections for f in sec.figures]


def left_out_section(heading: str, reason: str) -> Section:
    """A side section this workload or GPU rules out: its heading and why, so that the rest
    of the report stands and the reader sees what is missing."""
    return Section(heading, [f"Left out of this report: {reason}"])


def _placed(sec: Section):
    """(table or None, figures shown after it): figures under the table they illustrate,
    the rest (and those naming a table the section lacks) at the end of the section."""
    keys = {t.key for t in sec.tables}
    out = [(t, [f for f in sec.figures if f.after == t.key]) for t in sec.tables]
    rest = [f for f in sec.figures if f.after not in keys]
    if rest:
        out.append((None, rest))
    return out


def _render_tabular(doc: Document, tablefmt: str, heading, md: bool = False,
                    figure_paths: dict | None = None) -> str:
    out = [f"# {doc.title}" if md else doc.title.upper(), ""]
    for sec in doc.sections:
        out += [heading(sec.heading), ""]
        for p in sec.paragraphs:
            out += [p, ""]
        for t, figs in _placed(sec):
            if t is not None:
                out += _table_lines(t, tablefmt, md)
            for f in figs:
                if figure_paths and f.name in figure_paths:
                    out += [f"![{f.caption}]({figure_paths[f.name]})", "",
                            f"_Figure: {f.caption}_", ""]
    return "\n".join(out).rstrip() + "\n"


def _table_lines(t: Table, tablefmt: str, md: bool) -> list[str]:
    out = []
    if t.title:
        out += [f"**{t.title}**" if md else t.title, ""]
    rows, headers = t.rows, t.headers
    if md:
        rows = [[_md_cell(c) for c in row] for row in rows]
        headers = [_md_cell(h) for h in headers]
    out.append(tabulate(rows, headers=headers, tablefmt=tablefmt, disable_numparse=True))
    out.append("")
    for n in t.notes:
        out += [f"_{n}_", ""] if md else [f"  {n}"]
    if t.notes and not md:
        out.append("")
    return out


def _md_cell(cell) -> str:
    """A markdown table cell: a '|' in it (a GPU file's name, say) would end the cell."""
    return str(cell).replace("|", "\\|")


_CSS = ("body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;"
        "color:#222}table{border-collapse:collapse;font-size:13px;margin:.5em 0}"
        "th,td{border:1px solid #ccc;padding:2px 6px;text-align:left}th{background:#f3f3f3}"
        ".note{font-size:13px;color:#555;font-style:italic}figure{margin:1em 0}"
        "figure img{max-width:100%}figcaption{font-size:13px;color:#444}"
        ".wide{overflow-x:auto}")


def _render_html(doc: Document, figure_paths: dict) -> str:
    e = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{e(doc.title)}</title><style>{_CSS}</style></head><body>",
           f"<h1>{e(doc.title)}</h1>"]
    for sec in doc.sections:
        out.append(f"<h2>{e(sec.heading)}</h2>")
        out += [f"<p>{e(p)}</p>" for p in sec.paragraphs]
        for t, figs in _placed(sec):
            if t is not None:
                if t.title:
                    out.append(f"<p><b>{e(t.title)}</b></p>")
                out.append('<div class="wide">' + tabulate(
                    [[e(str(c)) for c in row] for row in t.rows],
                    headers=[e(h) for h in t.headers], tablefmt="unsafehtml",
                    disable_numparse=True) + "</div>")
                out += [f'<p class="note">{e(n)}</p>' for n in t.notes]
            for f in figs:
                if f.name in figure_paths:
                    out.append(f'<figure><img src="{e(figure_paths[f.name])}" '
                               f'alt="{e(f.caption)}"><figcaption>{e(f.caption)}</figcaption>'
                               "</figure>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _render_csv(doc: Document) -> str:
    buf = io.StringIO()
    for sec in doc.sections:
        for t in sec.tables:
            if not t.records:
                continue
            buf.write(f"# {t.key}: {t.title or sec.heading}\n")
            fields = list(dict.fromkeys(k for r in t.records for k in r))
            w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
            w.writeheader()
            for r in t.records:
                w.writerow({k: _csv_cell(v) for k, v in r.items()})
            buf.write("\n")
    return buf.getvalue()


def _csv_cell(value):
    """Nested values (dicts, lists) and booleans as JSON, which a CSV reader can parse back,
    not as Python's repr (single quotes, True, None); None as an empty cell."""
    if isinstance(value, (dict, list, tuple, bool)):
        return json.dumps(jsonable(value), allow_nan=False)
    return value


def matplotlib_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def figures_folder(path: str) -> str:
    """The folder ``write_document`` puts a document's figures in: beside it, named after it
    (``out/report.md`` -> ``out/report``)."""
    return os.path.splitext(os.path.abspath(path))[0]


def write_document(doc: Document, path: str, svg: bool = False, dpi: int = 110) -> list[str]:
    """Write ``doc`` as markdown (``.md``) or HTML (``.html``) to ``path`` with its figures
    as PNG (and SVG when asked) in a folder beside it named after the file
    (``out/report.md`` -> ``out/report/roofline.png``), referenced by relative paths.
    Without matplotlib the document is written without figures and says how to get them.
    Returns the paths written."""
    fmt = {".md": "markdown", ".markdown": "markdown", ".html": "html", ".htm": "html"}[
        os.path.splitext(path)[1].lower()]
    folder = figures_folder(path)
    base, stem = os.path.split(folder)
    written, figure_paths = [], {}
    figures = doc.figures()
    if figures and matplotlib_available():
        os.makedirs(folder, exist_ok=True)
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        for f in figures:
            fig = f.draw()
            if fig is None:         # nothing to draw on this workload
                continue
            for ext in ("png", "svg") if svg else ("png",):
                rel = f"{stem}/{f.name}.{ext}"
                fig.savefig(os.path.join(base, rel), dpi=dpi,
                            **({"metadata": {"Date": None}} if ext == "svg" else {}))
                written.append(os.path.join(base, rel))
            figure_paths[f.name] = f"{stem}/{f.name}.png"
            plt.close(fig)
    elif figures:
        doc = Document(doc.title, [Section("Figures", [PLOT_HINT])] + doc.sections, doc.data)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(doc.render(fmt, figure_paths))
    return [path] + written
