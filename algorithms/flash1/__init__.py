"""FlashAttention (forward) — Dao et al., "FlashAttention: Fast and Memory-Efficient Exact
Attention with IO-Awareness" (2022, arXiv 2205.14135), Algorithm 1 and Theorem 2.

Idea: tile Q, K, V so blocks fit in SRAM, and combine blocks with the online softmax
(running max m and sum ℓ), so the N x N matrices never reach HBM. Algorithm 1 as published:
the outer loop runs over K/V blocks and the inner loop over Q blocks, so O_i, ℓ_i and m_i
travel HBM -> SRAM -> HBM at every inner step.

Notation -> code: M == sram_bytes / e (SRAM size in elements, as in the paper),
B_c == block_k = ceil(M / 4d), B_r == block_q = min(ceil(M / 4d), d), T_r/T_c the
number of row/column blocks; ``qi, oi, li, mi, kj, vj`` are the paper's tiles.

HBM traffic per head (bytes; fp32 statistics; non-causal):
    init   writes N_q d e + 8 N_q               (line 2: O = 0, ℓ = 0, m = -inf)
    reads  = 2 N_k d e + T_c (2 N_q d e + 8 N_q)  (K_j, V_j once; Q_i, O_i, ℓ_i, m_i per j)
    writes = T_c (N_q d e + 8 N_q)               (O_i, ℓ_i, m_i per j)
Theorem 2: Θ(N² d² M⁻¹) HBM accesses (T_c = 4 N d / M). Causal: pairs of blocks that are
entirely masked are skipped (the inner loop starts at the first Q block that sees K_j).
FLOPs: 4 N_q N_k d matmul; per visited B_r x B_c tile 4 B_r B_c + 6 B_r + 4 B_r d other
ops (+ B_r B_c for the mask on diagonal tiles), of which the maxes (B_r B_c + B_r) and the
mask's select run on the ALU, B_r B_c + 2 B_r exps, and below fp32 B_r B_c + B_r d
conversions (P̃ before P̃ V, O_i before its store).

Kernel grid (``--grid``): ``head`` (the default) runs one CTA per (batch, head), Algorithm 1
as the paper writes it for one head, which leaves SMs idle when batch x heads < SMs.
``release`` runs the grid of the release the FlashAttention-2 paper measures FlashAttention
against (flash-attention v1, ``fmha_fwd_launch_template.h``, from October 2022: 'Split fwd on
the seqlen_q dimension'): each head's Q blocks are dealt round-robin to ``splits`` CTAs
(block i to CTA i mod splits, as the release deals its 16-row steps, which also balances a
causal grid), ``splits`` being the release's choice (``release_forward_splits``): the fewest,
at most 30, whose waves over the SMs are within 95% of the best fill. Every split CTA loads
the K_j, V_j its Q blocks see, so K and V are read up to ``splits`` times per head (Q, O, ℓ,
m once per visited pair, as with one CTA). The release's 4 warps split K_j and V_j between
them ("split-K", FlashAttention-2 §3.3): each warp's fp32 partial P_ij V_j and row max and
sum go through shared memory to be summed, 2 · 4 · (4 d + 8) bytes per visited row, priced
(``smem_exchange_bytes``) but not counted as the algorithm's SRAM traffic.
Tiles (``--tiles``): ``paper``, the default, plans B_c and B_r from M as above; ``release``
runs the release's fixed tiles (128 or 256 keys, Q in 16-row steps) with its traffic between
K/V blocks, an fp32 o_tmp and one lse per row in place of O_i, ℓ_i, m_i and no line 2 (its
closed forms in ``algorithms.flash1.release``).
Shared memory holds K_j, V_j, Q_i and O_i (e bytes per element): 2 B_c d + 2 B_r d <=
4 B_c d ≈ M, the paper's accounting; S_ij/P_ij and ℓ_i, m_i are "on chip" in the paper and
live in registers here (fp32), checked against the register file. When rounding B_c up
overflows M (⌈M/4d⌉ · 4d > M), B_c = ⌊M/4d⌋.

Training (``--pass bwd`` / ``fwd+bwd``): the backward pass is Algorithm 4, in
``algorithms.flash1.backward``; it reads the saved O, ℓ and m, recomputes P on chip and
read-modify-writes dQ_i through HBM at every inner step. Theorem 5: Θ(N² d² M⁻¹) HBM
accesses, as the forward (its tiles are B_c = ⌈M/8d⌉, B_r = min(B_c, d): Algorithm 4
holds twice the forward's d-wide tiles on chip). Dropout (``--dropout p``): Z is regenerated on
chip from the RNG state (Algorithm 2 lines 14-15; no HBM traffic; RNG cost in
``algorithms.kernels.dropout``): per visited tile ⌈B_r B_c/8⌉·100 + 2 B_r B_c other ops in the
forward (the v1 release compares 16-bit slices of the random bits, 8 elements a Philox call;
FlashAttention-2 compares 8-bit ones), where P̃ ∘ Z feeds P̃ V_j while ℓ̃ sums the undropped P̃.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from algorithms.flash1 import backward as flash1_bwd
from algorithms.flash1 import release
from algorithms.flash1.backward import (first_visited_row, is_last_key_block, pair_run,
                                       wave_fill)
from algorithms.base import AlgorithmInfo, Option, Plan, PlanError
from algorithms.kernels.common import (apply_causal_mask, causal_block_is_partial, cdiv,
                                       finish_heads, first_q_bytes, for_each_head, head_view,
                                       new_output, new_stats, placeholder, placeholder_vector,
                                       row_padding, tile_softmax_stats)
from algorithms.kernels.dropout import (V1_ELEMS_PER_CALL, count_keep_decisions,
                                       dropout_args, dropout_tile)
from algorithms.kernels.flash_tile import repeat_step, snapshot
from hwmodels.compiled import compiled
from hwmodels.counters import (ALU_OPS, CONVERT_OPS, EXP_OPS, HBM_READ_BYTES, HBM_WRITE_BYTES,
                               MATMUL_FLOPS, OTHER_FLOPS, SRAM_READ_BYTES, SRAM_WRITE_BYTES)
from algorithms.kernels import footprints as fp
from algorithms.kernels import step_latency
from algorithms.kernels.footprints import with_passes
from hwmodels.footprint import Allocation, Footprint
from algorithms.kernels.passes import bound_for_passes, run_passes
from hwmodels.memory import SramOverflowError, check_sram_fits
from hwmodels.primitives import (count_alu, count_convert, count_exp, count_other, count_store,
                                 load_rows, load_vector, matmul_nn, matmul_nt, store_rows,
                                 store_vector)

GRIDS = ("head", "release")
TILES = ("paper", "release")
RELEASE_MAX_SPLITS = 30          # fmha_fwd_launch_template.h: max_splits = min(30, ...)
RELEASE_FILL_FRACTION = 0.95     # ... the fewest splits within 95% of the best wave fill

INFO = AlgorithmInfo(
    name="flash1",
    title="FlashAttention (Algorithm 1 forward, Algorithm 4 backward)",
    paper="Dao et al., 2022 (arXiv 2205.14135)",
    exact=True,
    io_bound="Θ(N²d²/M)",
    passes=("fwd", "bwd"),
    dropout=True,
    options=(Option("grid", str, "head",
                    "the CTAs a head runs on: head (the default: one CTA per batch and head, "
                    "Algorithm 1 and 4 as the paper writes them) or release (the v1 release's "
                    "grid: the forward deals a head's Q blocks to several CTAs, the backward "
                    "gives each K/V block a CTA when that fills the SMs better; same tiles)",
                    choices=GRIDS),
             Option("tiles", str, "paper",
                    "the tiles and their HBM traffic: paper (the default: Algorithm 1's B_c = "
                    "ceil(M/4d), B_r = min(B_c, d), Algorithm 4's from M/8d) or release (the v1 "
                    "release's kernels: 128 or 256 keys per K/V block, Q in 16-row steps, an "
                    "fp32 O accumulator and one log-sum-exp per row between K/V blocks; in "
                    "the backward D stored once and dQ in fp32, added atomically where "
                    "--grid release splits it; fp16 and bf16, head_dim a multiple of 8 up "
                    "to 128)",
                    choices=TILES)),
)

STAT_BYTES = 4
# the release's forward CTA: 4 warps (flash-attention v1, csrc/flash_attn/src/
# fmha_fwd_hdim*.cu: FMHA_kernel_traits<S, d, 16, 1, 4, ...>); its backward runs 8
THREADS_PER_CTA = 128


@dataclass(frozen=True)
class Flash1Plan(Plan):
    block_q: int        # B_r
    block_k: int        # B_c
    sram_elements: int  # M in elements
    smem_bytes: int
    bwd: flash1_bwd.Flash1BwdPlan | None = None   # Algorithm 4's tiles (training)
    splits: int = 1     # CTAs per head (``--grid release``: the release's seqlen_q split)
    tiles: str = "paper"    # ``--tiles``: Algorithm 1's (from M) or the release's


def sram_buffers(block_q: int, block_k: int, d: int, e: int) -> dict[str, int]:
    return {"K_j": block_k * d * e, "V_j": block_k * d * e, "Q_i": block_q * d * e,
            "O_i": block_q * d * e}


def register_bytes(block_q: int, block_k: int) -> int:
    """S_ij / P_ij and ℓ_i, m_i, ℓ̃, m̃ in fp32 registers."""
    return block_q * block_k * 4 + 4 * block_q * STAT_BYTES


def cta_register_bytes(p: Flash1Plan, d: int, e: int) -> int:
    """What a CTA holds in registers: S_ij and the statistics; the release's warps also keep
    their slices of K_j and V_j for the whole K/V block (kernel traits K_IN_REGS, V_IN_REGS)
    and each its fp32 partial P̃ V for the step's rows (split-K), which is what its occupancy
    (and so its split heuristic) sees."""
    regs = register_bytes(p.block_q, p.block_k)
    if p.tiles == "release":
        regs += 2 * p.block_k * d * e + (THREADS_PER_CTA // 32) * p.block_q * d * 4
    return regs


def plan(wl, gpu, sram_bytes: int, grid: str = "head", tiles: str = "paper") -> Flash1Plan:
    if tiles == "release":
        release.check_workload(wl)
        fwd = plan_release_forward(wl, gpu, sram_bytes)
    else:
        fwd = plan_forward(wl, gpu, sram_bytes)
    if grid == "release":
        # the occupancy the release asks CUDA for (cudaOccupancyMaxActiveBlocksPerMultiprocessor)
        ctas_per_sm = gpu.ctas_per_sm(fwd.smem_bytes,
                                      cta_register_bytes(fwd, wl.head_dim, wl.elem_bytes),
                                      THREADS_PER_CTA)
        fwd = dataclasses.replace(fwd, splits=release_forward_splits(
            wl.batch * wl.heads, gpu.sm_count, ctas_per_sm, cdiv(wl.seq_q, fwd.block_q)))
    if not wl.has_backward:
        return fwd
    return dataclasses.replace(fwd, bwd=flash1_bwd.plan_backward(wl, gpu, sram_bytes, grid,
                                                                  tiles))


def release_forward_splits(heads: int, sms: int, ctas_per_sm: int, row_blocks: int) -> int:
    """The v1 release's ``num_splits_heuristic_fwd``: CTAs per head, the fewest (at most 30)
    whose wave fill is within 95% of the best. The release deals 16-row steps, of which any
    length it benchmarks has 30 or more; the simulated Q blocks are Algorithm 1's B_r rows,
    so no more splits than T_r blocks (an empty CTA would only read K and V)."""
    limit = max(1, min(RELEASE_MAX_SPLITS, row_blocks))
    fills = [wave_fill(heads * n, sms * ctas_per_sm) for n in range(1, limit + 1)]
    best = max(fills)
    return next(n for n, f in enumerate(fills, 1) if f > RELEASE_FILL_FRACTION * best)


def plan_forward(wl, gpu, sram_bytes: int) -> Flash1Plan:
    d, e = wl.head_dim, wl.elem_bytes
    m_elems = sram_bytes // e
    block_k = cdiv(m_elems, 4 * d)                 # line 1: B_c = ceil(M / 4d)
    if block_k * 4 * d > m_elems:
        block_k = max(1, m_elems // (4 * d))       # rounding up would overflow M
    block_q = min(block_k, d)                      #         B_r = min(ceil(M / 4d), d)
    if m_elems < 4 * d:
        raise SramOverflowError(
            f"flash1 with head_dim {d} needs M >= 4d = {4 * d} elements ({4 * d * e:,} bytes) "
            f"of SRAM for one row of each of K_j, V_j, Q_i, O_i, but the budget is "
            f"{sram_bytes:,} bytes; use a smaller --head-dim or a larger --sram-kb")
    need = check_sram_fits(f"flash1 (B_c = {block_k}, B_r = {block_q}, d = {d})",
                           sram_buffers(block_q, block_k, d, e), sram_bytes)
    check_registers(gpu, block_q, block_k)
    return Flash1Plan(block_q=block_q, block_k=block_k, sram_elements=m_elems, smem_bytes=need)


def plan_release_forward(wl, gpu, sram_bytes: int) -> Flash1Plan:
    """The release's tiles (``algorithms.flash1.release``): B_c keys by head_dim and key
    length, Q in 16-row steps; they must fit the SRAM budget as Algorithm 1's do."""
    d, e = wl.head_dim, wl.elem_bytes
    block_k, block_q = release.key_block(d, wl.seq_k), release.STEP_ROWS
    need = check_sram_fits(f"flash1 --tiles release (B_c = {block_k}, 16-row steps, d = {d})",
                           sram_buffers(block_q, block_k, d, e), sram_bytes,
                           hint="use a larger --sram-kb, or --tiles paper")
    check_registers(gpu, block_q, block_k)
    return Flash1Plan(block_q=block_q, block_k=block_k,
                      sram_elements=release.sram_elements(block_k, d), smem_bytes=need,
                      tiles="release")


def check_registers(gpu, block_q: int, block_k: int) -> None:
    regs = register_bytes(block_q, block_k)
    if regs > gpu.register_bytes_per_sm:
        raise PlanError(f"flash1 tiles B_r x B_c = {block_q} x {block_k} need {regs:,} bytes of "
                        f"fp32 registers for S_ij, more than the {gpu.register_bytes_per_sm:,}-byte "
                        f"register file; use a smaller --sram-kb or --head-dim")


def run(wl, p: Flash1Plan, inputs, rec, compute: bool) -> dict:
    return run_passes(wl, p, inputs, rec, compute, forward, flash1_bwd.backward)


def forward(wl, p: Flash1Plan, inputs, rec, compute: bool) -> dict:
    d, e = wl.head_dim, wl.elem_bytes
    bh = wl.batch * wl.heads
    is_release = p.tiles == "release"
    if not is_release:      # the release initializes nothing in HBM
        c_init = rec.kernel("flash1_init", ctas=bh, buffers={}, tc_path="none")
    buffers = sram_buffers(p.block_q, p.block_k, d, e)
    regs = cta_register_bytes(p, d, e)
    per_head_reread, unique_per_head = hbm_footprint_per_head(wl, p)
    ctas = bh * p.splits
    resident = rec.resident_ctas(ctas, sum(buffers.values()), regs, THREADS_PER_CTA)
    visited = flash1_bwd.visited_rows(wl.seq_q, wl.seq_k, p.block_q, p.block_k, wl.causal,
                                      is_release)
    # the re-read rows hit L2 only if those of the CTAs in flight fit there; split CTAs
    # re-read only their own rows, and every split of a head in flight re-reads its K and V
    working_set = resident * per_head_reread // p.splits + (
        min(bh, resident) * 2 * wl.seq_k * d * e if p.splits > 1 else 0)
    c = rec.kernel("flash1_fwd", ctas=ctas, buffers=buffers, threads_per_cta=THREADS_PER_CTA,
                   register_bytes_per_cta=regs, tc_path="mma_sync", overlap="serial",
                   **shared_memory_pricing(p, d, e, visited, bh),
                   # the first S_ij = Q_i K_jᵀ waits for both tiles
                   prologue_bytes_per_cta=first_q_bytes(buffers["Q_i"], p.block_q, wl.seq_q)
                   + buffers["K_j"],
                   # each step computes its whole B_r rows, those past N_q included
                   row_padding=row_padding(wl.seq_q, p.block_q),
                   # Algorithm 1 writes O_i back at the end of every inner step (line 12)
                   epilogue_elements_per_cta=d * (visited // p.splits),   # a CTA's share
                   cta_work=split_pairs(wl, p) if p.splits > 1 else None,
                   **step_latency.chain(step_latency.split_k_forward_step(p.block_k),
                                        flash1_bwd.visited_pairs(wl.seq_q, wl.seq_k, p.block_q,
                                                                 p.block_k, wl.causal,
                                                                 is_release), bh),
                   # the release stages the next Q_i, and O_i read back, through registers
                   # (Algorithm 1 as written loads its tiles to SRAM at the top of the loop)
                   step_loads=release_forward_loads(wl, p) if is_release else (),
                   matmul_dtype=wl.dtype, unique_hbm_bytes=bh * unique_per_head,
                   l2_working_set_bytes=working_set)
    o = new_output(wl, compute)
    if is_release:      # an fp32 O accumulator and the log-sum-exp between K/V blocks
        state = {"o_acc": new_output(wl, compute), "lse": new_stats(wl, compute, -np.inf)}
    else:
        state = {"l": new_stats(wl, compute), "m": new_stats(wl, compute, -np.inf)}
        # line 2: initialize O = (0), ℓ = (0), m = (-inf) in HBM (every head)
        count_store(c_init, wl.seq_q * d * e + 2 * wl.seq_q * STAT_BYTES)
        finish_heads(c_init, wl, False)
    seed, threshold, inv_keep = dropout_args(wl, inputs, compute)

    def head(c, b, h, q, k, v):
        view = {name: head_view(x, b, h, compute) for name, x in state.items()}
        rows, stats = placeholder(d), placeholder_vector()     # what this program lacks
        for split in range(p.splits):
            forward_head(c, q, k, v, head_view(o, b, h, compute), view.get("l", stats),
                         view.get("m", stats), view.get("o_acc", rows), view.get("lse", stats),
                         wl.seq_q, wl.seq_k, d, p.block_q, p.block_k,
                         wl.scale, wl.causal, e, compute, is_release, wl.dropout > 0, seed,
                         b * wl.heads + h, threshold, inv_keep, split, p.splits)
    for_each_head(wl, inputs, compute, c, head)
    if not compute:
        return {}
    if is_release:      # (m = lse, ℓ = 1) is what Algorithm 4 needs of the statistics
        lse = state["lse"]
        return {"o": o, "lse": lse, "l": np.ones_like(lse), "m": lse}
    l, m = state["l"], state["m"]
    lse = np.where(l > 0, m + np.log(np.where(l > 0, l, 1)), -np.inf).astype(np.float32)
    return {"o": o, "lse": lse, "l": l, "m": m}     # l, m: saved for the backward


def release_forward_loads(wl, p: Flash1Plan) -> tuple:
    """The loads the release's forward stages through registers in a step
    (``step_latency.split_k_forward_loads``): the next Q_i on every step but a pass's last
    (of each split's rows), and the fp32 O_i read back on the steps of every K/V block but
    the first."""
    steps = flash1_bwd.steps_per_key_block(wl.seq_q, wl.seq_k, p.block_q, p.block_k,
                                           wl.causal, release=True)
    return step_latency.split_k_forward_loads(
        p.block_k, step_latency.next_step_share(steps, p.splits),
        step_latency.later_blocks_share(steps))


def hbm_footprint_per_head(wl, p: Flash1Plan) -> tuple[int, int]:
    """(bytes of a head re-read for every K/V block, distinct bytes a head touches):
    Algorithm 1 re-reads Q_i, O_i, ℓ_i, m_i; the release Q_i, its fp32 o_tmp_i and lse_i
    (o_tmp only when the keys span more than one K/V block)."""
    nq, nk, d, e = wl.seq_q, wl.seq_k, wl.head_dim, wl.elem_bytes
    if p.tiles == "release":
        reread = nq * d * e + nq * STAT_BYTES + (nq * 4 * d if nk > p.block_k else 0)
        return reread, reread + 2 * nk * d * e + nq * d * e
    reread = 2 * nq * d * e + 2 * nq * STAT_BYTES
    return reread, reread + 2 * nk * d * e + nq * d * e + 2 * nq * STAT_BYTES


def shared_memory_pricing(p: Flash1Plan, d: int, e: int, visited: int, bh: int) -> dict:
    """The release's 4 warps split K_j and V_j between them ("split-K", FlashAttention-2
    §3.3) and step through Q 16 rows at a time (pricing only): the tiles' reads as its warps
    make them, and every warp's fp32 partial P V and row max and sum passed through shared
    memory to be summed."""
    warps = THREADS_PER_CTA // 32
    pricing = {"smem_readers": warps, "smem_exchange_bytes": bh * flash1_bwd.split_k_exchange_bytes(
        visited, 4 * d + 2 * STAT_BYTES, warps)}
    if p.tiles != "release":
        # Algorithm 1's B_r rows: all of K_j, V_j are read per 16 rows, as 4 warps that each
        # read them for B_r rows of their own would
        return {**pricing, "mma_rows_per_cta": p.block_q}
    # Each warp keeps its quarter of K_j and V_j in registers through the K/V block (fmha
    # kernel traits: K_IN_REGS, V_IN_REGS; fmha_fprop_kernel_1xN.h "we keep the data in
    # registers"), and P̃ too: of a pair's counted reads, K_j, V_j and P̃, (2 B_c d + B_r B_c)
    # e bytes per 4 B_r B_c d FLOPs, never cross shared memory (their one read per K/V block
    # and CTA, 1/steps of it, is left out). Q_i does, once per warp, for S = Q_i K_jᵀ (half
    # the FLOPs): 3 B_r d e more a pair, = FLOPs x e / 2 x (4 - 1) / 2B_c.
    return {**pricing, "mma_rows_per_cta": 2 * p.block_k,
            "register_operand_bytes_per_flop": e / (2 * p.block_q) + e / (4 * d)}


@compiled(nogil=True)
def forward_head(c, q, k, v, o, l, m, o_acc, lse, seq_q, seq_k, d, block_q, block_k, scale,
                 causal, e, compute, is_release, dropout, seed, bh, threshold, inv_keep, split,
                 splits):
    """Algorithm 1 for one head, on the Q blocks i = split, split + splits, ... (all of them
    with one split): each split is a CTA of its own, which loads the K_j, V_j its blocks see.
    Between K/V blocks a row keeps O_i, ℓ_i, m_i (Algorithm 1: ``o, l, m``) or, the
    release, its fp32 output and log-sum-exp (``o_acc, lse``; ``o`` takes its last)."""
    stride = splits * block_q
    for c0 in range(0, seq_k, block_k):                          # line 5: for j in 1..T_c
        c1 = min(c0 + block_k, seq_k)
        cols = c1 - c0
        # causal: Q blocks whose last row cannot see key c0 are skipped entirely
        first_row = first_visited_row(c0, seq_q, seq_k, causal, is_release)
        r0 = first_block_of_split(first_row // block_q, split, splits) * block_q
        if r0 >= seq_q:
            continue                                             # this CTA's rows see no K_j
        kj = load_rows(c, k, c0, c1, d, e)                       # line 6: K_j, V_j -> SRAM
        vj = load_rows(c, v, c0, c1, d, e)
        while r0 < seq_q:                                        # line 7: for i in 1..T_r
            r1 = min(r0 + block_q, seq_q)
            rows = r1 - r0
            masked = causal and causal_block_is_partial(r0, c1, seq_q, seq_k)
            first = c0 == 0
            final = is_last_key_block(r1, c1, seq_q, seq_k, causal)
            if not compute:        # the same counts without arrays, a run of Q blocks at once
                run = pair_run(r0, block_q, stride, seq_q, c1, seq_k, causal, masked,
                               is_release)
                before = snapshot(c, run)
                count_pair(c, rows, cols, d, e, masked, dropout, is_release, first, final)
                repeat_step(c, before, run)
                r0 += run * stride
                continue
            qi = load_rows(c, q, r0, r1, d, e)                   # line 8: Q_i, O_i, ℓ_i, m_i
            if is_release:
                oi, mi, li = load_release_state(c, o_acc, lse, r0, r1, d, first)
            else:
                oi = load_rows(c, o, r0, r1, d, e)
                li = load_vector(c, l, r0, r1, STAT_BYTES)
                mi = load_vector(c, m, r0, r1, STAT_BYTES)
            oi, mi, li = attend_pair(c, qi, kj, vj, oi, mi, li, r0, c0, rows, cols, d, e,
                                     scale, masked, seq_q, seq_k, dropout, seed, bh,
                                     threshold, inv_keep)
            if is_release:
                store_release_state(c, o, o_acc, lse, r0, oi, mi, li, rows, d, e, final)
            else:
                store_rows(c, o, r0, oi, rows, d, e, True)       # line 13: O_i -> HBM
                store_vector(c, l, r0, li, rows, STAT_BYTES, True)  # ℓ_i, m_i -> HBM
                store_vector(c, m, r0, mi, rows, STAT_BYTES, True)
            r0 += stride


@compiled
def attend_pair(c, qi, kj, vj, oi, mi, li, r0, c0, rows, cols, d, e, scale, masked, seq_q,
                seq_k, dropout, seed, bh, threshold, inv_keep):
    """Lines 9-12 for one (K/V block, Q block) pair, counted and computed: S_ij, its
    softmax statistics, P̃_ij V_j, and the merge into (O_i, m_i, ℓ_i), which it returns."""
    s = matmul_nt(c, qi, kj, rows, cols, d, e, True)             # line 9: S_ij = τ Q_i K_jᵀ
    count_other(c, rows * cols)
    if masked:
        count_alu(c, rows * cols)
    count_alu(c, rows * cols)                                    # line 10: m̃ = rowmax(S)
    count_other(c, rows * cols)                                  #   S - m̃
    count_exp(c, rows * cols)                                    #   P̃ = exp(S - m̃)
    count_other(c, rows * cols)                                  #   ℓ̃ = rowsum(P̃)
    s *= np.float32(scale)
    if masked:
        apply_causal_mask(s, r0, c0, seq_q, seq_k)
    m_tile, l_tile = tile_softmax_stats(s)                       # s now holds P̃_ij
    if dropout:                                                  # P̃ ∘ Z feeds P̃ V; ℓ̃ keeps P̃
        z = dropout_tile(c, seed, bh, r0, c0, rows, cols, seq_q, seq_k, threshold, inv_keep,
                         True, V1_ELEMS_PER_CALL)
        count_other(c, rows * cols)
        s = s * z
    count_convert(c, rows * cols, e)                             # P̃ -> the MMA's dtype
    pv = matmul_nn(c, s, vj, rows, d, cols, e, True)             # line 12: P̃_ij V_j
    count_alu(c, rows)                                           # line 11: m_new = max
    count_other(c, 5 * rows)                                     #   differences, ℓ_new
    count_exp(c, 2 * rows)
    count_other(c, 4 * rows * d)                                 # line 12: rescale, add, divide
    return merge_into_output(oi, mi, li, pv, m_tile, l_tile)


@compiled
def load_release_state(c, o_acc, lse, r0, r1, d, first):
    """The release's saved row state as (O_i, m_i, ℓ_i) = (o_tmp_i, lse_i, 1): nothing to
    read at the first K/V block (O_i = 0, m_i = -inf, ℓ_i = 0)."""
    rows = r1 - r0
    if first:
        return (np.zeros((rows, d), dtype=np.float32), np.full(rows, -np.inf, np.float32),
                np.zeros(rows, dtype=np.float32))
    oi = load_rows(c, o_acc, r0, r1, d, 4)                       # fp32 o_tmp
    mi = load_vector(c, lse, r0, r1, STAT_BYTES)
    return oi, mi, np.ones(rows, dtype=np.float32)


@compiled
def store_release_state(c, o, o_acc, lse, r0, oi, mi, li, rows, d, e, final):
    """lse_i = m_i + log ℓ_i back to HBM, and O_i: to O at e bytes after the row's last K/V
    block, to the fp32 o_tmp before it."""
    count_exp(c, rows)                                           # log ℓ_i
    count_other(c, rows)                                         # m_i + log ℓ_i
    lse_i = np.full(rows, -np.inf, dtype=np.float32)     # a row with no key yet: -inf
    for i in range(rows):
        if li[i] > 0:
            lse_i[i] = mi[i] + np.log(li[i])
    store_vector(c, lse, r0, lse_i, rows, STAT_BYTES, True)
    if final:
        store_rows(c, o, r0, oi, rows, d, e, True)
    else:
        store_rows(c, o_acc, r0, oi, rows, d, 4, True)


@compiled
def first_block_of_split(first, split, splits):
    """The first Q block index >= ``first`` that the CTA ``split`` of ``splits`` owns."""
    return first + (split - first) % splits


def split_pairs(wl, p: Flash1Plan) -> np.ndarray:
    """(Q block, K/V block) pairs each split CTA of a head visits (unequal when causal: the
    round-robin deal keeps them close)."""
    first = flash1_bwd.first_q_blocks(wl.seq_q, wl.seq_k, p.block_q, p.block_k, wl.causal,
                                      p.tiles == "release")
    blocks = np.arange(cdiv(wl.seq_q, p.block_q), dtype=np.int64)
    # K/V blocks per Q block: those whose first Q block is at or before it, by binary search
    # (a T_r x T_c comparison table is 64 GiB at N = 2**24 on the release's tiles)
    seen_by = np.searchsorted(np.sort(first), blocks, side="right")
    return np.bincount(blocks % p.splits, weights=seen_by,
                       minlength=p.splits).astype(np.float64)


@compiled
def count_pair(c, rows, cols, d, e, masked, dropout, is_release, first, final):
    """Exactly what one (K/V block, Q block) step of ``forward_head`` counts, as arithmetic:
    count-only mode calls this instead of running the step on placeholder arrays."""
    if is_release:      # Q_i; o_tmp_i and lse_i after the first block; lse_i, then o_tmp_i or O_i
        reads = rows * d * e + (0 if first else rows * (4 * d + STAT_BYTES))
        writes = rows * STAT_BYTES + (rows * d * e if final else rows * 4 * d)
        stored_below_fp32 = rows * d if final else 0
    else:               # Q_i, O_i, ℓ_i, m_i; O_i, ℓ_i, m_i back
        reads = 2 * rows * d * e + 2 * rows * STAT_BYTES
        writes = reads - rows * d * e
        stored_below_fp32 = rows * d
    c[HBM_READ_BYTES] += reads
    c[SRAM_WRITE_BYTES] += reads
    c[HBM_WRITE_BYTES] += writes
    c[SRAM_READ_BYTES] += writes
    c[MATMUL_FLOPS] += 4 * rows * cols * d                       # S = Q Kᵀ, P̃ V
    c[SRAM_READ_BYTES] += (rows * d + cols * d) * e + (rows * cols + cols * d) * e
    other = 4 * rows * cols + 6 * rows + 4 * rows * d
    alu = rows * cols + rows                                     # rowmax, m_new
    exps = rows * cols + 2 * rows
    if is_release:
        other += rows                                            # lse = m + log ℓ
        exps += rows
    if masked:
        other += rows * cols
        alu += rows * cols                                       # select
    if dropout:
        count_keep_decisions(c, rows * cols, V1_ELEMS_PER_CALL)
        other += rows * cols                                     # P̃ ∘ Z
    c[OTHER_FLOPS] += other
    c[ALU_OPS] += alu
    if e < 4:
        c[CONVERT_OPS] += rows * cols + stored_below_fp32        # P̃; O_i on its way out
    c[EXP_OPS] += exps


@compiled
def merge_into_output(oi, mi, li, pv, m_tile, l_tile):
    """Lines 11-12: m_new = max(m_i, m̃), ℓ_new = e^{m_i-m_new} ℓ_i + e^{m̃-m_new} ℓ̃,
    O_i = diag(ℓ_new)⁻¹ (diag(ℓ_i) e^{m_i-m_new} O_i + e^{m̃-m_new} P̃ V_j)."""
    rows, d = pv.shape
    out = np.empty((rows, d), dtype=np.float32)
    m_new = np.empty(rows, dtype=np.float32)
    l_new = np.empty(rows, dtype=np.float32)
    for i in range(rows):
        mn = max(mi[i], m_tile[i])
        ref = mn if mn != -np.inf else np.float32(0.0)
        a_old = np.exp(mi[i] - ref)
        a_tile = np.exp(m_tile[i] - ref) if m_tile[i] != -np.inf else np.float32(0.0)
        ln = a_old * li[i] + a_tile * l_tile[i]
        inv = np.float32(1.0) / ln if ln > 0 else np.float32(0.0)
        for j in range(d):
            out[i, j] = (li[i] * a_old * oi[i, j] + a_tile * pv[i, j]) * inv
        m_new[i] = mn
        l_new[i] = ln
    return out, m_new, l_new


def io_bound(wl, p: Flash1Plan, sram_bytes: int) -> float:
    """Θ(N² d² / M) in bytes: N_q N_k d² / M elements of e bytes per head, per pass
    (Theorems 2 and 5)."""
    per_head = wl.seq_q * wl.seq_k * wl.head_dim ** 2 / p.sram_elements
    fwd = float(per_head * wl.elem_bytes * wl.batch * wl.heads)
    return bound_for_passes(wl, fwd, flash1_bwd.io_bound_backward(wl, p.sram_elements))


def footprint(wl, p: Flash1Plan):
    """HBM allocations: Q, K, V and, from the init kernel (Algorithm 1 line 2), O and the
    fp32 ℓ and m, which the main kernel read-modify-writes — Θ(N d). Training keeps O, ℓ,
    m for Algorithm 4 (``flash1.backward.footprint_backward``)."""
    backward = flash1_bwd.footprint_backward(wl, p.bwd) if wl.has_backward else None
    if p.tiles == "release":
        return with_passes(wl, release_footprint(wl, p), backward)
    phases = ("flash1_init", "flash1_fwd")
    forward = Footprint(phases, fp.inputs(wl, *phases) + [
        Allocation("o", fp.q_bytes(wl), "flash1_init", "flash1_fwd", "output"),
        Allocation("l", fp.row_stat_bytes(wl), "flash1_init", "flash1_fwd", "output"),
        Allocation("m", fp.row_stat_bytes(wl), "flash1_init", "flash1_fwd", "output")])
    return with_passes(wl, forward, backward)


def release_footprint(wl, p: Flash1Plan) -> Footprint:
    """The release's forward (``--tiles release``): Q, K, V; O and the fp32 log-sum-exp as
    outputs; the fp32 o_tmp accumulator while the keys span more than one K/V block
    (fmha_api.cpp allocates it only then). Its backward's footprint is Algorithm 4's, whose
    saved ℓ and m stand for the release's lse and the D = rowsum(dO ∘ O) it computes (the
    same bytes)."""
    phase = "flash1_fwd"
    allocations = fp.inputs(wl, phase, phase) + [
        Allocation("o", fp.q_bytes(wl), phase, phase, "output"),
        Allocation("lse", fp.row_stat_bytes(wl), phase, phase, "output")]
    if wl.seq_k > p.block_k:
        allocations.append(Allocation("o_tmp", fp.q_bytes(wl) * 4 // wl.elem_bytes, phase,
                                      phase, "workspace"))
    return Footprint((phase,), allocations)
