"""The backward ports' declarations (flash2, flash1, standard; algorithms/ports/flash2.py and
backward.py), checked on the CPU: grids, tiles, shared memory, saved tensors and passes.
"""
from dataclasses import replace

import numpy as np
import pytest

from algorithms import ports
from hwmodels import get_gpu
from attnsim import make_inputs
from port_cases import SHAPES, workload
from port_plans import NVCC, compile_as_the_backend_sends_it, plan_of


# ---- flash2 backward ---------------------------------------------------------------------------

def test_flash2_backward_grid_smem_and_tensors():
    """Derived by hand from FA-2's Algorithm 2: preprocess and convert one CTA per (Q block,
    head), the main kernel one per (K/V block, head), shared memory Q_i, dO_i, K_j, V_j and
    P_ij, dS_ij; outputs dq, dk, dv (o too for fwd+bwd)."""
    gpu = get_gpu("h100-sxm")
    wl = workload((2, 4, 4, 1000, 700, 64, True)).replace(passes="bwd")
    plan = plan_of("flash2", wl, gpu)
    bq, bk = plan.bwd.block_q, plan.bwd.block_k
    assert (bq, bk) == (128, 128)
    spec = ports.port_launches("flash2", wl, plan, gpu=gpu)
    pre, main, conv = spec.launches
    assert pre.grid == conv.grid == (-(-1000 // bq), 8, 1)
    assert main.grid == (-(-700 // bk), 8, 1) and main.block == (8 * 32, 1, 1)
    assert main.smem_bytes == plan.bwd.smem_bytes == (2 * bq + 2 * bk) * 64 * 2 + 2 * bq * bk * 2
    assert spec.outputs == ("dq", "dk", "dv") and spec.output == "dq"
    (fwd,) = spec.setup                               # O and lse for the backward: untimed
    assert fwd.kernel == "flash2_fwd" and fwd.sim_kernel is None
    assert spec.tensors["o"].role == spec.tensors["lse"].role == "saved"
    assert spec.tensors["do"].role == "input" and spec.tensors["dq_acc"].dtype == "fp32"
    both = ports.port_launches("flash2", wl.replace(passes="fwd+bwd"), plan, gpu=gpu)
    assert [l.kernel for l in both.launches] == ["flash2_fwd", "flash2_bwd_preprocess",
                                                 "flash2_bwd", "flash2_bwd_convert_dq"]
    assert both.outputs == ("o", "dq", "dk", "dv") and both.setup == ()
    assert both.tensors["o"].role == "output"


def test_flash2_backward_warps():
    """8 warps (FA-2's sm80 backward) for the plans' tiles; fewer only when the tiles
    cannot be split 8 ways into 16 x 16 granules."""
    assert ports.flash2_bwd_warps(128, 128, 64) == 8
    assert ports.flash2_bwd_warps(64, 128, 128) == 8
    assert ports.flash2_bwd_warps(128, 128, 40) == 8          # d pads to 48: 3 chunks of 16
    assert ports.flash2_bwd_warps(64, 64, 40) == 4            # 4 x 2 warps cannot split 48
    assert ports.flash2_bwd_warps(16, 64, 64) == 4
    assert ports.flash2_bwd_warps(16, 16, 64) == 1


def test_backward_is_refused_where_not_ported():
    gpu = get_gpu("h100-sxm")
    wl = workload(SHAPES[0]).replace(passes="bwd")
    with pytest.raises(ports.PortUnsupported, match="forward pass only"):
        ports.port_launches("gqa", wl.replace(passes="fwd+bwd"), plan_of("gqa", wl.replace(passes="fwd"), gpu))
    plan = plan_of("flash2", wl, gpu)
    gqa = wl.replace(heads=4, kv_heads=2)           # the simulator plans no GQA backward
    with pytest.raises(ValueError, match="kv_heads"):
        plan_of("flash2", gqa, gpu)
    with pytest.raises(ports.PortUnsupported, match="multi-head only"):
        ports.port_launches("flash2", gqa, plan)
    with pytest.raises(ports.PortUnsupported, match="no backward tiles"):
        ports.port_launches("flash2", wl, plan_of("flash2", wl.replace(passes="fwd"), gpu))


@pytest.mark.skipif(NVCC is None, reason="nvcc not on PATH")
@pytest.mark.parametrize("gpu_name, d", [("a100-40gb", 128), ("h100-sxm", 40)])
def test_flash2_backward_source_as_the_backend_sends_it_compiles(tmp_path, gpu_name, d):
    wl = workload((1, 2, 2, 97, 97, d, True)).replace(passes="bwd")
    gpu = get_gpu(gpu_name)
    spec = ports.port_launches("flash2", wl, plan_of("flash2", wl, gpu))
    main = spec.launches[1]
    arch = "sm_80" if gpu_name.startswith("a100") else "sm_90"
    done = compile_as_the_backend_sends_it(tmp_path, main, arch)
    assert done.returncode == 0, done.stderr


# ---- standard and flash1 backward (algorithms/ports/backward.py) -----------------------------

def test_standard_backward_grids_tensors_and_passes():
    """Derived by hand from Algorithm 3 as autograd runs it: four GEMMs with the forward's
    128 x 128 tiles (dV, dK: N_k x d outputs; dP: N_q x N_k; dQ: N_q x d), one CTA per row for
    the softmax and (causal) masked_fill backward; dP and dS share the padded work tensor."""
    gpu = get_gpu("h100-sxm")
    wl = workload((2, 4, 4, 1000, 700, 64, True)).replace(passes="bwd")
    plan = plan_of("standard", wl, gpu)
    assert (plan.gemm_tile_m, plan.gemm_tile_n) == (128, 128)
    spec = ports.port_launches("standard", wl, plan, gpu=gpu)
    grids = {l.kernel: l.grid for l in spec.launches}
    assert grids == {"standard_bwd_dv": (1, 6, 8), "standard_bwd_dp": (6, 8, 8),
                     "standard_bwd_softmax": (1000, 8, 1), "standard_bwd_mask": (1000, 8, 1),
                     "standard_bwd_dq": (1, 8, 8), "standard_bwd_dk": (1, 6, 8)}
    softmax = next(l for l in spec.launches if l.kernel == "standard_bwd_softmax")
    assert softmax.smem_bytes == 2 * 700 * 2                 # the rows of P and dP
    assert spec.tensors["ds"].shape == (8, 1000, 704) and spec.tensors["p"].role == "saved"
    assert [l.kernel for l in spec.setup] == ["standard_scores", "standard_mask",
                                              "standard_softmax"]
    assert "o" not in spec.tensors and spec.outputs == ("dq", "dk", "dv")
    full = ports.port_launches("standard", wl.replace(causal=False), plan, gpu=gpu)
    assert "standard_bwd_mask" not in {l.kernel for l in full.launches}
    both = ports.port_launches("standard", wl.replace(passes="fwd+bwd"), plan, gpu=gpu)
    assert [l.kernel for l in both.launches][:4] == ["standard_scores", "standard_mask",
                                                     "standard_softmax", "standard_pv"]
    assert both.outputs == ("o", "dq", "dk", "dv") and both.tensors["p"].role == "work"


def test_flash1_backward_tiles_smem_and_passes():
    """Algorithm 4 on the H100 at d = 64: B_c = ceil(M/8d) = 227, B_r = 64 (the simulator's
    backward plan), one CTA per head, 8 warps; shared memory Q_i, dO_i, K_j, V_j, P_ij, dS_ij
    with B_c padded to 240, and two fp32 row vectors. --pass bwd: O, l, m from the forward."""
    gpu = get_gpu("h100-sxm")
    wl = workload((2, 4, 4, 1000, 700, 64, True)).replace(passes="bwd")
    plan = plan_of("flash1", wl, gpu)
    assert (plan.bwd.block_q, plan.bwd.block_k) == (64, 227)
    spec = ports.port_launches("flash1", wl, plan, gpu=gpu)
    init, main = spec.launches
    assert init.grid == main.grid == (8, 1, 1) and main.block == (256, 1, 1)
    assert main.defines == {"BLOCK_Q": 64, "BLOCK_K": 227, "HEAD_DIM": 64}
    assert main.smem_bytes == (2 * 64 + 2 * 240) * 64 * 2 + 2 * 64 * 240 * 2 + 2 * 64 * 4
    assert [l.kernel for l in spec.setup] == ["flash1_init", "flash1_fwd"]
    assert {n for n, t in spec.tensors.items() if t.role == "saved"} == {"o", "l", "m"}
    assert ports.flash1_kv_granules_per_warp(227, 64) == 8        # 15 x 4 granules / 8 warps
    both = ports.port_launches("flash1", wl.replace(passes="fwd+bwd"), plan, gpu=gpu)
    assert [l.kernel for l in both.launches] == ["flash1_init", "flash1_fwd", "flash1_bwd_init",
                                                 "flash1_bwd"]
    assert both.outputs == ("o", "dq", "dk", "dv") and both.tensors["o"].role == "output"


def test_flash1_backward_refuses_dk_dv_beyond_its_registers():
    gpu = get_gpu("h100-sxm")
    wl = workload((1, 1, 1, 300, 300, 64, False)).replace(passes="bwd")
    plan = plan_of("flash1", wl, gpu)
    big = replace(plan, bwd=replace(plan.bwd, block_k=400))   # 25 x 4 granules: 13 a warp
    with pytest.raises(ports.PortUnsupported, match="registers of 8 warps"):
        ports.port_launches("flash1", wl, big)


def test_flash2_dropout_compiles_in_the_mask_and_passes_the_seed():
    """flash2 regenerates Z on chip (it used to refuse --dropout): with dropout the forward and
    the backward's main kernel are compiled with ATTN_DROPOUT and take the seed tensor,
    threshold round(p 2^24) and 1/(1 - p) in float32; without dropout no define (the kernels'
    registers are unchanged), no seed tensor and a null seed."""
    gpu = get_gpu("h100-sxm")
    for passes in ("fwd", "bwd", "fwd+bwd"):
        wl = workload(SHAPES[0]).replace(passes=passes, dropout=0.25)
        spec = ports.port_launches("flash2", wl, plan_of("flash2", wl, gpu))
        assert spec.tensors["dropout_seed"].role == "const"
        takes_seed = [l for l in spec.all_launches if l.kernel in ("flash2_fwd", "flash2_bwd")]
        assert len(takes_seed) == (1 if passes == "fwd" else 2)
        for launch in takes_seed:
            seed, threshold, keep = launch.args[-3:]
            assert seed == "dropout_seed" and threshold.value == 1 << 22
            assert keep.value == float(np.float32(1 / 0.75))
        assert all(l.defines["ATTN_DROPOUT"] == 1 for l in spec.all_launches)
        plain = ports.port_launches("flash2", wl.replace(dropout=0.0), plan_of("flash2", wl, gpu))
        assert "dropout_seed" not in plain.tensors
        assert all("ATTN_DROPOUT" not in l.defines for l in plain.all_launches)
        for launch in plain.all_launches:
            if launch.kernel in ("flash2_fwd", "flash2_bwd"):
                assert launch.args[-3] is None and launch.args[-2].value == 0


def test_flash1_dropout_passes_the_seed_to_both_kernels():
    """flash1 regenerates Z on chip: the forward and backward kernels take the seed tensor,
    threshold round(p 2^24) and 1/(1 - p); without dropout a null seed (Z = 1)."""
    gpu = get_gpu("h100-sxm")
    wl = workload(SHAPES[1]).replace(passes="fwd+bwd", dropout=0.25)
    spec = ports.port_launches("flash1", wl, plan_of("flash1", wl, gpu))
    for launch in (spec.launches[1], spec.launches[3]):
        seed, threshold, keep = launch.args[-3:]
        assert seed == "dropout_seed" and threshold.value == 1 << 22
        assert keep.value == float(np.float32(1 / 0.75))          # float32, as the simulator
    plain = ports.port_launches("flash1", wl.replace(dropout=0.0), plan_of("flash1", wl, gpu))
    assert plain.launches[3].args[-3] is None and "dropout_seed" not in plain.tensors


def test_standard_dropout_launches_the_framework_kernels():
    """standard with --dropout: the forward's dropout kernel between softmax and P V (which
    reads P ∘ Z), the backward's dropout_bwd before the softmax backward; --pass bwd saves P,
    P ∘ Z and the mask from the setup."""
    gpu = get_gpu("h100-sxm")
    wl = workload(SHAPES[1]).replace(passes="bwd", dropout=0.1)
    spec = ports.port_launches("standard", wl, plan_of("standard", wl, gpu))
    assert [l.kernel for l in spec.setup][-1] == "standard_dropout"
    assert [l.sim_kernel for l in spec.launches] == ["dv_gemm", "dp_gemm", "dropout_bwd",
                                                     "softmax_bwd", "mask_bwd", "dq_gemm",
                                                     "dk_gemm"]
    assert spec.launches[0].args[0] == "p_drop"
    assert {n for n, t in spec.tensors.items() if t.role == "saved"} == {"p", "p_drop",
                                                                         "dropout_mask"}
    fwd = ports.port_launches("standard", wl.replace(passes="fwd"), plan_of("standard", wl, gpu))
    pv = fwd.launches[-1]
    assert pv.kernel == "standard_pv" and pv.args[0] == "p_drop"
    seed = fwd.tensors["dropout_seed"].derive(make_inputs(wl, seed=(7 << 32) + 5))
    assert seed.dtype == np.int32 and list(seed) == [5, 7]


@pytest.mark.parametrize("name", ("standard", "flash1"))
def test_backward_ports_refuse_gqa_and_forward_plans(name):
    gpu = get_gpu("h100-sxm")
    wl = workload(SHAPES[0]).replace(passes="bwd")
    with pytest.raises(ValueError, match="kv_heads"):             # the simulator refuses it
        plan_of(name, wl.replace(heads=4, kv_heads=2), gpu)
    with pytest.raises(ports.PortUnsupported, match="multi-head only"):
        ports.port_launches(name, wl.replace(heads=4, kv_heads=2), plan_of(name, wl, gpu))
    with pytest.raises(ports.PortUnsupported, match="no backward tiles"):
        ports.port_launches(name, wl, plan_of(name, wl.replace(passes="fwd"), gpu))


@pytest.mark.skipif(NVCC is None, reason="nvcc not on PATH")
@pytest.mark.parametrize("name, gpu_name, d", [("flash1", "a100-40gb", 128),
                                               ("flash1", "h100-sxm", 40),
                                               ("standard", "h100-sxm", 40)])
def test_backward_sources_as_the_backend_sends_them_compile(tmp_path, name, gpu_name, d):
    wl = workload((1, 2, 2, 97, 97, d, True)).replace(passes="bwd")
    gpu = get_gpu(gpu_name)
    main = ports.port_launches(name, wl, plan_of(name, wl, gpu)).launches[-1]
    arch = "sm_80" if gpu_name.startswith("a100") else "sm_90"
    done = compile_as_the_backend_sends_it(tmp_path, main, arch)
    assert done.returncode == 0, done.stderr
