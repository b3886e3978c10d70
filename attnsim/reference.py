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


def attention_reference(q, k, v, *, causal=False, scale=None, mask=None):
    """Exact softmax attention in float64.

    Arguments:
        q: (B, H, N_q, d); k, v: (B, G, N_k, d) with H a multiple of G.
        causal: bottom-right aligned causal mask.
        scale: softmax scale, default 1/sqrt(d).
        mask: optional boolean (N_q, N_k) or (B, H, N_q, N_k), True = attend.
    Return:
        (o, lse): o (B, H, N_q, d_v) float64 and the log-sum-exp (B, H, N_q). Rows that see
        no key give o = 0 and lse = -inf (the flash-attn convention).
    """
    q64 = np.asarray(q, dtype=np.float64)
    k64 = expand_kv(np.asarray(k, dtype=np.float64), q.shape[1])
    v64 = expand_kv(np.asarray(v, dtype=np.float64), q.shape[1])
    scale = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    s = np.einsum("bhid,bhjd->bhij", q64, k64) * scale          # (B, H, N_q, N_k)
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
    o = np.einsum("bhij,bhjd->bhid", p / np.where(l > 0, l, 1.0), v64)
    lse = np.where(l[..., 0] > 0, m_safe[..., 0] + np.log(np.where(l > 0, l, 1.0))[..., 0],
                   -np.inf)
    return o, lse


def relative_error(x, ref) -> float:
    """‖x − ref‖_F / ‖ref‖_F (0 when both are 0)."""
    ref = np.asarray(ref, dtype=np.float64)
    diff = np.linalg.norm(np.asarray(x, dtype=np.float64) - ref)
    norm = np.linalg.norm(ref)
    return float(diff / norm) if norm > 0 else float(diff)
