"""Sparse Transformer factorized attention — Child, Gray, Radford, Sutskever, "Generating Long
Sequences with Sparse Transformers" (2019, arXiv 1904.10509), §4.2 (strided and fixed
patterns), run as one block-sparse FlashAttention-2 pass over the union of the two heads'
patterns (the paper's "merged" variant, §4.3, attend(X, S) with S = A(1) ∪ A(2)).

Idea: with stride l ≈ √N each query attends its last l keys (A1) plus every l-th key (A2), so
every pair is connected in two hops while each row keeps O(l + N/l) = O(√N) keys.

Pattern (query at key position p = i + N_k - N_q; ``causal`` keeps j <= p, which gives the
paper's autoregressive sets exactly):
    strided:  A1 = {j : |p - j| <= l}            (paper: {max(0, p - l), ..., p})
              A2 = {j : (p - j) mod l == 0}
    fixed:    A1 = {j : ⌊j / l⌋ == ⌊p / l⌋}       (the query's own block of l)
              A2 = {j : j mod l >= l - c}         (the last c "summary" keys of every block)
The non-causal sets extend A1 symmetrically (strided) or keep whole blocks (fixed).

Notation -> code: l == ``stride`` (--stride; default round(√N_k)), c == ``summary``
(--summary; Child et al. §4.2 find c ∈ {8, 16, 32} works for l ∈ {128, 256}), pattern ==
``pattern`` (--pattern strided|fixed).
HBM traffic: the block-sparse executor's (``algorithms.kernels.block_sparse_exec``). A Q block of
B_r consecutive queries hits each period of l keys in about min(l, B_r + B_c) columns of A2
(strided; min(l, c + B_c) for fixed), so a row of tiles loads about
    K ≈ min(N_k, 2l + B_r + B_c + (N_k / l) min(l, B_r + B_c))   keys
(causal: l instead of 2l, and half of the A2 term).
IO bound: Θ(N d + N d (l / B_r + N / l)) = Θ(N^1.5 d) at l = √N (while l >= B; with
l < B_c every tile holds an A2 key and the pattern visits all tiles, as dense FA-2).
FLOPs: 4 d per attended pair rounded out to tiles: Θ(N √N d).
Layouts (``--layout``): ``dense`` (default) keeps the natural order and visits the tiles A2
touches, so strides below B_c waste most of each tile: the strided pattern visits every
tile up to N = 16K (its work follows N² there) and the fixed pattern at l = 128 as many as
dense attention. ``blocked`` is the paper's kernel layout (§5: a strided head "can be
computed by transposing the matrix and computing a local window"): A1 runs as a sliding
window in natural order, A2 (minus A1's keys) on queries and keys reordered by residue mod
l, where it is l dense diagonal blocks, merged by log-sum-exp; for the fixed pattern A1 is
the own block and the summary keys are gathered into one contiguous run ("fixed attention
positions can be aggregated and computed in blocks").
``algorithms.kernels.sparse_blocked`` states the kernels and their traffic. Strided work
follows N √N: A1 Θ(N l d), A2 Θ(N² d / l); fixed Θ(N l d + N² c d / l).
Differences from the paper: heads are not split between A1 and A2 (the "merged" variant
only; the blocked layout runs the merged set as two kernels, the second merging its rows
into the first's output in its epilogue).
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import numpy as np

from algorithms.base import AlgorithmInfo, Option, PlanError
from algorithms.kernels import step_latency
from algorithms.flash2 import smem_buffers
from algorithms.kernels import sparse_blocked as sb
from algorithms.kernels.flash_tile import p_in_registers
from algorithms.kernels.block_sparse_exec import (TilePlan, flash2_tile_plan, keys_io_bound,
                                          pattern_footprint, positive_int, run_layout,
                                          run_pattern)
from algorithms.kernels.common import finish_heads, first_q_bytes, for_each_head, mma_layout
from algorithms.kernels import footprints as fp
from algorithms.kernels.sparse_patterns import (FIXED, LOCAL, STRIDED, attended_pairs,
                                                element_layout)
from algorithms.kernels.sparse_patterns import element_mask as pattern_mask

LAYOUTS = ("dense", "blocked")
DEFAULT_SUMMARY = 8      # c: Child et al. 2019, §4.2: c ∈ {8, 16, 32} (the smallest)

INFO = AlgorithmInfo(
    name="sparse_transformer",
    title="Sparse Transformer strided/fixed attention (block-sparse FlashAttention-2)",
    paper="Child et al., 2019 (arXiv 1904.10509)",
    exact=True,
    io_bound="Θ(Nd + Nd(l/B + N/l)) = Θ(N^1.5 d) at l = √N",
    options=(
        Option("stride", int, None, "stride l (default round(√N_k))",
               validate=positive_int("the stride l")),
        Option("pattern", str, "strided", "factorized pattern", choices=("strided", "fixed")),
        Option("summary", int, None,
               f"fixed pattern: c, the summary keys at the end of each block of l (default "
               f"{DEFAULT_SUMMARY})",
               validate=positive_int("summary keys per block")),
        Option("layout", str, "dense", "dense: natural order, the tiles the pattern touches; "
               "blocked: the paper's layout, A2 made contiguous (strided: keys reordered by "
               "residue; fixed: summary keys gathered)", choices=LAYOUTS),
    ),
    count_only="exact: tiles from interval/residue arithmetic, no N² mask",
)


@dataclass(frozen=True)
class SparseTransformerPlan(TilePlan):
    stride: int
    pattern: str
    summary: int
    layout: str = "dense"


def default_stride(seq_k: int) -> int:
    return max(1, round(math.sqrt(seq_k)))


def plan(wl, gpu, sram_bytes: int, stride: int | None = None, pattern: str = "strided",
         summary: int | None = None, layout: str = "dense") -> SparseTransformerPlan:
    stride = default_stride(wl.seq_k) if stride is None else stride
    if summary is not None and pattern != "fixed":
        raise PlanError(f"sparse_transformer: --summary applies to --pattern fixed (the "
                        f"{pattern} pattern has no summary keys); add --pattern fixed or drop "
                        f"--summary")
    summary = DEFAULT_SUMMARY if summary is None else summary
    if pattern == "fixed" and summary > stride:
        raise PlanError(f"sparse_transformer: --summary {summary} exceeds the block (--stride "
                        f"{stride}); the fixed pattern keeps c <= l summary keys per block of l")
    return SparseTransformerPlan(**flash2_tile_plan(wl, gpu, sram_bytes), stride=stride,
                                 pattern=pattern, summary=summary, layout=layout)


def pattern_params(p: SparseTransformerPlan) -> dict:
    params = {"pattern": p.pattern, "stride": p.stride}
    if p.layout != "dense":
        params["layout"] = p.layout
    return params if p.pattern == "strided" else {**params, "summary": p.summary}


def _kind(p: SparseTransformerPlan):
    if p.pattern == "strided":
        return STRIDED, np.array([p.stride])
    return FIXED, np.array([p.stride, p.summary])


def layout(wl, p: SparseTransformerPlan):
    kind, prm = _kind(p)
    return element_layout(kind, prm, wl.causal, wl.seq_q, wl.seq_k, p.block_q, p.block_k)


def element_mask(wl, p: SparseTransformerPlan) -> np.ndarray:
    """Boolean (N_q, N_k) mask, causal included (executed mode)."""
    kind, prm = _kind(p)
    return pattern_mask(kind, prm, wl.causal, wl.seq_q, wl.seq_k)


def run(wl, p: SparseTransformerPlan, inputs, rec, compute: bool) -> dict:
    if p.layout == "blocked":
        return run_blocked(wl, p, inputs, rec, compute)
    return run_pattern(sys.modules[__name__], wl, p, inputs, rec, compute)


def run_blocked(wl, p: SparseTransformerPlan, inputs, rec, compute: bool) -> dict:
    """The blocked layout: A1 in natural order, then A2 minus A1 in the blocked order (keys
    by residue for strided, the summary keys gathered for fixed) merged into its output
    (``algorithms.kernels.sparse_blocked``)."""
    local_kind, local_prm = _local_part(wl, p)
    local = element_layout(local_kind, local_prm, wl.causal, wl.seq_q, wl.seq_k, p.block_q,
                           p.block_k)
    order_q, order_k, tiles = _blocked_part(wl, p)
    q_lo = tiles[0]
    _record_blocked(wl, p, rec, local, tiles, element_mask(wl, p) if compute else None,
                    compute)
    local_mask = (pattern_mask(local_kind, local_prm, wl.causal, wl.seq_q, wl.seq_k)
                  if compute else None)
    out = run_layout(f"{INFO.name}_local", wl, p, local, local_mask, inputs, rec, compute)
    if len(q_lo) == 0:
        return out                                          # no key of A2 outside A1
    d, e = wl.head_dim, wl.elem_bytes
    buffers = smem_buffers(p.block_q, p.block_k, d, e)
    layout = mma_layout(rec.gpu, p.block_q, p.register_bytes)   # as the natural-order part
    # each CTA computes its whole B_r rows, the last block's past N_q included
    counted = int(np.minimum(p.block_q, wl.seq_q - np.asarray(q_lo)).sum())
    layout["row_padding"] = len(q_lo) * p.block_q / counted
    unique, working_set = sb.l2_footprint(wl, tiles, rec, sum(buffers.values()),
                                          p.register_bytes, layout["threads_per_cta"])
    work = np.maximum(np.diff(tiles[2]), 1).astype(np.float64)
    c = rec.kernel(f"{INFO.name}_blocked_fwd", ctas=len(q_lo) * wl.batch * wl.heads,
                   buffers=buffers, **layout, register_bytes_per_cta=p.register_bytes,
                   tc_path="mma_sync", overlap="serial", cta_work=work,
                   **step_latency.chain(step_latency.forward_step(p.block_k), work,
                                        wl.batch * wl.heads),
                   prologue_bytes_per_cta=first_q_bytes(buffers["Q_i"], p.block_q, wl.seq_q)
                   + buffers["K_j"],
                   epilogue_elements_per_cta=p.block_q * d,                # O_i
                   **p_in_registers(d, e),
                   matmul_dtype=wl.dtype, unique_hbm_bytes=unique,
                   l2_working_set_bytes=working_set)
    if not compute:
        none = np.empty((0, d), dtype=np.float32)
        sb.blocked_forward_head(c, none, none, none, none, np.empty(0, np.float32),
                                np.empty((0, 0), np.bool_), *tiles, d, wl.scale, e, compute)
        finish_heads(c, wl, compute)
        return out
    if p.pattern == "strided":
        mask2 = sb.strided_mask(p.stride, wl.causal, wl.seq_q, wl.seq_k, order_q, order_k)
    else:
        mask2 = sb.fixed_mask(p.stride, wl.causal, wl.seq_q, wl.seq_k, order_k)

    def head(c, b, h, q, k, v):
        o_h, lse_h = out["o"][b, h], out["lse"][b, h]
        o_p, lse_p = np.ascontiguousarray(o_h[order_q]), np.ascontiguousarray(lse_h[order_q])
        sb.blocked_forward_head(c, np.ascontiguousarray(q[order_q]),
                                np.ascontiguousarray(k[order_k]),
                                np.ascontiguousarray(v[order_k]), o_p, lse_p, mask2, *tiles,
                                d, wl.scale, e, compute)
        o_h[order_q], lse_h[order_q] = o_p, lse_p           # rows back in natural order
    for_each_head(wl, inputs, compute, c, head)
    return out


def has_second_set(wl, p) -> bool:
    """Whether A2 minus A1 holds any pair, i.e. the blocked kernel launches; O(1) (the
    footprint asks it at any N). Query positions run over [lo, hi] = [N_k - N_q, N_k - 1].
    Strided: a key of the query's residue at least 2l before it (causal), or 2l before or
    after it; fixed: a summary key in an earlier block (causal), or in another block."""
    lo, hi, l = wl.seq_k - wl.seq_q, wl.seq_k - 1, p.stride
    if p.pattern == "strided":
        return hi >= 2 * l or (not wl.causal and 0 <= lo + 2 * l <= wl.seq_k - 1)
    blocks = (wl.seq_k - (l - p.summary)) // l + 1 if wl.seq_k > l - p.summary else 0
    if wl.causal:
        return hi >= l and blocks >= 1                   # block 0 has summary keys
    return blocks >= 2 or (blocks == 1 and hi >= l)


def _local_part(wl, p):
    """A1 as an element pattern: strided, a window of the last (and next) l keys; fixed,
    the query's own block (the fixed pattern with no summary keys)."""
    if p.pattern == "strided":
        return LOCAL, np.array([sb.strided_local_window(p.stride, wl.causal)])
    return FIXED, np.array([p.stride, 0])


def _blocked_part(wl, p):
    """(query order, key order, tiles) of the blocked kernel."""
    if p.pattern == "strided":
        order_q = sb.residue_order(np.arange(wl.seq_q) + wl.seq_k - wl.seq_q, p.stride)
        order_k = sb.residue_order(np.arange(wl.seq_k), p.stride)
        tiles = sb.strided_layout(p.stride, wl.causal, wl.seq_q, wl.seq_k, p.block_q,
                                  p.block_k)
    else:
        order_q = np.arange(wl.seq_q)
        order_k = sb.summary_positions(p.stride, p.summary, wl.seq_k)
        tiles = sb.fixed_layout(p.stride, p.summary, wl.causal, wl.seq_q, wl.seq_k, p.block_q,
                                p.block_k)
    return order_q, order_k, tiles


def _record_blocked(wl, p, rec, local, tiles, mask, compute) -> None:
    """The pattern on the result: the union's density, and the tiles of both kernels."""
    _, _, row_ptr, k_lo, _, partial = tiles
    kind, prm = _kind(p)
    pairs = int(attended_pairs(kind, prm, wl.causal, wl.seq_q, wl.seq_k))
    dense_tiles = -(-wl.seq_q // p.block_q) * -(-wl.seq_k // p.block_k)
    visited = local.nnz + len(k_lo)
    rec.info["pattern"] = {
        "name": INFO.name, **pattern_params(p), "block_q": p.block_q, "block_k": p.block_k,
        "density": pairs / (wl.seq_q * wl.seq_k), "block_density": visited / dense_tiles,
        "blocks_visited": visited, "partial_blocks": local.n_partial + int(partial.sum()),
        "attended_pairs": pairs, "local_blocks": local.nnz, "blocked_blocks": len(k_lo)}
    if compute:
        rec.info["mask"] = mask


def io_bound(wl, p: SparseTransformerPlan, sram_bytes: int) -> float:
    """(N_q d + T_r K d) e with K the keys one row of tiles loads (see the docstring);
    causal keeps one side of A1 and, on average, half of A2. Blocked: each Q tile of a
    residue run loads the run's N/l keys instead of min(l, B_r + B_c) per period."""
    l, br, bc = p.stride, p.block_q, p.block_k
    half = 0.5 if wl.causal else 1.0
    if p.layout == "blocked" and p.pattern == "strided":
        keys = (1 if wl.causal else 2) * l + br + bc + half * wl.seq_k / l
        return keys_io_bound(wl, br, keys)
    if p.layout == "blocked":
        return keys_io_bound(wl, br, l + br + bc + half * wl.seq_k * p.summary / l)
    if p.pattern == "strided":
        keys = (1 if wl.causal else 2) * l + br + bc + half * wl.seq_k / l * min(l, br + bc)
    else:
        keys = l + br + bc + half * wl.seq_k / l * min(l, p.summary + bc)
    return keys_io_bound(wl, br, keys)


def footprint(wl, p):
    """Q, K, V, O and lse; the pattern is index arithmetic
    (``block_sparse_exec.pattern_footprint``). Blocked layout: the same tensors over its two
    kernels (the second gathers rows by index and merges into O, lse in place); without a
    second-set tile (tiny N) only the first runs."""
    if p.layout != "blocked":
        return pattern_footprint(sys.modules[__name__], wl, p)
    first = f"{INFO.name}_local_fwd"
    last = f"{INFO.name}_blocked_fwd" if has_second_set(wl, p) else first
    phases = (first,) if last == first else (first, last)
    return fp.Footprint(phases, fp.inputs(wl, first, last) + fp.output(wl, first, last))
