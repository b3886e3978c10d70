"""reformer: output against its float64 math, accuracy vs hash rounds, counts against closed
forms, N log N growth, data-independent counts, radix sort, reversible accounting, errors."""
import math

import numpy as np
import pytest

from algorithms import reformer
from algorithms.base import PlanError
from algorithms.kernels.radix_sort import radix_sort
from attnsim import Workload, attention_reference, make_inputs, relative_error, simulate
from attnsim.approx_sweep import sweep_accuracy
from hwmodels.counters import ALU_OPS, HBM_READ_BYTES, HBM_WRITE_BYTES, OTHER_FLOPS, new_counters
from hwmodels.memory import SramOverflowError
from shapes import EXACT_TOL


def run(wl, compute=True, inputs=None, **opts):
    return simulate("reformer", wl, "h100", options=opts, compute=compute, inputs=inputs)


# ---- numerics ----------------------------------------------------------------------------

@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("hashes", [1, 3])
@pytest.mark.parametrize("magnitude", [1.0, 30.0])
def test_output_matches_own_reference(causal, hashes, magnitude):
    # ragged for the 16/32/64 tiles: N = 96, chunk 24, d = 20
    wl = Workload(batch=2, heads=2, kv_heads=1, seq_q=96, head_dim=20, causal=causal)
    inputs = make_inputs(wl, seed=5, magnitude=magnitude)
    r = run(wl, inputs=inputs, hashes=hashes, bucket_size=24)
    assert r.error_vs_reference < EXACT_TOL, r.error_vs_reference
    assert np.isfinite(r.outputs["o"]).all()


def test_first_causal_token_attends_to_itself():
    """Shared-QK: no self-attention unless there is no other target (token 0, causal)."""
    wl = Workload(batch=1, heads=1, seq_q=64, head_dim=16, causal=True)
    inputs = make_inputs(wl, seed=2)
    r = run(wl, inputs=inputs, hashes=2, bucket_size=16)
    assert np.allclose(r.outputs["o"][0, 0, 0], inputs.v[0, 0, 0], atol=1e-5)


def test_error_vs_exact_is_measured_against_shared_qk_attention():
    """Reformer changes the problem (keys = normalised queries, no self-attention): its
    error_vs_exact is against exact softmax attention of that problem, not of Q Kᵀ."""
    wl = Workload(batch=1, heads=2, seq_q=32, head_dim=8, causal=True)
    inputs = make_inputs(wl, 0)
    r = run(wl, inputs=inputs, hashes=2, bucket_size=8)
    q, k, v, mask = reformer.exact_problem(wl, None, inputs)
    assert np.allclose(np.linalg.norm(k, axis=-1), 1.0)
    assert not mask[np.arange(1, 32), np.arange(1, 32)].any() and mask[0, 0]
    exact, _ = attention_reference(q, k, v, causal=True, scale=wl.scale, mask=mask)
    assert r.error_vs_exact == pytest.approx(relative_error(r.outputs["o"], exact))


# ---- accuracy falls with more hash rounds -------------------------------------------------

@pytest.mark.parametrize("causal", [False, True])
def test_error_vs_exact_falls_with_hashes(causal):
    wl = Workload(batch=1, heads=1, seq_q=128, head_dim=8, causal=causal)
    rows = sweep_accuracy("reformer", wl, values=[1, 2, 4, 8], seeds=(0, 1, 2, 3),
                          options={"bucket_size": 16})
    errors = [r["error_vs_exact"] for r in rows]
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.5 * errors[0], errors
    costs = [r["hbm_bytes"] for r in rows]
    assert all(a < b for a, b in zip(costs, costs[1:])), costs


# ---- counts equal closed forms ------------------------------------------------------------

def expected_counts(n, d, e, hashes, chunk, causal, hash_block, combine_block, cols, nf, passes):
    """Per-head (reads, writes, matmul, exp, other) of the five kernels."""
    nb, w = n // chunk, 2 * chunk
    th = math.ceil(n / hash_block)
    # hash: Q rows once, R per round per CTA; ids and positions written (int32)
    reads = n * d * e + th * hashes * d * cols * e
    writes = hashes * n * 8
    mm = 2 * n * cols * d * hashes
    other = n * hashes * (3 * cols + 2 * nf)
    exp = 0
    # radix sort, per round: histogram reads the keys once; each pass moves 8-byte pairs
    reads += hashes * (4 * n + passes * 8 * n)
    writes += hashes * passes * 8 * n
    other += hashes * (n * passes + passes * 2 * n)
    # attention, per (round, chunk)
    per_chunk_reads = 4 * w + 2 * w * d * e + 4 * w * hashes
    per_chunk_writes = chunk * d * e + (4 * chunk if hashes > 1 else 0)
    per_chunk_other = (3 * w * d + chunk * w * (5 + int(causal)) + chunk * w * (2 * hashes + 1)
                       + 3 * chunk * w + chunk * d + chunk)
    per_chunk_exp = w + 2 * chunk * w + chunk
    reads += hashes * nb * per_chunk_reads
    writes += hashes * nb * per_chunk_writes
    mm += hashes * nb * 2 * (2 * chunk * w * d)
    other += hashes * nb * per_chunk_other
    exp += hashes * nb * per_chunk_exp
    if hashes > 1:  # combine rounds
        reads += hashes * n * (d * e + 4)
        writes += n * d * e
        other += 3 * n * hashes + 2 * n * d * hashes + n * d
        exp += n * hashes
    return reads, writes, mm, exp, other


def expected_alu_convert(n, d, e, hashes, chunk, causal, cols):
    """Per-head (alu_ops of the hash, attention and combine kernels, convert_ops), by hand.
    hash: the argmax over [xR; -xR] compares 2 k entries per row and round (the negation
    and the mixed-radix combine are FMA work). attention, per C x 2C score entry: the
    bucket mask, self test and selects (4, + 1 causal compare), the H bucket compares
    that count N_ij, and the row max. combine: the max of the H lse per row.
    Conversions (e < 4): per chunk the normalised keys K̂ (2C d, computed in fp32), P
    (C x 2C) and the C output rows; the combined O (N d); bucket ids are integers."""
    nb, w = n // chunk, 2 * chunk
    alu = n * hashes * 2 * cols
    alu += hashes * nb * chunk * w * (4 + int(causal) + hashes + 1)
    conv = hashes * nb * (w * d + chunk * w + chunk * d)
    if hashes > 1:
        alu += n * hashes
        conv += n * d
    return alu, (conv if e < 4 else 0)


@pytest.mark.parametrize("n,chunk,hashes,causal", [(512, 64, 4, False), (384, 32, 1, True),
                                                   (2 ** 16, 64, 2, False)])
def test_counts_equal_closed_form(n, chunk, hashes, causal):
    d, e = 64, 2
    wl = Workload(batch=2, heads=3, seq_q=n, head_dim=d, causal=causal)
    r = run(wl, compute=False, hashes=hashes, bucket_size=chunk)
    nb = n // chunk
    # the plan's derived numbers, checked independently
    assert math.prod(r.plan["factors"]) == nb
    assert all(f % 2 == 0 and f <= 128 for f in r.plan["factors"])
    cols = sum(f // 2 for f in r.plan["factors"])
    assert r.plan["rotation_cols"] == cols
    assert r.plan["sort_passes"] == math.ceil(math.ceil(math.log2(nb)) / 8)
    reads, writes, mm, exp, other = expected_counts(
        n, d, e, hashes, chunk, causal, r.plan["hash_block"], r.plan["combine_block"], cols,
        len(r.plan["factors"]), r.plan["sort_passes"])
    heads = 6
    assert r.counts["hbm_read_bytes"] == heads * reads
    assert r.counts["hbm_write_bytes"] == heads * writes
    assert r.counts["matmul_flops"] == heads * mm
    assert r.counts["exp_ops"] == heads * exp
    assert r.counts["other_flops"] == heads * other
    alu, conv = expected_alu_convert(n, d, e, hashes, chunk, causal, cols)
    # the radix sort's ops are integer shifts, masks and adds: all of them ALU ops
    sort = [k for k in r.kernels if k.name.startswith("reformer_sort")]
    assert sort and all(k.counters[ALU_OPS] == k.counters[OTHER_FLOPS] > 0 for k in sort)
    assert sum(int(k.counters[ALU_OPS]) for k in r.kernels if k not in sort) == heads * alu
    assert r.counts["convert_ops"] == heads * conv
    assert r.counts["kernel_launches"] == 3 + r.plan["sort_passes"] + (hashes > 1)


def test_sort_traffic_is_passes_times_pairs():
    """b = 2^10 buckets -> 10 key bits -> 2 passes of 8-bit digits."""
    wl = Workload(batch=1, heads=1, seq_q=2 ** 16, head_dim=64)
    r = run(wl, compute=False, hashes=2, bucket_size=64)
    assert r.plan["sort_passes"] == 2
    sort = [k for k in r.kernels if k.name.startswith("reformer_sort")]
    assert [k.name for k in sort] == ["reformer_sort_hist", "reformer_sort_pass0",
                                      "reformer_sort_pass1"]
    n_keys = 2 * 2 ** 16
    assert sort[0].counters[HBM_READ_BYTES] == 4 * n_keys
    for k in sort[1:]:
        assert k.counters[HBM_READ_BYTES] == 8 * n_keys
        assert k.counters[HBM_WRITE_BYTES] == 8 * n_keys
    assert r.extra["lsh"]["sort_bytes_per_pass"] == 16 * n_keys
    assert r.extra["lsh"]["sort_histogram_bytes"] == 4 * n_keys


# ---- growth: N log N --------------------------------------------------------------------

def test_traffic_grows_as_n_log_n():
    """Total traffic: Θ(H N d) + Θ(H N log N), the second term from hashing (O(log b)
    rotation columns) and the radix sort (passes grow with log b). Fit both."""
    ns = [2 ** k for k in range(12, 23)]
    total, hash_sort, ratio = [], [], []
    for n in ns:
        r = run(Workload(seq_q=n, head_dim=64), compute=False, hashes=4, bucket_size=64)
        total.append(r.hbm_bytes)
        ratio.append(r.io_ratio)
        hash_sort.append(sum(int(k.counters[HBM_READ_BYTES] + k.counters[HBM_WRITE_BYTES])
                             for k in r.kernels
                             if k.name.startswith(("reformer_hash", "reformer_sort"))))
    slope = np.polyfit(np.log(ns), np.log(total), 1)[0]
    assert 1.0 < slope < 1.3, slope
    # counted / bound is flat: the bound's N log N term tracks the counts
    assert max(ratio) / min(ratio) < 1.15 and 1.0 < min(ratio) < 2.0, ratio
    # the hash + sort part alone is N log N: its slope exceeds 1 and per-(N log N) is flat
    hs_slope = np.polyfit(np.log(ns), np.log(hash_sort), 1)[0]
    assert 1.05 < hs_slope < 1.3, hs_slope
    per_nlogn = np.array(hash_sort) / (np.array(ns) * np.log2(ns))
    assert per_nlogn.max() / per_nlogn.min() < 1.5, per_nlogn


# ---- count-only == executed: the schedule is data-independent ----------------------------

@pytest.mark.parametrize("causal", [False, True])
def test_count_only_equals_executed_for_any_data(causal):
    wl = Workload(batch=1, heads=2, seq_q=128, head_dim=16, causal=causal)
    co = run(wl, compute=False, hashes=3, bucket_size=16)
    for seed in (0, 1):
        ex = run(wl, inputs=make_inputs(wl, seed, magnitude=1.0 + 5 * seed), hashes=3,
                 bucket_size=16)
        assert ex.counts == co.counts
    assert co.error_vs_exact is None


# ---- the radix sort -------------------------------------------------------------------------

def test_radix_sort_is_a_stable_sort_by_bucket():
    rng = np.random.default_rng(0)
    n = 5000
    keys = rng.integers(0, 2 ** 12, n).astype(np.int32)     # 12 bits: two passes
    vals = np.arange(n, dtype=np.int32)
    out_k, out_v = np.zeros_like(keys), np.zeros_like(vals)
    c_hist, c_passes = new_counters(), [new_counters(), new_counters()]
    radix_sort(c_hist, c_passes, keys, vals, out_k, out_v, n, 2, True)
    order = np.argsort(keys, kind="stable")
    assert (out_v == order).all() and (out_k == keys[order]).all()


# ---- reversible layers ----------------------------------------------------------------------

def test_reversible_activation_accounting():
    wl = Workload(batch=2, heads=4, seq_q=1024, head_dim=64, passes="fwd+bwd")
    per_tensor = 2 * 1024 * 256 * 2
    for layers in (1, 6, 12):
        acc = reformer.reversible_activation_bytes(wl, layers)
        assert acc["standard_bytes"] == 2 * layers * per_tensor       # O(N L)
        assert acc["reversible_bytes"] == 2 * per_tensor              # O(N), no L
        assert acc["training"] is True
    r = run(Workload(seq_q=256, head_dim=16), compute=False, layers=6)
    assert r.extra["reversible"]["standard_bytes"] == 6 * r.extra["reversible"]["reversible_bytes"]


# ---- bad parameters --------------------------------------------------------------------------

@pytest.mark.parametrize("opts,wl_kw,msg", [
    ({"hashes": 0}, {}, "--hashes must be a positive integer"),
    ({"bucket_size": -1}, {}, "--bucket-size must be a positive integer"),
    ({"bucket_size": 48}, {}, "must divide the sequence length 256"),
    ({"bucket_size": 256}, {}, "needs an even number"),
    ({"bucket_size": 64}, {"seq_q": 192}, "needs an even number"),
    ({}, {"seq_k": 512}, "seq_k .* must equal seq_q"),
    ({"layers": 0}, {}, "--layers must be a positive integer"),
    ({"seed": -1}, {}, "--seed must be a non-negative integer"),
])
def test_bad_parameters_rejected_before_running(opts, wl_kw, msg):
    wl = Workload(**{"seq_q": 256, "head_dim": 16, **wl_kw})
    with pytest.raises(PlanError, match=msg):
        run(wl, compute=True, **opts)


def test_bucket_count_that_cannot_be_factored():
    # 2 x 131 = 262 buckets > 128 with no even factor <= 128 leaving an even rest
    wl = Workload(seq_q=262 * 4, head_dim=16)
    with pytest.raises(PlanError, match="cannot be split into even factors"):
        run(wl, compute=False, bucket_size=4)


def test_unset_seed_follows_the_inputs_seed():
    wl = Workload(batch=1, heads=1, seq_q=128, head_dim=16)
    implicit = simulate("reformer", wl, "h100", seed=3, options={"bucket_size": 16})
    explicit = run(wl, inputs=make_inputs(wl, 3), seed=3, bucket_size=16)
    other = run(wl, inputs=make_inputs(wl, 3), seed=4, bucket_size=16)
    assert np.array_equal(implicit.outputs["o"], explicit.outputs["o"])
    assert not np.allclose(implicit.outputs["o"], other.outputs["o"])
    assert implicit.error_vs_reference < EXACT_TOL


def test_small_sram_shrinks_the_sort_tile_then_errors_in_plan():
    wl = Workload(seq_q=64, head_dim=8)
    small = simulate("reformer", wl, "h100", options={"bucket_size": 4}, compute=False,
                     sram_bytes=5000)
    assert small.plan["sort_tile"] < 4096 and small.counts["sram_peak_bytes"] <= 5000
    with pytest.raises(SramOverflowError, match="radix sort needs at least 3,072 bytes"):
        simulate("reformer", wl, "h100", options={"bucket_size": 4}, sram_bytes=3000)


def test_hash_runs_on_the_stored_q_and_r():
    """reformer_hash reads Q and R at e bytes, so its argmax runs on those values rounded to
    the storage type (what a real kernel hashes): the returned buckets are the float64 argmax
    of the stored values, and they differ from hashing the float32 inputs (bf16: 8 bits)."""
    from algorithms.ports import from_storage, to_storage
    from hwmodels import get_gpu
    wl = Workload(batch=1, heads=2, seq_q=512, head_dim=32, dtype="bf16")
    inputs = make_inputs(wl, seed=3)
    r = run(wl, inputs=inputs, hashes=2, bucket_size=32)
    gpu = get_gpu("h100")
    p = reformer.plan(wl, gpu, gpu.smem_bytes_per_block, hashes=2, bucket_size=32)
    rot = reformer.rotations(p, wl.head_dim, inputs, wl.dtype)
    assert np.array_equal(from_storage(to_storage(rot, "bf16"), "bf16"), rot)   # bf16 values
    unrounded = 0
    for h in range(wl.heads):
        stored = reformer.storage_values(inputs.q[0, h], wl.dtype)
        assert np.array_equal(r.outputs["buckets"][0, h],
                              reformer.reference_buckets(stored.astype(np.float64), rot, p.factors))
        unrounded += int((r.outputs["buckets"][0, h] != reformer.reference_buckets(
            inputs.q[0, h].astype(np.float64), reformer.rotations(p, wl.head_dim, inputs),
            p.factors)).sum())
        assert np.array_equal(r.outputs["perm"][0, h],
                              np.argsort(r.outputs["buckets"][0, h], axis=-1, kind="stable"))
    assert unrounded > 0
    assert np.array_equal(reformer.storage_values(inputs.q, "fp32"), inputs.q)
