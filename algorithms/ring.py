"""Ring Attention — Liu, Zaharia and Abbeel, "Ring Attention with Blockwise Transformers for
Near-Infinite Context" (2023, arXiv 2310.01889), Section 3 and Algorithm 1.

Idea: split the sequence over P devices; each keeps its block of c = ⌈N/P⌉ queries and
passes its K/V block around a ring. In each of the P steps a device runs blockwise
(FlashAttention-2 style) attention of its queries against the K/V block it holds while
sending that block to the next device; the partial results merge by the online softmax.

Notation -> code: P == devices, c == block_q of the ring (rows per device),
B_r/B_c == the FlashAttention-2 tiles inside each step (``flash2.plan``).

Per device and head (e bytes per element, fp32 running state), over the P steps:
    HBM reads  = P c d e (Q block, every step) + N_k d e · 2 (every K/V block once)
                 + (P - 1) (c d 4 + 8 c) (running acc, m, l of the previous step)
    HBM writes = (P - 1) (c d 4 + 8 c) + c d e + 4 c  (state, then O and lse)
    NVLink     = (P - 1) · 2 c d e sent (each K/V block forwarded, but the last)
FLOPs as FlashAttention-2 over the device's c x N_k scores. Bound per device:
Θ(N d + c N d / B_r) HBM bytes and Θ(N d) interconnect bytes; compute hides the
transfer when c ≥ F / B (F: FLOP/s per device, B: one-direction link bandwidth; the
paper's condition, with 4 d FLOPs per score pair and 2 d e bytes per key); on a GPU without
interconnect (a GPU file's nvlink_bytes_per_s = 0, run with --no-interconnect) no c does,
and the figure is None (``min_rows_to_hide_transfers``).
Counts are per device (devices are symmetric; causal: the last device, which sees every
block, is simulated — the slowest); ``rec.info["ring"]`` gives the totals over devices.
Each ring step is one kernel here; the transfer overlaps it (``t_link`` in the timing
model). Not modelled: the receive buffer's copy and the blockwise feed-forward.

Token order (``--ring-order``): ``contiguous`` as above; ``striped`` (Brandon et al.,
"Striped Attention", 2023, arXiv 2311.09431) deals token t to device t mod P, so under a
causal mask every step is about half a block on every device instead of whole blocks on
some and none on others. Counts for the striped order use the same kernels over the
permuted sequence (``causal_alignment`` gives each step's mask); ``load_balance`` states
the imbalance each order leaves. HBM footprint per device: ``footprint`` (Θ(N d / P)).
GPU port: ``ring_step`` in algorithms/cuda/flash2_fwd.cu runs the simulated device's P steps
on one GPU (no transfers; docs/gpu.md "The ring port").
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from algorithms import flash2
from algorithms.base import AlgorithmInfo, Option, Plan, PlanError
from algorithms.kernels import step_latency
from algorithms.kernels.common import (causal_key_end, cdiv, first_q_bytes, iter_heads,
                                       key_tiles_per_row_block, mma_layout, new_output, new_stats)
from algorithms.kernels.flash_tile import (NO_DROPOUT_SCALE, STAT_BYTES, attend_tile, count_tiles,
                                           finish_rows, p_in_registers)
from hwmodels.compiled import compiled
from hwmodels.counters import new_counters
from hwmodels.footprint import Allocation, Footprint
from hwmodels.primitives import (count_interconnect, load_rows, load_vector, store_rows,
                                 store_vector)

# The largest single interconnect domain a ring spans (a TPU v4 pod: 4096 chips); one
# kernel is simulated per ring step, so P also bounds the simulation's work.
MAX_DEVICES = 4096
ORDERS = ("contiguous", "striped")

INFO = AlgorithmInfo(
    name="ring",
    title="Ring Attention (sequence over a ring of devices)",
    paper="Liu, Zaharia, Abbeel, 2023 (arXiv 2310.01889)",
    exact=True,
    io_bound="Θ(Nd + cNd/B_r) HBM, Θ(Nd) link per device",
    options=(Option("devices", int, 8, "devices in the ring (P)",
                    validate=lambda p: "must be at least 1" if p < 1 else
                    f"must be at most {MAX_DEVICES} (a TPU v4 pod's chips)"
                    if p > MAX_DEVICES else None),
             Option("ring_order", str, "contiguous",
                    "token assignment: contiguous blocks (Liu et al.) or striped, token i on "
                    "device i mod P (Brandon et al. 2023), which balances causal work",
                    choices=ORDERS)),
)


@dataclass(frozen=True)
class RingPlan(Plan):
    devices: int
    rows_per_device: int       # c
    keys_per_device: int
    block_q: int               # FlashAttention-2 tiles inside a step
    block_k: int
    simulated_device: int
    min_block_for_overlap: int | None  # c >= F / B; None without a link
    order: str = "contiguous"  # token assignment (``ORDERS``)


def plan(wl, gpu, sram_bytes: int, devices: int = 8, ring_order: str = "contiguous") -> RingPlan:
    if ring_order == "striped" and (wl.seq_q != wl.seq_k or wl.seq_q % devices):
        raise PlanError(f"ring: --ring-order striped deals the tokens of a self-attention "
                        f"sequence round-robin, so it needs seq_q == seq_k and a multiple of "
                        f"--devices; got seq_q={wl.seq_q}, seq_k={wl.seq_k}, devices={devices}")
    check_every_device_has_a_block(wl, devices)
    inner = flash2.plan(wl, gpu, sram_bytes)
    c_min = min_rows_to_hide_transfers(wl, gpu)
    return RingPlan(devices=devices, rows_per_device=cdiv(wl.seq_q, devices),
                    keys_per_device=cdiv(wl.seq_k, devices), block_q=inner.block_q,
                    block_k=inner.block_k, simulated_device=devices - 1 if wl.causal else 0,
                    min_block_for_overlap=c_min, order=ring_order)


def min_rows_to_hide_transfers(wl, gpu) -> int | None:
    """The paper's overlap condition c ≥ F / B: a step computes 4 c d FLOPs per key of the
    visiting block while the link sends that key in 2 d e bytes, so the transfer hides once
    c reaches F · 2 e / (4 B). None on a GPU without interconnect (nvlink_bytes_per_s = 0):
    there no block size hides a transfer that has no link to go over (a 0 would claim
    that every block does)."""
    link = gpu.nvlink_bytes_per_s_one_direction
    if link <= 0:
        return None
    flops = gpu.tensor_flops_per_s(wl.dtype) * gpu.mma_sync_fraction_of_peak
    return int(np.ceil(flops * 2 * wl.elem_bytes / (4 * link)))


def check_every_device_has_a_block(wl, devices: int) -> None:
    """Blocks of ⌈n/P⌉ tokens can run out before the last device (more devices than tokens,
    or 9 tokens over 8 devices: blocks of 2 fill 5): a device without a block would count
    nothing. The message names the flag that set the length (with --decode the query rows
    are --new-tokens, not --seq) and a device count that fits both lengths."""
    q_flag, k_flag = length_flags(wl)
    for what, n, flag in (("query rows", wl.seq_q, q_flag), ("keys", wl.seq_k, k_flag)):
        empty = _empty_devices(n, devices)
        if empty:
            fit = max(p for p in range(1, devices + 1)
                      if not _empty_devices(wl.seq_q, p) and not _empty_devices(wl.seq_k, p))
            raise PlanError(f"ring: {devices} devices with blocks of ⌈{n:,}/{devices}⌉ = "
                            f"{cdiv(n, devices):,} {what} ({flag} {n:,}) leave the last {empty} "
                            f"without any; use --devices {fit}")


def length_flags(wl) -> tuple[str, str]:
    """The flags that set the query and the key lengths: with --decode, --new-tokens
    queries against a cache of --seq; otherwise --seq, and --seq-k where the keys differ."""
    if getattr(wl, "decode", False):
        return "--new-tokens", "--seq"
    return "--seq", ("--seq-k" if wl.seq_k != wl.seq_q else "--seq")


def _empty_devices(n: int, devices: int) -> int:
    """Devices left without a block when n tokens are dealt in blocks of ⌈n / devices⌉."""
    return devices - cdiv(n, cdiv(n, devices))


def device_rows(device: int, n: int, per: int) -> tuple[int, int]:
    """[lo, hi) of the block of ``per`` of the n tokens that ``device`` holds."""
    return min(n, device * per), min(n, (device + 1) * per)


def run(wl, p: RingPlan, inputs, rec, compute: bool) -> dict:
    d, e, bh = wl.head_dim, wl.elem_bytes, wl.batch * wl.heads
    dev = p.simulated_device
    q_lo, q_hi = device_rows(dev, wl.seq_q, p.rows_per_device)
    counters, sends = [], []
    inner = flash2.Flash2Plan(p.block_q, p.block_k, 0, flash2.register_bytes(p.block_q, p.block_k, d))
    buffers = flash2.smem_buffers(p.block_q, p.block_k, d, e)
    tr = cdiv(q_hi - q_lo, p.block_q)
    layout = mma_layout(rec.gpu, p.block_q, inner.register_bytes, q_hi - q_lo)   # as FA-2
    state_bytes = bh * (q_hi - q_lo) * (d + 2) * STAT_BYTES
    out_bytes = bh * (q_hi - q_lo) * (d * e + STAT_BYTES)
    for step in range(p.devices):
        j = (dev - step) % p.devices
        k_lo, k_hi = device_rows(j, wl.seq_k, p.keys_per_device)
        # L2 as in FlashAttention-2 for this device's queries against the visiting block,
        # with the running state and the output as this step moves them
        flash2_dram, working_set = flash2.l2_footprint(
            wl.replace(seq_q=q_hi - q_lo, seq_k=k_hi - k_lo), inner, rec, tr,
            sum(buffers.values()))
        dram = step_compulsory_bytes(flash2_dram, state_bytes, out_bytes, first=step == 0,
                                     last=step == p.devices - 1)
        work = key_tiles_per_row_block(q_lo, q_hi, k_lo, k_hi, *causal_alignment(wl, p, dev, j),
                                       p.block_q, p.block_k, wl.causal)
        c = rec.kernel(f"ring_step{step}", ctas=tr * bh, buffers=buffers, **layout,
                       register_bytes_per_cta=inner.register_bytes, tc_path="mma_sync",
                       overlap="serial", matmul_dtype=wl.dtype, cta_work=work,
                       **step_latency.chain(step_latency.forward_step(p.block_k), work, bh),
                       prologue_bytes_per_cta=first_q_bytes(buffers["Q_i"], p.block_q,
                                                            q_hi - q_lo) + buffers["K_j"],
                       # the running state, or (last step) O_i
                       epilogue_elements_per_cta=p.block_q * d,
                       **p_in_registers(d, wl.elem_bytes),
                       unique_hbm_bytes=dram, l2_working_set_bytes=working_set)
        counters.append(c)
        # forward the K/V block to the next device (all but the last step)
        sends.append(2 * (k_hi - k_lo) * d * e * wl.batch * wl.kv_heads
                     if step < p.devices - 1 else 0)
    o, lse = new_output(wl, compute), new_stats(wl, compute)
    devices = range(p.devices) if compute else [dev]
    # striped: the tokens are permuted so that each device's stripe is one contiguous block
    # of the permuted sequence (device j: tokens j, j + P, ...); outputs are permuted back
    perm = striped_permutation(wl.seq_q, p.devices) if p.order == "striped" else None
    for b, h, q, k, v in iter_heads(wl, inputs, compute):
        o_h, lse_h = (o[b, h], lse[b, h]) if compute else (q, q[:, 0])
        if perm is not None and compute:
            q, k, v = (np.ascontiguousarray(x[perm]) for x in (q, k, v))
            o_h, lse_h = np.zeros_like(o_h), np.zeros_like(lse_h)
        for device in devices:
            rows = device_rows(device, wl.seq_q, p.rows_per_device)
            state = _new_state(rows[1] - rows[0], d, compute)
            for step in range(p.devices):
                j = (device - step) % p.devices
                keys = device_rows(j, wl.seq_k, p.keys_per_device)
                seq_q, seq_k = causal_alignment(wl, p, device, j)
                # only the simulated device is counted; the others run for the output
                c = counters[step] if device == dev else new_counters()
                ring_step(c, q, k, v, o_h, lse_h, *state, rows[0], rows[1], keys[0], keys[1],
                          seq_q, seq_k, d, p.block_q, p.block_k, wl.scale, wl.causal, e,
                          step == 0, step == p.devices - 1, compute)
        if perm is not None and compute:
            o[b, h][perm], lse[b, h][perm] = o_h, lse_h
    for c, nbytes in zip(counters, sends):
        if not compute:
            rec.repeat(c, bh)
        count_interconnect(c, nbytes)
    rec.info["ring"] = _ring_info(wl, p, rec)
    return {"o": o, "lse": lse} if compute else {}


def step_compulsory_bytes(flash2_bytes: int, state_bytes: int, out_bytes: int, first: bool,
                          last: bool) -> int:
    """A ring step's compulsory DRAM traffic: FlashAttention-2's for the same queries and
    keys, whose O and lse only the last step writes, plus the fp32 running state (acc, m, l)
    that every step but the first reads and every step but the last writes."""
    return (flash2_bytes - (0 if last else out_bytes)
            + state_bytes * ((not first) + (not last)))


def striped_permutation(n: int, devices: int) -> np.ndarray:
    """Token order that puts device j's stripe (tokens j, j + P, j + 2P, ...) in block j."""
    return np.concatenate([np.arange(j, n, devices) for j in range(devices)])


def causal_alignment(wl, p: RingPlan, device: int, j: int) -> tuple[int, int]:
    """(seq_q, seq_k) whose bottom-right alignment, seq_k - seq_q, gives the causal mask of
    ``device``'s queries against block ``j``'s keys, in the indices of the (permuted)
    sequence the kernel walks.

    Contiguous: the workload's own. Striped (Brandon et al. 2023, arXiv 2311.09431): local
    query r of device i is token r P + i, local key s of device j token s P + j, and
    r P + i >= s P + j exactly when s <= r - [j > i]: a causal block with the diagonal when
    j <= i and without it when j > i — every step about half a block on every device. In
    permuted indices (query i c + r, key j c + s) that is key <= query + (j - i) c - [j > i]."""
    if p.order != "striped":
        return wl.seq_q, wl.seq_k
    c = p.rows_per_device
    return wl.seq_q, wl.seq_q + (j - device) * c - (1 if j > device else 0)


def load_balance(wl, p: RingPlan) -> dict:
    """How evenly the P devices share the work: visible (query, key) score pairs per device
    and per step (closed forms for blocks of c tokens; non-causal: c² everywhere).

    ``imbalance``: the busiest device's pairs over the mean; ``step_imbalance``: the ring
    advances in lock step, so each step lasts as long as its busiest device: Σ_steps
    max_devices pairs over the mean total — the slowdown against perfect balance. One device
    at a time, vectorized over its P steps: O(P²) arithmetic in numpy, O(P) memory."""
    P = p.devices
    per_device = np.zeros(P, dtype=np.int64)
    busiest_at_step = np.zeros(P, dtype=np.int64)
    steps = np.arange(P, dtype=np.int64)
    for i in range(P):
        work = _block_pairs(wl, p, i, (i - steps) % P)     # block j seen at each step
        per_device[i] = work.sum()
        np.maximum(busiest_at_step, work, out=busiest_at_step)
    mean = per_device.mean()
    return {"order": p.order, "pairs_per_device": [int(x) for x in per_device],
            "imbalance": float(per_device.max() / mean) if mean else 1.0,
            "step_imbalance": float(busiest_at_step.sum() / mean) if mean else 1.0}


def _block_pairs(wl, p: RingPlan, i: int, j: np.ndarray) -> np.ndarray:
    """Visible score pairs of device i's queries against each block j's keys (int64)."""
    c, ck = p.rows_per_device, p.keys_per_device
    q_lo, q_hi = device_rows(i, wl.seq_q, c)
    k_lo = np.minimum(wl.seq_k, j * ck)
    cols = np.minimum(wl.seq_k, (j + 1) * ck) - k_lo
    if not wl.causal:
        return (q_hi - q_lo) * cols
    if p.order == "striped":                        # rows == cols == c
        return np.where(j <= i, c * (c + 1) // 2, c * (c - 1) // 2).astype(np.int64)
    # contiguous: query t (bottom-right aligned) sees the keys before t + 1 + N_k - N_q, so
    # t sees clamp(t + 1 + N_k - N_q - k_lo, 0, cols) keys of the block
    shift = wl.seq_k - wl.seq_q + 1 - k_lo
    return _clamped_sum(q_lo + shift, q_hi - 1 + shift, cols)


def _clamped_sum(a: np.ndarray, b: np.ndarray, cap: np.ndarray) -> np.ndarray:
    """Σ_{t=a}^{b} min(max(t, 0), cap), in closed form, elementwise."""
    def prefix(x):                                   # Σ_{t=-inf}^{x} clamp(t, 0, cap)
        return np.where(x <= 0, 0, np.where(x <= cap, x * (x + 1) // 2,
                                            cap * (cap + 1) // 2 + (x - cap) * cap))
    return np.where(b < a, 0, prefix(b) - prefix(a - 1)).astype(np.int64)


def _new_state(rows: int, d: int, compute: bool):
    """The running acc, m, l of one device's queries, kept in HBM between ring steps."""
    if not compute:
        return (np.empty((0, d), np.float32), np.empty(0, np.float32), np.empty(0, np.float32))
    return (np.zeros((rows, d), np.float32), np.full(rows, -np.inf, np.float32),
            np.zeros(rows, np.float32))


@compiled
def ring_step(c, q, k, v, o, lse, acc, m, l, q_lo, q_hi, k_lo, k_hi, seq_q, seq_k, d,
              block_q, block_k, scale, causal, e, first, last, compute):
    """One device, one head, one ring step: its queries against the visiting K/V block."""
    no_mask = np.zeros((0, 0), dtype=np.bool_)
    for r0 in range(q_lo, q_hi, block_q):
        r1 = min(r0 + block_q, q_hi)
        rows = r1 - r0
        s0, s1 = r0 - q_lo, r1 - q_lo               # rows of the device-local state
        qi = load_rows(c, q, r0, r1, d, e)
        if first:
            acc_i, m_i, l_i = acc[s0:s1], m[s0:s1], l[s0:s1]   # fresh state, on chip
        else:
            acc_i = load_rows(c, acc, s0, s1, d, STAT_BYTES)
            m_i = load_vector(c, m, s0, s1, STAT_BYTES)
            l_i = load_vector(c, l, s0, s1, STAT_BYTES)
        key_end = min(k_hi, causal_key_end(r1, seq_q, seq_k)) if causal else k_hi
        if not compute:                                  # same counts, no arrays
            count_tiles(c, r0, rows, k_lo, key_end, block_k, k_hi, d, e, causal, seq_q, seq_k,
                        False)
            key_end = k_lo
        for c0 in range(k_lo, key_end, block_k):
            attend_tile(c, qi, k, v, acc_i, m_i, l_i, r0, rows, c0, min(c0 + block_k, k_hi),
                        d, scale, causal, seq_q, seq_k, e, compute, no_mask, False, False, 0,
                        0, 0, NO_DROPOUT_SCALE)
        if last:
            oi, lse_i = finish_rows(c, acc_i, m_i, l_i, rows, d, compute)
            store_rows(c, o, r0, oi, rows, d, e, compute)
            store_vector(c, lse, r0, lse_i, rows, STAT_BYTES, compute)
        else:                                        # keep the state for the next step
            store_rows(c, acc, s0, acc_i, rows, d, STAT_BYTES, compute)
            store_vector(c, m, s0, m_i, rows, STAT_BYTES, compute)
            store_vector(c, l, s0, l_i, rows, STAT_BYTES, compute)


def _ring_info(wl, p: RingPlan, rec) -> dict:
    per_device = rec.totals()
    return {
        "devices": p.devices,
        "simulated_device": p.simulated_device,
        "counts_are": "per device",
        "hbm_bytes_all_devices": int(per_device[0] + per_device[1]) * p.devices,
        "interconnect_bytes_all_devices": int(per_device[10]) * p.devices,
        "rows_per_device": p.rows_per_device,
        **_overlap_info(p, rec.gpu),
        "load_balance": load_balance(wl, p),
    }


def _overlap_info(p: RingPlan, gpu) -> dict:
    """Whether the link's transfers hide behind compute (``min_rows_to_hide_transfers``).
    Without a link neither figure applies: both are None, and ``transfers_note`` says why
    rather than leave a bare null (or a 0 that reads as "any block hides them")."""
    c_min = p.min_block_for_overlap
    if p.devices == 1:          # a ring of one device sends nothing: there is nothing to hide
        return {"min_rows_per_device_to_hide_transfers": c_min, "transfers_hidden": None,
                "transfers_note": "one device: no K/V block travels, so no transfer needs "
                                  "hiding"}
    if c_min is not None:
        return {"min_rows_per_device_to_hide_transfers": c_min,
                "transfers_hidden": p.rows_per_device >= c_min}
    return {"min_rows_per_device_to_hide_transfers": None, "transfers_hidden": None,
            "transfers_note": f"{gpu.name} has no interconnect (nvlink_bytes_per_s = 0): no "
                              f"block size hides K/V transfers over it, so the overlap rule "
                              f"does not apply (a ring of several devices runs on it only "
                              f"with --no-interconnect, its transfers unpriced)"}


def io_bound(wl, p: RingPlan, sram_bytes: int) -> float:
    """Per device: Θ(N d + c N d / B_r) HBM bytes, all heads."""
    c = p.rows_per_device
    per_head = wl.seq_k * wl.head_dim + c * wl.seq_k * wl.head_dim / p.block_q
    return float(per_head * wl.elem_bytes * wl.batch * wl.heads)


def footprint(wl, p: RingPlan):
    """One device's HBM allocations (a device with full blocks: c = ⌈N_q/P⌉ queries,
    c_k = ⌈N_k/P⌉ keys): its Q block and its own K/V block (inputs), the buffers the visiting
    K/V blocks arrive in — two while P > 2 (one is computed on while the next arrives, the
    paper's overlap), one for P = 2, none for P = 1 —, the fp32 running acc, m, l between
    steps, and its block of O and lse. Θ(N d / P) per device, which is why the context the
    ring holds grows linearly with P (``max_context_tokens``)."""
    b, h, g, d, e = wl.batch, wl.heads, wl.kv_heads, wl.head_dim, wl.elem_bytes
    c, ck, devices = p.rows_per_device, p.keys_per_device, p.devices
    phases = tuple(f"ring_step{s}" for s in range(devices))
    first, last = phases[0], phases[-1]
    kv_block = 2 * b * g * ck * d * e
    allocs = [Allocation("q_block", b * h * c * d * e, first, last, "input"),
              Allocation("kv_block", kv_block, first, last, "input"),
              Allocation("kv_receive", min(2, devices - 1) * kv_block, first, last),
              Allocation("o_block", b * h * c * d * e, last, last, "output"),
              Allocation("lse_block", b * h * c * STAT_BYTES, last, last, "output")]
    if devices > 1:
        allocs.append(Allocation("running_state", b * h * c * (d + 2) * STAT_BYTES, first,
                                 last))
    return Footprint(phases, allocs)


def plannable_seq(wl, p: RingPlan, n: int) -> int:
    """The longest sequence <= n the ring plans for with the same devices: a multiple of P
    leaves no device without a block."""
    return n - n % p.devices
