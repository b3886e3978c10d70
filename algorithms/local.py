"""Sliding-window (local) attention — the local band of Child et al., 2019 (arXiv 1904.10509,
§4.2) and Beltagy et al., 2020 (Longformer, arXiv 2004.05150, §3.1), as flash-attn's
``window_size`` runs it: FlashAttention-2 over the band's tiles only.

Idea: each query attends only to the w keys nearest to it, so work and traffic grow as
N·w instead of N²; the block-sparse kernel visits the ~(w + B_r)/B_c key tiles of the band.

Pattern (query i at key position p = i + N_k - N_q, bottom-right aligned):
    causal:      keys p-w+1 .. p       (the previous w keys, itself included)
    non-causal:  keys p-w//2 .. p+w//2 (w//2 on each side, as Longformer's window w)
A window larger than N is dense attention.

Notation -> code: w == ``window`` (--window), B_r/B_c == ``block_q``/``block_k`` (FA-2's plan).
HBM traffic: the block-sparse executor's (``algorithms.kernels.block_sparse_exec``):
    reads = N_q d e + Σ_tiles 2 c_t d e + 8 T_r + 4 nnz, writes = N_q d e + 4 N_q,
with about ⌈(w + B_r)/B_c⌉ + 1 tiles per Q block.
IO bound: Θ(N d + N (w + B_r + B_c) d / B_r) = Θ(N w d / B_r) for w >> B: linear in N at
fixed w. FLOPs: 4 N w d matmul (rounded out to tiles), O(N w) softmax ops.
Differences: flash-attn computes the band's tile range from indices; here the layout is
read as a CSR list (a few bytes per tile, see the executor). No dilation.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

from algorithms.base import AlgorithmInfo, Option
from algorithms.kernels.block_sparse_exec import (TilePlan, flash2_tile_plan, keys_io_bound,
                                          positive_int, run_pattern, pattern_footprint)
from algorithms.kernels.sparse_patterns import LOCAL, element_layout, element_mask as pattern_mask

DEFAULT_WINDOW = 512     # Longformer's window (Beltagy et al., 2020; shared/FACTS.md)

INFO = AlgorithmInfo(
    name="local",
    title="Sliding-window attention (block-sparse FlashAttention-2)",
    paper="Child et al., 2019 (arXiv 1904.10509); Beltagy et al., 2020 (arXiv 2004.05150)",
    exact=True,
    io_bound="Θ(Nd + N(w+B)d/B_r)",
    options=(Option("window", int, DEFAULT_WINDOW,
                    "keys each query attends: the previous w (causal) or w/2 on each side",
                    validate=positive_int("keys per query")),),
    count_only="exact: the band's tiles are computed from indices, no N² mask",
)


@dataclass(frozen=True)
class LocalPlan(TilePlan):
    window: int


def plan(wl, gpu, sram_bytes: int, window: int = DEFAULT_WINDOW) -> LocalPlan:
    return LocalPlan(**flash2_tile_plan(wl, gpu, sram_bytes), window=window)


def pattern_params(p: LocalPlan) -> dict:
    return {"window": p.window}


def layout(wl, p: LocalPlan):
    """The band's tiles (no N² mask)."""
    return element_layout(LOCAL, (p.window,), wl.causal, wl.seq_q, wl.seq_k, p.block_q, p.block_k)


def element_mask(wl, p: LocalPlan) -> np.ndarray:
    """Boolean (N_q, N_k) mask, causal included (executed mode)."""
    return pattern_mask(LOCAL, np.array([p.window]), wl.causal, wl.seq_q, wl.seq_k)


def run(wl, p: LocalPlan, inputs, rec, compute: bool) -> dict:
    return run_pattern(sys.modules[__name__], wl, p, inputs, rec, compute)


def io_bound(wl, p: LocalPlan, sram_bytes: int) -> float:
    """(N_q d + T_r min(N_k, w + B_r + B_c) d) e, all heads."""
    return keys_io_bound(wl, p.block_q, p.window + p.block_q + p.block_k)


def footprint(wl, p):
    """Q, K, V, O and lse; the pattern is index arithmetic
    (``block_sparse_exec.pattern_footprint``)."""
    return pattern_footprint(sys.modules[__name__], wl, p)
