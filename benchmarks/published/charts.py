"""The published bar charts (secondary: read off chart images) and their predicted bars.

The FlashAttention-3 paper's forward charts (standard attention, FlashAttention-2 and -3 on
the H100 SXM5, fp16 and fp8) and backward charts (FlashAttention-2), and the
FlashAttention-2 paper's forward + backward charts (FlashAttention (v1) and -2 on the A100
and the H100): each chart's data, the function that pairs every bar with its prediction
(``chart_points``, ``backward_chart_points``, ``fa2_chart_points``), the page's tables of
them and the ranges the prose and the tests read off them.
"""
from __future__ import annotations

import functools

from tabulate import tabulate

from hwmodels.timing import TimingOptions

from .figures import FLASH1_RELEASE, FP8_BENCHMARK_OPTIONS, STANDARD_EAGER, published_options
from .predictions import SEQS, paper_workload, tflops


def fa3_bars_only(*tflops) -> dict:
    """A chart that shows FlashAttention-3 alone (the fp8 charts): its bars from N = 512 up,
    as many as were read."""
    return {n: (None, None, v) for n, v in zip(SEQS, tflops)}


# (chart, head dim, causal as read here, dtype) -> {N: (standard, FlashAttention-2,
# FlashAttention-3)}; None: no bar (standard attention is out of memory at 16k; the d = 256
# charts have no standard-attention bars; the fp8 charts show FlashAttention-3 alone).
FA3_CHARTS = {
    ("A", 128, False, "fp16"): {512: (74, 309, 467), 1024: (100, 350, 565),
                                2048: (119, 362, 625), 4096: (133, 368, 638),
                                8192: (139, 370, 646), 16384: (None, 370, 648)},
    ("B", 128, True, "fp16"): {512: (26, 191, 292), 1024: (31, 260, 423), 2048: (34, 298, 521),
                               4096: (35, 319, 579), 8192: (35, 333, 602),
                               16384: (None, 335, 616)},
    ("hd64", 64, False, "fp16"): {512: (52, 282, 333), 1024: (63, 306, 392),
                                  2048: (67, 318, 460), 4096: (72, 321, 476),
                                  8192: (73, 322, 496), 16384: (None, 324, 497)},
    ("hd64 B", 64, True, "fp16"): {512: (16, 180, 197), 1024: (18, 229, 265),
                                   2048: (18, 262, 371), 4096: (18, 284, 420),
                                   8192: (18, 295, 460), 16384: (None, 299, 473)},
    ("hd256", 256, False, "fp16"): {512: (None, 275, 482), 1024: (None, 313, 639),
                                    2048: (None, 321, 707), 4096: (None, 323, 736),
                                    8192: (None, 324, 746), 16384: (None, 326, 756)},
    ("hd256 B", 256, True, "fp16"): {512: (None, 208, 286), 1024: (None, 251, 427),
                                     2048: (None, 278, 537), 4096: (None, 293, 612),
                                     8192: (None, 297, 628), 16384: (None, 298, 642)},
    ("fp8 hd256", 256, False, "fp8"): fa3_bars_only(510, 744, 931, 966, 1151, 1171),
    ("fp8 hd256 B", 256, True, "fp8"): fa3_bars_only(329, 521, 703, 856, 960, 1024),
    ("fp8 hd128", 128, False, "fp8"): fa3_bars_only(348, 596, 733, 918, 974, 1008),
    ("fp8 hd64", 64, False, "fp8"): fa3_bars_only(240, 396, 462, 568, 596, 613),
    ("fp8 hd64 B", 64, True, "fp8"): fa3_bars_only(164, 244),
}
# The 16-bit charts are read off the repository's image of them, whose captions say which is
# causal (A and B: '(c)' and '(d) Forward, without / with causal mask, head dim 128'; chart
# A's FlashAttention-3 bar at 512 is 467, next to cuDNN's 497). Of each pair of fp8 charts,
# transcribed from the paper's images, the one whose FlashAttention-3 bar at N = 512 is lower
# is read as causal (the transcriptions do not say). The fp8 d = 128 chart is the only one
# transcribed at that head dimension and is read as non-causal: its N = 512 bar over the fp16 non-causal one
# (348 / 467 = 0.75) falls between d = 64's (240 / 333 = 0.72) and d = 256's (510 / 482 =
# 1.06), as the causal pairs (164 / 197 = 0.83, 329 / 286 = 1.15) do not. The causal fp8
# d = 64 chart's transcription stops after 1k: its later bars are not read.
# The other Hopper kernels of the d = 64 non-causal chart ([FA3-fig], panel (a)): TFLOP/s at
# N = 512 to 16k.
FA3_D64_OTHER_KERNELS = {"cuDNN": (335, 373, 395, 408, 412, 413),
                         "Triton": (340, 382, 396, 400, 401, 403)}
CHART_DTYPE = {chart: dtype for chart, _, _, dtype in FA3_CHARTS}
CHART_ALGORITHMS = ("standard", "flash2", "flash3")
# The charts' "standard attention" is flash-attention's benchmark function attention_pytorch
# (hopper/benchmark_flash_attention.py) run by PyTorch eager: simulate that program, not the
# paper's Algorithm 0. FA-3's fp8 benchmark times attention on Q, K, V already in e4m3: no
# quantize kernel.
CHART_OPTIONS = {"standard": STANDARD_EAGER}


def chart_options(algorithm: str, dtype: str) -> tuple:
    if algorithm == "flash3" and dtype == "fp8":
        return FP8_BENCHMARK_OPTIONS
    return CHART_OPTIONS.get(algorithm, ())


@functools.lru_cache(maxsize=None)
def chart_points() -> tuple:
    """(chart, d, causal, N, algorithm, published, predicted) for every chart bar."""
    out = []
    for (chart, d, causal, dtype), values in FA3_CHARTS.items():
        for n, published in values.items():
            wl = paper_workload(n, d, causal, dtype)
            for algorithm, pub in zip(CHART_ALGORITHMS, published):
                if pub is not None:
                    out.append((chart, d, causal, n, algorithm, pub,
                                tflops(algorithm, wl, "h100-sxm",
                                       options=chart_options(algorithm, dtype))))
    return tuple(out)


def chart_table(fmt: str) -> str:
    rows, by_key = [], {}
    for chart, d, causal, n, algorithm, pub, pred in chart_points():
        cells = by_key.setdefault((chart, d, causal, n), {})
        cells[algorithm] = f"{pub} / {pred:.0f} ({pred / pub:.2f})"
    for (chart, d, causal, n), cells in by_key.items():
        rows.append([chart, d, "causal" if causal else "non-causal", n]
                    + [cells.get(a, "—") for a in CHART_ALGORITHMS])
    return tabulate(rows, headers=["chart", "d", "read as", "N", "standard pub / pred (ratio)",
                                   "FA-2 pub / pred (ratio)", "FA-3 pub / pred (ratio)"],
                    tablefmt=fmt)


def chart_ratio_range(algorithm: str, head_dim: int, dtype: str = "fp16",
                      min_seq: int = 0) -> tuple[float, float]:
    """(min, max) predicted/published over the chart bars of one algorithm, head dim, dtype
    (at sequence lengths from ``min_seq`` on)."""
    r = [pred / pub for chart, d, _, n, a, pub, pred in chart_points()
         if a == algorithm and d == head_dim and n >= min_seq
         and CHART_DTYPE[chart] == dtype]
    return min(r), max(r)


@functools.lru_cache(maxsize=None)
def chart_speedups() -> tuple:
    """(chart, d, causal, N, published, predicted) FA-3 over FA-2 forward speedup for every
    fp16 chart bar where the paper shows both: derived from the bars above (not points of
    their own), it compares the model's speedup with the charts' bar by bar."""
    bars = {(chart, d, causal, n, a): (pub, pred)
            for chart, d, causal, n, a, pub, pred in chart_points()
            if CHART_DTYPE[chart] == "fp16"}
    return tuple((chart, d, causal, n, pub3 / pub2, pred3 / pred2)
                 for (chart, d, causal, n, a), (pub3, pred3) in bars.items()
                 if a == "flash3" and (chart, d, causal, n, "flash2") in bars
                 for pub2, pred2 in [bars[(chart, d, causal, n, "flash2")]])


def standard_chart_ratios(program: str, timing: TimingOptions = TimingOptions(),
                          causal: bool | None = None) -> list[float]:
    """The charts' standard-attention bars, predicted/published, priced with one program of
    ``standard`` (``--program``); with ``causal``, only the causal (or non-causal) charts'."""
    return [tflops("standard", paper_workload(n, d, is_causal), "h100-sxm", timing,
                   options=(("program", program),)) / published[0]
            for (_, d, is_causal, _), values in FA3_CHARTS.items()
            if causal is None or is_causal == causal
            for n, published in values.items() if published[0] is not None]


# Head dim -> algorithm -> {N: backward TFLOP/s} of the FA-3 paper's backward charts
# (non-causal; the benchmark's FLOP convention, 2.5 x the forward's): standard attention's
# bars (autograd through the benchmark's eager program, ``standard --program pytorch-eager``;
# out of memory at 16k), FlashAttention-2's and FlashAttention-3's (``flash3 --pass bwd``:
# the release's backward, which is the one these charts time). cuDNN's bars are left out:
# its backward is not simulated.
FA3_BWD_CHARTS = {
    64: {"standard": dict(zip(SEQS, (68, 76, 88, 92, 95))),
         "flash2": dict(zip(SEQS, (198, 238, 264, 279, 287, 291))),
         "flash3": dict(zip(SEQS, (272, 363, 422, 453, 472, 474)))},
    128: {"standard": dict(zip(SEQS, (104, 131, 159, 174, 181))),
          "flash2": dict(zip(SEQS, (214, 260, 291, 310, 318, 322))),
          "flash3": dict(zip(SEQS, (316, 424, 501, 542, 559, 561)))},
}


@functools.lru_cache(maxsize=None)
def backward_chart_points() -> tuple:
    """(d, N, algorithm, published, predicted) for every standard-attention,
    FlashAttention-2 and FlashAttention-3 bar of the backward charts."""
    return tuple((d, n, algorithm, pub,
                  tflops(algorithm, paper_workload(n, d, passes="bwd"), "h100-sxm",
                         options=published_options(algorithm)))
                 for d, by_algorithm in FA3_BWD_CHARTS.items()
                 for algorithm, bars in by_algorithm.items() for n, pub in bars.items())


def backward_chart_range(algorithm: str) -> tuple[float, float]:
    r = [pred / pub for _, _, a, pub, pred in backward_chart_points() if a == algorithm]
    return min(r), max(r)


def backward_chart_table(fmt: str) -> str:
    """One row a bar pair: each algorithm's published / predicted (ratio), and FA-3's
    speedup over FA-2, published and predicted."""
    bars = {(d, n, a): (pub, pred) for d, n, a, pub, pred in backward_chart_points()}

    def cell(d, n, a):
        if (d, n, a) not in bars:
            return "—"
        pub, pred = bars[d, n, a]
        return f"{pub} / {pred:.0f} ({pred / pub:.2f})"

    rows = []
    for d, by_algorithm in FA3_BWD_CHARTS.items():
        for n in by_algorithm["flash2"]:
            (p2, q2), (p3, q3) = bars[d, n, "flash2"], bars[d, n, "flash3"]
            rows.append([d, n, cell(d, n, "standard"), cell(d, n, "flash2"),
                         cell(d, n, "flash3"), f"{p3 / p2:.2f} / {q3 / q2:.2f}"])
    return tabulate(rows, headers=["d", "N", "standard bwd pub / pred (ratio)",
                                   "FA-2 bwd pub / pred (ratio)", "FA-3 bwd pub / pred (ratio)",
                                   "FA-3 / FA-2 pub / pred"], tablefmt=fmt)


# The FlashAttention-2 paper's forward + backward bar charts (its Fig. 4 on the A100 80GB SXM4,
# Fig. 7 on the H100 80GB SXM5; the README's flash2_a100_fwd_bwd_benchmark.png and
# flash2_h100_fwd_bwd_benchmark.png): TFLOP/s at 3.5x the forward's FLOPs, per N in SEQS, for
# (GPU, d, causal). Three A100 FlashAttention-2 labels sit under the chart's legend and are
# read from their bars' heights against the labelled bars of the same chart ([FA2-fig]).
# "standard": the charts' "Pytorch" bars (the benchmark's attention_pytorch, forward and
# autograd backward: ``standard --program pytorch-eager``), N = 512 to 8k: out of memory at 16k.
FA2_FWD_BWD_CHARTS = {
    ("a100-80gb", 64, False): {"standard": (36, 40, 43, 45, 46),
                               "flash1": (91, 92, 104, 108, 110, 110),
                               "flash2": (132, 153, 162, 171, 175, 176)},
    ("a100-80gb", 128, False): {"standard": (53, 67, 76, 79, 86),
                                "flash1": (76, 72, 76, 80, 82, 83),
                                "flash2": (151, 172, 187, 196, 201, 203)},
    ("a100-80gb", 64, True): {"standard": (15, 16, 17, 18, 18),
                              "flash1": (58, 70, 77, 87, 92, 97),
                              "flash2": (88, 119, 140, 156, 165, 171)},
    ("a100-80gb", 128, True): {"standard": (23, 28, 32, 32, 34),
                               "flash1": (55, 62, 69, 76, 80, 83),
                               "flash2": (99, 133, 155, 173, 182, 189)},
    ("h100-sxm", 64, False): {"standard": (62, 72, 81, 86, 87),
                              "flash1": (157, 159, 161, 161, 166, 168),
                              "flash2": (215, 254, 274, 288, 294, 296)},
    ("h100-sxm", 128, False): {"standard": (93, 120, 145, 160, 167),
                               "flash1": (127, 127, 128, 131, 137, 139),
                               "flash2": (248, 294, 320, 326, 335, 338)},
    ("h100-sxm", 64, True): {"standard": (26, 29, 31, 32, 32),
                             "flash1": (104, 123, 136, 138, 149, 156),
                             "flash2": (141, 192, 232, 257, 273, 284)},
    ("h100-sxm", 128, True): {"standard": (40, 50, 57, 61, 63),
                              "flash1": (98, 109, 108, 126, 135, 137),
                              "flash2": (163, 221, 265, 294, 308, 328)},
}
FA2_CHART_COLUMNS = {"standard": 4, "flash1": 5, "flash2": 6}    # fa2_chart_table's columns


@functools.lru_cache(maxsize=None)
def fa2_chart_points() -> tuple:
    """(GPU, d, causal, N, algorithm, published, predicted) for every FlashAttention and
    FlashAttention-2 bar of the FA-2 paper's forward + backward charts."""
    return tuple(
        (gpu, d, causal, n, algorithm, pub,
         tflops(algorithm, paper_workload(n, d, causal, passes="fwd+bwd"), gpu,
                options=published_options(algorithm)))
        for (gpu, d, causal), bars in FA2_FWD_BWD_CHARTS.items()
        for algorithm, values in bars.items() for n, pub in zip(SEQS, values))


def fa2_chart_range(gpu: str, algorithm: str) -> tuple[float, float]:
    r = [pred / pub for g, _, _, _, a, pub, pred in fa2_chart_points()
         if g == gpu and a == algorithm]
    return min(r), max(r)


def fa2_chart_table(fmt: str) -> str:
    rows = {}
    for gpu, d, causal, n, algorithm, pub, pred in fa2_chart_points():
        row = rows.setdefault((gpu, d, causal, n), [gpu, d, "causal" if causal else
                                                     "non-causal", n, "—", "", ""])
        row[FA2_CHART_COLUMNS[algorithm]] = f"{pub} / {pred:.0f} ({pred / pub:.2f})"
    return tabulate(list(rows.values()),
                    headers=["GPU", "d", "mask", "N", "PyTorch (eager) pub / pred (ratio)",
                             "FlashAttention (v1) pub / pred (ratio)",
                             "FA-2 pub / pred (ratio)"], tablefmt=fmt)


def fwd_bwd_chart_range(gpu: str, algorithm: str, timing: TimingOptions = TimingOptions(),
                        options: tuple = ()) -> tuple[float, float]:
    """An algorithm's forward + backward chart bars on ``gpu``, predicted/published, priced
    with ``timing`` and ``options`` (a mechanism off, another program)."""
    r = []
    for g, d, causal, n, a, pub, _ in fa2_chart_points():
        if g == gpu and a == algorithm:
            wl = paper_workload(n, d, causal, passes="fwd+bwd")
            r.append(tflops(algorithm, wl, gpu, timing, options=options) / pub)
    return min(r), max(r)


def fa1_chart_range(gpu: str, timing: TimingOptions = TimingOptions(),
                    options: tuple = FLASH1_RELEASE) -> tuple[float, float]:
    """FA-1's chart bars on ``gpu`` (the paper's tiles instead of the release's, or a
    mechanism off)."""
    return fwd_bwd_chart_range(gpu, "flash1", timing, options)


PAPER_TILES_ON_RELEASE_GRID = (("grid", "release"),)
