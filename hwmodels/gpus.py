"""GPU specifications: frozen dataclasses of documented, sourced numbers.

Every number below carries its source. Abbreviations used in the comments:

* [A100-WP]  NVIDIA A100 Tensor Core GPU Architecture whitepaper (2020), Table 1 / Table 3.
* [A100-DS]  NVIDIA A100 Tensor Core GPU datasheet (2021), "Technical Specifications".
* [H100-WP]  NVIDIA H100 Tensor Core GPU Architecture whitepaper (2022), Table 3 / Table 2.
* [H100-DS]  NVIDIA H100 Tensor Core GPU datasheet (2023), "Technical Specifications".
* [H200-DS]  NVIDIA H200 Tensor Core GPU datasheet (2024).
* [TUNE-A]   NVIDIA Ampere Tuning Guide, section 1.4.1.1 (shared memory per SM / per block).
* [TUNE-H]   NVIDIA Hopper Tuning Guide, section 1.4.1.1 (shared memory per SM / per block).
* [CUDA-CC]  CUDA C++ Programming Guide, "Compute capabilities" table (threads, blocks,
             registers per SM for cc 8.0 and 9.0; at most 255 32-bit registers per thread).
* [A100-L2]  A100 whitepaper, "L2 cache": 5120 bytes/clk of L2 read bandwidth (2.3x V100's).
* [FA3]      Shah et al., FlashAttention-3 (arXiv 2407.08608), Section 1 and Section 3:
             H100 SXM5 special-function throughput 3.9 TFLOP/s; the pre-Hopper ``mma.sync``
             instruction reaches only about 2/3 of the Hopper tensor-core peak, ``wgmma``
             is required for the rest (the field comes from a microbenchmark, [LUO-MMA]).
             Its hardware table gives the H100 SXM5's L2 as 50 MiB at about 12 TB/s (the
             figure shared/FACTS.md records). Appendix C.1 (both versions, May and October
             2024): "To reduce variability, we fix the GPU clock speed to 1830MHz (clock speed
             used to calculate the 989 TFLOPS FP16 theoretical max throughput)".

Achievable rates (timing model v2; measured by microbenchmarks, never fitted to attention):

* [MAMF]     S. Bekman, ml-engineering, compute/accelerator/README.md, "Maximum Achievable
             Matmul FLOPS comparison table" (mamf-finder.py: best mean TFLOPS of a torch
             ``matmul`` over a sweep of large shapes, 50 warm-up + 100 timed iterations): BF16
             A100 SXM 271.2 of 312 (86.9%), H100 SXM 794.5 of 989 (80.3%; "H200 is the same");
             FP8 (e4m3) H100 SXM 1402.6 of 1979 (70.9%), H200 SXM 1453.4 of 1979 (73.4%).
             These are cuBLAS kernels (``mma.sync`` on Ampere, ``wgmma`` on Hopper) running at
             whatever clock the GPU sustains under the load, so they carry the power limit.
* [MAG-MAMF] mag-/gpu_benchmark, README "Stats" (2024-10; its mamf-finder.py: the fastest of
             repeated bf16 ``torch.mm`` calls, shapes searched with Optuna): NVIDIA H100 PCIe
             499.5 TFLOP/s at 6912x16384x2048, 66.1% of its 756 dense; in the same table H100
             SXM 80GB 821.2 (83.0%) and A100 SXM 267.9 (85.9%), beside [MAMF]'s 80.3% and
             86.9%. The one large-GEMM measurement found for the 350 W PCIe board; it has no
             fp8 row.
* [TC-BENCH] waynehacking8/blackwell-tensorcore-kernels, results/bench.csv, rows of "NVIDIA H100
             80GB HBM3" (the SXM5 board, sm_90): cuBLAS ``cublasGemmEx`` with FP32 inputs and
             TF32 compute on square matrices, best of 512-8192: 417.64 TFLOP/s at 8192 (84.4%
             of the 494.7 dense TF32 peak). The same file's fp16 cuBLAS row reaches 761.71
             TFLOP/s (77.0%), below MAMF's 80.3%: the fp16 fraction keeps MAMF's figure. No A100
             TF32 measurement was found; the A100 prices TF32 at its fp16/bf16 fraction.
* [HPL-CLK]  G. Lockwood, "Peak FLOPS" (glennklockwood.com/garden/peak-FLOPS): NVIDIA computes
             HPL Rpeak at the clock sustainable at the power limit while running HPL, 1305 MHz
             for A100 (boost 1410 MHz).
* [WP-SM]    A100 / H100 whitepapers, SM diagrams: 4 SM sub-partitions, each with one warp
             scheduler that dispatches one warp-instruction per clock; 16 (A100) / 32 (H100)
             FP32 lanes per sub-partition, i.e. 64 / 128 FP32 FMA per clock per SM.
* [NCU-PIPES] NVIDIA Nsight Compute, Kernel Profiling Guide, "Metrics Decoder", Pipelines:
             the FMA pipe "processes most FP32 arithmetic (FADD, FMUL, FMAD)"; the ALU pipe
             executes "most bit manipulation and logic instructions" and integer instructions
             other than IMAD/IMUL, and "on NVIDIA Ampere architecture chips, the ALU pipeline
             performs fast FP32-to-FP16 conversion". fp32 max/min (FMNMX), compare (FSETP) and
             select (FSEL) are not FMA-pipe arithmetic; ncu's per-pipe instruction counters
             (``smsp__inst_executed_pipe_alu``) on a GPU confirm where they go. The ALU's width:
             the whitepapers' SM diagrams ([WP-SM]) draw 16 INT32 units per sub-partition on
             both GA100 and GH100, 64 per SM. PTX ``cvt.rn.f16x2.f32`` (sm_80+) and
             ``cvt.rn.satfinite.e4m3x2.f32`` (sm_89+) convert two fp32 values per instruction
             (PTX ISA, "cvt"), so a narrowing conversion costs half an ALU lane-op per element.
* [SMEM-BK]  CUDA C++ Programming Guide, "Shared Memory" (compute capability 5.x and later):
             32 banks of 4 bytes, each bank serves one 32-bit word per clock: 128 B/clk/SM.
* [LUO-LAT]  Luo et al., "Dissecting the NVIDIA Hopper Architecture through Microbenchmarking
             and Multiple Level Analysis" (arXiv 2501.12084), random-access latency figure; its
             data: HPMLL/NVIDIA-Hopper-Benchmark, RegularUnits/random_latency/h800_pcie.txt and
             a100_pcie.txt (one thread pointer-chasing a randomly ordered buffer; latency per
             load). DRAM latency = the 108,208 KiB row (about twice L2: every load misses L2,
             while the footprint stays far from the multi-GB rows where TLB misses add ~10%):
             H800 PCIe 597.8 cycles at 1755 MHz = 340.6 ns, A100 PCIe 523.3 cycles at 1395 MHz
             = 375.1 ns. Cross-checks: RRZE-HPC/gpu-benches gpu-latency (same method) A100 80GB
             369-383 ns at 60-120 MB, GH200 (HBM3) 310-331 ns at 94-117 MB. Held in seconds:
             DRAM latency is set by the memory, not by the SM clock. L2 hit latency = the
             plateau past L1 (0.4 to 17 MB, the near half of L2): A100 PCIe 202.8 cycles
             (145.4 ns at 1395 MHz), H800 PCIe 264.5 cycles (150.7 ns at 1755 MHz); held in
             clocks, as the SM and L2 clocks set it. An H100 SXM5 agrees: its working-set
             sweep reads 264.518 cycles at 512 KB, and its pointer chase 645.9 cycles from
             DRAM (hotneutron/amora, reports/nvidia/hopper/probes-h100-80g.md, clock64;
             that report's headline L2 figure, 329.9 cycles at 4 MB, reaches the far half).
* [STREAM]   RRZE-HPC/gpu-benches, gpu-stream (README "gpu-stream"; data gpu-stream/*.txt): the
             STREAM triad A[i] = B[i] + D[i]*C[i] (3 load streams, 1 store) at 100% occupancy:
             A100 40GB 1358 of 1555 GB/s (87.3%), A100 80GB 1794 of 2039 GB/s (88.0%), H100 PCIe
             1832 of 2000 GB/s (91.6%), GH200 3783 of 4000 GB/s (94.6%; its 96 GB HBM3 part,
             whose 'init' store stream reaches 3942 GB/s). No H100 SXM5 or H200 row is
             published: the H200 takes GH200's, the same GH100 die with HBM3 (the H100 SXM5
             has a measurement of its own, [QUACK]).
* [QUACK]    W. Guo, T. Zadouri, T. Dao, "Getting Memory-bound Kernels to Speed-of-Light"
             (Dao-AILab/quack, media/2025-07-10-membound-sol.md), on one H100 80GB HBM3 (SXM5,
             "DRAM peak throughput = 3.35 TB/s"): a streaming kernel that loads each byte
             once with 128-bit vector loads and stores each result once (softmax over
             16K x 131K fp32; RMSNorm, softmax and cross-entropy alike) reaches "DRAM
             throughput (device memory throughput) at 3.01 TB/s which is 89.7% of the peak",
             measured by Nsight Compute, and "about 3 TB/s (~90% peak) for a reduction
             dimension larger than 4k". The H100 SXM5's own copy-like measurement, preferred
             to GH200's triad (another board: six HBM3 stacks at 4 TB/s against five at 3.35).
* [STREAM-OCC] The same benchmark's occupancy sweep (gpu-stream: "Measures the bandwidth of
             several streaming kernels for varying occupancy"): each thread of its 'scale'
             kernel, A[i] = B[i] * 1.2, loads one 8-byte double, stores one and exits, so an
             SM holding t threads keeps t x 16 bytes of one round in flight; the sweep raises
             t from 64 to 2048 threads per SM (two blocks per SM). One round then takes
             SMs x t x 16 B / bandwidth: about 0.6 us at the lightest load, over 1 us near
             saturation, the DRAM latency as the load raises it (queueing) plus a thread's
             own issue, store and exit. Rows read (threads per SM: 'scale' GB/s):
             A100 80GB (108 SMs; xxrjun/gpu-benches, a fork of RRZE-HPC's, gpu-stream/
             a100_80.txt at 977b0870) 64: 159, 128: 303, 256: 579, 512: 1025, 768: 1379,
             1024: 1577, 1536: 1682, 2048: 1737; A100 40GB (the same fork at d0c041ed,
             a100_40.txt) 151, 292, 548, 956, 1245, 1338, 1367, 1382; H100 PCIe (114 SMs;
             te42kyfo/gpu-benches cuda-stream/h100_pcie.txt at cdcc732d, the same kernels)
             183, 341, 607, 1037, 1378, 1583, 1666, 1704; GH200 (132 SMs, HBM3 at 4 TB/s;
             gh200.txt at 977b0870) 237, 464, 854, 1397, 1868, 2269, 2854, 3174. Each board's
             utilization is measured against its own best stream rate in the same run: the
             triad at full occupancy (A100 80GB 1794, H100 PCIe 1832, GH200 3783 GB/s;
             the A100 40GB's scale tops its triad, 1382 against 1358, and is its own top).
             The H100 SXM5 takes GH200's sweep (the same GH100 with 132 SMs and HBM3, as
             [L2-RRZE]), the H200 too.
* [LUO-MMA]  Luo et al. 2025 (arXiv 2501.12084), tensor-core throughput of the register-
             resident ``mma.sync.m16n8k16`` fp16 benchmark on every SM (HPMLL/NVIDIA-Hopper-
             Benchmark, TensorCores/mma/m16n8k16/run_m16n8k16_all_SM.cu: f16 inputs, f32 or
             f16 accumulators, 4 independent MMAs per warp) against ``wgmma`` on the H800:
             mma.sync 494 of 757 TFLOP/s (65.3% of the H800 PCIe's dense fp16 peak), wgmma
             about 96%, as quoted from the paper by waynehacking8/blackwell-tensorcore-kernels
             (README, "Measured on H100 80GB SXM5"); the paper's own table was not readable
             here. Both rates come from the same board in the same study, so their ratio
             0.653 / 0.96 = 0.680 is free of its clock and power limit: that ratio is the field
             (the model applies it on top of the measured wgmma GEMM fraction [MAMF]). It
             confirms FlashAttention-3's "about 2/3" [FA3] rather than a lower ceiling.
             What else is known of that study, from transcriptions of it (its tables could
             not be opened here): the board is an H800 PCIe (114 SMs, 1755 MHz at most,
             350 W); 494.4 TFLOP/s is its m16n8k16 fp16 row, while the paper's average over
             all its mma.sync shapes and types is 62.9% of peak (0.629 / 0.96 = 0.655); the
             wgmma 96% (729.3 of 756.5, m64n256k16) is with zero-filled operands, and random
             operands bring the fp32-accumulating wgmma to 665.4 (88%) on that power-capped
             board. N >= 64 wgmma shapes run within about 1% of each other (728.5 at N = 128,
             719.6 at N = 64).
* [L2-RRZE]  RRZE-HPC/gpu-benches, gpu-l2-cache (README "gpu-l2-cache"; data
             gpu-l2-cache/a100_80.txt, h100_pcie.txt, h200.txt): 200,000 blocks of 1024 threads
             each read a 64 KiB slice (of fp64 pairs) from a data set that fits in L2, so every
             load is served by L2 ("this benchmark explicitly does not target the L1 caches");
             effective bandwidth = bytes read / time. The row at a 16,896 kB data set: a third
             of either L2, past the L1 effects below 2 MB and below the 20 / 25 MB of one of
             the two L2 halves, where (the README says) data is replicated in both halves, as
             the working sets the model lets L2 keep are (half of L2, ``hwmodels.timing``):
             A100 80GB 5447.7 GB/s (75.5% of the whitepaper's 5120 B/clk at 1.41 GHz), H100
             PCIe 6912.2 GB/s, and 9765.2 GB/s in the file named h200.txt. That file is the
             repository's GH200: its stream results carried the same "h200" name until they
             were renamed gh200 (commit d0c041e, 2024-09; their 3.9 TB/s copy is the GH200's
             4 TB/s HBM3), and its L2 plateau ends at 44-48 MB, a 50 MB L2. The H100 SXM5 and
             the H200 take it: the same GH100 die, 132 SMs and 50 MB of L2 at the same
             1980 MHz maximum clock; an L2-resident read never reaches the HBM, the part in
             which the boards differ.
* [ACCEL-SIM] Accel-Sim (Khairy et al., ISCA 2020), the configurations it validates against
             the real boards, accel-sim/gpgpu-sim_distribution
             configs/tested-cfgs/SM80_A100/gpgpusim.config and SM90_H100/gpgpusim.config,
             whose latencies its tuner (util/tuner/GPU_Microbenchmark: one dependent chain
             of the instruction, timed with clock(), printing the config line) measured:
             tensor-core MMA ``-ptx_opcode_latency_tesnor`` 25 (A100) / 24 (H100) clocks;
             shared memory ``-gpgpu_smem_latency`` 28 / 29; special-function unit
             ``-ptx_opcode_latency_sfu`` 23 / 23; fp32 add, max, multiply, FMA
             ``-ptx_opcode_latency_fp`` 4 / 4. An H100 SXM5 measured by other probes agrees
             (hotneutron/amora, reports/nvidia/hopper/probes-h100-80g.md, clock64): a
             dependent ``wmma`` m16n16k16 (two HMMAs) 24.46 clocks, a shared-memory chase
             29.01, a dependent FMA 4.38 with its loop. No warp-shuffle or barrier latency is
             given there: those come from [KW-SHFL], [AMORA-BAR] and [GMB-GA100].
             ``benchmarks/gpu_microbench.py`` measures all six on the GPU at hand (dependent
             chains timed with clock64; a loop of barriers met by 8 warps) and writes them to
             a GPU file.
* [KW-SHFL]  new-TonyWang/KernelWiki, experience record "2026 04 16 Warp Primitives" (probe
             artifacts/experience/hw-probes/shfl-sync-bfly/warp_reduce_probe.cu, commit
             a0fc178a), measured on an "NVIDIA H200" (sm_90a, CUDA 12.9): one warp, clock64
             around 128 unrolled butterfly reductions (``__shfl_xor_sync`` then a dependent
             ``fadd``, 5 a reduction), median of 4096 trials (p10 = p90 = median): "29.00
             cycles per shfl_xor_sync" and 144.98 a 5-step reduction. That pair is the
             step-latency term's shuffle round (a row's max or sum across a quad: a shuffle,
             then the op that combines it), so ``shfl_latency_clocks`` = 29.0 on the GH100
             SM (the H100 SXM5, the H100 PCIe and the H200 share it). The record quotes a bare
             shuffle chain at 23.83 cycles from a baseline it does not show.
* [AMORA-BAR] hotneutron/amora, reports/nvidia/hopper/probes-h100-80g.md (commit 307c4098),
             section synchronization.barrier_latency, on an "NVIDIA H100 80GB HBM3" (the SXM5
             board): one CTA loops 4096 times over ``if (threadIdx.x == 0) s += 1;
             __syncthreads();`` (s in shared memory), clock64, median of 32 launches:
             45.27, 49.28, 57.29, 74.30, 106.44 cycles a barrier at 2, 4, 8, 16, 32 warps,
             41.16 + 2.045 clocks a warp by least squares (within 0.43 clocks of every
             point). Each round also holds thread 0's dependent shared-memory load and
             integer add before the barrier (29 + 4 clocks at the H100's load and add
             latencies, [ACCEL-SIM]), so the barrier's own latency is 8.2 + 2.045 clocks a
             warp (``barrier_latency_clocks``, ``barrier_clocks_per_warp``); the store after
             the add may still be in it, so this is an upper bound.
* [GMB-GA100] arabel1a/gpu-micro-bench, results/ctrl/NVIDIA_Graphics_Device.json and
             results/arithm/results.md (commit 1bd88ec6), a GA100 board (sm_80, 70 SMs; the
             repository's plan.md names it a CMP 170HX, a GA100 sold for mining, not an
             A100): one CTA of 4 warps, each a dependent chain of 8 instructions a loop
             iteration, wall-clock ns an instruction: ``shfl.sync.bfly`` 17.03 ns,
             ``bar.sync 0`` (the 4 warps, nothing between) 20.80 ns, ``add.f32`` 3.431 ns.
             No clock is recorded, so the clock is the one at which the add's chain runs at
             its 4 clocks ([ACCEL-SIM] SM80_A100; 1.17 GHz): a shuffle 19.9 clocks, a
             shuffle round (with its add) 23.9, a barrier of 4 warps 24.2. The GA100 SM is
             the A100's; the board, its clock and its firmware are not, and its ``mul.f32``
             chain (3.044 ns, also 4 clocks) would put them at 22.4 and 27.3: a weaker
             source than the H100's. No sweep over warps was published for this SM
             (``barrier_clocks_per_warp`` 0: the 4-warp figure for every CTA).
* [NSIGHT-AT] NVIDIA Nsight VSE documentation, "Memory Statistics - Atomics": on compute
             capability >= 3.x "many atomics can be performed ... nearly as quickly as memory
             loads"; a reduction (RED, FA-2's dQ update) is a read-modify-write executed in the
             L2 slice, i.e. one read and one write of L2 bandwidth per atomic byte.

Peak tensor-core numbers are *dense* (no 2:4 sparsity). Bandwidths are decimal
(1 GB/s = 1e9 B/s) as datasheets state them; capacities in bytes.

Adding a GPU: add a ``GPU(...)`` below (or write a TOML file, see ``hwmodels.gpu_file``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

# The GPU field giving the latency, in clocks, of each event a tile step's dependency chain
# waits on (``KernelRecord.step_events``, ``algorithms.kernels.step_latency``).
STEP_EVENT_LATENCY_FIELDS = {"mma": "mma_latency_clocks", "smem": "smem_latency_clocks",
                             "sfu": "sfu_latency_clocks", "fp": "fp_latency_clocks",
                             "shfl": "shfl_latency_clocks", "bar": "barrier_latency_clocks"}

# [STREAM-OCC]: a thread of the sweep's 'scale' kernel loads one 8-byte double and stores one.
STREAM_ROUND_BYTES = 16

# [STREAM-OCC] rows at 64, 128, 256, 512, 768, 1024, 1536 and 2048 resident threads per SM.
STREAM_SWEEP_THREADS = (64, 128, 256, 512, 768, 1024, 1536, 2048)


def _sweep(*gb_per_s: float) -> tuple:
    """The occupancy sweep's 'scale' rates (GB/s) as (threads per SM, bytes/s) rows."""
    return tuple((t, rate * 1e9) for t, rate in zip(STREAM_SWEEP_THREADS, gb_per_s, strict=True))


# Bytes per element of each storage dtype the simulator counts.
DTYPE_BYTES = {"fp32": 4, "tf32": 4, "fp16": 2, "bf16": 2, "fp8": 1}


class MissingUnitError(ValueError):
    """The GPU lacks a unit the workload needs (fp8 tensor cores on an A100): that GPU cannot
    run it, which a comparison of several GPUs reports rather than fails on."""


def dtype_bytes(dtype: str) -> int:
    """Storage bytes per element of ``dtype`` (fp32, tf32, fp16, bf16, fp8)."""
    try:
        return DTYPE_BYTES[dtype]
    except KeyError:
        raise ValueError(
            f"unknown dtype {dtype!r}; valid dtypes: {', '.join(DTYPE_BYTES)}") from None


@dataclass(frozen=True)
class GPU:
    """One GPU model. Field names carry their units."""

    name: str                                  # short name used on the command line
    full_name: str
    sm_count: int
    clock_hz: float                            # sustained boost clock for tensor work
    smem_bytes_per_sm: int                     # max shared memory configurable per SM
    smem_bytes_per_block: int                  # max shared memory one CTA may use (opt-in)
    register_bytes_per_sm: int
    max_threads_per_sm: int
    max_ctas_per_sm: int
    l2_bytes: int
    l2_bandwidth_bytes_per_s: float            # aggregate L2 read bandwidth
    hbm_bytes: int
    hbm_bandwidth_bytes_per_s: float
    tensor_fp16_flops_per_s: float             # dense
    tensor_bf16_flops_per_s: float             # dense
    tensor_tf32_flops_per_s: float             # dense
    tensor_fp8_flops_per_s: float              # dense; 0 where the GPU has no fp8 tensor cores
    fp32_flops_per_s: float                    # CUDA cores (FMA = 2 FLOPs)
    sfu_ops_per_clock_per_sm: int              # exp2/log2/rcp ... on the special-function units
    nvlink_bytes_per_s: float                  # total NVLink bandwidth per GPU, both directions
                                               # (0: none; ring then needs --no-interconnect)
    launch_overhead_s: float                   # per kernel launch (host + front-end), modelled
    mma_sync_fraction_of_peak: float           # what the sm80 mma.sync path reaches (1.0 = peak)
    has_wgmma: bool                            # Hopper warpgroup MMA (needed for full peak)
    # ---- achievable rates (timing model v2); defaults mean "the datasheet, no derate" -------
    sustained_clock_hz: float = 0.0            # SM clock under tensor load; 0: clock_hz
    tensor_gemm_fraction: float = 1.0          # best large-GEMM fp16/bf16 rate / peak
    tensor_fp8_gemm_fraction: float = 1.0      # the same for fp8
    tensor_tf32_gemm_fraction: float = 0.0     # the same for tf32 (fp32 inputs); 0: the
                                               # fp16/bf16 fraction
    hbm_achievable_fraction: float = 1.0       # copy/stream bandwidth / datasheet bandwidth
    l2_achievable_fraction: float = 1.0        # measured L2 read bandwidth / the field above
    fp32_lanes_per_sm: int = 0                 # FP32 FMA lanes per SM; 0: from fp32_flops_per_s
    alu_lanes_per_sm: int = 64                 # ALU lanes per SM: fp32 max/compare/select and
                                               # narrowing conversions [NCU-PIPES]
    smem_bytes_per_clock_per_sm: int = 128     # shared-memory bandwidth (32 banks x 4 B)
    issue_per_clock_per_sm: int = 4            # warp-instructions issued per clock per SM
    # ---- what one thread may hold ----------------------------------------------------------
    max_registers_per_thread: int = 255        # [CUDA-CC] 32-bit registers per thread, cc 5.0-9.0
    dram_latency_s: float = 0.0                # L2-miss load latency; 0: no latency terms
    # a streaming thread's round trip under load [STREAM-OCC]: an occupancy sweep of a copy
    # kernel (one 8-byte load and one 8-byte store a thread), as (resident threads per SM,
    # bytes/s) rows, on a board of ``stream_curve_sm_count`` SMs whose best stream rate was
    # ``stream_curve_peak_bytes_per_s``; (): not given, no such term
    stream_curve: tuple = ()
    stream_curve_sm_count: int = 0
    stream_curve_peak_bytes_per_s: float = 0.0
    l2_latency_clocks: float = 0.0             # L2-hit load latency; 0: not given
    l2_atomic_bytes_per_s: float = 0.0         # fp32 RED throughput in L2; 0: L2 rate / 2
    # ---- instruction latencies on a tile step's dependency chain (clocks; 0: not given,
    # the step-latency term leaves that event out) ------------------------------------------
    mma_latency_clocks: float = 0.0            # a tensor-core MMA, issue to result
    smem_latency_clocks: float = 0.0           # a shared-memory load
    sfu_latency_clocks: float = 0.0            # an exp2 on the special-function units
    fp_latency_clocks: float = 0.0             # a dependent fp32 add/max/multiply
    shfl_latency_clocks: float = 0.0           # a warp shuffle round (shuffle + combine)
    barrier_latency_clocks: float = 0.0        # a CTA barrier: this, plus
    barrier_clocks_per_warp: float = 0.0       # this for each of the CTA's warps
    sources: str = ""                          # free text, for custom GPUs from TOML files

    # ---- derived rates -------------------------------------------------------------------
    @property
    def sfu_ops_per_s(self) -> float:
        """Special-function throughput: ops/clock/SM x SMs x clock."""
        return self.sfu_ops_per_clock_per_sm * self.sm_count * self.clock_hz

    @property
    def sustained_clock(self) -> float:
        """The SM clock under tensor load (the boost clock where none is given)."""
        return self.sustained_clock_hz or self.clock_hz

    @property
    def fp32_lanes(self) -> int:
        """FP32 lanes per SM; derived from the datasheet fp32 peak at the boost clock if unset."""
        return self.fp32_lanes_per_sm or round(self.fp32_flops_per_s / (2 * self.sm_count
                                                                          * self.clock_hz))

    def l2_bytes_per_s(self, achievable: bool = True) -> float:
        """L2 read bandwidth: as measured by a read-only benchmark [L2-RRZE], or (not
        ``achievable``) the architectural figure ``l2_bandwidth_bytes_per_s``."""
        fraction = self.l2_achievable_fraction if achievable else 1.0
        return self.l2_bandwidth_bytes_per_s * fraction

    def atomic_rate(self, achievable: bool = True) -> float:
        """fp32 atomic (RED) bytes per second: a read-modify-write in the L2 slice, one read
        and one write of L2 bandwidth per byte [NSIGHT-AT], unless measured on its own."""
        return self.l2_atomic_bytes_per_s or self.l2_bytes_per_s(achievable) / 2

    @property
    def atomic_bytes_per_s(self) -> float:
        """``atomic_rate`` at the measured L2 bandwidth."""
        return self.atomic_rate()

    def gemm_fraction(self, dtype: str) -> float:
        """Best measured large-GEMM throughput over the dense peak, for the input dtype."""
        if dtype == "fp8":
            return self.tensor_fp8_gemm_fraction
        if dtype in ("tf32", "fp32") and self.tensor_tf32_gemm_fraction:
            return self.tensor_tf32_gemm_fraction
        return self.tensor_gemm_fraction

    @property
    def fp32_ops_per_s(self) -> float:
        """fp32 instructions per second on the CUDA cores: the datasheet peak counts an FMA
        as 2 FLOPs; a max, add, multiply or compare is one instruction."""
        return self.fp32_flops_per_s / 2

    @property
    def nvlink_bytes_per_s_one_direction(self) -> float:
        return self.nvlink_bytes_per_s / 2

    def tensor_flops_per_s(self, dtype: str) -> float:
        """Dense tensor-core peak for the dtype of the matmul *inputs*.

        fp32 inputs run as TF32 on the tensor cores (as cuBLAS/PyTorch allow) — the
        simulator has no fp32-FFMA matmul path.
        """
        peak = {
            "fp16": self.tensor_fp16_flops_per_s,
            "bf16": self.tensor_bf16_flops_per_s,
            "tf32": self.tensor_tf32_flops_per_s,
            "fp32": self.tensor_tf32_flops_per_s,
            "fp8": self.tensor_fp8_flops_per_s,
        }.get(dtype)
        if peak is None:
            raise ValueError(f"unknown dtype {dtype!r}; valid dtypes: {', '.join(DTYPE_BYTES)}")
        if peak <= 0:
            raise MissingUnitError(f"{self.full_name} has no {dtype} tensor cores; "
                                   f"use --dtype fp16 or bf16")
        return peak

    def stream_round_curve(self) -> tuple[np.ndarray, np.ndarray]:
        """(DRAM utilization, round time in s) at each row of ``stream_curve``: a round of
        the benchmark's threads (each with its 16 bytes in flight) takes
        SMs x threads x 16 B / bandwidth, at a utilization of bandwidth / the board's best."""
        threads, rate = (np.array(column, dtype=float) for column in zip(*self.stream_curve))
        # a board's SMs and best rate not given: this GPU's SMs, the sweep's own top
        sms = self.stream_curve_sm_count or self.sm_count
        round_s = sms * threads * STREAM_ROUND_BYTES / rate
        return rate / (self.stream_curve_peak_bytes_per_s or rate.max()), round_s

    def loaded_dram_latency_s(self, utilization: float) -> float:
        """The DRAM latency a load waits at a DRAM utilization: the pointer chase's, one load
        at a time, plus what a round of the stream sweep gains over its lightest load at that
        utilization (the queueing; the rest of a sweep round is its threads' own launch,
        index, store and exit, which a tile loop's load does not pay)."""
        if not self.stream_curve:
            return self.dram_latency_s
        util, round_s = self.stream_round_curve()
        return self.dram_latency_s + float(np.interp(utilization, util, round_s) - round_s[0])

    def replace(self, **changes) -> "GPU":
        return dataclasses.replace(self, **changes)

    def ctas_per_sm(self, smem_bytes_per_cta: int, register_bytes_per_cta: int = 0,
                    threads_per_cta: int = 128) -> int:
        """Resident CTAs per SM (the occupancy CUDA reports): limited by shared memory,
        registers, threads and the cap; at least one."""
        limit = min(self.max_ctas_per_sm, self.max_threads_per_sm // max(1, threads_per_cta))
        if smem_bytes_per_cta > 0:
            limit = min(limit, self.smem_bytes_per_sm // smem_bytes_per_cta)
        if register_bytes_per_cta > 0:
            limit = min(limit, self.register_bytes_per_sm // register_bytes_per_cta)
        return max(1, int(limit))

    def register_bytes_for_threads(self, threads: int) -> int:
        """The most register bytes ``threads`` threads may hold (each at most
        ``max_registers_per_thread`` 32-bit registers), whatever the register file."""
        return self.max_registers_per_thread * 4 * threads


# Shared by every cc 8.0 / 9.0 part below [CUDA-CC]: 64K 32-bit registers, 2048 threads and
# 32 resident CTAs per SM.
_REGISTERS_PER_SM = 65536 * 4
_MAX_THREADS_PER_SM = 2048
_MAX_CTAS_PER_SM = 32

# Kernel launch overhead is not a datasheet number. 4 us is the order of magnitude of a
# back-to-back launch from PyTorch on A100/H100-class systems (CUDA 12); it is a modelling
# assumption that `attnsim gpu-check` can calibrate, and a TOML file can override.
_LAUNCH_OVERHEAD_S = 4e-6

A100_SXM4_40GB = GPU(
    name="a100-40gb",
    full_name="NVIDIA A100-SXM4-40GB",
    sm_count=108,                              # [A100-WP] Table 1
    clock_hz=1410e6,                           # [A100-WP] Table 1, boost clock
    smem_bytes_per_sm=164 * KiB,               # [TUNE-A] 1.4.1.1: up to 164 KB per SM
    smem_bytes_per_block=163 * KiB,            # [TUNE-A] 1.4.1.1: up to 163 KB per block
    register_bytes_per_sm=_REGISTERS_PER_SM,   # [A100-WP] Table 3: 256 KB per SM
    max_threads_per_sm=_MAX_THREADS_PER_SM,    # [CUDA-CC] cc 8.0
    max_ctas_per_sm=_MAX_CTAS_PER_SM,          # [CUDA-CC] cc 8.0
    l2_bytes=40 * MiB,                         # [A100-WP] Table 1: 40 MB L2
    l2_bandwidth_bytes_per_s=5120 * 1410e6,    # [A100-L2] 5120 B/clk x 1.41 GHz = 7.2 TB/s
    hbm_bytes=40 * GiB,                        # [A100-DS] 40 GB HBM2
    hbm_bandwidth_bytes_per_s=1555e9,          # [A100-DS] 1,555 GB/s
    tensor_fp16_flops_per_s=312e12,            # [A100-DS] FP16 Tensor Core 312 TFLOPS
    tensor_bf16_flops_per_s=312e12,            # [A100-DS] BF16 Tensor Core 312 TFLOPS
    tensor_tf32_flops_per_s=156e12,            # [A100-DS] TF32 Tensor Core 156 TFLOPS
    tensor_fp8_flops_per_s=0.0,                # Ampere has no fp8 tensor cores
    fp32_flops_per_s=19.5e12,                  # [A100-DS] FP32 19.5 TFLOPS
    sfu_ops_per_clock_per_sm=16,               # [A100-WP] 4 SFUs x 4 partitions per SM
    nvlink_bytes_per_s=600e9,                  # [A100-DS] NVLink 600 GB/s (12 links)
    launch_overhead_s=_LAUNCH_OVERHEAD_S,      # modelled, see above
    mma_sync_fraction_of_peak=1.0,             # mma.sync is Ampere's native tensor-core path
    has_wgmma=False,
    sustained_clock_hz=1305e6,                 # [HPL-CLK] clock at the power limit under HPL
    tensor_gemm_fraction=271.2 / 312,          # [MAMF] A100 SXM bf16: 86.9%
    hbm_achievable_fraction=1358 / 1555,       # [STREAM] A100 40GB triad: 87.3%
    l2_achievable_fraction=5447.7e9 / (5120 * 1410e6),  # [L2-RRZE] A100 80GB: 75.5% (the
                                               # 40 GB part has the same GA100 L2)
    fp32_lanes_per_sm=64,                      # [WP-SM] 4 x 16 FP32 lanes
    alu_lanes_per_sm=64,                       # [WP-SM] 4 x 16 INT32 lanes [NCU-PIPES]
    smem_bytes_per_clock_per_sm=128,           # [SMEM-BK]
    issue_per_clock_per_sm=4,                  # [WP-SM] 4 schedulers x 1 warp-instr/clk
    dram_latency_s=375.1e-9,                   # [LUO-LAT] A100 PCIe: 523.3 cycles at 1395 MHz
    stream_curve=_sweep(151, 292, 548, 956, 1245, 1338, 1367, 1382),  # [STREAM-OCC] A100 40GB
    stream_curve_sm_count=108,
    stream_curve_peak_bytes_per_s=1382e9,      # [STREAM-OCC] its scale's top (triad 1358)
    l2_latency_clocks=202.8,                   # [LUO-LAT] A100 PCIe: L2 hit, 145.4 ns
    mma_latency_clocks=25,                     # [ACCEL-SIM] SM80_A100
    smem_latency_clocks=28,                    # [ACCEL-SIM] SM80_A100
    sfu_latency_clocks=23,                     # [ACCEL-SIM] SM80_A100
    fp_latency_clocks=4,                       # [ACCEL-SIM] SM80_A100
    shfl_latency_clocks=23.9,                  # [GMB-GA100] 17.03 ns + add.f32, at its 4 clk
    barrier_latency_clocks=24.2,               # [GMB-GA100] bar.sync, 4 warps (no sweep)
)

A100_SXM4_80GB = A100_SXM4_40GB.replace(
    name="a100-80gb",
    full_name="NVIDIA A100-SXM4-80GB",
    hbm_bytes=80 * GiB,                        # [A100-DS] 80 GB HBM2e
    hbm_bandwidth_bytes_per_s=2039e9,          # [A100-DS] 2,039 GB/s
    hbm_achievable_fraction=1794 / 2039,       # [STREAM] A100 80GB triad: 88.0%
    stream_curve=_sweep(159, 303, 579, 1025, 1379, 1577, 1682, 1737),  # [STREAM-OCC] A100 80GB
    stream_curve_peak_bytes_per_s=1794e9,      # [STREAM-OCC] its triad at full occupancy
)

H100_SXM5_80GB = GPU(
    name="h100-sxm",
    full_name="NVIDIA H100-SXM5-80GB",
    sm_count=132,                              # [H100-WP] Table 3 (H100 SXM5: 132 SMs)
    clock_hz=1830e6,                           # [FA3] §3.3 / consistent with 989.4 TFLOPS:
                                               # 132 SMs x 4096 FLOP/clk x 1.83 GHz
    smem_bytes_per_sm=228 * KiB,               # [TUNE-H] 1.4.1.1: up to 228 KB per SM
    smem_bytes_per_block=227 * KiB,            # [TUNE-H] 1.4.1.1: up to 227 KB per block
    register_bytes_per_sm=_REGISTERS_PER_SM,   # [H100-WP] 256 KB register file per SM
    max_threads_per_sm=_MAX_THREADS_PER_SM,    # [CUDA-CC] cc 9.0
    max_ctas_per_sm=_MAX_CTAS_PER_SM,          # [CUDA-CC] cc 9.0
    l2_bytes=50 * MiB,                         # [H100-WP] 50 MB L2
    l2_bandwidth_bytes_per_s=12e12,            # [FA3] hardware table: ~12 TB/s
    hbm_bytes=80 * GiB,                        # [H100-DS] 80 GB HBM3
    hbm_bandwidth_bytes_per_s=3.35e12,         # [H100-DS] 3.35 TB/s
    tensor_fp16_flops_per_s=989.4e12,          # [H100-DS] 1,979 TFLOPS with sparsity / 2
    tensor_bf16_flops_per_s=989.4e12,          # [H100-DS] 1,979 TFLOPS with sparsity / 2
    tensor_tf32_flops_per_s=494.7e12,          # [H100-DS] 989 TFLOPS with sparsity / 2
    tensor_fp8_flops_per_s=1978.9e12,          # [H100-DS] 3,958 TFLOPS with sparsity / 2
    fp32_flops_per_s=66.9e12,                  # [H100-DS] FP32 67 TFLOPS (66.9 in [H100-WP])
    sfu_ops_per_clock_per_sm=16,               # [FA3] §1: 3.9 TFLOPS of special functions
                                               # = 16 x 132 SMs x 1.83 GHz
    nvlink_bytes_per_s=900e9,                  # [H100-DS] NVLink 900 GB/s (18 links)
    launch_overhead_s=_LAUNCH_OVERHEAD_S,      # modelled, see above
    mma_sync_fraction_of_peak=(494 / 757) / 0.96,  # [LUO-MMA] mma.sync / wgmma on H800: 0.680
    has_wgmma=True,
    sustained_clock_hz=1830e6,                 # the clock of the tensor peak ([FA3] §3.3),
                                               # the clock the FA-3 paper's benchmarks fix
                                               # ([FA3] App. C.1); no published clock under
                                               # tensor load at stock settings was found:
                                               # [MAMF]'s 80% carries the power limit
    tensor_gemm_fraction=794.5 / 989.4,        # [MAMF] H100 SXM bf16: 80.3%
    tensor_fp8_gemm_fraction=1402.6 / 1978.9,  # [MAMF] H100 SXM fp8: 70.9%
    tensor_tf32_gemm_fraction=417.64 / 494.7,  # [TC-BENCH] cuBLAS TF32, H100 SXM5: 84.4%
    hbm_achievable_fraction=3.01 / 3.35,       # [QUACK] H100 SXM5 stream (ncu): 89.9%
    l2_achievable_fraction=9765.2e9 / 12e12,   # [L2-RRZE] GH200 (same GH100 L2): 81.4%
    fp32_lanes_per_sm=128,                     # [WP-SM] 4 x 32 FP32 lanes
    alu_lanes_per_sm=64,                       # [WP-SM] 4 x 16 INT32 lanes [NCU-PIPES]
    smem_bytes_per_clock_per_sm=128,           # [SMEM-BK]
    issue_per_clock_per_sm=4,                  # [WP-SM]
    dram_latency_s=340.6e-9,                   # [LUO-LAT] H800 PCIe: 597.8 cycles at 1755 MHz
    stream_curve=_sweep(237, 464, 854, 1397, 1868, 2269, 2854, 3174),  # [STREAM-OCC] GH200
    stream_curve_sm_count=132,                 # (the same GH100, 132 SMs, HBM3)
    stream_curve_peak_bytes_per_s=3783e9,      # [STREAM-OCC] GH200's triad
    l2_latency_clocks=264.5,                   # [LUO-LAT] H800 PCIe: L2 hit, 150.7 ns
    mma_latency_clocks=24,                     # [ACCEL-SIM] SM90_H100 (the PCIe board and
    smem_latency_clocks=29,                    # the H200 take them: the same SM)
    sfu_latency_clocks=23,                     # [ACCEL-SIM] SM90_H100
    fp_latency_clocks=4,                       # [ACCEL-SIM] SM90_H100
    shfl_latency_clocks=29.0,                  # [KW-SHFL] H200: shfl.bfly + dependent fadd
    barrier_latency_clocks=8.2,                # [AMORA-BAR] H100 SXM5: 41.16 + 2.045 W less
    barrier_clocks_per_warp=2.045,             # the loop's load and add (29 + 4 clocks)
)

H100_PCIE_80GB = H100_SXM5_80GB.replace(
    name="h100-pcie",
    full_name="NVIDIA H100-PCIe-80GB",
    sm_count=114,                              # [H100-WP] Table 3 (H100 PCIe: 114 SMs)
    clock_hz=1620e6,                           # implied by the dense fp16 peak below:
                                               # 756e12 / (114 SMs x 4096 FLOP/clk)
    hbm_bytes=80 * GiB,                        # [H100-DS] 80 GB HBM2e
    l2_bandwidth_bytes_per_s=12e12 * 1620 / 1830,  # SXM5's ~12 TB/s scaled by clock
    hbm_bandwidth_bytes_per_s=2.0e12,          # [H100-DS] 2 TB/s
    tensor_fp16_flops_per_s=756e12,            # [H100-DS] 1,513 TFLOPS with sparsity / 2
    tensor_bf16_flops_per_s=756e12,            # [H100-DS] 1,513 TFLOPS with sparsity / 2
    tensor_tf32_flops_per_s=378e12,            # [H100-DS] 756 TFLOPS with sparsity / 2
    tensor_fp8_flops_per_s=1513e12,            # [H100-DS] 3,026 TFLOPS with sparsity / 2
    fp32_flops_per_s=51.2e12,                  # [H100-DS] FP32 51 TFLOPS
    nvlink_bytes_per_s=600e9,                  # [H100-DS] NVLink bridge 600 GB/s
    sustained_clock_hz=1620e6,                 # the clock of its tensor peak (as SXM5)
    hbm_achievable_fraction=1832 / 2000,       # [STREAM] H100 PCIe triad: 91.6%
    l2_achievable_fraction=6912.2e9 / (12e12 * 1620 / 1830),  # [L2-RRZE] H100 PCIe: 6.9 TB/s
    dram_latency_s=340.6e-9,                   # [LUO-LAT] H800 PCIe (the same board class)
    stream_curve=_sweep(183, 341, 607, 1037, 1378, 1583, 1666, 1704),  # [STREAM-OCC] H100 PCIe
    stream_curve_sm_count=114,
    stream_curve_peak_bytes_per_s=1832e9,      # [STREAM-OCC] its triad at full occupancy
    tensor_gemm_fraction=499.5 / 756,          # [MAG-MAMF] H100 PCIe bf16: 66.1%
    # no fp8 GEMM was measured on the PCIe board: its bf16 fraction times the fp8-to-bf16
    # ratio [MAMF] measured on the SXM5 (70.9% / 80.3%), i.e. the power limit taken to cost
    # fp8 GEMMs what it costs bf16 ones; TF32 at the bf16 fraction (0), as on the A100
    tensor_fp8_gemm_fraction=(499.5 / 756) * (1402.6 / 1978.9) / (794.5 / 989.4),
    tensor_tf32_gemm_fraction=0.0,
)

H200_SXM_141GB = H100_SXM5_80GB.replace(
    name="h200",
    full_name="NVIDIA H200-SXM-141GB",
    hbm_bytes=141 * 10**9,                     # [H200-DS] 141 GB HBM3e
    hbm_bandwidth_bytes_per_s=4.8e12,          # [H200-DS] 4.8 TB/s; compute as H100 SXM5
    tensor_fp8_gemm_fraction=1453.4 / 1978.9,  # [MAMF] H200 SXM fp8: 73.4% (bf16 as H100)
    hbm_achievable_fraction=3783 / 4000,       # [STREAM] GH200 (HBM3) triad: 94.6%
)

GPUS: dict[str, GPU] = {g.name: g for g in (
    A100_SXM4_40GB, A100_SXM4_80GB, H100_SXM5_80GB, H100_PCIE_80GB, H200_SXM_141GB)}

# Short names people type. "a100" is the 80 GB part, the common one in clusters.
ALIASES = {"a100": "a100-80gb", "h100": "h100-sxm", "h100-sxm5": "h100-sxm",
           "a100-40": "a100-40gb", "a100-80": "a100-80gb", "h200-sxm": "h200"}


def gpu_names() -> list[str]:
    """Every name ``get_gpu`` accepts (canonical names first, then aliases)."""
    return list(GPUS) + list(ALIASES)


def builtin_gpu(name: str) -> GPU:
    """A built-in GPU by (case-insensitive) name or alias. Custom GPUs from TOML files are
    read by ``hwmodels.gpu_file``, whose ``get_gpu`` accepts both (and is the one callers use)."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key in GPUS:
        return GPUS[key]
    raise ValueError(f"unknown GPU {name!r}; valid names: {', '.join(gpu_names())}, "
                     f"or a path to a .toml file")
