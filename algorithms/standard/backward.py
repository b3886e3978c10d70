"""Standard attention backward — Algorithm 3 of Dao et al., "FlashAttention" (2022, arXiv
2205.14135, Appendix B.3), run as a framework's autograd runs it: one kernel per op, every
N_q x N_k intermediate read from and written to HBM. Used by ``algorithms.standard`` (not
registered on its own); also the framework dropout kernel of its forward, and the batched
GEMM declaration (``gemm_record``) of every GEMM of the standard programs, both passes.

Saved by the forward (what PyTorch's autograd keeps for ``softmax(scale·Q Kᵀ) V``): Q, K, V
(matmul inputs), P (the softmax output: its backward uses it, and without dropout it is also
the input of P V), and with dropout P ∘ Z (the input of P V) and the dropout mask, 1 byte per
entry (``native_dropout`` returns a bool mask). O is not needed: the softmax backward takes
rowsum(P ∘ dP), which equals rowsum(dO ∘ O) (FlashAttention Eq. 4) but is what the softmax
op, knowing nothing of O, computes.

Kernels (per head; e = storage bytes; gemm traffic as in ``algorithms.kernels.gemm``: reads
(T_n m k + T_m k n) e, writes m n e for an (m x n) = (m x k)(k x n) product):
  1. ``dv_gemm``      dV = (P ∘ Z)ᵀ dO         m, n, k = N_k, d, N_q
  2. ``dp_gemm``      dP̃ = dO Vᵀ               m, n, k = N_q, N_k, d
  3. ``dropout_bwd``  dropout only: dP = dP̃ ∘ mask / (1 - p): reads dP̃ (N_q N_k e) and the
                      mask (N_q N_k bytes), writes dP (N_q N_k e); 2 ops per entry
  4. ``softmax_bwd``  dS = P ∘ (dP - rowsum(P ∘ dP)), one row per CTA: reads P and dP rows,
                      writes dS (N_q N_k e); 4 ops per entry. A row pair that does not fit in
                      SRAM (2 N_k e > M) is read twice (rowsum pass, then output pass).
  5. ``mask_bwd``     causal only: the backward of ``masked_fill``: dS[masked] = 0; reads dS
                      and the bool mask, writes dS; 1 select per entry
  6. ``dq_gemm``      dQ = scale · dS K        m, n, k = N_q, d, N_k (+ m n for alpha)
  7. ``dk_gemm``      dK = scale · dSᵀ Q       m, n, k = N_k, d, N_q (+ m n for alpha)
Bound (Theorem 5): Θ(N d + N²) HBM accesses; matmul FLOPs 8 N_q N_k d (four products).
Framework dropout in the forward (``dropout``, between softmax and P V, as
``torch.nn.functional.dropout`` on P): reads P, writes P ∘ Z and the mask (1 byte per
entry); per row ⌈N_k/4⌉·100 RNG ops (``curand_uniform4``, ``algorithms.kernels.dropout``) + 2 per
entry (compare, scale).
Differences from a framework: no fusion of the dropout backward into the softmax backward;
the counts charge the shared causal mask per head (the kernels declare their L2 working
sets, as the forward's do, so the timing model serves such re-reads from L2).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from algorithms.base import Plan
from algorithms.kernels.common import heads_in_flight, placeholder, shared_operand_working_set
from algorithms.kernels.dropout import (TORCH_ELEMS_PER_CALL, count_keep_decisions,
                                       dropout_args, keep_multiplier_tile)
from algorithms.kernels.gemm import gemm, gemm_ctas, gemm_tc_path, l2_working_set
from algorithms.kernels import footprints as fp
from algorithms.kernels.passes import check_backward_workload
from hwmodels.compiled import compiled
from hwmodels.footprint import Allocation, Footprint
from hwmodels.memory import Recorder
from hwmodels.primitives import count_alu, count_load, count_other, count_store, count_store_result

MASK_BYTES = 1           # bool masks (dropout, causal), one byte per entry
ROW_THREADS = 256


@dataclass(frozen=True)
class StandardBwdPlan(Plan):
    softmax_bwd_chunk: int      # elements of a row of P and of dP held in SRAM at a time
    softmax_bwd_passes: int     # 1 when both rows fit in SRAM, else 2


def plan_backward(wl, gpu, sram_bytes: int) -> StandardBwdPlan:
    check_backward_workload("standard", wl)
    e = wl.elem_bytes
    if 2 * wl.seq_k * e <= sram_bytes:
        return StandardBwdPlan(wl.seq_k, 1)
    return StandardBwdPlan(1 << int(np.log2(sram_bytes // (2 * e))), 2)


# ---- the batched GEMMs of both passes -------------------------------------------------------

def gemm_record(rec, wl, t, name: str, m: int, n: int, k: int, working_set=None):
    """One launch of an (m x n) = (m x k)(k x n) GEMM batched over the heads, as every GEMM
    of the standard programs (forward and backward, Algorithm 0 and PyTorch eager) declares
    it. Compulsory traffic is each operand once and the result once. L2:
    ``working_set(heads in flight, resident CTAs)`` gives the bytes the re-reads need held,
    by default ``gemm.l2_working_set`` (the B operand of the heads in flight, and the A
    panels of the resident CTAs when n spans several column tiles)."""
    bh, e = wl.batch * wl.heads, wl.elem_bytes
    smem, regs = sum(t.smem_buffers(e).values()), t.register_bytes()
    ctas = gemm_ctas(m, n, t)
    flight = heads_in_flight(rec, ctas, bh, smem, regs)
    resident = rec.resident_ctas(bh * ctas, smem, regs)
    l2_bytes = (working_set(flight, resident) if working_set is not None
                else l2_working_set(flight, resident, m, k, n, t, e))
    return rec.kernel(name, ctas=bh * ctas, buffers=t.smem_buffers(e),
                      register_bytes_per_cta=regs, matmul_dtype=wl.dtype,
                      prologue_bytes_per_cta=smem,   # the first k-chunks of A and B
                      tc_path=gemm_tc_path(rec.gpu),
                      unique_hbm_bytes=bh * (m * k + k * n + m * n) * e,
                      l2_working_set_bytes=l2_bytes)


# ---- forward: the framework dropout kernel and the tensors saved for the backward -----------

def new_saved(wl, compute: bool) -> dict:
    """HBM tensors the forward keeps for the backward, all heads (executed training runs)."""
    if not (compute and wl.has_backward):
        return {}
    shape = (wl.batch, wl.heads, wl.seq_q, wl.seq_k)
    saved = {"p": np.zeros(shape, np.float32)}
    if wl.dropout > 0:
        saved["p_drop"] = np.zeros(shape, np.float32)
        saved["mask"] = np.zeros(shape, np.uint8)
    return saved


def dropout_record(rec, wl):
    return rec.kernel("dropout", ctas=wl.batch * wl.heads * wl.seq_q, buffers={},
                      threads_per_cta=ROW_THREADS, tc_path="none")


def dropout_forward(c, wl, p, saved, b, h, inputs, compute):
    """Run the dropout kernel on one head's P; returns P ∘ Z (the input of P V)."""
    nq, nk = wl.seq_q, wl.seq_k
    if not compute:
        p_drop, mask = placeholder(nk), np.empty((0, nk), np.uint8)
    elif "p_drop" in saved:
        p_drop, mask = saved["p_drop"][b, h], saved["mask"][b, h]
    else:
        p_drop, mask = np.zeros((nq, nk), np.float32), np.zeros((nq, nk), np.uint8)
    seed, threshold, inv_keep = dropout_args(wl, inputs, compute)
    dropout_kernel(c, p, p_drop, mask, nq, nk, wl.elem_bytes, seed, b * wl.heads + h,
                   threshold, inv_keep, compute)
    return p_drop


@compiled
def dropout_kernel(c, p, p_drop, mask, seq_q, seq_k, e, seed, bh, threshold, inv_keep, compute):
    """P ∘ Z and the bool mask, one row per CTA."""
    for i in range(seq_q):
        count_load(c, seq_k * e)                                 # row of P
        count_keep_decisions(c, seq_k, TORCH_ELEMS_PER_CALL)
        count_other(c, seq_k)                                    # P ∘ Z
        count_store_result(c, seq_k, e)                          # row of P ∘ Z
        count_store(c, seq_k * MASK_BYTES)                       # row of the mask
        if compute:
            z = keep_multiplier_tile(seed, bh, i, 0, 1, seq_k, seq_q, seq_k, threshold,
                                     inv_keep)[0]
            p_drop[i] = p[i] * z
            mask[i] = z > 0


# ---- backward ------------------------------------------------------------------------------

def softmax_bwd_record(rec, wl, bp: StandardBwdPlan, rows: str = "P_row,dP_row"):
    """dS = P ∘ (dP - rowsum(P ∘ dP)), one row per CTA; a second pass over a row that does
    not fit in SRAM hits L2 (the rows of the resident CTAs are its working set). ``rows``
    names the two rows a CTA holds (the SRAM buffer the JSON lists): P and dP here, P and
    the product P ∘ dP in PyTorch's row kernel, which reads the same bytes."""
    bh, nq, nk, e = wl.batch * wl.heads, wl.seq_q, wl.seq_k, wl.elem_bytes
    row_bytes = 2 * bp.softmax_bwd_chunk * e
    return rec.kernel("softmax_bwd", ctas=bh * nq, buffers={rows: row_bytes},
                      threads_per_cta=ROW_THREADS, tc_path="none",
                      unique_hbm_bytes=bh * 3 * nq * nk * e,
                      l2_working_set_bytes=rec.resident_ctas(bh * nq, row_bytes, 0, ROW_THREADS)
                      * 2 * nk * e)


def backward(wl, fwd_plan, inputs, saved, rec: Recorder, compute: bool) -> dict:
    nq, nk, d, e = wl.seq_q, wl.seq_k, wl.head_dim, wl.elem_bytes
    bh = wl.batch * wl.heads
    t = fwd_plan.tiles
    bp: StandardBwdPlan = fwd_plan.bwd

    def row_kernel(name, buffers, **l2):
        return rec.kernel(name, ctas=bh * nq, buffers=buffers, threads_per_cta=ROW_THREADS,
                          tc_path="none", **l2)

    dropout = wl.dropout > 0
    c_dv = gemm_record(rec, wl, t, "dv_gemm", nk, d, nq)
    c_dp = gemm_record(rec, wl, t, "dp_gemm", nq, nk, d)
    c_drop = row_kernel("dropout_bwd", {}) if dropout else None
    c_sm = softmax_bwd_record(rec, wl, bp)
    c_mask = None
    if wl.causal:      # the mask is shared by all heads: L2 after one, if L2 holds it and
        mask_bytes = nq * nk * MASK_BYTES    # a head's dS read and written between two reads
        c_mask = row_kernel("mask_bwd", {}, unique_hbm_bytes=bh * 2 * nq * nk * e + mask_bytes,
                            l2_working_set_bytes=shared_operand_working_set(
                                mask_bytes, 2 * nq * nk * e))
    c_dq = gemm_record(rec, wl, t, "dq_gemm", nq, d, nk)
    c_dk = gemm_record(rec, wl, t, "dk_gemm", nk, d, nq)
    _, _, inv_keep = dropout_args(wl, inputs, compute)
    grads = {}
    if compute:
        grads = {"dq": np.zeros((wl.batch, wl.heads, nq, d), np.float32),
                 "dk": np.zeros((wl.batch, wl.heads, nk, d), np.float32),
                 "dv": np.zeros((wl.batch, wl.heads, nk, d), np.float32)}
    dp = np.zeros((nq, nk) if compute else (0, nk), dtype=np.float32)   # dP, then dS, in HBM
    tiles = (t.tile_m, t.tile_n, t.tile_k)
    for b in range(wl.batch if compute else 1):
        for h in range(wl.heads if compute else 1):
            q, k, v, do, p, p_drop, mask = head_tensors(wl, inputs, saved, b, h, compute)
            if compute:
                dq, dk, dv = grads["dq"][b, h], grads["dk"][b, h], grads["dv"][b, h]
            else:
                dq = dk = dv = placeholder(d)
            gemm(c_dv, p_drop, do, dv, nk, d, nq, *tiles, e, e, True, False, 1.0, compute)
            gemm(c_dp, do, v, dp, nq, nk, d, *tiles, e, e, False, True, 1.0, compute)
            if dropout:
                dropout_bwd_kernel(c_drop, dp, mask, nq, nk, e, inv_keep, compute)
            softmax_bwd_kernel(c_sm, p, dp, nq, nk, bp.softmax_bwd_chunk, e, compute)
            if wl.causal:
                mask_bwd_kernel(c_mask, dp, nq, nk, e, compute)
            gemm(c_dq, dp, k, dq, nq, d, nk, *tiles, e, e, False, False, wl.scale, compute)
            gemm(c_dk, dp, q, dk, nk, d, nq, *tiles, e, e, True, False, wl.scale, compute)
    if not compute:
        for c in (c_dv, c_dp, c_drop, c_sm, c_mask, c_dq, c_dk):
            if c is not None:
                Recorder.repeat(c, bh)
    return grads


def head_tensors(wl, inputs, saved, b: int, h: int, compute: bool) -> tuple:
    """(Q, K, V, dO, P, P ∘ Z, dropout mask) of head (b, h) as the backward reads them: the
    inputs and what the forward saved (P ∘ Z is P and the mask empty without dropout);
    zero-row placeholders in count-only mode."""
    nk, d = wl.seq_k, wl.head_dim
    no_mask = np.empty((0, nk), np.uint8)
    if not compute:
        return (*[placeholder(d)] * 4, placeholder(nk), placeholder(nk), no_mask)
    p = saved["p"][b, h]
    dropout = wl.dropout > 0
    return (inputs.q[b, h], inputs.k[b, h], inputs.v[b, h], inputs.do[b, h], p,
            saved["p_drop"][b, h] if dropout else p,
            saved["mask"][b, h] if dropout else no_mask)


@compiled
def dropout_bwd_kernel(c, dp, mask, seq_q, seq_k, e, inv_keep, compute):
    """dP = dP̃ ∘ mask / (1 - p) in place, one row per CTA."""
    for i in range(seq_q):
        count_load(c, seq_k * e)
        count_load(c, seq_k * MASK_BYTES)
        count_other(c, 2 * seq_k)
        count_store_result(c, seq_k, e)
        if compute:
            dp[i] = dp[i] * mask[i] * inv_keep


@compiled
def softmax_bwd_kernel(c, p, dp, seq_q, seq_k, chunk, e, compute):
    """dS = P ∘ (dP - rowsum(P ∘ dP)) in place of dP, one row per CTA."""
    two_pass = chunk < seq_k
    for i in range(seq_q):
        count_load(c, 2 * seq_k * e)              # rows of P and dP
        count_other(c, 2 * seq_k)                 # rowsum(P ∘ dP): multiply, add
        if two_pass:
            count_load(c, 2 * seq_k * e)          # read both rows again
        count_other(c, 2 * seq_k)                 # dP - D, times P
        count_store_result(c, seq_k, e)           # row of dS
        if compute:
            row_sum = (p[i] * dp[i]).sum()
            dp[i] = p[i] * (dp[i] - row_sum)


@compiled
def mask_bwd_kernel(c, ds, seq_q, seq_k, e, compute):
    """dS[masked] = 0 (the backward of masked_fill), one row per CTA."""
    for i in range(seq_q):
        count_load(c, seq_k * e)
        count_load(c, seq_k * MASK_BYTES)
        count_alu(c, seq_k)                       # select
        count_store(c, seq_k * e)
        if compute:
            ds[i, max(0, i + seq_k - seq_q + 1):] = 0.0


def io_bound_backward(wl) -> float:
    """Θ(N d + N²) in bytes: (N_q d + N_k d + N_q N_k) e per head, as the forward."""
    per_head = wl.seq_q * wl.head_dim + wl.seq_k * wl.head_dim + wl.seq_q * wl.seq_k
    return float(per_head * wl.elem_bytes * wl.batch * wl.heads)


def footprint_backward(wl):
    """The backward's HBM allocations, one autograd op per kernel: the saved P (P ∘ Z and
    the dropout mask) as inputs, dP (dP̃ and dP with dropout) and dS written out of place,
    dS masked in place, each freed after its last reader. Peak at the softmax backward:
    P, dP and dS live together (3 N_q N_k e)."""
    nq, nk, e = wl.seq_q, wl.seq_k, wl.elem_bytes
    scores = wl.batch * wl.heads * nq * nk
    drop = wl.dropout > 0
    phases = ("dv_gemm", "dp_gemm") + (("dropout_bwd",) if drop else ()) + ("softmax_bwd",) \
        + (("mask_bwd",) if wl.causal else ()) + ("dq_gemm", "dk_gemm")
    first, last = phases[0], phases[-1]
    allocs = fp.inputs(wl, first, last) + [
        Allocation("do", fp.q_bytes(wl), first, last, "input"),
        Allocation("p", scores * e, first, "softmax_bwd", "saved")]
    if wl.causal:
        allocs.append(Allocation("causal_mask", nq * nk * MASK_BYTES, first, last, "input"))
    if drop:
        allocs += [Allocation("p_drop", scores * e, first, "dv_gemm", "saved"),
                   Allocation("dropout_mask", scores * MASK_BYTES, first, "dropout_bwd", "saved"),
                   Allocation("dp_dropped", scores * e, "dp_gemm", "dropout_bwd")]
    allocs += [Allocation("dp", scores * e, "dropout_bwd" if drop else "dp_gemm", "softmax_bwd"),
               Allocation("ds", scores * e, "softmax_bwd", "dk_gemm"),
               *fp.grads(wl, "dv_gemm", last, dq_writer="dq_gemm")]
    # dK is written by the last GEMM
    return Footprint(phases, [a if a.name != "dk" else Allocation("dk", a.nbytes, "dk_gemm", last,
                                                                  "output") for a in allocs])
