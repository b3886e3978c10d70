"""The timing model itself, tabulated: its constants and what each mechanism contributes.

Which source set each GPU constant (``constants_table``), the predicted time with one
``TimingOptions`` switch off for a set of cases (``ablation_table``), and the main kernel's
terms for the same cases (``breakdown_table``).
"""
from __future__ import annotations

import dataclasses

from tabulate import tabulate

from attnsim.simulate import simulate
from attnsim.workload import Workload
from hwmodels.timing import TimingOptions

from . import flashmla
from .charts import CHART_OPTIONS
from .figures import FLASH1_RELEASE
from .predictions import (PAGE_GPUS, model_gpu, paper_workload, predicted_seconds,
                          with_published_program)


# -- which source set which constant -------------------------------------------------------
CONSTANTS = (
    ("sustained_clock_hz", "SM clock under tensor load (scales SFU, FMA, shared memory, issue)",
     lambda g: f"{g.sustained_clock / 1e6:.0f} MHz",
     "A100: HPL-CLK (NVIDIA's HPL Rpeak clock at the power limit; a third party watched "
     "an A100 fall from 1410 to about 1200 MHz under FA-2's forward, FA2-A100-LOG, not used: "
     "attention runs only validate); H100 SXM5 and PCIe: the "
     "tensor peak's clock (FA3 §3.3), no measured sustained clock found; the FA-3 paper's "
     "benchmarks (its charts and Table 2) fix the SXM5's clock at 1830 MHz (FA3-clock)"),
    ("tensor_gemm_fraction", "best large-GEMM fp16/bf16 throughput / dense peak",
     lambda g: f"{g.tensor_gemm_fraction:.3f}", "MAMF (ml-engineering, mamf-finder.py); "
     "H100 PCIe: MAG-MAMF (a second MAMF search, bf16 499.5 of 756 TFLOP/s)"),
    ("tensor_fp8_gemm_fraction", "the same for fp8",
     lambda g: f"{g.tensor_fp8_gemm_fraction:.3f}" if g.tensor_fp8_flops_per_s else "—",
     "MAMF; H100 PCIe: its bf16 fraction times the SXM5's fp8-to-bf16 ratio (no fp8 GEMM "
     "measured on a PCIe board)"),
    ("tensor_tf32_gemm_fraction", "the same for tf32 (fp32 inputs)",
     lambda g: f"{g.gemm_fraction('tf32'):.3f}", "TC-BENCH (cuBLAS TF32 on H100 SXM5, "
     "417.64 of 494.7 TFLOP/s); A100 and H100 PCIe: the fp16/bf16 fraction, no TF32 "
     "measurement found"),
    ("mma_sync_fraction_of_peak", "mma.sync throughput / wgmma's, one microbenchmark",
     lambda g: f"{g.mma_sync_fraction_of_peak:.3f}", "LUO-MMA (H800: mma.sync 494 of 757 "
     "TFLOP/s over wgmma's ~96%, as quoted; confirms FA3 §1's ~2/3); 1 on Ampere"),
    ("hbm_achievable_fraction", "copy/stream bandwidth / datasheet",
     lambda g: f"{g.hbm_achievable_fraction:.3f}", "A100 and H100 PCIe: STREAM (RRZE "
     "gpu-benches triad, 1794 of 2039 GB/s and 1832 of 2000); H100 SXM5: QUACK (a streaming "
     "kernel's DRAM throughput by Nsight Compute, 3.01 of 3.35 TB/s)"),
    ("l2_achievable_fraction", "L2 read bandwidth / the architectural figure",
     lambda g: f"{g.l2_achievable_fraction:.3f} ({g.l2_bytes_per_s() / 1e12:.1f} TB/s)",
     "L2-RRZE (RRZE gpu-benches gpu-l2-cache, a 16.5 MB data set: A100 80GB 5.45 TB/s; "
     "H100 PCIe 6.91 TB/s; H100 SXM5: a GH200's 9.77 TB/s, the same GH100 L2)"),
    ("fp32_lanes_per_sm", "FP32 FMA lanes per SM", lambda g: f"{g.fp32_lanes}", "WP-SM"),
    ("alu_lanes_per_sm", "ALU lanes per SM (max/compare/select, fp32 narrowing conversions)",
     lambda g: f"{g.alu_lanes_per_sm}", "WP-SM (16 INT32 units per sub-partition); NCU-PIPES "
     "(Nsight Compute: FP32 arithmetic on the FMA pipe, FP32-to-FP16 conversion on the ALU)"),
    ("sfu_ops_per_clock_per_sm", "exp/log per clock per SM",
     lambda g: f"{g.sfu_ops_per_clock_per_sm}", "A100-WP; FA3 §1 (3.9 TFLOP/s)"),
    ("smem_bytes_per_clock_per_sm", "shared-memory bytes per clock per SM",
     lambda g: f"{g.smem_bytes_per_clock_per_sm}", "SMEM-BK (CUDA guide: 32 banks x 4 B)"),
    ("issue_per_clock_per_sm", "warp-instructions issued per clock per SM",
     lambda g: f"{g.issue_per_clock_per_sm}", "WP-SM (4 schedulers)"),
    ("dram_latency_s", "L2-miss load latency",
     lambda g: f"{g.dram_latency_s * 1e9:.0f} ns", "LUO-LAT (pointer chasing at 2x L2: "
     "A100 PCIe 523 cycles at 1395 MHz, H800 PCIe 598 cycles at 1755 MHz)"),
    ("stream_curve", "a streaming thread's DRAM round trip under load: round time at "
     "the lightest and the heaviest load of an occupancy sweep",
     lambda g: "{:.0f}–{:.0f} ns".format(*(1e9 * g.stream_round_curve()[1][[0, -1]])),
     "STREAM-OCC (RRZE gpu-benches gpu-stream's 'scale' kernel from 64 to 2048 threads an "
     "SM: A100 80GB and H100 PCIe their own sweeps; H100 SXM5: GH200's, the same GH100 "
     "with 132 SMs and HBM3)"),
    ("l2_latency_clocks", "L2-hit load latency (clocks)",
     lambda g: f"{g.l2_latency_clocks:g}", "LUO-LAT (the same chase within L2: A100 PCIe "
     "202.8 cycles, H800 PCIe 264.5 cycles)"),
    ("mma/smem/sfu/fp_latency_clocks", "latency of an MMA, a shared-memory load, an exp2, "
     "a dependent fp32 op (clocks)",
     lambda g: f"{g.mma_latency_clocks:g} / {g.smem_latency_clocks:g} / "
               f"{g.sfu_latency_clocks:g} / {g.fp_latency_clocks:g}",
     "ACCEL-SIM (Accel-Sim's tested A100 and H100 configurations, tuned by its "
     "microbenchmarks; the H100 PCIe takes the H100's)"),
    ("shfl_latency_clocks", "latency of a warp shuffle round: a shuffle and the op that "
     "combines it (clocks)", lambda g: f"{g.shfl_latency_clocks:g}",
     "KW-SHFL (H200, clock64: shfl.bfly + dependent fadd 29.00, the GH100 SM's); GMB-GA100 "
     "(a GA100 mining board, in ns: 17.03 a shuffle, in clocks by its add chain's 4, plus "
     "the add)"),
    ("barrier_latency_clocks + barrier_clocks_per_warp x W",
     "latency of a CTA barrier met by W warps (clocks)",
     lambda g: f"{g.barrier_latency_clocks:g} + {g.barrier_clocks_per_warp:g} W",
     "AMORA-BAR (H100 SXM5, clock64, 2-32 warps: 41.16 + 2.045 W, less the loop's own "
     "shared-memory load and add, 29 + 4); GMB-GA100 (4 warps, 20.80 ns, in clocks by its "
     "add chain; no slope)"),
    ("l2_atomic_bytes_per_s", "fp32 atomic (RED) throughput in L2",
     lambda g: f"{g.atomic_bytes_per_s / 1e12:.1f} TB/s", "NSIGHT-AT (read-modify-write at "
     "L2 bandwidth / 2)"),
    ("launch_overhead_s", "kernel launch (host pipeline)",
     lambda g: f"{g.launch_overhead_s * 1e6:.0f} µs", "modelling assumption (hwmodels/gpus.py)"),
)


def constants_table(fmt: str) -> str:
    gpus = [model_gpu(name) for name in PAGE_GPUS]
    rows = [[name, what, *(value(g) for g in gpus), source]
            for name, what, value, source in CONSTANTS]
    return tabulate(rows, headers=["GPU field", "what", "A100 SXM4 80GB", "H100 SXM5",
                                   "H100 PCIe", "set by (source keys in hwmodels/gpus.py)"],
                    tablefmt=fmt)


# -- what each mechanism contributes ----------------------------------------------------------
MECHANISMS = tuple(f.name for f in dataclasses.fields(TimingOptions) if f.name != "interconnect")

ABLATION_CASES = (
    ("flash2", "a100-80gb", paper_workload(4096, 128)),
    ("flash2", "a100-80gb", paper_workload(4096, 128, passes="bwd")),
    ("flash2", "h100-sxm", paper_workload(4096, 128)),
    ("flash3", "h100-sxm", paper_workload(4096, 128)),
    ("flash3", "h100-sxm", paper_workload(512, 128)),
    ("flash3", "h100-sxm", paper_workload(4096, 64)),
    ("flash3", "h100-sxm", paper_workload(4096, 128, dtype="fp8")),
    ("standard", "h100-sxm", paper_workload(4096, 128)),
    ("gqa", "h100-sxm", Workload(batch=1, heads=32, kv_heads=8, seq_q=1, seq_k=8192,
                                 head_dim=128, decode=True)),
    # a decode step through FlashAttention-2: one query row of a 128-row tile (row_padding),
    # the Flash-Decoding post's FlashAttention v2.0.9 at B 1
    ("flash2", "a100-80gb", Workload(batch=1, heads=16, kv_heads=2, seq_q=1, seq_k=65536,
                                     head_dim=128)),
    # FlashMLA's compute-bound shape: two packs of 64 heads share each latent through L2
    ("mla", "h100-sxm", flashmla.workload(heads=128, new_tokens=1, cache=4096),
     (("path", "absorbed"),)),
    ("standard", "h100-sxm", paper_workload(512, 128), CHART_OPTIONS["standard"]),
    # rows longer than 1024: ATen's CTA-a-row softmax, whose library routines the A100's
    # 64 fp32 lanes an SM feel (accurate_math)
    ("standard", "a100-80gb", paper_workload(2048, 64, passes="fwd+bwd"),
     CHART_OPTIONS["standard"]),
    ("flash1", "a100-80gb", paper_workload(4096, 64, passes="fwd+bwd"), FLASH1_RELEASE),
    # the causal mask's broadcast add: ATen's legacy loop, a DRAM round trip a round at the
    # latency its load raises (loaded_latency)
    ("standard", "h100-sxm", paper_workload(8192, 128, True), CHART_OPTIONS["standard"]),
    # the staged loads at that latency, which the H100's faster steps leave uncovered
    ("flash1", "h100-sxm", paper_workload(4096, 64, passes="fwd+bwd"), FLASH1_RELEASE),
)


def ablation_case(case) -> tuple:
    """(algorithm, gpu, workload, options as (name, value) pairs, row label)."""
    algorithm, gpu, wl, *rest = case
    options = with_published_program(algorithm, tuple(rest[0]) if rest else ())
    program = dict(options).get("program")
    shown = program or ("release" if dict(options).get("tiles") == "release" else None)
    label = f"{algorithm}{f' ({shown})' if shown else ''} {wl.passes} {wl.dtype}"
    return algorithm, gpu, wl, options, label


def ablation_table(fmt: str) -> str:
    rows = []
    for case in ABLATION_CASES:
        algorithm, gpu, wl, options, label = ablation_case(case)
        base = simulate(algorithm, wl, gpu, compute=False, options=dict(options))
        causal = " causal" if wl.causal else ""
        shape = (f"decode B{wl.batch} H{wl.heads}/{wl.kv_heads} N{wl.seq_k}" if wl.decode else
                 f"B{wl.batch} H{wl.heads} N{wl.seq_q} d{wl.head_dim}{causal}")
        main = max(base.time.kernels, key=lambda k: k.total_s)
        row = [label, gpu, shape, f"{base.time.predicted_s * 1e3:.3f}", main.mechanism]
        for m in MECHANISMS:
            off = predicted_seconds(algorithm, wl, gpu, TimingOptions(**{m: False}), options)
            row.append(f"{off / base.time.predicted_s:.2f}")
        rows.append(row)
    return tabulate(rows, headers=["algorithm", "GPU", "workload", "predicted ms",
                                   "set by"] + [f"no {m}" for m in MECHANISMS], tablefmt=fmt)


def breakdown_table(fmt: str) -> str:
    """The main kernel's terms for the ablation cases: what each pipe and mechanism costs."""
    rows = []
    for case in ABLATION_CASES:
        algorithm, gpu, wl, options, label = ablation_case(case)
        r = simulate(algorithm, wl, gpu, compute=False, options=dict(options))
        k = max(r.time.kernels, key=lambda t: t.total_s)
        us = lambda s: f"{s * 1e6:.0f}"  # noqa: E731
        rows.append([label, gpu, k.name, us(k.matmul_s),
                     us(k.smem_s), us(k.exp_s), us(k.other_s), us(k.alu_s), us(k.issue_s),
                     us(k.step_latency_s), f"{us(k.chain_s)} ({k.chains})", us(k.hbm_s),
                     us(k.l2_s), us(k.latency_s),
                     us(k.fixed_s), f"{k.quantization:.2f}", us(k.total_s), k.mechanism])
    return tabulate(rows, headers=["case", "GPU", "kernel", "tensor µs", "smem", "SFU", "FMA",
                                   "ALU", "issue", "step latency", "chain (chains/SM)", "HBM",
                                   "L2", "latency",
                                   "fixed", "waves ×", "total µs", "set by"], tablefmt=fmt)
