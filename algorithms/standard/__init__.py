"""Standard attention — Algorithm 0 of Dao et al., "FlashAttention: Fast and Memory-Efficient
Exact Attention with IO-Awareness" (2022, arXiv 2205.14135), Section 2.2.

Idea: the textbook implementation a framework runs: each step is its own kernel and the
N_q x N_k matrices S and P are materialized in HBM between them.

Kernels (per head; e = storage bytes per element, T_m/T_n = GEMM output tiles):
  1. ``qk_gemm``   S = scale · Q Kᵀ     reads (T_n N_q d + T_m N_k d) e, writes N_q N_k e
  2. ``mask``      causal only: S[masked] = -inf; reads S (N_q N_k e) and the boolean mask
                   (N_q N_k bytes, as ``masked_fill`` with a materialized mask), writes S
  3. ``softmax``   P = softmax(S) row by row; reads S, writes P (N_q N_k e each). A row
                   that fits in SRAM is read once; a longer row is read twice (an online
                   max/sum pass, then a normalize pass).
  4. ``pv_gemm``   O = P V              reads (T_d N_q N_k + T_m N_k d) e, writes N_q d e
Bound (Theorem 2): Θ(N d + N²) HBM accesses. FLOPs: 4 N_q N_k d matmul; per score
1 (scale) + 4 (max, subtract, sum, divide) other ops and 1 exp (+3 other, +1 exp for
a row read twice, + per-chunk rescaling), + 1 select per score when causal.
Differences from a framework: no fusion at all (PyTorch fuses the scale into the GEMM
as we do; some versions fuse the mask into the softmax — see the ``mask`` kernel); the
L2 cache is not modelled, so the broadcast mask is charged per head.

Training (``--pass bwd`` / ``fwd+bwd``): the backward pass is Algorithm 3, one kernel per
autograd op (dV, dP, [dropout backward], softmax backward, [masked_fill backward], dQ, dK),
in ``algorithms.standard.backward``, which also states what the forward saves (P, and with
dropout P ∘ Z and a 1-byte mask). Theorem 5: Θ(N d + N²) HBM accesses, as the forward.
Dropout (``--dropout p``): its own kernel between softmax and P V, as a framework runs it:
reads P, writes P ∘ Z and the mask (N_q N_k (2e + 1) bytes), ⌈N_k/4⌉·100 RNG ops per row
+ 2 per entry; P V then reads P ∘ Z.

Programs (``--program``): ``algorithm0`` (the default) is the paper's Algorithm 0 above;
``pytorch-eager`` is the PyTorch code that published "standard attention" figures time
(flash-attention's benchmark ``attention_pytorch``: layout copies, a baddbmm, the causal mask
built in fp32 per call and added to S, softmax, an einsum), in
``algorithms.standard.pytorch_eager``, and its backward as autograd runs it (bmm's and
baddbmm's products, softmax's backward, out-of-place multiplies by softmax_scale, unbind's
stack) in ``algorithms.standard.pytorch_eager_backward``; their docstrings list the kernels.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from algorithms.standard import backward as standard_bwd
from algorithms.standard import pytorch_eager, pytorch_eager_backward
from algorithms.base import AlgorithmInfo, Option, Plan
from algorithms.kernels.common import (iter_heads, new_output, placeholder,
                                      shared_operand_working_set)
from algorithms.kernels.gemm import GemmTiles, gemm, plan_gemm
from algorithms.kernels import footprints as fp
from algorithms.kernels.footprints import with_passes
from algorithms.kernels.passes import bound_for_passes, run_passes
from hwmodels.compiled import compiled
from hwmodels.footprint import Allocation, Footprint
from hwmodels.primitives import (count_alu, count_exp, count_load, count_other, count_store,
                                 count_store_result)

ALGORITHM0, PYTORCH_EAGER = "algorithm0", "pytorch-eager"
PROGRAMS = (ALGORITHM0, PYTORCH_EAGER)

INFO = AlgorithmInfo(
    name="standard",
    title="Standard attention (S and P materialized in HBM)",
    paper="Dao et al., 2022 (arXiv 2205.14135), Algorithm 0",
    exact=True,
    io_bound="Θ(Nd + N²)",
    passes=("fwd", "bwd"),
    dropout=True,
    options=(Option("program", str, "algorithm0",
                    "the program simulated: algorithm0 (the paper's Algorithm 0: GEMM, [mask], "
                    "softmax, GEMM) or pytorch-eager (flash-attention's benchmark baseline "
                    "attention_pytorch as PyTorch eager runs it: layout copies, an fp32 causal "
                    "mask built per call and added to S; its backward as autograd runs it)",
                    choices=PROGRAMS),),
)

MASK_BYTES = 1           # a materialized boolean mask, one byte per entry
SOFTMAX_THREADS = 256


@dataclass(frozen=True)
class StandardPlan(Plan):
    gemm_tile_m: int
    gemm_tile_n: int
    gemm_tile_k: int
    softmax_chunk: int      # elements of one row held in SRAM at a time
    softmax_passes: int     # 1 when the whole row fits in SRAM, else 2
    bwd: standard_bwd.StandardBwdPlan | None = None   # the backward's softmax rows (training)
    program: str = ALGORITHM0   # which program's kernels run (``--program``)

    @property
    def tiles(self) -> GemmTiles:
        return GemmTiles(self.gemm_tile_m, self.gemm_tile_n, self.gemm_tile_k)


def plan(wl, gpu, sram_bytes: int, program: str = ALGORITHM0) -> StandardPlan:
    if program == PYTORCH_EAGER:
        pytorch_eager.check_workload(wl)
    fwd = dataclasses.replace(plan_forward(wl, gpu, sram_bytes), program=program)
    if not wl.has_backward:
        return fwd
    return dataclasses.replace(fwd, bwd=standard_bwd.plan_backward(wl, gpu, sram_bytes))


def plan_forward(wl, gpu, sram_bytes: int) -> StandardPlan:
    e = wl.elem_bytes
    tiles = plan_gemm(e, sram_bytes, gpu.register_bytes_per_sm // 2)
    if wl.seq_k * e <= sram_bytes:
        chunk, passes = wl.seq_k, 1
    else:
        chunk = 1 << int(np.log2(sram_bytes // e))
        passes = 2
    return StandardPlan(tiles.tile_m, tiles.tile_n, tiles.tile_k, chunk, passes)


def run(wl, p: StandardPlan, inputs, rec, compute: bool, mask=None) -> dict:
    """``mask``: optional boolean (N_q, N_k) mask (causal folded in; a zero-size placeholder
    in count-only mode) that the ``mask`` kernel reads and applies instead of the causal
    mask — ``algorithms.masked_dense`` runs a sparse pattern's mask this way (forward only)."""
    if mask is not None:
        return forward(wl, p, inputs, rec, compute, mask=mask)
    return run_passes(wl, p, inputs, rec, compute, forward, backward)


def backward(wl, p: StandardPlan, inputs, saved, rec, compute: bool) -> dict:
    if p.program == PYTORCH_EAGER:
        return pytorch_eager_backward.backward(wl, p, inputs, saved, rec, compute)
    return standard_bwd.backward(wl, p, inputs, saved, rec, compute)


def forward(wl, p: StandardPlan, inputs, rec, compute: bool, mask=None) -> dict:
    if p.program == PYTORCH_EAGER:
        return pytorch_eager.forward(wl, p, inputs, rec, compute)
    nq, nk, d, e = wl.seq_q, wl.seq_k, wl.head_dim, wl.elem_bytes
    bh = wl.batch * wl.heads
    t = p.tiles
    c_qk = qk_gemm_record(rec, wl, t, "qk_gemm")
    c_mask = None
    if wl.causal or mask is not None:
        # the boolean mask is shared by every head: after the first head it comes from L2,
        # while L2 holds it and a head's S read and written between two reads of it
        c_mask = rec.kernel("mask", ctas=bh * nq, buffers={}, threads_per_cta=SOFTMAX_THREADS,
                            tc_path="none",
                            unique_hbm_bytes=bh * 2 * nq * nk * e + nq * nk * MASK_BYTES,
                            l2_working_set_bytes=shared_operand_working_set(
                                nq * nk * MASK_BYTES, 2 * nq * nk * e))
    c_sm = softmax_record(rec, wl, p)
    c_drop = standard_bwd.dropout_record(rec, wl) if wl.dropout > 0 else None
    c_pv = pv_gemm_record(rec, wl, t, "pv_gemm")
    o = new_output(wl, compute)
    s = np.zeros((nq, nk) if compute else (0, nk), dtype=np.float32)   # S, then P, in HBM
    saved = standard_bwd.new_saved(wl, compute)    # training: P (and P ∘ Z, mask) per head
    for b, h, q, k, v in iter_heads(wl, inputs, compute):
        if saved:
            s = saved["p"][b, h]
        gemm(c_qk, q, k, s, nq, nk, d, t.tile_m, t.tile_n, t.tile_k, e, e, False, True,
             wl.scale, compute)
        if mask is not None:
            select_kernel(c_mask, s, mask, nq, nk, e, compute)
        elif wl.causal:
            mask_kernel(c_mask, s, nq, nk, e, compute)
        softmax_kernel(c_sm, s, nq, nk, p.softmax_chunk, e, compute)
        p_used = s
        if wl.dropout > 0:
            p_used = standard_bwd.dropout_forward(c_drop, wl, s, saved, b, h, inputs, compute)
        o_head = o[b, h] if compute else placeholder(d)
        gemm(c_pv, p_used, v, o_head, nq, d, nk, t.tile_m, t.tile_n, t.tile_k, e, e, False, False,
             1.0, compute)
    if not compute:
        for counters in (c_qk, c_mask, c_sm, c_drop, c_pv):
            if counters is not None:
                rec.repeat(counters, bh)
    return {"o": o, **saved} if compute else {}


def qk_gemm_record(rec, wl, t: GemmTiles, name: str):
    """S = scale · Q Kᵀ as one batched GEMM launch (``backward.gemm_record``). L2: a GEMM
    re-reads its operands' panels; they hit while both operands of the heads in flight fit."""
    nq, nk, d, e = wl.seq_q, wl.seq_k, wl.head_dim, wl.elem_bytes
    return standard_bwd.gemm_record(rec, wl, t, name, nq, nk, d,
                                    working_set=lambda flight, _: flight * (nq + nk) * d * e)


def softmax_record(rec, wl, p: StandardPlan, library_lane_ops=()):
    """P = softmax(S), one row per CTA (``library_lane_ops``: ``KernelRecord``'s)."""
    nq, nk, e = wl.seq_q, wl.seq_k, wl.elem_bytes
    bh = wl.batch * wl.heads
    resident_rows = rec.resident_ctas(bh * nq, p.softmax_chunk * e, 0, SOFTMAX_THREADS)
    return rec.kernel("softmax", ctas=bh * nq, buffers={"row": p.softmax_chunk * e},
                      threads_per_cta=SOFTMAX_THREADS, tc_path="none",
                      unique_hbm_bytes=bh * 2 * nq * nk * e,
                      l2_working_set_bytes=resident_rows * nk * e,
                      library_lane_ops=library_lane_ops)


def pv_gemm_record(rec, wl, t: GemmTiles, name: str):
    """O = P V as one batched GEMM launch (``backward.gemm_record``); the V of the heads in
    flight is its L2 working set, and the P row panels of the resident CTAs when d spans
    more than one column tile (``gemm.l2_working_set``)."""
    return standard_bwd.gemm_record(rec, wl, t, name, wl.seq_q, wl.head_dim, wl.seq_k)


@compiled
def mask_kernel(c, s, seq_q, seq_k, e, compute):
    """S[i, j] = -inf where key j is after query i (bottom-right aligned): one row per CTA."""
    for i in range(seq_q):
        count_load(c, seq_k * e)                  # row of S
        count_load(c, seq_k * MASK_BYTES)         # row of the boolean mask
        count_alu(c, seq_k)                       # select
        count_store(c, seq_k * e)                 # masked row of S
        if compute:
            first_masked = max(0, i + seq_k - seq_q + 1)
            s[i, first_masked:] = -np.inf


@compiled
def select_kernel(c, s, mask, seq_q, seq_k, e, compute):
    """S[i, j] = -inf where ``mask`` is False: the mask kernel with a given mask (same counts)."""
    for i in range(seq_q):
        count_load(c, seq_k * e)                  # row of S
        count_load(c, seq_k * MASK_BYTES)         # row of the boolean mask
        count_alu(c, seq_k)                       # select
        count_store(c, seq_k * e)                 # masked row of S
        if compute:
            for j in range(seq_k):
                if not mask[i, j]:
                    s[i, j] = -np.inf


@compiled
def softmax_kernel(c, s, seq_q, seq_k, chunk, e, compute):
    """P = softmax(S) in place, one row per CTA. Rows longer than the SRAM chunk take two
    passes: an online pass for the max and sum (rescaling the sum per chunk), then a
    normalize pass."""
    two_pass = chunk < seq_k
    n_chunks = -(-seq_k // chunk)
    for i in range(seq_q):
        count_load(c, seq_k * e)                  # read the row (pass 1)
        if two_pass:
            count_alu(c, seq_k)                   # running max
            count_other(c, 2 * seq_k)             # subtract, running sum
            count_exp(c, seq_k)
            count_other(c, 2 * n_chunks)          # per chunk: m_old - m_new, rescale sum
            count_exp(c, n_chunks)
            count_load(c, seq_k * e)              # read the row again (pass 2)
            count_other(c, 2 * seq_k)             # subtract, divide
            count_exp(c, seq_k)
        else:
            count_alu(c, seq_k)                   # max
            count_other(c, 3 * seq_k)             # subtract, sum, divide
            count_exp(c, seq_k)
        count_store_result(c, seq_k, e)           # write the row of P
        if compute:
            row = s[i]
            m = row.max()
            if m == -np.inf:                      # a row that sees no key: P = 0
                row[:] = 0.0
            else:
                p = np.exp(row - m)
                row[:] = p / p.sum()


def io_bound(wl, p: StandardPlan, sram_bytes: int) -> float:
    """Θ(N d + N²) in bytes: (N_q d + N_k d + N_q N_k) e per head."""
    per_head = wl.seq_q * wl.head_dim + wl.seq_k * wl.head_dim + wl.seq_q * wl.seq_k
    fwd = float(per_head * wl.elem_bytes * wl.batch * wl.heads)
    return bound_for_passes(wl, fwd, standard_bwd.io_bound_backward(wl))


def footprint(wl, p: StandardPlan, mask_name: str | None = None):
    """HBM allocations as a framework's autograd runs these kernels: S written by the GEMM
    and masked in place, P = softmax(S) out of place (both live during the softmax: 2 N_q N_k
    e), the boolean causal mask (N_q N_k bytes, a buffer the model keeps, as GPT-2's
    ``bias``), with dropout P ∘ Z and its 1-byte mask. The forward frees P after P V; training
    keeps P (P ∘ Z, the mask) for the backward (``standard.backward.footprint_backward``).
    Θ(N²) either way. ``mask_name``: a sparse pattern's mask in place of the causal one
    (``masked_dense``)."""
    if p.program == PYTORCH_EAGER:
        return with_passes(wl, pytorch_eager.footprint(wl),
                           pytorch_eager_backward.footprint(wl) if wl.has_backward else None)
    return with_passes(wl, footprint_forward(wl, mask_name),
                       standard_bwd.footprint_backward(wl) if wl.has_backward else None)


def footprint_forward(wl, mask_name: str | None = None):
    nq, nk, e = wl.seq_q, wl.seq_k, wl.elem_bytes
    scores = wl.batch * wl.heads * nq * nk
    masked = wl.causal or mask_name is not None
    drop = wl.dropout > 0
    phases = ("qk_gemm",) + (("mask",) if masked else ()) + ("softmax",) \
        + (("dropout",) if drop else ()) + ("pv_gemm",)
    allocs = fp.inputs(wl, "qk_gemm", "pv_gemm") + fp.output(wl, "pv_gemm", "pv_gemm", lse=False)
    if masked:
        allocs.append(Allocation(mask_name or "causal_mask", nq * nk * MASK_BYTES, "qk_gemm",
                                 "pv_gemm", "input"))
    allocs += [Allocation("s", scores * e, "qk_gemm", "softmax"),
               Allocation("p", scores * e, "softmax", "dropout" if drop else "pv_gemm")]
    if drop:
        allocs += [Allocation("p_drop", scores * e, "dropout", "pv_gemm"),
                   Allocation("dropout_mask", scores * MASK_BYTES, "dropout", "dropout")]
    return Footprint(phases, allocs)
