"""Random inputs for executed-mode simulation, reproducible from a seed.

Standard-normal Q and K (the ``normal`` family) make attention diffuse: every logit has
standard deviation 1, each row spreads its weight over all keys and the exact output is an
average of many random values, close to zero. A relative error against it then measures
noise against almost nothing (an approximation can exceed 1). The other families give
attention the structure the approximate algorithms were designed for; every family is
stated in terms of logits (scale · q·k, ``wl.scale``, default 1/√d), so its sharpness does
not depend on the head dimension:

==============  ===========================================================================
family          what it draws
==============  ===========================================================================
``normal``      Q, K, V standard normal (logit s.d. 1): today's default, diffuse.
``scaled``      as ``normal`` with Q and K doubled: logit s.d. 4, sharp rows (a larger
                logit scale, as trained models' attention often has).
``clustered``   CLUSTERS centres; every key and query is a centre plus small noise, and
                every value is its cluster's value centre plus noise: a query and a key of
                the same cluster have logit ≈ CLUSTER_LOGIT, of different clusters ≈ 0, so
                each row attends to its cluster and the output is that cluster's value.
``lowrank``     Q and K inside one random subspace of rank max(1, d / LOWRANK_DIVISOR),
                logit s.d. LOWRANK_LOGIT_SD (low-rank QKᵀ, where feature maps need fewer
                features).
``near_keys``   keys standard-normal directions, each query its own key plus noise: a query's
                logit with its own key ≈ NEAR_SELF_LOGIT, with the others s.d.
                NEAR_SELF_LOGIT/√d (the similarity structure Reformer's shared QK assumes).
==============  ===========================================================================

The seed fixes everything a family draws (centres, subspace, noise); ``normal`` draws
exactly what ``make_inputs`` drew before families existed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

FAMILIES = ("normal", "scaled", "clustered", "lowrank", "near_keys")

SCALED_FACTOR = 2.0         # Q and K x 2: logits x 4
CLUSTERS = 8                # clustered: number of centres
CLUSTER_LOGIT = 6.0         # clustered: logit of a query with a key of its own cluster
CLUSTER_NOISE = 0.2         # clustered: noise norm relative to the centres' norm
LOWRANK_DIVISOR = 16        # lowrank: rank = d / 16 (4 at d = 64)
LOWRANK_LOGIT_SD = 2.0      # lowrank: standard deviation of the logits
NEAR_SELF_LOGIT = 8.0       # near_keys: logit of a query with its own key
NEAR_NOISE = 0.3            # near_keys: query noise norm relative to the key's norm


@dataclass(frozen=True)
class Inputs:
    """float32 (batch, heads, seq, head_dim) tensors; ``do`` is dL/dO for backward passes."""
    q: np.ndarray
    k: np.ndarray
    v: np.ndarray
    do: np.ndarray | None = None
    seed: int = 0
    family: str = "normal"


def make_inputs(wl, seed: int = 0, magnitude: float = 1.0, family: str = "normal") -> Inputs:
    """Q, K, V (and dO) of one input ``family`` (see the module docstring), Q and K then
    times ``magnitude`` (logits grow as magnitude²; 1e3-magnitude logits test the softmax's
    overflow handling).

    Arguments:
        wl: the workload (batch, heads, kv_heads, seq_q, seq_k, head_dim, scale).
        seed: fixes every random draw of the family.
        family: one of ``FAMILIES``.
    Return:
        ``Inputs`` with q (B, H, N_q, d), k and v (B, G, N_k, d) float32.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown input family {family!r}; one of {', '.join(FAMILIES)}")
    rng = np.random.default_rng(seed)
    if family in ("normal", "scaled"):
        q, k, v = _normal(rng, wl)
        if family == "scaled":
            q, k = q * np.float32(SCALED_FACTOR), k * np.float32(SCALED_FACTOR)
    else:
        q, k, v = _STRUCTURED[family](rng, wl)
    q = (q * np.float32(magnitude)).astype(np.float32)
    k = (k * np.float32(magnitude)).astype(np.float32)
    do = (rng.standard_normal((wl.batch, wl.heads, wl.seq_q, wl.head_dim), dtype=np.float32)
          if wl.has_backward else None)
    return Inputs(q=q, k=k, v=v.astype(np.float32), do=do, seed=seed, family=family)


def _normal(rng, wl):
    """Standard normal, drawn in the order make_inputs always used (q, k, v)."""
    q = rng.standard_normal((wl.batch, wl.heads, wl.seq_q, wl.head_dim), dtype=np.float32)
    k = rng.standard_normal((wl.batch, wl.kv_heads, wl.seq_k, wl.head_dim), dtype=np.float32)
    v = rng.standard_normal((wl.batch, wl.kv_heads, wl.seq_k, wl.head_dim), dtype=np.float32)
    return q, k, v


def _unit_rows(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _clustered(rng, wl):
    """Centres of norm R with scale R² = CLUSTER_LOGIT (same-cluster logit); centres of
    different clusters are nearly orthogonal in d dimensions (logit ≈ 0 ± R²/√d)."""
    d = wl.head_dim
    radius = math.sqrt(CLUSTER_LOGIT / wl.scale)
    centres = _unit_rows(rng.standard_normal((CLUSTERS, d))) * radius        # (C, d)
    values = rng.standard_normal((CLUSTERS, d))                               # (C, d)

    def members(heads, seq):
        label = rng.integers(0, CLUSTERS, size=(wl.batch, heads, seq))      # (B, H, N)
        noise = rng.standard_normal((wl.batch, heads, seq, d)) * (CLUSTER_NOISE * radius
                                                                    / math.sqrt(d))
        return label, centres[label] + noise

    _, q = members(wl.heads, wl.seq_q)
    label_k, k = members(wl.kv_heads, wl.seq_k)
    v = values[label_k] + 0.1 * rng.standard_normal(k.shape)
    return q, k, v


def _lowrank(rng, wl):
    """Q = Z_q U σ, K = Z_k U σ, U (r x d) orthonormal rows: logits scale σ² z_q·z_k have
    s.d. scale σ² √r = LOWRANK_LOGIT_SD."""
    d = wl.head_dim
    r = max(1, d // LOWRANK_DIVISOR)
    basis = np.linalg.qr(rng.standard_normal((d, r)))[0].T                   # (r, d)
    sigma = math.sqrt(LOWRANK_LOGIT_SD / (wl.scale * math.sqrt(r)))
    q = rng.standard_normal((wl.batch, wl.heads, wl.seq_q, r)) @ basis * sigma
    k = rng.standard_normal((wl.batch, wl.kv_heads, wl.seq_k, r)) @ basis * sigma
    v = rng.standard_normal((wl.batch, wl.kv_heads, wl.seq_k, d))
    return q, k, v


def _near_keys(rng, wl):
    """Keys: random directions of norm ρ, scale ρ² = NEAR_SELF_LOGIT; query i is key
    i + N_k - N_q (its own position, bottom-right aligned as the causal mask) plus noise of
    norm NEAR_NOISE ρ. With GQA the query heads of a group share their key head."""
    d = wl.head_dim
    rho = math.sqrt(NEAR_SELF_LOGIT / wl.scale)
    k = _unit_rows(rng.standard_normal((wl.batch, wl.kv_heads, wl.seq_k, d))) * rho
    group = wl.heads // wl.kv_heads
    own = np.repeat(k, group, axis=1)                                        # (B, H, N_k, d)
    idx = np.clip(np.arange(wl.seq_q) + wl.seq_k - wl.seq_q, 0, wl.seq_k - 1)
    noise = rng.standard_normal((wl.batch, wl.heads, wl.seq_q, d)) * (NEAR_NOISE * rho
                                                                      / math.sqrt(d))
    q = own[:, :, idx] + noise
    v = rng.standard_normal((wl.batch, wl.kv_heads, wl.seq_k, d))
    return q, k, v


_STRUCTURED = {"clustered": _clustered, "lowrank": _lowrank, "near_keys": _near_keys}
