"""Exact forward algorithms (standard, flash1, flash2) against the float64 reference."""
import numpy as np
import pytest

from attnsim import Workload, attention_reference, make_inputs, simulate
from shapes import EXACT_FORWARD, EXACT_TOL, LARGE_LOGIT_TOL, RAGGED_SHAPES, rel_err

# A small SRAM budget forces several blocks in every direction even at these sizes.
SMALL_SRAM = 24 * 1024


@pytest.mark.parametrize("algorithm", EXACT_FORWARD)
@pytest.mark.parametrize("shape", RAGGED_SHAPES)
@pytest.mark.parametrize("causal", [False, True])
def test_matches_float64_reference(algorithm, shape, causal):
    b, h, nq, nk, d = shape
    wl = Workload(batch=b, heads=h, seq_q=nq, seq_k=nk, head_dim=d, causal=causal)
    inputs = make_inputs(wl, seed=1)
    r = simulate(algorithm, wl, "h100", sram_bytes=SMALL_SRAM, inputs=inputs)
    ref, lse_ref = attention_reference(inputs.q, inputs.k, inputs.v, causal=causal)
    assert rel_err(r.outputs["o"], ref) < EXACT_TOL
    assert r.error_vs_reference < EXACT_TOL
    if "lse" in r.outputs:
        finite = np.isfinite(lse_ref)
        np.testing.assert_allclose(r.outputs["lse"][finite], lse_ref[finite], rtol=1e-5, atol=1e-4)
        assert np.all(np.isneginf(r.outputs["lse"][~finite]))


@pytest.mark.parametrize("algorithm", EXACT_FORWARD)
def test_large_logits_do_not_overflow(algorithm):
    """Logits of magnitude ~1e3: a naive exp() overflows; the online softmax must not."""
    wl = Workload(batch=1, heads=2, seq_q=150, head_dim=64, causal=True)
    inputs = make_inputs(wl, seed=2, magnitude=20.0)      # |q·k|/sqrt(d) reaches ~1e3
    logits = np.einsum("bhid,bhjd->bhij", inputs.q, inputs.k) / 8.0
    assert np.abs(logits).max() > 1e3
    r = simulate(algorithm, wl, "h100", sram_bytes=SMALL_SRAM, inputs=inputs)
    assert np.all(np.isfinite(r.outputs["o"]))
    assert r.error_vs_reference < LARGE_LOGIT_TOL


@pytest.mark.parametrize("algorithm", EXACT_FORWARD)
def test_rows_without_visible_keys_give_zero(algorithm):
    """Causal with seq_q > seq_k (bottom-right aligned): the first rows see no key."""
    wl = Workload(batch=1, heads=1, seq_q=70, seq_k=30, head_dim=32, causal=True)
    inputs = make_inputs(wl, seed=3)
    r = simulate(algorithm, wl, "h100", sram_bytes=SMALL_SRAM, inputs=inputs)
    assert np.all(r.outputs["o"][0, 0, :40] == 0)
    assert r.error_vs_reference < EXACT_TOL


@pytest.mark.parametrize("algorithm", EXACT_FORWARD)
@pytest.mark.parametrize("causal", [False, True])
def test_count_only_equals_executed(algorithm, causal):
    wl = Workload(batch=2, heads=3, kv_heads=1, seq_q=211, seq_k=173, head_dim=48, causal=causal)
    executed = simulate(algorithm, wl, "a100", sram_bytes=SMALL_SRAM)
    counted = simulate(algorithm, wl, "a100", sram_bytes=SMALL_SRAM, compute=False)
    assert counted.counts == executed.counts
    assert counted.outputs == {}
    assert counted.time.predicted_s == executed.time.predicted_s


@pytest.mark.parametrize("algorithm", EXACT_FORWARD)
def test_gqa_heads_share_kv(algorithm):
    wl = Workload(batch=1, heads=4, kv_heads=2, seq_q=90, head_dim=32)
    inputs = make_inputs(wl, seed=4)
    r = simulate(algorithm, wl, "h100", sram_bytes=SMALL_SRAM, inputs=inputs)
    assert r.error_vs_reference < EXACT_TOL


def test_algorithms_agree_with_each_other():
    wl = Workload(batch=1, heads=2, seq_q=300, head_dim=64, causal=True)
    inputs = make_inputs(wl, seed=5)
    outs = [simulate(a, wl, "h100", inputs=inputs).outputs["o"] for a in EXACT_FORWARD]
    for o in outs[1:]:
        np.testing.assert_allclose(o, outs[0], rtol=1e-4, atol=1e-5)
