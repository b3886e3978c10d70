"""LSD radix sort of (key, value) pairs, counted as a GPU sorts them — used by Reformer's
bucket sort (``algorithms.reformer``).

Bound: Θ(n · passes) bytes — 4 n for the histogram plus 16 n read and written per digit
pass, passes = ⌈log2(key range) / 8⌉.

Model: CUB's onesweep radix sort (Adinets & Merrill, "Onesweep: A Faster Least Significant
Digit Radix Sort for GPUs", 2022, arXiv 2206.01784), which needs "~2n global read/write
operations for each digit-binning iteration": one up-front histogram pass reads the keys
once and builds every digit's histogram; then one scatter pass per digit reads each pair
and writes it to its place. Digits are 8 bits (radix 256; the width is our assumption).

Traffic for n pairs of 4-byte keys and 4-byte values, P = ⌈key bits / 8⌉ passes:
    histogram: reads 4 n;  each pass: reads 8 n, writes 8 n.
Ops: n P (histogram) + 2 n per pass, integer shifts, masks and adds, all on the ALU pipe
(integer instructions other than IMAD run there), so alu_ops == other_flops.
Histogram and look-back scratch (a few KB per CTA) is not counted. Executed mode really
sorts (stable, so equal keys keep their input order); count-only mode runs the same passes.
"""
import numpy as np

from hwmodels.compiled import compiled
from hwmodels.primitives import count_alu, count_load, count_store

RADIX_BITS = 8            # digit width (radix 256)
SORT_TILES = (4096, 2048, 1024, 512, 256)   # keys per sort CTA, largest that fits SRAM
                                           # (our choice; only the CTA count depends on it)
KEY_BYTES = 4             # int32 keys (bucket ids)
VALUE_BYTES = 4           # int32 values (positions)


def sort_buffers(tile: int) -> dict:
    return {"keys": tile * KEY_BYTES, "values": tile * VALUE_BYTES,
            "histogram": (1 << RADIX_BITS) * 4}


def sort_tile(sram_bytes: int) -> int | None:
    """Keys per sort CTA: the largest candidate whose buffers fit, None if none does."""
    return next((t for t in SORT_TILES if sum(sort_buffers(t).values()) <= sram_bytes), None)


def radix_sort(c_hist, c_passes, keys, values, keys_out, values_out, n, passes, compute):
    """Stable LSD radix sort of (bucket, position) pairs: histogram, then one pass per digit."""
    sort_histogram(c_hist, keys, n, passes)
    src_k, src_v = keys, values
    for i, c in enumerate(c_passes):
        dst_k = keys_out if i == passes - 1 else np.empty_like(keys)
        dst_v = values_out if i == passes - 1 else np.empty_like(values)
        sort_pass(c, src_k, src_v, dst_k, dst_v, n, i * RADIX_BITS, compute)
        src_k, src_v = dst_k, dst_v


@compiled
def sort_histogram(c, keys, n, passes):
    """Onesweep's up-front pass: every digit's histogram from one read of the keys."""
    count_load(c, n * KEY_BYTES)
    count_alu(c, n * passes)                                   # digit extract + bin increment


@compiled
def sort_pass(c, keys, values, keys_out, values_out, n, shift, compute):
    """One scatter pass on the digit at ``shift``: read keys+values, write them in place."""
    count_load(c, n * (KEY_BYTES + VALUE_BYTES))
    count_alu(c, 2 * n)                                        # digit, scatter offset
    count_store(c, n * (KEY_BYTES + VALUE_BYTES))
    if compute:
        radix = 1 << RADIX_BITS
        offsets = np.zeros(radix + 1, dtype=np.int64)
        for i in range(n):
            offsets[((keys[i] >> shift) & (radix - 1)) + 1] += 1
        for j in range(radix):
            offsets[j + 1] += offsets[j]
        for i in range(n):
            digit = (keys[i] >> shift) & (radix - 1)
            keys_out[offsets[digit]] = keys[i]
            values_out[offsets[digit]] = values[i]
            offsets[digit] += 1
