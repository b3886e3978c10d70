"""The same sparsity mask applied to dense standard attention — the baseline a user gets
without a block-sparse kernel (e.g. ``masked_fill`` on the full score matrix), for
comparison with the block-sparse algorithms (local, sparse_transformer, longformer,
bigbird, block_sparse).

Idea: standard attention (``algorithms.standard``, Dao et al., 2022, arXiv 2205.14135,
Algorithm 0) with its ``mask`` kernel always on and reading the pattern's materialised
boolean mask: the pattern saves nothing, every one of the N_q N_k scores is computed,
written, masked, softmaxed and read back.

Kernels: ``standard.run`` itself, given the pattern's mask: ``qk_gemm``, ``softmax`` and
``pv_gemm`` as always; its ``mask`` kernel reads S (N_q N_k e) and the boolean mask (N_q N_k
bytes, one byte per entry), does one select per score and writes S (N_q N_k e), per head
(standard's L2 model serves the shared mask from L2 after the first head). The causal
mask, if any, is folded into the same boolean mask (one pass).
Bound: Θ(N d + N²) (Theorem 2), whatever the density.

Options: ``mask_of`` (--mask-of NAME) picks the pattern; the pattern's own options are
accepted under their usual names (--window, --stride, --block, ...) and default to that
pattern's defaults. The result carries the pattern's ``pattern`` summary and mask, so the
output is checked against masked exact attention.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from algorithms import standard
from algorithms.base import AlgorithmInfo, Option, Plan, PlanError, check_options

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
    return standard.run(wl, p.dense, inputs, rec, compute, mask=mask)


def io_bound(wl, p: MaskedDensePlan, sram_bytes: int) -> float:
    return standard.io_bound(wl, p.dense, sram_bytes)


def footprint(wl, p: MaskedDensePlan):
    """Standard attention's allocations (S and P, Θ(N²)) with the pattern's boolean mask
    (N_q N_k bytes) in place of the causal one."""
    return standard.footprint_forward(wl, mask_name="pattern_mask")
