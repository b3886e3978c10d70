"""Multi-head Latent Attention (MLA) decode — DeepSeek-AI, "DeepSeek-V2: A Strong, Economical,
and Efficient Mixture-of-Experts Language Model" (2024, arXiv 2405.04434), §2.1.

IO bound: absorbed decode Θ(N (d_c + d_h^R)) bytes per query block and KV group (the latent
cache read once); up-projected decode Θ(H N d_h) (per-head K, V materialised and read).

Idea: the cache holds, per token, one compressed latent c_KV (d_c = 512) and one decoupled
RoPE key k^R (d_h^R = 64) shared by all heads, instead of 2 n_h d_h elements; head h's key
is [W_UK^h c_KV ; k^R] and its value W_UV^h c_KV.

Notation -> code: n_h == heads (H), d_h == head_dim (the non-RoPE query/key dim and the value
dim), d_c == kv_lora_rank, d_h^R == rope_dim, c_KV == ``c_kv`` (B, N_k, d_c), k^R == ``k_rope``
(B, N_k, d_h^R), q^C == ``q_nope`` (= the workload's q, (B, H, N_q, d_h)), q^R == ``q_rope``,
W_UK^h / W_UV^h == ``w_uk[h]`` / ``w_uv[h]`` (d_h x d_c). Score scale 1/sqrt(d_h + d_h^R) (the
workload's default scale 1/sqrt(d_h) is replaced; an explicit --scale is kept).

Two ways to decode (``--path``), same output o (B, H, N_q, d_h):
(a) ``upproject``: a GEMM up-projects the whole cache every step,
    [K^C | V] (N_k x 2 H d_h) = c_KV (N_k x d_c) · [W_UK | W_UV]ᵀ, writes them to HBM, then
    split-KV multi-head attention over K = [K^C_h ; k^R] (d_h + d_h^R) and V_h (d_h).
(b) ``absorbed``: W_UK goes into the query, q̃_h = q^C_h W_UK^h (d_c), and W_UV into the
    output; attention runs directly over the latent, as MQA with one KV "head" of
    d_k = d_c + d_h^R whose first d_c columns are also the values (loaded once); the
    g = ``head_block`` heads of a CTA share each latent tile. Then o_h = ô_h W_UV^hᵀ.
Closed forms (per layer; e storage bytes; GEMM m x n x k with tiles t_m x t_n: reads
(⌈n/t_n⌉ m k + ⌈m/t_m⌉ k n) e, writes m n e, FLOPs 2 m n k; attention per ``splitkv``):
  (a) GEMM per sequence m = N_k, n = 2 H d_h, k = d_c  ->  weights re-read ⌈N_k/t_m⌉ times and
      the latent ⌈2 H d_h / t_n⌉ times; attention reads B H (S N_q d_k + N_k (d_k + d_h)) e.
  (b) two GEMMs per head, m = B N_q: (n, k) = (d_c, d_h) and (d_h, d_c) — each weight read
      once; attention reads B (H/g) (S g N_q (d_c + d_h^R) + N_k (d_c + d_h^R)) e.
  Matmul FLOPs: (a) 4 B N_k d_c H d_h + 2 B H N_q N_k (2 d_h + d_h^R);
                (b) 4 B H N_q d_h d_c + 2 B H N_q N_k (2 d_c + d_h^R).
Bound: (b) Θ(B (H/g) ⌈N_q/B_r⌉ N_k (d_c + d_h^R)) — at decode the latent cache, once per
head block; (a) Θ(B H ⌈N_q/B_r⌉ N_k d_h) — the up-projected cache it writes and reads.
rec.info["mla"] compares the two paths (HBM bytes and FLOPs of both, counted); rec.info
also gets ``kv_cache`` ((d_c + d_h^R) L elements per token) and, for decode, ``decode``.

Weights W_UK, W_UV are random from a generator seeded by the inputs' seed, entries
N(0, 1/d_c); c_KV, k^R, q^R standard normal. Their HBM reads are counted; the projections
that produce q^C, q^R, c_KV and k^R (W_DQ, W_UQ, W_DKV, W_KR) and W_O are common to both
paths and not simulated. Differences from FlashMLA / DeepSeek's kernels: W_UV is not folded
into W_O; the head block is chosen so that the fp32 accumulator (g x 512) fits the whole
register file (one CTA per SM, as FlashMLA's 64-head tiles), and shared memory holds, besides
the Q and latent tiles, the probabilities passed between the warps that share a row tile's
512 value columns (``splitkv.value_column_slices``; FlashMLA's sP); the up-projected K stores
[K^C ; k^R] per head (k^R copied), so the executed-mode layout matches the counted loads (a
host layout, not counted: the CUDA port, mla_upproject.cu, reads k^R from the cache in its
attention kernel and moves exactly the counted bytes).
The output is returned as ``o_mla`` (not ``o``): the harness's exact-attention check over
the workload's q, k, v does not apply to latent inputs; executed runs report its error
against ``reference``, float64 attention over ``up_projected``'s q, K, V.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from algorithms.base import MAX_ROWS, AlgorithmInfo, Option, Plan, PlanError
from algorithms.kernels import footprints as fp
from algorithms.kernels.common import cdiv
from algorithms.kernels.decode_info import decode_info, kv_cache_info
from algorithms.kernels.gemm import GemmTiles, gemm, gemm_ctas, plan_gemm
from algorithms.kernels.splitkv import (Q_BLOCKS_PACKED, PackedTiles, choose_splits, packed_attention,
                                plan_tiles, split_ranges)
from hwmodels.counters import HBM_READ_BYTES, HBM_WRITE_BYTES, MATMUL_FLOPS
from hwmodels.footprint import Allocation, Footprint
from hwmodels.memory import Recorder, SramOverflowError

PATHS = ("absorbed", "upproject")
DEFAULT_KV_LORA_RANK = 512   # DeepSeek-V2 d_c (arXiv 2405.04434 §3.1.2)
DEFAULT_ROPE_DIM = 64        # DeepSeek-V2 d_h^R (same)
HEAD_BLOCKS = (128, 64, 32, 16, 8, 4, 2, 1)

INFO = AlgorithmInfo(
    name="mla",
    title="Multi-head latent attention (DeepSeek-V2), up-projected or absorbed decode",
    paper="DeepSeek-AI, 2024 (arXiv 2405.04434), §2.1",
    exact=True,
    io_bound="Θ((H/g)⌈N_q/B_r⌉N(d_c+d_R)); upproject Θ(H⌈N_q/B_r⌉Nd_h)",
    no_kv_heads="every head reads the one latent cache of its sequence",
    options=(
        Option("path", str, "absorbed", "absorbed: W_UK/W_UV folded into query/output, "
               "attention over the latent; upproject: K, V rebuilt from the cache each step",
               choices=PATHS),
        Option("kv_lora_rank", int, 0, "d_c, latent width (0: the model's, else 512)",
               validate=lambda v: None if v >= 0 else "must be >= 0"),
        Option("rope_dim", int, 0, "d_h^R, decoupled RoPE key width (0: the model's, else 64)",
               validate=lambda v: None if v >= 0 else "must be >= 0"),
        Option("splits", int, 0, "key chunks per (sequence, head block); 0 = enough to fill "
               "the SMs", validate=lambda v: None if v >= 0 else "must be >= 0"),
    ),
)


@dataclass(frozen=True)
class MlaPlan(Plan):
    path: str
    kv_lora_rank: int       # d_c
    rope_dim: int           # d_h^R
    head_block: int         # g: heads sharing one latent (or K/V) tile load
    block_q: int
    block_k: int
    splits: int
    blocks_per_split: int
    smem_bytes: int
    register_bytes: int
    gemm_tile_m: int
    gemm_tile_n: int
    gemm_tile_k: int
    scale: float

    @property
    def dk(self) -> int:
        return self.kv_lora_rank + self.rope_dim


def latent_dims(wl, kv_lora_rank: int, rope_dim: int) -> tuple[int, int]:
    """(d_c, d_h^R): the options, else the model preset's, else DeepSeek-V2's."""
    model = getattr(wl, "model", None)
    if model is not None and not model.is_mla:
        # the name may be only a file's label (attnsim.simulate names the preset or the file)
        raise PlanError(f"{model.name} uses {model.attention.upper()} attention, not MLA: run "
                        f"'attnsim run gqa' with the same --model")
    dims = []
    for given, field, default, flag in ((kv_lora_rank, "kv_lora_rank", DEFAULT_KV_LORA_RANK,
                                         "--kv-lora-rank"),
                                        (rope_dim, "rope_head_dim", DEFAULT_ROPE_DIM,
                                         "--rope-dim")):
        preset = getattr(model, field, None) if model is not None else None
        if given and preset and given != preset:
            raise PlanError(f"mla: {flag} {given} conflicts with {model.name}'s {preset}; "
                            f"drop {flag} or use a custom --model TOML")
        dims.append(given or preset or default)
    return dims[0], dims[1]


def check_upproject_rows(wl) -> None:
    """The up-projected path rebuilds K and V for every head: batch x heads x N_k rows, under
    the workload row limit (``attnsim.validate``), which counts an MLA model's cache as the
    one latent row per token the absorbed path reads. Checked when that path is simulated;
    the absorbed run's comparison with it (``compare_paths``) only counts it, in Python
    integers, as a closed form of what it would move."""
    rows = wl.batch * wl.heads * wl.seq_k
    if rows > MAX_ROWS:
        raise PlanError(f"mla --path upproject rebuilds K and V per head: batch x heads x "
                        f"keys = {rows:,} rows exceeds 2**30 ({MAX_ROWS:,}, more than any one "
                        f"GPU's HBM holds); use --path absorbed (one latent row per token), "
                        f"or a smaller --batch or --seq")


def plan(wl, gpu, sram_bytes: int, path: str = "absorbed", kv_lora_rank: int = 0,
         rope_dim: int = 0, splits: int = 0) -> MlaPlan:
    d_c, d_r = latent_dims(wl, kv_lora_rank, rope_dim)
    e, d = wl.elem_bytes, wl.head_dim
    if path == "absorbed":
        groups = tuple(g for g in HEAD_BLOCKS if g <= wl.heads and wl.heads % g == 0)
        regs = gpu.register_bytes_per_sm
        tiles = plan_tiles(groups, wl.seq_q, d_c + d_r, d_c, e, sram_bytes, regs,
                           v_in_k=True, q_blocks=Q_BLOCKS_PACKED)
        kv_units = wl.batch                        # one latent "KV head" per sequence
    else:
        regs = gpu.register_bytes_per_sm // 2
        tiles = plan_tiles((1,), wl.seq_q, d + d_r, d, e, sram_bytes, regs,
                           q_blocks=Q_BLOCKS_PACKED)
        kv_units = wl.batch * wl.heads
    if tiles is None:
        # the registers may be what refuses (a GPU file's small register file): name both
        roomier = " a larger --sram-kb or" if sram_bytes < gpu.smem_bytes_per_block else ""
        raise SramOverflowError(f"mla ({path}): no tile with d_c = {d_c}, d_h^R = {d_r}, "
                                f"d_h = {d} fits {sram_bytes:,} bytes of SRAM and {regs:,} "
                                f"bytes of fp32 registers per CTA; use{roomier} a smaller "
                                f"--kv-lora-rank or --rope-dim")
    key_blocks = cdiv(wl.seq_k, tiles.block_k)
    if splits > key_blocks:
        raise PlanError(f"mla: --splits {splits} exceeds the {key_blocks} key blocks of "
                        f"{tiles.block_k} tokens; use at most {key_blocks}")
    packs = wl.heads // tiles.group if path == "absorbed" else 1
    base = kv_units * packs * cdiv(wl.seq_q, tiles.block_q)
    per, ranges = split_ranges(wl.seq_k, tiles.block_k,
                               splits or choose_splits(base, key_blocks, gpu.sm_count))
    gt = plan_gemm(e, sram_bytes, gpu.register_bytes_per_sm // 2)
    default_scale = 1.0 / math.sqrt(d)
    scale = 1.0 / math.sqrt(d + d_r) if math.isclose(wl.scale, default_scale) else wl.scale
    return MlaPlan(path=path, kv_lora_rank=d_c, rope_dim=d_r, head_block=tiles.group,
                   block_q=tiles.block_q, block_k=tiles.block_k, splits=len(ranges),
                   blocks_per_split=per, smem_bytes=tiles.smem_bytes,
                   register_bytes=tiles.register_bytes, gemm_tile_m=gt.tile_m,
                   gemm_tile_n=gt.tile_n, gemm_tile_k=gt.tile_k, scale=scale)


# ---- inputs ---------------------------------------------------------------------------------

def mla_inputs(wl, p: MlaPlan, inputs) -> dict:
    """Latent cache, RoPE parts and projection weights, from the inputs' seed (q^C = inputs.q)."""
    rng = np.random.default_rng([inputs.seed, 2405_04434])
    d_c, d_r, d, h = p.kv_lora_rank, p.rope_dim, wl.head_dim, wl.heads

    def randn(*shape, std=1.0):
        return (rng.standard_normal(shape, dtype=np.float32) * np.float32(std))

    return {
        "q_nope": inputs.q,                                        # (B, H, N_q, d_h)
        "q_rope": randn(wl.batch, h, wl.seq_q, d_r),               # (B, H, N_q, d_h^R)
        "c_kv": randn(wl.batch, wl.seq_k, d_c),                    # (B, N_k, d_c)
        "k_rope": randn(wl.batch, wl.seq_k, d_r),                  # (B, N_k, d_h^R)
        "w_uk": randn(h, d, d_c, std=1 / math.sqrt(d_c)),          # (H, d_h, d_c)
        "w_uv": randn(h, d, d_c, std=1 / math.sqrt(d_c)),          # (H, d_h, d_c)
    }


def up_projected(wl, x: dict):
    """float64 per-head q (d_h + d_h^R), K (d_h + d_h^R) and V (d_h): the definition, for
    ``attnsim.reference.attention_reference``."""
    f = np.float64
    k_c = np.einsum("bnc,hdc->bhnd", x["c_kv"].astype(f), x["w_uk"].astype(f))
    v = np.einsum("bnc,hdc->bhnd", x["c_kv"].astype(f), x["w_uv"].astype(f))
    k_r = np.broadcast_to(x["k_rope"].astype(f)[:, None], k_c.shape[:3] + (x["k_rope"].shape[-1],))
    q = np.concatenate([x["q_nope"].astype(f), x["q_rope"].astype(f)], axis=-1)
    return q, np.concatenate([k_c, k_r], axis=-1), v


def reference(wl, p: MlaPlan, inputs, attention_reference) -> np.ndarray:
    """float64 attention over the up-projected heads (the definition, before absorption):
    what ``o_mla`` is compared with in executed runs."""
    q, k, v = up_projected(wl, mla_inputs(wl, p, inputs))
    return attention_reference(q, k, v, causal=wl.causal, scale=p.scale)[0]


OUTPUT = "o_mla"      # the output ``reference`` checks (not the workload's q, k, v attention)


# ---- run ----------------------------------------------------------------------------------

def run(wl, p: MlaPlan, inputs, rec, compute: bool) -> dict:
    if p.path == "upproject":       # here, not in plan: the footprint's probes plan it too
        check_upproject_rows(wl)
    x = mla_inputs(wl, p, inputs) if compute else None
    start = len(rec.kernels)
    o = (run_absorbed if p.path == "absorbed" else run_upproject)(wl, p, x, rec, compute)
    mine = rec.kernels[start:]
    rec.info["mla"] = compare_paths(wl, p, rec, mine)
    rec.info["kv_cache"] = kv_cache_info(wl, rec.gpu, p.kv_lora_rank + p.rope_dim)
    if getattr(wl, "decode", False):
        rows = (wl.heads if p.path == "absorbed" else 1) * wl.seq_q
        # both paths read W_UK and W_UV (d_h x d_c each, per head) in their own GEMMs
        rec.info["decode"] = decode_info(wl, rec.gpu, mine, rows,
                                         attention_weight_params=2 * wl.heads * wl.head_dim
                                         * p.kv_lora_rank)
    return {"o_mla": o} if compute else {}


def run_absorbed(wl, p: MlaPlan, x, rec, compute):
    b, h, nq, d, d_c, e = wl.batch, wl.heads, wl.seq_q, wl.head_dim, p.kv_lora_rank, wl.elem_bytes
    q_lat = head_gemms(rec, "mla_absorb_q", wl, p, m=b * nq, n=d_c, k=d,
                       a=None if x is None else x["q_nope"], w=None if x is None else x["w_uk"],
                       trans_b=False, compute=compute)                   # q̃ = q^C W_UK
    q_full = k_lat = None
    if compute:
        q_full = np.concatenate([q_lat, x["q_rope"]], axis=-1)           # layout: [q̃ ; q^R]
        k_lat = np.concatenate([x["c_kv"], x["k_rope"]], axis=-1)[:, None]  # (B, 1, N, d_c+d_R)
    tiles = PackedTiles(p.head_block, p.block_q, p.block_k, p.smem_bytes, p.register_bytes)
    o_lat, _ = packed_attention(
        rec, "mla_latent_attn", q=q_full, k=k_lat, v=None, batch=b, q_heads=h, kv_heads=1,
        seq_q=nq, seq_k=wl.seq_k, dk=p.dk, dv=d_c, tiles=tiles, splits=p.splits,
        scale=p.scale, causal=wl.causal, e=e, dtype=wl.dtype, v_in_k=True,
        tc_path="wgmma" if rec.gpu.has_wgmma else "mma_sync", compute=compute)
    return head_gemms(rec, "mla_absorb_o", wl, p, m=b * nq, n=d, k=d_c, a=o_lat,
                      w=None if x is None else x["w_uv"], trans_b=True, compute=compute)


def head_gemms(rec, name, wl, p, *, m, n, k, a, w, trans_b, compute):
    """Per head h: out_h (m x n) = a_h (m x k) @ op(w[h]); a is (B, H, N_q, k)."""
    tm, tn, tk = p.gemm_tile_m, p.gemm_tile_n, p.gemm_tile_k
    e = wl.elem_bytes
    c = rec.kernel(name, ctas=wl.heads * gemm_ctas(m, n, _tiles(p)),
                   buffers={"A_tile": tm * tk * e, "B_tile": tk * tn * e},
                   register_bytes_per_cta=4 * tm * tn, matmul_dtype=wl.dtype,
                   prologue_bytes_per_cta=(tm + tn) * tk * e,   # the first k-chunks
                   **gemm_l2(rec, p, wl.heads, m, n, k, e, shared_b=False))
    if not compute:
        empty = np.empty((0, 0), np.float32)
        gemm(c, empty, empty, empty, m, n, k, tm, tn, tk, e, e, False, trans_b, 1.0, False)
        Recorder.repeat(c, wl.heads)
        return None
    out = np.zeros((wl.batch, wl.heads, wl.seq_q, n), dtype=np.float32)
    for h in range(wl.heads):
        a_h = np.ascontiguousarray(a[:, h].reshape(m, k))
        res = np.zeros((m, n), dtype=np.float32)
        gemm(c, a_h, np.ascontiguousarray(w[h]), res, m, n, k, tm, tn, tk, e, e, False, trans_b,
             1.0, True)
        out[:, h] = res.reshape(wl.batch, wl.seq_q, n)
    return out


def run_upproject(wl, p: MlaPlan, x, rec, compute):
    b, h, d, d_c, e = wl.batch, wl.heads, wl.head_dim, p.kv_lora_rank, wl.elem_bytes
    n_out = 2 * h * d
    tm, tn, tk = p.gemm_tile_m, p.gemm_tile_n, p.gemm_tile_k
    c = rec.kernel("mla_upproject", ctas=b * gemm_ctas(wl.seq_k, n_out, _tiles(p)),
                   buffers={"A_tile": tm * tk * e, "B_tile": tk * tn * e},
                   register_bytes_per_cta=4 * tm * tn, matmul_dtype=wl.dtype,
                   prologue_bytes_per_cta=(tm + tn) * tk * e,   # the first k-chunks
                   **gemm_l2(rec, p, b, wl.seq_k, n_out, d_c, e, shared_b=True))
    q_full = k_full = v_full = None
    if not compute:
        empty = np.empty((0, 0), np.float32)
        gemm(c, empty, empty, empty, wl.seq_k, n_out, d_c, tm, tn, tk, e, e, False, False, 1.0,
             False)
        Recorder.repeat(c, b)
    else:
        # [W_UK | W_UV]ᵀ as one (d_c x 2 H d_h) weight: columns h·d_h.. are head h's K, then V
        w = np.ascontiguousarray(np.concatenate([x["w_uk"], x["w_uv"]], axis=0)
                                 .reshape(n_out, d_c).T)
        kv = np.zeros((b, wl.seq_k, n_out), dtype=np.float32)
        for i in range(b):
            gemm(c, np.ascontiguousarray(x["c_kv"][i]), w, kv[i], wl.seq_k, n_out, d_c, tm, tn,
                 tk, e, e, False, False, 1.0, True)
        kv = kv.reshape(b, wl.seq_k, 2, h, d).transpose(2, 0, 3, 1, 4)  # (2, B, H, N, d_h)
        k_rope = np.broadcast_to(x["k_rope"][:, None], (b, h) + x["k_rope"].shape[1:])
        k_full = np.concatenate([kv[0], k_rope], axis=-1)                # [K^C_h ; k^R]
        v_full = np.ascontiguousarray(kv[1])
        q_full = np.concatenate([x["q_nope"], x["q_rope"]], axis=-1)
    tiles = PackedTiles(1, p.block_q, p.block_k, p.smem_bytes, p.register_bytes)
    o, _ = packed_attention(
        rec, "mla_attn", q=q_full, k=k_full, v=v_full, batch=b, q_heads=h, kv_heads=h,
        seq_q=wl.seq_q, seq_k=wl.seq_k, dk=d + p.rope_dim, dv=d, tiles=tiles, splits=p.splits,
        scale=p.scale, causal=wl.causal, e=e, dtype=wl.dtype, v_in_k=False,
        tc_path="mma_sync", compute=compute)
    return o


def gemm_l2(rec, p: MlaPlan, count: int, m: int, n: int, k: int, e: int, shared_b: bool):
    """L2 declaration of ``count`` GEMMs (m x k) @ (k x n) (``hwmodels.timing``): compulsory
    traffic reads A and B once and writes C once (B once in all when ``shared_b``: the same
    weight for every sequence); the re-read working set is B plus the A panels of the
    resident CTAs."""
    tiles = _tiles(p)
    b_reads = k * n * e * (1 if shared_b else count)
    resident = rec.resident_ctas(count * gemm_ctas(m, n, tiles),
                                 (tiles.tile_m + tiles.tile_n) * tiles.tile_k * e,
                                 4 * tiles.tile_m * tiles.tile_n)
    return {"unique_hbm_bytes": count * (m * k + m * n) * e + b_reads,
            "l2_working_set_bytes": k * n * e * (1 if shared_b else min(count, resident))
            + resident * tiles.tile_m * k * e}


def _tiles(p: MlaPlan) -> GemmTiles:
    return GemmTiles(p.gemm_tile_m, p.gemm_tile_n, p.gemm_tile_k)


# ---- MLA against dense GQA/MHA decoding ------------------------------------------------------

def compare_paths(wl, p: MlaPlan, rec, mine) -> dict:
    """HBM bytes and matmul FLOPs of this path (counted) and of the other (counted too, in
    count-only mode on a scratch recorder), and their ratio."""
    other_path = "upproject" if p.path == "absorbed" else "absorbed"
    other = plan(wl, rec.gpu, rec.sram_budget_bytes, path=other_path,
                 kv_lora_rank=p.kv_lora_rank, rope_dim=p.rope_dim)
    other = replace(other, scale=p.scale)
    scratch = Recorder(rec.gpu, rec.sram_budget_bytes)
    (run_absorbed if other_path == "absorbed" else run_upproject)(wl, other, None, scratch, False)

    def totals(kernels):
        hbm = sum(int(k.counters[HBM_READ_BYTES] + k.counters[HBM_WRITE_BYTES]) for k in kernels)
        return {"hbm_bytes": hbm, "matmul_flops": sum(int(k.counters[MATMUL_FLOPS]) for k in kernels)}

    this, that = totals(mine), totals(scratch.kernels)
    absorbed, up = (this, that) if p.path == "absorbed" else (that, this)
    return {
        "path": p.path,
        "absorbed": absorbed,
        "upproject": up,
        "hbm_bytes_upproject_over_absorbed": up["hbm_bytes"] / max(1, absorbed["hbm_bytes"]),
        "matmul_flops_upproject_over_absorbed":
            up["matmul_flops"] / max(1, absorbed["matmul_flops"]),
        "head_block": p.head_block,
        "kv_lora_rank": p.kv_lora_rank,
        "rope_dim": p.rope_dim,
        "scale": p.scale,
    }


def io_bound(wl, p: MlaPlan, sram_bytes: int) -> float:
    """The leading term in bytes: the cache each path streams, per query block."""
    t_r = cdiv(wl.seq_q, p.block_q)
    if p.path == "absorbed":
        return float(wl.batch * (wl.heads // p.head_block) * t_r * wl.seq_k * p.dk
                     * wl.elem_bytes)
    return float(wl.batch * wl.heads * t_r * wl.seq_k * wl.head_dim * wl.elem_bytes)


def footprint(wl, p: MlaPlan):
    """HBM allocations of one MLA attention call: the latent cache c_KV and k^R
    (B N_k (d_c + d_h^R) e, kept after the step), q^C and q^R, W_UK and W_UV (H d_h d_c e
    each), and per path:
    absorbed — q̃ (B H N_q d_c e) until the latent attention, its latent output ô (d_c wide)
    and lse until the W_UV GEMM, which writes O; upproject — the up-projected per-head K^C
    and V (B N_k 2 H d_h e: Θ(H N d_h), the cost the absorbed path avoids) until the
    attention, which writes O. Split-KV partials as ``footprints.packed_attention``."""
    b, h, nq, nk, d, e = wl.batch, wl.heads, wl.seq_q, wl.seq_k, wl.head_dim, wl.elem_bytes
    d_c, d_r = p.kv_lora_rank, p.rope_dim
    if p.path == "absorbed":
        attn, allocs = fp.packed_attention(
            wl, "mla_latent_attn", q_heads=h, kv_heads=1, dk=d_c + d_r, dv=d_c,
            splits=p.splits, v_in_k=True, q_name=None, kv_names=None, o_name="o_latent",
            o_last="mla_absorb_o", o_kind="workspace", first="mla_absorb_q",
            last="mla_absorb_o")
        phases = ("mla_absorb_q",) + attn + ("mla_absorb_o",)
        allocs += [Allocation("q_absorbed", b * h * nq * d_c * e, "mla_absorb_q", attn[0]),
                   Allocation("o", b * h * nq * d * e, "mla_absorb_o", "mla_absorb_o", "output")]
    else:
        attn, allocs = fp.packed_attention(
            wl, "mla_attn", q_heads=h, kv_heads=h, dk=d + d_r, dv=d, splits=p.splits,
            q_name=None, kv_names=None, first="mla_upproject")
        phases = ("mla_upproject",) + attn
        allocs.append(Allocation("kv_upprojected", b * nk * 2 * h * d * e, "mla_upproject",
                                 "mla_attn"))
    first, last = phases[0], phases[-1]
    allocs += [Allocation("q", b * h * nq * d * e, first, last, "input"),
               Allocation("q_rope", b * h * nq * d_r * e, first, last, "input"),
               Allocation("kv_latent", b * nk * (d_c + d_r) * e, first, last, "cache"),
               Allocation("w_uk", h * d * d_c * e, first, last, "input"),
               Allocation("w_uv", h * d * d_c * e, first, last, "input")]
    return Footprint(phases, allocs)
