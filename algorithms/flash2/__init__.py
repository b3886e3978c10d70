"""FlashAttention-2 forward — Dao, "FlashAttention-2: Faster Attention with Better Parallelism
and Work Partitioning" (2023, arXiv 2307.08691), Algorithm 1 (forward) and Section 3.2.

Idea: one CTA per (Q row block, head) streams K/V blocks through SRAM with an online softmax;
the accumulator stays un-normalized and is rescaled once at the end, and the log-sum-exp
is stored for the backward pass.

Notation -> code: B_r == block_q, B_c == block_k, T_r == ceil(N_q / B_r),
T_c == ceil(N_k / B_c); Q_i, K_j, V_j are the tiles ``qi``, ``kj``, ``vj``.

HBM traffic per head (bytes, e = storage bytes per element; non-causal):
    reads  = N_q d e (Q, once) + T_r * 2 N_k d e (K and V, once per Q block)
    writes = N_q d e (O) + 4 N_q (fp32 log-sum-exp)
Bound: Θ(N d + N² d / B_r); with B_r ∝ M/d this is Theorem 2's Θ(N² d² / M) of the
FlashAttention paper. Causal: tiles entirely above the diagonal are skipped (about half).
FLOPs: 4 N_q N_k d matmul (2 per product), per visible B_r x B_c tile 4 B_r B_c + 4 B_r +
B_r d other ops (+ B_r B_c for the mask on diagonal tiles) and B_r B_c + B_r exps; per Q
block B_r d + B_r other and B_r exps (the final 1/l and log l).

Tile plan: the largest B_r, then B_c, from {128, 64, 32, 16} such that the shared-memory
tiles Q_i, K_j, V_j ((B_r + 2 B_c) d e bytes) fit in M and the fp32 register tiles (O
accumulator B_r d, scores B_r B_c) fit both in half the register file (so that two CTAs can
be resident per SM to hide latency — a modelling choice, in the spirit of FA-2's tuned
configurations) and in the 255 registers a thread may hold, over the CTA's 128 threads
(the hardware's limit: at d = 128 a 128 x 128 tile would need 256 accumulator registers per
thread). This gives the release's tiles for 16-bit inputs on the A100 and H100 [FA-2
flash_fwd_launch_template.h, run_mha_fwd_hdim64/128]: 128 x 128 at d = 64, 128 x 64 at
d = 128, but not the release's at d = 96, 192 and 256 (``--tiles release`` runs those,
with their warps: ``algorithms.flash2.release``). Decoding (one query row, ``--decode``) runs
this forward as FlashAttention-2 did before split-KV (the Flash-Decoding post's FlashAttention
v2.0.9): one CTA per head and row block, each computing its whole B_r rows (``row_padding``);
the split-KV schedule of later releases, a group's heads packed as rows, is ``gqa --decode``.
Differences from the CUDA implementation:
the simulator runs the tiles of a CTA in sequence; the exp2/FMA fusion of the scale is not
modelled.

Training (``--pass bwd`` / ``fwd+bwd``): the backward pass is ``algorithms.flash2.backward``
(FA-2's preprocessing kernel D = rowsum(dO ∘ O), the main kernel parallel over K/V blocks with
dQ accumulated in fp32 by atomic adds, and the dQ conversion kernel); it reads the saved O
and lse. Its HBM traffic is Θ(N d + N² d / B_c) = Θ(N² d² / M) (Theorem 5 of the
FlashAttention paper) and its matmul FLOPs are 2.5x the forward's (10 against 4 N_q N_k d,
non-causal). Dropout (``--dropout p``): Z is regenerated on chip from the RNG state in both
passes (no HBM traffic; RNG cost in ``algorithms.kernels.dropout``): per tile ⌈B_r B_c/16⌉·100 +
2 B_r B_c other ops in the forward, where P ∘ Z feeds P V while ℓ sums the undropped P.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from algorithms.flash2 import backward as flash2_bwd
from algorithms.flash2 import release
from algorithms.base import AlgorithmInfo, Option, Plan, PlanError
from algorithms.kernels.common import (causal_key_end, cdiv, check_tile_limits, first_q_bytes,
                                       for_each_head, head_view, heads_in_flight,
                                       key_tiles_per_row_block, new_output, new_stats, row_padding)
from algorithms.kernels.dropout import dropout_args
from algorithms.kernels.flash_tile import (STAT_BYTES, attend_tile, count_tiles, finish_rows,
                                   new_row_state, p_in_registers)
from algorithms.kernels import footprints as fp
from algorithms.kernels import step_latency
from algorithms.kernels.footprints import with_passes
from algorithms.kernels.passes import bound_for_passes, run_passes
from hwmodels.compiled import compiled
from hwmodels.memory import SramOverflowError
from hwmodels.primitives import load_rows, store_rows, store_vector

INFO = AlgorithmInfo(
    name="flash2",
    title="FlashAttention-2 (forward and backward)",
    paper="Dao, 2023 (arXiv 2307.08691)",
    exact=True,
    io_bound="Θ(Nd + N²d/B_r) = Θ(N²d²/M)",
    passes=("fwd", "bwd"),
    dropout=True,
    options=(Option("tiles", str, "paper",
                    "the forward's tiles: paper (the default: the largest B_r, then B_c, whose "
                    "Q, K, V fit M and whose accumulators let two CTAs share an SM, 4 warps) "
                    "or release (the release's tiles and warps for the head dim and GPU, "
                    "flash_fwd_launch_template.h: 128 x 128 at d = 64, 128 x 64 at d = 128, "
                    "at d = 256 64 x 64 on the H100 and 128 x 64 on 8 warps on the A100; "
                    "head dims 32, 64, 96, 128, 192, 256, fp16 and bf16)",
                    choices=("paper", "release")),),
)

BLOCK_CANDIDATES = (128, 64, 32, 16)
THREADS_PER_CTA = 128   # 4 warps, as FA-2's forward kernels for d <= 128 (``--tiles paper``)
# Head dims the tensor-core kernels run: mma.sync (m16n8k8/k16) and wgmma take operands in
# 8-column groups, so flash-attn pads a head dim that is not a multiple of 8 up to one
# before its kernels run (and its tests use d = 59 on purpose); its kernels are
# instantiated for d <= 256 and it refuses larger head dims.
HEAD_DIM_MULTIPLE = 8
MAX_HEAD_DIM = 256


def check_head_dim(d: int) -> None:
    """PlanError for a head dim FlashAttention's kernels do not run (above 256)."""
    if d > MAX_HEAD_DIM:
        raise PlanError(f"--head-dim {d}: FlashAttention's tensor-core kernels (flash2, "
                        f"flash3, ring and the block-sparse family) support head dims up to "
                        f"{MAX_HEAD_DIM}, as flash-attn; use standard or flash1 for larger")


def head_dim_note(d: int) -> str | None:
    """One line on a head dim that is not a multiple of 8 (None when it is)."""
    if d % HEAD_DIM_MULTIPLE == 0:
        return None
    padded = -(-d // HEAD_DIM_MULTIPLE) * HEAD_DIM_MULTIPLE
    return (f"head dim {d} is not a multiple of {HEAD_DIM_MULTIPLE}: flash-attn pads it to "
            f"{padded} before its tensor-core kernels run; these counts are for d = {d} "
            f"(the padded kernel moves {padded}/{d} as many Q, K, V and O bytes)")


@dataclass(frozen=True)
class Flash2Plan(Plan):
    block_q: int            # B_r
    block_k: int            # B_c
    smem_bytes: int         # Q_i, K_j, V_j tiles
    register_bytes: int     # fp32 O accumulator and score tile
    bwd: flash2_bwd.Flash2BwdPlan | None = None   # the backward's own tiles (training)
    warps: int = THREADS_PER_CTA // 32   # the forward CTA's warps, of B_r / warps rows each

    @property
    def threads(self) -> int:
        return 32 * self.warps


def smem_buffers(block_q: int, block_k: int, d: int, e: int) -> dict[str, int]:
    return {"Q_i": block_q * d * e, "K_j": block_k * d * e, "V_j": block_k * d * e}


def register_bytes(block_q: int, block_k: int, d: int) -> int:
    return 4 * block_q * d + 4 * block_q * block_k


def plan(wl, gpu, sram_bytes: int, tiles: str = "paper") -> Flash2Plan:
    check_head_dim(wl.head_dim)
    if tiles == "release":
        release.check_workload(wl)
        fwd = plan_release_forward(wl, gpu, sram_bytes)
    else:
        fwd = plan_forward(wl, gpu, sram_bytes)
    if not wl.has_backward:
        return fwd
    return dataclasses.replace(fwd, bwd=flash2_bwd.plan_backward(wl, gpu, sram_bytes))


def plan_forward(wl, gpu, sram_bytes: int) -> Flash2Plan:
    d, e = wl.head_dim, wl.elem_bytes
    reg_budget = forward_register_budget(gpu)
    for bq in BLOCK_CANDIDATES:
        for bk in BLOCK_CANDIDATES:
            smem = sum(smem_buffers(bq, bk, d, e).values())
            regs = register_bytes(bq, bk, d)
            if smem <= sram_bytes and regs <= reg_budget:
                return Flash2Plan(block_q=bq, block_k=bk, smem_bytes=smem, register_bytes=regs)
    smallest = BLOCK_CANDIDATES[-1]
    need = sum(smem_buffers(smallest, smallest, d, e).values())
    if need > sram_bytes:
        raise SramOverflowError(
            f"flash2 with head_dim {d} needs at least {need:,} bytes of SRAM per CTA "
            f"(16x{d} tiles of Q, K and V at {e} B) but the budget is {sram_bytes:,} bytes; "
            f"use a smaller --head-dim or a larger --sram-kb")
    raise PlanError(f"flash2 with head_dim {d}: even 16x16 tiles need "
                    f"{register_bytes(smallest, smallest, d):,} bytes of fp32 registers, "
                    f"more than the {reg_budget:,} bytes a CTA may hold (half of the "
                    f"{gpu.register_bytes_per_sm:,}-byte register file, at most "
                    f"{gpu.max_registers_per_thread} registers for each of its "
                    f"{THREADS_PER_CTA} threads)")


def check_fixed_tiles(what: str, bq: int, bk: int, d: int, e: int, sram_bytes: int,
                      register_limit: int, limit_text: str, fix: str) -> tuple[int, int]:
    """(shared-memory bytes, fp32 register bytes) of given B_r x B_c tiles, or the error that
    names the numbers: ``what`` the kernel, ``limit_text`` what bounds its registers, ``fix``
    the flags that change the tiles."""
    smem = sum(smem_buffers(bq, bk, d, e).values())
    regs = register_bytes(bq, bk, d)
    check_tile_limits(what, bq, bk, d, smem, regs, f"Q, K and V tiles at {e} B", sram_bytes,
                      register_limit, limit_text, fix)
    return smem, regs


def plan_release_forward(wl, gpu, sram_bytes: int) -> Flash2Plan:
    """The release's forward tiles and warps (``algorithms.flash2.release``), checked against
    the SRAM budget and the registers its threads may hold."""
    bq, bk, warps = release.forward_tiles(wl.head_dim, gpu, wl.causal, wl.dropout > 0)
    threads = 32 * warps
    smem, regs = check_fixed_tiles(
        "flash2 --tiles release (the release's tiles)", bq, bk, wl.head_dim, wl.elem_bytes,
        sram_bytes, gpu.register_bytes_for_threads(threads),
        f"its {threads} threads may hold on {gpu.full_name}", "--tiles paper")
    return Flash2Plan(block_q=bq, block_k=bk, smem_bytes=smem, register_bytes=regs,
                      warps=warps)


def forward_register_budget(gpu) -> int:
    """Bytes of fp32 accumulators one forward CTA may keep: half the register file (two
    CTAs resident per SM), and no more than its threads may hold."""
    return min(gpu.register_bytes_per_sm // 2, gpu.register_bytes_for_threads(THREADS_PER_CTA))


def cta_work(wl, p: Flash2Plan) -> np.ndarray:
    """K/V tiles each Q-block CTA of one head processes (unequal when causal)."""
    return key_tiles_per_row_block(0, wl.seq_q, 0, wl.seq_k, wl.seq_q, wl.seq_k, p.block_q,
                                   p.block_k, wl.causal)


def l2_footprint(wl, p: Flash2Plan, rec, tr: int, smem: int) -> tuple[int, int]:
    """(DRAM bytes when L2 works as modelled, the L2 working set that requires).

    Q is read and O, lse written once. The CTAs of one head stream K/V in the same order:
    if the K/V of the heads in flight fit in L2, each K/V head comes from DRAM once;
    otherwise the CTAs resident together still share each tile as they stream it in near
    lockstep, so K/V comes from DRAM once per *wave* of a head's CTAs, and the working
    set is only the tiles in flight."""
    d, e, b = wl.head_dim, wl.elem_bytes, wl.batch
    kv_bytes = 2 * wl.seq_k * d * e
    qo_bytes = b * wl.heads * (2 * wl.seq_q * d * e + STAT_BYTES * wl.seq_q)
    in_flight = heads_in_flight(rec, tr, b * wl.heads, smem, p.register_bytes, p.threads)
    if in_flight * kv_bytes <= rec.gpu.l2_bytes // 2:
        return qo_bytes + b * wl.kv_heads * kv_bytes, in_flight * kv_bytes
    resident = rec.resident_ctas(tr * b * wl.heads, smem, p.register_bytes, p.threads)
    waves_per_head = cdiv(tr, resident)
    tiles_in_flight = resident * 2 * p.block_k * d * e
    return qo_bytes + b * wl.heads * waves_per_head * kv_bytes, tiles_in_flight


def run(wl, p: Flash2Plan, inputs, rec, compute: bool) -> dict:
    if head_dim_note(wl.head_dim):
        rec.info["note"] = head_dim_note(wl.head_dim)
    return run_passes(wl, p, inputs, rec, compute, forward, flash2_bwd.backward)


def forward(wl, p: Flash2Plan, inputs, rec, compute: bool) -> dict:
    tr = cdiv(wl.seq_q, p.block_q)
    buffers = smem_buffers(p.block_q, p.block_k, wl.head_dim, wl.elem_bytes)
    unique, working_set = l2_footprint(wl, p, rec, tr, sum(buffers.values()))
    work = cta_work(wl, p)
    c = rec.kernel("flash2_fwd", ctas=tr * wl.batch * wl.heads, buffers=buffers,
                   threads_per_cta=p.threads, register_bytes_per_cta=p.register_bytes,
                   tc_path="mma_sync", overlap="serial", cta_work=work,
                   **step_latency.chain(step_latency.forward_step(p.block_k), work,
                                        wl.batch * wl.heads),
                   # the warps, of B_r / warps rows each, read all of K_j, V_j (pricing only)
                   smem_readers=p.warps, mma_rows_per_cta=p.block_q,
                   # a CTA computes its whole B_r rows, those past N_q included
                   row_padding=row_padding(wl.seq_q, p.block_q),
                   prologue_bytes_per_cta=first_q_bytes(buffers["Q_i"], p.block_q, wl.seq_q)
                   + buffers["K_j"],
                   epilogue_elements_per_cta=p.block_q * wl.head_dim,      # O_i
                   **p_in_registers(wl.head_dim, wl.elem_bytes),
                   matmul_dtype=wl.dtype, unique_hbm_bytes=unique,
                   l2_working_set_bytes=working_set)
    o, lse = new_output(wl, compute), new_stats(wl, compute)
    seed, threshold, inv_keep = dropout_args(wl, inputs, compute)
    def head(c, b, h, q, k, v):
        forward_head(c, q, k, v, head_view(o, b, h, compute), head_view(lse, b, h, compute),
                     wl.seq_q, wl.seq_k, wl.head_dim, p.block_q, p.block_k, wl.scale,
                     wl.causal, wl.elem_bytes, compute, wl.dropout > 0, seed,
                     b * wl.heads + h, threshold, inv_keep)
    for_each_head(wl, inputs, compute, c, head)
    return {"o": o, "lse": lse} if compute else {}


@compiled(nogil=True)
def forward_head(c, q, k, v, o, lse, seq_q, seq_k, d, block_q, block_k, scale, causal, e,
                 compute, dropout=False, seed=0, bh=0, threshold=0, inv_keep=1.0):
    """One head: every Q row block i is one CTA (run here one after another)."""
    no_mask = np.zeros((0, 0), dtype=np.bool_)
    for r0 in range(0, seq_q, block_q):
        r1 = min(r0 + block_q, seq_q)
        rows = r1 - r0
        qi = load_rows(c, q, r0, r1, d, e)                       # Q_i -> SRAM, stays there
        m, l, acc = new_row_state(rows, d, compute)              # on chip: m, l, acc
        key_end = causal_key_end(r1, seq_q, seq_k) if causal else seq_k
        if not compute:                                          # same counts, no arrays
            count_tiles(c, r0, rows, 0, key_end, block_k, seq_k, d, e, causal, seq_q, seq_k,
                        dropout)
        for c0 in range(0, key_end if compute else 0, block_k):  # K_j, V_j stream through
            attend_tile(c, qi, k, v, acc, m, l, r0, rows, c0, min(c0 + block_k, seq_k), d,
                        scale, causal, seq_q, seq_k, e, compute, no_mask, False, dropout, seed,
                        bh, threshold, inv_keep)
        oi, lse_i = finish_rows(c, acc, m, l, rows, d, compute)  # O_i = acc / l, lse_i
        store_rows(c, o, r0, oi, rows, d, e, compute)            # O_i -> HBM
        store_vector(c, lse, r0, lse_i, rows, STAT_BYTES, compute)  # lse_i -> HBM (fp32)


def io_bound(wl, p: Flash2Plan, sram_bytes: int) -> float:
    """Θ(N d + N² d / B_r) in bytes, all heads (plus the backward's, when simulated)."""
    per_head = (wl.seq_q * wl.head_dim + wl.seq_q * wl.seq_k * wl.head_dim / p.block_q)
    fwd = float(per_head * wl.elem_bytes * wl.batch * wl.heads)
    return bound_for_passes(wl, fwd, flash2_bwd.io_bound_backward(wl, p.bwd) if p.bwd else 0.0)



def footprint(wl, p: Flash2Plan):
    """HBM allocations: Q, K, V, O and the fp32 lse — Θ(N d), nothing N_q x N_k. Training
    keeps O and lse for the backward (``flash2.backward.footprint_backward``)."""
    return with_passes(wl, fp.single_kernel(wl, "flash2_fwd"),
                       flash2_bwd.footprint_backward(wl) if wl.has_backward else None)
