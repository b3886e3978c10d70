"""Multi-head Latent Attention against the paper's equations, written here from DeepSeek-AI
2024 (arXiv 2405.04434), §2.1.2–2.1.3, sharing no code with algorithms/mla.py. Taken from the
module: only the model's parameters and cache (``mla.mla_inputs``: c_KV, k^R, q^R, W^UK,
W^UV; q^C is the workload's q).

    k^C_{j,h} = W^UK_h c^KV_j,   v^C_{j,h} = W^UV_h c^KV_j                 (Eqs. 10–11)
    q_{t,h} = [q^C_{t,h} ; q^R_{t,h}],   k_{j,h} = [k^C_{j,h} ; k^R_j]     (Eqs. 16–17)
    o_{t,h} = Σ_j softmax_j(q_{t,h}ᵀ k_{j,h} / √(d_h + d_h^R)) v^C_{j,h}     (Eq. 18)

k^R_j is one RoPE key shared by every head (Eq. 14). Decoding N_q new tokens after a cache of
N_k − N_q: query t sees keys j <= t + N_k − N_q when causal.
"""
import numpy as np
import pytest

from algorithms import mla
from attnsim import Workload, make_inputs, simulate
from hwmodels import get_gpu
from shapes import EXACT_TOL, rel_err

H100 = get_gpu("h100")


def paper_mla(x, causal):
    """(B, H, N_q, d_h) float64, one head and one query at a time (Eqs. 10–18)."""
    q_c, q_r = np.asarray(x["q_nope"], np.float64), np.asarray(x["q_rope"], np.float64)
    c_kv, k_r = np.asarray(x["c_kv"], np.float64), np.asarray(x["k_rope"], np.float64)
    w_uk, w_uv = np.asarray(x["w_uk"], np.float64), np.asarray(x["w_uv"], np.float64)
    batch, heads, n_q, d_h = q_c.shape
    n_k, d_r = c_kv.shape[1], k_r.shape[-1]
    out = np.zeros((batch, heads, n_q, d_h))
    for b in range(batch):
        for h in range(heads):
            keys = np.array([np.concatenate([w_uk[h] @ c_kv[b, j], k_r[b, j]]) for j in range(n_k)])
            values = np.array([w_uv[h] @ c_kv[b, j] for j in range(n_k)])
            for t in range(n_q):
                seen = t + n_k - n_q + 1 if causal else n_k
                query = np.concatenate([q_c[b, h, t], q_r[b, h, t]])
                logits = keys[:seen] @ query / np.sqrt(d_h + d_r)
                weights = np.exp(logits - logits.max())
                out[b, h, t] = weights @ values[:seen] / weights.sum()
    return out


CASES = [
    # (batch, heads, new tokens, cached tokens, d_h, causal), options
    ((2, 4, 1, 301, 32, False), {}),
    ((1, 8, 3, 257, 64, True), {"kv_lora_rank": 128, "rope_dim": 32}),
    ((1, 16, 2, 150, 64, True), {"kv_lora_rank": 256, "rope_dim": 64, "splits": 2}),
    ((2, 2, 5, 90, 40, True), {"kv_lora_rank": 64, "rope_dim": 16}),
]


@pytest.mark.parametrize("path", mla.PATHS)
@pytest.mark.parametrize("shape, options", CASES)
def test_both_paths_match_the_papers_equations_written_here(shape, options, path):
    b, h, nq, nk, d, causal = shape
    wl = Workload(batch=b, heads=h, seq_q=nq, seq_k=nk, head_dim=d, causal=causal, decode=True)
    inputs = make_inputs(wl, seed=5)
    opts = {**options, "path": path}
    r = simulate("mla", wl, H100, inputs=inputs, options=opts)
    plan = mla.plan(wl, H100, H100.smem_bytes_per_block, **opts)
    assert plan.scale == 1 / np.sqrt(d + plan.rope_dim)            # Eq. 18's √(d_h + d_h^R)
    paper = paper_mla(mla.mla_inputs(wl, plan, inputs), causal)
    assert rel_err(r.outputs["o_mla"], paper) < EXACT_TOL
