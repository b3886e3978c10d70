"""Native Sparse Attention decoding, the split schedule: the three branches of a decode step
spread over many CTAs, their partial softmax states merged as flash-decoding merges split-KV
attention (``algorithms.kernels.nsa_decode`` documents the step, both schedules, their
traffic and the bound Θ(B G (N/d_s + n l′ + w) d); this module runs the split one).

Kernels per (sequence, KV group): ``nsa_decode_cmp_win`` (compressed and window chunks, one
launch), ``nsa_decode_select`` (bins merged, top-n), ``nsa_decode_slc`` (one CTA per selection
slot) and ``nsa_decode_combine`` (one CTA per query head: gates and the merge).
"""
from __future__ import annotations

import numpy as np

from algorithms.kernels.common import online_softmax_tile, row_padding
from algorithms.kernels.nsa_decode import (DECODE_TILES, TOPN_SLOT_BYTES, _mask_rows,
                                           selected_block, window_tile)
from algorithms.kernels.flash_tile import count_softmax_tile
from algorithms.kernels.nsa_kernels import (IDX_BYTES, STAT_BYTES, _top_n,
                                            selected_count, visible_compressed)
from hwmodels.compiled import compiled
from hwmodels.primitives import (count_alu, count_convert, count_exp, count_load, count_matmul,
                                 count_other, count_store, count_store_result, load_rows)

PARTIAL_STAT_BYTES = 8   # fp32 m and l of a partial softmax state, per row


@compiled
def touched_blocks(a, b, seg_c, seg_s):
    """Selection blocks [lo, hi) compressed tokens [a, b) credit (Eq. 9: token i covers
    stride segments i .. i + l/d_s − 1)."""
    return a // seg_s, (b - 1 + seg_c - 1) // seg_s + 1


@compiled
def cmp_partials(c, q, kc, vc, acc_p, m_p, l_p, bins_p, seq_q, seq_k, d, g, cblock, stride,
                 sblock, tile, ranges, bin_off, scale, e, compute):
    """``nsa_decode_cmp_win``'s compressed CTAs of one group, one per chunk of K̃/Ṽ: a partial
    softmax state (unnormalised acc, m, l) per row and the rows' selection-block bins of the
    chunk, relative to the chunk's m (rescaled by α at every tile, like acc).

    q (g, N_q, d); kc, vc (N_c, d); acc_p (S, rows, d), m_p, l_p (S, rows),
    bins_p (rows, Σ blocks touched) at column offsets ``bin_off``."""
    rows = g * seq_q
    shift = seq_k - seq_q
    seg_c = cblock // stride
    seg_s = sblock // stride
    nv_first = visible_compressed(shift, cblock, stride)
    qr = np.empty((0, 0), dtype=np.float32)
    if compute:
        qr = np.ascontiguousarray(q).reshape((rows, d))
    for s in range(ranges.shape[0]):
        a, b = ranges[s, 0], ranges[s, 1]
        blo, bhi = touched_blocks(a, b, seg_c, seg_s)
        count_load(c, rows * d * e)                           # the group's queries
        m = np.full(rows if compute else 0, -np.inf, dtype=np.float32)
        l = np.zeros(rows if compute else 0, dtype=np.float32)
        acc = np.zeros((rows if compute else 0, d), dtype=np.float32)
        hb = np.zeros((rows if compute else 0, bhi - blo), dtype=np.float32)
        for c0 in range(a, b, tile):
            c1 = min(c0 + tile, b)
            cols = c1 - c0
            kj = load_rows(c, kc, c0, c1, d, e)
            vj = load_rows(c, vc, c0, c1, d, e)
            masked = c1 > nv_first
            count_matmul(c, rows, cols, d, e)                 # S = Q K̃ᵀ
            count_softmax_tile(c, rows, cols, d, masked)
            count_convert(c, rows * cols, e)                  # P -> the MMA's operand dtype
            count_matmul(c, rows, d, cols, e)                 # acc += P Ṽ
            touched = touched_blocks(a, c1, seg_c, seg_s)[1] - blo
            count_other(c, rows * touched)                    # bins *= alpha
            count_other(c, rows * cols * seg_c)               # credit P to its blocks
            if compute:
                sc = np.dot(qr, np.ascontiguousarray(kj.T)) * np.float32(scale)
                if masked:
                    _mask_rows(sc, seq_q, c0, shift, cblock, stride, 0, 0)
                alpha = online_softmax_tile(sc, m, l)
                acc = acc * alpha.reshape((rows, 1)) + np.dot(sc, vj)
                for r in range(rows):
                    hb[r, :touched] *= alpha[r]
                    for jj in range(cols):
                        for sg in range(c0 + jj, c0 + jj + seg_c):
                            hb[r, sg // seg_s - blo] += sc[r, jj]
        count_store(c, rows * d * STAT_BYTES + rows * PARTIAL_STAT_BYTES)   # acc, m, l
        count_store(c, rows * (bhi - blo) * STAT_BYTES)                       # bins
        if compute:
            acc_p[s] = acc
            m_p[s] = m
            l_p[s] = l
            bins_p[:, bin_off[s]:bin_off[s] + bhi - blo] = hb


@compiled
def win_partials(c, q, k, v, acc_p, m_p, l_p, seq_q, seq_k, d, g, window, tile, ranges, scale,
                 e, compute):
    """``nsa_decode_cmp_win``'s window CTAs of one group, one per chunk of the keys
    [kpos_0 − w + 1, N_k): partial softmax states of the g N_q rows."""
    rows = g * seq_q
    shift = seq_k - seq_q
    qr = np.empty((0, 0), dtype=np.float32)
    if compute:
        qr = np.ascontiguousarray(q).reshape((rows, d))
    for s in range(ranges.shape[0]):
        a, b = ranges[s, 0], ranges[s, 1]
        count_load(c, rows * d * e)
        m = np.full(rows if compute else 0, -np.inf, dtype=np.float32)
        l = np.zeros(rows if compute else 0, dtype=np.float32)
        acc = np.zeros((rows if compute else 0, d), dtype=np.float32)
        for c0 in range(a, b, tile):
            acc = window_tile(c, qr, k, v, acc, m, l, c0, min(c0 + tile, b), rows, seq_q,
                              seq_k, shift, d, e, window, scale, compute)
        count_store(c, rows * d * STAT_BYTES + rows * PARTIAL_STAT_BYTES)
        if compute:
            acc_p[s] = acc
            m_p[s] = m
            l_p[s] = l


@compiled
def select_from_partials(c, m_p, l_p, bins_p, sel, seq_q, seq_k, g, cblock, stride, sblock,
                         n_sel, ranges, bin_off, compute):
    """``nsa_decode_select``, one CTA per group: lse of the compressed branch from the chunks'
    (m, l), the chunks' bins scaled by exp(m_s − lse) and summed over the g heads into each
    position's block scores (Eqs. 9–10), then top-n (Eq. 11); writes the indices."""
    rows = g * seq_q
    shift = seq_k - seq_q
    seg_c = cblock // stride
    seg_s = sblock // stride
    n_split = ranges.shape[0]
    n_blocks = (seq_k + sblock - 1) // sblock
    count_load(c, n_split * rows * PARTIAL_STAT_BYTES)       # m, l of every chunk
    count_alu(c, n_split * rows)                             # M = max_s m_s
    count_other(c, 2 * n_split * rows)                       # l_s e^(m_s − M) summed
    count_exp(c, n_split * rows + rows)                      # e^(m_s − M); log
    count_other(c, rows)                                     # lse = M + log L
    count_exp(c, n_split * rows)                             # e^(m_s − lse)
    total_bins = bin_off[n_split]
    count_load(c, rows * total_bins * STAT_BYTES)            # every chunk's bins
    count_other(c, 2 * rows * total_bins)                    # scale, add into the position
    pb = np.zeros((seq_q if compute else 0, n_blocks), dtype=np.float32)
    if compute:
        for r in range(rows):
            mx = -np.inf
            for s in range(n_split):
                mx = max(mx, m_p[s, r])
            if mx == -np.inf:
                continue
            tot = 0.0
            for s in range(n_split):
                tot += l_p[s, r] * np.exp(m_p[s, r] - mx)
            lse = mx + np.log(tot)
            for s in range(n_split):
                if m_p[s, r] == -np.inf:
                    continue
                f = np.float32(np.exp(m_p[s, r] - lse))
                blo = touched_blocks(ranges[s, 0], ranges[s, 1], seg_c, seg_s)[0]
                nb = bin_off[s + 1] - bin_off[s]
                pb[r % seq_q, blo:blo + nb] += f * bins_p[r, bin_off[s]:bin_off[s] + nb]
    for t in range(seq_q):
        kpos = t + shift
        if kpos < 0:
            if compute:
                sel[t, :] = -1
            continue
        jt = kpos // sblock
        count_alu(c, 3 + (jt + 1) * n_sel)                   # force 3; insert each candidate
        if compute:
            _top_n(pb[t], jt, n_sel, sel[t])
    count_store(c, seq_q * n_sel * IDX_BYTES)


@compiled
def slc_partials(c, q, k, v, sel, acc_p, m_p, l_p, seq_q, seq_k, d, g, sblock, n_sel, tile,
                 slots, scale, e, compute):
    """``nsa_decode_slc``, one CTA per selection slot of one group: for every position that
    has that slot, its block's raw K/V (cut at the position), loaded once for the g heads;
    a partial softmax state per (slot, row). In count-only mode slot s < n_t − 1 stands for
    block 0 (a full earlier block), slot n_t − 1 for the current block j_t."""
    shift = seq_k - seq_q
    for j in range(slots):
        for t in range(seq_q):
            kpos = t + shift
            n_t = selected_count(kpos, sblock, n_sel)
            if j >= n_t:
                continue
            jt = kpos // sblock
            count_load(c, IDX_BYTES + g * d * e)             # the slot's index, q_t of g heads
            blk = jt if j == n_t - 1 else 0
            if compute:
                blk = sel[t, j]
            b0 = blk * sblock
            b1 = min(b0 + sblock, kpos + 1)
            ms = np.full(g if compute else 0, -np.inf, dtype=np.float32)
            ls = np.zeros(g if compute else 0, dtype=np.float32)
            accs = np.zeros((g if compute else 0, d), dtype=np.float32)
            qt = np.empty((0, 0), dtype=np.float32)
            if compute:
                qt = np.ascontiguousarray(q[:, t, :])
            accs = selected_block(c, qt, k, v, accs, ms, ls, b0, b1, g, d, tile, e, scale,
                                  compute)
            count_store(c, g * d * STAT_BYTES + g * PARTIAL_STAT_BYTES)
            if compute:
                for h in range(g):
                    acc_p[j, h * seq_q + t] = accs[h]
                    m_p[j, h * seq_q + t] = ms[h]
                    l_p[j, h * seq_q + t] = ls[h]


@compiled
def _merge_rows(c, acc_p, m_p, l_p, parts, row, d, compute):
    """Merge ``parts`` partial softmax states of one row (loads and ops counted)."""
    count_load(c, parts * (d * STAT_BYTES + PARTIAL_STAT_BYTES))
    count_alu(c, parts)                                       # max of the m_s
    count_other(c, parts * (d + 2) + d)                       # scale-add acc, l; divide
    count_exp(c, parts)
    out = np.zeros(d if compute else 0, dtype=np.float32)
    if compute:
        mx = -np.inf
        for s in range(parts):
            mx = max(mx, m_p[s, row])
        if mx == -np.inf:
            return out
        tot = np.float32(0.0)
        for s in range(parts):
            if m_p[s, row] == -np.inf:
                continue
            f = np.float32(np.exp(m_p[s, row] - mx))
            out += f * acc_p[s, row]
            tot += f * l_p[s, row]
        out /= tot
    return out


@compiled
def combine_head(c, q, wg, cmp_acc, cmp_m, cmp_l, slc_acc, slc_m, slc_l, win_acc, win_m,
                 win_l, o, head, n_cmp, n_win, seq_q, seq_k, d, sblock, n_sel, e, compute):
    """``nsa_decode_combine``, one CTA per query head: its gates from q, each branch's
    partials merged, o = Σ_c g_c O_c written once. ``head`` is the head's index in its
    group (rows head·N_q + t of the partials); q (N_q, d), wg (3, d), o (N_q, d)."""
    shift = seq_k - seq_q
    count_load(c, seq_q * d * e + 3 * d * e)                  # q, the head's gate weights
    count_matmul(c, seq_q, 3, d, e)
    count_exp(c, 3 * seq_q)
    count_other(c, 9 * seq_q)
    for t in range(seq_q):
        row = head * seq_q + t
        o_cmp = _merge_rows(c, cmp_acc, cmp_m, cmp_l, n_cmp, row, d, compute)
        n_t = selected_count(t + shift, sblock, n_sel)
        o_slc = _merge_rows(c, slc_acc, slc_m, slc_l, n_t, row, d, compute)
        o_win = _merge_rows(c, win_acc, win_m, win_l, n_win, row, d, compute)
        count_other(c, 5 * d)                                 # Σ_c g_c O_c
        if compute:
            x = np.dot(wg, q[t])
            gt = np.float32(1.0) / (np.float32(1.0) + np.exp(-x))
            o[t] = gt[0] * o_cmp + gt[1] * o_slc + gt[2] * o_win
    count_store_result(c, seq_q * d, e)                       # O to the storage dtype


# ---- host side of the split decode ------------------------------------------------------------

def window_start(seq_q: int, seq_k: int, window: int) -> int:
    """First key of the first new position's window (kpos_0 − w + 1, at least 0)."""
    return max(0, seq_k - seq_q - window + 1)


def split_layout(seq_q, seq_k, n_c, cblock, stride, sblock, window, tile, cmp_splits,
                 win_splits):
    """(cmp ranges (S, 2), bin offsets (S + 1), window ranges (S_w, 2)) as int64 arrays: each
    branch's tokens in chunks of whole tiles, as even as they go."""
    from algorithms.kernels.splitkv import split_ranges
    cmp = split_ranges(n_c, tile, cmp_splits)[1] if n_c and cmp_splits else []
    seg_c, seg_s = cblock // stride, sblock // stride
    nb = [touched_blocks(a, b, seg_c, seg_s) for a, b in cmp]
    off = np.concatenate([[0], np.cumsum([hi - lo for lo, hi in nb])]).astype(np.int64)
    w0 = window_start(seq_q, seq_k, window)
    win = [(w0 + a, w0 + b) for a, b in split_ranges(seq_k - w0, tile, win_splits)[1]]
    as_array = lambda r: np.array(r, dtype=np.int64).reshape((len(r), 2))
    return as_array(cmp), off, as_array(win)


def split_buffers(g, nq, tile, d, e, max_bins, n_blocks, n_sel) -> dict[str, dict[str, int]]:
    """SRAM per CTA of each split-decode kernel."""
    rows = g * nq
    attn = {"Q_group": rows * d * e, "K_tile": tile * d * e, "V_tile": tile * d * e,
            "S_tile": rows * tile * STAT_BYTES, "acc": rows * d * STAT_BYTES,
            "m_l": rows * PARTIAL_STAT_BYTES}
    return {
        "nsa_decode_cmp_win": {**attn, "block_bins": rows * max_bins * STAT_BYTES},
        "nsa_decode_select": {"position_bins": nq * n_blocks * STAT_BYTES,
                              "chunk_bins": rows * max_bins * STAT_BYTES,
                              "lse": rows * STAT_BYTES, "top_n": nq * n_sel * TOPN_SLOT_BYTES},
        "nsa_decode_slc": {"q_t": g * d * e, "K_tile": tile * d * e, "V_tile": tile * d * e,
                           "S_tile": g * tile * STAT_BYTES, "acc": g * d * STAT_BYTES,
                           "m_l": g * PARTIAL_STAT_BYTES},
        "nsa_decode_combine": {"q": nq * d * e, "W_gate": 3 * d * e,
                               "O_branches": 3 * d * STAT_BYTES,
                               "partial": (d + 2) * STAT_BYTES},
    }


def plan_split(batch, kv_heads, g, nq, seq_k, d, e, cblock, stride, sblock, n_sel, window,
               sm_count, sram_bytes) -> dict | None:
    """Tile and split counts: the compressed and window chunks of one launch fill the SMs'
    waves (flash-decoding's rule, ``splitkv.choose_splits``), shared between the branches in
    proportion to their tiles; None if no tile fits the SRAM budget."""
    from algorithms.kernels.splitkv import choose_splits
    n_c = 0 if seq_k < cblock else (seq_k - cblock) // stride + 1
    n_blocks = -(-seq_k // sblock)
    w_tokens = seq_k - window_start(nq, seq_k, window)
    slots = max(min(n_sel, (t + seq_k - nq) // sblock + 1) for t in range(nq))
    for tile in DECODE_TILES:
        cmp_tiles, win_tiles = -(-n_c // tile), -(-w_tokens // tile)
        parts = max(2 if cmp_tiles else 1,
                    choose_splits(batch * kv_heads, cmp_tiles + win_tiles, sm_count))
        cmp_splits = (min(cmp_tiles, max(1, round(parts * cmp_tiles / (cmp_tiles + win_tiles))))
                      if cmp_tiles else 0)
        win_splits = min(win_tiles, max(1, parts - cmp_splits))
        ranges, off, _ = split_layout(nq, seq_k, n_c, cblock, stride, sblock, window, tile,
                                      cmp_splits, win_splits)
        max_bins = int(np.diff(off).max()) if len(off) > 1 else 0
        bufs = split_buffers(g, nq, tile, d, e, max_bins, n_blocks, n_sel)
        smem = max(sum(b.values()) for b in bufs.values())
        if smem <= sram_bytes:
            return {"tile": tile, "cmp_splits": len(ranges), "win_splits": win_splits,
                    "slots": slots, "smem": smem}
    return None


def run_split_decode(wl, p, inputs, par, kc, vc, rec, compute):
    """Launch the four kernels of a decode step for every (sequence, KV group); returns
    (o, selection) in executed mode, (None, None) in count-only mode."""
    b, G, H, g = wl.batch, wl.kv_heads, wl.heads, p.group
    d, e, nq, nk, n = wl.head_dim, wl.elem_bytes, wl.seq_q, wl.seq_k, p.selected
    l, ds, ls, w, tile = p.compress_block, p.compress_stride, p.select_block, p.window, p.decode_tile
    rows = g * nq
    cmp_r, off, win_r = split_layout(nq, nk, p.compressed_tokens, l, ds, ls, w, tile,
                                     p.decode_cmp_splits, p.decode_win_splits)
    n_cmp, n_win, slots = len(cmp_r), len(win_r), p.decode_slots
    max_bins = int(np.diff(off).max()) if n_cmp else 0
    bufs = split_buffers(g, nq, tile, d, e, max_bins, -(-nk // ls), n)
    tiles_of = lambda r: [-(-(hi - lo) // tile) for lo, hi in r]
    kw = dict(threads_per_cta=128, matmul_dtype=wl.dtype)
    first = {"nsa_decode_cmp_win": ("Q_group", "K_tile"), "nsa_decode_slc": ("q_t", "K_tile"),
             "nsa_decode_combine": ("q", "W_gate")}     # what each first MMA waits for
    prologue = {k: sum(bufs[k][b] for b in names) for k, names in first.items()}
    c1 = rec.kernel("nsa_decode_cmp_win", ctas=b * G * (n_cmp + n_win),
                    buffers=bufs["nsa_decode_cmp_win"], tc_path="mma_sync", overlap="serial",
                    cta_work=tiles_of(cmp_r) + tiles_of(win_r),
                    prologue_bytes_per_cta=prologue["nsa_decode_cmp_win"],
                    epilogue_elements_per_cta=rows * d,            # a partial O per chunk
                    row_padding=row_padding(rows, rows), **kw)     # g x N_q rows, 16-row MMAs
    c2 = rec.kernel("nsa_decode_select", ctas=b * G, buffers=bufs["nsa_decode_select"],
                    tc_path="none", **kw)
    c3 = rec.kernel("nsa_decode_slc", ctas=b * G * slots, buffers=bufs["nsa_decode_slc"],
                    tc_path="mma_sync", overlap="serial",
                    prologue_bytes_per_cta=prologue["nsa_decode_slc"],
                    epilogue_elements_per_cta=rows * d,            # a partial O per slot
                    row_padding=row_padding(rows, rows), **kw)
    c4 = rec.kernel("nsa_decode_combine", ctas=b * H, buffers=bufs["nsa_decode_combine"],
                    tc_path="mma_sync", prologue_bytes_per_cta=prologue["nsa_decode_combine"],
                    epilogue_elements_per_cta=nq * d,              # the head's O rows
                    row_padding=row_padding(nq, nq), **kw)
    if not compute:
        z2, z3 = np.empty((0, 0), np.float32), np.empty((0, 0, d), np.float32)
        ph = np.empty((0, d), np.float32)
        e3 = np.empty((0, 0, d), np.float32)
        cmp_partials(c1, e3, ph, ph, z3, z2, z2, z2, nq, nk, d, g, l, ds, ls, tile, cmp_r, off,
                     wl.scale, e, False)
        win_partials(c1, e3, ph, ph, z3, z2, z2, nq, nk, d, g, w, tile, win_r, wl.scale, e,
                     False)
        select_from_partials(c2, z2, z2, z2, np.empty((0, n), np.int32), nq, nk, g, l, ds, ls,
                             n, cmp_r, off, False)
        slc_partials(c3, e3, ph, ph, np.empty((0, n), np.int32), z3, z2, z2, nq, nk, d, g, ls,
                     n, tile, slots, wl.scale, e, False)
        combine_head(c4, ph, np.empty((0, d), np.float32), z3, z2, z2, z3, z2, z2, z3, z2, z2,
                     ph, 0, n_cmp, n_win, nq, nk, d, ls, n, e, False)
        for c, times in ((c1, b * G), (c2, b * G), (c3, b * G), (c4, b * H)):
            rec.repeat(c, times)
        return None, None
    o = np.zeros((b, H, nq, d), dtype=np.float32)
    sel = np.full((b, G, nq, n), -1, dtype=np.int32)
    for bi in range(b):
        for h in range(G):
            hs = slice(h * g, (h + 1) * g)
            q = np.ascontiguousarray(inputs.q[bi, hs])                 # (g, N_q, d)
            k, v = inputs.k[bi, h], inputs.v[bi, h]
            cmp = (np.zeros((n_cmp, rows, d), np.float32), np.full((n_cmp, rows), -np.inf,
                   np.float32), np.zeros((n_cmp, rows), np.float32))
            bins = np.zeros((rows, int(off[-1])), np.float32)
            win = (np.zeros((n_win, rows, d), np.float32), np.full((n_win, rows), -np.inf,
                   np.float32), np.zeros((n_win, rows), np.float32))
            slc = (np.zeros((max(slots, 1), rows, d), np.float32),
                   np.full((max(slots, 1), rows), -np.inf, np.float32),
                   np.zeros((max(slots, 1), rows), np.float32))
            cmp_partials(c1, q, kc[bi, h], vc[bi, h], *cmp, bins, nq, nk, d, g, l, ds, ls, tile,
                         cmp_r, off, wl.scale, e, True)
            win_partials(c1, q, k, v, *win, nq, nk, d, g, w, tile, win_r, wl.scale, e, True)
            select_from_partials(c2, cmp[1], cmp[2], bins, sel[bi, h], nq, nk, g, l, ds, ls, n,
                                 cmp_r, off, True)
            slc_partials(c3, q, k, v, sel[bi, h], *slc, nq, nk, d, g, ls, n, tile, slots,
                         wl.scale, e, True)
            for j in range(g):
                combine_head(c4, np.ascontiguousarray(q[j]), np.ascontiguousarray(
                    par["wg"][h * g + j]), *cmp, *slc, *win, o[bi, h * g + j], j, n_cmp, n_win,
                    nq, nk, d, ls, n, e, True)
    return o, sel
