"""reports/validation_summary.json: the page's points by GPU, algorithm and input type.

``attnsim report`` quotes its GPU's rows under "How far to trust the predicted times"
(reports/validation.py reads the file).
"""
from __future__ import annotations

import json
import statistics

from reports.validation import SUMMARY_LABELS, input_kind

from .charts import FA3_CHARTS, backward_chart_points, chart_points, fa2_chart_points
from .figures import BENCHMARK_ATTN_LOGS, board_time_ratios, evaluated
from .switches import switch_records
from .targets import TARGET_BAND, in_band


def summary() -> dict:
    """Every time-like point of the page (speedups and gains left out) by GPU, algorithm and
    input type: how far the predictions of each are from what was measured. The report quotes
    it for its GPU (``reports/validation_summary.json``, written by ``--summary``), with the
    predicted speedups of one kernel or input type over another (``switches``)."""
    by_key: dict[tuple[str, str, str], list[float]] = {}

    def add(gpu, algorithm, dtype, ratios):
        by_key.setdefault((gpu, algorithm, input_kind(dtype)), []).extend(ratios)

    def label(algorithm):       # e.g. the papers' standard attention is the eager program
        return SUMMARY_LABELS.get(algorithm, algorithm)

    for c, _, ratios in evaluated():
        if c.algorithm:
            add(c.gpu, label(c.algorithm), c.dtype, ratios)
    chart_dtype = {chart: dtype for chart, _, _, dtype in FA3_CHARTS}
    for chart, d, causal, n, algorithm, pub, pred in chart_points():
        add("h100-sxm", label(algorithm), chart_dtype[chart], [pred / pub])
    for _, _, algorithm, pub, pred in backward_chart_points():
        add("h100-sxm", label(algorithm), "fp16", [pred / pub])
    for gpu, _, _, _, algorithm, pub, pred in fa2_chart_points():
        add(gpu, label(algorithm), "fp16", [pred / pub])
    rows = [{"gpu": gpu, "algorithm": algorithm, "dtype": kind, "points": len(r),
             "min": round(min(r), 2), "max": round(max(r), 2),
             "median": round(statistics.median(r), 2), "inside_band": sum(in_band(x) for x in r)}
            for (gpu, algorithm, kind), r in sorted(by_key.items())]
    return {"page": "docs/validation.md", "script": "benchmarks/validate_published.py",
            "ratio": "predicted / published throughput (above 1: the model is optimistic)",
            "band": list(TARGET_BAND), "rows": rows, "switches": switch_records(),
            "board_spread": board_spread()}


def board_spread() -> dict:
    """How much the same benchmark's times differ between two boards of one GPU model (the
    benchmark_attn.py logs, kernel by kernel): a spread no single set of constants removes."""
    ratios = list(board_time_ratios().values())
    return {"gpu": "h100-sxm", "benchmark": "flash-attention hopper/benchmark_attn.py",
            "logs": list(BENCHMARK_ATTN_LOGS), "kernels": len(ratios),
            "min": round(min(ratios), 2), "max": round(max(ratios), 2)}


def summary_json() -> str:
    return json.dumps(summary(), indent=1, ensure_ascii=False) + "\n"
