"""The float64 reference walks the rows in blocks (``attnsim.reference.row_blocks``) so that
long sequences do not materialise B x H x N_q x N_k float64 arrays; rows of softmax
attention are independent, so the blocks must change no number. Held here against softmax
attention written out whole in this file, with blocks forced down to a few rows or one."""
from __future__ import annotations

import functools

import numpy as np
import pytest

from attnsim import reference


def whole(q, k, v, do, causal, scale, mask, keep):
    """Softmax attention and its gradient on the whole (B, H, N_q, N_k) score array at once,
    from the definitions: S = scale Q Kᵀ (masked: -inf), P = softmax(S) by rows (0 where a
    row sees no key), O = (P ∘ Z) V; dV = (P ∘ Z)ᵀ dO, dP = (dO Vᵀ) ∘ Z,
    dS = P ∘ (dP − rowsum(P ∘ dP)), dQ = scale dS K, dK = scale dSᵀ Q (GQA: K, V shared by
    each group of query heads, their gradients summed over it; K and V may be grouped
    differently)."""
    heads = q.shape[1]
    k64 = np.repeat(k.astype(np.float64), heads // k.shape[1], axis=1)
    v64 = np.repeat(v.astype(np.float64), heads // v.shape[1], axis=1)
    q64, do64 = q.astype(np.float64), do.astype(np.float64)
    s = scale * (q64 @ k64.swapaxes(-1, -2))
    seq_q, seq_k = s.shape[-2:]
    allowed = np.ones(s.shape, dtype=bool)
    if causal:      # bottom-right aligned: key j is visible to query i when j <= i + N_k - N_q
        allowed &= np.arange(seq_k)[None, :] <= np.arange(seq_q)[:, None] + seq_k - seq_q
    if mask is not None:
        allowed &= mask
    s = np.where(allowed, s, -np.inf)
    sees = allowed.any(axis=-1, keepdims=True)
    m = np.where(sees, s.max(axis=-1, keepdims=True), 0.0)
    e = np.where(allowed, np.exp(s - m), 0.0)
    l = e.sum(axis=-1, keepdims=True)
    p = np.where(sees, e / np.where(sees, l, 1.0), 0.0)
    z = 1.0 if keep is None else keep
    o = (p * z) @ v64
    lse = np.where(sees[..., 0], m[..., 0] + np.log(np.where(sees, l, 1.0))[..., 0], -np.inf)
    dv = (p * z).swapaxes(-1, -2) @ do64
    dp = (do64 @ v64.swapaxes(-1, -2)) * z
    ds = p * (dp - (p * dp).sum(axis=-1, keepdims=True))
    dq, dk = scale * (ds @ k64), scale * (ds.swapaxes(-1, -2) @ q64)

    def fold(g, groups):
        return g.reshape(g.shape[0], groups, heads // groups, *g.shape[2:]).sum(axis=2)
    return o, lse, dq, fold(dk, k.shape[1]), fold(dv, v.shape[1])


def problem(seed, batch, groups, per_group, seq_q, seq_k, d, causal, mask_kind, dropout,
            v_groups=None):
    rng = np.random.default_rng(seed)
    heads = groups * per_group
    q = rng.standard_normal((batch, heads, seq_q, d)).astype(np.float32)
    k = rng.standard_normal((batch, groups, seq_k, d)).astype(np.float32)
    v = rng.standard_normal((batch, v_groups or groups, seq_k, d + 1)).astype(np.float32)
    do = rng.standard_normal((batch, heads, seq_q, d + 1))
    mask = {"none": None, "shared": rng.random((seq_q, seq_k)) < 0.5,
            "per head": rng.random((batch, heads, seq_q, seq_k)) < 0.5}[mask_kind]
    keep = (rng.random((batch, heads, seq_q, seq_k)) < 0.75) / 0.75 if dropout else None
    return q, k, v, do, causal, 0.7, mask, keep


CASES = [  # (batch, K groups, heads a group, N_q, N_k, d, causal, mask, dropout[, V groups])
    (2, 2, 2, 9, 13, 4, True, "none", False),      # GQA, causal with N_q < N_k
    (1, 1, 3, 13, 5, 3, True, "shared", True),     # N_q > N_k: rows that see no key
    (2, 1, 1, 7, 7, 8, False, "per head", True),
    (1, 2, 1, 1, 17, 5, False, "none", False),     # one query row (decode)
    (2, 2, 1, 6, 6, 4, True, "none", False, 1),    # K per head, V shared (Reformer's problem)
]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("block_bytes", [reference.BLOCK_BYTES, 8 * 13 * 2, 1])
def test_blocked_reference_equals_attention_written_whole(case, block_bytes, monkeypatch):
    """Whole heads a block, two rows a block, one row a block: the same outputs, lse and
    gradients as the definition applied to the whole score array (to rounding)."""
    args = problem(0, *case)
    q, k, v, do, causal, scale, mask, keep = args
    monkeypatch.setattr(reference, "row_blocks",
                        functools.partial(reference.row_blocks, block_bytes=block_bytes))
    o, lse = reference.attention_reference(q, k, v, causal=causal, scale=scale, mask=mask,
                                           dropout_keep=keep)
    grads = reference.attention_backward_reference(q, k, v, do, causal=causal, scale=scale,
                                                   mask=mask, dropout_keep=keep)
    want = whole(*args)
    np.testing.assert_allclose(o, want[0], rtol=0, atol=1e-13)
    assert np.array_equal(np.isinf(lse), np.isinf(want[1]))
    np.testing.assert_allclose(lse[np.isfinite(lse)], want[1][np.isfinite(want[1])],
                               rtol=0, atol=1e-13)
    for got, expected in zip(grads, want[2:]):
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


def test_row_blocks_cover_every_row_once_within_the_budget():
    """Whole heads while a head fits the budget, else one head in blocks of rows; every
    (head, row) pair in exactly one block, no block's scores over the budget but for a
    single row longer than it."""
    for heads, seq_q, seq_k, budget in [(5, 7, 3, 8 * 7 * 3 * 2), (3, 10, 4, 8 * 4 * 3),
                                        (2, 4, 100, 8), (1, 1, 1, 1 << 20)]:
        seen = np.zeros((heads, seq_q), dtype=int)
        for hs, rs in reference.row_blocks(heads, seq_q, seq_k, budget):
            seen[hs, rs] += 1
            rows = (hs.stop - hs.start) * (rs.stop - rs.start)
            assert rows * seq_k * 8 <= budget or rows == 1
        assert (seen == 1).all()
