"""Differential attention — Ye et al., "Differential Transformer" (2024, arXiv 2410.05258),
Section 2.1 (Equations 1–3).

Idea: each head computes two softmax attention maps from the two halves of its query and
key, and subtracts them, so common-mode "attention noise" cancels:
    DiffAttn = (softmax(Q₁K₁ᵀ/√d) − λ softmax(Q₂K₂ᵀ/√d)) V,
    λ = exp(λ_q1·λ_k1) − exp(λ_q2·λ_k2) + λ_init, λ_init = 0.8 − 0.6 exp(−0.3 (l − 1)),
then a per-head RMSNorm over the 2d outputs and a (1 − λ_init) scale.

Notation -> code: the workload's ``head_dim`` is the paper's 2d (Q, K and V heads are 2d
wide; Q₁ = q[..., :d], Q₂ = q[..., d:]); ``layer`` is l; the plan's ``scale`` is the paper's
1/√d — d the half-width, as in Equation 1 and the official code's ``scaling = head_dim ** -0.5``
with its head_dim the half-width — not the workload's default 1/√(2d) (an explicit
``--scale`` is honoured); B_r/B_c are FlashAttention-2 tiles
(``flash2.plan`` with d = 2d, so the doubled state fits); λ_q, λ_k ∈ R^d are drawn
N(0, 0.1²) per head from ``seed`` (the paper's initialization).

The kernel is one fused FlashAttention-2-style pass (one CTA per Q block and head) that
keeps two online softmaxes: per head (e bytes per element, 2d = head_dim)
    reads  = N_q 2d e (Q₁, Q₂) + T_r · 2 N_k 2d e (K₁, K₂ and V per Q block)
    writes = N_q 2d e (O)
    matmul = 2 · 2 N_q N_k d (two score maps) + 2 · 2 N_q N_k 2d (two P V) = 12 N_q N_k d
Bound Θ(N d + N² d / B_r), as FlashAttention-2's. The paper's reference implementation
instead calls FlashAttention twice (or four times, splitting V, when the kernel requires
equal Q/V widths) and subtracts: that reads Q, K, V twice and writes two N x 2d outputs —
about twice this kernel's traffic; the fused form is what a dedicated kernel does. Warps
as ``common.mma_warps`` lays them out: at FlashAttention-2's 128-row tiles one warp per 16
query rows, since the two score tiles and two 2d-wide accumulators would need 384
registers a thread on its four warps of 32 rows.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from algorithms import flash2
from algorithms.base import AlgorithmInfo, Option, Plan, PlanError
from algorithms.kernels import step_latency
from algorithms.kernels import footprints as fp
from algorithms.kernels.common import (apply_causal_mask, causal_block_is_partial, causal_key_end,
                                       cdiv, first_q_bytes, heads_in_flight, mma_layout,
                                       new_output, online_softmax_tile, placeholder, scale_rows)
from algorithms.kernels.flash_tile import (count_softmax_tile, new_row_state, repeat_step,
                                           same_tiles_run, snapshot)
from hwmodels.compiled import compiled
from hwmodels.primitives import (count_convert, count_exp, count_other, load_rows, matmul_nn,
                                 matmul_nt, store_rows)

INFO = AlgorithmInfo(
    name="diff",
    title="Differential attention (fused two-map kernel)",
    paper="Ye et al., 2024 (arXiv 2410.05258)",
    exact=True,
    io_bound="Θ(Nd + N²d/B_r)",
    options=(
        Option("layer", int, 1, "layer index l (sets λ_init = 0.8 − 0.6·exp(−0.3(l−1)))",
               validate=lambda v: None if v >= 1 else "must be at least 1"),
        Option("seed", int, 0, "seed of the λ_q, λ_k vectors (N(0, 0.1²) per head)"),
    ),
)

RMS_EPS = 1e-5


@dataclass(frozen=True)
class DiffPlan(Plan):
    block_q: int
    block_k: int
    smem_bytes: int
    register_bytes: int
    lambda_init: float
    layer: int
    seed: int
    scale: float        # logit scale of both maps: 1/√d, d = head_dim / 2 (see logit_scale)


def logit_scale(wl) -> float:
    """The paper's 1/√d for both maps, d = head_dim / 2 the width of Q₁, K₁ (Equation 1).

    The workload's scale defaults to 1/√head_dim = 1/√(2d), which is not the paper's (it
    would soften both maps by √2); a scale the user set explicitly is kept.
    """
    if wl.scale == 1.0 / math.sqrt(wl.head_dim):     # the workload's default, not a choice
        return 1.0 / math.sqrt(wl.head_dim // 2)
    return float(wl.scale)


def lambda_init(layer: int) -> float:
    return 0.8 - 0.6 * float(np.exp(-0.3 * (layer - 1)))


def lambda_vectors(wl, seed: int) -> tuple[np.ndarray, ...]:
    """The learnable λ_q1, λ_k1, λ_q2, λ_k2 of every head, (H, d) each, drawn N(0, 0.1²) as the
    paper initializes them (d = head_dim / 2)."""
    rng = np.random.default_rng(seed)
    return tuple(rng.normal(0.0, 0.1, size=(wl.heads, wl.head_dim // 2)) for _ in range(4))


def lambdas(wl, p: DiffPlan) -> np.ndarray:
    """λ per head: exp(λ_q1·λ_k1) − exp(λ_q2·λ_k2) + λ_init (Equation 2)."""
    vq1, vk1, vq2, vk2 = lambda_vectors(wl, p.seed)
    return np.exp((vq1 * vk1).sum(1)) - np.exp((vq2 * vk2).sum(1)) + p.lambda_init


def plan(wl, gpu, sram_bytes: int, layer: int = 1, seed: int = 0) -> DiffPlan:
    if wl.head_dim % 2:
        raise PlanError(f"diff: --head-dim is the paper's 2d and must be even, got {wl.head_dim}")
    if wl.kv_heads != wl.heads:
        raise PlanError(f"diff: differential attention is simulated for multi-head "
                        f"attention (kv_heads == heads), got heads={wl.heads}, "
                        f"kv_heads={wl.kv_heads}; drop --kv-heads, or give --heads and "
                        f"--head-dim instead of a GQA --model")
    inner = flash2.plan_forward(wl, gpu, sram_bytes)          # tiles sized for 2d-wide rows
    # two score tiles and two 2d-wide accumulators in registers
    regs = 2 * flash2.register_bytes(inner.block_q, inner.block_k, wl.head_dim)
    return DiffPlan(inner.block_q, inner.block_k, inner.smem_bytes, regs, lambda_init(layer),
                    layer, seed, logit_scale(wl))


def run(wl, p: DiffPlan, inputs, rec, compute: bool) -> dict:
    d2, e, bh = wl.head_dim, wl.elem_bytes, wl.batch * wl.heads
    tr = cdiv(wl.seq_q, p.block_q)
    buffers = flash2.smem_buffers(p.block_q, p.block_k, d2, e)
    # the two maps' state on 4 warps of 32 rows would be 384 registers a thread
    layout = mma_layout(rec.gpu, p.block_q, p.register_bytes, wl.seq_q)
    in_flight = heads_in_flight(rec, tr, bh, p.smem_bytes, p.register_bytes,
                                layout["threads_per_cta"])
    work = flash2.cta_work(wl, p)      # FlashAttention-2's Q-block CTAs
    c = rec.kernel("diff_fwd", ctas=tr * bh, buffers=buffers, **layout,
                   register_bytes_per_cta=p.register_bytes, tc_path="mma_sync", overlap="serial",
                   matmul_dtype=wl.dtype, cta_work=work,
                   # both maps' softmax in the same warps, side by side: one chain a step
                   **step_latency.chain(step_latency.forward_step(p.block_k), work, bh),
                   # Q_i and K_j, each holding both maps' halves, before the first S_ij
                   prologue_bytes_per_cta=first_q_bytes(buffers["Q_i"], p.block_q, wl.seq_q)
                   + buffers["K_j"],
                   epilogue_elements_per_cta=p.block_q * d2,     # O_i, RMS-normalized
                   unique_hbm_bytes=bh * (2 * wl.seq_q + 2 * wl.seq_k) * d2 * e,
                   l2_working_set_bytes=in_flight * 2 * wl.seq_k * d2 * e)
    lam = lambdas(wl, p)
    o = new_output(wl, compute)
    if not compute:
        empty = placeholder(d2 // 2)
        forward_head(c, empty, empty, empty, empty, placeholder(d2), placeholder(d2),
                     wl.seq_q, wl.seq_k, d2 // 2, p.block_q, p.block_k, p.scale, wl.causal,
                     0.0, p.lambda_init, e, False)
        rec.repeat(c, bh)
        return {}
    halves = lambda x: (np.ascontiguousarray(x[..., : d2 // 2]),   # noqa: E731
                        np.ascontiguousarray(x[..., d2 // 2:]))
    (q1, q2), (k1, k2) = halves(inputs.q), halves(inputs.k)
    for b in range(wl.batch):
        for h in range(wl.heads):
            forward_head(c, q1[b, h], q2[b, h], k1[b, h], k2[b, h], inputs.v[b, h], o[b, h],
                         wl.seq_q, wl.seq_k, d2 // 2, p.block_q, p.block_k, p.scale, wl.causal,
                         lam[h], p.lambda_init, e, True)
    return {"o": o}


@compiled
def forward_head(c, q1, q2, k1, k2, v, o, seq_q, seq_k, d, block_q, block_k, scale, causal,
                 lam, lam_init, e, compute):
    """One head: two online softmaxes over the same K/V stream; V and O are 2d wide."""
    dv = 2 * d
    for r0 in range(0, seq_q, block_q):
        r1 = min(r0 + block_q, seq_q)
        rows = r1 - r0
        q1i = load_rows(c, q1, r0, r1, d, e)                     # Q₁_i, Q₂_i -> SRAM
        q2i = load_rows(c, q2, r0, r1, d, e)
        m1, l1, acc1 = new_row_state(rows, dv, compute)          # one state per map
        m2, l2, acc2 = new_row_state(rows, dv, compute)
        key_end = causal_key_end(r1, seq_q, seq_k) if causal else seq_k
        c0 = 0
        while c0 < key_end:
            c1 = min(c0 + block_k, seq_k)
            cols = c1 - c0
            masked = causal and causal_block_is_partial(r0, c1, seq_q, seq_k)
            # count-only: a run of key tiles that count alike is stepped through once, then scaled
            run = 1 if compute else same_tiles_run(r0, c0, key_end, block_k, seq_k, causal,
                                                   masked, seq_q, seq_k)
            before = snapshot(c, run)
            k1j = load_rows(c, k1, c0, c1, d, e)                 # K₁_j, K₂_j, V_j -> SRAM
            k2j = load_rows(c, k2, c0, c1, d, e)
            vj = load_rows(c, v, c0, c1, dv, e)
            _softmax_map(c, q1i, k1j, vj, acc1, m1, l1, r0, c0, rows, cols, d, dv, scale,
                         masked, seq_q, seq_k, e, compute)
            _softmax_map(c, q2i, k2j, vj, acc2, m2, l2, r0, c0, rows, cols, d, dv, scale,
                         masked, seq_q, seq_k, e, compute)
            repeat_step(c, before, run)
            c0 += run * block_k
        # -- epilogue: O = acc₁/l₁ − λ acc₂/l₂, RMSNorm over 2d, × (1 − λ_init) --
        count_other(c, 4 * rows * dv)                            # two divides, λ·, subtract
        count_other(c, 4 * rows * dv)                            # square, sum, scale, (1-λ_init)
        count_exp(c, rows)                                       # rsqrt
        oi = np.empty((0, 0), dtype=np.float32)
        if compute:
            oi = _combine(acc1, l1, acc2, l2, lam, lam_init)
        store_rows(c, o, r0, oi, rows, dv, e, compute)           # O_i -> HBM


@compiled
def _softmax_map(c, qi, kj, vj, acc, m, l, r0, c0, rows, cols, d, dv, scale, masked, seq_q,
                 seq_k, e, compute):
    """One of the two maps on one tile: the FlashAttention-2 step with a 2d-wide V."""
    s = matmul_nt(c, qi, kj, rows, cols, d, e, compute)          # S = Q_i K_jᵀ
    count_softmax_tile(c, rows, cols, dv, masked)                # FA-2's, on a 2d-wide acc
    if compute:
        s *= np.float32(scale)
        if masked:
            apply_causal_mask(s, r0, c0, seq_q, seq_k)
        alpha = online_softmax_tile(s, m, l)
        scale_rows(acc, alpha)
    count_convert(c, rows * cols, e)                             # P -> the MMA's dtype
    pv = matmul_nn(c, s, vj, rows, dv, cols, e, compute)         # acc += P V_j
    if compute:
        acc += pv


@compiled
def _combine(acc1, l1, acc2, l2, lam, lam_init):
    rows, dv = acc1.shape
    out = np.empty((rows, dv), dtype=np.float32)
    for i in range(rows):
        a = np.float32(1.0) / l1[i] if l1[i] > 0 else np.float32(0.0)
        b = np.float32(lam) / l2[i] if l2[i] > 0 else np.float32(0.0)
        ms = 0.0
        for j in range(dv):
            out[i, j] = acc1[i, j] * a - acc2[i, j] * b
            ms += out[i, j] * out[i, j]
        norm = (1.0 - lam_init) / np.sqrt(ms / dv + RMS_EPS)
        for j in range(dv):
            out[i, j] *= np.float32(norm)
    return out


def reference(wl, p: DiffPlan, inputs, attention_reference) -> np.ndarray:
    """The paper's Equations 1–3 in float64, built on the harness's float64 softmax
    attention (passed in: algorithms do not import attnsim)."""
    d = wl.head_dim // 2
    a1, _ = attention_reference(inputs.q[..., :d], inputs.k[..., :d], inputs.v,
                                causal=wl.causal, scale=p.scale)
    a2, _ = attention_reference(inputs.q[..., d:], inputs.k[..., d:], inputs.v,
                                causal=wl.causal, scale=p.scale)
    lam = lambdas(wl, p)[None, :, None, None]
    diff = a1 - lam * a2
    rms = np.sqrt((diff ** 2).mean(axis=-1, keepdims=True) + RMS_EPS)
    return diff / rms * (1.0 - p.lambda_init)


def io_bound(wl, p: DiffPlan, sram_bytes: int) -> float:
    """Θ(N d + N² d / B_r) in bytes (d = the 2d-wide head), all heads."""
    per_head = wl.seq_q * wl.head_dim + wl.seq_q * wl.seq_k * wl.head_dim / p.block_q
    return float(per_head * wl.elem_bytes * wl.batch * wl.heads)


def footprint(wl, p: DiffPlan):
    """Q, K, V and O, 2d wide (the fused kernel stores no lse): Θ(N d). λ is computed per
    head on the host (d/2 values), not an HBM tensor of the kernel."""
    return fp.single_kernel(wl, "diff_fwd", lse=False)
