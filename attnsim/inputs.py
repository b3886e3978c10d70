"""Random inputs for executed-mode simulation, reproducible from a seed."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Inputs:
    """float32 (batch, heads, seq, head_dim) tensors; ``do`` is dL/dO for backward passes."""
    q: np.ndarray
    k: np.ndarray
    v: np.ndarray
    do: np.ndarray | None = None
    seed: int = 0


def make_inputs(wl, seed: int = 0, magnitude: float = 1.0) -> Inputs:
    """Standard-normal Q, K, V (and dO) times ``magnitude``.

    ``magnitude`` scales Q and K: logits then grow as magnitude² (1e3-magnitude logits test
    the softmax's overflow handling).
    """
    rng = np.random.default_rng(seed)

    def randn(*shape):
        return rng.standard_normal(shape, dtype=np.float32)

    q = randn(wl.batch, wl.heads, wl.seq_q, wl.head_dim) * np.float32(magnitude)
    k = randn(wl.batch, wl.kv_heads, wl.seq_k, wl.head_dim) * np.float32(magnitude)
    v = randn(wl.batch, wl.kv_heads, wl.seq_k, wl.head_dim)
    do = randn(wl.batch, wl.heads, wl.seq_q, wl.head_dim) if wl.has_backward else None
    return Inputs(q=q, k=k, v=v, do=do, seed=seed)
