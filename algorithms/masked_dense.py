"""The same sparsity mask applied to dense standard attention — the baseline a user gets
without a block-sparse kernel (e.g. ``masked_fill`` on the full score matrix), for
comparison with the block-sparse algorithms (local, sparse_transformer, longformer,
bigbird, block_sparse).

Idea: standard attention (``algorithms.standard``, Dao et al., 2022, arXiv 2205.14135,
Algorithm 0) with its ``mask`` kernel always on and reading the pattern's materialised
boolean mask: the pattern saves nothing, every one of the N_q N_k scores is computed,
written, masked, softmaxed and read back.

Kernels per head (e = storage bytes per element): ``qk_gemm`` and ``pv_gemm`` and
``softmax`` exactly as ``standard``; ``mask`` reads S (N_q N_k e) and the boolean mask
(N_q N_k bytes, one byte per entry), does one select per score and writes S (N_q N_k e).
The pattern's causal mask, if any, is folded into the same boolean mask (one pass).
Bound: Θ(N d + N²) (Theorem 2), whatever the density.

Options: ``mask_of`` (--mask-of NAME) picks the pattern; the pattern's own options are
accepted under their usual names (--window, --stride, --block, ...) and default to that
pattern's defaults. The result carries the pattern's ``pattern`` summary and mask, so the
output is checked against masked exact attention.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from algorithms import standard
from algorithms.base import AlgorithmInfo, Option, Plan, PlanError, check_options
from algorithms.common import iter_heads, new_output, placeholder
from algorithms.gemm import gemm, gemm_ctas
from hwmodels.primitives import count_load, count_other, count_store

PATTERNS = ("local", "sparse_transformer", "longformer", "bigbird", "block_sparse")


def _pattern_module(name):
    import importlib
    return importlib.import_module(f"algorithms.{name}")


def _union_options() -> tuple:
    """Every pattern's options, default None (= that pattern's default)."""
    seen = {}
    for name in PATTERNS:
        for opt in _pattern_module(name).INFO.options:
            if opt.name not in seen:
                seen[opt.name] = Option(opt.name, opt.type, None,
                                        f"as in {name} (default: the pattern's)")
    return tuple(seen.values())


INFO = AlgorithmInfo(
    name="masked_dense",
    title="Standard attention with a sparsity pattern's mask (dense baseline)",
    paper="Dao et al., 2022 (arXiv 2205.14135), Algorithm 0, with a materialised mask",
    exact=True,
    io_bound="Θ(Nd + N²)",
    options=(Option("mask_of", str, "local", "the pattern whose mask is applied",
                    choices=PATTERNS),) + _union_options(),
)


@dataclass(frozen=True)
class MaskedDensePlan(Plan):
    dense: standard.StandardPlan
    mask_of: str
    pattern: Plan


def plan(wl, gpu, sram_bytes: int, mask_of: str = "local", **pattern_options) -> MaskedDensePlan:
    module = _pattern_module(mask_of)
    given = {k: v for k, v in pattern_options.items() if v is not None}
    own = {o.name for o in module.INFO.options}
    foreign = sorted(set(given) - own)
    if foreign:
        raise PlanError(f"masked_dense: --mask-of {mask_of} takes "
                        f"{', '.join(o.flag for o in module.INFO.options)}, not "
                        f"{', '.join('--' + f.replace('_', '-') for f in foreign)}")
    pattern_plan = module.plan(wl, gpu, sram_bytes, **check_options(module.INFO, given))
    return MaskedDensePlan(standard.plan(wl, gpu, sram_bytes), mask_of, pattern_plan)


def run(wl, p: MaskedDensePlan, inputs, rec, compute: bool) -> dict:
    module = _pattern_module(p.mask_of)
    layout = module.layout(wl, p.pattern)
    mask = module.element_mask(wl, p.pattern) if compute else np.empty((0, 0), np.bool_)
    rec.info["pattern"] = {"name": p.mask_of, **module.pattern_params(p.pattern),
                           **layout.summary()}
    if compute:
        rec.info["mask"] = mask
    nq, nk, d, e = wl.seq_q, wl.seq_k, wl.head_dim, wl.elem_bytes
    bh = wl.batch * wl.heads
    dp = p.dense
    t = dp.tiles
    regs = t.register_bytes()
    c_qk = rec.kernel("qk_gemm", ctas=bh * gemm_ctas(nq, nk, t), buffers=t.smem_buffers(e),
                      register_bytes_per_cta=regs, matmul_dtype=wl.dtype)
    c_mask = rec.kernel("mask", ctas=bh * nq, buffers={},
                        threads_per_cta=standard.SOFTMAX_THREADS, tc_path="none")
    c_sm = rec.kernel("softmax", ctas=bh * nq, buffers={"row": dp.softmax_chunk * e},
                      threads_per_cta=standard.SOFTMAX_THREADS, tc_path="none")
    c_pv = rec.kernel("pv_gemm", ctas=bh * gemm_ctas(nq, d, t), buffers=t.smem_buffers(e),
                      register_bytes_per_cta=regs, matmul_dtype=wl.dtype)
    o = new_output(wl, compute)
    s = np.zeros((nq, nk) if compute else (0, nk), dtype=np.float32)   # S, then P, in HBM
    for b, h, q, k, v in iter_heads(wl, inputs, compute):
        gemm(c_qk, q, k, s, nq, nk, d, t.tile_m, t.tile_n, t.tile_k, e, e, False, True,
             wl.scale, compute)
        mask_kernel(c_mask, s, mask, nq, nk, e, compute)
        standard.softmax_kernel(c_sm, s, nq, nk, dp.softmax_chunk, e, compute)
        o_head = o[b, h] if compute else placeholder(d)
        gemm(c_pv, s, v, o_head, nq, d, nk, t.tile_m, t.tile_n, t.tile_k, e, e, False, False,
             1.0, compute)
    if not compute:
        for counters in (c_qk, c_mask, c_sm, c_pv):
            rec.repeat(counters, bh)
    return {"o": o} if compute else {}


@njit(cache=True)
def mask_kernel(c, s, mask, seq_q, seq_k, e, compute):
    """S[i, j] = -inf where the mask is False: one row per CTA, reading the boolean mask."""
    for i in range(seq_q):
        count_load(c, seq_k * e)                           # row of S
        count_load(c, seq_k * standard.MASK_BYTES)         # row of the boolean mask
        count_other(c, seq_k)                              # select
        count_store(c, seq_k * e)                          # masked row of S
        if compute:
            for j in range(seq_k):
                if not mask[i, j]:
                    s[i, j] = -np.inf


def io_bound(wl, p: MaskedDensePlan, sram_bytes: int) -> float:
    return standard.io_bound(wl, p.dense, sram_bytes)
