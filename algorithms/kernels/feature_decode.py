"""Recurrent decoding for feature-map attention (``linear``, ``rfa``, ``performer``):
a decode step reads and writes a per-head state instead of a K/V cache.

Katharopoulos et al. 2020 (arXiv 2006.16236), §3.4 ("Transformers are RNNs"): causal linear
attention is a recurrence with state S_i = S_{i−1} + φ(k_i) v_iᵀ (m × d) and normalizer
z_i = z_{i−1} + φ(k_i) (m), and output o_i = φ(q_i)ᵀ S_i / φ(q_i)ᵀ z_i. Generating a token
therefore costs the same at any context length: the state replaces the cache. RFA (Peng et
al. 2021, arXiv 2103.02143: its causal form is this recurrence) and Performer (Choromanski
et al. 2021, arXiv 2009.14794: unidirectional FAVOR+ as prefix sums) share it, with their
own φ (``feature_attention`` documents the three maps).

Kernel ``<name>_decode``: S_c CTAs per (sequence, state head), each owning a range of the
d value columns of S, V and O (the flash-decoding idea applied to the state: at batch 1 a
CTA per state head would leave most SMs idle). The state belongs to a KV head (φ(k) vᵀ
depends on the key/value head and the shared W), so the g = H/G query heads of a group read
it once — except Performer with ``--redraw head``, whose W differs per query head: one
state per query head. Per step (N_q new tokens, in order), each CTA:
  1. loads the queries of the g heads (g N_q d e), the new keys (N_q d e), its value columns,
     W (P d e; none for elu+1) and z (m fp32) — φ and the denominators need every feature,
     so these are re-read by each column CTA (W and the queries are shared: L2 hits);
  2. computes φ(k) and φ(q) for all m features (positive features: the key stabilizer
     c_new = max(c_old, max exponent) and the query row max are known before the state is
     touched), rescales z by exp(c_old − c_new), and per token z += φ(k), den = φ(q) · z;
  3. streams its columns of S in slices of m_t feature rows: load, rescale, per token
     S_t += φ_t(k) v_tᵀ and num += φ_t(q) S_t, store;
  4. o = num / den for its columns; the first column CTA writes z (and the shift) back.
Bytes per step and state head (e storage bytes; fp32 state; s = 4 B for the positive
features' shift c, else 0):
    reads  S_c (g N_q d e + N_q d e + P d e + 4 m + s) + N_q d e + 4 m d
    writes 4 m d + 4 m + s + g N_q d e
— constant in the context length N. S_c fills the SMs (``splitkv.choose_splits``) but stays
below the point where the re-reads exceed the state traffic (``feature_attention``).
FLOPs: φ as ``feature_attention``'s table per CTA (N_q key rows, g N_q query rows), matmul
2 m w_c per token for the update and 2 g m w_c for φ(q) S per CTA of w_c columns; other
m + 2 g m per token (z, den) per CTA, w_c g N_q for the divide, and with positive features
1 + m (z) and 1 + m_t w_c per slice (S) rescaling ops and one exp each. Outside φ (whose
maxes and selects are the table's ALU ops) these are all adds, multiplies and divides (FMA
pipe). Below fp32, per token and slice m_t (φ_t(k)) + g m_t (φ_t(q)) + m_t w_c (S_t, fp32,
after its update) values are converted for the two products, and g N_q w_c for o.

The state that earlier steps built is set up on the host (float64, rounded to fp32, not
counted: it is what those steps wrote). A real model would initialise it in the prefill
pass (the causal sweep ends with exactly this state on chip).
"""
from __future__ import annotations

import math

import numpy as np

from algorithms.kernels.feature_kernels import (KIND_ELU, KIND_POSITIVE, STATE_BYTES,
                                                key_features, query_features)
from hwmodels.compiled import compiled
from hwmodels.primitives import (count_convert, count_exp, count_load, count_matmul, count_other,
                                 count_store, count_store_result, load_rows)

SHIFT_BYTES = 4          # the positive features' running key stabilizer c (fp32)
SLICE_ROWS = (1024, 512, 256, 128, 64, 32, 16, 8, 4, 2, 1)


def decode_buffers(g: int, nq: int, d: int, m: int, p: int, slice_rows: int, wc: int,
                   e: int) -> dict:
    """SRAM of one decode CTA (``wc`` value columns): the new tokens, the queries, one W
    slice, the features of all m columns, z, one state slice and num/den."""
    rows = g * nq
    w = {"W_slice": min(p, slice_rows) * d * e} if p else {}
    return {"q": rows * d * e, "k": nq * d * e, "v_cols": nq * wc * e, **w,
            "phi_k": nq * m * STATE_BYTES, "phi_q": rows * m * STATE_BYTES,
            "z": m * STATE_BYTES, "S_t": slice_rows * wc * STATE_BYTES,
            "num_den": rows * (wc + 1) * STATE_BYTES}


def plan_slice(g: int, nq: int, d: int, m: int, p: int, wc: int, e: int, sram_bytes: int):
    """(feature rows per state slice, SRAM bytes): the largest slice whose CTA fits."""
    for rows in (m,) + tuple(r for r in SLICE_ROWS if r < m):
        smem = sum(decode_buffers(g, nq, d, m, p, rows, wc, e).values())
        if smem <= sram_bytes:
            return rows, smem
    return None


COLUMN_UNIT = 8          # value columns per unit of the column split (an MMA's n)


def column_ranges(d: int, splits: int) -> np.ndarray:
    """(S_c, 2) int64: the value columns of each CTA, whole units of 8, as even as they go."""
    units = -(-d // COLUMN_UNIT)
    n = max(1, min(splits, units))
    edges = [i * units // n for i in range(n + 1)]
    return np.array([(edges[i] * COLUMN_UNIT, min(d, edges[i + 1] * COLUMN_UNIT))
                     for i in range(n)], dtype=np.int64)


def state_bytes(m: int, d: int, positive: bool) -> int:
    """One head's recurrent state: S (m x d) and z (m) in fp32, plus the shift c."""
    return STATE_BYTES * (m * d + m) + (SHIFT_BYTES if positive else 0)


@compiled
def recurrent_step(c, q, k, v, w, s, z, shift, o, nq, g, d, p, m, slice_rows, cols, kind,
                   in_scale, e, compute):
    """One (sequence, state head) of a decode step, over its column CTAs.

    q (g, N_q, d) the queries of the heads sharing the state; k, v (N_q, d) the new tokens;
    w (P, d) the projection (empty for elu+1); s (m, d), z (m,), shift (1,) the state in
    HBM, updated in place; o (g, N_q, d) out; cols (S_c, 2) the value columns [c0, c1) of
    S, V and O each CTA owns. Every CTA computes φ(k), φ(q), z and the denominators itself
    (they need all m features), so only the first writes z and the shift back."""
    rows = g * nq
    old = np.float32(-np.inf)
    z0 = np.empty(0, dtype=np.float32)
    qr = np.empty((0, 0), dtype=np.float32)
    if compute:
        if kind == KIND_POSITIVE:
            old = shift[0]
        z0 = z.copy()                                            # every CTA's private copy
        qr = np.ascontiguousarray(q).reshape((rows, d))
    for sc in range(cols.shape[0]):
        c0, c1 = cols[sc, 0], cols[sc, 1]
        wc = c1 - c0
        count_load(c, rows * d * e)                              # queries
        kt = load_rows(c, k, 0, nq, d, e)                        # new keys (φ needs them whole)
        count_load(c, nq * wc * e)                               # the CTA's value columns
        if kind != KIND_ELU:
            load_rows(c, w, 0, p, d, e)                          # W
        if kind == KIND_POSITIVE:
            count_load(c, SHIFT_BYTES)
        phik, new = key_features(c, kt, w, nq, d, d, p, p, kind, in_scale, old, e, compute)
        phiq, _ = query_features(c, qr, w, rows, d, d, p, p, kind, in_scale,
                                 np.full(rows, -np.inf, dtype=np.float32), e, compute)
        count_load(c, m * STATE_BYTES)                           # z, whole
        zt = z0.copy() if compute else z0
        den = np.zeros(rows if compute else 0, dtype=np.float32)
        if kind == KIND_POSITIVE:
            count_other(c, 1 + m)                                # z *= exp(c_old − c_new)
            count_exp(c, 1)
            if compute and old != -np.inf:
                zt *= np.float32(np.exp(old - new))
        for i in range(nq):                                      # tokens in order: causal
            count_other(c, m)                                    # z += φ(k_i)
            count_other(c, 2 * g * m)                            # den = φ(q) · z
            if compute:
                zt += phik[i]
                for j in range(g):
                    den[j * nq + i] = np.dot(phiq[j * nq + i], zt)
        num = np.zeros((rows if compute else 0, wc), dtype=np.float32)
        for f0 in range(0, m, slice_rows):
            f1 = min(f0 + slice_rows, m)
            mt = f1 - f0
            count_load(c, mt * wc * STATE_BYTES)                 # S[f0:f1, c0:c1]
            st = s[f0:f1, c0:c1]
            if kind == KIND_POSITIVE:
                count_other(c, 1 + mt * wc)                      # S_t *= exp(c_old − c_new)
                count_exp(c, 1)
                if compute and old != -np.inf:
                    st *= np.float32(np.exp(old - new))
            for i in range(nq):
                count_convert(c, mt, e)                          # φ_t(k_i) -> the MMA's dtype
                count_matmul(c, mt, wc, 1, e)                    # S_t += φ_t(k_i) v_iᵀ
                count_convert(c, g * mt + mt * wc, e)            # φ_t(q), updated fp32 S_t
                count_matmul(c, g, wc, mt, e)                    # num += φ_t(q) S_t
                if compute:
                    st += np.outer(np.ascontiguousarray(phik[i, f0:f1]),
                                   np.ascontiguousarray(v[i, c0:c1]))
                    for j in range(g):
                        r = j * nq + i
                        num[r] += np.dot(np.ascontiguousarray(phiq[r, f0:f1]),
                                         np.ascontiguousarray(st))
            count_store(c, mt * wc * STATE_BYTES)                # S_t back (in place above)
        if sc == 0:
            count_store(c, m * STATE_BYTES)                      # z
            if compute:
                z[:] = zt
            if kind == KIND_POSITIVE:
                count_store(c, SHIFT_BYTES)
                if compute:
                    shift[0] = new
        count_other(c, rows * wc)                                # o = num / den
        count_store_result(c, rows * wc, e)                      # o to the storage dtype
        if compute:
            for r in range(rows):
                if den[r] != 0:
                    o[r // nq, r % nq, c0:c1] = num[r] / den[r]
                else:
                    o[r // nq, r % nq, c0:c1] = 0.0


# ---- host side ------------------------------------------------------------------------------

def prefix_state(kind: str, k, v, w, in_scale: float, p_norm: int):
    """(S, z, shift) float32 of the tokens before this step, computed in float64 with the
    kernel's conventions (positive features relative to their largest exponent)."""
    k = np.asarray(k, np.float64)
    v = np.asarray(v, np.float64)
    if kind == "elu":
        phi = np.where(k > 0, k + 1.0, np.exp(np.minimum(k, 0.0)))
        shift = -np.inf
    elif kind == "trig":
        nrm = np.linalg.norm(k, axis=-1, keepdims=True)
        proj = (k / np.where(nrm > 0, nrm, 1.0) * in_scale) @ np.asarray(w, np.float64).T
        phi = np.concatenate([np.sin(proj), np.cos(proj)], axis=-1) / math.sqrt(p_norm)
        shift = -np.inf
    else:
        u = k * in_scale
        expo = u @ np.asarray(w, np.float64).T - 0.5 * (u * u).sum(-1, keepdims=True)
        shift = float(expo.max()) if len(k) else -np.inf
        phi = np.exp(expo - shift) / math.sqrt(p_norm) if len(k) else expo
    s = phi.T @ v
    z = phi.sum(axis=0)
    return (s.astype(np.float32), z.astype(np.float32),
            np.array([shift], dtype=np.float32))
