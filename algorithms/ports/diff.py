"""GPU port declarations: differential attention (two online softmaxes, one fused kernel).

Bound: each port moves what its algorithm's module counts (that module states the bound).
"""
from __future__ import annotations

import numpy as np

from algorithms.kernels.common import cdiv
from algorithms.ports.core import (Launch, PortLaunches, PortUnsupported, Scalar, Tensor,
                                   algorithm_module, check_common, check_mma_tiles,
                                   flash_tile_smem, head_args, out_tensor, qkv_tensors)


# S registers x accumulator width a diff_fwd.cu warp may hold: SUB_K * HEAD_DIM <= 4096 keeps
# ptxas (nvcc 13.0, sm_80 and sm_90) free of spills with BLOCK_K = 128: 2d = 64 -> SUB_K 64
# (218/231 registers), 2d = 128 -> SUB_K 32 (255, no spill; SUB_K 64 spills 76-200 bytes).
DIFF_SUB_K_BUDGET = 4096


def diff_sub_k(block_k: int, head_dim: int) -> int:
    """Keys of one score map held in registers at a time by diff_fwd.cu (divides B_c)."""
    for sub in range(block_k, 15, -16):
        if block_k % sub == 0 and sub * head_dim <= DIFF_SUB_K_BUDGET:
            return sub
    return 16


def diff_port(wl, plan, extra=None) -> PortLaunches:
    """algorithms.diff's plan: B_r x B_c tiles of 2d-wide rows (flash2.plan at d = 2d); λ per
    head from ``diff.lambdas``, exactly the simulator's values (fp32)."""
    check_common("diff", wl)
    d2 = wl.head_dim
    if d2 % 32 or d2 > 128:
        raise PortUnsupported(f"the diff port needs head_dim (the paper's 2d) a multiple of 32 "
                              f"(each half d a multiple of the MMA k-step 16) and <= 128 (two "
                              f"2d-wide fp32 accumulators per thread); got {d2}: use --head-dim "
                              f"32, 64, 96 or 128")
    if wl.kv_heads != wl.heads:
        raise PortUnsupported("the diff port runs multi-head attention (kv_heads == heads), as "
                              "the simulator does; drop --kv-heads")
    bq, bk = plan.block_q, plan.block_k
    check_mma_tiles("diff", bq, bk)
    module = algorithm_module("diff")
    lam = np.asarray(module.lambdas(wl, plan), dtype=np.float32)
    tensors = {**qkv_tensors(wl), "o": out_tensor(wl),
               "lambda": Tensor((wl.heads,), "fp32", "const", data=lam)}
    n_q, n_k, heads, _, _ = head_args(wl)
    scale = Scalar(plan.scale, "float")              # the paper's 1/√d, d = head_dim / 2
    launch = Launch("diff_fwd.cu", "diff_fwd", (cdiv(wl.seq_q, bq), wl.batch * wl.heads, 1),
                    (bq // 16 * 32, 1, 1), flash_tile_smem(bq, bk, d2),
                    {"BLOCK_Q": bq, "BLOCK_K": bk, "HEAD_DIM": d2, "SUB_K": diff_sub_k(bk, d2)},
                    ("q", "k", "v", "lambda", "o", n_q, n_k, heads, scale,
                     Scalar(1.0 - plan.lambda_init, "float"), Scalar(module.RMS_EPS, "float"),
                     Scalar(int(wl.causal), "int")),
                    "diff_fwd")
    return PortLaunches("diff", tensors, (launch,),
                        notes=("reads λ per head (4 bytes per CTA, not counted)",))
