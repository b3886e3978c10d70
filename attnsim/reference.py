"""The float64 reference: softmax attention as the definition says, nothing clever but the
order of work: it walks the rows in blocks (``row_blocks``) so that long sequences are not
held as B x H x N_q x N_k float64 arrays. Rows of softmax attention are independent, so the
blocks change no number; tests/test_reference.py holds it to the definition written whole.

Every test and every GPU port compares against this one implementation (never a copy).
"""
from __future__ import annotations

import numpy as np

# the references' block of float64 scores, shared with the feature-map references
from algorithms.kernels.common import REFERENCE_BLOCK_BYTES as BLOCK_BYTES


def causal_mask(seq_q: int, seq_k: int, rows: slice = slice(None)) -> np.ndarray:
    """Bottom-right aligned causal mask: True where query i may see key j (j <= i + N_k - N_q);
    ``rows``: only those query rows."""
    i = np.arange(seq_q)[rows, None]
    j = np.arange(seq_k)[None, :]
    return j <= i + (seq_k - seq_q)


def expand_kv(x: np.ndarray, heads: int) -> np.ndarray:
    """(B, G, N, d) key/value heads -> (B, heads, N, d): query head h uses kv head h // (heads/G)."""
    groups = x.shape[1]
    return np.repeat(x, heads // groups, axis=1)


def row_blocks(heads: int, seq_q: int, seq_k: int, block_bytes: int = BLOCK_BYTES):
    """(head slice, row slice) over the flattened (B·H, N_q) rows: whole heads while a head's
    scores fit ``block_bytes``, else one head in blocks of rows."""
    per_head = seq_q * seq_k * 8
    if per_head <= block_bytes:
        count = max(1, block_bytes // max(1, per_head))
        for h0 in range(0, heads, count):
            yield slice(h0, min(heads, h0 + count)), slice(0, seq_q)
        return
    rows = max(1, block_bytes // (seq_k * 8))
    for h in range(heads):
        for r0 in range(0, seq_q, rows):
            yield slice(h, h + 1), slice(r0, min(seq_q, r0 + rows))


class _Problem:
    """The inputs of one reference call in float64, flattened to (B·H, N, d) query heads and
    (B·G, N, d) key and value heads, with the entries each block of rows may attend. K and V
    may have head counts of their own (Reformer's exact problem shares its keys with the
    queries but not its values)."""

    def __init__(self, q, k, v, causal, scale, mask, dropout_keep):
        self.batch, self.heads, self.seq_q, _ = q.shape
        self.seq_k = k.shape[2]
        self.q = np.asarray(q, dtype=np.float64).reshape(-1, self.seq_q, q.shape[-1])
        self.k = np.asarray(k, dtype=np.float64).reshape(-1, self.seq_k, k.shape[-1])
        self.v = np.asarray(v, dtype=np.float64).reshape(-1, self.seq_k, v.shape[-1])
        self.scale = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
        self.causal = causal
        self.mask = None if mask is None else np.asarray(mask, dtype=bool)
        # the dropout multiplier stays in its own dtype; each block reads its part in float64
        self.z = None if dropout_keep is None else \
            np.asarray(dropout_keep).reshape(-1, self.seq_q, self.seq_k)

    def keep(self, hs: slice, rs: slice):
        """The dropout multiplier Z of the block in float64 (1.0 without dropout)."""
        return 1.0 if self.z is None else np.asarray(self.z[hs, rs], dtype=np.float64)

    def keys(self, hs: slice) -> np.ndarray:
        return self.k[self.shared_heads(hs, self.k.shape[0] // self.batch)]

    def values(self, hs: slice) -> np.ndarray:
        return self.v[self.shared_heads(hs, self.v.shape[0] // self.batch)]

    def shared_heads(self, hs: slice, groups: int) -> slice | np.ndarray:
        """The head, of ``groups`` a batch, that each query head in ``hs`` reads (query head
        h reads head h // (H / groups) of its batch): a slice for one head (a view), else an
        index array."""
        f = np.arange(hs.start, hs.stop)
        kv = (f // self.heads) * groups + (f % self.heads) // (self.heads // groups)
        return slice(kv[0], kv[0] + 1) if len(kv) == 1 else kv

    def scores(self, hs: slice, rs: slice) -> np.ndarray:
        """scale · Q Kᵀ of the block, -inf where the block may not attend."""
        k = self.keys(hs)
        s = (self.q[hs, rs] @ k.swapaxes(-1, -2)) * self.scale
        allowed = self.allowed(hs, rs)
        return s if allowed is None else np.where(allowed, s, -np.inf)

    def allowed(self, hs: slice, rs: slice) -> np.ndarray | None:
        allowed = None
        if self.causal:
            allowed = causal_mask(self.seq_q, self.seq_k, rs)
        if self.mask is not None:
            mask = self.mask[rs] if self.mask.ndim == 2 else \
                self.mask.reshape(-1, self.seq_q, self.seq_k)[hs, rs]
            allowed = mask if allowed is None else allowed & mask
        return allowed


def _softmax_rows(s: np.ndarray):
    """(P, m, l) of a block of scores: P = exp(s − m) / l row by row, 0 in rows that see no
    key (their m is -inf and l 0). P is computed in the scores' own array (a block's
    temporary)."""
    m = s.max(axis=-1, keepdims=True)
    m_safe = np.where(np.isfinite(m), m, 0.0)
    p = np.exp(np.subtract(s, m_safe, out=s), out=s)
    l = p.sum(axis=-1, keepdims=True)
    return np.divide(p, np.where(l > 0, l, 1.0), out=p), m_safe, l


def attention_reference(q, k, v, *, causal=False, scale=None, mask=None, dropout_keep=None):
    """Exact softmax attention in float64, a block of rows at a time (``row_blocks``).

    Arguments:
        q: (B, H, N_q, d); k, v: (B, G, N_k, d) with H a multiple of G.
        causal: bottom-right aligned causal mask.
        scale: softmax scale, default 1/sqrt(d).
        mask: optional boolean (N_q, N_k) or (B, H, N_q, N_k), True = attend.
        dropout_keep: optional dropout multiplier Z (B, H, N_q, N_k): 0 where an entry of P
            is dropped, 1/(1 - p) where it is kept
            (``algorithms.kernels.dropout.keep_multiplier``);
            then o = (P ∘ Z) V, and lse is that of the undropped P.
    Return:
        (o, lse): o (B, H, N_q, d_v) float64 and the log-sum-exp (B, H, N_q). Rows that see
        no key give o = 0 and lse = -inf (the flash-attn convention).
    """
    x = _Problem(q, k, v, causal, scale, mask, dropout_keep)
    o = np.empty((x.q.shape[0], x.seq_q, x.v.shape[-1]))
    lse = np.empty((x.q.shape[0], x.seq_q))
    for hs, rs in row_blocks(x.q.shape[0], x.seq_q, x.seq_k):
        p, m, l = _softmax_rows(x.scores(hs, rs))
        if x.z is not None:
            p = p * x.keep(hs, rs)
        o[hs, rs] = p @ x.values(hs)
        lse[hs, rs] = np.where(l[..., 0] > 0,
                               m[..., 0] + np.log(np.where(l > 0, l, 1.0))[..., 0], -np.inf)
    shape = (x.batch, x.heads, x.seq_q)
    return o.reshape(*shape, -1), lse.reshape(shape)


def attention_backward_reference(q, k, v, do, causal=False, scale=None, mask=None,
                                 dropout_keep=None):
    """Analytic gradient of softmax attention in float64 (FlashAttention, arXiv 2205.14135,
    Appendix B.2, with dropout as in Algorithm 4), a block of rows at a time.

    With P = softmax(scale · Q Kᵀ) (masked entries 0), Z the dropout multiplier and
    O = (P ∘ Z) V:  dV = (P ∘ Z)ᵀ dO,  dP = (dO Vᵀ) ∘ Z,  dS = P ∘ (dP − rowsum(P ∘ dP)),
    dQ = scale · dS K,  dK = scale · dSᵀ Q. dV and dK sum over the rows, so each block of
    rows adds its share.

    Arguments:
        q, do: (B, H, N_q, d); k, v: (B, G, N_k, d) with H a multiple of G.
        causal, scale, mask, dropout_keep: as in ``attention_reference``.
    Return:
        (dq, dk, dv) float64 with the shapes of q, k, v (GQA: summed over each group).
    """
    x = _Problem(q, k, v, causal, scale, mask, dropout_keep)
    do64 = np.asarray(do, dtype=np.float64).reshape(x.q.shape[0], x.seq_q, -1)
    dq = np.empty_like(x.q)
    dk = np.zeros((x.q.shape[0], x.seq_k, x.k.shape[-1]))       # per query head, folded below
    dv = np.zeros((x.q.shape[0], x.seq_k, x.v.shape[-1]))
    for hs, rs in row_blocks(x.q.shape[0], x.seq_q, x.seq_k):
        p = _softmax_rows(x.scores(hs, rs))[0]                     # rows seeing no key: P = 0
        z = x.keep(hs, rs)
        dv[hs] += (p * z).swapaxes(-1, -2) @ do64[hs, rs]
        dp = (do64[hs, rs] @ x.values(hs).swapaxes(-1, -2)) * z
        ds = p * (dp - (p * dp).sum(axis=-1, keepdims=True))
        dq[hs, rs] = (ds @ x.keys(hs)) * x.scale
        dk[hs] += (ds.swapaxes(-1, -2) @ x.q[hs, rs]) * x.scale

    def fold(g, groups):                         # (B·H, N, d) -> (B, G, N, d): sum each group
        return g.reshape(x.batch, groups, x.heads // groups, *g.shape[1:]).sum(axis=2)

    return dq.reshape(q.shape), fold(dk, k.shape[1]), fold(dv, v.shape[1])


def relative_error(x, ref) -> float:
    """‖x − ref‖_F / ‖ref‖_F (0 when both are 0)."""
    ref = np.asarray(ref, dtype=np.float64)
    diff = np.linalg.norm(np.asarray(x, dtype=np.float64) - ref)
    norm = np.linalg.norm(ref)
    return float(diff / norm) if norm > 0 else float(diff)
