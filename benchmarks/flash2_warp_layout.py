"""flash2's port with one or two 16-row tiles per warp, timed on the local GPU (a script
for a machine with a GPU and CuPy; an open tuning question of the flash2 port).

    python benchmarks/flash2_warp_layout.py [--seq 4096 16384] [--head-dim 64] [--causal]

``ports.warp_m_tiles`` gives each warp two 16-row tiles when the fp32 accumulators fit 192
registers per thread (d <= 64 with B_c = 128: FlashAttention-2's 4 warps for a 128-row
block; ptxas: 255 registers, 68 bytes spilled), else one (8 warps, no spill). This script
times the plan's tiles both ways (``WARP_M_TILES`` 1 and 2, the block size following) with
the backend's CUDA-event timing and checks both outputs against each other, so the choice
can be settled by measurement. Prints one row per (N, layout).
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from algorithms import ports  # noqa: E402
from algorithms.registry import get_algorithm  # noqa: E402
from attnsim.workload import Workload  # noqa: E402


def variant(spec: ports.PortLaunches, tiles: int) -> ports.PortLaunches:
    """The flash2 declaration with ``tiles`` 16-row tiles per warp (threads follow)."""
    (launch,) = spec.launches
    block_q = launch.defines["BLOCK_Q"]
    if block_q % (16 * tiles):
        raise ports.PortUnsupported(f"B_r = {block_q} is not a multiple of {16 * tiles}")
    threads = block_q // (16 * tiles) * 32
    return replace(spec, launches=(replace(launch, block=(threads, 1, 1),
                                           defines={**launch.defines, "WARP_M_TILES": tiles}),))


def rows_for(wl: Workload, repeats: int) -> list[list]:
    from attnsim import gpu as backend
    from attnsim.inputs import make_inputs
    from attnsim.reference import relative_error
    gpu, _ = backend.detect_gpu_model()
    plan = get_algorithm("flash2").plan(wl, gpu, gpu.smem_bytes_per_block)
    base = ports.port_launches("flash2", wl, plan, gpu=gpu)
    inputs = make_inputs(wl, seed=0)
    out, rows = {}, []
    for tiles in (1, 2):
        try:
            spec = variant(base, tiles)
        except ports.PortUnsupported as err:
            rows.append([wl.seq_q, tiles, "—", "—", f"skipped: {err}"])
            continue
        run = backend.run_port(spec, inputs, repeats=repeats, keep_output=True)
        out[tiles] = run.output
        flops = 4 * wl.batch * wl.heads * wl.seq_q * wl.seq_k * wl.head_dim / (2 if wl.causal else 1)
        chosen = "plan's choice" if tiles == ports.warp_m_tiles(plan.block_q, plan.block_k,
                                                                 wl.head_dim) else ""
        rows.append([wl.seq_q, tiles, f"{run.median_s * 1e6:.1f}",
                     f"{flops / run.median_s / 1e12:.1f}", chosen])
    if len(out) == 2:
        rows.append([wl.seq_q, "1 vs 2", "", "", f"rel. difference "
                     f"{relative_error(out[2], out[1]):.1e}"])
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seq", type=int, nargs="+", default=[4096, 16384])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--dtype", default="fp16", choices=ports.STORAGE_DTYPES)
    p.add_argument("--causal", action="store_true")
    p.add_argument("--repeats", type=int, default=30)
    a = p.parse_args(argv)
    from attnsim import gpu as backend
    ok, why = backend.gpu_available()
    if not ok:
        print(f"flash2_warp_layout: no GPU to time on: {why}", file=sys.stderr)
        return 2
    from tabulate import tabulate
    rows = []
    for n in a.seq:
        wl = Workload(batch=a.batch, heads=a.heads, seq_q=n, head_dim=a.head_dim,
                      dtype=a.dtype, causal=a.causal)
        rows += rows_for(wl, a.repeats)
    print(tabulate(rows, headers=["N", "tiles/warp", "median µs", "TFLOP/s", "note"],
                   disable_numparse=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
