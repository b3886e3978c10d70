"""GPU port declarations: standard attention (three kernels, as counted) and FlashAttention-1
(K/V outer loop); with ``--pass bwd`` / ``fwd+bwd`` also their backward passes
(``algorithms.ports.backward``).

Bound: each port moves what its algorithm's module counts (that module states the bound).
"""
from __future__ import annotations

import numpy as np

from algorithms.kernels.common import causal_element_mask, cdiv
from algorithms.ports.backward import (dropout_args, dropout_tensors, flash1_backward_launches,
                                       standard_backward_launches, standard_dropout_launch)
from algorithms.ports.core import (Launch, PortLaunches, PortUnsupported, Scalar, Tensor,
                                   check_common, gemm_tile_problem, head_args, out_tensor, pad16,
                                   qkv_tensors, round_up, stats_tensor)


def standard_port(wl, plan, extra=None, *, mask=None, name="standard") -> PortLaunches:
    """The forward (``standard.cu``); with ``--pass bwd`` / ``fwd+bwd`` also Algorithm 3's
    kernels (``standard_bwd.cu``, see ``backward.standard_backward_launches``). ``mask``: a
    boolean (N_q, N_k) mask with the causal mask folded in (``masked_dense``: a sparse
    pattern's mask on dense attention, forward only, as the simulator runs it), read by the
    mask kernel instead of the causal mask; ``name`` names the algorithm in messages."""
    if mask is None:
        check_common(name, wl, passes=("fwd", "bwd", "fwd+bwd"), dropout=True)
    else:
        check_common(name, wl)
    tm, tn, tk = plan.gemm_tile_m, plan.gemm_tile_n, plan.gemm_tile_k
    problem = gemm_tile_problem(plan)
    if problem:
        raise PortUnsupported(f"the {name} port needs {problem}")
    if plan.softmax_passes != 1:
        raise PortUnsupported(f"the standard port's softmax stages a whole row in shared "
                              f"memory; N_k = {wl.seq_k} needs the simulator's two-pass "
                              f"softmax, which is not ported")
    nq, nk, d, bh = wl.seq_q, wl.seq_k, wl.head_dim, wl.batch * wl.heads
    ld_s = round_up(nk, 8)
    defines = {"TILE_M": tm, "TILE_N": tn, "TILE_K": tk, "HEAD_DIM": d}
    gemm_smem = 2 * (tm + tn) * tk * 2                 # two stages of A and B chunks
    n_q, n_k, heads, group, scale = head_args(wl)
    tensors = {**qkv_tensors(wl),
               "s": Tensor((bh, nq, ld_s), wl.dtype, "work"),
               "p": Tensor((bh, nq, ld_s), wl.dtype, "work"),
               "o": out_tensor(wl)}
    launches = [Launch("standard.cu", "standard_scores", (cdiv(nk, tn), cdiv(nq, tm), bh),
                       (128, 1, 1), gemm_smem, defines,
                       ("q", "k", "s", n_q, n_k, Scalar(ld_s, "int"), heads, group, scale),
                       "qk_gemm")]
    if mask is None and wl.causal:
        mask = causal_element_mask(nq, nk)
    if mask is not None:
        tensors["allowed"] = Tensor((nq, nk), "uint8", "const",
                                    data=np.asarray(mask, dtype=np.uint8))
        launches.append(Launch("standard.cu", "standard_mask", (nq, bh, 1), (256, 1, 1), 0,
                               defines, ("s", "allowed", n_q, n_k, Scalar(ld_s, "int")), "mask"))
    launches.append(Launch("standard.cu", "standard_softmax", (nq, bh, 1), (256, 1, 1),
                           plan.softmax_chunk * 2, defines,
                           ("s", "p", n_q, n_k, Scalar(ld_s, "int"), Scalar(0, "int")),
                           "softmax"))
    p_used = "p"
    if wl.dropout > 0:                   # the framework dropout kernel: P V reads P ∘ Z
        dropout_tensors, dropout = standard_dropout_launch(wl, defines)
        tensors.update(dropout_tensors)
        launches.append(dropout)
        p_used = "p_drop"
    launches.append(Launch("standard.cu", "standard_pv", (cdiv(d, tn), cdiv(nq, tm), bh),
                           (128, 1, 1), gemm_smem, defines,
                           (p_used, "v", "o", n_q, n_k, Scalar(ld_s, "int"), heads, group),
                           "pv_gemm"))
    notes = (f"S and P rows padded to {ld_s} columns (16-byte rows)",) if ld_s != nk else ()
    if wl.passes != "fwd":
        return standard_backward_launches(wl, plan, tensors, tuple(launches), notes)
    return PortLaunches(name, tensors, tuple(launches), notes=notes)


# ---- flash1 --------------------------------------------------------------------------------

FLASH1_SUB_K = 32      # keys of S_ij computed at a time in registers (flash1_fwd.cu SUB_K)


def flash1_port(wl, plan, extra=None) -> PortLaunches:
    """The forward (``flash1_fwd.cu``); with ``--pass bwd`` / ``fwd+bwd`` also Algorithm 4's
    kernels (``flash1_bwd.cu``, see ``backward.flash1_backward_launches``)."""
    check_common("flash1", wl, passes=("fwd", "bwd", "fwd+bwd"), dropout=True)
    if plan.tiles != "paper" or plan.splits > 1 or (plan.bwd and plan.bwd.splits > 1):
        raise PortUnsupported("the flash1 port runs Algorithms 1 and 4 as the paper writes "
                              "them, one CTA per head on the paper's tiles: drop --grid "
                              "release and --tiles release")
    bq, bk, d, bh = plan.block_q, plan.block_k, wl.head_dim, wl.batch * wl.heads
    bq_pad, bk_pad = round_up(bq, 16), round_up(bk, FLASH1_SUB_K)
    if bq_pad > 256:
        raise PortUnsupported(f"the flash1 port runs one warp per 16 rows of B_r, at most 16 "
                              f"warps; the plan's B_r = {bq}")
    defines = {"BLOCK_Q": bq, "BLOCK_K": bk, "HEAD_DIM": d}
    tensors = {**qkv_tensors(wl), "o": out_tensor(wl),
               "l": stats_tensor(wl, "work"), "m": stats_tensor(wl, "work")}
    init = Launch("flash1_fwd.cu", "flash1_init", (bh, 1, 1), (256, 1, 1), 0, defines,
                  ("o", "l", "m", Scalar(wl.seq_q, "int")), "flash1_init")
    fwd = Launch("flash1_fwd.cu", "flash1_fwd", (bh, 1, 1), (bq_pad // 16 * 32, 1, 1),
                 (bq_pad + 2 * bk_pad) * pad16(d) * 2, defines,
                 ("q", "k", "v", "o", "l", "m", *head_args(wl), Scalar(int(wl.causal), "int"),
                  *dropout_args(wl)),
                 "flash1_fwd")
    tensors.update(dropout_tensors(wl))
    notes = (f"K_j/V_j tiles padded to {bk_pad} rows; S_ij in registers",)
    if wl.passes != "fwd":
        return flash1_backward_launches(wl, plan, tensors, (init, fwd), notes)
    return PortLaunches("flash1", tensors, (init, fwd), notes=notes)
