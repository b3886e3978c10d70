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
from ``numpy.random.default_rng([seed, PROJECTION_STREAM])``, one W shared by all heads (a
layer's random features for one forward call); ``--seed`` unset means the inputs' seed.

HBM traffic per head (w = D d e bytes of W, m = 2D, T_q = ⌈N_q / B⌉; T_m = 1 feature
slice, see ``feature_attention`` for T_m > 1):
    non-causal: reads 2 N_k d e + w + N_q d e + T_q (w + 4 m d + 4 m), writes N_q d e + 4 (m d + m)
    causal:     reads (N_q + 2 N_k) d e + w, writes N_q d e   (state on chip)
FLOPs: matmul 2 N D d per projection (Q and K), 2 N m d for the state and for applying it;
2 N D sin/cos and N rsqrt per projection (special-function units). φ has no max or select
(its other ops are FMA work; only the causal sweep's select of A runs on the ALU); below
fp32 it is converted before each product (``feature_attention``). Bound: Θ(N d + N m d / B)
bytes, FLOPs Θ(N m d).

Gating (``--gate``, causal only; the paper's §3.2 recency bias): g_t = σ(w_g·x_t + b_g),
S_t = g_t S_{t-1} + (1 - g_t) φ(k_t) v_tᵀ, z_t likewise, run as a chunked sweep with the
state decayed by the gates (``algorithms.kernels.feature_gate`` states the math and the
counts it adds). x_t is the key k_t (the simulator has no layer input); w_g ~ N(0, I/d)
from the seed (so w_g·k has s.d. about 1 on standard-normal keys) and b_g == ``gate_bias``
(default 2: σ(2) ≈ 0.88, a memory of about 8 tokens) stand in for the learned parameters.
The gated model is no longer softmax attention; ``error_vs_exact`` is then against the exact
attention it approximates: weights exp(q̂·k̂/σ²)·(1 - g_j)·Π_{j<s<=i} g_s, i.e. softmax with
the per-key bias log(1 - g_j) - Λ_j (Λ the running sum of log g; the query's own Λ_i
cancels in the normalisation).

Differences from the paper: σ, w_g and b_g are fixed, not learned; the gate reads the key,
not the layer input. Trigonometric features can still make the denominator φ(q)·z small or
negative at small D (the instability Performer's positive features address); a row whose
denominator is exactly 0 outputs zeros.

Decoding (``--decode``): the recurrent form — a step reads and writes the fp32 state S, z per
KV head instead of a K/V cache, constant in N (``algorithms.kernels.feature_decode``).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from algorithms.base import AlgorithmInfo, Option, PlanError
from algorithms.kernels import feature_attention as fa
from algorithms.kernels import feature_gate as gk
from algorithms.kernels.common import new_output, placeholder, placeholder_vector
from algorithms.kernels.feature_kernels import KIND_TRIG
from hwmodels.memory import SramOverflowError

DEFAULT_GATE_BIAS = 2.0     # b_g: σ(2) ≈ 0.88 (our choice; the paper learns it)
# W and the gate come from their own streams of the seed, never from default_rng(seed)
# itself: --seed defaults to --input-seed and make_inputs draws Q first from that stream,
# which would make W's rows the queries themselves.
PROJECTION_STREAM = 2103_02143
GATE_STREAM = 1

# q̂·k̂ lies in [-1, 1], so σ sets the logits' range to ±1/σ²: below 0.01 they pass ±10⁴ and
# the softmax is an argmax that D random features cannot estimate (the sin/cos arguments
# W x̂/σ lose their float32 precision, 1/σ² overflows near 1e-19); above 100 the attention is
# uniform to within 10⁻⁴ (and 1/σ² underflows near 1e19). Outside, the run would print an
# error of the float arithmetic, not of the estimator, or NaN.
SIGMA_MIN, SIGMA_MAX = 1e-2, 1e2


def check_sigma(value: float) -> str | None:
    if not math.isfinite(value) or not SIGMA_MIN <= value <= SIGMA_MAX:
        return (f"must be in [{SIGMA_MIN:g}, {SIGMA_MAX:g}] (logits q̂·k̂/σ² within ±10⁴), "
                f"got {value:g}")
    return None


INFO = AlgorithmInfo(
    name="rfa",
    title="Random Feature Attention, random Fourier features (forward)",
    paper="Peng et al., 2021 (arXiv 2103.02143)",
    exact=False,
    io_bound="Θ(N d + N m d/B) bytes; FLOPs Θ(N m d), m = 2D",
    options=(
        Option("features", int, None, "D random Fourier features (φ has 2D entries); "
               "default: head_dim; at most 65,536", validate=fa.check_features),
        Option("sigma", float, 1.0, "σ: attention is softmax(q̂·k̂/σ²) over ℓ2-normalised "
               f"queries and keys (learned in the paper; fixed here), in [{SIGMA_MIN:g}, "
               f"{SIGMA_MAX:g}]", validate=check_sigma),
        Option("seed", int, None, fa.SEED_HELP.format(what="projection W"),
               validate=fa.check_seed),
        Option("gate", bool, False, "the paper's recency gate g_t = σ(w_g·k_t + b_g) on the "
               "causal state (needs --causal)"),
        Option("gate_bias", float, None, "b_g of the gate (with --gate; default "
               f"{DEFAULT_GATE_BIAS:g}); σ(b_g) is the typical decay per token",
               validate=lambda v: None if math.isfinite(v) else "must be a finite number"),
    ),
)


@dataclass(frozen=True)
class RFAPlan(fa.FeaturePlan):
    gate: bool = False                  # the recency gate on the causal state
    gate_bias: float = DEFAULT_GATE_BIAS


def plan(wl, gpu, sram_bytes: int, features=None, sigma: float = 1.0, seed=None,
         gate: bool = False, gate_bias: float | None = None) -> RFAPlan:
    if gate_bias is not None and not gate:
        raise PlanError("rfa: --gate-bias sets the recency gate's bias: add --gate, or drop "
                        "--gate-bias")
    gate_bias = DEFAULT_GATE_BIAS if gate_bias is None else gate_bias
    dfeat = wl.head_dim if features is None else int(features)
    if gate:
        gk.check_gate_workload("rfa", wl, "trig")
    p = fa.make_plan("rfa", "trig", wl, sram_bytes, features=2 * dfeat, projections=dfeat,
                     seed=seed, sigma=float(sigma), sm_count=gpu.sm_count)
    if gate:
        extra = sum(gk.gate_buffers(p.block, wl.head_dim, wl.elem_bytes).values())
        if p.smem_bytes + extra > sram_bytes:
            raise SramOverflowError(
                f"rfa --gate needs {p.smem_bytes + extra:,} bytes of SRAM per CTA (the sweep's "
                f"{p.smem_bytes:,} B plus {extra:,} B of gate parameters and values) but the "
                f"budget is {sram_bytes:,} bytes; use fewer --features or a larger --sram-kb")
        p = dataclasses.replace(p, smem_bytes=p.smem_bytes + extra)
    return RFAPlan(**vars(p), gate=bool(gate), gate_bias=float(gate_bias))


def projection(p: fa.FeaturePlan, d: int, seed: int) -> np.ndarray:
    """W: (D, d) float32, i.i.d. N(0, 1)."""
    rng = np.random.default_rng([seed, PROJECTION_STREAM])
    return rng.standard_normal((p.projections, d)).astype(np.float32)


def gate_params(p: RFAPlan, d: int, seed: int) -> tuple[np.ndarray, np.float32]:
    """(w_g (d,) float32 ~ N(0, I/d), b_g): one gate for every head, drawn from its own
    stream of the seed (so W is the same with and without the gate)."""
    rng = np.random.default_rng([seed, GATE_STREAM])
    wg = (rng.standard_normal(d) / math.sqrt(d)).astype(np.float32)
    return wg, np.float32(p.gate_bias)


executed_host_bytes = fa.executed_host_bytes    # its φ maps, for the host check
EXECUTED_WORKSPACE = "feature maps"              # what those bytes are, in messages


def run(wl, p: RFAPlan, inputs, rec, compute: bool) -> dict:
    w = projection(p, wl.head_dim, fa.resolve_seed(p.seed, inputs)) if compute else None
    if not p.gate:
        return fa.run_features("rfa", wl, p, inputs, rec, compute, lambda b, h: w)
    d, e = wl.head_dim, wl.elem_bytes
    if compute:
        gate = gate_params(p, d, fa.resolve_seed(p.seed, inputs))
    else:
        w, gate = placeholder(d), (placeholder_vector(), np.float32(0.0))
    per_slice = p.tile_units
    return gk.run_gated("rfa", wl, p, inputs, rec, compute, lambda b, h: w, lambda b, h: gate,
                        KIND_TRIG, 1.0 / p.sigma,
                        fa.causal_buffers(p.block, d, 2 * per_slice, per_slice, e),
                        fa.combine_buffers(p.block, d), new_output(wl, compute))


def gate_logs(wl, p: RFAPlan, k, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(log(1 - g_j), Λ_j = Σ_{s<=j} log g_s), each (B, G, N_k) float64."""
    wg, bg = gate_params(p, wl.head_dim, seed)
    y = np.asarray(k, np.float64) @ wg.astype(np.float64) + float(bg)
    return -np.logaddexp(0.0, y), np.cumsum(-np.logaddexp(0.0, -y), axis=-1)


def reference(wl, p: RFAPlan, inputs):
    """float64 RFA with the same W (and gate)."""
    seed = fa.resolve_seed(p.seed, inputs)
    w = projection(p, wl.head_dim, seed)
    if not p.gate:
        return fa.reference_attention("trig", inputs.q, inputs.k, inputs.v, wl.causal,
                                      wl.scale, lambda b, h: w, sigma=p.sigma)
    # gated: the chunk-free form, weights φ(q_i)·φ(k_j) (1 - g_j) exp(Λ_i - Λ_j), j <= i
    log_one_minus, lam = gate_logs(wl, p, inputs.k, seed)         # (B, G, N_k) each
    group = wl.heads // wl.kv_heads
    off = wl.seq_k - wl.seq_q
    pos = np.arange(wl.seq_q)[:, None] + off                      # query key positions
    visible = np.arange(wl.seq_k)[None, :] <= pos
    out = np.zeros(inputs.q.shape, dtype=np.float64)
    for b in range(wl.batch):
        for h in range(wl.heads):
            g = h // group
            fq = fa.reference_features("trig", inputs.q[b, h], w, wl.scale, False, p.sigma)
            fk = fa.reference_features("trig", inputs.k[b, g], w, wl.scale, True, p.sigma)
            log_d = log_one_minus[b, g][None, :] + lam[b, g][pos] - lam[b, g][None, :]
            a = np.where(visible, (fq @ fk.T) * np.exp(np.minimum(log_d, 0.0)), 0.0)
            den = a.sum(axis=1)
            num = a @ np.asarray(inputs.v[b, g], dtype=np.float64)
            out[b, h] = np.where(den[:, None] != 0, num / np.where(den == 0, 1, den)[:, None], 0)
    return out


def _unit(x):
    x = np.asarray(x, dtype=np.float64)
    nrm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(nrm > 0, nrm, 1.0)


def exact_problem(wl, p: RFAPlan, inputs):
    """(q, k, v, mask) of the exact softmax attention RFA approximates: logits q̂·k̂/σ² (the
    queries are pre-divided by σ² scale so that the reference's own scale gives that); with
    the gate, plus the per-key bias log(1 - g_j) - Λ_j, carried by one more column (1/scale
    on the queries, the bias on the keys)."""
    q, k = _unit(inputs.q) / (p.sigma ** 2 * wl.scale), _unit(inputs.k)
    if not p.gate:
        return q, k, inputs.v, None
    log_one_minus, lam = gate_logs(wl, p, inputs.k, fa.resolve_seed(p.seed, inputs))
    bias = log_one_minus - lam
    q = np.concatenate([q, np.full(q.shape[:-1] + (1,), 1.0 / wl.scale)], axis=-1)
    k = np.concatenate([k, bias[..., None]], axis=-1)
    return q, k, inputs.v, None


def io_bound(wl, p: fa.FeaturePlan, sram_bytes: int) -> float:
    """Θ(N d + N m d / B) in bytes, all heads (m = 2D)."""
    return fa.feature_io_bound(wl, p)


def footprint(wl, p: fa.FeaturePlan):
    """Q, K, V, O and the fp32 state or slice partials (``feature_attention.feature_footprint``)."""
    return fa.feature_footprint("rfa", wl, p)
