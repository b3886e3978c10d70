"""Differential attention: its own float64 math, the fused kernel's closed form, its errors."""
import numpy as np
import pytest

from algorithms.base import PlanError
from algorithms.diff import lambda_init
from attnsim import Workload, make_inputs, simulate
from shapes import RAGGED_SHAPES

cdiv = lambda a, b: -(-a // b)  # noqa: E731


@pytest.mark.parametrize("shape", RAGGED_SHAPES[:2])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("layer", [1, 12])
def test_matches_the_papers_equations(shape, causal, layer):
    b, h, nq, nk, d = shape
    wl = Workload(batch=b, heads=h, seq_q=nq, seq_k=nk, head_dim=2 * (d // 2), causal=causal)
    opts = {"layer": layer, "seed": 3}
    r = simulate("diff", wl, "h100", sram_bytes=48 * 1024, options=opts, inputs=make_inputs(wl, 5))
    assert r.error_vs_reference < 1e-4 and r.error_vs_exact is None
    counted = simulate("diff", wl, "h100", sram_bytes=48 * 1024, options=opts, compute=False)
    assert counted.counts == r.counts


def test_lambda_init_follows_the_paper():
    assert lambda_init(1) == pytest.approx(0.2)
    assert lambda_init(1000) == pytest.approx(0.8)
    assert lambda_init(2) == pytest.approx(0.8 - 0.6 * np.exp(-0.3))


def test_closed_form_non_causal():
    b, h, n, d2, e = 2, 3, 500, 64, 2
    wl = Workload(batch=b, heads=h, seq_q=n, head_dim=d2)
    r = simulate("diff", wl, "h100", compute=False)
    tr = cdiv(n, r.plan["block_q"])
    assert r.counts["hbm_read_bytes"] == b * h * (n * d2 * e + tr * 2 * n * d2 * e)
    assert r.counts["hbm_write_bytes"] == b * h * n * d2 * e
    # two d-wide score maps and two 2d-wide P V products: 12 N² d with d = d2 / 2
    assert r.counts["matmul_flops"] == b * h * 12 * n * n * (d2 // 2)


def test_costs_more_than_one_softmax_map_but_less_than_two_calls():
    wl = Workload(batch=2, heads=8, seq_q=4096, head_dim=128)
    diff = simulate("diff", wl, "h100", compute=False)
    one = simulate("flash2", wl, "h100", compute=False)
    assert diff.counts["matmul_flops"] == pytest.approx(1.5 * one.counts["matmul_flops"])
    assert diff.time.predicted_s > one.time.predicted_s


def test_bad_parameters():
    with pytest.raises(PlanError, match="must be even"):
        simulate("diff", Workload(seq_q=64, head_dim=63), "h100", compute=False)
    with pytest.raises(PlanError, match="--layer must be at least 1"):
        simulate("diff", Workload(seq_q=64, head_dim=64), "h100", compute=False,
                 options={"layer": 0})
