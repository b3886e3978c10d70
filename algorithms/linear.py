"""Linear attention — Katharopoulos, Vyas, Pappas, Fleuret, "Transformers are RNNs: Fast
Autoregressive Transformers with Linear Attention" (ICML 2020, arXiv 2006.16236), §3.2
(linearized attention, φ(x) = elu(x) + 1) and §3.3 (causal masking as a recurrence).

Idea: replace exp(q·k) by φ(q)·φ(k); then Σ_j φ(q_i)·φ(k_j) v_j = φ(q_i)ᵀ (Σ_j φ(k_j) v_jᵀ), so
the N x N score matrix is never formed and the cost is linear in N.

Notation -> code: φ == ``_elu_plus_one``; S == ``s`` (Σ φ(k) vᵀ, d x d), z == ``z``
(Σ φ(k)); m == d (φ keeps the head dimension); B == ``plan.block``; the causal form's chunk
length C == B. The executor is ``algorithms.kernels.feature_attention`` (shared with rfa, performer).

HBM traffic per head (bytes, e = storage bytes; T_q = ⌈N_q / B⌉; one feature slice, as
whenever the d x d fp32 state fits, e.g. d <= 128 on an H100):
    non-causal: reads 2 N_k d e + N_q d e + T_q (4 d² + 4 d), writes N_q d e + 4 (d² + d)
    causal:     reads (N_q + 2 N_k) d e, writes N_q d e      (state stays in SRAM)
FLOPs per head, non-causal: matmul 2 N_k d² (S) + 2 N_q d² (φ(Q) S); φ: N d exps and 3 N d
other ops on each of Q and K, 2 N d of them (min, select) on the ALU; N_k d (z) + 2 N_q d
(φ(Q)·z) + N_q d (divide) other ops. Causal (N_q = N_k, chunks of c rows): per chunk matmul
2c²d (A = φQ φKᵀ) + 2c²d (A V) + 2cd² (φ(Q) S) + 2cd² (state update) and 2c² + 5cd + c other
ops, c² of them (the causal select) on the ALU, plus φ. Below fp32, φ (and A, and the fp32
state S) are converted to the storage dtype before their products: non-causal
(N_k + N_q) d + T_q d² per head, causal 2cd + c² + d² per chunk; O on its store.
Bound: Θ(N d) bytes per head (+ Θ(N d²/B) for the state reads), FLOPs Θ(N d²).

Differences from the paper's implementation: the causal CUDA kernel of the paper walks one
token at a time; here the equivalent chunked form (intra-chunk scores + inter-chunk state)
is used (same result; it turns the per-token rank-1 updates into tile matmuls). No feature
map normalisation or epsilon in the divide:
a row whose denominator is 0 (no visible key) outputs zeros.

Decoding (``--decode``): the recurrent form — a step reads and writes the fp32 state S, z per
KV head instead of a K/V cache, constant in N (``algorithms.kernels.feature_decode``).
"""
from __future__ import annotations

from algorithms.base import AlgorithmInfo
from algorithms.kernels import feature_attention as fa

INFO = AlgorithmInfo(
    name="linear",
    title="Linear attention, φ = elu + 1 (forward)",
    paper="Katharopoulos et al., 2020 (arXiv 2006.16236)",
    exact=False,
    io_bound="Θ(N d + N d²/B) bytes; FLOPs Θ(N d²)",
)


def plan(wl, gpu, sram_bytes: int) -> fa.FeaturePlan:
    return fa.make_plan("linear", "elu", wl, sram_bytes, features=wl.head_dim, projections=0,
                        sm_count=gpu.sm_count)


executed_host_bytes = fa.executed_host_bytes    # its φ maps, for the host check
EXECUTED_WORKSPACE = "feature maps"              # what those bytes are, in messages


def run(wl, p: fa.FeaturePlan, inputs, rec, compute: bool) -> dict:
    return fa.run_features("linear", wl, p, inputs, rec, compute, None)


def reference(wl, p: fa.FeaturePlan, inputs):
    """float64 elu+1 linear attention on the same inputs."""
    return fa.reference_attention("elu", inputs.q, inputs.k, inputs.v, wl.causal, wl.scale,
                                  lambda b, h: None)


def io_bound(wl, p: fa.FeaturePlan, sram_bytes: int) -> float:
    """Θ(N d + N m d / B) in bytes, all heads (m = d)."""
    return fa.feature_io_bound(wl, p)


def footprint(wl, p: fa.FeaturePlan):
    """Q, K, V, O and the fp32 state or slice partials (``feature_attention.feature_footprint``)."""
    return fa.feature_footprint("linear", wl, p)
