"""A report as data (sections of tables) and its renderings: text, markdown, JSON, CSV."""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field

from tabulate import tabulate

FORMATS = ("text", "markdown", "json", "csv")


@dataclass
class Table:
    key: str                    # identifier in JSON/CSV
    title: str
    headers: list[str]
    rows: list[list]            # formatted cells (text/markdown)
    records: list[dict]         # raw values (JSON/CSV)
    notes: list[str] = field(default_factory=list)


@dataclass
class Section:
    heading: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)


@dataclass
class Document:
    title: str
    sections: list[Section]
    data: dict                  # the JSON rendering: structured results, not strings

    def render(self, fmt: str) -> str:
        if fmt == "text":
            return _render_tabular(self, "simple", heading=lambda h: f"{h}\n{'=' * len(h)}")
        if fmt == "markdown":
            return _render_tabular(self, "github", heading=lambda h: f"## {h}", md=True)
        if fmt == "json":
            return json.dumps(self.data, indent=2, allow_nan=False)
        if fmt == "csv":
            return _render_csv(self)
        raise ValueError(f"unknown format {fmt!r}; valid formats: {', '.join(FORMATS)}")


def _render_tabular(doc: Document, tablefmt: str, heading, md: bool = False) -> str:
    out = [f"# {doc.title}" if md else doc.title.upper(), ""]
    for sec in doc.sections:
        out += [heading(sec.heading), ""]
        for p in sec.paragraphs:
            out += [p, ""]
        for t in sec.tables:
            if t.title:
                out += [f"**{t.title}**" if md else t.title, ""]
            out.append(tabulate(t.rows, headers=t.headers, tablefmt=tablefmt,
                                disable_numparse=True))
            out.append("")
            for n in t.notes:
                out += [f"_{n}_" if md else f"  {n}", ""] if md else [f"  {n}"]
            if t.notes and not md:
                out.append("")
    return "\n".join(out).rstrip() + "\n"


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
                w.writerow(r)
            buf.write("\n")
    return buf.getvalue()
