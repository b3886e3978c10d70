"""FlashAttention backward — Dao et al., "FlashAttention: Fast and Memory-Efficient Exact
Attention with IO-Awareness" (2022, arXiv 2205.14135), Appendix B.4, Algorithm 4, and
Theorem 5. Used by ``algorithms.flash1`` (not registered on its own).

Idea: never read an N x N matrix: recompute S_ij and P_ij on chip from Q_i, K_j and the
saved statistics ℓ, m (and regenerate the dropout mask from the RNG state); the outer loop
runs over K/V blocks holding dK_j, dV_j on chip, the inner loop over Q blocks, and dQ_i is
read, updated and written back to HBM at every inner step.

Notation -> code: B_c == block_k, B_r == block_q, T_c/T_r the numbers of column/row blocks;
``kj, vj, dk_acc, dv_acc`` are K_j, V_j, dK̃_j, dṼ_j; ``qi, oi, doi, dqi, li, mi`` the
paper's Q_i, O_i, dO_i, dQ_i, ℓ_i, m_i; D_i == ``d_i``.

Tile plan. Algorithm 4 line 2 keeps the forward's B_c = ⌈M/4d⌉, B_r = min(⌈M/4d⌉, d), but
its SRAM holds twice the forward's d-wide tiles: K_j, V_j, dK̃_j, dṼ_j (4 B_c d elements,
which alone are M at the paper's B_c) and Q_i, O_i, dO_i, dQ_i (4 B_r d). Theorem 5's proof
only needs B_c = Θ(M/d), B_r = Θ(min(M/d, d)), so we keep the form and halve the constant:
B_c = ⌈M/8d⌉ (⌊M/8d⌋ when rounding up would overflow), B_r = min(B_c, d), and the eight
d-wide tiles, at e bytes, take 4 B_c d + 4 B_r d <= 8 B_c d ≈ M — the forward module's
accounting, where the B_r x B_c tiles S_ij/P_ij and dP_ij/dS_ij and ℓ_i, m_i, D_i live in
fp32 registers, checked against the register file.

HBM traffic per head (bytes; e = storage bytes; fp32 ℓ, m; R = Σ over visited (i, j)
tiles of the B_r rows = T_c N_q when not causal):
    init   writes (N_q + 2 N_k) d e                 (line 5: dQ = dK = dV = 0)
    reads  = 2 N_k d e + R (4 d e + 8)               (K_j, V_j once; Q_i, O_i, dO_i, dQ_i,
                                                      ℓ_i, m_i per inner step)
    writes = R d e + 2 N_k d e                       (dQ_i per inner step; dK_j, dV_j once)
Theorem 5: Θ(N² d² M⁻¹) HBM accesses (T_c = Θ(N d / M) passes over Q, O, dO and dQ).
Causal: Q blocks entirely above the diagonal of K_j are skipped.
FLOPs per visited tile (r x c): 10 r c d matmul (S, dṼ, dP, dQ, dK̃); other ops r c (τ) +
r c (S - m) + r + r c (diag(ℓ)⁻¹) + 2 r d (D_i = rowsum(dO_i ∘ O_i), recomputed at every
step as in line 19) + 2 r c (dS) + r c (τ dS) + r d (dQ_i + τ dS K_j) = 6 r c + r + 3 r d,
+ r c on diagonal tiles (mask, an ALU select); r c exps; below fp32, 2 r c conversions (P
and dS, the products' operands) and those of every tile stored. Dropout: ⌈r c/8⌉·100 + r c
(regenerate Z on chip, ``algorithms.kernels.dropout``) + 2 r c (P ∘ Z, dP ∘ Z); no HBM
traffic.

The release's program (``flash1 --tiles release``: its tiles, lse, D stored once, dQ in
fp32, a loop kernel or, split, FlashAttention-2's three kernels) and its closed forms:
``algorithms.flash1.release``; ``backward_head`` runs both, ``load_row_state`` and
``store_dq`` holding what differs.

Kernel grid (``flash1 --grid``): ``head`` runs one CTA per (batch, head), like the forward;
``release`` follows the v1 release ('Parallelize CUDA bwd along seqlen_k instead of
seqlen_q', November 2022; ``fmha_bwd_launch_template.h``, ``num_splits_heuristic_bwd``):
each K/V block gets a CTA of its own (the outer loop of Algorithm 4 spread over T_c CTAs)
when that fills the SMs better than a CTA per head, discounted by 1 + B_c / N for the extra
work (1 + B_c / 2N causal, and always from T_c >= 10 causal, where it also balances the
triangle). The CTAs of a head then update the same dQ_i: the release adds them with fp32
atomics into a buffer it zeroes before and converts after, and computes D = rowsum(dO ∘ O)
in a kernel of its own: with ``--tiles release`` the simulation does the same; on the
paper's tiles it keeps Algorithm 4's read-modify-write of dQ_i and its D_i, so the counts do
not depend on the grid, only the CTAs that share them. The
release's 8 warps split K_j and V_j (flash-attention v1, csrc/flash_attn/src/
fmha_bwd_hdim64.cu and _hdim128.cu: ``FMHA_kernel_traits<S, d, 16, 1, 8, ...>``, 16-row
steps, WARPS_N = 8; its forward runs 4):
dQ_i = dS_ij K_j sums over the split keys, so each warp's fp32 partial dQ_i goes through
shared memory, 2 · 8 · 4 d bytes per visited row (priced, ``smem_exchange_bytes``; dK_j and
dV_j stay with the warp that owns their keys). Differences from the paper: the
statistics are fp32 and the matrices are charged at the storage dtype; τ is applied to
dS once and used for both dQ_i and dK̃_j.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from algorithms.base import Plan, PlanError
from algorithms.flash1 import release
from algorithms.kernels.common import (apply_causal_mask, causal_block_is_partial, cdiv, placeholder,
                               placeholder_vector)
from algorithms.kernels.dropout import V1_ELEMS_PER_CALL, dropout_args, dropout_tile
from algorithms.kernels.flash_tile import repeat_step, rows_run, snapshot
from algorithms.flash2.backward import (ACCUM_BYTES, convert_dq_head, preprocess_head,
                                       softmax_grad_in_place)
from algorithms.flash2.backward import footprint_backward as flash2_footprint_backward
from algorithms.kernels import footprints as fp
from algorithms.kernels import step_latency
from algorithms.kernels.passes import check_backward_workload
from hwmodels.compiled import compiled
from hwmodels.footprint import Allocation, Footprint
from hwmodels.memory import Recorder, SramOverflowError, check_sram_fits
from hwmodels.primitives import (count_alu, count_atomic_add, count_convert, count_exp,
                                 count_other, count_store, load_rows, load_vector, matmul_nn,
                                 matmul_nt, matmul_tn, store_rows, store_vector)

STAT_BYTES = 4
# The release's backward CTA is 8 warps (its forward's, 4: ``algorithms.flash1``), and they
# split K_j and V_j between them ("split-K", FlashAttention-2 §3.3): each warp's partial
# products over its keys are summed through shared memory.
THREADS_PER_CTA = 256
SPLIT_K_WARPS = THREADS_PER_CTA // 32


def first_q_blocks(seq_q: int, seq_k: int, block_q: int, block_k: int, causal: bool,
                   release: bool = False) -> np.ndarray:
    """Per K/V block, the first Q block Algorithms 1 and 4 visit with it: the first that can
    see its first key (causal), else 0; the release visits every row at the first K/V block
    (``first_visited_row``)."""
    c0 = np.arange(0, seq_k, block_k, dtype=np.int64)
    first = np.maximum(0, c0 - (seq_k - seq_q)) if causal else np.zeros_like(c0)
    if release:
        first[:1] = 0
    return first // block_q


def rows_per_key_block(seq_q: int, seq_k: int, block_q: int, block_k: int, causal: bool,
                       release: bool = False) -> np.ndarray:
    """Q rows each K/V block is visited with (unequal when causal)."""
    return seq_q - first_q_blocks(seq_q, seq_k, block_q, block_k, causal, release) * block_q


def visited_rows(seq_q: int, seq_k: int, block_q: int, block_k: int, causal: bool,
                 release: bool = False) -> int:
    """Σ, over the (Q block, K/V block) pairs Algorithms 1 and 4 (or the release) visit, of
    the Q block's rows."""
    return int(np.sum(rows_per_key_block(seq_q, seq_k, block_q, block_k, causal, release)))


def visited_pairs(seq_q: int, seq_k: int, block_q: int, block_k: int, causal: bool,
                  release: bool = False) -> int:
    """The (Q block, K/V block) pairs Algorithms 1 and 4 (or the release) visit: their tile
    steps."""
    return int(np.sum(steps_per_key_block(seq_q, seq_k, block_q, block_k, causal, release)))


def steps_per_key_block(seq_q: int, seq_k: int, block_q: int, block_k: int, causal: bool,
                        release: bool = False) -> np.ndarray:
    """The tile steps (Q blocks) visited with each K/V block of a head."""
    return cdiv(seq_q, block_q) - first_q_blocks(seq_q, seq_k, block_q, block_k, causal,
                                                 release)


def split_k_exchange_bytes(rows: int, row_bytes: int, warps: int = SPLIT_K_WARPS) -> int:
    """Shared-memory bytes split-K warps move to sum their partials: each of the ``warps``
    writes ``row_bytes`` per row and they are read back, for ``rows`` visited rows."""
    return 2 * warps * rows * row_bytes


TILE_DIVISOR = 8      # B_c = ceil(M / 8d): see "Tile plan" above
PREPROCESS_ROWS = 128  # the release's D kernel: a CTA per 128 rows (fmha_bwd_dot_do_o_kernel)


@dataclass(frozen=True)
class Flash1BwdPlan(Plan):
    block_q: int        # B_r
    block_k: int        # B_c
    smem_bytes: int
    register_bytes: int
    splits: int = 1     # CTAs per head: 1, or T_c (``--grid release``: one per K/V block)
    tiles: str = "paper"    # ``--tiles``: Algorithm 4's tiles and traffic, or the release's


def sram_buffers(block_q: int, block_k: int, d: int, e: int) -> dict[str, int]:
    return {"K_j": block_k * d * e, "V_j": block_k * d * e, "dK_j": block_k * d * e,
            "dV_j": block_k * d * e, "Q_i": block_q * d * e, "O_i": block_q * d * e,
            "dO_i": block_q * d * e, "dQ_i": block_q * d * e}


def register_bytes(block_q: int, block_k: int) -> int:
    """S_ij/P_ij and dP_ij/dS_ij, and ℓ_i, m_i, D_i, in fp32 registers."""
    return 2 * block_q * block_k * 4 + 3 * block_q * STAT_BYTES


def wave_fill(ctas: int, slots: int) -> float:
    """The release's efficiency of a grid: its waves over the SMs' CTA slots, divided by the
    whole waves it occupies."""
    waves = ctas / slots
    return waves / math.ceil(waves)


def release_backward_splits(heads: int, sms: int, ctas_per_sm: int, seq_k: int, block_k: int,
                            causal: bool) -> int:
    """The v1 release's ``num_splits_heuristic_bwd``: 1 (a CTA per head) or one CTA per K/V
    block, whichever fills the SMs' waves better once the split's extra work is discounted;
    causal with 10 or more K/V blocks always splits (it balances the triangle too)."""
    blocks = -(-seq_k // block_k)
    if causal and blocks >= 10:
        return blocks
    slots = sms * ctas_per_sm
    discount = 1 + (0.5 if causal else 1.0) * block_k / seq_k
    return 1 if wave_fill(heads, slots) >= wave_fill(heads * blocks, slots) / discount \
        else blocks


def plan_backward(wl, gpu, sram_bytes: int, grid: str = "head",
                  tiles: str = "paper") -> Flash1BwdPlan:
    check_backward_workload("flash1", wl)
    d, e = wl.head_dim, wl.elem_bytes
    if tiles == "release":     # the release's kernel traits (``algorithms.flash1.release``)
        block_k, block_q = release.key_block(d, wl.seq_k), release.STEP_ROWS
        need = check_sram_fits(f"flash1 --tiles release backward (B_c = {block_k}, 16-row "
                               f"steps, d = {d})", sram_buffers(block_q, block_k, d, e),
                               sram_bytes, hint="use a larger --sram-kb, or --tiles paper")
    else:
        block_k, block_q, need = paper_tiles(wl, sram_bytes)
    regs = register_bytes(block_q, block_k)
    if regs > gpu.register_bytes_per_sm:
        raise PlanError(f"flash1 backward tiles B_r x B_c = {block_q} x {block_k} need {regs:,} "
                        f"bytes of fp32 registers for S_ij and dP_ij, more than the "
                        f"{gpu.register_bytes_per_sm:,}-byte register file; use a smaller "
                        f"--sram-kb or --head-dim")
    splits = 1
    if grid == "release":
        splits = release_backward_splits(wl.batch * wl.heads, gpu.sm_count,
                                         # the occupancy the release asks CUDA for
                                         gpu.ctas_per_sm(need, regs, THREADS_PER_CTA),
                                         wl.seq_k, block_k, wl.causal)
    return Flash1BwdPlan(block_q=block_q, block_k=block_k, smem_bytes=need,
                         register_bytes=regs, splits=splits, tiles=tiles)


def paper_tiles(wl, sram_bytes: int) -> tuple[int, int, int]:
    """(B_c, B_r, shared-memory bytes) of Algorithm 4 from the SRAM budget: see "Tile plan"."""
    d, e = wl.head_dim, wl.elem_bytes
    m_elems = sram_bytes // e
    if m_elems < TILE_DIVISOR * d:
        raise SramOverflowError(
            f"flash1 backward with head_dim {d} needs M >= 8d = {8 * d} elements "
            f"({8 * d * e:,} bytes) of SRAM for one row of each of K_j, V_j, dK_j, dV_j, Q_i, "
            f"O_i, dO_i, dQ_i, but the budget is {sram_bytes:,} bytes; use a smaller "
            f"--head-dim or a larger --sram-kb")
    block_k = cdiv(m_elems, TILE_DIVISOR * d)          # B_c = ceil(M / 8d)
    if block_k * TILE_DIVISOR * d > m_elems:
        block_k = m_elems // (TILE_DIVISOR * d)        # rounding up would overflow M
    block_q = min(block_k, d)                          # B_r = min(B_c, d)
    need = check_sram_fits(f"flash1 backward (B_c = {block_k}, B_r = {block_q}, d = {d})",
                           sram_buffers(block_q, block_k, d, e), sram_bytes)
    return block_k, block_q, need


ALGORITHM_4, RELEASE_LOOP, RELEASE_SPLIT = 0, 1, 2     # the programs ``backward_head`` runs


def program_of(bp: Flash1BwdPlan) -> int:
    """Algorithm 4 (``--tiles paper``), or the release's loop kernel (a CTA per head, dQ in
    an fp32 buffer read-modify-written) or its sequence-parallel one (a CTA per K/V block,
    dQ added with fp32 atomics)."""
    if bp.tiles != "release":
        return ALGORITHM_4
    return RELEASE_SPLIT if bp.splits > 1 else RELEASE_LOOP


def backward(wl, fwd_plan, inputs, saved, rec: Recorder, compute: bool) -> dict:
    """Launch the program's kernels; ``saved`` holds the forward's o and l, m (Algorithm 1)
    or lse (the release), in executed mode."""
    bp: Flash1BwdPlan = fwd_plan.bwd
    program = program_of(bp)
    nq, nk, d, e = wl.seq_q, wl.seq_k, wl.head_dim, wl.elem_bytes
    bh = wl.batch * wl.heads
    c_init = c_pre = c_conv = None
    if program == ALGORITHM_4:
        c_init = rec.kernel("flash1_bwd_init", ctas=bh, buffers={}, tc_path="none")
    elif program == RELEASE_SPLIT:      # D and the cleared fp32 dQ buffer, as FA-2's
        c_pre = rec.kernel("flash1_bwd_preprocess", ctas=cdiv(nq, PREPROCESS_ROWS) * bh,
                           buffers={}, threads_per_cta=THREADS_PER_CTA, tc_path="none")
    c = main_kernel(rec, wl, bp, program)
    if program == RELEASE_SPLIT:
        c_conv = rec.kernel("flash1_bwd_convert_dq", ctas=cdiv(nq, PREPROCESS_ROWS) * bh,
                            buffers={}, threads_per_cta=THREADS_PER_CTA, tc_path="none")
    seed, threshold, inv_keep = dropout_args(wl, inputs, compute)
    grads = {}
    if compute:
        grads = {"dq": np.zeros((wl.batch, wl.heads, nq, d), np.float32),
                 "dk": np.zeros((wl.batch, wl.heads, nk, d), np.float32),
                 "dv": np.zeros((wl.batch, wl.heads, nk, d), np.float32)}
    for b in range(wl.batch if compute else 1):
        for h in range(wl.heads if compute else 1):
            if compute:
                q, k, v, do = inputs.q[b, h], inputs.k[b, h], inputs.v[b, h], inputs.do[b, h]
                o = saved["o"][b, h]
                l, m = saved["l"][b, h], saved["m"][b, h]     # the release's: 1 and lse
                dq, dk, dv = grads["dq"][b, h], grads["dk"][b, h], grads["dv"][b, h]
                dq_acc, delta = placeholder(d), placeholder_vector()
                if program != ALGORITHM_4:     # the release's fp32 dQ and its D
                    dq_acc, delta = np.zeros((nq, d), np.float32), np.zeros(nq, np.float32)
            else:
                q = k = v = do = o = dq = dk = dv = dq_acc = placeholder(d)
                l = m = delta = placeholder_vector()
            if c_init is not None:                             # line 5: dQ = dK = dV = 0
                count_store(c_init, (nq + 2 * nk) * d * e)
            if c_pre is not None:
                preprocess_head(c_pre, do, o, delta, dq_acc, nq, d, PREPROCESS_ROWS, e,
                                compute)
            for split in range(bp.splits):
                backward_head(c, q, k, v, o, do, l, m, dq, dk, dv, dq_acc, delta, nq, nk, d,
                              bp.block_q, bp.block_k, wl.scale, wl.causal, e, wl.dropout > 0,
                              seed, b * wl.heads + h, threshold, inv_keep, compute, program,
                              split, bp.splits)
            if c_conv is not None:     # dS carries τ already: the conversion alone
                convert_dq_head(c_conv, dq_acc, dq, nq, d, PREPROCESS_ROWS, 1.0, e, compute,
                                False)
    if not compute:
        for kernel in (c_init, c_pre, c, c_conv):
            if kernel is not None:
                Recorder.repeat(kernel, bh)
    return grads


def main_kernel(rec: Recorder, wl, bp: Flash1BwdPlan, program: int):
    """The main kernel's record: its grid, tiles and what the timing model needs of it."""
    nq, nk, d, e = wl.seq_q, wl.seq_k, wl.head_dim, wl.elem_bytes
    bh = wl.batch * wl.heads
    buffers = sram_buffers(bp.block_q, bp.block_k, d, e)
    # L2: the rows of a head re-read for every K/V block hit when those of the heads in
    # flight fit. Compulsory: every input once, dQ, dK, dV written once.
    per_head_reread, unique_per_head = hbm_footprint_per_head(wl, bp, program)
    ctas = bh * bp.splits
    resident = rec.resident_ctas(ctas, sum(buffers.values()), bp.register_bytes,
                                 THREADS_PER_CTA)
    is_release = bp.tiles == "release"
    visited = visited_rows(nq, nk, bp.block_q, bp.block_k, wl.causal, is_release)
    in_registers = release.backward_register_operand_bytes_per_flop(
        d, bp.block_q, e, release.backward_v_in_registers(d, nk, rec.gpu)) if is_release else 0.0
    # split, every CTA of a head in flight re-reads the head's rows
    return rec.kernel("flash1_bwd", ctas=ctas, buffers=buffers,
                      threads_per_cta=THREADS_PER_CTA, register_bytes_per_cta=bp.register_bytes,
                      tc_path="mma_sync", overlap="serial", matmul_dtype=wl.dtype,
                      unique_hbm_bytes=bh * unique_per_head,
                      l2_working_set_bytes=min(bh, resident) * per_head_reread,
                      cta_work=rows_per_key_block(nq, nk, bp.block_q, bp.block_k, wl.causal,
                                                  is_release)
                      .astype(np.float64) if bp.splits > 1 else None,
                      # S_ij = Q_i K_jᵀ and dP_ij = dO_i V_jᵀ, the first two GEMMs (as FA-2's)
                      prologue_bytes_per_cta=sum(buffers[b] for b in ("Q_i", "dO_i", "K_j",
                                                                      "V_j")),
                      # dQ_i goes back at every inner step (Algorithm 4 line 21; the release's
                      # fp32 buffer) and dK_j, dV_j at the end of every outer one (line 24)
                      epilogue_elements_per_cta=d * ((visited + 2 * nk) // bp.splits),
                      # the 8 warps split the keys, and each reads all of the streamed Q_i
                      # and dO_i for four of the five GEMMs (S, dP, dV, dK: not dQ, whose
                      # operands are the warp's own dS and K_j slice): 4 B_r d e of the
                      # 10 B_r B_c d FLOPs' operands, as FLOPs x e / 2 / (5 B_c / 4) prices
                      # them per further reader (pricing only)
                      smem_readers=THREADS_PER_CTA // 32, mma_rows_per_cta=5 * bp.block_k // 4,
                      # the release's warps keep their own dS (and V_j) in registers; K_j they
                      # reload from shared memory every step
                      register_operand_bytes_per_flop=in_registers,
                      # split-K: dQ_i = dS K_j sums over the keys the warps split, so every
                      # warp's fp32 partial dQ_i goes through shared memory (pricing only)
                      smem_exchange_bytes=bh * split_k_exchange_bytes(visited, 4 * d),
                      **step_latency.chain(step_latency.split_k_backward_step(),
                                           visited_pairs(nq, nk, bp.block_q, bp.block_k,
                                                         wl.causal, is_release), bh),
                      step_loads=release_step_loads(wl, bp) if is_release else ())


def release_step_loads(wl, bp: Flash1BwdPlan) -> tuple:
    """The loads the release's backward stages through registers in a step
    (``step_latency.split_k_backward_loads``): the next step's tiles on every step but a
    pass's last; the loop kernel's dQ_i read back on the steps of every K/V block but the
    first, which starts the buffer."""
    steps = steps_per_key_block(wl.seq_q, wl.seq_k, bp.block_q, bp.block_k, wl.causal,
                                release=True)
    readback = step_latency.later_blocks_share(steps) if program_of(bp) == RELEASE_LOOP \
        else 0.0
    return step_latency.split_k_backward_loads(step_latency.next_step_share(steps), readback)


def hbm_footprint_per_head(wl, bp: Flash1BwdPlan, program: int) -> tuple[int, int]:
    """(bytes of a head re-read for every K/V block, distinct bytes the main kernel of a
    head touches)."""
    nq, nk, d, e = wl.seq_q, wl.seq_k, wl.head_dim, wl.elem_bytes
    kv_in_grads_out = 2 * nk * d * e + 2 * nk * d * e + nq * d * e     # K, V; dK, dV; dQ
    if program == ALGORITHM_4:      # Q, O, dO, dQ, ℓ, m
        reread = 4 * nq * d * e + 2 * nq * STAT_BYTES
        return reread, reread + kv_in_grads_out
    # the release: Q, dO, lse, D and the fp32 dQ buffer (when there is more than one K/V
    # block, or any split); the loop kernel reads O once, to compute D
    acc = nq * d * ACCUM_BYTES if program == RELEASE_SPLIT or nk > bp.block_k else 0
    reread = 2 * nq * d * e + 2 * nq * STAT_BYTES + acc
    return reread, reread + kv_in_grads_out + (nq * d * e if program == RELEASE_LOOP else 0)


@compiled
def _no_key_safe(m, l):
    """(m with +inf where m = -inf, 1/l with 0 where l = 0): a row that saw no key
    (l = 0, m = -inf) gets P = exp(S - inf) x 0 = 0, never NaN. A loop: ``np.where``
    would compile Numba's broadcasting and error-message machinery into the first run."""
    m_safe = np.empty_like(m)
    inv_l = np.empty_like(l)
    for i in range(l.shape[0]):
        m_safe[i] = np.inf if m[i] == -np.inf else m[i]
        inv_l[i] = 0.0 if l[i] == 0 else np.float32(1.0) / l[i]
    return m_safe, inv_l


@compiled
def backward_head(c, q, k, v, o, do, l, m, dq, dk, dv, dq_acc, delta, seq_q, seq_k, d, block_q,
                  block_k, scale, causal, e, dropout, seed, bh, threshold, inv_keep, compute,
                  program, split, splits):
    """Algorithm 4 for one head, on the K/V blocks j = split, split + splits, ... (all of
    them with one split; the release's split gives each block a CTA). ``program``: what
    moves between HBM and the tile besides Q_i, K_j, V_j, dO_i (``load_row_state``,
    ``store_dq``)."""
    is_release = program != ALGORITHM_4
    for c0 in range(split * block_k, seq_k, splits * block_k):   # line 6: for j in 1..T_c
        c1 = min(c0 + block_k, seq_k)
        cols = c1 - c0
        kj = load_rows(c, k, c0, c1, d, e)                       # line 7: K_j, V_j -> SRAM
        vj = load_rows(c, v, c0, c1, d, e)
        dk_acc = np.zeros((cols, d) if compute else (0, 0), dtype=np.float32)  # line 8
        dv_acc = np.zeros((cols, d) if compute else (0, 0), dtype=np.float32)
        # causal: Q blocks above the diagonal of K_j are skipped
        r0 = (first_visited_row(c0, seq_q, seq_k, causal, is_release) // block_q) * block_q
        while r0 < seq_q:                                        # line 9: for i in 1..T_r
            r1 = min(r0 + block_q, seq_q)
            rows = r1 - r0
            masked = causal and causal_block_is_partial(r0, c1, seq_q, seq_k)
            first = c0 == 0
            final = is_last_key_block(r1, c1, seq_q, seq_k, causal)
            # count-only: a run of Q blocks that count alike is stepped through once, then
            # scaled
            run = 1 if compute else pair_run(r0, block_q, block_q, seq_q, c1, seq_k, causal,
                                             masked, is_release)
            before = snapshot(c, run)
            qi = load_rows(c, q, r0, r1, d, e)                   # line 10
            doi = load_rows(c, do, r0, r1, d, e)
            li, mi, d_i, dqi = load_row_state(c, o, doi, l, m, delta, dq, dq_acc, r0, r1, d, e,
                                              program, first, compute)
            s = matmul_nt(c, qi, kj, rows, cols, d, e, compute)  # line 11: S = τ Q_i K_jᵀ
            count_other(c, rows * cols)
            if masked:                                           # line 12: MASK
                count_alu(c, rows * cols)                        #   (a select)
            count_other(c, rows * cols + rows + rows * cols)     # line 13: S - m, 1/ℓ, x 1/ℓ
            count_exp(c, rows * cols)
            p = s
            if compute:
                s *= scale
                if masked:
                    apply_causal_mask(s, r0, c0, seq_q, seq_k)
                # rows that see no key (ℓ = 0, m = -inf) get P = 0
                m_safe, inv_l = _no_key_safe(mi, li)
                p = np.exp(s - m_safe[:, None]) * inv_l[:, None]
            p_used = p
            z = np.empty((0, 0), dtype=np.float32)
            if dropout:                                          # lines 14-15: Z, P ∘ Z
                z = dropout_tile(c, seed, bh, r0, c0, rows, cols, seq_q, seq_k, threshold,
                                 inv_keep, compute, V1_ELEMS_PER_CALL)
                count_other(c, rows * cols)
                if compute:
                    p_used = p * z
            count_convert(c, rows * cols, e)                     # P -> the MMA's dtype
            dv_part = matmul_tn(c, p_used, doi, cols, d, rows, e, compute)  # line 16
            dp = matmul_nt(c, doi, vj, rows, cols, d, e, compute)           # line 17
            if dropout:                                          # line 18: dP ∘ Z
                count_other(c, rows * cols)
                if compute:
                    dp = dp * z
            count_other(c, 2 * rows * cols + rows * cols)        # line 20: dS; τ dS
            ds = dp
            if compute:
                dv_acc += dv_part
                softmax_grad_in_place(dp, p, d_i, np.float32(scale))  # dp now holds τ dS
            count_convert(c, rows * cols, e)                     # dS, for lines 21 and 22
            dq_part = matmul_nn(c, ds, kj, rows, d, cols, e, compute)       # line 21
            store_dq(c, dq, dq_acc, r0, dqi, dq_part, rows, d, e, program, final, compute)
            dk_part = matmul_tn(c, ds, qi, cols, d, rows, e, compute)       # line 22
            if compute:
                dk_acc += dk_part
            repeat_step(c, before, run)
            r0 += run * block_q
        store_rows(c, dk, c0, dk_acc, cols, d, e, compute)       # line 24: dK_j, dV_j -> HBM
        store_rows(c, dv, c0, dv_acc, cols, d, e, compute)


@compiled
def load_row_state(c, o, doi, l, m, delta, dq, dq_acc, r0, r1, d, e, program, first, compute):
    """(ℓ_i, m_i, D_i, dQ_i so far) for a Q block. Algorithm 4 reads O_i, dQ_i, ℓ_i, m_i and
    recomputes D_i (line 19); the release reads lse_i (as m_i, with ℓ_i = 1), computes D_i
    from O_i at the first K/V block and stores it, reads it back after, with its fp32 dQ
    buffer (the loop kernel) or from the preprocess (the split one, whose dQ is atomic)."""
    rows = r1 - r0
    if program == ALGORITHM_4:
        oi = load_rows(c, o, r0, r1, d, e)
        dqi = load_rows(c, dq, r0, r1, d, e)
        li = load_vector(c, l, r0, r1, STAT_BYTES)
        mi = load_vector(c, m, r0, r1, STAT_BYTES)
        return li, mi, row_dot(c, doi, oi, rows, d, compute), dqi
    li = l[r0:r1] if compute else l                              # ℓ = 1: nothing to read
    mi = load_vector(c, m, r0, r1, STAT_BYTES)                   # lse_i
    if program == RELEASE_LOOP and first:
        oi = load_rows(c, o, r0, r1, d, e)
        d_i = row_dot(c, doi, oi, rows, d, compute)
        store_vector(c, delta, r0, d_i, rows, STAT_BYTES, compute)
        return li, mi, d_i, np.zeros((rows, d) if compute else (0, 0), dtype=np.float32)
    d_i = load_vector(c, delta, r0, r1, STAT_BYTES)
    if program == RELEASE_LOOP:
        return li, mi, d_i, load_rows(c, dq_acc, r0, r1, d, ACCUM_BYTES)
    return li, mi, d_i, np.empty((0, 0), dtype=np.float32)   # split: dQ_i goes atomically


@compiled
def row_dot(c, doi, oi, rows, d, compute):
    """D_i = rowsum(dO_i ∘ O_i) (Algorithm 4 line 19)."""
    count_other(c, 2 * rows * d)
    if compute:
        return (doi * oi).sum(axis=1)
    return np.empty(0, dtype=np.float32)


@compiled
def store_dq(c, dq, dq_acc, r0, dqi, dq_part, rows, d, e, program, final, compute):
    """dQ_i += τ dS K_j, back to HBM: Algorithm 4's dQ_i at e bytes (line 21); the release's
    fp32 buffer, or dQ itself at e bytes after the row's last K/V block (loop kernel), or an
    fp32 atomic add (split)."""
    count_other(c, rows * d)
    if program == RELEASE_SPLIT:
        count_atomic_add(c, rows * d * ACCUM_BYTES)
        if compute:
            dq_acc[r0:r0 + rows] += dq_part
        return
    new = dqi + dq_part if compute else dqi
    if program == RELEASE_LOOP and not final:
        store_rows(c, dq_acc, r0, new, rows, d, ACCUM_BYTES, compute)
    else:
        store_rows(c, dq, r0, new, rows, d, e, compute)

@compiled
def first_visited_row(c0, seq_q, seq_k, causal, is_release):
    """The first Q row Algorithms 1 and 4 visit with the K/V block at c0: causal, the first
    that can see key c0. The release visits every row at the first K/V block: it initializes
    nothing in HBM, so rows that see no key (N_q > N_k) get their zeros written there."""
    if not causal or (is_release and c0 == 0):
        return 0
    return max(0, c0 - (seq_k - seq_q))


@compiled
def pair_run(r0, block_q, stride, seq_q, c1, seq_k, causal, masked, is_release):
    """``rows_run`` for count-only mode, but one Q block at a time where the release's
    blocks on the diagonal differ in whether this K/V block is their last."""
    if is_release and masked:
        return 1
    return rows_run(r0, block_q, stride, seq_q, c1, seq_k, causal, masked)


@compiled
def is_last_key_block(r1, c1, seq_q, seq_k, causal):
    """Whether the K/V block ending at c1 holds the last key the Q block ending at r1 sees."""
    last_key_end = min(seq_k, r1 + seq_k - seq_q) if causal else seq_k
    return c1 >= last_key_end


def io_bound_backward(wl, sram_elements: int) -> float:
    """Theorem 5: Θ(N² d² / M) in bytes (N_q N_k d² / M elements of e bytes per head)."""
    per_head = wl.seq_q * wl.seq_k * wl.head_dim ** 2 / sram_elements
    return float(per_head * wl.elem_bytes * wl.batch * wl.heads)


def footprint_backward(wl, bp: Flash1BwdPlan):
    """The backward's HBM allocations (Algorithm 4): Q, K, V, dO and the saved O, ℓ, m as
    inputs; dQ, dK, dV at e bytes from the init kernel (line 5: zeroed in HBM), dQ
    read-modify-written in place by the main kernel — Θ(N d). The release's programs:
    ``release_footprint_backward``."""
    program = program_of(bp)
    if program == RELEASE_SPLIT:
        return flash2_footprint_backward(wl, "flash1")
    if program == RELEASE_LOOP:
        return release_footprint_backward(wl, bp)
    phases = ("flash1_bwd_init", "flash1_bwd")
    first, last = phases
    return Footprint(phases, fp.inputs(wl, first, last) + [
        Allocation("do", fp.q_bytes(wl), first, last, "input"),
        Allocation("o", fp.q_bytes(wl), first, last, "saved"),
        Allocation("l", fp.row_stat_bytes(wl), first, last, "saved"),
        Allocation("m", fp.row_stat_bytes(wl), first, last, "saved"),
        *fp.grads(wl, first, last)])


def release_footprint_backward(wl, bp: Flash1BwdPlan):
    """The release's loop kernel (one CTA a head): Q, K, V, dO and the saved O and lse as
    inputs; D (fp32, the kernel stores it at the first K/V block) and, when the keys span
    more than one K/V block, the fp32 dQ buffer it read-modify-writes; dQ, dK, dV as
    outputs. Nothing is zeroed first."""
    phase = "flash1_bwd"
    allocations = fp.inputs(wl, phase, phase) + [
        Allocation("do", fp.q_bytes(wl), phase, phase, "input"),
        Allocation("o", fp.q_bytes(wl), phase, phase, "saved"),
        Allocation("lse", fp.row_stat_bytes(wl), phase, phase, "saved"),
        Allocation("delta", fp.row_stat_bytes(wl), phase, phase),
        *fp.grads(wl, phase, phase)]
    if wl.seq_k > bp.block_k:
        allocations.append(Allocation("dq_accum", fp.q_bytes(wl) * ACCUM_BYTES // wl.elem_bytes,
                                      phase, phase))
    return Footprint((phase,), allocations)
