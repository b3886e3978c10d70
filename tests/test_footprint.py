"""The HBM footprint model: closed forms written here, the phases against the kernels each
run records, growth in N, what fits, the ring's capacity, and the public JSON keys."""
import json
import math

import numpy as np
import pytest

from algorithms.base import check_options
from algorithms.registry import algorithm_names, get_algorithm
from attnsim import Workload, simulate
from attnsim.cli import main
from attnsim.memory import max_seq_that_fits, peak_at
from hwmodels import get_gpu
from hwmodels.footprint import Allocation, Footprint, sequence

H100 = get_gpu("h100")
M = H100.smem_bytes_per_block


def footprint_of(name, wl, **options):
    module = get_algorithm(name)
    opts = check_options(module.INFO, options)
    plan = module.plan(wl, H100, M, **opts)
    return module.footprint(wl, plan), plan


# ---- the machinery ------------------------------------------------------------------------

def test_peak_is_the_largest_sum_of_live_tensors():
    f = Footprint(("a", "b", "c"), [Allocation("x", 10, "a", "c", "input"),
                                    Allocation("y", 5, "a", "a"),
                                    Allocation("z", 7, "b", "b"),
                                    Allocation("w", 6, "c", "c", "output")])
    assert [f.bytes_at(p) for p in f.phases] == [15, 17, 16]
    assert (f.peak_phase, f.peak_bytes) == ("b", 17)
    assert f.by_tensor == {"x": 10, "z": 7}
    assert f.largest_at_peak == "x"


def test_a_tensor_named_in_two_passes_lives_across_them_and_outputs_live_to_the_end():
    fwd = Footprint(("f1", "f2"), [Allocation("q", 4, "f1", "f2", "input"),
                                   Allocation("p", 100, "f1", "f2"),
                                   Allocation("o", 4, "f2", "f2", "output")])
    bwd = Footprint(("b1", "b2"), [Allocation("q", 4, "b1", "b2", "input"),
                                   Allocation("p", 100, "b1", "b1", "saved"),
                                   Allocation("dq", 4, "b2", "b2", "output")])
    both = sequence(fwd, bwd)
    assert both.allocation("p") == Allocation("p", 100, "f1", "b1", "saved")
    assert both.allocation("o").last == "b2"
    assert both.bytes_at("b2") == 4 + 4 + 4      # q, o, dq; p freed after b1


@pytest.mark.parametrize("bad", [
    dict(phases=("a",), allocations=[Allocation("x", 1, "a", "b")]),        # unknown phase
    dict(phases=("a", "b"), allocations=[Allocation("x", 1, "b", "a")]),    # freed first
    dict(phases=("a", "a"), allocations=[]),                                # repeated phase
])
def test_inconsistent_footprints_are_rejected(bad):
    with pytest.raises(ValueError):
        Footprint(**bad)


# ---- every registered algorithm ------------------------------------------------------------

def _registry_cases():
    for name in algorithm_names():
        wl = Workload(batch=2, heads=4, kv_heads=2 if name == "gqa" else None, seq_q=512,
                      head_dim=64, causal=name == "nsa")
        yield name, wl
        if "bwd" in get_algorithm(name).INFO.passes:
            dropout = 0.1 if get_algorithm(name).INFO.dropout else 0.0
            yield name, wl.replace(passes="fwd+bwd", causal=True, dropout=dropout)
            yield name, wl.replace(passes="bwd")
    for passes in ("fwd", "fwd+bwd"):           # FlashAttention's release program
        for seq in (200, 512):                  # one K/V block (no o_tmp), several
            yield ("flash1", Workload(batch=2, heads=4, seq_q=seq, head_dim=64, passes=passes),
                   {"tiles": "release", "grid": "release"})
    yield "gqa", Workload(batch=2, heads=8, kv_heads=2, seq_q=1, seq_k=4096, head_dim=64,
                          decode=True)
    for name in ("linear", "rfa", "performer", "nsa"):      # the recurrent and NSA decoders
        yield name, Workload(batch=2, heads=8, kv_heads=2, seq_q=1, seq_k=4096, head_dim=64,
                             decode=True, causal=True)
    # a step that completes a compressed block, in both NSA decode schedules
    for schedule in ("fused", "split"):
        yield ("nsa", Workload(batch=1, heads=8, kv_heads=2, seq_q=1, seq_k=4128, head_dim=64,
                               decode=True, causal=True), {"decode_schedule": schedule})


def _case_ids(x):
    if isinstance(x, str):
        return x
    if isinstance(x, dict):
        return ",".join(f"{k}={v}" for k, v in x.items())
    return x.passes + ("-decode" if x.decode else "")


@pytest.mark.parametrize("name,wl,options", [(c + ({},))[:3] for c in _registry_cases()],
                         ids=_case_ids)
def test_footprint_phases_are_the_kernels_the_run_launches(name, wl, options):
    """Each algorithm's declared phases are exactly the kernels its run records, in order:
    the declaration cannot drift from the schedule it describes."""
    r = simulate(name, wl, H100, compute=False, options=options)
    f, _ = footprint_of(name, wl, **options)
    assert f.phases == tuple(k.name for k in r.kernels)
    assert sum(f.by_tensor.values()) == f.peak_bytes == r.memory["peak_bytes"]
    names = {a.name for a in f.allocations}
    assert ({"dq", "dk", "dv"} <= names) == wl.has_backward


# ---- closed forms ---------------------------------------------------------------------------

@pytest.mark.parametrize("causal", [False, True])
def test_standard_forward_peaks_in_the_softmax_with_s_and_p(causal):
    b, h, n, d, e = 2, 3, 1024, 64, 2
    f, _ = footprint_of("standard", Workload(batch=b, heads=h, seq_q=n, head_dim=d,
                                             causal=causal))
    qkv = 3 * b * h * n * d * e
    s_and_p = 2 * b * h * n * n * e
    mask = n * n if causal else 0          # one byte per entry, shared by the heads
    assert f.peak_phase == "softmax"
    assert f.peak_bytes == qkv + s_and_p + mask


def test_standard_training_peaks_in_the_softmax_backward_with_p_dp_ds():
    b, h, n, d, e = 1, 2, 2048, 64, 2
    f, _ = footprint_of("standard", Workload(batch=b, heads=h, seq_q=n, head_dim=d,
                                             passes="fwd+bwd"))
    nd, nn = b * h * n * d * e, b * h * n * n * e
    # Q, K, V, O, dO, dV (written by the first backward GEMM) and P, dP, dS
    assert f.peak_phase == "softmax_bwd"
    assert f.peak_bytes == 6 * nd + 3 * nn
    assert f.by_tensor["p"] == f.by_tensor["dp"] == f.by_tensor["ds"] == nn


def test_flash2_forward_is_q_k_v_o_and_lse():
    b, h, n, d, e = 2, 3, 1000, 128, 2
    f, _ = footprint_of("flash2", Workload(batch=b, heads=h, seq_q=n, head_dim=d))
    assert f.peak_bytes == 4 * b * h * n * d * e + 4 * b * h * n
    assert set(f.by_tensor) == {"q", "k", "v", "o", "lse"}


def test_flash2_training_peaks_in_the_dq_conversion():
    b, h, n, d, e = 2, 3, 1000, 128, 2
    f, _ = footprint_of("flash2", Workload(batch=b, heads=h, seq_q=n, head_dim=d,
                                           passes="fwd+bwd", causal=True))
    nd = b * h * n * d
    # Q, K, V, O, dO, dK, dV, dQ at e; lse (fp32); the fp32 dQ accumulator until converted
    assert f.peak_phase == "flash2_bwd_convert_dq"
    assert f.peak_bytes == 8 * nd * e + 4 * b * h * n + 4 * nd
    assert f.by_tensor["dq_accum"] == 4 * nd


def test_flash2_backward_alone_takes_o_and_lse_as_inputs():
    b, h, n, d, e = 1, 2, 512, 64, 2
    f, _ = footprint_of("flash2", Workload(batch=b, heads=h, seq_q=n, head_dim=d, passes="bwd"))
    nd = b * h * n * d
    # main kernel: Q, K, V, dO, O at e, lse and D fp32, dQaccum fp32, dK, dV at e
    assert f.bytes_at("flash2_bwd") == 7 * nd * e + 8 * b * h * n + 4 * nd
    assert f.allocation("o").kind == "saved"


@pytest.mark.parametrize("splits", [1, 4])
def test_gqa_decode_is_the_cache_plus_the_split_partials(splits):
    b, h, g, n, d, e = 3, 32, 8, 8192, 128, 2
    wl = Workload(batch=b, heads=h, kv_heads=g, seq_q=1, seq_k=n, head_dim=d, decode=True)
    f, plan = footprint_of("gqa", wl, splits=splits)
    assert plan.splits == splits
    cache = 2 * b * g * n * d * e
    q = o = b * h * d * e
    lse = 4 * b * h
    partials = splits * b * h * (d + 1) * 4 if splits > 1 else 0
    assert f.peak_bytes == cache + q + o + lse + partials
    assert f.allocation("k").kind == "cache"


# ---- growth in N ----------------------------------------------------------------------------

def _fitted_exponent(name, passes="fwd"):
    ns = np.array([4096, 8192, 16384, 32768])
    peaks = [footprint_of(name, Workload(batch=1, heads=8, seq_q=int(n), head_dim=64,
                                         passes=passes))[0].peak_bytes for n in ns]
    return np.polyfit(np.log(ns), np.log(peaks), 1)[0]


@pytest.mark.parametrize("name,passes,exponent", [
    ("standard", "fwd", 2.0), ("standard", "fwd+bwd", 2.0),
    ("flash1", "fwd", 1.0), ("flash2", "fwd", 1.0), ("flash2", "fwd+bwd", 1.0),
    ("flash3", "fwd", 1.0), ("linear", "fwd", 1.0),
])
def test_footprint_grows_as_the_papers_say(name, passes, exponent):
    """FlashAttention (Dao et al. 2022, Theorem 1): memory linear in N, against standard
    attention's quadratic."""
    assert _fitted_exponent(name, passes) == pytest.approx(exponent, abs=0.03)


def test_flash_attention_trains_at_64k_where_standard_attention_runs_out():
    """The claim that motivates FlashAttention (Dao et al. 2022: memory linear in N): training
    attention at 64K tokens, 16 heads of 128, fp16, on one 80 GB GPU."""
    wl = Workload(batch=1, heads=16, seq_q=65536, head_dim=128, passes="fwd+bwd")
    standard, _ = footprint_of("standard", wl)
    flash, _ = footprint_of("flash2", wl)
    assert standard.peak_bytes > 4 * H100.hbm_bytes
    assert flash.peak_bytes < H100.hbm_bytes / 20


# ---- what fits ------------------------------------------------------------------------------

@pytest.mark.parametrize("name,wl", [c[:2] for c in _registry_cases()
                                     if c[1].passes == "fwd" and not c[1].decode],
                         ids=lambda x: x if isinstance(x, str) else str(x.decode))
def test_footprint_never_shrinks_as_n_grows(name, wl):
    """The bisection of ``max_seq_that_fits`` needs a monotone footprint where answers lie
    (thousands of tokens up; below about 1K tokens MLA's automatic split count, and so its
    fp32 partials, can fall as N grows)."""
    module = get_algorithm(name)
    opts = check_options(module.INFO, {})
    plan = module.plan(wl, H100, M, **opts)
    plannable = getattr(module, "plannable_seq", lambda wl, plan, n: n)
    peaks = [f.peak_bytes for f in (peak_at(module, wl, H100, M, opts, plannable(wl, plan, n))
                                    for n in range(4096, 200_000, 4999)) if f is not None]
    assert len(peaks) > 30 and peaks == sorted(peaks)


@pytest.mark.parametrize("name,passes", [("standard", "fwd"), ("standard", "fwd+bwd"),
                                         ("flash2", "fwd+bwd"), ("reformer", "fwd"),
                                         ("ring", "fwd")])
def test_max_seq_is_the_boundary_of_what_fits(name, passes):
    wl = Workload(batch=1, heads=16, seq_q=4096, head_dim=128, passes=passes)
    module = get_algorithm(name)
    opts = check_options(module.INFO, {})
    plan = module.plan(wl, H100, M, **opts)
    n = max_seq_that_fits(module, wl, plan, H100, M, opts)
    assert peak_at(module, wl, H100, M, opts, n).peak_bytes <= H100.hbm_bytes
    # the next length the algorithm plans for does not fit
    step = plan.devices if name == "ring" else 2 * plan.bucket_size if name == "reformer" else 1
    beyond = next(f for f in (peak_at(module, wl, H100, M, opts, n + i * step)
                              for i in range(1, 1000)) if f is not None)
    assert beyond.peak_bytes > H100.hbm_bytes


def test_standard_training_closed_form_bound():
    """3 N² e H (P, dP, dS) dominate: N_max ≈ sqrt(capacity / (3 e H)) from below."""
    wl = Workload(batch=1, heads=16, seq_q=4096, head_dim=128, passes="fwd+bwd")
    module = get_algorithm("standard")
    n = max_seq_that_fits(module, wl, module.plan(wl, H100, M), H100, M, {})
    assert n < math.sqrt(H100.hbm_bytes / (3 * 2 * 16)) < n * 1.01


def test_ring_context_grows_linearly_with_the_devices():
    """Liu et al. 2023: each device holds c = N/P tokens, so the context the ring holds is
    P times one device's block (P >= 3: two receive buffers from then on)."""
    wl = Workload(batch=1, heads=16, seq_q=4096, head_dim=128)
    module = get_algorithm("ring")

    def max_context(p):
        plan = module.plan(wl, H100, M, devices=p)
        return max_seq_that_fits(module, wl, plan, H100, M, {"devices": p})

    per_device = max_context(4) // 4
    for p in (8, 16, 32, 64):
        assert max_context(p) == p * per_device
    assert max_context(1) > per_device      # one device: no receive buffers, no state


# ---- the command line -----------------------------------------------------------------------

MEMORY_KEYS = {"peak_bytes", "by_tensor", "capacity_bytes", "fits", "max_seq_that_fits"}


def test_run_json_has_memory(capsys):
    assert main(["run", "flash2", "--hw", "h100", "--batch", "1", "--heads", "2", "--seq",
                 "1024", "--head-dim", "64", "--count-only", "--format", "json"]) == 0
    out, err = capsys.readouterr()
    memory = json.loads(out)["memory"]
    assert MEMORY_KEYS <= set(memory)
    assert memory["fits"] is True and err == ""
    assert memory["capacity_bytes"] == H100.hbm_bytes
    assert memory["peak_bytes"] == 4 * 2 * 1024 * 64 * 2 + 4 * 2 * 1024


def test_a_run_that_does_not_fit_warns_and_still_counts(capsys):
    assert main(["run", "standard", "--hw", "a100-40gb", "--batch", "1", "--heads", "16",
                 "--seq", "65536", "--head-dim", "128", "--count-only", "--format",
                 "json"]) == 0
    out, err = capsys.readouterr()
    data = json.loads(out)
    assert data["memory"]["fits"] is False
    assert data["counts"]["hbm_read_bytes"] > 0
    assert err.count("\n") == 1 and err.startswith("attnsim: warning: standard needs")
    assert f"{data['memory']['max_seq_that_fits']:,}" in err


def test_run_text_shows_the_memory_lines(capsys):
    assert main(["run", "flash2", "--hw", "h100", "--seq", "2048", "--count-only"]) == 0
    out, _ = capsys.readouterr()
    assert "HBM peak" in out and "HBM capacity" in out and "that fits" in out


def test_report_has_the_longest_context_section(capsys):
    assert main(["report", "--hw", "a100-40gb", "--algorithms", "standard,flash2,ring",
                 "--seq", "16384", "--heads", "32", "--batch", "1", "--seqs", "1024,2048",
                 "--no-accuracy", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    rows = {(r["algorithm"], r["passes"], r["batch"]): r
            for r in data["memory"]["longest_context"]}
    assert set(rows) == {(a, p, 1) for a in ("standard", "flash2") for p in ("fwd", "fwd+bwd")} \
        | {("ring", "fwd", 1)}
    assert rows[("standard", "fwd+bwd", 1)]["fits"] is False          # 3 N² e H > 40 GiB
    assert rows[("standard", "fwd+bwd", 1)]["runs_out_first"] in ("p", "dp", "ds")
    assert rows[("flash2", "fwd", 1)]["max_seq_that_fits"] > 50 * \
        rows[("standard", "fwd", 1)]["max_seq_that_fits"]
    ring_rows = data["memory"]["ring_capacity"]
    assert [r["devices"] for r in ring_rows] == [1, 2, 3, 4, 8, 16, 32, 64]
    algorithms = {r["algorithm"]: r for r in data["algorithms"]}
    assert algorithms["standard"]["memory"]["fits"] is True
    assert algorithms["standard"]["training"]["memory"]["fits"] is False


@pytest.mark.parametrize("name", ["linear", "rfa", "performer"])
def test_recurrent_decode_footprint_is_constant_in_the_context(name):
    """A recurrent decoder keeps a state instead of a KV cache: the same bytes at every N."""
    peaks = {footprint_of(name, Workload(batch=1, heads=8, kv_heads=2, seq_q=1, seq_k=n,
                                         head_dim=64, decode=True, causal=True))[0].peak_bytes
             for n in (1024, 8192, 65536, 1 << 20)}
    assert len(peaks) == 1


def test_nsa_decode_keeps_the_compressed_cache():
    b, h, g, n, d, e = 1, 8, 2, 8192, 64, 2
    wl = Workload(batch=b, heads=h, kv_heads=g, seq_q=1, seq_k=n, head_dim=d, decode=True,
                  causal=True)
    f, _ = footprint_of("nsa", wl, decode_schedule="fused")
    n_c = (n - 32) // 16 + 1                        # compressed tokens: l = 32, d_s = 16
    assert f.by_tensor["k_compressed"] == f.by_tensor["v_compressed"] == b * g * n_c * d * e
    assert f.by_tensor["k"] == f.by_tensor["v"] == b * g * n * d * e
