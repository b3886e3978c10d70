"""Ring Attention: exact output, per-device closed-form traffic, the link, the overlap rule."""
import numpy as np
import pytest

from algorithms.base import PlanError
from attnsim import Workload, make_inputs, simulate
from shapes import EXACT_TOL

cdiv = lambda a, b: -(-a // b)  # noqa: E731


@pytest.mark.parametrize("nq,nk,devices", [(333, 333, 4), (300, 200, 3), (100, 250, 5), (64, 64, 1)])
@pytest.mark.parametrize("causal", [False, True])
def test_matches_reference_and_count_only(nq, nk, devices, causal):
    wl = Workload(batch=2, heads=2, kv_heads=1, seq_q=nq, seq_k=nk, head_dim=40, causal=causal)
    opts = {"devices": devices}
    r = simulate("ring", wl, "h100", sram_bytes=40000, options=opts, inputs=make_inputs(wl, 3))
    assert r.error_vs_reference < EXACT_TOL
    counted = simulate("ring", wl, "h100", sram_bytes=40000, options=opts, compute=False)
    assert counted.counts == r.counts


def test_per_device_closed_form_non_causal():
    n, d, P, b, h, e = 1000, 64, 4, 2, 3, 2
    wl = Workload(batch=b, heads=h, seq_q=n, head_dim=d)
    r = simulate("ring", wl, "h100", options={"devices": P}, compute=False)
    br, c = r.plan["block_q"], cdiv(n, P)
    rows = min(n, c)                                   # device 0's queries
    keys = [min(n, (j + 1) * c) - min(n, j * c) for j in range(P)]
    visits = [keys[(0 - s) % P] for s in range(P)]      # the block each step sees
    tr = cdiv(rows, br)
    state = rows * d * 4 + 2 * rows * 4                 # fp32 acc, m, l
    reads = sum(rows * d * e + tr * 2 * kb * d * e for kb in visits) + (P - 1) * state
    writes = (P - 1) * state + rows * d * e + 4 * rows
    assert r.counts["hbm_read_bytes"] == b * h * reads
    assert r.counts["hbm_write_bytes"] == b * h * writes
    assert r.counts["interconnect_bytes"] == b * h * sum(2 * kb * d * e for kb in visits[:-1])
    assert r.counts["matmul_flops"] == b * h * 4 * rows * n * d
    assert r.counts["kernel_launches"] == P
    assert r.extra["ring"]["interconnect_bytes_all_devices"] == P * r.counts["interconnect_bytes"]


def test_each_step_declares_the_running_state_it_moves():
    """L2 pricing: a step's compulsory DRAM traffic holds the fp32 running state only as the
    step moves it (the first step writes it, the last reads it, the steps between do both),
    and O and lse only in the last step, which writes them."""
    n, d, P, b, h, e = 1024, 64, 4, 2, 3, 2
    r = simulate("ring", Workload(batch=b, heads=h, seq_q=n, head_dim=d), "h100",
                 options={"devices": P}, compute=False)
    rows = n // P
    state = b * h * (rows * d * 4 + 2 * rows * 4)
    out = b * h * (rows * d * e + rows * 4)
    first, *middle, last = (k.unique_hbm_bytes for k in r.kernels)
    assert middle == [middle[0]] * (P - 2)
    assert first + state == middle[0] == last + state - out
    assert sum(k.unique_hbm_bytes for k in r.kernels) <= r.counts["hbm_read_bytes"] + \
        r.counts["hbm_write_bytes"]


@pytest.mark.parametrize("order", ["contiguous", "striped"])
@pytest.mark.parametrize("causal", [False, True])
def test_declared_work_per_cta_is_the_tiles_each_step_computes(order, causal):
    """The steps' ``cta_work`` (causal imbalance in the timing model) adds up to the tiles the
    kernels compute: with whole tiles everywhere, the matmul FLOPs over 4 B_r B_c d."""
    wl = Workload(batch=2, heads=3, seq_q=1024, head_dim=64, causal=causal)
    r = simulate("ring", wl, "h100", options={"devices": 4, "ring_order": order}, compute=False)
    bq, bk = r.plan["block_q"], r.plan["block_k"]
    assert 1024 // 4 % bq == 0 and 1024 // 4 % bk == 0          # whole tiles only
    declared = sum(k.cta_work.sum() for k in r.kernels) * wl.batch * wl.heads
    assert declared == r.counts["matmul_flops"] / (4 * bq * bk * wl.head_dim)


def test_causal_simulates_the_busiest_device():
    wl = Workload(batch=1, heads=4, seq_q=4096, head_dim=64, causal=True)
    r = simulate("ring", wl, "h100", options={"devices": 4}, compute=False)
    assert r.plan["simulated_device"] == 3
    full = simulate("ring", wl.replace(causal=False), "h100", options={"devices": 4}, compute=False)
    # the last device sees every block: its FLOPs are those of a non-causal device less
    # the upper half of its own diagonal block
    assert 0.8 * full.counts["matmul_flops"] < r.counts["matmul_flops"] < full.counts["matmul_flops"]


def test_transfers_hide_behind_compute_only_for_large_blocks():
    big = simulate("ring", Workload(heads=8, seq_q=65536, head_dim=128), "h100",
                   options={"devices": 8}, compute=False)
    assert big.extra["ring"]["transfers_hidden"]
    assert big.time.bound != "interconnect"
    small = simulate("ring", Workload(heads=8, seq_q=2048, head_dim=128), "h100",
                     options={"devices": 8}, compute=False)
    assert not small.extra["ring"]["transfers_hidden"]
    assert small.time.interconnect_s > 0
    # F/B: mma.sync at 0.68 of 989 TFLOP/s (the H800 microbenchmark's mma.sync / wgmma)
    # against 450 GB/s one way, 2 d e bytes per key
    assert big.extra["ring"]["min_rows_per_device_to_hide_transfers"] == pytest.approx(
        989.4e12 * (494 / 757) / 0.96 * 4 / (4 * 450e9), rel=0.01)


def test_per_device_traffic_grows_as_n_squared_over_p():
    def hbm(n, p):
        return simulate("ring", Workload(heads=2, seq_q=n, head_dim=64), "h100",
                        options={"devices": p}, compute=False).hbm_bytes
    ns = [32768, 65536, 131072]          # the O(N d) state/Q terms fade at this size
    slope = np.polyfit(np.log(ns), np.log([hbm(n, 4) for n in ns]), 1)[0]
    assert slope == pytest.approx(2.0, abs=0.05)
    assert hbm(16384, 8) < 0.6 * hbm(16384, 4)


def test_bad_device_count():
    with pytest.raises(PlanError, match=r"\(--seq 4\) leave the last 4 without any; "
                                        r"use --devices 4"):
        simulate("ring", Workload(seq_q=4, head_dim=16), "h100", options={"devices": 8})
    with pytest.raises(PlanError, match="--devices must be at least 1"):
        simulate("ring", Workload(seq_q=64, head_dim=16), "h100", options={"devices": 0})
    # 9 tokens in blocks of 2 fill 5 of 8 devices: named, with a count that works
    with pytest.raises(PlanError, match=r"leave the last 3 without any; use --devices 5"):
        simulate("ring", Workload(seq_q=9, head_dim=16, causal=True), "h100",
                 options={"devices": 8})
    with pytest.raises(PlanError, match=r"keys \(--seq-k 9\) leave the last"):
        simulate("ring", Workload(seq_q=64, seq_k=9, head_dim=16), "h100",
                 options={"devices": 8})


def test_a_decode_step_names_new_tokens_not_the_cache(capsys):
    """With --decode the query rows are the step's --new-tokens (the --seq cache is long
    enough): the message names that flag, and its --devices runs."""
    from attnsim.cli import main
    step = ["run", "ring", "--decode", "--seq", "1024", "--count-only"]
    assert main(step) == 2
    err = capsys.readouterr().err
    assert "(--new-tokens 1)" in err and "use --devices 1" in err and "--seq" not in err
    assert main(step + ["--devices", "1"]) == 0
    capsys.readouterr()
    with pytest.raises(PlanError, match=r"\(--new-tokens 9\) leave the last 3 without "
                                        r"any; use --devices 5"):
        simulate("ring", Workload(seq_q=9, seq_k=1024, head_dim=16, causal=True, decode=True),
                 "h100", options={"devices": 8}, compute=False)


def test_switching_the_link_off_leaves_one_devices_own_work():
    """TimingOptions(interconnect=False): what a port on one GPU (no transfers) measures.
    Small blocks are link-bound (the switch removes that time and changes the bound); large
    blocks hide the link (the switch changes nothing). (32 heads: with 8, the grid covers so
    few SMs that its compute, stretched over the idle ones, hides the link too.)"""
    from hwmodels.timing import TimingOptions
    off = TimingOptions(interconnect=False)
    small = Workload(heads=32, seq_q=2048, head_dim=128)
    on_s = simulate("ring", small, "h100", options={"devices": 8}, compute=False)
    off_s = simulate("ring", small, "h100", options={"devices": 8}, compute=False, timing=off)
    assert on_s.time.bound == "interconnect" and off_s.time.bound != "interconnect"
    assert off_s.time.interconnect_s == 0 and off_s.time.predicted_s < on_s.time.predicted_s
    assert off_s.counts == on_s.counts                       # the counts do not change
    big = Workload(heads=8, seq_q=65536, head_dim=128)
    on_b, off_b = (simulate("ring", big, "h100", options={"devices": 8}, compute=False,
                            timing=t).time.predicted_s for t in (TimingOptions(), off))
    assert off_b == pytest.approx(on_b, rel=1e-9)


def test_without_a_link_the_overlap_rule_does_not_apply():
    """A GPU file with nvlink_bytes_per_s = 0 (run with --no-interconnect): no block size
    hides a transfer over no link, so the rule's figures are None with a note saying why,
    not a 0 that claims every block hides the transfers."""
    from hwmodels.gpu_file import gpu_from_mapping
    from hwmodels.timing import TimingOptions
    no_link = gpu_from_mapping({"base": "h100-sxm", "name": "h100-nolink",
                                "nvlink_bytes_per_s": 0})
    r = simulate("ring", Workload(heads=8, seq_q=65536, head_dim=128), no_link,
                 options={"devices": 8}, compute=False,
                 timing=TimingOptions(interconnect=False))
    ring = r.extra["ring"]
    assert r.plan["min_block_for_overlap"] is None
    assert ring["min_rows_per_device_to_hide_transfers"] is None
    assert ring["transfers_hidden"] is None
    assert "h100-nolink has no interconnect" in ring["transfers_note"]
    linked = simulate("ring", Workload(heads=8, seq_q=65536, head_dim=128), "h100-sxm",
                      options={"devices": 8}, compute=False)
    assert "transfers_note" not in linked.extra["ring"]
    assert linked.extra["ring"]["transfers_hidden"] is True


def test_a_ring_of_one_device_has_no_transfer_to_hide():
    """One device sends nothing, so whether transfers hide does not apply (a False there
    would send the user looking for a bottleneck that does not exist)."""
    r = simulate("ring", Workload(heads=8, seq_q=512, head_dim=128), "h100-sxm",
                 options={"devices": 1}, compute=False)
    ring = r.extra["ring"]
    assert ring["interconnect_bytes_all_devices"] == 0
    assert ring["transfers_hidden"] is None and "one device" in ring["transfers_note"]


def test_without_a_link_the_cli_prints_null_and_why(capsys, tmp_path):
    import json
    from attnsim.cli import main
    gpu = tmp_path / "nolink.toml"
    gpu.write_text('base = "h100-sxm"\nname = "h100-nolink"\nnvlink_bytes_per_s = 0\n')
    args = ["run", "ring", "--seq", "1024", "--count-only", "--hw", str(gpu),
            "--no-interconnect"]
    assert main(args + ["--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["plan"]["min_block_for_overlap"] is None
    assert data["ring"]["min_rows_per_device_to_hide_transfers"] is None
    assert data["ring"]["transfers_hidden"] is None
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "overlap rule does not apply" in text and "True" not in text.split("ring field")[1]
