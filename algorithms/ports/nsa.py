"""GPU port declaration: Native Sparse Attention's forward (algorithms/nsa.py) — four launches,
the simulator's four kernels: ``nsa_compress``, ``nsa_cmp`` and ``nsa_slc`` from
``nsa_fwd.cu``, the window branch ``nsa_win_fwd`` from ``block_sparse_fwd.cu`` over
``algorithms.local``'s causal band (the layout the simulator runs), its window mask computed
on chip.

Bound: the port moves what ``algorithms.nsa`` counts (that module states the bound); the
differences are listed in nsa_fwd.cu's header and docs/gpu.md.
"""
from __future__ import annotations

import numpy as np

from algorithms.kernels.common import cdiv
from algorithms.ports.core import (Launch, PortLaunches, PortUnsupported, Scalar, Tensor,
                                   check_common, flash_tile_smem, head_args, out_tensor, pad16,
                                   qkv_tensors, stats_tensor)

NSA_SOURCE = "nsa_fwd.cu"
NSA_MAX_ROWS = 512          # packed rows of an nsa_cmp CTA: at most 32 warps of 16
COMPRESS_THREADS = 128      # nsa_fwd.cu's COMPRESS_THREADS


def nsa_defines(wl, plan) -> dict:
    """nsa_fwd.cu's compile-time tiles and parameters, read off the plan."""
    return {"HEAD_DIM": wl.head_dim, "COMPRESS_TILE": plan.compress_tile,
            "CBLOCK": plan.compress_block, "CSTRIDE": plan.compress_stride,
            "GROUP": plan.group, "BLOCK_Q": plan.cmp_block_q, "BLOCK_K": plan.cmp_block_k,
            "SBLOCK": plan.select_block, "N_SEL": plan.selected,
            "SELECT_TILE": plan.select_tile}


def nsa_bins(plan) -> int:
    """Selection-block score bins per position (nsa_fwd.cu's BINS; the plan's block_scores)."""
    seg_c = plan.compress_block // plan.compress_stride
    seg_s = plan.select_block // plan.compress_stride
    return (plan.cmp_block_k + seg_c - 2) // seg_s + 2


def nsa_smem(wl, plan) -> dict:
    """Dynamic shared memory of each nsa_fwd.cu kernel (bytes), as its layout takes it."""
    dp, g, n = pad16(wl.head_dim), plan.group, plan.selected
    span = (plan.compress_tile - 1) * plan.compress_stride + plan.compress_block
    rows = pad16(g * plan.cmp_block_q)
    return {"nsa_compress": 2 * pad16(span) * dp * 2 + (2 * plan.compress_block + 2 * dp) * 4,
            "nsa_cmp": (rows + 2 * plan.cmp_block_k + pad16(3 * g)) * dp * 2
                       + plan.cmp_block_q * (nsa_bins(plan) * 4 + n * 8),
            "nsa_slc": (pad16(g) + 2 * plan.select_tile) * dp * 2 + 4 * n}


def _check(wl, plan) -> None:
    check_common("nsa", wl)
    if getattr(wl, "decode", False):
        raise PortUnsupported("the nsa port runs prefill; a decode step (--decode: the "
                              "compressed cache and the fused decode kernel) has no port")
    problems = []
    if plan.cmp_block_k % 16:
        problems.append(f"B_c (compressed tokens per tile) a multiple of 16 (got "
                        f"{plan.cmp_block_k})")
    if pad16(plan.group * plan.cmp_block_q) > NSA_MAX_ROWS:
        problems.append(f"g x B_r <= {NSA_MAX_ROWS} packed rows (got {plan.group} x "
                        f"{plan.cmp_block_q})")
    if plan.select_tile % 16:
        problems.append(f"a selected sub-block B_s that is a multiple of 16 (got "
                        f"{plan.select_tile}: use a larger --sram-kb or --select-block)")
    win = plan.win
    if win.block_q % 16 or win.block_k % 16:
        problems.append(f"window tiles multiples of 16 (got {win.block_q} x {win.block_k})")
    if problems:
        raise PortUnsupported("the nsa port needs " + "; ".join(problems))


def nsa_port(wl, plan, extra=None) -> PortLaunches:
    """algorithms.nsa's plan: B_t compressed tokens per nsa_compress CTA, g heads x B_r
    positions per nsa_cmp CTA over B_c compressed tokens a tile, one nsa_slc CTA per
    (position, KV head) over B_s-key sub-blocks, and local's FlashAttention-2 tiles for the
    window. φ's weights, biases and the gate projections are "input" tensors drawn as the
    module draws them (``nsa.weights``); the selected blocks are the output ``sel``."""
    from algorithms import local, nsa
    _check(wl, plan)
    b, h, G, nq, nk, d = wl.batch, wl.heads, wl.kv_heads, wl.seq_q, wl.seq_k, wl.head_dim
    n_c, n, e = plan.compressed_tokens, plan.selected, wl.dtype
    par = lambda key: (lambda host_inputs: nsa.weights(wl, plan)[key])      # noqa: E731
    lay = local.layout(wl, plan.win)                   # exactly the simulator's window tiles
    nnz = max(1, len(lay.cols))
    tensors = {
        **qkv_tensors(wl),
        "w_k": Tensor((plan.compress_block,), e, "input", derive=par("wk")),
        "w_v": Tensor((plan.compress_block,), e, "input", derive=par("wv")),
        "b_k": Tensor((d,), e, "input", derive=par("bk")),
        "b_v": Tensor((d,), e, "input", derive=par("bv")),
        "w_gate": Tensor((h, 3, d), e, "input", derive=par("wg")),
        "kc": Tensor((b, G, max(1, n_c), d), e, "work"),
        "vc": Tensor((b, G, max(1, n_c), d), e, "work"),
        "o_cmp": Tensor((b, h, nq, d), e, "work"),
        "gates": Tensor((b, h, nq, 3), "fp32", "work"),
        "sel": Tensor((b, G, nq, n), "int32", "output"),
        "o_win": Tensor((b, h, nq, d), e, "work"),
        "lse_win": stats_tensor(wl, "work"),
        "block_ptr": Tensor((len(lay.row_ptr),), "int32", "const",
                            data=np.asarray(lay.row_ptr, dtype=np.int32)),
        "block_idx": Tensor((nnz,), "int32", "const",
                            data=np.resize(np.asarray(lay.cols, np.int32), nnz)),
        "tile_partial": Tensor((nnz,), "uint8", "const",
                               data=np.resize(np.asarray(lay.partial, np.uint8), nnz)),
        "o": out_tensor(wl)}
    defines, smem = nsa_defines(wl, plan), nsa_smem(wl, plan)
    ints = lambda *xs: tuple(Scalar(x, "int") for x in xs)              # noqa: E731
    scale = Scalar(wl.scale, "float")
    launches = []
    if n_c > 0:                 # the simulator launches no compression when N_k < l
        launches.append(Launch(NSA_SOURCE, "nsa_compress",
                               (cdiv(n_c, plan.compress_tile), b * G, 1), (COMPRESS_THREADS, 1, 1),
                               smem["nsa_compress"], defines,
                               ("k", "v", "w_k", "w_v", "b_k", "b_v", "kc", "vc", *ints(nk, n_c)),
                               "nsa_compress"))
    launches.append(Launch(NSA_SOURCE, "nsa_cmp", (cdiv(nq, plan.cmp_block_q), b * G, 1),
                           (pad16(plan.group * plan.cmp_block_q) // 16 * 32, 1, 1),
                           smem["nsa_cmp"], defines,
                           ("q", "kc", "vc", "w_gate", "o_cmp", "gates", "sel",
                            *ints(nq, nk, n_c, h), scale), "nsa_cmp"))
    win = plan.win
    n_q, n_k, heads, group, _ = head_args(wl)
    launches.append(Launch("block_sparse_fwd.cu", "block_sparse_fwd",
                           (cdiv(nq, win.block_q), b * h, 1), (win.block_q // 16 * 32, 1, 1),
                           flash_tile_smem(win.block_q, win.block_k, d),
                           {"BLOCK_Q": win.block_q, "BLOCK_K": win.block_k, "HEAD_DIM": d},
                           ("q", "k", "v", "o_win", "lse_win", "block_ptr", "block_idx",
                            "tile_partial", None, Scalar(0, "int"), n_q, n_k, heads, group,
                            scale, Scalar(plan.window - 1, "int"), Scalar(0, "int")),
                           "nsa_win_fwd"))
    launches.append(Launch(NSA_SOURCE, "nsa_slc", (nq, b * G, 1),
                           (pad16(plan.group) // 16 * 32, 1, 1), smem["nsa_slc"], defines,
                           ("q", "k", "v", "sel", "gates", "o_cmp", "o_win", "o",
                            *ints(nq, nk, h), scale), "nsa_slc"))
    return PortLaunches("nsa", tensors, tuple(launches), notes=(
        "φ weights, biases and gate projections drawn as algorithms.nsa draws them; "
        "selected blocks in 'sel' (compare with the simulation's, see docs/gpu.md)",))
