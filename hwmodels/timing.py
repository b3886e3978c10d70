"""The timing model: counted work -> predicted time, with its breakdown and what bounds it.

Every rate below is a GPU field with its source (``hwmodels.gpus``): achievable rates from
microbenchmarks (large GEMMs, copies, latency), never fitted to attention results. Kernels
run back to back; for each kernel k, with f = the sustained SM clock under tensor load and
S = the SMs:

Pipes (busy time of each SM pipe, the whole grid spread over the SMs):
    t_mma(k)   = matmul_flops / (peak[dtype] x gemm_fraction[dtype] x path_ceiling)
                 gemm_fraction: best measured large-GEMM rate / peak (MAMF tables; it carries
                 the power-limited clock); path_ceiling: for ``mma.sync`` on Hopper, its
                 throughput over ``wgmma``'s in one register-resident microbenchmark on one
                 board (0.68, Luo et al. 2025 on the H800; FlashAttention-3 §1 says about
                 2/3), 1 for the GPU's native path.
    t_mufu(k)  = exp_ops / (16 x S x f)                         special-function units
    t_fma(k)   = (other_flops - alu_ops) / (fp32 lanes x S x f)  add, multiply, divide
                 (each pipe's term also carries the lane-ops a kernel built without fast
                 math spends in its library routines, accurate expf and IEEE division,
                 ``library_lane_ops``; ``accurate_math`` off: one op each, as counted)
    t_alu(k)   = (alu_ops + convert_ops / 2) / (ALU lanes x S x f)
                 max/min, compare, select and the fp32 -> fp16/bf16/fp8 conversions run on the
                 ALU pipe (Nsight Compute's pipe definitions), 16 lanes per sub-partition on
                 both GPUs; one conversion instruction packs two values (PTX ``cvt`` .f16x2,
                 .e4m3x2).
    t_smem(k)  = smem_bytes / (128 B x S x f)                   32 banks x 4 B per clock
                 smem_bytes = counted SRAM reads + writes (less the operands a kernel keeps
                 in registers: the flash tile's P, ``register_operand_bytes_per_flop``) + the
                 operand re-reads of the
                 ``smem_readers`` warps/warpgroups that each read the shared GEMM operand:
                 matmul_flops x e / 2 x (readers - 1) / mma_rows_per_cta, + the partial
                 results that split-K warps sum through shared memory
                 (``smem_exchange_bytes``: FlashAttention v1, FA-2 paper §3.3).
    t_issue(k) = warp-instructions / (4 x S x f)                4 schedulers, 1 instr/clk each
                 instructions: MMAs (4096 FLOPs per fp16 m16n8k16 ``mma.sync``, 8192 for fp8;
                 65536 per warp for a 64x128x16 ``wgmma``), exp/32, other/32, convert/64, and one
                 ldmatrix/cp.async per 512 B of shared memory on the ``mma.sync`` path (TMA and
                 ``wgmma`` read shared memory without instructions).

Dependency chain (replaces the binary sum-or-max of softmax and GEMMs): a warp's GEMM
phase G = max(t_mma, t_smem) (fragments are prefetched while MMAs run) and its softmax
phase P = max(t_mufu, t_fma, t_alu) depend on each other, tile after tile. The chains in flight on
an SM share the two phases' pipes: a closed queueing network of g customers over two
stations, solved exactly by mean-value analysis (Reiser & Lavenberg 1980): g = 1 gives
G + P (fully serial), g -> inf gives max(G, P). Split-K warps (FlashAttention v1's release,
``smem_exchange_bytes``) add a third phase X: the partials a GEMM makes are written to
shared memory, synchronized and summed before the step goes on (FlashAttention-2 §3.3), so
that traffic, X = exchange bytes / smem bandwidth, follows the MMAs instead of hiding behind
them as operand loads do, and G = max(t_mma, t_smem - X).
A softmax a chain starts while its own GEMMs are still in flight (``softmax_beside_own_gemm``:
the share of each pipe's work a kernel issues before it waits for them, read off the
compiled kernel; FlashAttention-3's release issues its next S = Q K^T and this step's P V
together and starts the next softmax once S is in, but ptxas places the wait for P V before
the exponentials at d <= 128, so only the row max and O's rescaling run beside its GEMMs; its
backward runs a quarter to a third of P's exponentials beside the dP GEMM)
leaves the rest for the phase: P = max over pipes of (t_pipe - min(share x t_pipe, G)), and
the pipes' totals still bound the time (``own_gemm_overlap`` off: P takes it all).
Step latency: a tile step is also a chain of dependent instructions, each waiting one
latency no pipe is busy for: S's last MMA before the softmax, a row max reduced in a
thread's registers one value after the other, the exp, a value another warp left in shared
memory, P V's last MMA. The kernels declare those events per step (``step_events``, from
``algorithms.kernels.step_latency``) and how many steps they take (``chain_steps``); the GPU
gives each event's latency in clocks, measured by microbenchmarks (in ``hwmodels.gpus``:
[ACCEL-SIM] for MMA, shared-memory load, exp2 and dependent fp32 op; [KW-SHFL] and
[GMB-GA100] for a shuffle round; [AMORA-BAR] and [GMB-GA100] for a barrier, which costs more
the more warps meet at it: ``barrier_latency_clocks`` + ``barrier_clocks_per_warp`` x the
warps that meet, ``barrier_threads`` / 32). They
enter the chain as a delay station Z of the mean-value analysis, which no chain queues for:
    Z(k)       = chain_steps x sum(events x latency) / f / (S x resident CTAs in step)
    t_comp(k)  = max(MVA(G, P[, X]; g; delay Z), t_issue, t_smem, t_mufu, t_fma, t_alu)
    g          = chains_per_cta: the chains a CTA staggers on purpose (FlashAttention-3's
                 ping-pong barriers between warpgroups).
                 One chain waits Z in full (G + P + Z); many hide it behind each other's
                 pipes. Resident CTAs in step wait their latencies out together, hence the
                 division by the CTAs an SM holds at once (``resident_per_sm``: the busiest
                 SM's count, since q below scales Z to that SM as it does the pipes' work;
                 ``lockstep_ctas`` off: each chain waits its own and the analysis lets the
                 others fill the wait).
A step may also wait on a global load it staged through registers (``step_loads``: the v1
release loads the next Q_i into registers and stores it to shared memory a few GEMMs later,
and reads its fp32 O_i (forward) and dQ_i (backward) back to add to them): the load's
latency, an L2 hit or a DRAM access by the kernel's L2 hit share ([LUO-LAT]), less the
work between issue and use (shares of the step's GEMM and softmax phases, and the events
the warp waits out meanwhile), joins Z:
    Z_load(k)  = sum over loads of steps x max(0, n (L - events between) - g G - s P),
                 n = chain_steps / (S x resident CTAs in step)
(``staged_load_latency`` off: the loads are free). cp.async and TMA loads, issued a tile
ahead, declare none. A DRAM access waits the latency the kernel's own traffic loads the DRAM
to (``loaded_latency``): the pointer chase's plus what a round of the GPU's stream sweep
gains over its lightest load at the kernel's utilization u = dram_bytes / (t x achievable
HBM bandwidth), t the kernel's time, which the wait lengthens: ``kernel_time`` solves the
fixed point.
Resident CTAs do not add chains (``lockstep_ctas``): the overlap of one warp's softmax with
another's GEMMs is not something the SM provides unasked. FlashAttention-3 §3.1 gets it only
by forcing it ("we use synchronization barriers ... to force the GEMMs of warpgroup 1 to be
scheduled before the GEMMs of warpgroup 2"); identical CTAs that start together reach their
GEMMs together and their softmax together; and FlashAttention-2 on the H100 reaches, per SM
and clock, about what it reaches on the A100 (about 1.5 kFLOP), as a serial chain would,
although its mma.sync rate per SM and clock there is about 1.3x the A100's. Causal grids,
whose CTAs do not stay in step, show the same, so phase may not be the whole reason: the
SMSP's issue and register-file ports, shared by mma.sync and softmax warps, are the other
candidate; timing FA-2 with one and two CTAs per SM on a GPU would tell them apart, and
``benchmarks/gpu_overlap.py`` times the rule itself on loops of MMAs and exps (two CTAs per
SM, FlashAttention-3's warpgroups and two-stage pipeline). (Off:
every resident CTA is one more independent chain, as mean-value analysis assumes of
unsynchronized chains.)
FlashAttention-3's gain over FlashAttention-2 comes out of this: its ``wgmma`` path (no ``mma.sync``
ceiling, no ldmatrix issue), its W chains per CTA (W = 2 consumer warpgroups, 3 at d <= 64,
in ping-pong, against FA-2's 1: its warps meet at a barrier on every tile; 1 where the
release builds no ping-pong, fp16 at d > 128, fp8 at d < 128: its warpgroups run in step),
and the part of each softmax its compiled release runs beside its own GEMMs (above).

Memory:
    t_hbm(k)   = dram_bytes / (HBM bandwidth x achievable fraction)
    t_l2(k)    = (requested + sectors - atomic) / L2 bandwidth + atomic_bytes / L2 atomic rate
                 L2 bandwidth: a read-only benchmark's, whose data set fits in L2 (RRZE
                 gpu-benches gpu-l2-cache: 75% of the A100 whitepaper's 5120 B/clk, 81% of
                 the ~12 TB/s quoted for the H100); the atomic rate: half of it
                 sectors = hbm_read_bytes x (1 / read_sector_use - 1): L2 moves 32-byte
                 sectors, so a warp whose 32 loads fall in 32 sectors (a transposing copy
                 of 2-byte elements) moves 16x the bytes it uses (CUDA C++ Best Practices
                 Guide, "Coalesced Access to Global Memory"); 0 for coalesced kernels
    t_lat(k)   = dram_bytes / (SMs x bytes in flight per SM / DRAM latency)
    t_mem(k)   = max(t_hbm, t_l2, t_lat)                     (reported)
                 requested = hbm_read_bytes + hbm_write_bytes (the counts the IO theorems
                 bound); dram = requested unless L2 serves re-reads (``dram_bytes``); the last
                 term is Little's law: a CTA has at most its shared-memory tiles in flight, so
                 thin grids (split-KV decode) are latency-bound.
                 A register-staged streaming kernel (``thread_round_bytes``: ATen's
                 elementwise loops) holds in flight only what each thread loads before it
                 waits, and the wait grows with the load its own traffic puts on the DRAM
                 (``loaded_latency``): it runs R = requested / (SMs x resident threads x
                 round bytes) rounds, each as long as one round of a stream benchmark's
                 threads at the same DRAM utilization u (the GPU's ``stream_curve``, an
                 occupancy sweep: round time L(u), interpolated), so
                     t_lat = R x L(u),  u = dram_bytes / (t_lat x achievable HBM bandwidth)
                 solved for u (u L(u) rises with u: one solution; below the sweep's lightest
                 load L is its first row's, past its heaviest its last).
    t_link(k)  = interconnect_bytes / (NVLink bandwidth in one direction)   (ring)
    t_fixed(k) = per-CTA prologue (``_fixed_cost``): the first tiles of a wave of CTAs
                 (``prologue_bytes_per_cta`` each, all SMs loading at once) arrive one DRAM
                 latency plus their transfer after the wave starts, and the first tile of each
                 CTA's chains runs with nothing to overlap (pipeline fill: one tile's (G + P)
                 less its share of the overlapped time). Every generation of resident CTAs
                 pays both: CTAs in step (``lockstep_ctas``) finish together and their
                 successors load together (out of step, a neighbour hides the prologue after
                 the first wave).
               + per-CTA epilogue (``_epilogue_cost``): after its last tile a CTA normalizes
                 its output (``epilogue_elements_per_cta``: one FMA-pipe op an element),
                 converts it (an ALU op per two) and passes it through shared memory to the
                 store (written, then read: 2 x the output's bytes), one step after the
                 other, while its tensor cores idle; its stores then drain asynchronously.
                 The steps are counted work that the pipes' totals already hold, so only those
                 on pipes that do not set the body's time (below the tensor pipe's) are
                 added; every generation of CTAs in step pays it (out of step, the last).
    t(k)       = max(t_bw - prologue transfer, q(k) x max(t_comp, t_lat), t_link) + t_fixed
                 t_bw = max(HBM, L2 terms) is shared by the whole GPU and does not stretch with
                 the waves; compute and latency-bound memory are per SM and do (q below).
    q(k)       = wave quantization / imbalance: CTAs go, in launch order, to the SM with the
                 least work so far; q = makespan / (total work / SMs) >= 1.
Launch as a host pipeline: the host submits kernel i at (launches so far) x overhead; the GPU
starts it when both it is submitted and kernel i-1 has finished. Only the part of a launch
that the previous kernel's GPU time does not cover is charged.

The bound of a kernel is its largest resource term (memory, matmul, exp, other, smem, issue,
interconnect, launch); ``mechanism`` says which mechanism sets its time (a pipe, the
dependency chain, the issue rate, HBM/L2 bandwidth, DRAM latency, launch). Every mechanism
can be switched off (``TimingOptions``) to show what it contributes.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass

import numpy as np

from hwmodels.cta_schedule import greedy_makespan
from hwmodels.counters import (ALU_OPS, ATOMIC_BYTES, CONVERT_OPS, EXP_OPS, HBM_READ_BYTES,
                               HBM_WRITE_BYTES, INTERCONNECT_BYTES, KERNEL_LAUNCHES,
                               MATMUL_FLOPS, OTHER_FLOPS, SRAM_READ_BYTES, SRAM_WRITE_BYTES)
from hwmodels.gpus import GPU, STEP_EVENT_LATENCY_FIELDS, dtype_bytes
from hwmodels.memory import KernelRecord

RESOURCES = ("memory", "matmul", "exp", "other", "alu", "smem", "issue", "interconnect",
             "launch")

# Warp-instruction sizes (PTX ISA, "Warp-level matrix instructions"): mma.sync m16n8k16 for
# fp16/bf16 (m16n8k32 for fp8, m16n8k8 for tf32); wgmma m64nNk16 is issued by the 4 warps of
# a warpgroup, N = 128 taken as the typical tile width.
MMA_SYNC_FLOPS_PER_INSTR = {"fp16": 4096, "bf16": 4096, "fp8": 8192, "tf32": 2048, "fp32": 2048}
WGMMA_FLOPS_PER_WARP_INSTR = 2 * 64 * 128 * 16 // 4
SMEM_BYTES_PER_INSTR = 32 * 16          # ldmatrix.x4 / cp.async: 16 B per lane
WARP = 32


@dataclass(frozen=True)
class TimingOptions:
    """Switches for each mechanism of the model (all on by default)."""
    overlap: bool = True              # chains hide each other (off: softmax and GEMMs serial)
    memory_overlap: bool = True       # memory time hides behind compute (max, not sum)
    wave_quantization: bool = True    # CTAs in waves, idle SMs in the last one, imbalance
    launch_overhead: bool = True      # per-kernel launch cost
    tc_path_derate: bool = True       # mma.sync below peak on Hopper
    l2_cache: bool = True             # re-reads served by L2 when the working set fits
    separate_sfu: bool = True         # exp on the SFUs; off: exp costs one fp32 op
    interconnect: bool = True         # peer transfers (ring); off: one device's own work, as
                                      # a port on one GPU, which moves nothing, measures it
    achievable_rates: bool = True     # measured GEMM/copy/L2 rates, sustained clock (off:
                                      # datasheet)
    pipe_model: bool = True           # issue + dependency chain (off: sum or max of the terms)
    smem_bandwidth: bool = True       # shared-memory traffic at 128 B/clk/SM
    cta_fixed_costs: bool = True      # per-CTA prologue at DRAM latency
    cta_epilogue: bool = True         # per-CTA epilogue: normalize, convert, stage, in turn
    latency_bound_memory: bool = True  # Little's law for thin grids
    loaded_latency: bool = True       # the DRAM latency under a kernel's own load (a stream
                                      # benchmark's occupancy sweep): register-staged
                                      # streaming kernels (ATen's elementwise loops) wait a
                                      # round trip at it a round, and tile steps' staged
                                      # loads wait it (off: streams at the copy bandwidth,
                                      # staged loads at the unloaded latency)
    launch_pipeline: bool = True      # launches overlap earlier kernels (off: serial add)
    l2_atomics: bool = True           # fp32 atomics at the L2 atomic rate
    lockstep_ctas: bool = True        # resident CTAs run in phase: only a CTA's own staggered
                                      # chains hide its softmax, and each generation of them
                                      # waits for its first tiles (off: each resident CTA is
                                      # one more chain, and hides its successors' prologue)
    sector_use: bool = True           # uncoalesced reads move whole 32-byte sectors from L2
    alu_pipe: bool = True             # max/compare/select and conversions on the ALU pipe
                                      # (off: every elementwise op on the FMA pipe and
                                      # conversions free, as the first model had it)
    exchange_phase: bool = True       # split-K warps sum their partials through shared
                                      # memory after the GEMM that makes them, a phase of the
                                      # chain (off: overlapped with the MMAs like operands)
    step_latency: bool = True         # a tile step's chain waits on its instructions'
                                      # latencies (MMA, shared memory, exp, dependent fp32
                                      # ops) beyond the pipes' busy time (off: busy time only)
    sync_latency: bool = True         # of those, the warp shuffles and barriers, at their
                                      # measured latencies (off: free, as the model first
                                      # had them, when no source gave one)
    staged_load_latency: bool = True  # global loads a step stages through registers wait
                                      # their L2/DRAM latency less the work between issue
                                      # and use (off: free, covered by the pipes' time)
    accurate_math: bool = True        # a kernel built without fast math pays its library
                                      # routines' instructions (accurate expf, IEEE division:
                                      # ``library_lane_ops``; off: one op each, as counted)
    own_gemm_overlap: bool = True     # the share of a softmax a chain issues while its own
                                      # GEMMs are in flight runs beside them (off: the whole
                                      # softmax waits for them)
    row_padding: bool = True          # a kernel's MMAs and softmax run on its whole row tiles,
                                      # the rows past the sequence included (``row_padding``
                                      # of the kernel; off: on the rows counted only)


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
    smem_s: float = 0.0           # shared-memory pipe
    issue_s: float = 0.0          # instruction issue
    chain_s: float = 0.0          # the GEMM -> softmax chain with ``chains`` in flight per SM
    chains: int = 1
    hbm_s: float = 0.0            # DRAM bytes at the achievable HBM bandwidth
    l2_s: float = 0.0             # requests at L2 bandwidth (atomics at the atomic rate)
    latency_s: float = 0.0        # Little's law: bytes in flight over the DRAM latency
    atomic_s: float = 0.0         # of l2_s, the atomics
    fixed_s: float = 0.0          # exposed per-CTA fixed costs: prologue (+ fill) and epilogue
    mechanism: str = ""
    alu_s: float = 0.0            # ALU pipe: max/compare/select, conversions
    epilogue_s: float = 0.0       # of fixed_s, the exposed per-CTA epilogue
    exchange_s: float = 0.0       # of smem_s, split-K partials summed: a phase of the chain
    step_latency_s: float = 0.0   # the chain's instruction latencies per SM (a delay station)
    load_wait_s: float = 0.0      # of step_latency_s, the staged loads' uncovered latency
    dram_latency_s: float = 0.0   # the DRAM latency the kernel's tile loads are priced at:
                                  # under its own load where it stages loads (step_loads)
    stream_round_s: float = 0.0   # a streaming thread's round (thread_round_bytes) at the DRAM
                                  # utilization its rounds produce; 0: none declared


@dataclass(frozen=True)
class TimingBreakdown:
    predicted_s: float
    bound: str                  # the resource whose kernels take the most time
    dram_bytes: int             # estimated DRAM traffic after L2 (<= counted HBM bytes)
    memory_s: float             # sums over kernels of each unoverlapped term
    matmul_s: float
    exp_s: float
    other_s: float
    interconnect_s: float
    launch_s: float             # launch time not hidden behind earlier kernels
    quantization: float         # time-weighted mean of the kernels' quantization factors
    time_by_bound_s: dict       # resource -> time of the kernels it bounds
    kernels: tuple
    smem_s: float = 0.0
    issue_s: float = 0.0
    chain_s: float = 0.0
    latency_s: float = 0.0
    atomic_s: float = 0.0
    fixed_s: float = 0.0
    time_by_mechanism_s: dict = dataclasses.field(default_factory=dict)
    alu_s: float = 0.0
    epilogue_s: float = 0.0     # of fixed_s, the CTAs' epilogues
    exchange_s: float = 0.0     # of smem_s, split-K partials summed through shared memory
    step_latency_s: float = 0.0  # the chains' instruction latencies, per SM
    load_wait_s: float = 0.0    # of step_latency_s, the staged loads' uncovered latency

    def to_dict(self) -> dict:
        d = asdict(self)
        d["kernels"] = [asdict(k) for k in self.kernels]
        return d


def ctas_per_sm(gpu: GPU, k: KernelRecord) -> int:
    """Resident CTAs per SM, limited by shared memory, registers, threads and the cap."""
    return gpu.ctas_per_sm(k.sram_bytes_per_cta, k.register_bytes_per_cta, k.threads_per_cta)


def resident_per_sm(gpu: GPU, k: KernelRecord) -> int:
    """CTAs actually sharing an SM: the occupancy limit, or fewer when the grid is small."""
    return max(1, min(ctas_per_sm(gpu, k), math.ceil(k.ctas / gpu.sm_count)))


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
    return float(greedy_makespan(work_per_head, heads, sms) * sms / total)


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
    return int(unique + (requested - unique) * (1.0 - l2_reread_hit(gpu, k, opts)))


def l2_reread_hit(gpu: GPU, k: KernelRecord, opts: TimingOptions = TimingOptions()) -> float:
    """The share of the kernel's re-reads L2 serves: all while the working set fits in the
    usable part of L2, usable / working set beyond (0 without the L2 term or a declared
    working set)."""
    if not opts.l2_cache or k.unique_hbm_bytes is None or k.l2_working_set_bytes is None:
        return 0.0
    usable = L2_USABLE_FRACTION * gpu.l2_bytes
    return 1.0 if k.l2_working_set_bytes <= usable else usable / k.l2_working_set_bytes


def closed_network_time(demands: tuple[float, ...], customers: int, delay: float = 0.0) -> float:
    """Time for a closed queueing network of ``customers`` cycling through stations whose
    total service demands are ``demands`` (exact mean-value analysis, exponential service,
    first-come-first-served stations), and a delay station of total demand ``delay`` where
    no customer waits for another (latency: each customer's own, paid in parallel).
    1 customer: the sum of all; many: the largest station's demand."""
    if not any(demands) and delay <= 0:
        return 0.0
    queue = [0.0] * len(demands)
    throughput = 0.0
    for n in range(1, max(1, customers) + 1):
        residence = [d * (1.0 + q) for d, q in zip(demands, queue)]
        throughput = n / (delay + sum(residence))
        queue = [throughput * r for r in residence]
    return 1.0 / throughput


@dataclass(frozen=True)
class _Pipes:
    tensor_s: float
    mufu_s: float
    fma_s: float
    alu_s: float
    smem_s: float
    issue_s: float
    exchange_s: float = 0.0     # of smem_s: split-K partials summed through shared memory


def hbm_rate(gpu: GPU, opts: TimingOptions = TimingOptions()) -> float:
    """HBM bandwidth a stream reaches: the copy benchmark's, or (``achievable_rates`` off)
    the datasheet's."""
    fraction = gpu.hbm_achievable_fraction if opts.achievable_rates else 1.0
    return gpu.hbm_bandwidth_bytes_per_s * fraction


def gemm_rate(gpu: GPU, dtype: str, opts: TimingOptions = TimingOptions()) -> float:
    """Tensor-core FLOP/s of a large library GEMM on ``dtype`` inputs: the best measured, or
    (``achievable_rates`` off) the dense peak."""
    rate = gpu.tensor_flops_per_s(dtype)
    return rate * gpu.gemm_fraction(dtype) if opts.achievable_rates else rate


def _tensor_rate(gpu: GPU, k: KernelRecord, opts: TimingOptions) -> float:
    if k.tc_path == "wgmma" and not gpu.has_wgmma:
        raise ValueError(f"kernel {k.name} uses wgmma, which {gpu.full_name} does not have")
    rate = gemm_rate(gpu, k.matmul_dtype, opts)
    if k.tc_path == "mma_sync" and opts.tc_path_derate:
        rate *= gpu.mma_sync_fraction_of_peak
    return rate


# the counters that grow with the rows a kernel computes: its MMAs and its softmax
PER_ROW_SLOTS = (MATMUL_FLOPS, EXP_OPS, OTHER_FLOPS, ALU_OPS, CONVERT_OPS)


def row_padding(k: KernelRecord, opts: TimingOptions) -> float:
    """The rows the kernel computes over the rows it counts, as priced (1 with
    ``row_padding`` off)."""
    return k.row_padding if opts.row_padding else 1.0


def executed_counters(k: KernelRecord, opts: TimingOptions = TimingOptions()):
    """The kernel's counters with its MMA FLOPs and elementwise ops at the rows it computes,
    ``row_padding`` times the rows counted (``row_padding`` off, or a kernel that declares
    none: as counted). The other counters (bytes, launches, CTAs) are as counted: the rows
    past the sequence are neither loaded nor stored."""
    c = k.counters
    padding = row_padding(k, opts)
    if padding == 1.0:
        return c
    c = c.copy()
    for slot in PER_ROW_SLOTS:
        c[slot] = float(c[slot]) * padding
    return c


def smem_bytes(k: KernelRecord, opts: TimingOptions = TimingOptions()) -> float:
    """Shared-memory bytes as the warps move them: the counted reads and writes less the
    operand reads the kernel serves from registers (the flash tile's P), the partial
    results split-K warps exchange, plus the shared GEMM operand once more for every
    further warp (or warpgroup) that reads it, for every row tile computed."""
    c = k.counters
    in_registers = float(c[MATMUL_FLOPS]) * k.register_operand_bytes_per_flop
    counted = float(c[SRAM_READ_BYTES] + c[SRAM_WRITE_BYTES]) - in_registers \
        + k.smem_exchange_bytes
    if k.smem_readers <= 1 or k.mma_rows_per_cta <= 0 or not c[MATMUL_FLOPS]:
        return counted
    operand = dtype_bytes(k.matmul_dtype)
    # an (m x k) @ (k x n) product of 2mnk FLOPs reads the k x n operand once per reader;
    # a tile computed whole has its m rows whatever the sequence left of them
    flops = float(executed_counters(k, opts)[MATMUL_FLOPS])
    return counted + flops * operand / 2 * (k.smem_readers - 1) / k.mma_rows_per_cta


def pipe_lane_ops(c) -> dict[str, float]:
    """Lane-ops of a kernel's elementwise work on each pipe: FMA (adds, multiplies, divides:
    other_flops less alu_ops), ALU (max/compare/select, and the conversions, a ``cvt``
    packing two values: .f16x2 / .e4m3x2), XU (exp, the special-function units). A warp
    issues one instruction per 32 of them."""
    alu = float(c[ALU_OPS])
    return {"fma": float(c[OTHER_FLOPS]) - alu, "alu": alu + float(c[CONVERT_OPS]) / 2,
            "xu": float(c[EXP_OPS])}


def _clock(gpu: GPU, opts: TimingOptions) -> float:
    """The SM clock the pipes run at: sustained under tensor load, or the datasheet's."""
    return gpu.sustained_clock if opts.achievable_rates else gpu.clock_hz


def _generations(gpu: GPU, k: KernelRecord, opts: TimingOptions) -> tuple[int, int, int]:
    """(resident CTAs per SM, generations of them each SM runs, the generations that pay a
    per-CTA fixed cost): all of them when CTAs run in step or one fits per SM; out of step
    (``lockstep_ctas`` off), a neighbour's work hides it after the first."""
    resident = resident_per_sm(gpu, k)
    generations = math.ceil(math.ceil(k.ctas / gpu.sm_count) / resident)
    return resident, generations, generations if opts.lockstep_ctas or resident == 1 else 1


def kernel_lane_ops(k: KernelRecord, opts: TimingOptions = TimingOptions()) -> dict[str, float]:
    """``pipe_lane_ops`` of the kernel's counts, plus (``accurate_math``) the instructions its
    math-library routines spend beyond the ops counted (``library_lane_ops``)."""
    ops = pipe_lane_ops(executed_counters(k, opts))
    if opts.accurate_math:
        for pipe, extra in k.library_lane_ops:
            ops[pipe] += extra * row_padding(k, opts)
    return ops


def _fma_alu_ops(k: KernelRecord, opts: TimingOptions) -> tuple[float, float]:
    """Lane-ops on the FMA and the ALU pipe (``kernel_lane_ops``), or with ``alu_pipe`` off the
    first model's: every elementwise op on the FMA pipe, conversions free."""
    if opts.alu_pipe:
        ops = kernel_lane_ops(k, opts)
        return ops["fma"], ops["alu"]
    library = dict(k.library_lane_ops) if opts.accurate_math else {}
    return float(executed_counters(k, opts)[OTHER_FLOPS]) + row_padding(k, opts) * (
        library.get("fma", 0.0) + library.get("alu", 0.0)), 0.0


def warp_instructions(k: KernelRecord, opts: TimingOptions = TimingOptions()) -> float:
    """The warp-instructions the issue term counts for a kernel: its MMAs (a ``wgmma`` per
    65536 FLOPs a warp, an ``mma.sync`` per 4096), one per 32 lane-ops of its elementwise
    work, and on the ``mma.sync`` path one shared-memory load per 512 bytes (TMA and
    ``wgmma`` read shared memory without instructions)."""
    c = executed_counters(k, opts)
    fma_ops, alu_ops = _fma_alu_ops(k, opts)
    if k.tc_path == "wgmma":
        mma_instr = float(c[MATMUL_FLOPS]) / WGMMA_FLOPS_PER_WARP_INSTR * \
            (2 if k.matmul_dtype == "fp8" else 1)
        smem_instr = 0.0
    else:
        mma_instr = float(c[MATMUL_FLOPS]) / MMA_SYNC_FLOPS_PER_INSTR.get(k.matmul_dtype, 4096)
        smem_instr = smem_bytes(k, opts) / SMEM_BYTES_PER_INSTR
    return mma_instr + (kernel_lane_ops(k, opts)["xu"] + fma_ops + alu_ops) / WARP + smem_instr


def _pipes(gpu: GPU, k: KernelRecord, opts: TimingOptions) -> _Pipes:
    c = executed_counters(k, opts)
    clock = _clock(gpu, opts)
    sms = gpu.sm_count
    tensor_s = float(c[MATMUL_FLOPS]) / _tensor_rate(gpu, k, opts) if c[MATMUL_FLOPS] else 0.0
    fma_rate = gpu.fp32_lanes * sms * clock
    ops = kernel_lane_ops(k, opts)
    fma_ops, alu_ops = _fma_alu_ops(k, opts)
    alu_s = alu_ops / (gpu.alu_lanes_per_sm * sms * clock)
    if opts.separate_sfu:
        mufu_s = ops["xu"] / (gpu.sfu_ops_per_clock_per_sm * sms * clock)
        fma_s = fma_ops / fma_rate
    else:
        mufu_s, fma_s = 0.0, (fma_ops + ops["xu"]) / fma_rate
    nbytes = smem_bytes(k, opts)
    smem_rate = gpu.smem_bytes_per_clock_per_sm * sms * clock
    smem_s = nbytes / smem_rate if opts.smem_bandwidth else 0.0
    exchange_s = k.smem_exchange_bytes / smem_rate if opts.smem_bandwidth else 0.0
    issue_s = warp_instructions(k, opts) / (gpu.issue_per_clock_per_sm * sms * clock)
    return _Pipes(tensor_s, mufu_s, fma_s, alu_s, smem_s, issue_s, exchange_s)


SYNC_EVENTS = ("shfl", "bar")      # the step events ``sync_latency`` switches off


def step_latency_clocks(gpu: GPU, k: KernelRecord, sync: bool = True) -> float:
    """Clocks one tile step of the kernel waits on its dependency chain beyond the pipes'
    busy time: each declared event (``KernelRecord.step_events``) at the GPU's measured
    latency; an event the GPU gives no latency for (0) adds nothing, nor (not ``sync``) do
    the warps' shuffles and barriers."""
    return events_clocks(gpu, k, k.step_events, sync)


def events_clocks(gpu: GPU, k: KernelRecord, events: tuple, sync: bool = True) -> float:
    """Clocks a chain of ``events`` ((event, count) pairs) of kernel ``k`` waits; not ``sync``:
    without its shuffles and barriers."""
    return sum(event_latency_clocks(gpu, event, barrier_threads(k)) * count
               for event, count in events if sync or event not in SYNC_EVENTS)


def barrier_threads(k: KernelRecord) -> int:
    """The threads that meet at the kernel's step barriers: those it declares, or the CTA."""
    return k.barrier_threads or k.threads_per_cta


def event_latency_clocks(gpu: GPU, event: str, threads: int) -> float:
    """One step event's latency. A barrier releases its warps only once the last has
    arrived and the arrivals are counted, which takes longer the more warps meet: measured
    on the H100 at 2 to 32 warps, a straight line in the warp count ([AMORA-BAR]); ``threads``
    meet at it."""
    clocks = getattr(gpu, STEP_EVENT_LATENCY_FIELDS[event])
    if event == "bar" and clocks:
        clocks += gpu.barrier_clocks_per_warp * max(1, threads // 32)
    return clocks


def _steps_per_sm(gpu: GPU, k: KernelRecord, opts: TimingOptions) -> float:
    """The kernel's tile steps (``chain_steps``) an SM waits out one after the other, as a
    per-SM demand that wave quantization scales to the busiest SM (the caller multiplies
    it by ``quantization_factor``, as it does the pipes' work): spread over the SMs, and
    resident CTAs in step (``lockstep_ctas``) wait out their latencies together, so an SM
    pays once for the CTAs it holds at a time. The busiest SM holds
    ``resident_per_sm`` of them at once, however few the others hold: a grid of 1.2 CTAs
    per SM puts two on some SMs, which take twice the work of one but wait out its
    latencies once. Out of step each chain pays its own, and the mean-value analysis lets
    the other chains fill the wait."""
    together = resident_per_sm(gpu, k) if opts.lockstep_ctas else 1.0
    return k.chain_steps / (gpu.sm_count * together)


def _step_latency(gpu: GPU, k: KernelRecord, opts: TimingOptions) -> float:
    """The delay demand per SM of the instruction latencies: ``_steps_per_sm`` steps, each
    waiting ``step_latency_clocks``."""
    if not opts.step_latency or k.chain_steps <= 0 or k.ctas <= 0:
        return 0.0
    return _steps_per_sm(gpu, k, opts) * step_latency_clocks(gpu, k, opts.sync_latency) \
        / _clock(gpu, opts)


def load_latency_s(gpu: GPU, k: KernelRecord, source: str, opts: TimingOptions,
                   dram_latency_s: float | None = None) -> float:
    """A step load's latency: an L2 hit for data that stays in L2; for streamed data an L2
    hit as often as the kernel's re-reads hit (``l2_reread_hit``), else a DRAM access
    ([LUO-LAT] in ``hwmodels.gpus``: both by pointer chasing, one load at a time), at
    ``dram_latency_s`` where the kernel's own load raises it (``kernel_time``)."""
    l2_s = gpu.l2_latency_clocks / _clock(gpu, opts)
    if source == "l2":
        return l2_s
    hit = l2_reread_hit(gpu, k, opts)
    dram_s = gpu.dram_latency_s if dram_latency_s is None else dram_latency_s
    return hit * l2_s + (1.0 - hit) * dram_s


def _load_wait(gpu: GPU, k: KernelRecord, opts: TimingOptions, gemm_s: float,
               softmax_s: float, dram_latency_s: float) -> float:
    """The delay demand per SM of the loads a step issues into registers and uses later
    (``KernelRecord.step_loads``): each waits its latency less the work between issue and
    use, the shares of the step's GEMM and softmax phases it names (per SM, ``gemm_s`` and
    ``softmax_s`` over ``_steps_per_sm`` steps). A load that the work covers adds nothing."""
    if not (opts.step_latency and opts.staged_load_latency) or not k.step_loads \
            or k.chain_steps <= 0 or k.ctas <= 0:
        return 0.0
    steps = _steps_per_sm(gpu, k, opts)
    clock = _clock(gpu, opts)
    wait = 0.0
    for load in k.step_loads:
        between = events_clocks(gpu, k, load.events, opts.sync_latency) / clock
        latency = load_latency_s(gpu, k, load.source, opts, dram_latency_s)
        wait += load.steps * max(0.0, steps * (latency - between)
                                 - load.gemm_share * gemm_s - load.softmax_share * softmax_s)
    return wait


def _memory(gpu: GPU, k: KernelRecord, dram: int, opts: TimingOptions):
    """(memory_s, hbm_s, l2_s, latency_s, atomic_s, mechanism of the bandwidth terms).

    HBM and L2 bandwidth are shared by the whole GPU: their terms hold however many SMs the
    grid occupies. The latency term is per SM (computed as if every SM held the grid's
    resident CTAs); the caller scales it, like compute, by wave quantization."""
    c = k.counters
    requested = float(c[HBM_READ_BYTES] + c[HBM_WRITE_BYTES])
    hbm_s = dram / hbm_rate(gpu, opts)
    atomic = float(c[ATOMIC_BYTES]) if opts.l2_atomics else 0.0
    atomic_s = atomic / gpu.atomic_rate(opts.achievable_rates)
    # a sector (32 B) is the least L2 delivers: reads that use part of each move it whole
    sectors = float(c[HBM_READ_BYTES]) * (1.0 / k.read_sector_use - 1.0) \
        if opts.sector_use else 0.0
    l2_s = ((requested + sectors - atomic) / gpu.l2_bytes_per_s(opts.achievable_rates)
            if opts.l2_cache else 0.0) + atomic_s
    latency_s = 0.0
    if opts.latency_bound_memory and gpu.dram_latency_s > 0 and k.sram_bytes_per_cta > 0 \
            and k.ctas > 0:
        # as if every SM held the grid's resident CTAs; wave quantization then charges a
        # grid of fewer CTAs than SMs for the SMs it leaves idle. At the unloaded latency:
        # the term is there for thin grids, which load the DRAM lightly, and a CTA's tiles
        # are only the least it keeps in flight (a row kernel holds its row in registers too)
        in_flight = gpu.sm_count * resident_per_sm(gpu, k) * k.sram_bytes_per_cta
        latency_s = dram * gpu.dram_latency_s / in_flight
    elif opts.loaded_latency and k.thread_round_bytes > 0 and gpu.stream_curve and dram > 0 \
            and k.ctas > 0:
        latency_s = streaming_rounds_s(gpu, thread_rounds(gpu, k), dram, hbm_rate(gpu, opts))
    mechanism = "HBM bandwidth" if hbm_s >= l2_s else \
        "L2 atomics" if atomic_s > l2_s / 2 else "L2 bandwidth"
    return max(hbm_s, l2_s, latency_s), hbm_s, l2_s, latency_s, atomic_s, mechanism


def thread_rounds(gpu: GPU, k: KernelRecord) -> float:
    """The rounds a register-staged streaming kernel's threads run one after the other: its
    requested bytes over what the resident threads of every SM move in one round
    (``thread_round_bytes``); 0 for a kernel that declares none."""
    if k.thread_round_bytes <= 0:
        return 0.0
    c = k.counters
    threads = gpu.sm_count * resident_per_sm(gpu, k) * k.threads_per_cta
    return float(c[HBM_READ_BYTES] + c[HBM_WRITE_BYTES]) / (threads * k.thread_round_bytes)


def streaming_rounds_s(gpu: GPU, rounds: float, dram: float, rate: float) -> float:
    """Time of ``rounds`` round trips of a streaming kernel's threads moving ``dram`` bytes
    from and to DRAM (achievable bandwidth ``rate``): each round lasts L(u), the round time
    the GPU's stream benchmark measures at DRAM utilization u, and u is the utilization
    those rounds produce, dram / (rounds x L(u) x rate). u L(u) grows with u, so bisection
    finds the one u with u L(u) = dram / (rounds x rate); beyond the benchmark's heaviest
    load (u = 1 at most) the traffic is bandwidth-bound and t_hbm takes over."""
    util, round_s = gpu.stream_round_curve()
    target = dram / (rounds * rate)
    lo, hi = 0.0, 1.0
    if hi * np.interp(hi, util, round_s) <= target:
        return rounds * float(np.interp(hi, util, round_s))
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if mid * np.interp(mid, util, round_s) < target:
            lo = mid
        else:
            hi = mid
    return rounds * float(np.interp(hi, util, round_s))


def _fixed_cost(gpu: GPU, k: KernelRecord, opts: TimingOptions, serial_s: float,
                overlapped_s: float, memory_s: float) -> tuple[float, float]:
    """(exposed per-CTA fixed time, the memory time it already paid for).

    Prologue: a CTA can start its first MMA only when its first tiles
    (``prologue_bytes_per_cta``) have arrived: one DRAM latency, plus the bytes of a whole
    wave of CTAs loading their first tiles at once (identical CTAs launched together stay in
    step), priced at the kernel's own mix of DRAM and L2 (memory_s per requested byte).
    Every generation of resident CTAs pays it: identical CTAs that start together stay in
    step (``lockstep_ctas``), so the CTAs sharing an SM finish together and their successors
    load together, with nothing to compute meanwhile. Out of step (``lockstep_ctas`` off),
    a neighbour computes while a CTA loads and only the first wave pays it (one CTA per SM:
    every wave either way). Pipeline fill: the first
    tile of a CTA's chains has nothing to overlap with: one tile's serial time less its
    share of the overlapped time, once per generation of resident CTAs."""
    if not opts.cta_fixed_costs or k.ctas <= 0 or k.sram_bytes_per_cta <= 0:
        return 0.0, 0.0
    resident, generations, waves = _generations(gpu, k, opts)
    c = k.counters
    requested = float(c[HBM_READ_BYTES] + c[HBM_WRITE_BYTES])
    wave_bytes = float(k.prologue_bytes_per_cta) * min(k.ctas, gpu.sm_count * resident)
    paid = min(memory_s, waves * wave_bytes * memory_s / requested) if requested > 0 else 0.0
    fill = 0.0
    if k.cta_work is not None and overlapped_s < serial_s:
        tiles_per_cta = float(np.mean(k.cta_work))
        fill = (serial_s - overlapped_s) / (k.ctas / gpu.sm_count) / max(1.0, tiles_per_cta)
    return waves * gpu.dram_latency_s + paid + generations * fill, paid


def _epilogue_cost(gpu: GPU, k: KernelRecord, opts: TimingOptions, p: _Pipes) -> float:
    """Exposed time of the CTAs' epilogues: after its last tile a CTA normalizes its
    ``epilogue_elements_per_cta`` outputs (O = acc / l, an FMA-pipe multiply each), converts
    them to the output type (``cvt`` packs two: half an ALU op each) and writes them to shared
    memory, from where the store reads them (FlashAttention-2 copies them out with vector
    stores, FlashAttention-3 with a TMA store), each step waiting for the one before, while
    the CTA's tensor cores have nothing to do. The resident CTAs, in step, do theirs at once
    and share the pipes; out of step (``lockstep_ctas`` off), neighbours compute meanwhile and
    only the last generation's is exposed. The same work sits in the pipes' totals (the
    counted normalization and conversions, and the store's read of shared memory): a step on
    a pipe that sets the body's time (busier than the tensor pipe) is already paid there; the
    others are exposed, as the tensor pipe that sets the body idles meanwhile."""
    n = float(k.epilogue_elements_per_cta)
    if not opts.cta_epilogue or n <= 0 or k.ctas <= 0:
        return 0.0
    out_bytes = 2 if k.matmul_dtype == "fp8" else dtype_bytes(k.matmul_dtype)
    steps = ((n / gpu.fp32_lanes, p.fma_s),
             (n / 2 / gpu.alu_lanes_per_sm if opts.alu_pipe else 0.0, p.alu_s),
             (2 * n * out_bytes / gpu.smem_bytes_per_clock_per_sm if opts.smem_bandwidth
              else 0.0, p.smem_s))
    per_cta = sum(clocks for clocks, pipe_s in steps if pipe_s < p.tensor_s) / _clock(gpu, opts)
    resident, _, waves = _generations(gpu, k, opts)
    return waves * resident * per_cta


def _interconnect_time(gpu: GPU, k: KernelRecord, opts: TimingOptions) -> float:
    """Peer transfers at the one-direction NVLink rate. A GPU file's nvlink_bytes_per_s = 0
    means no interconnect: a kernel that sends to its peers (ring) cannot be priced there,
    as fp8 cannot run without fp8 tensor cores, so it is refused rather than divided by 0."""
    sent = float(k.counters[INTERCONNECT_BYTES])
    if not sent or not opts.interconnect:
        return 0.0
    if gpu.nvlink_bytes_per_s <= 0:
        raise ValueError(f"{gpu.full_name}: nvlink_bytes_per_s is 0 (no interconnect), but "
                         f"kernel {k.name} sends blocks to its peer devices, which needs a "
                         f"positive nvlink_bytes_per_s: set the link's bandwidth in the GPU "
                         f"file, or add --no-interconnect to leave the transfers unpriced")
    return sent / gpu.nvlink_bytes_per_s_one_direction


def kernel_time(gpu: GPU, k: KernelRecord, opts: TimingOptions = TimingOptions(),
                launch_s: float | None = None) -> KernelTime:
    """One kernel on its own: its launch charged whole unless ``launch_s`` says what of it is
    exposed (``predict_time`` pipelines the launches of kernels run back to back).

    The loads its tile steps stage through registers (``step_loads``) wait the DRAM latency
    its own traffic loads the DRAM to (``loaded_latency``; ``GPU.loaded_dram_latency_s``):
    the kernel's time sets its DRAM utilization, which sets the latency those loads wait,
    which sets its time. The time at a latency falls as the latency does, and the latency
    as the time grows, so one time agrees with itself: bisection between the time at the
    unloaded latency and the time at the latency that time's utilization gives."""
    unloaded = _kernel_time_at(gpu, k, opts, launch_s, gpu.dram_latency_s)
    if not (opts.loaded_latency and gpu.stream_curve and k.step_loads
            and gpu.dram_latency_s > 0 and unloaded.dram_bytes > 0):
        return unloaded
    rate = hbm_rate(gpu, opts)

    def at(busy_s: float) -> KernelTime:
        utilization = unloaded.dram_bytes / (busy_s * rate)
        return _kernel_time_at(gpu, k, opts, launch_s, gpu.loaded_dram_latency_s(utilization))

    def busy(t: KernelTime) -> float:     # the time the kernel's traffic is spread over
        return t.total_s - t.launch_s
    lo = busy(unloaded)
    loaded = at(lo)
    if busy(loaded) <= lo:                # no latency the load raises sets its time
        return loaded
    hi = busy(loaded)
    while hi - lo > 1e-9 * hi:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if busy(at(mid)) > mid else (lo, mid)
    return at(hi)


def _kernel_time_at(gpu: GPU, k: KernelRecord, opts: TimingOptions, launch_s: float | None,
                    dram_latency_s: float) -> KernelTime:
    """``kernel_time`` with its loads from DRAM waiting ``dram_latency_s``."""
    c = k.counters
    dram = dram_bytes(gpu, k, opts)
    memory_s, hbm_s, l2_s, latency_s, atomic_s, memory_mechanism = _memory(gpu, k, dram, opts)
    p = _pipes(gpu, k, opts)
    chains = chains_in_flight(gpu, k, opts)
    # split-K warps sum the partials a GEMM makes before the step goes on (FA-2 §3.3: "write
    # their intermediate results out to shared memory, synchronize, then add up"): that
    # round trip is a phase of the chain, not operand traffic hidden behind the MMAs
    exchange = p.exchange_s if opts.exchange_phase else 0.0
    gemm = max(p.tensor_s, p.smem_s - exchange)
    softmax = softmax_after_gemm(p, k, gemm, opts)
    phases = (gemm, softmax, exchange) if exchange else (gemm, softmax)
    load_wait_s = _load_wait(gpu, k, opts, gemm, softmax, dram_latency_s) \
        if opts.pipe_model else 0.0
    step_latency_s = (_step_latency(gpu, k, opts) + load_wait_s) if opts.pipe_model else 0.0
    if opts.pipe_model:
        chain_s = closed_network_time(phases, chains, step_latency_s)
        # the softmax run beside the GEMMs still occupies its pipes
        compute_s = max(chain_s, p.issue_s, p.smem_s, p.mufu_s, p.fma_s, p.alu_s)
    else:   # the first model: a pure sum, or a pure max for kernels that declare overlap
        if k.overlap == "overlap" and opts.overlap:
            chain_s = max(p.tensor_s, p.mufu_s + max(p.fma_s, p.alu_s))
        else:
            chain_s = p.tensor_s + p.mufu_s + max(p.fma_s, p.alu_s)
        compute_s = max(chain_s, p.smem_s)
    interconnect_s = _interconnect_time(gpu, k, opts)
    bandwidth_s = max(hbm_s, l2_s)
    fixed_s, paid = _fixed_cost(gpu, k, opts, sum(phases) + step_latency_s, chain_s,
                                bandwidth_s)
    epilogue_s = _epilogue_cost(gpu, k, opts, p)
    fixed_s += epilogue_s
    streamed_s = bandwidth_s - paid    # what the prologue did not already load
    q = quantization_factor(gpu, k) if opts.wave_quantization else 1.0
    # per-SM terms (compute, latency-bound memory) stretch with the waves; bandwidth does not
    memory_eff = max(streamed_s, q * latency_s)
    if latency_s * q > streamed_s:
        memory_mechanism = "DRAM latency"
    scaled = max(memory_eff, q * compute_s) if opts.memory_overlap else memory_eff + q * compute_s
    scaled = max(scaled, interconnect_s)
    body_s = scaled / q
    if launch_s is None:
        launch_s = gpu.launch_overhead_s * int(c[KERNEL_LAUNCHES]) if opts.launch_overhead \
            else 0.0
    # the bound compares each resource as it enters the kernel's time
    terms = {"memory": memory_eff, "matmul": q * p.tensor_s, "exp": q * p.mufu_s,
             "other": q * p.fma_s, "alu": q * p.alu_s, "smem": q * p.smem_s,
             "issue": q * p.issue_s,
             "interconnect": interconnect_s}
    bound = max(terms, key=terms.get)
    mechanism = _mechanism(memory_eff / q, memory_mechanism, compute_s, chain_s, p, gemm,
                           softmax, interconnect_s / q)
    if launch_s > scaled + fixed_s:
        bound = mechanism = "launch"
    rounds = thread_rounds(gpu, k)
    return KernelTime(name=k.name, dram_bytes=dram, memory_s=memory_s, matmul_s=p.tensor_s,
                      exp_s=p.mufu_s, other_s=p.fma_s, interconnect_s=interconnect_s,
                      compute_s=compute_s, body_s=body_s, quantization=q, launch_s=launch_s,
                      total_s=scaled + fixed_s + launch_s, bound=bound, ctas=k.ctas,
                      ctas_per_sm=ctas_per_sm(gpu, k), smem_s=p.smem_s, issue_s=p.issue_s,
                      chain_s=chain_s, chains=chains, hbm_s=hbm_s, l2_s=l2_s,
                      latency_s=latency_s, atomic_s=atomic_s, fixed_s=fixed_s,
                      mechanism=mechanism, alu_s=p.alu_s, epilogue_s=epilogue_s,
                      exchange_s=p.exchange_s, step_latency_s=step_latency_s,
                      load_wait_s=load_wait_s, dram_latency_s=dram_latency_s,
                      stream_round_s=latency_s / rounds if rounds and latency_s else 0.0)


def softmax_after_gemm(p: _Pipes, k: KernelRecord, gemm_s: float,
                       opts: TimingOptions = TimingOptions()) -> float:
    """The softmax phase of the chain: the busiest softmax pipe's work that waits for the
    chain's own GEMMs. The share a kernel issues while they are in flight
    (``KernelRecord.softmax_beside_own_gemm``) runs beside them, as far as the GEMM phase
    lasts; the rest follows it. With ``overlap`` off softmax and GEMMs are serial: all of it."""
    beside = dict(k.softmax_beside_own_gemm) if opts.own_gemm_overlap and opts.overlap \
        else {}
    after = []
    for pipe, busy_s in (("xu", p.mufu_s), ("fma", p.fma_s), ("alu", p.alu_s)):
        hidden = min(busy_s * beside.get(pipe, 0.0), gemm_s)
        after.append(busy_s - hidden)
    return max(after)


def chains_in_flight(gpu: GPU, k: KernelRecord, opts: TimingOptions) -> int:
    """The GEMM -> softmax chains that hide each other on an SM: the ones a CTA staggers on
    purpose, times its resident neighbours only if they are taken to run out of phase."""
    if not opts.overlap:
        return 1
    if opts.lockstep_ctas:
        return k.chains_per_cta
    return k.chains_per_cta * resident_per_sm(gpu, k)


def _mechanism(memory_s, memory_mechanism, compute_s, chain_s, p: _Pipes, gemm, softmax,
               interconnect_s) -> str:
    """Which mechanism sets the kernel's body time."""
    if interconnect_s >= max(memory_s, compute_s) and interconnect_s > 0:
        return "interconnect"
    if memory_s >= compute_s:
        return memory_mechanism if memory_s > 0 else "none"
    softmax_pipes = {"SFU pipe": p.mufu_s, "FMA pipe": p.fma_s, "ALU pipe": p.alu_s}
    if max(softmax_pipes.values()) >= max(chain_s, p.issue_s, p.smem_s):
        # a softmax run partly beside the GEMMs keeps its pipe busier than the chain
        return max(softmax_pipes, key=softmax_pipes.get)
    if p.issue_s >= chain_s:
        return "issue"
    if chain_s > 1.02 * max(gemm, softmax):
        return "dependency chain"
    pipes = {"tensor pipe": p.tensor_s, "shared memory": p.smem_s, "SFU pipe": p.mufu_s,
             "FMA pipe": p.fma_s, "ALU pipe": p.alu_s}
    return max(pipes, key=pipes.get)


def _launch_exposures(gpu: GPU, kernels: list[KernelRecord], busy_s: list[float]) -> list[float]:
    """The part of each launch the GPU waits for: the host submits kernel i after its
    launches so far; the GPU starts it when it is submitted and the previous kernel is done."""
    submitted, gpu_free, out = 0.0, 0.0, []
    for k, busy in zip(kernels, busy_s):
        submitted += gpu.launch_overhead_s * int(k.counters[KERNEL_LAUNCHES])
        start = max(submitted, gpu_free)
        out.append(start - gpu_free)
        gpu_free = start + busy
    return out


def _with_launch(t: KernelTime, exposed_s: float) -> KernelTime:
    launch_bound = exposed_s > t.total_s
    return dataclasses.replace(t, launch_s=exposed_s, total_s=t.total_s + exposed_s,
                               bound="launch" if launch_bound else t.bound,
                               mechanism="launch" if launch_bound else t.mechanism)


def predict_time(gpu: GPU, kernels: list[KernelRecord],
                 opts: TimingOptions = TimingOptions()) -> TimingBreakdown:
    """Predicted time of kernels run back to back, with the breakdown and the bound."""
    if opts.launch_overhead and opts.launch_pipeline:
        busy = [kernel_time(gpu, k, opts, launch_s=0.0) for k in kernels]
        exposed = _launch_exposures(gpu, kernels, [t.total_s for t in busy])
        times = tuple(_with_launch(t, e) for t, e in zip(busy, exposed))
    else:
        times = tuple(kernel_time(gpu, k, opts) for k in kernels)
    by_bound = {r: 0.0 for r in RESOURCES}
    by_mechanism: dict[str, float] = {}
    for t in times:
        by_bound[t.bound] += t.total_s
        by_mechanism[t.mechanism] = by_mechanism.get(t.mechanism, 0.0) + t.total_s
    total = sum(t.total_s for t in times)
    body = sum(t.body_s for t in times)
    quant = (sum(t.body_s * t.quantization for t in times) / body) if body > 0 else 1.0

    def summed(field: str) -> float:
        return sum(getattr(t, field) for t in times)
    return TimingBreakdown(
        predicted_s=total,
        bound=max(by_bound, key=by_bound.get) if total > 0 else "memory",
        dram_bytes=sum(t.dram_bytes for t in times),
        memory_s=summed("memory_s"), matmul_s=summed("matmul_s"), exp_s=summed("exp_s"),
        other_s=summed("other_s"), interconnect_s=summed("interconnect_s"),
        launch_s=summed("launch_s"), quantization=quant, time_by_bound_s=by_bound,
        kernels=times, smem_s=summed("smem_s"), issue_s=summed("issue_s"),
        chain_s=summed("chain_s"), latency_s=summed("latency_s"), atomic_s=summed("atomic_s"),
        fixed_s=summed("fixed_s"), time_by_mechanism_s=by_mechanism, alu_s=summed("alu_s"),
        epilogue_s=summed("epilogue_s"), exchange_s=summed("exchange_s"),
        step_latency_s=summed("step_latency_s"), load_wait_s=summed("load_wait_s"),
    )
