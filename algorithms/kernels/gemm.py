"""A tiled GEMM through the counted primitives, as cuBLAS-style kernels move data.

Bound: Θ(m k n (1/tile_m + 1/tile_n)) bytes read and Θ(m n) written.

C (m x n) = alpha · op(A) (m x k) · op(B) (k x n). One CTA per (tile_m x tile_n) output
tile; it streams k in chunks of tile_k, loading an A panel chunk (tile_m x tile_k) and a B
panel chunk (tile_k x tile_n) into SRAM for each, and writes its C tile once.

HBM traffic (bytes): reads = (T_n · m · k + T_m · k · n) · e_in, writes = m · n · e_out,
with T_m = ceil(m / tile_m), T_n = ceil(n / tile_n); FLOPs 2 m n k (+ m n for alpha ≠ 1).
Used by standard attention (S = QKᵀ, O = PV) and its backward.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from algorithms.base import PlanError
from hwmodels.compiled import compiled
from hwmodels.counters import MATMUL_FLOPS, SRAM_READ_BYTES
from hwmodels.primitives import count_load, count_matmul, count_other, count_store_result

TILE_CANDIDATES = (128, 64, 32, 16)
TILE_K = 32


@dataclass(frozen=True)
class GemmTiles:
    tile_m: int
    tile_n: int
    tile_k: int

    def smem_buffers(self, e: int) -> dict[str, int]:
        return {"A_tile": self.tile_m * self.tile_k * e, "B_tile": self.tile_k * self.tile_n * e}

    def register_bytes(self) -> int:
        return 4 * self.tile_m * self.tile_n    # fp32 accumulator


def plan_gemm(e: int, sram_bytes: int, register_budget: int) -> GemmTiles:
    """Largest square output tile whose A/B chunks fit SRAM and accumulator fits registers."""
    for t in TILE_CANDIDATES:
        tiles = GemmTiles(t, t, TILE_K)
        if sum(tiles.smem_buffers(e).values()) <= sram_bytes and tiles.register_bytes() <= register_budget:
            return tiles
    smallest = GemmTiles(16, 16, TILE_K)
    smem = sum(smallest.smem_buffers(e).values())
    if smem <= sram_bytes:
        # the SRAM fits: the registers refuse it (a GPU file's small register file); naming
        # the SRAM here printed "need 2,048 bytes ... but the budget is 232,448"
        raise PlanError(f"no GEMM tile fits: even a 16x16 tile's fp32 accumulator needs "
                        f"{smallest.register_bytes():,} bytes of registers but a CTA may hold "
                        f"{register_budget:,}; use a GPU with more registers "
                        f"(register_bytes_per_sm)")
    raise PlanError(f"no GEMM tile fits: even 16x16 tiles with k-chunks of {TILE_K} need "
                    f"{smem:,} bytes of SRAM but the budget is {sram_bytes:,}")


def gemm_tc_path(gpu) -> str:
    """cuBLAS runs its GEMMs on Hopper's wgmma where the GPU has it, mma.sync otherwise."""
    return "wgmma" if gpu.has_wgmma else "mma_sync"


def gemm_ctas(m: int, n: int, tiles: GemmTiles) -> int:
    return -(-m // tiles.tile_m) * -(-n // tiles.tile_n)


def l2_working_set(heads_in_flight: int, resident_ctas: int, m: int, k: int, n: int,
                   tiles: GemmTiles, e: int) -> int:
    """Bytes a batched GEMM re-reads from L2 (``KernelRecord.l2_working_set_bytes``).

    The B operand (k x n) of the heads in flight is re-read by every row tile of its head,
    when there are several (m > tile_m). A CTA's A panel (tile_m x k) is re-read only when
    its rows have further column tiles (n > tile_n); when one tile spans n, each panel is
    read by one CTA, once, and streams through L2 without being any part of a re-read (P in
    O = P V at d <= tile_n: counting it would price V's re-reads, which the CTAs of a head
    make together, k-chunk by k-chunk, as DRAM traffic). When one tile spans m, B is read
    once, panel by panel, and the head's single A panel (m x k) is what every column tile
    re-reads (Qᵀ in q'ᵀ dS, a (d x N) product)."""
    row_tiles, col_tiles = -(-m // tiles.tile_m), -(-n // tiles.tile_n)
    b_rereads = heads_in_flight * k * n * e if row_tiles > 1 else 0
    if col_tiles <= 1:
        return b_rereads
    a_panels = resident_ctas * tiles.tile_m * k * e if row_tiles > 1 \
        else heads_in_flight * m * k * e
    return b_rereads + a_panels


@compiled
def gemm_counts(c, m, n, k, tile_m, tile_n, e_in, e_out, alpha):
    """What ``gemm``'s loops count, summed: every output tile loads its A row panel and its B
    column panel once (in k-chunks) and stores its C tile once."""
    tm = -(-m // tile_m)
    tn = -(-n // tile_n)
    loaded = (tn * m * k + tm * k * n) * e_in
    count_load(c, loaded)
    c[MATMUL_FLOPS] += 2 * m * n * k
    c[SRAM_READ_BYTES] += loaded                      # every loaded chunk feeds one MMA
    if alpha != 1.0:
        count_other(c, m * n)
    count_store_result(c, m * n, e_out)               # the fp32 accumulators, narrowed


@compiled
def gemm(c, a, b, out, m, n, k, tile_m, tile_n, tile_k, e_in, e_out, trans_a, trans_b,
         alpha, compute):
    """out[:m, :n] = alpha · op(a) @ op(b); op(x) = x.T when trans_x. Arrays are 2-D HBM tensors
    (zero-row placeholders in count-only mode, which counts in closed form instead of
    looping: the same sums, O(1) instead of O(T_m T_n T_k))."""
    if not compute:
        gemm_counts(c, m, n, k, tile_m, tile_n, e_in, e_out, alpha)
        return
    for i0 in range(0, m, tile_m):
        i1 = min(i0 + tile_m, m)
        for j0 in range(0, n, tile_n):
            j1 = min(j0 + tile_n, n)
            acc = np.zeros((i1 - i0, j1 - j0) if compute else (0, 0), dtype=np.float32)
            for k0 in range(0, k, tile_k):
                k1 = min(k0 + tile_k, k)
                count_load(c, (i1 - i0) * (k1 - k0) * e_in)      # A chunk -> SRAM
                count_load(c, (k1 - k0) * (j1 - j0) * e_in)      # B chunk -> SRAM
                count_matmul(c, i1 - i0, j1 - j0, k1 - k0, e_in)
                if compute:
                    at = a[k0:k1, i0:i1].T if trans_a else a[i0:i1, k0:k1]
                    bt = b[j0:j1, k0:k1].T if trans_b else b[k0:k1, j0:j1]
                    acc += np.dot(np.ascontiguousarray(at), np.ascontiguousarray(bt))
            if alpha != 1.0:
                count_other(c, (i1 - i0) * (j1 - j0))            # epilogue: alpha · acc
            count_store_result(c, (i1 - i0) * (j1 - j0), e_out)  # C tile -> HBM
            if compute:
                out[i0:i1, j0:j1] = acc * np.float32(alpha)
