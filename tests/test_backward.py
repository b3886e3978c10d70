"""Backward passes of standard attention, FlashAttention (Algorithm 4) and FlashAttention-2.

Gradients against the float64 reference (itself checked by finite differences), counted
traffic and FLOPs against closed forms derived here from the shapes and the plan, IO-bound
exponents fitted over N, d and M in count-only mode, FA-2's 2.5x FLOP ratio, and
count-only == executed counts.

Kernels: algorithms/standard/backward.py, algorithms/flash1/backward.py, algorithms/flash2/backward.py.
"""
import math

import numpy as np
import pytest

from algorithms.base import PlanError
from attnsim.inputs import make_inputs
from attnsim.reference import (attention_backward_reference, attention_reference,
                               relative_error)
from attnsim.simulate import simulate
from attnsim.workload import Workload
from hwmodels.memory import SramOverflowError

ALGOS = ("standard", "flash1", "flash2")
# SRAM budgets small enough that the ragged sizes below span several tiles
SMALL_SRAM = {"standard": 40_000, "flash1": 40_000, "flash2": 20_000}
GPU = "h100"
PHILOX = 100            # ops per Philox4x32-10 call (10 rounds x 10 ops)
PHILOX_ALU = 60         # of them, 4 xors + 2 key adds per round (ALU); the 4 multiplies: FMA


def cdiv(a, b):
    return -(-a // b)


# ---- the reference itself -------------------------------------------------------------------

@pytest.mark.parametrize("causal", [False, True])
def test_reference_gradient_matches_finite_differences(causal):
    """Tiny GQA case with dropout: analytic gradient vs central differences of Σ O ∘ dO."""
    rng = np.random.default_rng(3)
    q = rng.standard_normal((1, 2, 3, 2))
    k = rng.standard_normal((1, 1, 4, 2))
    v = rng.standard_normal((1, 1, 4, 2))
    do = rng.standard_normal((1, 2, 3, 2))
    z = (rng.random((1, 2, 3, 4)) > 0.3) / 0.7
    kw = dict(causal=causal, scale=0.7, dropout_keep=z)

    def loss(q_, k_, v_):
        return float((attention_reference(q_, k_, v_, **kw)[0] * do).sum())

    grads = attention_backward_reference(q, k, v, do, **kw)
    h = 1e-6
    for x, g in zip((q, k, v), grads):
        fd = np.zeros_like(x)
        for idx in np.ndindex(x.shape):
            xp, xm = x.copy(), x.copy()
            xp[idx] += h
            xm[idx] -= h
            args_p = [xp if t is x else t for t in (q, k, v)]
            args_m = [xm if t is x else t for t in (q, k, v)]
            fd[idx] = (loss(*args_p) - loss(*args_m)) / (2 * h)
        np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8)


# ---- numerics ---------------------------------------------------------------------------------

def grad_tolerance(magnitude):
    # float32 rounding of S = scale·Q Kᵀ is about ε|S|, and |S| grows as magnitude²
    return 2e-6 * max(1.0, magnitude ** 2)


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("seq_q,seq_k,d,causal,dropout,magnitude", [
    (97, 131, 40, False, 0.0, 1.0),
    (97, 131, 40, True, 0.0, 1.0),
    (131, 61, 24, True, 0.0, 1.0),      # causal with N_q > N_k: rows that see no key
    (97, 131, 40, True, 0.15, 1.0),
    (70, 70, 24, False, 0.15, 8.0),     # large-magnitude logits
])
def test_gradients_match_reference(algo, seq_q, seq_k, d, causal, dropout, magnitude):
    wl = Workload(batch=1, heads=2, seq_q=seq_q, seq_k=seq_k, head_dim=d, causal=causal,
                  passes="fwd+bwd", dropout=dropout)
    inputs = make_inputs(wl, seed=5, magnitude=magnitude)
    r = simulate(algo, wl, GPU, sram_bytes=SMALL_SRAM[algo], inputs=inputs)
    assert set(r.outputs) >= {"o", "dq", "dk", "dv"}
    assert r.error_vs_reference < grad_tolerance(magnitude)
    # the harness' error is the largest of o, dq, dk, dv: check one directly as well
    from algorithms.kernels.dropout import keep_multiplier
    z = keep_multiplier(wl, inputs.seed) if dropout else None
    _, _, dv = attention_backward_reference(inputs.q, inputs.k, inputs.v, inputs.do,
                                            causal=causal, scale=wl.scale, dropout_keep=z)
    assert relative_error(r.outputs["dv"], dv) <= r.error_vs_reference


def test_dropout_changes_the_output_and_is_the_same_mask_in_both_passes():
    wl = Workload(batch=1, heads=1, seq_q=50, seq_k=50, head_dim=16, passes="fwd+bwd")
    inputs = make_inputs(wl, seed=2)
    plain = simulate("flash2", wl, GPU, inputs=inputs)
    dropped = simulate("flash2", wl.replace(dropout=0.3), GPU, inputs=inputs)
    assert relative_error(dropped.outputs["o"], plain.outputs["o"]) > 0.1
    assert dropped.error_vs_reference < 1e-5          # forward and backward agree on Z
    for algo in ("standard", "flash1"):               # one mask shared by all algorithms
        other = simulate(algo, wl.replace(dropout=0.3), GPU, inputs=inputs)
        assert relative_error(other.outputs["dq"], dropped.outputs["dq"]) < 1e-5


@pytest.mark.parametrize("algo", ALGOS)
def test_bwd_alone_returns_gradients_only(algo):
    wl = Workload(batch=1, heads=1, seq_q=40, seq_k=33, head_dim=16, passes="bwd")
    r = simulate(algo, wl, GPU)
    assert set(r.outputs) == {"dq", "dk", "dv"}
    assert r.error_vs_reference < 2e-6


# ---- closed forms -----------------------------------------------------------------------------

def visited_tiles(nq, nk, bq, bk, causal):
    """(rows, cols, partially masked) of every (Q block, K block) pair with a visible entry.
    Query i sees key j when j <= i + nk - nq (bottom-right aligned)."""
    out = []
    for c0 in range(0, nk, bk):
        c1 = min(c0 + bk, nk)
        for r0 in range(0, nq, bq):
            r1 = min(r0 + bq, nq)
            if causal and c0 > (r1 - 1) + nk - nq:        # even the last row sees no key
                continue
            partial = causal and (c1 - 1) > r0 + nk - nq  # the first row misses a key
            out.append((r1 - r0, c1 - c0, partial))
    return out


# elements a Philox call decides: FlashAttention-2 compares 8-bit slices of its 128 bits
# (flash_api.cpp's uint8 threshold), the v1 release 16-bit ones (apply_dropout_16bits)
ELEMS_PER_CALL = {"flash2": 16, "flash1": 8}


def dropout_ops(r, c, applications, algo="flash2"):
    """Regenerate Z on chip (Philox, ``ELEMS_PER_CALL`` elements a call) + compare + apply."""
    return cdiv(r * c, ELEMS_PER_CALL[algo]) * PHILOX + r * c + applications * r * c


def dropout_alu_ops(r, c, algo="flash2"):
    """Of ``dropout_ops``, the ALU pipe's: Philox's xors and adds, and the compare."""
    return cdiv(r * c, ELEMS_PER_CALL[algo]) * PHILOX_ALU + r * c


def bwd_counts(algo, wl, sram):
    return simulate(algo, wl.replace(passes="bwd"), GPU, compute=False, sram_bytes=sram)


CASES = [(97, 131, 40, False, 0.0), (97, 131, 40, True, 0.0), (131, 61, 24, True, 0.0),
         (97, 131, 40, True, 0.2), (128, 128, 32, False, 0.1)]


def fa2_backward_closed_form(nq, nk, d, causal, dropout, bq, bk, e) -> dict:
    """Per head, FlashAttention-2's three backward kernels (Algorithm 2 as its release runs
    it) on B_r x B_c = bq x bk tiles: the counts derived from the shapes. FlashAttention-3's
    release runs the same program on its own tiles (tests/test_flash3_backward.py)."""
    tiles = visited_tiles(nq, nk, bq, bk, causal)
    rows = sum(t[0] for t in tiles)                    # Σ B_r over visited tiles
    area = sum(t[0] * t[1] for t in tiles)
    atomic = 4 * rows * d                              # fp32 dQaccum, read + write each
    reads = (2 * nq * d * e                            # preprocess: dO, O
             + 2 * nk * d * e + rows * (2 * d * e + 8) + atomic   # main
             + 4 * nq * d)                             # convert: dQaccum
    writes = (4 * nq + 4 * nq * d                      # D, dQaccum = 0
              + 2 * nk * d * e + atomic                # dK, dV; atomics
              + nq * d * e)                            # dQ
    other = (2 * nq * d + nq * d + nk * d
             + sum(4 * r_ * c_ + (r_ * c_ if p_ else 0)
                   + (dropout_ops(r_, c_, 2) if dropout else 0) for r_, c_, p_ in tiles))
    # ALU: the causal select, the dropout RNG's xors/adds and compare; conversions: P and dS
    # before their products (2 r c per tile), dK, dV and dQ on their way out
    alu = sum((r_ * c_ if p_ else 0) + (dropout_alu_ops(r_, c_) if dropout else 0)
              for r_, c_, p_ in tiles)
    return {"hbm_read_bytes": reads, "hbm_write_bytes": writes, "atomic_bytes": atomic,
            "matmul_flops": 10 * area * d, "exp_ops": area, "other_flops": other,
            "alu_ops": alu, "convert_ops": 2 * area + 2 * nk * d + nq * d,
            "ctas": 2 * cdiv(nq, bq) + cdiv(nk, bk)}


def assert_backward_closed_form(counts, want, heads):
    """The three kernels' counts are ``heads`` times the per-head closed form."""
    for key in ("hbm_read_bytes", "hbm_write_bytes", "atomic_bytes", "matmul_flops",
                "exp_ops", "other_flops", "alu_ops", "convert_ops", "ctas"):
        assert counts[key] == heads * want[key], key
    assert counts["kernel_launches"] == 3


@pytest.mark.parametrize("nq,nk,d,causal,dropout", CASES)
def test_flash2_backward_counts_closed_form(nq, nk, d, causal, dropout):
    wl = Workload(batch=2, heads=3, seq_q=nq, seq_k=nk, head_dim=d, causal=causal,
                  dropout=dropout, passes="bwd")
    r = bwd_counts("flash2", wl, SMALL_SRAM["flash2"])
    bq, bk = r.plan["bwd"]["block_q"], r.plan["bwd"]["block_k"]
    assert_backward_closed_form(r.counts, fa2_backward_closed_form(
        nq, nk, d, causal, dropout, bq, bk, wl.elem_bytes), heads=6)


@pytest.mark.parametrize("nq,nk,d,causal,dropout", CASES)
def test_flash1_backward_counts_closed_form(nq, nk, d, causal, dropout):
    wl = Workload(batch=2, heads=3, seq_q=nq, seq_k=nk, head_dim=d, causal=causal,
                  dropout=dropout, passes="bwd")
    sram = SMALL_SRAM["flash1"]
    r = bwd_counts("flash1", wl, sram)
    e, bh = wl.elem_bytes, 6
    m = sram // e                                      # M in elements
    bk = cdiv(m, 8 * d) if cdiv(m, 8 * d) * 8 * d <= m else m // (8 * d)   # B_c ≈ M / 8d
    bq = min(bk, d)                                    # B_r = min(B_c, d)
    assert (r.plan["bwd"]["block_q"], r.plan["bwd"]["block_k"]) == (bq, bk)
    tiles = visited_tiles(nq, nk, bq, bk, causal)
    rows = sum(t[0] for t in tiles)
    area = sum(t[0] * t[1] for t in tiles)
    reads = 2 * nk * d * e + rows * (4 * d * e + 8)    # K, V once; Q, O, dO, dQ, ℓ, m per step
    writes = (nq + 2 * nk) * d * e + rows * d * e + 2 * nk * d * e   # init; dQ_i; dK, dV
    other = sum(6 * r_ * c_ + r_ + 3 * r_ * d + (r_ * c_ if p_ else 0)
                + (dropout_ops(r_, c_, 2, "flash1") if dropout else 0) for r_, c_, p_ in tiles)
    c = r.counts
    assert c["hbm_read_bytes"] == bh * reads
    assert c["hbm_write_bytes"] == bh * writes
    assert c["matmul_flops"] == bh * 10 * area * d
    assert c["exp_ops"] == bh * area
    assert c["other_flops"] == bh * other
    assert c["alu_ops"] == bh * sum((r_ * c_ if p_ else 0)
                                    + (dropout_alu_ops(r_, c_, "flash1") if dropout else 0)
                                    for r_, c_, p_ in tiles)
    # P and dS before their products; dQ_i on every store, dK_j and dV_j once
    assert c["convert_ops"] == bh * (2 * area + rows * d + 2 * nk * d)
    assert c["atomic_bytes"] == 0
    # the release's 8 split-K warps (fmha_bwd_hdim*.cu: WARPS_N = 8) sum their fp32 partial
    # dQ_i through shared memory on every visited tile, written and read back (pricing only)
    main = next(k for k in r.kernels if k.name == "flash1_bwd")
    assert main.smem_exchange_bytes == bh * 2 * 8 * rows * 4 * d
    assert (main.threads_per_cta, main.smem_readers) == (256, 8)


def gemm_counts(m, n, k, tiles, e, alpha):
    tm, tn, _ = tiles
    return {"read": (cdiv(n, tn) * m * k + cdiv(m, tm) * k * n) * e, "write": m * n * e,
            "flops": 2 * m * n * k, "other": m * n if alpha else 0}


@pytest.mark.parametrize("nq,nk,d,causal,dropout", CASES)
def test_standard_backward_counts_closed_form(nq, nk, d, causal, dropout):
    wl = Workload(batch=2, heads=3, seq_q=nq, seq_k=nk, head_dim=d, causal=causal,
                  dropout=dropout, passes="bwd")
    r = bwd_counts("standard", wl, SMALL_SRAM["standard"])
    e, bh = wl.elem_bytes, 6
    tiles = (r.plan["gemm_tile_m"], r.plan["gemm_tile_n"], r.plan["gemm_tile_k"])
    passes = 1 if 2 * nk * e <= SMALL_SRAM["standard"] else 2
    assert r.plan["bwd"]["softmax_bwd_passes"] == passes
    gemms = [gemm_counts(nk, d, nq, tiles, e, False),      # dV = (P ∘ Z)ᵀ dO
             gemm_counts(nq, nk, d, tiles, e, False),      # dP = dO Vᵀ
             gemm_counts(nq, d, nk, tiles, e, True),       # dQ = scale dS K
             gemm_counts(nk, d, nq, tiles, e, True)]       # dK = scale dSᵀ Q
    nn = nq * nk
    reads = sum(g["read"] for g in gemms) + passes * 2 * nn * e      # softmax bwd: P, dP
    writes = sum(g["write"] for g in gemms) + nn * e                 # dS
    other = sum(g["other"] for g in gemms) + 4 * nn
    for extra in (dropout > 0, causal):                  # dropout bwd, masked_fill bwd
        if extra:
            reads += nn * (e + 1)                        # the tensor and the 1-byte mask
            writes += nn * e
    other += (2 * nn if dropout else 0) + (nn if causal else 0)
    c = r.counts
    assert c["hbm_read_bytes"] == bh * reads
    assert c["hbm_write_bytes"] == bh * writes
    assert c["matmul_flops"] == bh * sum(g["flops"] for g in gemms)
    assert c["other_flops"] == bh * other
    assert c["exp_ops"] == 0
    assert c["kernel_launches"] == 5 + (dropout > 0) + causal


@pytest.mark.parametrize("algo", ALGOS)
def test_forward_dropout_costs(algo):
    """Forward with dropout minus forward without: flash regenerates Z on chip (other ops
    only); standard runs a dropout kernel reading P and writing P ∘ Z and a 1-byte mask."""
    nq, nk, d = 97, 131, 40
    wl = Workload(batch=1, heads=2, seq_q=nq, seq_k=nk, head_dim=d, causal=True)
    sram = SMALL_SRAM[algo]
    base = simulate(algo, wl, GPU, compute=False, sram_bytes=sram)
    drop = simulate(algo, wl.replace(dropout=0.1), GPU, compute=False, sram_bytes=sram)
    diff = {k: drop.counts[k] - base.counts[k] for k in base.counts}
    e, bh = wl.elem_bytes, 2
    if algo == "standard":
        assert diff["hbm_read_bytes"] == bh * nq * nk * e
        assert diff["hbm_write_bytes"] == bh * nq * nk * (e + 1)
        assert diff["other_flops"] == bh * nq * (cdiv(nk, 4) * PHILOX + 2 * nk)
        assert diff["alu_ops"] == bh * nq * (cdiv(nk, 4) * PHILOX_ALU + nk)
        assert diff["convert_ops"] == bh * nq * nk            # P ∘ Z, narrowed for its store
        assert diff["kernel_launches"] == 1
        return
    bq, bk = base.plan["block_q"], base.plan["block_k"]
    tiles = visited_tiles(nq, nk, bq, bk, True)
    assert diff["other_flops"] == bh * sum(dropout_ops(r_, c_, 1, algo) for r_, c_, _ in tiles)
    assert diff["alu_ops"] == bh * sum(dropout_alu_ops(r_, c_, algo) for r_, c_, _ in tiles)
    assert all(v == 0 for k, v in diff.items() if k not in ("other_flops", "alu_ops"))


# ---- FLOP ratio -------------------------------------------------------------------------------

def test_flash2_backward_matmul_flops_are_2_5x_forward():
    """FlashAttention-2 §4.1 counts the backward as 2.5x the forward's matmul FLOPs (5 matmuls
    against 2). Exact without masking; with causal masking each pass computes its diagonal
    tiles whole and the two passes tile differently (forward B_r x B_c, backward its own
    tiles), so the ratio is 2.5 x (backward visited area / forward visited area)."""
    wl = Workload(batch=2, heads=4, seq_q=1000, seq_k=1000, head_dim=64)
    fwd = simulate("flash2", wl, GPU, compute=False)
    bwd = simulate("flash2", wl.replace(passes="bwd"), GPU, compute=False)
    assert bwd.counts["matmul_flops"] == 2.5 * fwd.counts["matmul_flops"]
    assert fwd.counts["matmul_flops"] == 4 * 1000 * 1000 * 64 * 8

    wl = wl.replace(causal=True)
    fwd = simulate("flash2", wl, GPU, compute=False)
    bwd = simulate("flash2", wl.replace(passes="bwd"), GPU, compute=False)
    area_f = sum(r * c for r, c, _ in visited_tiles(1000, 1000, fwd.plan["block_q"],
                                                    fwd.plan["block_k"], True))
    area_b = sum(r * c for r, c, _ in visited_tiles(1000, 1000, bwd.plan["bwd"]["block_q"],
                                                    bwd.plan["bwd"]["block_k"], True))
    assert bwd.counts["matmul_flops"] * area_f == 2.5 * fwd.counts["matmul_flops"] * area_b
    assert 2.3 < bwd.counts["matmul_flops"] / fwd.counts["matmul_flops"] < 2.7


def test_fwd_plus_bwd_is_the_sum_of_the_passes():
    wl = Workload(batch=1, heads=2, seq_q=300, seq_k=300, head_dim=64, causal=True,
                  dropout=0.1)
    for algo in ALGOS:
        parts = [simulate(algo, wl.replace(passes=p), GPU, compute=False) for p in ("fwd", "bwd")]
        both = simulate(algo, wl.replace(passes="fwd+bwd"), GPU, compute=False)
        for key in ("hbm_read_bytes", "hbm_write_bytes", "matmul_flops", "other_flops",
                    "exp_ops", "kernel_launches"):
            assert both.counts[key] == parts[0].counts[key] + parts[1].counts[key]
        assert both.io_bound_bytes == parts[0].io_bound_bytes + parts[1].io_bound_bytes


# ---- count-only == executed -----------------------------------------------------------------

@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("causal,dropout", [(False, 0.0), (True, 0.2)])
def test_count_only_equals_executed(algo, causal, dropout):
    wl = Workload(batch=2, heads=2, seq_q=77, seq_k=90, head_dim=24, causal=causal,
                  dropout=dropout, passes="fwd+bwd")
    ex = simulate(algo, wl, GPU, compute=True, sram_bytes=SMALL_SRAM[algo])
    co = simulate(algo, wl, GPU, compute=False, sram_bytes=SMALL_SRAM[algo])
    assert ex.counts == co.counts
    assert [k.name for k in ex.kernels] == [k.name for k in co.kernels]


# ---- IO bounds: fitted exponents (count-only) -------------------------------------------------

def slope(xs, ys):
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def bwd_hbm(algo, sram=None, **wl_args):
    wl = Workload(passes="bwd", **wl_args)
    r = simulate(algo, wl, GPU, compute=False, sram_bytes=sram)
    return r.hbm_bytes, r.io_bound_bytes


@pytest.mark.parametrize("algo", ALGOS)
def test_backward_traffic_grows_as_n_squared(algo):
    seqs = [2048, 4096, 8192, 16384] if algo != "standard" else [1024, 2048, 4096, 8192]
    hbm, bound = zip(*(bwd_hbm(algo, seq_q=n, head_dim=64) for n in seqs))
    assert abs(slope(seqs, hbm) - 2.0) < 0.1
    ratios = np.array(hbm) / np.array(bound)
    assert ratios.max() / ratios.min() < 1.3           # within a constant of the bound


def test_flash1_backward_traffic_scales_as_d_squared_over_m():
    """Theorem 5: Θ(N² d² / M) (sizes where the forward's plan fits too: M >= 8 d² e)."""
    budgets = [20 * 1024, 40 * 1024, 80 * 1024, 160 * 1024]
    hbm = [bwd_hbm("flash1", m, seq_q=8192, head_dim=32)[0] for m in budgets]
    assert abs(slope(budgets, hbm) + 1.0) < 0.1
    dims = [16, 32, 64]
    hbm = [bwd_hbm("flash1", 227 * 1024, seq_q=8192, head_dim=d)[0] for d in dims]
    assert abs(slope(dims, hbm) - 2.0) < 0.15


def test_flash2_backward_traffic_follows_its_bound_over_m():
    """B_c comes from {16, ..., 128}, so M moves the traffic in steps; the counted traffic
    must move with the bound Θ(N d + N² d / B_c) evaluated on the same plans."""
    budgets = [12 * 1024, 24 * 1024, 48 * 1024, 96 * 1024]
    pairs = [bwd_hbm("flash2", m, seq_q=8192, head_dim=64) for m in budgets]
    hbm, bound = zip(*pairs)
    assert slope(budgets, hbm) < -0.5
    assert abs(slope(budgets, hbm) - slope(budgets, bound)) < 0.1


def test_standard_backward_is_quadratic_and_flash_is_not_at_large_m():
    """At N = 8192, d = 64 the standard backward moves Θ(N²) bytes; FA-1/FA-2 with the full
    SRAM move a fraction of it (the paper's Figure 2 point, for the backward)."""
    std, _ = bwd_hbm("standard", seq_q=8192, head_dim=64)
    for algo in ("flash1", "flash2"):
        fl, _ = bwd_hbm(algo, seq_q=8192, head_dim=64)
        assert fl < std / 2


# ---- errors -----------------------------------------------------------------------------------

@pytest.mark.parametrize("algo", ALGOS)
def test_gqa_backward_is_rejected_before_running(algo):
    wl = Workload(heads=4, kv_heads=2, seq_q=64, head_dim=16, passes="fwd+bwd")
    with pytest.raises(PlanError, match="kv_heads"):
        simulate(algo, wl, GPU, compute=False)
    simulate(algo, wl.replace(passes="fwd"), GPU, compute=False)   # the forward still runs


def test_flash2_backward_sram_too_small():
    """8000 B holds the forward's 16 x 64 tiles of Q, K, V (6144 B) but not the backward's
    Q, dO, K, V, P, dS (9216 B): the error names the backward and the numbers."""
    wl = Workload(seq_q=64, head_dim=64)
    simulate("flash2", wl, GPU, compute=False, sram_bytes=8000)
    with pytest.raises(SramOverflowError, match="backward.*9,216 bytes"):
        simulate("flash2", wl.replace(passes="bwd"), GPU, compute=False, sram_bytes=8000)


def test_suite_training_column():
    from attnsim import suite
    from hwmodels import get_gpu
    wl = Workload(batch=1, heads=2, seq_q=1024, head_dim=64)
    rows = suite.run_all(get_gpu(GPU), wl, names=ALGOS, accuracy=False)
    for row in rows:
        assert row.training is not None, row.name
        assert row.training.workload.passes == "fwd+bwd"
        assert row.training.hbm_bytes > row.result.hbm_bytes
        assert math.isfinite(row.training.time.predicted_s)


def test_flash2_backward_atomics_resolve_in_l2_in_the_timing_model():
    """The counts charge every dQ atomic to HBM (read + write); the timing model's DRAM
    estimate keeps only the compulsory traffic when the heads in flight fit in L2: Q, dO,
    lse, D read once, dQaccum read and written once, K, V read and dK, dV written once."""
    from hwmodels import get_gpu
    from hwmodels.timing import TimingOptions, kernel_time
    gpu = get_gpu(GPU)
    nq = nk = 2048
    d, e, bh = 64, 2, 4
    wl = Workload(batch=1, heads=bh, seq_q=nq, head_dim=d, passes="bwd")
    r = simulate("flash2", wl, gpu, compute=False)
    main = next(k for k in r.kernels if k.name == "flash2_bwd")
    compulsory = bh * (2 * nq * d * e + 8 * nq + 2 * 4 * nq * d + 4 * nk * d * e)
    assert kernel_time(gpu, main).dram_bytes == compulsory
    requested = main.counts()["hbm_read_bytes"] + main.counts()["hbm_write_bytes"]
    assert requested > 3 * compulsory
    assert kernel_time(gpu, main, TimingOptions(l2_cache=False)).dram_bytes == requested
