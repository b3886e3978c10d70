"""Counted primitives: the only way simulated kernels move data or do arithmetic.

Every primitive takes the kernel's counter array ``c`` first and adds what it does to the
named slots (``hwmodels.counters``). Sizes are passed as *logical* element counts so that the
same kernel body counts identically in executed mode (``compute=True``: real NumPy tiles)
and in count-only mode (``compute=False``: HBM tensors are zero-row placeholders and the
arithmetic is skipped).

Accounting rules (the same for every algorithm):

* ``load``  HBM -> SRAM: ``hbm_read_bytes`` and ``sram_write_bytes`` += bytes.
* ``store`` SRAM -> HBM: ``hbm_write_bytes`` and ``sram_read_bytes`` += bytes.
* ``atomic_add`` to HBM (read-modify-write through L2): ``hbm_read_bytes`` and
  ``hbm_write_bytes`` += bytes, and ``atomic_bytes`` += bytes.
* ``sram_read``: a re-read of data already on chip (a row a kernel read from HBM once and
  walks again from L1 or shared memory): ``sram_read_bytes`` += bytes.
* ``matmul`` (m x k) @ (k x n): ``matmul_flops`` += 2mnk; its operands are read from SRAM
  (``sram_read_bytes`` += (mk + kn) x operand bytes).
* ``exp`` / ``other``: ``exp_ops`` / ``other_flops`` += number of elementwise operations
  (a max, add, multiply, divide, compare or select is one op).
* ``alu``: a max/min, compare or select: ``other_flops`` and ``alu_ops`` += ops. They run on
  the SM's ALU pipe, the adds, multiplies and divides on its FMA pipe (Nsight Compute
  Kernel Profiling Guide, "Pipelines"), so the timing model prices the two apart.
* ``convert``: ``convert_ops`` += elements converted from fp32 to the storage dtype (fp16,
  bf16, fp8) before a tensor-core product or a store; none when the storage dtype is fp32.
  ``store_result`` (and ``store_rows``) store computed values: the store and the conversion.
"""
import numpy as np

from hwmodels.compiled import compiled
from hwmodels.counters import (ALU_OPS, ATOMIC_BYTES, CONVERT_OPS, EXP_OPS, HBM_READ_BYTES,
                               HBM_WRITE_BYTES, INTERCONNECT_BYTES, MATMUL_FLOPS, OTHER_FLOPS,
                               SRAM_READ_BYTES, SRAM_WRITE_BYTES)


@compiled
def count_load(c, nbytes):
    """HBM -> SRAM transfer of ``nbytes``."""
    c[HBM_READ_BYTES] += nbytes
    c[SRAM_WRITE_BYTES] += nbytes


@compiled
def count_store(c, nbytes):
    """SRAM -> HBM transfer of ``nbytes``."""
    c[HBM_WRITE_BYTES] += nbytes
    c[SRAM_READ_BYTES] += nbytes


@compiled
def count_sram_read(c, nbytes):
    """A re-read of ``nbytes`` already on chip (no HBM traffic)."""
    c[SRAM_READ_BYTES] += nbytes


@compiled
def count_atomic_add(c, nbytes):
    """Atomic read-modify-write of ``nbytes`` in HBM (e.g. FlashAttention-2's dQ)."""
    c[HBM_READ_BYTES] += nbytes
    c[HBM_WRITE_BYTES] += nbytes
    c[ATOMIC_BYTES] += nbytes


@compiled
def count_matmul(c, m, n, k, operand_bytes):
    """(m x k) @ (k x n) on the tensor cores, operands read from SRAM."""
    c[MATMUL_FLOPS] += 2 * m * n * k
    c[SRAM_READ_BYTES] += (m * k + k * n) * operand_bytes


@compiled
def count_exp(c, n):
    """``n`` special-function ops (exp, log) on the SFUs."""
    c[EXP_OPS] += n


@compiled
def count_other(c, n):
    """``n`` elementwise fp32 ops (max, add, mul, div, compare, select)."""
    c[OTHER_FLOPS] += n


@compiled
def count_alu(c, n):
    """``n`` elementwise fp32 max/min, compare or select ops (ALU pipe), of ``other_flops``."""
    c[OTHER_FLOPS] += n
    c[ALU_OPS] += n


@compiled
def count_convert(c, n, elem_bytes):
    """``n`` fp32 values converted to a storage dtype of ``elem_bytes`` (none for fp32)."""
    if elem_bytes < 4:
        c[CONVERT_OPS] += n


@compiled
def count_store_result(c, n, elem_bytes):
    """``n`` values computed in fp32 stored at ``elem_bytes`` each: the store and, below
    fp32, their conversion on the way out."""
    count_store(c, n * elem_bytes)
    count_convert(c, n, elem_bytes)


@compiled
def count_interconnect(c, nbytes):
    """``nbytes`` sent to another device over NVLink."""
    c[INTERCONNECT_BYTES] += nbytes


# ---- data-moving primitives: count, and move the data when computing ---------------------

@compiled
def load_rows(c, src, r0, r1, ncols, elem_bytes):
    """Tile ``src[r0:r1, :ncols]`` HBM -> SRAM. Returns the tile (a view: the simulator
    does not copy, the counter records the transfer). In count-only mode ``src`` has no
    rows and an empty tile comes back."""
    count_load(c, (r1 - r0) * ncols * elem_bytes)
    return src[r0:r1]


@compiled
def load_vector(c, src, r0, r1, elem_bytes):
    """Per-row statistics ``src[r0:r1]`` (e.g. m, l, lse in fp32) HBM -> SRAM."""
    count_load(c, (r1 - r0) * elem_bytes)
    return src[r0:r1]


@compiled
def store_rows(c, dst, r0, tile, nrows, ncols, elem_bytes, compute):
    """SRAM tile -> ``dst[r0:r0+nrows, :ncols]`` in HBM. The tile is a computed fp32 result,
    converted to the storage dtype on its way out."""
    count_store_result(c, nrows * ncols, elem_bytes)
    if compute:
        dst[r0:r0 + nrows, :] = tile


@compiled
def store_vector(c, dst, r0, vec, n, elem_bytes, compute):
    """SRAM vector -> ``dst[r0:r0+n]`` in HBM."""
    count_store(c, n * elem_bytes)
    if compute:
        dst[r0:r0 + n] = vec


@compiled
def matmul_nt(c, a, b, m, n, k, operand_bytes, compute):
    """``a @ b.T`` with a (m x k), b (n x k): e.g. S = Q Kᵀ. Returns (m x n) float32."""
    count_matmul(c, m, n, k, operand_bytes)
    if compute:
        return np.dot(a, b.T)
    return np.empty((0, 0), dtype=np.float32)


@compiled
def matmul_nn(c, a, b, m, n, k, operand_bytes, compute):
    """``a @ b`` with a (m x k), b (k x n): e.g. P V. Returns (m x n) float32."""
    count_matmul(c, m, n, k, operand_bytes)
    if compute:
        return np.dot(a, b)
    return np.empty((0, 0), dtype=np.float32)


@compiled
def matmul_tn(c, a, b, m, n, k, operand_bytes, compute):
    """``a.T @ b`` with a (k x m), b (k x n): e.g. dV = Pᵀ dO. Returns (m x n) float32."""
    count_matmul(c, m, n, k, operand_bytes)
    if compute:
        return np.dot(a.T, b)
    return np.empty((0, 0), dtype=np.float32)
