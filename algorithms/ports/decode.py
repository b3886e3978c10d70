"""GPU port declarations: packed-head split-KV attention: gqa (prefill and decode) and mla
(absorbed and up-projected decode).

Bound: each port moves what its algorithm's module counts (that module states the bound).
"""
from __future__ import annotations

import numpy as np

from algorithms.kernels.common import cdiv
from algorithms.kernels.splitkv import combine_rows
from algorithms.ports.core import (Launch, PortLaunches, PortUnsupported, Scalar, Tensor,
                                   check_common, gemm_tile_problem, head_args, out_tensor, pad16,
                                   qkv_tensors, round_up, stats_tensor)


GQA_MAX_ROWS = 512       # packed rows of a CTA: at most 32 warps of 16


def gqa_port(wl, plan, extra=None) -> PortLaunches:
    """algorithms.gqa's plan: ``group`` query heads packed per CTA, ``block_q`` tokens per
    head, ``block_k`` keys per tile, ``splits`` key chunks (> 1: a combine kernel)."""
    check_common("gqa", wl)
    g, bq, bk, splits = plan.group, plan.block_q, plan.block_k, plan.splits
    rows = round_up(g * bq, 16)
    if bk % 16 or rows > GQA_MAX_ROWS:
        raise PortUnsupported(f"the gqa port needs block_k a multiple of 16 and group x "
                              f"block_q <= {GQA_MAX_ROWS}; the plan has {g} x {bq}, {bk}")
    d, bh = wl.head_dim, wl.batch * wl.heads
    t_r = cdiv(wl.seq_q, bq)
    defines = {"BLOCK_Q": bq, "GROUP": g, "BLOCK_K": bk, "HEAD_DIM": d,
               "COMBINE_ROWS": combine_rows(d)}
    tensors = {**qkv_tensors(wl), "o": out_tensor(wl), "lse": stats_tensor(wl)}
    if splits > 1:
        tensors["o_part"] = Tensor((bh, splits, wl.seq_q, d), "fp32", "work")
        tensors["lse_part"] = Tensor((bh, splits, wl.seq_q), "fp32", "work")
    part = ("o_part", "lse_part") if splits > 1 else (None, None)
    n_q, n_k, heads, group, scale = head_args(wl)
    launches = [Launch("gqa_decode.cu", "gqa_splitkv",
                       (splits, wl.batch * (wl.heads // g) * t_r, 1), (rows // 16 * 32, 1, 1),
                       (rows + 2 * bk) * pad16(d) * 2, defines,
                       ("q", "k", "v", *part, "o", "lse", n_q, n_k, heads, group, scale,
                        Scalar(int(wl.causal), "int")),
                       "gqa_decode" if plan.mode == "decode" else "gqa_fwd")]
    if splits > 1:
        launches.append(Launch("gqa_decode.cu", "gqa_combine",
                               (bh, cdiv(wl.seq_q, combine_rows(d)), 1),
                               (round_up(d, 32), 1, 1), 0, defines,
                               ("o_part", "lse_part", "o", "lse", n_q, Scalar(splits, "int")),
                               "splitkv_combine"))
    return PortLaunches("gqa", tensors, tuple(launches))


# ---- mla: absorbed decode over the latent cache ------------------------------------------------

def mla_port(wl, plan, extra=None) -> PortLaunches:
    """algorithms.mla's absorbed path: per-head absorption GEMMs around a packed split-KV
    attention over the latent (``splitkv.value_column_slices`` warps share each row tile's
    d_c output columns, exchanging P through shared memory, as the plan declares);
    ``--path upproject``: ``mla_upproject_port``."""
    from algorithms.kernels.splitkv import value_column_slices
    check_common("mla", wl)
    if plan.path == "upproject":
        return mla_upproject_port(wl, plan)
    d_c, d_r, d = plan.kv_lora_rank, plan.rope_dim, wl.head_dim
    g, bq, bk, splits = plan.head_block, plan.block_q, plan.block_k, plan.splits
    slices = value_column_slices(d_c)
    rows = round_up(g * bq, 16)
    tm, tn, tk = plan.gemm_tile_m, plan.gemm_tile_n, plan.gemm_tile_k
    problems = []
    if d_c % (16 * slices) or d_r % 8:
        problems.append(f"d_c a multiple of {16 * slices} and d_h^R of 8 (got {d_c}, {d_r})")
    if bk % (16 * slices):
        problems.append(f"block_k a multiple of {16 * slices} (got {bk})")
    if rows // 16 * slices > 32:
        problems.append(f"at most 32 warps ({rows // 16} row tiles x {slices} column slices)")
    if gemm_tile_problem(plan):
        problems.append(gemm_tile_problem(plan))
    if problems:
        raise PortUnsupported("the mla port needs " + "; ".join(problems))
    b, h, nq, nk, bh = wl.batch, wl.heads, wl.seq_q, wl.seq_k, wl.batch * wl.heads
    dk_pad = pad16(d_c + d_r)
    defines = {"GROUP": g, "BLOCK_Q": bq, "BLOCK_K": bk, "DC": d_c, "DR": d_r, "HEAD_DIM": d,
               "COL_SLICES": slices, "TILE_M": tm, "TILE_N": tn, "TILE_K": tk,
               "COMBINE_ROWS": combine_rows(d_c)}
    latent = _mla_latent_inputs(wl, plan)
    tensors = {
        "q": Tensor((b, h, nq, d), wl.dtype, "input"),                 # q^C
        "q_rope": Tensor((b, h, nq, d_r), wl.dtype, "input", derive=latent("q_rope")),
        "c_kv": Tensor((b, nk, d_c), wl.dtype, "input", derive=latent("c_kv")),
        "k_rope": Tensor((b, nk, d_r), wl.dtype, "input", derive=latent("k_rope")),
        "w_uk": Tensor((h, d, d_c), wl.dtype, "input", derive=latent("w_uk")),
        "w_uv": Tensor((h, d, d_c), wl.dtype, "input", derive=latent("w_uv")),
        "q_lat": Tensor((b, h, nq, d_c), wl.dtype, "work"),
        "o_lat": Tensor((b, h, nq, d_c), wl.dtype, "work"),
        "lse": stats_tensor(wl, "work"),
        "o": out_tensor(wl)}
    if splits > 1:
        tensors["o_part"] = Tensor((bh, splits, nq, d_c), "fp32", "work")
        tensors["lse_part"] = Tensor((bh, splits, nq), "fp32", "work")
    part = ("o_part", "lse_part") if splits > 1 else (None, None)
    m_rows = b * nq
    gemm_smem = 2 * (tm + tn) * tk * 2
    attn_smem = ((rows + bk) * dk_pad + rows * (bk // slices)) * 2 + 2 * rows * slices * 4
    ints = lambda *xs: tuple(Scalar(x, "int") for x in xs)          # noqa: E731
    launches = [
        Launch("mla_decode.cu", "mla_absorb_q", (cdiv(d_c, tn), cdiv(m_rows, tm), h),
               (128, 1, 1), gemm_smem, defines, ("q", "w_uk", "q_lat", *ints(b, nq, h)),
               "mla_absorb_q"),
        Launch("mla_decode.cu", "mla_attn", (splits, b * (h // g) * cdiv(nq, bq), 1),
               (rows // 16 * slices * 32, 1, 1), attn_smem, defines,
               ("q_lat", "q_rope", "c_kv", "k_rope", *part, "o_lat", "lse",
                *ints(nq, nk, h), Scalar(plan.scale, "float"), Scalar(int(wl.causal), "int")),
               "mla_latent_attn")]
    if splits > 1:
        launches.append(Launch("mla_decode.cu", "mla_combine",
                               (bh, cdiv(nq, combine_rows(d_c)), 1),
                               (round_up(d_c, 32), 1, 1), 0, defines,
                               ("o_part", "lse_part", "o_lat", "lse", *ints(nq, splits)),
                               "splitkv_combine"))
    launches.append(Launch("mla_decode.cu", "mla_absorb_o", (cdiv(d, tn), cdiv(m_rows, tm), h),
                           (128, 1, 1), gemm_smem, defines, ("o_lat", "w_uv", "o", *ints(b, nq, h)),
                           "mla_absorb_o"))
    return PortLaunches("mla", tensors, tuple(launches), cpu_output="o_mla",
                        notes=("latent cache, RoPE parts and weights drawn as algorithms.mla "
                               "draws them",))


# ---- mla: up-projected decode (K, V rebuilt from the latent every step) ------------------------

def mla_upproject_port(wl, plan) -> PortLaunches:
    """algorithms.mla's up-projected path (mla_upproject.cu): one GEMM per sequence writes
    [K^C | V] = c_KV [W_UK | W_UV]ᵀ (the simulator's ``mla_upproject``), then split-KV
    attention of one head per CTA over K = [K^C_h ; k^R] (k^R read from the cache, not
    copied) and V_h (``mla_attn``), and the combine when split."""
    d_c, d_r, d = plan.kv_lora_rank, plan.rope_dim, wl.head_dim
    bq, bk, splits = plan.block_q, plan.block_k, plan.splits
    tm, tn, tk = plan.gemm_tile_m, plan.gemm_tile_n, plan.gemm_tile_k
    rows = round_up(bq, 16)
    problems = []
    if d_c % 8 or d_r % 8:
        problems.append(f"d_c and d_h^R multiples of 8 for 16-byte cp.async rows (got {d_c}, "
                        f"{d_r}: use --kv-lora-rank / --rope-dim multiples of 8)")
    if plan.head_block != 1 or bk % 16 or rows > GQA_MAX_ROWS:
        problems.append(f"one head per CTA, block_k a multiple of 16 and block_q <= "
                        f"{GQA_MAX_ROWS} (got {plan.head_block}, {bk}, {bq})")
    if gemm_tile_problem(plan):
        problems.append(gemm_tile_problem(plan))
    if problems:
        raise PortUnsupported("the mla --path upproject port needs " + "; ".join(problems))
    b, h, nq, nk, bh = wl.batch, wl.heads, wl.seq_q, wl.seq_k, wl.batch * wl.heads
    defines = {"BLOCK_Q": bq, "BLOCK_K": bk, "HEAD_DIM": d, "DR": d_r, "DC": d_c,
               "TILE_M": tm, "TILE_N": tn, "TILE_K": tk, "COMBINE_ROWS": combine_rows(d)}
    latent = _mla_latent_inputs(wl, plan)
    tensors = {
        "q": Tensor((b, h, nq, d), wl.dtype, "input"),                 # q^C
        "q_rope": Tensor((b, h, nq, d_r), wl.dtype, "input", derive=latent("q_rope")),
        "c_kv": Tensor((b, nk, d_c), wl.dtype, "input", derive=latent("c_kv")),
        "k_rope": Tensor((b, nk, d_r), wl.dtype, "input", derive=latent("k_rope")),
        # [W_UK ; W_UV]: the simulator's one (2 H d_h x d_c) weight, head h's K^C rows first
        "w_ukv": Tensor((2 * h, d, d_c), wl.dtype, "input", derive=latent("w_ukv")),
        "kv": Tensor((b, nk, 2, h, d), wl.dtype, "work"),             # [K^C | V] per token
        "lse": stats_tensor(wl, "work"),
        "o": out_tensor(wl)}
    if splits > 1:
        tensors["o_part"] = Tensor((bh, splits, nq, d), "fp32", "work")
        tensors["lse_part"] = Tensor((bh, splits, nq), "fp32", "work")
    part = ("o_part", "lse_part") if splits > 1 else (None, None)
    ints = lambda *xs: tuple(Scalar(x, "int") for x in xs)          # noqa: E731
    attn_smem = ((rows + bk) * pad16(d + d_r) + bk * pad16(d)) * 2
    launches = [
        Launch("mla_upproject.cu", "mla_upproject", (cdiv(2 * h * d, tn), cdiv(nk, tm), b),
               (128, 1, 1), 2 * (tm + tn) * tk * 2, defines, ("c_kv", "w_ukv", "kv", *ints(nk, h)),
               "mla_upproject"),
        Launch("mla_upproject.cu", "mla_up_attn", (splits, bh * cdiv(nq, bq), 1),
               (rows // 16 * 32, 1, 1), attn_smem, defines,
               ("q", "q_rope", "kv", "k_rope", *part, "o", "lse", *ints(nq, nk, h),
                Scalar(plan.scale, "float"), Scalar(int(wl.causal), "int")), "mla_attn")]
    if splits > 1:
        launches.append(Launch("mla_upproject.cu", "mla_up_combine",
                               (bh, cdiv(nq, combine_rows(d)), 1),
                               (round_up(d, 32), 1, 1), 0, defines,
                               ("o_part", "lse_part", "o", "lse", *ints(nq, splits)),
                               "splitkv_combine"))
    return PortLaunches("mla", tensors, tuple(launches), cpu_output="o_mla",
                        notes=("--path upproject: latent cache, RoPE parts and weights drawn as "
                               "algorithms.mla draws them; k^R read from the cache by the "
                               "attention, not copied per head",))


def _mla_latent_inputs(wl, plan):
    """``name -> (inputs -> values)`` for MLA's extra inputs, computed once per inputs object
    (``algorithms.mla.mla_inputs``: seeded by the inputs' seed, as the simulation draws them)."""
    from algorithms import mla
    cache = {}

    def getter(name):
        def values(host_inputs):
            if cache.get("of") is not host_inputs:
                x = mla.mla_inputs(wl, plan, host_inputs)
                x["w_ukv"] = np.concatenate([x["w_uk"], x["w_uv"]], axis=0)   # (2H, d_h, d_c)
                cache.update(of=host_inputs, x=x)
            return cache["x"][name]
        return values
    return getter
