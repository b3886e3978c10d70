"""The step-latency mechanism: a tile step's chain waits on its instructions' latencies.

Each attention tile loop declares what one step waits for beyond the pipes' busy time
(``algorithms.kernels.step_latency``); the timing model prices those events at the GPU's
measured latencies and adds them to the GEMM -> softmax chain as a delay station of the
mean-value analysis (``hwmodels.timing``). These tests hold the declarations to the steps the
kernels run, the queueing arithmetic to its closed forms, and the switch to what it adds.
"""
import numpy as np
import pytest

from algorithms.flash1 import release
from algorithms.kernels import step_latency
from attnsim import Workload, simulate
from hwmodels import Recorder, TimingOptions, get_gpu, predict_time
from hwmodels.counters import EXP_OPS, MATMUL_FLOPS
from hwmodels.gpu_file import GpuFileError, gpu_from_mapping
from hwmodels.timing import closed_network_time, resident_per_sm, step_latency_clocks
from test_count_only_registry import CASES

H100, A100 = get_gpu("h100"), get_gpu("a100")
FEATURE_FAMILY = ("linear", "rfa", "performer")     # exps in the feature map, no softmax row


# ---- the queueing arithmetic -----------------------------------------------------------------

def test_one_chain_waits_the_delay_and_every_station_in_turn():
    assert closed_network_time((1.0, 2.0), 1, delay=5.0) == pytest.approx(8.0)
    assert closed_network_time((0.0,), 3, delay=4.0) == pytest.approx(4.0 / 3)


def test_two_chains_share_a_station_and_overlap_their_delays():
    """Mean-value analysis by hand, one station of demand D and a delay Z: with one customer
    R = D, X = 1 / (Z + D), Q = D / (Z + D); with two R = D (1 + Q), X = 2 / (Z + R)."""
    d, z = 1.0, 3.0
    q1 = d / (z + d)
    r2 = d * (1 + q1)
    assert closed_network_time((d,), 2, delay=z) == pytest.approx((z + r2) / 2)
    # many chains: the station is the bottleneck, the delay hidden
    assert closed_network_time((d,), 64, delay=z) == pytest.approx(d, rel=1e-6)


# ---- the GPU's latencies ---------------------------------------------------------------------

def test_builtin_gpus_carry_the_measured_latencies():
    """[ACCEL-SIM]: the A100 and H100 configurations' tuned latencies, in clocks."""
    assert (A100.mma_latency_clocks, A100.smem_latency_clocks, A100.sfu_latency_clocks,
            A100.fp_latency_clocks) == (25, 28, 23, 4)
    assert (H100.mma_latency_clocks, H100.smem_latency_clocks, H100.sfu_latency_clocks,
            H100.fp_latency_clocks) == (24, 29, 23, 4)


def test_gpu_file_sets_or_clears_a_latency():
    g = gpu_from_mapping({"base": "h100", "name": "x", "smem_latency_clocks": 40,
                          "fp_latency_clocks": 0})
    assert (g.smem_latency_clocks, g.fp_latency_clocks) == (40, 0)
    with pytest.raises(GpuFileError, match="'mma_latency_clocks' must be in"):
        gpu_from_mapping({"base": "h100", "mma_latency_clocks": 1e6}, origin="my.toml")
    with pytest.raises(GpuFileError, match="'sfu_latency_clocks' must be positive"):
        gpu_from_mapping({"base": "h100", "sfu_latency_clocks": -3}, origin="my.toml")


# ---- what the kernels declare ----------------------------------------------------------------

def test_flash1_release_step_is_the_releases_chain():
    """The v1 release's forward step at d = 128 (B_c = 128): Q fragment, S, the row max over
    the 128 / 16 = 8 values a thread holds of a row (its warp spans a quarter of the keys),
    the four warps' maxima through shared memory, the exp, P V, the partials through
    shared memory and summed, the rescale: 2 MMAs, 5 shared-memory loads, 2 exps and
    8 + 10 dependent fp32 operations, 6 shuffle rounds and 2 barriers: 311 clocks on the
    H100 at Accel-Sim's 24, 29, 23 and 4, plus 6 rounds at 29 and 2 barriers of its 4 warps
    at 8.2 + 4 x 2.045 (the published microbenchmarks, hwmodels.gpus); a GPU file's own
    latencies replace them. Its steps: 16-row steps x K/V blocks."""
    wl = Workload(batch=2, heads=3, seq_q=1000, head_dim=128, passes="fwd")
    r = simulate("flash1", wl, "h100", options={"tiles": "release"}, compute=False)
    (k,) = [k for k in r.kernels if k.name == "flash1_fwd"]
    assert release.key_block(128, 1000) == 128
    assert dict(k.step_events) == {"mma": 2, "smem": 5, "sfu": 2, "fp": 18, "shfl": 6, "bar": 2}
    assert k.threads_per_cta == 128
    assert step_latency_clocks(H100, k, sync=False) == 2 * 24 + 5 * 29 + 2 * 23 + 18 * 4 == 311
    assert step_latency_clocks(H100, k) == pytest.approx(311 + 6 * 29 + 2 * (8.2 + 4 * 2.045))
    measured = H100.replace(shfl_latency_clocks=20, barrier_latency_clocks=40,
                            barrier_clocks_per_warp=0)
    assert step_latency_clocks(measured, k) == 311 + 6 * 20 + 2 * 40
    assert k.chain_steps == 6 * -(-1000 // 16) * -(-1000 // 128)


def test_flash2_steps_are_its_cta_work():
    """FlashAttention-2's forward: the row max over B_c / 4 values a thread (its warps each
    span all B_c keys) and across its quad (2 shuffle rounds), two fragments, two MMAs, one
    exp, an FMA and a conversion, two barriers; its backward: no reduction, three barriers.
    Their steps are the tiles its CTAs visit (``cta_work``), per head."""
    wl = Workload(batch=2, heads=3, seq_q=1000, head_dim=64, causal=True, passes="fwd+bwd")
    r = simulate("flash2", wl, "a100", compute=False)
    fwd, bwd = (k for k in r.kernels if k.name in ("flash2_fwd", "flash2_bwd"))
    bk = r.plan["block_k"]
    assert dict(fwd.step_events) == {"mma": 2, "smem": 2, "sfu": 1, "fp": bk // 4 + 2,
                                     "shfl": 2, "bar": 2}
    assert fwd.chain_steps == 6 * fwd.cta_work.sum()
    assert dict(bwd.step_events) == {"mma": 2, "smem": 3, "sfu": 1, "fp": 4, "bar": 3}
    assert bwd.chain_steps == 6 * bwd.cta_work.sum()


def test_flash3_warpgroups_each_run_a_chain_without_fragment_loads():
    wl = Workload(batch=2, heads=3, seq_q=2048, head_dim=128, passes="fwd")
    r = simulate("flash3", wl, "h100", compute=False)
    (k,) = r.kernels
    assert dict(k.step_events)["mma"] == 2 and "smem" not in dict(k.step_events)
    assert k.chain_steps == 6 * k.cta_work.sum() * r.plan["consumer_warpgroups"]


@pytest.mark.parametrize("name, workload, options",
                         [pytest.param(n, w, o, id=f"{n}-{i}") for n, cases in CASES.items()
                          for i, (w, o) in enumerate(cases) if n not in FEATURE_FAMILY])
def test_every_softmax_tile_loop_declares_its_step_chain(name, workload, options):
    """Every tensor-core kernel that takes a softmax over tiles says what a step waits for
    and how many steps it takes: at least one per CTA, and (where it declares its CTAs' work)
    the tiles its CTAs visit."""
    r = simulate(name, workload, "h100", options=options, compute=False)
    for k in r.kernels:
        if k.tc_path == "none" or not k.counts()["exp_ops"]:
            continue
        assert {"mma", "fp"} <= set(dict(k.step_events)), k.name
        assert k.chain_steps >= k.ctas, k.name
        if k.cta_work is not None and not k.name.startswith(("flash3", "flash1")):
            per_head = k.ctas // len(k.cta_work)
            assert k.chain_steps == round(k.cta_work.sum() * per_head), k.name


def test_the_events_are_the_steps_documented():
    assert step_latency.forward_step(64) == (("mma", 2.0), ("smem", 2.0), ("sfu", 1.0),
                                             ("fp", 18.0), ("shfl", 2.0), ("bar", 2.0))
    assert step_latency.forward_step(128, wgmma=True) == (("mma", 2.0), ("sfu", 1.0),
                                                          ("fp", 34.0), ("shfl", 2.0),
                                                          ("bar", 1.0))
    assert dict(step_latency.split_k_forward_step(256)) == {"mma": 2, "smem": 5, "sfu": 2,
                                                           "fp": 16 + 10, "shfl": 6, "bar": 2}
    assert dict(step_latency.split_k_backward_step()) == {"mma": 3, "smem": 5, "sfu": 1, "fp": 7,
                                                          "bar": 2}


# ---- what the timing model makes of them -----------------------------------------------------

def _latency_kernel(gpu, ctas, steps, chains=1):
    rec = Recorder(gpu)
    c = rec.kernel("k", ctas=ctas, buffers={"x": 64 * 1024}, tc_path="mma_sync",
                   chains_per_cta=chains, step_events=step_latency.events(mma=2, smem=2, fp=10),
                   chain_steps=steps)
    c[MATMUL_FLOPS], c[EXP_OPS] = 10**13, 10**10
    return rec.kernels


def test_the_delay_is_the_steps_latency_spread_over_the_sms():
    """One chain a CTA, the SM's resident CTAs in step: each SM waits, per step of the CTAs
    it holds at once, 2 x 24 + 2 x 29 + 10 x 4 = 146 clocks; the chain is the pipes' phases
    plus that wait."""
    g = H100
    ks = _latency_kernel(g, ctas=4 * g.sm_count, steps=4 * g.sm_count * 100)
    on = predict_time(g, ks).kernels[0]
    off = predict_time(g, ks, TimingOptions(step_latency=False)).kernels[0]
    together = min(resident_per_sm(g, ks[0]), 4)
    expected = 4 * 100 * 146 / g.sustained_clock / together
    assert on.step_latency_s == pytest.approx(expected)
    assert off.step_latency_s == 0
    assert on.chain_s == pytest.approx(off.chain_s + expected)
    assert on.total_s > off.total_s


def test_an_sm_holding_more_ctas_than_the_mean_waits_its_latencies_once():
    """A grid of 1.5 CTAs an SM, two resident at a time: the busiest SMs hold two CTAs in
    step, twice the work of one, but wait out each step's latencies once; the makespan is
    q = 2 / 1.5 times the mean SM's phases, and one CTA's latency, not q times it."""
    g = H100
    ctas = g.sm_count * 3 // 2
    ks = _latency_kernel(g, ctas=ctas, steps=ctas * 100)
    assert resident_per_sm(g, ks[0]) == 2
    on = predict_time(g, ks).kernels[0]
    off = predict_time(g, ks, TimingOptions(step_latency=False)).kernels[0]
    one_cta = 100 * 146 / g.sustained_clock
    assert on.quantization == pytest.approx(2 * g.sm_count / ctas)
    assert on.quantization * on.step_latency_s == pytest.approx(one_cta)
    assert on.quantization * (on.chain_s - off.chain_s) == pytest.approx(one_cta)


def test_out_of_step_ctas_each_wait_but_hide_each_other():
    g = H100
    ks = _latency_kernel(g, ctas=4 * g.sm_count, steps=4 * g.sm_count * 100)
    apart = predict_time(g, ks, TimingOptions(lockstep_ctas=False)).kernels[0]
    assert apart.step_latency_s == pytest.approx(4 * 100 * 146 / g.sustained_clock)


def test_chains_of_one_cta_hide_the_latency():
    """FlashAttention-3's staggered chains: with 4 of them the wait hides mostly behind the
    other chains' pipes."""
    g = H100
    one = predict_time(g, _latency_kernel(g, g.sm_count, g.sm_count * 1000)).kernels[0]
    four = predict_time(g, _latency_kernel(g, g.sm_count, g.sm_count * 1000, chains=4)).kernels[0]
    busy = predict_time(g, _latency_kernel(g, g.sm_count, g.sm_count * 1000, chains=4),
                        TimingOptions(step_latency=False)).kernels[0]
    assert four.step_latency_s == one.step_latency_s
    assert four.chain_s - busy.chain_s < 0.5 * (one.chain_s - (one.matmul_s + one.exp_s))


def test_a_gpu_without_latencies_adds_nothing():
    g = H100.replace(mma_latency_clocks=0, smem_latency_clocks=0, sfu_latency_clocks=0,
                     fp_latency_clocks=0, shfl_latency_clocks=0, barrier_latency_clocks=0)
    wl = Workload(batch=4, heads=16, seq_q=2048, head_dim=128)
    with_none = simulate("flash2", wl, g, compute=False).time
    off = simulate("flash2", wl, H100, compute=False,
                   timing=TimingOptions(step_latency=False)).time
    assert with_none.step_latency_s == 0
    assert with_none.predicted_s == pytest.approx(off.predicted_s)


def test_v1_waits_more_a_flop_than_flashattention_2():
    """FlashAttention v1's 16-row steps split the keys over the warps, which pass their row
    statistics and partials through shared memory; FlashAttention-2's 128-row steps keep a
    row in a warp: the release waits several times longer per matmul FLOP."""
    wl = Workload(batch=4, heads=16, seq_q=4096, head_dim=128, passes="fwd")
    v1 = simulate("flash1", wl, "h100", options={"tiles": "release", "grid": "release"},
                  compute=False)
    v2 = simulate("flash2", wl, "h100", compute=False)

    def per_flop(r):
        (k,) = [k for k in r.kernels if k.name.endswith("_fwd")]
        return k.chain_steps * step_latency_clocks(H100, k) / k.counts()["matmul_flops"]
    assert per_flop(v1) > 3 * per_flop(v2)
    assert np.isfinite(v1.time.step_latency_s) and v1.time.step_latency_s > 0


def test_the_json_shows_the_step_chain_and_the_switch_removes_it(capsys):
    """``run --format json``: each kernel's declared events and steps, its ``step_latency_s``
    and the run's total; ``--no-step-latency`` prices the busy time alone."""
    import json

    from attnsim.cli import main
    args = ["run", "flash2", "--hw", "h100", "--seq", "2048", "--head-dim", "64",
            "--count-only", "--format", "json"]
    assert main(args) == 0
    on = json.loads(capsys.readouterr().out)
    assert main(args + ["--no-step-latency"]) == 0
    off = json.loads(capsys.readouterr().out)
    (k,) = on["kernels"]
    assert k["step_events"] == {"mma": 2, "smem": 2, "sfu": 1, "fp": on["plan"]["block_k"] / 4 + 2,
                                "shfl": 2, "bar": 2}
    assert k["chain_steps"] > 0 and k["time"]["step_latency_s"] > 0
    assert on["time"]["step_latency_s"] == pytest.approx(k["time"]["step_latency_s"])
    assert off["time"]["step_latency_s"] == 0
    assert off["time"]["predicted_s"] < on["time"]["predicted_s"]


def test_shuffle_and_barrier_latencies_weigh_most_on_the_split_k_release(tmp_path):
    """Priced at their measured latencies (the built-in GPUs', or a GPU file's as
    ``gpu_microbench.py --toml`` writes them), the warps' shuffles and barriers slow the v1
    release, with its 6 shuffle rounds and 2 barriers a 16-row step, by more per FLOP than
    FlashAttention-2, with 2 and 2 a 128-row step; a GPU file that sets them to 0 prices
    them as --no-sync-latency does."""
    from hwmodels.gpu_file import load_gpu_file
    path = tmp_path / "free.toml"
    path.write_text('base = "h100"\nname = "h100-free-sync"\nshfl_latency_clocks = 0\n'
                    'barrier_latency_clocks = 0\n')
    free = load_gpu_file(str(path))
    measured = H100
    # d = 64, the papers' shape (at d = 128 the release's fp32 o_tmp traffic makes it
    # HBM-bound on the H100, and no latency shows)
    wl = Workload(batch=4, heads=32, seq_q=4096, head_dim=64, passes="fwd")

    def slowdown(name, options):
        times = [simulate(name, wl, g, options=options, compute=False).time.predicted_s
                 for g in (free, measured)]
        off = simulate(name, wl, H100, options=options, compute=False,
                       timing=TimingOptions(sync_latency=False)).time.predicted_s
        assert off == pytest.approx(times[0])
        return times[1] / times[0]
    v1 = slowdown("flash1", {"tiles": "release", "grid": "release"})
    v2 = slowdown("flash2", {})
    assert v1 > v2 > 1.0


def test_a_barrier_costs_more_the_more_warps_meet_at_it():
    """The H100's barrier, measured over 2 to 32 warps ([AMORA-BAR]): 41.16 + 2.045 clocks a
    warp, less the loop's own shared-memory load and add (29 + 4), so 8.2 + 2.045 W; the
    A100's board gives one 4-warp figure and no slope. FlashAttention v1's backward (8 warps)
    waits longer at each of its barriers than its forward (4)."""
    from hwmodels.timing import event_latency_clocks
    for warps, measured in ((2, 45.27), (4, 49.28), (8, 57.29), (16, 74.30), (32, 106.44)):
        assert event_latency_clocks(H100, "bar", 32 * warps) + 29 + 4 == \
            pytest.approx(measured, abs=0.5)
    a100 = get_gpu("a100-80gb")
    assert event_latency_clocks(a100, "bar", 128) == event_latency_clocks(a100, "bar", 256) \
        == 24.2
    assert event_latency_clocks(H100, "shfl", 256) == event_latency_clocks(H100, "shfl", 32) \
        == 29.0
    wl = Workload(batch=2, heads=16, seq_q=2048, head_dim=64, passes="fwd+bwd")
    r = simulate("flash1", wl, H100, options={"tiles": "release", "grid": "release"},
                 compute=False)
    fwd, bwd = ([k for k in r.kernels if k.name == name][0]
                for name in ("flash1_fwd", "flash1_bwd"))
    assert (fwd.threads_per_cta, bwd.threads_per_cta) == (128, 256)
    assert event_latency_clocks(H100, "bar", bwd.threads_per_cta) - \
        event_latency_clocks(H100, "bar", fwd.threads_per_cta) == pytest.approx(4 * 2.045)
    # FlashAttention-3's named barrier joins two consumer warpgroups, not its producer
    from hwmodels.timing import barrier_threads
    r3 = simulate("flash3", Workload(batch=2, heads=16, seq_q=2048, head_dim=64,
                                     passes="fwd+bwd"), H100, compute=False)
    by_name = {k.name: k for k in r3.kernels}
    assert by_name["flash3_fwd"].threads_per_cta == 512          # 3 consumers + producer
    assert barrier_threads(by_name["flash3_fwd"]) == barrier_threads(by_name["flash3_bwd"]) \
        == 256


def test_no_sync_latency_frees_the_shuffles_and_barriers_only():
    """``--no-sync-latency`` keeps the MMA, shared-memory, exp and fp32 waits and drops the
    shuffles' and barriers'; the v1 release, with 6 rounds and 2 barriers a 16-row step,
    gets faster, and the step-latency term keeps what the other events cost."""
    wl = Workload(batch=4, heads=32, seq_q=4096, head_dim=64, passes="fwd")
    opts = {"tiles": "release", "grid": "release"}
    on = simulate("flash1", wl, H100, options=opts, compute=False).time
    off = simulate("flash1", wl, H100, options=opts, compute=False,
                   timing=TimingOptions(sync_latency=False)).time
    assert 0 < off.step_latency_s < on.step_latency_s
    assert off.predicted_s < on.predicted_s
