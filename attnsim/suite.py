"""Gathering results for the report: every algorithm on one workload, growth sweeps over N.

Pure data (SimResult objects and plain dicts); ``reports/`` turns them into tables.
"""
from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field

import numpy as np

from algorithms.registry import algorithm_names, get_algorithm
from attnsim.simulate import NOT_SIMULATED, SimResult, blas_controller, simulate
from attnsim.workload import Workload
from hwmodels import get_gpu
from hwmodels.gpus import GPU

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
    predicted_s: list = field(default_factory=list)     # the timing model's, per N
    flops: list = field(default_factory=list)
    resident_bytes: list = field(default_factory=list)  # HBM footprint's peak, per N

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
    except NOT_SIMULATED as exc:
        return None, str(exc)


@dataclass(frozen=True)
class Skipped:
    """A side task of the report that this workload or GPU rules out (a plan that does not
    fit, a head dim or model an algorithm does not take): the report leaves its section out
    and says why, as the per-algorithm table's ``n/a`` rows do, instead of failing whole."""
    reason: str


def side_task(fn, args):
    """``fn(*args)``, or ``Skipped`` with the reason when the workload or GPU rules it out.
    Anything else is a bug and propagates."""
    result, err = _try(lambda: fn(*args))
    return Skipped(err) if err is not None else result


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
            s.predicted_s.append(r.time.predicted_s)
            s.flops.append(r.flops)
            s.resident_bytes.append(r.peak_hbm_bytes)
        series.append(s)
        if progress:
            progress(name)
    return series


# Algorithms whose kernels share compiled code (a building block of algorithms/kernels/):
# one worker simulates a whole family, so no two workers compile the same kernels at once.
# An algorithm missing here is a family of one.
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

# Seconds the H100 report's first run spends on each unit of work (a family, by its first
# algorithm, or a side task, by its key), measured by ``benchmarks/bench_first_run.py
# --units`` on 2 CPUs with an empty Numba cache; almost all of it is compilation. The
# workers take the units longest first, so that no worker is left with a long compilation
# at the end while the other idles. Only the order depends on these; a unit missing here
# counts as one second.
FIRST_RUN_SECONDS = {
    "linear": 17, "nsa": 14, "decode_paths": 11, "flash2": 6, "approx_error_by_family": 4,
    "sparse_transformer_layouts": 4, "flash1": 3, "gqa": 3, "reformer": 3, "throughput": 2,
    "local": 2, "fp8": 2,                      # fp8: 0.6 s cold but 0.5 s warm: not last
    "standard": 1,
}


def first_run_seconds(unit: str) -> float:
    return FIRST_RUN_SECONDS.get(unit, 1)


def available_cpus() -> int:
    """The CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:                            # not on Linux
        return max(1, os.cpu_count() or 1)


def default_jobs() -> int:
    """Worker processes for the report's sweep: one per CPU. A first run spends most of its
    time compiling, and the workers compile different kernel families at once; a warm run
    loads each family's cached kernels in the worker that runs it and simulates in parallel
    (3.7 s against 6.2 s in one process for the H100 report on 2 CPUs)."""
    return available_cpus()


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


def _one_blas_thread():
    """A worker's BLAS on one thread. The workers already keep every CPU busy, and an idle
    BLAS thread spins, taking CPU time from the other workers; the serial sweep does the
    same, so that both give the same float64 references to the last bit."""
    blas_controller().limit(limits=1, user_api="blas")


def _sweep_family(gpu, wl, family, seqs, sram_bytes, accuracy):
    rows = run_all(gpu, wl, family, sram_bytes=sram_bytes, accuracy=accuracy)
    series = growth(gpu, wl, seqs, family, sram_bytes=sram_bytes)
    return family, rows, series


def sweep(gpu: GPU, wl: Workload = DEFAULT_WORKLOAD, seqs=DEFAULT_GROWTH_SEQS, names=None,
          sram_bytes=None, accuracy: bool = True, jobs: int = 1, progress=None,
          side_tasks: dict | None = None) -> tuple[list[AlgorithmRow], list[GrowthSeries]]:
    """``run_all`` and ``growth`` for every algorithm (or ``names``), in registry order.

    With ``jobs`` > 1 the algorithms' families run in that many worker processes (forked,
    so they start with everything imported). The first run after an install spends most of
    its time compiling Numba kernels, and Numba compiles one function at a time per process:
    the workers compile different families at once and write the on-disk cache, which every
    later run loads. The results are the same as ``jobs=1`` (the same simulations, gathered
    in the same order). ``progress(n, what)`` is called as each unit of work finishes: a
    family of ``n`` algorithms, or a side task (n = 1), ``what`` naming it.

    ``side_tasks``: {key: (function, args)} of other picklable work the report needs (its
    sweeps over features or dtypes, its decode and memory sections), run in the same
    workers, every unit longest first (``FIRST_RUN_SECONDS``); each result is stored back
    into the dict under its key, replacing the task, or ``Skipped`` where the workload or
    GPU rules the task out.
    """
    names = list(names or algorithm_names())
    families = _families(names)
    done: dict[str, tuple] = {}

    def collect(family, rows, series):
        for name, row, s in zip(family, rows, series):
            done[name] = (row, s)
        if progress:
            progress(len(family), ", ".join(family))

    def collect_side(key, result):
        results[key] = result
        if progress:
            progress(1, key.replace("_", " "))

    side = dict(side_tasks or {})
    results: dict = {}
    jobs = min(jobs, len(families) + len(side))
    if jobs <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        with blas_controller().limit(limits=1, user_api="blas"):   # as in the workers
            for family in families:
                collect(*_sweep_family(gpu, wl, family, seqs, sram_bytes, accuracy))
            for key, (fn, args) in side.items():
                collect_side(key, side_task(fn, args))
    else:
        units = [(family[0], family) for family in families] + [(key, None) for key in side]
        units.sort(key=lambda unit: -first_run_seconds(unit[0]))   # longest first
        with ProcessPoolExecutor(max_workers=jobs, initializer=_one_blas_thread,
                                 mp_context=multiprocessing.get_context("fork")) as pool:
            pending = {}
            for key, family in units:
                if family is not None:
                    future = pool.submit(_sweep_family, gpu, wl, family, seqs, sram_bytes,
                                         accuracy)
                else:
                    future = pool.submit(side_task, *side[key])
                pending[future] = (key, family)
            for future in as_completed(pending):
                key, family = pending[future]
                if family is not None:
                    collect(*future.result())
                else:
                    collect_side(key, future.result())
    if side_tasks is not None:
        side_tasks.update(results)
    return [done[n][0] for n in names], [done[n][1] for n in names]


# ---- throughput against N: the FlashAttention-2/3 papers' benchmark figures ---------------

THROUGHPUT_ALGORITHMS = ("flash2", "flash3")
THROUGHPUT_DTYPES = ("fp16", "fp8")
# FlashAttention-3's fp8 benchmark feeds the kernel Q, K, V already in e4m3: its quantize
# kernel (the report's FP8 section prices it) is left out, as the paper's figures leave it
THROUGHPUT_FP8_OPTIONS = {"fp8_quantize": "upstream"}


def throughput_sweep(gpu: GPU, wl: Workload = DEFAULT_WORKLOAD, seqs=DEFAULT_GROWTH_SEQS,
                     names=THROUGHPUT_ALGORITHMS, dtypes=THROUGHPUT_DTYPES,
                     sram_bytes=None) -> list[dict]:
    """Predicted FLOP/s of each algorithm and dtype against N at a fixed number of tokens
    per batch (batch × N = the workload's, as the FlashAttention-2 and -3 papers plot it),
    count-only, fp8 on inputs already in e4m3 (``THROUGHPUT_FP8_OPTIONS``). One record per
    (algorithm, dtype) that runs on ``gpu``: {"algorithm", "dtype", "options", "seqs",
    "batch", "predicted_s", "flops", "flops_per_s"}."""
    gpu = gpu if isinstance(gpu, GPU) else get_gpu(gpu)
    tokens = wl.batch * wl.seq_q
    out = []
    for name in names:
        for dtype in dtypes:
            if dtype == "fp8" and not get_algorithm(name).INFO.fp8_kernel:
                continue            # no fp8 kernel was published: no fp8 row to compare
            if dtype == "fp8" and not gpu.tensor_fp8_flops_per_s:
                continue            # no fp8 tensor cores (the table's note says so)
            options = THROUGHPUT_FP8_OPTIONS if dtype == "fp8" else {}
            rec = {"algorithm": name, "dtype": dtype, "options": options, "seqs": [],
                   "batch": [], "predicted_s": [], "flops": [], "flops_per_s": []}
            for n in seqs:
                b = max(1, tokens // n)
                # the papers' forward benchmark, whatever the report's --pass or --decode
                r, _ = _try(lambda: simulate(name, wl.replace(batch=b, seq_q=n, seq_k=n,
                                                              dtype=dtype, decode=False,
                                                              passes="fwd", dropout=0.0),
                                             gpu, compute=False, sram_bytes=sram_bytes,
                                             options=options))
                if r is None:
                    continue
                rec["seqs"].append(n)
                rec["batch"].append(b)
                rec["predicted_s"].append(r.time.predicted_s)
                rec["flops"].append(r.flops)
                rec["flops_per_s"].append(r.flops / r.time.predicted_s)
            if rec["seqs"]:
                out.append(rec)
    return out


# ---- error against cost: the approximate algorithms' knobs --------------------------------

APPROX_KNOBS = {"rfa": ("features", (16, 64, 256)), "performer": ("features", (16, 64, 256)),
                "reformer": ("hashes", (1, 2, 4, 8))}
# Executed runs are the report's slowest part: N = 512 and one seed keep the sweep to about
# 5 s of CPU (N = 1024 and two seeds: 17 s) while the curves keep their shape.
APPROX_SEQ = 512
APPROX_SEEDS = (0,)


def approx_cost_accuracy(gpu: GPU, wl: Workload = DEFAULT_WORKLOAD, names=None,
                         sram_bytes=None) -> list[dict]:
    """For each approximate algorithm with a knob (features, hashes): the relative error
    against exact attention (executed, ``attnsim.approx_sweep`` on the accuracy workload at
    N = APPROX_SEQ, APPROX_SEEDS) and the predicted time on ``wl`` (count-only) per value.
    One record per (algorithm, value)."""
    from attnsim.approx_sweep import sweep_accuracy
    acc_wl = ACCURACY_WORKLOAD.replace(head_dim=wl.head_dim, seq_q=APPROX_SEQ,
                                       seq_k=APPROX_SEQ)
    out = []
    for name, (option, values) in APPROX_KNOBS.items():
        if names is not None and name not in names:
            continue
        rows, _ = _try(lambda: sweep_accuracy(name, acc_wl, option, values, gpu=gpu,
                                              seeds=APPROX_SEEDS))
        for row in rows or []:
            r, _ = _try(lambda: simulate(name, wl, gpu, compute=False, sram_bytes=sram_bytes,
                                         options={option: row["value"]}))
            if r is None:
                continue
            out.append({"algorithm": name, "option": option, "value": row["value"],
                        "error_vs_exact": row["error_vs_exact"],
                        "accuracy_workload": acc_wl.describe(),
                        "seeds": list(APPROX_SEEDS),
                        "predicted_s": r.time.predicted_s, "hbm_bytes": r.hbm_bytes,
                        "flops": r.flops})
    return out


# ---- where each algorithm was designed to win ---------------------------------------------

@dataclass
class DesignPoint:
    """An algorithm on the configuration its paper evaluates, next to a baseline on the same
    configuration, with the paper's claim (quoted with its source) beside our numbers."""
    algorithm: str
    label: str                  # e.g. "NSA, 64K"
    workload: Workload
    options: dict
    baseline: str               # algorithm name of the comparison
    baseline_label: str
    baseline_workload: Workload
    claim: str                  # the paper's words, quoted, with what they measured
    claim_short: str            # the number to set beside ours
    source: str
    result: SimResult | None = None
    baseline_result: SimResult | None = None
    error: str | None = None


# NSA's evaluated model: GQA with 4 groups and 64 query heads, d_k = 192, d_v = 128 (one head
# dim here: 128), causal, contexts up to 64K (Yuan et al. 2025, arXiv 2502.11089, §4.1 and
# §6.1). The baseline is the paper's: FlashAttention-2 on the same shapes.
NSA_SHAPE = Workload(batch=1, heads=64, kv_heads=4, seq_q=65536, head_dim=128, dtype="fp16",
                     causal=True)
# GQA: decoding with a 70B-class shape (64 query heads of 128, as Llama-2-70B, batch 8,
# 32K context): multi-head (64 KV heads), GQA-8 and MQA (Ainslie et al. 2023, arXiv 2305.13245).
GQA_SHAPE = Workload(batch=8, heads=64, kv_heads=8, seq_q=1, seq_k=32768, head_dim=128,
                     dtype="fp16", decode=True)


def design_points(nsa_seqs=(16384, 32768, 65536)) -> list[DesignPoint]:
    from attnsim.models import PRESETS
    nsa_claim = ("\"up to 9.0× forward and 6.0× backward speedup at 64k context-length\" "
                 "against FlashAttention-2 (Triton kernels, A100), growing with the "
                 "context; decoding: 11.6× expected at 64K from memory access volume")
    nsa_source = "Yuan et al. 2025, arXiv 2502.11089, Figure 6 (training) and Table 4 (decoding)"
    points = [DesignPoint("nsa", f"NSA, N = {n // 1024}K", NSA_SHAPE.replace(seq_q=n, seq_k=n),
                          {}, "flash2", "flash2", NSA_SHAPE.replace(seq_q=n, seq_k=n),
                          nsa_claim, "9.0× forward at 64K" if n == 65536 else
                          "speedup grows with N", nsa_source) for n in nsa_seqs]
    gqa_claim = ("\"uptrained GQA achieves quality close to multi-head attention with "
                 "comparable speed to multi-query attention\"; the KV cache shrinks by "
                 "heads / KV heads")
    gqa_source = "Ainslie et al. 2023, arXiv 2305.13245, abstract and §2.2"
    for kv, label in ((8, "GQA-8"), (1, "MQA")):
        wl = GQA_SHAPE.replace(kv_heads=kv)
        points.append(DesignPoint("gqa", f"{label} decode, 32K", wl, {}, "flash2",
                                  f"flash2 on the same {label} shapes", wl, gqa_claim,
                                  f"KV cache ÷ {64 // kv}"
                                  + ("; speed near MQA's" if kv > 1 else ""),
                                  gqa_source))
    m = PRESETS["deepseek-v2"]
    mla_wl = Workload(batch=1, heads=m.heads, kv_heads=m.kv_heads, seq_q=1, seq_k=32768,
                      head_dim=m.head_dim, dtype="fp16", decode=True, model=m)
    dense = Workload(batch=1, heads=m.heads, kv_heads=m.heads, seq_q=1, seq_k=32768,
                     head_dim=m.head_dim, dtype="fp16", decode=True)
    points.append(DesignPoint(
        "mla", "MLA (deepseek-v2) decode, 32K", mla_wl, {"path": "absorbed"}, "flash2",
        "flash2, multi-head 128 × 128 (the same heads, uncompressed cache)", dense,
        "KV cache per token (d_c + d_h^R)·l ≈ 4.5 d_h·l elements, \"equal to GQA with only "
        "2.25 groups\"; DeepSeek-V2 \"reduces the KV cache by 93.3%\" against DeepSeek 67B",
        "KV/token/layer 4.5 d_h = GQA with 2.25 groups",
        "DeepSeek-AI 2024, arXiv 2405.04434, Table 1 and abstract"))
    return points


def run_design_points(gpu: GPU, points=None, progress=None) -> list[DesignPoint]:
    """Simulate each design point and its baseline (count-only)."""
    points = design_points() if points is None else points
    for p in points:
        p.result, p.error = _try(lambda: simulate(p.algorithm, p.workload, gpu, compute=False,
                                                  options=p.options))
        p.baseline_result, err = _try(lambda: simulate(p.baseline, p.baseline_workload, gpu,
                                                       compute=False))
        p.error = p.error or err
        if progress:
            progress(p.label)
    return points
