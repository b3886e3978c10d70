"""The shared tiled block-sparse forward kernel: FlashAttention-2 over a block layout.

Block-sparse FlashAttention — Dao et al., 2022 (arXiv 2205.14135), Section 3.3 and
Proposition 4 — run as the FlashAttention-2 forward (Dao, 2023, arXiv 2307.08691,
Algorithm 1): one CTA per (Q block, head) keeps Q_i on chip and streams only the K/V blocks
its row of the layout (``algorithms.kernels.sparse_patterns.BlockLayout``) marks non-empty, with the
online softmax of ``algorithms.flash2``. Empty tiles are never loaded; full tiles are
computed without a mask; partial tiles apply the element mask (a select per score, the mask
computed from indices on chip as flash-attn does for causal and local windows).

Notation -> code: B_r == block_q, B_c == block_k, T_r == ceil(N_q / B_r); the layout row of
Q block i is ``cols[row_ptr[i]:row_ptr[i+1]]`` (nnz tiles in all, n_p of them partial).

HBM traffic per head (bytes; e = storage bytes per element; c_t = key columns of tile t):
    reads  = N_q d e (Q, once) + Σ_tiles 2 c_t d e (K_j, V_j) + 8 T_r + 4 nnz (layout, int32)
    writes = N_q d e (O) + 4 N_q (fp32 log-sum-exp)
Bound (Proposition 4): Θ(N d + s N² d / B_r) = Θ(N d + N² d² M⁻¹ s), s = nnz / (T_r T_c).
FLOPs per tile of r_t rows: 4 r_t c_t d matmul, 4 r_t c_t + 4 r_t + r_t d other (+ r_t c_t
select when partial), r_t c_t + r_t exps; per Q block r d + r other and r exps (epilogue).
Count-only mode runs the same loop over the layout with the arithmetic skipped: its cost is
O(tiles visited), so 1M-token windows take well under a second, and the N^1.5 strided
pattern at 1M tokens (millions of tiles) a few seconds.

L2 (timing model only, the counts above are what the kernel requests): ``l2_footprint``
declares the compulsory DRAM traffic and the working set as flash2 does, over the layout's
distinct K/V tiles.

Warps as FlashAttention-2 lays them out (``common.mma_warps``): two 16-row tiles a warp when
the fp32 tiles fit the registers a thread may hold, else one (8 warps at B_r = 128), each
warp reading the whole K_j and V_j from shared memory. A pattern's block fixes B_r x B_c: at
128 x 128, d = 128, four warps would need 256 accumulator registers a thread, one more than
a thread may hold.

Differences from a CUDA block-sparse kernel: the CTA's tiles run in sequence, and the
layout (CSR row pointer and column indices) is charged as int32 reads even for patterns a
kernel could compute from indices (local windows), so all patterns share one cost model.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from algorithms.base import Plan, PlanError
from algorithms.kernels import footprints
from algorithms.kernels import step_latency
from algorithms.kernels.common import (cdiv, first_q_bytes, for_each_head, head_view,
                                       heads_in_flight, mma_layout, new_output, new_stats)
from algorithms.flash2 import check_fixed_tiles, smem_buffers
from algorithms.kernels.sparse_patterns import BlockLayout
from hwmodels.compiled import compiled
from hwmodels.memory import SramOverflowError
from algorithms.kernels.flash_tile import (NO_DROPOUT_SCALE, attend_tile, count_tile, finish_rows,
                                           new_row_state, p_in_registers)
from hwmodels.primitives import count_load, load_rows, store_rows, store_vector

LAYOUT_ROW_BYTES = 8     # row_ptr[i], row_ptr[i+1] as int32, read once per Q block
LAYOUT_COL_BYTES = 4     # one int32 K-block index per visited tile
STAT_BYTES = 4           # fp32 log-sum-exp


@dataclass(frozen=True)
class TilePlan(Plan):
    block_q: int            # B_r
    block_k: int            # B_c
    smem_bytes: int         # Q_i, K_j, V_j tiles
    register_bytes: int     # fp32 O accumulator and score tile


def fixed_tile_plan(wl, gpu, sram_bytes: int, block: int, name: str) -> TilePlan:
    """B x B tiles fixed by the pattern's block size; errors name the numbers."""
    smem, regs = check_fixed_tiles(
        f"{name} with block {block}", block, block, wl.head_dim, wl.elem_bytes, sram_bytes,
        gpu.register_bytes_per_sm // 2,
        f"half of the {gpu.register_bytes_per_sm:,}-byte register file", "a smaller --block")
    return TilePlan(block_q=block, block_k=block, smem_bytes=smem, register_bytes=regs)


def square_tile_plan(wl, gpu, sram_bytes: int, name: str, candidates=(128, 64, 32, 16)) -> TilePlan:
    """The largest B x B tile of ``candidates`` that fits SRAM and the registers."""
    for block in candidates:
        try:
            return fixed_tile_plan(wl, gpu, sram_bytes, block, name)
        except (SramOverflowError, PlanError):
            continue
    return fixed_tile_plan(wl, gpu, sram_bytes, candidates[-1], name)   # raises, with numbers


def cta_work(layout: BlockLayout) -> np.ndarray:
    """Tiles each Q-block CTA of one head visits (at least 1: the epilogue)."""
    return np.maximum(layout.tiles_per_row, 1).astype(np.float64)


def run_layout(name: str, wl, p, layout: BlockLayout, mask, inputs, rec, compute: bool) -> dict:
    """Launch the block-sparse forward over ``layout`` on ``rec``.

    Arguments:
        name: kernel name prefix (the algorithm).
        p: a plan with block_q, block_k, register_bytes matching the layout's tiles.
        mask: boolean (N_q, N_k) element mask (executed mode), None in count-only mode.
    Return: {"o", "lse"} in executed mode, {} in count-only mode.
    """
    assert (layout.block_q, layout.block_k) == (p.block_q, p.block_k)
    tr = cdiv(wl.seq_q, p.block_q)
    buffers = smem_buffers(p.block_q, p.block_k, wl.head_dim, wl.elem_bytes)
    warp_layout = mma_layout(rec.gpu, p.block_q, p.register_bytes, wl.seq_q)
    unique, working_set = l2_footprint(wl, layout, rec, sum(buffers.values()), p.register_bytes,
                                       warp_layout["threads_per_cta"])
    work = cta_work(layout)
    c = rec.kernel(f"{name}_fwd", ctas=tr * wl.batch * wl.heads, buffers=buffers, **warp_layout,
                   register_bytes_per_cta=p.register_bytes,
                   tc_path="mma_sync", overlap="serial", cta_work=work,
                   **step_latency.chain(step_latency.forward_step(p.block_k), work,
                                        wl.batch * wl.heads),
                   prologue_bytes_per_cta=first_q_bytes(buffers["Q_i"], p.block_q, wl.seq_q)
                   + buffers["K_j"],
                   epilogue_elements_per_cta=p.block_q * wl.head_dim,      # O_i
                   **p_in_registers(wl.head_dim, wl.elem_bytes),
                   matmul_dtype=wl.dtype, unique_hbm_bytes=unique,
                   l2_working_set_bytes=working_set)
    o, lse = new_output(wl, compute), new_stats(wl, compute)
    mask = mask if compute else np.empty((0, 0), dtype=np.bool_)
    def head(c, b, h, q, k, v):
        sparse_forward_head(c, q, k, v, head_view(o, b, h, compute),
                            head_view(lse, b, h, compute), mask, layout.row_ptr, layout.cols,
                            layout.partial, wl.seq_q, wl.seq_k, wl.head_dim, p.block_q,
                            p.block_k, wl.scale, wl.elem_bytes, compute)
    for_each_head(wl, inputs, compute, c, head)
    return {"o": o, "lse": lse} if compute else {}


def _distinct_kv_bytes(layout: BlockLayout, seq_k: int, d: int, e: int, i0: int, i1: int) -> int:
    """K and V bytes of the distinct key blocks that Q blocks [i0, i1) visit."""
    cols = np.unique(layout.cols[layout.row_ptr[i0]:layout.row_ptr[i1]])
    widths = np.minimum((cols + 1) * layout.block_k, seq_k) - cols * layout.block_k
    return int(2 * d * e * widths.sum())


def l2_footprint(wl, layout: BlockLayout, rec, smem: int, regs: int,
                 threads: int) -> tuple[int, int]:
    """(DRAM bytes when L2 works as modelled, the L2 working set that requires), as
    ``algorithms.flash2.l2_footprint`` for the tiles of the layout: Q, the layout and O, lse
    once; if the distinct K/V tiles of the heads in flight fit in half of L2, each comes from
    DRAM once per K/V head; otherwise each distinct tile of a wave of a head's CTAs (the CTAs
    resident together) once per wave, with only the tiles in flight as working set: flash2's
    lockstep assumption (the CTAs stream their tiles in ascending key order). It holds for
    windows, whose neighbouring rows share shifted tiles; for random blocks it is optimistic."""
    d, e, heads = wl.head_dim, wl.elem_bytes, wl.batch * wl.heads
    tr = len(layout.row_ptr) - 1
    fixed = heads * (2 * wl.seq_q * d * e + STAT_BYTES * wl.seq_q + LAYOUT_ROW_BYTES * tr
                     + LAYOUT_COL_BYTES * layout.nnz)
    per_head = _distinct_kv_bytes(layout, wl.seq_k, d, e, 0, tr)
    in_flight = heads_in_flight(rec, tr, heads, smem, regs, threads)
    if in_flight * per_head <= rec.gpu.l2_bytes // 2:
        return fixed + wl.batch * wl.kv_heads * per_head, in_flight * per_head
    resident = rec.resident_ctas(tr * heads, smem, regs, threads)
    waves = [_distinct_kv_bytes(layout, wl.seq_k, d, e, i, min(i + resident, tr))
             for i in range(0, tr, resident)]
    return fixed + heads * sum(waves), resident * 2 * layout.block_k * d * e


@compiled(nogil=True)
def sparse_forward_head(c, q, k, v, o, lse, mask, row_ptr, cols, partial, seq_q, seq_k, d,
                        block_q, block_k, scale, e, compute):
    """One head: Q block i (one CTA) visits only the tiles of its layout row; the element
    mask is applied on partial tiles only (``flash_tile.attend_tile``)."""
    for i in range(row_ptr.shape[0] - 1):
        r0 = i * block_q
        r1 = min(r0 + block_q, seq_q)
        rows = r1 - r0
        count_load(c, LAYOUT_ROW_BYTES)                          # this CTA's layout row bounds
        qi = load_rows(c, q, r0, r1, d, e)                       # Q_i -> SRAM, stays there
        m, l, acc = new_row_state(rows, d, compute)
        for t in range(row_ptr[i], row_ptr[i + 1]):
            count_load(c, LAYOUT_COL_BYTES)                      # K-block index of tile t
            c0 = cols[t] * block_k
            if not compute:                                      # same counts, no arrays
                count_tile(c, rows, min(c0 + block_k, seq_k) - c0, d, e, partial[t], False)
                continue
            attend_tile(c, qi, k, v, acc, m, l, r0, rows, c0, min(c0 + block_k, seq_k), d,
                        scale, False, seq_q, seq_k, e, compute, mask, partial[t], False, 0,
                        0, 0, NO_DROPOUT_SCALE)
        # -- epilogue: O_i = acc / l, lse_i = m + log l (rows that saw no key: 0, -inf) --
        oi, lse_i = finish_rows(c, acc, m, l, rows, d, compute)
        store_rows(c, o, r0, oi, rows, d, e, compute)            # O_i -> HBM
        store_vector(c, lse, r0, lse_i, rows, STAT_BYTES, compute)


def sparse_io_bound(wl, block_q: int, block_density: float) -> float:
    """Proposition 4's leading term in bytes: (N_q d + s N_q N_k d / B_r) e, all heads."""
    per_head = wl.seq_q * wl.head_dim + block_density * wl.seq_q * wl.seq_k * wl.head_dim / block_q
    return float(per_head * wl.elem_bytes * wl.batch * wl.heads)


def record_pattern(rec, layout: BlockLayout, mask, compute: bool, **params) -> None:
    """Publish the pattern on the result: parameters, density actually used, the mask."""
    rec.info["pattern"] = {**params, "block_q": layout.block_q, "block_k": layout.block_k,
                           **layout.summary()}
    if compute:
        rec.info["mask"] = mask


# ---- helpers of the pattern modules ---------------------------------------------------------

def flash2_tile_plan(wl, gpu, sram_bytes: int) -> dict:
    """FlashAttention-2's tile choice (largest B_r, B_c that fit M and the registers)."""
    from algorithms import flash2
    fp = flash2.plan(wl, gpu, sram_bytes)
    return {"block_q": fp.block_q, "block_k": fp.block_k, "smem_bytes": fp.smem_bytes,
            "register_bytes": fp.register_bytes}


def run_pattern(module, wl, p, inputs, rec, compute: bool) -> dict:
    """The shared ``run`` of the pattern modules: the module's layout, its element mask in
    executed mode, the pattern published on ``rec.info``, the kernel over the layout."""
    layout = module.layout(wl, p)
    mask = module.element_mask(wl, p) if compute else None
    record_pattern(rec, layout, mask, compute, name=module.INFO.name, **module.pattern_params(p))
    return run_layout(module.INFO.name, wl, p, layout, mask, inputs, rec, compute)


def pattern_footprint(module, wl, p, extra=()):
    """HBM allocations of a pattern module's run: Q, K, V, O and the fp32 lse — Θ(N d) —
    plus ``extra``, the pattern's own tables (``extra(kernel)`` -> allocations).

    The CSR tile list this executor reads is not a tensor of the patterns' own kernels:
    windows, strides, global tokens and causal skips are index arithmetic (flash-attn's
    window, the Sparse Transformer's and Longformer's kernels); the simulator charges its
    reads only to give every pattern one cost model. Patterns whose layout is data declare
    it: block_sparse's block list, BigBird's random-block table."""
    kernel = f"{module.INFO.name}_fwd"
    return footprints.single_kernel(wl, kernel, extra=list(extra(kernel)) if extra else [])


def keys_io_bound(wl, block_q: int, keys_per_q_block: float, extra_keys: float = 0.0) -> float:
    """(N_q d + T_r K d + X d) e, all heads: the leading term when each Q block touches about
    K = ``keys_per_q_block`` keys (capped at N_k), plus X = ``extra_keys`` key rows per head."""
    tr = wl.seq_q / block_q
    keys = tr * min(wl.seq_k, keys_per_q_block) + extra_keys
    per_head = (wl.seq_q + keys) * wl.head_dim
    return float(per_head * wl.elem_bytes * wl.batch * wl.heads)


def positive_int(what: str):
    """An Option validator: a message unless the value is an integer >= 1."""
    def check(value):
        return None if value >= 1 else f"must be a positive integer ({what}), got {value}"
    return check
