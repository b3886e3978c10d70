"""Grouped-query attention (MHA / GQA / MQA) for prefill and decode — Ainslie et al., "GQA:
Training Generalized Multi-Query Transformer Models from Multi-Head Checkpoints" (2023, arXiv
2305.13245), Shazeer, "Fast Transformer Decoding: One Write-Head is All You Need" (2019, arXiv
1911.02150); decode schedule: flash-decoding (Dao, Haziza, Massa, Sizov, 2023, "Flash-Decoding
for long-context inference"; flash-attn's split-KV forward).

Idea: H query heads share G key/value heads (G = H: MHA, G = 1: MQA); query head h reads KV
head h // (H/G), so the KV cache shrinks H/G-fold — and a kernel that lets the g = H/G heads
of a group share each K/V tile it loads reads the cache H/G times less.

Bound: Θ(B H N_q d + B (H/g) ⌈N_q/B_r⌉ N_k d) HBM bytes — prefill Θ(N² d² / M) per head as
FlashAttention; decode Θ(B G N_k d): the cache read once per KV head — and Θ(B H N_q N_k d)
FLOPs (about half with a causal mask), as multi-head attention: grouping shares K/V, not work.

Notation -> code: n_h == heads (H), n_g == kv_heads (G), g == H/G == plan.group when packed,
B_r == block_q, B_c == block_k, S == splits, N_q == seq_q, N_k == seq_k, d == head_dim.

Schedules (``plan.schedule``; kernels in ``algorithms.kernels.splitkv``):
* prefill, ``per_head`` (default; what flash-attn's FA-2 forward does): one CTA per (Q block,
  query head) loads the K/V of its group — FlashAttention-2 exactly, each K/V tile read by
  all g heads of its group: reads = B H (N_q d + T_r 2 N_k d) e.
* prefill, ``packed`` (``--pack-group``): one CTA per (Q block, KV head) holds the g heads'
  query rows (g·B_r rows) and loads each K/V tile once for them:
  reads = B (H N_q d + G T_r 2 N_k d) e — the saving GQA's traffic argument relies on.
* decode (``Workload.decode``): packed, and the keys split into S chunks so that the grid
  (B x G x T_r x S CTAs) fills the GPU's SMs (``splitkv.choose_splits``); each CTA writes a
  partial O and lse in fp32, a combine kernel merges them (S = 1: no combine, O written
  directly). reads = B (H N_q d S + 2 G N_k d) e (+ the combine's 4 S B H N_q (d + 1)).
Writes: B H N_q (d o_b + 4) (o_b = e unsplit, 4 split) (+ the combine's B H N_q (d e + 4)).
FLOPs: 4 B H N_q N_k d matmul (causal: visible tiles only) + FlashAttention-2's softmax counts.

rec.info gets ``kv_cache`` (per token 2 G d L elements) and, for decode, ``decode`` with the
predicted time per generated token (``algorithms.kernels.decode_info``).
Differences from flash-attn: splits are chosen by the same rule (no split when the grid
almost fills the SMs, else the wave efficiency) but counted in SMs where flash-attn's
``num_splits_heuristic`` counts two CTAs an SM, and without its table of eligible counts;
the packed prefill schedule is FA-3/FlashInfer-style head packing, not FA-2's; the warps
are laid out as FA-2's (``common.mma_warps``), where the CUDA port (``gqa_decode.cu``) runs
one warp per 16 packed rows. ``--tiles release`` decodes as flash-attn's split-KV kernel
runs one new token (flash_fwd_launch_template.h, flash_api.cpp): the group's g rows in a
64-row tile computed whole (``row_padding``) on 4 warps that each read the K/V tiles, of
256, 128 or 64 keys for d <= 64, <= 128 or more.
"""
from __future__ import annotations

from dataclasses import dataclass

from algorithms import flash2
from algorithms.base import AlgorithmInfo, Option, Plan, PlanError
from algorithms.kernels import footprints as fp
from algorithms.kernels.common import cdiv
from algorithms.kernels.decode_info import decode_info, kv_cache_info
from algorithms.kernels.splitkv import (Q_BLOCKS, Q_BLOCKS_PACKED, PackedTiles, choose_splits,
                                packed_attention, plan_tiles, smem_buffers, split_ranges)
from hwmodels.footprint import Footprint
from hwmodels.memory import SramOverflowError

INFO = AlgorithmInfo(
    name="gqa",
    title="Grouped-query attention (MHA/GQA/MQA), prefill and split-KV decode",
    paper="Ainslie et al., 2023 (arXiv 2305.13245); flash-decoding (Dao et al., 2023)",
    exact=True,
    io_bound="Θ(HN_qd + (H/g)⌈N_q/B_r⌉N_kd); decode Θ(GNd)",
    options=(
        Option("pack_group", bool, False,
               "prefill: one CTA per (Q block, KV head) packs the group's query heads so "
               "K/V are read once per group (decode always packs)"),
        Option("splits", int, 0, "decode: key chunks per (sequence, KV head); 0 = enough "
               "to fill the SMs", validate=lambda s: None if s >= 0 else "must be >= 0"),
        Option("tiles", str, "auto",
               "decode: auto (the planner's: a CTA holds the group's rows padded to 16, "
               "its warps laid out by them, as the CUDA port runs) or release (flash-attn's "
               "split-KV kernel, flash_fwd_launch_template.h: the group's rows in a 64-row "
               "tile on 4 warps, K/V tiles of 256, 128 or 64 keys for d <= 64, 128 or more)",
               validate=lambda t: None if t in DECODE_TILES else
               f"must be one of {', '.join(DECODE_TILES)}"),
    ),
)

@dataclass(frozen=True)
class GqaPlan(Plan):
    mode: str               # "prefill" or "decode"
    schedule: str           # "per_head" or "packed"
    group: int              # query heads per CTA (1 per_head, H/G packed)
    block_q: int            # B_r, query rows per head per CTA
    block_k: int            # B_c
    splits: int             # S, key chunks (1 in prefill)
    blocks_per_split: int   # key blocks per chunk
    smem_bytes: int
    register_bytes: int
    tile_rows: int = 0      # the CTA's tile rows (0: the packed rows, padded to 16)
    warps: int = 0          # the CTA's warps (0: laid out by its rows)


def plan(wl, gpu, sram_bytes: int, pack_group: bool = False, splits: int = 0,
         tiles: str = "auto") -> GqaPlan:
    decode = bool(getattr(wl, "decode", False))
    if splits and not decode:
        raise PlanError("gqa: --splits applies to decode (--decode); prefill uses one chunk")
    packed = decode or pack_group
    g = wl.heads // wl.kv_heads if packed else 1
    # per head, FlashAttention-2's tiles exactly (its 4 warps hold them); packed, half the
    # register file, over as many warps as the tiles need (common.mma_warps)
    budget = gpu.register_bytes_per_sm // 2 if packed else flash2.forward_register_budget(gpu)
    if tiles == "release":
        tiles = release_decode_tiles(wl, g, sram_bytes, budget)
    else:
        tiles = plan_tiles((g,), wl.seq_q, wl.head_dim, wl.head_dim, wl.elem_bytes,
                           sram_bytes, budget, q_blocks=Q_BLOCKS_PACKED if packed else Q_BLOCKS,
                           clamp_to_seq=decode)
    if tiles is None:
        raise SramOverflowError(
            f"gqa: no tiling of {g} packed head(s) with head_dim {wl.head_dim} fits "
            f"{sram_bytes:,} bytes of SRAM and {budget:,} bytes of fp32 registers a CTA; "
            f"use a smaller --head-dim, a larger --sram-kb"
            + (" or drop --pack-group" if pack_group and not decode else ""))
    key_blocks = cdiv(wl.seq_k, tiles.block_k)
    n_split = 1
    if decode:
        if splits > key_blocks:
            raise PlanError(f"gqa: --splits {splits} exceeds the {key_blocks} key blocks of "
                            f"{tiles.block_k} tokens in the cache; use at most {key_blocks}")
        base = wl.batch * wl.kv_heads * cdiv(wl.seq_q, tiles.block_q)
        n_split = splits or choose_splits(base, key_blocks, gpu.sm_count)
    per, ranges = split_ranges(wl.seq_k, tiles.block_k, n_split)
    return GqaPlan(mode="decode" if decode else "prefill",
                   schedule="packed" if packed else "per_head", group=g,
                   block_q=tiles.block_q, block_k=tiles.block_k, splits=len(ranges),
                   blocks_per_split=per, smem_bytes=tiles.smem_bytes,
                   register_bytes=tiles.register_bytes, tile_rows=tiles.tile_rows,
                   warps=tiles.warps)


DECODE_TILES = ("auto", "release")
RELEASE_TILE_ROWS, RELEASE_WARPS = 64, 4     # flash-attn's split-KV kernel: kBlockM, warps


def release_decode_tiles(wl, g: int, sram_bytes: int, register_budget: int) -> PackedTiles:
    """flash-attn's split-KV kernel as its decode runs it (run_mha_fwd_splitkv_dispatch:
    kBlockM = 64 for every head dim, kBlockN = 256, 128 or 64 for d <= 64, <= 128 or more, 4
    warps; flash_api.cpp swaps one query row's group of g heads into the 64 rows,
    seqlenq_ngroups_swapped): one new token, at most 64 heads a group."""
    if not getattr(wl, "decode", False) or wl.seq_q != 1:
        raise PlanError("gqa: --tiles release is flash-attn's split-KV decode of one new "
                        "token (--decode, --new-tokens 1); drop --tiles for other workloads")
    if g > RELEASE_TILE_ROWS:
        raise PlanError(f"gqa: --tiles release holds a group of at most {RELEASE_TILE_ROWS} "
                        f"query heads in its tile, this one has {g}; drop --tiles")
    d, e = wl.head_dim, wl.elem_bytes
    block_k = 256 if d <= 64 else 128 if d <= 128 else 64
    smem = sum(smem_buffers(g, 1, block_k, d, d, e, False, RELEASE_TILE_ROWS).values())
    regs = 4 * RELEASE_TILE_ROWS * (d + block_k)       # fp32 O and scores of the 64 rows
    if smem > sram_bytes or regs > register_budget:
        raise SramOverflowError(
            f"gqa: flash-attn's split-KV tiles ({RELEASE_TILE_ROWS} x {block_k}, d {d}) need "
            f"{smem:,} bytes of SRAM and {regs:,} of fp32 registers a CTA; this GPU and "
            f"--sram-kb give {sram_bytes:,} and {register_budget:,}; drop --tiles release")
    return PackedTiles(g, 1, block_k, smem, regs, RELEASE_TILE_ROWS, RELEASE_WARPS)


def run(wl, p: GqaPlan, inputs, rec, compute: bool) -> dict:
    name = "gqa_decode" if p.mode == "decode" else "gqa_fwd"
    tiles = _tiles(p)
    o, lse = packed_attention(
        rec, name, q=inputs.q if compute else None, k=inputs.k if compute else None,
        v=inputs.v if compute else None, batch=wl.batch, q_heads=wl.heads,
        kv_heads=wl.kv_heads, seq_q=wl.seq_q, seq_k=wl.seq_k, dk=wl.head_dim, dv=wl.head_dim,
        tiles=tiles, splits=p.splits, scale=wl.scale, causal=wl.causal, e=wl.elem_bytes,
        dtype=wl.dtype, v_in_k=False, tc_path="mma_sync", compute=compute)
    rec.info["kv_cache"] = kv_cache_info(wl, rec.gpu, 2 * wl.kv_heads * wl.head_dim)
    if p.mode == "decode":
        rec.info["decode"] = decode_info(wl, rec.gpu, rec.kernels, p.group * wl.seq_q)
    return {"o": o, "lse": lse} if compute else {}


def _tiles(p: GqaPlan) -> PackedTiles:
    return PackedTiles(p.group, p.block_q, p.block_k, p.smem_bytes, p.register_bytes,
                       p.tile_rows, p.warps)


def io_bound(wl, p: GqaPlan, sram_bytes: int) -> float:
    """Θ(B H N_q d + B (H/g) ⌈N_q/B_r⌉ N_k d) in bytes."""
    elems = (wl.batch * wl.heads * wl.seq_q * wl.head_dim
             + wl.batch * (wl.heads // p.group) * cdiv(wl.seq_q, p.block_q) * wl.seq_k
             * wl.head_dim)
    return float(elems * wl.elem_bytes)


def footprint(wl, p: GqaPlan):
    """Q, K and V (in a decode step: the KV cache, 2 B G N_k d e, kept after the step), O and
    the fp32 lse; with S splits the fp32 partials (S B H N_q (d + 1) 4 bytes) until the
    combine kernel: Θ(G N_k d) at decode."""
    kernel = "gqa_decode" if p.mode == "decode" else "gqa_fwd"
    phases, allocs = fp.packed_attention(wl, kernel, q_heads=wl.heads, kv_heads=wl.kv_heads,
                                         dk=wl.head_dim, dv=wl.head_dim, splits=p.splits)
    return Footprint(phases, allocs)
