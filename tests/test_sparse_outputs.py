"""Executed outputs of the sparse algorithms against the float64 reference with the same mask.

The reference is attnsim.reference.attention_reference(mask=...) with the papers' masks
written independently in tests/_sparse_helpers.py (BigBird and block_sparse: the block mask
the algorithm reports, expanded). Tolerance rule: fp32 computation of fp16-sized problems,
relative Frobenius error below 1e-5 (the dense flash2 kernel reaches ~2e-7 here).
"""
import numpy as np
import pytest

from _sparse_helpers import paper_mask
from attnsim import Workload, attention_reference, make_inputs, relative_error, simulate

TOL = 1e-5

SHAPES = [  # batch, heads, kv_heads, seq_q, seq_k, head_dim
    (1, 2, 2, 97, 97, 40),
    (2, 2, 1, 150, 233, 32),
    (1, 1, 1, 203, 131, 24),        # more queries than keys: bottom-right alignment
]

ELEMENT_CASES = [  # algorithm, options, paper_mask name
    ("local", {"window": 33}, "local"),
    ("local", {"window": 5000}, "local"),                    # window larger than N: dense
    ("longformer", {"window": 20, "global_tokens": 5}, "longformer"),
    ("sparse_transformer", {"stride": 11}, "strided"),
    ("sparse_transformer", {"stride": 16, "pattern": "fixed", "summary": 3}, "fixed"),
]


def _check(alg, wl, options, mask, magnitude=1.0):
    inputs = make_inputs(wl, seed=1, magnitude=magnitude)
    r = simulate(alg, wl, "h100", options=options, inputs=inputs, sram_bytes=48 * 1024)
    ref, ref_lse = attention_reference(inputs.q, inputs.k, inputs.v, causal=wl.causal,
                                       scale=wl.scale, mask=mask)
    assert relative_error(r.outputs["o"], ref) < TOL
    np.testing.assert_allclose(r.outputs["lse"], ref_lse, rtol=1e-5, atol=1e-4)
    assert r.error_vs_reference < TOL                       # the harness uses rec.info["mask"]
    return r


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("alg,options,pname", ELEMENT_CASES)
def test_element_patterns_match_masked_reference(shape, causal, alg, options, pname):
    b, h, g, nq, nk, d = shape
    wl = Workload(batch=b, heads=h, kv_heads=g, seq_q=nq, seq_k=nk, head_dim=d, causal=causal)
    popts = {k: v for k, v in options.items() if k != "pattern"}
    mask = paper_mask(pname, nq, nk, causal, **popts)
    r = _check(alg, wl, options, mask)
    assert r.extra["pattern"]["density"] == mask.sum() / (nq * nk)
    np.testing.assert_array_equal(r.extra["mask"], mask)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("alg,options", [
    ("bigbird", {"block": 16, "window_blocks": 3, "global_blocks": 2, "random_blocks": 2}),
    ("bigbird", {"block": 24, "window_blocks": 1, "global_blocks": 3, "random_blocks": 1}),
    ("block_sparse", {"block": 32, "density": 0.3, "seed": 4}),
    ("block_sparse", {"block": 16, "density": 1.0}),
])
def test_block_patterns_match_masked_reference(causal, alg, options):
    wl = Workload(batch=1, heads=2, seq_q=181, head_dim=32, causal=causal)
    b, n = options["block"], 181
    t = -(-n // b)
    r = simulate(alg, wl, "h100", options=options)
    mask = r.extra["mask"]
    # the element mask is the block mask expanded (constant on every b x b block) ∧ causal
    padded = np.zeros((t * b, t * b), dtype=bool)
    padded[:n, :n] = mask
    blocks = padded.reshape(t, b, t, b).any(axis=(1, 3))
    expanded = np.repeat(np.repeat(blocks, b, 0), b, 1)[:n, :n]
    if causal:
        expanded &= paper_mask("local", n, n, True, window=10**6)
    np.testing.assert_array_equal(mask, expanded)
    _check(alg, wl, options, mask)
    assert r.extra["pattern"]["density"] == mask.mean()


def test_large_magnitude_logits():
    wl = Workload(heads=2, seq_q=150, head_dim=32, causal=True)
    _check("longformer", wl, {"window": 30, "global_tokens": 4},
           paper_mask("longformer", 150, 150, True, window=30, global_tokens=4), magnitude=30.0)


def test_row_attending_only_global_tokens(tmp_path):
    """Block row 1 keeps only key block 0 (the "global" block): its queries see only it."""
    bm = np.eye(4, dtype=bool)
    bm[1] = [True, False, False, False]
    path = tmp_path / "mask.npy"
    np.save(path, bm)
    wl = Workload(heads=1, seq_q=100, head_dim=16)          # 4 blocks of 32, last ragged
    r = simulate("block_sparse", wl, "h100", options={"block": 32, "mask_file": str(path)})
    assert r.extra["mask"][32:64].sum(axis=1).tolist() == [32] * 32
    assert r.error_vs_reference < TOL
    # BigBird without window or random blocks: non-global rows see only the global blocks
    wl = Workload(heads=1, seq_q=130, head_dim=16)
    opts = {"block": 16, "window_blocks": 0, "global_blocks": 2, "random_blocks": 0}
    r = simulate("bigbird", wl, "h100", options=opts)
    m = r.extra["mask"]
    assert m[16:112, 16:128].sum() == 0 and m[16:112, :16].all() and m[16:112, 128:].all()
    assert r.error_vs_reference < TOL


def test_rows_with_no_key_give_zero_output():
    """Causal with N_q > N_k: the first N_q - N_k rows see no key (flash-attn convention)."""
    wl = Workload(heads=1, seq_q=90, seq_k=40, head_dim=16, causal=True)
    r = simulate("local", wl, "h100", options={"window": 8})
    assert np.all(r.outputs["o"][0, 0, :50] == 0)
    assert np.all(np.isneginf(r.outputs["lse"][0, 0, :50]))
    assert r.error_vs_reference < TOL


@pytest.mark.parametrize("alg,options", [
    ("local", {"window": 40}), ("longformer", {"window": 30, "global_tokens": 2}),
    ("sparse_transformer", {"stride": 13}),
    ("sparse_transformer", {"pattern": "fixed", "stride": 20, "summary": 5}),
    ("bigbird", {"block": 16}), ("block_sparse", {"block": 32, "density": 0.4}),
    ("masked_dense", {"mask_of": "longformer", "window": 30, "global_tokens": 2}),
])
@pytest.mark.parametrize("causal", [False, True])
def test_count_only_counts_equal_executed_counts(alg, options, causal):
    wl = Workload(batch=2, heads=2, seq_q=201, head_dim=32, causal=causal)
    executed = simulate(alg, wl, "h100", options=options)
    counted = simulate(alg, wl, "h100", options=options, compute=False)
    assert executed.counts == counted.counts
    assert counted.extra["pattern"] == executed.extra["pattern"]
    assert "mask" not in counted.extra
