"""FlashAttention-3 backward — Shah et al., "FlashAttention-3: Fast and Accurate Attention with
Asynchrony and Low-precision" (2024, arXiv 2407.08608), the backward pass its release runs
(flash-attention commit 7f67966c, the paper's date: hopper/flash_bwd_launch_template.h,
flash_bwd_kernel.h ``compute_dqkv_ws``, kernel_traits.h ``Flash_bwd_kernel_traits``). Used by
``algorithms.flash3`` (not registered on its own).

Idea: FlashAttention-2's backward (Algorithm 2 of that paper, ``algorithms.flash2.backward``)
rebuilt for Hopper. One CTA per (K/V block, head) keeps K_j, V_j and its dK_j, dV_j
accumulators on chip and walks the Q blocks; a producer warpgroup loads Q_i and dO_i with TMA
into two pipeline stages, two consumer warpgroups run the five GEMMs on ``wgmma``, and a
warp of the producer adds each step's dQ_i to the fp32 dQ accumulator in HBM with a TMA
reduce-add (the atomics execute in L2).

Kernels, as the release launches them (``run_flash_bwd``):
  1. ``flash3_bwd_preprocess`` (``flash_bwd_dot_do_o_kernel<Clear_dQaccum=true>``):
     D = rowsum(dO ∘ O) per row in fp32, and the fp32 dQ accumulator cleared.
  2. ``flash3_bwd`` (``compute_dqkv_ws``): the main loop.
  3. ``flash3_bwd_convert_dq`` (``convert_dQ``): dQ = scale · dQaccum in the storage dtype.
The math, the loop order and the HBM traffic are FlashAttention-2's on the tiles below, so
the counting program is ``flash2.backward.run_kernels`` (its closed forms, in
``algorithms.flash2.backward``'s docstring, hold with these B_r, B_c):
    per head, non-causal, R = T_c N_q rows visited:
    preprocess reads 2 N_q d e, writes 4 N_q + 4 N_q d
    main       reads 2 N_k d e + R (2 d e + 8) + 4 R d, writes 2 N_k d e + 4 R d
    convert    reads 4 N_q d, writes N_q d e
Bound: Θ(N d + N² d / B_c) bytes per head (T_c passes over Q, dO and dQaccum), Θ(N² d)
FLOPs: 10 B_r B_c d matmul FLOPs a visited tile, 2.5x the forward's.

Tiles (the release's ``run_mha_bwd_hdim{64,128}``; the paper's backward charts time these):
    d <= 64:  B_r = 128 Q rows a step, B_c = 128 keys a CTA
    d <= 128: B_r = 64, B_c = 128
12 warps: the producer warpgroup and two consumer warpgroups, each of which owns half of
the CTA's keys for S = Q K_jᵀ, dP = dO V_jᵀ (computed transposed, ``SdP_swapAB``), dV_j and
dK_j, and half of dQ_i (its rows at d = 64, its columns at d = 128). The release compiles no
kernel beyond d = 128 (``run_mha_bwd_hdim256`` is empty), no causal kernel (each launch is
``run_flash_bwd<Flash_bwd_kernel_traits<...>, false>``, the false its ``Is_causal``) and no
fp8 backward: d > 128 and fp8 are refused;
causal masking is simulated as FlashAttention-2's (a K/V block skips the Q blocks above the
diagonal) on the same tiles, a program the release did not ship, so no published figure
checks it.

Shared memory (``SharedStorageQKVdOdKVWS``): Q_i and dO_i in two stages each, K_j, V_j
(dK_j, dV_j alias them for the epilogue), dS_ij (the operand of dQ_i = dS K_j, which both
warpgroups read), the fp32 dQ_i staged for the TMA reduce-add, and 128 fp32 each of lse and
D: 161 KiB at d = 64, 177 KiB at d = 128, one CTA an SM. P and dS stay in the registers of
the warpgroup that computed them for dV_j += Pᵀ dO_i and dK_j += dSᵀ Q_i (``wgmma`` with
its A operand in registers), so neither is read back from shared memory for those products
(``register_operand_bytes_per_flop``).

One step of a consumer warpgroup (``compute_dqkv_ws``): the previous step's dQ_i = dS K_j
(both warpgroups meet at a named barrier first: dS is complete in shared memory, the dQ
buffer free), written to shared memory for the dQ warp; S and dP issued together; the wait
for S, P = exp2(S · scale log2 e − lse), the wait for dP, dS = P (dP − D), dS to shared
memory; dV_j += Pᵀ dO_i and dK_j += dSᵀ Q_i. The two warpgroups meet at the barrier every
step, so they form one GEMM -> softmax -> GEMM chain a CTA (``chains_per_cta`` 1), as
FlashAttention-2's warps do. What of the softmax runs beside the warpgroup's own dP GEMM is
read off the release's SASS (``RELEASE_SOFTMAX_SPLIT``), as the forward's is: ptxas places
the wait for dP after a quarter to a third of the exponentials (d = 64: 19 of 64; d = 128:
7 of 32), so the rest of P, and all of dS, wait for it.
"""
from __future__ import annotations

from dataclasses import dataclass

from algorithms.base import Plan, PlanError
from algorithms.flash2 import backward as fa2_bwd
from algorithms.kernels import step_latency
from algorithms.kernels.common import WARPGROUP, cdiv, check_tile_limits
from algorithms.kernels.flash_tile import shares_beside_own_gemm
from algorithms.kernels.passes import check_backward_workload
from hwmodels.memory import Recorder

# head dim -> (B_r, B_c): run_mha_bwd_hdim64 / hdim128 (Flash_bwd_kernel_traits<d, B_r, B_c,
# 12 warps, ...>) at 7f67966c
RELEASE_TILES = {64: (128, 128), 128: (64, 128)}
MAX_HEAD_DIM = 128
CONSUMER_WARPGROUPS = 2
THREADS_PER_CTA = (CONSUMER_WARPGROUPS + 1) * WARPGROUP   # 12 warps: producer + 2 consumers
QDO_STAGES = 2                  # kStages: Q_i and dO_i pipeline stages
STATS_PER_BUFFER = 128          # smem_lse, smem_dpsum: 128 fp32 each
DTYPES = ("fp16", "bf16")
# What the release's compiled backward runs beside a consumer warpgroup's own dP GEMM: head
# dim -> {pipe: (before, after)}, a consumer thread's softmax instructions in the
# steady-state loop between its wait for S (WARPGROUP.DEPBAR.LE gsb0, 0x1: dP still in
# flight) and its wait for dP (gsb0, 0x0), and elsewhere in the loop; pipes as the timing
# model prices them (xu: MUFU; fma: FFMA, FADD, FMUL; alu: FMNMX, FSEL, FSETP, F2FP). Read
# off the SASS of hopper/flash_bwd_hdim{64,128}_fp16_sm90.cu at 7f67966c assembled by ptxas
# 12.3.107, by benchmarks/sass_schedule.py as the forward's (the loop that issues all five
# GEMMs; the run: reports/fa3_sass_schedule.json, "backward_kernels"). The source waits for S alone before
# ``scale_apply_exp2`` and for dP after it (``warpgroup_wait<1>``, ``warpgroup_wait<0>``);
# ptxas moves the second wait ahead of most of the exponentials.
RELEASE_SOFTMAX_SPLIT = {
    64: {"xu": (19, 45), "fma": (77, 147), "alu": (0, 64)},
    128: {"xu": (7, 25), "fma": (47, 65), "alu": (0, 32)},
}


@dataclass(frozen=True)
class Flash3BwdPlan(Plan):
    block_q: int            # B_r: Q rows a step
    block_k: int            # B_c: keys a CTA
    smem_bytes: int
    register_bytes: int


def smem_buffers(block_q: int, block_k: int, d: int, e: int) -> dict[str, int]:
    """The release's shared storage for the warp-specialized backward, by buffer."""
    return {"Q_i": QDO_STAGES * block_q * d * e, "dO_i": QDO_STAGES * block_q * d * e,
            "K_j": block_k * d * e, "V_j": block_k * d * e, "dS_ij": block_q * block_k * e,
            "dQ_i": block_q * d * fa2_bwd.ACCUM_BYTES,
            "lse, D": 2 * STATS_PER_BUFFER * fa2_bwd.STAT_BYTES}


def register_bytes(block_q: int, block_k: int, d: int) -> int:
    """fp32 tiles the consumer warpgroups keep: dK_j, dV_j (B_c d each), S and dP (B_r B_c
    each) and a step's dQ_i (B_r d) before it goes to shared memory, lse_i and D_i."""
    return fa2_bwd.register_bytes(block_q, block_k, d)


def release_head_dim(d: int) -> int:
    """The head dim of the release's kernel that runs ``d`` (the next one up)."""
    return min(h for h in RELEASE_TILES if h >= d)


def check_workload(wl) -> None:
    """What the release has no backward kernel for, refused with the fix."""
    check_backward_workload("flash3", wl)
    if wl.dtype not in DTYPES:
        raise PlanError(f"flash3: the backward pass runs fp16 and bf16 (the release has no "
                        f"{wl.dtype} backward); use --dtype fp16 or bf16, or --pass fwd")
    if wl.head_dim > MAX_HEAD_DIM:
        raise PlanError(f"flash3: the release's backward stops at head_dim {MAX_HEAD_DIM} "
                        f"(got {wl.head_dim}); use --head-dim {MAX_HEAD_DIM} or less, --pass "
                        f"fwd, or flash2 for the backward")


def plan_backward(wl, gpu, sram_bytes: int, consumer_register_budget: int) -> Flash3BwdPlan:
    """The release's tiles for this head dim, checked against shared memory and registers."""
    check_workload(wl)
    d, e = wl.head_dim, wl.elem_bytes
    bq, bk = RELEASE_TILES[release_head_dim(d)]
    smem = sum(smem_buffers(bq, bk, d, e).values())
    regs = register_bytes(bq, bk, d)
    check_tile_limits("flash3 backward (the release's tiles)", bq, bk, d, smem, regs,
                      "two stages of Q and dO, K, V, dS and the fp32 dQ tile", sram_bytes,
                      consumer_register_budget, "its consumer warpgroups hold", "--pass fwd")
    return Flash3BwdPlan(block_q=bq, block_k=bk, smem_bytes=smem, register_bytes=regs)


def release_softmax_beside_gemm(d: int) -> dict[str, float]:
    """Pipe -> share of its softmax work that the release's compiled backward issues while
    the warpgroup's dP GEMM is in flight (``RELEASE_SOFTMAX_SPLIT``, to 4 decimals), for the
    kernel head dim ``d`` runs on."""
    return shares_beside_own_gemm(RELEASE_SOFTMAX_SPLIT[release_head_dim(d)])


def register_operand_bytes_per_flop(d: int, e: int) -> float:
    """Bytes per matmul FLOP of the counted operand reads served from registers: P for
    dV_j += Pᵀ dO_i and dS for dK_j += dSᵀ Q_i (``wgmma`` takes its A operand from
    registers). A visited r x c tile counts 10 r c d FLOPs and reads r c e of each: 2 r c e /
    (10 r c d) = e / 5d."""
    return e / (5 * d)


def declare_kernels(wl, bp: Flash3BwdPlan, rec: Recorder) -> tuple:
    """The release's three backward kernels, as records."""
    d, e = wl.head_dim, wl.elem_bytes
    bh = wl.batch * wl.heads
    tr, tc = cdiv(wl.seq_q, bp.block_q), cdiv(wl.seq_k, bp.block_k)
    # the preprocess runs kNThreadsNonWS = 8 warps, as FA-2's
    c_pre = rec.kernel("flash3_bwd_preprocess", ctas=tr * bh, buffers={},
                       threads_per_cta=fa2_bwd.THREADS_PER_CTA, tc_path="none")
    buffers = smem_buffers(bp.block_q, bp.block_k, d, e)
    unique, working_set = fa2_bwd.l2_footprint(wl, bp, rec, bp.smem_bytes, THREADS_PER_CTA)
    work = fa2_bwd.cta_work(wl, bp)
    c_main = rec.kernel("flash3_bwd", ctas=tc * bh, buffers=buffers,
                        threads_per_cta=THREADS_PER_CTA, register_bytes_per_cta=bp.register_bytes,
                        tc_path="wgmma", overlap="serial", cta_work=work,
                        # the two consumer warpgroups meet at a named barrier every step:
                        # one chain a CTA, part of whose softmax runs beside its dP GEMM
                        **step_latency.chain(step_latency.backward_step(wgmma=True), work, bh),
                        barrier_threads=CONSUMER_WARPGROUPS * WARPGROUP,
                        softmax_beside_own_gemm=release_softmax_beside_gemm(d),
                        # each warpgroup's wgmma reads all of the streamed Q_i and dO_i for
                        # its half of the keys (S, dP, dV, dK), and K_j or dS for its half
                        # of dQ (pricing only)
                        smem_readers=CONSUMER_WARPGROUPS, mma_rows_per_cta=bp.block_k,
                        register_operand_bytes_per_flop=register_operand_bytes_per_flop(d, e),
                        prologue_bytes_per_cta=sum(buffers[b] for b in ("K_j", "V_j"))
                        + (buffers["Q_i"] + buffers["dO_i"]) // QDO_STAGES,
                        epilogue_elements_per_cta=2 * bp.block_k * d,     # dK_j, dV_j
                        matmul_dtype=wl.dtype, unique_hbm_bytes=unique,
                        l2_working_set_bytes=working_set)
    c_conv = rec.kernel("flash3_bwd_convert_dq", ctas=tr * bh, buffers={},
                        threads_per_cta=CONSUMER_WARPGROUPS * WARPGROUP, tc_path="none")
    return c_pre, c_main, c_conv


def backward(wl, fwd_plan, inputs, saved, rec: Recorder, compute: bool) -> dict:
    """Launch the three kernels; ``saved`` holds the forward's o and lse (executed mode)."""
    bp: Flash3BwdPlan = fwd_plan.bwd
    return fa2_bwd.run_kernels(wl, bp, inputs, saved, compute, *declare_kernels(wl, bp, rec))


def io_bound_backward(wl, bp: Flash3BwdPlan) -> float:
    """Θ(N d + N² d / B_c) in bytes, all heads."""
    return fa2_bwd.io_bound_backward(wl, bp)


def footprint_backward(wl):
    """The same HBM allocations as FlashAttention-2's backward, under this pass's kernels."""
    return fa2_bwd.footprint_backward(wl, "flash3")
