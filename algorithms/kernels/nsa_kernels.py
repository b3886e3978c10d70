"""The Numba bodies of Native Sparse Attention's kernels (``algorithms.nsa`` documents the
algorithm, its counts and its bound; this module only runs them).

Every body counts through ``hwmodels.primitives``; the loops depend only on shapes, query
positions and the number of selected blocks, never on which blocks were selected, so
executed and count-only mode count the same (``algorithms.nsa``, "Count-only mode").
Notation: l == cblock, d_s == stride, l' == sblock, n == n_sel, g == group, w == window.
"""
from __future__ import annotations

import numpy as np

from algorithms.kernels.common import online_softmax_tile, sort_small_in_place
from algorithms.kernels.flash_tile import count_softmax_tile, repeat_step, snapshot, tiles_run
from hwmodels.compiled import compiled
from hwmodels.primitives import (count_alu, count_convert, count_exp, count_load, count_matmul,
                                 count_other, count_store, count_store_result, load_rows,
                                 store_rows)

IDX_BYTES = 4      # int32 selected-block index
STAT_BYTES = 4     # fp32 gates and softmax statistics


@compiled
def visible_compressed(kpos, cblock, stride):
    """Compressed tokens a query at key position ``kpos`` may see: those whose whole block
    [i d_s, i d_s + l) lies at or before it (Eq. 7: 0 <= i <= floor((t - l) / d_s))."""
    if kpos + 1 < cblock:
        return 0
    return (kpos + 1 - cblock) // stride + 1


@compiled
def selected_count(kpos, sblock, n_sel):
    """Blocks the selected branch attends for a query at ``kpos``: min(n, blocks so far)."""
    if kpos < 0:
        return 0
    return min(n_sel, kpos // sblock + 1)


# ---- kernel 1: compression φ -------------------------------------------------------------

@compiled
def compress_head(c, k, v, kc, vc, wk, wv, bk, bv, n_c, d, cblock, stride, block_t, e,
                  compute):
    """One KV head: each CTA compresses ``block_t`` consecutive blocks, loading the span of
    tokens they cover once (overlapping blocks share it):
    kc[i] = wkᵀ K[i d_s : i d_s + l] + bk."""
    for i0 in range(0, n_c, block_t):
        i1 = min(i0 + block_t, n_c)
        t0, t1 = i0 * stride, (i1 - 1) * stride + cblock
        ks = load_rows(c, k, t0, t1, d, e)                      # token span -> SRAM
        vs = load_rows(c, v, t0, t1, d, e)
        count_load(c, 2 * cblock * e + 2 * d * e)               # w_k, w_v and the biases
        out_k = np.empty((0, 0), dtype=np.float32)
        out_v = np.empty((0, 0), dtype=np.float32)
        if compute:
            out_k = np.empty((i1 - i0, d), dtype=np.float32)
            out_v = np.empty((i1 - i0, d), dtype=np.float32)
        for i in range(i0, i1):
            count_matmul(c, 1, d, cblock, e)                    # wᵀ K_block (1 x l)(l x d)
            count_matmul(c, 1, d, cblock, e)                    # wᵀ V_block
            count_other(c, 2 * d)                               # + bias (position encoding)
            if compute:
                a = i * stride - t0
                out_k[i - i0] = np.dot(wk, ks[a:a + cblock]) + bk
                out_v[i - i0] = np.dot(wv, vs[a:a + cblock]) + bv
        store_rows(c, kc, i0, out_k, i1 - i0, d, e, compute)    # K̃, Ṽ -> HBM
        store_rows(c, vc, i0, out_v, i1 - i0, d, e, compute)


# ---- kernel 2: compressed attention, gates, importance scores, top-n ---------------------

@compiled
def _mask_compressed(s, r0, c0, seq_q, seq_k, cblock, stride):
    """-inf where compressed token c0 + j is not yet complete for query row r0 + i."""
    rows, cols = s.shape
    for i in range(rows):
        nv = visible_compressed(r0 + i + seq_k - seq_q, cblock, stride)
        for j in range(max(0, nv - c0), cols):
            s[i, j] = -np.inf


@compiled
def _top_n(scores, jt, n_sel, out):
    """The n highest-scoring blocks of 0..jt, the initial and two local blocks forced in;
    ties go to the lower index, NaN scores rank last; written ascending (the current block
    jt is last). Each candidate in turn is inserted into the running top list, as the
    counts charge it ((jt + 1) x n_sel comparisons)."""
    sc = scores[:jt + 1].copy()
    sc[0] = np.inf
    sc[jt] = np.inf
    if jt >= 1:
        sc[jt - 1] = np.inf
    nt = min(n_sel, jt + 1)
    if nt <= 0:
        out[:] = -1
        return
    top = np.empty(nt, dtype=np.int64)
    kept = 0
    for j in range(jt + 1):
        if kept == nt and not _ranks_above(sc[j], sc[top[nt - 1]]):
            continue
        k = kept if kept < nt else nt - 1          # a full list drops its last entry
        while k > 0 and _ranks_above(sc[j], sc[top[k - 1]]):
            top[k] = top[k - 1]
            k -= 1
        top[k] = j
        kept = min(kept + 1, nt)
    sort_small_in_place(top)
    for s in range(out.shape[0]):
        out[s] = top[s] if s < nt else -1


@compiled
def _ranks_above(a, b):
    """Score a ranks strictly above score b (NaN ranks below every number)."""
    return not np.isnan(a) and (np.isnan(b) or a > b)


@compiled
def compressed_pack(c, q, kc, vc, wg, o_cmp, gates, idx, seq_q, seq_k, d, g, block_q, block_k,
                    n_c, cblock, stride, sblock, n_sel, scale, e, compute):
    """One GQA group (g query heads of one KV head); every block of ``block_q`` positions
    is one CTA holding the g x block_q query rows: its gates, the compressed attention
    (pass 1), the block scores (pass 2) and the top-n selection.

    q (g, N_q, d); kc, vc (N_c, d); wg (g, 3, d); o_cmp (g, N_q, d); gates (g, N_q, 3);
    idx (N_q, n) int32 — the selection, shared by the group."""
    for r0 in range(0, seq_q, block_q):
        r1 = min(r0 + block_q, seq_q)
        count_load(c, g * (r1 - r0) * d * e)                     # Q_i of g heads -> SRAM
        pack_gates(c, q, wg, gates, r0, r1, g, d, e, compute)
        lse = compressed_attention_pass(c, q, kc, vc, o_cmp, r0, r1, seq_q, seq_k, d, g,
                                        block_k, n_c, cblock, stride, scale, e, compute)
        bins = selection_scores_pass(c, q, kc, lse, r0, r1, seq_q, seq_k, d, g, block_k, n_c,
                                     cblock, stride, sblock, scale, e, compute)
        pack_top_n(c, bins, idx, r0, r1, seq_q, seq_k, sblock, n_sel, compute)


@compiled
def pack_gates(c, q, wg, gates, r0, r1, g, d, e, compute):
    """The block's gates g_c = sigmoid(q · w_c), c in (cmp, slc, win), stored in fp32."""
    big = g * (r1 - r0)
    count_load(c, 3 * g * d * e)                                 # the group's gate weights
    count_matmul(c, big, 3, d, e)
    count_exp(c, 3 * big)                                        # exp(-x)
    count_other(c, 3 * 3 * big)                                  # negate, 1 +, reciprocal
    count_store(c, 3 * big * STAT_BYTES)                         # gates -> HBM (fp32)
    if compute:
        for j in range(g):
            x = np.dot(np.ascontiguousarray(q[j, r0:r1]), np.ascontiguousarray(wg[j].T))
            gates[j, r0:r1] = np.float32(1.0) / (np.float32(1.0) + np.exp(-x))


@compiled
def visible_span(r0, r1, seq_q, seq_k, cblock, stride):
    """Compressed tokens the first and the last row of query block [r0, r1) see."""
    return (visible_compressed(r0 + seq_k - seq_q, cblock, stride),
            visible_compressed(r1 - 1 + seq_k - seq_q, cblock, stride))


@compiled
def compressed_tile(c0, block_k, n_c, nv_first, nv_last, compute):
    """The compressed tile from c0: its end, whether some row's mask cuts it, and how many
    tiles count like it (count-only: the block's first row sees nv_first tokens unmasked)."""
    c1 = min(c0 + block_k, n_c)
    masked = c1 > nv_first
    run = 1 if compute else tiles_run(c0, nv_last, block_k, n_c, nv_first, masked)
    return c1, masked, run


@compiled
def compressed_attention_pass(c, q, kc, vc, o_cmp, r0, r1, seq_q, seq_k, d, g, block_k, n_c,
                              cblock, stride, scale, e, compute):
    """Pass 1: online softmax over the compressed tokens the block's rows see (Eq. 8's
    attention); writes O_cmp and returns each row's lse (+inf for a row that saw none)."""
    rows = r1 - r0
    big = g * rows
    m = np.full((g if compute else 0, rows), -np.inf, dtype=np.float32)
    l = np.zeros((g if compute else 0, rows), dtype=np.float32)
    acc = np.zeros((g if compute else 0, rows, d), dtype=np.float32)
    nv_first, nv_last = visible_span(r0, r1, seq_q, seq_k, cblock, stride)
    c0 = 0
    while c0 < nv_last:
        c1, masked, run = compressed_tile(c0, block_k, n_c, nv_first, nv_last, compute)
        cols = c1 - c0
        before = snapshot(c, run)
        kj = load_rows(c, kc, c0, c1, d, e)                      # K̃_j, Ṽ_j -> SRAM
        vj = load_rows(c, vc, c0, c1, d, e)
        count_matmul(c, big, cols, d, e)                         # S = Q_i K̃_jᵀ
        count_softmax_tile(c, big, cols, d, masked)
        count_convert(c, big * cols, e)                          # P -> the MMA's operand dtype
        count_matmul(c, big, d, cols, e)                         # acc += P Ṽ_j
        if compute:
            kt = np.ascontiguousarray(kj.T)
            for j in range(g):
                s = np.dot(np.ascontiguousarray(q[j, r0:r1]), kt) * np.float32(scale)
                if masked:
                    _mask_compressed(s, r0, c0, seq_q, seq_k, cblock, stride)
                alpha = online_softmax_tile(s, m[j], l[j])
                acc[j] = acc[j] * alpha.reshape((rows, 1)) + np.dot(s, vj)
        repeat_step(c, before, run)
        c0 += run * block_k
    count_other(c, big * d + big)                                # O = acc / l; lse = m + log l
    count_exp(c, big)
    lse = np.full((g if compute else 0, rows), np.inf, dtype=np.float32)  # +inf: p = 0
    if compute:
        for j in range(g):
            for i in range(rows):
                if l[j, i] > 0:
                    o_cmp[j, r0 + i] = acc[j, i] / l[j, i]
                    lse[j, i] = m[j, i] + np.log(l[j, i])
                else:
                    o_cmp[j, r0 + i] = 0.0
    count_store_result(c, big * d, e)                            # O_cmp -> HBM
    return lse


@compiled
def selection_scores_pass(c, q, kc, lse, r0, r1, seq_q, seq_k, d, g, block_k, n_c, cblock,
                          stride, sblock, scale, e, compute):
    """Pass 2: p_cmp = exp(S - lse), summed over the group (Eq. 10), onto the selection
    blocks (Eq. 9): a compressed token counts once per stride segment it shares with a
    selection block. Returns the (rows, blocks) scores."""
    rows = r1 - r0
    big = g * rows
    seg_per_cblock = cblock // stride
    seg_per_sblock = sblock // stride
    n_blocks = (seq_k + sblock - 1) // sblock
    bins = np.zeros((rows if compute else 0, n_blocks), dtype=np.float32)
    nv_first, nv_last = visible_span(r0, r1, seq_q, seq_k, cblock, stride)
    c0 = 0
    while c0 < nv_last:
        c1, masked, run = compressed_tile(c0, block_k, n_c, nv_first, nv_last, compute)
        cols = c1 - c0
        before = snapshot(c, run)
        kj = load_rows(c, kc, c0, c1, d, e)                      # K̃_j again (no Ṽ)
        count_matmul(c, big, cols, d, e)                         # S = Q_i K̃_jᵀ (recomputed)
        count_other(c, big * cols)                               # S *= scale
        if masked:
            count_alu(c, big * cols)                             # select -inf
        count_other(c, big * cols)                               # S - lse
        count_exp(c, big * cols)                                 # p_cmp
        count_other(c, (g - 1) * rows * cols)                    # sum over the g heads
        count_other(c, rows * cols * seg_per_cblock)             # accumulate into blocks
        if compute:
            kt = np.ascontiguousarray(kj.T)
            psum = np.zeros((rows, cols), dtype=np.float32)
            for j in range(g):
                s = np.dot(np.ascontiguousarray(q[j, r0:r1]), kt) * np.float32(scale)
                if masked:
                    _mask_compressed(s, r0, c0, seq_q, seq_k, cblock, stride)
                psum += np.exp(s - lse[j].reshape((rows, 1)))
            for i in range(rows):
                for jj in range(cols):
                    for sg in range(c0 + jj, c0 + jj + seg_per_cblock):
                        bins[i, sg // seg_per_sblock] += psum[i, jj]
        repeat_step(c, before, run)
        c0 += run * block_k
    return bins


@compiled
def pack_top_n(c, bins, idx, r0, r1, seq_q, seq_k, sblock, n_sel, compute):
    """Top-n per position (Eq. 11), initial and local blocks forced; indices -> HBM."""
    for i in range(r1 - r0):
        kpos = r0 + i + seq_k - seq_q
        if kpos < 0:
            if compute:
                idx[r0 + i, :] = -1
            continue
        jt = kpos // sblock
        count_alu(c, 3 + (jt + 1) * n_sel)                       # force 3; insert each candidate
        if compute:
            _top_n(bins[i], jt, n_sel, idx[r0 + i])
    count_store(c, (r1 - r0) * n_sel * IDX_BYTES)                # indices -> HBM (int32)


# ---- kernel 4: selected attention and the gated combination ------------------------------

@compiled
def selected_pack(c, q, k, v, idx, gates, o_cmp, o_win, o, seq_q, seq_k, d, g, sblock,
                  n_sel, block_s, scale, e, compute):
    """One GQA group; every query position is one CTA that holds the g heads' query rows
    and streams the selected blocks' raw K/V (NSA's group-centric loading, Figure 3).

    q (g, N_q, d); k, v (N_k, d); idx (N_q, n); gates (g, N_q, 3); o_cmp, o_win, o
    (g, N_q, d). Only ``selected_count`` and the current block's length shape the loop:
    in count-only mode slot s < n_t - 1 stands for a full earlier block (block 0)."""
    t0 = 0
    while t0 < seq_q:
        # count-only: a whole period of positions that count like the next ones, once
        periods = 0 if compute else steady_periods(t0, seq_q, seq_k, sblock, n_sel)
        span = sblock if periods else 1
        before = snapshot(c, periods)
        for t in range(t0, t0 + span):
            _selected_position(c, q, k, v, idx, gates, o_cmp, o_win, o, t, seq_q, seq_k, d, g,
                               sblock, n_sel, block_s, scale, e, compute)
        repeat_step(c, before, periods)
        t0 += span * max(periods, 1)


@compiled
def steady_periods(t, seq_q, seq_k, sblock, n_sel):
    """Count-only: how many periods of ``sblock`` positions, from position t on, count alike
    (0 where t starts none). Once every position selects n blocks, a position counts as the
    one ``sblock`` before it: n - 1 full blocks and the current block's first
    ``kpos mod sblock + 1`` keys. A period starts at a block boundary, so the whole periods
    left end by the keys' end, and no current block is cut short there."""
    kpos = t + seq_k - seq_q
    if kpos < 0 or kpos % sblock or kpos // sblock + 1 < n_sel:
        return 0
    return (seq_q - t) // sblock


@compiled
def _selected_position(c, q, k, v, idx, gates, o_cmp, o_win, o, t, seq_q, seq_k, d, g, sblock,
                       n_sel, block_s, scale, e, compute):
    """Query position t of ``selected_pack``: its selected blocks, then the gated sum."""
    kpos = t + seq_k - seq_q
    kend = kpos + 1                                          # keys [0, kend) visible
    n_t = selected_count(kpos, sblock, n_sel)
    jt = kpos // sblock if kpos >= 0 else -1
    count_load(c, n_sel * IDX_BYTES)                         # this position's indices
    count_load(c, g * d * e)                                 # q_t of g heads -> SRAM
    m = np.empty(0, dtype=np.float32)
    l = np.empty(0, dtype=np.float32)
    acc = np.empty((0, 0), dtype=np.float32)
    qt = np.empty((0, 0), dtype=np.float32)
    if compute:
        m = np.full(g, -np.inf, dtype=np.float32)
        l = np.zeros(g, dtype=np.float32)
        acc = np.zeros((g, d), dtype=np.float32)
        qt = np.ascontiguousarray(q[:, t, :])
    for slot in range(n_t):
        blk = jt if slot == n_t - 1 else 0
        if compute:
            blk = idx[t, slot]
        b0 = blk * sblock
        b1 = min(b0 + sblock, kend)
        for c0 in range(b0, b1, block_s):
            c1 = min(c0 + block_s, seq_k)
            cols = c1 - c0
            kj = load_rows(c, k, c0, c1, d, e)               # K, V sub-block -> SRAM
            vj = load_rows(c, v, c0, c1, d, e)
            masked = c1 > kend
            count_matmul(c, g, cols, d, e)                   # S = q_t K_jᵀ (g heads)
            count_softmax_tile(c, g, cols, d, masked)
            count_convert(c, g * cols, e)                    # P -> the MMA's operand dtype
            count_matmul(c, g, d, cols, e)                   # acc += P V_j
            if compute:
                s = np.dot(qt, np.ascontiguousarray(kj.T)) * np.float32(scale)
                if masked:
                    s[:, kend - c0:] = -np.inf
                alpha = online_softmax_tile(s, m, l)
                acc = acc * alpha.reshape((g, 1)) + np.dot(s, vj)
    count_other(c, g * d + g)                                # O_slc = acc / l
    count_load(c, 3 * g * STAT_BYTES)                        # gates (fp32)
    count_load(c, 2 * g * d * e)                             # O_cmp, O_win of g heads
    count_other(c, 5 * g * d)                                # Σ_c g_c O_c
    if compute:
        for j in range(g):
            slc = acc[j] / l[j] if l[j] > 0 else np.zeros(d, dtype=np.float32)
            o[j, t] = (gates[j, t, 0] * o_cmp[j, t] + gates[j, t, 1] * slc
                       + gates[j, t, 2] * o_win[j, t])
    count_store_result(c, g * d, e)                          # O -> HBM
