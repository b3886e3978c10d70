"""The backward of ``standard --program pytorch-eager``: what PyTorch's autograd runs for
flash-attention's benchmark baseline ``attention_pytorch`` (``algorithms.standard.
pytorch_eager`` lists the forward), as the benchmarks time it.

The benchmarks (flash-attention ``benchmarks/benchmark_flash_attention.py``, and the
FlashAttention-3 one, ``hopper/benchmark_flash_attention.py``) time the backward with
``flash_attn.utils.benchmark.benchmark_backward``: one forward outside the timer, then
``y.backward(grad, retain_graph=True)`` with ``qkv.grad = None`` before each call (no
accumulation kernel) and ``grad = torch.randn_like(y)``. ``randn_like`` keeps y's strides,
and y is einsum's permuted view of its bmm output, (B·H, N, d) in memory: the incoming dO is
already laid out as the bmm's output, so its reshape back is a view, not a copy. The
autograd graph, from the output back (``tools/autograd/derivatives.yaml`` for each op):

    einsum's bmm(P, V')        BmmBackward: dP = dO V'ᵀ, then dV' = Pᵀ dO      1. 2. GEMMs
    F.dropout (p > 0 only)     native_dropout_backward: dP ∘ mask / (1 - p)     3. elementwise
    torch.softmax              _softmax_backward_data: dS = P ∘ (dP - rowsum(P ∘ dP)),
                               which ATen runs as two kernels: ``tmp = grad * output``, an
                               elementwise product of its own, then the row kernel
                               dS = tmp - P · rowsum(tmp)                       4. 5.
    scores + causal_mask       AddBackward: dS passes through (the mask wants no gradient)
    baddbmm(scores, q', k', beta=0, alpha=scale)
                               BaddbmmBackward: maybe_multiply(dS k'ᵀ, alpha) then
                               maybe_multiply(q'ᵀ dS, alpha): each a bmm and, alpha ≠ 1,
                               an out-of-place multiply (``t * alpha``)          6.-9.
                               (``scores``, the preallocated empty tensor, wants no gradient)
    rearrange / reshape copies CloneBackward and views: nothing runs
    qkv.unbind(dim=2)          UnbindBackward: torch.stack(dq, dk, dv) into the packed
                               (B, N, 3, H, d) gradient: ``cat``, whose inputs are permuted
                               views, not contiguous, so it copies each into its slice
                               (``cat_out_cuda``'s per-input ``copy_``)           10.-12.

Kernels (B, H, N, d; e = storage bytes; GEMM traffic as ``algorithms.kernels.gemm``;
elementwise kernels as the forward's, 128 threads x 4 elements a CTA):
  1. ``dp_bmm``     dP = dO V'ᵀ              m, n, k = N, N, d; writes B H N² e
  2. ``dv_bmm``     dV' = (P ∘ Z)ᵀ dO         m, n, k = N, d, N; reads P (P ∘ Z)
  3. ``dropout_bwd`` dropout only: reads dP and the 1-byte mask, writes dP: B H N² (2e + 1)
  4. ``softmax_bwd_mul`` ATen's ``softmax_backward_cuda_out`` first computes
                    ``tmp = grad * output`` (dP ∘ P) with an elementwise kernel of its own
                    (PyTorch ``aten/src/ATen/native/cuda/SoftMax.cu``: in its sources from
                    2018's to 2024's, so in every release the published baselines ran):
                    reads dP and P, writes tmp: 3 B H N² e, one multiply per element
  5. ``softmax_bwd`` the row kernel on tmp (``cunn_SoftMaxBackward``, or the warp-per-row
                    kernel for rows of at most 1024): rowsum(tmp), then
                    dS = tmp - P · rowsum(tmp); reads tmp and P, writes dS: 3 B H N² e (the
                    second read of a tmp row comes from on chip while the row fits, as
                    ``algorithms.standard.backward``'s softmax backward, one row per CTA)
  6. ``dq_bmm``     dS k'ᵀ = dS K              m, n, k = N, d, N
  7. ``dq_scale``   × softmax_scale: reads and writes B H N d e, one multiply per element
  8. ``dk_bmm``     q'ᵀ dS = (dSᵀ Q)ᵀ          m, n, k = d, N, N: k' is (B·H, d, N), so is
                    its gradient (dK transposed)
  9. ``dk_scale``   × softmax_scale, as 7.
 10. ``stack_q``    dQ into the packed gradient: reads and writes B H N d e, coalesced
 11. ``stack_k``    dK: its source is (B·H, d, N), the copy walks the packed output along d,
                    so a warp's 32 loads fall N e bytes apart, each in a 32-byte sector of
                    its own (``read_sector_use`` e/32, as the forward's K copy)
 12. ``stack_v``    dV, as 10.
Bound (Theorem 5): Θ(N d + N²) HBM accesses per head. Against Algorithm 3 (``standard``'s
default backward): the same four GEMMs and softmax backward; +3 B H N² e for the product
ATen's softmax backward writes and reads back; no mask kernel (the additive mask's backward
is the identity); +4 B H N d e for the two multiplies and +6 B H N d e for the stack. Matmul
FLOPs 8 B H N² d, as Algorithm 3.
Differences from PyTorch: cuBLAS's and the softmax backward's own tilings are not modelled
(the GEMMs are ``algorithms.standard``'s, the row kernel holds a row as its softmax
backward does); the autograd engine's host work is priced as every launch is
(``hwmodels.timing``: the host pipeline).
"""
from __future__ import annotations

import numpy as np

from algorithms.kernels import footprints as fp
from algorithms.kernels.dropout import dropout_args
from algorithms.kernels.gemm import gemm
from algorithms.standard import backward as standard_bwd
from algorithms.standard import pytorch_eager as eager
from hwmodels.compiled import compiled
from hwmodels.footprint import Allocation, Footprint
from hwmodels.memory import Recorder
from hwmodels.primitives import count_load, count_other, count_store_result


def kernel_names(wl) -> tuple[str, ...]:
    """The kernels one backward launches, in order (also its footprint's phases)."""
    return (("dp_bmm", "dv_bmm") + (("dropout_bwd",) if wl.dropout > 0 else ())
            + ("softmax_bwd_mul", "softmax_bwd", "dq_bmm", "dq_scale", "dk_bmm", "dk_scale",
               "stack_q", "stack_k", "stack_v"))


def backward(wl, p, inputs, saved, rec: Recorder, compute: bool) -> dict:
    """Autograd's kernels for one backward (the module docstring's list), head by head over
    the tensors the forward saved; returns dQ, dK, dV (B, H, N, d) in executed mode."""
    n, d, e = wl.seq_q, wl.head_dim, wl.elem_bytes
    bh = wl.batch * wl.heads
    t = p.tiles
    dropout = wl.dropout > 0
    head = bh * n * d
    # declared in launch order
    c_dp = standard_bwd.gemm_record(rec, wl, t, "dp_bmm", n, n, d)
    c_dv = standard_bwd.gemm_record(rec, wl, t, "dv_bmm", n, d, n)
    # contiguous operands (ATen's vectorized loop), but for the stack's copies into the
    # packed gradient's strided slices (its legacy loop)
    c_drop = eager.elementwise_record(rec, "dropout_bwd", bh * n * n,
                                      eager.vectorized_round(e, standard_bwd.MASK_BYTES, e)) \
        if dropout else None
    c_mul = eager.elementwise_record(rec, "softmax_bwd_mul", bh * n * n,
                                     eager.vectorized_round(e, e, e))
    # the row kernel reads the product back beside P (SoftMax.cu: tmp - output * sum)
    c_sm = standard_bwd.softmax_bwd_record(rec, wl, p.bwd, rows="P_row,tmp_row")
    c_dq = standard_bwd.gemm_record(rec, wl, t, "dq_bmm", n, d, n)
    scale_round, copy_round = eager.vectorized_round(e, e), eager.legacy_loop_round(e, e)
    c_dqs = eager.elementwise_record(rec, "dq_scale", head, scale_round)
    c_dk = standard_bwd.gemm_record(rec, wl, t, "dk_bmm", d, n, n)
    c_dks = eager.elementwise_record(rec, "dk_scale", head, scale_round)
    c_sq = eager.elementwise_record(rec, "stack_q", head, copy_round)
    c_sk = eager.elementwise_record(rec, "stack_k", head, copy_round,
                                    read_sector_use=min(1.0, e / eager.SECTOR_BYTES))
    c_sv = eager.elementwise_record(rec, "stack_v", head, copy_round)

    _, _, inv_keep = dropout_args(wl, inputs, compute)
    grads = {}
    if compute:
        grads = {name: np.zeros((wl.batch, wl.heads, n, d), np.float32)
                 for name in ("dq", "dk", "dv")}
    rows = n if compute else 0
    dp = np.zeros((rows, n), np.float32)          # dP, then dS (in place of it here)
    dq_raw, dv_raw = np.zeros((rows, d), np.float32), np.zeros((rows, d), np.float32)
    dk_t = np.zeros((d if compute else 0, n), np.float32)   # k' is (d, N) a head
    tiles = (t.tile_m, t.tile_n, t.tile_k)
    for b in range(wl.batch if compute else 1):
        for h in range(wl.heads if compute else 1):
            q, k, v, do, probs, p_drop, mask = standard_bwd.head_tensors(wl, inputs, saved, b, h,
                                                                         compute)
            gemm(c_dp, do, v, dp, n, n, d, *tiles, e, e, False, True, 1.0, compute)
            gemm(c_dv, p_drop, do, dv_raw, n, d, n, *tiles, e, e, True, False, 1.0, compute)
            if dropout:
                standard_bwd.dropout_bwd_kernel(c_drop, dp, mask, n, n, e, inv_keep, compute)
            product_kernel(c_mul, dp, probs, n, n, e, compute)         # dp <- tmp = dP ∘ P
            softmax_bwd_of_product(c_sm, probs, dp, n, n, p.bwd.softmax_bwd_chunk, e, compute)
            gemm(c_dq, dp, k, dq_raw, n, d, n, *tiles, e, e, False, False, 1.0, compute)
            scale_kernel(c_dqs, dq_raw, n, d, e, wl.scale, compute)
            gemm(c_dk, q, dp, dk_t, d, n, n, *tiles, e, e, True, False, 1.0, compute)
            scale_kernel(c_dks, dk_t, d, n, e, wl.scale, compute)
            for c in (c_sq, c_sk, c_sv):
                eager.layout_copy_kernel(c, n, d, e)
            if compute:       # the stack's copies: dK's transposes (B·H, d, N) back
                grads["dq"][b, h], grads["dk"][b, h], grads["dv"][b, h] = dq_raw, dk_t.T, dv_raw
    if not compute:           # one head was counted
        for c in (c_dp, c_dv, c_drop, c_mul, c_sm, c_dq, c_dqs, c_dk, c_dks, c_sq, c_sk, c_sv):
            if c is not None:
                Recorder.repeat(c, bh)
    return grads


@compiled
def product_kernel(c, x, y, rows, cols, e, compute):
    """x ∘ y into x's place (ATen's ``grad * output``, out of place there; the traffic is the
    same): both read, one multiply per element, the product stored."""
    count_load(c, 2 * rows * cols * e)
    count_other(c, rows * cols)
    count_store_result(c, rows * cols, e)
    if compute:
        x[:, :] *= y


@compiled
def softmax_bwd_of_product(c, p, tmp, seq_q, seq_k, chunk, e, compute):
    """ATen's softmax backward row kernel, given tmp = dP ∘ P: dS = tmp - P · rowsum(tmp) in
    place of tmp, one row per CTA. Its first pass reads the tmp row for the sum, its second
    the tmp row again and the P row: the tmp row a second time from memory only when the
    rows do not fit on chip (``chunk`` < ``seq_k``)."""
    two_pass = chunk < seq_k
    for i in range(seq_q):
        count_load(c, seq_k * e)                  # the tmp row, for its sum
        count_other(c, seq_k)                     # rowsum(tmp)
        count_load(c, seq_k * e)                  # the P row
        if two_pass:
            count_load(c, seq_k * e)              # the tmp row again
        count_other(c, 2 * seq_k)                 # tmp - P · sum
        count_store_result(c, seq_k, e)           # the row of dS
        if compute:
            row_sum = tmp[i].sum()
            tmp[i] = tmp[i] - p[i] * row_sum


@compiled
def scale_kernel(c, x, rows, cols, e, alpha, compute):
    """x · alpha (autograd's ``maybe_multiply``, out of place there; the simulator scales
    its buffer in place, the traffic is the same): one multiply per element."""
    count_load(c, rows * cols * e)
    count_other(c, rows * cols)
    count_store_result(c, rows * cols, e)
    if compute:
        x[:, :] *= np.float32(alpha)


def footprint(wl) -> Footprint:
    """HBM allocations of one backward: the inputs (the packed qkv, dO), what the forward
    saved (P; P ∘ Z and the mask with dropout; the copies q', k', V' the bmms take, when the
    rearranges copy), each freed after its last reader; dP and dS (out of place), the
    unscaled and scaled dQ' and dK', dV', each freed after its reader; the packed gradient
    (3 B H N d e) from the first stack copy on. Peak at the softmax backward: P, dP, the
    product tmp and dS (4 B H N² e) with dV': dS is allocated before the product runs
    (``_softmax_backward_data`` is a structured op, its output made before its kernels), and
    dP, the autograd node's input, is held until the node returns."""
    n, e = wl.seq_q, wl.elem_bytes
    scores = wl.batch * wl.heads * n * n
    head = fp.q_bytes(wl)
    drop = wl.dropout > 0
    phases = kernel_names(wl)
    first, last = phases[0], phases[-1]
    allocs = fp.inputs(wl, first, last) + [
        Allocation("do", head, first, last, "input"),
        Allocation("p", scores * e, first, "softmax_bwd", "saved")]
    if eager.layout_copies(wl):
        allocs += [Allocation("q_copy", head, first, "dk_bmm", "saved"),
                   Allocation("k_copy", head, first, "dq_bmm", "saved"),
                   Allocation("v_copy", head, first, "dp_bmm", "saved")]
    if drop:
        allocs += [Allocation("p_drop", scores * e, first, "dv_bmm", "saved"),
                   Allocation("dropout_mask", scores * standard_bwd.MASK_BYTES, first,
                              "dropout_bwd", "saved"),
                   Allocation("dp_dropped", scores * e, "dp_bmm", "dropout_bwd")]
    allocs += [
        Allocation("dp", scores * e, "dropout_bwd" if drop else "dp_bmm", "softmax_bwd"),
        Allocation("dv_unstacked", head, "dv_bmm", "stack_v"),
        Allocation("softmax_product", scores * e, "softmax_bwd_mul", "softmax_bwd"),
        Allocation("ds", scores * e, "softmax_bwd_mul", "dk_bmm"),
        Allocation("dq_unscaled", head, "dq_bmm", "dq_scale"),
        Allocation("dq_unstacked", head, "dq_scale", "stack_q"),
        Allocation("dk_unscaled", head, "dk_bmm", "dk_scale"),
        Allocation("dk_unstacked", head, "dk_scale", "stack_k"),
        Allocation("dqkv", 3 * head, "stack_q", last, "output")]
    return Footprint(phases, allocs)
