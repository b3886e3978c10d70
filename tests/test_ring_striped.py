"""Ring Attention's striped token order (Brandon et al. 2023, "Striped Attention", arXiv
2311.09431): output against the float64 reference, counts derived here for both orders, and
the load balance each leaves across devices under a causal mask."""
import json

import numpy as np
import pytest

from attnsim import Workload, simulate
from attnsim.cli import main


def ring(wl, order, devices, compute=False):
    return simulate("ring", wl, "h100", compute=compute,
                    options={"devices": devices, "ring_order": order})


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("devices", [3, 4])
def test_striped_output_is_exact_attention_and_counts_match_count_only(causal, devices):
    wl = Workload(batch=1, heads=2, seq_q=96 * devices, head_dim=64, causal=causal)
    executed = ring(wl, "striped", devices, compute=True)
    assert executed.error_vs_reference < 1e-5
    assert ring(wl, "striped", devices).counts == executed.counts


def _counts_of_last_device(n, devices, d, e, block_q, block_k, order, heads):
    """(matmul FLOPs, HBM read bytes, HBM write bytes) of the simulated (last, busiest)
    device under a causal mask. Per step, every Q row block of its c rows loads Q_i, the
    fp32 running acc, m, l (all steps but the first), the K/V tiles up to its last visible
    key (4 d FLOPs per score), and stores the state (O and lse at the last step).

    Contiguous (Liu et al.): block j < i is seen whole, its own block j = i as a causal
    block with the diagonal. Striped: local query r is token r P + i, local key s token
    s P + j, visible when s <= r - [j > i]; the last device has j <= i at every step, so
    every step is a causal block with its diagonal."""
    c = n // devices
    i = devices - 1
    flops = reads = writes = 0
    for step in range(devices):
        j = (i - step) % devices
        whole = order == "contiguous" and j < i
        for r0 in range(0, c, block_q):
            rows = min(r0 + block_q, c) - r0
            reads += rows * d * e + (rows * (d + 2) * 4 if step > 0 else 0)
            writes += rows * d * e + rows * 4 if step == devices - 1 else rows * (d + 2) * 4
            end = c if whole else r0 + rows               # exclusive end of the visible keys
            for c0 in range(0, end, block_k):
                cols = min(c0 + block_k, c) - c0
                flops += 4 * d * rows * cols
                reads += 2 * cols * d * e                 # K_j, V_j
    return flops * heads, reads * heads, writes * heads


@pytest.mark.parametrize("order", ["contiguous", "striped"])
def test_causal_counts_of_the_simulated_device_match_the_derivation(order):
    n, devices, d, heads = 4096, 4, 64, 2
    wl = Workload(batch=1, heads=heads, seq_q=n, head_dim=d, causal=True)
    r = ring(wl, order, devices)
    expected = _counts_of_last_device(n, devices, d, 2, r.plan["block_q"], r.plan["block_k"],
                                      order, heads)
    assert (r.counts["matmul_flops"], r.counts["hbm_read_bytes"],
            r.counts["hbm_write_bytes"]) == expected


def test_striped_leaves_the_busiest_device_less_work():
    wl = Workload(batch=1, heads=2, seq_q=4096, head_dim=64, causal=True)
    contiguous, striped = ring(wl, "contiguous", 4), ring(wl, "striped", 4)
    assert striped.counts["matmul_flops"] < 0.7 * contiguous.counts["matmul_flops"]
    # the traffic each step moves over the link is the same K/V block
    assert striped.counts["interconnect_bytes"] == contiguous.counts["interconnect_bytes"]


@pytest.mark.parametrize("devices", [2, 4, 8, 16])
def test_causal_imbalance_striped_below_contiguous(devices):
    n = 1024 * devices
    wl = Workload(batch=1, heads=1, seq_q=n, head_dim=64, causal=True)
    cont = ring(wl, "contiguous", devices).extra["ring"]["load_balance"]
    strip = ring(wl, "striped", devices).extra["ring"]["load_balance"]
    assert strip["imbalance"] < cont["imbalance"]
    assert strip["step_imbalance"] < cont["step_imbalance"]
    c = n // devices
    # closed forms: contiguous device i sees i whole blocks and its own triangle; striped
    # device i sees i + 1 triangles with the diagonal and P - 1 - i without
    assert cont["pairs_per_device"] == [i * c * c + c * (c + 1) // 2 for i in range(devices)]
    assert strip["pairs_per_device"] == [(i + 1) * c * (c + 1) // 2
                                         + (devices - 1 - i) * c * (c - 1) // 2
                                         for i in range(devices)]
    # both cover every visible pair of the causal N x N matrix once
    assert sum(cont["pairs_per_device"]) == sum(strip["pairs_per_device"]) == n * (n + 1) // 2
    # contiguous: the busiest device does (2P - 1)/P of the mean; striped: within c/N of 1
    assert cont["imbalance"] == pytest.approx(((2 * devices - 1) * c + 1) / (n + 1), rel=1e-12)
    assert strip["imbalance"] < 1 + devices / n


def test_without_a_mask_both_orders_are_balanced():
    wl = Workload(batch=1, heads=1, seq_q=2048, head_dim=64)
    for order in ("contiguous", "striped"):
        lb = ring(wl, order, 8).extra["ring"]["load_balance"]
        assert lb["imbalance"] == lb["step_imbalance"] == 1.0


def test_contiguous_counts_do_not_depend_on_the_option_being_named():
    wl = Workload(batch=2, heads=2, seq_q=1000, head_dim=64, causal=True)
    default = simulate("ring", wl, "h100", compute=False, options={"devices": 8})
    named = ring(wl, "contiguous", 8)
    assert default.counts == named.counts


def test_cli_ring_order(capsys):
    args = ["run", "ring", "--hw", "h100", "--seq", "4096", "--head-dim", "64", "--causal",
            "--count-only", "--devices", "4", "--format", "json"]
    assert main(args + ["--ring-order", "striped"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["options"]["ring_order"] == "striped"
    assert data["ring"]["load_balance"]["order"] == "striped"
    assert data["ring"]["max_context_tokens"] % 4 == 0
    assert main(["run", "ring", "--seq", "4095", "--devices", "4", "--ring-order", "striped",
                 "--count-only"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--ring-order striped" in err
