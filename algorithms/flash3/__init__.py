"""FlashAttention-3 forward — Shah et al., "FlashAttention-3: Fast and Accurate Attention with
Asynchrony and Low-precision" (2024, arXiv 2407.08608), Algorithm 1 and Sections 3.1–3.3.

Idea: the same tiled online-softmax forward as FlashAttention-2, rebuilt for Hopper: a
producer warp loads K/V tiles with TMA into an s-stage circular shared-memory buffer, the
consumer warpgroups (64 query rows each, two in the paper's Section 3.1) run ``wgmma`` and
take turns at the tensor cores (ping-pong) so that one's softmax hides behind the others'
GEMMs. The release compiles the ping-pong's scheduler barrier in only where it paid off
(``release_pingpong``): 16-bit dtypes at d <= 128, fp8 at d >= 128; elsewhere the
warpgroups wait on the same K/V barriers and run in step. ``--pingpong on|off`` asks what
the barrier would give where the release leaves it out, or cost where it has it.
Section 3.2's pipelining has a warpgroup issue its next S = Q K^T together with this step's
P V and start the next softmax once S is in; how much of that softmax then runs beside the
warpgroup's own GEMMs is the compiler's doing. The release's SASS (ptxas 12.3, the CUDA its
maintainers recommended and later pinned for FA-3; ``RELEASE_SOFTMAX_SPLIT``,
``benchmarks/sass_schedule.py``) waits for P V before
the exponentials at d = 64 and 128 (causal d = 128: after a third of them), so there only
the row max and O's rescaling overlap its GEMMs; at d = 256 two fifths of the exps do.
The model prices that (``--pipelining release``); ``--pipelining paper`` prices the
pipelining as the paper draws it (two tiles in flight a warpgroup, each softmax wholly
beside the other tile's GEMMs, a chain each), ``--no-pipelining`` none of it. The fp8
release waits for each GEMM before the step's next work (``--fp8-kernel``, below).

Decoding (one query row, ``--decode``) runs this forward as the paper's kernel would: a CTA
per head and row block, its whole B_r rows computed (``row_padding``); the split-KV decode
with a group's heads packed as rows that FlashAttention's later Hopper releases run is not
simulated for ``wgmma`` (``gqa --decode`` is that schedule on ``mma.sync``).

Notation -> code: B_r == block_q (W consumer warpgroups x 64 rows), B_c == block_k,
s == stages (K/V pipeline depth), W == consumer_warpgroups.

Bound: Θ(N d + N² d / B_r) HBM bytes per head (FlashAttention's Theorem 2, Θ(N² d² / M)),
as FlashAttention-2's for the same tiles, and Θ(N² d) FLOPs: 4 N_q N_k d matmul (about half
causal); fp8 halves the bytes of Q, K and V.

Tile plan, as the release sizes its kernels: the producer warpgroup gives up its registers
(``setmaxnreg``: 24 a thread, the least PTX allows), the W consumer warpgroups share the
rest in multiples of 8 (PTX ISA, setmaxnreg), at most 255 a thread: 240 for W = 2, 160 for
W = 3 on a 64K-register SM, the release's own split (hopper/flash_fwd_kernel.h at 7f67966c:
warpgroup_reg_dealloc<24 or 32> for the producer, warpgroup_reg_alloc<240 or 160>). For
each W in {3, 2, 1}, the largest B_c from {176, 128, 112, 96, 80, 64, 32, 16} whose tiles fit M
and whose accumulators (a warpgroup's O, 64 d, and two score tiles, 2 · 64 B_c, in fp32:
d/2 + B_c registers a thread) fit that share; the plan takes the W whose B_r x B_c tile is
largest (the most work per K/V byte streamed); causal, the same W with B_c at most 128
(the release's "Is_causal ? 128 : 176"). This reproduces the release of the paper's date at
16-bit dtypes (flash-attention commit 7f67966c, flash_fwd_launch_template.h): 192 x 128
with three consumer warpgroups at d = 64, 128 x 176 with two at d = 128 (128 x 128
causal), and 128 x 80 at d = 256. Not modelled: the release's later
choices (2.8.4: 192 x 192 at d = 64, with P V reading P from shared memory).

At 16-bit dtypes, HBM traffic and FLOPs are exactly FlashAttention-2's for the same tiles
(same math, same IO): reads N_q d e + T_r · 2 N_k d e, writes N_q d e + 4 N_q per head;
Θ(Nd + N²d/B_r), i.e. Θ(N² d² / M) of FlashAttention's Theorem 2. What changes is the
time: the GEMMs run on ``wgmma`` (full tensor-core peak, where FA-2's ``mma.sync`` reaches
about 2/3 on H100), one warpgroup's softmax overlaps another's GEMMs (ping-pong) and, in
part, its own (pipelining).
Needs Hopper (``wgmma``, TMA): planning on a GPU without them is an error.
Shared memory: Q_i (B_r d e) + s stages of K_j and V_j (2 s B_c d e); registers: the
O accumulators (B_r d fp32) and two score tiles in flight per warpgroup for the
intra-warpgroup pipelining (2 B_r B_c fp32, Section 3.2), at most 255 per consumer thread.

**FP8** (``--dtype fp8``, Section 3.3), executed as the kernel computes it (e4m3 arithmetic
in ``algorithms.kernels.fp8``), in two kernels:

* ``flash3_fp8_quantize`` (the producer of the fp8 tensors; the paper fuses it into the
  rotary-embedding kernel before attention, here it stands alone and reads Q, K, V in
  bf16): with ``--rotation hadamard``, Q and K rows are multiplied by M = D·H (incoherent
  processing: d sign flips and d log₂ d butterfly adds per row, the fast transform the
  paper uses, not a d x d GEMM); then each B_r x d block of Q and B_c x d block of K and V
  (``--fp8-scales block``; ``tensor``: one scale per tensor, the paper's baseline) gets
  s = amax/448 and is converted to e4m3 — per element an ALU op (|x| max), an FMA-pipe op
  (x / s) and a conversion, and 2 ops per block (s and 1/s, the 1/√b of H folded in). Reads 2 B, writes 1 B per
  element, plus a 4 B scale per block (per-tensor: a 4 B atomic max into the amax history
  per block, as delayed scaling keeps it; executed with the current amax).
* ``flash3_fwd`` on the e4m3 tensors (1 B per element read, and the fp32 scales: s_Q,i per
  Q block and s_K,j, s_V,j per tile, or the three per-tensor scales once per CTA; O written
  in bf16, as FA-3's FP8 forward does): S = (Q̂_i K̂_jᵀ)·s_Q,i·s_K,j·scale in fp32 (the
  block scales are folded into the softmax scale: 2 ops per tile); P is computed as
  2⁸·exp(S − m) — FA-3's offset of 8 in its exp2 (``Max_offset``), so P fills e4m3's
  [0, 256] instead of [0, 1] and fewer small probabilities underflow — and converted to
  e4m3 before the P V GEMM (one conversion per element, then 4 ALU ops per 8 bytes to put P
  in the layout fp8 ``wgmma`` reads, ``count_fp8_tile_extras``); the row sum ℓ stays fp32 and unquantized; V's block scale is applied
  by keeping the fp32 accumulator in units of the current block's scale, acc ← acc·α·
  s_V,j−1/s_V,j + P̂ V̂_j (B_r + 1 ops per tile, so the GEMM still accumulates in place);
  the epilogue multiplies by s_V,last/ℓ and takes 2⁻⁸ out of ℓ for the lse (2 B_r ops per
  Q block). ``--fp8-quantize upstream`` leaves the quantize kernel out of the counts (Q, K,
  V arrive in e4m3, as in FA-3's benchmarks); the numbers computed are the same. The fp8
  ``wgmma`` needs V K-major: each V_j is transposed in shared memory
  (B_c d bytes read and written per tile, an s-stage Vᵀ buffer), as the paper describes.

The fp8 kernel's program (``--fp8-kernel``): ``release`` (the default) is the first public
FP8 forward, the one that transposes V in the kernel as Section 3.3 describes (flash-attention
5018ac6a, 19 days after the paper; the paper's own fp8 build is not public): its mainloop
(``mma_fp8``) issues Q̂_i K̂_jᵀ, waits for it (``wgmma`` wait 0), runs the softmax, issues P̂
V̂_j and waits again, so a warpgroup's softmax never overlaps its own GEMMs (one score tile
in registers); its warpgroups take turns only at d >= 128; its tiles are fixed per head dim
(192 x 128 on 4 stages at d = 64, 128 x 256 at d = 128, 128 x 128 at d = 256, causal or
not: ``FP8_TILES``). ``pretransposed`` is the pull request before it (#1075, 1899c970,
merged and reverted): V transposed before the kernel (no Vᵀ buffer, no transpose traffic),
the 16-bit mainloop with its two-tile pipelining and its ping-pong rule, 128 x 128 on 4
stages at d = 128. Head dims without such a kernel take the planner's tiles.

Not modelled in the numbers: the bf16 rounding of the quantize kernel's input and of O
(2⁻⁹ relative, against e4m3's 2⁻⁴); the inputs are taken as given in float32.
"""
from __future__ import annotations

import types
from dataclasses import dataclass, field

import numpy as np

from algorithms import flash2
from algorithms.base import AlgorithmInfo, Option, Plan, PlanError
from algorithms.flash3 import backward as flash3_bwd
from algorithms.kernels import footprints as fp
from algorithms.kernels import fp8
from algorithms.kernels import step_latency
from algorithms.kernels.fp8 import P_SCALE_LOG2, round_to_e4m3_jit
from algorithms.kernels.common import (WARPGROUP, WGMMA_ROWS, apply_causal_mask,
                                       causal_block_is_partial, causal_key_end, cdiv,
                                       for_each_head, head_view, kv_group, new_output,
                                       new_stats, online_softmax_tile, row_padding,
                                       scale_rows)
from algorithms.kernels.dropout import dropout_args
from algorithms.kernels.footprints import with_passes
from algorithms.kernels.passes import bound_for_passes, run_passes
from algorithms.kernels.flash_tile import (STAT_BYTES, count_softmax_tile, count_tile, finish_rows,
                                          new_row_state, p_in_registers, repeat_step,
                                          same_tiles_run, shares_beside_own_gemm, snapshot)
from hwmodels.compiled import compiled
from hwmodels.counters import SRAM_READ_BYTES, SRAM_WRITE_BYTES
from hwmodels.memory import SramOverflowError
from hwmodels.primitives import (count_alu, count_atomic_add, count_convert, count_load,
                                 count_other, count_store, load_rows, matmul_nn,
                                 matmul_nt, store_rows, store_vector)

FP8_SCALES = ("block", "tensor")
ROTATIONS = ("hadamard", "none")
FP8_QUANTIZE = ("kernel", "upstream")
FP8_KERNELS = ("release", "pretransposed")
PINGPONG_CHOICES = ("release", "on", "off")
PIPELINING_CHOICES = ("release", "paper")


def _one_of(valid):
    return lambda v: None if v in valid else f"must be one of {', '.join(valid)}, got {v!r}"


INFO = AlgorithmInfo(
    name="flash3",
    title="FlashAttention-3 (Hopper; forward, and the release's backward)",
    paper="Shah et al., 2024 (arXiv 2407.08608)",
    exact=True,
    io_bound="Θ(Nd + N²d/B_r) = Θ(N²d²/M)",
    passes=("fwd", "bwd"),
    fp8_kernel=True,
    options=(Option("stages", int, None,
                    "K/V pipeline stages in shared memory (default: the release's, 2; fp8 "
                    "at d = 64: 4)",
                    validate=lambda s: None if s >= 1 else "must be at least 1"),
             Option("fp8_scales", str, None,
                    "with --dtype fp8: one e4m3 scale per B_r x d / B_c x d block (block, "
                    "the default) or per tensor (tensor)", validate=_one_of(FP8_SCALES)),
             Option("rotation", str, None,
                    "with --dtype fp8: incoherent processing, Q and K times a random "
                    "±1-diagonal Hadamard matrix (hadamard, the default) or not (none)",
                    validate=_one_of(ROTATIONS)),
             Option("fp8_quantize", str, None,
                    "with --dtype fp8: count the quantize kernel (kernel, the default) or take "
                    "Q, K, V already in e4m3 from upstream (upstream: FA-3's benchmarks, or "
                    "the rotary-embedding fusion the paper proposes)",
                    validate=_one_of(FP8_QUANTIZE)),
             Option("fp8_kernel", str, None,
                    "with --dtype fp8: the kernel's program: release (the default: the first "
                    "public fp8 forward, which transposes V in shared memory as the paper's "
                    "Section 3.3 does, waits for each GEMM before the step's next work — no "
                    "intra-warpgroup pipelining —, takes turns at d >= 128, on 192 x 128 / 4 "
                    "stages at d = 64, 128 x 256 at d = 128, 128 x 128 at d = 256) or "
                    "pretransposed (the pull request before it: V transposed before the "
                    "kernel, the 16-bit mainloop with its pipelining and ping-pong rule, 128 x "
                    "128 on 4 stages at d = 128)",
                    validate=_one_of(FP8_KERNELS)),
             Option("no_pipelining", bool, False,
                    "schedule without Section 3.2's intra-warpgroup GEMM-softmax pipelining "
                    "(the paper's Table 2 ablation): each consumer warpgroup waits for its "
                    "softmax before its next GEMMs; same tiles (fp8 already runs so, as its "
                    "release)"),
             Option("pipelining", str, None,
                    "what Section 3.2's intra-warpgroup pipelining overlaps: as the release's "
                    "compiled kernel does (release, the default: a warpgroup issues the next "
                    "Q K^T with this step's P V, but waits for P V before its exponentials, "
                    "so only the share of its softmax the SASS issues before that wait runs "
                    "beside its own GEMMs) or as the paper draws it (paper: two tiles in "
                    "flight a warpgroup, each softmax wholly beside the other tile's GEMMs); "
                    "same tiles", validate=_one_of(PIPELINING_CHOICES)),
             Option("pingpong", str, "release",
                    "Section 3.1's ping-pong of the consumer warpgroups: as the release builds "
                    "it (release, the default: fp16/bf16 at d <= 128, fp8 at d >= 128), always "
                    "(on) or never (off: the warpgroups run in step); same tiles",
                    validate=_one_of(PINGPONG_CHOICES))),
)

BLOCK_K_CANDIDATES = (176, 128, 112, 96, 80, 64, 32, 16)
# The fp8 kernels' tiles (hopper/flash_fwd_launch_template.h): head dim -> (consumer
# warpgroups, B_c, stages), B_r = 64 per warpgroup, the same causal or not. "release": the
# first public FP8 forward (5018ac6a, run_mha_fwd_hdim{64,128,256}_fp8); "pretransposed": the
# pull request before it (1899c970: d = 64 ran the 16-bit kernel's 192 x 128 on 2 stages,
# d = 128 its fp8 branch; its d = 256 branch, 128 x 128 on 3 stages, would need 256
# registers a consumer thread beside the pipelining's second score tile, more than the 240
# it gets: there the planner's tiles stand)
FP8_TILES = {"release": {64: (3, 128, 4), 128: (2, 256, 2), 256: (2, 128, 2)},
             "pretransposed": {64: (3, 128, 2), 128: (2, 128, 4)}}
DEFAULT_STAGES = 2
CAUSAL_MAX_BLOCK_K = 128      # the release's causal tiles: 128 x 128 at d = 128
CONSUMER_WARPGROUP_CHOICES = (3, 2, 1)   # B_r = 192, 128, 64 (each owns wgmma's 64 rows)
PRODUCER_REGISTERS = 24       # the TMA producer's setmaxnreg.dec: PTX's minimum
PIPELINE_STAGES_PER_WARPGROUP = 2   # Section 3.2's two tiles in flight, as the paper draws it
# What the release's compiled 16-bit forward runs beside a consumer warpgroup's own GEMMs:
# (head dim, causal) -> {pipe: (before, after)}, a consumer thread's softmax instructions in
# the steady-state loop before its wait for every wgmma in flight (WARPGROUP.DEPBAR.LE gsb0,
# 0x0: the next Q K^T and this step's P V) and from it on; pipes as the timing model prices
# them (xu: MUFU; fma: FFMA, FADD, FMUL; alu: FMNMX, FSEL, FSETP, F2FP). Read off the SASS of
# hopper/flash_fwd_hdim{64,128,256}_fp16_sm90.cu at 7f67966c (FA-3's release with the
# paper, which asks for CUDA >= 12.3), assembled by ptxas 12.3.107: the CUDA its maintainers
# recommended for FA-3 (README from 7435839e: "we highly recommend CUDA 12.3 for best
# performance") and then pinned (hopper/setup.py 7a802796..454ce315: "nvcc 12.3 gives the
# best perf currently"), with benchmarks/sass_schedule.py; the run is
# reports/fa3_sass_schedule.json. The source waits for P V after the softmax
# (``warpgroup_wait<0>()`` after ``online_softmax``); ptxas places the wait before the
# exponentials at d = 64 and 128 (at d = 128 causal, after a third of them): only the row
# max and O's rescaling run beside the GEMMs there; at d = 256 two fifths of the exps do.
RELEASE_SOFTMAX_SPLIT = {
    (64, False): {"xu": (0, 66), "fma": (32, 134), "alu": (33, 67)},
    (64, True): {"xu": (0, 66), "fma": (32, 134), "alu": (0, 100)},
    (128, False): {"xu": (0, 90), "fma": (65, 181), "alu": (49, 87)},
    (128, True): {"xu": (22, 44), "fma": (109, 89), "alu": (68, 32)},
    (256, False): {"xu": (17, 25), "fma": (170, 44), "alu": (44, 20)},
    (256, True): {"xu": (0, 42), "fma": (128, 86), "alu": (21, 43)},
}
RELEASE_HEAD_DIMS = (64, 128, 256)   # the head dims the release compiles
PINGPONG_MAX_HEAD_DIM_16BIT = 128   # the release's scheduler barrier: fp16/bf16 at d <= 128
PINGPONG_MIN_HEAD_DIM_FP8 = 128     # ... and fp8 at d >= 128 (``release_pingpong``)
SOURCE_BYTES = 2              # the quantize kernel reads bf16 Q, K, V
OUT_BYTES_FP8 = 2             # FA-3's FP8 forward writes O in bf16
ROTATION_SEED = 0             # draws D's signs (one M for Q and K of every head)
QUANTIZE_THREADS = 128


@dataclass(frozen=True)
class Flash3Plan(Plan):
    block_q: int
    block_k: int
    stages: int
    smem_bytes: int
    register_bytes: int
    consumer_warpgroups: int = 2      # W: block_q / 64
    fp8_scales: str | None = None     # "block" / "tensor" under --dtype fp8, else None
    rotation: str | None = None       # "hadamard" / "none" under --dtype fp8, else None
    hadamard_block: int | None = None  # size of H's diagonal blocks (d's power-of-two part)
    fp8_quantize: str | None = None   # "kernel" / "upstream" under --dtype fp8, else None
    fp8_kernel: str | None = None     # "release" / "pretransposed" under --dtype fp8, else None
    pipelining: bool = True           # Section 3.2's pipelining (off: ``--no-pipelining``)
    pingpong: bool = True             # Section 3.1's turns at the tensor cores (``--pingpong``)
    pipelining_as: str = "release"    # what the pipelining overlaps (``--pipelining``)
    # pipe -> share of the softmax a warpgroup runs beside its own GEMMs (the release's SASS)
    softmax_beside_own_gemm: dict = field(default_factory=dict)
    bwd: flash3_bwd.Flash3BwdPlan | None = None   # the backward's own tiles (training)


def smem_buffers(block_q, block_k, stages, d, e, fp8_vt=False) -> dict[str, int]:
    buffers = {"Q_i": block_q * d * e, "K_j stages": stages * block_k * d * e,
               "V_j stages": stages * block_k * d * e}
    if fp8_vt:                # fp8 wgmma reads V K-major: a transposed copy per stage
        buffers["V_jᵀ stages"] = stages * block_k * d * e
    return buffers


def register_bytes(block_q: int, block_k: int, d: int, score_tiles: int = 2) -> int:
    """fp32 O accumulators and the score tiles in flight (two with the intra-warpgroup
    pipelining, one without)."""
    return 4 * block_q * d + score_tiles * 4 * block_q * block_k


def consumer_registers_per_thread(gpu, warpgroups: int) -> int:
    """Registers each consumer thread gets: what the producer warpgroup leaves of the SM's
    file, split over ``warpgroups`` warpgroups in setmaxnreg's multiples of 8, at most what
    a thread may hold."""
    # none when the producer's registers alone exceed the file (a GPU file's tiny register
    # file): 0, not the negative share an error message would print
    free = max(0, gpu.register_bytes_per_sm // 4 - WARPGROUP * PRODUCER_REGISTERS)
    share = free // (warpgroups * WARPGROUP)
    return min(share, gpu.max_registers_per_thread) // 8 * 8


def consumer_register_budget(gpu, warpgroups: int) -> int:
    """Bytes of fp32 tiles ``warpgroups`` consumer warpgroups may keep."""
    return warpgroups * WARPGROUP * 4 * consumer_registers_per_thread(gpu, warpgroups)


def largest_tile(d: int, e: int, stages: int, sram_bytes: int, gpu, is_fp8: bool):
    """(W, B_r, B_c) of the largest tile that fits shared memory and registers, or None."""
    best = None
    for w in CONSUMER_WARPGROUP_CHOICES:
        bq = w * WGMMA_ROWS
        for bk in BLOCK_K_CANDIDATES:
            smem = sum(smem_buffers(bq, bk, stages, d, e, is_fp8).values())
            if smem <= sram_bytes and register_bytes(bq, bk, d) <= \
                    consumer_register_budget(gpu, w):
                if best is None or bq * bk > best[1] * best[2]:
                    best = (w, bq, bk)
                break
    return best


def release_pingpong(warpgroups: int, d: int, is_fp8: bool) -> bool:
    """Whether the consumer warpgroups take turns at the tensor cores (Section 3.1), as the
    release decides it at compile time. Its scheduler barrier (the named barriers that make
    warpgroup 1 issue its GEMMs before warpgroup 2) is built for 16-bit dtypes at d <= 128
    only (flash-attention hopper/mainloop_fwd_sm90_tma_gmma_ws.hpp at the paper's release,
    7f67966c: ``UseSchedulerBarrier = kHeadDim <= 128``), and for fp8 at d >= 128 only (the
    first FP8 kernel to transpose V in the kernel as Section 3.3 does, 5018ac6a:
    ``sizeof_bits_v<Element> == 8 ? kHeadDim >= 128 : kHeadDim <= 128``, a rule every later
    release keeps; the paper's own fp8 build is not public). Without it, the warpgroups wait
    on the same K_j and V_j barriers and reach their GEMMs together: no warpgroup's softmax
    is set against another's GEMMs, only against its own (the two-tile pipelining)."""
    if warpgroups < 2:
        return False
    if is_fp8:
        return d >= PINGPONG_MIN_HEAD_DIM_FP8
    return d <= PINGPONG_MAX_HEAD_DIM_16BIT


def chosen_pingpong(choice: str, warpgroups: int, d: int, is_fp8: bool) -> bool:
    """``--pingpong``: the release's rule, or the user's what-if (which needs two consumer
    warpgroups to take turns)."""
    if choice == "release":
        return release_pingpong(warpgroups, d, is_fp8)
    if choice == "on" and warpgroups < 2:
        raise PlanError(f"flash3 --pingpong on needs two consumer warpgroups to take turns, but "
                        f"the plan has {warpgroups} (B_r = {warpgroups * WGMMA_ROWS}: the "
                        f"tiles that fit the SRAM budget); use --pingpong release or off, or a "
                        f"larger --sram-kb")
    return choice == "on"


def release_softmax_beside_gemm(d: int, causal: bool) -> dict[str, float]:
    """Pipe -> share of its softmax work that the release's compiled forward issues while a
    warpgroup's own GEMMs are in flight (``RELEASE_SOFTMAX_SPLIT``, to 4 decimals), for the
    kernel the release runs head dim ``d`` on: the next one it compiles (64, 128, 256), as
    later releases round a head dim up; 256 beyond."""
    return shares_beside_own_gemm(RELEASE_SOFTMAX_SPLIT[(release_head_dim(d), causal)])


def release_head_dim(d: int) -> int:
    """The head dim of the release's forward kernel nearest above ``d`` (256 beyond)."""
    return next((h for h in RELEASE_HEAD_DIMS if d <= h), RELEASE_HEAD_DIMS[-1])


def fp8_kernel_tile(kernel: str, d: int, stages: int | None, sram_bytes: int, gpu):
    """(W, B_r, B_c, stages) of the fp8 kernel ``kernel`` at this head dim, where it has one
    and its tiles fit the SRAM budget and the registers; None otherwise (the planner's
    tiles then)."""
    if d not in FP8_TILES[kernel]:
        return None
    w, bk, kernel_stages = FP8_TILES[kernel][d]
    stages = stages or kernel_stages
    bq = w * WGMMA_ROWS
    transposes = kernel == "release"
    if (sum(smem_buffers(bq, bk, stages, d, 1, transposes).values()) > sram_bytes
            or register_bytes(bq, bk, d, 1 if transposes else 2)
            > consumer_register_budget(gpu, w)):
        return None
    return w, bq, bk, stages


def plan(wl, gpu, sram_bytes: int, stages: int | None = None, fp8_scales: str | None = None,
         rotation: str | None = None, fp8_quantize: str | None = None,
         fp8_kernel: str | None = None, no_pipelining: bool = False,
         pingpong: str = "release", pipelining: str | None = None) -> Flash3Plan:
    if not gpu.has_wgmma:
        raise PlanError(f"flash3 needs Hopper's wgmma and TMA; {gpu.full_name} has neither "
                        f"(use flash2, or --hw h100)")
    flash2.check_head_dim(wl.head_dim)
    if wl.dtype == "fp32":
        raise PlanError("flash3: FlashAttention-3 runs fp16, bf16 and fp8 (e4m3) only, in "
                        "every release; use --dtype fp16, bf16 or fp8, or standard or flash1 "
                        "for fp32")
    if not wl.has_forward:
        check_forward_options_unused(stages, no_pipelining, pipelining, pingpong)
    is_fp8 = wl.dtype == "fp8"
    fp8_options = (fp8_scales, rotation, fp8_quantize, fp8_kernel)
    if not is_fp8 and fp8_options != (None,) * len(fp8_options):
        raise PlanError(f"flash3: --fp8-scales, --rotation, --fp8-quantize and --fp8-kernel "
                        f"apply to --dtype fp8 (the workload is {wl.dtype}); add --dtype fp8 "
                        f"or drop them")
    if no_pipelining and pipelining == "paper":
        raise PlanError("flash3: --no-pipelining and --pipelining paper contradict each other "
                        "(no pipelining, or the paper's); give one")
    d, e = wl.head_dim, wl.elem_bytes
    bwd = flash3_bwd.plan_backward(wl, gpu, sram_bytes, consumer_register_budget(
        gpu, flash3_bwd.CONSUMER_WARPGROUPS)) if wl.has_backward else None
    fp8_kernel = (fp8_kernel or "release") if is_fp8 else None
    # the release transposes V in shared memory and waits for each GEMM (wgmma wait 0)
    # before the step's next work: no intra-warpgroup pipelining, one score tile a
    # warpgroup, its own ping-pong rule; the pretransposed kernel runs the 16-bit mainloop
    transposes_v = fp8_kernel == "release"
    fixed = fp8_kernel_tile(fp8_kernel, d, stages, sram_bytes, gpu) if is_fp8 else None
    stages = fixed[3] if fixed else (stages or DEFAULT_STAGES)
    tile = fixed[:3] if fixed else largest_tile(d, e, stages, sram_bytes, gpu, transposes_v)
    if tile is not None:
        w, bq, bk = tile
        if wl.causal and not fixed:   # the same kernel, narrower K/V tiles, as the release
            bk = min(bk, CAUSAL_MAX_BLOCK_K)
        smem = sum(smem_buffers(bq, bk, stages, d, e, transposes_v).values())
        # the fp16 ablation keeps the tiles (and the second score tile's registers)
        regs = register_bytes(bq, bk, d, 1 if transposes_v else 2)
        pipelined = not no_pipelining and not transposes_v
        pipelining_as = pipelining or "release"
        # the pretransposed fp8 kernel runs the 16-bit mainloop: its release's schedule
        beside = release_softmax_beside_gemm(d, wl.causal) \
            if pipelined and pipelining_as == "release" else {}
        schedule = dict(pipelining=pipelined,
                        pingpong=chosen_pingpong(pingpong, w, d, transposes_v),
                        pipelining_as=pipelining_as, softmax_beside_own_gemm=beside)
        if not is_fp8:
            return Flash3Plan(bq, bk, stages, smem, regs, w, **schedule, bwd=bwd)
        return Flash3Plan(bq, bk, stages, smem, regs, w, fp8_scales or "block",
                          rotation or "hadamard", fp8.hadamard_block(d),
                          fp8_quantize or "kernel", fp8_kernel, **schedule)
    need = sum(smem_buffers(WGMMA_ROWS, 16, stages, d, e, transposes_v).values())
    if need <= sram_bytes:      # the smallest tile fits shared memory: registers refuse it
        regs = register_bytes(WGMMA_ROWS, 16, d, 1 if transposes_v else 2)
        raise PlanError(
            f"flash3 with head_dim {d}: even a 64 x 16 tile's fp32 O and score accumulators "
            f"need {regs:,} bytes of registers, but {gpu.full_name} leaves one consumer "
            f"warpgroup {consumer_register_budget(gpu, 1):,} (register_bytes_per_sm "
            f"{gpu.register_bytes_per_sm:,}, less the producer's); use a smaller --head-dim or "
            f"a GPU with more registers")
    raise SramOverflowError(
        f"flash3 with head_dim {d} and {stages} stages needs at least {need:,} bytes of SRAM "
        f"per CTA (Q_i 64x{d} + {stages} stages of 16x{d} K and V"
        f"{' and Vᵀ' if transposes_v else ''}) but the budget is "
        f"{sram_bytes:,} bytes; use fewer --stages, a smaller --head-dim or a larger --sram-kb")


def check_forward_options_unused(stages, no_pipelining, pipelining, pingpong) -> None:
    """--pass bwd runs the release's backward alone: the options that shape the forward
    kernel would be shown as applied and change nothing."""
    given = [flag for flag, used in (("--stages", stages is not None),
                                     ("--no-pipelining", no_pipelining),
                                     ("--pipelining", pipelining is not None),
                                     ("--pingpong", pingpong != "release")) if used]
    if given:
        verb = "shapes" if len(given) == 1 else "shape"
        raise PlanError(f"flash3: {', '.join(given)} {verb} the forward kernel, and --pass bwd "
                        f"runs the release's backward alone; drop them, or use --pass fwd+bwd")


def head_dim_note(wl) -> str | None:
    """One line on a head dim flash-attn pads to a multiple of 8, and on one the release
    compiles no forward for (it refuses all but 64, 128 and 256); None when neither."""
    d = wl.head_dim
    notes = [flash2.head_dim_note(d)]
    if wl.has_forward and wl.dtype != "fp8" and d not in RELEASE_HEAD_DIMS:
        notes.append(f"FlashAttention-3's release compiles its forward for head dims "
                     f"{', '.join(map(str, RELEASE_HEAD_DIMS))} only (its API refuses others): "
                     f"at d = {d} this is a kernel planned for that head dim, on tiles that fit "
                     f"it, with the softmax overlap read off the release's d = "
                     f"{release_head_dim(d)} "
                     f"kernel, not a kernel the release runs")
    return "; ".join(n for n in notes if n) or None


def run(wl, p: Flash3Plan, inputs, rec, compute: bool) -> dict:
    note = head_dim_note(wl)
    if note:
        rec.info["note"] = note
    if wl.dtype == "fp8":
        return run_fp8(wl, p, inputs, rec, compute)
    return run_passes(wl, p, inputs, rec, compute, forward, flash3_bwd.backward)


def forward(wl, p: Flash3Plan, inputs, rec, compute: bool) -> dict:
    """The 16-bit forward: FlashAttention-2's tile loop on the release's tiles and schedule."""
    c = declare_attention_kernel(wl, p, rec, wl.elem_bytes)
    o, lse = new_output(wl, compute), new_stats(wl, compute)
    # no dropout here, but the same argument types as flash2's call: one compiled kernel
    seed, threshold, inv_keep = dropout_args(wl, inputs, compute)
    def head(c, b, h, q, k, v):
        # The tile loop, its arithmetic and its traffic are FlashAttention-2's.
        flash2.forward_head(c, q, k, v, head_view(o, b, h, compute), head_view(lse, b, h, compute),
                            wl.seq_q, wl.seq_k, wl.head_dim, p.block_q, p.block_k, wl.scale,
                            wl.causal, wl.elem_bytes, compute, False, seed,
                            b * wl.heads + h, threshold, inv_keep)
    for_each_head(wl, inputs, compute, c, head)
    return {"o": o, "lse": lse} if compute else {}


def declare_attention_kernel(wl, p: Flash3Plan, rec, out_bytes: int):
    tr = cdiv(wl.seq_q, p.block_q)
    buffers = smem_buffers(p.block_q, p.block_k, p.stages, wl.head_dim, wl.elem_bytes,
                           p.fp8_kernel == "release")
    as_fa2 = flash2.Flash2Plan(p.block_q, p.block_k, p.smem_bytes, p.register_bytes)
    unique, working_set = flash2.l2_footprint(wl, as_fa2, rec, tr, p.smem_bytes)
    unique += wl.batch * wl.heads * wl.seq_q * wl.head_dim * (out_bytes - wl.elem_bytes)
    work = flash2.cta_work(wl, as_fa2)
    return rec.kernel("flash3_fwd", ctas=tr * wl.batch * wl.heads, buffers=buffers,
                      threads_per_cta=(p.consumer_warpgroups + 1) * WARPGROUP,
                      register_bytes_per_cta=p.register_bytes,
                      tc_path="wgmma", overlap="overlap", cta_work=work,
                      # a step's named barrier hands the tensor cores from one consumer
                      # warpgroup to the next: two warpgroups meet at it
                      barrier_threads=2 * WARPGROUP,
                      # each warpgroup's own chain of steps (in ping-pong; in step, one);
                      # wgmma reads its operands from shared memory without loads
                      **step_latency.chain(step_latency.forward_step(p.block_k, wgmma=True),
                                           work, wl.batch * wl.heads,
                                           p.consumer_warpgroups if p.pingpong else 1),
                      # Section 3.1: W consumer warpgroups taking turns (ping-pong), W
                      # independent GEMM -> softmax chains; without the ping-pong the
                      # warpgroups run in step, one chain between them. Section 3.2: as the
                      # compiled release runs it, the share of the softmax issued before the
                      # wait for the warpgroup's own GEMMs runs beside them; as the paper
                      # draws it, two tiles in flight a warpgroup, a chain each. Each
                      # warpgroup's wgmma reads K_j and V_j from shared memory (pricing only)
                      chains_per_cta=(p.consumer_warpgroups if p.pingpong else 1)
                      * (PIPELINE_STAGES_PER_WARPGROUP
                         if p.pipelining and p.pipelining_as == "paper" else 1),
                      softmax_beside_own_gemm=p.softmax_beside_own_gemm,
                      smem_readers=p.consumer_warpgroups, mma_rows_per_cta=p.block_q,
                      # a CTA computes its whole B_r rows, those past N_q included
                      row_padding=row_padding(wl.seq_q, p.block_q, WGMMA_ROWS),
                      # one CTA per tile, as the model's generations: the release runs a
                      # persistent grid of one CTA per SM, but each tile still starts cold:
                      # the producer loads the next Q only once the consumers' last Q K^T
                      # is done (one Q buffer), and the next V only once O's TMA store has
                      # left shared memory (O aliases V's buffer)
                      prologue_bytes_per_cta=(min(p.block_q, wl.seq_q) + p.block_k) * wl.head_dim
                      * wl.elem_bytes,
                      # O_i: normalized, converted, through shared memory to a TMA store
                      epilogue_elements_per_cta=p.block_q * wl.head_dim,
                      # P V reads P from registers (wgmma's A operand), not shared memory
                      **p_in_registers(wl.head_dim, wl.elem_bytes),
                      matmul_dtype=wl.dtype, unique_hbm_bytes=unique,
                      l2_working_set_bytes=working_set)


# ---- FP8: the quantize kernel ---------------------------------------------------------------

def run_fp8(wl, p: Flash3Plan, inputs, rec, compute: bool) -> dict:
    quantized = quantize_inputs(wl, p, inputs, rec, compute)
    c = declare_attention_kernel(wl, p, rec, OUT_BYTES_FP8)
    o, lse = new_output(wl, compute), new_stats(wl, compute)
    block_scales = p.fp8_scales == "block"
    group = kv_group(wl)
    empty = np.empty(0, dtype=np.float32)
    def head(c, b, h, q, k, v):
        sq, sk, sv = ((quantized.sq[b, h], quantized.sk[b, h // group],
                       quantized.sv[b, h // group]) if compute else (empty, empty, empty))
        forward_head_fp8(c, q, k, v, sq, sk, sv, head_view(o, b, h, compute),
                         head_view(lse, b, h, compute), wl.seq_q, wl.seq_k, wl.head_dim,
                         p.block_q, p.block_k, wl.scale, wl.causal, block_scales, compute,
                         p.fp8_kernel == "release")
    for_each_head(wl, quantized, compute, c, head)
    rec.info["fp8"] = {"format": "e4m3", "scales": p.fp8_scales,
                       "q_block_rows": p.block_q, "kv_block_rows": p.block_k,
                       "rotation": p.rotation, "hadamard_block": p.hadamard_block,
                       "p_scale": 2 ** P_SCALE_LOG2, "accumulate": "fp32",
                       "quantize_kernel": ("flash3_fp8_quantize" if p.fp8_quantize == "kernel"
                                           else None),
                       "source_dtype": "bf16" if p.fp8_quantize == "kernel" else "fp8",
                       "output_dtype": "bf16"}
    return {"o": o, "lse": lse} if compute else {}


def quantize_counts(wl, p: Flash3Plan) -> dict[str, int]:
    """The quantize kernel's work in closed form: CTAs (one per block), elements, rows
    rotated, and its CUDA-core ops."""
    blocks = (wl.batch * wl.heads * cdiv(wl.seq_q, p.block_q)
              + 2 * wl.batch * wl.kv_heads * cdiv(wl.seq_k, p.block_k))
    d = wl.head_dim
    elements = (wl.batch * wl.heads * wl.seq_q + 2 * wl.batch * wl.kv_heads * wl.seq_k) * d
    rotated_rows = (wl.batch * wl.heads * wl.seq_q + wl.batch * wl.kv_heads * wl.seq_k
                    if p.rotation == "hadamard" else 0)
    other = 2 * elements + 2 * blocks + rotated_rows * fp8.rotation_ops_per_row(d)
    return {"blocks": blocks, "elements": elements, "rotated_rows": rotated_rows,
            "other_flops": other, "alu_ops": elements}


def quantize_inputs(wl, p: Flash3Plan, inputs, rec, compute: bool):
    """Rotate (optionally) and quantize Q, K, V to e4m3 with their scales, counted as the
    ``flash3_fp8_quantize`` kernel (not counted with ``--fp8-quantize upstream``). Returns
    the e4m3 tensors (q, k, v) and scales (sq, sk, sv: per block along the sequence, per
    batch and head), or None in count-only mode."""
    if p.fp8_quantize == "kernel":
        count_quantize_kernel(wl, p, rec)
    if not compute:
        return None
    q, k = inputs.q, inputs.k
    if p.rotation == "hadamard":
        signs = fp8.random_signs(wl.head_dim, ROTATION_SEED)
        q, k = fp8.rotate(q, signs), fp8.rotate(k, signs)
    per_tensor = p.fp8_scales == "tensor"
    q8, sq = fp8.quantize(q, p.block_q, per_tensor)
    k8, sk = fp8.quantize(k, p.block_k, per_tensor)
    v8, sv = fp8.quantize(inputs.v, p.block_k, per_tensor)
    return types.SimpleNamespace(q=q8, k=k8, v=v8, sq=sq, sk=sk, sv=sv)


def count_quantize_kernel(wl, p: Flash3Plan, rec) -> None:
    """Declare ``flash3_fp8_quantize`` and count its traffic and ops (``quantize_counts``)."""
    n = quantize_counts(wl, p)
    block_rows = max(p.block_q, p.block_k)
    c = rec.kernel("flash3_fp8_quantize", ctas=n["blocks"],
                   buffers={"block (bf16)": block_rows * wl.head_dim * SOURCE_BYTES},
                   threads_per_cta=QUANTIZE_THREADS, tc_path="none", matmul_dtype=wl.dtype)
    count_load(c, SOURCE_BYTES * n["elements"])                  # bf16 Q, K, V in
    count_store(c, n["elements"])                                # e4m3 Q, K, V out
    if p.fp8_scales == "block":
        count_store(c, 4 * n["blocks"])                          # one fp32 scale per block
    else:
        count_atomic_add(c, 4 * n["blocks"])                     # amax history (atomic max)
    count_other(c, n["other_flops"] - n["alu_ops"])
    count_alu(c, n["alu_ops"])                                   # |x| max
    count_convert(c, n["elements"], 1)                           # -> e4m3


# ---- FP8: the attention kernel --------------------------------------------------------------

@compiled
def count_fp8_tile_extras(c, rows, cols, d, block_scales, transposes_v=True):
    """What the FP8 tile adds to FlashAttention-2's tile (``count_tile`` at 1 B, which counts
    P's conversion to e4m3). fp8 ``wgmma`` takes P from registers in another layout than the
    first GEMM's accumulator: each thread reorders every 8 bytes of P with two shuffles,
    two byte permutes and two selects (Colfax Research, "Adding FP8 to FlashAttention",
    on the layout conformance FA-3 §3.3 describes; the release's ``permute_Aregs_fp8``);
    the permutes and selects are ALU ops, the shuffles are not counted. Later releases
    permute the accumulator's registers instead where V is transposed in the kernel, at no
    instruction cost; the simulated program is the paper's."""
    if transposes_v:                                      # V_j -> V_jᵀ in shared memory
        c[SRAM_READ_BYTES] += cols * d
        c[SRAM_WRITE_BYTES] += cols * d
    count_alu(c, 4 * ((rows * cols + 7) // 8))            # P: byte permutes, selects
    if block_scales:
        count_other(c, 2 + rows + 1)                      # s_Q s_K scale; α·s_V,j-1/s_V,j


@compiled
def attend_tile_fp8(c, qi, k8, v8, acc, m, l, r0, rows, c0, c1, d, qk_scale, v_ratio, causal,
                    seq_q, seq_k, block_scales, compute, transposes_v=True):
    """Q̂_i against the keys [c0, c1) of the e4m3 K̂, V̂: the online-softmax step with P cast
    to e4m3 before P V̂_j, in place on acc (in units of this block's V scale), m and l."""
    cols = c1 - c0
    kj = load_rows(c, k8, c0, c1, d, 1)                   # K̂_j -> SRAM (1 B)
    vj = load_rows(c, v8, c0, c1, d, 1)                   # V̂_j -> SRAM, then transposed
    s = matmul_nt(c, qi, kj, rows, cols, d, 1, compute)   # Q̂_i K̂_jᵀ, fp32 accumulate
    masked = causal and causal_block_is_partial(r0, c1, seq_q, seq_k)
    # FA-2's softmax, its scale multiplied by s_Q,i · s_K,j
    count_softmax_tile(c, rows, cols, d, masked)
    count_convert(c, rows * cols, 1)                      # P -> e4m3
    count_fp8_tile_extras(c, rows, cols, d, block_scales, transposes_v)
    p8 = np.empty((0, 0), dtype=np.float32)
    if compute:
        s *= np.float32(qk_scale)
        if masked:
            apply_causal_mask(s, r0, c0, seq_q, seq_k)
        alpha = online_softmax_tile(s, m, l)              # s = exp(S - m); l in fp32
        p8 = round_to_e4m3_jit(s * np.float32(2.0 ** P_SCALE_LOG2))   # 2⁸ P -> e4m3
        scale_rows(acc, alpha * np.float32(v_ratio))
    pv = matmul_nn(c, p8, vj, rows, d, cols, 1, compute)  # acc += P̂ V̂_j (in the MMA)
    if compute:
        acc += pv


@compiled(nogil=True)
def forward_head_fp8(c, q8, k8, v8, sq, sk, sv, o, lse, seq_q, seq_k, d, block_q, block_k,
                     scale, causal, block_scales, compute, transposes_v=True):
    """One head of the FP8 forward: every Q block is one CTA (run here one after another)."""
    for r0 in range(0, seq_q, block_q):
        r1 = min(r0 + block_q, seq_q)
        rows = r1 - r0
        qi = load_rows(c, q8, r0, r1, d, 1)                  # Q̂_i -> SRAM, stays there
        count_load(c, 4 if block_scales else 12)             # s_Q,i (per tensor: s_Q, s_K, s_V)
        m, l, acc = new_row_state(rows, d, compute)
        key_end = causal_key_end(r1, seq_q, seq_k) if causal else seq_k
        v_prev = np.float32(1.0)
        c0 = 0
        while c0 < key_end:
            c1 = min(c0 + block_k, seq_k)
            if not compute:          # the same counts without arrays, a run of tiles at once
                masked = causal and causal_block_is_partial(r0, c1, seq_q, seq_k)
                run = same_tiles_run(r0, c0, key_end, block_k, seq_k, causal, masked, seq_q,
                                     seq_k)
                before = snapshot(c, run)
                if block_scales:
                    count_load(c, 8)                         # s_K,j and s_V,j
                count_tile(c, rows, c1 - c0, d, 1, masked, False)
                count_fp8_tile_extras(c, rows, c1 - c0, d, block_scales, transposes_v)
                repeat_step(c, before, run)
                c0 += run * block_k
                continue
            if block_scales:
                count_load(c, 8)                             # s_K,j and s_V,j
            j = c0 // block_k
            v_j = sv[j]
            v_ratio = v_prev / v_j if c0 > 0 else np.float32(1.0)
            attend_tile_fp8(c, qi, k8, v8, acc, m, l, r0, rows, c0, c1, d,
                            scale * sq[r0 // block_q] * sk[j], v_ratio, causal, seq_q, seq_k,
                            block_scales, compute, transposes_v)
            v_prev = v_j
            c0 += block_k
        oi, lse_i = finish_rows(c, acc, m, l, rows, d, compute)   # acc / l, m + log l
        count_other(c, 2 * rows)                             # · s_V,last; ℓ·2⁻⁸ for the lse
        if compute:
            oi *= v_prev / np.float32(2.0 ** P_SCALE_LOG2)
        store_rows(c, o, r0, oi, rows, d, OUT_BYTES_FP8, compute)   # O_i -> HBM (bf16)
        store_vector(c, lse, r0, lse_i, rows, STAT_BYTES, compute)


def io_bound(wl, p: Flash3Plan, sram_bytes: int) -> float:
    """Θ(N d + N² d / B_r) in bytes, all heads (plus the backward's Θ(N d + N² d / B_c),
    when simulated)."""
    per_head = wl.seq_q * wl.head_dim + wl.seq_q * wl.seq_k * wl.head_dim / p.block_q
    fwd = float(per_head * wl.elem_bytes * wl.batch * wl.heads)
    return bound_for_passes(wl, fwd, flash3_bwd.io_bound_backward(wl, p.bwd) if p.bwd else 0.0)


def footprint(wl, p: Flash3Plan):
    """Q, K, V, O and the fp32 lse, as FlashAttention-2's forward: Θ(N d). In FP8 the
    quantize kernel reads bf16 Q, K, V and keeps their e4m3 copies and fp32 scales for the
    attention kernel, which writes O in bf16 (with ``--fp8-quantize upstream`` the e4m3
    tensors and scales are the call's inputs)."""
    if wl.dtype != "fp8":
        return with_passes(wl, fp.single_kernel(wl, "flash3_fwd"),
                           flash3_bwd.footprint_backward(wl) if wl.has_backward else None)
    n = quantize_counts(wl, p)
    e4m3 = [fp.Allocation(f"{x}_e4m3", size, "flash3_fp8_quantize", "flash3_fwd")
            for x, size in (("q", fp.q_bytes(wl)), ("k", fp.kv_bytes(wl)),
                            ("v", fp.kv_bytes(wl)))]
    scales = fp.Allocation("fp8 scales", 4 * n["blocks"], "flash3_fp8_quantize", "flash3_fwd")
    out = fp.output(wl, "flash3_fwd", "flash3_fwd", width=wl.head_dim * OUT_BYTES_FP8)
    if p.fp8_quantize == "upstream":
        given = [fp.Allocation(a.name, a.nbytes, "flash3_fwd", "flash3_fwd", "input")
                 for a in (*e4m3, scales)]
        return fp.Footprint(("flash3_fwd",), given + out)
    bf16 = [fp.Allocation(a.name, a.nbytes * SOURCE_BYTES, "flash3_fp8_quantize",
                          "flash3_fwd", "input") for a in fp.inputs(wl, "flash3_fp8_quantize",
                                                                     "flash3_fwd")]
    return fp.Footprint(("flash3_fp8_quantize", "flash3_fwd"), bf16 + e4m3 + [scales] + out)
