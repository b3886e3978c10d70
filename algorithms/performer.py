"""Performer / FAVOR+ — Choromanski et al., "Rethinking Attention with Performers" (ICLR 2021,
arXiv 2009.14794), §2 (FAVOR+: positive random features, Lemma 1; orthogonal random
features); the feature count m = Θ(d log d) is the paper's (FACTS.md).

Idea: exp(x·y) = E_w[exp(w·x - |x|²/2) exp(w·y - |y|²/2)] with w ~ N(0, I_d); positive
features φ(x) = exp(W x - |x|²/2)/sqrt(m) keep every estimated weight positive, and drawing
the rows of W in orthogonal blocks lowers the variance. Attention becomes linear in N.

Notation -> code: m == ``features`` == ``plan.projections`` == ``plan.features``; W (m x d)
== ``projection``; x == u = q sqrt(scale) (so x·y is the softmax logit). Stabilization is
exact: queries subtract their row max of W u (cancels per
query), keys keep a running max (``feature_attention``), so nothing overflows.

Defaults: m = round(d ln d) (the paper's Θ(d log d) taken literally; 266 for d = 64; the
released code's default is 256, FACTS.md). W: ⌈m/d⌉ blocks, each
the orthonormal Q of a QR-factorised d x d Gaussian matrix, rows rescaled by the norms of
independent d-dimensional Gaussian vectors (so each row is marginally N(0, I_d)), drawn from
``numpy.random.default_rng([seed, PROJECTION_STREAM])``; ``--seed`` unset means the inputs'
seed (the separate stream keeps W independent of the inputs drawn from that seed).

``--redraw``: the paper redraws W periodically during training (every k steps). A single
forward call has no steps, so here it means: ``none`` (default) — one W shared by every
(batch, head), as one layer's buffer between redraws; ``head`` — an independent W for each
(batch, head), seeded by (seed, PROJECTION_STREAM, b, h), i.e. a fresh draw per head.
Drawing W is host/setup work and is not counted; reading it is (once per CTA).

``--features-kind``: ``orthogonal`` (default, FAVOR+) as above; ``iid`` draws the rows of W
independently from N(0, I_d), the estimator the paper improves on (§2.4, Theorem 2: for
positive features orthogonal rows give a strictly smaller mean squared error). Both cost the
same: the kind changes only the values of W, never the counts.

HBM traffic per head (w = P d e bytes of W, m features, T_q = ⌈N_q / B⌉; T_m = 1 feature
slice, see ``feature_attention`` for T_m > 1):
    non-causal: reads 2 N_k d e + w + N_q d e + T_q (w + 4 m d + 4 m), writes N_q d e + 4 (m d + m)
    causal:     reads (N_q + 2 N_k) d e + w, writes N_q d e   (state on chip)
FLOPs: matmul 2 N m d per projection (Q and K) and 2 N m d each for building and applying the
state; N m exps per projection; the stabilizers' maxes (the query's row max, the key's tile
max of the exponents: N m each) run on the ALU; below fp32, φ is converted before each
product (``feature_attention``). Bound: Θ(N d + N m d / B) bytes, FLOPs Θ(N m d).

Differences from the paper's implementation: no epsilon added to the features; the key
stabilizer is a running max (online rescaling of S, z) instead of a global max pass.

Decoding (``--decode``): the recurrent form — a step reads and writes the fp32 state S, z per
KV head instead of a K/V cache, constant in N (``algorithms.kernels.feature_decode``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from algorithms.base import AlgorithmInfo, Option
from algorithms.kernels import feature_attention as fa

FEATURE_KINDS = ("orthogonal", "iid")
# W comes from the stream [seed, PROJECTION_STREAM], never from default_rng(seed) itself:
# --seed defaults to --input-seed, and make_inputs draws Q first from default_rng(seed), so
# one stream would make W's rows the queries themselves (an i.i.d. W would equal the first m
# query rows) and the error would measure a coincidence, not the approximation.
PROJECTION_STREAM = 2009_14794

INFO = AlgorithmInfo(
    name="performer",
    title="Performer FAVOR+, positive orthogonal random features (forward)",
    paper="Choromanski et al., 2021 (arXiv 2009.14794)",
    exact=False,
    io_bound="Θ(N d + N m d/B) bytes; FLOPs Θ(N m d)",
    options=(
        Option("features", int, None, "m random features; default round(d ln d), at most 65,536",
               validate=fa.check_features),
        Option("seed", int, None, fa.SEED_HELP.format(what="orthogonal projection"),
               validate=fa.check_seed),
        Option("redraw", str, "none", "none: one projection for all heads; head: a fresh "
               "draw per (batch, head)", choices=("none", "head")),
        Option("features_kind", str, "orthogonal", "orthogonal: rows of W in orthogonal "
               "blocks (FAVOR+); iid: i.i.d. Gaussian rows (the paper's baseline)",
               choices=FEATURE_KINDS),
    ),
)


def default_features(d: int) -> int:
    """round(d ln d), at least 1 (m = Θ(d log d))."""
    return max(1, round(d * math.log(d)))


@dataclass(frozen=True)
class PerformerPlan(fa.FeaturePlan):
    features_kind: str = "orthogonal"   # how the rows of W are drawn (FEATURE_KINDS)


def plan(wl, gpu, sram_bytes: int, features=None, seed=None, redraw: str = "none",
         features_kind: str = "orthogonal") -> PerformerPlan:
    m = default_features(wl.head_dim) if features is None else int(features)
    p = fa.make_plan("performer", "positive", wl, sram_bytes, features=m, projections=m,
                     seed=seed, redraw=redraw, sm_count=gpu.sm_count)
    return PerformerPlan(**vars(p), features_kind=features_kind)


def orthogonal_gaussian(m: int, d: int, rng: np.random.Generator) -> np.ndarray:
    """(m, d) float32: orthogonal blocks of d rows, each row of chi(d)-distributed length."""
    blocks = []
    for _ in range(-(-m // d)):
        qmat, rmat = np.linalg.qr(rng.standard_normal((d, d)))
        # Householder QR fixes the signs of R's diagonal, which biases Q's columns (the first
        # always leans to -e_1): flipping each by sign(R_jj) makes Q Haar-distributed
        # (Mezzadri 2007), so every row of W is marginally N(0, I_d) as FAVOR+ needs.
        qmat = qmat * np.sign(np.diag(rmat))
        blocks.append(qmat.T)                          # rows orthonormal
    w = np.concatenate(blocks)[:m]
    lengths = np.linalg.norm(rng.standard_normal((m, d)), axis=1)
    return (w * lengths[:, None]).astype(np.float32)


def iid_gaussian(m: int, d: int, rng: np.random.Generator) -> np.ndarray:
    """(m, d) float32: rows i.i.d. N(0, I_d), the unstructured estimator the paper compares
    orthogonal features with (§2.4: orthogonality lowers the variance, Theorem 2)."""
    return rng.standard_normal((m, d)).astype(np.float32)


def projection_fn(p: PerformerPlan, d: int, seed: int):
    """(b, h) -> W for that head, per ``p.redraw`` and ``p.features_kind``."""
    draw = iid_gaussian if p.features_kind == "iid" else orthogonal_gaussian
    if p.redraw == "head":
        return lambda b, h: draw(p.projections, d,
                                 np.random.default_rng([seed, PROJECTION_STREAM, b, h]))
    shared = draw(p.projections, d, np.random.default_rng([seed, PROJECTION_STREAM]))
    return lambda b, h: shared


executed_host_bytes = fa.executed_host_bytes    # its φ maps, for the host check
EXECUTED_WORKSPACE = "feature maps"              # what those bytes are, in messages


def run(wl, p: fa.FeaturePlan, inputs, rec, compute: bool) -> dict:
    fn = (projection_fn(p, wl.head_dim, fa.resolve_seed(p.seed, inputs)) if compute
          else (lambda b, h: None))
    return fa.run_features("performer", wl, p, inputs, rec, compute, fn)


def reference(wl, p: fa.FeaturePlan, inputs):
    """float64 FAVOR+ with the same projections."""
    return fa.reference_attention("positive", inputs.q, inputs.k, inputs.v, wl.causal,
                                  wl.scale, projection_fn(p, wl.head_dim,
                                                          fa.resolve_seed(p.seed, inputs)))


def io_bound(wl, p: fa.FeaturePlan, sram_bytes: int) -> float:
    """Θ(N d + N m d / B) in bytes, all heads."""
    return fa.feature_io_bound(wl, p)


def footprint(wl, p: fa.FeaturePlan):
    """Q, K, V, O and the fp32 state or slice partials (``feature_attention.feature_footprint``)."""
    return fa.feature_footprint("performer", wl, p)
