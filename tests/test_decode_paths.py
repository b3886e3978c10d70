"""Decode paths that cache what their papers cache: NSA's compressed cache with group-shared
selected and window branches, and the recurrent state of linear attention, RFA and Performer.

Closed forms are derived here from the papers' definitions and the shapes; the float64
reference of the recurrent step is written here from the papers' equations
(o = φ(q)ᵀS / φ(q)ᵀz, S = Σ_j φ(k_j) v_jᵀ, z = Σ_j φ(k_j)), sharing no code with the
kernels. Kernel bodies: algorithms/kernels/nsa_decode.py, algorithms/kernels/feature_decode.py.
"""
import json
import math

import numpy as np
import pytest

from algorithms import nsa, performer, rfa
from attnsim import Inputs, Workload, make_inputs, simulate
from attnsim.cli import main
from attnsim.reference import attention_reference, relative_error

E = 2                                   # fp16 storage bytes
L, DS, LS, N_SEL, W = 32, 16, 64, 16, 512   # NSA paper §4.1: l, d, l', n, w

# NSA paper (arXiv 2502.11089), Table 4: memory access volume per decoding step, in
# equivalent tokens, and the expected speedup over full attention.
PAPER_TABLE = {8192: (2048, 4.0), 16384: (2560, 6.4), 32768: (3584, 9.1), 65536: (5632, 11.6)}


def decode_wl(nk, nq=1, batch=1, heads=64, kv_heads=4, d=128, dtype="fp16"):
    return Workload(batch=batch, heads=heads, kv_heads=kv_heads, seq_q=nq, seq_k=nk,
                    head_dim=d, dtype=dtype, causal=True, decode=True)


def kernel(r, name):
    return next(k for k in r.kernels if k.name == name).counts()


# ---- NSA: tokens and bytes per step -----------------------------------------------------------

def nsa_tokens(nk, nq=1, l=L, ds=DS, ls=LS, n=N_SEL, w=W):
    """Per KV group: compressed tokens complete before the newest position (Eq. 7: blocks
    [i d, i d + l) inside the context), each position's n_t selected blocks with the
    current one cut at the position, and the window of the last w keys of every position."""
    n_c = 0 if nk < l else (nk - l) // ds + 1
    sel = 0
    for t in range(nq):
        kpos = nk - nq + t
        jt = kpos // ls
        sel += (min(n, jt + 1) - 1) * ls + (kpos + 1 - jt * ls)
    return n_c, sel, min(nk, w + nq - 1)


def fused_bytes(wl, rescore=False, **params):
    """The fused schedule (one CTA per sequence and KV group): the group's queries and gate
    weights, K̃ and Ṽ once (K̃ twice when the bins do not fit on chip), the raw K/V of its
    selected and window tokens; the group's outputs written."""
    g, d = wl.heads // wl.kv_heads, wl.head_dim
    n_c, sel, win = nsa_tokens(wl.seq_k, wl.seq_q, **params)
    reads = (g * wl.seq_q * d * E + 3 * g * d * E + (2 + rescore) * n_c * d * E
             + 2 * sel * d * E + 2 * win * d * E)
    bg = wl.batch * wl.kv_heads
    return {"nsa_decode": (bg * reads, bg * g * wl.seq_q * d * E)}


def even_chunks(n, tile, parts):
    """``parts`` chunks of whole tiles of n tokens, sizes differing by at most a tile."""
    tiles = -(-n // tile)
    parts = max(1, min(parts, tiles))
    edges = [i * tiles // parts for i in range(parts + 1)]
    return [(edges[i] * tile, min(n, edges[i + 1] * tile)) for i in range(parts)]


def split_bytes(wl, plan, l=L, ds=DS, ls=LS, n=N_SEL, w=W):
    """The split schedule, per kernel (reads, writes). Per group, rows = g N_q; a partial
    softmax state is acc (d fp32) + m, l (8 B) per row:
    cmp_win: every compressed chunk and window chunk reads the queries and its tokens, writes
             its partial states; a compressed chunk also its rows' bins of the selection blocks
             its tokens credit (Eq. 9: token i covers stride segments i .. i + l/d − 1);
    select:  every chunk's m, l and bins; writes the n indices per position;
    slc:     per position and slot, the index, q of g heads and the block's tokens; writes a
             partial state of g rows;
    combine: per query head, q, its gate weights and every partial of its rows; writes O."""
    g, d, nq, nk = wl.heads // wl.kv_heads, wl.head_dim, wl.seq_q, wl.seq_k
    rows, tile, part = g * nq, plan["decode_tile"], d * 4 + 8
    n_c, sel, win = nsa_tokens(nk, nq, l, ds, ls, n, w)
    cmp = even_chunks(n_c, tile, plan["decode_cmp_splits"]) if n_c else []
    w0 = max(0, nk - nq - w + 1)
    n_win = len(even_chunks(nk - w0, tile, plan["decode_win_splits"]))
    seg_c, seg_s = l // ds, ls // ds
    bins = sum((b - 1 + seg_c - 1) // seg_s + 1 - a // seg_s for a, b in cmp)
    n_t = [min(n, (nk - nq + t) // ls + 1) for t in range(nq)]
    parts = len(cmp) + n_win
    out = {"nsa_decode_cmp_win": (parts * rows * d * E + 2 * (n_c + win) * d * E,
                                  parts * rows * part + rows * bins * 4),
           "nsa_decode_select": (len(cmp) * rows * 8 + rows * bins * 4, nq * n * 4),
           "nsa_decode_slc": (sum(n_t) * (4 + g * d * E) + 2 * sel * d * E,
                              sum(n_t) * g * part),
           "nsa_decode_combine": (g * (nq * d * E + 3 * d * E
                                       + sum(len(cmp) + x + n_win for x in n_t) * part),
                                  g * nq * d * E)}
    bg = wl.batch * wl.kv_heads
    return {k: (bg * r, bg * wr) for k, (r, wr) in out.items()}


def decode_kernel_bytes(r):
    return {k.name: (k.counts()["hbm_read_bytes"], k.counts()["hbm_write_bytes"])
            for k in r.kernels if k.name != "nsa_decode_compress"}


@pytest.mark.parametrize("nk", sorted(PAPER_TABLE))
def test_nsa_decode_loads_the_papers_tokens(nk):
    """The paper's configuration (64 query heads over 4 KV heads): the counted bytes of both
    schedules equal their closed forms, the K/V tokens are the paper's table (it rounds
    (N − l)/d + 1 to N/d), and the speedup over full attention is the paper's; the fused
    schedule reads that factor less than dense GQA decoding, the split one pays for its
    parallelism at batch 1 with partial states."""
    wl = decode_wl(nk)
    split = simulate("nsa", wl, "h100", compute=False)
    assert split.plan["decode_schedule"] == "split"           # 4 CTAs would idle 128 SMs
    assert decode_kernel_bytes(split) == split_bytes(wl, split.plan)
    fused = simulate("nsa", wl, "h100", compute=False, options={"decode_schedule": "fused"})
    assert decode_kernel_bytes(fused) == fused_bytes(wl)
    n_c, sel, win = nsa_tokens(nk)
    tokens = n_c + sel + win
    paper_tokens, paper_speedup = PAPER_TABLE[nk]
    for r in (split, fused):
        assert r.extra["nsa"]["decode"]["tokens_per_step_per_kv_group"]["total"] == tokens
        assert round(r.extra["nsa"]["decode"]["expected_speedup_over_dense"], 1) == paper_speedup
    assert abs(tokens - paper_tokens) <= 1
    assert round(nk / tokens, 1) == paper_speedup
    dense = simulate("gqa", wl, "h100", compute=False)
    assert 0.9 * paper_speedup < dense.hbm_bytes / fused.hbm_bytes < 1.1 * paper_speedup + 0.5
    assert 0.5 * paper_speedup < dense.hbm_bytes / split.hbm_bytes < dense.hbm_bytes / fused.hbm_bytes
    # the split schedule fills the SMs: its GPU time is below the fused one's at batch 1
    # (with its 5 launches against 2 it is launch-bound unless the launches are hidden,
    # e.g. by a CUDA graph, so the comparison leaves them out)
    from hwmodels.timing import TimingOptions
    gpu_only = TimingOptions(launch_overhead=False)
    assert simulate("nsa", wl, "h100", compute=False, timing=gpu_only).time.predicted_s \
        < simulate("nsa", wl, "h100", compute=False, options={"decode_schedule": "fused"},
                   timing=gpu_only).time.predicted_s


@pytest.mark.parametrize("nk,appended", [(8192, 1), (8193, 0), (8207, 0), (8208, 1), (31, 0),
                                         (32, 1)])
def test_nsa_compressed_cache_grows_every_stride(nk, appended):
    """A step compresses only the block its token completes ((N − l) mod d = 0): l raw
    tokens of K and V and the map's weights, one K̃ and Ṽ written — never all N tokens."""
    wl = decode_wl(nk, batch=2)
    r = simulate("nsa", wl, "h100", compute=False)
    names = [k.name for k in r.kernels]
    assert ("nsa_decode_compress" in names) == bool(appended)
    if appended:
        k = kernel(r, "nsa_decode_compress")
        bg, d = 2 * 4, 128
        assert k["hbm_read_bytes"] == bg * (2 * L * d * E + 2 * L * E + 2 * d * E)
        assert k["hbm_write_bytes"] == bg * 2 * d * E
    assert r.extra["nsa"]["decode"]["compressed_tokens_appended"] == appended


SMALL = {"compress_block": 16, "compress_stride": 8, "select_block": 32, "selected": 4,
         "window": 40}
SMALL_PARAMS = dict(l=16, ds=8, ls=32, n=4, w=40)


def test_nsa_several_new_tokens_and_small_sram_closed_forms():
    """Speculative steps (3 new tokens: windows overlap, per-position selections), both
    schedules, and a budget too small for the fused schedule's on-chip bins (K̃ read twice)."""
    wl = decode_wl(1000, nq=3, batch=2, heads=4, kv_heads=2, d=64)
    for schedule in ("fused", "split"):
        r = simulate("nsa", wl, "h100", compute=False,
                     options={**SMALL, "decode_schedule": schedule})
        want = (fused_bytes(wl, **SMALL_PARAMS) if schedule == "fused"
                else split_bytes(wl, r.plan, **SMALL_PARAMS))
        assert decode_kernel_bytes(r) == want
    assert not r.plan["decode_rescore"]
    big = decode_wl(65536, heads=64, kv_heads=4)
    tight = simulate("nsa", big, "h100", compute=False, sram_bytes=60 * 1024,
                     options={"decode_schedule": "fused"})
    assert tight.plan["decode_rescore"]
    assert decode_kernel_bytes(tight) == fused_bytes(big, rescore=True)


def test_nsa_decode_alu_and_conversions_closed_forms():
    """One new token (kpos = N − 1: every compressed token and window key visible, so no
    tile is masked): per group, each branch's softmax tiles of c keys spend g c row-max ops
    and g max-with-m ops per tile; the top-n 3 + (j_t + 1) n comparisons; P is converted
    before every P V product (g per token of each branch) and O before its store (g d)."""
    b, h, kv, nk, d = 2, 4, 2, 1000, 64
    wl = decode_wl(nk, batch=b, heads=h, kv_heads=kv, d=d)
    g, bg = h // kv, b * kv
    n_c = (nk - 16) // 8 + 1                          # l = 16, d_s = 8: 124 compressed tokens
    jt = (nk - 1) // 32                               # l' = 32: current block 31
    cur = nk - jt * 32                                # its 8 keys up to kpos
    sel = 3 * 32 + cur                                # n_t = 4: three full blocks + current
    win = 40
    topn = 3 + (jt + 1) * 4
    for schedule in ("fused", "split"):
        r = simulate("nsa", wl, "h100", compute=False,
                     options={**SMALL, "decode_schedule": schedule})
        t = r.plan["decode_tile"]
        tiles = -(-n_c // t) + 3 * -(-32 // t) + -(-cur // t) + -(-win // t)
        tokens = n_c + sel + win
        if schedule == "fused":
            k = kernel(r, "nsa_decode")
            assert k["alu_ops"] == bg * (g * tokens + g * tiles + topn)
            assert k["convert_ops"] == bg * (g * tokens + g * d)
            continue
        n_cmp, n_win = r.plan["decode_cmp_splits"], r.plan["decode_win_splits"]
        k = {name: kernel(r, name) for name in ("nsa_decode_cmp_win", "nsa_decode_select",
                                                 "nsa_decode_slc", "nsa_decode_combine")}
        # chunks of whole tiles: the branch's tiles do not change with the split
        cw_tiles = -(-n_c // t) + -(-win // t)
        assert k["nsa_decode_cmp_win"]["alu_ops"] == bg * g * (n_c + win + cw_tiles)
        assert k["nsa_decode_cmp_win"]["convert_ops"] == bg * g * (n_c + win)  # fp32 partials
        # the lse's max over the compressed chunks' m, then the top-n
        assert k["nsa_decode_select"]["alu_ops"] == bg * (n_cmp * g + topn)
        assert k["nsa_decode_select"]["convert_ops"] == 0
        assert k["nsa_decode_slc"]["alu_ops"] == bg * g * (sel + tiles - cw_tiles)
        assert k["nsa_decode_slc"]["convert_ops"] == bg * g * sel
        # per query head: a max over each branch's partials (n_cmp + n_t + n_win), O stored
        assert k["nsa_decode_combine"]["alu_ops"] == b * h * (n_cmp + 4 + n_win)
        assert k["nsa_decode_combine"]["convert_ops"] == b * h * d


def test_nsa_auto_schedule_fuses_when_the_grid_fills_the_gpu():
    wl = decode_wl(8192, batch=64)                       # 256 (sequence, KV group) CTAs
    assert simulate("nsa", wl, "h100", compute=False).plan["decode_schedule"] == "fused"
    with pytest.raises(Exception, match="--decode-schedule applies to a decode step"):
        simulate("nsa", Workload(seq_q=64, causal=True), "h100", compute=False,
                 options={"decode_schedule": "split"})


# ---- NSA: outputs and count-only ---------------------------------------------------------------

@pytest.mark.parametrize("nk,nq,heads,kv_heads,dtype,sram_kb,schedule", [
    (300, 1, 4, 2, "fp16", None, "split"), (777, 3, 4, 2, "fp32", None, "split"),
    (777, 3, 4, 2, "fp16", None, "fused"), (40, 2, 4, 2, "fp16", None, "split"),
    (40, 2, 4, 2, "bf16", None, "fused"),
    (3000, 1, 8, 1, "fp16", None, "split"),      # the compressed cache in several chunks
    (2000, 1, 8, 1, "bf16", 9, "fused"),         # 9 KiB: the bins do not fit, K̃ read twice
])
def test_nsa_decode_output_matches_float64(nk, nq, heads, kv_heads, dtype, sram_kb, schedule):
    """The step's output against NSA's float64 math over the whole cache (same φ, gates and
    selection); any selection difference from the float64 top-n is a near-tie."""
    wl = decode_wl(nk, nq=nq, batch=2, heads=heads, kv_heads=kv_heads, d=32, dtype=dtype)
    sram = sram_kb * 1024 if sram_kb else None
    options = {**SMALL, "decode_schedule": schedule}
    r = simulate("nsa", wl, "h100", options=options, sram_bytes=sram)
    assert r.plan["decode_schedule"] == schedule
    assert r.plan["decode_rescore"] == bool(sram_kb)
    if nk == 3000:
        assert r.plan["decode_cmp_splits"] > 2
    inputs = make_inputs(wl, 0)
    p = nsa.plan(wl, r.gpu, r.sram_budget_bytes, **{**options, "seed": 0})
    ref = nsa.reference(wl, p, inputs, attention_reference, selection=r.outputs["sel"])
    assert relative_error(r.outputs["o"], ref) < 1e-5
    diff = nsa.selection_differences(wl, p, inputs, r.outputs["sel"],
                                     float64_selection(wl, p, inputs))
    assert diff.all_near_ties
    counted = simulate("nsa", wl, "h100", options=options, sram_bytes=sram, compute=False)
    assert counted.counts == r.counts
    assert [k.name for k in counted.kernels] == [k.name for k in r.kernels]


def float64_selection(wl, p, inputs):
    """NSA's top-n from float64 scores of the same inputs."""
    return nsa.reference_selection(wl, p, np.asarray(inputs.q, np.float64),
                                   _compressed_keys(wl, p, inputs))[0]


def _compressed_keys(wl, p, inputs):
    par = nsa.weights(wl, p)
    return nsa._compress_reference(np.asarray(inputs.k, np.float64), par["wk"], par["bk"], p,
                                   p.compressed_tokens)


def test_nsa_decode_equals_the_last_row_of_prefill():
    """A decode step of the last token computes what the prefill kernels compute for that
    position (same φ, gates, selection and branches)."""
    wl = decode_wl(333, batch=1, heads=4, kv_heads=2, d=32)
    r = simulate("nsa", wl, "h100", options=SMALL)
    pre = Workload(batch=1, heads=4, kv_heads=2, seq_q=333, head_dim=32, causal=True)
    full = simulate("nsa", pre, "h100", options=SMALL, inputs=_prefix_inputs(wl, pre))
    assert (full.outputs["sel"][:, :, -1:] == r.outputs["sel"]).all()
    assert relative_error(r.outputs["o"], full.outputs["o"][:, :, -1:]) < 1e-5


def _prefix_inputs(wl, pre):
    """Prefill inputs whose last query row and whole K/V are the decode step's."""
    dec, full = make_inputs(wl, 0), make_inputs(pre, 0)
    q = np.array(full.q)
    q[:, :, -1:] = dec.q
    return Inputs(q=q, k=dec.k, v=dec.v, seed=0)


# ---- recurrent decoding of the linear family -----------------------------------------------------

def elu1(x):
    return np.where(x > 0, x + 1.0, np.exp(x))


def phi(algorithm, x, w, scale, sigma=1.0):
    """The papers' feature maps in float64: Katharopoulos et al. §3.2 (elu + 1); RFA §2
    (sin/cos of W x̂ / σ over ℓ2-normalised x, / √D); FAVOR+ Lemma 1
    (exp(W u − |u|²/2) / √m with u = x √scale, so that E[φ(q)·φ(k)] = exp(q·k scale))."""
    if algorithm == "linear":
        return elu1(x)
    if algorithm == "rfa":
        xh = x / np.linalg.norm(x, axis=-1, keepdims=True)
        proj = xh @ w.T / sigma
        return np.concatenate([np.sin(proj), np.cos(proj)], -1) / math.sqrt(w.shape[0])
    u = x * math.sqrt(scale)
    return np.exp(u @ w.T - 0.5 * (u * u).sum(-1, keepdims=True)) / math.sqrt(w.shape[0])


def recurrent_reference(algorithm, wl, inputs, w_for_head):
    """o_t = φ(q_t)ᵀ S_t / φ(q_t)ᵀ z_t with S_t, z_t summed over the cache up to position t."""
    q, k, v = (np.asarray(x, np.float64) for x in (inputs.q, inputs.k, inputs.v))
    g = wl.heads // wl.kv_heads
    out = np.zeros(q.shape)
    for b in range(wl.batch):
        for h in range(wl.heads):
            w = w_for_head(b, h)
            fk = phi(algorithm, k[b, h // g], w, wl.scale)
            for t in range(wl.seq_q):
                end = wl.seq_k - wl.seq_q + t + 1                # causal: keys [0, end)
                s = fk[:end].T @ v[b, h // g, :end]
                z = fk[:end].sum(0)
                fq = phi(algorithm, q[b, h, t], w, wl.scale)
                out[b, h, t] = (fq @ s) / (fq @ z)
    return out


def projections(algorithm, wl, plan_dict, options):
    if algorithm == "linear":
        return lambda b, h: None
    p = (rfa.RFAPlan if algorithm == "rfa" else performer.PerformerPlan)(**plan_dict)
    if algorithm == "rfa":
        w = rfa.projection(p, wl.head_dim, options.get("seed", 0))
        return lambda b, h: np.asarray(w, np.float64)
    fn = performer.projection_fn(p, wl.head_dim, options.get("seed", 0))
    return lambda b, h: np.asarray(fn(b, h), np.float64)


CASES = [("linear", {}), ("rfa", {"seed": 3}), ("performer", {"seed": 3}),
         ("performer", {"seed": 5, "redraw": "head"}), ("performer", {"seed": 1, "features": 300})]
SHAPES = [(129, 1, 32), (64, 3, 40), (1, 1, 16)]


@pytest.mark.parametrize("algorithm,options,nk,nq,d", [
    *((a, o, *s) for a, o in CASES for s in SHAPES),
    ("linear", {}, 300, 1, 128), ("rfa", {"seed": 3}, 300, 1, 128),
    ("performer", {"seed": 3}, 300, 2, 128),      # m = 621: the state streams in slices
])
def test_recurrent_step_equals_the_full_cache_computation(algorithm, options, nk, nq, d):
    wl = decode_wl(nk, nq=nq, batch=2, heads=4, kv_heads=2, d=d, dtype="fp32")
    r = simulate(algorithm, wl, "h100", options=options)
    if algorithm == "linear" and d == 128:
        assert r.plan["decode_col_splits"] > 1          # the state's columns over CTAs
    ref = recurrent_reference(algorithm, wl, make_inputs(wl, 0),
                              projections(algorithm, wl, r.plan, options))
    assert relative_error(r.outputs["o"], ref) < 2e-5
    counted = simulate(algorithm, wl, "h100", options=options, compute=False)
    assert counted.counts == r.counts


def recurrent_bytes(wl, m, p, positive, states, splits):
    """Per step and state head, over its ``splits`` column CTAs: each reads the queries
    sharing the state, the new keys, W, z (m fp32) and the shift (positive features), since
    φ and the denominators need every feature; between them they read the new values and the
    state S (m x d fp32) once and write S and O once; the first writes z and the shift."""
    d, nq = wl.head_dim, wl.seq_q
    g = wl.heads // states
    shift = 4 if positive else 0
    per_cta = g * nq * d * E + nq * d * E + p * d * E + 4 * m + shift
    reads = splits * per_cta + nq * d * E + 4 * m * d
    writes = 4 * m * d + 4 * m + shift + g * nq * d * E
    return wl.batch * states * reads, wl.batch * states * writes


@pytest.mark.parametrize("algorithm,options,m,p,positive,per_query_head", [
    ("linear", {}, 128, 0, False, False),
    ("rfa", {}, 256, 128, False, False),
    ("performer", {}, round(128 * math.log(128)), round(128 * math.log(128)), True, False),
    ("performer", {"redraw": "head", "features": 256}, 256, 256, True, True),
])
def test_recurrent_bytes_per_step_are_constant_in_n(algorithm, options, m, p, positive,
                                                    per_query_head):
    seqs = [1024, 8192, 65536, 1 << 20]
    totals = []
    for n in seqs:
        wl = decode_wl(n, batch=2, heads=32, kv_heads=8)
        r = simulate(algorithm, wl, "h100", compute=False, options=options)
        states = wl.heads if per_query_head else wl.kv_heads
        splits = r.plan["decode_col_splits"]
        assert r.kernels[0].ctas == wl.batch * states * splits
        assert (r.counts["hbm_read_bytes"], r.counts["hbm_write_bytes"]) == \
            recurrent_bytes(wl, m, p, positive, states, splits)
        kv = r.extra["kv_cache"]
        assert kv["state_bytes_per_head"] == 4 * (m * 128 + m) + (4 if positive else 0)
        assert kv["bytes_total"] == kv["state_bytes_per_head"] * states * 2
        assert kv["bytes_per_token"] == 0 and not kv["grows_with_context"]
        totals.append(r.hbm_bytes)
    exponent = float(np.polyfit(np.log(seqs), np.log(totals), 1)[0])
    assert abs(exponent) < 1e-9
    dense = simulate("gqa", decode_wl(65536, heads=32, kv_heads=8), "h100", compute=False)
    assert totals[2] / 2 < dense.hbm_bytes / 10          # far below reading a 64K cache


def test_recurrent_decoding_of_several_tokens_is_causal_only():
    wl = Workload(batch=1, heads=2, seq_q=3, seq_k=50, head_dim=16, causal=False, decode=True)
    with pytest.raises(Exception, match="recurrent decoding is causal"):
        simulate("linear", wl, "h100", compute=False)
    with pytest.raises(Exception, match="use --new-tokens <= --seq"):
        simulate("rfa", wl.replace(seq_q=51, causal=True), "h100", compute=False)


# ---- the JSON ---------------------------------------------------------------------------------

def run_json(capsys, *args):
    assert main(list(args)) == 0
    return json.loads(capsys.readouterr().out)


def test_json_has_the_state_and_the_compressed_cache(capsys):
    d = run_json(capsys, "run", "linear", "--decode", "--seq", "65536", "--heads", "8",
                 "--head-dim", "64", "--count-only", "--format", "json")
    assert d["kv_cache"]["state_bytes_per_head"] == 4 * (64 * 64 + 64)
    assert d["kv_cache"]["bytes_total"] == 8 * 4 * (64 * 64 + 64)
    assert d["decode"]["attention_only_s"] > 0
    d = run_json(capsys, "run", "nsa", "--decode", "--seq", "8192", "--heads", "64",
                 "--kv-heads", "4", "--head-dim", "128", "--count-only", "--format", "json")
    assert d["nsa"]["decode"]["tokens_per_step_per_kv_group"] == {
        "compressed": 511, "selected": 1024, "window": 512, "total": 2047}
    assert d["kv_cache"]["compressed_bytes_total"] == 2 * 4 * 128 * 2 * 511
    assert d["kv_cache"]["resident_bytes_total"] == \
        d["kv_cache"]["bytes_total"] + d["kv_cache"]["compressed_bytes_total"]


def test_report_section_has_the_papers_table_and_every_path():
    from hwmodels import get_gpu
    from reports.decode import NSA_PAPER_TABLE, PATH_ALGORITHMS, decode_paths_section
    section, data = decode_paths_section(get_gpu("h100"), Workload())
    assert [t.key for t in section.tables] == ["nsa_decode", "decode_paths"]
    for rec in data["nsa"]:
        paper_tokens, paper_speedup = NSA_PAPER_TABLE[rec["context"]]
        assert abs(rec["total"] - paper_tokens) <= 1
        assert round(rec["speedup"], 1) == paper_speedup
        assert rec["split_hbm_bytes"] < rec["dense_hbm_bytes"]
        assert rec["fused_hbm_bytes"] < rec["split_hbm_bytes"]
    paths = {rec["algorithm"]: rec for rec in data["paths"]}
    assert list(paths) == list(PATH_ALGORITHMS)
    for name in ("linear", "rfa", "performer"):
        assert paths[name]["growth_exponent"] == 0.0
    assert paths["gqa"]["growth_exponent"] > 0.9
    assert paths["nsa"]["hbm_bytes"][-1] < paths["gqa"]["hbm_bytes"][-1] / 10


def test_nsa_prefill_prices_the_shared_selected_blocks_as_l2_hits():
    """At 64K the K/V of one KV group (32 MiB) exceeds the usable L2, but the positions in
    flight share their selected blocks: the declared working set is those blocks, it fits,
    and nsa_slc's DRAM traffic is its compulsory traffic (the counts do not change)."""
    from hwmodels.timing import L2_USABLE_FRACTION, TimingOptions, dram_bytes
    wl = Workload(batch=1, heads=64, kv_heads=4, seq_q=65536, head_dim=128, causal=True)
    r = simulate("nsa", wl, "h100", compute=False)
    k = next(k for k in r.kernels if k.name == "nsa_slc")
    group_kv = 2 * 65536 * 128 * E
    assert k.l2_working_set_bytes < group_kv
    assert k.l2_working_set_bytes <= L2_USABLE_FRACTION * r.gpu.l2_bytes
    assert dram_bytes(r.gpu, k) == k.unique_hbm_bytes
    off = simulate("nsa", wl, "h100", compute=False, timing=TimingOptions(l2_cache=False))
    assert off.counts == r.counts and off.time.predicted_s > 1.2 * r.time.predicted_s
