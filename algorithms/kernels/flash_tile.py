"""One FlashAttention-2 tile step, counted: the building block every streaming-softmax
forward shares (flash2, flash3, the block-sparse executor, ring attention).

Bound: O(B_c d) HBM bytes and O(B_r B_c d) FLOPs per tile, so a forward over T_r x T_c
tiles has FlashAttention-2's Θ(N d + N² d / B_r) traffic.

``attend_tile`` loads K_j and V_j, computes S = scale · Q_i K_jᵀ, masks it (causal on
diagonal tiles, or an element mask on a sparse pattern's partial tiles), updates the running
max m, sum l and un-normalized accumulator acc in place with the online softmax, applies
dropout to P when asked (regenerated on chip), and adds P V_j to acc. Per B_r x B_c tile it
counts: 2 B_c d e bytes read; 4 B_r B_c d matmul FLOPs; 4 B_r B_c + 4 B_r + B_r d other ops
(+ B_r B_c for a mask, + the dropout ops of ``algorithms.kernels.dropout``), of which the row
max (B_r B_c + B_r) and the mask's select are ALU ops; B_r B_c + B_r exps; and, below fp32,
B_r B_c conversions (P to the operand dtype of the P V product).
``finish_rows`` is the epilogue: O = acc / l, lse = m + log l.
"""
import numpy as np

from algorithms.kernels.common import (apply_causal_mask, causal_block_is_partial, online_softmax_tile,
                               safe_normalizers, scale_rows)
from algorithms.kernels.dropout import FLASH_ELEMS_PER_CALL, count_keep_decisions, dropout_tile
from hwmodels.compiled import compiled
from hwmodels.counters import HBM_READ_BYTES, MATMUL_FLOPS, SRAM_READ_BYTES, SRAM_WRITE_BYTES
from hwmodels.primitives import (count_alu, count_convert, count_exp, count_other, load_rows,
                                 matmul_nn, matmul_nt)

STAT_BYTES = 4
NO_DROPOUT_SCALE = np.float32(1.0)   # attend_tile's inv_keep when there is no dropout


def p_in_registers(d: int, e: int) -> dict:
    """``Recorder.kernel``'s ``register_operand_bytes_per_flop`` for a kernel whose matmul
    FLOPs are all its tiles' (``count_tile``): the tile counts P as an SRAM read of the P V
    product (B_r B_c e bytes per 4 B_r B_c d FLOPs), but FlashAttention-2 (``gemm_rs``) and
    FlashAttention-3 (``wgmma`` with A in registers) feed it to the tensor cores from the
    registers the softmax left it in, so shared memory never carries it."""
    return {"register_operand_bytes_per_flop": e / (4 * d)}


def shares_beside_own_gemm(split: dict) -> dict[str, float]:
    """``Recorder.kernel``'s ``softmax_beside_own_gemm`` from a compiled kernel's counts:
    pipe -> (softmax instructions issued while the warpgroup's own GEMMs are in flight, the
    rest), to pipe -> the first's share, to 4 decimals; a pipe with no instruction is left
    out."""
    return {pipe: round(before / (before + after), 4)
            for pipe, (before, after) in split.items() if before + after}


@compiled
def apply_element_mask(s, mask, r0, c0):
    """s[i, j] = -inf where mask[r0 + i, c0 + j] is False (a sparse pattern's partial tile)."""
    rows, cols = s.shape
    for i in range(rows):
        for j in range(cols):
            if not mask[r0 + i, c0 + j]:
                s[i, j] = -np.inf


@compiled
def count_softmax_tile(c, rows, cols, dv, masked):
    """FlashAttention-2's per-tile online-softmax ops, shared by every kernel that runs it: of
    4 rows cols + 4 rows + rows dv (+ rows cols masked), the row max (rows cols + rows) and
    the mask's select run on the ALU pipe. The caller counts P's conversion to the P V
    product's operand dtype."""
    count_other(c, rows * cols)                      # S *= scale
    if masked:
        count_alu(c, rows * cols)                    # select -inf where masked
    count_alu(c, rows * cols + rows)                 # rowmax(S), max with m
    count_other(c, rows * cols)                      # S - m_new
    count_exp(c, rows * cols)                        # P = exp(S - m_new)
    count_other(c, rows)                             # m_old - m_new
    count_exp(c, rows)                               # alpha
    count_other(c, rows * cols + 2 * rows)           # l = alpha l + rowsum(P)
    count_other(c, rows * dv)                        # acc *= alpha


@compiled
def attend_tile(c, qi, k, v, acc, m, l, r0, rows, c0, c1, d, scale, causal, seq_q, seq_k, e,
                compute, mask, mask_partial, dropout, seed, bh, threshold, inv_keep):
    """Q_i (rows x d, on chip) against keys [c0, c1): the online-softmax step, in place.

    Every caller passes every argument (without dropout: ``False, 0, 0, 0,
    NO_DROPOUT_SCALE``), so that all of them share one compiled specialization."""
    cols = c1 - c0
    kj = load_rows(c, k, c0, c1, d, e)                       # K_j -> SRAM
    vj = load_rows(c, v, c0, c1, d, e)                       # V_j -> SRAM
    s = matmul_nt(c, qi, kj, rows, cols, d, e, compute)      # S = Q_i K_jᵀ
    causal_partial = causal and causal_block_is_partial(r0, c1, seq_q, seq_k)
    count_softmax_tile(c, rows, cols, d, causal_partial or mask_partial)
    if compute:
        s *= np.float32(scale)
        if causal_partial:
            apply_causal_mask(s, r0, c0, seq_q, seq_k)
        if mask_partial:
            apply_element_mask(s, mask, r0, c0)
        alpha = online_softmax_tile(s, m, l)                 # s now holds P
        scale_rows(acc, alpha)
    if dropout:                                              # P ∘ Z feeds P V; l keeps P
        z = dropout_tile(c, seed, bh, r0, c0, rows, cols, seq_q, seq_k, threshold, inv_keep,
                         compute, FLASH_ELEMS_PER_CALL)
        count_other(c, rows * cols)
        if compute:
            s = s * z
    count_convert(c, rows * cols, e)                         # P -> the MMA's operand dtype
    pv = matmul_nn(c, s, vj, rows, d, cols, e, compute)      # acc += P V_j (in the MMA)
    if compute:
        acc += pv


@compiled
def count_tile(c, rows, cols, d, e, masked, dropout):
    """Exactly what ``attend_tile`` counts for one tile, without its loads and products on
    placeholder arrays: count-only mode calls this instead, which makes a 1M-token forward
    ~100x faster. ``tests/test_building_blocks.py`` checks the two agree."""
    kv_bytes = 2 * cols * d * e
    c[HBM_READ_BYTES] += kv_bytes                            # K_j, V_j
    c[SRAM_WRITE_BYTES] += kv_bytes
    c[MATMUL_FLOPS] += 4 * rows * cols * d                   # Q Kᵀ and P V
    c[SRAM_READ_BYTES] += (rows * d + cols * d) * e + (rows * cols + cols * d) * e
    count_softmax_tile(c, rows, cols, d, masked)
    if dropout:
        count_keep_decisions(c, rows * cols, FLASH_ELEMS_PER_CALL)
        count_other(c, rows * cols)                          # P ∘ Z
    count_convert(c, rows * cols, e)                         # P


@compiled
def count_tiles(c, r0, rows, c_lo, c_hi, block_k, key_limit, d, e, causal, seq_q, seq_k,
                dropout):
    """``count_tile`` for the tiles starting in [c_lo, c_hi) of one Q block, each ending at
    most at ``key_limit`` (the key block's end), in count-only mode.

    Tiles of the same width and masking count the same, so each run of them is counted once
    and scaled: a Q block costs O(1) runs (full unmasked tiles, the diagonal's masked ones,
    the ragged last tile), not O(T_c) tiles, and N = 2**24 counts in seconds."""
    c0 = c_lo
    while c0 < c_hi:
        c1 = min(c0 + block_k, key_limit)
        masked = causal and causal_block_is_partial(r0, c1, seq_q, seq_k)
        run = same_tiles_run(r0, c0, c_hi, block_k, key_limit, causal, masked, seq_q, seq_k)
        before = snapshot(c, run)
        count_tile(c, rows, c1 - c0, d, e, masked, dropout)
        repeat_step(c, before, run)
        c0 += run * block_k


# ---- count-only runs: one step counted for a run of steps that count alike -------------------
#
# Count-only mode walks executed mode's loops, but where consecutive tiles (or Q blocks) have
# the same shape and masking it counts the first and scales: a long sequence then costs O(T)
# steps per head instead of O(T_r T_c). The run functions say how far a tile's shape and
# masking stay the same; tests/test_count_only_registry.py holds the scaled counts equal to
# executed mode's, kernel by kernel.

@compiled
def snapshot(c, run):
    """The counters before a step that stands for ``run`` steps (nothing to keep for 1)."""
    return c.copy() if run > 1 else c[:0]


@compiled
def repeat_step(c, before, run):
    """Count the step counted since ``before`` (a ``snapshot``) ``run - 1`` more times."""
    if run > 1:
        c += (run - 1) * (c - before)


@compiled
def same_tiles_run(r0, c0, c_hi, block_k, key_limit, causal, masked, seq_q, seq_k):
    """How many key tiles of the Q block at r0, from the one at c0 on, count like it: a tile
    stays unmasked while its last key is on or before row r0's diagonal (causal)."""
    unmasked_end = r0 + seq_k - seq_q + 1 if causal else key_limit
    return tiles_run(c0, c_hi, block_k, key_limit, unmasked_end, masked)


@compiled
def tiles_run(c0, c_hi, block_k, key_limit, unmasked_end, masked):
    """How many tiles of ``block_k`` keys, from the one at c0 on, count like it: all start
    before c_hi; a full-width tile is followed by full-width ones up to key_limit; an
    unmasked one by unmasked ones while they end by ``unmasked_end`` (masking, once on,
    stays on). The ragged last tile is a run of one."""
    if c0 + block_k > key_limit:
        return 1
    run = min(-(-(c_hi - c0) // block_k), (key_limit - c0) // block_k)
    if not masked:
        run = min(run, (unmasked_end - c0) // block_k)
    return max(run, 1)


@compiled
def rows_run(r0, block_q, stride, seq_q, c1, seq_k, causal, masked):
    """How many Q blocks ``stride`` rows apart (``block_q`` for a CTA that owns them all; a
    multiple of it when CTAs deal them out), from the one at r0 on, count like it against
    the key tile ending at c1 (loops with key blocks outside and Q blocks inside:
    FlashAttention's forward, the backward passes): a full block is followed by full ones up
    to seq_q; a masked one (causal, above the diagonal) by masked ones while their first row
    is still above it, an unmasked one by unmasked ones (rows further down see more keys).
    The ragged last block is a run of one."""
    if r0 + block_q > seq_q:
        return 1
    run = (seq_q - r0 - block_q) // stride + 1
    if causal and masked:                    # masked while c1 - 1 > r0 + seq_k - seq_q
        run = min(run, -(-(c1 - 1 - (seq_k - seq_q) - r0) // stride))
    return max(run, 1)


@compiled
def new_row_state(rows, d, compute):
    """On-chip state of a Q block: running max m = -inf, sum l = 0, accumulator 0."""
    if compute:
        return (np.full(rows, -np.inf, dtype=np.float32), np.zeros(rows, dtype=np.float32),
                np.zeros((rows, d), dtype=np.float32))
    return (np.empty(0, dtype=np.float32), np.empty(0, dtype=np.float32),
            np.empty((0, 0), dtype=np.float32))


@compiled
def finish_rows(c, acc, m, l, rows, d, compute):
    """Epilogue counts and math: O = acc / l, lse = m + log l (rows with no key: 0, -inf)."""
    count_other(c, rows * d + rows)
    count_exp(c, rows)
    o = np.empty((0, 0), dtype=np.float32)
    lse = np.empty(0, dtype=np.float32)
    if compute:
        l_safe, lse = safe_normalizers(m, l)
        o = acc / l_safe.reshape((-1, 1))
    return o, lse


NO_MASK = np.zeros((0, 0), dtype=np.bool_)
