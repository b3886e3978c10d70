"""The NSA port's declaration (algorithms/ports/nsa.py), checked on the CPU: the paper's defaults
launch the simulator's kernels, the module's parameters and the window band.
"""

import numpy as np
import pytest

from algorithms import ports
from attnsim.simulate import simulate
from hwmodels import get_gpu
from attnsim import make_inputs
from port_cases import GPU_MODELS, NSA_PAPER_CASES, NSA_SHAPES, NSA_SMALL, workload
from port_plans import expected_defines, plan_of


# ---- nsa -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("gpu_name", GPU_MODELS)
@pytest.mark.parametrize("case", NSA_PAPER_CASES, ids=lambda c: c.id)
def test_nsa_paper_defaults_launch_the_simulated_kernels(case, gpu_name):
    """At the paper's defaults (l = 32, d_s = 16, l' = 64, n = 16, w = 512): the four
    launches are the simulator's kernels with its CTA counts, the defines its plan's."""
    gpu, wl = get_gpu(gpu_name), case.workload
    plan = plan_of("nsa", wl, gpu)
    assert (plan.compress_block, plan.compress_stride, plan.select_block, plan.selected,
            plan.window) == (32, 16, 64, 16, 512)
    spec = ports.port_launches("nsa", wl, plan, gpu=gpu)
    sim = simulate("nsa", wl, gpu, compute=False)
    assert {l.sim_kernel: l.ctas for l in spec.launches} == {k.name: k.ctas for k in sim.kernels}
    assert [l.sim_kernel for l in spec.launches] == [k.name for k in sim.kernels]
    storage = {"ATTN_BF16": 1} if wl.dtype == "bf16" else {}
    for launch in spec.launches:
        assert launch.defines == {**expected_defines("nsa", plan, wl.head_dim, launch.source),
                                  **storage}
        assert launch.smem_bytes <= gpu.smem_bytes_per_block
        assert np.prod(launch.block) <= 1024


def test_nsa_declares_the_modules_parameters_and_the_window_band():
    """φ's weights and biases and the gate projections are the module's (``nsa.weights``);
    the window launch runs local's band layout with the causal window on chip (window_left
    w − 1, window_right 0, no element mask); sel is an int32 output of n per position."""
    from algorithms import local, nsa
    gpu = get_gpu("h100-sxm")
    wl = workload(NSA_SHAPES[0])
    plan = plan_of("nsa", wl, gpu, NSA_SMALL)
    spec = ports.port_launches("nsa", wl, plan, gpu=gpu)
    par = nsa.weights(wl, plan)
    inputs = make_inputs(wl, seed=3)
    for name, key in (("w_k", "wk"), ("w_v", "wv"), ("b_k", "bk"), ("b_v", "bv"),
                      ("w_gate", "wg")):
        t = spec.tensors[name]
        assert t.role == "input" and t.dtype == wl.dtype
        assert np.array_equal(t.host_values(name, inputs), par[key])
    assert spec.tensors["sel"].dtype == "int32"
    assert spec.tensors["sel"].shape == (1, 2, wl.seq_q, plan.selected)
    assert spec.outputs == ("o",)
    (win,) = [l for l in spec.launches if l.sim_kernel == "nsa_win_fwd"]
    lay = local.layout(wl, plan.win)
    assert np.array_equal(spec.tensors["block_ptr"].data, lay.row_ptr)
    assert win.args[8] is None                                  # the mask is computed on chip
    assert [a.value for a in win.args[-2:]] == [plan.window - 1, 0]


def test_nsa_skips_the_compression_when_no_block_is_complete():
    """N_k < l: the simulator records no nsa_compress, nor does the port launch one."""
    gpu = get_gpu("h100-sxm")
    wl = workload(NSA_SHAPES[5])
    plan = plan_of("nsa", wl, gpu, NSA_SMALL)
    assert plan.compressed_tokens == 0
    kernels = [l.kernel for l in ports.port_launches("nsa", wl, plan, gpu=gpu).launches]
    assert kernels == ["nsa_cmp", "block_sparse_fwd", "nsa_slc"]


def test_nsa_port_refuses_sub_blocks_below_the_mma_size():
    from dataclasses import replace
    gpu = get_gpu("h100-sxm")
    wl = workload(NSA_SHAPES[0])
    plan = replace(plan_of("nsa", wl, gpu, NSA_SMALL), select_tile=8)
    with pytest.raises(ports.PortUnsupported, match="multiple of 16"):
        ports.port_launches("nsa", wl, plan)
    wide = replace(plan_of("nsa", wl, gpu, NSA_SMALL), cmp_block_q=256)   # 4 x 256 rows
    with pytest.raises(ports.PortUnsupported, match="packed rows"):
        ports.port_launches("nsa", wl, wide)


def test_selection_verdict_judges_near_ties_apart_from_real_disagreements():
    """gpu_check.nsa_selection_verdict on the simulation's own outputs: identical selections
    are judged on the whole output; a swap of a forced block (never a near-tie) is a real
    disagreement, judged on the whole output, and says so."""
    from attnsim.gpu_check import nsa_selection_verdict
    small = {"compress_block": 16, "compress_stride": 8, "select_block": 32, "selected": 4,
             "window": 64}
    wl = workload((1, 4, 1, 200, 200, 64, True))
    gpu = get_gpu("h100-sxm")
    plan = plan_of("nsa", wl, gpu, small)
    inputs = make_inputs(wl, seed=2)
    cpu = simulate("nsa", wl, gpu, inputs=inputs, check=False, options=small)
    o, sel = cpu.outputs["o"], cpu.outputs["sel"]
    same = nsa_selection_verdict(wl, plan, inputs, o, sel, cpu.outputs)
    assert same["positions_differing"] == 0 and same["all_near_ties"]
    assert same["judged_error"] < 1e-5 and "identical" in same["note"]
    t = 150                                  # block 4 of 7: blocks 0, 3, 4 forced
    bad = sel.copy()
    free = sorted(set(range(5)) - set(sel[0, 0, t]))[0]
    bad[0, 0, t] = sorted(set(bad[0, 0, t]) - {0} | {free})
    verdict = nsa_selection_verdict(wl, plan, inputs, o, bad, cpu.outputs)
    assert not verdict["all_near_ties"] and verdict["positions_differing"] == 1
    assert "not near-ties" in verdict["note"]
