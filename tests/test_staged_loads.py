"""Global loads a tile step stages through registers (``KernelRecord.step_loads``).

The v1 release loads the next step's Q_i and dO_i into registers and stores them to shared
memory a few GEMMs later, and its loop kernel reads its fp32 dQ_i back to add to it: what of
a load's latency the work between issue and use does not cover waits on the step's chain.
The expected waits below are worked out by hand from the GPU's latencies.
"""
from __future__ import annotations

import numpy as np
import pytest

from algorithms.flash1 import backward as flash1_bwd
from algorithms.kernels import step_latency
from attnsim import Workload, simulate
from hwmodels import Recorder, TimingOptions, get_gpu, predict_time
from hwmodels.counters import MATMUL_FLOPS
from hwmodels.memory import StepLoad
from hwmodels.timing import l2_reread_hit, resident_per_sm

H100 = get_gpu("h100")
RELEASE = {"tiles": "release", "grid": "release"}


def _loading_kernel(gpu, loads, ctas=None, steps=None, **kernel):
    ctas = ctas or 2 * gpu.sm_count
    rec = Recorder(gpu)
    c = rec.kernel("k", ctas=ctas, buffers={"x": 96 * 1024}, tc_path="mma_sync",
                   step_events=step_latency.events(mma=1), chain_steps=steps or ctas * 1000,
                   step_loads=loads, **kernel)
    c[MATMUL_FLOPS] = 10**12
    return rec.kernels


def test_an_uncovered_load_waits_its_whole_latency_on_every_step():
    """Nothing between issue and use: each step waits the L2 hit latency, 264.5 clocks on the
    H100 ([LUO-LAT]); the SM pays once for the CTAs it holds in step."""
    ks = _loading_kernel(H100, (StepLoad("l2"),))
    t = predict_time(H100, ks).kernels[0]
    together = min(resident_per_sm(H100, ks[0]), 2)
    steps_per_sm = 2 * H100.sm_count * 1000 / (H100.sm_count * together)
    assert t.load_wait_s == pytest.approx(steps_per_sm * 264.5 / H100.sustained_clock)
    assert t.step_latency_s == pytest.approx(
        t.load_wait_s + steps_per_sm * 24 / H100.sustained_clock)


def test_work_between_issue_and_use_covers_the_latency():
    """A load with the whole GEMM phase between issue and use, here far longer than a DRAM
    access a step, waits nothing; events between cover their latencies as well."""
    covered = predict_time(H100, _loading_kernel(H100, (StepLoad("stream", gemm_share=1.0),)))
    assert covered.kernels[0].load_wait_s == 0
    bare = predict_time(H100, _loading_kernel(H100, (StepLoad("l2"),))).kernels[0]
    half = predict_time(H100, _loading_kernel(
        H100, (StepLoad("l2", events=step_latency.events(fp=33)),))).kernels[0]
    assert half.load_wait_s == pytest.approx(bare.load_wait_s * (264.5 - 33 * 4) / 264.5)


def test_streamed_data_waits_on_dram_as_often_as_its_rereads_miss_l2():
    """Without a declared working set every re-read misses: the DRAM latency, 340.6 ns; with
    one that fits in L2, the L2 hit latency."""
    miss = predict_time(H100, _loading_kernel(H100, (StepLoad("stream"),))).kernels[0]
    hit_ks = _loading_kernel(H100, (StepLoad("stream"),), unique_hbm_bytes=10**6,
                             l2_working_set_bytes=10**6)
    assert l2_reread_hit(H100, hit_ks[0]) == 1.0
    hit = predict_time(H100, hit_ks).kernels[0]
    assert miss.load_wait_s / hit.load_wait_s == pytest.approx(
        340.6e-9 * H100.sustained_clock / 264.5)


def test_the_switch_and_the_step_latency_switch_free_the_loads():
    ks = _loading_kernel(H100, (StepLoad("l2", steps=0.5),))
    on = predict_time(H100, ks).kernels[0]
    assert on.load_wait_s > 0
    for off in (TimingOptions(staged_load_latency=False), TimingOptions(step_latency=False)):
        t = predict_time(H100, ks, off).kernels[0]
        assert t.load_wait_s == 0 and t.total_s < on.total_s


@pytest.mark.parametrize("bad", [StepLoad("hbm"), StepLoad("l2", gemm_share=1.5),
                                 StepLoad("l2", steps=-0.1), ("l2", 0.5)])
def test_a_malformed_step_load_is_refused(bad):
    with pytest.raises(ValueError, match="StepLoad"):
        _loading_kernel(H100, (bad,))


def test_the_v1_release_declares_its_staged_loads():
    """The release's forward stages the next Q_i (the softmax between) and, at every K/V
    block but the first, reads back its fp32 O_i (the softmax and P V between); its
    backward the next Q_i and dO_i, the next log-sum-exp and D_i, and, in the loop kernel
    (a CTA per head), the fp32 dQ_i read back at every K/V block but the first; the split
    kernel adds dQ with atomics and reads nothing back. Algorithm 1 and 4 as written
    (--tiles paper), and FlashAttention-2, stage nothing."""
    loop = Workload(batch=16, heads=32, seq_q=1024, head_dim=64, passes="fwd+bwd")
    r = simulate("flash1", loop, H100, options=RELEASE, compute=False)
    kernels = {k.name: k for k in r.kernels}
    assert r.plan["bwd"]["splits"] == 1
    next_q, o_back = kernels["flash1_fwd"].step_loads
    assert next_q.softmax_share == 1.0 and next_q.gemm_share == 0.0
    assert (o_back.source, o_back.softmax_share, o_back.gemm_share) == ("stream", 1.0, 1 / 2)
    assert o_back.steps == pytest.approx(3 / 4)                   # all passes but the first
    one_block = simulate("flash1", Workload(batch=16, heads=32, seq_q=256, head_dim=64),
                         H100, options=RELEASE, compute=False)
    assert len(one_block.kernels[0].step_loads) == 1              # nothing to read back
    bwd = kernels["flash1_bwd"].step_loads
    assert [(ld.source, ld.gemm_share) for ld in bwd] == \
        [("stream", 3 / 5), ("stream", 2 / 5), ("l2", 2 / 5), ("l2", 1 / 5), ("stream", 1 / 5)]
    steps = flash1_bwd.steps_per_key_block(1024, 1024, 16, 256, False, release=True)  # 4 x 64
    assert list(steps) == [64] * 4
    assert bwd[-1].steps == pytest.approx(3 / 4)                  # all passes but the first
    assert bwd[0].steps == pytest.approx(63 / 64)                 # all steps but a pass's last
    split = simulate("flash1", Workload(batch=1, heads=16, seq_q=16384, head_dim=64,
                                        passes="bwd"), H100, options=RELEASE, compute=False)
    assert split.plan["splits"] > 1
    (split_bwd,) = [k for k in split.kernels if k.name == "flash1_bwd"]
    assert len(split_bwd.step_loads) == 4
    paper = simulate("flash1", loop, H100, compute=False)
    assert all(not k.step_loads for k in paper.kernels)
    assert all(not k.step_loads for k in simulate("flash2", loop, H100, compute=False).kernels)


def test_the_release_backward_waits_on_its_dq_readback_on_the_h100_not_the_a100():
    """At the FA-2 paper's N = 2048, d = 64 the H100 runs the loop kernel and its dQ_i read
    back, streamed from DRAM, comes after the dV GEMM and is needed after dK: one GEMM
    between, shorter on the H100 than a DRAM access, so the step waits; the A100 runs the
    split kernel (no read back) on slower MMAs, and its loads are covered."""
    wl = Workload(batch=8, heads=32, seq_q=2048, head_dim=64, passes="bwd")
    h100 = simulate("flash1", wl, H100, options=RELEASE, compute=False)
    a100 = simulate("flash1", wl, "a100-80gb", options=RELEASE, compute=False)
    (h,) = [k for k in h100.time.kernels if k.name == "flash1_bwd"]
    (a,) = [k for k in a100.time.kernels if k.name == "flash1_bwd"]
    assert h100.plan["splits"] == 1 and a100.plan["splits"] > 1
    assert h.load_wait_s > 0.05 * h.total_s
    assert a.load_wait_s == 0


def test_a_load_from_dram_waits_the_latency_its_kernels_own_traffic_raises():
    """A kernel streaming DRAM at utilization u: its staged loads wait the pointer chase's
    340.6 ns plus what a round of the GH200 stream sweep gains over its lightest load at u
    (``GPU.loaded_dram_latency_s``), u being the utilization the kernel's own time gives
    (the fixed point ``kernel_time`` solves); ``--no-loaded-latency`` keeps the chase's."""
    from hwmodels.counters import HBM_READ_BYTES
    from hwmodels.timing import hbm_rate
    ks = _loading_kernel(H100, (StepLoad("stream"),))
    ks[0].raw[HBM_READ_BYTES] = 2 * 10**9
    t = predict_time(H100, ks).kernels[0]
    u = t.dram_bytes / ((t.total_s - t.launch_s) * hbm_rate(H100, TimingOptions()))
    assert 0.2 < u < 0.9
    assert t.dram_latency_s == pytest.approx(H100.loaded_dram_latency_s(u), rel=1e-6)
    util, round_s = H100.stream_round_curve()
    assert t.dram_latency_s - 340.6e-9 == pytest.approx(
        float(np.interp(u, util, round_s)) - round_s[0], rel=1e-6)
    off = predict_time(H100, ks, TimingOptions(loaded_latency=False)).kernels[0]
    assert off.dram_latency_s == 340.6e-9 and off.load_wait_s < t.load_wait_s
    # below the sweep's lightest load, and on a GPU without a sweep: the chase's latency
    assert H100.loaded_dram_latency_s(0.0) == H100.loaded_dram_latency_s(util[0]) == 340.6e-9
    bare = H100.replace(stream_curve=())
    assert predict_time(bare, ks).kernels[0].dram_latency_s == 340.6e-9
