"""The timing model's microbenchmark constants, measured on this machine's GPU.

The model prices counted work at rates taken from published microbenchmarks on sibling
boards (``hwmodels.gpus``: large-GEMM fractions, the STREAM triad's share of the datasheet
bandwidth, a pointer chase's DRAM latency, the clock under tensor load). This script
measures the same quantities on the GPU at hand, with the same methods, and compares them
with the built-in model of that GPU:

    python benchmarks/gpu_microbench.py                       # the table
    python benchmarks/gpu_microbench.py --json out.json --toml measured.toml

* GEMM: ``torch.matmul`` of random normal square matrices (fp16, bf16; fp32 with TF32
  allowed; fp8 through ``torch._scaled_mm`` where the GPU has it), the best of a few sizes,
  as the MAMF tables measure it -> ``tensor_gemm_fraction``, ``tensor_tf32_gemm_fraction``,
  ``tensor_fp8_gemm_fraction``.
* Clock: ``nvidia-smi`` samples the SM clock while the fp16 GEMM runs for a few seconds ->
  ``sustained_clock_hz`` (the clock the model prices SFU, FMA, shared memory and issue at).
* HBM: a device copy and the STREAM triad a = b + s c on 1 GiB arrays -> the triad's share
  of the datasheet bandwidth, ``hbm_achievable_fraction``.
* DRAM latency: one thread chasing a random cycle of 128-byte lines over twice the L2 ->
  ``dram_latency_s``; the same chase over 4 MiB, past L1 and well inside L2, in clocks at
  the boost clock the single thread runs at -> ``l2_latency_clocks`` (as [LUO-LAT] in
  ``hwmodels.gpus`` measures both).
* L2: many CTAs each read a 64 KiB slice of a data set a third the size of L2, so every load
  after the first pass is an L2 hit, as RRZE gpu-benches' gpu-l2-cache measures it -> the
  read bandwidth's share of the model's L2 figure, ``l2_achievable_fraction``.
* Stream occupancy sweep: the copy kernel A[i] = B[i] * 1.2 in doubles, one element a
  thread, two blocks an SM (dynamic shared memory keeps a third out), 64 to 2048 threads an
  SM, as RRZE gpu-benches' gpu-stream sweeps it ([STREAM-OCC] in ``hwmodels.gpus``) ->
  ``stream_curve`` (threads an SM, bytes/s), ``stream_curve_sm_count`` and
  ``stream_curve_peak_bytes_per_s`` (the triad of the same run, or the sweep's top if
  higher): the DRAM round trip under load the timing model prices ATen's elementwise loops
  and the v1 release's staged loads at (``loaded_latency``).
* ``mma.sync.m16n8k16`` (fp16 in, fp32 accumulate, operands in registers, 4 independent
  MMAs per warp) and ``ex2.approx`` throughput loops: the ceiling of the sm80 tensor-core path
  (against the model's mma.sync GEMM rate) and the special-function rate per SM and clock
  (against ``sfu_ops_per_clock_per_sm``). Both are reported, not written: the loops run at
  clocks of their own (the ex2 loop draws little power), and the model's ``mma.sync`` field
  is a ratio to ``wgmma``, which no loop here measures.
* Latency chains, one warp, timed with ``clock64``: each instruction waits for the one before
  (an ``mma.sync.m16n8k16`` accumulating into the previous one's result, a shared-memory
  load whose address the previous load returned, ``ex2.approx`` of the previous result, an
  ``add.f32`` of it, a ``shfl.sync.bfly`` of it), and 8 warps meeting at ``bar.sync`` in a
  loop -> ``mma_latency_clocks``, ``smem_latency_clocks``, ``sfu_latency_clocks``,
  ``fp_latency_clocks``, ``shfl_latency_clocks``, ``barrier_latency_clocks``, the latencies
  a tile step's chain waits on (``hwmodels.timing``; the built-in values come from
  Accel-Sim's tuned configurations and published microbenchmarks, ``hwmodels.gpus``). The
  shuffle is written as the model's round, the shuffle plus its add; the barrier as the
  model's fixed part, the 8-warp figure less ``barrier_clocks_per_warp`` for each warp. In
  clocks, so the clock they run at does not matter.
* ``max.f32`` and ``fma.rn.f32`` throughput loops: the ALU and FMA pipes' lanes per SM and
  clock (against ``alu_lanes_per_sm``, where the model prices max/compare/select, and
  ``fp32_lanes_per_sm``), reported, not written, for the same reason as ex2.

``--toml`` writes a GPU file that starts from the built-in model (``base = ...``) and sets
the measured constants; ``attnsim run --hw measured.toml`` then predicts with them. A value
outside what the hardware can do (above the datasheet, a latency off by 10x) is reported as
implausible and not written. Needs PyTorch with CUDA, CuPy, and ``nvidia-smi`` for the clock.
Attention figures are never used here: these constants only come from microbenchmarks.
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import date

from hwmodels.gpu_file import GpuFileError, checked_stream_curve
from hwmodels.gpus import STEP_EVENT_LATENCY_FIELDS, STREAM_ROUND_BYTES, STREAM_SWEEP_THREADS

GEMM_SIZES = (4096, 8192, 16384)
COPY_BYTES = 1 << 30
CLOCK_SAMPLE_S = 4.0

# One thread follows next[] through a random cycle of 128-byte lines: every load depends on
# the one before, so the time per step is the load-to-use latency of memory.
CHASE_SOURCE = r"""
extern "C" __global__ void pointer_chase(const unsigned long long* next,
                                         unsigned long long start, long long steps,
                                         unsigned long long* sink) {
    unsigned long long p = start;
    for (long long i = 0; i < steps; ++i) p = next[p];
    *sink = p;
}
"""

# Each warp issues 4 independent mma.sync.m16n8k16 (fp16 inputs, fp32 accumulators) per
# iteration, its operands in registers: the instruction's throughput ceiling, as Luo et al.
# measure it. Operand values are small and nonzero (zero operands draw less power).
MMA_SOURCE = r"""
extern "C" __global__ void mma_sync_loop(float* out, int iters) {
    unsigned lane = threadIdx.x & 31u;
    unsigned a0 = 0x2c002c00u + lane, a1 = 0x2c012c01u + lane;
    unsigned a2 = 0x2c022c02u + lane, a3 = 0x2c032c03u + lane;
    unsigned b0 = 0x2c042c04u + lane, b1 = 0x2c052c05u + lane;
    float c[4][4] = {};
    for (int i = 0; i < iters; ++i) {
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            asm volatile(
                "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
                "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
                : "+f"(c[j][0]), "+f"(c[j][1]), "+f"(c[j][2]), "+f"(c[j][3])
                : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
        }
    }
    float s = 0.0f;
#pragma unroll
    for (int j = 0; j < 4; ++j)
        s += c[j][0] + c[j][1] + c[j][2] + c[j][3];
    out[blockIdx.x * blockDim.x + threadIdx.x] = s;
}
"""

# Four independent chains x <- 2^(-x) per thread (x stays in (0.5, 1]): ex2 on the
# special-function units, one negation beside each on the FMA pipe.
EX2_SOURCE = r"""
extern "C" __global__ void ex2_loop(float* out, int iters) {
    float x0 = 0.25f + 1e-6f * threadIdx.x, x1 = x0 + 0.125f, x2 = x0 + 0.25f, x3 = x0 + 0.5f;
    for (int i = 0; i < iters; ++i) {
        asm volatile("ex2.approx.ftz.f32 %0, %1;" : "=f"(x0) : "f"(-x0));
        asm volatile("ex2.approx.ftz.f32 %0, %1;" : "=f"(x1) : "f"(-x1));
        asm volatile("ex2.approx.ftz.f32 %0, %1;" : "=f"(x2) : "f"(-x2));
        asm volatile("ex2.approx.ftz.f32 %0, %1;" : "=f"(x3) : "f"(-x3));
    }
    out[blockIdx.x * blockDim.x + threadIdx.x] = x0 + x1 + x2 + x3;
}
"""
MMA_FLOPS_PER_WARP_ITER = 4 * 2 * 16 * 8 * 16

# Four independent chains per thread on one pipe each: x <- max(x, y) (FMNMX, the ALU pipe
# where the model prices a softmax's row max) and x <- x * a + b (FFMA, the FMA pipe); the
# operands keep the chains finite and the asm keeps the compiler from folding them.
ALU_MAX_SOURCE = r"""
extern "C" __global__ void max_loop(float* out, int iters) {
    float x0 = 1e-6f * threadIdx.x, x1 = x0 + 1.0f, x2 = x0 + 2.0f, x3 = x0 + 3.0f;
    const float y = 0.5f;
    for (int i = 0; i < iters; ++i) {
        asm volatile("max.f32 %0, %0, %1;" : "+f"(x0) : "f"(y));
        asm volatile("max.f32 %0, %0, %1;" : "+f"(x1) : "f"(y));
        asm volatile("max.f32 %0, %0, %1;" : "+f"(x2) : "f"(y));
        asm volatile("max.f32 %0, %0, %1;" : "+f"(x3) : "f"(y));
    }
    out[blockIdx.x * blockDim.x + threadIdx.x] = x0 + x1 + x2 + x3;
}
"""
FMA_SOURCE = r"""
extern "C" __global__ void fma_loop(float* out, int iters) {
    float x0 = 1e-6f * threadIdx.x, x1 = x0 + 1.0f, x2 = x0 + 2.0f, x3 = x0 + 3.0f;
    const float a = 0.5f, b = 0.25f;
    for (int i = 0; i < iters; ++i) {
        asm volatile("fma.rn.f32 %0, %0, %1, %2;" : "+f"(x0) : "f"(a), "f"(b));
        asm volatile("fma.rn.f32 %0, %0, %1, %2;" : "+f"(x1) : "f"(a), "f"(b));
        asm volatile("fma.rn.f32 %0, %0, %1, %2;" : "+f"(x2) : "f"(a), "f"(b));
        asm volatile("fma.rn.f32 %0, %0, %1, %2;" : "+f"(x3) : "f"(a), "f"(b));
    }
    out[blockIdx.x * blockDim.x + threadIdx.x] = x0 + x1 + x2 + x3;
}
"""
PIPE_OPS_PER_THREAD_ITER = 4

# CTA b reads slice (b mod slices) of the data set: 1024 threads x SLICE_LOADS coalesced
# 8-byte loads, summed so the loads stay live. With the data set a third of L2, every slice
# is read by many CTAs and served from L2; L1 is not reused (each CTA reads its slice once).
L2_READ_SOURCE = r"""
extern "C" __global__ void l2_read(const double* __restrict__ data, int slices,
                                   int slice_loads, double* sink) {
    const double* slice = data + (long long)(blockIdx.x % slices) * slice_loads * blockDim.x;
    double sum = 0.0;
    for (int i = 0; i < slice_loads; ++i) sum += slice[i * blockDim.x + threadIdx.x];
    if (sum == -1.0) sink[threadIdx.x] = sum;      // never true for the data written
}
"""
# One warp times five dependent chains with clock64, ITERS links each, in turn: every
# instruction needs the previous one's result, so clocks per link are the latency. The
# shared-memory chase follows a ring of 1024 words; the ex2 chain's value runs to +inf within
# a few links (the special-function unit is a fixed-latency pipeline); asm volatile keeps
# each chain in place between its clock reads.
LATENCY_SOURCE = r"""
extern "C" __global__ void latency_chains(const unsigned* ring, int iters, float* cycles) {
    __shared__ unsigned chase[1024];
    for (int i = threadIdx.x; i < 1024; i += blockDim.x) chase[i] = ring[i];
    __syncthreads();
    unsigned lane = threadIdx.x & 31u;
    unsigned a0 = 0x2c002c00u + lane, a1 = 0x2c012c01u + lane;
    unsigned a2 = 0x2c022c02u + lane, a3 = 0x2c032c03u + lane;
    unsigned b0 = 0x2c042c04u + lane, b1 = 0x2c052c05u + lane;
    float c0 = 0.0f, c1 = 0.0f, c2 = 0.0f, c3 = 0.0f;
    long long t0 = clock64();
    for (int i = 0; i < iters; ++i)
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
                     "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
                     : "+f"(c0), "+f"(c1), "+f"(c2), "+f"(c3)
                     : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
    long long t1 = clock64();
    unsigned p = 0;             // every lane the same word: a broadcast, no bank conflict
    unsigned base = (unsigned)__cvta_generic_to_shared(chase);
    for (int i = 0; i < iters; ++i)
        asm volatile("ld.shared.u32 %0, [%1];" : "=r"(p) : "r"(base + 4u * p));
    long long t2 = clock64();
    float x = 0.5f;
    for (int i = 0; i < iters; ++i)
        asm volatile("ex2.approx.ftz.f32 %0, %0;" : "+f"(x));
    long long t3 = clock64();
    float y = 0.5f;
    const float z = 1e-7f;
    for (int i = 0; i < iters; ++i)
        asm volatile("add.f32 %0, %0, %1;" : "+f"(y) : "f"(z));
    long long t4 = clock64();
    float w = 0.5f + lane;
    for (int i = 0; i < iters; ++i)
        asm volatile("shfl.sync.bfly.b32 %0, %0, 1, 0x1f, 0xffffffff;" : "+f"(w));
    long long t5 = clock64();
    if (threadIdx.x == 0) {
        cycles[0] = (float)(t1 - t0) / iters;
        cycles[1] = (float)(t2 - t1) / iters;
        cycles[2] = (float)(t3 - t2) / iters;
        cycles[3] = (float)(t4 - t3) / iters;
        cycles[4] = (float)(t5 - t4) / iters;
        cycles[5] = c0 + c1 + c2 + c3 + (float)p + x + y + w;  // keeps every chain live
    }
}

// 8 warps (a FlashAttention v1 backward CTA) meet at a barrier, again and again: clocks per
// round are a barrier's latency when every warp arrives at once.
extern "C" __global__ void barrier_loop(int iters, float* cycles) {
    long long t0 = clock64();
    for (int i = 0; i < iters; ++i) asm volatile("bar.sync 0;" ::: "memory");
    long long t1 = clock64();
    if (threadIdx.x == 0) cycles[0] = (float)(t1 - t0) / iters;
}
"""
BARRIER_THREADS = 256

# The occupancy sweep's kernel: each thread copies one double, scaled ([STREAM-OCC]); the
# launch's dynamic shared memory, unused, keeps the SM at two blocks.
STREAM_SCALE_SOURCE = r"""
extern "C" __global__ void stream_scale(double* a, const double* b, long long n) {
    extern __shared__ double unused[];
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) a[i] = b[i] * 1.2;
}
"""
STREAM_BLOCKS_PER_SM = 2
L2_CHASE_BYTES = 4 * 1024 * 1024    # past L1 (256 KiB an SM), inside the near half of L2
LATENCY_ITERS = 4096
# the GPU fields they set, in the order the kernels write them (mma, smem, sfu, fp, shfl, bar)
LATENCY_FIELDS = tuple(STEP_EVENT_LATENCY_FIELDS.values())
# What a latency may be to be written: below one clock, or above a DRAM access's, the timing
# was broken, not the instruction slow.
LATENCY_CLOCKS_RANGE = (1.0, 1000.0)

L2_READ_THREADS = 1024
L2_SLICE_LOADS = 8                        # 1024 threads x 8 loads x 8 B = 64 KiB per CTA
L2_READ_CTAS = 200_000
EX2_PER_THREAD_ITER = 4


class Unavailable(RuntimeError):
    """What this machine lacks to run the measurements (one line, with the fix)."""


@dataclass
class Measurements:
    """Raw results; None where a measurement could not be made (``notes`` says why)."""
    device: str = ""
    sm_count: int = 0
    gemm_flops_per_s: dict = field(default_factory=dict)      # dtype -> best FLOP/s
    sustained_clock_hz: float | None = None
    max_clock_hz: float | None = None
    copy_bytes_per_s: float | None = None
    triad_bytes_per_s: float | None = None
    dram_latency_s: float | None = None
    l2_latency_s: float | None = None
    l2_read_bytes_per_s: float | None = None
    mma_sync_flops_per_s: float | None = None
    ex2_per_s: float | None = None
    alu_max_per_s: float | None = None
    fma_per_s: float | None = None
    latency_clocks: dict = field(default_factory=dict)      # LATENCY_FIELDS -> clocks
    stream_sweep: dict = field(default_factory=dict)        # threads an SM -> bytes/s
    notes: list = field(default_factory=list)


# ---- from measurements to the model's fields (no GPU needed) ---------------------------------

# What a measurement may be, against the model's datasheet value, to be written: a GEMM or a
# copy above the datasheet peak (5% for clock drift) or a latency outside 100 ns - 2 µs is a
# broken measurement, not a faster GPU.
PLAUSIBLE_OVER_PEAK = 1.05
LATENCY_RANGE_S = (100e-9, 2e-6)


@dataclass(frozen=True)
class Derived:
    fields: dict            # GPU field -> measured value, only the plausible ones
    rejected: dict          # GPU field -> why it was not written
    mma_sync_ceiling_flops_per_s: float | None   # measured mma.sync loop
    model_mma_sync_flops_per_s: float            # the model's mma.sync GEMM rate
    ex2_per_clock_per_sm: float | None           # measured ex2 loop, at the boost clock
    alu_per_clock_per_sm: float | None = None    # measured max.f32 loop, at the boost clock
    fma_per_clock_per_sm: float | None = None    # measured fma.f32 loop, at the boost clock


def derive_fields(m: Measurements, gpu) -> Derived:
    """The GPU fields the measurements set, each checked against the model's datasheet."""
    fields, rejected = {}, {}

    def fraction(name, measured, peak):
        if measured is None:
            return
        f = measured / peak
        if f <= PLAUSIBLE_OVER_PEAK:
            fields[name] = round(min(f, 1.0), 4)
        else:
            rejected[name] = f"{measured:.4g} is {f:.2f}x the datasheet's {peak:.4g}"

    gemm16 = max((m.gemm_flops_per_s.get(d) or 0 for d in ("fp16", "bf16")), default=0)
    fraction("tensor_gemm_fraction", gemm16 or None, gpu.tensor_flops_per_s("fp16"))
    fraction("tensor_tf32_gemm_fraction", m.gemm_flops_per_s.get("tf32"),
             gpu.tensor_flops_per_s("tf32"))
    if gpu.tensor_fp8_flops_per_s:
        fraction("tensor_fp8_gemm_fraction", m.gemm_flops_per_s.get("fp8"),
                 gpu.tensor_fp8_flops_per_s)
    fraction("hbm_achievable_fraction", m.triad_bytes_per_s, gpu.hbm_bandwidth_bytes_per_s)
    fraction("l2_achievable_fraction", m.l2_read_bytes_per_s, gpu.l2_bandwidth_bytes_per_s)
    if m.sustained_clock_hz is not None:
        top = max(gpu.clock_hz, m.max_clock_hz or 0)
        if 1e8 <= m.sustained_clock_hz <= PLAUSIBLE_OVER_PEAK * top:
            fields["sustained_clock_hz"] = float(round(m.sustained_clock_hz, -6))
        else:
            rejected["sustained_clock_hz"] = f"{m.sustained_clock_hz:.4g} Hz is above the " \
                                             f"boost clock {top:.4g} Hz"
    if m.dram_latency_s is not None:
        lo, hi = LATENCY_RANGE_S
        if lo <= m.dram_latency_s <= hi:
            fields["dram_latency_s"] = float(f"{m.dram_latency_s:.4g}")
        else:
            rejected["dram_latency_s"] = f"{m.dram_latency_s * 1e9:.0f} ns is outside " \
                                         f"{lo * 1e9:.0f}-{hi * 1e9:.0f} ns"
    lo, hi = LATENCY_CLOCKS_RANGE
    chased = {}
    if m.l2_latency_s is not None:      # one thread runs at the boost clock, as the loops do
        chased["l2_latency_clocks"] = m.l2_latency_s * (m.max_clock_hz or gpu.clock_hz)
    for name, clocks in {**m.latency_clocks, **chased}.items():
        if lo <= clocks <= hi:
            fields[name] = round(float(clocks), 1)
        else:
            rejected[name] = f"{clocks:.4g} clocks is outside {lo:g}-{hi:g}"
    as_the_model_counts_them(gpu, fields)
    stream_curve_fields(m, gpu, fields, rejected)

    # the loops draw little power and run at the boost clock, not at the GEMM's
    def per_sm_and_clock(per_s):
        if per_s is None or not m.sm_count:
            return None
        return per_s / (m.sm_count * (m.max_clock_hz or gpu.clock_hz))
    model_mma = gpu.tensor_flops_per_s("fp16") * gpu.gemm_fraction("fp16") \
        * gpu.mma_sync_fraction_of_peak
    return Derived(fields, rejected, m.mma_sync_flops_per_s, model_mma,
                   per_sm_and_clock(m.ex2_per_s), per_sm_and_clock(m.alu_max_per_s),
                   per_sm_and_clock(m.fma_per_s))


def stream_curve_fields(m: Measurements, gpu, fields: dict, rejected: dict) -> None:
    """The occupancy sweep as the GPU fields ``stream_curve`` and its board's SMs and best
    stream rate, if every row is below the datasheet and the rows rise as a memory does:
    more threads, more bandwidth, and a round no shorter (the rule a GPU file's sweep is
    held to, ``hwmodels.gpu_file.checked_stream_curve``)."""
    if not m.stream_sweep:
        return
    rows = [[int(t), float(f"{rate:.4g}")] for t, rate in sorted(m.stream_sweep.items())]
    top = max(rate for _, rate in rows)
    if top > PLAUSIBLE_OVER_PEAK * gpu.hbm_bandwidth_bytes_per_s:
        rejected["stream_curve"] = f"{top:.4g} B/s is above the datasheet's " \
                                   f"{gpu.hbm_bandwidth_bytes_per_s:.4g}"
        return
    try:
        checked_stream_curve("the sweep", rows)
    except GpuFileError as err:
        rejected["stream_curve"] = f"{err}, not as a memory does"
        return
    fields["stream_curve"] = rows
    fields["stream_curve_sm_count"] = m.sm_count
    fields["stream_curve_peak_bytes_per_s"] = float(f"{max(top, m.triad_bytes_per_s or 0):.4g}")


def as_the_model_counts_them(gpu, fields: dict) -> None:
    """The chains time a bare shuffle and 8 warps at a barrier; the model's shuffle round
    is a shuffle and the add that combines it, and its barrier a fixed part plus
    ``barrier_clocks_per_warp`` (kept from the built-in model, measured over 2 to 32 warps)
    for each warp that meets it."""
    if "shfl_latency_clocks" in fields and "fp_latency_clocks" in fields:
        fields["shfl_latency_clocks"] = round(fields["shfl_latency_clocks"]
                                              + fields["fp_latency_clocks"], 1)
    if "barrier_latency_clocks" in fields:
        warps_part = gpu.barrier_clocks_per_warp * (BARRIER_THREADS // 32)
        fields["barrier_latency_clocks"] = round(
            max(1.0, fields["barrier_latency_clocks"] - warps_part), 1)


def toml_text(gpu, derived: Derived, m: Measurements) -> str:
    """A GPU file: the built-in model as base, the measured fields set (TOML basic strings
    share JSON's escapes, so strings are written with json.dumps)."""
    source = f"benchmarks/gpu_microbench.py on {m.device}, {date.today()}"
    lines = [f"# {m.device}: the timing model's microbenchmark constants, measured by",
             "# benchmarks/gpu_microbench.py; every other field is the built-in model's.",
             f"base = {json.dumps(gpu.name)}",
             f"name = {json.dumps(gpu.name + '-measured')}",
             f"full_name = {json.dumps(gpu.full_name + ' (measured constants)')}",
             f"sources = {json.dumps(source)}"]
    for key, value in sorted(derived.fields.items()):
        lines.append(f"{key} = {value!r}")
    return "\n".join(lines) + "\n"


def _shown(key: str, value) -> str:
    if value is None:
        return "—"
    if key == "sustained_clock_hz":
        return f"{value / 1e6:.0f} MHz"
    if key == "dram_latency_s":
        return f"{value * 1e9:.0f} ns"
    if key in LATENCY_FIELDS or key == "l2_latency_clocks":
        return f"{value:.1f} clk" if value else "0 (not given)"
    return f"{value:.3f}"


def status_of(key: str, derived: Derived) -> str:
    """What the TOML does with a field: written, refused (and why) or not measured."""
    return "written" if key in derived.fields else \
        f"implausible: {derived.rejected[key]}" if key in derived.rejected else "not measured"


def sweep_rounds(fields: dict) -> str:
    """The measured sweep's round time at its lightest and heaviest rows."""
    if "stream_curve" not in fields:
        return "—"
    rounds = [fields["stream_curve_sm_count"] * t * STREAM_ROUND_BYTES / rate
              for t, rate in fields["stream_curve"]]
    return f"{rounds[0] * 1e9:.0f}–{rounds[-1] * 1e9:.0f} ns"


def report_rows(gpu, derived: Derived) -> list[list[str]]:
    """(quantity, measured, model, what the TOML does with it) rows for the table."""
    model = {"tensor_gemm_fraction": gpu.tensor_gemm_fraction,
             "tensor_fp8_gemm_fraction": gpu.tensor_fp8_gemm_fraction,
             "tensor_tf32_gemm_fraction": gpu.gemm_fraction("tf32"),
             "hbm_achievable_fraction": gpu.hbm_achievable_fraction,
             "l2_achievable_fraction": gpu.l2_achievable_fraction,
             "sustained_clock_hz": gpu.sustained_clock,
             "dram_latency_s": gpu.dram_latency_s,
             "l2_latency_clocks": gpu.l2_latency_clocks,
             **{name: getattr(gpu, name) for name in LATENCY_FIELDS}}
    rows = []
    for key, model_value in model.items():
        rows.append([key, _shown(key, derived.fields.get(key)), _shown(key, model_value),
                     status_of(key, derived)])
    rows.append(["stream round, lightest to heaviest load", sweep_rounds(derived.fields),
                 "{:.0f}–{:.0f} ns".format(*1e9 * gpu.stream_round_curve()[1][[0, -1]])
                 if gpu.stream_curve else "—", status_of("stream_curve", derived)])
    if derived.mma_sync_ceiling_flops_per_s is not None:
        rows.append(["mma.sync m16n8k16 loop",
                     f"{derived.mma_sync_ceiling_flops_per_s / 1e12:.0f} TFLOP/s",
                     f"{derived.model_mma_sync_flops_per_s / 1e12:.0f} TFLOP/s (GEMM rate)",
                     "reported only"])
    for label, measured, model_value, field_name in (
            ("ex2 per SM and clock", derived.ex2_per_clock_per_sm,
             gpu.sfu_ops_per_clock_per_sm, "sfu_ops_per_clock_per_sm"),
            ("max.f32 (ALU) per SM and clock", derived.alu_per_clock_per_sm,
             gpu.alu_lanes_per_sm, "alu_lanes_per_sm"),
            ("fma.f32 (FMA) per SM and clock", derived.fma_per_clock_per_sm,
             gpu.fp32_lanes, "fp32_lanes_per_sm")):
        if measured is not None:
            rows.append([label, f"{measured:.1f}", f"{model_value:g} ({field_name})",
                         "reported only"])
    return rows


# ---- the measurements (GPU) ------------------------------------------------------------------

def _require_gpu():
    try:
        import torch
    except Exception as err:
        raise Unavailable(f"PyTorch is not importable ({type(err).__name__}); install a CUDA "
                          f"build of torch") from err
    if not torch.cuda.is_available():
        raise Unavailable("PyTorch sees no CUDA device; run this on a machine with a GPU")
    try:
        import cupy
    except Exception as err:
        raise Unavailable(f"CuPy is not importable ({type(err).__name__}); install it with: "
                          f"pip install 'attnsim[gpu]'") from err
    return torch, cupy


def _best_time(torch, run, repeats: int) -> float:
    """Smallest CUDA-event time of ``run()`` over ``repeats`` runs (after one warm-up)."""
    run()
    best = math.inf
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        end.synchronize()
        best = min(best, start.elapsed_time(end) * 1e-3)
    return best


def _best_matmul(torch, dtype) -> float:
    """Best ``torch.matmul`` rate of random square matrices over ``GEMM_SIZES``."""
    best = 0.0
    for n in GEMM_SIZES:
        pair = [torch.randn(n, n, device="cuda", dtype=dtype) for _ in range(2)]
        best = max(best, 2 * n ** 3 / _best_time(torch, lambda: pair[0] @ pair[1], 10))
        pair.clear()                           # free the pair before the next size
    return best


def measure_gemm(torch, m: Measurements) -> None:
    for name, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
        m.gemm_flops_per_s[name] = _best_matmul(torch, dtype)
    allowed = torch.backends.cuda.matmul.allow_tf32       # fp32 inputs on the tensor cores
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        m.gemm_flops_per_s["tf32"] = _best_matmul(torch, torch.float32)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = allowed
    if not hasattr(torch, "_scaled_mm") or not hasattr(torch, "float8_e4m3fn"):
        m.notes.append("fp8 GEMM: this torch has no _scaled_mm / float8_e4m3fn")
        return
    try:
        best = 0.0
        one = torch.tensor(1.0, device="cuda")
        for n in GEMM_SIZES:
            a = torch.randn(n, n, device="cuda").to(torch.float8_e4m3fn)
            b = torch.randn(n, n, device="cuda").to(torch.float8_e4m3fn).t()
            run = lambda: torch._scaled_mm(a, b, scale_a=one, scale_b=one,    # noqa: E731
                                           out_dtype=torch.bfloat16)
            best = max(best, 2 * n ** 3 / _best_time(torch, run, 10))
        m.gemm_flops_per_s["fp8"] = best
    except Exception as err:          # an older _scaled_mm signature, or no fp8 tensor cores
        m.notes.append(f"fp8 GEMM not measured: {type(err).__name__}: {err}"[:200])


def measure_clock(torch, cupy, m: Measurements) -> None:
    """The SM clock sampled every 100 ms while fp16 GEMMs keep the tensor cores busy."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        m.notes.append("clock: nvidia-smi not found")
        return
    for device in (cupy.cuda.Device().pci_bus_id, str(torch.cuda.current_device())):
        query = [smi, "-i", device, "--format=csv,noheader,nounits"]
        top = subprocess.run(query + ["--query-gpu=clocks.max.sm"], capture_output=True,
                             text=True)
        if top.returncode == 0 and top.stdout.strip():
            m.max_clock_hz = float(top.stdout.split()[0]) * 1e6
            break
    else:
        m.notes.append(f"clock: nvidia-smi could not query this device: {top.stderr.strip()}")
        return
    n = GEMM_SIZES[-1]
    a, b = (torch.randn(n, n, device="cuda", dtype=torch.float16) for _ in range(2))
    for _ in range(3):
        a @ b                                       # reach the power limit first
    torch.cuda.synchronize()
    sampler = subprocess.Popen(query + ["--query-gpu=clocks.sm", "-lms", "100"],
                               stdout=subprocess.PIPE, text=True)
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < CLOCK_SAMPLE_S:
        for _ in range(4):
            a @ b
        torch.cuda.synchronize()
    sampler.terminate()
    out, _ = sampler.communicate(timeout=10)
    samples = [float(s) * 1e6 for s in out.split() if s.replace(".", "", 1).isdigit()]
    if len(samples) >= 5:
        m.sustained_clock_hz = statistics.median(samples[2:])    # past the first samples
    else:
        m.notes.append(f"clock: only {len(samples)} samples from nvidia-smi")


def measure_bandwidth(torch, m: Measurements) -> None:
    n = COPY_BYTES // 4
    a, b, c = (torch.rand(n, device="cuda") for _ in range(3))
    m.copy_bytes_per_s = 2 * COPY_BYTES / _best_time(torch, lambda: a.copy_(b), 10)
    m.triad_bytes_per_s = 3 * COPY_BYTES / _best_time(
        torch, lambda: torch.add(b, c, alpha=0.5, out=a), 10)


def chase_table(footprint_bytes: int, seed: int = 0):
    """(next, start): 8-byte entries over ``footprint_bytes`` where following next[] from
    start visits the first entry of every 128-byte line once, in random order, then repeats
    (one cycle: no line is revisited before all the others, so none is still cached)."""
    import numpy as np
    line = 128 // 8                                   # 8-byte entries per 128-byte line
    return random_cycle(footprint_bytes // 128, line, seed, np.uint64)


def random_cycle(points: int, stride: int, seed: int, dtype):
    """(next, start): a table of ``points * stride`` entries where following next[] from
    start visits every stride-th entry once, in random order, then repeats."""
    import numpy as np
    order = np.random.default_rng(seed).permutation(points).astype(dtype) * dtype(stride)
    nxt = np.zeros(points * stride, dtype=dtype)
    nxt[order] = np.roll(order, -1)
    return nxt, int(order[0])


def _cupy_seconds(cupy, run) -> float:
    """Device seconds of one ``run()`` (CuPy events around it)."""
    start, end = cupy.cuda.Event(), cupy.cuda.Event()
    start.record()
    run()
    end.record()
    end.synchronize()
    return cupy.cuda.get_elapsed_time(start, end) * 1e-3


def measure_latency(cupy, m: Measurements, l2_bytes: int) -> None:
    m.dram_latency_s = chase_seconds(cupy, 2 * l2_bytes)   # twice the L2: every load misses
    m.l2_latency_s = chase_seconds(cupy, L2_CHASE_BYTES)


def chase_seconds(cupy, footprint_bytes: int, steps: int = 200_000) -> float:
    """Seconds a load of one thread chasing a random cycle over ``footprint_bytes``."""
    nxt, first = chase_table(footprint_bytes)
    d_next, sink = cupy.asarray(nxt), cupy.zeros(1, dtype=cupy.uint64)
    kernel = cupy.RawKernel(CHASE_SOURCE, "pointer_chase")
    args = (d_next, cupy.uint64(first), cupy.int64(steps), sink)
    kernel((1,), (1,), args)                          # warm the TLB, the code and the cache
    return _cupy_seconds(cupy, lambda: kernel((1,), (1,), args)) / steps


def measure_l2(cupy, m: Measurements, l2_bytes: int) -> None:
    slice_bytes = L2_READ_THREADS * L2_SLICE_LOADS * 8
    slices = max(1, l2_bytes // 3 // slice_bytes)          # a third of L2: it stays there
    data = cupy.ones(slices * slice_bytes // 8, dtype=cupy.float64)
    sink = cupy.zeros(L2_READ_THREADS, dtype=cupy.float64)
    kernel = cupy.RawKernel(L2_READ_SOURCE, "l2_read")
    args = (data, cupy.int32(slices), cupy.int32(L2_SLICE_LOADS), sink)

    def run():
        kernel((L2_READ_CTAS,), (L2_READ_THREADS,), args)
    run()                                                  # compile; bring the data into L2
    seconds = min(_cupy_seconds(cupy, run) for _ in range(5))
    m.l2_read_bytes_per_s = L2_READ_CTAS * slice_bytes / seconds


def measure_stream_sweep(cupy, m: Measurements) -> None:
    """The copy kernel's bandwidth at each of the sweep's threads an SM ([STREAM-OCC]): blocks
    of half that, each asking for a third of the SM's shared memory (and the 1 KiB the
    runtime reserves a block), so two fit an SM and a third does not."""
    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    smem_per_sm = int(props["sharedMemPerMultiprocessor"])
    n = COPY_BYTES // 8
    a, b = cupy.zeros(n, dtype=cupy.float64), cupy.ones(n, dtype=cupy.float64)
    kernel = cupy.RawKernel(STREAM_SCALE_SOURCE, "stream_scale")
    smem = smem_per_sm // 3 + 1024
    kernel.max_dynamic_shared_size_bytes = smem
    for threads in STREAM_SWEEP_THREADS:
        block = threads // STREAM_BLOCKS_PER_SM
        grid = -(-n // block)

        def run():
            kernel((grid,), (block,), (a, b, cupy.int64(n)), shared_mem=smem)
        run()
        seconds = min(_cupy_seconds(cupy, run) for _ in range(5))
        m.stream_sweep[threads] = STREAM_ROUND_BYTES * n / seconds


def measure_loops(cupy, m: Measurements) -> None:
    blocks, threads = 4 * m.sm_count, 256
    out = cupy.zeros(blocks * threads, dtype=cupy.float32)
    for source, name, iters, work, field_name in (
            (MMA_SOURCE, "mma_sync_loop", 4096, MMA_FLOPS_PER_WARP_ITER * threads // 32,
             "mma_sync_flops_per_s"),
            (EX2_SOURCE, "ex2_loop", 1 << 18, EX2_PER_THREAD_ITER * threads, "ex2_per_s"),
            (ALU_MAX_SOURCE, "max_loop", 1 << 18, PIPE_OPS_PER_THREAD_ITER * threads,
             "alu_max_per_s"),
            (FMA_SOURCE, "fma_loop", 1 << 18, PIPE_OPS_PER_THREAD_ITER * threads,
             "fma_per_s")):
        kernel = cupy.RawKernel(source, name)
        kernel((blocks,), (threads,), (out, cupy.int32(16)))          # compile and warm
        seconds = _cupy_seconds(
            cupy, lambda: kernel((blocks,), (threads,), (out, cupy.int32(iters))))
        setattr(m, field_name, blocks * work * iters / seconds)


def shared_ring(words: int = 1024, seed: int = 0):
    """A random cycle through ``words`` shared-memory words: ring[i] is the next index."""
    import numpy as np
    return random_cycle(words, 1, seed, np.uint32)[0]


def measure_latencies(cupy, m: Measurements) -> None:
    ring = cupy.asarray(shared_ring())
    cycles = cupy.zeros(6, dtype=cupy.float32)
    chains = cupy.RawKernel(LATENCY_SOURCE, "latency_chains")
    chains((1,), (32,), (ring, cupy.int32(16), cycles))               # compile and warm
    chains((1,), (32,), (ring, cupy.int32(LATENCY_ITERS), cycles))
    measured = [float(c) for c in cycles.get()[:5]]
    barrier = cupy.RawKernel(LATENCY_SOURCE, "barrier_loop")
    barrier((1,), (BARRIER_THREADS,), (cupy.int32(16), cycles))
    barrier((1,), (BARRIER_THREADS,), (cupy.int32(LATENCY_ITERS), cycles))
    m.latency_clocks = dict(zip(LATENCY_FIELDS, measured + [float(cycles.get()[0])]))


def measure() -> tuple[Measurements, object]:
    torch, cupy = _require_gpu()
    from attnsim.gpu import detect_gpu_model, device_info
    info = device_info()
    gpu, warning = detect_gpu_model()
    m = Measurements(device=f"{info.name} (sm_{info.arch}, {info.sm_count} SMs)",
                     sm_count=info.sm_count)
    if warning:
        m.notes.append(warning)
    steps = {"GEMM": lambda: measure_gemm(torch, m),
             "clock": lambda: measure_clock(torch, cupy, m),
             "bandwidth": lambda: measure_bandwidth(torch, m),
             "DRAM latency": lambda: measure_latency(cupy, m, info.l2_bytes),
             "L2 bandwidth": lambda: measure_l2(cupy, m, info.l2_bytes),
             "stream occupancy sweep": lambda: measure_stream_sweep(cupy, m),
             "mma.sync, ex2, max and fma loops": lambda: measure_loops(cupy, m),
             "latency chains": lambda: measure_latencies(cupy, m)}
    for name, step in steps.items():
        try:
            step()
        except Exception as err:      # one failed measurement must not lose the others
            m.notes.append(f"{name} not measured: {type(err).__name__}: {err}"[:300])
        torch.cuda.empty_cache()
    return m, gpu


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", metavar="FILE", help="write the raw measurements and the fields")
    ap.add_argument("--toml", metavar="FILE",
                    help="write a GPU file: the built-in model with the measured constants")
    a = ap.parse_args(argv)
    try:
        m, gpu = measure()
    except Unavailable as err:
        print(f"gpu_microbench: {err}", file=sys.stderr)
        return 2
    derived = derive_fields(m, gpu)
    from tabulate import tabulate
    print(f"{m.device}, against the built-in model {gpu.name}:")
    print(tabulate(report_rows(gpu, derived),
                   headers=["quantity", "measured", "model", "TOML"]))
    for note in m.notes:
        print(f"note: {note}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"measurements": asdict(m), "fields": derived.fields,
                       "rejected": derived.rejected, "model": gpu.name}, f, indent=2)
    if a.toml:
        with open(a.toml, "w") as f:
            f.write(toml_text(gpu, derived, m))
        print(f"wrote {a.toml}: use it with --hw {a.toml}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
