"""GPU port declarations: the block-sparse family (block_sparse, local, sparse_transformer,
longformer, bigbird) and its dense baseline, masked_dense (the same mask on standard attention).

Bound: each port moves what its algorithm's module counts (that module states the bound).
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from algorithms.kernels.common import cdiv
from algorithms.ports.core import (Launch, PortLaunches, PortUnsupported, Scalar, Tensor,
                                   algorithm_module, check_common, check_mma_tiles,
                                   flash_tile_smem, head_args, out_tensor, qkv_tensors,
                                   stats_tensor)
from algorithms.ports.dense import standard_port


def block_sparse_family_port(name: str):
    """The ports of the pattern modules (``layout(wl, plan)`` gives the simulator's tiles in
    CSR form; ``element_mask(wl, plan)`` the boolean (N_q, N_k) pattern)."""
    def port(wl, plan, extra=None) -> PortLaunches:
        check_common(name, wl)
        if getattr(plan, "layout", "dense") != "dense":
            raise PortUnsupported(f"the {name} port runs the natural-order tile list; "
                                  f"--layout {plan.layout} is simulated only (use --layout dense)")
        bq, bk, d = plan.block_q, plan.block_k, wl.head_dim
        check_mma_tiles(name, bq, bk)
        module = algorithm_module(name)
        lay = module.layout(wl, plan)                  # exactly the simulator's tiles
        nnz = max(1, len(lay.cols))
        tensors = {**qkv_tensors(wl), "o": out_tensor(wl), "lse": stats_tensor(wl),
                   "block_ptr": Tensor((len(lay.row_ptr),), "int32", "const",
                                       data=np.asarray(lay.row_ptr, dtype=np.int32)),
                   "block_idx": Tensor((nnz,), "int32", "const",
                                       data=np.resize(np.asarray(lay.cols, np.int32), nnz)),
                   "tile_partial": Tensor((nnz,), "uint8", "const",
                                          data=np.resize(np.asarray(lay.partial, np.uint8), nnz))}
        elem = None
        if np.any(lay.partial):                        # partial tiles read the element mask
            mask = (extra or {}).get("mask")
            mask = module.element_mask(wl, plan) if mask is None else mask
            elem = "elem_mask"
            tensors[elem] = Tensor((wl.seq_q, wl.seq_k), "uint8", "const",
                                   data=np.asarray(mask, dtype=np.uint8))
        n_q, n_k, heads, group, scale = head_args(wl)
        launch = Launch("block_sparse_fwd.cu", "block_sparse_fwd",
                        (cdiv(wl.seq_q, bq), wl.batch * wl.heads, 1), (bq // 16 * 32, 1, 1),
                        flash_tile_smem(bq, bk, d), {"BLOCK_Q": bq, "BLOCK_K": bk, "HEAD_DIM": d},
                        ("q", "k", "v", "o", "lse", "block_ptr", "block_idx", "tile_partial",
                         elem, Scalar(0, "int"), n_q, n_k, heads, group, scale,
                         Scalar(-1, "int"), Scalar(-1, "int")),
                        f"{name}_fwd")
        return PortLaunches(name, tensors, (launch,),
                            notes=() if elem is None else
                            ("partial tiles read the element mask from HBM (not counted)",))
    port.__name__ = f"{name}_port"
    return port


def masked_dense_port(wl, plan, extra=None) -> PortLaunches:
    """``masked_dense``: standard.cu's four kernels with the mask kernel reading the pattern's
    materialised boolean mask (causal folded in), exactly ``algorithms.masked_dense``'s
    schedule — the baseline the block-sparse ports are measured against."""
    mask = (extra or {}).get("mask")
    if mask is None or np.size(mask) == 0:          # count-only runs keep a zero-size stand-in
        mask = algorithm_module(plan.mask_of).element_mask(wl, plan.pattern)
    port = standard_port(wl, plan.dense, extra, mask=mask, name="masked_dense")
    return replace(port, notes=(*port.notes, f"mask of {plan.mask_of} read from HBM by the "
                                             f"mask kernel, one byte per score (counted)"))
