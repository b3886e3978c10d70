"""Native Sparse Attention decoding: one step of ``seq_q`` new tokens against a cache of
``seq_k`` tokens, with the compressed keys/values kept as a cache of their own — Yuan et al.
2025 (arXiv 2502.11089), §3.4 and §5 (decoding speed, Table 4: memory access volume per
decoding step). ``algorithms.nsa`` documents the branches; this module runs a decode step.

Bound: Θ(B G (N/d_s + n l′ + w) d) bytes per step — K/V tokens per KV group, against
dense decoding's Θ(B G N d).

The compressed cache grows by one token every d_s tokens: ``nsa_decode_compress`` (only on
the steps that complete a block) compresses the N_c(N_k) − N_c(N_k − N_q) blocks its new
tokens complete, reading the span of raw tokens they cover once, ((m − 1) d_s + l) tokens of
K and V for m new blocks, and appends K̃, Ṽ — not a recompression of all N tokens.

Every branch is loaded once per (sequence, KV group) and shared by the group's g query heads
(the paper's group-centric loading). K/V tokens per step and KV group (a token is its key and
value, 2 d e bytes; for N_q = 1, kpos = N − 1, j_t = ⌊kpos/l′⌋, n_t = min(n, j_t + 1)):
    N_c + [(n_t − 1) l′ + N − j_t l′] + min(N, w + N_q − 1)  ≈  (N − l)/d_s + n l′ + w
against N for dense attention (the selected term summed over the new positions).

Two schedules (``--decode-schedule``; ``auto`` splits when B·G CTAs would leave SMs idle):

fused — ``nsa_decode``, one CTA per (sequence, KV group) (``decode_group``): the queries
  and gate weights once; the compressed branch over K̃, Ṽ once with FlashAttention-2's
  online softmax, its selection-block bins (Eq. 9–10) accumulated on chip per row relative
  to the running max (rescaled by α at every tile, like the accumulator) — or, when the bins
  (g N_q ⌈N_k/l′⌉ fp32) do not fit the SRAM budget, a second pass that re-reads K̃ with the
  final lse (``decode_rescore``); top-n on chip (Eq. 11); the selected blocks and the window;
  the gates; O written once. Per group:
    reads  g N_q d e + 3 g d e + (2 + r) N_c d e + 2 T_s d e + 2 T_w d e   (r = 1 if rescore)
    writes g N_q d e                          (T_s, T_w: the selected and window tokens)

split — flash-decoding's idea for the three branches (partial softmax states in fp32: acc
  (d), m and l per row, merged as split-KV attention merges them):
  ``nsa_decode_cmp_win``: S chunks of the compressed cache and S_w chunks of the window, one
    CTA each (one launch): the group's queries, the chunk's tokens once; writes a partial
    state per row, and a compressed chunk also its rows' bins of the selection blocks its
    tokens credit, relative to the chunk's m;
  ``nsa_decode_select``: one CTA per group: lse from the chunks' (m, l); the chunks' bins
    scaled by exp(m_s − lse) and summed over the heads into each position's block scores;
    top-n; writes the indices;
  ``nsa_decode_slc``: one CTA per selection slot: for each position with that slot, the
    block's tokens once for its g heads; a partial state per row;
  ``nsa_decode_combine``: one CTA per query head: its gates, the three branches' partials
    merged, o = Σ_c g_c O_c written once.
  The partial states are the price of the parallelism (``tests/test_decode_paths.py``
  derives every kernel's bytes): at batch 1 (64 heads over 4 KV heads, d = 128) the split
  step requests 1.6× (8K) to 1.2× (128K) the fused step's bytes and runs 1.9–5.7× faster.
Tiles: DECODE_TILES tokens; S and S_w fill the SMs' waves (``splitkv.choose_splits``) shared
in proportion to the branches' tiles.

FLOPs follow the prefill kernels' accounting (``nsa_kernels``): matmul 4 rows d per token of
each branch (2 for the rescore pass), FlashAttention-2's softmax ops per tile, the bins'
rescale (rows × blocks touched so far per tile) and credit (rows × cols × l/d_s), merges.
ALU ops: the row maxima and masks of the softmax tiles, the merges' maxima and the top-n
(3 + (j_t + 1) n per position); conversions (below fp32): P before every P V product and
O before its store.

Count-only mode: as in prefill, the loops depend only on positions and n_t; slot s < n_t − 1
stands for block 0 (a full earlier block), the last slot for the current block j_t.
"""
from __future__ import annotations

import numpy as np

from algorithms.kernels.common import online_softmax_tile, row_padding
from algorithms.kernels.flash_tile import count_softmax_tile
from algorithms.kernels.nsa_kernels import (IDX_BYTES, STAT_BYTES, _top_n,
                                            selected_count, visible_compressed)
from hwmodels.compiled import compiled
from hwmodels.primitives import (count_alu, count_convert, count_exp, count_load, count_matmul,
                                 count_other, count_store_result, load_rows)

TOPN_SLOT_BYTES = 8     # fp32 score + int32 block index per on-chip top-n slot


def compressed_span(n_new: int, cblock: int, stride: int) -> int:
    """Raw tokens the compress step reads for ``n_new`` consecutive new blocks."""
    return 0 if n_new <= 0 else (n_new - 1) * stride + cblock


def decode_buffers(g, nq, tile, d, e, n_blocks, n_sel, rescore) -> dict[str, int]:
    """SRAM of one decode CTA: the group's queries and gates, one K/V tile shared by the
    branches, the score tile, three fp32 accumulators, the bins and the top-n slots."""
    rows = g * nq
    bins_rows = nq if rescore else rows
    return {"Q_group": rows * d * e, "W_gate": 3 * g * d * e, "K_tile": tile * d * e,
            "V_tile": tile * d * e, "S_tile": rows * tile * STAT_BYTES,
            "O_cmp_slc_win": 3 * rows * d * STAT_BYTES, "m_l": 6 * rows * STAT_BYTES,
            "block_bins": bins_rows * n_blocks * STAT_BYTES,
            "top_n": nq * n_sel * TOPN_SLOT_BYTES, "idx": nq * n_sel * IDX_BYTES}


def tokens_per_step(seq_k: int, seq_q: int, cblock: int, stride: int, sblock: int, n_sel: int,
                    window: int) -> dict:
    """K/V tokens one decode step loads per KV group, by branch (the closed form above; the
    selected branch summed over the new positions)."""
    n_c = 0 if seq_k < cblock else (seq_k - cblock) // stride + 1
    selected = 0
    for t in range(seq_q):
        kpos = t + seq_k - seq_q
        if kpos < 0:
            continue
        jt = kpos // sblock
        n_t = min(n_sel, jt + 1)
        selected += (n_t - 1) * sblock + (kpos + 1 - jt * sblock)
    win = min(seq_k, window + seq_q - 1)
    return {"compressed": n_c, "selected": selected, "window": win,
            "total": n_c + selected + win}


@compiled
def _mask_rows(s, nq, c0, shift, cblock, stride, window, mode):
    """-inf where a row may not see column c0 + j. Rows are (head, position) with the
    position fastest. mode 0: compressed tokens (complete before the position);
    mode 1: the sliding window (kpos − w < key <= kpos)."""
    rows, cols = s.shape
    for r in range(rows):
        kpos = r % nq + shift
        if mode == 0:
            lo, hi = 0, visible_compressed(kpos, cblock, stride)
        else:
            lo, hi = kpos - window + 1, kpos + 1
        for j in range(cols):
            if c0 + j < lo or c0 + j >= hi:
                s[r, j] = -np.inf


@compiled
def window_tile(c, qr, k, v, acc, m, l, c0, c1, rows, seq_q, seq_k, shift, d, e, window, scale,
                compute):
    """One key tile [c0, c1) of the sliding-window branch for all the step's rows (the fused
    step, and the split step's window chunks): K_j, V_j loaded, masked online softmax in
    place on m and l; returns acc rescaled and accumulated."""
    cols = c1 - c0
    kj = load_rows(c, k, c0, c1, d, e)
    vj = load_rows(c, v, c0, c1, d, e)
    # a tile needs the mask when some row's window starts after c0 or ends before c1
    masked = c0 < seq_k - window or c1 - 1 > shift
    count_matmul(c, rows, cols, d, e)
    count_softmax_tile(c, rows, cols, d, masked)
    count_convert(c, rows * cols, e)                      # P -> the MMA's operand dtype
    count_matmul(c, rows, d, cols, e)
    if compute:
        s = np.dot(qr, np.ascontiguousarray(kj.T)) * np.float32(scale)
        if masked:
            _mask_rows(s, seq_q, c0, shift, 1, 1, window, 1)
        alpha = online_softmax_tile(s, m, l)
        acc = acc * alpha.reshape((rows, 1)) + np.dot(s, vj)
    return acc


@compiled
def selected_block(c, qt, k, v, acc, m, l, b0, b1, g, d, tile, e, scale, compute):
    """One selected block's raw keys [b0, b1) for one position's g query heads (the fused
    step, and the split step's slot CTAs): tile by tile, K_j and V_j loaded once for the
    group, online softmax in place on m and l; returns acc rescaled and accumulated."""
    for c0 in range(b0, b1, tile):
        c1 = min(c0 + tile, b1)
        cols = c1 - c0
        kj = load_rows(c, k, c0, c1, d, e)
        vj = load_rows(c, v, c0, c1, d, e)
        count_matmul(c, g, cols, d, e)
        count_softmax_tile(c, g, cols, d, False)
        count_convert(c, g * cols, e)                     # P -> the MMA's operand dtype
        count_matmul(c, g, d, cols, e)
        if compute:
            s = np.dot(qt, np.ascontiguousarray(kj.T)) * np.float32(scale)
            alpha = online_softmax_tile(s, m, l)
            acc = acc * alpha.reshape((g, 1)) + np.dot(s, vj)
    return acc


@compiled
def _finish(acc, l):
    """acc / l per row; rows that saw nothing give 0."""
    out = np.zeros_like(acc)
    for r in range(acc.shape[0]):
        if l[r] > 0:
            out[r] = acc[r] / l[r]
    return out


@compiled
def group_gates(c, q, wg, rows, seq_q, g, d, e, compute):
    """The group's queries once, and their gates g_c = sigmoid(q · w_c) (Eq. 5): returns
    the queries as (g N_q, d) rows and the (g N_q, 3) gates."""
    count_load(c, rows * d * e)
    count_load(c, 3 * g * d * e)
    count_matmul(c, rows, 3, d, e)
    count_exp(c, 3 * rows)
    count_other(c, 3 * 3 * rows)                          # negate, 1 +, reciprocal
    qr = np.empty((0, 0), dtype=np.float32)
    gates = np.empty((0, 0), dtype=np.float32)
    if compute:
        qr = np.ascontiguousarray(q).reshape((rows, d))
        gates = np.empty((rows, 3), dtype=np.float32)
        for j in range(g):
            x = np.dot(np.ascontiguousarray(q[j]), np.ascontiguousarray(wg[j].T))
            gates[j * seq_q:(j + 1) * seq_q] = np.float32(1.0) / (np.float32(1.0) + np.exp(-x))
    return qr, gates


@compiled
def compressed_pass(c, qr, kc, vc, rows, seq_q, shift, d, n_c, cblock, stride, sblock,
                    n_blocks, tile, rescore, scale, e, compute):
    """The compressed branch over K̃, Ṽ once (online softmax), with each row's bins of the
    selection blocks (Eq. 9) kept on chip relative to the running max unless ``rescore``:
    returns (O_cmp, m, l, bins)."""
    seg_c = cblock // stride
    seg_s = sblock // stride
    nv_first = visible_compressed(shift, cblock, stride)
    m = np.full(rows if compute else 0, -np.inf, dtype=np.float32)
    l = np.zeros(rows if compute else 0, dtype=np.float32)
    acc = np.zeros((rows if compute else 0, d), dtype=np.float32)
    hbins = np.zeros((rows if compute and not rescore else 0, n_blocks), dtype=np.float32)
    for c0 in range(0, n_c, tile):
        c1 = min(c0 + tile, n_c)
        cols = c1 - c0
        kj = load_rows(c, kc, c0, c1, d, e)
        vj = load_rows(c, vc, c0, c1, d, e)
        masked = c1 > nv_first
        count_matmul(c, rows, cols, d, e)                 # S = Q K̃ᵀ
        count_softmax_tile(c, rows, cols, d, masked)
        count_convert(c, rows * cols, e)                  # P -> the MMA's operand dtype
        count_matmul(c, rows, d, cols, e)                 # acc += P Ṽ
        touched = (c1 - 1 + seg_c - 1) // seg_s + 1       # selection blocks seen so far
        if not rescore:
            count_other(c, rows * touched)                # bins *= alpha
            count_other(c, rows * cols * seg_c)           # credit P to its blocks
        if compute:
            s = np.dot(qr, np.ascontiguousarray(kj.T)) * np.float32(scale)
            if masked:
                _mask_rows(s, seq_q, c0, shift, cblock, stride, 0, 0)
            alpha = online_softmax_tile(s, m, l)
            acc = acc * alpha.reshape((rows, 1)) + np.dot(s, vj)
            if not rescore:
                for r in range(rows):
                    hbins[r, :touched] *= alpha[r]
                    for jj in range(cols):
                        for sg in range(c0 + jj, c0 + jj + seg_c):
                            hbins[r, sg // seg_s] += s[r, jj]
    count_other(c, rows * d + rows)                       # O_cmp = acc / l
    o_cmp = _finish(acc, l) if compute else acc
    return o_cmp, m, l, hbins


@compiled
def block_scores_from_bins(c, hbins, l, rows, seq_q, g, n_blocks, compute):
    """Each position's selection-block scores (Eq. 10) from the on-chip bins: the bins
    over l, summed over the group's g heads."""
    pbins = np.zeros((seq_q if compute else 0, n_blocks), dtype=np.float32)
    count_other(c, rows * n_blocks)                       # bins / l
    count_other(c, (g - 1) * seq_q * n_blocks)            # sum over the g heads
    if compute:
        for r in range(rows):
            if l[r] > 0:
                pbins[r % seq_q] += hbins[r] / l[r]
    return pbins


@compiled
def block_scores_rescored(c, qr, kc, m, l, rows, seq_q, shift, g, d, n_c, cblock, stride,
                          sblock, n_blocks, tile, scale, e, compute):
    """Each position's selection-block scores (Eq. 10) when the bins did not fit: K̃ read
    again, p = exp(S − lse) credited to the blocks and summed over the group's g heads."""
    seg_c = cblock // stride
    seg_s = sblock // stride
    nv_first = visible_compressed(shift, cblock, stride)
    pbins = np.zeros((seq_q if compute else 0, n_blocks), dtype=np.float32)
    count_other(c, rows)                                  # lse = m + log l
    count_exp(c, rows)
    lse = np.full(rows if compute else 0, np.inf, dtype=np.float32)
    if compute:
        for r in range(rows):
            if l[r] > 0:
                lse[r] = m[r] + np.log(l[r])
    for c0 in range(0, n_c, tile):
        c1 = min(c0 + tile, n_c)
        cols = c1 - c0
        kj = load_rows(c, kc, c0, c1, d, e)               # K̃ again
        masked = c1 > nv_first
        count_matmul(c, rows, cols, d, e)
        count_other(c, rows * cols)                       # S *= scale
        if masked:
            count_alu(c, rows * cols)                     # select -inf
        count_other(c, rows * cols)                       # S − lse
        count_exp(c, rows * cols)
        count_other(c, (g - 1) * seq_q * cols)            # sum over the g heads
        count_other(c, seq_q * cols * seg_c)              # credit to the blocks
        if compute:
            s = np.dot(qr, np.ascontiguousarray(kj.T)) * np.float32(scale)
            if masked:
                _mask_rows(s, seq_q, c0, shift, cblock, stride, 0, 0)
            p = np.exp(s - lse.reshape((rows, 1)))
            for r in range(rows):
                for jj in range(cols):
                    for sg in range(c0 + jj, c0 + jj + seg_c):
                        pbins[r % seq_q, sg // seg_s] += p[r, jj]
    return pbins


@compiled
def select_top_n(c, pbins, sel, seq_q, shift, sblock, n_sel, compute):
    """Top-n blocks per position (Eq. 11), kept on chip (``sel`` returned for inspection)."""
    for t in range(seq_q):
        kpos = t + shift
        if kpos < 0:
            if compute:
                sel[t, :] = -1
            continue
        jt = kpos // sblock
        count_alu(c, 3 + (jt + 1) * n_sel)                # force 3; insert each candidate
        if compute:
            _top_n(pbins[t], jt, n_sel, sel[t])


@compiled
def selected_pass(c, q, k, v, sel, rows, seq_q, shift, g, d, sblock, n_sel, tile, scale, e,
                  compute):
    """The selected branch: each position's blocks, loaded once for its g heads; returns
    O_slc as (g N_q, d) rows."""
    o_slc = np.zeros((rows if compute else 0, d), dtype=np.float32)
    for t in range(seq_q):
        kpos = t + shift
        kend = kpos + 1
        n_t = selected_count(kpos, sblock, n_sel)
        jt = kpos // sblock if kpos >= 0 else -1
        ms = np.full(g if compute else 0, -np.inf, dtype=np.float32)
        ls = np.zeros(g if compute else 0, dtype=np.float32)
        accs = np.zeros((g if compute else 0, d), dtype=np.float32)
        qt = np.empty((0, 0), dtype=np.float32)
        if compute:
            qt = np.ascontiguousarray(q[:, t, :])
        for slot in range(n_t):
            blk = jt if slot == n_t - 1 else 0
            if compute:
                blk = sel[t, slot]
            b0 = blk * sblock
            accs = selected_block(c, qt, k, v, accs, ms, ls, b0, min(b0 + sblock, kend), g, d,
                                  tile, e, scale, compute)
        count_other(c, g * d + g)                         # O_slc = acc / l
        if compute:
            fin = _finish(accs, ls)
            for j in range(g):
                o_slc[j * seq_q + t] = fin[j]
    return o_slc


@compiled
def window_pass(c, qr, k, v, rows, seq_q, seq_k, shift, d, window, tile, scale, e, compute):
    """The window branch: the last w keys of every position, loaded once for all rows;
    returns O_win."""
    w0 = max(0, shift - window + 1)
    mw = np.full(rows if compute else 0, -np.inf, dtype=np.float32)
    lw = np.zeros(rows if compute else 0, dtype=np.float32)
    accw = np.zeros((rows if compute else 0, d), dtype=np.float32)
    for c0 in range(w0, seq_k, tile):
        accw = window_tile(c, qr, k, v, accw, mw, lw, c0, min(c0 + tile, seq_k), rows, seq_q,
                           seq_k, shift, d, e, window, scale, compute)
    count_other(c, rows * d + rows)                       # O_win = acc / l
    return _finish(accw, lw) if compute else accw


@compiled
def decode_group(c, q, kc, vc, k, v, wg, o, sel, seq_q, seq_k, d, g, n_c, cblock, stride,
                 sblock, n_sel, window, tile, rescore, scale, e, compute):
    """One (sequence, KV group) of a decode step (the CTA of ``nsa_decode``): the gates, the
    three branches and their gated sum o = Σ_c g_c O_c (Eq. 5), written once.

    q (g, N_q, d); kc, vc (N_c, d) the compressed cache; k, v (N_k, d) the raw cache;
    wg (g, 3, d) gate weights; o (g, N_q, d) out; sel (N_q, n) int32 out: the selection,
    kept on chip by the kernel and returned for inspection (not counted)."""
    rows = g * seq_q
    shift = seq_k - seq_q
    n_blocks = (seq_k + sblock - 1) // sblock
    qr, gates = group_gates(c, q, wg, rows, seq_q, g, d, e, compute)
    o_cmp, m, l, hbins = compressed_pass(c, qr, kc, vc, rows, seq_q, shift, d, n_c, cblock,
                                         stride, sblock, n_blocks, tile, rescore, scale, e,
                                         compute)
    if rescore:
        pbins = block_scores_rescored(c, qr, kc, m, l, rows, seq_q, shift, g, d, n_c, cblock,
                                      stride, sblock, n_blocks, tile, scale, e, compute)
    else:
        pbins = block_scores_from_bins(c, hbins, l, rows, seq_q, g, n_blocks, compute)
    select_top_n(c, pbins, sel, seq_q, shift, sblock, n_sel, compute)
    o_slc = selected_pass(c, q, k, v, sel, rows, seq_q, shift, g, d, sblock, n_sel, tile,
                          scale, e, compute)
    o_win = window_pass(c, qr, k, v, rows, seq_q, seq_k, shift, d, window, tile, scale, e,
                        compute)
    count_other(c, 5 * rows * d)                          # o = Σ_c g_c O_c
    if compute:
        out = (gates[:, 0:1] * o_cmp + gates[:, 1:2] * o_slc + gates[:, 2:3] * o_win)
        for j in range(g):
            o[j] = out[j * seq_q:(j + 1) * seq_q]
    count_store_result(c, rows * d, e)                    # O, narrowed, -> HBM


# ---- host side: plan and launch ------------------------------------------------------------

DECODE_TILES = (64, 32, 16)


def plan_decode(g: int, nq: int, seq_k: int, d: int, e: int, sblock: int, n_sel: int,
                sram_bytes: int) -> tuple[int, bool, int] | None:
    """(tile, rescore, SRAM bytes): the largest K/V tile whose CTA fits, keeping the bins on
    chip if any tile allows it, else re-reading K̃ for the scores; None if nothing fits."""
    n_blocks = -(-seq_k // sblock)
    for rescore in (False, True):
        for tile in DECODE_TILES:
            smem = sum(decode_buffers(g, nq, tile, d, e, n_blocks, n_sel, rescore).values())
            if smem <= sram_bytes:
                return tile, rescore, smem
    return None


def compressed_cache(compress_head, k, v, par, n_c, d, cblock, stride, e):
    """The compressed cache the earlier steps built, with the kernel's own float32 arithmetic
    (on a scratch counter array: that work belongs to earlier steps)."""
    from hwmodels.counters import new_counters
    kc = np.zeros((n_c, d), dtype=np.float32)
    vc = np.zeros((n_c, d), dtype=np.float32)
    if n_c:
        compress_head(new_counters(), k, v, kc, vc, par["wk"], par["wv"], par["bk"], par["bv"],
                      n_c, d, cblock, stride, n_c, e, True)
    return kc, vc


def run_fused_decode(wl, p, inputs, par, kc, vc, rec, compute):
    """``nsa_decode``: one fused CTA per (sequence, KV group) (``decode_group``); returns
    (o, selection) in executed mode, (None, None) in count-only mode."""
    b, G, g, d, e = wl.batch, wl.kv_heads, p.group, wl.head_dim, wl.elem_bytes
    nq, nk, n = wl.seq_q, wl.seq_k, p.selected
    buffers = decode_buffers(g, nq, p.decode_tile, d, e, -(-nk // p.select_block), n,
                             p.decode_rescore)
    c = rec.kernel("nsa_decode", ctas=b * G, buffers=buffers,
                   threads_per_cta=128, tc_path="mma_sync", overlap="serial",
                   prologue_bytes_per_cta=buffers["Q_group"] + buffers["K_tile"],
                   epilogue_elements_per_cta=g * nq * d,      # the group's O rows
                   # the group's g x N_q rows, in 16-row MMAs
                   row_padding=row_padding(g * nq, g * nq), matmul_dtype=wl.dtype)
    args = (nq, nk, d, g, p.compressed_tokens, p.compress_block, p.compress_stride,
            p.select_block, n, p.window, p.decode_tile, p.decode_rescore, wl.scale, e, compute)
    if not compute:
        e3, ph = np.empty((0, 0, d), np.float32), np.empty((0, d), np.float32)
        decode_group(c, e3, ph, ph, ph, ph, np.empty((0, 3, d), np.float32), e3,
                     np.empty((0, n), np.int32), *args)
        rec.repeat(c, b * G)
        return None, None
    o = np.zeros((b, wl.heads, nq, d), dtype=np.float32)
    sel = np.full((b, G, nq, n), -1, dtype=np.int32)
    for bi in range(b):
        for h in range(G):
            hs = slice(h * g, (h + 1) * g)
            decode_group(c, np.ascontiguousarray(inputs.q[bi, hs]), kc[bi, h], vc[bi, h],
                         inputs.k[bi, h], inputs.v[bi, h], np.ascontiguousarray(par["wg"][hs]),
                         o[bi, hs], sel[bi, h], *args)
    return o, sel
