"""The primary published figures (papers, maintainers, benchmark logs) and their predictions.

Each figure is a ``Comparison``: what was published, on which GPU and workload, and the
function that predicts the same quantity. ``evaluated`` computes them all once;
``comparison_table`` is the page's primary table. The data of each benchmark log sits with
the workload it was measured on. Attention figures only validate: no constant of the model
is set from them.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

from tabulate import tabulate

from attnsim.workload import Workload
from hwmodels.timing import TimingOptions

from .predictions import (TOKENS, measured_tflops, paper_flops, peak_tflops,
                          predicted_seconds, sweep, tflops)
from .targets import in_band


@dataclass(frozen=True)
class Comparison:
    source: str
    claim: str
    gpu: str
    workload: str
    published: tuple        # (value,) or (low, high)
    unit: str
    predict: object         # () -> (value,) or (low, high)
    algorithm: str = ""     # the algorithm whose time it measures ("": a speedup or a gain)
    dtype: str = "fp16"


# FlashAttention (v1) as the FA-2 paper measured it: the v1 release's grid (``flash1 --grid
# release``: the forward split over Q blocks, the backward over K/V blocks) and its tiles
# and traffic (``--tiles release``: 128 or 256 keys, 16-row steps, fp32 o_tmp and lse)
FLASH1_RELEASE = (("grid", "release"), ("tiles", "release"))
# The papers' "standard attention" / "Pytorch" bars: flash-attention's benchmark function
# attention_pytorch run by PyTorch eager, forward and autograd backward (``standard --program
# pytorch-eager``), not the paper's Algorithm 0
STANDARD_EAGER = (("program", "pytorch-eager"),)


def published_options(algorithm: str) -> tuple:
    """The options that simulate the program a published figure of ``algorithm`` timed."""
    return {"flash1": FLASH1_RELEASE, "standard": STANDARD_EAGER}.get(algorithm, ())


def utilization(algorithm, workloads, gpu, dtype="fp16"):
    return [tflops(algorithm, wl, gpu, options=published_options(algorithm))
            / peak_tflops(gpu, dtype) * 100 for wl in workloads]


def fa2_a100_range(passes):
    """FA-2 over the README sweep (d 64/128, causal or not) on the A100 80GB."""
    u = utilization("flash2", sweep((64, 128), passes=passes), "a100-80gb")
    return min(u), max(u)


def fa2_a100_bwd_max():
    return (max(utilization("flash2", sweep((64, 128), passes="bwd"), "a100-80gb")),)


def fa2_a100_fwd_max():
    return (max(utilization("flash2", sweep((64, 128)), "a100-80gb")),)


# FlashAttention (v1) on the A100 as the FA-2 paper's introduction states it, % of peak:
# the forward's range (its Fig. 5) and the backward's (Fig. 6) ([FA2-intro])
FA1_FWD_PUBLISHED = (30, 50)
FA1_BWD_PUBLISHED = (25, 35)


def fa1_a100_range(passes="fwd"):
    """FlashAttention (v1) over the README sweep, on the release's grid."""
    u = utilization("flash1", sweep((64, 128), passes=passes), "a100-80gb")
    return min(u), max(u)


@functools.lru_cache(maxsize=None)
def fa2_over_fa1_points() -> tuple[tuple, ...]:
    """FA-2 over FlashAttention (v1), time over time, on the A100 over the README sweep's
    forward, backward and forward+backward (the paper's Figs. 4-6), at the points whose grid
    (speedup, passes, d, causal, N, FA-1's % of peak) per point, FA-1 on the release's
    grid."""
    points = []
    for passes in ("fwd", "bwd", "fwd+bwd"):
        for wl in sweep((64, 128), passes=passes):
            t1 = predicted_seconds("flash1", wl, "a100-80gb", options=FLASH1_RELEASE)
            points.append((t1 / predicted_seconds("flash2", wl, "a100-80gb"), passes,
                           wl.head_dim, wl.causal, wl.seq_q,
                           paper_flops(wl) / t1 / 1e12 / peak_tflops("a100-80gb") * 100))
    return tuple(points)


def fa2_over_fa1_head_grid_max() -> float:
    """The largest FA-2 over FA-1 speedup over the sweep with FA-1 on one CTA per head."""
    return max(predicted_seconds("flash1", wl, "a100-80gb", options=(("tiles", "release"),))
               / predicted_seconds("flash2", wl, "a100-80gb")
               for passes in ("fwd", "bwd", "fwd+bwd") for wl in sweep((64, 128), passes=passes))


def fa2_over_fa1_by_pass() -> dict[str, tuple[float, float]]:
    """(min, max) of ``fa2_over_fa1_points`` per pass."""
    out = {}
    for passes in ("fwd", "bwd", "fwd+bwd"):
        r = [x[0] for x in fa2_over_fa1_points() if x[1] == passes]
        out[passes] = (min(r), max(r))
    return out


def fa2_over_fa1_extremes() -> tuple[tuple, tuple]:
    """The points of ``fa2_over_fa1_points`` at the range's two ends."""
    return min(fa2_over_fa1_points()), max(fa2_over_fa1_points())


def fa2_over_fa1_range():
    """(min, max) of ``fa2_over_fa1_by_pass`` over all three passes."""
    ranges = fa2_over_fa1_by_pass().values()
    return min(lo for lo, _ in ranges), max(hi for _, hi in ranges)


def fa2_h100_fwd_bwd_max():
    return (max(tflops("flash2", wl, "h100-sxm")
                for wl in sweep((64, 128), passes="fwd+bwd")),)


def fa2_h100_max():
    return (max(utilization("flash2", sweep((64, 128, 256)), "h100-sxm")),)


def fa3_h100_max():
    return (max(tflops("flash3", wl, "h100-sxm") for wl in sweep((64, 128, 256))),)


def fa3_over_fa2_range():
    ratios = [predicted_seconds("flash2", wl, "h100-sxm")
              / predicted_seconds("flash3", wl, "h100-sxm") for wl in sweep((64, 128, 256))]
    return min(ratios), max(ratios)


def fa3_fp8_max():
    """FA-3's fp8 benchmark times attention on Q, K, V already in e4m3 (no quantize kernel)."""
    return (max(tflops("flash3", wl, "h100-sxm", options=FP8_BENCHMARK_OPTIONS)
                for wl in sweep((64, 128, 256), dtype="fp8")),)


# pytorch/benchmark PR #2391: flash_v3 TFLOP/s at (batch, 16 heads, N, d 128), batch·N = 16k
TB2391_FA3 = {512: 430.32, 1024: 517.099, 2048: 565.544, 4096: 590.233, 8192: 614.234,
              16384: 620.73}
# pytorch/benchmark PR #2296: sdpa latency in ms at batch 128, 8 heads, d 128, on H100
TB2296_SDPA_MS = {1024: 1.91248, 2048: 7.49987, 4096: 29.4748, 8192: 122.297, 16384: 462.649}
# pytorch/benchmark PR #2443: (sdpa, flash_v2) latency in ms at (16k / N, 16 heads, N, d 128),
# non-causal, in the same harness as PR #2296 two months later (GPU not named)
TB2443_SDPA_FLASH2_MS = {512: (0.24512, 0.236768), 1024: (0.442944, 0.41968),
                         2048: (0.845728, 0.798688), 4096: (1.65574, 1.55882),
                         8192: (3.27904, 3.08669), 16384: (6.55098, 6.14246)}


def sdpa_over_flash2() -> tuple[float, float]:
    """(min, max) of SDPA's forward time over flash-attn's FA-2 in PR #2443's harness."""
    ratios = [sdpa / fa2 for sdpa, fa2 in TB2443_SDPA_FLASH2_MS.values()]
    return min(ratios), max(ratios)


# FlashAttention-3 Table 2: the forward at (4, 8448, 16, 128), non-causal fp16, in ms, with
# and without the intra-warpgroup GEMM-softmax pipelining (both warp-specialized). Its third
# row (pipelining without warp specialization) has no counterpart here: the model has no
# kernel whose consumers issue their own loads.
FA3_TABLE2_MS = {"full": 3.538, "no pipelining": 4.021}
FA3_TABLE2_WORKLOAD = Workload(batch=4, heads=16, seq_q=8448, head_dim=128)


def fa3_table2_tflops(pipelining: bool) -> tuple:
    options = () if pipelining else (("no_pipelining", True),)
    return (tflops("flash3", FA3_TABLE2_WORKLOAD, "h100-sxm", options=options),)


def fa3_pipelining_gain(options: tuple = ()) -> tuple:
    """Table 2's shape: the time without the pipelining over the time with it, the latter
    priced with flash3 ``options`` (the release's pipelining by default)."""
    wl = FA3_TABLE2_WORKLOAD
    return (predicted_seconds("flash3", wl, "h100-sxm", options=(("no_pipelining", True),))
            / predicted_seconds("flash3", wl, "h100-sxm", options=options),)


def fa3_table2_comparisons() -> list[Comparison]:
    """Table 2's forward with and without the pipelining, and the gain between them."""
    return [
        Comparison("FA3-T2", "FA-3 fp16 fwd TFLOP/s (Table 2, full)", "h100-sxm",
                   "B 4, H 16, N 8448, d 128, non-causal, fp16, fwd",
                   (measured_tflops(FA3_TABLE2_WORKLOAD, FA3_TABLE2_MS["full"]),), "TFLOP/s",
                   functools.partial(fa3_table2_tflops, True), algorithm="flash3"),
        Comparison("FA3-T2", "FA-3 fwd without GEMM-softmax pipelining, TFLOP/s (Table 2)",
                   "h100-sxm", "the same; flash3 --no-pipelining",
                   (measured_tflops(FA3_TABLE2_WORKLOAD, FA3_TABLE2_MS["no pipelining"]),),
                   "TFLOP/s",
                   functools.partial(fa3_table2_tflops, False), algorithm="flash3"),
        Comparison("FA3-T2", "FA-3 pipelining gain: time without / time with (Table 2)",
                   "h100-sxm", "the same", (FA3_TABLE2_MS["no pipelining"]
                                            / FA3_TABLE2_MS["full"],), "x",
                   fa3_pipelining_gain),
    ]


# The FlashAttention-3 blog's scheduling ladder at d = 128, N = 8K, non-causal fp16 forward,
# TFLOP/s ('around'): warpgroups free-running (no ping-pong barrier, no intra-warpgroup
# pipelining), then with the ping-pong barrier. The simulated programs: ``flash3 --pingpong
# off --no-pipelining`` and ``--no-pipelining``; the shape, unstated, the paper's benchmark's.
FA3_BLOG_TFLOPS = {"free-running": 570, "ping-pong": 620}
FA3_BLOG_WORKLOAD = Workload(batch=2, heads=16, seq_q=8192, head_dim=128)
FA3_BLOG_OPTIONS = {"free-running": (("pingpong", "off"), ("no_pipelining", True)),
                    "ping-pong": (("no_pipelining", True),)}


def fa3_blog_tflops(stage: str) -> tuple:
    return (tflops("flash3", FA3_BLOG_WORKLOAD, "h100-sxm", options=FA3_BLOG_OPTIONS[stage]),)


def fa3_pingpong_gain() -> tuple:
    """The blog's shape: the time without the ping-pong barrier over the time with it."""
    wl, opts = FA3_BLOG_WORKLOAD, FA3_BLOG_OPTIONS
    return (predicted_seconds("flash3", wl, "h100-sxm", options=opts["free-running"])
            / predicted_seconds("flash3", wl, "h100-sxm", options=opts["ping-pong"]),)


def fa3_blog_comparisons() -> list[Comparison]:
    """The blog's forward without and with the ping-pong barrier, and the gain between
    them: how much warpgroups that wait on no barrier of each other's overlap."""
    shape = "B 2, H 16, N 8192, d 128, non-causal, fp16, fwd"
    return [
        Comparison("FA3-blog", "FA-3 fwd, warpgroups free-running (no ping-pong, no "
                   "intra-warpgroup pipelining), TFLOP/s", "h100-sxm",
                   f"{shape}; flash3 --pingpong off --no-pipelining",
                   (FA3_BLOG_TFLOPS["free-running"],), "TFLOP/s",
                   functools.partial(fa3_blog_tflops, "free-running"), algorithm="flash3"),
        Comparison("FA3-blog", "FA-3 fwd with the ping-pong barrier, no intra-warpgroup "
                   "pipelining, TFLOP/s", "h100-sxm", f"{shape}; flash3 --no-pipelining",
                   (FA3_BLOG_TFLOPS["ping-pong"],), "TFLOP/s",
                   functools.partial(fa3_blog_tflops, "ping-pong"), algorithm="flash3"),
        Comparison("FA3-blog", "FA-3 ping-pong gain: time free-running / time with the "
                   "barrier", "h100-sxm", "the same",
                   (FA3_BLOG_TFLOPS["ping-pong"] / FA3_BLOG_TFLOPS["free-running"],), "x",
                   fa3_pingpong_gain),
    ]


# WH-REF: flash-attention's hopper/benchmark_attn.py on one H100 SXM5, its defaults (bf16,
# batch 2, 16 heads, N 8192, d 128), ms per call: (algorithm, pass, causal) -> ms. At d = 128
# the FA-3 build it cloned keeps the release's tiles (128 x 176, causal 128 x 128), so the
# simulated program is the measured one's; its FA-2 is flash_attn's sm80 kernel.
WH_REF_MS = {("flash2", "fwd", False): 2.831, ("flash2", "bwd", False): 8.438,
             ("flash3", "fwd", False): 1.453, ("flash2", "fwd", True): 1.624,
             ("flash2", "bwd", True): 4.544, ("flash3", "fwd", True): 0.745}


# FA3-1791: the same benchmark at its defaults on flash-attention's main of 2025-07-31, as a
# pull request's author ran it on a Hopper board the thread does not name: FA-3's 659 TFLOP/s
# forward is beyond an H100 PCIe (its large GEMMs reach 500), so an SXM-class board (the H100
# SXM5, H800 and H200 share its SMs and clocks), predicted on the h100-sxm model. Its FA-3
# backward lines are not compared: that year's backward is not the release's program (80 x
# 128 tiles at d = 128, non-causal, where the release ran 64 x 128; causal kernels).
FA3_1791_MS = {("flash2", "fwd", False): 2.972, ("flash2", "bwd", False): 9.460,
               ("flash3", "fwd", False): 1.668, ("flash2", "fwd", True): 1.935,
               ("flash2", "bwd", True): 4.788, ("flash3", "fwd", True): 0.873}
BENCHMARK_ATTN_LOGS = {"WH-REF": WH_REF_MS, "FA3-1791": FA3_1791_MS}


def board_time_ratios() -> dict[tuple, float]:
    """(algorithm, pass, causal) -> the second benchmark_attn.py log's time over the first's,
    for each kernel both logs ran: how far two boards of one GPU model differ."""
    (_, first), (_, second) = BENCHMARK_ATTN_LOGS.items()
    return {kernel: second[kernel] / first[kernel] for kernel in first if kernel in second}


def benchmark_attn_workload(passes: str, causal: bool) -> Workload:
    """hopper/benchmark_attn.py's default workload (both logs ran it)."""
    return Workload(batch=2, heads=16, seq_q=8192, head_dim=128, causal=causal, dtype="bf16",
                    passes=passes)


def benchmark_attn_ratios(algorithm: str, gpu, timing: TimingOptions = TimingOptions(),
                  log: str = "WH-REF") -> list[float]:
    """predicted / measured TFLOP/s of ``algorithm``'s points in one benchmark_attn.py log
    (``BENCHMARK_ATTN_LOGS``), predicted on ``gpu``."""
    return [tflops(algorithm, benchmark_attn_workload(p, c), gpu, timing)
            / measured_tflops(benchmark_attn_workload(p, c), ms)
            for (a, p, c), ms in BENCHMARK_ATTN_LOGS[log].items() if a == algorithm]


def benchmark_attn_fwd_ratios(algorithm: str, causal: bool) -> list[float]:
    """predicted / measured TFLOP/s of ``algorithm``'s causal or non-causal forward in every
    benchmark_attn.py log, as the page evaluates them."""
    return [r for log, times in BENCHMARK_ATTN_LOGS.items()
            for key, r in zip(times, source_ratios(log)) if key == (algorithm, "fwd", causal)]


def benchmark_attn_comparisons() -> list[Comparison]:
    """The benchmark_attn.py logs' points: WH-REF's board, then FA3-1791's."""
    rows = []
    for source, log in BENCHMARK_ATTN_LOGS.items():
        for (algorithm, passes, causal), ms in log.items():
            wl = benchmark_attn_workload(passes, causal)
            name = {"flash2": "FA-2 (flash_attn, sm80 code)", "flash3": "FA-3"}[algorithm]
            rows.append(Comparison(
                source, f"{name} {passes} TFLOP/s, measured", "h100-sxm",
                f"B 2, H 16, N 8192, d 128, {'causal' if causal else 'non-causal'}, bf16, "
                f"{passes} ({ms} ms)", (measured_tflops(wl, ms),), "TFLOP/s",
                functools.partial(lambda a, w: (tflops(a, w, "h100-sxm"),), algorithm, wl),
                algorithm=algorithm, dtype="bf16"))
    return rows


# FA-1438: one user's H100 and H200 running the same FA-3 build (August 2024, whose d = 64
# forward is the release's), bf16, non-causal, B 1, H 8, N 32768, d 64: model GPU -> ms. The
# thread names the boards no further: an H200 is an SXM part, and the H100 is read as the
# SXM5: at 4.28 ms it ran at 514 TFLOP/s, 52% of the SXM5's dense peak, where a PCIe board
# would be at 68% of its own, above what FA-3 reaches at d = 64 on any of the paper's charts.
FA_1438_MS = {"h100-sxm": 4.27728, "h200": 4.51709}
FA_1438_WORKLOAD = Workload(batch=1, heads=8, seq_q=32768, head_dim=64, dtype="bf16")


def fa_1438_comparisons() -> list[Comparison]:
    """The thread's two forward times, each against flash3 on its GPU."""
    return [Comparison("FA-1438", "FA-3 fwd TFLOP/s, measured", gpu,
                       f"B 1, H 8, N 32768, d 64, non-causal, bf16, fwd ({ms} ms)",
                       (measured_tflops(FA_1438_WORKLOAD, ms),), "TFLOP/s",
                       functools.partial(lambda g: (tflops("flash3", FA_1438_WORKLOAD, g),), gpu),
                       algorithm="flash3", dtype="bf16")
            for gpu, ms in FA_1438_MS.items()]


def fa_1438_h200_over_h100() -> tuple[float, float]:
    """(measured, predicted) H200 time over the H100's for the thread's forward."""
    measured = FA_1438_MS["h200"] / FA_1438_MS["h100-sxm"]
    predicted = (predicted_seconds("flash3", FA_1438_WORKLOAD, "h200")
                 / predicted_seconds("flash3", FA_1438_WORKLOAD, "h100-sxm"))
    return measured, predicted


# FA-3's fp8 benchmarks feed the kernel Q, K, V already in e4m3
FP8_BENCHMARK_OPTIONS = (("fp8_quantize", "upstream"),)
# FA2-A100-LOG: flash_attn_func (FA-2's sm80 forward, flash-attention main at 0586d2e7, 2026)
# timed by a third party's benchmark_fav2.py on an A100 whose memory size the log does not
# state: fp16, d 128, 4096 / 128 = 32 query heads, K/V heads 32 or 8 (GQA), 100 repeats of
# flash_attn.utils.benchmark.benchmark_forward. (causal, batch, N_q, N_k, K/V heads) -> ms;
# the times, not the TFLOP/s beside them (the log's causal count halves N_q N_k even where
# N_q < N_k, and one of its figures was edited while its time stayed).
FA2_A100_LOG_MS = {
    (True, 16, 1024, 1024, 32): 0.956, (True, 16, 1024, 1024, 8): 0.978,
    (True, 4, 1024, 4096, 32): 1.401, (True, 4, 1024, 4096, 8): 1.377,
    (True, 1, 4096, 4096, 32): 0.879, (True, 1, 4096, 4096, 8): 0.862,
    (False, 16, 1024, 1024, 32): 1.535, (False, 16, 1024, 1024, 8): 1.532,
    (False, 4, 1024, 4096, 32): 1.528, (False, 4, 1024, 4096, 8): 1.505,
    (False, 1, 4096, 4096, 32): 1.494, (False, 1, 4096, 4096, 8): 1.497,
}


def fa2_a100_log_workload(causal: bool, batch: int, seq_q: int, seq_k: int,
                          kv_heads: int) -> Workload:
    return Workload(batch=batch, heads=32, kv_heads=kv_heads, seq_q=seq_q, seq_k=seq_k,
                    head_dim=128, causal=causal)


def fa2_a100_log_ratios(causal: bool) -> list[float]:
    """predicted / measured TFLOP/s of the A100 log's causal or non-causal points."""
    return [r for key, r in zip(FA2_A100_LOG_MS, source_ratios("FA2-A100-LOG"))
            if key[0] == causal]


def fa2_a100_log_comparisons() -> list[Comparison]:
    """The A100 log's points, priced on the a100-80gb (the 40 GB model gives the same times
    within 1.5%: these forwards are bound by the tensor cores, not by HBM)."""
    rows = []
    for key, ms in FA2_A100_LOG_MS.items():
        causal, batch, seq_q, seq_k, kv = key
        wl = fa2_a100_log_workload(*key)
        rows.append(Comparison(
            "FA2-A100-LOG", "FA-2 (flash_attn, sm80 code) fwd TFLOP/s, measured", "a100-80gb",
            f"B {batch}, H 32, K/V heads {kv}, N_q {seq_q}, N_k {seq_k}, d 128, "
            f"{'causal' if causal else 'non-causal'}, fp16, fwd ({ms} ms)",
            (measured_tflops(wl, ms),), "TFLOP/s",
            functools.partial(lambda w: (tflops("flash2", w, "a100-80gb"),), wl),
            algorithm="flash2"))
    return rows


# PT-SDPA-A100: PyTorch's scaled_dot_product_attention with its FLASH_ATTENTION backend
# (PyTorch's own copy of FA-2's sm80 forward) on an A100 the thread does not size, as a
# maintainer's pull request measured it: bf16, batch 1, no grad, non-causal, triton's
# do_bench; Q, K, V are views of one (1, N, 3 H d) tensor chunked along its last dim (each
# row's d elements contiguous, as FA-2 reads them; no copy). (N, heads, d) -> µs; the rows
# the thread shows.
PT_SDPA_A100_US = {(4096, 32, 64): 799.391, (4096, 16, 128): 750.131,
                   (8192, 32, 64): 3211.84}


def pt_sdpa_a100_ratios() -> list[float]:
    return source_ratios("PT-SDPA-A100")


def pt_sdpa_a100_comparisons() -> list[Comparison]:
    rows = []
    for (n, heads, d), us in PT_SDPA_A100_US.items():
        wl = Workload(batch=1, heads=heads, seq_q=n, head_dim=d, dtype="bf16")
        rows.append(Comparison(
            "PT-SDPA-A100", "SDPA, FLASH_ATTENTION backend (PyTorch's FA-2) fwd TFLOP/s, "
            "measured", "a100-80gb",
            f"B 1, H {heads}, N {n}, d {d}, non-causal, bf16, fwd ({us} µs)",
            (measured_tflops(wl, us / 1e3),), "TFLOP/s",
            functools.partial(lambda w: (tflops("flash2", w, "a100-80gb"),), wl),
            algorithm="flash2", dtype="bf16"))
    return rows


# PT-SDPA-H100: the same backend named (SDPBackend.FLASH_ATTENTION) in PyTorch's own SDPA
# benchmark, on "my H100 machine" (not sized or named further) of a PyTorch maintainer, June
# 2024: fp16, batch 1, 16 heads, N 4096, embed 2048 (d 128), Q, K and V chunked from one
# packed tensor. causal -> forward µs. Its backward times are not compared: with the packed
# layout autograd also concatenates dQ, dK and dV, a kernel FA-2's backward does not have.
PT_SDPA_H100_US = {True: 334.3069322033899, False: 457.07045251396613}


def pt_sdpa_h100_workload(causal: bool) -> Workload:
    return Workload(batch=1, heads=16, seq_q=4096, head_dim=128, causal=causal)


def pt_sdpa_h100_ratios() -> dict[bool, float]:
    return dict(zip(PT_SDPA_H100_US, source_ratios("PT-SDPA-H100")))


def pt_sdpa_h100_comparisons() -> list[Comparison]:
    rows = []
    for causal, us in PT_SDPA_H100_US.items():
        wl = pt_sdpa_h100_workload(causal)
        rows.append(Comparison(
            "PT-SDPA-H100", "SDPA, FLASH_ATTENTION backend (PyTorch's FA-2) fwd TFLOP/s, "
            "measured", "h100-sxm",
            f"B 1, H 16, N 4096, d 128, {'causal' if causal else 'non-causal'}, fp16, fwd "
            f"({us:.1f} µs)", (measured_tflops(wl, us / 1e3),), "TFLOP/s",
            functools.partial(lambda w: (tflops("flash2", w, "h100-sxm"),), wl),
            algorithm="flash2"))
    return rows


# FA3-1075: FA-3's FP8 forward before its release, on an H100 PCIe: N -> (batch, ms), 16
# heads, d 128, non-causal, Q, K, V in e4m3, V pre-transposed: the pull request's own
# program (``flash3 --fp8-kernel pretransposed``: no in-kernel transpose, the 16-bit
# mainloop, 128 x 128 tiles on 4 stages).
FA3_1075_OPTIONS = FP8_BENCHMARK_OPTIONS + (("fp8_kernel", "pretransposed"),)
FA3_1075_MS = {512: (32, 0.15861446736380458), 1024: (16, 0.2553513351206978),
               2048: (8, 0.4541443311609328), 4224: (4, 0.9447746366883317),
               8448: (2, 1.8919179681688547)}


def fa3_1075_workload(seq: int) -> Workload:
    return Workload(batch=FA3_1075_MS[seq][0], heads=16, seq_q=seq, head_dim=128, dtype="fp8")


def fa3_1075_comparisons() -> list[Comparison]:
    rows = []
    for n, (batch, ms) in FA3_1075_MS.items():
        wl = fa3_1075_workload(n)
        rows.append(Comparison(
            "FA3-1075", "FA-3 fp8 fwd TFLOP/s (pre-release kernel), measured", "h100-pcie",
            f"B {batch}, H 16, N {n}, d 128, non-causal, fp8, fwd ({ms:.4f} ms)",
            (measured_tflops(wl, ms),), "TFLOP/s",
            functools.partial(lambda w: (tflops("flash3", w, "h100-pcie",
                                                options=FA3_1075_OPTIONS),), wl),
            algorithm="flash3", dtype="fp8"))
    return rows


# FA3-1075's baseline: the same benchmark times flash-attention's attention_pytorch on the
# packed qkv in fp16 (the eager program, ``standard --program pytorch-eager``), non-causal,
# 16 heads, d 128, on the same H100 PCIe: N -> (batch, ms).
FA3_1075_EAGER_MS = {512: (32, 1.3145040992336967), 1024: (16, 2.0810180343687534),
                     2048: (8, 3.7247368328583734), 4224: (4, 8.542563331623873),
                     8448: (2, 14.902190600211421), 16896: (1, 28.49179443437606)}


def fa3_1075_eager_comparisons() -> list[Comparison]:
    rows = []
    for n, (batch, ms) in FA3_1075_EAGER_MS.items():
        wl = Workload(batch=batch, heads=16, seq_q=n, head_dim=128)
        rows.append(Comparison(
            "FA3-1075", "PyTorch eager attention fwd TFLOP/s (the benchmark's baseline), "
            "measured", "h100-pcie",
            f"B {batch}, H 16, N {n}, d 128, non-causal, fp16, fwd ({ms:.4f} ms)",
            (measured_tflops(wl, ms),), "TFLOP/s",
            functools.partial(lambda w: (tflops("standard", w, "h100-pcie",
                                                options=STANDARD_EAGER),), wl),
            algorithm="standard"))
    return rows


def fa3_1075_eager_ratios() -> list[float]:
    """predicted / measured of FA3-1075's eager baseline, N ascending."""
    return [r for c, _, ratios in evaluated() if c.source == "FA3-1075"
            and c.algorithm == "standard" for r in ratios]


# FA1-tables: the FlashAttention paper's own runtimes (Appendix E.6) of its first release, on
# an A100 40GB, B 16, H 8, d 64, fp16, no masking: N -> (fwd, fwd with dropout 0.1, bwd,
# bwd with dropout 0.1) in ms (Tables 18, 15, 19, 16). Printed to 0.01 ms, so only lengths
# from 1024 on, where that rounding stays under 1%.
FA1_TABLES_MS = {1024: (0.68, 0.83, 1.62, 1.86), 2048: (2.40, 2.81, 5.45, 6.50),
                 4096: (8.42, 10.38, 21.57, 26.21), 8192: (33.54, 41.63, 84.75, 104.27),
                 16384: (134.03, 167.01, 336.00, 416.10),
                 32768: (535.95, 668.74, 1338.56, 1661.92),
                 65536: (2147.05, 2678.11, 5343.19, 6643.01)}
# the first release as the model runs it: the release's tiles and traffic, on that release's
# grid, one CTA per head (``dim3 grid(h, b)``, [FA1-first])
FLASH1_FIRST_RELEASE = (("grid", "head"), ("tiles", "release"))


def fa1_tables_workload(seq: int, passes: str, dropout: float = 0.0) -> Workload:
    return Workload(batch=16, heads=8, seq_q=seq, head_dim=64, passes=passes,
                    dropout=dropout)


def fa1_dropout_throughput(seq: int, passes: str) -> float:
    """Predicted throughput of FA-1 with dropout 0.1 over without, same pass and shape."""
    def seconds(p):
        return predicted_seconds("flash1", fa1_tables_workload(seq, passes, p), "a100-40gb",
                                 options=FLASH1_FIRST_RELEASE)
    return seconds(0.0) / seconds(0.1)


def fa1_tables_comparisons() -> list[Comparison]:
    """What dropout costs FlashAttention (v1), as its paper's tables measured it: the
    throughput with dropout 0.1 over the throughput without, forward and backward. A ratio of
    two measurements of one program, so the release's RNG is what it prices."""
    rows = []
    for passes, (plain, dropped) in (("fwd", (0, 1)), ("bwd", (2, 3))):
        for n, ms in FA1_TABLES_MS.items():
            rows.append(Comparison(
                "FA1-tables", f"FlashAttention (v1) {passes} with dropout 0.1, throughput "
                "over without, measured", "a100-40gb",
                f"B 16, H 8, N {n}, d 64, non-causal, fp16, {passes} ({ms[plain]} ms, "
                f"{ms[dropped]} ms with dropout); flash1 --grid head --tiles release",
                (ms[plain] / ms[dropped],), "x",
                functools.partial(lambda n_, p_: (fa1_dropout_throughput(n_, p_),), n, passes)))
    return rows


@functools.lru_cache(maxsize=None)
def fa1_tables_time_ratios() -> dict[str, dict[int, float]]:
    """pass -> N -> predicted/measured throughput of the first release without dropout
    (Tables 18 and 19), FA-1 as ``FLASH1_FIRST_RELEASE`` runs it: a diagnostic, not a
    compared point, since the model's backward keeps V_j in shared memory, as the later
    release does, where the first release held it in registers."""
    return {passes: {n: ms[column] * 1e-3 / predicted_seconds(
                "flash1", fa1_tables_workload(n, passes), "a100-40gb",
                options=FLASH1_FIRST_RELEASE) for n, ms in FA1_TABLES_MS.items()}
            for passes, column in (("fwd", 0), ("bwd", 2))}


# FA-1589: flash-attention's benchmark on a B200 (not a modelled GPU; quoted on the page as
# evidence of where the eager forward slows, never compared): N -> (Pytorch fwd, bwd) TFLOP/s,
# d = 64, non-causal, batch 16k / N, 32 heads.
B200_EAGER_TFLOPS = {512: (76.05, 108.36), 1024: (88.67, 123.00), 2048: (57.73, 168.60),
                     4096: (68.98, 178.36), 8192: (62.18, 176.59)}


# FA3-1777: a user's FA-3 forward on an H100 PCIe (July 2025, a build of that year: at d = 64
# its tiles are 192 x 192 with P V reading P from shared memory, not the release's 192 x 128
# with P in registers), 16-bit, B 16, H 32, d 64, non-causal: N -> TFLOP/s. The thread states
# the batch at N = 1024 only; ``fa3_1777_ratios`` predicts the later lengths at B 16 and at the
# same tokens (B 16 x 1024 / N) and keeps both.
FA3_1777_TFLOPS = {1024: 243, 2048: 298, 4096: 310, 8192: 323}


def fa3_1777_workload(seq: int, same_tokens: bool = False) -> Workload:
    batch = max(1, 16 * 1024 // seq) if same_tokens else 16
    return Workload(batch=batch, heads=32, seq_q=seq, head_dim=64)


def fa3_1777_ratios(timing: TimingOptions = TimingOptions()) -> dict[int, tuple[float, float]]:
    """N -> predicted / measured TFLOP/s of the FA3-1777 points, the release's program on the
    h100-pcie model, at batch 16 and at batch 16 x 1024 / N."""
    return {n: tuple(tflops("flash3", fa3_1777_workload(n, same), "h100-pcie", timing)
                     / measured for same in (False, True))
            for n, measured in FA3_1777_TFLOPS.items()}


# TB-DEVGPU: FA-3 fp16 forward at (8, 16, 8192, 128) on a "devgpu H100" of tritonbench's
TB_DEVGPU_FA3_TFLOPS = 465.518


def tb2296_on(gpu, timing: TimingOptions = TimingOptions()) -> list[float]:
    """predicted / published of the SDPA log's points if predicted for ``gpu``."""
    return [tflops("flash2", tb2296_workload(n), gpu, timing)
            / measured_tflops(tb2296_workload(n), ms) for n, ms in TB2296_SDPA_MS.items()]


def tb2391_workload(seq):
    return Workload(batch=TOKENS // seq, heads=16, seq_q=seq, head_dim=128)


def tb2296_workload(seq):
    return Workload(batch=128, heads=8, seq_q=seq, head_dim=128)


def comparisons() -> list[Comparison]:
    """Every primary published figure (papers, maintainers, benchmark logs)."""
    from .flashmla import comparisons as flashmla_comparisons   # it builds on Comparison
    from .flash_decoding import comparisons as flash_decoding_comparisons   # likewise
    return (paper_comparisons() + fa3_table2_comparisons() + fa3_blog_comparisons()
            + tb2391_comparisons()
            + tb2296_comparisons() + benchmark_attn_comparisons() + fa_1438_comparisons()
            + fa3_1075_comparisons()
            + fa3_1075_eager_comparisons() + fa2_a100_log_comparisons()
            + pt_sdpa_a100_comparisons() + pt_sdpa_h100_comparisons()
            + fa1_tables_comparisons() + flashmla_comparisons()
            + flash_decoding_comparisons())


def paper_comparisons() -> list[Comparison]:
    """The figures the FlashAttention-2 and -3 papers and their maintainers state."""
    return [
        Comparison("FA2", "FA-2 fwd, % of peak (range over the benchmark)", "a100-80gb",
                   "README sweep, d 64/128, causal and not, fp16, fwd", (50, 73), "% of 312",
                   functools.partial(fa2_a100_range, "fwd"), algorithm="flash2"),
        Comparison("FA2-intro", "FA-2 bwd, best % of peak", "a100-80gb",
                   "README sweep, d 64/128, causal and not, fp16, bwd", (63,), "% of 312",
                   fa2_a100_bwd_max, algorithm="flash2"),
        Comparison("FA2-1059", "FA-2 fwd, best % of peak", "a100-80gb",
                   "README sweep, d 64/128, fp16, fwd", (70,), "% of 312", fa2_a100_fwd_max,
                   algorithm="flash2"),
        Comparison("FA2-intro", "FlashAttention (v1) fwd, % of peak (range)", "a100-80gb",
                   "README sweep, d 64/128, causal and not, fp16, fwd; flash1 --grid release "
                   "--tiles release", FA1_FWD_PUBLISHED, "% of 312",
                   fa1_a100_range, algorithm="flash1"),
        Comparison("FA2-intro", "FlashAttention (v1) bwd, % of peak (range)", "a100-80gb",
                   "README sweep, d 64/128, causal and not, fp16, bwd; flash1 --grid release "
                   "--tiles release", FA1_BWD_PUBLISHED, "% of 312",
                   functools.partial(fa1_a100_range, "bwd"), algorithm="flash1"),
        Comparison("FA2-s4", "FA-2 over FlashAttention (v1) speedup (range)", "a100-80gb",
                   "README sweep, d 64/128, causal and not, fp16, fwd, bwd and fwd+bwd; "
                   "flash1 --grid release --tiles release", (1.7, 3.0), "x", fa2_over_fa1_range),
        Comparison("FA2-s4", "FA-2 fwd+bwd on H100 (sm80 code), best TFLOP/s", "h100-sxm",
                   "README sweep, d 64/128, causal and not, fp16, fwd+bwd", (335,), "TFLOP/s",
                   fa2_h100_fwd_bwd_max, algorithm="flash2"),
        Comparison("FA3", "FA-2 fwd on H100, % of peak", "h100-sxm",
                   "FA-3 sweep, d 64/128/256, fp16, fwd (best case)", (35,), "% of 989",
                   fa2_h100_max, algorithm="flash2"),
        Comparison("FA3", "FA-3 fp16 fwd, best TFLOP/s", "h100-sxm",
                   "FA-3 sweep, d 64/128/256, causal and not, fp16, fwd", (740,), "TFLOP/s",
                   fa3_h100_max, algorithm="flash3"),
        Comparison("FA3", "FA-3 over FA-2 fwd speedup (range)", "h100-sxm",
                   "FA-3 sweep, d 64/128/256, causal and not, fp16, fwd", (1.5, 2.0), "x",
                   fa3_over_fa2_range),
        Comparison("FA3", "FA-3 fp8 fwd, best TFLOP/s", "h100-sxm",
                   "FA-3 sweep, d 64/128/256, fp8, fwd", (1200,), "TFLOP/s", fa3_fp8_max,
                   algorithm="flash3", dtype="fp8"),
    ]


def tb2391_comparisons() -> list[Comparison]:
    """PR #2391's flash_v3 TFLOP/s, length by length."""
    rows = []
    for n, value in TB2391_FA3.items():
        wl = tb2391_workload(n)
        rows.append(Comparison("TB2391", "FA-3 fp16 fwd TFLOP/s", "h100-sxm",
                               f"B {wl.batch}, H 16, N {n}, d 128, fp16, fwd", (value,),
                               "TFLOP/s",
                               functools.partial(lambda w: (tflops("flash3", w, "h100-sxm"),), wl),
                               algorithm="flash3"))
    return rows


def tb2296_comparisons() -> list[Comparison]:
    """PR #2296's SDPA times as TFLOP/s, each against flash2's prediction."""
    rows = []
    for n, ms in TB2296_SDPA_MS.items():
        wl = tb2296_workload(n)
        rows.append(Comparison("TB2296", "SDPA fwd (backend not stated) vs flash2, TFLOP/s "
                               "from the published ms", "h100-sxm",
                               f"B 128, H 8, N {n}, d 128, fp16, fwd ({ms} ms)",
                               (measured_tflops(wl, ms),), "TFLOP/s",
                               functools.partial(lambda w: (tflops("flash2", w, "h100-sxm"),), wl),
                               algorithm="flash2"))
    return rows


def ratios_of(pred: tuple, pub: tuple) -> list[float]:
    """predicted / published; for ranges, low/low and high/high. Every published figure is a
    throughput (or a ratio of throughputs), so above 1 means the model is optimistic."""
    return [p / q for p, q in zip(pred, pub)]


def value_text(values: tuple, unit: str) -> str:
    fmt = "{:.2f}" if unit == "x" else "{:.0f}"
    return "–".join(fmt.format(v) for v in values)


@functools.lru_cache(maxsize=None)
def evaluated() -> tuple:
    """(comparison, predicted tuple, ratios) for every primary figure."""
    out = []
    for c in comparisons():
        pred = tuple(c.predict())
        out.append((c, pred, tuple(ratios_of(pred, c.published))))
    return tuple(out)


def source_ratios(source: str) -> list[float]:
    """predicted / published of every point of one source, in the order it lists them, as
    ``evaluated`` computed them (not predicted again)."""
    return [r for c, _, ratios in evaluated() if c.source == source for r in ratios]


def comparison_table(fmt: str) -> str:
    rows = []
    for c, pred, ratios in evaluated():
        rows.append([c.source, c.claim, c.gpu, c.workload, c.unit, value_text(c.published, c.unit),
                     value_text(pred, c.unit), " – ".join(f"{r:.2f}" for r in ratios),
                     "yes" if all(in_band(r) for r in ratios) else "no"])
    return tabulate(rows, headers=["source", "figure", "GPU", "workload", "unit", "published",
                                   "predicted", "pred/pub", "in 0.8–1.25"], tablefmt=fmt)
