"""Random Feature Attention (RFA) — Peng, Pappas, Yogatama, Schwartz, Smith, Kong, "Random
Feature Attention" (ICLR 2021, arXiv 2103.02143), §2-3 (random Fourier features after Rahimi
& Recht 2007; RFA).

Idea: exp(x·y) = exp(|x|²/2) exp(|y|²/2) exp(-|x - y|²/2), and the Gaussian kernel
exp(-|x - y|²/2) = E_w[cos(w·(x - y))] with w ~ N(0, I) is estimated by D random Fourier
features φ(x) = [sin(W x), cos(W x)] / sqrt(D); the attention then becomes linear in N.

Notation -> code: D == ``features`` option == ``plan.projections`` (rows of W); φ has
m = 2D entries (``plan.features``); x == u = q sqrt(scale), y = k sqrt(scale) (so that
x·y is the softmax logit); σ = 1 (the paper's learned σ is folded into the logit scale).
Key features carry exp(|u_k|²/2) (kept stable by the running shift, see
``feature_attention``); the query factor exp(|u_q|²/2) cancels and is dropped.

Default D = d (the head dimension; our choice, giving φ 2d entries — the paper sets the
feature size per task). W is drawn i.i.d. N(0, 1) from ``numpy.random.default_rng(seed)``,
one W shared by all heads (a layer's random features for one forward call).

HBM traffic per head (w = P d e bytes of W, m features, T_q = ⌈N_q / B⌉; T_m = 1 feature
slice, see ``feature_attention`` for T_m > 1):
    non-causal: reads 2 N_k d e + w + N_q d e + T_q (w + 4 m d + 4 m), writes N_q d e + 4 (m d + m)
    causal:     reads (N_q + 2 N_k) d e + w, writes N_q d e
FLOPs: matmul 2 N D d per projection (Q and K), 2 N m d for the state and for applying it;
2 N D sin/cos per projection (special-function units). Bound: Θ(N d + N m d / B) bytes,
FLOPs Θ(N m d).

Differences from the paper: the paper ℓ2-normalises queries and keys and learns σ per head,
which changes the attention being computed into softmax over cosines; this simulator
approximates the given softmax attention (its logits q·k·scale), so the norm factors are kept
explicitly. The optional gating mechanism is not simulated. Trigonometric features can make
the denominator φ(q)·z small or negative (the instability Performer's positive features
address): the error against exact attention is reported, not hidden.
"""
from __future__ import annotations

import numpy as np

from algorithms.base import AlgorithmInfo, Option
from algorithms import feature_attention as fa

INFO = AlgorithmInfo(
    name="rfa",
    title="Random Feature Attention, random Fourier features (forward)",
    paper="Peng et al., 2021 (arXiv 2103.02143)",
    exact=False,
    io_bound="Θ(N d + N m d/B) bytes; FLOPs Θ(N m d), m = 2D",
    options=(
        Option("features", int, None, "D random Fourier features (φ has 2D entries); "
               "default: head_dim", validate=fa.check_positive),
        Option("seed", int, 0, "seed of the random projection W",
               validate=fa.check_seed),
    ),
)


def plan(wl, gpu, sram_bytes: int, features=None, seed: int = 0) -> fa.FeaturePlan:
    dfeat = wl.head_dim if features is None else int(features)
    return fa.make_plan("rfa", "trig", wl, sram_bytes, features=2 * dfeat, projections=dfeat,
                        seed=seed)


def projection(p: fa.FeaturePlan, d: int) -> np.ndarray:
    """W: (D, d) float32, i.i.d. N(0, 1), from the plan's seed."""
    rng = np.random.default_rng(p.seed)
    return rng.standard_normal((p.projections, d)).astype(np.float32)


def run(wl, p: fa.FeaturePlan, inputs, rec, compute: bool) -> dict:
    w = projection(p, wl.head_dim) if compute else None
    return fa.run_features("rfa", wl, p, inputs, rec, compute, lambda b, h: w)


def reference(wl, p: fa.FeaturePlan, inputs):
    """float64 RFA with the same W."""
    w = projection(p, wl.head_dim)
    return fa.reference_attention("trig", inputs.q, inputs.k, inputs.v, wl.causal, wl.scale,
                                  lambda b, h: w)


def io_bound(wl, p: fa.FeaturePlan, sram_bytes: int) -> float:
    """Θ(N d + N m d / B) in bytes, all heads (m = 2D)."""
    return fa.feature_io_bound(wl, p)
