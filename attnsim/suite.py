"""Gathering results for the report: every algorithm on one workload, growth sweeps over N.

Pure data (SimResult objects and plain dicts); ``reports/`` turns them into tables.
"""
from __future__ import annotations

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
