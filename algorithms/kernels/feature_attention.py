"""Feature-map ("kernelized") linear attention: the executor shared by ``linear``, ``rfa`` and
``performer``.

The three papers replace exp(q·k) by a dot product of feature maps, φ_q(q)·φ_k(k), so that

    o_i = φ_q(q_i) S / φ_q(q_i) z,      S = Σ_j φ_k(k_j) v_jᵀ  (m x d),   z = Σ_j φ_k(k_j)  (m)

costs O(N m d) instead of O(N² d) (Katharopoulos et al. 2020, arXiv 2006.16236, §3.2).
The modules differ only in φ (``kind``) and its random projection W; this file runs them
through the simulated hierarchy; the compiled kernel bodies are in ``feature_kernels``.

Notation -> code: m == ``features`` (width of φ), P == ``projections`` (rows of W; 0 for
elu+1), B == ``block`` (rows per tile; the chunk length C of the causal form), T_m ==
``feature_tiles`` (slices of the features; a slice holds ``tile_units`` projections, or
feature columns for elu+1; trig features give a sin and a cos row per projection).

Kernels (per (batch, head); e = storage bytes, w = P d e bytes of W, T_q = ⌈N_q / B⌉):

* non-causal, two launches (not fused: the state is a reduction over all keys that every
  query tile needs, so it goes through HBM once):
  ``<name>_state``: one CTA per feature slice t streams K, V in B-row tiles and builds
  S_t = Σ φ_t(k) vᵀ (m_t x d) and z_t in SRAM, then writes them (fp32) and, when T_m > 1,
  its key shift c_t. reads T_m 2 N_k d e + w, writes 4 (m d + m) (+ 4 T_m).
  ``<name>_apply``: one CTA per query tile walks the slices: W_t, S_t, z_t in, O out.
  reads N_q d e + T_q (w + 4 m d + 4 m) (+ 4 T_m T_q), writes N_q d e.
  The planner picks (T_m, B) with the least traffic among those that fit the SRAM budget:
  usually T_m = 1 when the whole state fits (the d = 64 defaults); Performer's default
  m = 621 at d = 128 (S alone 318 KB) is sliced.
* causal (chunked form of Katharopoulos et al. §3.3's recurrence):
  ``<name>_causal``: one CTA per (head, feature slice) walks C-row chunks in order; its
  (slice of the) state S, z lives in SRAM for the whole sweep and never touches HBM. Per
  chunk: intra-chunk scores A = φ(Q_c) φ(K_c)ᵀ masked to j <= i, num = A V_c + φ(Q_c) S,
  den = A 1 + φ(Q_c) z, then S += φ(K_c)ᵀ V_c, z += Σ φ(K_c).
  T_m = 1: writes O directly; reads (N_q + 2 N_k) d e + w, writes N_q d e.
  T_m > 1: each slice writes its un-normalised num, den (and, for positive features, their
  log-scale: row max + key shift) in fp32, and ``<name>_combine`` (one CTA per B query
  rows) merges them as split-K attention does: reads T_m (N_q + 2 N_k) d e + w +
  T_m N_q (d + 1 [+ 1]) 4, writes T_m N_q (d + 1 [+ 1]) 4 + N_q d e.
  The planner picks (T_m, C) with the least traffic. Parallelism is batch x heads x T_m
  CTAs (a GPU port would also split the sweep along N and pass chunk-boundary states
  through HBM; not modelled).
GQA: each query head builds its own state (its K, V are re-read per query head).

Bound: Θ(N d + N m d / B) HBM bytes non-causal (the state re-read per query tile), Θ(N d)
causal (state on chip), both for T_m = 1 (more slices multiply the Q, K, V reads by T_m);
FLOPs Θ(N m d) (Θ(N d²) for elu+1, m = d).

Stabilization (Performer's positive features): keys' features carry a factor exp(E),
E = w·u - |u|²/2, that overflows fp32 for large logits. The kernels keep a running maximum c
of E over the keys seen so far, use exp(E - c), and rescale S, z by exp(c_old - c_new) when
c grows, the online-softmax trick applied to the state; it cancels in num/den. Queries
subtract their row max of W u, which cancels in num/den as well. With T_m > 1 slices the
apply kernel brings every slice to the largest shift, S_t, z_t x exp(c_t - max c), and
carries the query's row max across slices, rescaling num and den as it grows (an online
softmax over feature slices). RFA's inputs are ℓ2-normalised, so its features are bounded
and need none of this; elu+1 grows only linearly.

Per-op accounting of φ for r rows (a max/add/mul/select is one "other" op, sin/cos/exp one
special-function op; RFA: u = x / (|x| σ), Performer: u = x sqrt(scale)); "alu" is the part
of "other" that is a max, min, compare or select (the ALU pipe; the rest is FMA-pipe work):
  elu+1 (q and k):    exp r d,  other 3 r d (min, add, select),  alu 2 r d (min, select)
  trig (q and k):     other 3 r d + 2 r P,        exp r + 2 r P,    matmul 2 r P d
  positive query:     other r d + 4 r P,          exp r P,          matmul 2 r P d,
                      alu r P (row max of W u)
  positive key:       other 3 r d + r + 4 r P,    exp r P,          matmul 2 r P d,
                      alu r P (tile max of E)
  key stabilizer, per key tile (positive): other 1 + m d + m, exp 1
  with T_m > 1 (positive), per query tile: other T_m (max shift, alu); per slice: other
  1 + m_t d + m_t, exp 1 (shift) and other 2 r + r d + r, exp r (running row max: alu r)
(P, m read per slice: P_t, m_t; elu+1 computes the slice's columns: exp r m_t, other 3 r m_t.)
Outside φ: the causal sweep's select of A (alu r C per chunk) and, combining slices, the new
running max (alu r per slice and row block); every sum, scale and divide is FMA work.
φ, A and the fp32 state are fp32 on chip and the products take operands of the storage
dtype, so below fp32 they are converted before each product: state kernel C m_t (φ_t(K_j))
per key tile; apply kernel r m_t + m_t d (φ_t(Q_i), S_t) per slice; causal sweep per chunk
r m + C m (φ(Q_c), φ(K_c)) + r C (A) + m d (S), and C m per key block folded before the
first query chunk; O is converted on its store.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from algorithms.base import Plan, PlanError
from algorithms.kernels.common import (MMA_ROWS, REFERENCE_BLOCK_BYTES, cdiv, finish_heads,
                                       head_view, heads_in_flight, iter_heads, l2_arguments,
                                       new_output, placeholder, placeholder_vector)
from algorithms.kernels.decode_info import decode_info
from algorithms.kernels.feature_decode import decode_buffers as decode_state_buffers
from algorithms.kernels.feature_decode import (COLUMN_UNIT, column_ranges, plan_slice,
                                               prefix_state, recurrent_step, state_bytes)
from algorithms.kernels.splitkv import choose_splits
from algorithms.kernels.feature_kernels import (KIND_ELU, KIND_POSITIVE, KIND_TRIG, STATE_BYTES,
                                       apply_head, causal_head, combine_slices, state_head)
from algorithms.kernels import footprints
from hwmodels.footprint import Allocation, Footprint
from hwmodels.memory import Recorder, SramOverflowError

KIND_NAMES = {"elu": KIND_ELU, "trig": KIND_TRIG, "positive": KIND_POSITIVE}
BLOCK_CANDIDATES = (128, 64, 32, 16)
THREADS_PER_CTA = 128


@dataclass(frozen=True)
class FeaturePlan(Plan):
    """Tiles and random-feature settings of one feature-map attention run."""
    kind: str               # "elu", "trig" (RFA) or "positive" (Performer)
    features: int           # m: width of φ(x)
    projections: int        # P: rows of the random projection W (0 for elu+1)
    block: int              # B: rows per tile; chunk length C of the causal form
    feature_tiles: int      # T_m: the state S is built and applied in T_m slices of features
    tile_units: int         # projections (elu+1: feature columns) per feature slice
    smem_bytes: int         # largest kernel's SRAM footprint per CTA
    seed: int | None        # None: the inputs' seed
    redraw: str             # "none": one W for all heads; "head": a fresh W per (batch, head)
    sigma: float | None     # RFA's σ (ℓ2-normalised inputs are divided by it); None otherwise
    decode_slice_rows: int = 0   # decode: feature rows of the state per streamed slice
    decode_col_splits: int = 0   # decode: CTAs per state head, each owning value columns


# ---- planning ----------------------------------------------------------------------------

def units(kind: str, d: int, p: int) -> tuple[int, int]:
    """(units to tile, features per unit): projections for random features (trig gives a sin
    and a cos feature per projection), feature columns for elu+1."""
    if kind == "elu":
        return d, 1
    return p, 2 if kind == "trig" else 1


def causal_buffers(block: int, d: int, m: int, p: int, e: int) -> dict:
    return {"Q_c": block * d * e, "K_c": block * d * e, "V_c": block * d * e,
            **({"W": p * d * e} if p else {}), "phiQ_c": block * m * e, "phiK_c": block * m * e,
            "A": block * block * STATE_BYTES, "S": m * d * STATE_BYTES, "z": m * STATE_BYTES}


def causal_prologue_bytes(buffers: dict) -> int:
    """What a causal sweep CTA's first MMA waits for: K_c and φ's weights (φ(K_c) = f(K_c W)),
    or, where φ is elementwise (elu + 1), K_c and Q_c (the chunk's φ(Q_c) φ(K_c)ᵀ)."""
    return buffers["K_c"] + buffers.get("W", buffers["Q_c"])


def strip_readers(p) -> dict:
    """``Recorder.kernel``'s shared-memory reader arguments for the state, apply and causal
    kernels: each warp computes one 16-row strip of a product at a time and reads the whole
    other operand for it (the port's loops over 16-row tiles: K_j W_tᵀ, φ(Q) S, A V, ...), so
    a B-row tile's partner operand is read B / 16 times. (φ(K)ᵀ V strips over the slice's
    features instead; B rows stand for them.)"""
    return {"smem_readers": cdiv(p.block, MMA_ROWS), "mma_rows_per_cta": p.block}


def causal_l2(rec, wl, p, buffers: dict, params_per_head: int = 0) -> dict:
    """L2 arguments of a causal sweep (``common.l2_arguments``): per head, Q, K, V once, W and
    ``params_per_head`` more bytes of parameters, and the slices' partials or O written; the
    slices of a head sweep its Q, K, V chunk by chunk in step."""
    d, e, tiles = wl.head_dim, wl.elem_bytes, p.feature_tiles
    qkv = (wl.seq_q + 2 * wl.seq_k) * d * e
    out = tiles * wl.seq_q * partial_row_bytes(p.kind, d) if tiles > 1 else wl.seq_q * d * e
    return l2_arguments(rec, wl.batch * wl.heads, tiles, sum(buffers.values()),
                        qkv + p.projections * d * e + params_per_head + out, qkv,
                        THREADS_PER_CTA, sum(buffers[b] for b in ("Q_c", "K_c", "V_c")))


def state_buffers(kind: str, block: int, d: int, tile_units: int, e: int) -> dict:
    """One CTA of the state kernel: K, V tiles and one feature slice of W, φ(K), S, z."""
    m_t = tile_units * units(kind, d, 0)[1]
    w = {"W_t": tile_units * d * e} if kind != "elu" else {}
    return {"K_j": block * d * e, "V_j": block * d * e, **w, "phiK_j": block * m_t * e,
            "S_t": m_t * d * STATE_BYTES, "z_t": m_t * STATE_BYTES}


def apply_buffers(kind: str, block: int, d: int, tile_units: int, tiles: int, e: int) -> dict:
    """One CTA of the apply kernel: a Q tile and one feature slice at a time."""
    m_t = tile_units * units(kind, d, 0)[1]
    w = {"W_t": tile_units * d * e} if kind != "elu" else {}
    acc = {"O_acc": block * d * STATE_BYTES} if tiles > 1 else {}
    if tiles > 1 and kind == "positive":
        acc["shifts"] = tiles * 4
    return {"Q_i": block * d * e, **w, "phiQ_i": block * m_t * e, "S_t": m_t * d * STATE_BYTES,
            "z_t": m_t * STATE_BYTES, **acc}


def shift_bytes(kind: str, tiles: int) -> int:
    """The key shifts c_t of a head's slices (positive features over several slices)."""
    return 4 * tiles if tiles > 1 and kind == "positive" else 0


def partial_row_bytes(kind: str, d: int) -> int:
    """A slice's fp32 partials per query row: num, den (and, positive, their log-scale)."""
    return (d + 1 + (kind == "positive")) * STATE_BYTES


def estimated_traffic(kind, wl, block, tiles, m, p) -> int:
    """Per-head HBM bytes of the non-causal kernels (the closed form in the docstring)."""
    d, e = wl.head_dim, wl.elem_bytes
    shifts = shift_bytes(kind, tiles)
    state = tiles * 2 * wl.seq_k * d * e + p * d * e + 4 * (m * d + m) + shifts
    apply = 2 * wl.seq_q * d * e + cdiv(wl.seq_q, block) * (p * d * e + 4 * m * d + 4 * m + shifts)
    return state + apply


def make_plan(name: str, kind: str, wl, sram_bytes: int, features: int, projections: int,
              seed: int = 0, redraw: str = "none", sigma: float | None = None,
              sm_count: int = 1) -> FeaturePlan:
    """Tiles from the SRAM budget. Causal: the whole state stays on chip, the largest chunk
    that fits. Non-causal: the (feature slices, query tile) pair with the least traffic."""
    if kind not in KIND_NAMES:
        raise PlanError(f"{name}: unknown feature kind {kind!r}")
    if features <= 0:
        raise PlanError(f"{name}: the feature count must be positive, got {features}")
    d, e, m, p = wl.head_dim, wl.elem_bytes, features, projections
    if getattr(wl, "decode", False):
        return _plan_decode(name, kind, wl, sram_bytes, m, p, seed, redraw, sigma, sm_count)
    if wl.causal:
        return _plan_causal(name, kind, wl, sram_bytes, m, p, seed, redraw, sigma)
    total_units, _ = units(kind, d, p)
    best = None
    tiles = 1
    while True:
        tile_units = cdiv(total_units, tiles)
        tiles = cdiv(total_units, tile_units)            # no empty slices
        for block in BLOCK_CANDIDATES:
            smem = max(sum(state_buffers(kind, block, d, tile_units, e).values()),
                       sum(apply_buffers(kind, block, d, tile_units, tiles, e).values()))
            if smem <= sram_bytes:
                cost = estimated_traffic(kind, wl, block, tiles, m, p)
                if best is None or cost < best[0]:
                    best = (cost, block, tiles, tile_units, smem)
                break                                       # smaller blocks only cost more
        if tile_units == 1:
            break
        tiles *= 2
    if best is None:
        b16 = BLOCK_CANDIDATES[-1]
        need = max(state_buffers(kind, b16, d, 1, e),
                   apply_buffers(kind, b16, d, 1, total_units, e),
                   key=lambda buf: sum(buf.values()))
        raise SramOverflowError(
            f"{name} with head_dim {d} needs at least {sum(need.values()):,} bytes of SRAM per "
            f"CTA even with one feature per slice "
            f"({', '.join(f'{k} {v:,} B' for k, v in need.items())}) but the budget is "
            f"{sram_bytes:,} bytes; use {'' if kind == 'elu' else 'fewer --features, '}a "
            f"smaller --head-dim or a larger --sram-kb")
    _, block, tiles, tile_units, smem = best
    return FeaturePlan(kind=kind, features=m, projections=p, block=block, feature_tiles=tiles,
                       tile_units=tile_units, smem_bytes=smem, seed=seed, redraw=redraw,
                       sigma=sigma)


def combine_buffers(block: int, d: int) -> dict:
    return {"O_acc": block * d * STATE_BYTES, "partial": block * (d + 2) * STATE_BYTES}


def causal_traffic(kind, wl, tiles, p) -> int:
    """Per-head HBM bytes of the causal kernels (the closed form in the docstring)."""
    d, e = wl.head_dim, wl.elem_bytes
    sweep = tiles * (wl.seq_q + 2 * wl.seq_k) * d * e + p * d * e
    if tiles == 1:
        return sweep + wl.seq_q * d * e
    return sweep + 2 * tiles * wl.seq_q * partial_row_bytes(kind, d) + wl.seq_q * d * e


def _plan_causal(name, kind, wl, sram_bytes, m, p, seed, redraw, sigma) -> FeaturePlan:
    """The chunked sweep keeps (its slice of) the state on chip: the whole state when it
    fits, else T_m slices swept by T_m CTAs per head and combined by a second kernel; the
    (T_m, C) pair with the least traffic."""
    d, e = wl.head_dim, wl.elem_bytes
    total_units, per_unit = units(kind, d, p)
    best, tiles = None, 1
    while True:
        tile_units = cdiv(total_units, tiles)
        tiles = cdiv(total_units, tile_units)
        for block in BLOCK_CANDIDATES:
            sweep = causal_buffers(block, d, tile_units * per_unit,
                                   tile_units if kind != "elu" else 0, e)
            smem = sum(sweep.values())
            if tiles > 1:
                smem = max(smem, sum(combine_buffers(block, d).values()))
            if smem <= sram_bytes:
                cost = causal_traffic(kind, wl, tiles, p)
                if best is None or cost < best[0]:
                    best = (cost, block, tiles, tile_units, smem)
                break
        if tile_units == 1:
            break
        tiles *= 2
    if best is None:
        b16 = BLOCK_CANDIDATES[-1]
        need = max(causal_buffers(b16, d, per_unit, 1 if kind != "elu" else 0, e),
                   combine_buffers(b16, d), key=lambda buf: sum(buf.values()))
        raise SramOverflowError(
            f"{name} (causal) with head_dim {d} needs at least {sum(need.values()):,} bytes of "
            f"SRAM per CTA even with one feature per slice "
            f"({', '.join(f'{k} {v:,} B' for k, v in need.items())}) but the budget is "
            f"{sram_bytes:,} bytes; use {'' if kind == 'elu' else 'fewer --features, '}a "
            f"smaller --head-dim or a larger --sram-kb")
    _, block, tiles, tile_units, smem = best
    return FeaturePlan(kind=kind, features=m, projections=p, block=block, feature_tiles=tiles,
                       tile_units=tile_units, smem_bytes=smem, seed=seed, redraw=redraw,
                       sigma=sigma)


# ---- footprint ----------------------------------------------------------------------------

def feature_footprint(name: str, wl, p: FeaturePlan):
    """HBM allocations of ``run_features``: Q, K, V, O; the projection W (P x d at e bytes:
    one for all heads, or one per (batch, head) with ``redraw = head``); non-causal, the fp32
    state S (m x d), normaliser z (m) and per-slice key shifts per head, written by the state
    kernel and read by the apply kernel; causal with several feature slices, the fp32
    partial numerators (N d), denominators and log-scales (N each) per slice and head, until
    the combine kernel. The causal sweep with one slice keeps its state on chip: Θ(N d) in
    every case, never N x N."""
    d, m, e = wl.head_dim, p.features, wl.elem_bytes
    heads_total = wl.batch * wl.heads
    if getattr(wl, "decode", False):
        return _decode_footprint(name, wl, p)
    if wl.causal:
        phases = (f"{name}_causal",) + ((f"{name}_combine",) if p.feature_tiles > 1 else ())
    else:
        phases = (f"{name}_state", f"{name}_apply")
    first, last = phases[0], phases[-1]
    allocs = footprints.inputs(wl, first, last) + footprints.output(wl, last, last, lse=False)
    if p.kind != "elu":
        copies = heads_total if p.redraw == "head" else 1
        allocs.append(Allocation("projection", copies * p.projections * d * e, first, last,
                                 "input"))
    if not wl.causal:
        state = heads_total * (m * d + m + p.feature_tiles) * STATE_BYTES
        allocs.append(Allocation("state", state, first, last))
    elif p.feature_tiles > 1:
        partials = heads_total * p.feature_tiles * wl.seq_q * (d + 2) * STATE_BYTES
        allocs.append(Allocation("slice_partials", partials, first, last))
    return Footprint(phases, allocs)


def _decode_footprint(name: str, wl, p: FeaturePlan):
    """A recurrent decode step (``{name}_decode``): the new tokens' q, k, v in, O out, W, and
    the fp32 state (S, z and the shift) of every state head, which replaces the KV cache and
    outlives the step: constant in the context length."""
    d, e, phase = wl.head_dim, wl.elem_bytes, f"{name}_decode"
    states = wl.batch * wl.heads // state_group(wl, p.redraw)
    new_kv = wl.batch * wl.kv_heads * wl.seq_q * d * e
    allocs = (footprints.inputs(wl, phase, phase, names=("q",))
              + [Allocation("k_new", new_kv, phase, phase, "input"),
                 Allocation("v_new", new_kv, phase, phase, "input"),
                 Allocation("state", states * state_bytes(p.features, d, p.kind == "positive"),
                            phase, phase, "state")]
              + footprints.output(wl, phase, phase, lse=False))
    if p.kind != "elu":
        copies = wl.batch * wl.heads if p.redraw == "head" else 1
        allocs.append(Allocation("projection", copies * p.projections * d * e, phase, phase,
                                 "input"))
    return Footprint((phase,), allocs)


def state_group(wl, redraw: str) -> int:
    """Query heads that share one recurrent state: a KV head's group, unless every query
    head draws its own W (Performer ``--redraw head``)."""
    return 1 if redraw == "head" else wl.heads // wl.kv_heads


def _plan_decode(name, kind, wl, sram_bytes, m, p, seed, redraw, sigma, sm_count) -> FeaturePlan:
    """Recurrent decoding (``feature_decode``): the state's value columns split over enough
    CTAs to fill the SMs (flash-decoding's rule), but no more CTAs than keep what each one
    re-reads (queries, keys, W, z) within the state traffic they share — past that the
    requests grow faster than the parallelism helps; then the largest state slice that fits."""
    if wl.seq_q > 1 and not wl.causal:
        raise PlanError(f"{name}: recurrent decoding is causal (each new token sees the state "
                        f"of the tokens before it); add --causal or use --new-tokens 1")
    if wl.seq_q > wl.seq_k:
        raise PlanError(f"{name}: a decode step's {wl.seq_q} new tokens are part of the "
                        f"{wl.seq_k}-token context; use --new-tokens <= --seq")
    d, e, g = wl.head_dim, wl.elem_bytes, state_group(wl, redraw)
    states = wl.batch * (wl.heads // g)
    reread = (g + 1) * wl.seq_q * d * e + p * d * e + STATE_BYTES * m
    most = max(1, 2 * STATE_BYTES * m * d // reread)
    splits = len(column_ranges(d, min(most, choose_splits(states, cdiv(d, COLUMN_UNIT),
                                                          sm_count))))
    wc = int(np.diff(column_ranges(d, splits), axis=1).max())
    got = plan_slice(g, wl.seq_q, d, m, p, wc, e, sram_bytes)
    if got is None:
        need = decode_state_buffers(g, wl.seq_q, d, m, p, 1, wc, e)
        raise SramOverflowError(
            f"{name} decoding with {g} query head(s) per state, {wl.seq_q} new token(s) and "
            f"{m} features needs at least {sum(need.values()):,} bytes of SRAM per CTA "
            f"({', '.join(f'{k} {v:,} B' for k, v in need.items())}) but the budget is "
            f"{sram_bytes:,} bytes; use fewer --new-tokens or --features, or a larger --sram-kb")
    rows, smem = got
    return FeaturePlan(kind=kind, features=m, projections=p, block=wl.seq_q,
                       feature_tiles=cdiv(m, rows), tile_units=0, smem_bytes=smem, seed=seed,
                       redraw=redraw, sigma=sigma, decode_slice_rows=rows,
                       decode_col_splits=splits)


# ---- running -----------------------------------------------------------------------------

def run_features(name: str, wl, p: FeaturePlan, inputs, rec, compute: bool,
                 projection_for_head) -> dict:
    """Launch the kernels; ``projection_for_head(b, h)`` gives W (P x d float32) or None."""
    d, m, e = wl.head_dim, p.features, wl.elem_bytes
    kind = KIND_NAMES[p.kind]
    # inputs are multiplied by in_scale before the projection: sqrt(scale) for positive
    # features (so that x·y is the logit); 1/σ after ℓ2 normalisation for RFA
    in_scale = 1.0 / p.sigma if p.kind == "trig" else math.sqrt(wl.scale)
    heads_total = wl.batch * wl.heads
    o = new_output(wl, compute)
    empty_w = np.zeros((0, d), dtype=np.float32)
    if getattr(wl, "decode", False):
        return _run_decode(name, wl, p, inputs, rec, compute, projection_for_head, o, kind,
                           in_scale, empty_w)
    if wl.causal:
        return _run_causal(name, wl, p, inputs, rec, compute, projection_for_head, o, kind,
                           in_scale, empty_w)
    # non-causal: state kernel (one CTA per head and feature slice), then apply kernel (one
    # CTA per Q tile, walking the feature slices)
    tq = cdiv(wl.seq_q, p.block)
    sb = state_buffers(p.kind, p.block, d, p.tile_units, e)
    ab = apply_buffers(p.kind, p.block, d, p.tile_units, p.feature_tiles, e)
    # L2: a head's slices stream its K, V together; its query tiles re-read its W and state
    kv_bytes, w_bytes = 2 * wl.seq_k * d * e, p.projections * d * e
    state_bytes = STATE_BYTES * (m * d + m) + shift_bytes(p.kind, p.feature_tiles)  # S, z, shifts
    # the first MMA multiplies K_j (Q_i) by φ's weights, or, where φ is elementwise (elu + 1),
    # φ(K_j) by V_j (φ(Q_i) by the state)
    cs = rec.kernel(f"{name}_state", ctas=p.feature_tiles * heads_total, buffers=sb,
                    threads_per_cta=THREADS_PER_CTA, matmul_dtype=wl.dtype,
                    prologue_bytes_per_cta=sb["K_j"] + sb.get("W_t", sb["V_j"]),
                    epilogue_elements_per_cta=sb["S_t"] // STATE_BYTES,   # the state slice
                    **strip_readers(p),
                    **l2_arguments(rec, heads_total, p.feature_tiles, sum(sb.values()),
                                   kv_bytes + w_bytes + state_bytes, kv_bytes, THREADS_PER_CTA,
                                   sb["K_j"] + sb["V_j"]))
    ca = rec.kernel(f"{name}_apply", ctas=tq * heads_total, buffers=ab,
                    threads_per_cta=THREADS_PER_CTA, matmul_dtype=wl.dtype,
                    prologue_bytes_per_cta=ab["Q_i"] + ab.get("W_t", ab["S_t"]),
                    epilogue_elements_per_cta=p.block * d,                 # O_i
                    **strip_readers(p),
                    **l2_arguments(rec, heads_total, tq, sum(ab.values()),
                                   2 * wl.seq_q * d * e + w_bytes + state_bytes,
                                   w_bytes + state_bytes, THREADS_PER_CTA))
    for b, h, q, k, v in iter_heads(wl, inputs, compute):
        w = _projection(projection_for_head, b, h, compute, empty_w, d)
        s_hbm = np.zeros((m if compute else 0, d), dtype=np.float32)      # S in HBM (fp32)
        z_hbm = np.zeros((1 if compute else 0, m), dtype=np.float32)      # z in HBM (fp32)
        shift_hbm = np.zeros(p.feature_tiles if compute else 0, dtype=np.float32)
        state_head(cs, k, v, w, s_hbm, z_hbm, shift_hbm, wl.seq_k, d, p.projections,
                   p.tile_units, p.feature_tiles, p.block, kind, in_scale, e, compute)
        apply_head(ca, q, w, s_hbm, z_hbm, shift_hbm, head_view(o, b, h, compute), wl.seq_q,
                   d, p.projections, p.tile_units, p.feature_tiles, p.block, kind, in_scale,
                   e, compute)
    finish_heads(cs, wl, compute)
    finish_heads(ca, wl, compute)
    return {"o": o} if compute else {}


def _run_causal(name, wl, p, inputs, rec, compute, projection_for_head, o, kind, in_scale,
                empty_w) -> dict:
    """One sweep CTA per (head, feature slice); with slices, a combine kernel."""
    d, e, tiles = wl.head_dim, wl.elem_bytes, p.feature_tiles
    heads_total = wl.batch * wl.heads
    total_units, per_unit = units(p.kind, d, p.projections)
    sweep_buf = causal_buffers(p.block, d, p.tile_units * per_unit,
                               p.tile_units if p.kind != "elu" else 0, e)
    c = rec.kernel(f"{name}_causal", ctas=tiles * heads_total, buffers=sweep_buf,
                   threads_per_cta=THREADS_PER_CTA, matmul_dtype=wl.dtype,
                   prologue_bytes_per_cta=causal_prologue_bytes(sweep_buf),
                   # the sweep writes each chunk's output rows as it leaves the chunk
                   epilogue_elements_per_cta=wl.seq_q * d,
                   **strip_readers(p),
                   **causal_l2(rec, wl, p, sweep_buf))
    cc = None
    if tiles > 1:
        cc = rec.kernel(f"{name}_combine", ctas=cdiv(wl.seq_q, p.block) * heads_total,
                        buffers=combine_buffers(p.block, d), tc_path="none",
                        threads_per_cta=THREADS_PER_CTA)
    rows = wl.seq_q if compute else 0
    for b, h, q, k, v in iter_heads(wl, inputs, compute):
        w = _projection(projection_for_head, b, h, compute, empty_w, d)
        o_head = head_view(o, b, h, compute)
        # HBM partials of the slices: un-normalised num, den and their log-scale (fp32)
        pnum = np.zeros((tiles, rows if tiles > 1 else 0, d), dtype=np.float32)
        pden = np.zeros((tiles, rows if tiles > 1 else 0), dtype=np.float32)
        plog = np.zeros((tiles, rows if tiles > 1 else 0), dtype=np.float32)
        for t in range(tiles):
            u0 = t * p.tile_units
            u1 = min(total_units, u0 + p.tile_units)
            causal_head(c, q, k, v, w, o_head, pnum, pden, plog, t, wl.seq_q, wl.seq_k, d,
                        p.projections, u0, u1, p.block, kind, in_scale, e, compute, tiles > 1)
        if cc is not None:
            combine_slices(cc, pnum, pden, plog, o_head, wl.seq_q, d, tiles, p.block, kind, e,
                           compute)
    finish_heads(c, wl, compute)
    if cc is not None:
        finish_heads(cc, wl, compute)
    return {"o": o} if compute else {}


def _run_decode(name, wl, p, inputs, rec, compute, projection_for_head, o, kind, in_scale,
                empty_w) -> dict:
    """One CTA per (sequence, state head): ``feature_decode.recurrent_step``."""
    d, e, m, nq = wl.head_dim, wl.elem_bytes, p.features, wl.seq_q
    g = state_group(wl, p.redraw)
    states = wl.heads // g
    cols = column_ranges(d, p.decode_col_splits)
    wc = int(np.diff(cols, axis=1).max())
    buffers = decode_state_buffers(g, nq, d, m, p.projections, p.decode_slice_rows, wc, e)
    w_bytes = p.projections * d * e
    shared_w = p.redraw != "head"
    # compulsory traffic: per state its queries, new tokens, z, S (and the shift) once, W once
    # (per state with --redraw head); the column CTAs of a state re-read q, k, z and W
    per_state = (g * nq * d * e + 2 * nq * d * e + 2 * state_bytes(m, d, p.kind == "positive")
                 + g * nq * d * e + (0 if shared_w else w_bytes))
    in_flight = heads_in_flight(rec, len(cols), wl.batch * states, sum(buffers.values()))
    reread = g * nq * d * e + nq * d * e + 4 * m + (0 if shared_w else w_bytes)
    c = rec.kernel(f"{name}_decode", ctas=wl.batch * states * len(cols), buffers=buffers,
                   threads_per_cta=THREADS_PER_CTA, matmul_dtype=wl.dtype,
                   # the new key and φ's weights, or (elu + 1) the new key and values
                   prologue_bytes_per_cta=buffers["k"] + buffers.get("W_slice",
                                                                     buffers["v_cols"]),
                   unique_hbm_bytes=wl.batch * states * per_state + (w_bytes if shared_w else 0),
                   l2_working_set_bytes=(w_bytes if shared_w else 0) + in_flight * reread)
    args = (nq, g, d, p.projections, m, p.decode_slice_rows, cols, kind, in_scale, e, compute)
    if not compute:
        w = empty_w if projection_for_head is None else placeholder(d)
        recurrent_step(c, np.empty((0, 0, d), np.float32), placeholder(d), placeholder(d), w,
                       placeholder(d), placeholder_vector(), placeholder_vector(),
                       np.empty((0, 0, d), np.float32), *args)
        Recorder.repeat(c, wl.batch * states)
    else:
        head_group = wl.heads // wl.kv_heads
        for b in range(wl.batch):
            for sh in range(states):
                h0 = sh * g                                    # first query head of the state
                kvh = h0 // head_group
                w = _projection(projection_for_head, b, h0, compute, empty_w, d)
                k, v = inputs.k[b, kvh], inputs.v[b, kvh]
                s, z, shift = prefix_state(p.kind, k[:wl.seq_k - nq], v[:wl.seq_k - nq], w,
                                           in_scale, max(p.projections, 1))
                recurrent_step(c, np.ascontiguousarray(inputs.q[b, h0:h0 + g]),
                               np.ascontiguousarray(k[wl.seq_k - nq:]),
                               np.ascontiguousarray(v[wl.seq_k - nq:]), w, s, z, shift,
                               o[b, h0:h0 + g], *args)
    rec.info["kv_cache"] = recurrent_state_info(wl, rec.gpu, m, p.kind, states)
    rec.info["decode"] = decode_info(wl, rec.gpu, rec.kernels, g * nq)
    return {"o": o} if compute else {}


def recurrent_state_info(wl, gpu, m: int, kind: str, states: int) -> dict:
    """``kv_cache`` of recurrent decoding: the per-head state is the whole cache; it does
    not grow with the context."""
    model = getattr(wl, "model", None)
    layers = model.layers if model is not None else 1
    per_head = state_bytes(m, wl.head_dim, kind == "positive")
    per_seq = per_head * states * layers
    weights = model.weight_bytes(wl.dtype) if model is not None else None
    free = gpu.hbm_bytes - (weights or 0)
    return {
        "kind": "recurrent_state",
        "model": model.name if model is not None else None,
        "layers": layers,
        "storage_dtype": "fp32",
        "state_heads": states,
        "features": m,
        "state_bytes_per_head": per_head,
        "state_bytes_per_sequence": per_seq,
        "bytes_per_token": 0,
        "context_tokens": int(wl.seq_k),
        "batch": int(wl.batch),
        "bytes_total": per_seq * wl.batch,
        "grows_with_context": False,
        "gpu": gpu.name,
        "hbm_bytes": gpu.hbm_bytes,
        "weights_bytes": weights,
        "weights_fit": free > 0,
        "tokens_that_fit": None,
        "sequences_that_fit": int(max(0, free) // per_seq),
        "note": "S (m x d) and z (m) per state head in fp32 (+ the fp32 shift c for positive "
                "features); states are per KV head (per query head with --redraw head); the "
                "context length does not change it",
    }


def _projection(projection_for_head, b, h, compute, empty_w, d):
    if projection_for_head is None:
        return empty_w
    if not compute:
        return placeholder(d)
    return np.ascontiguousarray(projection_for_head(b, h), dtype=np.float32)


# ---- float64 reference of the same math ---------------------------------------------------

def reference_features(kind: str, x: np.ndarray, w: np.ndarray | None, scale: float,
                       is_key: bool, sigma: float | None = None) -> np.ndarray:
    """φ(x) in float64 as the papers define it (no stabilization, no dropped factors)."""
    x = np.asarray(x, dtype=np.float64)
    if kind == "elu":
        return np.where(x > 0, x + 1.0, np.exp(np.minimum(x, 0.0)))
    p = w.shape[0]
    w = np.asarray(w, dtype=np.float64)
    if kind == "trig":
        nrm = np.linalg.norm(x, axis=-1, keepdims=True)
        proj = (x / np.where(nrm > 0, nrm, 1.0) / sigma) @ w.T
        return np.concatenate([np.sin(proj), np.cos(proj)], axis=-1) / math.sqrt(p)
    u = x * math.sqrt(scale)
    sq = 0.5 * (u * u).sum(axis=-1, keepdims=True)
    return np.exp(u @ w.T - sq) / math.sqrt(p)


def reference_attention(kind: str, q, k, v, causal: bool, scale: float, w_for_head,
                        sigma: float | None = None) -> np.ndarray:
    """float64 feature-map attention, (B, H, N_q, d); ``w_for_head(b, h)`` gives W or None:
    o_i = Σ_j φ(q_i)·φ(k_j) v_j / Σ_j φ(q_i)·φ(k_j) (causal: j <= i + N_k − N_q), a block of
    query rows at a time. Rows are independent: blocking changes at most the last bit, where
    BLAS sums a block's products in another order."""
    batch, heads, seq_q, _ = q.shape
    group = heads // k.shape[1]
    seq_k = k.shape[2]
    rows = max(1, REFERENCE_BLOCK_BYTES // (8 * seq_k))
    out = np.zeros(q.shape, dtype=np.float64)
    for b in range(batch):
        for h in range(heads):
            w = w_for_head(b, h)
            fq = reference_features(kind, q[b, h], w, scale, False, sigma)
            fk = reference_features(kind, k[b, h // group], w, scale, True, sigma)
            vh = np.asarray(v[b, h // group], dtype=np.float64)
            for r0 in range(0, seq_q, rows):
                a = fq[r0:r0 + rows] @ fk.T                                # (rows, N_k)
                if causal:
                    i = np.arange(r0, min(r0 + rows, seq_q))[:, None]
                    a[np.arange(seq_k)[None, :] > i + (seq_k - seq_q)] = 0.0
                den = a.sum(axis=1)
                num = a @ vh
                out[b, h, r0:r0 + rows] = np.where(
                    den[:, None] != 0, num / np.where(den == 0, 1, den)[:, None], 0)
    return out


def executed_host_bytes(wl, p: FeaturePlan) -> int:
    """Host memory an executed run needs beyond the harness's own estimate: each head's
    feature maps φ(Q) and φ(K) in float32 (the kernel) and float64 (the reference), one head
    per CPU core, and the projection W in float64."""
    workers = max(1, min(os.cpu_count() or 1, wl.batch * wl.heads))
    return (12 * (wl.seq_q + wl.seq_k) * p.features + 8 * p.features * wl.head_dim) * workers


# The papers' feature counts are Θ(d log d): a few hundred to a few thousand (at the largest
# head dim a workload may have, 1024, d ln d is about 7,100). Far beyond, drawing W alone
# takes minutes (orthogonal blocks of d rows, one QR each) before anything is counted.
MAX_FEATURES = 2**16


def check_features(value) -> str | None:
    if not 0 < value <= MAX_FEATURES:
        return (f"must be an integer in [1, {MAX_FEATURES:,}] (the papers use Θ(d log d) "
                f"features: about 7,100 at the largest head dim, 1024)")
    return None


def check_seed(value) -> str | None:
    return None if value >= 0 else "must be a non-negative integer (a numpy seed)"


SEED_HELP = ("seed of the random {what}; default: the inputs' seed (the CLI's --input-seed), "
             "so one seed fixes both the data and the {what}")


def resolve_seed(plan_seed, inputs) -> int:
    """The plan's seed, or (option left unset) the seed the inputs were drawn with."""
    if plan_seed is not None:
        return int(plan_seed)
    return int(getattr(inputs, "seed", 0) or 0)


def feature_io_bound(wl, p: FeaturePlan) -> float:
    """Θ(N d + N m d / B) bytes, all heads: Q, K, V, O once, plus the fp32 state (m x d) per
    query tile, which the non-causal apply kernel reloads; the causal sweep keeps the state
    on chip, so its bound is Θ(N d). A recurrent decode step: Θ(G m d), the fp32 state read
    and written once per state head, plus the new tokens and the outputs."""
    e, d = wl.elem_bytes, wl.head_dim
    if getattr(wl, "decode", False):
        g = state_group(wl, p.redraw)
        per_state = 2 * STATE_BYTES * p.features * d + 2 * wl.seq_q * d * e * (1 + g)
        return float(per_state * wl.batch * (wl.heads // g))
    state = 0 if wl.causal else wl.seq_q * p.features * d * STATE_BYTES / p.block
    per_head = 2 * (wl.seq_q + wl.seq_k) * d * e + state
    return float(per_head * wl.batch * wl.heads)
