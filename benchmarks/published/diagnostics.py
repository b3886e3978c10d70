"""Diagnostics, not calibrations: what the prose quotes of FlashAttention (v1) and -2, of
standard attention's eager program and of the achievable GEMM rate.

What-ifs (a mechanism off, another grid, another GEMM rate), ranges and the kernels' plans
behind the page's explanations of where the model is off. FlashAttention-3's are in
``fa3_diagnostics``. None of them sets a constant of the model.
"""
from __future__ import annotations

import functools
import statistics

from attnsim.simulate import simulate
from hwmodels import get_gpu
from hwmodels.timing import TimingOptions

from .charts import (CHART_OPTIONS, FA2_FWD_BWD_CHARTS, FA3_BWD_CHARTS, FA3_CHARTS,
                     backward_chart_points)
from .figures import (BENCHMARK_ATTN_LOGS, FA1_BWD_PUBLISHED, FA1_FWD_PUBLISHED,
                      benchmark_attn_ratios, fa1_a100_range, tb2296_on)
from .predictions import (PUBLISHED_PROGRAM, SEQS, model_gpu, paper_flops, paper_workload,
                          peak_tflops, predicted_seconds, sweep, tflops)


@functools.lru_cache(maxsize=None)
def flash1_tiles(gpu: str, d: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """FlashAttention (v1)'s planned (B_r, B_c) at head dim d: forward, backward."""
    plan = simulate("flash1", paper_workload(512, d, passes="fwd+bwd"), model_gpu(gpu),
                    compute=False).plan
    return (plan["block_q"], plan["block_k"]), (plan["bwd"]["block_q"], plan["bwd"]["block_k"])


def fa1_head_grid_collapse(n: int = 16384, d: int = 128) -> float:
    """FA-1's A100 fwd+bwd chart bar at (N, d, non-causal), predicted with one CTA per head
    (the default grid) over published."""
    wl = paper_workload(n, d, passes="fwd+bwd")
    pub = FA2_FWD_BWD_CHARTS["a100-80gb", d, False]["flash1"][SEQS.index(n)]
    return tflops("flash1", wl, "a100-80gb", options=(("tiles", "release"),)) / pub


def fa1_pass_ratios(passes: str = "fwd") -> tuple[float, float]:
    """FA-1's forward (or backward) % of peak, predicted/published at the range's ends (the
    comparison above, computed again so the prose can quote it)."""
    lo, hi = fa1_a100_range(passes)
    pub_lo, pub_hi = FA1_FWD_PUBLISHED if passes == "fwd" else FA1_BWD_PUBLISHED
    return lo / pub_lo, hi / pub_hi


@functools.lru_cache(maxsize=None)
def fa2_layout(head_dim: int) -> tuple[int, int, int, float]:
    """FlashAttention-2's H100 plan at the papers' N = 4096: (B_r, B_c, CTAs per SM, its
    shared-memory time over its tensor time)."""
    run = simulate("flash2", paper_workload(4096, head_dim), "h100-sxm", compute=False,
                   options=dict(PUBLISHED_PROGRAM["flash2"]))
    k = run.time.kernels[0]
    return run.plan["block_q"], run.plan["block_k"], k.ctas_per_sm, k.smem_s / k.matmul_s


def fa2_occupancy_sentence() -> str:
    """Whether the FA-2 chart's head dims differ in CTAs per SM on the H100."""
    per_sm = {d: fa2_layout(d)[2] for d in (64, 128, 256)}
    if len(set(per_sm.values())) == 1:
        return (f"Every head dimension runs {next(iter(per_sm.values()))} CTAs an SM, so "
                "occupancy does not tell them apart.")
    return "CTAs per SM: " + ", ".join(f"{n} at d = {d}" for d, n in per_sm.items()) + "."


@functools.lru_cache(maxsize=None)
def fa2_a100_lowest(timing: TimingOptions = TimingOptions()) -> tuple[float, int, int, bool]:
    """The A100 sweep's slowest FA-2 forward: (% of peak, head dim, N, causal)."""
    return min((tflops("flash2", wl, "a100-80gb", timing) / peak_tflops("a100-80gb") * 100,
                wl.head_dim, wl.seq_q, wl.causal) for wl in sweep((64, 128)))


def fa2_h100_points(gpu, timing: TimingOptions = TimingOptions()) -> list[float]:
    """predicted/published of every FlashAttention-2 H100 point, on ``gpu`` (a GPU object)."""
    out = tb2296_on(gpu, timing) + [r for log in BENCHMARK_ATTN_LOGS
                                     for r in benchmark_attn_ratios("flash2", gpu, timing, log)]
    for (chart, d, causal, dtype), values in FA3_CHARTS.items():
        for n, published in values.items():
            if published[1] is not None:
                out.append(tflops("flash2", paper_workload(n, d, causal), gpu, timing)
                           / published[1])
    return out


@functools.lru_cache(maxsize=None)
def lockstep_effect() -> dict:
    """What counting resident CTAs as chains in phase (``lockstep_ctas``) does to the
    FlashAttention-2 points: the H100 points' (min, max, median) ratio and the A100 README
    sweep's best forward (% of peak, its head dimension), with the mechanism on and off."""
    off = TimingOptions(lockstep_ctas=False)
    h100 = model_gpu("h100-sxm")
    on_r, off_r = fa2_h100_points(h100), fa2_h100_points(h100, off)
    a100 = "a100-80gb"
    best = {name: max((tflops("flash2", wl, a100, t) / peak_tflops(a100) * 100, wl.head_dim)
                      for wl in sweep((64, 128)))
            for name, t in (("on", TimingOptions()), ("off", off))}
    return {"h100_on": (min(on_r), max(on_r), statistics.median(on_r)),
            "h100_off": (min(off_r), max(off_r), statistics.median(off_r)),
            "a100_best_on": best["on"], "a100_best_off": best["off"]}


@functools.lru_cache(maxsize=None)
def implied_mma_sync_fraction() -> tuple[float, tuple[float, float]]:
    """The ``mma.sync`` ceiling (fraction of the H100 peak, before the GEMM fraction) at which
    the FA-2 H100 points would have a median ratio of 1 if nothing else were missing, and the
    range of their ratios there. A prediction for a GPU session to test (a CUTLASS sm80 GEMM on
    the H100), not a constant of the model: the model keeps the microbenchmark's ratio
    (``hwmodels.gpus`` [LUO-MMA])."""
    h100 = model_gpu("h100-sxm")
    lo, hi = 0.2, h100.mma_sync_fraction_of_peak
    for _ in range(12):
        mid = (lo + hi) / 2
        ratios = fa2_h100_points(h100.replace(mma_sync_fraction_of_peak=mid))
        lo, hi = (lo, mid) if statistics.median(ratios) > 1 else (mid, hi)
    ratios = fa2_h100_points(h100.replace(mma_sync_fraction_of_peak=(lo + hi) / 2))
    return (lo + hi) / 2, (min(ratios), max(ratios))


def backward_gap_text() -> str:
    """The FA-2 backward bars' ratios by head dimension, with the kernel's occupancy and its
    shared-memory time over its tensor time."""
    parts = []
    for d in FA3_BWD_CHARTS:
        r = [pred / pub for dd, _, a, pub, pred in backward_chart_points()
             if dd == d and a == "flash2"]
        run = simulate("flash2", paper_workload(4096, d, passes="bwd"), "h100-sxm",
                       compute=False)
        k = next(t for t in run.time.kernels if t.name == "flash2_bwd")
        parts.append(f"d = {d}: {min(r):.2f}–{max(r):.2f}, {k.ctas_per_sm} CTA per SM, "
                     f"shared-memory time {k.smem_s / k.matmul_s:.2f}x the tensor time")
    return "; ".join(parts)


def eager_copy_share(n: int = 512, d: int = 128) -> float:
    """Share of the eager program's predicted HBM traffic that the layout copies move."""
    r = simulate("standard", paper_workload(n, d), "h100-sxm", compute=False,
                 options=dict(CHART_OPTIONS["standard"]))
    traffic = lambda c: c["hbm_read_bytes"] + c["hbm_write_bytes"]  # noqa: E731
    return sum(traffic(k.counts()) for k in r.kernels if k.name.endswith("_copy")) \
        / traffic(r.counts)


def eager_causal_extra_us(n: int = 512, d: int = 128) -> tuple[float, float]:
    """What causality adds to the standard bars' time at d = 128 (chart B minus chart A), as
    the charts imply it and as the eager program predicts it, in µs."""
    causal, full = paper_workload(n, d, True), paper_workload(n, d)
    pub = {c: FA3_CHARTS[(chart, d, c, "fp16")][n][0] for chart, c in (("A", False),
                                                                       ("B", True))}
    published = (paper_flops(causal) / (pub[True] * 1e12)
                 - paper_flops(full) / (pub[False] * 1e12))
    opts = CHART_OPTIONS["standard"]
    predicted = (predicted_seconds("standard", causal, "h100-sxm", options=opts)
                 - predicted_seconds("standard", full, "h100-sxm", options=opts))
    return published * 1e6, predicted * 1e6


def eager_mask_l2_limit(e: int = 2, gpu: str = "h100-sxm") -> int:
    """The longest power-of-two N at which the causal add's mask stays in L2 between heads:
    the mask with a head's S and output (3 e N²) within the usable part of L2."""
    from algorithms.kernels.common import shared_operand_working_set
    from hwmodels.timing import L2_USABLE_FRACTION
    usable = L2_USABLE_FRACTION * get_gpu(gpu).l2_bytes
    n = 512
    while shared_operand_working_set(e * (2 * n) ** 2, 2 * e * (2 * n) ** 2) <= usable:
        n *= 2
    return n


def eager_add_at_loaded_latency(n: int = 8192, d: int = 128) -> dict[str, float]:
    """The causal add of the FA-3 paper's eager forward on the H100 SXM5 (chart B's shape):
    what each thread holds in flight, the round time and DRAM utilization its rounds settle
    at, and its DRAM rate as a fraction of the copy bandwidth a stream gets."""
    from hwmodels.timing import dram_bytes, hbm_rate, kernel_time
    gpu = model_gpu("h100-sxm")
    run = simulate("standard", paper_workload(n, d, True), gpu, compute=False,
                   options=dict(CHART_OPTIONS["standard"]))
    (add,) = [k for k in run.kernels if k.name == "mask_add"]
    t = kernel_time(gpu, add, TimingOptions())
    rate = dram_bytes(gpu, add) / t.total_s
    copy = hbm_rate(gpu, TimingOptions())
    return {"round_bytes": add.thread_round_bytes,
            "kib_per_sm": add.thread_round_bytes * gpu.max_threads_per_sm / 1024,
            "round_ns": t.stream_round_s * 1e9, "utilization": rate / copy}


def eager_implied_bandwidth(gpu: str) -> tuple[float, float]:
    """(min, max) over the FA-2 paper's PyTorch fwd+bwd bars on ``gpu`` of the DRAM bandwidth
    the published times imply for the eager program's HBM traffic (the model's DRAM
    estimate, after L2), as a fraction of the achievable copy bandwidth the model prices
    every eager kernel at: how fast the program's memory-bound kernels ran, if that traffic
    is what they moved."""
    from hwmodels.timing import dram_bytes
    model = model_gpu(gpu)
    copy = model.hbm_bandwidth_bytes_per_s * model.hbm_achievable_fraction
    out = []
    for (g, d, causal), bars in FA2_FWD_BWD_CHARTS.items():
        if g != gpu:
            continue
        for n, pub in zip(SEQS, bars["standard"]):
            wl = paper_workload(n, d, causal, passes="fwd+bwd")
            run = simulate("standard", wl, model, compute=False,
                           options=dict(CHART_OPTIONS["standard"]))
            seconds = paper_flops(wl) / (pub * 1e12)
            out.append(sum(dram_bytes(model, k) for k in run.kernels) / seconds / copy)
    return min(out), max(out)


def eager_peak_gb_at_16k() -> dict[int, float]:
    """Head dim -> the eager program's HBM peak (GB) for forward + backward at the charts'
    N = 16k shape (batch 1, 2048 / d heads), as the footprint model counts it."""
    out = {}
    for d in (64, 128):
        run = simulate("standard", paper_workload(16384, d, passes="fwd+bwd"), "h100-sxm",
                       compute=False, options=dict(CHART_OPTIONS["standard"]))
        out[d] = run.footprint_question.summary()["peak_bytes"] / 1e9
    return out


@functools.lru_cache(maxsize=None)
def eager_softmax_mechanism(gpu: str, n: int = 2048, d: int = 64) -> str:
    """What bounds the eager forward's softmax kernel on ``gpu`` at the papers' shape."""
    run = simulate("standard", paper_workload(n, d), gpu, compute=False,
                   options=dict(CHART_OPTIONS["standard"]))
    (k,) = [k for k in run.time.kernels if k.name == "softmax"]
    return k.mechanism


def eager_backward_shares(n: int = 2048, d: int = 128) -> dict[str, float]:
    """Shares of the eager backward's predicted time (H100 SXM5, the FA-3 paper's shape):
    its four GEMMs, softmax's backward (ATen's product tmp = dP ∘ P and its row kernel), and
    the elementwise kernels (the multiplies by softmax_scale and the stack)."""
    run = simulate("standard", paper_workload(n, d, passes="bwd"), "h100-sxm", compute=False,
                   options=dict(CHART_OPTIONS["standard"]))
    total = sum(k.total_s for k in run.time.kernels)
    share = {"GEMMs": 0.0, "softmax product": 0.0, "softmax row kernel": 0.0,
             "elementwise": 0.0}
    kind_of = {"softmax_bwd_mul": "softmax product", "softmax_bwd": "softmax row kernel"}
    for k in run.time.kernels:
        kind = "GEMMs" if k.name.endswith("_bmm") else kind_of.get(k.name, "elementwise")
        share[kind] += k.total_s / total
    return share


def eager_backward_without_product() -> tuple[float, float]:
    """(min, max) predicted/published over the FA-3 paper's standard-attention backward bars
    with the time of ATen's softmax product kernel taken out of each prediction: the bars
    as the model stood when it ran softmax's backward as one row kernel over P and dP."""
    out = []
    for d, n, algorithm, pub, pred in backward_chart_points():
        if algorithm != "standard":
            continue
        run = simulate("standard", paper_workload(n, d, passes="bwd"), "h100-sxm",
                       compute=False, options=dict(CHART_OPTIONS["standard"]))
        product = next(k.total_s for k in run.time.kernels if k.name == "softmax_bwd_mul")
        total = run.time.predicted_s
        out.append(pred / pub * total / (total - product))
    return min(out), max(out)


# WH-REF's board, large GEMMs (DeepGEMM's own tests, whose lines also give cuBLAS's time on
# the same shape, at 0.99-1.07x): the best bf16 GEMM 830 TFLOP/s (m 4096, n 1536, k 24576,
# 1.00x cuBLAS), the best fp8 GEMM 1523 (the same shape, 1.07x cuBLAS); the repository's own
# square cuBLAS fp16 GEMM, 761.71 at 8192 (TC-BENCH).
WH_REF_GEMM_TFLOPS = {"bf16": 830.0, "fp8": 1523.0, "fp16 cuBLAS 8192": 761.71}
# hwmodels/gpus.py [MAG-MAMF]: a second MAMF search (bf16, fastest torch.mm over searched
# shapes), TFLOP/s on the boards the page's SXM points were measured on
MAG_MAMF_TFLOPS = {"h100-sxm": 821.2, "a100-80gb": 267.9}


@functools.lru_cache(maxsize=None)
def wh_ref_gemm_sensitivity() -> dict:
    """The WH-REF FA-3 points' predicted/published ratios with the GEMM fractions of the
    model (MAMF) and with those measured on WH-REF's own board: how much of the agreement
    rests on which large-GEMM measurement is taken as achievable."""
    h100 = model_gpu("h100-sxm")
    board = h100.replace(tensor_gemm_fraction=WH_REF_GEMM_TFLOPS["bf16"]
                         / (h100.tensor_flops_per_s("bf16") / 1e12))
    out = {name: tuple(benchmark_attn_ratios("flash3", gpu))
           for name, gpu in (("model", h100), ("board", board))}
    out["fractions"] = (h100.tensor_gemm_fraction, board.tensor_gemm_fraction,
                        h100.tensor_fp8_gemm_fraction,
                        WH_REF_GEMM_TFLOPS["fp8"] / (h100.tensor_flops_per_s("fp8") / 1e12))
    return out
