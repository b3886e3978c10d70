"""Differential attention: its own float64 math, the fused kernel's closed form, its errors."""
import numpy as np
import pytest

from algorithms import diff
from algorithms.base import PlanError
from algorithms.diff import lambda_init
from attnsim import Workload, make_inputs, simulate
from shapes import EXACT_TOL, RAGGED_SHAPES, rel_err

cdiv = lambda a, b: -(-a // b)  # noqa: E731


RMS_EPS = 1e-5          # the official code's RMSNorm(2d, eps=1e-5) after each head


def paper_differential_attention(q, k, v, lam_q1, lam_k1, lam_q2, lam_k2, layer, causal):
    """Ye et al. 2024 (arXiv 2410.05258), Section 2.1, in float64, written from the paper:

        [Q₁; Q₂] = Q, [K₁; K₂] = K (each d wide), V 2d wide          (Equation 1)
        DiffAttn = (softmax(Q₁K₁ᵀ/√d) − λ softmax(Q₂K₂ᵀ/√d)) V
        λ = exp(λ_q1·λ_k1) − exp(λ_q2·λ_k2) + λ_init                   (Equation 2)
        λ_init = 0.8 − 0.6 exp(−0.3 (l − 1))
        head = (1 − λ_init) · RMSNorm(DiffAttn)  (per head, over 2d)   (Equation 3)

    q, k, v: (B, H, N, 2d); λ vectors (H, d), the model's parameters. Causal: query i of
    N_q sees keys j ≤ i + N_k − N_q (bottom-right aligned; every row needs a visible key).
    """
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    n_q, n_k, d = q.shape[2], k.shape[2], q.shape[3] // 2
    lam_init = 0.8 - 0.6 * np.exp(-0.3 * (layer - 1))
    lam = (np.exp(np.sum(lam_q1 * lam_k1, axis=-1)) - np.exp(np.sum(lam_q2 * lam_k2, axis=-1))
           + lam_init)[None, :, None, None]                              # (1, H, 1, 1)
    visible = np.ones((n_q, n_k), bool)
    if causal:
        visible = np.arange(n_k)[None, :] <= np.arange(n_q)[:, None] + (n_k - n_q)

    def softmax_map(qh, kh):
        logits = np.where(visible, qh @ kh.swapaxes(-1, -2) / np.sqrt(d), -np.inf)
        weights = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return weights / weights.sum(axis=-1, keepdims=True)          # (B, H, N_q, N_k)

    heads = (softmax_map(q[..., :d], k[..., :d]) - lam * softmax_map(q[..., d:], k[..., d:])) @ v
    rms = np.sqrt(np.mean(heads ** 2, axis=-1, keepdims=True) + RMS_EPS)
    return (1.0 - lam_init) * heads / rms


def diff_workload(shape, causal):
    b, h, nq, nk, d = shape
    return Workload(batch=b, heads=h, seq_q=nq, seq_k=nk, head_dim=2 * (d // 2), causal=causal)


@pytest.mark.parametrize("shape", RAGGED_SHAPES[:2])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("layer", [1, 12])
def test_kernel_matches_its_float64_reference(shape, causal, layer):
    wl = diff_workload(shape, causal)
    opts = {"layer": layer, "seed": 3}
    r = simulate("diff", wl, "h100", sram_bytes=48 * 1024, options=opts, inputs=make_inputs(wl, 5))
    assert r.error_vs_reference < EXACT_TOL and r.error_vs_exact is None
    counted = simulate("diff", wl, "h100", sram_bytes=48 * 1024, options=opts, compute=False)
    assert counted.counts == r.counts


@pytest.mark.parametrize("shape", RAGGED_SHAPES[:2])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("layer", [1, 12])
def test_matches_the_papers_equations_written_here(shape, causal, layer):
    """The kernel's output against Equations 1–3 written above from the paper (its only
    input from the module: the λ vectors, the model's parameters)."""
    wl = diff_workload(shape, causal)
    inputs = make_inputs(wl, 5)
    r = simulate("diff", wl, "h100", sram_bytes=48 * 1024, options={"layer": layer, "seed": 3},
                 inputs=inputs)
    paper = paper_differential_attention(inputs.q, inputs.k, inputs.v,
                                         *diff.lambda_vectors(wl, 3), layer, causal)
    assert rel_err(r.outputs["o"], paper) < EXACT_TOL


def test_logit_scale_is_one_over_root_of_the_half_width():
    """1/√d with d = head_dim / 2 (the official code: head_dim = embed_dim // heads // 2,
    scaling = head_dim ** -0.5); the workload's default 1/√(2d) would soften both maps."""
    wl = Workload(seq_q=64, head_dim=64)
    assert simulate("diff", wl, "h100", compute=False).plan["scale"] == 1 / np.sqrt(32)
    chosen = wl.replace(scale=0.05)                       # an explicit --scale is the user's
    assert simulate("diff", chosen, "h100", compute=False).plan["scale"] == 0.05
    r = simulate("diff", chosen, "h100", inputs=make_inputs(chosen, 1))
    assert r.error_vs_reference < EXACT_TOL


def test_lambda_init_follows_the_paper():
    assert lambda_init(1) == pytest.approx(0.2)
    assert lambda_init(1000) == pytest.approx(0.8)
    assert lambda_init(2) == pytest.approx(0.8 - 0.6 * np.exp(-0.3))


def test_closed_form_non_causal():
    b, h, n, d2, e = 2, 3, 500, 64, 2
    wl = Workload(batch=b, heads=h, seq_q=n, head_dim=d2)
    r = simulate("diff", wl, "h100", compute=False)
    tr = cdiv(n, r.plan["block_q"])
    assert r.counts["hbm_read_bytes"] == b * h * (n * d2 * e + tr * 2 * n * d2 * e)
    assert r.counts["hbm_write_bytes"] == b * h * n * d2 * e
    # two d-wide score maps and two 2d-wide P V products: 12 N² d with d = d2 / 2
    assert r.counts["matmul_flops"] == b * h * 12 * n * n * (d2 // 2)


def test_costs_more_than_one_softmax_map_but_less_than_two_calls():
    wl = Workload(batch=2, heads=8, seq_q=4096, head_dim=128)
    diff = simulate("diff", wl, "h100", compute=False)
    one = simulate("flash2", wl, "h100", compute=False)
    assert diff.counts["matmul_flops"] == pytest.approx(1.5 * one.counts["matmul_flops"])
    assert diff.time.predicted_s > one.time.predicted_s


def test_bad_parameters():
    with pytest.raises(PlanError, match="must be even"):
        simulate("diff", Workload(seq_q=64, head_dim=63), "h100", compute=False)
    with pytest.raises(PlanError, match="--layer must be at least 1"):
        simulate("diff", Workload(seq_q=64, head_dim=64), "h100", compute=False,
                 options={"layer": 0})
