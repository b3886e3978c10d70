"""Native Sparse Attention: its own float64 math, the selection's invariants, closed-form
counts of the window / selected / compression kernels, count-only == executed, growth in N.

Closed forms are derived here from the shapes and the plan (algorithms/nsa.py docstring);
the window kernel's from the causal band written independently in tests/_sparse_helpers.py.

Kernel bodies: algorithms/kernels/nsa_kernels.py.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from _sparse_helpers import E, cdiv, closed_form, paper_mask, slope, tiles_of
from shapes import EXACT_TOL, LARGE_LOGIT_TOL
from algorithms.base import PlanError
from algorithms.kernels.nsa_kernels import _top_n
from algorithms.nsa import plan, reference, reference_selection, weights
from attnsim import Workload, make_inputs, simulate
from attnsim.reference import attention_reference, relative_error

# small blocks so that selection really chooses at executed sizes: l = 16, d_s = 8, l' = 32
SMALL = {"compress_block": 16, "compress_stride": 8, "select_block": 32, "selected": 4,
         "window": 40}
SHAPES = [
    # batch, heads, kv_heads, seq_q, seq_k, head_dim
    (1, 2, 1, 300, 300, 32),       # GQA group of 2
    (2, 3, 3, 97, 161, 40),        # N_q < N_k (a chunk after a prefix)
    (1, 4, 2, 257, 129, 59),       # N_q > N_k: the first 128 rows see no key
]


def workload(shape, **kw):
    b, h, g, nq, nk, d = shape
    return Workload(batch=b, heads=h, kv_heads=g, seq_q=nq, seq_k=nk, head_dim=d, causal=True,
                    **kw)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("options", [SMALL, {"selected": 3, "window": 7, "seed": 4}])
def test_matches_own_float64_math_and_counts_equal(shape, options):
    wl = workload(shape)
    r = simulate("nsa", wl, "h100", options=options, inputs=make_inputs(wl, 1))
    assert r.error_vs_reference < EXACT_TOL
    assert 0.05 < r.error_vs_exact < 2          # an approximation of softmax attention
    counted = simulate("nsa", wl, "h100", options=options, compute=False)
    assert counted.counts == r.counts
    assert [k.name for k in counted.kernels] == [k.name for k in r.kernels]


@pytest.mark.parametrize("nq,nk", [(20, 20), (1, 1000), (3, 700)])
def test_edge_lengths(nq, nk):
    """N_k < l (no compressed token, no compression kernel) and decode-like N_q << N_k."""
    wl = Workload(batch=1, heads=4, kv_heads=2, seq_q=nq, seq_k=nk, head_dim=32, causal=True)
    opts = {"selected": 3, "select_block": 32, "window": 16}
    r = simulate("nsa", wl, "h100", options=opts, inputs=make_inputs(wl, 6))
    assert r.error_vs_reference < EXACT_TOL
    assert simulate("nsa", wl, "h100", options=opts, compute=False).counts == r.counts
    assert ("nsa_compress" in [k.name for k in r.kernels]) == (nk >= 32)


def test_large_logits_only_near_ties_flip():
    """Logits of std 16: float32 probabilities underflow where float64 ones do not, so a
    top-n may break a near-tie differently; with the kernel's own selection the float64
    math matches, and the float64 selection agrees on almost every position."""
    wl = workload(SHAPES[0])
    inputs = make_inputs(wl, 2, magnitude=4.0)
    r = simulate("nsa", wl, "h100", options=SMALL, inputs=inputs)
    p = plan(wl, r.gpu, r.sram_budget_bytes, **r.options)
    ref = reference(wl, p, inputs, attention_reference, selection=r.outputs["sel"])
    assert relative_error(r.outputs["o"], ref) < LARGE_LOGIT_TOL
    q = inputs.q.astype(np.float64)
    kc = _compressed_keys(wl, p, inputs)
    idx, _ = reference_selection(wl, p, q, kc)
    same = np.all(idx == r.outputs["sel"], axis=-1).mean()
    assert same > 0.95


def _compressed_keys(wl, p, inputs):
    par = weights(wl, p)
    k = inputs.k.astype(np.float64)
    l, s = p.compress_block, p.compress_stride
    return np.stack([np.einsum("l,bgld->bgd", par["wk"].astype(np.float64),
                               k[:, :, i * s:i * s + l]) + par["bk"]
                     for i in range(p.compressed_tokens)], axis=2)


@pytest.mark.parametrize("shape", SHAPES)
def test_selection_holds_initial_and_local_blocks(shape):
    wl = workload(shape)
    r = simulate("nsa", wl, "h100", options=SMALL, inputs=make_inputs(wl, 3))
    sel = r.outputs["sel"]                                      # (B, G, N_q, n)
    n, ls = SMALL["selected"], SMALL["select_block"]
    assert sel.shape == (wl.batch, wl.kv_heads, wl.seq_q, n)
    for t in range(wl.seq_q):
        kpos = t + wl.seq_k - wl.seq_q
        rows = sel[:, :, t].reshape(-1, n)
        if kpos < 0:
            assert (rows == -1).all()
            continue
        jt = kpos // ls
        nt = min(n, jt + 1)
        for row in rows:
            chosen = row[:nt]
            assert (row[nt:] == -1).all()
            assert list(chosen) == sorted(set(chosen.tolist()))     # distinct, ascending
            assert chosen[0] == 0 and chosen[-1] == jt and chosen.max() <= jt
            if jt >= 1:
                assert jt - 1 in chosen


def test_selection_uses_the_scores_when_it_chooses():
    """Beyond the forced blocks, the kernel picks the blocks of highest float64 score."""
    wl = workload(SHAPES[0])
    inputs = make_inputs(wl, 4)
    r = simulate("nsa", wl, "h100", options=SMALL, inputs=inputs)
    p = plan(wl, r.gpu, r.sram_budget_bytes, **r.options)
    idx, _ = reference_selection(wl, p, inputs.q.astype(np.float64),
                                 _compressed_keys(wl, p, inputs))
    assert (idx == r.outputs["sel"]).all()
    # and the choice is not trivial: some position drops an earlier block
    assert (r.outputs["sel"][..., 1] > 1).any()


# ---- closed forms ---------------------------------------------------------------------------

def selected_closed_form(wl, p):
    """nsa_slc: per position and KV head, indices, q, gates, O_cmp, O_win, the selected
    tokens' K and V; writes O. T_t = (n_t - 1) l' + the current block up to kpos.
    ALU ops per B_s sub-block of c keys for the g rows: the row max g c + the max with m g,
    and g c for the mask's select when the sub-block reaches past kpos (only the current
    block's last one can); conversions (fp16): P before P V (g c) and O before its store."""
    g, d, n, ls, bs = p["group"], wl.head_dim, p["selected"], p["select_block"], p["select_tile"]
    reads = writes = mm = alu = cvt = 0
    for t in range(wl.seq_q):
        kpos = t + wl.seq_k - wl.seq_q
        reads += 4 * n + g * d * E + 12 * g + 2 * g * d * E
        writes += g * d * E
        cvt += g * d                                           # O, even with no key
        if kpos < 0:
            continue
        jt = kpos // ls
        nt = min(n, jt + 1)
        cur_tiles = cdiv(kpos + 1 - jt * ls, bs)               # sub-blocks of the current block
        cur = min(wl.seq_k, jt * ls + cur_tiles * bs) - jt * ls
        tokens = (nt - 1) * ls + cur
        reads += 2 * tokens * d * E
        mm += 4 * g * tokens * d
        tiles = (nt - 1) * (ls // bs) + cur_tiles              # earlier blocks: l'/B_s each
        last = cur - (cur_tiles - 1) * bs                      # keys of the last sub-block
        masked = last if jt * ls + cur > kpos + 1 else 0       # it reaches past kpos
        alu += g * tokens + g * tiles + g * masked
        cvt += g * tokens                                      # P
    bg = wl.batch * wl.kv_heads
    return {"hbm_read_bytes": bg * reads, "hbm_write_bytes": bg * writes,
            "matmul_flops": bg * mm, "ctas": bg * wl.seq_q, "alu_ops": bg * alu,
            "convert_ops": bg * cvt}


def compress_closed_form(wl, p):
    d, l, s, bt, nc = (wl.head_dim, p["compress_block"], p["compress_stride"],
                       p["compress_tile"], p["compressed_tokens"])
    reads = sum(2 * ((min(bt, nc - i0) - 1) * s + l) * d * E + 2 * l * E + 2 * d * E
                for i0 in range(0, nc, bt))
    bg = wl.batch * wl.kv_heads
    # the bias adds are FMA-pipe work (no ALU op); K̃ and Ṽ are converted to fp16 as stored
    return {"hbm_read_bytes": bg * reads, "hbm_write_bytes": bg * 2 * nc * d * E,
            "matmul_flops": bg * 4 * nc * l * d, "other_flops": bg * 2 * nc * d,
            "alu_ops": 0, "convert_ops": bg * 2 * nc * d}


def compressed_attention_closed_form(wl, p):
    """nsa_cmp: Q and gate weights per CTA; K̃, Ṽ (pass 1) and K̃ (pass 2) over the tiles
    up to the last row's visible compressed tokens; writes gates, O_cmp, indices.
    ALU ops of a block's R = g B_r rows: pass 1's row max R cols + R per tile; the select of
    every tile reaching past the first row's visible tokens, in both passes (R c each); the
    top-n, 3 forced + (j_t + 1) n comparisons per position. Conversions (fp16): P before
    P Ṽ (R cols) and O_cmp before its store (R d); the gates stay fp32."""
    g, d, n, br, bk = p["group"], wl.head_dim, p["selected"], p["cmp_block_q"], p["cmp_block_k"]
    nc, l, s = p["compressed_tokens"], p["compress_block"], p["compress_stride"]
    ls = p["select_block"]
    visible = lambda kpos: 0 if kpos + 1 < l else (kpos + 1 - l) // s + 1  # noqa: E731
    reads = writes = alu = cvt = 0
    for r0 in range(0, wl.seq_q, br):
        rows = min(br, wl.seq_q - r0)
        kpos = r0 + rows - 1 + wl.seq_k - wl.seq_q
        nvis = visible(kpos)
        cols = min(nc, cdiv(nvis, bk) * bk)
        reads += g * rows * d * E + 3 * g * d * E + 3 * cols * d * E
        writes += 3 * g * rows * 4 + g * rows * d * E + rows * n * 4
        big = g * rows
        first = visible(r0 + wl.seq_k - wl.seq_q)
        ends = [min(c0 + bk, nc) for c0 in range(0, nvis, bk)]
        masked = sum(c1 - c0 for c0, c1 in zip(range(0, nvis, bk), ends) if c1 > first)
        alu += big * cols + big * len(ends) + 2 * big * masked
        alu += sum(3 + ((r + wl.seq_k - wl.seq_q) // ls + 1) * n
                   for r in range(r0, r0 + rows) if r + wl.seq_k - wl.seq_q >= 0)
        cvt += big * cols + big * d
    bg = wl.batch * wl.kv_heads
    return {"hbm_read_bytes": bg * reads, "hbm_write_bytes": bg * writes, "alu_ops": bg * alu,
            "convert_ops": bg * cvt}


def kernel_counts(r, name, keys):
    k = next(k for k in r.kernels if k.name == name)
    return {key: k.counts()[key] for key in keys}


@pytest.mark.parametrize("shape,options", [
    ((1, 2, 1, 300, 300, 32), SMALL),
    ((2, 4, 2, 333, 517, 64), {"window": 100}),
    ((1, 8, 1, 1000, 1000, 64), {"select_block": 256, "selected": 5, "window": 300}),
])
def test_closed_forms(shape, options):
    wl = workload(shape)
    r = simulate("nsa", wl, "h100", compute=False, options=options)
    p = r.plan
    slc = selected_closed_form(wl, p)
    assert kernel_counts(r, "nsa_slc", slc) == slc
    comp = compress_closed_form(wl, p)
    assert kernel_counts(r, "nsa_compress", comp) == comp
    cmp_ = compressed_attention_closed_form(wl, p)
    assert kernel_counts(r, "nsa_cmp", cmp_) == cmp_
    br, bc = p["win"]["block_q"], p["win"]["block_k"]
    mask = paper_mask("local", wl.seq_q, wl.seq_k, True, window=p["window"])
    win = closed_form(tiles_of(mask, br, bc), wl.seq_q, wl.head_dim, cdiv(wl.seq_q, br),
                      wl.batch * wl.heads)
    assert kernel_counts(r, "nsa_win_fwd", win) == win


def test_selected_tile_smaller_than_block_when_sram_is_small():
    """l' = 256 at d = 128 in 40 KiB: the selected blocks stream in sub-blocks; same tokens."""
    wl = Workload(batch=1, heads=2, seq_q=700, head_dim=128, causal=True)
    opts = {"select_block": 256, "selected": 3}
    r = simulate("nsa", wl, "h100", compute=False, sram_bytes=40 * 1024, options=opts)
    assert r.plan["select_tile"] < 256 and 256 % r.plan["select_tile"] == 0
    slc = selected_closed_form(wl, r.plan)
    assert kernel_counts(r, "nsa_slc", slc) == slc


# ---- growth and bound ----------------------------------------------------------------------

def test_growth_matches_the_bound():
    """Count-only, fixed n, l', w: selected + window traffic is linear in N, the compressed
    branch's is quadratic (N²/d_s), the total follows io_bound's leading terms."""
    seqs = [32768, 65536, 131072]
    per, total, bound = [], [], []
    for n in seqs:
        r = simulate("nsa", Workload(batch=1, heads=2, seq_q=n, head_dim=64, causal=True),
                     "h100", compute=False)
        per.append({k.name: int(k.counters[0] + k.counters[1]) for k in r.kernels})
        total.append(r.hbm_bytes)
        bound.append(r.io_bound_bytes)
        assert 0.95 < r.hbm_bytes / r.io_bound_bytes < 1.1
    linear = [x["nsa_slc"] + x["nsa_win_fwd"] + x["nsa_compress"] for x in per]
    assert slope(seqs, linear) == pytest.approx(1.0, abs=0.02)
    quad = [x["nsa_cmp"] for x in per]
    assert 1.85 < slope(seqs[1:], quad[1:]) <= 2.0
    assert slope(seqs, total) == pytest.approx(slope(seqs, bound), abs=0.02)


def test_gqa_shares_the_selected_loads():
    """With g query heads per KV head the selected kernel reads each block once for the
    group: its K/V traffic does not grow with g, and at 64K with g = 16 NSA moves fewer
    bytes than FlashAttention-2."""
    base = dict(batch=1, seq_q=65536, head_dim=128, causal=True)
    one = simulate("nsa", Workload(heads=4, kv_heads=4, **base), "h100", compute=False)
    grouped = simulate("nsa", Workload(heads=64, kv_heads=4, **base), "h100", compute=False)
    kv = lambda r: kernel_counts(r, "nsa_slc", ["hbm_read_bytes"])["hbm_read_bytes"]  # noqa: E731
    assert kv(grouped) < 1.5 * kv(one)
    flash = simulate("flash2", Workload(heads=64, kv_heads=4, **base), "h100", compute=False)
    assert grouped.hbm_bytes < flash.hbm_bytes / 2
    assert grouped.counts["matmul_flops"] < flash.counts["matmul_flops"] / 5


# ---- errors -----------------------------------------------------------------------------------

@pytest.mark.parametrize("options,causal,match", [
    ({}, False, "causal by design"),
    ({"compress_stride": 12}, True, "must divide --compress-block 32"),
    ({"select_block": 40}, True, "must be a multiple of --compress-stride 16"),
    ({"selected": 2}, True, "--selected must be at least 3"),
    ({"window": 0}, True, "--window must be a positive integer"),
    ({"compress_block": 0}, True, "--compress-block must be a positive integer"),
    ({"block": 3}, True, "has no option"),
])
def test_bad_parameters(options, causal, match):
    wl = Workload(seq_q=256, head_dim=64, causal=causal)
    with pytest.raises(PlanError, match=match):
        simulate("nsa", wl, "h100", compute=False, options=options)


def test_small_sram_is_named():
    wl = Workload(seq_q=256, head_dim=256, causal=True)
    with pytest.raises(ValueError, match="bytes of SRAM"):
        simulate("nsa", wl, "h100", compute=False, sram_bytes=8 * 1024)


def test_reference_with_fewer_selection_blocks_than_slots():
    """N_k < n l' (2 blocks of 32 keys, n = 4 slots): the float64 reference pads its
    selection with −1 as the kernel does (it used to fail on the broadcast), and matches the
    simulation; found by the GPU port's tests (N below the window)."""
    wl = workload((1, 4, 4, 40, 40, 64))
    inputs = make_inputs(wl, 1)
    r = simulate("nsa", wl, "h100", options=SMALL, inputs=inputs)
    p = plan(wl, r.gpu, r.sram_budget_bytes, **r.options)
    idx, _ = reference_selection(wl, p, inputs.q.astype(np.float64),
                                 _compressed_keys(wl, p, inputs))
    assert idx.shape == r.outputs["sel"].shape and (idx == r.outputs["sel"]).all()
    assert (idx[..., 2:] == -1).all()
    assert relative_error(r.outputs["o"], reference(wl, p, inputs, attention_reference)) < 1e-5


def test_reference_scores_rank_the_selected_blocks():
    """reference_scores (the float64 block scores the port's tests judge near-ties by):
    every unforced selected block scores at least as high as every unselected one."""
    from algorithms.nsa import reference_scores
    wl = workload(SHAPES[0])
    inputs = make_inputs(wl, 4)
    r = simulate("nsa", wl, "h100", options=SMALL, inputs=inputs)
    p = plan(wl, r.gpu, r.sram_budget_bytes, **r.options)
    scores = reference_scores(wl, p, inputs)
    sel = r.outputs["sel"]
    for t in range(100, wl.seq_q, 37):
        jt = t // p.select_block
        chosen = set(sel[0, 0, t]) - {-1, 0, jt - 1, jt}
        others = set(range(jt + 1)) - set(sel[0, 0, t])
        if chosen and others:
            assert min(scores[0, 0, t, list(chosen)]) >= max(scores[0, 0, t, list(others)])


def test_selection_differences_accept_near_ties_and_reject_other_choices():
    """nsa.selection_differences, the check the emulator, device and gpu-check comparisons of
    the port's top-n use: at a position of the simulation's own selection, swapping a chosen
    block for the unchosen block of nearest float64 score is a near-tie when within the
    tolerance; swapping it for one far below, or dropping a forced block, is not (N = 300:
    positions with up to 10 candidate blocks)."""
    from algorithms import nsa
    from algorithms.base import check_options
    from algorithms.registry import get_algorithm
    from hwmodels import get_gpu
    small = {"compress_block": 16, "compress_stride": 8, "select_block": 32, "selected": 4,
             "window": 64}
    wl = Workload(batch=1, heads=2, kv_heads=1, seq_q=300, head_dim=32, causal=True,
                  dtype="bf16")
    gpu = get_gpu("h100-sxm")
    module = get_algorithm("nsa")
    plan = module.plan(wl, gpu, gpu.smem_bytes_per_block, **check_options(module.INFO, small))
    inputs = make_inputs(wl, seed=1)
    sel = simulate("nsa", wl, gpu, inputs=inputs, check=False, options=small).outputs["sel"]
    scores = nsa.reference_scores(wl, plan, inputs)
    tol = nsa.TIE_ROUNDOFFS * nsa.STORAGE_ROUNDOFF[wl.dtype]

    def swapped(t, a, c):
        x = sel.copy()
        x[0, 0, t] = sorted(set(x[0, 0, t]) - {a} | {c})
        return x, t

    near = far = None
    for t in range(wl.seq_q):
        jt = t // plan.select_block
        row = scores[0, 0, t, :jt + 1]
        chosen = set(sel[0, 0, t]) - {-1, 0, jt - 1, jt}
        others = set(range(jt + 1)) - set(sel[0, 0, t])
        for a in chosen:
            for c in others:
                gap = abs(row[a] - row[c])
                if near is None and gap <= tol * row.max():
                    near = swapped(t, a, c)
                if far is None and gap > 2 * tol * row.max():
                    far = swapped(t, a, c)
    assert near is not None and far is not None
    same = nsa.selection_differences(wl, plan, inputs, sel, sel)
    assert len(same.flipped) == 0 and same.all_near_ties and same.agree.all()
    diff = nsa.selection_differences(wl, plan, inputs, near[0], sel)
    assert diff.flipped.tolist() == [[0, 0, near[1]]] and diff.all_near_ties
    assert not diff.agree[near[1]] and diff.agree.sum() == wl.seq_q - 1
    assert not nsa.selection_differences(wl, plan, inputs, far[0], sel).all_near_ties
    t = far[1]                                # swap the forced block 0 for a free one
    forced = sel.copy()
    free = sorted(set(range(t // plan.select_block + 1)) - set(sel[0, 0, t]))[0]
    forced[0, 0, t] = sorted(set(forced[0, 0, t]) - {0} | {free})
    assert not nsa.selection_differences(wl, plan, inputs, forced, sel).all_near_ties


# ---- the compiled top-n selection against a stable sort -----------------------------------


def top_n_by_stable_sort(scores, jt, n_sel):
    """Eq. 11's choice written plainly: force the initial and the two local blocks, order
    by score with ties to the lower index and NaN last, keep n, list them ascending."""
    sc = np.array(scores[:jt + 1], dtype=np.float32)
    sc[[0, jt, max(jt - 1, 0)]] = np.inf
    order = np.argsort(-sc, kind="stable")                  # NumPy sorts NaN last
    chosen = np.sort(order[:min(n_sel, jt + 1)])
    return np.concatenate([chosen, -np.ones(n_sel - len(chosen), dtype=np.int64)])


@settings(max_examples=300, deadline=None)
@given(scores=st.lists(st.sampled_from([0.0, 0.25, 0.5, 1.0, 3.0, float("nan"),
                                        float("-inf")]) | st.floats(0, 4, width=32),
                       min_size=1, max_size=40),
       n_sel=st.integers(1, 20), data=st.data())
def test_top_n_matches_a_stable_sort_with_ties_and_nan(scores, n_sel, data):
    jt = data.draw(st.integers(0, len(scores) - 1))
    out = np.empty(n_sel, dtype=np.int64)
    _top_n(np.array(scores, dtype=np.float32), jt, n_sel, out)
    assert out.tolist() == top_n_by_stable_sort(scores, jt, n_sel).tolist()
