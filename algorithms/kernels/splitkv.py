"""Packed-query, split-KV attention kernels shared by ``gqa`` and ``mla`` (not an algorithm of
its own: it is registered through them).

Bound: Θ(G N d) bytes per decode step (each K/V head read once, split over CTAs) plus
Θ(S H N_q d) for the fp32 partials of S splits.

One CTA attends ``g`` query heads that read the same key/value head ("packed": their
g x B_r query rows share every K/V tile it loads) for one block of B_r query rows and one
chunk [k_lo, k_hi) of the keys, with FlashAttention-2's online softmax. With one chunk
(``splits`` = 1) the CTA writes the final O (storage dtype) and the fp32 log-sum-exp; with
several chunks (flash-decoding, Dao et al. 2023, "Flash-Decoding for long-context
inference") each CTA writes a partial O and lse in fp32 and a second kernel combines them:

    lse = max_s lse_s + log Σ_s exp(lse_s − max_s lse_s),   O = Σ_s exp(lse_s − lse) · O_s

Notation -> code: g == group (query heads per CTA), B_r == block_q (rows per head),
B_c == block_k, S == splits, d_k / d_v == dk / dv (MLA: 576 / 512). ``v_in_k``: the values
are the first d_v columns of the key tile (MLA's latent serves as both), so no V load.

Wide values (MLA's d_v = 512): one warp cannot hold a 16-row tile's fp32 O (512 columns =
256 registers a thread), so ``value_column_slices`` warps share each row tile, each owning
128 columns, and each computes S for its own B_c / slices keys; the probabilities are passed
between them through shared memory, a slice of keys at a time (FlashMLA's sP plays this
role), with the row maxima and sums. The plan declares those buffers (``P_slice``,
``row_stats``) so that a tile choice leaves room for them; B_c must split into slices of
whole 16-key MMA steps.

Per CTA (R = g·rows, e = storage bytes, o_b = 4 when split else e), HBM bytes:
    reads  = R d_k e (Q) + Σ_tiles cols (d_k + d_v [0 if v_in_k]) e
    writes = R d_v o_b + 4 R
and the other/ALU/exp/convert counts of ``flash2.forward_head`` with rows -> R (a packed CTA
with g = 1 counts exactly as FlashAttention-2): per tile R B_c (+ R B_c masked) + R ALU ops,
R B_c conversions of P below fp32, and R d_v of O when o_b < 4. Combine kernel, per query head:
    reads 4 S N_q (d_v + 1), writes N_q (d_v e + 4);
    other 3 S N_q + 2 S N_q d_v + N_q d_v + N_q (of which ALU S N_q: the max), exp S N_q + N_q,
    convert N_q d_v below fp32.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from algorithms.kernels import step_latency
from algorithms.kernels.common import (MMA_ROWS, WARP, WARPGROUP, WGMMA_ROWS, apply_causal_mask,
                                       causal_block_is_partial, causal_key_end, cdiv,
                                       first_q_bytes, heads_in_flight, key_tiles_per_row_block,
                                       mma_warps, online_softmax_tile, row_padding, row_tiles,
                                       safe_normalizers, scale_rows, wgmma_warpgroups)
from algorithms.kernels.flash_tile import count_softmax_tile, repeat_step, same_tiles_run, snapshot
from hwmodels.compiled import compiled
from hwmodels.memory import Recorder
from hwmodels.primitives import (count_alu, count_convert, count_exp, count_load, count_matmul,
                                 count_other, count_store, count_store_result)

Q_BLOCKS = (128, 64, 32, 16)                    # FlashAttention-2's per-head row blocks
Q_BLOCKS_PACKED = (128, 64, 32, 16, 8, 4, 2, 1)  # packing g heads may need fewer rows per head
K_BLOCKS = (128, 64, 32, 16)
STAT_BYTES = 4         # lse and the partial O of split CTAs are fp32
MAX_SPLITS = 128       # as flash-attn's num_splits heuristic caps it
SPLIT_EFFICIENCY = 0.85  # smallest split count within 85% of the best wave efficiency
ALMOST_FULL = 0.8      # a grid of this many CTAs per SM or more is not split (flash-attn)


@dataclass(frozen=True)
class PackedTiles:
    group: int
    block_q: int
    block_k: int
    smem_bytes: int
    register_bytes: int
    tile_rows: int = 0      # rows a CTA's tile holds and computes; 0: g·B_r, padded to 16
    warps: int = 0          # warps (wgmma: warpgroups) of a CTA; 0: laid out by its rows


VALUE_COLUMNS_PER_WARP = 128   # fp32 O columns of a 16-row tile one warp holds (64 regs/thread)


def value_column_slices(dv: int) -> int:
    """Warps that share one 16-row tile's output columns (1 unless d_v > 128)."""
    return max(1, math.ceil(dv / VALUE_COLUMNS_PER_WARP))


def q_tile_rows(g, block_q, tile_rows=0) -> int:
    """Rows of a packed CTA's Q tile: its g·B_r query rows padded to a multiple of 16, the M
    of an m16n8k16 MMA (a decode step packs, e.g., 4 rows: the tile still holds 16), or a
    program's own tile of ``tile_rows``."""
    return tile_rows or row_tiles(g * block_q) * MMA_ROWS


def smem_buffers(g, block_q, block_k, dk, dv, e, v_in_k, tile_rows=0) -> dict[str, int]:
    """Shared memory of a packed CTA (its Q tile: ``q_tile_rows``)."""
    rows = q_tile_rows(g, block_q, tile_rows)
    buffers = {"Q_i": rows * dk * e, "K_j": block_k * dk * e}
    if not v_in_k:
        buffers["V_j"] = block_k * dv * e
    slices = value_column_slices(dv)
    if v_in_k and slices > 1:
        buffers["P_slice"] = rows * (block_k // slices) * e      # one key slice of P
        buffers["row_stats"] = 2 * rows * slices * STAT_BYTES     # partial row max and sum
    return buffers


def register_bytes(g, block_q, block_k, dv) -> int:
    """fp32 O accumulator and score tile of the g·B_r packed rows."""
    return 4 * g * block_q * dv + 4 * g * block_q * block_k


def plan_tiles(groups, seq_q, dk, dv, e, sram_bytes, register_budget, *, v_in_k=False,
               q_blocks=Q_BLOCKS_PACKED, clamp_to_seq=True):
    """The first (g, B_r, B_c), largest first, whose tiles fit SRAM and registers, or None.

    ``clamp_to_seq``: B_r = min(B_r, N_q) (decode: a few query rows); off for FA-2 parity.
    """
    for g in groups:
        seen = []
        for bq in q_blocks:
            bq = min(bq, seq_q) if clamp_to_seq else bq
            if bq in seen:
                continue
            seen.append(bq)
            for bk in K_BLOCKS:
                if v_in_k and bk % (16 * value_column_slices(dv)):
                    continue                   # key slices of whole 16-key MMA steps
                smem = sum(smem_buffers(g, bq, bk, dk, dv, e, v_in_k).values())
                regs = register_bytes(g, bq, bk, dv)
                if smem <= sram_bytes and regs <= register_budget:
                    return PackedTiles(g, bq, bk, smem, regs)
    return None


def choose_splits(base_ctas: int, key_blocks: int, sm_count: int) -> int:
    """Flash-decoding's split count: none when the unsplit grid already almost fills the SMs
    (``ALMOST_FULL``: flash-attn's ``num_splits_heuristic`` returns 1 there, "If we have
    enough to almost fill the SMs, then just use 1 split"), else the smallest S whose grid
    (base_ctas x S) fills the SMs' waves within 85% of the best S, at most one split per key
    block and ``MAX_SPLITS``. A split's partials cost a combine kernel and their own traffic,
    which a fuller last wave of an already full grid does not repay."""
    if base_ctas >= ALMOST_FULL * sm_count:
        return 1
    top = max(1, min(MAX_SPLITS, key_blocks))
    eff = []
    for s in range(1, top + 1):
        waves = base_ctas * s / sm_count
        eff.append(waves / math.ceil(waves))
    best = max(eff)
    return next(s for s, x in enumerate(eff, start=1) if x >= SPLIT_EFFICIENCY * best)


def split_ranges(seq_k: int, block_k: int, splits: int) -> tuple[int, list[tuple[int, int]]]:
    """(most key blocks in a chunk, [(k_lo, k_hi)]): ``splits`` chunks of whole key blocks,
    as even as they go (sizes differ by at most one block), none empty."""
    blocks = cdiv(seq_k, block_k)
    n = max(1, min(splits, blocks))
    edges = [i * blocks // n for i in range(n + 1)]
    ranges = [(edges[i] * block_k, min(seq_k, edges[i + 1] * block_k)) for i in range(n)]
    return cdiv(blocks, n), ranges


def cta_work(seq_q, seq_k, block_q, block_k, ranges, causal) -> np.ndarray:
    """Key tiles each CTA of one pack processes, in launch order (split-major)."""
    return np.concatenate([key_tiles_per_row_block(0, seq_q, k_lo, k_hi, seq_q, seq_k, block_q,
                                                   block_k, causal) for k_lo, k_hi in ranges])


def packed_attention(rec, name, *, q, k, v, batch, q_heads, kv_heads, seq_q, seq_k, dk, dv,
                     tiles: PackedTiles, splits, scale, causal, e, dtype, v_in_k, tc_path,
                     compute):
    """Launch the (split) attention kernel (``attention_record``), and the combine kernel
    when ``splits`` > 1.

    Arguments:
        q: (B, H_q, N_q, d_k); k: (B, H_kv, N_k, d_k); v: (B, H_kv, N_k, d_v) or None when
            ``v_in_k``. None in count-only mode. Query head h reads KV head
            h // (H_q / H_kv); a CTA packs ``tiles.group`` consecutive query heads, all of
            one KV head.
    Return:
        (o, lse): (B, H_q, N_q, d_v) and (B, H_q, N_q) float32; (None, None) in count-only
        mode.
    """
    _, ranges = split_ranges(seq_k, tiles.block_k, splits)
    out_bytes = STAT_BYTES if len(ranges) > 1 else e
    c = attention_record(rec, name, batch=batch, q_heads=q_heads, kv_heads=kv_heads,
                         seq_q=seq_q, seq_k=seq_k, dk=dk, dv=dv, tiles=tiles, ranges=ranges,
                         causal=causal, e=e, dtype=dtype, v_in_k=v_in_k, tc_path=tc_path)
    if not compute:
        count_packs(c, seq_q, seq_k, dk, dv, tiles, ranges, scale, causal, e, out_bytes,
                    v_in_k, batch * (q_heads // tiles.group))
        if len(ranges) > 1:
            combine(rec, None, None, batch, q_heads, seq_q, dv, len(ranges), e, False)
        return None, None
    o_part, lse_part = run_packs(c, q, k, v, batch, q_heads, kv_heads, seq_q, seq_k, dk, dv,
                                 tiles, ranges, scale, causal, e, out_bytes, v_in_k)
    if len(ranges) == 1:
        return o_part[0], lse_part[0]
    return combine(rec, o_part, lse_part, batch, q_heads, seq_q, dv, len(ranges), e, True)


def attention_record(rec, name, *, batch, q_heads, kv_heads, seq_q, seq_k, dk, dv,
                     tiles: PackedTiles, ranges, causal, e, dtype, v_in_k, tc_path):
    """The (split) attention kernel's record: one CTA per (sequence, pack, row block, split)
    and what the timing model prices it with.

    On the ``mma.sync`` path a CTA's warps are laid out as FlashAttention-2's
    (``common.mma_warps``: two 16-row tiles a warp when the registers allow, else one); on
    the ``wgmma`` path, a warpgroup per 64 rows. Wide values give each row tile
    ``value_column_slices`` warps (warpgroups), which share its K and V reads. Each reader
    reads the whole K and V tiles from shared memory: the pricing charges them once per
    reader."""
    g, bq, bk = tiles.group, tiles.block_q, tiles.block_k
    packs = q_heads // g
    n_split = len(ranges)
    t_r = cdiv(seq_q, bq)
    out_bytes = STAT_BYTES if n_split > 1 else e
    buffers = smem_buffers(g, bq, bk, dk, dv, e, v_in_k, tiles.tile_rows)
    slices = value_column_slices(dv)
    rows = tiles.tile_rows or g * bq
    if tiles.warps:                         # a program's own warps (flash-attn's split-KV)
        readers = tiles.warps
        threads = readers * (WARPGROUP if tc_path == "wgmma" else WARP)
    elif tc_path == "wgmma":                # warpgroups of 64 rows (x slices of 128 columns)
        readers = wgmma_warpgroups(g * bq)
        threads = readers * slices * WARPGROUP
    else:                                   # warps (or groups of slices) reading K and V
        readers = (mma_warps(rec.gpu, g * bq, tiles.register_bytes) if slices == 1
                   else row_tiles(g * bq))
        threads = readers * slices * WARP
    kv_bytes = seq_k * (dk + (0 if v_in_k else dv)) * e
    unique = (batch * q_heads * seq_q * (dk * e + n_split * (dv * out_bytes + STAT_BYTES))
              + batch * kv_heads * kv_bytes)
    work = cta_work(seq_q, seq_k, bq, bk, ranges, causal)
    return rec.kernel(name, ctas=batch * packs * t_r * n_split, buffers=buffers,
                      threads_per_cta=threads, register_bytes_per_cta=tiles.register_bytes,
                      tc_path=tc_path, overlap="serial", smem_readers=readers,
                      mma_rows_per_cta=rows,
                      # a pack's g x B_r rows computed whole, in MMAs of 16 (64) rows or in
                      # the program's own tile: a decode step's g rows fill part of one
                      row_padding=row_padding(g * seq_q, g * bq, tiles.tile_rows or (
                          WGMMA_ROWS if tc_path == "wgmma" else MMA_ROWS)),
                      prologue_bytes_per_cta=first_q_bytes(
                          buffers["Q_i"], q_tile_rows(g, bq, tiles.tile_rows),
                          g * min(bq, seq_q)) + buffers["K_j"],
                      epilogue_elements_per_cta=rows * dv,    # the pack's O rows (or partials)
                      cta_work=work, matmul_dtype=dtype,
                      # wgmma reads its operands from shared memory without loads; the
                      # warpgroups of a pack run in step
                      **step_latency.chain(step_latency.forward_step(bk, tc_path == "wgmma"),
                                           work, batch * packs),
                      unique_hbm_bytes=unique,
                      l2_working_set_bytes=kv_working_set(rec, batch * kv_heads,
                                                          packs // kv_heads, t_r * n_split,
                                                          buffers, tiles, threads, kv_bytes,
                                                          v_in_k))


def count_packs(c, seq_q, seq_k, dk, dv, tiles: PackedTiles, ranges, scale, causal, e,
                out_bytes, v_in_k, packs_total):
    """Count-only: one pack's splits counted without data, then repeated for every pack of
    every sequence (their counts are the same)."""
    for k_lo, k_hi in ranges:
        attend_pack(c, np.empty((0, 0, dk), np.float32), np.empty((0, dk), np.float32),
                    np.empty((0, dv), np.float32), np.empty((0, 0, dv), np.float32),
                    np.empty((0, 0), np.float32), seq_q, seq_k, dk, dv, tiles.group,
                    tiles.block_q, tiles.block_k, k_lo, k_hi, scale, causal, e, out_bytes,
                    v_in_k, False)
    Recorder.repeat(c, packs_total)


def run_packs(c, q, k, v, batch, q_heads, kv_heads, seq_q, seq_k, dk, dv, tiles: PackedTiles,
              ranges, scale, causal, e, out_bytes, v_in_k):
    """Executed: every pack's splits, each writing its partial O and lse (fp32)."""
    g = tiles.group
    heads_per_kv = q_heads // kv_heads
    o_part = np.zeros((len(ranges), batch, q_heads, seq_q, dv), dtype=np.float32)
    lse_part = np.full((len(ranges), batch, q_heads, seq_q), -np.inf, dtype=np.float32)
    for b in range(batch):
        for h0 in range(0, q_heads, g):
            kv = h0 // heads_per_kv
            kb = np.ascontiguousarray(k[b, kv])
            # contiguous either way: one compiled specialization of attend_pack, not two
            vb = np.ascontiguousarray(kb[:, :dv] if v_in_k else v[b, kv])
            qb = np.ascontiguousarray(q[b, h0:h0 + g])
            for s, (k_lo, k_hi) in enumerate(ranges):
                attend_pack(c, qb, kb, vb, o_part[s, b, h0:h0 + g], lse_part[s, b, h0:h0 + g],
                            seq_q, seq_k, dk, dv, g, tiles.block_q, tiles.block_k, k_lo, k_hi,
                            scale, causal, e, out_bytes, v_in_k, True)
    return o_part, lse_part


def kv_working_set(rec, kv_units, packs_per_kv, ctas_per_pack, buffers, tiles, threads,
                   kv_bytes, v_in_k) -> int:
    """The L2 working set of the K/V re-reads (``hwmodels.timing``): compulsory traffic is Q
    once, each KV head's K/V once, every output once; the other packs of a KV head and its
    other row blocks re-read its K/V.

    The CTAs of a KV head launch one after another (pack by pack, each split-major). When
    they are all resident together, the readers of a key chunk start together and walk it
    tile by tile in step, so a tile is re-read while it is still among the tiles in flight:
    the working set is the resident CTAs' K/V tiles (FlashMLA's m-blocks of one sequence
    share its latent tiles this way). Otherwise a reader comes back to a KV head after
    other heads' CTAs have streamed through L2, and the K/V of every KV head in flight must
    stay there, as FlashAttention-2's K/V re-reads are declared."""
    ctas_per_kv = packs_per_kv * ctas_per_pack
    smem = sum(buffers.values())
    resident = rec.resident_ctas(kv_units * ctas_per_kv, smem, tiles.register_bytes, threads)
    if ctas_per_kv <= resident:
        tile_bytes = buffers["K_j"] + (0 if v_in_k else buffers["V_j"])
        return resident * tile_bytes
    in_flight = heads_in_flight(rec, ctas_per_pack, kv_units * packs_per_kv, smem,
                                tiles.register_bytes, threads)
    return in_flight * kv_bytes


def combine_rows(dv: int) -> int:
    """Query rows one combine CTA merges: flash-attn's ``kBlockM`` for its split-KV combine
    ("as small as possible for more parallelism", flash_fwd_launch_template.h: 4 when the
    value width is a multiple of 128, 8 when of 64, else 16)."""
    return 4 if dv % 128 == 0 else 8 if dv % 64 == 0 else 16


def combine(rec, o_part, lse_part, batch, q_heads, seq_q, dv, splits, e, compute):
    """The reduction kernel: one CTA per (sequence, query head, ``combine_rows`` query rows)
    merges their S partials, row after row. flash-attn spreads the rows over CTAs the same
    way, except that its blocks of rows run across heads: there a decode step's one row a
    head shares its CTA with the next heads' rows, here each head has a CTA of its own."""
    c = rec.kernel("splitkv_combine",
                   ctas=batch * q_heads * cdiv(seq_q, combine_rows(dv)),
                   # rows are merged one after another: one row's partials on chip at a time
                   buffers={"lse_s": splits * STAT_BYTES, "O_s": dv * STAT_BYTES,
                            "O_acc": dv * STAT_BYTES},
                   threads_per_cta=128, tc_path="none", overlap="serial")
    if not compute:
        combine_head(c, np.empty((0, 0, dv), np.float32), np.empty((0, 0), np.float32),
                     np.empty((0, dv), np.float32), np.empty(0, np.float32), seq_q, dv, splits,
                     e, False)
        Recorder.repeat(c, batch * q_heads)
        return None, None
    o = np.zeros((batch, q_heads, seq_q, dv), dtype=np.float32)
    lse = np.zeros((batch, q_heads, seq_q), dtype=np.float32)
    for b in range(batch):
        for h in range(q_heads):
            combine_head(c, np.ascontiguousarray(o_part[:, b, h]),
                         np.ascontiguousarray(lse_part[:, b, h]), o[b, h], lse[b, h], seq_q,
                         dv, splits, e, True)
    return o, lse


@compiled
def attend_pack(c, q, k, v, o, lse, seq_q, seq_k, dk, dv, g, block_q, block_k, k_lo, k_hi,
                scale, causal, e, out_bytes, v_in_k, compute):
    """One pack of g query heads over keys [k_lo, k_hi): every query block is one CTA.

    q (g, N_q, d_k), k (N_k, d_k), v (N_k, d_v), o (g, N_q, d_v), lse (g, N_q).
    """
    for r0 in range(0, seq_q, block_q):
        r1 = min(r0 + block_q, seq_q)
        rows = r1 - r0
        big = g * rows                                             # packed rows R
        count_load(c, big * dk * e)                                # Q_i of g heads -> SRAM
        m = np.empty((0, 0), dtype=np.float32)
        l = np.empty((0, 0), dtype=np.float32)
        acc = np.empty((0, 0, 0), dtype=np.float32)
        if compute:
            m = np.full((g, rows), -np.inf, dtype=np.float32)
            l = np.zeros((g, rows), dtype=np.float32)
            acc = np.zeros((g, rows, dv), dtype=np.float32)
        key_end = min(k_hi, causal_key_end(r1, seq_q, seq_k)) if causal else k_hi
        c0 = k_lo
        while c0 < key_end:
            c1 = min(c0 + block_k, k_hi)
            cols = c1 - c0
            masked = causal and causal_block_is_partial(r0, c1, seq_q, seq_k)
            # count-only: a run of key tiles that count alike is counted once, then scaled
            run = 1 if compute else same_tiles_run(r0, c0, key_end, block_k, k_hi, causal,
                                                   masked, seq_q, seq_k)
            before = snapshot(c, run)
            count_load(c, cols * dk * e)                           # K_j -> SRAM, once for g heads
            if not v_in_k:
                count_load(c, cols * dv * e)                       # V_j -> SRAM
            count_matmul(c, big, cols, dk, e)                      # S = Q_i K_jᵀ (g heads)
            count_softmax_tile(c, big, cols, dv, masked)           # as flash2.forward_head
            count_convert(c, big * cols, e)                        # P -> the MMA's operand dtype
            count_matmul(c, big, dv, cols, e)                      # acc += P V_j
            repeat_step(c, before, run)
            if compute:
                kt = np.ascontiguousarray(k[c0:c1].T)
                vj = np.ascontiguousarray(v[c0:c1])
                for j in range(g):
                    s = np.dot(np.ascontiguousarray(q[j, r0:r1]), kt) * np.float32(scale)
                    if masked:
                        apply_causal_mask(s, r0, c0, seq_q, seq_k)
                    alpha = online_softmax_tile(s, m[j], l[j])     # s now holds P
                    scale_rows(acc[j], alpha)
                    acc[j] += np.dot(s, vj)
            c0 += run * block_k
        # -- epilogue: O_i = acc / l, lse_i = m + log l --
        count_other(c, big * dv + big)
        count_exp(c, big)
        count_store_result(c, big * dv, out_bytes)                 # O_i (or partial) -> HBM
        count_store(c, big * STAT_BYTES)                           # lse_i -> HBM
        if compute:
            for j in range(g):
                l_safe, lse[j, r0:r1] = safe_normalizers(m[j], l[j])
                o[j, r0:r1] = acc[j] / l_safe.reshape((rows, 1))


@compiled
def combine_head(c, o_part, lse_part, o, lse, seq_q, dv, splits, e, compute):
    """Merge S partials of one query head: o_part (S, N_q, d_v), lse_part (S, N_q)."""
    rows = seq_q * splits
    count_load(c, rows * STAT_BYTES)                               # lse_s
    count_alu(c, rows)                                             # max
    count_other(c, 2 * rows)                                       # lse_s - max, sum
    count_exp(c, rows)                                             # w_s = exp(lse_s - max)
    count_load(c, rows * dv * STAT_BYTES)                          # O_s
    count_other(c, 2 * rows * dv + seq_q * dv + seq_q)             # Σ w_s O_s, / Σ w_s, + max
    count_exp(c, seq_q)                                            # log Σ w_s
    count_store_result(c, seq_q * dv, e)                           # O -> HBM
    count_store(c, seq_q * STAT_BYTES)                             # lse -> HBM
    if compute:
        for i in range(seq_q):
            mx = -np.inf
            for s in range(splits):
                mx = max(mx, lse_part[s, i])
            if mx == -np.inf:
                o[i, :] = 0.0
                lse[i] = -np.inf
                continue
            total = np.float32(0.0)
            acc = np.zeros(dv, dtype=np.float32)
            for s in range(splits):
                w = np.float32(np.exp(lse_part[s, i] - mx))
                total += w
                acc += w * o_part[s, i]
            o[i, :] = acc / total
            lse[i] = mx + np.log(total)
