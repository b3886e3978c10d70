"""Gathering results for the report: every algorithm on one workload, growth sweeps over N.

Pure data (SimResult objects and plain dicts); ``reports/`` turns them into tables.
"""
from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field

import numpy as np

from algorithms.base import PlanError
from algorithms.registry import algorithm_names, get_algorithm
from attnsim.simulate import SimResult, simulate
from attnsim.workload import Workload
from hwmodels.gpus import GPU
from hwmodels.memory import SramOverflowError

# The report's default workload: the FlashAttention-2 paper's benchmark shape (hidden size
# 2048 = 16 heads x 128, batch x seq = 16K tokens) at N = 4096, in fp16.
DEFAULT_WORKLOAD = Workload(batch=4, heads=16, seq_q=4096, head_dim=128, dtype="fp16")
DEFAULT_GROWTH_SEQS = (1024, 2048, 4096, 8192, 16384, 32768, 65536)
# Executed-mode accuracy check: small enough to run in seconds for every algorithm.
ACCURACY_WORKLOAD = Workload(batch=1, heads=2, seq_q=1024, head_dim=64, dtype="fp16")


@dataclass
class AlgorithmRow:
    """One algorithm on the report's workload (None where it does not apply)."""
    name: str
    result: SimResult | None
    causal: SimResult | None = None
    training: SimResult | None = None
    accuracy: SimResult | None = None
    error: str | None = None        # why it could not run on this workload


@dataclass
class GrowthSeries:
    name: str
    bound: str
    seqs: list = field(default_factory=list)
    hbm_bytes: list = field(default_factory=list)
    io_bound_bytes: list = field(default_factory=list)

    def fitted_exponent(self) -> float | None:
        """Slope of log(HBM bytes) against log(N) over the upper half of the sweep."""
        if len(self.seqs) < 2:
            return None
        half = max(2, len(self.seqs) // 2 + 1)
        x = np.log(np.array(self.seqs[-half:], dtype=float))
        y = np.log(np.array(self.hbm_bytes[-half:], dtype=float))
        return float(np.polyfit(x, y, 1)[0])

    def bound_exponent(self) -> float | None:
        if len(self.seqs) < 2:
            return None
        half = max(2, len(self.seqs) // 2 + 1)
        x = np.log(np.array(self.seqs[-half:], dtype=float))
        y = np.log(np.array(self.io_bound_bytes[-half:], dtype=float))
        return float(np.polyfit(x, y, 1)[0])


def _try(fn):
    try:
        return fn(), None
    except (PlanError, SramOverflowError, ValueError) as exc:
        return None, str(exc)


def run_all(gpu: GPU, wl: Workload = DEFAULT_WORKLOAD, names=None, sram_bytes=None,
            accuracy: bool = True, progress=None) -> list[AlgorithmRow]:
    """Every registered algorithm (or ``names``) on ``wl`` in count-only mode, plus its causal
    and training variants where it has them and an executed accuracy check."""
    rows = []
    for name in names or algorithm_names():
        info = get_algorithm(name).INFO
        result, err = _try(lambda: simulate(name, wl, gpu, compute=False, sram_bytes=sram_bytes))
        causal, _ = _try(lambda: simulate(name, wl.replace(causal=True), gpu, compute=False,
                                          sram_bytes=sram_bytes))
        if result is None and causal is not None:
            # causal-only algorithms (NSA) are shown on the causal variant of the workload
            result, err = causal, None
        row = AlgorithmRow(name=name, result=result, causal=causal, error=err)
        if result is not None:
            if "bwd" in info.passes:
                row.training, _ = _try(lambda: simulate(name, result.workload.replace(passes="fwd+bwd"),
                                                        gpu, compute=False, sram_bytes=sram_bytes))
            if accuracy:
                acc_wl = ACCURACY_WORKLOAD.replace(head_dim=wl.head_dim, dtype=wl.dtype,
                                                   causal=result.workload.causal)
                row.accuracy, _ = _try(lambda: simulate(name, acc_wl, gpu, compute=True,
                                                        sram_bytes=sram_bytes))
        rows.append(row)
        if progress:
            progress(name)
    return rows


def growth(gpu: GPU, wl: Workload = DEFAULT_WORKLOAD, seqs=DEFAULT_GROWTH_SEQS, names=None,
           sram_bytes=None, progress=None) -> list[GrowthSeries]:
    """HBM traffic against N (count-only) for each algorithm, with its bound's value."""
    series = []
    for name in names or algorithm_names():
        info = get_algorithm(name).INFO
        s = GrowthSeries(name=name, bound=info.io_bound)
        for n in seqs:
            r, _ = _try(lambda: simulate(name, wl.replace(seq_q=n, seq_k=n), gpu, compute=False,
                                         sram_bytes=sram_bytes))
            if r is None and not wl.causal:     # causal-only algorithms: the causal workload
                r, _ = _try(lambda: simulate(name, wl.replace(seq_q=n, seq_k=n, causal=True),
                                             gpu, compute=False, sram_bytes=sram_bytes))
            if r is None:
                continue
            s.seqs.append(n)
            s.hbm_bytes.append(r.hbm_bytes)
            s.io_bound_bytes.append(r.io_bound_bytes)
        series.append(s)
        if progress:
            progress(name)
    return series


# Algorithms whose kernels share compiled code (a building block of algorithms/kernels/):
# one worker simulates a whole family, so no two workers compile the same kernels at once.
# Listed roughly by how long their kernels take to compile, longest first, so that no worker
# is left with a long compilation at the end. An algorithm missing here is a family of one.
KERNEL_FAMILIES = (
    ("linear", "rfa", "performer"),                   # feature_kernels
    ("nsa",),                                         # nsa_kernels (+ splitkv, sparse exec)
    ("gqa", "mla"),                                   # splitkv
    ("flash2", "flash3", "ring", "diff"),             # flash2's tile loop, flash_tile
    ("local", "sparse_transformer", "longformer", "bigbird", "block_sparse"),   # sparse exec
    ("flash1",),
    ("standard", "masked_dense"),                     # gemm
    ("reformer",),                                    # radix_sort
)


def default_jobs() -> int:
    """Worker processes for the report's sweep: the CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:                            # not on Linux
        return max(1, os.cpu_count() or 1)


def _families(names) -> list[tuple[str, ...]]:
    """``names`` grouped by KERNEL_FAMILIES, in the families' order, each name once."""
    wanted, groups = list(names), []
    for family in KERNEL_FAMILIES:
        group = tuple(n for n in wanted if n in family)
        if group:
            groups.append(group)
    grouped = {n for g in groups for n in g}
    groups += [(n,) for n in wanted if n not in grouped]
    return groups


def _sweep_family(gpu, wl, family, seqs, sram_bytes, accuracy):
    rows = run_all(gpu, wl, family, sram_bytes=sram_bytes, accuracy=accuracy)
    series = growth(gpu, wl, seqs, family, sram_bytes=sram_bytes)
    return family, rows, series


def sweep(gpu: GPU, wl: Workload = DEFAULT_WORKLOAD, seqs=DEFAULT_GROWTH_SEQS, names=None,
          sram_bytes=None, accuracy: bool = True, jobs: int = 1,
          progress=None) -> tuple[list[AlgorithmRow], list[GrowthSeries]]:
    """``run_all`` and ``growth`` for every algorithm (or ``names``), in registry order.

    With ``jobs`` > 1 the algorithms' families run in that many worker processes (forked,
    so they start with everything imported). The first run after an install spends most of
    its time compiling Numba kernels, and Numba compiles one function at a time per process:
    the workers compile different families at once and write the on-disk cache, which every
    later run loads. The results are the same as ``jobs=1`` (the same simulations, gathered
    in the same order). ``progress(n)`` is called with the number of algorithms finished.
    """
    names = list(names or algorithm_names())
    families = _families(names)
    done: dict[str, tuple] = {}

    def collect(family, rows, series):
        for name, row, s in zip(family, rows, series):
            done[name] = (row, s)
        if progress:
            progress(len(family))

    jobs = min(jobs, len(families))
    if jobs <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        for family in families:
            collect(*_sweep_family(gpu, wl, family, seqs, sram_bytes, accuracy))
    else:
        with ProcessPoolExecutor(max_workers=jobs,
                                 mp_context=multiprocessing.get_context("fork")) as pool:
            futures = [pool.submit(_sweep_family, gpu, wl, family, seqs, sram_bytes, accuracy)
                       for family in families]
            for future in as_completed(futures):
                collect(*future.result())
    return [done[n][0] for n in names], [done[n][1] for n in names]
