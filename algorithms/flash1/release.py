"""FlashAttention (v1) as released: the tiles and the HBM traffic of the flash-attention
v1 kernels (csrc/flash_attn/src/fmha_*, up to the FlashAttention-2 release, 4f285b35), the
program the FlashAttention-2 paper measures FlashAttention with. ``flash1 --tiles release``
runs it; ``--tiles paper`` (the default) runs Algorithm 1 and 4 as the paper writes them.

Tiles. The release does not derive its tiles from M; its kernel traits fix them
(``FMHA_kernel_traits<S, d, 16, 1, W, ...>`` in fmha_fwd_hdim{32,64,128}.cu and
fmha_bwd_hdim{32,64,128}.cu):
    B_c = 128 keys per K/V block for head_dim > 64, or when the (padded) key length is at
          most 128; 256 otherwise (fmha_api.cpp: ``blocksize_c = head_size > 64 ? 128 :
          256``, and keys <= 128 run the 128-key kernel), forward and backward alike;
    B_r = 16: a CTA walks its Q rows 16 at a time (``Cta_tile_p::M``), the loop order of
          Algorithm 1 (K/V blocks outside, Q steps inside).
The release takes fp16 or bf16 and head_dim a multiple of 8 up to 128 (``mha_fwd``'s
checks; head_dim <= 32, <= 64 and <= 128 run the 32-, 64- and 128-wide kernels). It runs on
the H100 from its "Support H100" commit on (1b18f1b7, v1.0.x; before it ``mha_fwd`` refused
sm90), which runs the A100's kernels there, the d <= 64 backward that keeps V_j in shared
memory included (``backward_v_in_registers``): the program the FlashAttention-2 paper's H100
figure measures.

Forward traffic. Between K/V blocks the release keeps each row's output in an fp32 buffer
(``o_tmp``: it accumulates in fp32) and one statistic, the log-sum-exp (``softmax_lse``),
instead of Algorithm 1's O_i at e bytes and ℓ_i, m_i. Nothing is initialized in HBM (no
line 2): the first K/V block reads neither, and a row's last K/V block writes O at e bytes
instead of o_tmp. Per head, not causal (T_c = ⌈N_k / B_c⌉):
    reads  = 2 N_k d e + T_c N_q d e + (T_c - 1) N_q (4 d + 4)   (K_j, V_j; Q per step;
                                                                  o_tmp and lse back)
    writes = N_q d e + (T_c - 1) N_q 4 d + T_c N_q 4             (O once; o_tmp; lse per step)
Causal: a Q step starts at the first K/V block that its rows see, as in Algorithm 1, and its
last is the block holding its last row's last key; every step visits the first K/V block, so
rows that see no key (N_q > N_k under the simulator's bottom-right mask; the release's own
mask aligns top-left, the same when N_q = N_k) still get O = 0 and lse = -inf written.
The merge is Algorithm 1's line 11-12 with the saved (o_tmp_i, lse_i) standing for (O_i,
m_i = lse_i, ℓ_i = 1): e^{lse - m} is a normalized output's weight. Per visited pair this adds lse = m + log ℓ (an exp-class log
and an add per row) to Algorithm 1's ops; O_i's conversion below fp32 happens only at the
final write.

Backward (fmha_dgrad_kernel_1xN_loop.h, fmha_bwd_launch_template.h, mha_bwd). The
release's tiles, Algorithm 4's loop order and math, and the release's traffic around it:
lse_i (fp32) in place of ℓ_i, m_i; D_i = rowsum(dO_i ∘ O_i) stored once instead of
recomputed at every step; dQ accumulated in fp32; nothing zeroed in HBM. Two programs, by
the grid (``--grid``):
  - one CTA per head (the loop kernel): at the first K/V block a step reads O_i, computes
    D_i and stores it; after, it reads D_i and the fp32 dQ buffer back; it writes the buffer
    before its last K/V block and dQ_i at e bytes at it. Per head, not causal:
        reads  = 2 N_k d e + T_c N_q (2 d e + 4) + N_q d e + (T_c - 1) N_q (4 d + 4)
        writes = 2 N_k d e + N_q 4 + (T_c - 1) N_q 4 d + N_q d e
  - a CTA per K/V block (where the release's heuristic splits it): a kernel computes D and
    clears the fp32 dQ buffer (the release clears it with a memset of its own: the same
    bytes, one launch more), the main kernel reads Q_i, dO_i, lse_i, D_i per step and adds
    dQ_i to the buffer with fp32 atomics, and a last kernel converts the buffer to dQ —
    FlashAttention-2's three kernels (``algorithms.flash2.backward``), whose preprocess and
    conversion it runs.
"""
from __future__ import annotations

from algorithms.base import PlanError
from algorithms.kernels.common import runs_sm80_kernels

STEP_ROWS = 16              # Cta_tile_p::M: the Q rows a CTA takes per step
SMALL_KEY_BLOCK = 128       # head_dim > 64, or keys <= 128
LARGE_KEY_BLOCK = 256
MAX_HEAD_DIM = 128
DTYPES = ("fp16", "bf16")


def key_block(head_dim: int, seq_k: int) -> int:
    """B_c of the release's kernel for this head dimension and key length."""
    return SMALL_KEY_BLOCK if head_dim > 64 or seq_k <= SMALL_KEY_BLOCK else LARGE_KEY_BLOCK


def check_workload(wl) -> None:
    """What the release has no kernel for, rejected with the fix."""
    if wl.dtype not in DTYPES:
        raise PlanError(f"flash1 --tiles release: the v1 release runs fp16 and bf16 only, not "
                        f"{wl.dtype}; use --dtype fp16 or bf16, or --tiles paper")
    if wl.head_dim % 8 or wl.head_dim > MAX_HEAD_DIM:
        raise PlanError(f"flash1 --tiles release: the v1 release takes head_dim a multiple of "
                        f"8 up to {MAX_HEAD_DIM}, not {wl.head_dim}; use such a --head-dim, or "
                        f"--tiles paper")


def sram_elements(block_k: int, head_dim: int) -> int:
    """The M (in elements) Algorithm 1 would derive these tiles from (B_c = M / 4d): the
    IO bound's M for the release's tiles."""
    return 4 * block_k * head_dim


def backward_v_in_registers(head_dim: int, seq_k: int, gpu) -> bool:
    """Whether the release's backward warps hold their slice of V_j in registers for
    dP = dO V_jᵀ (kernel traits without flag 0x100, fmha_bwd_hdim{32,64,128}.cu): at
    head_dim <= 64 on keys <= 128, or on the sm8x GPUs other than the A100
    (``runs_sm80_kernels``); never at head_dim 128. The A100 (sm80) and the H100 (sm90, from the release's H100 support on)
    keep V in shared memory "to avoid register spills", which "uses more shared memory,
    which is fine on A100 and H100 but not other GPUs"."""
    if head_dim > 64:
        return False
    return seq_k <= SMALL_KEY_BLOCK or not runs_sm80_kernels(gpu)


def backward_register_operand_bytes_per_flop(head_dim: int, step_rows: int, e: int,
                                             v_in_registers: bool) -> float:
    """Bytes per matmul FLOP of a backward step's counted operand reads that the release's
    warps serve from registers: each warp's own dS for dQ_i = dS K_j, and V_j for dP where
    ``backward_v_in_registers``. Not K_j: the backward builds its S = Q_i K_jᵀ GEMM with K
    in shared memory whatever the traits say (fmha_dgrad_kernel_1xN_loop.h, from the first
    release to v1.0.9: ``Gemm_Q_K<Kernel_traits, /*K-in_regs=*/false>``, the traits'
    ``K_IN_REGS`` commented out beside it), so every step reloads its K_j slice, as it does
    for dQ_i's Kᵀ. A step of r rows against c keys counts 10 r c d FLOPs (S, dV, dP, dQ,
    dK) and reads r c e of dS (and c d e of V_j) among them: e / 10d (+ e / 10r)."""
    rate = e / (10 * head_dim)
    return rate + (e / (10 * step_rows) if v_in_registers else 0.0)
