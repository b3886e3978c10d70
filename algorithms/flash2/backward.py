"""FlashAttention-2 backward — Dao, "FlashAttention-2: Faster Attention with Better Parallelism
and Work Partitioning" (2023, arXiv 2307.08691), Algorithm 2 and Section 3.2 (backward).
Used by ``algorithms.flash2`` (not registered on its own).

Idea: parallelize over K/V blocks instead of Q blocks: one CTA per (K/V column block, head)
keeps K_j, V_j and its dK_j, dV_j accumulators on chip, loops over the Q row blocks
recomputing P from Q_i K_jᵀ and the saved log-sum-exp, and adds its share of dQ_i to an
fp32 accumulator in HBM with atomic adds.

Kernels (as flash-attn's ``run_flash_bwd_seqk_parallel`` launches them):
  1. ``flash2_bwd_preprocess`` (``flash_bwd_dot_do_o_kernel``): D = rowsum(dO ∘ O) per row,
     stored in fp32, and the fp32 dQ accumulator cleared (``Clear_dQaccum``).
  2. ``flash2_bwd`` (``flash_bwd_dq_dk_dv_loop_seqk_parallel_kernel``): the main loop.
  3. ``flash2_bwd_convert_dq`` (``flash_bwd_convert_dq_kernel``): dQ = scale · dQaccum,
     converted from fp32 to the storage dtype.

Notation -> code: B_r == block_q, B_c == block_k (this pass's own tiles, chosen below),
T_r == ceil(N_q/B_r), T_c == ceil(N_k/B_c), D == ``delta``, dQaccum == ``dq_acc``.

HBM traffic per head (bytes; e = storage bytes, fp32 statistics and dQ accumulator;
non-causal; V = number of visited (i, j) tiles = T_r T_c, R = Σ over visited tiles of B_r
rows = T_c N_q):
    preprocess reads 2 N_q d e (dO, O); writes 4 N_q (D) + 4 N_q d (dQaccum = 0)
    main       reads 2 N_k d e (K, V once) + R (2 d e + 8) (Q_i, dO_i, lse_i, D_i per tile)
                     + 4 R d (atomic read of dQaccum)
               writes 2 N_k d e (dK, dV once) + 4 R d (atomic write of dQaccum)
    convert    reads 4 N_q d; writes N_q d e
Causal: R sums only the tiles with a visible entry (a K/V block skips the Q blocks above the
diagonal). ``count_atomic_add`` charges each atomic as an HBM read + write.
Bound: Θ(N d + N² d / B_c) — T_c passes over Q, dO and dQaccum; with B_c ∝ M/d this is
Theorem 5's Θ(N² d² / M) of the FlashAttention paper.

FLOPs per visited B_r x B_c tile (r x c): five matmuls S = Q_i K_jᵀ, dV_j += Pᵀ dO_i,
dP = dO_i V_jᵀ, dK_j += dSᵀ Q_i, dQ_i += dS K_j = 10 r c d matmul FLOPs, against the
forward's two (4 r c d): the backward does 2.5x the forward's matmul FLOPs, as
FlashAttention-2 counts it (Section 4.1), exactly when both passes visit the same area
(non-causal). With causal masking each pass computes its diagonal tiles whole and the two
passes tile differently, so the ratio is 2.5 x (backward visited area / forward visited
area). Other ops per tile: r c (scale) + r c (S - lse) + 2 r c (dS = P ∘ (dP - D)), + r c
mask select on diagonal tiles (an ALU op); r c exps; below fp32, 2 r c conversions (P and dS
to the products' operand dtype). Per K/V block: c d (dK_j *= scale). Preprocess: 2 N_q d
(D); convert: N_q d (scale). Every stored tile is converted too (``store_rows``). Dropout (``algorithms.kernels.dropout``): per tile the RNG
ops ⌈r c/16⌉·100 + r c compares, and 2 r c to apply Z to P and dP; no HBM traffic (Z is
regenerated from the RNG state).

Tile plan: the largest B_c, then B_r, from {128, 64, 32, 16} whose shared-memory tiles fit M
and whose fp32 register tiles fit the register file and the 255 registers a thread may hold
(one 8-warp CTA per SM, as FA-2's backward kernels run). Shared memory: Q_i, dO_i, K_j, V_j,
and P_ij, dS_ij (the operands of the transposed products Pᵀ dO and dSᵀ Q go through shared
memory), all at e bytes.
Registers (fp32): dK_j, dV_j accumulators (2 B_c d), S/P and dP tiles (2 B_r B_c), the
dS K_j product before its atomic add (B_r d), lse_i and D_i (2 B_r). For d = 64 on an
H100 this gives 128 x 128 and for d = 128 B_r = 64, B_c = 128, FA-2's sm80 choices.
Differences from the CUDA implementation: no double buffering of Q_i/dO_i; the scale is
applied to S (FA-2 folds it into exp2). The counts charge each dQ atomic as an HBM read and
write (the traffic the algorithm requests, which Theorem 5 bounds); on a GPU atomics execute
in L2, and the kernel declares its compulsory traffic and L2 working set (Q, dO, lse, D and
dQaccum of the heads in flight) so that the timing model serves them there when they fit.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from algorithms.base import Plan, PlanError
from algorithms.kernels.common import (apply_causal_mask, causal_block_is_partial, cdiv,
                               heads_in_flight, placeholder, placeholder_vector)
from algorithms.kernels.dropout import FLASH_ELEMS_PER_CALL, dropout_args, dropout_tile
from algorithms.kernels.flash_tile import repeat_step, rows_run, snapshot
from algorithms.kernels import footprints as fp
from algorithms.kernels import step_latency
from algorithms.kernels.passes import check_backward_workload
from hwmodels.compiled import compiled
from hwmodels.footprint import Allocation, Footprint
from hwmodels.memory import Recorder, SramOverflowError
from hwmodels.primitives import (count_alu, count_atomic_add, count_convert, count_exp,
                                 count_other, count_store, load_rows, load_vector, matmul_nn,
                                 matmul_nt, matmul_tn, store_rows, store_vector)

BLOCK_CANDIDATES = (128, 64, 32, 16)
THREADS_PER_CTA = 256   # 8 warps: flash-attn's Flash_bwd_kernel_traits for sm80
STAT_BYTES = 4          # lse and D are fp32
ACCUM_BYTES = 4         # dQaccum is fp32


@dataclass(frozen=True)
class Flash2BwdPlan(Plan):
    block_q: int            # B_r
    block_k: int            # B_c
    smem_bytes: int
    register_bytes: int


def smem_buffers(block_q: int, block_k: int, d: int, e: int) -> dict[str, int]:
    return {"Q_i": block_q * d * e, "dO_i": block_q * d * e, "K_j": block_k * d * e,
            "V_j": block_k * d * e, "P_ij": block_q * block_k * e,
            "dS_ij": block_q * block_k * e}


def register_bytes(block_q: int, block_k: int, d: int) -> int:
    return 4 * (2 * block_k * d + 2 * block_q * block_k + block_q * d) + 2 * STAT_BYTES * block_q


def plan_backward(wl, gpu, sram_bytes: int) -> Flash2BwdPlan:
    check_backward_workload("flash2", wl)
    d, e = wl.head_dim, wl.elem_bytes
    for bk in BLOCK_CANDIDATES:
        for bq in BLOCK_CANDIDATES:
            smem = sum(smem_buffers(bq, bk, d, e).values())
            regs = register_bytes(bq, bk, d)
            if smem <= sram_bytes and regs <= register_budget(gpu):
                return Flash2BwdPlan(block_q=bq, block_k=bk, smem_bytes=smem, register_bytes=regs)
    smallest = BLOCK_CANDIDATES[-1]
    need = sum(smem_buffers(smallest, smallest, d, e).values())
    if need > sram_bytes:
        raise SramOverflowError(
            f"flash2 backward with head_dim {d} needs at least {need:,} bytes of SRAM per CTA "
            f"(16x{d} tiles of Q, dO, K, V and 16x16 tiles of P, dS at {e} B) but the budget "
            f"is {sram_bytes:,} bytes; use a smaller --head-dim or a larger --sram-kb")
    raise PlanError(f"flash2 backward with head_dim {d}: even 16x16 tiles need "
                    f"{register_bytes(smallest, smallest, d):,} bytes of fp32 registers, more "
                    f"than the {register_budget(gpu):,} bytes its {THREADS_PER_CTA} threads may "
                    f"hold (the {gpu.register_bytes_per_sm:,}-byte register file, at most "
                    f"{gpu.max_registers_per_thread} registers a thread)")


def register_budget(gpu) -> int:
    """Bytes of fp32 tiles one backward CTA may keep: the register file, and no more than
    its threads may hold."""
    return min(gpu.register_bytes_per_sm, gpu.register_bytes_for_threads(THREADS_PER_CTA))


def cta_work(wl, bp: Flash2BwdPlan) -> np.ndarray:
    """Q tiles each K/V-block CTA of one head visits (fewer for early keys when causal)."""
    tr, tc = cdiv(wl.seq_q, bp.block_q), cdiv(wl.seq_k, bp.block_k)
    if not wl.causal:
        return np.full(tc, tr, dtype=np.float64)
    shift = wl.seq_k - wl.seq_q
    first = [max(0, j * bp.block_k - shift) // bp.block_q for j in range(tc)]
    return np.array([max(1, tr - f) for f in first], dtype=np.float64)


def backward(wl, fwd_plan, inputs, saved, rec: Recorder, compute: bool) -> dict:
    """Launch the three kernels; ``saved`` holds the forward's o and lse (executed mode)."""
    bp: Flash2BwdPlan = fwd_plan.bwd
    return run_kernels(wl, bp, inputs, saved, compute, *declare_kernels(wl, bp, rec))


def l2_footprint(wl, bp, rec: Recorder, smem_bytes: int, threads_per_cta: int) -> tuple[int, int]:
    """(compulsory HBM bytes, L2 working set) of the main kernel. The CTAs in flight (K/V
    blocks of a few heads) sweep the same Q, dO, lse, D and dQaccum rows; atomics execute in
    L2. When those heads' tensors fit, DRAM sees the compulsory traffic: inputs once, dK, dV
    once, dQaccum read and written back once."""
    nq, nk, d, e = wl.seq_q, wl.seq_k, wl.head_dim, wl.elem_bytes
    bh = wl.batch * wl.heads
    per_head_shared = 2 * nq * d * e + 2 * STAT_BYTES * nq + ACCUM_BYTES * nq * d
    unique = bh * (per_head_shared + ACCUM_BYTES * nq * d + 4 * nk * d * e)
    flight = heads_in_flight(rec, cdiv(nk, bp.block_k), bh, smem_bytes, bp.register_bytes,
                             threads_per_cta)
    return unique, flight * per_head_shared


def declare_kernels(wl, bp: Flash2BwdPlan, rec: Recorder) -> tuple:
    """FlashAttention-2's three backward kernels (preprocess, main, convert), as records."""
    d = wl.head_dim
    bh = wl.batch * wl.heads
    tr, tc = cdiv(wl.seq_q, bp.block_q), cdiv(wl.seq_k, bp.block_k)
    c_pre = rec.kernel("flash2_bwd_preprocess", ctas=tr * bh, buffers={},
                       threads_per_cta=THREADS_PER_CTA, tc_path="none")
    buffers = smem_buffers(bp.block_q, bp.block_k, d, wl.elem_bytes)
    unique, working_set = l2_footprint(wl, bp, rec, sum(buffers.values()), THREADS_PER_CTA)
    work = cta_work(wl, bp)
    c_main = rec.kernel("flash2_bwd", ctas=tc * bh, buffers=buffers,
                        threads_per_cta=THREADS_PER_CTA, register_bytes_per_cta=bp.register_bytes,
                        tc_path="mma_sync", overlap="serial", cta_work=work,
                        **step_latency.chain(step_latency.backward_step(), work, bh),
                        # 8 warps share the streamed Q_i, dO_i tiles (pricing only)
                        smem_readers=THREADS_PER_CTA // 32, mma_rows_per_cta=bp.block_k,
                        prologue_bytes_per_cta=sum(buffers[b] for b in ("Q_i", "dO_i", "K_j",
                                                                        "V_j")),
                        epilogue_elements_per_cta=2 * bp.block_k * d,     # dK_j, dV_j
                        matmul_dtype=wl.dtype, unique_hbm_bytes=unique,
                        l2_working_set_bytes=working_set)
    c_conv = rec.kernel("flash2_bwd_convert_dq", ctas=tr * bh, buffers={},
                        threads_per_cta=THREADS_PER_CTA, tc_path="none")
    return c_pre, c_main, c_conv


def run_kernels(wl, bp, inputs, saved, compute: bool, c_pre, c_main, c_conv) -> dict:
    """Algorithm 2's backward on ``bp``'s tiles, counted on the three kernel records: the
    program FlashAttention-2's kernels run, and FlashAttention-3's on other tiles."""
    nq, nk, d, e = wl.seq_q, wl.seq_k, wl.head_dim, wl.elem_bytes
    bh = wl.batch * wl.heads
    seed, threshold, inv_keep = dropout_args(wl, inputs, compute)
    grads = _new_grads(wl, compute)
    for b in range(wl.batch if compute else 1):
        for h in range(wl.heads if compute else 1):
            if compute:
                q, k, v, do = inputs.q[b, h], inputs.k[b, h], inputs.v[b, h], inputs.do[b, h]
                o, lse = saved["o"][b, h], saved["lse"][b, h]
                dq, dk, dv = grads["dq"][b, h], grads["dk"][b, h], grads["dv"][b, h]
                delta = np.zeros(nq, dtype=np.float32)
                dq_acc = np.zeros((nq, d), dtype=np.float32)
            else:
                q = k = v = do = o = dq = dk = dv = dq_acc = placeholder(d)
                lse = delta = placeholder_vector()
            preprocess_head(c_pre, do, o, delta, dq_acc, nq, d, bp.block_q, e, compute)
            backward_head(c_main, q, k, v, do, lse, delta, dq_acc, dk, dv, nq, nk, d,
                          bp.block_q, bp.block_k, wl.scale, wl.causal, e, wl.dropout > 0,
                          seed, b * wl.heads + h, threshold, inv_keep, compute)
            convert_dq_head(c_conv, dq_acc, dq, nq, d, bp.block_q, wl.scale, e, compute)
    if not compute:
        for c in (c_pre, c_main, c_conv):
            Recorder.repeat(c, bh)
    return grads


def _new_grads(wl, compute: bool) -> dict:
    if not compute:
        return {}
    shape_q = (wl.batch, wl.heads, wl.seq_q, wl.head_dim)
    shape_k = (wl.batch, wl.heads, wl.seq_k, wl.head_dim)
    return {"dq": np.zeros(shape_q, np.float32), "dk": np.zeros(shape_k, np.float32),
            "dv": np.zeros(shape_k, np.float32)}


@compiled
def preprocess_head(c, do, o, delta, dq_acc, seq_q, d, block_q, e, compute):
    """D_i = rowsum(dO_i ∘ O_i) (fp32) and dQaccum_i = 0, one Q block per CTA."""
    for r0 in range(0, seq_q, block_q):
        r1 = min(r0 + block_q, seq_q)
        rows = r1 - r0
        doi = load_rows(c, do, r0, r1, d, e)
        oi = load_rows(c, o, r0, r1, d, e)
        count_other(c, 2 * rows * d)                            # multiply, add
        di = np.empty(0, dtype=np.float32)
        if compute:
            di = (doi * oi).sum(axis=1)
        store_vector(c, delta, r0, di, rows, STAT_BYTES, compute)
        count_store(c, rows * d * ACCUM_BYTES)                  # clear dQaccum_i
        if compute:
            dq_acc[r0:r1] = 0.0


@compiled
def backward_head(c, q, k, v, do, lse, delta, dq_acc, dk, dv, seq_q, seq_k, d, block_q,
                  block_k, scale, causal, e, dropout, seed, bh, threshold, inv_keep, compute):
    """One head: every K/V block j is one CTA (run here one after another)."""
    for c0 in range(0, seq_k, block_k):
        c1 = min(c0 + block_k, seq_k)
        cols = c1 - c0
        kj = load_rows(c, k, c0, c1, d, e)                       # K_j, V_j -> SRAM, stay there
        vj = load_rows(c, v, c0, c1, d, e)
        dk_acc = np.zeros((cols, d) if compute else (0, 0), dtype=np.float32)  # registers
        dv_acc = np.zeros((cols, d) if compute else (0, 0), dtype=np.float32)
        # causal: Q blocks whose last row cannot see key c0 are skipped
        first_row = max(0, c0 - (seq_k - seq_q)) if causal else 0
        r0 = (first_row // block_q) * block_q
        while r0 < seq_q:
            r1 = min(r0 + block_q, seq_q)
            rows = r1 - r0
            masked = causal and causal_block_is_partial(r0, c1, seq_q, seq_k)
            # count-only: a run of tiles that count alike is stepped through once, then scaled
            run = 1 if compute else rows_run(r0, block_q, block_q, seq_q, c1, seq_k, causal,
                                             masked)
            before = snapshot(c, run)
            qi = load_rows(c, q, r0, r1, d, e)                   # Q_i, dO_i, lse_i, D_i
            doi = load_rows(c, do, r0, r1, d, e)
            lse_i = load_vector(c, lse, r0, r1, STAT_BYTES)
            d_i = load_vector(c, delta, r0, r1, STAT_BYTES)
            # -- recompute P_ij = exp(scale·Q_i K_jᵀ - lse_i) --
            s = matmul_nt(c, qi, kj, rows, cols, d, e, compute)
            count_other(c, rows * cols)                          # scale
            if masked:
                count_alu(c, rows * cols)                        # select -inf above diagonal
            count_other(c, rows * cols)                          # S - lse
            count_exp(c, rows * cols)
            p = s
            if compute:
                s *= np.float32(scale)
                if masked:
                    apply_causal_mask(s, r0, c0, seq_q, seq_k)
                exp_minus_rows(s, lse_i)                         # s now holds P
            p_used = p
            z = np.empty((0, 0), dtype=np.float32)
            if dropout:                                          # Z regenerated on chip
                z = dropout_tile(c, seed, bh, r0, c0, rows, cols, seq_q, seq_k, threshold,
                                 inv_keep, compute, FLASH_ELEMS_PER_CALL)
                count_other(c, rows * cols)                      # P ∘ Z
                if compute:
                    p_used = p * z
            # -- dV_j += (P ∘ Z)ᵀ dO_i ; dP = (dO_i V_jᵀ) ∘ Z --
            count_convert(c, rows * cols, e)                     # P -> the MMA's dtype
            dv_part = matmul_tn(c, p_used, doi, cols, d, rows, e, compute)
            dp = matmul_nt(c, doi, vj, rows, cols, d, e, compute)
            if dropout:
                count_other(c, rows * cols)
                if compute:
                    dp = dp * z
            # -- dS = P ∘ (dP - D_i) --
            count_other(c, 2 * rows * cols)
            ds = dp
            if compute:
                dv_acc += dv_part
                softmax_grad_in_place(dp, p, d_i, np.float32(1.0))   # dp now holds dS
            # -- dK_j += dSᵀ Q_i ; dQaccum_i += dS K_j (atomic, fp32) --
            count_convert(c, rows * cols, e)                     # dS, for both products
            dk_part = matmul_tn(c, ds, qi, cols, d, rows, e, compute)
            dq_part = matmul_nn(c, ds, kj, rows, d, cols, e, compute)
            count_atomic_add(c, rows * d * ACCUM_BYTES)
            if compute:
                dk_acc += dk_part
                dq_acc[r0:r1] += dq_part
            repeat_step(c, before, run)
            r0 += run * block_q
        count_other(c, cols * d)                                 # dK_j *= scale
        if compute:
            dk_acc *= scale
        store_rows(c, dk, c0, dk_acc, cols, d, e, compute)       # dK_j, dV_j -> HBM, once
        store_rows(c, dv, c0, dv_acc, cols, d, e, compute)


@compiled
def convert_dq_head(c, dq_acc, dq, seq_q, d, block_q, scale, e, compute, scaled=True):
    """dQ_i = scale · dQaccum_i, fp32 -> storage dtype (``scaled`` False: the accumulator
    holds dQ already, and is only converted)."""
    for r0 in range(0, seq_q, block_q):
        r1 = min(r0 + block_q, seq_q)
        rows = r1 - r0
        acc = load_rows(c, dq_acc, r0, r1, d, ACCUM_BYTES)
        if scaled:
            count_other(c, rows * d)
        store_rows(c, dq, r0, acc * np.float32(scale), rows, d, e, compute)


# ---- compiled tile helpers (fused loops: NumPy temporaries are slow in Numba) ---------------

@compiled(fastmath={"reassoc", "contract", "nsz"})
def exp_minus_rows(s, ref):
    """s[i, :] = exp(s[i, :] - ref[i]) in place; a row with ref = -inf (it sees no key)
    becomes 0."""
    rows, cols = s.shape
    for i in range(rows):
        r = ref[i]
        row = s[i]
        if r == -np.inf:
            row[:] = 0.0
            continue
        for j in range(cols):
            row[j] = np.exp(row[j] - r)


@compiled(fastmath={"reassoc", "contract", "nsz"})
def softmax_grad_in_place(dp, p, delta, factor):
    """dp[i, j] = factor · p[i, j] · (dp[i, j] - delta[i]): dS from dP (FlashAttention Eq. 4)."""
    rows, cols = dp.shape
    for i in range(rows):
        di = delta[i]
        for j in range(cols):
            dp[i, j] = factor * p[i, j] * (dp[i, j] - di)


def io_bound_backward(wl, bp: Flash2BwdPlan) -> float:
    """Θ(N d + N² d / B_c) in bytes, all heads."""
    per_head = (wl.seq_k * wl.head_dim + wl.seq_q * wl.seq_k * wl.head_dim / bp.block_k)
    return float(per_head * wl.elem_bytes * wl.batch * wl.heads)


def footprint_backward(wl, name: str = "flash2"):
    """The backward's HBM allocations: Q, K, V, dO and the saved O and lse as inputs; D
    (fp32, one per row) and the fp32 dQ accumulator (4 N_q d per head) from the preprocess
    kernel, D freed after the main kernel, dQaccum after the conversion; dK, dV from the
    main kernel, dQ from the conversion. Peak in the conversion kernel (dQaccum and dQ both
    live): Θ(N d). ``name``: the kernels' prefix (FlashAttention v1's release runs the same
    three when it splits its backward over K/V blocks)."""
    phases = (f"{name}_bwd_preprocess", f"{name}_bwd", f"{name}_bwd_convert_dq")
    first, main, last = phases
    return Footprint(phases, fp.inputs(wl, first, last) + [
        Allocation("do", fp.q_bytes(wl), first, last, "input"),
        Allocation("o", fp.q_bytes(wl), first, main, "saved"),
        Allocation("lse", fp.row_stat_bytes(wl), first, main, "saved"),
        Allocation("delta", fp.row_stat_bytes(wl), first, main),
        Allocation("dq_accum", wl.batch * wl.heads * wl.seq_q * wl.head_dim * ACCUM_BYTES,
                   first, last),
        Allocation("dk", fp.kv_bytes(wl), main, last, "output"),
        Allocation("dv", fp.kv_bytes(wl), main, last, "output"),
        Allocation("dq", fp.q_bytes(wl), last, last, "output")])
