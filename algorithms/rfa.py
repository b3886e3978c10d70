"""Random Feature Attention (RFA) — Peng, Pappas, Yogatama, Schwartz, Smith, Kong, "Random
Feature Attention" (ICLR 2021, arXiv 2103.02143), §2-3 (random Fourier features after Rahimi
& Recht 2007; RFA with ℓ2-normalised queries and keys).

Bound: Θ(N d + N m d / B) HBM bytes and Θ(N m d) FLOPs, m = 2D features.

Idea: for unit vectors, exp(x·y/σ²) = e^{1/σ²} exp(-|x - y|²/(2σ²)), and the Gaussian kernel
is E_w[cos(w·(x - y)/σ)] with w ~ N(0, I); D random Fourier features
φ(x) = [sin(W x/σ), cos(W x/σ)] / sqrt(D) estimate it, and attention becomes linear in N.
The constant e^{1/σ²} cancels in the softmax normalisation.

Notation -> code: D == ``features`` option == ``plan.projections`` (rows of W); φ has
m = 2D entries (``plan.features``); x == q/|q|, y == k/|k|; σ == ``sigma`` option
(``plan.sigma``); u = x/σ is the kernels' projected input.

What it approximates: softmax attention of the normalised problem, softmax(q̂·k̂/σ²) V —
RFA changes the model as the paper does (queries and keys are ℓ2-normalised; σ is learned
per head in the paper, a fixed option here). ``exact_problem`` states that problem, and the
reported ``error_vs_exact`` is against its exact softmax attention; the error as D grows
then measures the random-feature approximation alone.

Defaults: D = d (the head dimension; our choice, giving φ 2d entries — the paper sets the
feature size per task), σ = 1 (our choice: the paper learns it). W is drawn i.i.d. N(0, 1)
from ``numpy.random.default_rng(seed)``, one W shared by all heads (a layer's random
features for one forward call); ``--seed`` unset means the inputs' seed.

HBM traffic per head (w = D d e bytes of W, m = 2D, T_q = ⌈N_q / B⌉; T_m = 1 feature
slice, see ``feature_attention`` for T_m > 1):
    non-causal: reads 2 N_k d e + w + N_q d e + T_q (w + 4 m d + 4 m), writes N_q d e + 4 (m d + m)
    causal:     reads (N_q + 2 N_k) d e + w, writes N_q d e   (state on chip)
FLOPs: matmul 2 N D d per projection (Q and K), 2 N m d for the state and for applying it;
2 N D sin/cos and N rsqrt per projection (special-function units). Bound: Θ(N d + N m d / B)
bytes, FLOPs Θ(N m d).

Differences from the paper: σ is a fixed option, not learned; the optional gating mechanism
is not simulated. Trigonometric features can still make the denominator φ(q)·z small or
negative at small D (the instability Performer's positive features address); a row whose
denominator is exactly 0 outputs zeros.

Decoding (``--decode``): the recurrent form — a step reads and writes the fp32 state S, z per
KV head instead of a K/V cache, constant in N (``algorithms.kernels.feature_decode``).
"""
from __future__ import annotations

import numpy as np

from algorithms.base import AlgorithmInfo, Option
from algorithms.kernels import feature_attention as fa

INFO = AlgorithmInfo(
    name="rfa",
    title="Random Feature Attention, random Fourier features (forward)",
    paper="Peng et al., 2021 (arXiv 2103.02143)",
    exact=False,
    io_bound="Θ(N d + N m d/B) bytes; FLOPs Θ(N m d), m = 2D",
    options=(
        Option("features", int, None, "D random Fourier features (φ has 2D entries); "
               "default: head_dim", validate=fa.check_positive),
        Option("sigma", float, 1.0, "σ: attention is softmax(q̂·k̂/σ²) over ℓ2-normalised "
               "queries and keys (learned in the paper; fixed here)",
               validate=lambda v: None if v > 0 else "must be a positive number"),
        Option("seed", int, None, fa.SEED_HELP.format(what="projection W"),
               validate=fa.check_seed),
    ),
)


def plan(wl, gpu, sram_bytes: int, features=None, sigma: float = 1.0,
         seed=None) -> fa.FeaturePlan:
    dfeat = wl.head_dim if features is None else int(features)
    return fa.make_plan("rfa", "trig", wl, sram_bytes, features=2 * dfeat, projections=dfeat,
                        seed=seed, sigma=float(sigma), sm_count=gpu.sm_count)


def projection(p: fa.FeaturePlan, d: int, seed: int) -> np.ndarray:
    """W: (D, d) float32, i.i.d. N(0, 1)."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((p.projections, d)).astype(np.float32)


def run(wl, p: fa.FeaturePlan, inputs, rec, compute: bool) -> dict:
    w = projection(p, wl.head_dim, fa.resolve_seed(p.seed, inputs)) if compute else None
    return fa.run_features("rfa", wl, p, inputs, rec, compute, lambda b, h: w)


def reference(wl, p: fa.FeaturePlan, inputs):
    """float64 RFA with the same W."""
    w = projection(p, wl.head_dim, fa.resolve_seed(p.seed, inputs))
    return fa.reference_attention("trig", inputs.q, inputs.k, inputs.v, wl.causal, wl.scale,
                                  lambda b, h: w, sigma=p.sigma)


def _unit(x):
    x = np.asarray(x, dtype=np.float64)
    nrm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(nrm > 0, nrm, 1.0)


def exact_problem(wl, p: fa.FeaturePlan, inputs):
    """(q, k, v, mask) of the exact softmax attention RFA approximates: logits q̂·k̂/σ² (the
    queries are pre-divided by σ² scale so that the reference's own scale gives that)."""
    return _unit(inputs.q) / (p.sigma ** 2 * wl.scale), _unit(inputs.k), inputs.v, None


def io_bound(wl, p: fa.FeaturePlan, sram_bytes: int) -> float:
    """Θ(N d + N m d / B) in bytes, all heads (m = 2D)."""
    return fa.feature_io_bound(wl, p)


def footprint(wl, p: fa.FeaturePlan):
    """Q, K, V, O and the fp32 state or slice partials (``feature_attention.feature_footprint``)."""
    return fa.feature_footprint("rfa", wl, p)
