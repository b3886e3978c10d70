"""GPU port declarations: FlashAttention-2: the forward, and the backward's three kernels.

Dropout (``--dropout p``): both sources are compiled with ``ATTN_DROPOUT=1`` and take the seed,
threshold and 1 / (1 - p) (``algorithms.ports.backward.dropout_args``); Z is regenerated on
chip from the simulator's keep mask in the forward and the backward, as ``algorithms.flash2``
and ``algorithms.flash2.backward`` do. Without dropout the define is absent (the kernels keep
their registers) and the seed is null.

Bound: each port moves what its algorithm's module counts (that module states the bound).
"""
from __future__ import annotations

from dataclasses import replace

from algorithms.kernels.common import cdiv
from algorithms.ports.backward import dropout_args, dropout_tensors
from algorithms.ports.core import (Launch, PortLaunches, Scalar, Tensor, check_backward_port,
                                   check_common, check_mma_tiles, flash_tile_smem, head_args,
                                   out_tensor, pad16, qkv_tensors, stats_tensor)


# fp32 accumulator registers per thread (S and O fragments) that 2 row tiles per warp may use:
# 192 is what FlashAttention-2's 4-warp 128 x 128 tile at d = 64 holds (ptxas: 255 registers,
# 68 bytes spilled); above it one row tile per warp avoids heavy spills.
WARP_ACC_FLOATS = 192
# Head dims (padded to 16) at which two row tiles a warp fit: at d = 128 the same 192
# accumulators (128 x 64 tiles) leave too little for the wider K/V fragments (ptxas, nvcc 13.0:
# 255 registers and 132 / 212 bytes spilled on sm_80 / sm_90).
WARP_M_TILES_MAX_D = 64


def warp_m_tiles(block_q: int, block_k: int, d: int, dropout: bool = False) -> int:
    """16-row tiles per warp of flash2_fwd.cu: 2 (K/V fragments reused for 32 rows, B_r / 32
    warps — 4 for B_r = 128, the plan's THREADS_PER_CTA) when the fp32 accumulators fit and
    d <= 64 (at d = 128 the K/V fragments no longer fit beside them).

    With ``dropout`` always 1: the keep mask's hashing needs registers next to two tiles'
    fragments, and ptxas spills (sm_80 / sm_90: 96 / 88 B at d = 64, B_c = 128; 8 / 72 B
    even at B_c = 64), while one tile a warp spills nothing (218 / 226 registers at d = 64,
    B_c = 128; 249 / 252 at d = 128)."""
    per_tile = block_k // 2 + pad16(d) // 2        # S and O C-fragments of one 16-row tile
    if dropout or pad16(d) > WARP_M_TILES_MAX_D:
        return 1
    return 2 if block_q % 32 == 0 and 2 * per_tile <= WARP_ACC_FLOATS else 1


def dropout_build(wl) -> tuple[dict, tuple]:
    """(defines, trailing kernel arguments) of dropout: compiled in (``ATTN_DROPOUT``) only
    when the workload has it, so that the kernels without dropout are unchanged; the
    arguments (seed, threshold, 1 / (1 - p)) always, a null seed without dropout."""
    return ({"ATTN_DROPOUT": 1} if wl.dropout > 0 else {}), dropout_args(wl)


def flash2_port(wl, plan, extra=None) -> PortLaunches:
    """The forward (``flash2_fwd.cu``); with ``--pass bwd`` / ``fwd+bwd`` also the backward's
    three kernels (``flash2_bwd.cu``, see ``flash2_backward_launches``)."""
    check_common("flash2", wl, passes=("fwd", "bwd", "fwd+bwd"), dropout=True)
    bq, bk, d = plan.block_q, plan.block_k, wl.head_dim
    check_mma_tiles("flash2", bq, bk)
    mt = warp_m_tiles(bq, bk, d, wl.dropout > 0)
    drop_defines, drop_args = dropout_build(wl)
    launch = Launch("flash2_fwd.cu", "flash2_fwd", (cdiv(wl.seq_q, bq), wl.batch * wl.heads, 1),
                    (bq // (16 * mt) * 32, 1, 1), flash_tile_smem(bq, bk, d),
                    {"BLOCK_Q": bq, "BLOCK_K": bk, "HEAD_DIM": d, "WARP_M_TILES": mt,
                     **drop_defines},
                    ("q", "k", "v", "o", "lse", *head_args(wl), Scalar(int(wl.causal), "int"),
                     *drop_args),
                    "flash2_fwd")
    tensors = {**qkv_tensors(wl), "o": out_tensor(wl), "lse": stats_tensor(wl),
               **dropout_tensors(wl)}
    if wl.passes == "fwd":
        return PortLaunches("flash2", tensors, (launch,))
    return flash2_backward_launches(wl, plan, launch)


# ---- flash2 backward -----------------------------------------------------------------------

FLASH2_BWD_THREADS = 256        # preprocess / convert (flash2_bwd.cu PRE_THREADS)


def flash2_bwd_warps(block_q: int, block_k: int, d: int) -> int:
    """Warps of flash2_bwd.cu's main kernel: the largest of 8, 4, 2, 1 that splits the
    S/dP tile (B_r x B_c, 16-row x 16-key granules), dK/dV (B_c x d) and dQ (B_r x d)
    evenly — 8 (FA-2's sm80 backward) for every plan tile of 64 x 128 or larger."""
    dchunks = pad16(d) // 16
    for w in (8, 4, 2, 1):
        ws_r = min(w, block_q // 16)
        kv_r = min(w, block_k // 16)
        if (w % ws_r == 0 and (block_q // 16) % ws_r == 0 and (block_k // 16) % (w // ws_r) == 0
                and w % kv_r == 0 and (block_k // 16) % kv_r == 0 and dchunks % (w // kv_r) == 0
                and dchunks % (w // ws_r) == 0):
            return w
    return 1


def flash2_bwd_smem(block_q: int, block_k: int, d: int) -> int:
    """Q_i, dO_i, K_j, V_j (head_dim padded to 16) and P_ij, dS_ij, all 16-bit."""
    return (2 * block_q + 2 * block_k) * pad16(d) * 2 + 2 * block_q * block_k * 2


def flash2_backward_launches(wl, plan, fwd: Launch) -> PortLaunches:
    """FA-2's backward as the simulator counts it (``algorithms.flash2.backward``): preprocess,
    the K/V-block-parallel main kernel, dQ conversion, with the backward plan's tiles.

    ``fwd+bwd``: the forward launch, then the three backward launches, all timed; o, dq, dk,
    dv are compared with the CPU result. ``bwd``: the simulator counts the backward alone and
    takes O and lse as given (computed by an uncounted forward); the port computes them the
    same way, with the forward launch as untimed ``setup`` writing "saved" tensors — on the
    device, so it scales to any N (a host float64 reference would not), and from the same
    storage-type inputs the backward reads.
    """
    name = "flash2"
    bp = check_backward_port(name, wl, plan)
    bq, bk, d = bp.block_q, bp.block_k, wl.head_dim
    check_mma_tiles(f"{name} backward", bq, bk)
    b, h, nq, nk, bh = wl.batch, wl.heads, wl.seq_q, wl.seq_k, wl.batch * wl.heads
    saved = "output" if wl.passes == "fwd+bwd" else "saved"
    tensors = {**qkv_tensors(wl),
               "do": Tensor((b, h, nq, d), wl.dtype, "input"),
               "o": Tensor((b, h, nq, d), wl.dtype, saved),
               "lse": stats_tensor(wl, saved),
               "delta": stats_tensor(wl, "work"),
               "dq_acc": Tensor((b, h, nq, d), "fp32", "work"),
               "dq": Tensor((b, h, nq, d), wl.dtype, "output"),
               "dk": Tensor((b, h, nk, d), wl.dtype, "output"),
               "dv": Tensor((b, h, nk, d), wl.dtype, "output"),
               **dropout_tensors(wl)}
    drop_defines, drop_args = dropout_build(wl)
    defines = {"BLOCK_Q": bq, "BLOCK_K": bk, "HEAD_DIM": d,
               "BWD_WARPS": flash2_bwd_warps(bq, bk, d), **drop_defines}
    tr, tc = cdiv(nq, bq), cdiv(nk, bk)
    threads = (FLASH2_BWD_THREADS, 1, 1)
    n_q, n_k, scale = Scalar(nq, "int"), Scalar(nk, "int"), Scalar(wl.scale, "float")
    bwd = (Launch("flash2_bwd.cu", "flash2_bwd_preprocess", (tr, bh, 1), threads, 0, defines,
                  ("do", "o", "delta", "dq_acc", n_q), "flash2_bwd_preprocess"),
           Launch("flash2_bwd.cu", "flash2_bwd", (tc, bh, 1), (defines["BWD_WARPS"] * 32, 1, 1),
                  flash2_bwd_smem(bq, bk, d), defines,
                  ("q", "k", "v", "do", "lse", "delta", "dq_acc", "dk", "dv", n_q, n_k, scale,
                   Scalar(int(wl.causal), "int"), *drop_args), "flash2_bwd"),
           Launch("flash2_bwd.cu", "flash2_bwd_convert_dq", (tr, bh, 1), threads, 0, defines,
                  ("dq_acc", "dq", n_q, scale), "flash2_bwd_convert_dq"))
    if wl.passes == "fwd+bwd":
        return PortLaunches(name, tensors, (fwd, *bwd), output="o",
                            outputs=("o", "dq", "dk", "dv"))
    return PortLaunches(name, tensors, bwd, output="dq", outputs=("dq", "dk", "dv"),
                        setup=(replace(fwd, sim_kernel=None),),
                        notes=("O and lse computed by an untimed forward launch (setup)",))
