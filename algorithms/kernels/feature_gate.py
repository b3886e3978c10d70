"""Gated causal feature-map attention: RFA's recency gate (Peng et al. 2021, arXiv 2103.02143,
§3.2 "Learning with recency bias"), run as the chunked causal sweep of
``algorithms.kernels.feature_attention`` with the state decayed by the gates.

The paper's recurrence, for every token t (x_t its representation; here the key k_t, the
only per-token vector the kernel has):

    g_t = σ(w_g · x_t + b_g)
    S_t = g_t S_{t-1} + (1 - g_t) φ(k_t) v_tᵀ,      z_t = g_t z_{t-1} + (1 - g_t) φ(k_t)
    h_t = φ(q_t)ᵀ S_t / φ(q_t) · z_t

Chunked form (C-row chunks, as the ungated sweep): with λ_j = log g_j and the running sum
Λ_j = Σ_{s <= j} λ_s inside the chunk, key j contributes to query i >= j the weight
(1 - g_j) exp(Λ_i - Λ_j), and the state carried in from the previous chunks the factor
exp(Λ_i). So per chunk

    A = (φ(Q_c) φ(K_c)ᵀ) ⊙ D,  D_ij = (1 - g_j) exp(Λ_i - Λ_j) for j <= i, else 0
    num = A V_c + exp(Λ) ⊙ φ(Q_c) S,    den = A 1 + exp(Λ) ⊙ φ(Q_c) z
    S <- exp(Λ_last) S + (w ⊙ φ(K_c))ᵀ V_c,  z likewise,  w_j = (1 - g_j) exp(Λ_last - Λ_j)

Every exponent is <= 0 (λ <= 0), so nothing overflows. Gating needs N_k >= N_q (every
query has its own key position; the plan checks).

Counts added to the ungated sweep (r rows, C_k keys of a chunk or of a folded key block,
m features of the CTA's slice, e storage bytes):
  once per CTA:   reads (d + 1) e (w_g, b_g)
  per key block:  other 2 C_k d + C_k (logits) + 3 C_k (|y|, λ, 1 - g) + C_k (Λ), of which
                  C_k (|y|) on the ALU; exp 2 C_k (exp, log1p);
                  state: other 2 C_k (Λ_last - Λ_j, x (1 - g_j)) + C_k m (scale φ(K)),
                  exp C_k; decay S, z: other m d + m, exp 1
  per chunk:      other 3 r C_k (Λ_i - Λ_j, x (1 - g_j), A x D), exp r C_k;
                  other r d + r (inter-chunk num, den x exp(Λ_i)), exp r;
                  below fp32, r m conversions (the chunk's keys enter the state product as
                  w ⊙ φ(K_c), converted apart from the φ(K_c) of A = φ(Q_c) φ(K_c)ᵀ)
The causal select of A stays an ALU op as in the ungated sweep; the gate's other new ops
(the logits' dot products, Λ, the decay factors) run on the FMA pipe.
SRAM per CTA: the ungated sweep's buffers plus w_g, b_g ((d + 1) e) and three fp32 values
per chunk row (g, λ / Λ, weight).
"""
from __future__ import annotations

import numpy as np

from algorithms.base import PlanError
from algorithms.kernels.common import cdiv, finish_heads, head_view, iter_heads
from algorithms.kernels.feature_attention import causal_l2, causal_prologue_bytes, strip_readers
from algorithms.kernels.feature_kernels import (KIND_POSITIVE, STATE_BYTES, _cols,
                                                _divide_rows, combine_slices, key_features,
                                                query_features)
from hwmodels.compiled import compiled
from hwmodels.primitives import (count_alu, count_convert, count_exp, count_load, count_other,
                                 load_rows, matmul_nn, matmul_nt, matmul_tn, store_rows,
                                 store_vector)

GATE_VALUES_PER_ROW = 3      # g, λ (then Λ), the state weight: fp32 in SRAM


def gate_buffers(block: int, d: int, e: int) -> dict:
    """SRAM the gate adds to one sweep CTA."""
    return {"w_g": (d + 1) * e, "gates": GATE_VALUES_PER_ROW * block * STATE_BYTES}


def check_gate_workload(name: str, wl, kind: str) -> None:
    """The gate is a causal recurrence over key positions: causal, N_k >= N_q, and (in this
    simulator) not on Performer's stabilised positive features."""
    if getattr(wl, "decode", False):
        raise PlanError(f"{name}: --gate is simulated for prefill (the chunked sweep); the "
                        f"gated recurrent decode step is not: drop --gate or --decode")
    if not wl.causal:
        raise PlanError(f"{name}: --gate is RFA's causal recurrence (S_t = g_t S_t-1 + ...); "
                        f"add --causal or drop --gate")
    if wl.seq_k < wl.seq_q:
        raise PlanError(f"{name}: --gate needs --seq-k >= --seq (every query at its own key "
                        f"position), got {wl.seq_k} < {wl.seq_q}")
    if kind == "positive":
        raise PlanError(f"{name}: --gate is simulated for rfa's features only")


@compiled
def gates(c, x, wg, bg, rows, d, compute):
    """(λ = log g, 1 - g) of ``rows`` tokens, g = σ(w_g · x + b_g), computed stably:
    log σ(y) = min(y, 0) - log1p(e^-|y|), 1 - σ(y) = σ(-y)."""
    count_other(c, 2 * rows * d + rows)                        # y = x · w_g + b_g
    count_exp(c, 2 * rows)                                     # e^-|y|, log1p
    count_alu(c, rows)                                         # |y|
    count_other(c, 2 * rows)                                   # λ, 1 - g
    if not compute:
        return np.empty(0, dtype=np.float32), np.empty(0, dtype=np.float32)
    y = np.dot(x, wg) + bg
    soft = np.log1p(np.exp(-np.abs(y)))
    lam = (np.minimum(y, np.float32(0.0)) - soft).astype(np.float32)
    one_minus = np.exp(np.minimum(-y, np.float32(0.0)) - soft).astype(np.float32)
    return lam, one_minus


@compiled
def decay_fold(c, phik, vj, lam, one_minus, s, z, cols, m, d, e, compute):
    """S <- exp(Λ_last) S + (w ⊙ φ(K))ᵀ V, z likewise, w_j = (1 - g_j) exp(Λ_last - Λ_j).
    Counts the block's running sum Λ, which the chunk's intra part reuses."""
    count_other(c, cols)                                       # Λ = cumsum λ
    count_other(c, 2 * cols)                                   # Λ_last - Λ_j, x (1 - g_j)
    count_exp(c, cols)
    count_other(c, cols * m)                                   # w ⊙ φ(K)
    count_exp(c, 1)                                            # exp(Λ_last)
    count_other(c, m * d + m)                                  # S, z x exp(Λ_last)
    weighted = np.empty((0, 0), dtype=np.float32)
    if compute:
        cum = np.cumsum(lam)
        wt = one_minus * np.exp(cum[-1] - cum)
        weighted = phik * wt.reshape((cols, 1))
    count_convert(c, cols * m, e)                              # w ⊙ φ(K) -> the MMA's dtype
    kv = matmul_tn(c, weighted, vj, m, d, cols, e, compute)
    count_other(c, cols * m)                                   # z += colsum
    if compute:
        f = np.float32(np.exp(np.sum(lam)))
        s *= f
        z *= f
        s += kv
        z += weighted.sum(axis=0)


@compiled
def gated_causal_head(c, q, k, v, w, wg, bg, o, pnum, pden, t, seq_q, seq_k, d, p_total, u0,
                      u1, block, kind, in_scale, e, compute, sliced):
    """The gated chunked sweep, one CTA (the whole state, or feature slice t = units
    [u0, u1) writing un-normalised num, den for ``combine_slices``). Query row i sits at key
    position i + N_k - N_q; the keys before the first query are folded in first."""
    off = seq_k - seq_q
    nu = u1 - u0
    m = nu * (2 if kind == 1 else 1)                           # trig: sin and cos rows
    w_s = w[u0:u1] if kind != 0 else w
    if kind != 0:
        count_load(c, nu * d * e)                              # W (slice) -> SRAM, once
    count_load(c, (d + 1) * e)                                 # w_g, b_g -> SRAM, once
    s = np.zeros((m if compute else 0, d), dtype=np.float32)
    z = np.zeros(m if compute else 0, dtype=np.float32)
    shift = np.float32(0.0)
    done = 0
    for r0 in range(0, seq_q, block):
        r1 = min(r0 + block, seq_q)
        rows = r1 - r0
        k_start, k_end = r0 + off, r1 + off
        while done < k_start:                                  # -- keys before the queries --
            c1 = min(done + block, k_start)
            kj = load_rows(c, k, done, c1, d, e)
            vj = load_rows(c, v, done, c1, d, e)
            phik, _ = key_features(c, _cols(kj, u0, u1, kind), w_s, c1 - done, nu, d, nu,
                                   p_total, kind, in_scale, shift, e, compute)
            lam, one_minus = gates(c, kj, wg, bg, c1 - done, d, compute)
            decay_fold(c, phik, vj, lam, one_minus, s, z, c1 - done, m, d, e, compute)
            done = c1
        qi = load_rows(c, q, r0, r1, d, e)                     # Q_c -> SRAM
        kj = load_rows(c, k, k_start, k_end, d, e)             # K_c -> SRAM
        vj = load_rows(c, v, k_start, k_end, d, e)             # V_c -> SRAM
        mx0 = np.full(rows if compute else 0, -np.inf, dtype=np.float32)
        phiq, _ = query_features(c, _cols(qi, u0, u1, kind), w_s, rows, nu, d, nu, p_total,
                                 kind, in_scale, mx0, e, compute)
        phik, _ = key_features(c, _cols(kj, u0, u1, kind), w_s, rows, nu, d, nu, p_total,
                               kind, in_scale, shift, e, compute)
        lam, one_minus = gates(c, kj, wg, bg, rows, d, compute)
        # -- intra-chunk part: A = (φ(Q_c) φ(K_c)ᵀ) ⊙ D, lower triangle --
        count_convert(c, 2 * rows * m, e)                      # φ(Q_c), φ(K_c) -> MMA dtype
        a = matmul_nt(c, phiq, phik, rows, rows, m, e, compute)
        count_alu(c, rows * rows)                              # causal select
        count_other(c, 3 * rows * rows)                        # Λ_i - Λ_j, x (1 - g_j), A x D
        count_exp(c, rows * rows)
        cum = np.empty(0, dtype=np.float32)
        if compute:
            cum = np.cumsum(lam)
            for i in range(rows):
                for j in range(rows):
                    a[i, j] = a[i, j] * one_minus[j] * np.exp(cum[i] - cum[j]) if j <= i else 0.0
        count_other(c, rows * rows)                            # row sums of A
        count_convert(c, rows * rows, e)                       # A -> the MMA's dtype
        pv = matmul_nn(c, a, vj, rows, d, rows, e, compute)    # A V_c
        # -- inter-chunk part from the state, decayed by exp(Λ_i) --
        count_convert(c, m * d, e)                             # fp32 S -> the MMA's dtype
        num = matmul_nn(c, phiq, s, rows, d, m, e, compute)    # φ(Q_c) S
        count_other(c, 2 * rows * m)                           # φ(Q_c) z
        count_exp(c, rows)                                     # exp(Λ_i)
        count_other(c, rows * d + rows)                        # num, den x exp(Λ_i)
        count_other(c, rows * d + rows)                        # num += A V, den += A 1
        den = np.empty(0, dtype=np.float32)
        if compute:
            carry = np.exp(cum)
            num = num * carry.reshape((rows, 1)) + pv
            den = np.dot(phiq, z) * carry + a.sum(axis=1)
        if sliced:
            store_rows(c, pnum[t], r0, num, rows, d, STATE_BYTES, compute)
            store_vector(c, pden[t], r0, den, rows, STATE_BYTES, compute)
        else:
            count_other(c, rows * d)                           # num / den
            oi = _divide_rows(num, den) if compute else np.empty((0, 0), dtype=np.float32)
            store_rows(c, o, r0, oi, rows, d, e, compute)      # O_c -> HBM
        # -- fold this chunk's keys into the decayed state --
        decay_fold(c, phik, vj, lam, one_minus, s, z, rows, m, d, e, compute)
        done = k_end


def run_gated(name: str, wl, p, inputs, rec, compute: bool, projection_for_head, gate_for_head,
              kind: int, in_scale: float, causal_buffers: dict, combine_buffers: dict,
              o) -> dict:
    """Launch the gated sweep (one CTA per (head, feature slice)) and, with several slices,
    the ungated combine kernel; ``gate_for_head(b, h)`` gives (w_g (d,), b_g) float32."""
    d, e, tiles = wl.head_dim, wl.elem_bytes, p.feature_tiles
    heads_total = wl.batch * wl.heads
    buffers = {**causal_buffers, **gate_buffers(p.block, d, e)}
    c = rec.kernel(f"{name}_gated_causal", ctas=tiles * heads_total, buffers=buffers,
                   threads_per_cta=128, matmul_dtype=wl.dtype,
                   prologue_bytes_per_cta=causal_prologue_bytes(causal_buffers),
                   # the sweep writes each chunk's output rows as it leaves the chunk
                   epilogue_elements_per_cta=wl.seq_q * d,
                   **strip_readers(p),
                   **causal_l2(rec, wl, p, buffers, params_per_head=(d + 1) * e))
    cc = None
    if tiles > 1:
        cc = rec.kernel(f"{name}_combine", ctas=cdiv(wl.seq_q, p.block) * heads_total,
                        buffers=combine_buffers, tc_path="none", threads_per_cta=128)
    rows = wl.seq_q if compute else 0
    total_units = p.projections if kind != 0 else d
    for b, h, q, k, v in iter_heads(wl, inputs, compute):
        w = projection_for_head(b, h)
        wg, bg = gate_for_head(b, h)
        o_head = head_view(o, b, h, compute)
        pnum = np.zeros((tiles, rows if tiles > 1 else 0, d), dtype=np.float32)
        pden = np.zeros((tiles, rows if tiles > 1 else 0), dtype=np.float32)
        plog = np.zeros((tiles, 0), dtype=np.float32)
        for t in range(tiles):
            u0 = t * p.tile_units
            u1 = min(total_units, u0 + p.tile_units)
            gated_causal_head(c, q, k, v, w, wg, bg, o_head, pnum, pden, t, wl.seq_q, wl.seq_k,
                              d, p.projections, u0, u1, p.block, kind, in_scale, e, compute,
                              tiles > 1)
        if cc is not None:
            combine_slices(cc, pnum, pden, plog, o_head, wl.seq_q, d, tiles, p.block, kind, e,
                           compute)
    finish_heads(c, wl, compute)
    if cc is not None:
        finish_heads(cc, wl, compute)
    return {"o": o} if compute else {}


assert KIND_POSITIVE == 2     # gated_causal_head tests kinds by value: 0 elu, 1 trig
