"""The timing model: counted work -> predicted time, with its breakdown and its bound.

For each kernel k (kernels run one after another):

    t_mem(k)    = max(dram_bytes / hbm_bandwidth, requested_bytes / l2_bandwidth)
                  requested = hbm_read_bytes + hbm_write_bytes (what the algorithm asks of
                  global memory: the counts the IO theorems bound); every request passes
                  through L2. dram = requested, unless the kernel declares its compulsory
                  traffic and the working set its resident CTAs re-read: then a fraction
                  min(1, L2/2 / working set) of the re-reads hit in L2 (half of L2: streaming
                  data and imperfect replacement share it).
    t_mma(k)    = matmul_flops / (tensor_peak[dtype] x path_fraction)
                  path_fraction = gpu.mma_sync_fraction_of_peak for the sm80 ``mma.sync`` path
                  (about 2/3 on H100, FlashAttention-3 §1), 1 for ``wgmma`` or on A100
    t_exp(k)    = exp_ops / (16 ops/clk/SM x SMs x clock)          special-function units
    t_other(k)  = other_flops / (fp32_peak / 2)                    CUDA cores: each counted
                  op is one instruction; the datasheet's fp32 peak counts an FMA as 2
    t_link(k)   = interconnect_bytes / (NVLink bandwidth in one direction)   multi-device
                  (0 with ``TimingOptions(interconnect=False)``: one device's own work)
    t_comp(k)   = t_mma + t_exp + t_other          kernel declares overlap="serial"  (FA-2)
                = max(t_mma, t_exp + t_other)      kernel declares overlap="overlap" (FA-3)
    t_body(k)   = max(t_mem, t_comp, t_link)       loads and peer copies are asynchronous
    t(k)        = t_body x q(k) + launch_overhead
    q(k)        = wave quantization / imbalance: CTAs go, in launch order, to the SM with the
                  least work so far (the block scheduler's behaviour, at SM granularity: the
                  CTAs resident on one SM share its throughput); q = makespan / (total work /
                  SMs) >= 1. For equal CTAs q = ceil(CTAs / SMs) / (CTAs / SMs). Causal masking
                  makes CTAs unequal (``KernelRecord.cta_work``) and q grows.
                  Resident CTAs per SM (shared memory, registers, threads, hardware cap) are
                  reported as occupancy; see the note in ``quantization_factor``.

The bounding resource of a kernel is the largest of its terms; that of a whole run is the
resource whose kernels take the most time (launch overhead counts as a resource).
Every mechanism can be switched off (``TimingOptions``) to show what it contributes.
"""
from __future__ import annotations

import heapq
import math
from dataclasses import asdict, dataclass

import numpy as np
from numba import njit

from hwmodels.counters import (EXP_OPS, HBM_READ_BYTES, HBM_WRITE_BYTES, INTERCONNECT_BYTES,
                               KERNEL_LAUNCHES, MATMUL_FLOPS,
                               OTHER_FLOPS)
from hwmodels.gpus import GPU
from hwmodels.memory import KernelRecord

RESOURCES = ("memory", "matmul", "exp", "other", "interconnect", "launch")


@dataclass(frozen=True)
class TimingOptions:
    """Switches for each mechanism of the model (all on by default)."""
    overlap: bool = True              # honour kernels that overlap softmax with GEMMs
    memory_overlap: bool = True       # memory time hides behind compute (max, not sum)
    wave_quantization: bool = True    # CTAs in waves, idle SMs in the last one, imbalance
    launch_overhead: bool = True      # per-kernel launch cost
    tc_path_derate: bool = True       # mma.sync below peak on Hopper
    l2_cache: bool = True             # re-reads served by L2 when the working set fits
    separate_sfu: bool = True         # exp on the SFUs; off: exp costs one fp32 op
    interconnect: bool = True         # peer transfers (ring); off: one device's own work, as
                                      # a port on one GPU, which moves nothing, measures it


@dataclass(frozen=True)
class KernelTime:
    name: str
    dram_bytes: int
    memory_s: float
    matmul_s: float
    exp_s: float
    other_s: float
    interconnect_s: float
    compute_s: float
    body_s: float
    quantization: float
    launch_s: float
    total_s: float
    bound: str
    ctas: int
    ctas_per_sm: int


@dataclass(frozen=True)
class TimingBreakdown:
    predicted_s: float
    bound: str                  # memory | matmul | exp | other | launch
    dram_bytes: int             # estimated DRAM traffic after L2 (<= counted HBM bytes)
    memory_s: float             # sums over kernels of each unoverlapped term
    matmul_s: float
    exp_s: float
    other_s: float
    interconnect_s: float
    launch_s: float
    quantization: float         # time-weighted mean of the kernels' quantization factors
    time_by_bound_s: dict       # resource -> time of the kernels it bounds
    kernels: tuple

    def to_dict(self) -> dict:
        d = asdict(self)
        d["kernels"] = [asdict(k) for k in self.kernels]
        return d


def ctas_per_sm(gpu: GPU, k: KernelRecord) -> int:
    """Resident CTAs per SM, limited by shared memory, registers, threads and the cap."""
    limit = gpu.max_ctas_per_sm
    if k.sram_bytes_per_cta > 0:
        limit = min(limit, gpu.smem_bytes_per_sm // k.sram_bytes_per_cta)
    if k.register_bytes_per_cta > 0:
        limit = min(limit, gpu.register_bytes_per_sm // k.register_bytes_per_cta)
    limit = min(limit, gpu.max_threads_per_sm // max(1, k.threads_per_cta))
    return max(1, int(limit))


@njit(cache=True)
def _greedy_makespan(work, heads, servers):
    """List scheduling in launch order: each CTA goes to the server that frees first. The
    grid is ``heads`` copies of one head's ``work``, read in place rather than tiled (a tiled
    copy would hold one float per CTA of the whole grid)."""
    per_head = work.shape[0]
    n = per_head * heads
    if n <= servers:
        return work.max()
    free_at = [0.0] * servers
    heapq.heapify(free_at)
    for i in range(n):
        t = heapq.heappop(free_at)
        heapq.heappush(free_at, t + work[i % per_head])
    return max(free_at)


def quantization_factor(gpu: GPU, k: KernelRecord) -> float:
    """Makespan over the ideal, perfectly balanced time (>= 1).

    Why SM granularity rather than ceil(CTAs / (SMs x CTAs per SM)) waves: CTAs resident on
    one SM share its tensor cores and load/store units, so two resident CTAs each run at
    about half the SM's rate. Counting slots as independent servers would charge a half
    empty last wave of 2-per-SM CTAs as much as a full one. The two agree when one CTA fits
    per SM, and whenever the CTA count fills whole waves.
    """
    if k.ctas <= 0:
        return 1.0
    work_per_head = np.ones(1) if k.cta_work is None else np.asarray(k.cta_work, np.float64)
    if k.ctas % len(work_per_head):
        raise ValueError(f"kernel {k.name}: {k.ctas} CTAs is not a multiple of the "
                         f"{len(work_per_head)} per-head work entries")
    heads = k.ctas // len(work_per_head)
    total = work_per_head.sum() * heads
    if total <= 0:
        return 1.0
    sms = gpu.sm_count
    if np.all(work_per_head == work_per_head[0]):
        return float(math.ceil(k.ctas / sms) * sms / k.ctas)
    return float(_greedy_makespan(work_per_head, heads, sms) * sms / total)


L2_USABLE_FRACTION = 0.5


def dram_bytes(gpu: GPU, k: KernelRecord, opts: TimingOptions = TimingOptions()) -> int:
    """Estimated DRAM traffic: the requests, less the re-reads L2 serves.

    A working set that fits in the usable part of L2 keeps every re-read on chip; a larger
    one keeps the fraction usable / working_set of them (graded, not a cliff: LRU keeps part
    of a stream that is somewhat too large)."""
    requested = int(k.counters[HBM_READ_BYTES] + k.counters[HBM_WRITE_BYTES])
    if not opts.l2_cache or k.unique_hbm_bytes is None or k.l2_working_set_bytes is None:
        return requested
    unique = min(requested, int(k.unique_hbm_bytes))
    usable = L2_USABLE_FRACTION * gpu.l2_bytes
    hit = 1.0 if k.l2_working_set_bytes <= usable else usable / k.l2_working_set_bytes
    return int(unique + (requested - unique) * (1.0 - hit))


def kernel_time(gpu: GPU, k: KernelRecord, opts: TimingOptions = TimingOptions()) -> KernelTime:
    c = k.counters
    requested = float(c[HBM_READ_BYTES] + c[HBM_WRITE_BYTES])
    dram = dram_bytes(gpu, k, opts)
    memory_s = max(dram / gpu.hbm_bandwidth_bytes_per_s,
                   requested / gpu.l2_bandwidth_bytes_per_s if opts.l2_cache else 0.0)
    matmul_s = 0.0
    if c[MATMUL_FLOPS]:
        if k.tc_path == "wgmma" and not gpu.has_wgmma:
            raise ValueError(f"kernel {k.name} uses wgmma, which {gpu.full_name} does not have")
        peak = gpu.tensor_flops_per_s(k.matmul_dtype)
        if k.tc_path == "mma_sync" and opts.tc_path_derate:
            peak *= gpu.mma_sync_fraction_of_peak
        matmul_s = float(c[MATMUL_FLOPS]) / peak
    if opts.separate_sfu:
        exp_s = float(c[EXP_OPS]) / gpu.sfu_ops_per_s
        other_s = float(c[OTHER_FLOPS]) / gpu.fp32_ops_per_s
    else:
        exp_s = 0.0
        other_s = float(c[OTHER_FLOPS] + c[EXP_OPS]) / gpu.fp32_ops_per_s
    if k.overlap == "overlap" and opts.overlap:
        compute_s = max(matmul_s, exp_s + other_s)
    else:
        compute_s = matmul_s + exp_s + other_s
    interconnect_s = float(c[INTERCONNECT_BYTES]) / gpu.nvlink_bytes_per_s_one_direction \
        if c[INTERCONNECT_BYTES] and opts.interconnect else 0.0
    body_s = max(memory_s, compute_s) if opts.memory_overlap else memory_s + compute_s
    body_s = max(body_s, interconnect_s)
    q = quantization_factor(gpu, k) if opts.wave_quantization else 1.0
    launch_s = gpu.launch_overhead_s * int(c[KERNEL_LAUNCHES]) if opts.launch_overhead else 0.0
    terms = {"memory": memory_s, "matmul": matmul_s, "exp": exp_s, "other": other_s,
             "interconnect": interconnect_s}
    bound = max(terms, key=terms.get)
    if launch_s > body_s * q:
        bound = "launch"
    return KernelTime(name=k.name, dram_bytes=dram, memory_s=memory_s, matmul_s=matmul_s, exp_s=exp_s,
                      other_s=other_s, interconnect_s=interconnect_s, compute_s=compute_s, body_s=body_s, quantization=q,
                      launch_s=launch_s, total_s=body_s * q + launch_s, bound=bound,
                      ctas=k.ctas, ctas_per_sm=ctas_per_sm(gpu, k))


def predict_time(gpu: GPU, kernels: list[KernelRecord],
                 opts: TimingOptions = TimingOptions()) -> TimingBreakdown:
    """Predicted time of kernels run back to back, with the breakdown and the bound."""
    times = tuple(kernel_time(gpu, k, opts) for k in kernels)
    by_bound = {r: 0.0 for r in RESOURCES}
    for t in times:
        by_bound[t.bound] += t.total_s
    total = sum(t.total_s for t in times)
    body = sum(t.body_s for t in times)
    quant = (sum(t.body_s * t.quantization for t in times) / body) if body > 0 else 1.0
    return TimingBreakdown(
        predicted_s=total,
        bound=max(by_bound, key=by_bound.get) if total > 0 else "memory",
        dram_bytes=sum(t.dram_bytes for t in times),
        memory_s=sum(t.memory_s for t in times),
        matmul_s=sum(t.matmul_s for t in times),
        exp_s=sum(t.exp_s for t in times),
        other_s=sum(t.other_s for t in times),
        interconnect_s=sum(t.interconnect_s for t in times),
        launch_s=sum(t.launch_s for t in times),
        quantization=quant,
        time_by_bound_s=by_bound,
        kernels=times,
    )
