"""Feature-map ("kernelized") linear attention: the executor shared by ``linear``, ``rfa`` and
``performer``.

The three papers replace exp(q·k) by a dot product of feature maps, φ_q(q)·φ_k(k), so that

    o_i = φ_q(q_i) S / φ_q(q_i) z,      S = Σ_j φ_k(k_j) v_jᵀ  (m x d),   z = Σ_j φ_k(k_j)  (m)

costs O(N m d) instead of O(N² d) (Katharopoulos et al. 2020, arXiv 2006.16236, Eq. 4-6).
The modules differ only in φ (``kind``) and its random projection W; this file runs them
through the simulated hierarchy.

Notation -> code: m == ``features`` (width of φ), P == ``projections`` (rows of W; 0 for
elu+1), B == ``block`` (rows per tile; the chunk length C of the causal form).

Kernels (per (batch, head); e = storage bytes, w = P d e bytes of W):

* non-causal, two launches (not fused: the state is a reduction over all keys that every
  query block needs, so it goes through HBM once):
  ``<name>_state``: one CTA per head streams K, V in B-row tiles, builds S and z in SRAM and
  writes them (fp32). reads 2 N_k d e + w, writes 4 (m d + m).
  ``<name>_apply``: one CTA per B-row query tile loads W, S, z and its Q tile, writes O.
  reads N_q d e + T_q (w + 4 m d + 4 m), writes N_q d e, T_q = ⌈N_q / B⌉.
* causal, one launch (chunked form, Katharopoulos et al. §3.3 / Eq. 9 applied chunkwise):
  ``<name>_causal``: one CTA per head walks C-row chunks in order; the state (S, z) lives in
  SRAM for the whole sweep and never touches HBM. Per chunk: intra-chunk scores
  A = φ(Q_c) φ(K_c)ᵀ masked to j <= i, num = A V_c + φ(Q_c) S, den = A 1 + φ(Q_c) z, then
  S += φ(K_c)ᵀ V_c, z += Σ φ(K_c). reads (N_q + 2 N_k) d e + w, writes N_q d e.
  Parallelism is only batch x heads CTAs (a GPU port would split the sweep and pass
  chunk-boundary states through HBM; not modelled).

Bound: Θ(N d + N m d / B) HBM bytes non-causal (the state re-read per query tile), Θ(N d)
causal (state on chip); FLOPs Θ(N m d) (Θ(N d²) for elu+1, m = d).

Random-feature stabilization: keys' features carry a factor exp(E) (RFA: |u|²/2, Performer:
w·u - |u|²/2) that overflows fp32 for large logits. The kernels keep a running maximum c of E
over the keys seen so far, use exp(E - c), and rescale S, z by exp(c_old - c_new) when c
grows, the online-softmax trick applied to the state; it cancels in num/den. Queries drop
their own per-row factor, which cancels in num/den as well.

Per-op accounting of φ for r rows (a max/add/mul/select is one "other" op, sin/cos/exp one
special-function op), u = x sqrt(scale):
  elu+1 (q and k):    exp r d,  other 3 r d (min, add, select)
  trig query:         other r d + 2 r P,          exp 2 r P,        matmul 2 r P d
  trig key:           other 3 r d + 3 r + 2 r P,  exp 2 r P + r,    matmul 2 r P d
  positive query:     other r d + 4 r P,          exp r P,          matmul 2 r P d
  positive key:       other 3 r d + r + 4 r P,    exp r P,          matmul 2 r P d
  key stabilizer, per key tile (trig, positive): other 1 + m d + m, exp 1
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

from algorithms.base import Plan, PlanError
from algorithms.common import (cdiv, finish_heads, head_view, iter_heads, new_output,
                               placeholder, placeholder_vector)
from hwmodels.memory import SramOverflowError
from hwmodels.primitives import (count_exp, count_load, count_other, load_rows, matmul_nn,
                                 matmul_nt, matmul_tn, store_rows)

KIND_ELU, KIND_TRIG, KIND_POSITIVE = 0, 1, 2
KIND_NAMES = {"elu": KIND_ELU, "trig": KIND_TRIG, "positive": KIND_POSITIVE}
BLOCK_CANDIDATES = (128, 64, 32, 16)
STATE_BYTES = 4          # S and z are fp32 accumulators
THREADS_PER_CTA = 128


@dataclass(frozen=True)
class FeaturePlan(Plan):
    """Tiles and random-feature settings of one feature-map attention run."""
    kind: str               # "elu", "trig" (RFA) or "positive" (Performer)
    features: int           # m: width of φ(x)
    projections: int        # P: rows of the random projection W (0 for elu+1)
    block: int              # B: rows per tile; chunk length C of the causal form
    smem_bytes: int         # largest kernel's SRAM footprint per CTA
    seed: int
    redraw: str             # "none": one W for all heads; "head": a fresh W per (batch, head)


# ---- planning ----------------------------------------------------------------------------

def buffers(kind: str, causal: bool, block: int, d: int, m: int, p: int, e: int) -> dict:
    """SRAM buffers of the largest kernel for this kind and mask."""
    w = {"W": p * d * e} if p else {}
    state = {"S": m * d * STATE_BYTES, "z": m * STATE_BYTES}
    if causal:
        return {"Q_c": block * d * e, "K_c": block * d * e, "V_c": block * d * e, **w,
                "phiQ_c": block * m * e, "phiK_c": block * m * e,
                "A": block * block * STATE_BYTES, **state}
    state_kernel = {"K_j": block * d * e, "V_j": block * d * e, **w, "phiK_j": block * m * e,
                    **state}
    apply_kernel = {"Q_i": block * d * e, **w, "phiQ_i": block * m * e, **state}
    return max(state_kernel, apply_kernel, key=lambda b: sum(b.values()))


def make_plan(name: str, kind: str, wl, sram_bytes: int, features: int, projections: int,
              seed: int = 0, redraw: str = "none") -> FeaturePlan:
    """The largest tile whose kernel fits the SRAM budget; errors name the numbers."""
    if kind not in KIND_NAMES:
        raise PlanError(f"{name}: unknown feature kind {kind!r}")
    if features <= 0:
        raise PlanError(f"{name}: the feature count must be positive, got {features}")
    d, e = wl.head_dim, wl.elem_bytes
    for block in BLOCK_CANDIDATES:
        smem = sum(buffers(kind, wl.causal, block, d, features, projections, e).values())
        if smem <= sram_bytes:
            return FeaturePlan(kind=kind, features=features, projections=projections,
                               block=block, smem_bytes=smem, seed=seed, redraw=redraw)
    smallest = buffers(kind, wl.causal, BLOCK_CANDIDATES[-1], d, features, projections, e)
    raise SramOverflowError(
        f"{name} with head_dim {d} and {features} features needs at least "
        f"{sum(smallest.values()):,} bytes of SRAM per CTA "
        f"({', '.join(f'{k} {v:,} B' for k, v in smallest.items())}) but the budget is "
        f"{sram_bytes:,} bytes; use fewer --features, a smaller --head-dim or a larger --sram-kb")


# ---- running -----------------------------------------------------------------------------

def run_features(name: str, wl, p: FeaturePlan, inputs, rec, compute: bool,
                 projection_for_head) -> dict:
    """Launch the kernels; ``projection_for_head(b, h)`` gives W (P x d float32) or None."""
    d, m, e = wl.head_dim, p.features, wl.elem_bytes
    kind = KIND_NAMES[p.kind]
    sqrt_scale = math.sqrt(wl.scale)
    heads_total = wl.batch * wl.heads
    o = new_output(wl, compute)
    empty_w = np.zeros((0, d), dtype=np.float32)
    if wl.causal:
        c = rec.kernel(f"{name}_causal", ctas=heads_total,
                       buffers=buffers(p.kind, True, p.block, d, m, p.projections, e),
                       threads_per_cta=THREADS_PER_CTA, matmul_dtype=wl.dtype)
        for b, h, q, k, v in iter_heads(wl, inputs, compute):
            w = _projection(projection_for_head, b, h, compute, empty_w, d)
            causal_head(c, q, k, v, w, head_view(o, b, h, compute), wl.seq_q, wl.seq_k, d, m,
                        p.projections, p.block, kind, sqrt_scale, e, compute)
        finish_heads(c, wl, compute)
        return {"o": o} if compute else {}
    # non-causal: state kernel (one CTA per head), then apply kernel (one CTA per Q tile)
    tq = cdiv(wl.seq_q, p.block)
    state_buf = {"K_j": p.block * d * e, "V_j": p.block * d * e,
                 **({"W": p.projections * d * e} if p.projections else {}),
                 "phiK_j": p.block * m * e, "S": m * d * STATE_BYTES, "z": m * STATE_BYTES}
    apply_buf = {"Q_i": p.block * d * e,
                 **({"W": p.projections * d * e} if p.projections else {}),
                 "phiQ_i": p.block * m * e, "S": m * d * STATE_BYTES, "z": m * STATE_BYTES}
    cs = rec.kernel(f"{name}_state", ctas=heads_total, buffers=state_buf,
                    threads_per_cta=THREADS_PER_CTA, matmul_dtype=wl.dtype)
    ca = rec.kernel(f"{name}_apply", ctas=tq * heads_total, buffers=apply_buf,
                    threads_per_cta=THREADS_PER_CTA, matmul_dtype=wl.dtype)
    for b, h, q, k, v in iter_heads(wl, inputs, compute):
        w = _projection(projection_for_head, b, h, compute, empty_w, d)
        s_hbm = np.zeros((m if compute else 0, d), dtype=np.float32)   # S in HBM (fp32)
        z_hbm = np.zeros((1 if compute else 0, m), dtype=np.float32)   # z in HBM (fp32)
        state_head(cs, k, v, w, s_hbm, z_hbm, wl.seq_k, d, m, p.projections, p.block, kind,
                   sqrt_scale, e, compute)
        apply_head(ca, q, w, s_hbm, z_hbm, head_view(o, b, h, compute), wl.seq_q, d, m,
                   p.projections, p.block, kind, sqrt_scale, e, compute)
    finish_heads(cs, wl, compute)
    finish_heads(ca, wl, compute)
    return {"o": o} if compute else {}


def _projection(projection_for_head, b, h, compute, empty_w, d):
    if projection_for_head is None:
        return empty_w
    if not compute:
        return placeholder(d)
    return np.ascontiguousarray(projection_for_head(b, h), dtype=np.float32)


@njit(cache=True)
def load_projection(c, w, p, d, e):
    """W (P x d, storage dtype) HBM -> SRAM, once per CTA."""
    if p > 0:
        count_load(c, p * d * e)
    return w


@njit(cache=True)
def query_features(c, x, w, rows, d, m, p, kind, sqrt_scale, e, compute):
    """φ_q of a (rows x d) SRAM tile -> (rows x m) float32. Per-row constant factors that
    cancel in num/den are dropped (see the module docstring)."""
    if kind == KIND_ELU:
        count_exp(c, rows * d)
        count_other(c, 3 * rows * d)
        if compute:
            return _elu_plus_one(x)
        return np.empty((0, 0), dtype=np.float32)
    count_other(c, rows * d)                                   # u = x sqrt(scale)
    u = x * np.float32(sqrt_scale) if compute else x
    proj = matmul_nt(c, u, w, rows, p, d, e, compute)          # W u  (rows x P)
    if kind == KIND_TRIG:
        count_exp(c, 2 * rows * p)                             # sin, cos
        count_other(c, 2 * rows * p)                           # x 1/sqrt(D)
        if compute:
            return _sin_cos(proj, np.float32(1.0 / math.sqrt(p)))
        return np.empty((0, 0), dtype=np.float32)
    count_other(c, 2 * rows * p)                               # row max, subtract
    count_exp(c, rows * p)
    count_other(c, 2 * rows * p)                               # exp(.) x 1/sqrt(M) ... as 2 ops
    if compute:
        mx = _rowmax(proj)
        return np.exp(proj - mx[:, None]) * np.float32(1.0 / math.sqrt(p))
    return np.empty((0, 0), dtype=np.float32)


@njit(cache=True)
def key_features(c, x, w, rows, d, m, p, kind, sqrt_scale, shift, e, compute):
    """φ_k of a (rows x d) SRAM tile relative to the running shift c of the exponents.
    Returns (phi (rows x m), new shift)."""
    if kind == KIND_ELU:
        count_exp(c, rows * d)
        count_other(c, 3 * rows * d)
        if compute:
            return _elu_plus_one(x), shift
        return np.empty((0, 0), dtype=np.float32), shift
    count_other(c, rows * d)                                   # u = x sqrt(scale)
    count_other(c, 2 * rows * d)                               # |u|²
    u = x * np.float32(sqrt_scale) if compute else x
    proj = matmul_nt(c, u, w, rows, p, d, e, compute)          # W u  (rows x P)
    new_shift = shift
    phi = np.empty((0, 0), dtype=np.float32)
    if kind == KIND_TRIG:
        count_other(c, 2 * rows)                               # E = |u|²/2, tile max of E
        count_other(c, rows)                                   # E - c
        count_exp(c, rows)                                     # exp(E - c)
        count_exp(c, 2 * rows * p)                             # sin, cos
        count_other(c, 2 * rows * p)                           # x exp(E - c)/sqrt(D)
        if compute:
            half_sq = np.float32(0.5) * (u * u).sum(axis=1)
            new_shift = max(shift, np.float32(half_sq.max())) if rows else shift
            factor = np.exp(half_sq - new_shift) * np.float32(1.0 / math.sqrt(p))
            phi = _sin_cos(proj, np.float32(1.0)) * factor[:, None]
        return phi, new_shift
    count_other(c, rows + rows * p)                            # E = W u - |u|²/2
    count_other(c, rows * p)                                   # tile max of E
    count_other(c, rows * p)                                   # E - c
    count_exp(c, rows * p)
    count_other(c, rows * p)                                   # x 1/sqrt(M)
    if compute:
        expo = proj - (np.float32(0.5) * (u * u).sum(axis=1))[:, None]
        new_shift = max(shift, np.float32(expo.max())) if rows else shift
        phi = np.exp(expo - new_shift) * np.float32(1.0 / math.sqrt(p))
    return phi, new_shift


@njit(cache=True)
def rescale_state(c, s, z, old_shift, new_shift, m, d, kind, compute):
    """S, z *= exp(c_old - c_new): keeps the state relative to the running shift."""
    if kind == KIND_ELU:
        return
    count_other(c, 1 + m * d + m)
    count_exp(c, 1)
    if compute and new_shift != old_shift and old_shift != -np.inf:
        f = np.float32(np.exp(old_shift - new_shift))
        s *= f
        z *= f


@njit(cache=True)
def state_head(c, k, v, w, s_hbm, z_hbm, seq_k, d, m, p, block, kind, sqrt_scale, e, compute):
    """Kernel 1 (one CTA per head): S = Σ φ(k) vᵀ, z = Σ φ(k), written to HBM in fp32."""
    w_s = load_projection(c, w, p, d, e)
    s = np.zeros((m if compute else 0, d), dtype=np.float32)
    z = np.zeros(m if compute else 0, dtype=np.float32)
    shift = np.float32(-np.inf) if kind != KIND_ELU else np.float32(0.0)
    for c0 in range(0, seq_k, block):
        c1 = min(c0 + block, seq_k)
        cols = c1 - c0
        kj = load_rows(c, k, c0, c1, d, e)                     # K_j -> SRAM
        vj = load_rows(c, v, c0, c1, d, e)                     # V_j -> SRAM
        phik, new_shift = key_features(c, kj, w_s, cols, d, m, p, kind, sqrt_scale, shift, e,
                                       compute)
        rescale_state(c, s, z, shift, new_shift, m, d, kind, compute)
        shift = new_shift
        kv = matmul_tn(c, phik, vj, m, d, cols, e, compute)    # S += φ(K_j)ᵀ V_j
        count_other(c, cols * m)                               # z += colsum φ(K_j)
        if compute:
            s += kv
            z += phik.sum(axis=0)
    store_rows(c, s_hbm, 0, s, m, d, STATE_BYTES, compute)     # S -> HBM (fp32)
    store_rows(c, z_hbm, 0, z.reshape((1, z.shape[0])), 1, m, STATE_BYTES, compute)


@njit(cache=True)
def apply_head(c, q, w, s_hbm, z_hbm, o, seq_q, d, m, p, block, kind, sqrt_scale, e, compute):
    """Kernel 2 (one CTA per Q tile): O_i = φ(Q_i) S / φ(Q_i) z."""
    for r0 in range(0, seq_q, block):
        r1 = min(r0 + block, seq_q)
        rows = r1 - r0
        w_s = load_projection(c, w, p, d, e)
        s = load_rows(c, s_hbm, 0, m, d, STATE_BYTES)          # S -> SRAM (fp32)
        z = load_rows(c, z_hbm, 0, 1, m, STATE_BYTES)          # z -> SRAM (fp32)
        qi = load_rows(c, q, r0, r1, d, e)                     # Q_i -> SRAM
        phiq = query_features(c, qi, w_s, rows, d, m, p, kind, sqrt_scale, e, compute)
        num = matmul_nn(c, phiq, s, rows, d, m, e, compute)    # φ(Q_i) S
        count_other(c, 2 * rows * m)                           # φ(Q_i) z
        count_other(c, rows * d)                               # num / den
        oi = np.empty((0, 0), dtype=np.float32)
        if compute:
            den = np.dot(phiq, z[0])
            oi = _divide_rows(num, den)
        store_rows(c, o, r0, oi, rows, d, e, compute)          # O_i -> HBM


@njit(cache=True)
def causal_head(c, q, k, v, w, o, seq_q, seq_k, d, m, p, block, kind, sqrt_scale, e, compute):
    """Chunked causal form (one CTA per head). Query row i sees key j <= i + (N_k - N_q)
    (bottom-right aligned); keys before the first query chunk's diagonal are folded into
    the state first, in chunks of ``block``."""
    off = seq_k - seq_q
    w_s = load_projection(c, w, p, d, e)
    s = np.zeros((m if compute else 0, d), dtype=np.float32)
    z = np.zeros(m if compute else 0, dtype=np.float32)
    shift = np.float32(-np.inf) if kind != KIND_ELU else np.float32(0.0)
    done = 0                                                   # keys folded into (S, z)
    for r0 in range(0, seq_q, block):
        r1 = min(r0 + block, seq_q)
        rows = r1 - r0
        k_start = max(0, min(seq_k, r0 + off))                 # first key on the diagonal
        k_end = max(0, min(seq_k, r1 + off))
        # -- fold the keys every row of this chunk sees into the state (only when N_k > N_q) --
        while done < k_start:
            c1 = min(done + block, k_start)
            kj = load_rows(c, k, done, c1, d, e)
            vj = load_rows(c, v, done, c1, d, e)
            shift = _fold(c, kj, vj, w_s, s, z, c1 - done, d, m, p, kind, sqrt_scale, shift,
                          e, compute)
            done = c1
        qi = load_rows(c, q, r0, r1, d, e)                     # Q_c -> SRAM
        cols = k_end - k_start
        kj = load_rows(c, k, k_start, k_end, d, e)             # K_c -> SRAM
        vj = load_rows(c, v, k_start, k_end, d, e)             # V_c -> SRAM
        phiq = query_features(c, qi, w_s, rows, d, m, p, kind, sqrt_scale, e, compute)
        live = compute and cols > 0                            # (no key tile when N_q > N_k)
        phik, new_shift = key_features(c, kj, w_s, cols, d, m, p, kind, sqrt_scale, shift, e,
                                       live)
        rescale_state(c, s, z, shift, new_shift, m, d, kind, live)
        shift = new_shift
        # -- intra-chunk part: A = φ(Q_c) φ(K_c)ᵀ, lower triangle --
        a = matmul_nt(c, phiq, phik, rows, cols, m, e, live)
        count_other(c, rows * cols)                            # causal select
        if live:
            _mask_lower(a, r0, k_start, off)
        count_other(c, rows * cols)                            # row sums of A
        pv = matmul_nn(c, a, vj, rows, d, cols, e, live)       # A V_c
        # -- inter-chunk part from the state --
        num = matmul_nn(c, phiq, s, rows, d, m, e, compute)    # φ(Q_c) S
        count_other(c, 2 * rows * m)                           # φ(Q_c) z
        count_other(c, rows * d + rows)                        # num += A V, den += A 1
        count_other(c, rows * d)                               # num / den
        oi = np.empty((0, 0), dtype=np.float32)
        if compute:
            den = np.dot(phiq, z)
            if live:
                den = den + a.sum(axis=1)
                num = num + pv
            oi = _divide_rows(num, den)
        store_rows(c, o, r0, oi, rows, d, e, compute)          # O_c -> HBM
        # -- fold this chunk's keys into the state, from the tiles already in SRAM --
        kv = matmul_tn(c, phik, vj, m, d, cols, e, live)
        count_other(c, cols * m)
        if live:
            s += kv
            z += phik.sum(axis=0)
        done = k_end


@njit(cache=True)
def _fold(c, kj, vj, w_s, s, z, cols, d, m, p, kind, sqrt_scale, shift, e, compute):
    phik, new_shift = key_features(c, kj, w_s, cols, d, m, p, kind, sqrt_scale, shift, e,
                                   compute)
    rescale_state(c, s, z, shift, new_shift, m, d, kind, compute)
    kv = matmul_tn(c, phik, vj, m, d, cols, e, compute)
    count_other(c, cols * m)
    if compute:
        s += kv
        z += phik.sum(axis=0)
    return new_shift


@njit(cache=True)
def _mask_lower(a, r0, c0, off):
    """Zero A[i, j] where key c0 + j is after query r0 + i's diagonal."""
    rows, cols = a.shape
    for i in range(rows):
        for j in range(max(0, r0 + i + off - c0 + 1), cols):
            a[i, j] = 0.0


@njit(cache=True)
def _divide_rows(num, den):
    """num / den row-wise; a row with den == 0 (no visible key) outputs zeros."""
    out = np.zeros_like(num)
    for i in range(num.shape[0]):
        if den[i] != 0.0:
            out[i] = num[i] / den[i]
    return out


@njit(cache=True)
def _elu_plus_one(x):
    return np.where(x > 0, x + np.float32(1.0), np.exp(np.minimum(x, np.float32(0.0))))


@njit(cache=True)
def _sin_cos(proj, factor):
    rows, p = proj.shape
    out = np.empty((rows, 2 * p), dtype=np.float32)
    out[:, :p] = np.sin(proj) * factor
    out[:, p:] = np.cos(proj) * factor
    return out


@njit(cache=True)
def _rowmax(s):
    out = np.empty(s.shape[0], dtype=np.float32)
    for i in range(s.shape[0]):
        out[i] = s[i].max() if s.shape[1] else np.float32(0.0)
    return out


# ---- float64 reference of the same math ---------------------------------------------------

def reference_features(kind: str, x: np.ndarray, w: np.ndarray | None, scale: float,
                       is_key: bool) -> np.ndarray:
    """φ(x) in float64 as the papers define it (no stabilization, no dropped factors)."""
    x = np.asarray(x, dtype=np.float64)
    if kind == "elu":
        return np.where(x > 0, x + 1.0, np.exp(np.minimum(x, 0.0)))
    u = x * math.sqrt(scale)
    proj = u @ np.asarray(w, dtype=np.float64).T
    sq = 0.5 * (u * u).sum(axis=-1, keepdims=True)
    p = w.shape[0]
    if kind == "trig":
        phi = np.concatenate([np.sin(proj), np.cos(proj)], axis=-1) / math.sqrt(p)
        return phi * np.exp(sq) if is_key else phi
    return np.exp(proj - sq) / math.sqrt(p)


def reference_attention(kind: str, q, k, v, causal: bool, scale: float, w_for_head) -> np.ndarray:
    """float64 feature-map attention, (B, H, N_q, d); ``w_for_head(b, h)`` gives W or None."""
    batch, heads, seq_q, _ = q.shape
    group = heads // k.shape[1]
    seq_k = k.shape[2]
    out = np.zeros(q.shape, dtype=np.float64)
    for b in range(batch):
        for h in range(heads):
            w = w_for_head(b, h)
            fq = reference_features(kind, q[b, h], w, scale, False)
            fk = reference_features(kind, k[b, h // group], w, scale, True)
            a = fq @ fk.T                                          # (N_q, N_k)
            if causal:
                i = np.arange(seq_q)[:, None]
                j = np.arange(seq_k)[None, :]
                a = np.where(j <= i + (seq_k - seq_q), a, 0.0)
            den = a.sum(axis=1)
            num = a @ np.asarray(v[b, h // group], dtype=np.float64)
            out[b, h] = np.where(den[:, None] != 0, num / np.where(den == 0, 1, den)[:, None], 0)
    return out


def check_positive(value) -> str | None:
    return None if value > 0 else "must be a positive integer"


def feature_io_bound(wl, p: FeaturePlan) -> float:
    """Θ(N d + N m d / B) bytes, all heads: Q, K, V, O once, plus the fp32 state (m x d) per
    query tile, which the non-causal apply kernel reloads; the causal sweep keeps the state
    on chip, so its bound is Θ(N d)."""
    e, d = wl.elem_bytes, wl.head_dim
    state = 0 if wl.causal else wl.seq_q * p.features * d * STATE_BYTES / p.block
    per_head = 2 * (wl.seq_q + wl.seq_k) * d * e + state
    return float(per_head * wl.batch * wl.heads)
