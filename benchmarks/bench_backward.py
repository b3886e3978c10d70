"""How fast the simulator runs the FlashAttention-2 backward (a script, not a test).

    python benchmarks/bench_backward.py [--seq 2048] [--head-dim 64] [--long-seq 131072]

1. Executed mode: the backward kernels alone (preprocess, main loop, dQ conversion) on one
   head of N x d, timed after a warm-up run (Numba compilation excluded); the saved O and
   lse come from an untimed forward. Reports wall time, simulated matmul FLOPs per second
   and visited tiles per second.
2. Count-only mode: ``simulate(..., passes="bwd", compute=False)`` at a long sequence, wall
   time, with the counted traffic and the predicted H100 time.
Prints to stdout; writes nothing.
"""
from __future__ import annotations

import argparse
import time

from algorithms import flash2
from algorithms.flash2 import backward as flash2_bwd
from attnsim.inputs import make_inputs
from attnsim.simulate import simulate
from attnsim.workload import Workload
from hwmodels import get_gpu
from hwmodels.memory import Recorder


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def executed_backward(seq: int, head_dim: int, repeats: int) -> None:
    gpu = get_gpu("h100")
    wl = Workload(batch=1, heads=1, seq_q=seq, head_dim=head_dim, passes="fwd+bwd")
    plan = flash2.plan(wl, gpu, gpu.smem_bytes_per_block)
    inputs = make_inputs(wl, seed=0)
    saved = flash2.forward(wl, plan, inputs, Recorder(gpu), True)

    def run_backward():
        rec = Recorder(gpu)
        flash2_bwd.backward(wl, plan, inputs, saved, rec, True)
        return rec

    rec = run_backward()                                 # warm-up: Numba compilation
    wall = best_of(run_backward, repeats)
    total = rec.totals()
    from hwmodels.counters import MATMUL_FLOPS
    bp = plan.bwd
    tiles = -(-seq // bp.block_q) * -(-seq // bp.block_k)
    print(f"executed flash2 backward, N={seq}, d={head_dim}, 1 head, tiles "
          f"{bp.block_q}x{bp.block_k} ({tiles} tiles): {wall * 1e3:.1f} ms "
          f"(best of {repeats}); {total[MATMUL_FLOPS] / wall / 1e9:.2f} simulated GFLOP/s, "
          f"{tiles / wall:,.0f} tiles/s")


def count_only_backward(seq: int, head_dim: int, repeats: int) -> None:
    wl = Workload(batch=1, heads=16, seq_q=seq, head_dim=head_dim, passes="bwd")
    simulate("flash2", wl.replace(seq_q=1024), "h100", compute=False)   # warm-up
    result = None

    def run():
        nonlocal result
        result = simulate("flash2", wl, "h100", compute=False)

    wall = best_of(run, repeats)
    print(f"count-only flash2 backward, N={seq}, d={head_dim}, 16 heads: {wall * 1e3:.1f} ms "
          f"(best of {repeats}); HBM {result.hbm_bytes / 1e9:.2f} GB, predicted H100 time "
          f"{result.time.predicted_s * 1e3:.2f} ms ({result.time.bound}-bound)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--long-seq", type=int, default=131072)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    executed_backward(a.seq, a.head_dim, a.repeats)
    count_only_backward(a.long_seq, a.head_dim, a.repeats)


if __name__ == "__main__":
    main()
