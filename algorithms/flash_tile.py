"""One FlashAttention-2 tile step, counted: the building block of the streaming-softmax
algorithms that keep their running state between calls (ring attention, split-KV decode).

``attend_tile`` loads K_j and V_j, computes S = scale · Q_i K_jᵀ (masked where causal),
updates the running max m, sum l and un-normalized accumulator acc in place with the
online softmax, and counts exactly what ``algorithms.flash2.forward_head`` counts per
tile: 2 B_c d e bytes read; 4 B_r B_c d matmul FLOPs; 4 B_r B_c + 4 B_r + B_r d other
ops (+ B_r B_c for the mask on diagonal tiles); B_r B_c + B_r exps.
"""
import numpy as np
from numba import njit

from algorithms.common import (apply_causal_mask, causal_block_is_partial, online_softmax_tile,
                               scale_rows)
from hwmodels.primitives import count_exp, count_other, load_rows, matmul_nn, matmul_nt

STAT_BYTES = 4


@njit(cache=True)
def attend_tile(c, qi, k, v, acc, m, l, r0, rows, c0, c1, d, scale, causal, seq_q, seq_k, e,
                compute):
    cols = c1 - c0
    kj = load_rows(c, k, c0, c1, d, e)                       # K_j -> SRAM
    vj = load_rows(c, v, c0, c1, d, e)                       # V_j -> SRAM
    s = matmul_nt(c, qi, kj, rows, cols, d, e, compute)      # S = Q_i K_jᵀ
    count_other(c, rows * cols)                              # S *= scale
    masked = causal and causal_block_is_partial(r0, c1, seq_q, seq_k)
    if masked:
        count_other(c, rows * cols)                          # select -inf above the diagonal
    count_other(c, rows * cols + rows)                       # rowmax(S), max with m
    count_other(c, rows * cols)                              # S - m_new
    count_exp(c, rows * cols)                                # P = exp(S - m_new)
    count_other(c, rows)                                     # m_old - m_new
    count_exp(c, rows)                                       # alpha = exp(m_old - m_new)
    count_other(c, rows * cols + 2 * rows)                   # l = alpha l + rowsum(P)
    count_other(c, rows * d)                                 # acc *= alpha
    if compute:
        s *= np.float32(scale)
        if masked:
            apply_causal_mask(s, r0, c0, seq_q, seq_k)
        alpha = online_softmax_tile(s, m, l)                 # s now holds P
        scale_rows(acc, alpha)
    pv = matmul_nn(c, s, vj, rows, d, cols, e, compute)      # acc += P V_j
    if compute:
        acc += pv


@njit(cache=True)
def finish_rows(c, acc, m, l, rows, d, compute):
    """Epilogue counts and math: O = acc / l, lse = m + log l (rows with no key: 0, -inf)."""
    count_other(c, rows * d + rows)
    count_exp(c, rows)
    o = np.empty((0, 0), dtype=np.float32)
    lse = np.empty(0, dtype=np.float32)
    if compute:
        l_safe = np.where(l == 0, np.float32(1.0), l)
        o = acc / l_safe.reshape((-1, 1))
        lse = np.where(l == 0, np.float32(-np.inf), m + np.log(l_safe))
    return o, lse
