"""Human-readable numbers (decimal SI units, as datasheets use)."""
from __future__ import annotations

import math


def si(value: float, unit: str, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if value == 0:
        return f"0 {unit}"
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.{digits}g} {prefix}{unit}"
    return f"{value:.{digits}g} {unit}"


def nbytes(value) -> str:
    return si(value, "B")


def binary_bytes(value) -> str:
    """Bytes in the largest binary unit (B, KiB, MiB, GiB, TiB) that keeps the number at
    least 1, as the datasheets size caches and memories: 50 MiB, 80 GiB, 1 KiB."""
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    i = 0
    while i + 1 < len(units) and value >= 1024 ** (i + 1):
        i += 1
    return f"{value / 1024 ** i:.3g} {units[i]}"


def kib(value) -> str:
    return "—" if value is None else f"{value / 1024:.1f} KiB"


def flops(value) -> str:
    return si(value, "FLOP")


def seconds(value) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    if value >= 1:
        return f"{value:.3g} s"
    if value >= 1e-3:
        return f"{value * 1e3:.3g} ms"
    return f"{value * 1e6:.3g} µs"


def ratio(value, digits: int = 3) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.{digits}g}"


def sci(value) -> str:
    return "—" if value is None else f"{value:.1e}"


def clip(text: str, width: int = 60) -> str:
    """``text`` cut to ``width`` characters at a word boundary, with an ellipsis: a table
    cell with the start of a reason (the table's notes give it whole), never a cut word."""
    text = " ".join(str(text).split())
    if len(text) <= width:
        return text
    cut = text[:width].rsplit(" ", 1)[0] if " " in text[:width] else text[:width - 1]
    return cut.rstrip(" ,;:") + "…"
