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
Differences from the paper: its kernels reorder the sequence so that A2 becomes contiguous
blocks; this kernel keeps the natural order and visits the tiles A2 touches, so small
strides waste most of each tile (the report shows it). Heads are not split between A1
and A2 (the "merged" variant only).
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import numpy as np

from algorithms.base import AlgorithmInfo, Option, PlanError
from algorithms.kernels.block_sparse_exec import (TilePlan, flash2_tile_plan, keys_io_bound,
                                          positive_int, run_pattern, pattern_footprint)
from algorithms.kernels.sparse_patterns import FIXED, STRIDED, element_layout
from algorithms.kernels.sparse_patterns import element_mask as pattern_mask

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
        Option("summary", int, DEFAULT_SUMMARY,
               "fixed pattern: c, the summary keys at the end of each block of l",
               validate=positive_int("summary keys per block")),
    ),
    count_only="exact: tiles from interval/residue arithmetic, no N² mask",
)


@dataclass(frozen=True)
class SparseTransformerPlan(TilePlan):
    stride: int
    pattern: str
    summary: int


def default_stride(seq_k: int) -> int:
    return max(1, round(math.sqrt(seq_k)))


def plan(wl, gpu, sram_bytes: int, stride: int | None = None, pattern: str = "strided",
         summary: int = DEFAULT_SUMMARY) -> SparseTransformerPlan:
    stride = default_stride(wl.seq_k) if stride is None else stride
    if pattern == "fixed" and summary > stride:
        raise PlanError(f"sparse_transformer: --summary {summary} exceeds the block (--stride "
                        f"{stride}); the fixed pattern keeps c <= l summary keys per block of l")
    return SparseTransformerPlan(**flash2_tile_plan(wl, gpu, sram_bytes), stride=stride,
                                 pattern=pattern, summary=summary)


def pattern_params(p: SparseTransformerPlan) -> dict:
    params = {"pattern": p.pattern, "stride": p.stride}
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
    return run_pattern(sys.modules[__name__], wl, p, inputs, rec, compute)


def io_bound(wl, p: SparseTransformerPlan, sram_bytes: int) -> float:
    """(N_q d + T_r K d) e with K the keys one row of tiles loads (see the docstring);
    causal keeps one side of A1 and, on average, half of A2."""
    l, br, bc = p.stride, p.block_q, p.block_k
    half = 0.5 if wl.causal else 1.0
    if p.pattern == "strided":
        keys = (1 if wl.causal else 2) * l + br + bc + half * wl.seq_k / l * min(l, br + bc)
    else:
        keys = l + br + bc + half * wl.seq_k / l * min(l, p.summary + bc)
    return keys_io_bound(wl, br, keys)


def footprint(wl, p):
    """Q, K, V, O and lse; the pattern is index arithmetic
    (``block_sparse_exec.pattern_footprint``)."""
    return pattern_footprint(sys.modules[__name__], wl, p)
