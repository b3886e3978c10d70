"""The float64 reference: softmax attention as the definition says, nothing clever.

Every test and every GPU port compares against this one implementation (never a copy).
"""
from __future__ import annotations

import numpy as np


def causal_mask(seq_q: int, seq_k: int) -> np.ndarray:
    """Bottom-right aligned causal mask: True where query i may see key j (j <= i + N_k - N_q)."""
    i = np.arange(seq_q)[:, None]
    j = np.arange(seq_k)[None, :]
    return j <= i + (seq_k - seq_q)


def expand_kv(x: np.ndarray, heads: int) -> np.ndarray:
    """(B, G, N, d) key/value heads -> (B, heads, N, d): query head h uses kv head h // (heads/G)."""
    groups = x.shape[1]
    return np.repeat(x, heads // groups, axis=1)


def attention_reference(q, k, v, *, causal=False, scale=None, mask=None, dropout_keep=None):
    """Exact softmax attention in float64.

    Arguments:
        q: (B, H, N_q, d); k, v: (B, G, N_k, d) with H a multiple of G.
        causal: bottom-right aligned causal mask.
        scale: softmax scale, default 1/sqrt(d).
        mask: optional boolean (N_q, N_k) or (B, H, N_q, N_k), True = attend.
        dropout_keep: optional dropout multiplier Z (B, H, N_q, N_k): 0 where an entry of P
            is dropped, 1/(1 - p) where it is kept (``algorithms.kernels.dropout.keep_multiplier``);
            then o = (P ∘ Z) V, and lse is that of the undropped P.
    Return:
        (o, lse): o (B, H, N_q, d_v) float64 and the log-sum-exp (B, H, N_q). Rows that see
        no key give o = 0 and lse = -inf (the flash-attn convention).
    """
    q64 = np.asarray(q, dtype=np.float64)
    k64 = expand_kv(np.asarray(k, dtype=np.float64), q.shape[1])
    v64 = expand_kv(np.asarray(v, dtype=np.float64), q.shape[1])
    scale = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    # matmul, not einsum: the batched products go to BLAS (einsum loops in C, 20x slower)
    s = (q64 @ k64.swapaxes(-1, -2)) * scale                    # (B, H, N_q, N_k)
    allowed = np.ones(s.shape[-2:], dtype=bool)
    if causal:
        allowed = allowed & causal_mask(q.shape[2], k.shape[2])
    if mask is not None:
        allowed = allowed & mask
    allowed = np.broadcast_to(allowed, s.shape)
    s = np.where(allowed, s, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    m_safe = np.where(np.isfinite(m), m, 0.0)
    p = np.exp(s - m_safe)
    l = p.sum(axis=-1, keepdims=True)
    p = p / np.where(l > 0, l, 1.0)
    if dropout_keep is not None:
        p = p * np.asarray(dropout_keep, dtype=np.float64)
    o = p @ v64
    lse = np.where(l[..., 0] > 0, m_safe[..., 0] + np.log(np.where(l > 0, l, 1.0))[..., 0],
                   -np.inf)
    return o, lse


def attention_backward_reference(q, k, v, do, causal=False, scale=None, mask=None,
                                 dropout_keep=None):
    """Analytic gradient of softmax attention in float64 (FlashAttention, arXiv 2205.14135,
    Appendix B.2, with dropout as in Algorithm 4).

    With P = softmax(scale · Q Kᵀ) (masked entries 0), Z the dropout multiplier and
    O = (P ∘ Z) V:  dV = (P ∘ Z)ᵀ dO,  dP = (dO Vᵀ) ∘ Z,  dS = P ∘ (dP − rowsum(P ∘ dP)),
    dQ = scale · dS K,  dK = scale · dSᵀ Q.

    Arguments:
        q, do: (B, H, N_q, d); k, v: (B, G, N_k, d) with H a multiple of G.
        causal, scale, mask, dropout_keep: as in ``attention_reference``.
    Return:
        (dq, dk, dv) float64 with the shapes of q, k, v (GQA: summed over each group).
    """
    heads, groups = q.shape[1], k.shape[1]
    q64, do64 = np.asarray(q, dtype=np.float64), np.asarray(do, dtype=np.float64)
    k64 = expand_kv(np.asarray(k, dtype=np.float64), heads)
    v64 = expand_kv(np.asarray(v, dtype=np.float64), heads)
    scale = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    s = (q64 @ k64.swapaxes(-1, -2)) * scale                    # (B, H, N_q, N_k)
    allowed = np.ones(s.shape[-2:], dtype=bool)
    if causal:
        allowed = allowed & causal_mask(q.shape[2], k.shape[2])
    if mask is not None:
        allowed = allowed & mask
    s = np.where(np.broadcast_to(allowed, s.shape), s, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    p = np.exp(s - np.where(np.isfinite(m), m, 0.0))
    l = p.sum(axis=-1, keepdims=True)
    p = p / np.where(l > 0, l, 1.0)                              # rows seeing no key: P = 0
    z = 1.0 if dropout_keep is None else np.asarray(dropout_keep, dtype=np.float64)
    dv = (p * z).swapaxes(-1, -2) @ do64
    dp = (do64 @ v64.swapaxes(-1, -2)) * z
    ds = p * (dp - (p * dp).sum(axis=-1, keepdims=True))
    dq = (ds @ k64) * scale
    dk = (ds.swapaxes(-1, -2) @ q64) * scale

    def fold(x):                                                 # (B, H, ..) -> (B, G, ..)
        return x.reshape(x.shape[0], groups, heads // groups, *x.shape[2:]).sum(axis=2)

    return dq, fold(dk), fold(dv)


def relative_error(x, ref) -> float:
    """‖x − ref‖_F / ‖ref‖_F (0 when both are 0)."""
    ref = np.asarray(ref, dtype=np.float64)
    diff = np.linalg.norm(np.asarray(x, dtype=np.float64) - ref)
    norm = np.linalg.norm(ref)
    return float(diff / norm) if norm > 0 else float(diff)
