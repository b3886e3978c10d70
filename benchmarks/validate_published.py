"""Predicted vs published: attnsim's timing model against published FlashAttention figures.

    python benchmarks/validate_published.py [--format markdown|text]

Regenerates every predicted number in docs/validation.md: for each published figure it
simulates the same workload in count-only mode (``simulate(..., compute=False)``) and
prints the published value, the prediction and their ratio (predicted / published; above
1 means the model is optimistic). Then the charts transcribed from the FlashAttention-3
paper, how much each timing mechanism moves a few predictions, the FlashAttention-2
backward's L2 cliff, and a what-if. Prints to stdout; writes nothing. About 10 s (every
simulation is count-only), plus Numba's compilation on the first run.

TFLOP/s are counted as the FlashAttention papers' benchmark script counts them
(flash-attention's benchmarks/benchmark_flash_attention.py, ``flops``): forward 4·B·N²·H·d,
halved when causal; backward
2.5x and forward+backward 3.5x the forward — not from the simulator's FLOP counters, so
that predicted and published throughputs divide the same work by their times.
"""
from __future__ import annotations

import argparse
import functools
from dataclasses import dataclass

from tabulate import tabulate

from attnsim.simulate import simulate
from attnsim.workload import Workload
from hwmodels import get_gpu
from hwmodels.timing import TimingOptions

# -- the benchmark shapes -------------------------------------------------------------------
# FlashAttention-2 README, "Performance" / A100: "Head dimension 64 or 128, hidden dimension
# 2048 (i.e. either 32 or 16 heads). Sequence length 512, 1k, 2k, 4k, 8k, 16k. Batch size set
# to 16k / seqlen." The FlashAttention-3 paper uses the same sizing (pytorch/benchmark commit
# ff65cb6: "the FA3 paper sizes inputs such that B*S=16k and H*Dhead=2048"), with head dim
# 64, 128 and 256.
SEQS = (512, 1024, 2048, 4096, 8192, 16384)
TOKENS = 16384
HIDDEN = 2048
PASS_FLOP_FACTOR = {"fwd": 1.0, "bwd": 2.5, "fwd+bwd": 3.5}


def paper_workload(seq: int, head_dim: int, causal: bool = False, dtype: str = "fp16",
                   passes: str = "fwd") -> Workload:
    """The papers' benchmark shape: batch = 16k / N, heads = 2048 / d."""
    return Workload(batch=TOKENS // seq, heads=HIDDEN // head_dim, seq_q=seq, head_dim=head_dim,
                    causal=causal, dtype=dtype, passes=passes)


def paper_flops(wl: Workload) -> float:
    """FLOPs as the FlashAttention benchmarks count them (benchmark_flash_attention.py)."""
    fwd = 4.0 * wl.batch * wl.heads * wl.seq_q * wl.seq_k * wl.head_dim
    if wl.causal:
        fwd /= 2
    return fwd * PASS_FLOP_FACTOR[wl.passes]


@functools.lru_cache(maxsize=None)
def predicted_seconds(algorithm: str, wl: Workload, gpu: str,
                      timing: TimingOptions = TimingOptions()) -> float:
    return simulate(algorithm, wl, gpu, compute=False, timing=timing).time.predicted_s


def tflops(algorithm: str, wl: Workload, gpu: str,
           timing: TimingOptions = TimingOptions()) -> float:
    return paper_flops(wl) / predicted_seconds(algorithm, wl, gpu, timing) / 1e12


def peak_tflops(gpu: str, dtype: str = "fp16") -> float:
    return get_gpu(gpu).tensor_flops_per_s(dtype) / 1e12


def sweep(head_dims, causals=(False, True), dtype="fp16", passes="fwd"):
    return [paper_workload(n, d, c, dtype, passes)
            for d in head_dims for c in causals for n in SEQS]


# -- sources --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Source:
    key: str
    citation: str
    where: str          # address where the text was read
    quote: str


SOURCES = (
    Source("FA2", "Dao 2023, FlashAttention-2, arXiv 2307.08691, abstract",
           "https://huggingface.co/papers/2307.08691 (abstract; the sentence is quoted whole "
           "in github.com/vtabbott/Efficient_Deep_Learning)",
           "FlashAttention is still not nearly as fast as optimized matrix-multiply (GEMM) "
           "operations, reaching only 25-40% of the theoretical maximum FLOPs/s. [...] These "
           "yield around 2x speedup compared to FlashAttention, reaching 50-73% of the "
           "theoretical maximum FLOPs/s on A100"),
    Source("FA2-shapes", "flash-attention README, Performance / A100",
           "github.com/Dao-AILab/flash-attention README.md",
           "Head dimension 64 or 128, hidden dimension 2048 (i.e. either 32 or 16 heads). "
           "Sequence length 512, 1k, 2k, 4k, 8k, 16k. Batch size set to 16k / seqlen. "
           "[figure: FlashAttention speedup on A100 80GB SXM5 with FP16/BF16]"),
    Source("FA-flops", "flash-attention benchmarks/benchmark_flash_attention.py, flops()",
           "github.com/Dao-AILab/flash-attention benchmarks/benchmark_flash_attention.py "
           "(also quoted in issue #477)",
           "f = 4 * batch * seqlen**2 * nheads * headdim // (2 if casual else 1); "
           "return f if mode == 'fwd' else (2.5 * f if mode == 'bwd' else 3.5 * f)"),
    Source("FA2-1059", "T. Dao, flash-attention issue #1059 (2024-07-16)",
           "https://github.com/Dao-AILab/flash-attention/issues/1059",
           "FA2 on A100 is already at around 70% theoretical max FLOPS"),
    Source("FA3", "Shah et al. 2024, FlashAttention-3, arXiv 2407.08608, abstract",
           "https://huggingface.co/papers/2407.08608 (abstract)",
           "with FlashAttention-2 achieving only 35% utilization on the H100 GPU. [...] "
           "FlashAttention-3, achieves speedup on H100 GPUs by 1.5-2.0x with FP16 reaching up "
           "to 740 TFLOPs/s (75% utilization), and with FP8 reaching close to 1.2 PFLOPs/s"),
    Source("TB2391", "pytorch/benchmark PR #2391 (commit ff65cb6), test plan",
           "https://github.com/pytorch/benchmark/pull/2391 "
           "(app.semanticdiff.com/gh/pytorch/benchmark/commit/ff65cb67...)",
           "(Batch, Heads, SeqLen, Dhead) ... flash_v3-tflops: (32, 16, 512, 128) 430.32 ... "
           "(1, 16, 16384, 128) 620.73 — GPU not named in this commit; the same operator's "
           "PR #2296 names H100; causal not stated"),
    Source("TB2296", "pytorch/benchmark PR #2296 (commit d5f0a12), test plan",
           "https://github.com/pytorch/benchmark/pull/2296",
           "Run with sdpa, triton_tutorial_flash_v2, and colfax_cutlass on H100: --batch 128 "
           "--n-heads 8 --d-head 128 ... SeqLen sdpa-latency sdpa-tflops ... 1024 1.91248 "
           "287.457 ... 16384 462.649 304.199 — latency in ms; causal not stated (the "
           "TFLOP/s match the non-causal 4·B·H·N²·d); SDPA's backend not stated"),
    Source("FA3-fig", "FlashAttention-3 paper, forward-speed bar charts (machine "
           "transcriptions of the chart images)",
           "subtext.edge.nugit.net/image/e27582d2... (hd128, chart A), .../4ec66909... "
           "(hd128, chart B), .../55f47a10... (hd64)",
           "Attention forward speed, head dim 128 (H100 80GB SXM5) — Standard attention / "
           "FlashAttention-2 / Triton / cuDNN / FlashAttention-3, TFLOPS/s per sequence length "
           "512..16k. The transcriptions do not say which chart is causal: A (standard 74-139) "
           "is read here as non-causal, B (standard 26-35, FA-3 292 at 512) as causal"),
)


# -- published figures and the predictions they are compared with -----------------------------
@dataclass(frozen=True)
class Comparison:
    source: str
    claim: str
    gpu: str
    workload: str
    published: tuple        # (value,) or (low, high)
    unit: str
    predict: object         # () -> (value,) or (low, high)


def utilization(algorithm, workloads, gpu, dtype="fp16"):
    return [tflops(algorithm, wl, gpu) / peak_tflops(gpu, dtype) * 100 for wl in workloads]


def fa2_a100_range(passes):
    """FA-2 over the README sweep (d 64/128, causal or not) on the A100 80GB."""
    u = utilization("flash2", sweep((64, 128), passes=passes), "a100-80gb")
    return min(u), max(u)


def fa2_a100_fwd_max():
    return (max(utilization("flash2", sweep((64, 128)), "a100-80gb")),)


def fa1_a100_range():
    u = utilization("flash1", sweep((64, 128)), "a100-80gb")
    return min(u), max(u)


def fa2_h100_max():
    return (max(utilization("flash2", sweep((64, 128, 256)), "h100-sxm")),)


def fa3_h100_max():
    return (max(tflops("flash3", wl, "h100-sxm") for wl in sweep((64, 128, 256))),)


def fa3_over_fa2_range():
    ratios = [predicted_seconds("flash2", wl, "h100-sxm")
              / predicted_seconds("flash3", wl, "h100-sxm") for wl in sweep((64, 128, 256))]
    return min(ratios), max(ratios)


def fa3_fp8_max():
    return (max(tflops("flash3", wl, "h100-sxm") for wl in sweep((64, 128, 256), dtype="fp8")),)


# pytorch/benchmark PR #2391: flash_v3 TFLOP/s at (batch, 16 heads, N, d 128), batch·N = 16k
TB2391_FA3 = {512: 430.32, 1024: 517.099, 2048: 565.544, 4096: 590.233, 8192: 614.234,
              16384: 620.73}
# pytorch/benchmark PR #2296: sdpa latency in ms at batch 128, 8 heads, d 128, on H100
TB2296_SDPA_MS = {1024: 1.91248, 2048: 7.49987, 4096: 29.4748, 8192: 122.297, 16384: 462.649}


def tb2391_workload(seq):
    return Workload(batch=TOKENS // seq, heads=16, seq_q=seq, head_dim=128)


def tb2296_workload(seq):
    return Workload(batch=128, heads=8, seq_q=seq, head_dim=128)


def comparisons() -> list[Comparison]:
    rows = [
        Comparison("FA2", "FA-2 fwd, % of peak (range over the benchmark)", "a100-80gb",
                   "README sweep, d 64/128, causal and not", (50, 73), "% of 312",
                   functools.partial(fa2_a100_range, "fwd")),
        Comparison("FA2", "FA-2 bwd, % of peak (range over the benchmark)", "a100-80gb",
                   "README sweep, d 64/128, causal and not", (50, 73), "% of 312",
                   functools.partial(fa2_a100_range, "bwd")),
        Comparison("FA2-1059", "FA-2 fwd, best % of peak", "a100-80gb",
                   "README sweep, d 64/128", (70,), "% of 312", fa2_a100_fwd_max),
        Comparison("FA2", "FlashAttention (v1) fwd, % of peak (range)", "a100-80gb",
                   "README sweep, d 64/128, causal and not", (25, 40), "% of 312",
                   fa1_a100_range),
        Comparison("FA3", "FA-2 fwd on H100, % of peak", "h100-sxm",
                   "FA-3 sweep, d 64/128/256 (best case)", (35,), "% of 989",
                   fa2_h100_max),
        Comparison("FA3", "FA-3 fp16 fwd, best TFLOP/s", "h100-sxm",
                   "FA-3 sweep, d 64/128/256, causal and not", (740,), "TFLOP/s",
                   fa3_h100_max),
        Comparison("FA3", "FA-3 over FA-2 fwd speedup (range)", "h100-sxm",
                   "FA-3 sweep, d 64/128/256, causal and not", (1.5, 2.0), "x",
                   fa3_over_fa2_range),
        Comparison("FA3", "FA-3 fp8 fwd, best TFLOP/s", "h100-sxm",
                   "FA-3 sweep in fp8, d 64/128/256", (1200,), "TFLOP/s", fa3_fp8_max),
    ]
    for n, value in TB2391_FA3.items():
        wl = tb2391_workload(n)
        rows.append(Comparison("TB2391", "FA-3 fp16 fwd TFLOP/s", "h100-sxm",
                               f"B {wl.batch}, H 16, N {n}, d 128", (value,), "TFLOP/s",
                               functools.partial(lambda w: (tflops("flash3", w, "h100-sxm"),), wl)))
    for n, ms in TB2296_SDPA_MS.items():
        wl = tb2296_workload(n)
        rows.append(Comparison("TB2296", "SDPA fwd (backend not stated) vs flash2, TFLOP/s "
                               "from the published ms", "h100-sxm",
                               f"B 128, H 8, N {n}, d 128 ({ms} ms)",
                               (paper_flops(wl) / (ms * 1e-3) / 1e12,), "TFLOP/s",
                               functools.partial(lambda w: (tflops("flash2", w, "h100-sxm"),), wl)))
    return rows


def ratio_text(pred: tuple, pub: tuple) -> str:
    """predicted / published; for ranges, low/low and high/high. Every published figure is a
    throughput (or a ratio of throughputs), so above 1 means the model is optimistic."""
    return " – ".join(f"{p / q:.2f}" for p, q in zip(pred, pub))


def value_text(values: tuple, unit: str) -> str:
    fmt = "{:.2f}" if unit == "x" else "{:.0f}"
    return "–".join(fmt.format(v) for v in values)


def comparison_table(fmt: str) -> str:
    rows = []
    for c in comparisons():
        pred = c.predict()
        rows.append([c.source, c.claim, c.gpu, c.workload, c.unit, value_text(c.published, c.unit),
                     value_text(pred, c.unit), ratio_text(pred, c.published)])
    return tabulate(rows, headers=["source", "figure", "GPU", "workload", "unit", "published",
                                   "predicted", "pred/pub"], tablefmt=fmt)


# -- the FlashAttention-3 charts (secondary: machine transcriptions) ----------------------------
# (chart, head dim, causal as read here) -> {N: (standard, FlashAttention-2, FlashAttention-3)}
FA3_CHARTS = {
    ("A", 128, False): {512: (74, 309, 467), 2048: (119, 362, 625), 8192: (139, 370, 646)},
    ("B", 128, True): {512: (26, 191, 292), 2048: (34, 298, 521), 8192: (35, 333, 602)},
    ("hd64", 64, False): {512: (52, 282, 333), 2048: (67, 318, 460), 8192: (73, 322, 496)},
}
# Chart A's FlashAttention-3 value at 512 is 467 in one transcription and 497 in another
# (they swap it with cuDNN's); the lower one is used.


def chart_table(fmt: str) -> str:
    rows = []
    for (chart, d, causal), values in FA3_CHARTS.items():
        for n, published in values.items():
            wl = paper_workload(n, d, causal)
            row = [chart, d, "causal" if causal else "non-causal", n]
            for algorithm, pub in zip(("standard", "flash2", "flash3"), published):
                pred = tflops(algorithm, wl, "h100-sxm")
                row.append(f"{pub} / {pred:.0f} ({pred / pub:.2f})")
            rows.append(row)
    return tabulate(rows, headers=["chart", "d", "read as", "N", "standard pub / pred (ratio)",
                                   "FA-2 pub / pred (ratio)", "FA-3 pub / pred (ratio)"],
                    tablefmt=fmt)


# -- what each mechanism contributes ----------------------------------------------------------
MECHANISMS = ("tc_path_derate", "overlap", "l2_cache", "wave_quantization", "memory_overlap",
              "separate_sfu", "launch_overhead")

ABLATION_CASES = (
    ("flash2", "h100-sxm", Workload(batch=4, heads=16, seq_q=4096, head_dim=128)),
    ("flash3", "h100-sxm", Workload(batch=4, heads=16, seq_q=4096, head_dim=128)),
    ("flash3", "h100-sxm", Workload(batch=4, heads=32, seq_q=4096, head_dim=64)),
    ("flash2", "a100-80gb", Workload(batch=4, heads=16, seq_q=4096, head_dim=128, causal=True)),
    ("standard", "a100-80gb", Workload(batch=4, heads=32, seq_q=4096, head_dim=64)),
    ("flash2", "h100-sxm", Workload(batch=2, heads=16, seq_q=8192, head_dim=128, passes="bwd")),
)


def ablation_table(fmt: str) -> str:
    rows = []
    for algorithm, gpu, wl in ABLATION_CASES:
        base = simulate(algorithm, wl, gpu, compute=False)
        causal = " causal" if wl.causal else ""
        row = [f"{algorithm} {wl.passes}", gpu,
               f"B{wl.batch} H{wl.heads} N{wl.seq_q} d{wl.head_dim}{causal}",
               f"{base.time.predicted_s * 1e3:.3f} ({base.time.bound})",
               f"{tflops(algorithm, wl, gpu):.0f}"]
        for m in MECHANISMS:
            off = predicted_seconds(algorithm, wl, gpu, TimingOptions(**{m: False}))
            row.append(f"{off / base.time.predicted_s:.2f}")
        rows.append(row)
    return tabulate(rows, headers=["algorithm", "GPU", "workload", "predicted ms (bound)",
                                   "TFLOP/s"] + [f"no {m}" for m in MECHANISMS], tablefmt=fmt)


# -- the FlashAttention-2 backward's L2 cliff ------------------------------------------------
def l2_cliff_table(fmt: str) -> str:
    rows = []
    for n in (2048, 4096, 8192, 16384):
        wl = paper_workload(n, 128, passes="bwd")
        r = simulate("flash2", wl, "h100-sxm", compute=False)
        main = [k for k in r.kernels if k.name == "flash2_bwd"][0]
        kt = [k for k in r.time.kernels if k.name == "flash2_bwd"][0]
        rows.append([n, wl.batch, f"{main.l2_working_set_bytes / 2**20:.1f}",
                     f"{(main.counters[0] + main.counters[1]) / 1e9:.1f}",
                     f"{kt.dram_bytes / 1e9:.1f}", f"{r.time.predicted_s * 1e3:.2f}",
                     kt.bound, f"{tflops('flash2', wl, 'h100-sxm'):.0f}"])
    return tabulate(rows, headers=["N", "batch", "L2 working set MiB (limit 25)",
                                   "requested GB", "DRAM GB", "predicted ms", "bound",
                                   "TFLOP/s"], tablefmt=fmt)


# -- what-ifs (GPU variants; nothing in hwmodels changes) ------------------------------------
def what_if_table(fmt: str) -> str:
    """CUDA-core ops at the instruction rate (half the FMA-counted fp32 peak)."""
    h100 = get_gpu("h100-sxm")
    half_fp32 = h100.replace(fp32_flops_per_s=h100.fp32_flops_per_s / 2)
    rows = []
    for algorithm, wl in (("flash2", paper_workload(4096, 128)),
                          ("flash3", paper_workload(4096, 128)),
                          ("flash3", paper_workload(4096, 64)),
                          ("flash3", paper_workload(4096, 256))):
        base = tflops(algorithm, wl, "h100-sxm")
        slow_s = simulate(algorithm, wl, half_fp32, compute=False).time.predicted_s
        slow = paper_flops(wl) / slow_s / 1e12
        rows.append([algorithm, f"N {wl.seq_q}, d {wl.head_dim}, B {wl.batch}, H {wl.heads}",
                     f"{base:.0f}", f"{slow:.0f}", f"{slow / base:.2f}"])
    return tabulate(rows, headers=["algorithm", "workload (H100)", "TFLOP/s as modelled",
                                   "other ops at fp32 peak / 2", "ratio"], tablefmt=fmt)


def sources_text() -> str:
    return "\n".join(f"- [{s.key}] {s.citation} — {s.where}: \"{s.quote}\"" for s in SOURCES)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--format", default="github", choices=("github", "simple", "plain"),
                    help="table format (tabulate): github = markdown")
    a = ap.parse_args(argv)
    sections = (
        ("Predicted vs published (pred/pub > 1: the model is optimistic)", comparison_table),
        ("FlashAttention-3 forward charts, H100 (TFLOP/s, published / predicted (ratio))",
         chart_table),
        ("Mechanisms: predicted time with one switch off / with all on", ablation_table),
        ("FlashAttention-2 backward on H100, d 128, B·N = 16k: the L2 cliff", l2_cliff_table),
        ("What-if: CUDA-core ops at half the FMA-counted fp32 peak (H100)", what_if_table),
    )
    for title, table in sections:
        print(f"\n## {title}\n")
        print(table(a.format))
    print("\n## Sources\n")
    print(sources_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
