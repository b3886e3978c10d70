"""FP8 (e4m3) arithmetic as FlashAttention-3's FP8 forward uses it: the rounding, block
scales and the incoherent-processing rotation — Shah et al. 2024 (arXiv 2407.08608), §3.3.

**e4m3** (the OCP/NVIDIA FP8 format the Hopper tensor cores read): 1 sign bit, 4 exponent
bits with bias 7, 3 mantissa bits, no infinities; 0x7F/0xFF are NaN, so the largest finite
value is 1.75·2⁸ = 448 (not 1.875·2⁸, whose code is NaN). Normal values are 1.mmm·2^E with
E in [-6, 8]; subnormals 0.mmm·2⁻⁶ fill [2⁻⁹, 2⁻⁶) in steps of 2⁻⁹. ``round_to_e4m3``
rounds to the nearest value, ties to even mantissa, and saturates (±448 for anything larger
in magnitude, infinities included) as Hopper's ``cvt.rn.satfinite.e4m3x2.f32`` does; NaN
stays NaN. The result is a float32 array holding e4m3 values (every e4m3 value is exact in
float32), so products of two of them are exact in float32 and the tensor core's fp32
accumulation is what the simulator's float32 matmuls do.

**Block scales** (§3.3, "block quantization"): one fp32 scale per B_r x d block of Q and
per B_c x d block of K and V, s = amax(|block|) / 448, so each block uses the whole e4m3
range; the kernel multiplies the scores of tile (i, j) by s_Q,i · s_K,j (folded into the
softmax scale) and the P V products of block j by s_V,j. Per-tensor scaling (one scale for
the whole tensor, the paper's FP8 baseline) is the same with one block.

**Incoherent processing** (§3.3): Q and K are multiplied by a random orthogonal M before
quantization; since M Mᵀ = I, (QM)(KM)ᵀ = QKᵀ in exact arithmetic, while an outlier
channel is spread over all d channels and no longer decides a block's scale. As the paper
(following QuIP/QuIP#: Chee et al. 2023, Tseng et al. 2024), M = D·H: D a random ±1
diagonal, H the normalized Walsh–Hadamard matrix, applied with the fast transform in
O(d log d) (d log₂ d additions and subtractions per row) rather than as a d x d GEMM.
For a head dim that is not a power of two, d = 2^a·m with m odd, H is block-diagonal with m
Hadamard blocks of size 2^a (still orthogonal; it spreads outliers over 2^a channels
instead of d); an odd d leaves only the sign flips D.

Everything here is vectorized NumPy; ``round_to_e4m3`` is also compiled by Numba
(``round_to_e4m3_jit``) for the attention kernel's per-tile P conversion.
"""
from __future__ import annotations

import numpy as np

from hwmodels.compiled import compiled

E4M3_MAX = 448.0          # 1.75 · 2^8: 0x7E; 0x7F is NaN
E4M3_MIN_EXP = -6         # 1 - bias: the normal range's (and the subnormals') exponent floor
E4M3_MANTISSA_BITS = 3
P_SCALE_LOG2 = 8          # P is computed as 2^8 · exp(S - m), in [0, 256], before the cast


def round_to_e4m3(x):
    """``x`` rounded to the nearest e4m3 value (ties to even, saturating at ±448, NaN kept),
    as float32. Works on any float array, under NumPy and under Numba."""
    a = np.abs(x.astype(np.float64))
    # The float64 exponent field gives floor(log2 |a|) exactly (no log2 rounding near
    # powers of two); zeros and subnormal e4m3 share the exponent floor -6.
    exponent = np.maximum(((a.view(np.int64) >> 52) & 0x7FF) - 1023, E4M3_MIN_EXP)
    # spacing of e4m3 values in that binade: 2^(E - 3), built from its exponent bits
    spacing = ((exponent - E4M3_MANTISSA_BITS + 1023) << 52).view(np.float64)
    y = np.rint(a / spacing) * spacing                  # rint: round half to even
    y = np.minimum(y, E4M3_MAX)                         # satfinite (inf included; NaN kept)
    return np.copysign(y, x).astype(np.float32)


round_to_e4m3_jit = compiled(round_to_e4m3)


def e4m3_value(code: int) -> float:
    """The value an 8-bit e4m3 code stands for (NaN for 0x7F and 0xFF): the format's
    definition, for tests and tables."""
    sign = -1.0 if code & 0x80 else 1.0
    exp_field, mantissa = (code >> 3) & 0xF, code & 0x7
    if exp_field == 0xF and mantissa == 0x7:
        return float("nan")
    if exp_field == 0:
        return sign * mantissa / 8 * 2.0 ** E4M3_MIN_EXP
    return sign * (1 + mantissa / 8) * 2.0 ** (exp_field - 7)


# ---- block scales ----------------------------------------------------------------------------

def block_amax(x: np.ndarray, block_rows: int) -> np.ndarray:
    """(B, H, N, d) -> (B, H, ⌈N/block_rows⌉) largest |x| of each block_rows x d block."""
    b, h, n, d = x.shape
    nblocks = -(-n // block_rows)
    padded = np.zeros((b, h, nblocks * block_rows, d), dtype=np.float32)
    padded[:, :, :n] = np.abs(x)
    return padded.reshape(b, h, nblocks, block_rows * d).max(axis=-1)


def scales_from_amax(amax: np.ndarray) -> np.ndarray:
    """s = amax / 448 (an all-zero block gets s = 1: nothing to scale)."""
    amax = np.asarray(amax, dtype=np.float32)
    return np.where(amax > 0, amax / np.float32(E4M3_MAX), np.float32(1.0)).astype(np.float32)


def quantize(x: np.ndarray, block_rows: int, per_tensor: bool) -> tuple[np.ndarray, np.ndarray]:
    """(e4m3 values of x / s, s per block): x ≈ values · s, block by block.

    ``x``: (B, H, N, d). Returns float32 (B, H, N, d) e4m3 values and float32
    (B, H, ⌈N/block_rows⌉) scales; with ``per_tensor`` every block gets the tensor's one
    scale (the per-tensor baseline)."""
    amax = block_amax(x, block_rows)
    if per_tensor:
        amax = np.full_like(amax, amax.max() if amax.size else 0.0)
    scales = scales_from_amax(amax)
    row_scales = np.repeat(scales, block_rows, axis=2)[:, :, :x.shape[2], None]
    values = np.empty(x.shape, dtype=np.float32)
    for b in range(x.shape[0]):          # a head at a time: float64 temporaries stay small
        for h in range(x.shape[1]):
            values[b, h] = round_to_e4m3(x[b, h] / row_scales[b, h])
    return values, scales


# ---- incoherent processing: x -> x D H ------------------------------------------------------

def hadamard_block(d: int) -> int:
    """Size of the Hadamard blocks used for head dim d: its largest power-of-two divisor."""
    return d & -d


def random_signs(d: int, seed: int = 0) -> np.ndarray:
    """The diagonal of D: d independent ±1 (float32)."""
    return np.where(np.random.default_rng(seed).random(d) < 0.5, -1.0, 1.0).astype(np.float32)


def fwht(x: np.ndarray, block: int) -> np.ndarray:
    """Unnormalized fast Walsh–Hadamard transform of each length-``block`` segment of the
    last axis (Sylvester order): log₂(block) butterfly stages of block/2 (a + b, a - b)
    pairs, i.e. block·log₂(block) additions and subtractions per segment."""
    shape = x.shape
    y = np.array(x, dtype=np.float32).reshape(-1, shape[-1] // block, block)
    h = 1
    while h < block:
        y = y.reshape(y.shape[0], y.shape[1], block // (2 * h), 2, h)
        a, b = y[:, :, :, 0, :], y[:, :, :, 1, :]
        y = np.stack((a + b, a - b), axis=3)
        h *= 2
    return y.reshape(shape)


def rotate(x: np.ndarray, signs: np.ndarray) -> np.ndarray:
    """x M with M = D H / √b (orthogonal; b = ``hadamard_block(d)``), over the last axis."""
    block = hadamard_block(x.shape[-1])
    return fwht(x * signs, block) * np.float32(1.0 / np.sqrt(block))


def rotation_ops_per_row(d: int) -> int:
    """CUDA-core ops of x D H for one row: d sign flips and d·log₂(b) butterfly adds (the
    1/√b normalization is folded into the quantization's multiply)."""
    return d + d * int(np.log2(hadamard_block(d)))
