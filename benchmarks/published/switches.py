"""Predicted speedups against published ones: one kernel, or one input type, over another on
the same workload, bar by bar, wherever a published chart (or one run of a benchmark) shows
both.

A user deciding between FlashAttention-2 and -3, or fp16 and fp8, acts on the ratio of two
predictions: an error both share cancels in it, an error of one alone does not, so a model
can place each bar within its band and still turn a speedup around. These rows are derived
from the points the page compares (chart bars, and the benchmark_attn.py logs that timed both
kernels on one board), not points of their own, and are held to their own
band (``targets.SWITCH_BAND``) by tests/test_published.py; the report quotes its GPU's rows
beside the points' (``reports/validation_summary.json``, key ``switches``).
"""
from __future__ import annotations

import functools
import statistics
from dataclasses import dataclass

from tabulate import tabulate

from reports.validation import ratio_range

from .charts import CHART_DTYPE, backward_chart_points, chart_points, fa2_chart_points
from .figures import BENCHMARK_ATTN_LOGS, benchmark_attn_workload
from .predictions import predicted_seconds
from .targets import TARGET_BAND, in_band

FA3_FORWARD = "FA3-fig"       # the FlashAttention-3 paper's forward charts
FA3_BACKWARD = "FA3-bwd-fig"  # its backward charts
FA2_FWD_BWD = "FA2-fig"       # the FlashAttention-2 paper's forward + backward charts
NAMES = {"standard": "PyTorch eager", "flash1": "FlashAttention (v1)",
         "flash2": "FlashAttention-2", "flash3": "FlashAttention-3"}


@dataclass(frozen=True)
class Bar:
    """One chart workload where both sides were measured: the published and the predicted
    speedup (the ratio of the two throughputs)."""
    d: int
    causal: bool
    n: int
    published: float
    predicted: float
    board: str = ""     # the log whose board measured both sides, where there are several

    @property
    def name(self) -> str:
        return (f"d = {self.d}, {'causal' if self.causal else 'non-causal'}, N = {self.n}"
                + (f" ({self.board})" if self.board else ""))

    @property
    def ratio(self) -> float:
        return self.predicted / self.published


@dataclass(frozen=True)
class Switch:
    """One switch (``faster`` over ``baseline``) and its bars."""
    faster: str
    baseline: str
    gpu: str
    passes: str
    inputs: str
    sources: tuple[str, ...]
    bars: tuple[Bar, ...]
    qualifier: str = ""  # what tells it from another switch of the same kernels

    @property
    def ratios(self) -> list[float]:
        return [bar.ratio for bar in self.bars]


def fa3_forward_switch(faster: str, baseline: str, dtypes: tuple[str, str]) -> Switch:
    """``faster`` over ``baseline`` on the FlashAttention-3 paper's forward charts, the first
    in ``dtypes[0]``, the second in ``dtypes[1]``, at the same head dimension, mask and N."""
    bars = {(d, causal, n, a, CHART_DTYPE[chart]): (pub, pred)
            for chart, d, causal, n, a, pub, pred in chart_points()}
    pairs = []
    for (d, causal, n, a, dtype), (pub, pred) in bars.items():
        other = bars.get((d, causal, n, baseline, dtypes[1]))
        if a == faster and dtype == dtypes[0] and other:
            pairs.append(Bar(d, causal, n, pub / other[0], pred / other[1]))
    inputs = dtypes[0] if dtypes[0] == dtypes[1] else f"{dtypes[0]} over {dtypes[1]}"
    return Switch(faster, baseline, "h100-sxm", "fwd", inputs, (FA3_FORWARD,), tuple(pairs))


def fa3_backward_switch() -> Switch:
    """FlashAttention-3 over -2 on the FlashAttention-3 paper's backward charts."""
    bars = {(d, n, a): (pub, pred) for d, n, a, pub, pred in backward_chart_points()}
    pairs = [Bar(d, False, n, pub / bars[d, n, "flash2"][0], pred / bars[d, n, "flash2"][1])
             for (d, n, a), (pub, pred) in bars.items() if a == "flash3"]
    return Switch("flash3", "flash2", "h100-sxm", "bwd", "fp16", (FA3_BACKWARD,),
                  tuple(pairs))


def fa2_paper_switch(gpu: str, faster: str, baseline: str) -> Switch:
    """``faster`` over ``baseline`` on the FlashAttention-2 paper's forward + backward chart
    of ``gpu``."""
    bars = {(d, causal, n, a): (pub, pred)
            for g, d, causal, n, a, pub, pred in fa2_chart_points() if g == gpu}
    pairs = [Bar(d, causal, n, pub / bars[d, causal, n, baseline][0],
                 pred / bars[d, causal, n, baseline][1])
             for (d, causal, n, a), (pub, pred) in bars.items()
             if a == faster and (d, causal, n, baseline) in bars]
    return Switch(faster, baseline, gpu, "fwd+bwd", "fp16", (FA2_FWD_BWD,), tuple(pairs))


def benchmark_attn_switch() -> Switch:
    """FlashAttention-3 over -2, forward, as two boards measured both in one run of
    flash-attention's hopper/benchmark_attn.py (``figures.BENCHMARK_ATTN_LOGS``): measured
    pairs, not chart readings."""
    pairs = []
    for log, times in BENCHMARK_ATTN_LOGS.items():
        for causal in (False, True):
            wl = benchmark_attn_workload("fwd", causal)
            predicted = predicted_seconds("flash2", wl, "h100-sxm") \
                / predicted_seconds("flash3", wl, "h100-sxm")
            published = times["flash2", "fwd", causal] / times["flash3", "fwd", causal]
            pairs.append(Bar(wl.head_dim, causal, wl.seq_q, published, predicted, board=log))
    return Switch("flash3", "flash2", "h100-sxm", "fwd", "bf16",
                  tuple(BENCHMARK_ATTN_LOGS), tuple(pairs), qualifier="measured runs")


@functools.lru_cache(maxsize=None)
def switches() -> tuple[Switch, ...]:
    """Every switch a published chart, or one benchmark run, shows both sides of."""
    return (fa3_forward_switch("flash3", "flash2", ("fp16", "fp16")),
            benchmark_attn_switch(),
            fa3_backward_switch(),
            fa3_forward_switch("flash3", "flash3", ("fp8", "fp16")),
            fa3_forward_switch("flash2", "standard", ("fp16", "fp16")),
            fa2_paper_switch("a100-80gb", "flash2", "flash1"),
            fa2_paper_switch("h100-sxm", "flash2", "flash1"),
            fa2_paper_switch("a100-80gb", "flash2", "standard"),
            fa2_paper_switch("h100-sxm", "flash2", "standard"))


def switch_label(s: Switch) -> str:
    label = (f"{NAMES[s.faster]}, {s.inputs}" if s.faster == s.baseline
             else f"{NAMES[s.faster]} over {NAMES[s.baseline]}")
    return f"{label}, {s.qualifier}" if s.qualifier else label


def switch_record(s: Switch) -> dict:
    """One switch as the summary file and the report carry it, its bars included (``run``
    quotes the one nearest its workload)."""
    r = s.ratios
    worst = max(s.bars, key=lambda bar: abs(bar.ratio - 1.0))
    return {"gpu": s.gpu, "switch": switch_label(s), "passes": s.passes, "inputs": s.inputs,
            "algorithms": sorted({s.faster, s.baseline}),
            "dtypes": sorted(set(s.inputs.split(" over "))),
            "sources": list(s.sources), "bars": len(s.bars),
            "published": [round(min(b.published for b in s.bars), 2),
                          round(max(b.published for b in s.bars), 2)],
            "predicted": [round(min(b.predicted for b in s.bars), 2),
                          round(max(b.predicted for b in s.bars), 2)],
            "min": round(min(r), 2), "max": round(max(r), 2),
            "median": round(statistics.median(r), 2), "inside_band": sum(in_band(x) for x in r),
            "furthest": bar_record(worst),
            "per_bar": [bar_record(b) for b in s.bars]}


def bar_record(bar: Bar) -> dict:
    return {"bar": bar.name, "d": bar.d, "causal": bar.causal, "n": bar.n,
            "published": round(bar.published, 2), "predicted": round(bar.predicted, 2),
            **({"board": bar.board} if bar.board else {})}


def switch_records() -> list[dict]:
    return [switch_record(s) for s in switches()]


def switch_table(fmt: str, compact: bool = False) -> str:
    """One row a switch; ``compact`` (the README's) leaves out the inputs, the chart, the
    median and the furthest bar."""
    lo, hi = TARGET_BAND
    rows = []
    for rec in switch_records():
        far = rec["furthest"]
        ranges = ["{:.2f}–{:.2f}".format(*rec["published"]),
                  "{:.2f}–{:.2f}".format(*rec["predicted"]), ratio_range(rec)]
        inside = f"{rec['inside_band']} of {rec['bars']}"
        if compact:
            rows.append([rec["gpu"], rec["switch"], rec["passes"], rec["bars"], *ranges, inside])
        else:
            rows.append([rec["gpu"], rec["switch"], rec["passes"], rec["inputs"],
                         ", ".join(f"[{x}]" for x in rec["sources"]), rec["bars"], *ranges,
                         f"{rec['median']:.2f}",
                         inside, f"{far['bar']}: {far['published']:.2f} / "
                                 f"{far['predicted']:.2f}"])
    headers = (["GPU", "switch", "pass", "bars", "published speedup", "predicted speedup",
                "pred/pub", f"in {lo}–{hi}"] if compact else
               ["GPU", "switch", "pass", "inputs", "source", "bars", "published speedup",
                "predicted speedup", "pred/pub", "median", f"in {lo}–{hi}",
                "furthest bar: published / predicted"])
    return tabulate(rows, headers=headers, tablefmt=fmt)


def inverted_bars() -> list[tuple[Switch, Bar]]:
    """Bars where the model and the chart disagree on which side is faster (by more than
    5% either way): the predictions a user would act on in the wrong direction."""
    return [(s, bar) for s in switches() for bar in s.bars
            if (bar.published > 1.05 and bar.predicted < 0.95)
            or (bar.published < 0.95 and bar.predicted > 1.05)]


def switches_text() -> str:
    """The section's paragraph: what the rows are and where the model turns a switch
    around."""
    flipped = inverted_bars()
    by_switch: dict[str, list[Bar]] = {}
    for s, bar in flipped:
        by_switch.setdefault(f"{switch_label(s)} ({s.gpu}, {s.passes})", []).append(bar)
    listed = "; ".join(
        f"{label}: " + ", ".join(f"{b.name} ({b.published:.2f} published, {b.predicted:.2f} "
                                 "predicted)" for b in bars)
        for label, bars in by_switch.items())
    return ("The speedup of one kernel or input type over another on the same workload is "
            "the ratio of two predictions: an error both share cancels in it, an error of "
            "one alone does not. Wherever a chart shows both bars, or one benchmark run timed "
            "both kernels on one board, the table compares the model's speedup with the "
            "published one, bar by bar (pred/pub above 1: the model "
            "overstates the switch's gain). "
            + (f"{len(flipped)} {'bars turn' if len(flipped) > 1 else 'bar turns'} the switch "
               f"around (the chart's faster side is the model's slower one, by more than 5% "
               f"each way): {listed}. *Where the model is still off* says what the model "
               "lacks there (FlashAttention-3 in fp8 at short sequences; warpgroups that no "
               "barrier staggers, run in step by the model). `attnsim run` quotes, beside "
               "its prediction, the bar of each switch nearest its workload." if flipped else
               "No bar turns a switch around (by more than 5% each way)."))
