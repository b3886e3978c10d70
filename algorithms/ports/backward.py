"""GPU port declarations of the backward passes of standard attention (Algorithm 3, one kernel
per autograd op: ``standard_bwd.cu``) and FlashAttention-1 (Algorithm 4: ``flash1_bwd.cu``).

Bound: each port moves what its algorithm's backward module counts (``algorithms.standard.backward``:
Θ(N d + N²); ``algorithms.flash1.backward``: Θ(N² d² / M)).

Both follow flash2's backward port (``algorithms.ports.flash2``): ``--pass fwd+bwd`` runs the
forward's launches then the backward's, all timed, and compares o, dq, dk, dv with the CPU
result; ``--pass bwd`` runs the forward as untimed ``setup`` launches writing the "saved"
tensors the simulator takes as given (standard: P, with dropout also P ∘ Z and the mask;
flash1: O, ℓ, m), then times the backward
alone and compares dq, dk, dv. GQA/MQA is refused (``PortUnsupported``), as the simulator
refuses it. Dropout uses the simulator's keep mask bit for bit (``algorithms/cuda/
attn_dropout.cuh``): standard runs the framework dropout kernel and its backward
(``standard_dropout_launch``), flash1 regenerates Z on chip in its forward and backward.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from algorithms.kernels.common import cdiv
from algorithms.kernels.dropout import keep_threshold
from algorithms.ports.core import (Launch, PortLaunches, PortUnsupported, Scalar, Tensor,
                                   check_backward_port, pad16, round_up)

ROW_THREADS = 256             # standard_bwd.cu ROW_THREADS (the simulator's row kernels)
FLASH1_BWD_THREADS = 256      # flash1_bwd.cu BWD_THREADS: 8 warps
FLASH1_BWD_MAX_KV_GRANULES = 12   # flash1_bwd.cu: 16 x 16 dK/dV granules a warp keeps (registers)


def grad_tensors(wl) -> dict:
    b, h, d = wl.batch, wl.heads, wl.head_dim
    return {"do": Tensor((b, h, wl.seq_q, d), wl.dtype, "input"),
            "dq": Tensor((b, h, wl.seq_q, d), wl.dtype, "output"),
            "dk": Tensor((b, h, wl.seq_k, d), wl.dtype, "output"),
            "dv": Tensor((b, h, wl.seq_k, d), wl.dtype, "output")}


def with_passes(name, wl, tensors, fwd, bwd, saved, notes) -> PortLaunches:
    """fwd+bwd: every launch timed, o compared too; bwd: the forward as untimed setup whose
    ``saved`` tensors the backward reads."""
    if wl.passes == "fwd+bwd":
        return PortLaunches(name, tensors, (*fwd, *bwd), output="o",
                            outputs=("o", "dq", "dk", "dv"), notes=notes)
    # the forward's output is not compared (the CPU run of --pass bwd has no o): a saved
    # tensor when the backward reads it (flash1), else dropped with its launch (standard)
    tensors = {n: (replace(t, role="saved") if n in saved else t) for n, t in tensors.items()
               if n != "o" or n in saved}
    return PortLaunches(name, tensors, bwd, output="dq", outputs=("dq", "dk", "dv"),
                        setup=tuple(replace(l, sim_kernel=None) for l in fwd),
                        notes=(*notes, f"{', '.join(saved)} computed by an untimed forward "
                                       f"(setup)"))


# ---- dropout: the simulator's keep mask (attn_dropout.cuh) ------------------------------------

def dropout_seed(host_inputs) -> np.ndarray:
    """The inputs' dropout seed as two int32 halves, low first (attn_dropout.cuh rebuilds the
    64-bit value the simulator's hash takes)."""
    seed = np.array([int(host_inputs.seed) & 0xFFFFFFFF, (int(host_inputs.seed) >> 32) & 0xFFFFFFFF],
                    dtype=np.uint32)
    return seed.view(np.int32)


def dropout_tensors(wl) -> dict:
    """The seed tensor of a port that regenerates Z on chip (none without dropout)."""
    if wl.dropout <= 0:
        return {}
    return {"dropout_seed": Tensor((2,), "int32", "const", derive=dropout_seed)}


def dropout_args(wl) -> tuple:
    """seed (null without dropout), threshold, 1 / (1 - p): the kernels' dropout arguments."""
    if wl.dropout <= 0:
        return (None, Scalar(0, "int"), Scalar(1.0, "float"))
    return ("dropout_seed", Scalar(keep_threshold(wl.dropout), "int"), inv_keep(wl))


def inv_keep(wl) -> Scalar:
    """1 / (1 - p) in float32, as algorithms/kernels/dropout.py dropout_args."""
    return Scalar(float(np.float32(1.0 / (1.0 - wl.dropout))), "float")


# ---- standard attention: Algorithm 3 ----------------------------------------------------------

def standard_dropout_launch(wl, defines: dict) -> tuple[dict, Launch]:
    """The forward's framework dropout kernel (the simulator's ``dropout``, in
    ``algorithms.standard.backward``): P ∘ Z and the bool keep mask from the simulator's hash."""
    nq, nk, bh = wl.seq_q, wl.seq_k, wl.batch * wl.heads
    ld_s = round_up(nk, 8)
    tensors = {"p_drop": Tensor((bh, nq, ld_s), wl.dtype, "work"),
               "dropout_mask": Tensor((bh, nq, nk), "uint8", "work"), **dropout_tensors(wl)}
    seed, threshold, keep = dropout_args(wl)
    launch = Launch("standard_bwd.cu", "standard_dropout", (nq, bh, 1), (ROW_THREADS, 1, 1), 0,
                    defines, ("p", "p_drop", "dropout_mask", seed, Scalar(nq, "int"),
                              Scalar(nk, "int"), Scalar(ld_s, "int"), threshold, keep),
                    "dropout")
    return tensors, launch


def standard_backward_launches(wl, plan, fwd_tensors: dict, fwd: tuple, notes: tuple) -> PortLaunches:
    """``algorithms.standard.backward``'s kernels: dV = Pᵀ dO, dP = dO Vᵀ, the softmax backward,
    the masked_fill backward (causal), dQ = scale dS K, dK = scale dSᵀ Q — the forward's GEMM
    tiles, the GEMM grids the simulator counts, one CTA per row for the row kernels. dP and
    dS share one (B·H, N_q, LD_S) work tensor, as the simulator computes dS in place of dP."""
    bp = check_backward_port("standard", wl, plan)
    if bp.softmax_bwd_passes != 1:
        raise PortUnsupported(f"the standard backward port's softmax backward stages the rows of "
                              f"P and dP in shared memory; N_k = {wl.seq_k} needs the "
                              f"simulator's two-pass variant, which is not ported")
    tm, tn = plan.gemm_tile_m, plan.gemm_tile_n
    nq, nk, d, bh = wl.seq_q, wl.seq_k, wl.head_dim, wl.batch * wl.heads
    ld_s = round_up(nk, 8)
    defines = {"TILE_M": tm, "TILE_N": tn, "TILE_K": plan.gemm_tile_k, "HEAD_DIM": d}
    gemm_smem = 2 * (tm + tn) * plan.gemm_tile_k * 2
    n_q, n_k, ld = Scalar(nq, "int"), Scalar(nk, "int"), Scalar(ld_s, "int")
    scale = Scalar(wl.scale, "float")
    tensors = {**fwd_tensors, **grad_tensors(wl), "ds": Tensor((bh, nq, ld_s), wl.dtype, "work")}

    def gemm(kernel, m, n, args, sim):
        return Launch("standard_bwd.cu", kernel, (cdiv(n, tn), cdiv(m, tm), bh), (128, 1, 1),
                      gemm_smem, defines, args, sim)

    def rows(kernel, smem, args, sim):
        return Launch("standard_bwd.cu", kernel, (nq, bh, 1), (ROW_THREADS, 1, 1), smem,
                      defines, args, sim)

    dropout = wl.dropout > 0                # dV reads P ∘ Z; dP̃ -> dP before the softmax
    bwd = [gemm("standard_bwd_dv", nk, d, ("p_drop" if dropout else "p", "do", "dv", n_q, n_k, ld),
                "dv_gemm"),
           gemm("standard_bwd_dp", nq, nk, ("do", "v", "ds", n_q, n_k, ld), "dp_gemm")]
    if dropout:
        bwd.append(rows("standard_bwd_dropout", 0, ("ds", "dropout_mask", n_q, n_k, ld,
                                                     inv_keep(wl)), "dropout_bwd"))
    bwd.append(rows("standard_bwd_softmax", 2 * bp.softmax_bwd_chunk * 2,
                    ("p", "ds", n_q, n_k, ld), "softmax_bwd"))
    if wl.causal:
        bwd.append(rows("standard_bwd_mask", 0, ("ds", "allowed", n_q, n_k, ld), "mask_bwd"))
    bwd += [gemm("standard_bwd_dq", nq, d, ("ds", "k", "dq", n_q, n_k, ld, scale), "dq_gemm"),
            gemm("standard_bwd_dk", nk, d, ("ds", "q", "dk", n_q, n_k, ld, scale), "dk_gemm")]
    if wl.passes == "bwd":            # the setup needs S -> P only: O = P V is not saved
        fwd = tuple(l for l in fwd if l.kernel != "standard_pv")
    saved = ("p", "p_drop", "dropout_mask") if dropout else ("p",)
    return with_passes("standard", wl, tensors, fwd, tuple(bwd), saved, notes)


# ---- FlashAttention-1: Algorithm 4 ----------------------------------------------------------

def flash1_bwd_smem(block_q: int, block_k: int, d: int) -> int:
    """Q_i, dO_i, K_j, V_j (16-bit, head_dim padded to 16), P_ij, dS_ij (16-bit), and the
    rows' log-sum-exp and D_i (fp32): flash1_bwd.cu's tiles, B_r and B_c padded to 16."""
    bq, bk = round_up(block_q, 16), round_up(block_k, 16)
    return (2 * bq + 2 * bk) * pad16(d) * 2 + 2 * bq * bk * 2 + 2 * bq * 4


def flash1_kv_granules_per_warp(block_k: int, d: int) -> int:
    """16 x 16 granules of dK_j/dV_j each of flash1_bwd.cu's 8 warps keeps in registers."""
    granules = round_up(block_k, 16) // 16 * (pad16(d) // 16)
    return cdiv(granules, FLASH1_BWD_THREADS // 32)


def flash1_backward_launches(wl, plan, fwd_tensors: dict, fwd: tuple, notes: tuple) -> PortLaunches:
    """``algorithms.flash1.backward``'s kernels: the init (dQ = dK = dV = 0) and the main kernel,
    one CTA per head, with the backward plan's B_r x B_c."""
    bp = check_backward_port("flash1", wl, plan)
    bq, bk, d, bh = bp.block_q, bp.block_k, wl.head_dim, wl.batch * wl.heads
    per_warp = flash1_kv_granules_per_warp(bk, d)
    if per_warp > FLASH1_BWD_MAX_KV_GRANULES:
        raise PortUnsupported(f"the flash1 backward port keeps dK_j, dV_j (B_c x d = {bk} x {d}) "
                              f"in the registers of 8 warps, at most "
                              f"{FLASH1_BWD_MAX_KV_GRANULES} 16 x 16 granules a warp; this plan "
                              f"needs {per_warp}: use a smaller --sram-kb")
    defines = {"BLOCK_Q": bq, "BLOCK_K": bk, "HEAD_DIM": d}
    n_q, n_k = Scalar(wl.seq_q, "int"), Scalar(wl.seq_k, "int")
    tensors = {**fwd_tensors, **grad_tensors(wl)}
    bwd = (Launch("flash1_bwd.cu", "flash1_bwd_init", (bh, 1, 1), (256, 1, 1), 0, defines,
                  ("dq", "dk", "dv", n_q, n_k), "flash1_bwd_init"),
           Launch("flash1_bwd.cu", "flash1_bwd", (bh, 1, 1), (FLASH1_BWD_THREADS, 1, 1),
                  flash1_bwd_smem(bq, bk, d), defines,
                  ("q", "k", "v", "o", "do", "l", "m", "dq", "dk", "dv", n_q, n_k,
                   Scalar(wl.scale, "float"), Scalar(int(wl.causal), "int"), *dropout_args(wl)),
                  "flash1_bwd"))
    notes = (*notes, f"backward tiles B_r x B_c = {bq} x {bk} padded to 16; dK_j, dV_j in "
                     f"registers, P_ij, dS_ij in shared memory; dQ_i rounded to {wl.dtype} at "
                     f"every inner step (HBM)")
    return with_passes("flash1", wl, tensors, fwd, bwd, ("o", "l", "m"), notes)
