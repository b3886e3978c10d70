"""Counted traffic and FLOPs of the sparse algorithms equal closed forms; growth exponents.

Closed forms: algorithms/kernels/block_sparse_exec.py's docstring, evaluated over the tiles of the
papers' masks (tests/_sparse_helpers.py), plus fully analytic forms for a sliding window and
for block_sparse. Exponents: np.polyfit on log-log over N (or s) in count-only mode.
"""
import numpy as np
import pytest

from _sparse_helpers import E, cdiv, closed_form, count_only, paper_mask, slope, tiles_of
from attnsim import Workload, simulate

SRAM = 40 * 1024     # FA-2's plan then picks unequal 128 x 64 tiles at d = 64


@pytest.mark.parametrize("alg,options,pname", [
    ("local", {"window": 100}, "local"),
    ("local", {"window": 1000}, "local"),
    ("longformer", {"window": 64, "global_tokens": 7}, "longformer"),
    ("longformer", {"window": 3, "global_tokens": 130}, "longformer"),
    ("sparse_transformer", {"stride": 37}, "strided"),
    ("sparse_transformer", {"stride": 70, "pattern": "fixed", "summary": 8}, "fixed"),
])
@pytest.mark.parametrize("shape", [(1, 1, 700, 700, 64), (2, 3, 333, 517, 40)])
@pytest.mark.parametrize("causal", [False, True])
def test_element_pattern_counts_closed_form(alg, options, pname, shape, causal):
    b, h, nq, nk, d = shape
    wl = Workload(batch=b, heads=h, seq_q=nq, seq_k=nk, head_dim=d, causal=causal)
    r = simulate(alg, wl, "h100", sram_bytes=SRAM, compute=False, options=options)
    br, bc = r.plan["block_q"], r.plan["block_k"]
    popts = {k: v for k, v in options.items() if k != "pattern"}
    mask = paper_mask(pname, nq, nk, causal, **popts)
    expected = closed_form(tiles_of(mask, br, bc), nq, d, cdiv(nq, br), b * h)
    assert {k: r.counts[k] for k in expected} == expected
    assert r.extra["pattern"]["density"] == mask.sum() / (nq * nk)


@pytest.mark.parametrize("n_blocks,m", [(16, 3), (10, 1), (5, 8)])
def test_causal_window_analytic(n_blocks, m):
    """N = n B, causal window w = m B: Q block i visits K blocks max(0, i-m) .. i; the
    diagonal tile and the window's first tile (i >= m) are partial."""
    B, d, n = 128, 64, n_blocks       # FA-2's plan on an H100 at d = 64: 128 x 128 tiles
    wl = Workload(batch=1, heads=2, seq_q=n * B, head_dim=d, causal=True)
    r = simulate("local", wl, "h100", compute=False, options={"window": m * B})
    assert (r.plan["block_q"], r.plan["block_k"]) == (B, B)
    tiles = sum(min(i, m) + 1 for i in range(n))
    partial = n + max(0, n - m)
    N = n * B
    assert r.counts["hbm_read_bytes"] == 2 * (N * d * E + tiles * 2 * B * d * E + 8 * n + 4 * tiles)
    assert r.counts["matmul_flops"] == 2 * tiles * 4 * B * B * d
    assert r.extra["pattern"]["blocks_visited"] == tiles
    assert r.extra["pattern"]["partial_blocks"] == partial
    # attended pairs: row p sees min(p + 1, w) keys
    w = m * B
    assert r.extra["pattern"]["attended_pairs"] == sum(min(p + 1, w) for p in range(N))


@pytest.mark.parametrize("density", [0.1, 0.25, 0.5, 1.0])
def test_block_sparse_analytic(density):
    """N = T B, non-causal: every tile is full; k = round(s T) tiles per Q block."""
    T, B, d = 24, 64, 64
    wl = Workload(batch=1, heads=3, seq_q=T * B, head_dim=d)
    r = simulate("block_sparse", wl, "h100", compute=False,
                 options={"block": B, "density": density})
    k = max(1, round(density * T))
    nnz, N = T * k, T * B
    assert r.counts["hbm_read_bytes"] == 3 * (N * d * E + nnz * 2 * B * d * E + 8 * T + 4 * nnz)
    assert r.counts["hbm_write_bytes"] == 3 * (N * d * E + 4 * N)
    assert r.counts["matmul_flops"] == 3 * nnz * 4 * B * B * d
    assert r.extra["pattern"]["block_density"] == k / T
    assert r.extra["pattern"]["density"] == k / T
    assert r.extra["pattern"]["partial_blocks"] == 0


@pytest.mark.parametrize("causal", [False, True])
def test_bigbird_counts_closed_form(causal):
    """Tiles from the reported element mask (its pattern is checked in test_sparse_patterns)."""
    wl = Workload(batch=1, heads=2, seq_q=333, head_dim=32, causal=causal)
    opts = {"block": 32, "random_blocks": 2}
    r = simulate("bigbird", wl, "h100", options=opts)
    tiles = tiles_of(r.extra["mask"], 32, 32)
    expected = closed_form(tiles, 333, 32, cdiv(333, 32), 2)
    assert {k: r.counts[k] for k in expected} == expected
    if not causal:
        # T = 11 blocks; global rows 0 and 10 see all; row i sees {i-1, i, i+1} ∪ {0, 10}
        # plus 2 random others
        t = 11
        nnz = 2 * t + sum(len({i - 1, i, i + 1} | {0, t - 1}) + 2 for i in range(1, t - 1))
        assert len(tiles) == nnz == 83
        assert r.extra["pattern"]["blocks_visited"] == nnz


def test_masked_dense_is_standard_plus_mask_pass():
    """The dense baseline = standard attention + one mask kernel reading S and a byte mask."""
    wl = Workload(batch=2, heads=2, seq_q=2000, head_dim=64)
    dense = count_only("standard", wl)
    for alg, opts in [("local", {"window": 64}), ("bigbird", {"block": 32})]:
        md = count_only("masked_dense", wl, mask_of=alg, **opts)
        bh, n = 4, 2000 * 2000
        assert md.counts["hbm_read_bytes"] - dense.counts["hbm_read_bytes"] == bh * n * (E + 1)
        assert md.counts["hbm_write_bytes"] - dense.counts["hbm_write_bytes"] == bh * n * E
        assert md.counts["other_flops"] - dense.counts["other_flops"] == bh * n
        assert md.counts["matmul_flops"] == dense.counts["matmul_flops"]
        assert md.counts["kernel_launches"] == dense.counts["kernel_launches"] + 1
        # ... exactly the counts of standard's causal run, whose mask kernel reads a mask too
        assert md.counts == count_only("standard", wl.replace(causal=True)).counts
        sparse = count_only(alg, wl, **opts)
        assert md.extra["pattern"]["density"] == sparse.extra["pattern"]["density"]
        assert sparse.hbm_bytes < md.hbm_bytes / 5                  # the saving the report shows


# ---- growth exponents (count-only) ----------------------------------------------------------

NS = [2 ** 13, 2 ** 14, 2 ** 15, 2 ** 16]


@pytest.mark.parametrize("alg,options", [
    ("local", {"window": 256}), ("longformer", {"window": 256, "global_tokens": 16}),
    ("bigbird", {}),
])
@pytest.mark.parametrize("causal", [False, True])
def test_linear_growth_at_fixed_window(alg, options, causal):
    rs = [count_only(alg, Workload(seq_q=n, head_dim=64, causal=causal), **options) for n in NS]
    assert slope(NS, [r.hbm_bytes for r in rs]) == pytest.approx(1.0, abs=0.03)
    assert slope(NS, [r.counts["matmul_flops"] for r in rs]) == pytest.approx(1.0, abs=0.03)
    ratios = [r.io_ratio for r in rs]
    assert 1.0 <= min(ratios) and max(ratios) <= 4.0                 # tracks its stated bound


@pytest.mark.parametrize("pattern", ["strided", "fixed"])
def test_sqrt_stride_grows_as_n_to_1_5(pattern):
    """l = round(√N) (the default): Θ(N d (l/B + N/l)) = Θ(N^1.5 d) once l >= B. N = 4^k keeps
    l a multiple of the 128-wide tiles (other strides straddle tiles: a constant factor that
    changes with N and blurs the fit over a short range)."""
    ns = [2 ** 14, 2 ** 16, 2 ** 18]
    rs = [count_only("sparse_transformer", Workload(seq_q=n, head_dim=64, causal=True),
                     pattern=pattern) for n in ns]
    assert rs[0].options["stride"] is None
    assert [r.extra["pattern"]["stride"] for r in rs] == [128, 256, 512]
    assert rs[0].plan["block_k"] == 128
    assert slope(ns, [r.hbm_bytes for r in rs]) == pytest.approx(1.5, abs=0.03)
    assert slope(ns, [r.counts["matmul_flops"] for r in rs]) == pytest.approx(1.5, abs=0.03)
    ratios = [r.io_ratio for r in rs]
    assert 0.5 <= min(ratios) and max(ratios) <= 4.0


def test_block_sparse_linear_in_density():
    ss = [0.05, 0.1, 0.2, 0.4, 0.8]
    wl = Workload(seq_q=16384, head_dim=64)
    rs = [count_only("block_sparse", wl, density=s) for s in ss]
    assert slope(ss, [r.counts["matmul_flops"] for r in rs]) == pytest.approx(1.0, abs=0.02)
    kv = [r.counts["hbm_read_bytes"] - 16384 * 64 * E for r in rs]      # minus the Q reads
    assert slope(ss, kv) == pytest.approx(1.0, abs=0.02)
    for r in rs:
        assert r.io_ratio == pytest.approx(2.0, rel=0.05)               # K and V per tile


def test_compare_with_dense_reports_the_saving():
    from attnsim.sparse_compare import compare_with_dense
    wl = Workload(heads=2, seq_q=4096, head_dim=64)
    c = compare_with_dense("longformer", wl, options={"window": 256, "global_tokens": 2})
    assert c.dense.algorithm == "masked_dense"
    assert c.dense.extra["pattern"]["density"] == c.sparse.extra["pattern"]["density"]
    assert c.dense.options["window"] == 256 and c.dense.options["mask_of"] == "longformer"
    assert c.hbm_saving == c.dense.hbm_bytes / c.sparse.hbm_bytes > 10
    assert c.to_dict()["pattern"]["window"] == 256


@pytest.mark.parametrize("n,k", [(12, 3), (9, 1), (7, 4)])
def test_causal_strided_analytic(n, k):
    """N = n B, causal, l = k B. Q block i visits A1's K blocks max(0, i-k) .. i and A2's
    blocks j ≡ i (mod k), j <= i (its rows' residues fill one aligned block per period):
    min(i, k) + 1 + ⌊i/k⌋ + 1 - (1 + [i >= k]) tiles. Full: A1's interior blocks (i of them
    while i < k, else k - 1); every other tile is partial."""
    B, d = 128, 64
    wl = Workload(batch=1, heads=1, seq_q=n * B, head_dim=d, causal=True)
    r = count_only("sparse_transformer", wl, stride=k * B)
    assert (r.plan["block_q"], r.plan["block_k"]) == (B, B)
    per_q = [min(i, k) + 1 + i // k + 1 - (1 + (i >= k)) for i in range(n)]
    full = [i if i < k else k - 1 for i in range(n)]
    tiles = sum(per_q)
    assert r.extra["pattern"]["blocks_visited"] == tiles
    assert r.extra["pattern"]["partial_blocks"] == tiles - sum(full)
    assert r.counts["hbm_read_bytes"] == n * B * d * E + tiles * (2 * B * d * E + 4) + 8 * n
    assert r.counts["matmul_flops"] == tiles * 4 * B * B * d


def test_l2_footprint_declared_for_the_timing_model():
    """Small heads fit L2: DRAM = Q, O, lse and the layout per head + K/V once per K/V head."""
    wl = Workload(batch=1, heads=4, kv_heads=2, seq_q=1000, head_dim=64)
    r = count_only("local", wl, window=100)
    k = r.kernels[0]
    tr, nnz, d = cdiv(1000, r.plan["block_q"]), r.extra["pattern"]["blocks_visited"], 64
    per_head = 2 * 1000 * d * E + 4 * 1000 + 8 * tr + 4 * nnz
    assert k.unique_hbm_bytes == 4 * per_head + 2 * (2 * 1000 * d * E)   # every key is visited
    assert r.time.kernels[0].dram_bytes == k.unique_hbm_bytes < r.hbm_bytes
