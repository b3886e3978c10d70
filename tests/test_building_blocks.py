"""The shared building blocks, tested on their own: the counted tile step
(algorithms/kernels/flash_tile.py) and the tiled GEMM (algorithms/kernels/gemm.py). Every algorithm's
counts rest on these two; the per-algorithm tests cover them only in aggregate."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from algorithms.kernels.flash_tile import NO_DROPOUT_SCALE, attend_tile, finish_rows, new_row_state
from algorithms.kernels.gemm import gemm
from hwmodels.counters import (EXP_OPS, HBM_READ_BYTES, HBM_WRITE_BYTES, MATMUL_FLOPS,
                               OTHER_FLOPS, new_counters)

cdiv = lambda a, b: -(-a // b)  # noqa: E731
NO_MASK = np.zeros((0, 0), dtype=np.bool_)


def softmax_rows(s):
    s = s - s.max(axis=1, keepdims=True)
    p = np.exp(s)
    return p / p.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("rows,cols,d", [(16, 16, 8), (37, 53, 24), (128, 64, 64)])
def test_one_tile_counts_and_math(rows, cols, d):
    rng = np.random.default_rng(0)
    q = rng.standard_normal((rows, d), dtype=np.float32)
    k = rng.standard_normal((cols, d), dtype=np.float32)
    v = rng.standard_normal((cols, d), dtype=np.float32)
    c = new_counters()
    m, l, acc = new_row_state(rows, d, True)
    attend_tile(c, q, k, v, acc, m, l, 0, rows, 0, cols, d, 0.5, False, rows, cols, 2, True,
                NO_MASK, False, False, 0, 0, 0, NO_DROPOUT_SCALE)
    o, lse = finish_rows(c, acc, m, l, rows, d, True)
    s = 0.5 * (q.astype(np.float64) @ k.T.astype(np.float64))
    np.testing.assert_allclose(o, softmax_rows(s) @ v, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(lse, np.log(np.exp(s).sum(axis=1)), rtol=1e-5)
    # the docstring's per-tile formula, plus the epilogue's R d + R other ops and R exps
    assert c[HBM_READ_BYTES] == 2 * cols * d * 2 and c[HBM_WRITE_BYTES] == 0
    assert c[MATMUL_FLOPS] == 4 * rows * cols * d
    assert c[OTHER_FLOPS] == 4 * rows * cols + 4 * rows + rows * d + rows * d + rows
    assert c[EXP_OPS] == rows * cols + rows + rows


def test_tiles_merge_like_one_big_tile():
    """Two tiles of keys through the online softmax equal one tile of all of them."""
    rng = np.random.default_rng(1)
    q = rng.standard_normal((20, 16), dtype=np.float32) * 4
    k = rng.standard_normal((70, 16), dtype=np.float32) * 4
    v = rng.standard_normal((70, 16), dtype=np.float32)
    outs = []
    for splits in ([0, 70], [0, 33, 70]):
        c = new_counters()
        m, l, acc = new_row_state(20, 16, True)
        for c0, c1 in zip(splits[:-1], splits[1:]):
            attend_tile(c, q, k, v, acc, m, l, 0, 20, c0, c1, 16, 0.25, False, 20, 70, 2, True,
                        NO_MASK, False, False, 0, 0, 0, NO_DROPOUT_SCALE)
        outs.append(finish_rows(c, acc, m, l, 20, 16, True)[0])
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-5, atol=1e-6)


def test_element_mask_on_a_partial_tile():
    rng = np.random.default_rng(2)
    q = rng.standard_normal((8, 8), dtype=np.float32)
    k = rng.standard_normal((8, 8), dtype=np.float32)
    v = rng.standard_normal((8, 8), dtype=np.float32)
    mask = rng.random((8, 8)) < 0.5
    mask[:, 0] = True                                  # every row keeps one key
    c = new_counters()
    m, l, acc = new_row_state(8, 8, True)
    attend_tile(c, q, k, v, acc, m, l, 0, 8, 0, 8, 8, 1.0, False, 8, 8, 2, True, mask, True,
                False, 0, 0, 0, NO_DROPOUT_SCALE)
    o, _ = finish_rows(c, acc, m, l, 8, 8, True)
    s = np.where(mask, q.astype(np.float64) @ k.T, -np.inf)
    np.testing.assert_allclose(o, softmax_rows(s) @ v, rtol=1e-4, atol=1e-5)
    unmasked = new_counters()
    m, l, acc = new_row_state(8, 8, True)
    attend_tile(unmasked, q, k, v, acc, m, l, 0, 8, 0, 8, 8, 1.0, False, 8, 8, 2, True, mask,
                False, False, 0, 0, 0, NO_DROPOUT_SCALE)
    finish_rows(unmasked, acc, m, l, 8, 8, True)
    assert c[OTHER_FLOPS] - unmasked[OTHER_FLOPS] == 64   # one select per score


@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (False, True), (True, False)])
@pytest.mark.parametrize("m,n,k,tile", [(100, 70, 40, 32), (64, 64, 64, 64), (33, 129, 17, 16)])
def test_tiled_gemm_counts_and_product(trans_a, trans_b, m, n, k, tile):
    rng = np.random.default_rng(3)
    a = rng.standard_normal((k, m) if trans_a else (m, k), dtype=np.float32)
    b = rng.standard_normal((n, k) if trans_b else (k, n), dtype=np.float32)
    out = np.zeros((m, n), dtype=np.float32)
    c = new_counters()
    gemm(c, a, b, out, m, n, k, tile, tile, 8, 2, 4, trans_a, trans_b, 0.5, True)
    ref = 0.5 * ((a.T if trans_a else a).astype(np.float64) @ (b.T if trans_b else b))
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)
    # each output tile reads its A row panel and its B column panel once
    assert c[HBM_READ_BYTES] == (cdiv(n, tile) * m * k + cdiv(m, tile) * k * n) * 2
    assert c[HBM_WRITE_BYTES] == m * n * 4
    assert c[MATMUL_FLOPS] == 2 * m * n * k
    assert c[OTHER_FLOPS] == m * n                     # the alpha epilogue


@pytest.mark.parametrize("rows,cols,d", [(16, 16, 8), (37, 53, 24), (128, 64, 64)])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("dropout", [False, True])
def test_count_only_tile_counts_what_the_tile_step_counts(rows, cols, d, masked, dropout):
    """Count-only mode counts a tile by arithmetic (count_tile); it must match attend_tile."""
    from algorithms.kernels.flash_tile import count_tile
    rng = np.random.default_rng(4)
    q = rng.standard_normal((rows, d), dtype=np.float32)
    k = rng.standard_normal((cols, d), dtype=np.float32)
    v = rng.standard_normal((cols, d), dtype=np.float32)
    mask = np.ones((rows, cols), dtype=np.bool_)
    executed = new_counters()
    m, l, acc = new_row_state(rows, d, True)
    attend_tile(executed, q, k, v, acc, m, l, 0, rows, 0, cols, d, 1.0, False, rows, cols, 2,
                True, mask, masked, dropout, 7, 0, 1 << 23, 2.0)
    counted = new_counters()
    count_tile(counted, rows, cols, d, 2, masked, dropout)
    np.testing.assert_array_equal(counted, executed)


@settings(max_examples=300, deadline=None)
@given(seq_q=st.integers(1, 700), extra_keys=st.integers(0, 700), block_q=st.integers(1, 130),
       block_k=st.integers(1, 130), causal=st.booleans(), dropout=st.booleans(),
       data=st.data())
def test_count_tiles_counts_each_tile_as_count_tile_does(seq_q, extra_keys, block_q, block_k,
                                                         causal, dropout, data):
    """count_tiles counts a run of identical tiles once and scales it; the sum must equal
    count_tile called tile by tile (the loop it replaces), for every Q block, key range and
    masking, ragged and causal (N_k >= N_q, bottom-right aligned), with and without dropout."""
    from algorithms.kernels.common import causal_block_is_partial
    from algorithms.kernels.flash_tile import count_tile, count_tiles
    seq_k = seq_q + extra_keys
    r0 = data.draw(st.integers(0, seq_q - 1)) // block_q * block_q
    rows = min(block_q, seq_q - r0)
    key_limit = data.draw(st.integers(1, seq_k))
    c_lo = data.draw(st.integers(0, key_limit - 1)) // block_k * block_k
    c_hi = data.draw(st.integers(c_lo + 1, key_limit))
    d = 24
    tile_by_tile = new_counters()
    for c0 in range(c_lo, c_hi, block_k):
        c1 = min(c0 + block_k, key_limit)
        masked = causal and causal_block_is_partial(r0, c1, seq_q, seq_k)
        count_tile(tile_by_tile, rows, c1 - c0, d, 2, masked, dropout)
    runs = new_counters()
    count_tiles(runs, r0, rows, c_lo, c_hi, block_k, key_limit, d, 2, causal, seq_q, seq_k,
                dropout)
    np.testing.assert_array_equal(runs, tile_by_tile)


@pytest.mark.parametrize("m,n,k,tile", [(100, 70, 40, 32), (33, 129, 17, 16)])
def test_count_only_gemm_counts_what_the_executed_gemm_counts(m, n, k, tile):
    rng = np.random.default_rng(5)
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    executed, counted = new_counters(), new_counters()
    gemm(executed, a, b, np.zeros((m, n), np.float32), m, n, k, tile, tile, 8, 2, 2, False,
         False, 0.5, True)
    empty = np.empty((0, 0), dtype=np.float32)
    gemm(counted, empty, empty, empty, m, n, k, tile, tile, 8, 2, 2, False, False, 0.5, False)
    np.testing.assert_array_equal(counted, executed)


def test_gemm_l2_working_set_counts_a_panels_only_where_they_are_re_read():
    """A panel is re-read only by the further column tiles of its rows: with one column
    tile (n <= tile_n) the working set is the B operands of the heads in flight alone. B is
    re-read only by further row tiles: with one row tile (m <= tile_m) each B panel is read
    once and the head's one A panel is what its column tiles re-read."""
    from algorithms.kernels.gemm import GemmTiles, l2_working_set
    t = GemmTiles(128, 128, 32)
    heads, resident, m, k, e = 3, 264, 8192, 8192, 2
    assert l2_working_set(heads, resident, m, k, 128, t, e) == heads * k * 128 * e
    assert l2_working_set(heads, resident, m, k, 256, t, e) == \
        heads * k * 256 * e + resident * 128 * k * e
    assert l2_working_set(heads, resident, 128, k, 8192, t, e) == heads * 128 * k * e
    assert l2_working_set(heads, resident, 100, k, 128, t, e) == 0     # nothing re-read


@pytest.mark.parametrize("n, hits", [(1024, True), (4096, False)])
def test_algorithm0_causal_mask_hits_l2_only_while_a_head_streaming_past_it_fits(n, hits):
    """Algorithm 0's causal mask kernels (forward ``mask``, backward ``mask_bwd``) read the
    one-byte mask once per head, head after head: between two heads' reads of an entry a
    head's S (or dS) is read and written, 2 e N² bytes, so L2 holds the mask for its
    re-reads only while N² (1 + 2 e) fits in its usable half; beyond, it keeps
    usable / (N² (1 + 2 e)) of them, the rest come from DRAM."""
    from attnsim import Workload, simulate
    from hwmodels import get_gpu
    from hwmodels.timing import L2_USABLE_FRACTION, dram_bytes
    gpu, b, h, e = get_gpu("h100"), 2, 2, 2
    wl = Workload(batch=b, heads=h, seq_q=n, head_dim=64, causal=True, passes="fwd+bwd")
    r = simulate("standard", wl, gpu, compute=False)
    usable = L2_USABLE_FRACTION * gpu.l2_bytes
    working_set = n * n * (1 + 2 * e)
    assert (working_set <= usable) == hits
    hit = min(1.0, usable / working_set)
    for name in ("mask", "mask_bwd"):
        (k,) = [k for k in r.kernels if k.name == name]
        requested = b * h * n * n * (2 * e + 1)               # S, mask read; S written
        once = b * h * n * n * 2 * e + n * n                  # the mask read once
        assert k.counts()["hbm_read_bytes"] + k.counts()["hbm_write_bytes"] == requested
        assert dram_bytes(gpu, k) == int(once + (requested - once) * (1 - hit)), name


def test_standard_pv_gemm_reads_v_from_l2_and_p_once_from_dram():
    """O = P V at N = 8192, d = 128 on an H100: the counts charge V once per row tile, the
    timing model's DRAM estimate is one pass over P, V once and O once (the CTAs of a head
    read V together, so its re-reads hit L2 although the P stream is far larger than L2)."""
    from attnsim import Workload, simulate
    from hwmodels.timing import TimingOptions, kernel_time
    n, d, bh, e = 8192, 128, 32, 2
    r = simulate("standard", Workload(batch=2, heads=16, seq_q=n, head_dim=d), "h100",
                 compute=False)
    pv = next(k for k in r.kernels if k.name == "pv_gemm")
    compulsory = bh * (n * n + n * d + n * d) * e
    assert kernel_time(r.gpu, pv).dram_bytes == compulsory
    requested = pv.counts()["hbm_read_bytes"] + pv.counts()["hbm_write_bytes"]
    assert requested == bh * (n * n + (n // 128) * n * d + n * d) * e
    assert kernel_time(r.gpu, pv, TimingOptions(l2_cache=False)).dram_bytes == requested
