"""Native Sparse Attention, forward — Yuan et al. (DeepSeek), "Native Sparse Attention:
Hardware-Aligned and Natively Trainable Sparse Attention" (2025, arXiv 2502.11089),
Section 3.3 (Eqs. 5–12) and Section 3.4 (kernel design, Figure 3).

IO bound: Θ(G N² d / (d_s B_r) + G N n l′ d + H N (w / B_r + 1) d) bytes (details below).

Idea: each query attends three small key sets instead of all N keys — ~N/d_s compressed
block summaries, the raw tokens of the n blocks those summaries rank highest, and a window
of the last w tokens — and a sigmoid gate mixes the three outputs: o = Σ_c g_c · Attn_c.

Notation -> code: l == compress_block, d_s == compress_stride (the paper's d; ``d`` here is
head_dim), l' == select_block, n == selected, w == window, H == heads, G == kv_heads,
g == H/G == plan.group, N_c == plan.compressed_tokens = ⌊(N_k − l)/d_s⌋ + 1 (0 if N_k < l),
B_r/B_c == cmp_block_q/cmp_block_k, B_t == compress_tile, B_s == select_tile;
kpos(t) = t + N_k − N_q (bottom-right causal alignment, ``algorithms.kernels.common``),
j_t = ⌊kpos/l'⌋ (the current selection block), n_t = min(n, j_t + 1).

Branches and kernels (``algorithms.kernels.nsa_kernels``), e = storage bytes per element:
1. ``nsa_compress`` (per KV head, one CTA per B_t compressed tokens): K̃_i = φ_k(K[i d_s :
   i d_s + l]) and Ṽ_i likewise. φ here is a FIXED LINEAR MAP with intra-block position
   encoding: φ(X) = wᵀ(X + E), w ∈ R^l = softmax of seeded N(0,1) logits (a learned-looking
   weighted mean), E ∈ R^{l×d} seeded N(0, 0.1²) — the paper's φ is a learnable MLP. For a
   linear φ the position term is the bias wᵀE, computed once on the host (not counted).
   reads 2 Σ_CTA ((m − 1) d_s + l) d e + (2 l e + 2 d e) per CTA (m = the CTA's compressed
   tokens, B_t or the remainder), writes 2 N_c d e; matmul 4 N_c l d, other 2 N_c d (no
   ALU ops), 2 N_c d conversions below fp32 (K̃, Ṽ stored).
2. ``nsa_cmp`` (per KV head, one CTA per B_r positions holding all g heads' rows): pass 1
   FlashAttention-2 over the compressed tokens complete before each query (Eq. 7–8) ->
   O_cmp, lse; the gates g = sigmoid(q·W_c), W_c ∈ R^{d} per head and branch drawn
   N(0, 1/d) from ``seed`` (the paper's gate is an MLP on the input), stored fp32; pass 2
   recomputes S and p_cmp = exp(S − lse), sums it over the g heads (Eq. 10) and credits
   compressed token i to each selection block once per stride segment they share (Eq. 9
   with 0-based indices: p_slc[j] = Σ_i p_cmp[i]·|{s ∈ [i, i + l/d_s) : ⌊s d_s/l'⌋ = j}|);
   then the top-n blocks of 0..j_t with block 0, j_t − 1 and j_t forced in (Eq. 11), ties
   to the lower index, written ascending as int32 (n per position, −1 padded).
   Per KV head: reads g N_q d e (Q) + T_r 3 g d e (gate weights) + Σ_{Q blocks} 3 c_i d e,
   c_i = min(N_c, ⌈v_i/B_c⌉ B_c) compressed tokens tiled up to the block's last row's
   visible count v_i (K̃ and Ṽ in pass 1, K̃ in pass 2) ≈ 3 N_q N_c d e/(2 B_r); writes
   g N_q (d e + 12) (O_cmp, fp32 gates) + 4 n N_q (indices).
3. ``nsa_win_fwd``: sliding-window FlashAttention-2 over the last w keys, exactly
   ``algorithms.local``'s causal band on the block-sparse executor (per query head; it
   also writes its fp32 lse, which NSA does not need, and reads the band's CSR layout).
4. ``nsa_slc`` (per KV head, one CTA per query position holding its g heads — the paper's
   group-centric loading): n_t selected blocks of raw K/V, streamed in B_s sub-blocks
   (B_s = l' when it fits), online softmax, then o = g_cmp O_cmp + g_slc O_slc + g_win O_win.
   Per position: reads 4 n + g d e + 2 T_t d e + 12 g + 2 g d e, writes g d e, with
   T_t = (n_t − 1) l' + (tokens of the current block read, sub-blocks up to kpos, capped
   at N_k); matmul 4 g T_t d.

FLOPs (causal; tile round-off aside): matmul 4 N_c l d per KV head (φ) + per query head
6 N_q d (gates) + 3 N_q N_c d (pass 1: S and P Ṽ, pass 2: S, over ~N_c/2 visible tokens)
+ 4 N_q T d (selected, T ≈ n l' tokens) + 4 N_q w d (window); exps ≈ N_q N_c (passes 1
and 2, each over ~N_c/2 tokens) + N_q (n l' + w); top-n ≈ n N_q N_k/(2 l') compares per KV
head. Of the other ops, the ALU pipe's are the softmax tiles' row maxima (R B_c + R per tile
of R rows) and masks (R B_c per masked tile, in both passes of kernel 2) and the top-n's
3 + (j_t + 1) n per position; below fp32, P is converted before every P V product (R B_c per
tile) and O_cmp, O before their stores (g d per position each).

Closed-form leading terms (bytes; B batch), causal:
    HBM ≈ B G [3 N_q N_k d e / (2 d_s B_r) + 2 N_q n l' d e] + B H [2 N_q (w + B_r^w) d e / B_r^w
          + 4 N_q d e]
Bound: Θ(B G N² d/(d_s B_r) + B G N n l' d + B H N (w/B_r^w + 1) d): the compressed branch
is the only quadratic term (with a 1/d_s factor); for fixed n, l', w the selected and window
branches are linear in N — the paper's claim. io_bound() evaluates these terms.

Count-only mode: top-n is data-dependent, but the schedule is not. Kernel 2 always
scans every visible compressed tile and charges each position (j_t + 1)·n + 3 ops for the
top-n and n indices; kernel 4 visits n_t = min(n, j_t + 1) blocks per position, and the
selected set always contains the current block j_t (forced, last in ascending order) while
every other selected block lies wholly before it and is full (l' tokens, unmasked). So the
counts depend only on positions, n, l' and N — count-only mode visits block 0 as the stand-
in for each earlier block and counts exactly what executed mode counts (tested).

Decoding (``--decode``; ``algorithms.kernels.nsa_decode``): the compressed keys/values are a
cache of their own, extended by ``nsa_decode_compress`` on the steps that complete a block;
the branches read ⌊(N − l)/d_s⌋ + 1 compressed tokens, n selected blocks and the w-token
window once per KV group (the paper's Table 4: (N − l)/d + n l′ + w tokens per step), fused
in one CTA per (sequence, KV group) or split over CTAs with merged partial states
(``--decode-schedule``). rec.info gets ``nsa.decode`` (tokens by branch against dense),
``kv_cache`` (raw and compressed cache) and ``decode`` (per-token time). Bound:
Θ(B G (N/d_s + n l′ + w) d).

Non-causal workloads are rejected: NSA's compression and selection are defined over the
tokens before each query (for decoding and autoregressive training). GQA: kv_heads must
divide heads (the workload enforces it); the selection is shared by each group.

Differences from the paper: φ is linear, not an MLP, and the gates come from q, not from an
MLP on the layer input; branches use separate kernels for the window (FlashAttention-2 as
the paper does) and for compression; the importance scores need a second pass over K̃
because the softmax normalizer is only known after pass 1 (a kernel that stored p_cmp
would write N²/d_s floats); top-n is an insertion into n on-chip slots. The selected kernel's
re-reads are priced with L2 reuse between neighbouring positions: its declared working set
assumes the positions in flight share their non-local selected blocks
(``selected_working_set``), which the counts never depend on.
Backward pass: not simulated.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from algorithms import local
from algorithms.base import AlgorithmInfo, Option, Plan, PlanError
from algorithms.kernels import step_latency
from algorithms.kernels.block_sparse_exec import positive_int, run_layout
from algorithms.kernels import footprints as fp
from algorithms.kernels.common import (cdiv, first_q_bytes, heads_in_flight, kv_group,
                                       l2_arguments, mma_layout, placeholder)
from algorithms.kernels.nsa_kernels import (IDX_BYTES, STAT_BYTES, compress_head, compressed_pack,
                                    selected_pack, visible_compressed)
from algorithms.kernels.decode_info import decode_info, kv_cache_info
from algorithms.kernels.nsa_decode import (DECODE_TILES, compressed_cache, compressed_span,
                                           plan_decode, run_fused_decode, tokens_per_step)
from algorithms.kernels.nsa_decode_split import plan_split, run_split_decode, split_layout
from algorithms.kernels.splitkv import K_BLOCKS, Q_BLOCKS_PACKED
from algorithms.kernels.splitkv import register_bytes as packed_register_bytes
from algorithms.kernels.splitkv import smem_buffers as packed_smem_buffers
from hwmodels.footprint import Allocation, Footprint
from hwmodels.memory import SramOverflowError

# Defaults: NSA paper, Section 4.1 (shared/FACTS.md): l = 32, d = 16, l' = 64, n = 16, w = 512.
INFO = AlgorithmInfo(
    name="nsa",
    title="Native Sparse Attention (compressed + selected + window, gated), forward",
    paper="Yuan et al., 2025 (arXiv 2502.11089)",
    exact=False,
    io_bound="Θ(G N²d/(d_s B_r) + G N n l' d + H N (w/B_r + 1) d); decode Θ(G (N/d_s + n l' + w) d)",
    options=(
        Option("compress_block", int, 32, "l: tokens per compressed block",
               validate=positive_int("tokens")),
        Option("compress_stride", int, 16, "d: stride between compressed blocks (divides l)",
               validate=positive_int("tokens")),
        Option("select_block", int, 64, "l': tokens per selection block (a multiple of d)",
               validate=positive_int("tokens")),
        Option("selected", int, 16, "n: selection blocks per query, initial + 2 local "
               "included", validate=lambda v: None if v >= 3 else
               f"must be at least 3 (the initial and the 2 local blocks are always selected), "
               f"got {v}"),
        Option("window", int, 512, "w: sliding-window keys per query",
               validate=positive_int("keys per query")),
        Option("seed", int, 0, "seed of the compression map and the gate projections"),
        Option("decode_schedule", str, "auto", "decode: fused (one CTA per sequence and KV "
               "group), split (the branches over many CTAs, partial states merged, as "
               "flash-decoding), auto (split when the fused grid leaves SMs idle)",
               choices=("auto", "fused", "split")),
    ),
    count_only="exact: counts depend only on positions and n (the selection's size), "
               "never on which blocks are selected",
)

THREADS_PER_CTA = 128   # the compression kernels (nsa_fwd.cu's COMPRESS_THREADS); the
                        # attention kernels' warps: common.mma_warps
COMPRESS_TILES = (64, 32, 16, 8, 4, 2, 1)
SELECT_TILES = (128, 64, 32, 16, 8, 4, 2, 1)
TOPN_SLOT_BYTES = 8     # fp32 score + int32 block index per on-chip top-n slot


@dataclass(frozen=True)
class NsaPlan(Plan):
    compress_block: int      # l
    compress_stride: int     # d_s
    select_block: int        # l'
    selected: int            # n
    window: int              # w
    seed: int
    group: int               # g = H / G query heads per CTA (kernels 2 and 4)
    compressed_tokens: int   # N_c
    compress_tile: int       # B_t compressed tokens per CTA of kernel 1
    compress_smem_bytes: int
    cmp_block_q: int         # B_r positions per CTA of kernel 2
    cmp_block_k: int         # B_c compressed tokens per tile
    cmp_smem_bytes: int
    cmp_register_bytes: int
    select_tile: int         # B_s keys per sub-block of kernel 4
    select_smem_bytes: int
    select_register_bytes: int
    win: local.LocalPlan | None    # the window branch's FlashAttention-2 tiles (None: decode)
    decode_schedule: str = ""    # decode: "fused" or "split" (``algorithms.kernels.nsa_decode``)
    decode_tile: int = 0         # decode: K/V tokens per tile
    decode_rescore: bool = False  # fused decode: the bins do not fit on chip, K̃ read twice
    decode_cmp_splits: int = 0   # decode: chunks of the compressed cache per KV group
    decode_win_splits: int = 0   # decode: chunks of the window per KV group
    decode_slots: int = 0        # decode: selection slots (one CTA each) per KV group
    decode_smem_bytes: int = 0   # decode: the largest decode kernel's SRAM per CTA


def compressed_count(seq_k: int, cblock: int, stride: int) -> int:
    """N_c: complete blocks of l tokens at stride d_s."""
    return 0 if seq_k < cblock else (seq_k - cblock) // stride + 1


def compress_buffers(bt, cblock, stride, d, e) -> dict[str, int]:
    span = (bt - 1) * stride + cblock
    return {"K_span": span * d * e, "V_span": span * d * e, "K~_V~_out": 2 * bt * d * e,
            "w_bias": 2 * cblock * e + 2 * d * e}


def cmp_buffers(g, bq, bk, d, e, cblock, stride, sblock, n) -> dict[str, int]:
    bins = cdiv((bk - 1) * stride + cblock, sblock) + 1      # selection blocks one tile touches
    return {**packed_smem_buffers(g, bq, bk, d, d, e, False), "W_gate": 3 * g * d * e,
            "block_scores": bq * bins * STAT_BYTES, "top_n": bq * n * TOPN_SLOT_BYTES}


def select_buffers(g, bs, d, e, n) -> dict[str, int]:
    return {"q_t": g * d * e, "K_s": bs * d * e, "V_s": bs * d * e,
            "O_cmp_O_win": 2 * g * d * e, "idx": n * IDX_BYTES}


def _check_params(wl, l, ds, ls, n, w):
    one_new_token = getattr(wl, "decode", False) and wl.seq_q == 1   # sees the whole cache
    if not wl.causal and not one_new_token:
        raise PlanError("nsa: Native Sparse Attention is causal by design (compression and "
                        "selection use only the tokens before each query); add --causal")
    if l % ds:
        raise PlanError(f"nsa: --compress-stride {ds} must divide --compress-block {l} "
                        f"(blocks are whole stride segments); e.g. --compress-stride "
                        f"{max(x for x in range(1, l + 1) if l % x == 0 and x <= ds)}")
    if ls % ds:
        raise PlanError(f"nsa: --select-block {ls} must be a multiple of --compress-stride "
                        f"{ds} (Eq. 9 maps stride segments onto selection blocks)")


def plan(wl, gpu, sram_bytes: int, compress_block: int = 32, compress_stride: int = 16,
         select_block: int = 64, selected: int = 16, window: int = 512, seed: int = 0,
         decode_schedule: str = "auto") -> NsaPlan:
    l, ds, ls, n, w = compress_block, compress_stride, select_block, selected, window
    _check_params(wl, l, ds, ls, n, w)
    d, e, g = wl.head_dim, wl.elem_bytes, kv_group(wl)
    if getattr(wl, "decode", False):
        return _plan_decode(wl, gpu, sram_bytes, l, ds, ls, n, w, seed, decode_schedule)
    if decode_schedule != "auto":
        raise PlanError("nsa: --decode-schedule applies to a decode step; add --decode or "
                        "drop it")
    regs_budget = gpu.register_bytes_per_sm // 2
    bt = next((b for b in COMPRESS_TILES
               if sum(compress_buffers(b, l, ds, d, e).values()) <= sram_bytes), None)
    if bt is None:
        need = sum(compress_buffers(1, l, ds, d, e).values())
        raise SramOverflowError(f"nsa: compressing one block of {l} tokens (head_dim {d}) needs "
                                f"{need:,} bytes of SRAM but the budget is {sram_bytes:,}; use a "
                                f"smaller --compress-block or a larger --sram-kb")
    cmp = None
    for bq in Q_BLOCKS_PACKED:
        for bk in K_BLOCKS:
            smem = sum(cmp_buffers(g, bq, bk, d, e, l, ds, ls, n).values())
            regs = packed_register_bytes(g, bq, bk, d)
            if smem <= sram_bytes and regs <= regs_budget:
                cmp = (bq, bk, smem, regs)
                break
        if cmp:
            break
    roomier = " a larger --sram-kb or" if sram_bytes < gpu.smem_bytes_per_block else ""
    if cmp is None:
        raise SramOverflowError(f"nsa: compressed attention of {g} packed head(s) with head_dim "
                                f"{d} and n = {n} fits no tile in {sram_bytes:,} bytes of SRAM "
                                f"and half the register file (its top-n slots are on chip); "
                                f"use{roomier} a smaller --selected")
    sel = None
    for bs in (ls,) + tuple(x for x in SELECT_TILES if x < ls and ls % x == 0):
        smem = sum(select_buffers(g, bs, d, e, n).values())
        regs = 4 * g * d + 4 * g * bs
        if smem <= sram_bytes and regs <= regs_budget:
            sel = (bs, smem, regs)
            break
    if sel is None:
        raise SramOverflowError(f"nsa: selected attention of {g} packed head(s) with head_dim "
                                f"{d} and n = {n} fits no sub-block of {ls} in {sram_bytes:,} "
                                f"bytes of SRAM; use{roomier} a smaller --selected or "
                                f"--select-block")
    return NsaPlan(compress_block=l, compress_stride=ds, select_block=ls, selected=n, window=w,
                   seed=seed, group=g, compressed_tokens=compressed_count(wl.seq_k, l, ds),
                   compress_tile=bt,
                   compress_smem_bytes=sum(compress_buffers(bt, l, ds, d, e).values()),
                   cmp_block_q=cmp[0], cmp_block_k=cmp[1], cmp_smem_bytes=cmp[2],
                   cmp_register_bytes=cmp[3], select_tile=sel[0], select_smem_bytes=sel[1],
                   select_register_bytes=sel[2], win=local.plan(wl, gpu, sram_bytes, window=w))


def _plan_decode(wl, gpu, sram_bytes, l, ds, ls, n, w, seed, schedule) -> NsaPlan:
    """A decode step (``algorithms.kernels.nsa_decode``): fused, one CTA per (sequence, KV
    group), or split over CTAs when that grid leaves SMs idle (``auto``); the prefill
    kernels' tiles are 0."""
    d, e, g = wl.head_dim, wl.elem_bytes, kv_group(wl)
    if schedule == "auto":
        schedule = "split" if wl.batch * wl.kv_heads < gpu.sm_count else "fused"
    fields = {"decode_schedule": schedule}
    if schedule == "fused":
        dec = plan_decode(g, wl.seq_q, wl.seq_k, d, e, ls, n, sram_bytes)
        if dec is not None:
            fields.update(decode_tile=dec[0], decode_rescore=dec[1], decode_smem_bytes=dec[2])
    else:
        dec = plan_split(wl.batch, wl.kv_heads, g, wl.seq_q, wl.seq_k, d, e, l, ds, ls, n, w,
                         gpu.sm_count, sram_bytes)
        if dec is not None:
            fields.update(decode_tile=dec["tile"], decode_cmp_splits=dec["cmp_splits"],
                          decode_win_splits=dec["win_splits"], decode_slots=dec["slots"],
                          decode_smem_bytes=dec["smem"])
    if dec is None:
        blocks = -(-wl.seq_k // ls)
        raise SramOverflowError(f"nsa: a {schedule} decode step of {g} packed head(s) x "
                                f"{wl.seq_q} new token(s), head_dim {d}, fits no K/V tile of "
                                f"{DECODE_TILES[-1]} tokens in {sram_bytes:,} bytes of SRAM "
                                f"beside a score for each of the {blocks:,} selection blocks "
                                f"of the {wl.seq_k:,}-token cache; use a shorter --seq, a "
                                f"larger --select-block, fewer --new-tokens or a larger "
                                f"--sram-kb")
    new = compressed_count(wl.seq_k, l, ds) - compressed_count(wl.seq_k - wl.seq_q, l, ds)
    if new and sum(compress_buffers(new, l, ds, d, e).values()) > sram_bytes:
        raise SramOverflowError(f"nsa: compressing the {new} block(s) of {l} tokens this step "
                                f"completes (head_dim {d}) does not fit {sram_bytes:,} bytes of "
                                f"SRAM; use fewer --new-tokens or a larger --sram-kb")
    return NsaPlan(compress_block=l, compress_stride=ds, select_block=ls, selected=n, window=w,
                   seed=seed, group=g, compressed_tokens=compressed_count(wl.seq_k, l, ds),
                   compress_tile=new,
                   compress_smem_bytes=sum(compress_buffers(new, l, ds, d, e).values()) if new
                   else 0, cmp_block_q=0, cmp_block_k=0, cmp_smem_bytes=0,
                   cmp_register_bytes=0, select_tile=0, select_smem_bytes=0,
                   select_register_bytes=0, win=None, **fields)


# ---- parameters (seeded stand-ins for the learned ones) -----------------------------------

def weights(wl, p: NsaPlan) -> dict:
    """float32 parameters: w_k, w_v (l,), biases b_k, b_v = wᵀE (d,), gate projections
    (H, 3, d)."""
    rng = np.random.default_rng(p.seed)
    l, d = p.compress_block, wl.head_dim
    out = {}
    for name in ("k", "v"):
        logits = rng.standard_normal(l)
        w = np.exp(logits - logits.max())
        w /= w.sum()
        pos_enc = rng.normal(0.0, 0.1, size=(l, d))             # intra-block position encoding E
        out["w" + name] = w.astype(np.float32)
        out["b" + name] = (w @ pos_enc).astype(np.float32)
    out["wg"] = rng.normal(0.0, 1.0 / np.sqrt(d), size=(wl.heads, 3, d)).astype(np.float32)
    return out


# ---- run ----------------------------------------------------------------------------------

def run(wl, p: NsaPlan, inputs, rec, compute: bool) -> dict:
    par = weights(wl, p)
    if getattr(wl, "decode", False):
        return _decode(wl, p, inputs, par, rec, compute)
    kc, vc = _compress(wl, p, inputs, par, rec, compute)
    o_cmp, gates, idx = _compressed_attention(wl, p, inputs, kc, vc, par, rec, compute)
    win = run_layout("nsa_win", wl, p.win, local.layout(wl, p.win),
                     local.element_mask(wl, p.win) if compute else None, inputs, rec, compute)
    o = _selected_attention(wl, p, inputs, idx, gates, o_cmp, win.get("o"), rec, compute)
    rec.info["nsa"] = {"compressed_tokens": p.compressed_tokens,
                       "selection_blocks": cdiv(wl.seq_k, p.select_block),
                       "compression": "fixed linear map w^T(X + E), seeded",
                       "gates": "sigmoid(q . W_c), W_c seeded N(0, 1/d)"}
    return {"o": o, "sel": idx} if compute else {}


def _compress(wl, p, inputs, par, rec, compute):
    b, G, d, e, n_c = wl.batch, wl.kv_heads, wl.head_dim, wl.elem_bytes, p.compressed_tokens
    if not compute:
        kc = vc = None
    else:
        kc = np.zeros((b, G, n_c, d), dtype=np.float32)
        vc = np.zeros((b, G, n_c, d), dtype=np.float32)
    if n_c == 0:
        return kc, vc
    buffers = compress_buffers(p.compress_tile, p.compress_block, p.compress_stride, d, e)
    ctas = cdiv(n_c, p.compress_tile)
    # neighbouring CTAs' spans overlap by l - d_s tokens, and every CTA reads φ's weights
    kv_covered = 2 * ((n_c - 1) * p.compress_stride + p.compress_block) * d * e
    c = rec.kernel("nsa_compress", ctas=b * G * ctas, buffers=buffers,
                   threads_per_cta=THREADS_PER_CTA, tc_path="mma_sync", matmul_dtype=wl.dtype,
                   # the K span and φ's weights before the first block's MMA
                   prologue_bytes_per_cta=buffers["K_span"] + buffers["w_bias"],
                   **l2_arguments(rec, b * G, ctas, sum(buffers.values()),
                                  kv_covered + buffers["w_bias"] + 2 * n_c * d * e,
                                  kv_covered + buffers["w_bias"], THREADS_PER_CTA))
    args = (par["wk"], par["wv"], par["bk"], par["bv"], n_c, d, p.compress_block,
            p.compress_stride, p.compress_tile, e, compute)
    if not compute:
        compress_head(c, placeholder(d), placeholder(d), placeholder(d), placeholder(d), *args)
        rec.repeat(c, b * G)
        return kc, vc
    for bi in range(b):
        for h in range(G):
            compress_head(c, inputs.k[bi, h], inputs.v[bi, h], kc[bi, h], vc[bi, h], *args)
    return kc, vc


def _compressed_attention(wl, p, inputs, kc, vc, par, rec, compute):
    b, H, G, g = wl.batch, wl.heads, wl.kv_heads, p.group
    d, e, nq, n = wl.head_dim, wl.elem_bytes, wl.seq_q, p.selected
    tr = cdiv(nq, p.cmp_block_q)
    buffers = cmp_buffers(g, p.cmp_block_q, p.cmp_block_k, d, e, p.compress_block,
                          p.compress_stride, p.select_block, n)
    kc_bytes = 2 * p.compressed_tokens * d * e
    rows = g * p.cmp_block_q
    layout = mma_layout(rec.gpu, rows, p.cmp_register_bytes, g * nq)
    in_flight = heads_in_flight(rec, tr, b * G, p.cmp_smem_bytes, p.cmp_register_bytes,
                                layout["threads_per_cta"])
    unique = (b * H * (nq * d * e + 3 * d * e + nq * (d * e + 3 * STAT_BYTES))
              + b * G * (kc_bytes + nq * n * IDX_BYTES))
    work = _cmp_work(wl, p)
    c = rec.kernel("nsa_cmp", ctas=b * G * tr, buffers=buffers, **layout,
                   register_bytes_per_cta=p.cmp_register_bytes, tc_path="mma_sync",
                   overlap="serial", cta_work=work, matmul_dtype=wl.dtype,
                   **step_latency.chain(step_latency.forward_step(p.cmp_block_k), work, b * G),
                   prologue_bytes_per_cta=first_q_bytes(buffers["Q_i"], rows, g * nq)
                   + buffers["K_j"],
                   epilogue_elements_per_cta=rows * d,    # the compressed branch's O rows
                   unique_hbm_bytes=unique, l2_working_set_bytes=in_flight * kc_bytes)
    args = (nq, wl.seq_k, d, g, p.cmp_block_q, p.cmp_block_k, p.compressed_tokens,
            p.compress_block, p.compress_stride, p.select_block, n, wl.scale, e, compute)
    if not compute:
        e3 = np.empty((0, 0, d), np.float32)
        compressed_pack(c, e3, placeholder(d), placeholder(d), np.empty((0, 3, d), np.float32),
                        e3, np.empty((0, 0, 3), np.float32), np.empty((0, n), np.int32), *args)
        rec.repeat(c, b * G)
        return None, None, None
    o_cmp = np.zeros((b, H, nq, d), dtype=np.float32)
    gates = np.zeros((b, H, nq, 3), dtype=np.float32)
    idx = np.full((b, G, nq, n), -1, dtype=np.int32)
    for bi in range(b):
        for h in range(G):
            hs = slice(h * g, (h + 1) * g)
            compressed_pack(c, np.ascontiguousarray(inputs.q[bi, hs]), kc[bi, h], vc[bi, h],
                            np.ascontiguousarray(par["wg"][hs]), o_cmp[bi, hs], gates[bi, hs],
                            idx[bi, h], *args)
    return o_cmp, gates, idx


def _selected_attention(wl, p, inputs, idx, gates, o_cmp, o_win, rec, compute):
    b, H, G, g = wl.batch, wl.heads, wl.kv_heads, p.group
    d, e, nq, n = wl.head_dim, wl.elem_bytes, wl.seq_q, p.selected
    kv_bytes = 2 * wl.seq_k * d * e
    # one token's g packed heads: fewer than 16 fill part of every MMA
    layout = mma_layout(rec.gpu, g, p.select_register_bytes, g)
    threads = layout["threads_per_cta"]
    in_flight = heads_in_flight(rec, nq, b * G, p.select_smem_bytes, p.select_register_bytes,
                                threads)
    unique = b * H * nq * (4 * d * e + 3 * STAT_BYTES) + b * G * (kv_bytes + nq * n * IDX_BYTES)
    resident = rec.resident_ctas(b * G * nq, p.select_smem_bytes, p.select_register_bytes,
                                 threads)
    buffers = select_buffers(g, p.select_tile, d, e, n)
    work = _select_work(wl, p)
    c = rec.kernel("nsa_slc", ctas=b * G * nq, buffers=buffers,
                   **layout, register_bytes_per_cta=p.select_register_bytes, tc_path="mma_sync",
                   overlap="serial", cta_work=work,
                   matmul_dtype=wl.dtype,
                   **step_latency.chain(step_latency.forward_step(p.select_tile), work, b * G),
                   # the token's queries and block indices, then its first selected block's keys
                   prologue_bytes_per_cta=buffers["q_t"] + buffers["idx"] + buffers["K_s"],
                   epilogue_elements_per_cta=g * d,       # the token's g heads' O rows
                   unique_hbm_bytes=unique,
                   l2_working_set_bytes=in_flight * selected_working_set(wl, p, resident))
    args = (nq, wl.seq_k, d, g, p.select_block, n, p.select_tile, wl.scale, e, compute)
    if not compute:
        e3 = np.empty((0, 0, d), np.float32)
        selected_pack(c, e3, placeholder(d), placeholder(d), np.empty((0, n), np.int32),
                      np.empty((0, 0, 3), np.float32), e3, e3, e3, *args)
        rec.repeat(c, b * G)
        return None
    o = np.zeros((b, H, nq, d), dtype=np.float32)
    for bi in range(b):
        for h in range(G):
            hs = slice(h * g, (h + 1) * g)
            selected_pack(c, np.ascontiguousarray(inputs.q[bi, hs]), inputs.k[bi, h],
                          inputs.v[bi, h], idx[bi, h], gates[bi, hs], o_cmp[bi, hs],
                          np.ascontiguousarray(o_win[bi, hs]), o[bi, hs], *args)
    return o


# ---- decoding (``algorithms.kernels.nsa_decode``) -------------------------------------------

def _decode(wl, p, inputs, par, rec, compute):
    """One decode step: append the compressed tokens the new tokens complete; the compressed
    and window chunks (one launch); the selection; the selected slots; the gated combine."""
    b, G, d, e = wl.batch, wl.kv_heads, wl.head_dim, wl.elem_bytes
    nq, l, ds = wl.seq_q, p.compress_block, p.compress_stride
    first, n_c = compressed_count(wl.seq_k - nq, l, ds), p.compressed_tokens
    kc = vc = None
    if compute:
        kc = np.zeros((b, G, n_c, d), dtype=np.float32)
        vc = np.zeros((b, G, n_c, d), dtype=np.float32)
        for bi in range(b):
            for h in range(G):
                kc[bi, h, :first], vc[bi, h, :first] = compressed_cache(
                    compress_head, inputs.k[bi, h], inputs.v[bi, h], par, first, d, l, ds, e)
    if n_c > first:
        _append_compressed(wl, p, inputs, par, kc, vc, first, rec, compute)
    run = run_split_decode if p.decode_schedule == "split" else run_fused_decode
    o, sel = run(wl, p, inputs, par, kc, vc, rec, compute)
    _decode_info(wl, p, first, rec)
    return {"o": o, "sel": sel} if compute else {}


def _append_compressed(wl, p, inputs, par, kc, vc, first, rec, compute):
    """``nsa_decode_compress``: one CTA per (sequence, KV head) compresses the new blocks,
    reading the raw span they cover once."""
    b, G, d, e = wl.batch, wl.kv_heads, wl.head_dim, wl.elem_bytes
    l, ds, new = p.compress_block, p.compress_stride, p.compressed_tokens - first
    buffers = compress_buffers(new, l, ds, d, e)
    c = rec.kernel("nsa_decode_compress", ctas=b * G, buffers=buffers,
                   threads_per_cta=THREADS_PER_CTA, tc_path="mma_sync", matmul_dtype=wl.dtype,
                   prologue_bytes_per_cta=buffers["K_span"] + buffers["w_bias"])
    args = (par["wk"], par["wv"], par["bk"], par["bv"], new, d, l, ds, new, e, compute)
    if not compute:
        compress_head(c, placeholder(d), placeholder(d), placeholder(d), placeholder(d), *args)
        rec.repeat(c, b * G)
        return
    t0 = first * ds
    for bi in range(b):
        for h in range(G):
            compress_head(c, inputs.k[bi, h, t0:], inputs.v[bi, h, t0:], kc[bi, h, first:],
                          vc[bi, h, first:], *args)


def _decode_info(wl, p, first, rec):
    """``nsa.decode`` (tokens per step against dense attention), ``kv_cache`` (raw plus
    compressed cache) and ``decode`` (per-token time)."""
    G, d, e = wl.kv_heads, wl.head_dim, wl.elem_bytes
    tok = tokens_per_step(wl.seq_k, wl.seq_q, p.compress_block, p.compress_stride,
                          p.select_block, p.selected, p.window)
    rec.info["nsa"] = {
        "compressed_tokens": p.compressed_tokens,
        "selection_blocks": cdiv(wl.seq_k, p.select_block),
        "compression": "fixed linear map w^T(X + E), seeded",
        "gates": "sigmoid(q . W_c), W_c seeded N(0, 1/d)",
        "decode": {
            "tokens_per_step_per_kv_group": tok,
            "dense_tokens_per_step_per_kv_group": wl.seq_k,
            "expected_speedup_over_dense": wl.seq_k / tok["total"],
            "compressed_tokens_appended": p.compressed_tokens - first,
            "raw_tokens_read_to_compress": compressed_span(p.compressed_tokens - first,
                                                           p.compress_block, p.compress_stride),
            "schedule": p.decode_schedule,
            "compressed_chunks": p.decode_cmp_splits,
            "window_chunks": p.decode_win_splits,
            "note": "a token is its key and value (2 d e bytes); dense = every cached token "
                    "once per KV group (GQA split-KV decoding); the paper's Table 4 counts "
                    "the same three terms, (N - l)/d + n l' + w",
        },
    }
    model = getattr(wl, "model", None)
    layers = model.layers if model is not None else 1
    kv = kv_cache_info(wl, rec.gpu, 2 * G * d)
    comp = 2 * G * d * e * p.compressed_tokens * layers * wl.batch
    kv.update(compressed_tokens=p.compressed_tokens, compressed_bytes_total=comp,
              resident_bytes_total=kv["bytes_total"] + comp)
    rec.info["kv_cache"] = kv
    rec.info["decode"] = decode_info(wl, rec.gpu, rec.kernels, p.group * wl.seq_q)


def selected_working_set(wl, p, resident_ctas: int) -> int:
    """Bytes of raw K/V one KV group's resident ``nsa_slc`` CTAs read, for L2 reuse.

    CTAs launch position after position, so the resident ones of a group are P_f =
    min(N_q, resident) consecutive positions. Neighbouring positions select mostly the same
    blocks — the spatial continuity of attention scores NSA's blockwise selection relies on
    (§3.3.2) — so they share their n − 2 non-local blocks (block 0 and n − 3 scored ones),
    while their local blocks (j_t − 1, j_t) sweep the ⌈P_f/l′⌉ + 1 blocks the positions span:
        ((n − 2) + ⌈P_f/l′⌉ + 1) l′ tokens of K and V, at most the group's whole K/V.
    An assumption about the selections (not counted: counts never depend on it), used only to
    price re-reads; ``--no-l2-cache`` shows the price without it."""
    d, e, ls = wl.head_dim, wl.elem_bytes, p.select_block
    span = min(wl.seq_q, max(1, resident_ctas))
    tokens = ((p.selected - 2) + cdiv(span, ls) + 1) * ls
    return 2 * min(wl.seq_k, tokens) * d * e


def _cmp_work(wl, p) -> np.ndarray:
    """Compressed tiles (two passes) each Q-block CTA of one group visits."""
    shift = wl.seq_k - wl.seq_q
    ends = [visible_compressed(min(wl.seq_q, r0 + p.cmp_block_q) - 1 + shift,
                               p.compress_block, p.compress_stride)
            for r0 in range(0, wl.seq_q, p.cmp_block_q)]
    return np.array([1 + 2 * cdiv(x, p.cmp_block_k) for x in ends], dtype=np.float64)


def _select_work(wl, p) -> np.ndarray:
    """Selected blocks each position's CTA visits (1 + n_t)."""
    kpos = np.arange(wl.seq_q) + wl.seq_k - wl.seq_q
    n_t = np.where(kpos < 0, 0, np.minimum(p.selected, kpos // p.select_block + 1))
    return (1 + n_t).astype(np.float64)


# ---- the float64 reference of the same math -----------------------------------------------

def _compress_reference(x, w, bias, p, n_c):
    """(B, G, N_k, d) -> (B, G, N_c, d) float64: wᵀ X_block + bias."""
    s, l = p.compress_stride, p.compress_block
    if n_c == 0:
        return np.zeros(x.shape[:2] + (0, x.shape[3]))
    blocks = np.stack([x[:, :, i * s:i * s + l] for i in range(n_c)], axis=2)  # (B,G,N_c,l,d)
    return np.einsum("l,bgild->bgid", w.astype(np.float64), blocks) + bias.astype(np.float64)


def block_credit(p: NsaPlan, n_c: int, n_blocks: int) -> np.ndarray:
    """(N_c, n_blocks) Eq. 9 credit: how many stride segments of compressed token i fall in
    selection block j."""
    seg_c, seg_s = p.compress_block // p.compress_stride, p.select_block // p.compress_stride
    segments = np.arange(n_c)[:, None] + np.arange(seg_c)[None, :]      # (N_c, l/d_s)
    m = np.zeros((n_c, n_blocks))
    np.add.at(m, (np.repeat(np.arange(n_c), seg_c), (segments // seg_s).ravel()), 1.0)
    return m


def reference_block_scores(wl, p: NsaPlan, q, kc):
    """(B, G, N_q, ⌈N_k/l'⌉) float64 importance scores of the selection blocks (Eqs. 9–10,
    before Eq. 11's forcing), and the (N_q, N_c) visibility of the compressed tokens."""
    (b, G, n_c, _), nq, nk = kc.shape, wl.seq_q, wl.seq_k      # all heads, or one group
    kpos = np.arange(nq) + nk - nq                                       # (N_q,)
    nvis = np.where(kpos + 1 < p.compress_block, 0,
                    (kpos + 1 - p.compress_block) // p.compress_stride + 1)
    vis = np.arange(n_c)[None, :] < nvis[:, None]                       # (N_q, N_c)
    n_blocks = cdiv(nk, p.select_block)
    p_group = np.zeros((b, G, nq, n_c))
    # a query head at a time, its scores changed in place: they are 8 N_q N_c bytes a head
    for h in range(q.shape[1] if n_c else 0):      # (no compressed token: no scores)
        g = h // p.group
        s = np.einsum("bhid,bhjd->bhij", q[:, h:h + 1], kc[:, g:g + 1]) * wl.scale
        s[..., ~vis] = -np.inf
        mx = np.where(nvis[:, None] > 0, s.max(-1, keepdims=True), 0.0)
        prob = np.exp(np.subtract(s, mx, out=s), out=s)
        prob /= np.where(nvis[:, None] > 0, prob.sum(-1, keepdims=True), 1.0)
        p_group[:, g] += prob[:, 0]                                     # Eq. 10
    return p_group @ block_credit(p, n_c, n_blocks), vis                # Eq. 9


def reference_selection(wl, p: NsaPlan, q, kc):
    """(B, G, N_q, n) selection from float64 scores (−1 padded, ascending), and the
    (N_q, N_c) visibility of the compressed tokens."""
    nq, nk, n, ls = wl.seq_q, wl.seq_k, p.selected, p.select_block
    kpos = np.arange(nq) + nk - nq                                       # (N_q,)
    n_blocks = cdiv(nk, ls)
    scores, vis = reference_block_scores(wl, p, q, kc)                  # (B, G, N_q, blocks)
    # Eq. 11 over blocks 0..j_t: initial and local blocks forced, later blocks excluded
    jt = np.where(kpos < 0, -1, kpos // ls)[:, None]                    # (N_q, 1)
    blocks = np.arange(n_blocks)[None, :]
    forced = (blocks == 0) | (blocks == jt) | (blocks == jt - 1)
    scores = np.where(forced, np.inf, scores)
    scores = np.where(blocks > jt, -np.inf, scores)
    order = np.argsort(-scores, axis=-1, kind="stable")[..., :n]        # ties: lower index
    if n_blocks < n:                       # fewer blocks than slots (N_k < n l'): pad to n
        order = np.concatenate([order, np.full(order.shape[:-1] + (n - n_blocks,), n_blocks)],
                               axis=-1)
    n_t = np.minimum(n, jt + 1)                                         # (N_q, 1); 0 if kpos < 0
    order = np.where(np.arange(n)[None, :] < n_t, order, n_blocks)      # padding sorts last
    order = np.sort(order, axis=-1)
    return np.where(order == n_blocks, -1, order), vis


def reference_scores(wl, p: NsaPlan, inputs) -> np.ndarray:
    """(B, G, N_q, ⌈N_k/l'⌉) float64 block importance scores of the inputs (Eqs. 9–10): how
    near a tie two blocks' scores are, when a float32/fp16 top-n chose differently."""
    par = weights(wl, p)
    kc = _compress_reference(np.asarray(inputs.k, np.float64), par["wk"], par["bk"], p,
                             p.compressed_tokens)
    return reference_block_scores(wl, p, np.asarray(inputs.q, np.float64), kc)[0]


# Two blocks' float64 scores are a near-tie when within this many unit roundoffs of the
# storage type of each other (relative to the position's largest score): a kernel scores
# blocks from q and K̃ rounded to that type, which moves each score by a few roundoffs, so
# its top-n may order such blocks either way.
TIE_ROUNDOFFS = 16
STORAGE_ROUNDOFF = {"fp16": 2.0 ** -11, "bf16": 2.0 ** -8, "fp32": 2.0 ** -24}


@dataclass(frozen=True)
class SelectionDifferences:
    """Where two top-n selections of the same inputs differ (``selection_differences``).

    Attributes:
        flipped: (k, 3) int array of the (batch, kv head, position) triples whose selections
            differ.
        near_tie: (k,) bool: the difference is a swap among blocks whose float64 scores are a
            near-tie (within ``TIE_ROUNDOFFS`` roundoffs), none of them forced — rounding can
            explain it; False: a real disagreement.
        agree: (N_q,) bool: positions where every batch and kv head agrees (the outputs there
            can be compared with each other to the storage type's target).
    """
    flipped: np.ndarray
    near_tie: np.ndarray
    agree: np.ndarray

    @property
    def all_near_ties(self) -> bool:
        return bool(self.near_tie.all())


def selection_differences(wl, p: NsaPlan, inputs, sel, other) -> SelectionDifferences:
    """Compare a kernel's selection ``sel`` ((B, G, N_q, n) block indices, ascending, −1
    padded: ``outputs["sel"]``) with ``other`` (the simulator's, say), judging each
    difference against the float64 block scores of the inputs."""
    sel, other = np.asarray(sel), np.asarray(other)
    flipped = np.argwhere((sel != other).any(-1))
    near = np.ones(len(flipped), bool)
    scores = reference_scores(wl, p, inputs) if len(flipped) else None
    tol = TIE_ROUNDOFFS * STORAGE_ROUNDOFF[wl.dtype]
    kpos = np.arange(wl.seq_q) + wl.seq_k - wl.seq_q
    for i, (b, g, t) in enumerate(flipped):
        jt = kpos[t] // p.select_block
        ours, theirs = set(sel[b, g, t]) - set(other[b, g, t]), set(other[b, g, t]) - set(sel[b, g, t])
        if len(ours) != len(theirs) or (ours | theirs) & {-1, 0, jt - 1, jt}:
            near[i] = False                   # a forced block or a different count: no tie
            continue
        row = scores[b, g, t, :jt + 1]
        swapped = row[sorted(ours | theirs)]
        near[i] = swapped.max() - swapped.min() <= tol * row.max()
    agree = np.ones(wl.seq_q, bool)
    agree[np.unique(flipped[:, 2]) if len(flipped) else []] = False
    return SelectionDifferences(flipped, near, agree)


def reference(wl, p: NsaPlan, inputs, attention_reference, selection=None) -> np.ndarray:
    """NSA's output in float64: the same φ, gates, Eq. 9–11 selection and branches, built on
    the harness's float64 softmax attention (algorithms do not import attnsim).

    ``selection``: (B, G, N_q, n) block indices to use instead of the float64 top-n (e.g.
    the kernel's own ``outputs["sel"]``, to separate arithmetic error from a top-n flip at
    a near-tie of float32 scores)."""
    par = weights(wl, p)
    q, k, v = (np.asarray(x, np.float64) for x in (inputs.q, inputs.k, inputs.v))
    nq, nk = wl.seq_q, wl.seq_k
    n_c = p.compressed_tokens
    kc = _compress_reference(k, par["wk"], par["bk"], p, n_c)
    vc = _compress_reference(v, par["wv"], par["bv"], p, n_c)
    kpos = np.arange(nq) + nk - nq
    key_block = np.arange(nk) // p.select_block
    window = (np.arange(nk)[None, :] > kpos[:, None] - p.window)
    o_cmp, o_slc, o_win = (np.zeros_like(q) for _ in range(3))
    # one KV group at a time, its (N_q, N_k) selection mask serving its g query heads: all
    # groups' masks at once were B H N_q N_k bytes, built from n bytes a pair of comparisons
    for b in range(wl.batch):
        for g in range(wl.kv_heads):
            kv = (slice(b, b + 1), slice(g, g + 1))                  # (1, 1, N, d) views
            heads = (kv[0], slice(g * p.group, (g + 1) * p.group))   # its g query heads
            idx, vis = reference_selection(wl, p, q[heads], kc[kv])
            if selection is not None:
                idx = np.asarray(selection)[kv]
            if n_c:
                o_cmp[heads] = attention_reference(q[heads], kc[kv], vc[kv], scale=wl.scale,
                                                   mask=vis)[0]
            chosen = np.zeros((nq, key_block[-1] + 2), dtype=bool)    # last column: the -1s
            chosen[np.arange(nq)[:, None], idx[0, 0]] = True
            o_slc[heads] = attention_reference(q[heads], k[kv], v[kv], causal=True,
                                               scale=wl.scale, mask=chosen[:, key_block])[0]
            o_win[heads] = attention_reference(q[heads], k[kv], v[kv], causal=True,
                                               scale=wl.scale, mask=window)[0]
    gates = 1.0 / (1.0 + np.exp(-np.einsum("bhid,hcd->bhic", q, par["wg"].astype(np.float64))))
    return gates[..., 0:1] * o_cmp + gates[..., 1:2] * o_slc + gates[..., 2:3] * o_win


# ---- bound ----------------------------------------------------------------------------------

def io_bound(wl, p: NsaPlan, sram_bytes: int) -> float:
    """The leading terms in bytes: B G [3 N_q N_k d e/(2 d_s B_r) + 2 N_q n l' d e]
    + B H [2 N_q (w + B_r^w) d e / B_r^w + 4 N_q d e] (causal)."""
    d, e, nq, nk = wl.head_dim, wl.elem_bytes, wl.seq_q, wl.seq_k
    if getattr(wl, "decode", False):
        # decode: Θ(B G (N/d_s + n l' + w) d) — the compressed cache, the selected blocks
        # and the window once per KV group, plus the queries and outputs
        per_group = 2 * (nk / p.compress_stride + min(nk, p.selected * p.select_block)
                         + min(nk, p.window)) * d * e
        return float(wl.batch * (wl.kv_heads * per_group + 2 * wl.heads * nq * d * e))
    per_group = (3 * nq * nk * d * e / (2 * p.compress_stride * p.cmp_block_q)
                 + 2 * nq * min(nk, p.selected * p.select_block) * d * e)
    bw = p.win.block_q
    per_head = 2 * nq * min(nk, p.window + bw) * d * e / bw + 4 * nq * d * e
    return float(wl.batch * (wl.kv_heads * per_group + wl.heads * per_head))


def footprint(wl, p: NsaPlan):
    """HBM allocations of the prefill: Q, K, V; the compressed keys and values (B G N_c d e
    each: NSA's compressed cache, which decoding keeps, so it outlives the call); the
    parameters (w_k, w_v, b_k, b_v of the compression, the gate projections: H 3 d e); the
    compressed branch's output O_cmp (B H N d e), gates (3 fp32 per row) and the selected
    block indices (B G N n int32) until the selected-attention kernel; the window branch's
    O_win and its lse (its window is index arithmetic, see ``pattern_footprint``); the gated
    output O."""
    if getattr(wl, "decode", False):
        return _decode_footprint(wl, p)
    b, h, g, nq, d, e = wl.batch, wl.heads, wl.kv_heads, wl.seq_q, wl.head_dim, wl.elem_bytes
    head_rows = b * h * nq
    phases = (("nsa_compress",) if p.compressed_tokens else ()) + ("nsa_cmp", "nsa_win_fwd",
                                                                    "nsa_slc")
    first, last = phases[0], phases[-1]
    compressed = b * g * p.compressed_tokens * d * e
    params = h * 3 * d * e + 2 * p.compress_block * e + 2 * d * e
    return Footprint(phases, fp.inputs(wl, first, last) + [
        Allocation("k_compressed", compressed, first, last, "cache"),
        Allocation("v_compressed", compressed, first, last, "cache"),
        Allocation("params", params, first, last, "input"),
        Allocation("o_cmp", head_rows * d * e, "nsa_cmp", "nsa_slc"),
        Allocation("gates", head_rows * 3 * STAT_BYTES, "nsa_cmp", "nsa_slc"),
        Allocation("selected_idx", b * g * nq * p.selected * IDX_BYTES, "nsa_cmp", "nsa_slc"),
        Allocation("o_win", head_rows * d * e, "nsa_win_fwd", "nsa_slc"),
        Allocation("lse_win", head_rows * STAT_BYTES, "nsa_win_fwd", "nsa_slc"),
        Allocation("o", head_rows * d * e, "nsa_slc", last, "output")])


def _decode_footprint(wl, p: NsaPlan):
    """A decode step: the new tokens' q in, O out, the raw K/V cache and the compressed cache
    (B G N_c d e each, both kept between steps), the parameters; with the split schedule the
    fp32 partial states (acc, m, l) of every compressed, window and selected chunk until the
    combine, the compressed chunks' selection-block scores until the selection, and the
    selected block indices until the selected attention. The fused step keeps those on chip."""
    b, G, nq, nk, d, e = wl.batch, wl.kv_heads, wl.seq_q, wl.seq_k, wl.head_dim, wl.elem_bytes
    first_compressed = compressed_count(nk - nq, p.compress_block, p.compress_stride)
    steps = ("nsa_decode_compress",) if p.compressed_tokens > first_compressed else ()
    if p.decode_schedule == "split":
        steps += ("nsa_decode_cmp_win", "nsa_decode_select", "nsa_decode_slc",
                  "nsa_decode_combine")
    else:
        steps += ("nsa_decode",)
    first, last = steps[0], steps[-1]
    compressed = b * G * p.compressed_tokens * d * e
    params = wl.heads * 3 * d * e + 2 * p.compress_block * e + 2 * d * e
    allocs = fp.inputs(wl, first, last) + [
        Allocation("k_compressed", compressed, first, last, "cache"),
        Allocation("v_compressed", compressed, first, last, "cache"),
        Allocation("params", params, first, last, "input")]
    if p.decode_schedule == "split":
        rows = p.group * nq
        cmp_r, off, win_r = split_layout(nq, nk, p.compressed_tokens, p.compress_block,
                                         p.compress_stride, p.select_block, p.window,
                                         p.decode_tile, p.decode_cmp_splits, p.decode_win_splits)
        chunks = len(cmp_r) + len(win_r) + p.decode_slots
        allocs += [
            Allocation("partial_states", b * G * chunks * rows * (d + 2) * STAT_BYTES,
                       "nsa_decode_cmp_win", "nsa_decode_combine"),
            Allocation("block_scores", b * G * rows * int(off[-1]) * STAT_BYTES,
                       "nsa_decode_cmp_win", "nsa_decode_select"),
            Allocation("selected_idx", b * G * nq * p.selected * IDX_BYTES,
                       "nsa_decode_select", "nsa_decode_slc")]
    allocs += fp.output(wl, last, last, lse=False)
    return Footprint(steps, allocs)
