"""Sparse Transformer's blocked layout (Child et al. 2019, arXiv 1904.10509, §5): the strided
pattern with its keys reordered by residue. Exact masked attention, the split of the pattern
into the window and the residue blocks, closed-form counts of the strided kernel, and growth
as N√N where the natural-order layout grows as N².
"""
import numpy as np
import pytest

from algorithms.kernels import sparse_blocked as sb
from algorithms.kernels.sparse_patterns import LOCAL, STRIDED, element_mask
from attnsim import Workload, attention_reference, make_inputs, relative_error, simulate
from attnsim.sparse_compare import compare_with_dense

BLOCKED = {"layout": "blocked"}


def paper_strided_mask(seq_q, seq_k, stride, causal):
    """A1 ∪ A2 from the set definitions: |p - j| <= l or (p - j) mod l == 0; causal j <= p."""
    p = np.arange(seq_q)[:, None] + seq_k - seq_q
    j = np.arange(seq_k)[None, :]
    allowed = (np.abs(p - j) <= stride) | ((p - j) % stride == 0)
    return allowed & (j <= p) if causal else allowed


@pytest.mark.parametrize("shape", [(300, 300, 32, False), (300, 300, 32, True),
                                   (200, 333, 32, True), (257, 257, 64, False),
                                   (97, 160, 16, False)])
@pytest.mark.parametrize("stride", [None, 5, 16, 40])
def test_blocked_output_is_exact_masked_attention(shape, stride):
    seq_q, seq_k, d, causal = shape
    wl = Workload(batch=1, heads=2, kv_heads=1, seq_q=seq_q, seq_k=seq_k, head_dim=d,
                  causal=causal)
    opts = dict(BLOCKED, **({} if stride is None else {"stride": stride}))
    x = make_inputs(wl, 2)
    r = simulate("sparse_transformer", wl, "h100", inputs=x, options=opts)
    l = r.plan["stride"]
    exact, _ = attention_reference(x.q, x.k, x.v, causal=causal, scale=wl.scale,
                                   mask=paper_strided_mask(seq_q, seq_k, l, causal))
    assert relative_error(r.outputs["o"], exact) < 2e-6
    assert (r.counts == simulate("sparse_transformer", wl, "h100", compute=False,
                                 options=opts).counts)


@pytest.mark.parametrize("causal", [False, True])
def test_window_and_residue_blocks_split_the_pattern(causal):
    """A1 (the window kernel) and A2 minus A1 (the residue kernel, mapped back to natural
    order) are disjoint and together are the strided pattern."""
    seq_q, seq_k, l = 120, 150, 7
    window = np.array([sb.strided_local_window(l, causal)])
    local = element_mask(LOCAL, window, causal, seq_q, seq_k)
    perm_q = sb.residue_order(np.arange(seq_q) + seq_k - seq_q, l)
    perm_k = sb.residue_order(np.arange(seq_k), l)
    blocked = sb.strided_mask(l, causal, seq_q, seq_k, perm_q, perm_k)
    strided = np.zeros_like(local)
    strided[np.ix_(perm_q, perm_k)] = blocked
    assert not (local & strided).any()
    assert np.array_equal(local | strided, paper_strided_mask(seq_q, seq_k, l, causal))
    assert np.array_equal(local | strided,
                          element_mask(STRIDED, np.array([l]), causal, seq_q, seq_k))


def test_strided_layout_tiles_hold_exactly_the_residue_pairs():
    """Every pair of the residue mask lies in a listed tile, no listed tile is empty, and a
    tile is marked full exactly when all its pairs are attended."""
    for causal in (False, True):
        seq_q, seq_k, l, bq, bk = 150, 180, 6, 16, 8
        perm_q = sb.residue_order(np.arange(seq_q) + seq_k - seq_q, l)
        perm_k = sb.residue_order(np.arange(seq_k), l)
        mask = sb.strided_mask(l, causal, seq_q, seq_k, perm_q, perm_k)
        q_lo, q_hi, row_ptr, k_lo, k_hi, partial = sb.strided_layout(l, causal, seq_q, seq_k,
                                                                     bq, bk)
        covered = np.zeros_like(mask)
        for i in range(len(q_lo)):
            for t in range(row_ptr[i], row_ptr[i + 1]):
                tile = mask[q_lo[i]:q_hi[i], k_lo[t]:k_hi[t]]
                assert tile.any() and partial[t] == (not tile.all())
                covered[q_lo[i]:q_hi[i], k_lo[t]:k_hi[t]] = True
        assert not (mask & ~covered).any()


def test_strided_kernel_counts_match_the_closed_form():
    """N = l², non-causal: each of the l residue runs is one Q tile of l rows and one K tile
    of l keys, partial (keys l apart are the window's). Per head (e = 2):
    reads  l (8 + l d e + 4 + 2 l d e + l d e + 4 l), writes l (l d e + 4 l),
    matmul l 4 l² d, other l (5 l² + 4 l + l d + l d + l + l (3 d + 4)), exp l (l² + 5 l)."""
    l, d, heads = 32, 64, 3
    wl = Workload(batch=1, heads=heads, seq_q=l * l, head_dim=d)
    r = simulate("sparse_transformer", wl, "h100", compute=False, options=BLOCKED)
    assert r.plan["stride"] == l and r.plan["block_q"] >= l and r.plan["block_k"] >= l
    (k,) = [k for k in r.kernels if k.name == "sparse_transformer_blocked_fwd"]
    c, e, rows = k.counts(), 2, l
    assert k.ctas == l * heads
    assert c["hbm_read_bytes"] == heads * l * (8 + rows * d * e + 4 + 2 * l * d * e
                                               + rows * d * e + 4 * rows)
    assert c["hbm_write_bytes"] == heads * l * (rows * d * e + 4 * rows)
    assert c["matmul_flops"] == heads * l * 4 * rows * l * d
    tile_other = 4 * rows * l + 4 * rows + rows * d + rows * l
    assert c["other_flops"] == heads * l * (tile_other + rows * d + rows + rows * (3 * d + 4))
    assert c["exp_ops"] == heads * l * (rows * l + rows + rows + 3 * rows)
    # the window kernel is the local algorithm's with w = 2l
    loc = simulate("local", wl, "h100", compute=False, options={"window": 2 * l})
    (kl,) = [k for k in r.kernels if k.name == "sparse_transformer_local_fwd"]
    keys = ("hbm_read_bytes", "hbm_write_bytes", "matmul_flops", "exp_ops", "other_flops")
    assert {key: kl.counts()[key] for key in keys} == {key: loc.counts[key] for key in keys}


def _fit(seqs, values):
    return float(np.polyfit(np.log(seqs), np.log(values), 1)[0])


def test_blocked_work_grows_as_n_sqrt_n_where_dense_layout_grows_as_n_squared():
    """Default stride l = √N, one head, count-only. Measured exponents over 16K-1M: blocked
    FLOPs 1.44, HBM 1.35 (its bound's own 1.36: the l/B_r window term still counts at these
    N); natural order over 4K-16K: 2.0 (every tile visited)."""
    seqs = [16384, 65536, 262144, 1048576]
    runs = [simulate("sparse_transformer", Workload(batch=1, heads=1, seq_q=n, head_dim=64),
                     "h100", compute=False, options=BLOCKED) for n in seqs]
    flops = _fit(seqs, [r.counts["matmul_flops"] for r in runs])
    hbm = _fit(seqs, [r.hbm_bytes for r in runs])
    bound = _fit(seqs, [r.io_bound_bytes for r in runs])
    assert 1.35 < flops < 1.6
    assert abs(hbm - bound) < 0.05 and 1.25 < hbm < 1.6
    small = [4096, 8192, 16384]
    dense = [simulate("sparse_transformer", Workload(batch=1, heads=1, seq_q=n, head_dim=64),
                      "h100", compute=False) for n in small]
    assert _fit(small, [r.counts["matmul_flops"] for r in dense]) > 1.9
    assert dense[-1].extra["pattern"]["block_density"] == 1.0


def test_blocked_layout_saves_work_at_16k():
    wl = Workload(batch=1, heads=16, seq_q=16384, head_dim=64)
    dense = simulate("sparse_transformer", wl, "h100", compute=False)
    blocked = simulate("sparse_transformer", wl, "h100", compute=False, options=BLOCKED)
    assert blocked.counts["matmul_flops"] * 10 < dense.counts["matmul_flops"]
    assert blocked.hbm_bytes * 10 < dense.hbm_bytes
    assert blocked.extra["pattern"]["attended_pairs"] == dense.extra["pattern"]["attended_pairs"]
    c = compare_with_dense("sparse_transformer", wl, "h100", options=BLOCKED)
    assert c.to_dict()["pattern"]["layout"] == "blocked" and c.flop_saving > 1


def paper_fixed_mask(seq_q, seq_k, stride, summary, causal):
    """A1 ∪ A2 of the fixed pattern: ⌊j/l⌋ == ⌊p/l⌋ or j mod l >= l - c; causal j <= p."""
    p = np.arange(seq_q)[:, None] + seq_k - seq_q
    j = np.arange(seq_k)[None, :]
    allowed = (j // stride == p // stride) | (j % stride >= stride - summary)
    return allowed & (j <= p) if causal else allowed


@pytest.mark.parametrize("shape", [(300, 300, 32, False), (300, 300, 32, True),
                                   (200, 333, 32, True), (97, 160, 16, False)])
@pytest.mark.parametrize("stride,summary", [(16, 4), (40, 8), (7, 7)])
def test_fixed_blocked_output_is_exact_masked_attention(shape, stride, summary):
    seq_q, seq_k, d, causal = shape
    wl = Workload(batch=1, heads=2, kv_heads=1, seq_q=seq_q, seq_k=seq_k, head_dim=d,
                  causal=causal)
    opts = {"layout": "blocked", "pattern": "fixed", "stride": stride, "summary": summary}
    x = make_inputs(wl, 4)
    r = simulate("sparse_transformer", wl, "h100", inputs=x, options=opts)
    exact, _ = attention_reference(x.q, x.k, x.v, causal=causal, scale=wl.scale,
                                   mask=paper_fixed_mask(seq_q, seq_k, stride, summary, causal))
    assert relative_error(r.outputs["o"], exact) < 2e-6
    assert (r.counts == simulate("sparse_transformer", wl, "h100", compute=False,
                                 options=opts).counts)


def test_fixed_layout_tiles_hold_exactly_the_summary_pairs():
    for causal in (False, True):
        seq_q, seq_k, l, c, bq, bk = 150, 180, 12, 3, 16, 8
        keys = sb.summary_positions(l, c, seq_k)
        assert np.array_equal(keys, np.flatnonzero(np.arange(seq_k) % l >= l - c))
        mask = sb.fixed_mask(l, causal, seq_q, seq_k, keys)
        q_lo, q_hi, row_ptr, k_lo, k_hi, partial = sb.fixed_layout(l, c, causal, seq_q, seq_k,
                                                                   bq, bk)
        covered = np.zeros_like(mask)
        for i in range(len(q_lo)):
            for t in range(row_ptr[i], row_ptr[i + 1]):
                tile = mask[q_lo[i]:q_hi[i], k_lo[t]:k_hi[t]]
                assert tile.any() and partial[t] == (not tile.all())
                covered[q_lo[i]:q_hi[i], k_lo[t]:k_hi[t]] = True
        assert not (mask & ~covered).any()


@pytest.mark.parametrize("causal", [False, True])
def test_fixed_blocked_kernel_counts_match_the_closed_form(causal):
    """N = 2048, l = B_r = B_c = 128, c = 8: 16 blocks, 128 gathered summary keys = one K
    tile. Every Q tile is one block and sees the summary keys of the others (causal: of the
    earlier ones, so block 0 has no tile): one partial 128 x 128 tile per Q tile with work,
    T = 16 (causal 15) of them. Per head: reads T (8 + r d e + 4 + 2 r d e + r d e + 4 r),
    writes T (r d e + 4 r), matmul T 4 r² d, and the tile step's and merge's element ops."""
    l, c, d, heads, n = 128, 8, 64, 2, 2048
    wl = Workload(batch=1, heads=heads, seq_q=n, head_dim=d, causal=causal)
    r = simulate("sparse_transformer", wl, "h100", compute=False,
                 options={"layout": "blocked", "pattern": "fixed", "stride": l, "summary": c})
    assert r.plan["block_q"] == r.plan["block_k"] == 128
    (k,) = [k for k in r.kernels if k.name == "sparse_transformer_blocked_fwd"]
    cnt, e, rows, tiles = k.counts(), 2, 128, 15 if causal else 16
    assert k.ctas == tiles * heads
    assert cnt["hbm_read_bytes"] == heads * tiles * (8 + rows * d * e + 4 + 2 * rows * d * e
                                                     + rows * d * e + 4 * rows)
    assert cnt["hbm_write_bytes"] == heads * tiles * (rows * d * e + 4 * rows)
    assert cnt["matmul_flops"] == heads * tiles * 4 * rows * rows * d
    tile_other = 4 * rows * rows + 4 * rows + rows * d + rows * rows
    assert cnt["other_flops"] == heads * tiles * (tile_other + rows * d + rows
                                                  + rows * (3 * d + 4))
    assert cnt["exp_ops"] == heads * tiles * (rows * rows + rows + rows + 3 * rows)


def test_fixed_blocked_layout_does_a_fraction_of_dense_work_at_l_128():
    """The paper's fixed pattern, l = 128, c = 8: natural order visits every tile (as much
    work as dense attention); the blocked layout does about c/l of it plus the own blocks."""
    wl = Workload(batch=1, heads=16, seq_q=16384, head_dim=64)
    opts = {"pattern": "fixed", "stride": 128, "summary": 8}
    dense = simulate("sparse_transformer", wl, "h100", compute=False, options=opts)
    blocked = simulate("sparse_transformer", wl, "h100", compute=False,
                       options={**opts, "layout": "blocked"})
    assert dense.extra["pattern"]["block_density"] == 1.0
    assert blocked.counts["matmul_flops"] * 8 < dense.counts["matmul_flops"]
    assert blocked.hbm_bytes * 8 < dense.hbm_bytes


def test_the_gpu_port_refuses_the_blocked_layout():
    from algorithms import ports
    from algorithms.sparse_transformer import plan
    from hwmodels import get_gpu
    wl = Workload(batch=1, heads=2, seq_q=256, head_dim=64)
    p = plan(wl, get_gpu("h100"), 228 * 1024 - 1024, layout="blocked")
    with pytest.raises(ports.PortUnsupported, match="--layout blocked"):
        ports.port_launches("sparse_transformer", wl, p)


def test_cli_runs_the_blocked_layout(capsys):
    import json
    from attnsim.cli import main
    code = main(["run", "sparse_transformer", "--seq", "4096", "--layout", "blocked",
                 "--count-only", "--format", "json"])
    data = json.loads(capsys.readouterr()[0])
    assert code == 0 and data["options"]["layout"] == "blocked"
    assert data["pattern"]["layout"] == "blocked"
    assert data["pattern"]["local_blocks"] + data["pattern"]["blocked_blocks"] == \
        data["pattern"]["blocks_visited"]
    assert {k["name"] for k in data["kernels"]} == {"sparse_transformer_local_fwd",
                                                    "sparse_transformer_blocked_fwd"}


def test_has_second_set_agrees_with_the_layouts():
    """The footprint's O(1) answer (does the blocked kernel launch?) against the layouts."""
    from algorithms import sparse_transformer as st
    from hwmodels import get_gpu
    gpu = get_gpu("h100")
    for seq_q, seq_k in [(1, 1), (5, 9), (20, 20), (33, 70), (70, 33), (130, 130)]:
        for causal in (False, True):
            wl = Workload(batch=1, heads=1, seq_q=seq_q, seq_k=seq_k, head_dim=16,
                          causal=causal)
            for opts in ({"stride": 3}, {"stride": 10}, {"stride": 40},
                         {"pattern": "fixed", "stride": 8, "summary": 2},
                         {"pattern": "fixed", "stride": 30, "summary": 30},
                         {"pattern": "fixed", "stride": 50, "summary": 4}):
                p = st.plan(wl, gpu, 200_000, layout="blocked", **opts)
                tiles = st._blocked_part(wl, p)[2][0]
                assert st.has_second_set(wl, p) == (len(tiles) > 0), (seq_q, seq_k, causal, opts)
