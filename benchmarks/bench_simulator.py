"""How fast is the simulator itself? (A script, not a test: run it on demand.)

    python benchmarks/bench_simulator.py [--seq 4096] [--head-dim 64] [--long-seq 131072]

Prints, in one run:
  * executed-mode throughput of flash2 (matmul GFLOP/s of simulated work per wall second),
    next to this machine's large float32 matmul rate (NumPy/BLAS, 4096^3) and their ratio
    (target: >= 25% at N = 4096, d = 64);
  * count-only wall time of each exact algorithm at N = 131072 (target: well under 1 s).
Each figure is the median of several runs after a warm-up (Numba compiles on first use).
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from tabulate import tabulate
from threadpoolctl import threadpool_limits

from attnsim import Workload, make_inputs, simulate


def median_seconds(fn, repeats: int) -> float:
    fn()                                       # warm-up: Numba compilation, caches
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def blas_sgemm_gflops(n: int = 4096, repeats: int = 3) -> float:
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
    return 2 * n**3 / median_seconds(lambda: a @ b, repeats) / 1e9


def executed_gflops(algorithm: str, n: int, d: int, heads: int, repeats: int) -> tuple[float, float]:
    wl = Workload(batch=1, heads=heads, seq_q=n, head_dim=d)
    inputs = make_inputs(wl)
    flops = simulate(algorithm, wl, "h100", compute=False).counts["matmul_flops"]
    secs = median_seconds(lambda: simulate(algorithm, wl, "h100", inputs=inputs, check=False),
                          repeats)
    return flops / secs / 1e9, secs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seq", type=int, default=4096)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--long-seq", type=int, default=131072)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()

    blas = blas_sgemm_gflops()
    with threadpool_limits(limits=1, user_api="blas"):
        blas1 = blas_sgemm_gflops()
    rows = []
    for algo in ("flash2", "flash1", "standard"):
        gflops, secs = executed_gflops(algo, a.seq, a.head_dim, a.heads, a.repeats)
        rows.append([algo, f"N={a.seq}, d={a.head_dim}, heads={a.heads}", f"{secs:.3f} s",
                     f"{gflops:.1f}", f"{100 * gflops / blas:.0f}%", f"{100 * gflops / blas1:.0f}%"])
    print(f"Executed mode (float32 on the CPU; heads on all cores, tile products on one BLAS "
          f"thread each); BLAS sgemm "
          f"4096³ on this machine: {blas:.1f} GFLOP/s (all threads), {blas1:.1f} GFLOP/s (one)")
    print(tabulate(rows, headers=["algorithm", "workload", "wall", "matmul GFLOP/s",
                                  "of sgemm", "of 1-thread sgemm"]))
    print()
    rows = []
    for algo in ("flash2", "flash1", "standard"):
        wl = Workload(batch=1, heads=16, seq_q=a.long_seq, head_dim=a.head_dim)
        secs = median_seconds(lambda: simulate(algo, wl, "h100", compute=False), a.repeats)
        r = simulate(algo, wl, "h100", compute=False)
        rows.append([algo, f"N={a.long_seq}, d={a.head_dim}, heads=16", f"{secs * 1e3:.1f} ms",
                     f"{r.hbm_bytes / 1e9:.1f} GB"])
    print("Count-only mode")
    print(tabulate(rows, headers=["algorithm", "workload", "wall", "HBM traffic counted"]))
    print()
    # HBM capacity: every algorithm's footprint searched for the longest N that fits (the
    # report's "Longest context on this GPU"; closed forms, no kernel runs)
    from attnsim.memory import longest_context_table
    from attnsim.suite import DEFAULT_WORKLOAD
    from hwmodels import get_gpu
    gpu = get_gpu("h100")
    secs = median_seconds(lambda: longest_context_table(gpu, DEFAULT_WORKLOAD), a.repeats)
    rows = len(longest_context_table(gpu, DEFAULT_WORKLOAD))
    print(f"HBM capacity: longest context of every algorithm ({rows} searches, fwd and fwd+bwd, "
          f"batch 1 and {DEFAULT_WORKLOAD.batch}): {secs:.2f} s")


if __name__ == "__main__":
    main()
