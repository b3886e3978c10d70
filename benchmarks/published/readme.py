"""The README's block of validation figures, written by the script like the page.

The README quotes how far the predictions are from the published figures. Copied by hand,
those numbers drifted from the page whenever the model changed; here they are the page's own
tables, and ``validate_published.py --readme README.md`` rewrites the block between its two
markers (``tests/test_published.py`` fails when the block differs from what this writes).
"""
from __future__ import annotations

from .scorecard import all_ratios, groups_table, targets_table
from .switches import switch_table
from .targets import DOCUMENTED_BAND, SWITCH_BAND

BEGIN = ("<!-- validation figures: written by benchmarks/validate_published.py --readme "
         "README.md; edit the script, not this block -->")
END = "<!-- end of validation figures -->"


class MarkersError(ValueError):
    """The file lacks the block's markers, or holds them out of order."""


def readme_block(fmt: str = "github") -> str:
    """The markers and, between them, the overall range, the documented band, the targets,
    the ratios by group and the predicted speedups against the published ones."""
    ratios = [r for _, r in all_ratios()]
    lo, hi = min(ratios), max(ratios)
    band_lo, band_hi = DOCUMENTED_BAND
    return "\n\n".join([
        BEGIN,
        f"Against every published figure in `docs/validation.md` the predictions lie within "
        f"{lo:.2f}–{hi:.2f}× (predicted/published, above 1 optimistic; tests hold them inside "
        f"{band_lo:.2f}–{band_hi:.2f}). The timing model's targets, and where it stands:",
        targets_table(fmt),
        "By group of published figures (the page lists every point, its source and its "
        "workload):",
        groups_table(fmt),
        "Predicted speedups of one kernel or input type over another, bar by bar wherever a "
        "published chart, or one benchmark run, shows both sides (pred/pub above 1: the model overstates the "
        f"switch's gain; tests hold them inside {SWITCH_BAND[0]:.2f}–{SWITCH_BAND[1]:.2f}; the "
        "page lists the bars where the model turns a switch around):",
        switch_table(fmt, compact=True),
        END])


def with_block(text: str, block: str) -> str:
    """``text`` with the part from BEGIN to END (both included) replaced by ``block``."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise MarkersError(f"the README block's markers are missing or out of order: a line "
                           f"'{BEGIN}' and, below it, a line '{END}'")
    return text[:start] + block + text[end + len(END):]
