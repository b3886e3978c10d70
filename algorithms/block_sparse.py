"""Block-sparse FlashAttention — Dao et al., "FlashAttention: Fast and Memory-Efficient Exact
Attention with IO-Awareness" (2022, arXiv 2205.14135), §3.3 and Proposition 4, with the
FlashAttention-2 forward (arXiv 2307.08691) as the dense kernel it sparsifies.

Idea: given a block mask over B x B tiles, skip the zero tiles entirely; IO and FLOPs scale
with the fraction s of non-zero tiles.

Pattern: either a random block mask — each of the T_r query blocks keeps
k = max(1, round(s T_c)) of the T_c key blocks, uniformly without replacement from
``np.random.default_rng(seed)`` (block density exactly k / T_c, linear in s) — or a boolean
(T_r, T_c) block mask loaded from ``--mask-file`` (.npy), which then overrides --density and
--seed. ``causal`` intersects the mask with the causal mask (tiles above the diagonal
dropped, diagonal tiles masked elementwise).

Notation -> code: s == ``density`` (--density), B == ``block`` (--block; B_r = B_c = B;
default the largest of 128, 64, 32, 16 that fits SRAM and the register budget of FA-2's plan),
``seed`` (--seed), ``mask_file`` (--mask-file).
HBM traffic: the block-sparse executor's (``algorithms.kernels.block_sparse_exec``):
    reads = N_q d e + Σ_tiles 2 c_t d e + 8 T_r + 4 nnz, writes = N_q d e + 4 N_q.
IO bound (Proposition 4): Θ(N d + N² d² M⁻¹ s) = Θ(N d + s N² d / B) with B ∝ M/d.
FLOPs: 4 B² d per tile, s times FA-2's.
Differences from the paper: the paper's kernel is FlashAttention-1's loop order (K/V blocks
outer); here FA-2's (Q blocks outer, one CTA each), which reads Q once instead of O, ℓ, m
per tile — the same Θ bound.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import numpy as np

from algorithms.base import AlgorithmInfo, Option, PlanError
from algorithms.kernels.block_sparse_exec import (TilePlan, fixed_tile_plan, positive_int,
                                          pattern_footprint, run_pattern, sparse_io_bound,
                                          square_tile_plan)
from algorithms.kernels.common import cdiv
from algorithms.kernels.footprints import INDEX_BYTES
from algorithms.kernels.sparse_patterns import (block_layout, block_mask_to_csr, layout_element_mask,
                                        random_block_csr)
from hwmodels.footprint import Allocation

DEFAULT_DENSITY = 0.25


def _density_in_range(s):
    return None if 0.0 < s <= 1.0 else f"must be in (0, 1] (fraction of non-zero blocks), got {s}"


INFO = AlgorithmInfo(
    name="block_sparse",
    title="Block-sparse FlashAttention (FA-2 forward over a block mask)",
    paper="Dao et al., 2022 (arXiv 2205.14135), Proposition 4",
    exact=True,
    io_bound="Θ(Nd + N²d²M⁻¹s)",
    options=(
        Option("density", float, DEFAULT_DENSITY, "fraction s of non-zero blocks (random mask)",
               validate=_density_in_range),
        Option("block", int, None, "block size B (B_r = B_c = B; default: the largest of "
               "128, 64, 32, 16 that fits SRAM and registers)",
               validate=positive_int("tokens per block")),
        Option("seed", int, 0, "seed of the random block mask"),
        Option("mask_file", str, None, "boolean (T_r, T_c) block mask as .npy (overrides "
               "--density and --seed)"),
    ),
    count_only="exact: the block layout is built from the block mask, no N² mask",
)


@dataclass(frozen=True)
class BlockSparsePlan(TilePlan):
    density: float          # requested s (random mask) or the file's block density
    blocks_per_row: int     # k for the random mask (0 with a mask file)
    seed: int
    mask_file: str | None


def load_block_mask(path: str, tq: int, tk: int, block: int) -> np.ndarray:
    """The boolean block mask in ``path``, checked against the (T_r, T_c) tiling."""
    if not os.path.isfile(path):
        raise PlanError(f"block_sparse: --mask-file {path!r} does not exist")
    try:
        mask = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise PlanError(f"block_sparse: --mask-file {path!r} is not a .npy array ({err})") from None
    if not isinstance(mask, np.ndarray):     # a .npz archive loads as a dict of arrays
        mask.close()
        raise PlanError(f"block_sparse: --mask-file {path!r} is a .npz archive; save the "
                        f"(T_r, T_c) mask alone with numpy.save (.npy)")
    if mask.shape != (tq, tk):
        raise PlanError(f"block_sparse: --mask-file holds a {mask.shape} mask but --block "
                        f"{block} tiles this workload into ({tq}, {tk}) blocks (T_r, T_c)")
    if mask.dtype != np.bool_:
        if not np.issubdtype(mask.dtype, np.integer) or not np.isin(mask, (0, 1)).all():
            raise PlanError(f"block_sparse: --mask-file must hold booleans (or 0/1), got "
                            f"dtype {mask.dtype}")
        mask = mask.astype(bool)
    if not mask.any():
        raise PlanError("block_sparse: --mask-file has no non-zero block")
    return mask


def plan(wl, gpu, sram_bytes: int, density: float = DEFAULT_DENSITY, block: int | None = None,
         seed: int = 0, mask_file: str | None = None) -> BlockSparsePlan:
    if block is None:
        tiles = square_tile_plan(wl, gpu, sram_bytes, "block_sparse")
    else:
        tiles = fixed_tile_plan(wl, gpu, sram_bytes, block, "block_sparse")
    block = tiles.block_q
    tq, tk = cdiv(wl.seq_q, block), cdiv(wl.seq_k, block)
    per_row = 0
    if mask_file:
        density = float(load_block_mask(mask_file, tq, tk, block).mean())
    else:
        per_row = max(1, round(density * tk))
    return BlockSparsePlan(**tiles.to_dict(), density=density, blocks_per_row=per_row,
                           seed=seed, mask_file=mask_file)


def layout(wl, p: BlockSparsePlan):
    tq, tk = cdiv(wl.seq_q, p.block_q), cdiv(wl.seq_k, p.block_k)
    if p.mask_file:
        row_ptr, cols = block_mask_to_csr(load_block_mask(p.mask_file, tq, tk, p.block_q))
    else:
        row_ptr, cols = random_block_csr(tq, tk, p.blocks_per_row, p.seed)
    return block_layout(row_ptr, cols, wl.causal, wl.seq_q, wl.seq_k, p.block_q)


def pattern_params(p) -> dict:
    return {"block": p.block_q, "requested_density": p.density, "seed": p.seed,
            "mask_file": p.mask_file}


def element_mask(wl, p) -> np.ndarray:
    """Boolean (N_q, N_k) mask: the visited tiles expanded, causal included (executed mode)."""
    return layout_element_mask(layout(wl, p), wl.causal)


def run(wl, p, inputs, rec, compute: bool) -> dict:
    return run_pattern(sys.modules[__name__], wl, p, inputs, rec, compute)


def io_bound(wl, p: BlockSparsePlan, sram_bytes: int) -> float:
    """Proposition 4: (N_q d + s N_q N_k d / B) e with s the mask's block density."""
    tk = cdiv(wl.seq_k, p.block_k)
    s = p.blocks_per_row / tk if not p.mask_file else p.density
    return sparse_io_bound(wl, p.block_q, s)


def footprint(wl, p):
    """Q, K, V, O, lse and the block list the kernel is given: CSR row pointers (T_r + 1) and
    one int32 column per kept block (T_r k for the random mask, the mask file's non-zero
    blocks); causal skipping of the blocks above the diagonal is index arithmetic."""
    tq = cdiv(wl.seq_q, p.block_q)
    if p.mask_file:
        kept = int(load_block_mask(p.mask_file, tq, cdiv(wl.seq_k, p.block_k), p.block_q).sum())
    else:
        kept = tq * p.blocks_per_row
    return pattern_footprint(sys.modules[__name__], wl, p, lambda kernel: [
        Allocation("block_list", INDEX_BYTES * (tq + 1 + kept), kernel, kernel, "input")])
