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

from dataclasses import dataclass

from algorithms.base import PlanError
from attnsim.validate import hypothetical_workloads
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
        with hypothetical_workloads():     # a closed form: not bound by simulation limits
            probe = with_seq(wl, n)
        return footprint(module, probe, module.plan(probe, gpu, sram_bytes, **options))
    except (PlanError, SramOverflowError, ValueError):
        return None


def max_seq_that_fits(module, wl, plan, gpu, sram_bytes: int, options: dict,
                      capacity: int | None = None) -> int | None:
    """The longest sequence length (see ``with_seq``) whose footprint fits ``capacity``
    (default: the GPU's HBM), for this algorithm, workload, pass and options; None when not
    even the shortest plannable length fits; ``SEARCH_LIMIT`` (2^40) when every length the
    search tries fits (a footprint that does not grow with N, as a recurrent decoding
    step's).

    Exponential search from the workload's own length, then bisection. Lengths the algorithm
    cannot plan for (ring: multiples of the device count; reformer: N / bucket size even and
    factorable) are mapped down to the longest plannable one by the module's optional
    ``plannable_seq(wl, plan, n)``, which keeps the test monotone in n. The footprints are
    monotone in n from a few thousand tokens up (tested for every algorithm); below about 1K
    tokens MLA's automatic split count, and with it its fp32 partials, can fall as n grows,
    so an answer that short may be a few tokens below the longest."""
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
        if hi > SEARCH_LIMIT:            # the footprint does not grow with N
            return SEARCH_LIMIT
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


# max_seq_that_fits does not depend on the length it starts from (the footprint is monotone
# in it): the report's growth sweep asks the same question at every N, so answers are kept
# per (algorithm, workload without its varied length, GPU, budget, options).
_LONGEST: dict = {}


def _longest_key(module, wl, gpu, sram_bytes: int, options: dict):
    varied = {"seq_k"} if wl.decode or wl.seq_q != wl.seq_k else {"seq_q", "seq_k"}
    shape = tuple(sorted((k, repr(v)) for k, v in wl.to_dict().items() if k not in varied))
    return (module.__name__, shape, gpu, sram_bytes, tuple(sorted(map(repr, options.items()))))


def memory_summary(module, wl, plan, gpu, sram_bytes: int, options: dict) -> dict:
    """The ``memory`` object of ``run --format json``."""
    f = footprint(module, wl, plan)
    key = _longest_key(module, wl, gpu, sram_bytes, options)
    if key not in _LONGEST:
        _LONGEST[key] = max_seq_that_fits(module, wl, plan, gpu, sram_bytes, options)
    return {
        "peak_bytes": f.peak_bytes,
        "by_tensor": f.by_tensor,
        "capacity_bytes": gpu.hbm_bytes,
        "fits": f.peak_bytes <= gpu.hbm_bytes,
        "max_seq_that_fits": _LONGEST[key],
        "peak_phase": f.peak_phase,
        "largest_at_peak": f.largest_at_peak,
        "allocations": f.to_dict()["allocations"],
        "varies": "seq_k (context)" if wl.decode or wl.seq_q != wl.seq_k else "seq_q = seq_k",
        "search": "bisection on the closed-form footprint (plan + footprint per probe; no "
                  "kernel runs)",
    }


@dataclass(frozen=True)
class FootprintQuestion:
    """What ``memory_summary`` needs, by the algorithm's name, so that a simulation's result
    can carry it across processes (the report's workers) and answer it when asked."""
    algorithm: str
    workload: object
    plan: object
    gpu: object
    sram_bytes: int
    options: dict

    def summary(self) -> dict:
        """``memory_summary``: the footprint and the longest sequence that fits (a search)."""
        return memory_summary(self._module(), self.workload, self.plan, self.gpu,
                              self.sram_bytes, self.options)

    def peak_bytes(self) -> int:
        """The footprint's peak alone: one closed form, no search."""
        return footprint(self._module(), self.workload, self.plan).peak_bytes

    def _module(self):
        from algorithms.registry import get_algorithm
        return get_algorithm(self.algorithm)


# ---- the report's tables --------------------------------------------------------------------

def _plan(module, wl, gpu, sram_bytes, options):
    try:
        return module.plan(wl, gpu, sram_bytes, **options)
    except (PlanError, SramOverflowError, ValueError):
        return None


def longest_context(name: str, wl, gpu, sram_bytes: int | None = None,
                    options: dict | None = None) -> dict | None:
    """What fits of ``name`` on ``wl``'s shape: the footprint at ``wl``, the longest sequence
    that fits, and the tensor that runs out first (the largest at the peak of the first
    plannable length beyond it). None when the algorithm cannot plan ``wl``."""
    from algorithms.base import check_options
    from algorithms.registry import get_algorithm
    module = get_algorithm(name)
    budget = sram_bytes or gpu.smem_bytes_per_block
    opts = check_options(module.INFO, options or {})
    plan = _plan(module, wl, gpu, budget, opts)
    if plan is None:
        return None
    here = footprint(module, wl, plan)
    longest = max_seq_that_fits(module, wl, plan, gpu, budget, opts)
    runs_out = None
    if longest is not None:
        plannable = getattr(module, "plannable_seq", None)
        step = 1
        while runs_out is None and step <= 1 << 20:
            n = longest + step
            f = peak_at(module, wl, gpu, budget, opts, plannable(wl, plan, n) if plannable else n)
            if f is not None and f.peak_bytes > gpu.hbm_bytes:
                runs_out = f.largest_at_peak
            step *= 2
    return {"algorithm": name, "passes": wl.passes, "batch": wl.batch,
            "workload": wl.describe(), "peak_bytes": here.peak_bytes,
            "fits": here.peak_bytes <= gpu.hbm_bytes, "max_seq_that_fits": longest,
            "runs_out_first": runs_out}


def longest_context_table(gpu, wl, names=None, sram_bytes: int | None = None) -> list[dict]:
    """Every algorithm (or ``names``), forward and training (fwd+bwd where it has a backward),
    at batch 1 and at ``wl``'s batch. Algorithms that only plan causal workloads (NSA) are
    taken causal, as the report's main table does."""
    from algorithms.registry import algorithm_names, get_algorithm
    records = []
    for name in names or algorithm_names():
        passes = ["fwd"] + (["fwd+bwd"] if "bwd" in get_algorithm(name).INFO.passes else [])
        for batch in dict.fromkeys((1, wl.batch)):
            for p in passes:
                probe = wl.replace(batch=batch, passes=p, dropout=0.0)
                rec = longest_context(name, probe, gpu, sram_bytes)
                if rec is None and not probe.causal:
                    rec = longest_context(name, probe.replace(causal=True), gpu, sram_bytes)
                records.append(rec or {"algorithm": name, "passes": p, "batch": batch,
                                       "workload": probe.describe(), "peak_bytes": None,
                                       "fits": None, "max_seq_that_fits": None,
                                       "runs_out_first": None})
    return records


RING_DEVICES = (1, 2, 3, 4, 8, 16, 32, 64)


def ring_capacity_table(gpu, wl, devices=RING_DEVICES, sram_bytes: int | None = None) -> list[dict]:
    """Ring Attention per device count P: one device's footprint at ``wl`` (when N >= P),
    ``max_context_tokens``, the longest total context the P devices hold, and under a causal
    mask the slowdown against perfect balance each token order leaves
    (``ring.load_balance``: contiguous blocks against striped)."""
    from algorithms import ring
    budget = sram_bytes or gpu.smem_bytes_per_block
    records = []
    for p in devices:
        opts = {"devices": p}
        # the workload's length rounded down to whole blocks (at least one token a device)
        probe = with_seq(wl, max(p, wl.seq_k - wl.seq_k % p))
        plan = _plan(ring, probe, gpu, budget, opts)
        if plan is None:
            continue
        here = footprint(ring, probe, plan)
        # the orders balance causal self-attention (striped deals a square sequence's tokens
        # round-robin), whatever the probed workload: a decode step or a cross-attention
        causal = probe.replace(causal=True, decode=False, seq_q=probe.seq_k)
        balance = {order: ring.load_balance(causal, ring.plan(causal, gpu, budget, devices=p,
                                                               ring_order=order))
                   for order in ring.ORDERS}
        records.append({"devices": p, "seq": probe.seq_k,
                        "per_device_peak_bytes": here.peak_bytes,
                        "max_context_tokens": max_seq_that_fits(ring, probe, plan, gpu, budget,
                                                                opts),
                        "causal_step_imbalance": {order: b["step_imbalance"]
                                                  for order, b in balance.items()}})
    return records
