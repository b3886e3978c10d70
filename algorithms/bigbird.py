"""BigBird block-sparse attention — Zaheer et al., "Big Bird: Transformers for Longer
Sequences" (2020, arXiv 2007.14062), §2 (the pattern) and its blocked ITC implementation,
run as one block-sparse FlashAttention-2 pass over its block layout.

Idea: in blocks of b tokens, each query block attends a window of blocks around itself, a
few global blocks, and r random blocks; global blocks attend everything. Each row keeps
O(w + g + r) blocks, so cost is linear in N.

Pattern (blocks of b; T = ⌈N/b⌉ blocks; requires N_q == N_k, self-attention):
    global blocks:  the first ⌈g/2⌉ and last ⌊g/2⌋ blocks (g = 2: first and last, as the
                    released ITC code); their query blocks attend every key block, and
                    every query block attends them
    window:         key blocks i - w//2 .. i + w//2 for query block i (w odd; 0 = none)
    random:         r further key blocks per non-global query block, uniform without
                    replacement among the blocks not already attended, from
                    ``np.random.default_rng(seed)`` (reproducible counts); a sequence too
                    short to leave r such blocks attends all that remain (dense rows, as
                    Hugging Face's BigBird switches to full attention on short inputs)
``causal`` then keeps keys j <= i (BigBird is an encoder pattern; causal just intersects).

Notation -> code: b == ``block`` (--block, 64), w == ``window_blocks`` (--window-blocks, 3),
g == ``global_blocks`` (--global-blocks, 2), r == ``random_blocks`` (--random-blocks, 3),
``seed`` (--seed); defaults of BigBird-ITC (block 64, 3 window, 2 global, 3 random blocks:
shared/FACTS.md; the same in the released code and Hugging Face's BigBird documentation:
block_size=64, num_random_blocks=3, "window size of 3 blocks and 2 global blocks").
The kernel tiles are b x b (B_r = B_c = b).
HBM traffic: the block-sparse executor's (``algorithms.kernels.block_sparse_exec``) with
nnz ≈ (T - g)(w + g + r) + g T tiles.
IO bound (Proposition 4): Θ(N d + s N² d / b) with s ≈ ((T-g)(w+g+r) + g T)/T², i.e.
Θ(N d (w + g + r) + g N d) — linear in N at fixed b, w, g, r. FLOPs: 4 b² d per tile.
Differences from the paper: a ragged last block is allowed (the paper requires b | N);
one random draw shared by all heads and batch entries (the released code draws per head);
random blocks are not constrained to stay outside the window's neighbourhood beyond
excluding the blocks already attended.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

from algorithms.base import AlgorithmInfo, Option, PlanError
from algorithms.kernels.block_sparse_exec import (TilePlan, fixed_tile_plan, positive_int,
                                          run_pattern, pattern_footprint, sparse_io_bound)
from algorithms.kernels.common import cdiv
from algorithms.kernels.footprints import INDEX_BYTES
from algorithms.kernels.sparse_patterns import bigbird_csr, block_layout, layout_element_mask
from hwmodels.footprint import Allocation

# BigBird-ITC defaults (shared/FACTS.md; HF BigBird docs: block_size=64,
# num_random_blocks=3, window of 3 blocks, 2 global blocks).
DEFAULT_BLOCK, DEFAULT_WINDOW, DEFAULT_GLOBAL, DEFAULT_RANDOM = 64, 3, 2, 3


def _non_negative(what):
    return lambda v: None if v >= 0 else f"must be >= 0 ({what}), got {v}"


def _odd_or_zero(v):
    if v < 0 or (v and v % 2 == 0):
        return f"must be odd (a window centred on the diagonal block) or 0, got {v}"
    return None


INFO = AlgorithmInfo(
    name="bigbird",
    title="BigBird window + global + random blocks (block-sparse FlashAttention-2)",
    paper="Zaheer et al., 2020 (arXiv 2007.14062)",
    exact=True,
    io_bound="Θ(Nd + sN²d/b), s ≈ (w+g+r)/T: Θ(N(w+g+r)d)",
    options=(
        Option("block", int, DEFAULT_BLOCK, "block size b (tokens)",
               validate=positive_int("tokens per block")),
        Option("random_blocks", int, DEFAULT_RANDOM, "random key blocks per query block",
               validate=_non_negative("random blocks")),
        Option("global_blocks", int, DEFAULT_GLOBAL, "global blocks (first and last)",
               validate=_non_negative("global blocks")),
        Option("window_blocks", int, DEFAULT_WINDOW, "window blocks around the diagonal",
               validate=_odd_or_zero),
        Option("seed", int, 0, "seed of the random blocks"),
    ),
    count_only="exact: the seeded block layout is built without an N² mask",
)


@dataclass(frozen=True)
class BigBirdPlan(TilePlan):
    window_blocks: int
    global_blocks: int
    random_blocks: int
    seed: int


def plan(wl, gpu, sram_bytes: int, block: int = DEFAULT_BLOCK,
         random_blocks: int = DEFAULT_RANDOM, global_blocks: int = DEFAULT_GLOBAL,
         window_blocks: int = DEFAULT_WINDOW, seed: int = 0) -> BigBirdPlan:
    if wl.seq_q != wl.seq_k:
        raise PlanError(f"bigbird is a self-attention pattern: it needs seq_q == seq_k, got "
                        f"{wl.seq_q} and {wl.seq_k}")
    blocks = cdiv(wl.seq_k, block)
    if global_blocks > blocks:
        raise PlanError(f"bigbird: --global-blocks {global_blocks} exceeds the {blocks} blocks "
                        f"of {block} tokens in N = {wl.seq_k}; use fewer or a smaller --block")
    tiles = fixed_tile_plan(wl, gpu, sram_bytes, block, "bigbird")
    return BigBirdPlan(**tiles.to_dict(), window_blocks=window_blocks,
                       global_blocks=global_blocks, random_blocks=random_blocks, seed=seed)


def layout(wl, p: BigBirdPlan):
    t = cdiv(wl.seq_q, p.block_q)
    row_ptr, cols = bigbird_csr(t, t, p.window_blocks, p.global_blocks, p.random_blocks, p.seed)
    return block_layout(row_ptr, cols, wl.causal, wl.seq_q, wl.seq_k, p.block_q)


def pattern_params(p) -> dict:
    return {"block": p.block_q, "window_blocks": p.window_blocks,
            "global_blocks": p.global_blocks, "random_blocks": p.random_blocks, "seed": p.seed}


def element_mask(wl, p) -> np.ndarray:
    """Boolean (N_q, N_k) mask: the visited tiles expanded, causal included (executed mode)."""
    return layout_element_mask(layout(wl, p), wl.causal)


def run(wl, p, inputs, rec, compute: bool) -> dict:
    return run_pattern(sys.modules[__name__], wl, p, inputs, rec, compute)


def io_bound(wl, p: BigBirdPlan, sram_bytes: int) -> float:
    """Proposition 4 with the pattern's nominal s = ((T-g) min(T, w+g+r) + g T) / T²."""
    t, g = cdiv(wl.seq_q, p.block_q), p.global_blocks
    per_row = min(t, p.window_blocks + g + p.random_blocks)
    s = ((t - g) * per_row + g * t) / (t * t)
    return sparse_io_bound(wl, p.block_q, s)


def footprint(wl, p):
    """Q, K, V, O, lse and the random-block table: r int32 block indices per query block, as
    the released code's ``rand_attn`` (one draw shared by all heads here)."""
    table = INDEX_BYTES * cdiv(wl.seq_q, p.block_q) * p.random_blocks
    return pattern_footprint(sys.modules[__name__], wl, p, lambda kernel: [
        Allocation("random_blocks", table, kernel, kernel, "input")])
