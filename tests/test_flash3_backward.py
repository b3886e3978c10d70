"""FlashAttention-3's backward (algorithms/flash3/backward.py): the release's program.

Gradients against the float64 reference (ragged sizes spanning several tiles, causal and
not, large-magnitude logits), the release's tiles, counted traffic and FLOPs against closed
forms derived here from the shapes and those tiles, count-only == executed, the IO bound's
exponent over N, what the timing model is told of the kernel, and the refusals (head dims
and dtypes the release has no backward for).
"""
import math

import numpy as np
import pytest

from algorithms.base import PlanError
from attnsim.inputs import make_inputs
from attnsim.reference import attention_backward_reference, relative_error
from attnsim.simulate import simulate
from attnsim.workload import Workload
from hwmodels.memory import SramOverflowError
# FlashAttention-2's backward counts in closed form, on given tiles
from test_backward import assert_backward_closed_form, fa2_backward_closed_form

GPU = "h100"


# ---- numerics ---------------------------------------------------------------------------------

@pytest.mark.parametrize("seq_q,seq_k,d,causal,magnitude", [
    (300, 263, 64, False, 1.0),     # 3 x 3 tiles of the d = 64 kernel's 128 x 128, ragged
    (300, 263, 64, True, 1.0),
    (270, 150, 40, True, 1.0),      # N_q > N_k: rows that see no key
    (200, 330, 96, False, 1.0),     # d = 96 runs the d = 128 kernel's 64 x 128
    (150, 150, 128, True, 8.0),     # large-magnitude logits
])
def test_gradients_match_reference(seq_q, seq_k, d, causal, magnitude):
    wl = Workload(batch=1, heads=2, seq_q=seq_q, seq_k=seq_k, head_dim=d, causal=causal,
                  passes="fwd+bwd")
    inputs = make_inputs(wl, seed=7, magnitude=magnitude)
    r = simulate("flash3", wl, GPU, inputs=inputs)
    assert set(r.outputs) >= {"o", "dq", "dk", "dv"}
    # float32 rounding of S = scale·Q Kᵀ is about ε|S|, and |S| grows as magnitude²; measured:
    # 3.3e-7 to 4.8e-7 at magnitude 1, 1.05e-5 at magnitude 8
    assert r.error_vs_reference < 1e-6 * max(1.0, magnitude ** 2 / 3)
    dq, dk, dv = attention_backward_reference(inputs.q, inputs.k, inputs.v, inputs.do,
                                              causal=causal, scale=wl.scale)
    for got, want in ((r.outputs["dq"], dq), (r.outputs["dk"], dk), (r.outputs["dv"], dv)):
        assert relative_error(got, want) <= r.error_vs_reference


def test_bwd_alone_returns_the_gradients_of_flash2():
    """The same math on other tiles: the gradients agree with FlashAttention-2's to float32
    rounding."""
    wl = Workload(batch=1, heads=2, seq_q=190, seq_k=190, head_dim=64, passes="bwd")
    inputs = make_inputs(wl, seed=3)
    fa3 = simulate("flash3", wl, GPU, inputs=inputs)
    fa2 = simulate("flash2", wl, GPU, inputs=inputs)
    assert set(fa3.outputs) == {"dq", "dk", "dv"}
    for key in ("dq", "dk", "dv"):
        assert relative_error(fa3.outputs[key], fa2.outputs[key]) < 1e-6


# ---- the release's tiles ----------------------------------------------------------------------

@pytest.mark.parametrize("d,tiles,smem_kib", [(64, (128, 128), 161), (32, (128, 128), 97),
                                              (128, (64, 128), 177), (80, (64, 128), 117)])
def test_plan_takes_the_release_tiles(d, tiles, smem_kib):
    """run_mha_bwd_hdim64: 128 x 128; hdim128: 64 x 128 (a head dim takes the tiles of the
    next kernel up). Shared memory: two stages of Q_i and dO_i, K_j, V_j, dS_ij, the fp32
    dQ_i and 2 x 128 fp32 of lse and D, at the workload's head dim."""
    r = simulate("flash3", Workload(seq_q=512, head_dim=d, passes="bwd"), GPU, compute=False)
    bwd = r.plan["bwd"]
    assert (bwd["block_q"], bwd["block_k"]) == tiles
    bq, bk = tiles
    assert bwd["smem_bytes"] == 4 * bq * d * 2 + 2 * bk * d * 2 + bq * bk * 2 + bq * d * 4 + 1024
    assert bwd["smem_bytes"] // 1024 == smem_kib


# ---- closed forms -----------------------------------------------------------------------------

@pytest.mark.parametrize("nq,nk,d,causal", [(300, 263, 64, False), (300, 263, 64, True),
                                            (270, 150, 40, True), (200, 330, 128, False)])
def test_counts_closed_form(nq, nk, d, causal):
    """Per head: preprocess reads dO, O and writes D and dQaccum = 0; the main kernel reads
    K, V once, Q_i, dO_i, lse_i, D_i per visited tile, and adds B_r x d fp32 to dQaccum per
    tile (an atomic read + write); it writes dK, dV once; the conversion reads dQaccum and
    writes dQ. Five GEMMs a tile, 10 r c d FLOPs; r c exps."""
    wl = Workload(batch=2, heads=3, seq_q=nq, seq_k=nk, head_dim=d, causal=causal,
                  passes="bwd")
    r = simulate("flash3", wl, GPU, compute=False)
    bq, bk = (128, 128) if d <= 64 else (64, 128)
    assert_backward_closed_form(r.counts, fa2_backward_closed_form(
        nq, nk, d, causal, 0.0, bq, bk, wl.elem_bytes), heads=6)
    assert [k.name for k in r.kernels] == ["flash3_bwd_preprocess", "flash3_bwd",
                                           "flash3_bwd_convert_dq"]


def test_count_only_equals_executed():
    wl = Workload(batch=2, heads=2, seq_q=210, seq_k=170, head_dim=48, causal=True,
                  passes="fwd+bwd")
    ex = simulate("flash3", wl, GPU, compute=True)
    co = simulate("flash3", wl, GPU, compute=False)
    assert ex.counts == co.counts
    assert [k.name for k in ex.kernels] == [k.name for k in co.kernels]


def test_fwd_plus_bwd_is_the_sum_of_the_passes():
    wl = Workload(batch=1, heads=2, seq_q=700, seq_k=700, head_dim=128, causal=True)
    parts = [simulate("flash3", wl.replace(passes=p), GPU, compute=False) for p in ("fwd", "bwd")]
    both = simulate("flash3", wl.replace(passes="fwd+bwd"), GPU, compute=False)
    for key in ("hbm_read_bytes", "hbm_write_bytes", "matmul_flops", "exp_ops",
                "kernel_launches"):
        assert both.counts[key] == parts[0].counts[key] + parts[1].counts[key]
    assert both.io_bound_bytes == parts[0].io_bound_bytes + parts[1].io_bound_bytes


def test_traffic_grows_as_n_squared_within_a_constant_of_the_bound():
    """Θ(N d + N² d / B_c): T_c passes over Q, dO and dQaccum."""
    seqs = [2048, 4096, 8192, 16384]
    runs = [simulate("flash3", Workload(seq_q=n, head_dim=64, passes="bwd"), GPU,
                     compute=False) for n in seqs]
    hbm = [r.hbm_bytes for r in runs]
    assert abs(float(np.polyfit(np.log(seqs), np.log(hbm), 1)[0]) - 2.0) < 0.1
    ratios = np.array(hbm) / np.array([r.io_bound_bytes for r in runs])
    assert ratios.max() / ratios.min() < 1.3


# ---- what the timing model is told ----------------------------------------------------------

def test_main_kernel_declares_the_release_kernel():
    """wgmma, 12 warps, one chain a CTA (the warpgroups meet at a barrier every step), P and
    dS served from registers for dV and dK (e / 5d bytes a FLOP), two warpgroups reading the
    streamed Q_i and dO_i."""
    wl = Workload(batch=4, heads=16, seq_q=4096, head_dim=128, passes="bwd")
    r = simulate("flash3", wl, GPU, compute=False)
    k = next(k for k in r.kernels if k.name == "flash3_bwd")
    assert (k.tc_path, k.threads_per_cta, k.chains_per_cta, k.smem_readers) == \
        ("wgmma", 384, 1, 2)
    assert k.register_operand_bytes_per_flop == pytest.approx(2 / (5 * 128))
    assert k.ctas == 4 * 16 * 4096 // 128
    t = next(t for t in r.time.kernels if t.name == "flash3_bwd")
    assert t.ctas_per_sm == 1 and math.isfinite(t.total_s)


def test_faster_than_flash2s_backward_on_the_h100():
    """wgmma without the mma.sync ceiling, on larger tiles: FA-3's backward beats FA-2's
    (the paper's charts: 1.37-1.74x at d = 64 and 128)."""
    for d in (64, 128):
        wl = Workload(batch=4, heads=2048 // d, seq_q=4096, head_dim=d, passes="bwd")
        fa3 = simulate("flash3", wl, GPU, compute=False).time.predicted_s
        fa2 = simulate("flash2", wl, GPU, compute=False, options={"tiles": "release"}
                       ).time.predicted_s
        assert 1.3 < fa2 / fa3 < 2.0


# ---- refusals ---------------------------------------------------------------------------------

@pytest.mark.parametrize("changes,match", [
    ({"head_dim": 192}, "backward stops at head_dim 128"),
    ({"dtype": "fp8"}, "backward pass runs fp16 and bf16"),
    ({"heads": 4, "kv_heads": 2}, "kv_heads"),
])
def test_what_the_release_has_no_backward_for_is_refused(changes, match):
    wl = Workload(seq_q=256, head_dim=64, passes="fwd+bwd").replace(**changes)
    with pytest.raises(PlanError, match=match):
        simulate("flash3", wl, GPU, compute=False)
    simulate("flash3", wl.replace(passes="fwd"), GPU, compute=False)   # the forward runs


def test_too_small_an_sram_budget_names_the_backward():
    wl = Workload(seq_q=256, head_dim=64, passes="bwd")
    with pytest.raises(SramOverflowError, match="backward.*164,864 bytes"):
        simulate("flash3", wl, GPU, compute=False, sram_bytes=150_000)


def test_softmax_beside_its_own_dp_gemm_is_the_release_sass():
    """The release's compiled backward waits for dP after 19 of 64 exps (d = 64) and 7 of 32
    (d = 128): those shares of each pipe's softmax work run beside the dP GEMM
    (``RELEASE_SOFTMAX_SPLIT``); without the mechanism the backward is slower."""
    from hwmodels.timing import TimingOptions
    shares = {64: {"xu": 19 / 64, "fma": 77 / 224, "alu": 0.0},
              128: {"xu": 7 / 32, "fma": 47 / 112, "alu": 0.0}}
    for d, want in shares.items():
        wl = Workload(batch=4, heads=2048 // d, seq_q=4096, head_dim=d, passes="bwd")
        r = simulate("flash3", wl, GPU, compute=False)
        k = next(k for k in r.kernels if k.name == "flash3_bwd")
        assert dict(k.softmax_beside_own_gemm) == pytest.approx(want, abs=1e-4)
        off = simulate("flash3", wl, GPU, compute=False,
                       timing=TimingOptions(own_gemm_overlap=False))
        assert off.time.predicted_s > r.time.predicted_s


def test_the_sass_table_is_the_scripts_reading():
    """``RELEASE_SOFTMAX_SPLIT`` is what benchmarks/sass_schedule.py read off the release's
    backward (reports/fa3_sass_schedule.json: 7f67966c, ptxas 12.3), on the tiles the
    planner takes."""
    import json
    import pathlib
    from algorithms.flash3.backward import RELEASE_SOFTMAX_SPLIT
    run = json.loads((pathlib.Path(__file__).resolve().parents[1] / "reports" /
                      "fa3_sass_schedule.json").read_text())
    assert run["source"]["ptxas_release"] == "12.3"
    read = {k["head_dim"]: {pipe: (k["beside_dp_gemm"][pipe], k["elsewhere"][pipe])
                            for pipe in ("xu", "fma", "alu")}
            for k in run["backward_kernels"] if not k["causal"]}
    assert read == RELEASE_SOFTMAX_SPLIT
    for k in run["backward_kernels"]:
        wl = Workload(seq_q=1024, head_dim=k["head_dim"], passes="bwd")
        bwd = simulate("flash3", wl, GPU, compute=False).plan["bwd"]
        assert (bwd["block_q"], bwd["block_k"]) == (k["block_q"], k["block_k"])
