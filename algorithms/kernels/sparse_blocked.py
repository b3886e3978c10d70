"""The Sparse Transformer's blocked layouts — Child et al. 2019 (arXiv 1904.10509), §5:
"attention with a stride of k can be computed by transposing the matrix and computing a
local window. Fixed attention positions can be aggregated and computed in blocks."

In natural order the second set A2 of either pattern puts keys in every period of l columns
(strided: one every l; fixed: the last c of every block of l), so with l < B_c every tile
holds some and a block-sparse kernel visits all of them (N² work until N is large). The
blocked layouts make A2 contiguous:

* strided, A2 = {j : (p - j) mod l == 0}: queries and keys reordered by residue
  (p mod l, then p) form runs of about N/l rows, and A2 becomes l dense diagonal blocks of
  (N/l) x (N/l): N²/l pairs, N√N at l = √N, every tile full but for the band below.
* fixed, A2 = {j : j mod l >= l - c}: the summary keys gathered into one contiguous run of
  N c / l keys that every query reads (queries keep their order): N² c / l pairs, dense tiles.

Two kernels per head (FlashAttention-2 tiles, ``algorithms.kernels.flash_tile``):

* ``<name>_local_fwd``: A1 in natural order with ``block_sparse_exec``'s kernel: strided
  A1 = {j : |p - j| <= l} (causal p - l <= j <= p) as a sliding window of l + 1 (causal) or
  2l + 1 keys; fixed A1 = the query's own block of l (the fixed pattern with c = 0). Writes O
  and lse.
* ``<name>_blocked_fwd``: A2 minus A1 in the blocked order. Strided: Q tiles never cross a
  residue run (varlen tiling, as flash-attn's varlen kernels): the Q tile of run r holding
  rows s0..s1 (p = r + l s) visits the K tiles t0..t1 of the same run with a pair left,
  i.e. causal t0 <= s1 - 2 (full when t1 <= s0 - 2), non-causal some |s - t| >= 2 (full when
  none has |s - t| <= 1): keys l or 0 apart are A1's. Fixed: natural Q tiles against the
  gathered summary keys of other blocks (causal: earlier blocks). Rows are gathered by a
  row index (each row d e contiguous bytes, so the reordering costs no extra bytes); the
  epilogue merges with the local kernel's O and lse as split-KV attention does
  (lse = log(e^lse1 + e^lse2)), reading O, lse and writing them back. Q tiles with no key
  tile are not launched (the local kernel's output stands).

HBM traffic of the blocked kernel per head (e = storage bytes; Q_t = its Q tiles with work,
tiles of r_t x c_t):
    reads  = Σ_{Q_t} (r d e + 8 + r d e + 4 r) + Σ_tiles (2 c_t d e + 4)
    writes = Σ_{Q_t} (r d e + 4 r)
FLOPs: the tile step's (4 r c d matmul per tile), plus per merged row other 3d + 4, exp 3.
Bound: strided Θ(N d + N d (l / B_r + N / l)) = Θ(N^1.5 d) at l = √N (the A2 term N/l keys
per Q tile instead of min(l, B_r + B_c) N/l); fixed Θ(N d + N d (l + N c / l) / B_r).
"""
from __future__ import annotations

import numpy as np

from algorithms.kernels.block_sparse_exec import LAYOUT_COL_BYTES, LAYOUT_ROW_BYTES, STAT_BYTES
from algorithms.kernels.common import heads_in_flight
from algorithms.kernels.flash_tile import (NO_DROPOUT_SCALE, attend_tile, count_tile, finish_rows,
                                           new_row_state)
from hwmodels.compiled import compiled
from hwmodels.primitives import (count_alu, count_exp, count_load, count_other, load_rows,
                                 load_vector, store_rows, store_vector)


def residue_order(positions: np.ndarray, stride: int) -> np.ndarray:
    """Indices that sort ``positions`` by (position mod l, position): the blocked order."""
    return np.lexsort((positions, positions % stride))


def strided_local_window(stride: int, causal: bool) -> int:
    """The LOCAL pattern's w that gives A1: causal (p - w, p] = [p - l, p]; else |p - j| <=
    w // 2 = l."""
    return stride + 1 if causal else 2 * stride


@compiled
def _ceil_div(a, b):
    return -((-a) // b)


@compiled
def strided_layout(stride, causal, seq_q, seq_k, bq, bk):
    """Tiles of the strided kernel in residue order: (q_lo, q_hi, row_ptr, k_lo, k_hi,
    partial), Q tile i holding permuted rows [q_lo[i], q_hi[i]) and visiting key ranges
    [k_lo[t], k_hi[t]) for t in [row_ptr[i], row_ptr[i+1]); only Q tiles with work."""
    off = seq_k - seq_q
    cap = 1024
    q_lo = np.empty(cap, np.int64)
    q_hi = np.empty(cap, np.int64)
    row_ptr = np.zeros(cap + 1, np.int64)
    k_lo = np.empty(cap, np.int64)
    k_hi = np.empty(cap, np.int64)
    full = np.empty(cap, np.bool_)
    nq_tiles = 0
    n = 0
    q_base = 0                                          # first permuted row of run r
    k_base = 0
    for r in range(stride):
        s_min = _ceil_div(off - r, stride)              # queries p = r + l s in [off, N_k)
        s_max = (off + seq_q - 1 - r) // stride
        nq = max(0, s_max - s_min + 1)
        nk = max(0, (seq_k - 1 - r) // stride + 1) if r < seq_k else 0
        for a in range(0, nq, bq):
            s0 = s_min + a
            s1 = s_min + min(a + bq, nq) - 1
            start = n
            for b0 in range(0, nk, bk):
                t0, t1 = b0, min(b0 + bk, nk) - 1
                if causal:
                    if t0 > s1 - 2:
                        break
                    is_full = t1 <= s0 - 2
                else:
                    if not (s1 - t0 >= 2 or t1 - s0 >= 2):
                        continue
                    is_full = t1 < s0 - 1 or t0 > s1 + 1
                if n == k_lo.shape[0]:
                    k_lo, k_hi, full = _grow(k_lo, n), _grow(k_hi, n), _grow(full, n)
                k_lo[n], k_hi[n], full[n] = k_base + t0, k_base + t1 + 1, is_full
                n += 1
            if n > start:
                if nq_tiles == q_lo.shape[0]:
                    q_lo, q_hi = _grow(q_lo, nq_tiles), _grow(q_hi, nq_tiles)
                    row_ptr = _grow(row_ptr, nq_tiles + 1)
                q_lo[nq_tiles] = q_base + a
                q_hi[nq_tiles] = q_base + min(a + bq, nq)
                row_ptr[nq_tiles + 1] = n
                nq_tiles += 1
        q_base += nq
        k_base += nk
    return (q_lo[:nq_tiles].copy(), q_hi[:nq_tiles].copy(), row_ptr[:nq_tiles + 1].copy(),
            k_lo[:n].copy(), k_hi[:n].copy(), ~full[:n])


@compiled
def _grow(arr, n):
    out = np.zeros(2 * max(n, 1), dtype=arr.dtype)
    out[:arr.shape[0]] = arr
    return out


@compiled
def fixed_layout(stride, summary, causal, seq_q, seq_k, bq, bk):
    """Tiles of the fixed pattern's blocked kernel: natural Q tiles against the gathered
    summary keys (g -> position (g // c) l + l - c + g mod c), the same arrays as
    ``strided_layout``. A pair is allowed when the key's block differs from the query's
    (causal: is earlier)."""
    off = seq_k - seq_q
    n_sum = summary_positions(stride, summary, seq_k).shape[0]
    tr = (seq_q + bq - 1) // bq
    cap = 1024
    q_lo = np.empty(tr, np.int64)
    q_hi = np.empty(tr, np.int64)
    row_ptr = np.zeros(tr + 1, np.int64)
    k_lo = np.empty(cap, np.int64)
    k_hi = np.empty(cap, np.int64)
    full = np.empty(cap, np.bool_)
    nq_tiles = 0
    n = 0
    for i in range(tr):
        r0, r1 = i * bq, min((i + 1) * bq, seq_q)
        b0 = (r0 + off) // stride                       # blocks of the tile's queries
        b1 = (r1 - 1 + off) // stride
        start = n
        for g0 in range(0, n_sum, bk):
            g1 = min(g0 + bk, n_sum)
            kb0, kb1 = g0 // summary, (g1 - 1) // summary   # blocks of the tile's keys
            if causal:
                if kb0 >= b1:
                    break
                is_full = kb1 < b0
            else:
                if b0 == b1 == kb0 == kb1:
                    continue
                is_full = kb1 < b0 or kb0 > b1
            if n == k_lo.shape[0]:
                k_lo, k_hi, full = _grow(k_lo, n), _grow(k_hi, n), _grow(full, n)
            k_lo[n], k_hi[n], full[n] = g0, g1, is_full
            n += 1
        if n > start:
            q_lo[nq_tiles], q_hi[nq_tiles] = r0, r1
            row_ptr[nq_tiles + 1] = n
            nq_tiles += 1
    return (q_lo[:nq_tiles].copy(), q_hi[:nq_tiles].copy(), row_ptr[:nq_tiles + 1].copy(),
            k_lo[:n].copy(), k_hi[:n].copy(), ~full[:n])


@compiled
def summary_positions(stride, summary, seq_k):
    """Key positions j < N_k with j mod l >= l - c, ascending (the gathered order)."""
    out = np.empty(seq_k, np.int64)
    n = 0
    for j in range(seq_k):
        if j % stride >= stride - summary:
            out[n] = j
            n += 1
    return out[:n].copy()


def fixed_mask(stride: int, causal: bool, seq_q: int, seq_k: int, positions):
    """Boolean mask of A2 minus A1 of the fixed pattern, queries in natural order, keys the
    gathered summary ``positions`` (executed mode: small N)."""
    blk_q = ((np.arange(seq_q) + seq_k - seq_q) // stride)[:, None]
    blk_k = (positions // stride)[None, :]
    return blk_k < blk_q if causal else blk_k != blk_q


def l2_footprint(wl, tiles, rec, smem: int, regs: int, threads: int) -> tuple[int, int]:
    """(DRAM bytes when L2 works as modelled, the working set that requires) of the blocked
    kernel, for the timing model only: Q, O, lse and the layout once (compulsory), and each
    K/V row the tiles visit once per K/V head, when the distinct K/V rows of the heads in
    flight are the working set (Q tiles of one residue run, or every Q tile for the fixed
    pattern's gathered summary keys, re-read the same rows)."""
    q_lo, q_hi, _, k_lo, k_hi, _ = tiles
    d, e, heads = wl.head_dim, wl.elem_bytes, wl.batch * wl.heads
    rows = int((q_hi - q_lo).sum())
    fixed = heads * (3 * rows * d * e + 2 * STAT_BYTES * rows + LAYOUT_ROW_BYTES * len(q_lo)
                     + LAYOUT_COL_BYTES * len(k_lo))
    covered = np.zeros(int(k_hi.max()) if len(k_hi) else 0, dtype=np.bool_)
    for a, b in zip(k_lo, k_hi):
        covered[a:b] = True
    per_head = 2 * d * e * int(covered.sum())                 # distinct K, V rows
    in_flight = heads_in_flight(rec, len(q_lo), heads, smem, regs, threads)
    return fixed + wl.batch * wl.kv_heads * per_head, in_flight * per_head


# rows of the strided mask built at once: the int64 position differences of every pair were
# 16 bytes a pair in flight, twice what an executed run is budgeted for its score matrices
MASK_CHUNK_PAIRS = 1 << 20


def strided_mask(stride: int, causal: bool, seq_q: int, seq_k: int, perm_q, perm_k):
    """Boolean mask of A2 \\ A1 in residue order (executed mode: small N), a chunk of rows
    at a time."""
    p = perm_q + seq_k - seq_q
    mask = np.empty((len(perm_q), len(perm_k)), dtype=bool)
    rows = max(1, MASK_CHUNK_PAIRS // max(1, len(perm_k)))
    for r0 in range(0, len(p), rows):
        diff = p[r0:r0 + rows, None] - perm_k[None, :]
        allowed = (diff % stride == 0) & (np.abs(diff) > stride)
        mask[r0:r0 + rows] = allowed & (diff >= 0) if causal else allowed
    return mask


@compiled(nogil=True)
def blocked_forward_head(c, q, k, v, o, lse, mask, q_lo, q_hi, row_ptr, k_lo, k_hi, partial,
                         d, scale, e, compute):
    """One head of the blocked kernel, all arrays in the blocked order: each Q tile (one CTA)
    runs the online softmax over its key ranges, then merges with the local kernel's O, lse
    of its rows (already in ``o``, ``lse``) and writes them back."""
    for i in range(q_lo.shape[0]):
        r0, r1 = q_lo[i], q_hi[i]
        rows = r1 - r0
        count_load(c, LAYOUT_ROW_BYTES)                          # this CTA's layout row
        qi = load_rows(c, q, r0, r1, d, e)                       # Q_i (gathered) -> SRAM
        m, l, acc = new_row_state(rows, d, compute)
        for t in range(row_ptr[i], row_ptr[i + 1]):
            count_load(c, LAYOUT_COL_BYTES)                      # key range of tile t
            if not compute:
                count_tile(c, rows, k_hi[t] - k_lo[t], d, e, partial[t], False)
                continue
            attend_tile(c, qi, k, v, acc, m, l, r0, rows, k_lo[t], k_hi[t], d, scale, False,
                        0, 0, e, compute, mask, partial[t], False, 0, 0, 0, NO_DROPOUT_SCALE)
        o2, lse2 = finish_rows(c, acc, m, l, rows, d, compute)
        # -- merge with the local kernel's rows: lse = log(e^lse1 + e^lse2) --
        o1 = load_rows(c, o, r0, r1, d, e)                       # O (local) -> SRAM
        lse1 = load_vector(c, lse, r0, r1, STAT_BYTES)
        count_alu(c, rows)                                       # max of the two lse
        count_other(c, rows * (3 * d + 3))                       # 2 diffs, sum; weights x O
        count_exp(c, 3 * rows)                                   # 2 exp, log
        merged = np.empty((0, 0), dtype=np.float32)
        lse_new = np.empty(0, dtype=np.float32)
        if compute:
            merged, lse_new = _merge(o1, lse1, o2, lse2)
        store_rows(c, o, r0, merged, rows, d, e, compute)        # O_i -> HBM (scattered)
        store_vector(c, lse, r0, lse_new, rows, STAT_BYTES, compute)


@compiled
def _merge(o1, lse1, o2, lse2):
    rows = o1.shape[0]
    out = np.zeros_like(o1)
    lse = np.full(rows, -np.inf, dtype=np.float32)
    for i in range(rows):
        top = max(lse1[i], lse2[i])
        if top == -np.inf:
            continue                                             # no key at all
        w1 = np.exp(lse1[i] - top)
        w2 = np.exp(lse2[i] - top)
        out[i] = (w1 * o1[i] + w2 * o2[i]) / (w1 + w2)
        lse[i] = top + np.log(w1 + w2)
    return out, lse
