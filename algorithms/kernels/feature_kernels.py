"""The compiled kernel bodies of feature-map attention (``algorithms.kernels.feature_attention``
documents the algorithm, the traffic and the per-op accounting these functions implement).

Bound: the feature-map family's Θ(N d + N m d / B) HBM bytes and Θ(N m d) FLOPs.

Every function takes the kernel's counter array ``c`` first and moves data only through the
counted primitives; ``compute=False`` runs the same loops without arithmetic (count-only).
"""
import math

import numpy as np

from algorithms.kernels.common import finite_or_zero
from hwmodels.compiled import compiled
from hwmodels.primitives import (count_alu, count_convert, count_exp, count_load, count_other,
                                 load_rows, load_vector, matmul_nn, matmul_nt, matmul_tn,
                                 store_rows, store_vector)

KIND_ELU, KIND_TRIG, KIND_POSITIVE = 0, 1, 2
STATE_BYTES = 4          # S, z and the causal partials are fp32


@compiled
def slice_range(kind, t, tile_units, total_units):
    """(first unit, end unit, first feature row, end feature row) of feature slice t."""
    u0 = t * tile_units
    u1 = min(total_units, u0 + tile_units)
    per = 2 if kind == KIND_TRIG else 1
    return u0, u1, per * u0, per * u1


@compiled
def query_features(c, x, w, rows, ncols, d, p, p_norm, kind, in_scale, mx, e, compute):
    """φ_q of one feature slice of a query tile -> ((rows x m_t) float32, new row max).

    elu+1: ``x`` holds the slice's ``ncols`` columns. Random features: ``w`` holds the
    slice's ``p`` projections (of ``p_norm`` in all). Per-row factors that cancel in num/den
    are dropped; positive features are taken relative to the running row max ``mx``."""
    if kind == KIND_ELU:
        count_exp(c, rows * ncols)
        count_alu(c, 2 * rows * ncols)                         # min, select
        count_other(c, rows * ncols)                           # add
        if compute:
            return _elu_plus_one(x), mx
        return np.empty((0, 0), dtype=np.float32), mx
    if kind == KIND_TRIG:
        proj = _trig_projection(c, x, w, rows, d, p, in_scale, e, compute)
        count_exp(c, 2 * rows * p)                             # sin, cos
        count_other(c, 2 * rows * p)                           # x 1/sqrt(D)
        if compute:
            return _sin_cos(proj, np.float32(1.0 / math.sqrt(p_norm))), mx
        return np.empty((0, 0), dtype=np.float32), mx
    count_other(c, rows * d)                                   # u = x sqrt(scale)
    u = x * np.float32(in_scale)                               # (empty in count-only mode)
    proj = matmul_nt(c, u, w, rows, p, d, e, compute)          # W u  (rows x p)
    count_alu(c, rows * p)                                     # row max
    count_other(c, rows * p)                                   # subtract
    count_exp(c, rows * p)
    count_other(c, rows * p)                                   # x 1/sqrt(M)
    count_other(c, rows * p)                                   # (kept: the table's 4 r P)
    if compute:
        new_mx = np.maximum(mx, _rowmax(proj))
        return np.exp(proj - new_mx[:, None]) * np.float32(1.0 / math.sqrt(p_norm)), new_mx
    return np.empty((0, 0), dtype=np.float32), mx


@compiled
def key_features(c, x, w, rows, ncols, d, p, p_norm, kind, in_scale, shift, e, compute):
    """φ_k of one feature slice of a key tile relative to the running shift c of the
    exponents. Returns (phi (rows x m_t), new shift)."""
    if kind == KIND_ELU:
        count_exp(c, rows * ncols)
        count_alu(c, 2 * rows * ncols)                         # min, select
        count_other(c, rows * ncols)                           # add
        if compute:
            return _elu_plus_one(x), shift
        return np.empty((0, 0), dtype=np.float32), shift
    if kind == KIND_TRIG:
        proj = _trig_projection(c, x, w, rows, d, p, in_scale, e, compute)
        count_exp(c, 2 * rows * p)                             # sin, cos
        count_other(c, 2 * rows * p)                           # x 1/sqrt(D)
        if compute:
            return _sin_cos(proj, np.float32(1.0 / math.sqrt(p_norm))), shift
        return np.empty((0, 0), dtype=np.float32), shift
    count_other(c, rows * d)                                   # u = x sqrt(scale)
    count_other(c, 2 * rows * d)                               # |u|²
    u = x * np.float32(in_scale)                               # (empty in count-only mode)
    proj = matmul_nt(c, u, w, rows, p, d, e, compute)          # W u  (rows x p)
    new_shift = shift
    phi = np.empty((0, 0), dtype=np.float32)
    count_other(c, rows + rows * p)                            # E = W u - |u|²/2
    count_alu(c, rows * p)                                     # tile max of E
    count_other(c, rows * p)                                   # E - c
    count_exp(c, rows * p)
    count_other(c, rows * p)                                   # x 1/sqrt(M)
    if compute:
        expo = proj - (np.float32(0.5) * (u * u).sum(axis=1))[:, None]
        new_shift = max(shift, np.float32(expo.max())) if rows else shift
        phi = np.exp(expo - new_shift) * np.float32(1.0 / math.sqrt(p_norm))
    return phi, new_shift


@compiled
def _trig_projection(c, x, w, rows, d, p, inv_sigma, e, compute):
    """RFA's input: u = x / (|x| σ) (ℓ2-normalised rows), then W u (rows x p)."""
    count_other(c, 2 * rows * d + rows * d)                    # |x|², x x (1/(|x| σ))
    count_exp(c, rows)                                         # rsqrt
    u = x
    if compute:
        u = np.empty_like(x)
        for i in range(rows):
            nrm = np.sqrt((x[i] * x[i]).sum())
            u[i] = x[i] * np.float32(inv_sigma / nrm) if nrm > 0 else x[i]
    return matmul_nt(c, u, w, rows, p, d, e, compute)


@compiled
def rescale_state(c, s, z, old_shift, new_shift, m, d, kind, compute):
    """S, z *= exp(c_old - c_new): keeps the state relative to the running shift (positive
    features only: the others have no exponent to stabilise)."""
    if kind != KIND_POSITIVE:
        return
    count_other(c, 1 + m * d + m)
    count_exp(c, 1)
    if compute and new_shift != old_shift and old_shift != -np.inf:
        f = np.float32(np.exp(old_shift - new_shift))
        s *= f
        z *= f


@compiled
def state_head(c, k, v, w, s_hbm, z_hbm, shift_hbm, seq_k, d, p_total, tile_units, tiles,
               block, kind, in_scale, e, compute):
    """Kernel 1, one CTA per feature slice t: S_t = Σ φ_t(k) vᵀ, z_t = Σ φ_t(k), written to
    HBM in fp32 (with the slice's key shift c_t when there are several slices)."""
    total_units = d if kind == KIND_ELU else p_total
    for t in range(tiles):
        u0, u1, f0, f1 = slice_range(kind, t, tile_units, total_units)
        nu, m_t = u1 - u0, f1 - f0
        w_t = w[u0:u1] if kind != KIND_ELU else w
        if kind != KIND_ELU:
            count_load(c, nu * d * e)                          # W_t -> SRAM
        s = np.zeros((m_t if compute else 0, d), dtype=np.float32)
        z = np.zeros(m_t if compute else 0, dtype=np.float32)
        shift = np.float32(-np.inf) if kind == KIND_POSITIVE else np.float32(0.0)
        for c0 in range(0, seq_k, block):
            c1 = min(c0 + block, seq_k)
            cols = c1 - c0
            kj = load_rows(c, k, c0, c1, d, e)                 # K_j -> SRAM
            vj = load_rows(c, v, c0, c1, d, e)                 # V_j -> SRAM
            x = np.ascontiguousarray(kj[:, u0:u1]) if kind == KIND_ELU else kj
            phik, new_shift = key_features(c, x, w_t, cols, nu, d, nu, p_total, kind,
                                           in_scale, shift, e, compute)
            rescale_state(c, s, z, shift, new_shift, m_t, d, kind, compute)
            shift = new_shift
            count_convert(c, cols * m_t, e)                    # φ_t(K_j) -> the MMA's dtype
            kv = matmul_tn(c, phik, vj, m_t, d, cols, e, compute)  # S_t += φ_t(K_j)ᵀ V_j
            count_other(c, cols * m_t)                         # z_t += colsum φ_t(K_j)
            if compute:
                s += kv
                z += phik.sum(axis=0)
        store_rows(c, s_hbm, f0, s, m_t, d, STATE_BYTES, compute)   # S_t -> HBM (fp32)
        store_rows(c, z_hbm[:, f0:f1], 0, z.reshape((1, z.shape[0])), 1, m_t, STATE_BYTES,
                   compute)                                    # z_t -> HBM (fp32)
        if tiles > 1 and kind == KIND_POSITIVE:
            store_vector(c, shift_hbm, t, np.full(1, shift, dtype=np.float32), 1, 4, compute)


@compiled
def apply_head(c, q, w, s_hbm, z_hbm, shift_hbm, o, seq_q, d, p_total, tile_units, tiles,
               block, kind, in_scale, e, compute):
    """Kernel 2, one CTA per Q tile: O_i = Σ_t φ_t(Q_i) S_t / Σ_t φ_t(Q_i) z_t, the slices'
    key shifts brought to their common maximum and, for positive features, the query's
    running row max carried across slices (an online softmax over feature slices)."""
    total_units = d if kind == KIND_ELU else p_total
    sliced = tiles > 1 and kind == KIND_POSITIVE              # slices carry key shifts
    for r0 in range(0, seq_q, block):
        r1 = min(r0 + block, seq_q)
        rows = r1 - r0
        qi = load_rows(c, q, r0, r1, d, e)                     # Q_i -> SRAM
        top = np.float32(0.0)
        if sliced:
            shifts = load_vector(c, shift_hbm, 0, tiles, 4)    # c_t of every slice
            count_alu(c, tiles)                                # C = max_t c_t
            if compute:
                top = shifts.max()
        num = np.zeros((rows if compute else 0, d), dtype=np.float32)
        den = np.zeros(rows if compute else 0, dtype=np.float32)
        mx = np.full(rows if compute else 0, -np.inf, dtype=np.float32)
        for t in range(tiles):
            u0, u1, f0, f1 = slice_range(kind, t, tile_units, total_units)
            nu, m_t = u1 - u0, f1 - f0
            w_t = w[u0:u1] if kind != KIND_ELU else w
            if kind != KIND_ELU:
                count_load(c, nu * d * e)                      # W_t -> SRAM
            s_t = load_rows(c, s_hbm, f0, f1, d, STATE_BYTES)  # S_t -> SRAM (fp32)
            count_load(c, m_t * STATE_BYTES)                   # z_t -> SRAM (fp32)
            z_t = z_hbm[0, f0:f1] if compute else np.empty(0, dtype=np.float32)
            if sliced:
                count_other(c, 1 + m_t * d + m_t)              # S_t, z_t x exp(c_t - C)
                count_exp(c, 1)
                if compute:
                    f = np.float32(np.exp(shift_hbm[t] - top))
                    s_t = s_t * f
                    z_t = z_t * f
            x = np.ascontiguousarray(qi[:, u0:u1]) if kind == KIND_ELU else qi
            phiq, new_mx = query_features(c, x, w_t, rows, nu, d, nu, p_total, kind,
                                          in_scale, mx, e, compute)
            if sliced:
                count_alu(c, rows)                             # max with running
                count_other(c, rows)                           # m_old - m_new
                count_exp(c, rows)                             # alpha
                count_other(c, rows * d + rows)                # num, den *= alpha
                if compute:
                    alpha = np.exp(mx - new_mx)
                    num *= alpha[:, None]
                    den *= alpha
            mx = new_mx
            count_convert(c, rows * m_t + m_t * d, e)          # φ_t(Q_i), fp32 S_t -> MMA dtype
            part = matmul_nn(c, phiq, s_t, rows, d, m_t, e, compute)   # num += φ_t(Q_i) S_t
            count_other(c, 2 * rows * m_t)                     # den += φ_t(Q_i) z_t
            if compute:
                num += part
                den += np.dot(phiq, np.ascontiguousarray(z_t))
        count_other(c, rows * d)                               # num / den
        oi = _divide_rows(num, den) if compute else np.empty((0, 0), dtype=np.float32)
        store_rows(c, o, r0, oi, rows, d, e, compute)          # O_i -> HBM


@compiled
def causal_head(c, q, k, v, w, o, pnum, pden, plog, t, seq_q, seq_k, d, p_total, u0, u1,
                block, kind, in_scale, e, compute, sliced):
    """Chunked causal form, one CTA: the whole state (``sliced`` False: writes O), or feature
    slice t = units [u0, u1) (``sliced``: writes this slice's un-normalised num, den and
    their log-scale to ``pnum``, ``pden``, ``plog`` for ``combine_slices``). Query row i
    sees key j <= i + (N_k - N_q) (bottom-right aligned); keys before the first query
    chunk's diagonal are folded into the state first, in chunks of ``block``."""
    off = seq_k - seq_q
    nu = u1 - u0
    m = nu * (2 if kind == KIND_TRIG else 1)                   # this CTA's features
    w_s = w[u0:u1] if kind != KIND_ELU else w
    if kind != KIND_ELU:
        count_load(c, nu * d * e)                              # W (slice) -> SRAM, once
    s = np.zeros((m if compute else 0, d), dtype=np.float32)
    z = np.zeros(m if compute else 0, dtype=np.float32)
    shift = np.float32(-np.inf) if kind == KIND_POSITIVE else np.float32(0.0)
    done = 0                                                   # keys folded into (S, z)
    for r0 in range(0, seq_q, block):
        r1 = min(r0 + block, seq_q)
        rows = r1 - r0
        k_start = max(0, min(seq_k, r0 + off))                 # first key on the diagonal
        k_end = max(0, min(seq_k, r1 + off))
        # the keys every row of this chunk sees go into the state (only when N_k > N_q)
        shift = fold_prefix(c, k, v, w_s, s, z, done, k_start, block, d, u0, u1, nu, p_total,
                            kind, in_scale, shift, e, compute)
        qi = load_rows(c, q, r0, r1, d, e)                     # Q_c -> SRAM
        cols = k_end - k_start
        kj = load_rows(c, k, k_start, k_end, d, e)             # K_c -> SRAM
        vj = load_rows(c, v, k_start, k_end, d, e)             # V_c -> SRAM
        mx0 = np.full(rows if compute else 0, -np.inf, dtype=np.float32)
        phiq, qmax = query_features(c, _cols(qi, u0, u1, kind), w_s, rows, nu, d, nu, p_total,
                                    kind, in_scale, mx0, e, compute)
        live = compute and cols > 0                            # (no key tile when N_q > N_k)
        phik, new_shift = key_features(c, _cols(kj, u0, u1, kind), w_s, cols, nu, d, nu,
                                       p_total, kind, in_scale, shift, e, live)
        rescale_state(c, s, z, shift, new_shift, m, d, kind, live)
        shift = new_shift
        a, pv = intra_chunk(c, phiq, phik, vj, rows, cols, m, d, r0, k_start, off, e, live)
        # -- inter-chunk part from the state --
        count_convert(c, m * d, e)                             # fp32 S -> the MMA's dtype
        num = matmul_nn(c, phiq, s, rows, d, m, e, compute)    # φ(Q_c) S
        count_other(c, 2 * rows * m)                           # φ(Q_c) z
        count_other(c, rows * d + rows)                        # num += A V, den += A 1
        den = np.empty(0, dtype=np.float32)
        if compute:
            den = np.dot(phiq, z)
            if live:
                den = den + a.sum(axis=1)
                num = num + pv
        emit_chunk(c, o, pnum, pden, plog, t, num, den, qmax, shift, r0, rows, d, kind, e,
                   compute, sliced)
        # -- fold this chunk's keys into the state, from the tiles already in SRAM --
        kv = matmul_tn(c, phik, vj, m, d, cols, e, live)
        count_other(c, cols * m)
        if live:
            s += kv
            z += phik.sum(axis=0)
        done = k_end


@compiled
def fold_prefix(c, k, v, w_s, s, z, done, k_start, block, d, u0, u1, nu, p_total, kind,
                in_scale, shift, e, compute):
    """Keys [done, k_start), which every row of the chunk sees, folded into (S, z) in chunks
    of ``block``; returns the state's key shift."""
    while done < k_start:
        c1 = min(done + block, k_start)
        kj = load_rows(c, k, done, c1, d, e)
        vj = load_rows(c, v, done, c1, d, e)
        shift = _fold(c, _cols(kj, u0, u1, kind), vj, w_s, s, z, c1 - done, d, nu, p_total,
                      kind, in_scale, shift, e, compute)
        done = c1
    return shift


@compiled
def intra_chunk(c, phiq, phik, vj, rows, cols, m, d, r0, k_start, off, e, live):
    """The chunk's own keys: A = φ(Q_c) φ(K_c)ᵀ, its lower triangle, and A V_c."""
    count_convert(c, rows * m + cols * m, e)                   # φ(Q_c), φ(K_c) -> MMA dtype
    a = matmul_nt(c, phiq, phik, rows, cols, m, e, live)
    count_alu(c, rows * cols)                                  # causal select
    if live:
        _mask_lower(a, r0, k_start, off)
    count_other(c, rows * cols)                                # row sums of A
    count_convert(c, rows * cols, e)                           # A -> the MMA's dtype
    pv = matmul_nn(c, a, vj, rows, d, cols, e, live)           # A V_c
    return a, pv


@compiled
def emit_chunk(c, o, pnum, pden, plog, t, num, den, qmax, shift, r0, rows, d, kind, e, compute,
               sliced):
    """The chunk's rows out: O = num / den, or (``sliced``) the slice's un-normalised num,
    den and log-scale for ``combine_slices``."""
    if sliced:
        # un-normalised partials: true values are these x exp(row max + key shift)
        if kind == KIND_POSITIVE:
            count_other(c, rows)                               # log-scale = max + shift
        store_rows(c, pnum[t], r0, num, rows, d, STATE_BYTES, compute)
        store_vector(c, pden[t], r0, den, rows, STATE_BYTES, compute)
        if kind == KIND_POSITIVE:
            store_vector(c, plog[t], r0, qmax + shift if compute else den, rows,
                         STATE_BYTES, compute)
    else:
        count_other(c, rows * d)                               # num / den
        oi = _divide_rows(num, den) if compute else np.empty((0, 0), dtype=np.float32)
        store_rows(c, o, r0, oi, rows, d, e, compute)          # O_c -> HBM


@compiled
def combine_slices(c, pnum, pden, plog, o, seq_q, d, tiles, block, kind, e, compute):
    """Causal, sliced: O = Σ_t num_t e^{λ_t} / Σ_t den_t e^{λ_t}, one CTA per B query rows,
    the slices' log-scales λ_t brought to their running maximum (positive features)."""
    positive = kind == KIND_POSITIVE
    for r0 in range(0, seq_q, block):
        r1 = min(r0 + block, seq_q)
        rows = r1 - r0
        num = np.zeros((rows if compute else 0, d), dtype=np.float32)
        den = np.zeros(rows if compute else 0, dtype=np.float32)
        top = np.full(rows if compute else 0, -np.inf, dtype=np.float32)
        for t in range(tiles):
            nt = load_rows(c, pnum[t], r0, r1, d, STATE_BYTES)
            dt = load_vector(c, pden[t], r0, r1, STATE_BYTES)
            if positive:
                lt = load_vector(c, plog[t], r0, r1, STATE_BYTES)
                count_alu(c, rows)                             # new max
                count_other(c, rows)                           # differences
                count_exp(c, 2 * rows)                         # rescale old, weight new
                count_other(c, rows * d + rows)                # acc x rescale
                if compute:
                    new_top = np.maximum(top, lt)
                    # rows that have seen no key yet have log-scale -inf: weight 0, not NaN
                    ref = finite_or_zero(new_top)
                    keep = np.exp(top - ref)
                    wt = np.exp(lt - ref)
                    num = num * keep[:, None] + nt * wt[:, None]
                    den = den * keep + dt * wt
                    top = new_top
                count_other(c, rows * d + rows)                # acc += weighted partial
            else:
                count_other(c, rows * d + rows)                # acc += partial
                if compute:
                    num = num + nt
                    den = den + dt
        count_other(c, rows * d)                               # num / den
        oi = _divide_rows(num, den) if compute else np.empty((0, 0), dtype=np.float32)
        store_rows(c, o, r0, oi, rows, d, e, compute)          # O rows -> HBM


@compiled
def _cols(x, u0, u1, kind):
    """elu+1 works on the slice's own columns; random features project the whole row."""
    if kind == KIND_ELU:
        return np.ascontiguousarray(x[:, u0:u1])
    return x


@compiled
def _fold(c, kj, vj, w_s, s, z, cols, d, nu, p_total, kind, in_scale, shift, e, compute):
    m = s.shape[0] if compute else nu * (2 if kind == KIND_TRIG else 1)
    phik, new_shift = key_features(c, kj, w_s, cols, nu, d, nu, p_total, kind, in_scale,
                                   shift, e, compute)
    rescale_state(c, s, z, shift, new_shift, m, d, kind, compute)
    count_convert(c, cols * m, e)                              # φ(K) -> the MMA's dtype
    kv = matmul_tn(c, phik, vj, m, d, cols, e, compute)
    count_other(c, cols * m)
    if compute:
        s += kv
        z += phik.sum(axis=0)
    return new_shift


@compiled
def _mask_lower(a, r0, c0, off):
    """Zero A[i, j] where key c0 + j is after query r0 + i's diagonal."""
    rows, cols = a.shape
    for i in range(rows):
        for j in range(max(0, r0 + i + off - c0 + 1), cols):
            a[i, j] = 0.0


@compiled
def _divide_rows(num, den):
    """num / den row-wise; a row with den == 0 (no visible key) outputs zeros."""
    out = np.zeros_like(num)
    for i in range(num.shape[0]):
        if den[i] != 0.0:
            out[i] = num[i] / den[i]
    return out


@compiled
def _elu_plus_one(x):
    """elu(x) + 1, element by element (a loop: ``np.where`` would compile Numba's
    broadcasting and error-message machinery into the first run)."""
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            out[i, j] = x[i, j] + np.float32(1.0) if x[i, j] > 0 else np.exp(x[i, j])
    return out


@compiled
def _sin_cos(proj, factor):
    rows, p = proj.shape
    out = np.empty((rows, 2 * p), dtype=np.float32)
    out[:, :p] = np.sin(proj) * factor
    out[:, p:] = np.cos(proj) * factor
    return out


@compiled
def _rowmax(s):
    out = np.empty(s.shape[0], dtype=np.float32)
    for i in range(s.shape[0]):
        out[i] = s[i].max() if s.shape[1] else np.float32(0.0)
    return out
