"""GPU port declaration: Ring Attention on one GPU (``ring_step`` in ``flash2_fwd.cu``).

The simulator counts one device of the ring (``algorithms.ring``: the first, or the last when
causal — the busiest): P kernels, one per ring step, each a FlashAttention-2 pass of the
device's c = ⌈N_q / P⌉ query rows over the K/V block visiting it, with the running acc, m, l
kept in HBM between steps. The port launches exactly those P kernels (``ring_step{s}``, the
simulated device's rows, grid z = 1) with FlashAttention-2's tiles from the ring's plan, and
times them. The other devices' rows are computed once, untimed (``setup``: P launches with
grid z = P, every device at once), so that the whole output can be compared with the CPU's.

What one GPU cannot show: the transfers. K/V blocks are read in place, so the port measures
the per-device compute and HBM traffic the simulator counts, not the link (the row in
``gpu-check`` sets it against the prediction with and without the link, see
``attnsim.gpu_check``).

Bound: the port moves what ``algorithms.ring`` counts per device (that module states the bound).
"""
from __future__ import annotations

from algorithms.base import PlanError
from algorithms.kernels.common import cdiv
from algorithms.ring import device_rows
from algorithms.ports.core import (Launch, PortLaunches, Scalar, Tensor, check_common,
                                   check_mma_tiles, flash_tile_smem, head_args, out_tensor,
                                   qkv_tensors, stats_tensor)
from algorithms.ports.flash2 import warp_m_tiles


def ring_port(wl, plan, extra=None) -> PortLaunches:
    """P timed ``ring_step`` launches for the simulated device; P untimed ones for the rest."""
    check_common("ring", wl)
    if getattr(plan, "order", "contiguous") != "contiguous":
        raise PlanError("ring: the port runs the contiguous order (device blocks in place); "
                        "drop --ring-order striped for gpu-check")
    bq, bk, d, bh = plan.block_q, plan.block_k, wl.head_dim, wl.batch * wl.heads
    check_mma_tiles("ring", bq, bk)
    mt = warp_m_tiles(bq, bk, d)
    defines = {"BLOCK_Q": bq, "BLOCK_K": bk, "HEAD_DIM": d, "WARP_M_TILES": mt}
    threads, smem = (bq // (16 * mt) * 32, 1, 1), flash_tile_smem(bq, bk, d)
    per_q, per_k, P = plan.rows_per_device, plan.keys_per_device, plan.devices
    dev = plan.simulated_device
    lo, hi = device_rows(dev, wl.seq_q, per_q)

    def step(s: int, device0: int, grid: tuple, sim_kernel):
        return Launch("flash2_fwd.cu", "ring_step", grid, threads, smem, defines,
                      ("q", "k", "v", "o", "lse", "acc_state", "m_state", "l_state",
                       *head_args(wl), Scalar(int(wl.causal), "int"), Scalar(P, "int"),
                       Scalar(per_q, "int"), Scalar(per_k, "int"), Scalar(device0, "int"),
                       Scalar(s, "int")), sim_kernel)

    timed = tuple(step(s, dev, (cdiv(hi - lo, bq), bh, 1), f"ring_step{s}") for s in range(P))
    everyone = tuple(step(s, 0, (cdiv(per_q, bq), bh, P), None) for s in range(P))
    b, h, nq = wl.batch, wl.heads, wl.seq_q
    tensors = {**qkv_tensors(wl), "o": out_tensor(wl), "lse": stats_tensor(wl),
               "acc_state": Tensor((b, h, nq, d), "fp32", "work"),
               "m_state": stats_tensor(wl, "work"), "l_state": stats_tensor(wl, "work")}
    notes = (f"device {dev} of {P} timed (its {P} ring steps); K/V blocks read in place: "
             f"no transfer on one GPU",)
    return PortLaunches("ring", tensors, timed, setup=everyone, notes=notes)
