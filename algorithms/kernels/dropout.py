"""Attention dropout shared by standard, flash1 and flash2: the keep mask and its costs.

Cost (the bound): Θ(N_q N_k) RNG and compare ops on chip in flash1/flash2, no HBM bytes; in
standard attention a separate kernel adds Θ(N_q N_k) HBM bytes (P read; P∘Z and a 1-byte mask written).

Dropout on P (training): P_dropped = P ∘ Z with Z_ij = 1/(1 - p) with probability 1 - p and
0 otherwise (FlashAttention, arXiv 2205.14135, Algorithm 2 line 14 and Algorithm 4 line 13).

The keep decision of entry (batch b, head h, query i, key j) is a pure function of
``(seed, b·heads + h, i, j)``: a splitmix64 hash, whose top 24 bits are compared with
p·2²⁴. The forward, the backward and the float64 reference therefore see exactly the same
mask, so executed outputs can be checked exactly. (A GPU uses Philox counters keyed the same
way; the hash here is only the simulator's stand-in for the bits, not for their cost.)

What dropout costs (other FLOPs, counted on the CUDA cores):
* random bits: Philox4x32-10 takes 10 rounds of 2 ``mul.lo`` + 2 ``mul.hi`` + 4 xor + 2 key
  additions = 100 ops, and yields 128 random bits: the 60 xors and adds run on the ALU pipe,
  the 40 integer multiplies on the FMA pipe (``count_keep_decisions``).
  - FlashAttention-2 compares 8-bit slices with a uint8 threshold (``p_dropout_in_uint8_t``
    in flash-attn's ``flash_api.cpp``): 16 elements per call (``FLASH_ELEMS_PER_CALL``).
  - FlashAttention (v1) compares 16-bit slices (``apply_dropout_16bits`` in the v1
    release's ``fmha/softmax.h``, forward and backward, from its first release to its
    last: one Philox call's uint4 split into eight uint16 against
    ``p_dropout_in_uint16_t``): 8 elements per call (``V1_ELEMS_PER_CALL``).
  - PyTorch's fused dropout kernel draws one 32-bit uniform per element
    (``curand_uniform4``): 4 elements per call (``TORCH_ELEMS_PER_CALL``).
  Calls are counted per tile (flash) or per row (standard): ⌈n / elements per call⌉.
* one compare per element to make the keep mask, and one multiply-select per element per
  tensor the mask is applied to (P in the forward; P and dP in the backward).
"""
from __future__ import annotations

import numpy as np

from hwmodels.compiled import compiled
from hwmodels.primitives import count_alu, count_other

PHILOX_ALU_OPS_PER_CALL = 60  # 10 rounds x (4 xor + 2 key adds): the ALU pipe
PHILOX_FMA_OPS_PER_CALL = 40  # 10 rounds x (2 mul.lo + 2 mul.hi): integer multiplies, FMA pipe
FLASH_ELEMS_PER_CALL = 16   # 128 bits / 8-bit comparisons (flash-attn's uint8 threshold)
V1_ELEMS_PER_CALL = 8       # 128 bits / 16-bit comparisons (the v1 release's uint16 one)
TORCH_ELEMS_PER_CALL = 4    # curand_uniform4: one fp32 uniform per element
HASH_BITS = 24              # resolution of the simulator's keep decision


def keep_threshold(p: float) -> int:
    """Hash values (top HASH_BITS bits) below this are dropped."""
    return int(round(p * (1 << HASH_BITS)))


@compiled
def _splitmix64(x):
    x = (x + np.uint64(0x9E3779B97F4A7C15))
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@compiled
def _keeps(seed, bh, i, j, seq_q, seq_k, threshold):
    idx = np.uint64(((bh * seq_q + i) * seq_k + j))
    h = _splitmix64(idx ^ _splitmix64(np.uint64(seed)))
    return (h >> np.uint64(64 - HASH_BITS)) >= np.uint64(threshold)


@compiled
def keep_multiplier_tile(seed, bh, r0, c0, rows, cols, seq_q, seq_k, threshold, inv_keep):
    """Z for rows [r0, r0+rows) x keys [c0, c0+cols) of head ``bh``: 0 or 1/(1-p), float32."""
    z = np.zeros((rows, cols), dtype=np.float32)
    for a in range(rows):
        for b in range(cols):
            if _keeps(seed, bh, r0 + a, c0 + b, seq_q, seq_k, threshold):
                z[a, b] = inv_keep
    return z


@compiled
def count_keep_decisions(c, n, elems_per_call):
    """The ops that decide keep or drop for ``n`` elements: the Philox calls that produce
    their random bits (``elems_per_call`` elements each) and one compare per element."""
    calls = -(-n // elems_per_call)
    count_alu(c, calls * PHILOX_ALU_OPS_PER_CALL + n)              # xor, add; compare
    count_other(c, calls * PHILOX_FMA_OPS_PER_CALL)                # integer multiplies


@compiled
def dropout_tile(c, seed, bh, r0, c0, rows, cols, seq_q, seq_k, threshold, inv_keep, compute,
                 elems_per_call):
    """Regenerate Z for one on-chip tile from the RNG state (no HBM traffic): random bits
    (``elems_per_call`` elements a Philox call: the kernel's comparison width) and one
    compare per element. Returns Z (an empty array in count-only mode)."""
    count_keep_decisions(c, rows * cols, elems_per_call)
    if compute:
        return keep_multiplier_tile(seed, bh, r0, c0, rows, cols, seq_q, seq_k, threshold,
                                    inv_keep)
    return np.empty((0, 0), dtype=np.float32)


def keep_multiplier(wl, seed: int) -> np.ndarray:
    """The whole Z as (batch, heads, seq_q, seq_k) float32 (for references and tests)."""
    z = np.empty((wl.batch, wl.heads, wl.seq_q, wl.seq_k), dtype=np.float32)
    thr, inv = keep_threshold(wl.dropout), np.float32(1.0 / (1.0 - wl.dropout))
    for b in range(wl.batch):
        for h in range(wl.heads):
            z[b, h] = keep_multiplier_tile(seed, b * wl.heads + h, 0, 0, wl.seq_q, wl.seq_k,
                                           wl.seq_q, wl.seq_k, thr, inv)
    return z


def dropout_args(wl, inputs, compute: bool) -> tuple[int, int, np.float32]:
    """(seed, threshold, 1/(1-p)) for the kernels; seed 0 in count-only mode."""
    seed = int(inputs.seed) if compute and inputs is not None else 0
    return seed, keep_threshold(wl.dropout), np.float32(1.0 / (1.0 - wl.dropout))
