"""Native Sparse Attention against the paper's equations, written here from Yuan et al. 2025
(arXiv 2502.11089), Section 3.3, one query position at a time — sharing no code with
algorithms/nsa.py or its kernels. The only things taken from the module are the model's
parameters (``nsa.weights``: the compression map φ, which the module defines as the linear
map wᵀX + b standing in for the paper's learnable MLP, and the gate projections).

The equations, for the query at key position t (bottom-right causal alignment):
    Eq. 7   K̃_i = φ(k[i d_s : i d_s + l]) for the blocks complete by t (i d_s + l <= t + 1)
    Eq. 8   p_cmp = softmax(q K̃ᵀ · scale), o_cmp = p_cmp Ṽ
    Eq. 9   p_slc[j] = Σ_{m < l'/d_s} Σ_{n < l/d_s} p_cmp[(l'/d_s) j + m − n], with 0-based
            indices: compressed token i covers the stride segments i … i + l/d_s − 1 and
            selection block j the segments j l'/d_s … (j + 1) l'/d_s − 1, so each (m, n)
            term is one segment the two share
    Eq. 10  summed over the query heads of a KV group (the group shares the selection)
    Eq. 11  the top-n blocks of 0..⌊t/l'⌋, the initial block and the 2 local ones always in
    o_slc   attention over the tokens of the selected blocks up to t
    o_win   attention over the last w tokens (t − w, t]
    Eq. 5   o = g_cmp o_cmp + g_slc o_slc + g_win o_win, g_c = sigmoid(q · W_c)
"""
import numpy as np
import pytest

from algorithms import nsa
from attnsim import Workload, make_inputs, simulate
from hwmodels import get_gpu
from shapes import EXACT_TOL, rel_err

GPU = get_gpu("h100")
# small blocks so that the selection really chooses at these sizes
SMALL = {"compress_block": 16, "compress_stride": 8, "select_block": 32, "selected": 4,
         "window": 40}
OPTIONS = [SMALL, {"selected": 3, "window": 7, "seed": 4},
           {"compress_block": 32, "compress_stride": 8, "select_block": 16, "selected": 5,
            "window": 24, "seed": 2}]
SHAPES = [
    # batch, heads, kv_heads, seq_q, seq_k, head_dim
    (1, 2, 1, 300, 300, 32),       # a GQA group of 2 shares one selection
    (2, 3, 3, 97, 161, 40),        # N_q < N_k: a chunk after a prefix
    (1, 4, 2, 257, 129, 59),       # N_q > N_k: the first 128 queries see no key
]


def softmax_attend(q, keys, values, scale):
    """softmax(scale q keysᵀ) values for one query; no key: zeros."""
    if len(keys) == 0:
        return np.zeros(values.shape[-1]), np.zeros(0)
    logits = scale * (keys @ q)
    weights = np.exp(logits - logits.max())
    weights /= weights.sum()
    return weights @ values, weights


def paper_nsa(q, k, v, params, opts, scale):
    """(B, H, N_q, d) output and (B, G, N_q, n) selected blocks (ascending, −1 padded)."""
    l, ds = opts.get("compress_block", 32), opts.get("compress_stride", 16)
    ls, n, w = opts.get("select_block", 64), opts.get("selected", 16), opts.get("window", 512)
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    batch, heads, n_q, d = q.shape
    kv_heads, n_k = k.shape[1], k.shape[2]
    group = heads // kv_heads
    wk, wv, bk, bv = (np.asarray(params[x], np.float64) for x in ("wk", "wv", "bk", "bv"))
    w_gate = np.asarray(params["wg"], np.float64)                     # (H, 3, d)
    n_c = (n_k - l) // ds + 1 if n_k >= l else 0
    out = np.zeros(q.shape)
    selection = np.full((batch, kv_heads, n_q, n), -1)
    for b in range(batch):
        for kv in range(kv_heads):
            # Eq. 7: every block of l tokens at stride d_s, through φ
            kc = np.array([wk @ k[b, kv, i * ds:i * ds + l] + bk for i in range(n_c)])
            vc = np.array([wv @ v[b, kv, i * ds:i * ds + l] + bv for i in range(n_c)])
            for row in range(n_q):
                t = row + n_k - n_q
                if t < 0:
                    continue                                    # no key: the output is 0
                seen = sum(1 for i in range(n_c) if i * ds + l <= t + 1)
                qs = [q[b, h, row] for h in range(kv * group, (kv + 1) * group)]
                cmp = [softmax_attend(x, kc[:seen], vc[:seen], scale) for x in qs]  # Eq. 8
                last = t // ls
                score = np.zeros(last + 1)
                for j in range(last + 1):                       # Eqs. 9 and 10
                    for _, p_cmp in cmp:
                        score[j] += sum(p_cmp[i] for m in range(ls // ds)
                                        for nn in range(l // ds)
                                        if 0 <= (i := (ls // ds) * j + m - nn) < seen)
                forced = {0, last, last - 1} & set(range(last + 1))         # Eq. 11
                rest = sorted(set(range(last + 1)) - forced, key=lambda j: (-score[j], j))
                chosen = sorted(forced | set(rest[:n - len(forced)]))
                selection[b, kv, row, :len(chosen)] = chosen
                slc_keys = [j for blk in chosen for j in range(blk * ls, min(blk * ls + ls, t + 1))]
                win_keys = list(range(max(0, t - w + 1), t + 1))
                for x, h, (o_cmp, _) in zip(qs, range(kv * group, (kv + 1) * group), cmp):
                    o_slc, _ = softmax_attend(x, k[b, kv, slc_keys], v[b, kv, slc_keys], scale)
                    o_win, _ = softmax_attend(x, k[b, kv, win_keys], v[b, kv, win_keys], scale)
                    g_cmp, g_slc, g_win = 1.0 / (1.0 + np.exp(-(w_gate[h] @ x)))   # Eq. 5
                    out[b, h, row] = g_cmp * o_cmp + g_slc * o_slc + g_win * o_win
    return out, selection


# float32 kernels against this float64 reference: 1.4e-7 to 1.9e-7 measured (the selections
# agree exactly on these inputs)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("options", OPTIONS)
def test_matches_the_papers_equations_written_here(shape, options):
    b, h, g, nq, nk, d = shape
    wl = Workload(batch=b, heads=h, kv_heads=g, seq_q=nq, seq_k=nk, head_dim=d, causal=True)
    inputs = make_inputs(wl, 1)
    r = simulate("nsa", wl, "h100", options=options, inputs=inputs)
    params = nsa.weights(wl, nsa.plan(wl, GPU, GPU.smem_bytes_per_block, **options))
    paper, selection = paper_nsa(inputs.q, inputs.k, inputs.v, params, options, wl.scale)
    assert np.array_equal(r.outputs["sel"], selection)
    assert rel_err(r.outputs["o"], paper) < EXACT_TOL

