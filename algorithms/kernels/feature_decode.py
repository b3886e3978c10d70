"""Recurrent decoding for feature-map attention (``linear``, ``rfa``, ``performer``):
a decode step reads and writes a per-head state instead of a K/V cache.

Katharopoulos et al. 2020 (arXiv 2006.16236), §3.4 ("Transformers are RNNs"): causal linear
attention is a recurrence with state S_i = S_{i−1} + φ(k_i) v_iᵀ (m × d) and normalizer
z_i = z_{i−1} + φ(k_i) (m), and output o_i = φ(q_i)ᵀ S_i / φ(q_i)ᵀ z_i. Generating a token
therefore costs the same at any context length: the state replaces the cache. RFA (Peng et
al. 2021, arXiv 2103.02143, §3: "RFA as a recurrent network") and Performer (Choromanski
et al. 2021, arXiv 2009.14794, §2: the prefix-sum form of unidirectional FAVOR+) share it,
with their own φ (``feature_attention`` documents the three maps).

Kernel ``<name>_decode``: one CTA per (sequence, state head). The state belongs to a KV head
(φ(k) vᵀ depends on the key/value head and the shared W), so the g = H/G query heads of a
group read it once — except Performer with ``--redraw head``, whose W differs per query
head: one state per query head. Per step (N_q new tokens, in order):
  1. load the new tokens' k, v (2 N_q d e) and the g heads' queries (g N_q d e), and W
     (P d e; none for elu+1); compute φ(k) and φ(q) for all m features (positive features:
     the key stabilizer c_new = max(c_old, max exponent) and the query row max are known
     before the state is touched, so one pass over the state suffices);
  2. stream the state in slices of m_t feature rows: load S_t, z_t (fp32), rescale them by
     exp(c_old − c_new) (positive features), then for each new token: S_t += φ_t(k) vᵀ,
     z_t += φ_t(k), num += φ_t(q) S_t, den += φ_t(q) · z_t; store S_t, z_t back;
  3. o = num / den for the g N_q rows; store O.
Bytes per step and state head (e storage bytes; state fp32; +4 B read and written for the
positive features' shift c):
    reads  2 N_q d e + g N_q d e + P d e + 4 (m d + m)
    writes 4 (m d + m) + g N_q d e
— constant in the context length N. FLOPs: φ as ``feature_attention``'s table (N_q key
rows, g N_q query rows), matmul 2 m d per token for the update and 2 g m d per token for
φ(q) S; other m (z) + 2 g m (φ(q)·z) per token and slice-count-independent rescaling
(1 + m d + m other, 1 exp per slice, positive only), g N_q d for the divide.

The state that earlier steps built is set up on the host (float64, rounded to fp32, not
counted: it is what those steps wrote). A real model would initialise it in the prefill
pass (the causal sweep ends with exactly this state on chip).
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from algorithms.kernels.feature_kernels import (KIND_ELU, KIND_POSITIVE, STATE_BYTES,
                                                key_features, query_features, rescale_state)
from hwmodels.primitives import (count_load, count_matmul, count_other, count_store,
                                 load_rows, load_vector, store_rows, store_vector)

SHIFT_BYTES = 4          # the positive features' running key stabilizer c (fp32)
SLICE_ROWS = (1024, 512, 256, 128, 64, 32, 16, 8, 4, 2, 1)


def decode_buffers(g: int, nq: int, d: int, m: int, p: int, slice_rows: int, e: int) -> dict:
    """SRAM of one decode CTA: the new tokens, the queries, one W slice, the features of all
    m columns, one state slice and the num/den accumulators."""
    rows = g * nq
    w = {"W_slice": min(p, slice_rows) * d * e} if p else {}
    return {"q": rows * d * e, "k_v": 2 * nq * d * e, **w, "phi_k": nq * m * STATE_BYTES,
            "phi_q": rows * m * STATE_BYTES, "S_t": slice_rows * d * STATE_BYTES,
            "z_t": slice_rows * STATE_BYTES, "num_den": rows * (d + 1) * STATE_BYTES}


def plan_slice(g: int, nq: int, d: int, m: int, p: int, e: int, sram_bytes: int):
    """(feature rows per state slice, SRAM bytes): the largest slice whose CTA fits."""
    for rows in (m,) + tuple(r for r in SLICE_ROWS if r < m):
        smem = sum(decode_buffers(g, nq, d, m, p, rows, e).values())
        if smem <= sram_bytes:
            return rows, smem
    return None


def state_bytes(m: int, d: int, positive: bool) -> int:
    """One head's recurrent state: S (m x d) and z (m) in fp32, plus the shift c."""
    return STATE_BYTES * (m * d + m) + (SHIFT_BYTES if positive else 0)


@njit(cache=True)
def recurrent_step(c, q, k, v, w, s, z, shift, o, nq, g, d, p, m, slice_rows, kind, in_scale,
                   e, compute):
    """One (sequence, state head) of a decode step.

    q (g, N_q, d) the queries of the heads sharing the state; k, v (N_q, d) the new tokens;
    w (P, d) the projection (empty for elu+1); s (m, d), z (m,), shift (1,) the state in
    HBM, updated in place; o (g, N_q, d) out."""
    rows = g * nq
    count_load(c, rows * d * e)                                  # queries
    kt = load_rows(c, k, 0, nq, d, e)                            # new keys, values
    vt = load_rows(c, v, 0, nq, d, e)
    if kind != KIND_ELU:
        load_rows(c, w, 0, p, d, e)                              # W, streamed once
    old = np.float32(-np.inf)
    if kind == KIND_POSITIVE:
        count_load(c, SHIFT_BYTES)
        if compute:
            old = shift[0]
    qr = np.empty((0, 0), dtype=np.float32)
    if compute:
        qr = np.ascontiguousarray(q).reshape((rows, d))
    phik, new = key_features(c, kt, w, nq, d, d, p, p, kind, in_scale, old, e, compute)
    phiq, _ = query_features(c, qr, w, rows, d, d, p, p, kind, in_scale,
                             np.full(rows, -np.inf, dtype=np.float32), e, compute)
    num = np.zeros((rows if compute else 0, d), dtype=np.float32)
    den = np.zeros(rows if compute else 0, dtype=np.float32)
    for f0 in range(0, m, slice_rows):
        f1 = min(f0 + slice_rows, m)
        mt = f1 - f0
        st = load_rows(c, s, f0, f1, d, STATE_BYTES)
        zt = load_vector(c, z, f0, f1, STATE_BYTES)
        rescale_state(c, st, zt, old, new, mt, d, kind, compute)
        for i in range(nq):                                      # tokens in order: causal
            count_matmul(c, mt, d, 1, e)                         # S_t += φ_t(k_i) v_iᵀ
            count_other(c, mt)                                   # z_t += φ_t(k_i)
            count_matmul(c, g, d, mt, e)                         # num += φ_t(q) S_t
            count_other(c, 2 * g * mt)                           # den += φ_t(q) · z_t
            if compute:
                fk = np.ascontiguousarray(phik[i, f0:f1])
                st += np.outer(fk, vt[i])
                zt += fk
                for j in range(g):
                    r = j * nq + i
                    fq = np.ascontiguousarray(phiq[r, f0:f1])
                    num[r] += np.dot(fq, st)
                    den[r] += np.dot(fq, zt)
        store_rows(c, s, f0, st, mt, d, STATE_BYTES, compute)
        store_vector(c, z, f0, zt, mt, STATE_BYTES, compute)
    if kind == KIND_POSITIVE:
        count_store(c, SHIFT_BYTES)
        if compute:
            shift[0] = new
    count_other(c, rows * d)                                     # o = num / den
    count_store(c, rows * d * e)
    if compute:
        for r in range(rows):
            if den[r] != 0:
                o[r // nq, r % nq] = num[r] / den[r]
            else:
                o[r // nq, r % nq] = 0.0


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
