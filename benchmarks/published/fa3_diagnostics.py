"""Diagnostics, not calibrations: what the prose quotes of FlashAttention-3.

Its speedup over FlashAttention-2 bar by bar, the ping-pong and fp8-kernel what-ifs, fp8
against fp16 at short sequences, the costs paid once per CTA at d = 64, and every chart bar
under the overlap switches (``FA3_SWITCHES``). None of them sets a constant of the model.
"""
from __future__ import annotations

import functools
import json
import pathlib

from tabulate import tabulate

from attnsim.simulate import simulate
from hwmodels.timing import TimingOptions, warp_instructions

import sass_schedule as sass_schedule_script   # benchmarks/sass_schedule.py, beside the package

from .charts import (CHART_DTYPE, FA3_CHARTS, chart_options, chart_points, chart_ratio_range,
                     chart_speedups)
from .figures import (FA3_1075_MS, FA3_1075_OPTIONS, FP8_BENCHMARK_OPTIONS, evaluated,
                      fa3_1075_workload)
from .predictions import (measured_tflops, model_gpu, paper_flops, paper_workload,
                          predicted_seconds, tflops)


def chart_speedup_text() -> str:
    """The abstract's 1.5-2.0x against the charts' own bars, and the model bar by bar."""
    s = chart_speedups()
    pub = [x[4] for x in s]
    lo_bar, hi_bar = min(s, key=lambda x: x[4]), max(s, key=lambda x: x[4])
    by_d = {d: [x[5] / x[4] for x in s if x[1] == d] for d in sorted({x[1] for x in s})}
    per_d = "; ".join(f"d = {d}: {min(r):.2f}–{max(r):.2f}" for d, r in by_d.items())

    def describe(bar):
        return f"d = {bar[1]}, {'causal' if bar[2] else 'non-causal'}, N = {bar[3]}"
    return (f"The abstract's FA-3 over FA-2 speedup of 1.5–2.0 summarizes charts whose own "
            f"bars give {min(pub):.2f}–{max(pub):.2f} ({describe(lo_bar)} to "
            f"{describe(hi_bar)}); bar by bar the model's speedup is "
            f"{min(x[5] / x[4] for x in s):.2f}–{max(x[5] / x[4] for x in s):.2f} of the "
            f"published ({per_d}).")


@functools.lru_cache(maxsize=None)
def fa3_pingpong_what_if(chart: str, min_seq: int = 0) -> str:
    """'a–b (as modelled) against c–d (flipped)': predicted/published of one FA-3 chart's
    bars from ``min_seq`` on, as the release's ping-pong rule has it and with the barrier
    switched (``flash3 --pingpong``: on where the release leaves it out, off elsewhere)."""
    key = next(k for k in FA3_CHARTS if k[0] == chart)
    _, d, causal, dtype = key
    modelled, flipped = [], []
    for n, (*_, published) in FA3_CHARTS[key].items():
        if n < min_seq or published is None:
            continue
        wl = paper_workload(n, d, causal, dtype)
        options = chart_options("flash3", dtype)
        run = simulate("flash3", wl, model_gpu("h100-sxm"), compute=False,
                       options=dict(options))
        modelled.append(paper_flops(wl) / run.time.predicted_s / 1e12 / published)
        flip = "off" if run.plan["pingpong"] else "on"
        flipped.append(tflops("flash3", wl, "h100-sxm", options=(*options, ("pingpong", flip)))
                       / published)
    return (f"{min(modelled):.2f}–{max(modelled):.2f} as modelled against "
            f"{min(flipped):.2f}–{max(flipped):.2f}")


def fa3_1075_ratio_text() -> str:
    """The FA3-1075 points' predicted/published ratios, by length."""
    ratios = [r[0] for c, _, r in evaluated() if c.source == "FA3-1075"]  # in FA3_1075_MS order
    return ", ".join(f"{r:.2f} at N {n}" for n, r in zip(FA3_1075_MS, ratios))


def fp8_length_dependence() -> dict[str, tuple[float, float]]:
    """FA-3 fp8 at d = 128: throughput at the shortest length over the longest, (published,
    predicted), for the paper's H100 SXM5 chart and for the pre-release kernel on the H100
    PCIe (FA3-1075): how much each loses at short sequences."""
    chart = FA3_CHARTS[("fp8 hd128", 128, False, "fp8")]
    short, long_ = min(chart), max(chart)
    sxm = (chart[short][2] / chart[long_][2],
           tflops("flash3", paper_workload(short, 128, dtype="fp8"), "h100-sxm",
                  options=FP8_BENCHMARK_OPTIONS)
           / tflops("flash3", paper_workload(long_, 128, dtype="fp8"), "h100-sxm",
                    options=FP8_BENCHMARK_OPTIONS))
    lo, hi = min(FA3_1075_MS), max(FA3_1075_MS)

    def pcie(n):
        return tflops("flash3", fa3_1075_workload(n), "h100-pcie", options=FA3_1075_OPTIONS)

    def measured(n):
        return measured_tflops(fa3_1075_workload(n), FA3_1075_MS[n][1])

    return {"sxm": sxm, "pcie": (measured(lo) / measured(hi), pcie(lo) / pcie(hi))}


@functools.lru_cache(maxsize=None)
def fa3_short_fp8_vs_fp16(n: int = 512, d: int = 256) -> dict[str, tuple[float, float]]:
    """FA-3's non-causal forward at (n, d) in fp16 and fp8: (published µs, predicted µs)."""
    out = {}
    for dtype, chart in (("fp16", ("hd256", 256, False, "fp16")),
                         ("fp8", ("fp8 hd256", 256, False, "fp8"))):
        wl = paper_workload(n, d, dtype=dtype)
        published = paper_flops(wl) / (FA3_CHARTS[chart][n][2] * 1e12)
        predicted = predicted_seconds("flash3", wl, "h100-sxm",
                                      options=chart_options("flash3", dtype))
        out[dtype] = (published * 1e6, predicted * 1e6)
    return out


def fp8_over_fp16_published(n: int = 512) -> dict[int, float]:
    """FA-3's published non-causal forward throughput in fp8 over fp16 at length n, per head
    dimension (the charts that show both)."""
    fp16 = {d: v[n][2] for (_, d, causal, dtype), v in FA3_CHARTS.items()
            if dtype == "fp16" and not causal}
    return {d: v[n][2] / fp16[d] for (_, d, causal, dtype), v in sorted(FA3_CHARTS.items(),
                                                                      key=lambda kv: kv[0][1])
            if dtype == "fp8" and not causal and d in fp16}


def fp8_over_fp16_model(n: int = 512) -> dict[int, float]:
    """The model's non-causal FA-3 forward throughput in fp8 over fp16 at length n, per head
    dimension of ``fp8_over_fp16_published``."""
    out = {}
    for d in fp8_over_fp16_published(n):
        times = {dtype: predicted_seconds("flash3", paper_workload(n, d, dtype=dtype),
                                          "h100-sxm", options=chart_options("flash3", dtype))
                 for dtype in ("fp16", "fp8")}
        out[d] = times["fp16"] / times["fp8"]
    return out


@functools.lru_cache(maxsize=None)
def fp8_excess_per_cta(seqs: tuple = (512, 1024)) -> dict[int, tuple[float, ...]]:
    """Published minus predicted time of FA-3's non-causal fp8 forward, per CTA of the
    simulated grid, in ns, per head dimension at each of ``seqs``: how a cost that the model
    lacks scales (per CTA, per tile or per byte). The plans hold one CTA per SM."""
    out = {}
    for (_, d, causal, dtype), bars in sorted(FA3_CHARTS.items(), key=lambda kv: kv[0][1]):
        if dtype != "fp8" or causal:
            continue
        excess = []
        for n in seqs:
            wl = paper_workload(n, d, dtype="fp8")
            run = simulate("flash3", wl, "h100-sxm", compute=False,
                           options=dict(FP8_BENCHMARK_OPTIONS))
            published = paper_flops(wl) / (bars[n][2] * 1e12)
            assert run.time.kernels[0].ctas_per_sm == 1, "the text below assumes it"
            excess.append((published - run.time.predicted_s) / run.kernels[0].ctas * 1e9)
        out[d] = tuple(excess)
    return out


def fp8_kernel_what_if(min_seq: int) -> tuple[str, str]:
    """('a–b', 'c–d'): predicted/published of the fp8 chart bars from ``min_seq`` on, priced
    as the pull request's program (``--fp8-kernel pretransposed``) and as modelled."""
    bars = [(d, causal, n, pub, pred) for chart, d, causal, n, a, pub, pred in chart_points()
            if a == "flash3" and CHART_DTYPE[chart] == "fp8" and n >= min_seq]
    options = (*chart_options("flash3", "fp8"), ("fp8_kernel", "pretransposed"))
    what_if = [tflops("flash3", paper_workload(n, d, causal, "fp8"), "h100-sxm",
                      options=options) / pub for d, causal, n, pub, _ in bars]
    modelled = [pred / pub for *_, pub, pred in bars]
    return (f"{min(what_if):.2f}–{max(what_if):.2f}",
            f"{min(modelled):.2f}–{max(modelled):.2f}")


def fp8_chart_ranges_text() -> str:
    """'d = 64: a–b; d = 128: ...' over the fp8 chart bars, predicted/published."""
    dims = sorted({d for (_, d, _, dtype) in FA3_CHARTS if dtype == "fp8"})
    return "; ".join("d = {}: {:.2f}–{:.2f}".format(d, *chart_ratio_range("flash3", d, "fp8"))
                     for d in dims)


@functools.lru_cache(maxsize=None)
def fa3_d64_fixed_shares() -> tuple[tuple[int, float, float, float], ...]:
    """(N, predicted/published, the per-CTA fixed costs' share of the predicted time, the
    epilogue's share) for the FA-3 d = 64 chart bars: how much of the prediction the costs
    paid once per CTA are, length by length."""
    out = []
    for n, published in FA3_CHARTS[("hd64", 64, False, "fp16")].items():
        wl = paper_workload(n, 64)
        t = simulate("flash3", wl, model_gpu("h100-sxm"), compute=False).time
        (k,) = t.kernels                           # the forward is one kernel
        out.append((n, tflops("flash3", wl, "h100-sxm") / published[2],
                    k.fixed_s / t.predicted_s, k.epilogue_s / t.predicted_s))
    return tuple(out)


def fa3_d64_unoverlapped() -> tuple[float, ...]:
    """Predicted/published for the FA-3 d = 64 chart bars with no chain hiding another
    (``TimingOptions(overlap=False)``: every tile's GEMMs and softmax in sequence)."""
    return tuple(tflops("flash3", paper_workload(n, 64), "h100-sxm", TimingOptions(overlap=False))
                 / published[2] for n, published in FA3_CHARTS[("hd64", 64, False, "fp16")].items())


# What the FA-3 bars say of the overlap the model gives FlashAttention-3: its default, no chain
# hiding another, and that with the pipes alone at the datasheet rates (switches of
# ``TimingOptions``).
PIPES_ALONE = "--no-overlap --no-achievable-rates --no-step-latency"
FA3_SWITCHES = (("model", TimingOptions()),
                ("--no-overlap", TimingOptions(overlap=False)),
                (PIPES_ALONE,
                 TimingOptions(overlap=False, achievable_rates=False, step_latency=False)))
FA3_SHORT = 2048        # N below this: short sequences, where fixed costs weigh


@functools.lru_cache(maxsize=None)
def fa3_switch_ratios() -> dict:
    """{(chart, d, causal, dtype): {switch: (ratios at N < FA3_SHORT, ratios at N >=
    FA3_SHORT)}}: predicted/published for every FlashAttention-3 chart bar under each of
    ``FA3_SWITCHES``. A diagnostic of the overlap mechanism, not a calibration."""
    out = {}
    for (chart, d, causal, dtype), values in FA3_CHARTS.items():
        by_switch = {}
        for label, timing in FA3_SWITCHES:
            short, long_ = [], []
            for n, published in values.items():
                wl = paper_workload(n, d, causal, dtype)
                r = tflops("flash3", wl, "h100-sxm", timing,
                           chart_options("flash3", dtype)) / published[2]
                (short if n < FA3_SHORT else long_).append(r)
            by_switch[label] = (tuple(short), tuple(long_))
        out[(chart, d, causal, dtype)] = by_switch
    return out


def fa3_switch_range(label: str, long_only: bool = True, dtype: str | None = None) -> tuple:
    """(min, max) of ``fa3_switch_ratios`` under one switch, over the long-sequence bars (or
    every bar), of one dtype or both."""
    ratios = [r for (_, _, _, dt), by in fa3_switch_ratios().items() if dtype in (None, dt)
              for r in (by[label][1] if long_only else by[label][0] + by[label][1])]
    return min(ratios), max(ratios)


def fa3_switch_table(fmt: str) -> str:
    def cell(ratios):
        return f"{min(ratios):.2f}–{max(ratios):.2f}" if ratios else "—"
    rows = [[chart, d, "causal" if causal else "non-causal", dtype]
            + [cell(by[label][i]) for label, _ in FA3_SWITCHES for i in (0, 1)]
            for (chart, d, causal, dtype), by in fa3_switch_ratios().items()]
    headers = ["chart", "d", "read as", "dtype"] + [
        f"{label}, N {'< ' if i == 0 else '≥ '}{FA3_SHORT}" for label, _ in FA3_SWITCHES
        for i in (0, 1)]
    return tabulate(rows, headers=headers, tablefmt=fmt)


# ---- what the release's compiled forward overlaps ([FA3-sass]) -------------------------------

SASS_SCHEDULE = pathlib.Path(__file__).resolve().parents[2] / "reports" / "fa3_sass_schedule.json"


@functools.lru_cache(maxsize=None)
def sass_schedule() -> dict:
    """benchmarks/sass_schedule.py's reading of the release's SASS (its JSON, committed)."""
    return json.loads(SASS_SCHEDULE.read_text())


def sass_schedule_table(fmt: str) -> str:
    return sass_schedule_script.table(sass_schedule()["kernels"], fmt)


def sass_backward_table(fmt: str) -> str:
    return sass_schedule_script.backward_table(sass_schedule()["backward_kernels"], fmt)


def sass_backward_exps_text() -> str:
    """'19 of 64 exponentials at d = 64, ...': the backward's exps beside its dP GEMM."""
    return ", ".join(f"{k['beside_dp_gemm']['xu']} of "
                     f"{k['beside_dp_gemm']['xu'] + k['elsewhere']['xu']} exponentials at "
                     f"d = {k['head_dim']}" for k in sass_schedule()["backward_kernels"])


def fa3_fp16_ranges(options: tuple = ()) -> dict[int, tuple[float, float]]:
    """Head dim -> (min, max) predicted/published over the fp16 FA-3 chart bars, priced with
    flash3 ``options`` (the release's pipelining by default)."""
    out = {}
    for (chart, d, causal, dtype), values in FA3_CHARTS.items():
        if dtype != "fp16":
            continue
        for n, published in values.items():
            r = tflops("flash3", paper_workload(n, d, causal), "h100-sxm",
                       options=options) / published[2]
            lo, hi = out.get(d, (r, r))
            out[d] = (min(lo, r), max(hi, r))
    return dict(sorted(out.items()))


@functools.lru_cache(maxsize=None)
def fa3_issue_against_sass(n: int = 8192) -> dict[int, tuple[float, int]]:
    """Head dim -> (warp-instructions a consumer warp issues per K/V tile as the model counts
    them for its issue term, the compiled release's steady-state loop): the non-causal paper
    workload at ``n``."""
    out = {}
    loops = {k["head_dim"]: k["loop_instructions"] for k in sass_schedule()["kernels"]
             if not k["causal"]}
    gpu = model_gpu("h100-sxm")
    for d, loop in sorted(loops.items()):
        r = simulate("flash3", paper_workload(n, d), gpu, compute=False)
        (k,) = r.kernels
        warps = 4 * r.plan["consumer_warpgroups"]
        tiles = k.ctas * -(-n // r.plan["block_k"])
        out[d] = (warp_instructions(k) / (warps * tiles), loop)
    return out


def fa3_pipe_loads_per_tile(d: int = 64) -> dict[str, float]:
    """Per CTA and K/V tile of the release's non-causal forward at head dim ``d``, each
    busy pipe's clocks over the tensor cores' at their dense peak: the SM's four schedulers
    issuing the compiled loop's instructions for every consumer warp, and the MUFU running
    its exps (the SASS's MUFU count a thread), at 16 a clock an SM (the CUDA guide's rate)."""
    (k,) = [k for k in sass_schedule()["kernels"] if k["head_dim"] == d and not k["causal"]]
    gpu = model_gpu("h100-sxm")
    warps = 4 * k["block_q"] // 64
    tensor_per_clock = gpu.tensor_flops_per_s("fp16") / (gpu.sm_count * gpu.clock_hz)
    tensor = 4 * k["block_q"] * k["block_k"] * d / tensor_per_clock
    exps = (k["before_full_wait"]["xu"] + k["after_full_wait"]["xu"]) * warps * 32
    return {"issue": k["loop_instructions"] * warps / gpu.issue_per_clock_per_sm / tensor,
            "mufu": exps / gpu.sfu_ops_per_clock_per_sm / tensor}
