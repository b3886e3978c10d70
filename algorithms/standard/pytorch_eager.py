"""Standard attention as PyTorch eager code runs it: the baseline that published "standard
attention" figures time (``standard --program pytorch-eager``).

The FlashAttention papers' benchmarks time ``attention_pytorch(qkv, dropout_p, causal)`` in
flash-attention's ``benchmarks/benchmark_flash_attention.py`` (the same function is in
``hopper/benchmark_flash_attention.py``, the FlashAttention-3 benchmark): the input is the
packed ``qkv`` of shape (B, N, 3, H, d), and the function runs, line by line:

    q, k, v = qkv.unbind(dim=2)                                  views
    q = rearrange(q, 'b t h d -> (b h) t d')                     1. copy
    k = rearrange(k, 'b s h d -> (b h) d s')                     2. copy
    scores = torch.empty(B·H, N, N, dtype=qkv.dtype)             allocation only
    scores = torch.baddbmm(scores, q, k, beta=0, alpha=scale)    3. GEMM
    if causal:
        causal_mask = torch.triu(torch.full((N, N), -10000.0), 1)   4. fill, 5. triu (fp32)
        scores = scores + causal_mask.to(dtype=scores.dtype)        6. cast, 7. add
    attention = torch.softmax(scores, dim=-1)                     8. softmax
    attention_drop = F.dropout(attention, dropout_p)              9. only when p > 0
    output = torch.einsum('bhts,bshd->bthd', attention_drop, v)   10. copy, 11. GEMM
    return output.to(dtype=qkv.dtype)                             no-op (same dtype)

Kernels (B, H, N, d; e = storage bytes; elementwise kernels as ATen's TensorIterator
launches them, 128 threads x 4 elements per CTA, ``ATen/native/cuda/Loops.cuh``; over a
permuted or broadcast operand (the copies, the mask add) its legacy loop, whose threads hold
one element of each operand in flight, otherwise its vectorized loop, 4 at once:
``thread_round_bytes``, which the timing model prices at the DRAM's loaded latency):
  1. ``q_copy``    einops' rearrange permutes and reshapes; merging b and h cannot be a view
                   of the packed qkv (b's stride is 3·N·H·d elements, not H·d), so reshape
                   copies: reads and writes B H N d e. Not launched when B = 1 or H = 1
                   (the merge is then a view).
  2. ``k_copy``    the same for K, written transposed as (B·H, d, N): B H N d e each way.
                   TensorIterator walks the contiguous output, so the 32 threads of a warp
                   read 32 keys' elements 3 H d e bytes apart: each load uses e of the 32
                   bytes of its sector (the neighbouring d's CTAs, launched next, take the
                   rest from L2: DRAM moves each byte once, L2 32 / e times).
  3. ``baddbmm``   S = scale · Q Kᵀ, one cuBLAS batched GEMM; beta = 0, so the preallocated
                   ``scores`` is never read (it is only allocated). Traffic as
                   ``algorithms.kernels.gemm``; writes B H N² e.
  Causal only; the mask is built once per call, for all heads:
  4. ``mask_full`` torch.full((N, N), -10000.0) in float32 (the default dtype): writes 4 N² B.
  5. ``mask_triu`` torch.triu(·, 1), out of place (``ATen/native/cuda/TriangularOps.cu``,
                   ``triu_tril_kernel``): a thread owns 8 bytes (2 fp32 elements) and loads
                   them only when one of them is kept, so row i reads from column
                   c₀(i) = the first even column ≥ i − 1: 4 (N − c₀(i)) bytes; every element
                   is written: 4 N² bytes; one select per element. 128 threads per CTA.
  6. ``mask_cast`` .to(dtype=e-byte dtype): reads 4 N², writes e N²; one conversion per
                   element. Not launched for fp32 workloads (``.to`` returns the tensor).
  7. ``mask_add``  scores + mask, broadcast over B·H, out of place: reads S and the mask
                   per head (2 e N² B H), writes the new S (e N² B H); one add per element.
                   -10000 instead of -∞: exp underflows to 0 all the same. The mask's
                   re-reads are L2 hits while L2 holds what passes through it between two
                   reads of a mask entry: TensorIterator walks the output in order, head
                   after head, so between head h's and head h+1's read of an entry go the
                   rest of head h's S, mask and output: 3 e N² (the working set declared).
  8. ``softmax``   torch.softmax(scores, -1): fp16 in and out, fp32 inside; reads S, writes P
                   (e N² B H each), as ATen's row softmax runs it
                   (``algorithms.standard.aten_softmax``): rows longer than 1024 take the
                   exponential twice and re-read the row on chip, and the accurate ``expf``
                   and IEEE division PyTorch compiles cost their library instructions.
  9. ``dropout``   dropout_p > 0 only (F.dropout returns its input for p = 0):
                   ``native_dropout``'s fused kernel, as ``algorithms.standard.backward``'s.
 10. ``v_copy``    einsum turns the product into a bmm of (B·H, N, N) by (B·H, N, d): P
                   reshapes to a view, V (a slice of the packed qkv, permuted to b h s d)
                   must be copied: B H N d e each way. Not launched when B = 1 or H = 1.
 11. ``bmm``       O = P V, one cuBLAS batched GEMM; writes B H N d e. einsum returns O as a
                   permuted view (b t h d): no copy.
Bound: Θ(N d + N²) HBM accesses per head, as Algorithm 0. Against Algorithm 0, per head:
+6 N d e (the three copies; none when B = 1 or H = 1); causal, the mask read at e bytes per
entry instead of 1, and once per call the mask built in about 14 + e bytes per entry
(fill 4; triu about 2 read, 4 written; cast 4 read, e written).
Differences from PyTorch: cuBLAS's tilings and the softmax's launch are not modelled (the
GEMMs, and the softmax's CTA a row of 256 threads, are ``algorithms.standard``'s);
``torch.empty`` and the views launch nothing, as on a GPU.
Training (``--pass bwd`` / ``fwd+bwd``): the forward keeps P (with dropout P ∘ Z and the
mask) as autograd saves it, and the backward is ``algorithms.standard.pytorch_eager_backward``.
"""
from __future__ import annotations

import numpy as np

import algorithms.standard as standard
from algorithms.base import PlanError
from algorithms.kernels import footprints as fp
from algorithms.kernels.common import (cdiv, iter_heads, new_output, placeholder,
                                      shared_operand_working_set)
from algorithms.kernels.gemm import gemm
from algorithms.standard import aten_softmax
from algorithms.standard import backward as standard_bwd
from hwmodels.compiled import compiled
from hwmodels.footprint import Allocation, Footprint
from hwmodels.primitives import count_alu, count_load, count_other, count_store, count_store_result

ELEMENTWISE_THREADS = 128        # Loops.cuh: num_threads() = 4 warps
THREAD_ELEMENTS = 4              # ... x thread_work_size() = 4 elements per thread
ELEMENTWISE_PER_CTA = ELEMENTWISE_THREADS * THREAD_ELEMENTS
TRIU_THREADS = 128               # TriangularOps.cu: block_size
MASK_FILL = -10000.0             # the benchmark's masked score
MASK_BUILD_BYTES = 4             # torch.full's default dtype, float32
TRIU_ELEMS_PER_THREAD = 8 // MASK_BUILD_BYTES   # TriangularOps.cu: 8 / sizeof(scalar_t)


def check_workload(wl) -> None:
    """What ``attention_pytorch(qkv, ...)`` can run: one packed qkv (one sequence length,
    as many K/V heads as query heads), a dtype PyTorch's GEMMs take."""
    flag = "standard --program pytorch-eager"
    # each cause names its own flag: with --decode the lengths differ because of --decode
    # (--new-tokens queries against a cache of --seq), not because of --seq-k
    if getattr(wl, "decode", False):
        raise PlanError(f"{flag} runs one packed qkv (B, N, 3, H, d), a prefill or training "
                        f"call, not a decode step: drop --decode or use --program algorithm0")
    if wl.seq_q != wl.seq_k:
        raise PlanError(f"{flag} runs one packed qkv (B, N, 3, H, d): --seq-k {wl.seq_k} must "
                        f"equal --seq {wl.seq_q}; drop --seq-k or use --program algorithm0")
    if wl.kv_heads != wl.heads:
        raise PlanError(f"{flag} runs one packed qkv, as many K/V heads as query heads: drop "
                        f"--kv-heads {wl.kv_heads} or use --program algorithm0")
    if wl.dtype == "fp8":
        raise PlanError(f"{flag}: torch.baddbmm takes no fp8 operands; use --dtype fp16, bf16 "
                        f"or fp32")


def layout_copies(wl) -> bool:
    """Whether the rearranges (and einsum's V operand) copy: merging b and h of a packed-qkv
    slice is a view only when one of them has size 1."""
    return wl.batch > 1 and wl.heads > 1


def casts_mask(wl) -> bool:
    """``causal_mask.to(dtype)`` launches a kernel unless the scores are fp32 already."""
    return wl.elem_bytes != MASK_BUILD_BYTES


def kernel_names(wl) -> tuple[str, ...]:
    """The kernels one call launches, in order (also the footprint's phases)."""
    copies = layout_copies(wl)
    names = (("q_copy", "k_copy") if copies else ()) + ("baddbmm",)
    if wl.causal:
        names += ("mask_full", "mask_triu") + (("mask_cast",) if casts_mask(wl) else ()) \
            + ("mask_add",)
    names += ("softmax",) + (("dropout",) if wl.dropout > 0 else ())
    return names + (("v_copy",) if copies else ()) + ("bmm",)


SECTOR_BYTES = 32                # the unit L2 delivers (CUDA Best Practices Guide)


def legacy_loop_round(*operand_bytes: int) -> int:
    """A round of a thread of ATen's elementwise loop over non-contiguous operands (a
    broadcast or permuted one; ``CUDALoops.cuh``, ``launch_legacy_kernel``): its 4 elements go
    one after the other, each loaded, computed and stored before the next is loaded (the
    store may alias the next load), so one element of each operand is in flight."""
    return sum(operand_bytes)


def vectorized_round(*operand_bytes: int) -> int:
    """A round of a thread of ATen's vectorized loop (every operand contiguous,
    ``launch_vectorized_kernel``): it loads its 4 elements of each input, then computes and
    stores them, all at once."""
    return THREAD_ELEMENTS * sum(operand_bytes)


def elementwise_record(rec, name: str, elements: int, round_bytes: int, **l2):
    """One of ATen's elementwise kernels over ``elements``; ``round_bytes`` is what one of
    its threads moves in a round (``legacy_loop_round``, ``vectorized_round``; 0 for a kernel
    whose threads only store, and so wait on nothing)."""
    return rec.kernel(name, ctas=cdiv(elements, ELEMENTWISE_PER_CTA), buffers={},
                      threads_per_cta=ELEMENTWISE_THREADS, tc_path="none",
                      thread_round_bytes=round_bytes, **l2)


def forward(wl, p, inputs, rec, compute: bool) -> dict:
    n, d, e = wl.seq_q, wl.head_dim, wl.elem_bytes
    bh = wl.batch * wl.heads
    t = p.tiles
    copies = layout_copies(wl)
    # kernels declared in launch order (the report and the footprint list them so)
    copy_round = legacy_loop_round(e, e)     # the copies read a permuted slice
    c_qc = elementwise_record(rec, "q_copy", bh * n * d, copy_round) if copies else None
    c_kc = elementwise_record(rec, "k_copy", bh * n * d, copy_round,  # reads strided by 3 H d e
                              read_sector_use=min(1.0, e / SECTOR_BYTES)) if copies else None
    c_qk = standard.qk_gemm_record(rec, wl, t, "baddbmm")
    c_full = c_triu = c_cast = c_add = None
    if wl.causal:
        c_full = elementwise_record(rec, "mask_full", n * n, 0)
        rows_padded = n * (cdiv(n, TRIU_ELEMS_PER_THREAD) * TRIU_ELEMS_PER_THREAD)
        c_triu = rec.kernel("mask_triu", buffers={}, threads_per_cta=TRIU_THREADS,
                            ctas=cdiv(rows_padded // TRIU_ELEMS_PER_THREAD, TRIU_THREADS),
                            tc_path="none",      # a thread loads its 8 bytes, then stores 8
                            thread_round_bytes=2 * TRIU_ELEMS_PER_THREAD * MASK_BUILD_BYTES)
        c_cast = elementwise_record(rec, "mask_cast", n * n,
                                    vectorized_round(MASK_BUILD_BYTES, e)) \
            if casts_mask(wl) else None
        # the mask (N² e) is read by every head: after the first, from L2 if L2 keeps it
        # while a head's S and output (2 N² e) stream through between two reads of it;
        # the mask broadcasts over B·H, so ATen runs the legacy loop
        c_add = elementwise_record(rec, "mask_add", bh * n * n, legacy_loop_round(e, e, e),
                                   unique_hbm_bytes=bh * 2 * n * n * e + n * n * e,
                                   l2_working_set_bytes=shared_operand_working_set(
                                       n * n * e, 2 * n * n * e))
    c_sm = aten_softmax.softmax_record(rec, wl, p)
    c_drop = standard_bwd.dropout_record(rec, wl) if wl.dropout > 0 else None
    c_vc = elementwise_record(rec, "v_copy", bh * n * d, copy_round) if copies else None
    c_pv = standard.pv_gemm_record(rec, wl, t, "bmm")

    mask = None
    if wl.causal:
        mask = build_causal_mask(c_full, c_triu, c_cast, n, e, compute)
    o = new_output(wl, compute)
    s = np.zeros((n, n) if compute else (0, n), dtype=np.float32)
    saved = standard_bwd.new_saved(wl, compute)    # training: P (and P ∘ Z, mask) per head
    for b, h, q, k, v in iter_heads(wl, inputs, compute):
        if saved:
            s = saved["p"][b, h]
        if copies:
            layout_copy_kernel(c_qc, n, d, e)
            layout_copy_kernel(c_kc, n, d, e)
        gemm(c_qk, q, k, s, n, n, d, t.tile_m, t.tile_n, t.tile_k, e, e, False, True,
             wl.scale, compute)
        if wl.causal:
            mask_add_kernel(c_add, s, mask, n, e, compute)
        aten_softmax.softmax_kernel(c_sm, s, n, n, e, aten_softmax.block_path(n, e), compute)
        p_used = s
        if wl.dropout > 0:
            p_used = standard_bwd.dropout_forward(c_drop, wl, s, saved, b, h, inputs, compute)
        if copies:
            layout_copy_kernel(c_vc, n, d, e)
        o_head = o[b, h] if compute else placeholder(d)
        gemm(c_pv, p_used, v, o_head, n, d, n, t.tile_m, t.tile_n, t.tile_k, e, e, False, False,
             1.0, compute)
    if not compute:             # one head was counted; the mask kernels run once per call
        for counters in (c_qc, c_kc, c_qk, c_add, c_sm, c_drop, c_vc, c_pv):
            if counters is not None:
                rec.repeat(counters, bh)
    return {"o": o, **saved} if compute else {}


def build_causal_mask(c_full, c_triu, c_cast, n: int, e: int, compute: bool) -> np.ndarray:
    """torch.triu(torch.full((N, N), -10000.0), 1).to(dtype): the additive mask (float32
    here in every case; -10000 is exact in fp16, bf16 rounds it to -9984: either underflows
    exp)."""
    full = np.empty((n, n) if compute else (0, n), dtype=np.float32)
    fill_kernel(c_full, full, n, MASK_FILL, compute)
    mask = np.empty((n, n) if compute else (0, n), dtype=np.float32)
    triu_kernel(c_triu, full, mask, n, compute)
    if c_cast is not None:
        cast_kernel(c_cast, n, e)      # the values stay: the simulator's mask is float32
    return mask


@compiled
def layout_copy_kernel(c, rows, cols, e):
    """One head's slice of the packed qkv into a contiguous buffer (any order of its rows and
    columns): read and written once. The simulator's Q, K, V are already contiguous, so no
    data moves."""
    count_load(c, rows * cols * e)
    count_store(c, rows * cols * e)


@compiled
def fill_kernel(c, out, n, value, compute):
    """torch.full((N, N), value) in float32: every element written, nothing read."""
    count_store(c, n * n * MASK_BUILD_BYTES)
    if compute:
        out[:, :] = value


@compiled
def triu_first_loaded_column(i):
    """TriangularOps.cu: the fragment of TRIU_ELEMS_PER_THREAD columns starting at c (a
    multiple of it) is loaded when c + TRIU_ELEMS_PER_THREAD - i >= 1 (diagonal 1)."""
    lowest = max(0, i + 1 - TRIU_ELEMS_PER_THREAD)
    return -(-lowest // TRIU_ELEMS_PER_THREAD) * TRIU_ELEMS_PER_THREAD


@compiled
def triu_kernel(c, src, out, n, compute):
    """out = triu(src, 1), out of place: row i loads from its first fragment holding a kept
    element, selects, and writes the whole row."""
    for i in range(n):
        first = min(n, triu_first_loaded_column(i))
        count_load(c, (n - first) * MASK_BUILD_BYTES)
        count_alu(c, n)                            # keep ? x : 0
        count_store(c, n * MASK_BUILD_BYTES)
        if compute:
            out[i, :i + 1] = 0.0
            out[i, i + 1:] = src[i, i + 1:]


@compiled
def cast_kernel(c, n, e):
    """causal_mask.to(dtype): fp32 in, e bytes out, one conversion per element."""
    count_load(c, n * n * MASK_BUILD_BYTES)
    count_store_result(c, n * n, e)


@compiled
def mask_add_kernel(c, s, mask, n, e, compute):
    """S + mask for one head (a new S, written out of place), row by row."""
    for i in range(n):
        count_load(c, n * e)                      # row of S
        count_load(c, n * e)                      # row of the mask
        count_other(c, n)                         # add (in fp32, ATen's opmath)
        count_store_result(c, n, e)               # row of S + mask
        if compute:
            s[i, :] += mask[i, :]


def footprint(wl) -> Footprint:
    """HBM allocations of one call, as Python holds them: q and k (the copies) are locals to
    the end; the preallocated ``scores`` lives through the baddbmm (beta = 0 ignores it, but
    it is allocated); S is rebound by the causal add, so the first S is freed after it; the
    fp32 mask is a local to the end, the full() and the cast temporaries are freed after
    their reader; P (and P ∘ Z) to the end; einsum's V copy is freed after the bmm."""
    n, e = wl.seq_q, wl.elem_bytes
    scores = wl.batch * wl.heads * n * n
    phases = kernel_names(wl)
    last = phases[-1]
    allocs = fp.inputs(wl, phases[0], last)
    if layout_copies(wl):
        allocs += [Allocation("q_copy", fp.q_bytes(wl), "q_copy", last),
                   Allocation("k_copy", fp.kv_bytes(wl), "k_copy", last)]
    allocs += [Allocation("scores_preallocated", scores * e, "baddbmm", "baddbmm"),
               Allocation("s", scores * e, "baddbmm", "mask_add" if wl.causal else last)]
    if wl.causal:
        mask_bytes = n * n * MASK_BUILD_BYTES
        allocs += [Allocation("mask_full", mask_bytes, "mask_full", "mask_triu"),
                   Allocation("causal_mask", mask_bytes, "mask_triu", last)]
        if casts_mask(wl):
            allocs.append(Allocation("causal_mask_cast", n * n * e, "mask_cast", "mask_add"))
        allocs.append(Allocation("s_masked", scores * e, "mask_add", last))
    allocs.append(Allocation("p", scores * e, "softmax", last))
    if wl.dropout > 0:
        allocs += [Allocation("p_drop", scores * e, "dropout", last),
                   Allocation("dropout_mask", scores * standard_bwd.MASK_BYTES, "dropout",
                              "dropout")]
    if layout_copies(wl):
        allocs.append(Allocation("v_copy", fp.kv_bytes(wl), "v_copy", last))
    allocs += fp.output(wl, last, last, lse=False)
    return Footprint(phases, allocs)
