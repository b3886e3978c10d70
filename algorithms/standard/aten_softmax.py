"""``torch.softmax`` over the last dimension as ATen runs it on a GPU: the row softmax of
``standard --program pytorch-eager`` (``algorithms.standard.pytorch_eager``, kernel 8).

ATen's ``host_softmax`` (aten/src/ATen/native/cuda/SoftMax.cu; [PT-SOFTMAX]) picks one of
two kernels by the row's length:
  - rows of at most 1024 elements and 4096 bytes: the persistent warp softmax
    (PersistentSoftmax.cuh, ``softmax_warp_forward``): a warp holds a row in registers,
    reduces its max, computes ``std::exp(x - max)`` once per element and keeps it, sums,
    and writes ``exp / sum``;
  - longer rows: a CTA a row (``cunn_SoftMaxForward``; from PyTorch PR #122970 on, 2024,
    ``cunn_SoftMaxForwardSmem`` where the row fits 48 KB of shared memory). It reads the
    row three times: for the max, for the sum of ``std::exp(x - max)``, and for the
    output ``std::exp(x - max) / sum``: the exponential twice per element. Only the first
    read comes from HBM; the other two find the row on chip (in L1, or in the
    shared-memory copy the later kernel makes).
Per row of n elements, e bytes each (fp32 inside):
    warp path:  HBM read n e, write n e; n max (ALU), 3n subtract/sum/divide, n exp
    block path: HBM read n e, write n e, 2 n e re-read on chip; n max, 4n subtract (twice),
                sum and divide, 2n exp
Same HBM traffic as ``algorithms.standard``'s softmax; the block path's second exp and its
on-chip re-reads are the difference.

PyTorch compiles these kernels without ``--use_fast_math``: ``std::exp`` is the accurate
``expf``, not the one-instruction ``__expf`` (PR #122970: "We were able to recover the gap
by using native `__expf` but we decided to leave `std::exp` to avoid affecting numerical
stability"), and ``/`` is an IEEE division. Compiled, each is a routine of several
instructions (nvcc -O3 for sm_80 and sm_90 alike: ``benchmarks/aten_softmax_math.cu``,
counted by ``benchmarks/aten_softmax_sass.py``, the run in ``reports/aten_softmax_sass.json``):
    expf(x)    FFMA.SAT, FFMA.RM, FADD, SHF, FFMA, FFMA, MUFU.EX2, FMUL: beside the one
               counted exp, 6 FMA-pipe and 1 ALU instructions; in the block path's sum pass
               the closing FMUL fuses into the sum's add (5 and 1)
    x / sum    MUFU.RCP, 5 FFMA (the reciprocal refined, the quotient and its correction),
               FCHK and the guard around the slow path (BSSY, BSYNC, BRA): beside the one
               counted op, 1 SFU, 4 FMA-pipe and 4 ALU/branch instructions
The record declares them (``library_lane_ops``) and the timing model prices them
(``accurate_math``); on the A100, with 64 fp32 lanes an SM, they make the long-row softmax
longer than its HBM stream. Not counted: the fp16 -> fp32 conversion of each load and the
register moves around the slow-path call. The launch (a CTA a row, 256 threads, as
``algorithms.standard``'s) is not ATen's: PyTorch up to 2.3 gives a long row 128 to 512
threads, later versions 1024.
"""
from __future__ import annotations

import numpy as np

import algorithms.standard as standard
from hwmodels.compiled import compiled
from hwmodels.primitives import (count_alu, count_exp, count_load, count_other, count_sram_read,
                                 count_store_result)

WARP_SOFTMAX_MAX_ELEMENTS = 1024     # host_softmax: dim_size <= 1024 ...
WARP_SOFTMAX_MAX_BYTES = 4096        # ... && dim_size * sizeof(scalar_t) <= 4096

# library instructions per call beyond the counted op, by pipe (the module docstring's SASS)
EXPF = {"fma": 6, "alu": 1}
EXPF_INTO_SUM = {"fma": 5, "alu": 1}
IEEE_DIVIDE = {"xu": 1, "fma": 4, "alu": 4}


def block_path(row_elements: int, elem_bytes: int) -> bool:
    """Whether ATen gives a row of this length a CTA (else a warp)."""
    return (row_elements > WARP_SOFTMAX_MAX_ELEMENTS
            or row_elements * elem_bytes > WARP_SOFTMAX_MAX_BYTES)


def library_ops_per_element(row_elements: int, elem_bytes: int) -> dict[str, int]:
    """Library lane-ops per element: the warp path's exp and divide; the block path's two
    exps (the sum pass's fused into its add) and divide."""
    routines = ((EXPF_INTO_SUM, EXPF, IEEE_DIVIDE) if block_path(row_elements, elem_bytes)
                else (EXPF, IEEE_DIVIDE))
    return {pipe: sum(r.get(pipe, 0) for r in routines) for pipe in ("fma", "alu", "xu")}


def softmax_record(rec, wl, p):
    """``algorithms.standard``'s softmax record with the library instructions of all
    B·H·N_q rows."""
    elements = wl.batch * wl.heads * wl.seq_q * wl.seq_k
    per_element = library_ops_per_element(wl.seq_k, wl.elem_bytes)
    return standard.softmax_record(rec, wl, p, library_lane_ops={
        pipe: elements * ops for pipe, ops in per_element.items()})


@compiled
def softmax_kernel(c, s, seq_q, seq_k, e, block, compute):
    """P = softmax(S) in place, row by row, as ATen's kernel for the row length (``block``:
    a CTA a row, else a warp) counts it."""
    for i in range(seq_q):
        count_load(c, seq_k * e)                  # the row, once from HBM
        count_alu(c, seq_k)                       # its max
        if block:
            count_sram_read(c, 2 * seq_k * e)     # the sum and output passes re-read it on chip
            count_other(c, 4 * seq_k)             # x - max in both, the sum, the divide
            count_exp(c, 2 * seq_k)               # exp in both
        else:
            count_other(c, 3 * seq_k)             # x - max, the sum, the divide
            count_exp(c, seq_k)
        count_store_result(c, seq_k, e)           # the row of P
        if compute:
            row = s[i]
            p = np.exp(row - row.max())           # the -10000 mask leaves every row a key
            row[:] = p / p.sum()
