"""Helpers shared by the algorithm modules: head iteration, causal masks, placeholders.

Causal masks are aligned to the bottom-right corner, as in flash-attn >= 2.1 and
PyTorch's ``scaled_dot_product_attention`` with ``is_causal`` on square inputs: query row i
sees key j when ``j <= i + (seq_k - seq_q)``. For seq_q = 2, seq_k = 5 (1 = visible)::

    1 1 1 1 0
    1 1 1 1 1

and a query row with no visible key (seq_q > seq_k) outputs zeros, with lse = -inf.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from hwmodels.memory import Recorder


def placeholder(ncols: int) -> np.ndarray:
    """A zero-row stand-in for an HBM tensor in count-only mode."""
    return np.empty((0, ncols), dtype=np.float32)


def placeholder_vector() -> np.ndarray:
    return np.empty(0, dtype=np.float32)


def kv_group(wl) -> int:
    """Query heads per key/value head (1 for MHA)."""
    return wl.heads // wl.kv_heads


def iter_heads(wl, inputs, compute: bool):
    """Yield ``(b, h, q, k, v)`` 2-D float32 views for every (batch, head).

    In count-only mode the schedule is the same for every head, so one placeholder head is
    yielded; call ``finish_heads`` afterwards to scale its counts to all heads.
    """
    if not compute:
        d = wl.head_dim
        yield -1, -1, placeholder(d), placeholder(d), placeholder(d)
        return
    group = kv_group(wl)
    for b in range(wl.batch):
        for h in range(wl.heads):
            yield b, h, inputs.q[b, h], inputs.k[b, h // group], inputs.v[b, h // group]


def finish_heads(counters: np.ndarray, wl, compute: bool, heads: int | None = None) -> None:
    """In count-only mode, scale one head's counts to ``batch x heads`` heads."""
    if not compute:
        Recorder.repeat(counters, wl.batch * (wl.heads if heads is None else heads))


def new_output(wl, compute: bool, ncols: int | None = None) -> np.ndarray:
    """(batch, heads, seq_q, ncols) float32 output, or a placeholder in count-only mode."""
    ncols = wl.head_dim if ncols is None else ncols
    if not compute:
        return np.empty((0, 0, 0, ncols), dtype=np.float32)
    return np.zeros((wl.batch, wl.heads, wl.seq_q, ncols), dtype=np.float32)


def new_stats(wl, compute: bool, fill=0.0) -> np.ndarray:
    """(batch, heads, seq_q) float32 row statistics (lse, m, l)."""
    if not compute:
        return np.empty((0, 0, 0), dtype=np.float32)
    return np.full((wl.batch, wl.heads, wl.seq_q), fill, dtype=np.float32)


def head_view(arr: np.ndarray, b: int, h: int, compute: bool) -> np.ndarray:
    """``arr[b, h]``, or the matching zero-row placeholder in count-only mode."""
    if not compute:
        return arr.reshape((0,) + arr.shape[3:]) if arr.ndim == 4 else placeholder_vector()
    return arr[b, h]


def heads_in_flight(rec, ctas_per_head: int, heads: int, sram_bytes_per_cta: int,
                    register_bytes_per_cta: int = 0, threads_per_cta: int = 128) -> int:
    """Heads whose CTAs are resident at one time (CTAs launch head after head): the number
    of heads' K/V that must share L2 for re-reads to hit (``hwmodels.timing``)."""
    resident = rec.resident_ctas(ctas_per_head * heads, sram_bytes_per_cta,
                                 register_bytes_per_cta, threads_per_cta)
    return min(heads, cdiv(resident, ctas_per_head) + 1)


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


# ---- causal masks (bottom-right aligned) ---------------------------------------------------

@njit(cache=True)
def causal_key_end(r1, seq_q, seq_k):
    """Exclusive end of the keys visible to query rows [.., r1): the last row sees the most."""
    end = r1 + seq_k - seq_q
    return max(0, min(seq_k, end))


@njit(cache=True)
def causal_block_is_partial(r0, c1, seq_q, seq_k):
    """True when block rows [r0, ..) x keys [.., c1) has a masked entry (first row sees the least)."""
    return c1 - 1 > r0 + seq_k - seq_q


@njit(cache=True)
def apply_causal_mask(s, r0, c0, seq_q, seq_k):
    """Set masked scores of tile ``s`` (rows from r0, keys from c0) to -inf in place."""
    rows, cols = s.shape
    for i in range(rows):
        last = r0 + i + seq_k - seq_q
        for j in range(max(0, last - c0 + 1), cols):
            s[i, j] = -np.inf


def causal_tile_pairs(seq_q: int, seq_k: int, block_q: int, block_k: int, causal: bool):
    """(visible tiles, partially masked tiles) for a block_q x block_k tiling: the numbers
    the closed forms use. Pure Python, O(T_r), for tests and bounds."""
    tr, tc = cdiv(seq_q, block_q), cdiv(seq_k, block_k)
    if not causal:
        return tr * tc, 0
    visible = partial = 0
    for i in range(tr):
        r0, r1 = i * block_q, min(seq_q, (i + 1) * block_q)
        end = max(0, min(seq_k, r1 + seq_k - seq_q))
        n = cdiv(end, block_k)
        visible += n
        partial += sum(1 for j in range(n) if min(seq_k, (j + 1) * block_k) - 1 > r0 + seq_k - seq_q)
    return visible, partial


def log2_floor(x: int) -> int:
    return int(math.floor(math.log2(x)))
