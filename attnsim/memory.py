"""HBM capacity: an algorithm's footprint on a workload, whether it fits the GPU, and the
longest sequence that does.

The footprint is each algorithm's ``footprint(wl, plan)`` (``hwmodels.footprint``): a closed
form of the workload and the plan, so ``max_seq_that_fits`` bisects on it directly — every
probe plans for the probed length and evaluates the closed form; no kernel runs and nothing
is allocated, so a search up to millions of tokens takes milliseconds (the sparse patterns
build their block layout per probe).

The length that varies: decode workloads vary the context N_k (the KV cache), the new
tokens N_q stay; self-attention (N_q = N_k) varies both; cross-attention varies N_k.
"""
from __future__ import annotations

from algorithms.base import PlanError
from hwmodels.memory import SramOverflowError

SEARCH_LIMIT = 1 << 40       # tokens: far beyond any GPU's HBM at one byte per token


def footprint(module, wl, plan):
    """The ``hwmodels.footprint.Footprint`` of ``module`` on ``wl`` with ``plan``."""
    return module.footprint(wl, plan)


def with_seq(wl, n: int):
    """``wl`` at sequence length n (see the module docstring for which length varies)."""
    if not wl.decode and wl.seq_q == wl.seq_k:
        return wl.replace(seq_q=n, seq_k=n)
    return wl.replace(seq_k=n)


def seq_of(wl) -> int:
    return wl.seq_k


def peak_at(module, wl, gpu, sram_bytes: int, options: dict, n: int):
    """The footprint at sequence length n, or None when the algorithm cannot plan for it."""
    if n < 1:
        return None
    try:
        probe = with_seq(wl, n)
        return footprint(module, probe, module.plan(probe, gpu, sram_bytes, **options))
    except (PlanError, SramOverflowError, ValueError):
        return None


def max_seq_that_fits(module, wl, plan, gpu, sram_bytes: int, options: dict,
                      capacity: int | None = None) -> int | None:
    """The longest sequence length (see ``with_seq``) whose footprint fits ``capacity``
    (default: the GPU's HBM), for this algorithm, workload, pass and options; None when not
    even the shortest plannable length fits.

    Exponential search from the workload's own length, then bisection. Lengths the algorithm
    cannot plan for (ring: multiples of the device count; reformer: N / bucket size even and
    factorable) are mapped down to the longest plannable one by the module's optional
    ``plannable_seq(wl, plan, n)``, which keeps the test monotone in n."""
    capacity = gpu.hbm_bytes if capacity is None else capacity
    plannable = getattr(module, "plannable_seq", None)

    def fits(n: int) -> bool:
        m = plannable(wl, plan, n) if plannable else n
        f = peak_at(module, wl, gpu, sram_bytes, options, m)
        return f is not None and f.peak_bytes <= capacity

    n = seq_of(wl)
    if fits(n):
        lo, hi = n, 2 * n
        while hi <= SEARCH_LIMIT and fits(hi):
            lo, hi = hi, 2 * hi
        if hi > SEARCH_LIMIT:
            return plannable(wl, plan, lo) if plannable else lo
    else:
        hi = n
        lo = n // 2
        while lo >= 1 and not fits(lo):
            hi, lo = lo, lo // 2
        if lo < 1:
            return None
    while hi - lo > 1:                       # fits(lo), not fits(hi)
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return plannable(wl, plan, lo) if plannable else lo


def memory_summary(module, wl, plan, gpu, sram_bytes: int, options: dict) -> dict:
    """The ``memory`` object of ``run --format json``."""
    f = footprint(module, wl, plan)
    return {
        "peak_bytes": f.peak_bytes,
        "by_tensor": f.by_tensor,
        "capacity_bytes": gpu.hbm_bytes,
        "fits": f.peak_bytes <= gpu.hbm_bytes,
        "max_seq_that_fits": max_seq_that_fits(module, wl, plan, gpu, sram_bytes, options),
        "peak_phase": f.peak_phase,
        "largest_at_peak": f.largest_at_peak,
        "allocations": f.to_dict()["allocations"],
        "varies": "seq_k (context)" if wl.decode or wl.seq_q != wl.seq_k else "seq_q = seq_k",
        "search": "bisection on the closed-form footprint (plan + footprint per probe; no "
                  "kernel runs)",
    }
