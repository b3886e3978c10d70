"""Longformer attention — Beltagy, Peters, Cohan, "Longformer: The Long-Document Transformer"
(2020, arXiv 2004.05150), §3.1: sliding window plus global attention, run as one
block-sparse FlashAttention-2 pass.

Idea: every token attends a window of w neighbours; a few global tokens attend to every
token and every token attends to them, so cost is O(N (w + g)) with long-range paths.

Pattern (query at key position p = i + N_k - N_q; global tokens are positions 0..g-1, where
Longformer puts task tokens such as [CLS] or the question):
    p < g (global query):  every key
    otherwise:             keys p-w//2 .. p+w//2 (½w each side, as in the paper), or the
                           previous w keys when causal, plus keys 0..g-1
``causal`` then keeps j <= p (a global query sees the whole prefix).

Notation -> code: w == ``window`` (--window, default 512 as in the paper's pretrained
models; shared/FACTS.md), g == ``global_tokens``
(--global-tokens, default 1: one [CLS]-like token).
HBM traffic: the block-sparse executor's (``algorithms.kernels.block_sparse_exec``); a non-global
row of tiles loads about min(N_k, w + g + B_r + B_c) keys, each of the ⌈g/B_r⌉ global Q
blocks all N_k.
IO bound: Θ(N d + N (w + g) d / B_r + ⌈g/B_r⌉ N d): linear in N at fixed w, g.
FLOPs: 4 d per attended pair (rounded out to tiles): Θ(N (w + g) d).
Timing: the CTA of each global Q block visits all N_k / B_c tiles while the others visit a
few, so with few heads it sets the makespan (the timing model's imbalance factor shows it).
Differences from the paper: no dilation (the paper dilates some heads of higher layers);
one set of projections (the paper uses separate Q/K/V projections for global attention,
which changes the inputs, not the traffic); its TVM kernel is a banded matmul, here tiles.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

from algorithms.base import AlgorithmInfo, Option, PlanError
from algorithms.kernels.block_sparse_exec import (TilePlan, flash2_tile_plan, keys_io_bound,
                                          positive_int, run_pattern, pattern_footprint)
from algorithms.kernels.sparse_patterns import LONGFORMER, element_layout, element_mask as pattern_mask

DEFAULT_WINDOW = 512     # Beltagy et al., 2020: window 512 (shared/FACTS.md)
DEFAULT_GLOBAL = 1       # one classification token


def _non_negative(value):
    return None if value >= 0 else f"must be >= 0 (number of global tokens), got {value}"


INFO = AlgorithmInfo(
    name="longformer",
    title="Longformer window + global attention (block-sparse FlashAttention-2)",
    paper="Beltagy et al., 2020 (arXiv 2004.05150)",
    exact=True,
    io_bound="Θ(Nd + N(w+g)d/B_r)",
    options=(
        Option("window", int, DEFAULT_WINDOW, "window w: w/2 keys each side (previous w if causal)",
               validate=positive_int("keys per query")),
        Option("global_tokens", int, DEFAULT_GLOBAL,
               "global tokens g: positions 0..g-1 attend to and are attended by all",
               validate=_non_negative),
    ),
    count_only="exact: tiles from interval arithmetic, no N² mask",
)


@dataclass(frozen=True)
class LongformerPlan(TilePlan):
    window: int
    global_tokens: int


def plan(wl, gpu, sram_bytes: int, window: int = DEFAULT_WINDOW,
         global_tokens: int = DEFAULT_GLOBAL) -> LongformerPlan:
    if global_tokens > wl.seq_k:
        raise PlanError(f"longformer: --global-tokens {global_tokens} exceeds the "
                        f"{wl.seq_k} keys of the sequence; use at most {wl.seq_k}")
    return LongformerPlan(**flash2_tile_plan(wl, gpu, sram_bytes), window=window,
                          global_tokens=global_tokens)


def pattern_params(p: LongformerPlan) -> dict:
    return {"window": p.window, "global_tokens": p.global_tokens}


def layout(wl, p: LongformerPlan):
    return element_layout(LONGFORMER, (p.window, p.global_tokens), wl.causal, wl.seq_q,
                          wl.seq_k, p.block_q, p.block_k)


def element_mask(wl, p: LongformerPlan) -> np.ndarray:
    """Boolean (N_q, N_k) mask, causal included (executed mode)."""
    return pattern_mask(LONGFORMER, np.array([p.window, p.global_tokens]), wl.causal,
                        wl.seq_q, wl.seq_k)


def run(wl, p: LongformerPlan, inputs, rec, compute: bool) -> dict:
    return run_pattern(sys.modules[__name__], wl, p, inputs, rec, compute)


def io_bound(wl, p: LongformerPlan, sram_bytes: int) -> float:
    """(N_q d + T_r min(N_k, w + g + B_r + B_c) d + ⌈g/B_r⌉ N_k d) e, all heads."""
    g, br = p.global_tokens, p.block_q
    global_blocks = -(-g // br)
    return keys_io_bound(wl, br, p.window + g + br + p.block_k,
                         extra_keys=global_blocks * wl.seq_k)


def footprint(wl, p):
    """Q, K, V, O and lse; the pattern is index arithmetic
    (``block_sparse_exec.pattern_footprint``)."""
    return pattern_footprint(sys.modules[__name__], wl, p)
