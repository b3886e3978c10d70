"""linear, rfa, performer: outputs against their float64 math, accuracy against exact
attention as features grow, counts against closed forms, linear growth, bad parameters.

Kernel bodies: algorithms/kernels/feature_kernels.py (planning: algorithms/kernels/feature_attention.py).
"""
import math

import numpy as np
import pytest

from algorithms.kernels import feature_attention as fa
from algorithms.base import PlanError
from algorithms.performer import default_features, orthogonal_gaussian
from attnsim import Workload, attention_reference, make_inputs, relative_error, simulate
from attnsim.approx_sweep import sweep_accuracy
from hwmodels.memory import SramOverflowError
from shapes import EXACT_TOL

FAMILY = ("linear", "rfa", "performer")


def opts_for(alg, features=None):
    return {} if alg == "linear" or features is None else {"features": features}


# ---- numerics: executed float32 == float64 reference of the same math ------------------

@pytest.mark.parametrize("alg", FAMILY)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shape", [(77, 77, 16), (45, 130, 24), (1, 33, 16)])
def test_output_matches_own_reference(alg, causal, shape):
    seq_q, seq_k, d = shape
    wl = Workload(batch=2, heads=2, kv_heads=1, seq_q=seq_q, seq_k=seq_k, head_dim=d,
                  causal=causal)
    inputs = make_inputs(wl, seed=3)
    r = simulate(alg, wl, "h100", options=opts_for(alg, 64), inputs=inputs)
    assert r.error_vs_reference < EXACT_TOL, r.error_vs_reference
    assert r.error_vs_exact is not None and np.isfinite(r.error_vs_exact)


@pytest.mark.parametrize("alg,magnitude", [("linear", 30.0), ("performer", 4.0),
                                           ("rfa", 1000.0)])
def test_large_logits_stay_finite_and_accurate(alg, magnitude):
    """elu+1 has no exponent to overflow; FAVOR+'s stabilizers keep exp() in range; RFA
    normalises its inputs."""
    wl = Workload(batch=1, heads=2, seq_q=90, head_dim=16)
    inputs = make_inputs(wl, seed=1, magnitude=magnitude)
    r = simulate(alg, wl, "h100", inputs=inputs)
    assert np.isfinite(r.outputs["o"]).all()
    assert r.error_vs_reference < EXACT_TOL, r.error_vs_reference


def test_performer_redraw_per_head_uses_different_projections():
    wl = Workload(batch=1, heads=2, kv_heads=1, seq_q=40, head_dim=8)
    inputs = make_inputs(wl, seed=0)
    inputs = type(inputs)(q=np.repeat(inputs.q[:, :1], 2, axis=1), k=inputs.k, v=inputs.v)
    same = simulate("performer", wl, "h100", options={"redraw": "none"}, inputs=inputs)
    fresh = simulate("performer", wl, "h100", options={"redraw": "head"}, inputs=inputs)
    o_same, o_fresh = same.outputs["o"], fresh.outputs["o"]
    assert np.allclose(o_same[0, 0], o_same[0, 1])          # identical heads, one W
    assert not np.allclose(o_fresh[0, 0], o_fresh[0, 1])    # identical heads, two draws
    assert fresh.error_vs_reference < EXACT_TOL


def test_orthogonal_blocks_are_orthogonal():
    w = orthogonal_gaussian(20, 8, np.random.default_rng(0)).astype(np.float64)
    for start in (0, 8):
        block = w[start:start + 8]
        gram = block @ block.T
        assert np.allclose(gram - np.diag(np.diag(gram)), 0, atol=1e-4)
    assert default_features(64) == 266                      # round(64 ln 64)


# ---- accuracy against exact attention falls with more features ---------------------------

@pytest.mark.parametrize("alg", ["rfa", "performer"])
@pytest.mark.parametrize("causal", [False, True])
def test_error_vs_exact_falls_with_features(alg, causal):
    """Small logits (magnitude 0.5) keep FAVOR+'s variance, which grows as exp(|q + k|²),
    small enough for 512 features to show the 1/sqrt(m) trend; RFA's inputs are unit
    vectors whatever the magnitude."""
    wl = Workload(batch=1, heads=1, seq_q=128, head_dim=8, causal=causal)
    rows = sweep_accuracy(alg, wl, values=[8, 32, 128, 512], seeds=(0, 1, 2, 3),
                          magnitude=0.5)
    errors = [r["error_vs_exact"] for r in rows]
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.5 * errors[0], errors              # roughly 1/sqrt(m): 4x less
    costs = [r["hbm_bytes"] for r in rows]
    assert costs == sorted(costs) and costs[0] < costs[-1]  # accuracy is paid in traffic


# ---- counts equal closed forms ----------------------------------------------------------

def feature_ops(kind, rows, d, p, is_key):
    """(other, exp, matmul) of φ on `rows` rows, from the table in feature_attention; for
    elu+1, p is the number of feature columns computed."""
    if kind == "elu":
        return 3 * rows * p, rows * p, 0
    if kind == "trig":
        return 3 * rows * d + 2 * rows * p, rows + 2 * rows * p, 2 * rows * p * d
    if is_key:
        return 3 * rows * d + rows + 4 * rows * p, rows * p, 2 * rows * p * d
    return rows * d + 4 * rows * p, rows * p, 2 * rows * p * d


def tiles(n, b):
    return [min(b, n - s) for s in range(0, n, b)]


def expected_counts(kind, nq, nk, d, m, p, b, e, causal, slices=1):
    """Per-head (reads, writes, matmul, exp, other) of the feature-map kernels; ``slices``
    equal feature slices of the units (projections, or feature columns for elu+1)."""
    rand = kind != "elu"
    stab = kind == "positive"                                # running key shift
    per_unit = 2 if kind == "trig" else 1
    units = p if rand else d
    unit_slices = tiles(units, math.ceil(units / slices))   # units per slice
    sliced = slices > 1 and stab
    other = exp = mm = 0
    if not causal:
        reads = writes = 0
        for nu in unit_slices:                               # state kernel, one CTA a slice
            m_t = per_unit * nu
            reads += (nu * d * e if rand else 0) + 2 * nk * d * e
            writes += 4 * (m_t * d + m_t) + (4 if sliced else 0)
            for r in tiles(nk, b):
                o_, x_, mm_ = feature_ops(kind, r, d, nu, True)
                other += o_ + r * m_t + (1 + m_t * d + m_t if stab else 0)
                exp += x_ + (1 if stab else 0)
                mm += mm_ + 2 * m_t * d * r
        for r in tiles(nq, b):                               # apply kernel, one CTA a Q tile
            reads += r * d * e + (4 * slices if sliced else 0)
            writes += r * d * e
            other += (slices if sliced else 0) + r * d
            for nu in unit_slices:
                m_t = per_unit * nu
                reads += (nu * d * e if rand else 0) + 4 * m_t * d + 4 * m_t
                o_, x_, mm_ = feature_ops(kind, r, d, nu, False)
                other += o_ + 2 * r * m_t + (1 + m_t * d + m_t if sliced else 0)
                exp += x_ + (1 if sliced else 0)
                if sliced:
                    other += 2 * r + r * d + r
                    exp += r
                mm += mm_ + 2 * r * d * m_t
        return reads, writes, mm, exp, other
    assert nq == nk
    n, reads, writes, multi = nq, 0, 0, slices > 1
    for nu in unit_slices:                                   # sweep kernel, one CTA a slice
        m_t = per_unit * nu
        reads += (nu * d * e if rand else 0) + 3 * n * d * e
        for r in tiles(n, b):
            for is_key in (False, True):
                o_, x_, mm_ = feature_ops(kind, r, d, nu, is_key)
                other, exp, mm = other + o_, exp + x_, mm + mm_
            if stab:
                other, exp = other + 1 + m_t * d + m_t, exp + 1
            mm += 2 * r * r * m_t + 2 * r * r * d + 2 * r * d * m_t + 2 * m_t * d * r
            other += r * r + r * r + 2 * r * m_t + r * d + r + r * m_t
            if multi:                                        # partial num, den (, log-scale)
                other += r if stab else 0
                writes += 4 * (r * d + r + (r if stab else 0))
            else:
                other += r * d
                writes += r * d * e
    if multi:                                                # combine kernel
        for r in tiles(n, b):
            for _ in unit_slices:
                reads += 4 * (r * d + r + (r if stab else 0))
                if stab:
                    other += 2 * r + r * d + r + r * d + r
                    exp += 2 * r
                else:
                    other += r * d + r
            other += r * d
            writes += r * d * e
    return reads, writes, mm, exp, other


def feature_alu(kind, rows, p):
    """ALU ops of φ on `rows` rows (max/min, select), by hand: elu+1 is min(x, 0) and the
    select on x > 0 per element (2 r p; its add is FMA); trig has none (sums, scales,
    sin/cos); positive features take one max per exponent (queries: the row max of W u,
    keys: the tile max of E), r p."""
    return {"elu": 2 * rows * p, "trig": 0, "positive": rows * p}[kind]


def expected_alu_convert(kind, nq, nk, d, p, b, e, causal, slices=1):
    """Per-head (alu_ops, convert_ops) of the feature-map kernels, by hand from what each
    kernel does. ALU: φ's maxes and selects (``feature_alu``), the causal select of A
    (r x r per chunk), with positive features sliced the max of the slices' key shifts (T_m
    per query tile) and the running row max (r per slice), and in the causal combine the
    new max of the log-scales (r per slice). Conversions (e < 4): every fp32 operand of a
    tensor-core product, i.e. φ(K) (r m_t per key tile), φ(Q) and the fp32 state S
    (r m_t + m_t d per query tile and slice), in the causal sweep also φ(K_c) and A
    (r m_t + r²), plus O (r d) on its store; fp32 state and partials are stored as they are."""
    rand = kind != "elu"
    stab = kind == "positive"
    per_unit = 2 if kind == "trig" else 1
    units = p if rand else d
    unit_slices = tiles(units, math.ceil(units / slices))
    sliced = slices > 1 and stab
    alu = conv = 0
    if not causal:
        for nu in unit_slices:                               # state kernel
            for r in tiles(nk, b):
                alu += feature_alu(kind, r, nu)
                conv += r * per_unit * nu                    # φ_t(K_j)
        for r in tiles(nq, b):                               # apply kernel
            alu += slices if sliced else 0                   # C = max_t c_t
            for nu in unit_slices:
                m_t = per_unit * nu
                alu += feature_alu(kind, r, nu) + (r if sliced else 0)
                conv += r * m_t + m_t * d                    # φ_t(Q_i), S_t
            conv += r * d                                    # O_i
    else:
        multi = slices > 1
        for nu in unit_slices:                               # sweep kernel (N_q == N_k)
            m_t = per_unit * nu
            for r in tiles(nq, b):
                alu += 2 * feature_alu(kind, r, nu) + r * r  # φ(Q_c), φ(K_c); select
                conv += 2 * r * m_t + r * r + m_t * d        # φ(Q_c), φ(K_c), A, S
                conv += 0 if multi else r * d                # O_c (partials stay fp32)
        if multi:                                            # combine kernel
            for r in tiles(nq, b):
                alu += len(unit_slices) * r if stab else 0   # running max of log-scales
                conv += r * d                                # O rows
    return alu, (conv if e < 4 else 0)


@pytest.mark.parametrize("alg,kind", [("linear", "elu"), ("rfa", "trig"),
                                      ("performer", "positive")])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("n", [100, 300])
def test_counts_equal_closed_form(alg, kind, causal, n):
    wl = Workload(batch=2, heads=3, seq_q=n, head_dim=32, causal=causal)
    r = simulate(alg, wl, "h100", options=opts_for(alg, 40), compute=False)
    d, e, b = 32, 2, r.plan["block"]
    p = {"elu": 0, "trig": 40, "positive": 40}[kind]
    m = {"elu": d, "trig": 80, "positive": 40}[kind]
    reads, writes, mm, exp, other = expected_counts(kind, n, n, d, m, p, b, e, causal)
    heads = 6
    assert r.counts["hbm_read_bytes"] == heads * reads
    assert r.counts["hbm_write_bytes"] == heads * writes
    assert r.counts["matmul_flops"] == heads * mm
    assert r.counts["exp_ops"] == heads * exp
    assert r.counts["other_flops"] == heads * other
    alu, conv = expected_alu_convert(kind, n, n, d, p, b, e, causal)
    assert r.counts["alu_ops"] == heads * alu
    assert r.counts["convert_ops"] == heads * conv
    assert r.counts["kernel_launches"] == (1 if causal else 2)
    assert r.counts["ctas"] == heads * (1 if causal else 1 + math.ceil(n / b))


@pytest.mark.parametrize("alg,kind", [("linear", "elu"), ("rfa", "trig"),
                                      ("performer", "positive")])
@pytest.mark.parametrize("causal", [False, True])
def test_sliced_counts_equal_closed_form(alg, kind, causal):
    d = 64
    nk = 300 if causal else 200
    wl = Workload(batch=1, heads=2, seq_q=300, seq_k=nk, head_dim=d, causal=causal)
    sram = 24 * 1024 if not causal or kind != "elu" else 14 * 1024
    r = simulate(alg, wl, "h100", options=opts_for(alg, 100), compute=False, sram_bytes=sram)
    slices, b = r.plan["feature_tiles"], r.plan["block"]
    assert slices > 1
    p = 0 if kind == "elu" else 100
    m = {"elu": d, "trig": 200, "positive": 100}[kind]
    reads, writes, mm, exp, other = expected_counts(kind, 300, nk, d, m, p, b, 2, causal,
                                                    slices)
    assert r.counts["hbm_read_bytes"] == 2 * reads
    assert r.counts["hbm_write_bytes"] == 2 * writes
    assert r.counts["matmul_flops"] == 2 * mm
    assert r.counts["exp_ops"] == 2 * exp
    assert r.counts["other_flops"] == 2 * other
    alu, conv = expected_alu_convert(kind, 300, nk, d, p, b, 2, causal, slices)
    assert r.counts["alu_ops"] == 2 * alu
    assert r.counts["convert_ops"] == 2 * conv
    assert r.counts["ctas"] == 2 * (slices + math.ceil(300 / b))
    assert r.counts["kernel_launches"] == 2


@pytest.mark.parametrize("alg,kind", [("linear", "elu"), ("rfa", "trig"),
                                      ("performer", "positive")])
def test_pipe_counts_at_fp32_and_in_a_decode_step(alg, kind):
    """fp32 storage converts nothing and leaves the ALU ops as they are; a decode step
    (``feature_decode``) has no ALU op outside φ, and converts per token and state slice
    φ_t(k), φ_t(q) and the updated fp32 S_t for the two products, then o."""
    wl = Workload(batch=1, heads=2, seq_q=100, head_dim=32, causal=True, dtype="fp32")
    full = simulate(alg, wl, "h100", options=opts_for(alg, 40), compute=False)
    p = 0 if kind == "elu" else 40
    alu, conv = expected_alu_convert(kind, 100, 100, 32, p, full.plan["block"], 4, True)
    assert conv == 0 and full.counts["convert_ops"] == 0
    assert full.counts["alu_ops"] == 2 * alu
    # decode: 2 new tokens, 4 query heads on 2 KV heads (g = 2 per state), 2 sequences
    nq, g, d, batch, states = 2, 2, 32, 2, 2
    dec = Workload(batch=batch, heads=4, kv_heads=2, seq_q=nq, seq_k=300, head_dim=d,
                   causal=True, decode=True)
    r = simulate(alg, dec, "h100", options=opts_for(alg, 40), compute=False)
    splits = r.plan["decode_col_splits"]                     # column CTAs per state
    m = {"elu": d, "trig": 80, "positive": 40}[kind]
    # every column CTA computes φ(k) of the N_q keys and φ(q) of the g N_q queries itself
    # (elu+1: all d columns, so p -> d): ALU = splits x (φ_k + φ_q)
    units = d if kind == "elu" else p
    alu = splits * (feature_alu(kind, nq, units) + feature_alu(kind, g * nq, units))
    # conversions: per token, over the slices of a CTA of w_c columns, m (φ(k)) + g m (φ(q))
    # + m w_c (S), then g N_q w_c for o; the CTAs' w_c add up to d
    conv = splits * nq * (m + g * m) + nq * m * d + g * nq * d
    assert r.counts["alu_ops"] == batch * states * alu
    assert r.counts["convert_ops"] == batch * states * conv


def test_plan_follows_the_sram_budget():
    wl = Workload(seq_q=256, head_dim=64)
    big = simulate("performer", wl, "h100", compute=False)
    assert big.plan["block"] == 128 and big.plan["features"] == 266
    assert big.plan["feature_tiles"] == 1
    # a smaller budget: the state (m x d fp32 = 68 KB) and W are built in feature slices
    small = simulate("performer", wl, "h100", compute=False, sram_bytes=140 * 1024)
    assert small.plan["feature_tiles"] > 1 or small.plan["block"] < 128
    assert small.counts["sram_peak_bytes"] <= 140 * 1024
    assert small.hbm_bytes > big.hbm_bytes                  # less SRAM, more traffic
    # causal sweeps keep their state slice on chip: slices, then a combine kernel
    causal = simulate("performer", wl.replace(causal=True), "h100", compute=False,
                      sram_bytes=100 * 1024)
    assert causal.plan["feature_tiles"] > 1 and causal.counts["sram_peak_bytes"] <= 100 * 1024
    assert [k.name for k in causal.kernels] == ["performer_causal", "performer_combine"]


def test_default_performer_at_head_dim_128_is_sliced():
    """m = round(128 ln 128) = 621: S alone is 318 KB, so the non-causal kernels slice it."""
    r = simulate("performer", Workload(seq_q=4096, head_dim=128), "h100", compute=False)
    assert r.plan["features"] == 621 and r.plan["feature_tiles"] > 1
    assert r.counts["sram_peak_bytes"] <= 227 * 1024


@pytest.mark.parametrize("alg,kind", [("linear", "elu"), ("rfa", "trig"),
                                      ("performer", "positive")])
@pytest.mark.parametrize("d", [16, 24])
@pytest.mark.parametrize("causal", [False, True])
def test_sliced_state_matches_reference(alg, kind, d, causal):
    """A budget below the unsliced kernels' smallest footprint forces feature slices; key
    shifts and the query's running max carried across slices keep the result exact."""
    # causal with N_q > N_k: the first 20 query rows see no key at all
    wl = Workload(batch=1, heads=2, seq_q=70 if not causal else 90,
                  seq_k=90 if not causal else 70, head_dim=d, causal=causal)
    proj = 0 if kind == "elu" else 48
    total = d if kind == "elu" else proj
    if causal:
        m = total * (2 if kind == "trig" else 1)
        unsliced = sum(fa.causal_buffers(16, d, m, proj, 2).values())
    else:
        unsliced = max(sum(fa.state_buffers(kind, 16, d, total, 2).values()),
                       sum(fa.apply_buffers(kind, 16, d, total, 1, 2).values()))
    sram = int(0.75 * unsliced)
    inputs = make_inputs(wl, seed=4, magnitude=2.0)
    r = simulate(alg, wl, "h100", options=opts_for(alg, 48), inputs=inputs, sram_bytes=sram)
    assert r.plan["feature_tiles"] > 1, r.plan
    assert r.counts["sram_peak_bytes"] <= sram
    assert np.isfinite(r.outputs["o"]).all()
    assert r.error_vs_reference < EXACT_TOL, r.error_vs_reference
    co = simulate(alg, wl, "h100", options=opts_for(alg, 48), compute=False, sram_bytes=sram)
    assert co.counts == r.counts


@pytest.mark.parametrize("alg", FAMILY)
@pytest.mark.parametrize("causal", [False, True])
def test_count_only_equals_executed(alg, causal):
    wl = Workload(batch=1, heads=2, kv_heads=1, seq_q=70, seq_k=70 if causal else 150,
                  head_dim=16, causal=causal)
    ex = simulate(alg, wl, "h100", options=opts_for(alg, 24))
    co = simulate(alg, wl, "h100", options=opts_for(alg, 24), compute=False)
    assert ex.counts == co.counts
    assert co.error_vs_exact is None and co.outputs == {}


# ---- growth: linear in N ----------------------------------------------------------------

@pytest.mark.parametrize("alg", FAMILY)
@pytest.mark.parametrize("causal", [False, True])
def test_traffic_and_flops_grow_linearly(alg, causal):
    ns = [2 ** k for k in range(12, 19)]
    hbm, flops = [], []
    for n in ns:
        r = simulate(alg, Workload(seq_q=n, head_dim=64, causal=causal), "h100", compute=False)
        hbm.append(r.hbm_bytes)
        flops.append(r.flops)
        assert 1.0 <= r.io_ratio < 2.0, r.io_ratio
    for series in (hbm, flops):
        slope = np.polyfit(np.log(ns), np.log(series), 1)[0]
        assert 0.97 < slope < 1.03, slope


# ---- bad parameters: clear errors before any kernel runs ---------------------------------

@pytest.mark.parametrize("alg", ["rfa", "performer"])
@pytest.mark.parametrize("bad", [0, -4, 2**16 + 1])
def test_features_outside_their_range_rejected(alg, bad):
    with pytest.raises(PlanError, match=r"--features must be an integer in \[1, 65,536\]"):
        simulate(alg, Workload(seq_q=64, head_dim=16), "h100", options={"features": bad})


def test_bad_redraw_and_unknown_option_rejected():
    wl = Workload(seq_q=64, head_dim=16)
    with pytest.raises(PlanError, match="--redraw must be one of none, head"):
        simulate("performer", wl, "h100", options={"redraw": "often"})
    with pytest.raises(PlanError, match="--seed must be a non-negative integer"):
        simulate("rfa", wl, "h100", options={"seed": -2})
    with pytest.raises(PlanError, match="linear has no option"):
        simulate("linear", wl, "h100", options={"features": 8})


def test_too_little_sram_rejected_with_the_numbers():
    with pytest.raises(SramOverflowError, match="even with one feature per slice"):
        simulate("performer", Workload(seq_q=64, head_dim=64, causal=True), "h100",
                 compute=False, sram_bytes=2048)
    with pytest.raises(SramOverflowError, match="even with one feature per slice"):
        simulate("linear", Workload(seq_q=64, head_dim=64), "h100", compute=False,
                 sram_bytes=1024)


def test_rfa_error_is_against_its_normalised_problem():
    """RFA changes the model (ℓ2-normalised q, k at temperature 1/σ²); error_vs_exact is
    measured against that model's exact softmax attention."""
    wl = Workload(batch=1, heads=2, seq_q=60, head_dim=16, causal=True)
    inputs = make_inputs(wl, seed=7, magnitude=3.0)
    r = simulate("rfa", wl, "h100", options={"features": 256, "sigma": 0.7}, inputs=inputs)
    qn = inputs.q / np.linalg.norm(inputs.q, axis=-1, keepdims=True)
    kn = inputs.k / np.linalg.norm(inputs.k, axis=-1, keepdims=True)
    exact, _ = attention_reference(qn.astype(np.float64), kn, inputs.v, causal=True,
                                   scale=1 / 0.7 ** 2)
    assert r.error_vs_exact == pytest.approx(relative_error(r.outputs["o"], exact), rel=1e-6)
    assert r.error_vs_exact < 0.3
    # logits q̂·k̂/σ² beyond ±10⁴ (or below 10⁻⁴): float trouble or NaN, not the estimator
    with pytest.raises(PlanError, match="--gate-bias sets the recency gate's bias: add --gate"):
        simulate("rfa", wl, "h100", options={"gate_bias": 5.0}, compute=False)
    for sigma in (0.0, -1.0, 1e-3, 1e155):
        with pytest.raises(PlanError, match=r"--sigma must be in \[0.01, 100\]"):
            simulate("rfa", wl, "h100", options={"sigma": sigma}, compute=False)


@pytest.mark.parametrize("alg", ["rfa", "performer"])
def test_unset_seed_follows_the_inputs_seed(alg):
    """With --seed unset, the CLI's --input-seed seeds both the inputs and the features."""
    wl = Workload(batch=1, heads=2, seq_q=50, head_dim=16)
    implicit = simulate(alg, wl, "h100", seed=5)                       # inputs' seed 5
    explicit = simulate(alg, wl, "h100", inputs=make_inputs(wl, 5), options={"seed": 5})
    other = simulate(alg, wl, "h100", inputs=make_inputs(wl, 5), options={"seed": 6})
    assert np.array_equal(implicit.outputs["o"], explicit.outputs["o"])
    assert not np.allclose(implicit.outputs["o"], other.outputs["o"])
    assert implicit.error_vs_reference < EXACT_TOL
