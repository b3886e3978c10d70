"""FlashAttention-3 forward — Shah et al., "FlashAttention-3: Fast and Accurate Attention with
Asynchrony and Low-precision" (2024, arXiv 2407.08608), Algorithm 1 and Sections 3.1–3.2.

Idea: the same tiled online-softmax forward as FlashAttention-2, rebuilt for Hopper: a
producer warp loads K/V tiles with TMA into an s-stage circular shared-memory buffer, two
consumer warpgroups (64 query rows each) run ``wgmma`` and ping-pong so that one's softmax
hides behind the other's GEMMs.

Notation -> code: B_r == block_q (2 consumer warpgroups x 64 rows = 128), B_c == block_k,
s == stages (K/V pipeline depth).

HBM traffic and FLOPs are exactly FlashAttention-2's for the same tiles (same math, same
IO): reads N_q d e + T_r · 2 N_k d e, writes N_q d e + 4 N_q per head; Θ(Nd + N²d/B_r),
i.e. Θ(N² d² / M) of FlashAttention's Theorem 2. What changes is the time: the GEMMs run
on ``wgmma`` (full tensor-core peak, where FA-2's ``mma.sync`` reaches about 2/3 on H100)
and softmax overlaps the GEMMs (``overlap="overlap"`` in the timing model: compute =
max(matmul, exp + other) instead of their sum). fp8 (``--dtype fp8``) halves the bytes
and uses the fp8 tensor peak; block quantization and incoherent processing (Hadamard)
are not modelled (their cost is O(N d log d) per tensor, small next to the O(N² d) GEMMs).
Needs Hopper (``wgmma``, TMA): planning on a GPU without them is an error.
Shared memory: Q_i (B_r d e) + s stages of K_j and V_j (2 s B_c d e); registers: the
O accumulators (B_r d fp32) and two score tiles in flight per warpgroup for the
intra-warpgroup pipelining (2 B_r B_c fp32, Section 3.2).
"""
from __future__ import annotations

from dataclasses import dataclass

from algorithms import flash2
from algorithms.base import AlgorithmInfo, Option, Plan, PlanError
from algorithms.kernels.common import cdiv, for_each_head, head_view, new_output, new_stats
from hwmodels.memory import SramOverflowError

INFO = AlgorithmInfo(
    name="flash3",
    title="FlashAttention-3 (forward, Hopper)",
    paper="Shah et al., 2024 (arXiv 2407.08608)",
    exact=True,
    io_bound="Θ(Nd + N²d/B_r) = Θ(N²d²/M)",
    options=(Option("stages", int, 2, "K/V pipeline stages in shared memory",
                    validate=lambda s: None if s >= 1 else "must be at least 1"),),
)

BLOCK_Q = 128                 # 2 consumer warpgroups x 64 rows (Section 3.1)
BLOCK_K_CANDIDATES = (176, 128, 112, 96, 64, 32, 16)
THREADS_PER_CTA = 384         # 1 producer + 2 consumer warpgroups


@dataclass(frozen=True)
class Flash3Plan(Plan):
    block_q: int
    block_k: int
    stages: int
    smem_bytes: int
    register_bytes: int


def smem_buffers(block_q, block_k, stages, d, e) -> dict[str, int]:
    return {"Q_i": block_q * d * e, "K_j stages": stages * block_k * d * e,
            "V_j stages": stages * block_k * d * e}


def register_bytes(block_q: int, block_k: int, d: int) -> int:
    return 4 * block_q * d + 2 * 4 * block_q * block_k


def plan(wl, gpu, sram_bytes: int, stages: int = 2) -> Flash3Plan:
    if not gpu.has_wgmma:
        raise PlanError(f"flash3 needs Hopper's wgmma and TMA; {gpu.full_name} has neither "
                        f"(use flash2, or --hw h100)")
    flash2.check_head_dim(wl.head_dim)
    d, e = wl.head_dim, wl.elem_bytes
    for bk in BLOCK_K_CANDIDATES:
        smem = sum(smem_buffers(BLOCK_Q, bk, stages, d, e).values())
        regs = register_bytes(BLOCK_Q, bk, d)
        if smem <= sram_bytes and regs <= gpu.register_bytes_per_sm:
            return Flash3Plan(BLOCK_Q, bk, stages, smem, regs)
    need = sum(smem_buffers(BLOCK_Q, 16, stages, d, e).values())
    raise SramOverflowError(
        f"flash3 with head_dim {d} and {stages} stages needs at least {need:,} bytes of SRAM "
        f"per CTA (Q_i 128x{d} + {stages} stages of 16x{d} K and V) but the budget is "
        f"{sram_bytes:,} bytes; use fewer --stages, a smaller --head-dim or a larger --sram-kb")


def run(wl, p: Flash3Plan, inputs, rec, compute: bool) -> dict:
    if flash2.head_dim_note(wl.head_dim):
        rec.info["note"] = flash2.head_dim_note(wl.head_dim)
    tr = cdiv(wl.seq_q, p.block_q)
    buffers = smem_buffers(p.block_q, p.block_k, p.stages, wl.head_dim, wl.elem_bytes)
    as_fa2 = flash2.Flash2Plan(p.block_q, p.block_k, p.smem_bytes, p.register_bytes)
    unique, working_set = flash2.l2_footprint(wl, as_fa2, rec, tr, p.smem_bytes)
    c = rec.kernel("flash3_fwd", ctas=tr * wl.batch * wl.heads, buffers=buffers,
                   threads_per_cta=THREADS_PER_CTA, register_bytes_per_cta=p.register_bytes,
                   tc_path="wgmma", overlap="overlap", cta_work=flash2.cta_work(wl, as_fa2),
                   matmul_dtype=wl.dtype, unique_hbm_bytes=unique,
                   l2_working_set_bytes=working_set)
    o, lse = new_output(wl, compute), new_stats(wl, compute)
    def head(c, b, h, q, k, v):
        # The tile loop, its arithmetic and its traffic are FlashAttention-2's.
        flash2.forward_head(c, q, k, v, head_view(o, b, h, compute), head_view(lse, b, h, compute),
                            wl.seq_q, wl.seq_k, wl.head_dim, p.block_q, p.block_k, wl.scale,
                            wl.causal, wl.elem_bytes, compute)
    for_each_head(wl, inputs, compute, c, head)
    return {"o": o, "lse": lse} if compute else {}


def io_bound(wl, p: Flash3Plan, sram_bytes: int) -> float:
    """Θ(N d + N² d / B_r) in bytes, all heads."""
    per_head = wl.seq_q * wl.head_dim + wl.seq_q * wl.seq_k * wl.head_dim / p.block_q
    return float(per_head * wl.elem_bytes * wl.batch * wl.heads)
