"""The backward ports of standard attention (standard_bwd.cu) and FlashAttention-1
(flash1_bwd.cu) executed on the CPU emulator (tests/cuda_emu): dq, dk, dv (and o for
fwd+bwd) against the CPU simulation, rows that see no key, and removed synchronizations.

Few, small cases (the emulator runs every CUDA thread as a green thread); between them:
ragged sizes, N_q > N_k and N_q < N_k, causal and not, head_dim 40 (padded), 64 and 128, the
A100 and H100 plans (flash1 with two K/V blocks, so that dQ_i is read-modify-written across
outer steps), both passes, bf16, dropout (standard's framework kernels, flash1's on-chip Z).
"""
import numpy as np
import pytest

from algorithms import ports
from algorithms.registry import get_algorithm
from attnsim import make_inputs
from attnsim.reference import attention_backward_reference, relative_error
from cuda_emu import emulate as emulate_mod
from hwmodels import get_gpu
from port_cases import BACKWARD_PORT_CASES, backward_baseline, workload
from test_cuda_emulated import assert_removal_is_caught, run_emulated

pytestmark = pytest.mark.skipif(emulate_mod.compiler() is None, reason="g++ not on PATH")

# (case, GPU model whose plan the port runs): the A100 plan gives flash1 at d = 40 two K/V
# blocks of 260 keys over N_k = 333; at d = 128 the H100's B_c = B_r = 113 gives 2 x 3 blocks
# (the fp16 97 x 97 causal --pass bwd cases are left to the GPU tests: their kernels run here
# in the bf16, dropout and rows-that-see-no-key cases, and the suite must stay well under 60 s)
EMULATED = [(BACKWARD_PORT_CASES[i], gpu) for i, gpu in
            ((1, "h100-sxm"), (3, "h100-sxm"), (4, "a100-40gb"), (6, "h100-sxm"),
             (7, "h100-sxm"), (10, "h100-sxm"), (11, "h100-sxm"), (12, "h100-sxm"),
             (13, "a100-40gb"), (14, "h100-sxm"))]
OUTPUTS = {"fwd": {"o"}, "bwd": {"dq", "dk", "dv"}, "fwd+bwd": {"o", "dq", "dk", "dv"}}


@pytest.mark.parametrize("case, gpu_name", EMULATED, ids=lambda x: getattr(x, "id", x))
def test_emulated_backward_matches_the_cpu_simulation(case, gpu_name):
    wl = case.workload
    cpu, out, inputs, spec = run_emulated(case.name, wl, get_gpu(gpu_name), with_spec=True)
    baseline = backward_baseline(inputs, wl) if wl.has_backward else {}
    assert set(spec.outputs) == OUTPUTS[wl.passes]
    for name in spec.outputs:
        x = ports.from_storage(out[name], wl.dtype)
        assert not np.isnan(x).any(), name
        err = relative_error(x, cpu.outputs[name])
        assert err < ports.ERROR_TARGETS[wl.dtype], name
        if wl.dtype == "bf16" and name in baseline:
            assert err <= 2 * baseline[name], name       # flash-attn's rule: 2 x plain bf16


@pytest.mark.parametrize("name", ("standard", "flash1"))
def test_emulated_backward_rows_that_see_no_key(name):
    """N_q = 333 > N_k = 200, causal: query rows < 133 see no key, so their dQ is exactly 0;
    the gradients match the float64 backward."""
    wl = workload((1, 1, 1, 333, 200, 128, True), passes="bwd")
    _, out, inputs = run_emulated(name, wl, get_gpu("h100-sxm"))
    assert np.all(out["dq"][0, 0, :133] == 0)
    exact = attention_backward_reference(inputs.q, inputs.k, inputs.v, inputs.do, causal=True,
                                         scale=wl.scale)
    for grad, ref in zip(("dq", "dk", "dv"), exact):
        assert relative_error(out[grad].astype(np.float32), ref) < ports.ERROR_TARGETS["fp16"]


def test_emulated_standard_dropout_mask_is_the_simulators_bit_for_bit():
    """standard_dropout draws algorithms/kernels/dropout.py's keep mask exactly (a seed above 2³² so
    both int32 halves matter), and P ∘ Z is P scaled by 1/(1 - p) where kept, 0 elsewhere."""
    from algorithms.kernels.dropout import keep_multiplier
    wl = workload((2, 2, 2, 40, 70, 32, False)).replace(dropout=0.3)
    gpu = get_gpu("h100-sxm")
    spec = ports.port_launches("standard", wl, get_algorithm("standard").plan(
        wl, gpu, gpu.smem_bytes_per_block))
    inputs = make_inputs(wl, seed=(1 << 40) + 12345)
    out = emulate_mod.emulate(spec, inputs)
    z = keep_multiplier(wl, inputs.seed).reshape(4, 40, 70)
    assert np.array_equal(out["dropout_mask"], (z > 0).astype(np.uint8))
    p = out["p"][..., :70].astype(np.float32)
    p_drop = out["p_drop"].astype(np.float32)
    expected = (p * np.float32(1 / 0.7)).astype(np.float16).astype(np.float32) * (z > 0)
    assert np.array_equal(p_drop[..., :70], expected) and np.all(p_drop[..., 70:] == 0)


def line_ending_with(source: str, comment: str) -> str:
    """The source line (with its newline) that ends with ``comment``: the synchronization a
    test removes, found by its comment so that re-indenting the kernel does not break it."""
    lines = [l for l in emulate_mod.load_source(source).splitlines(True)   # headers inlined
             if l.rstrip().endswith(comment)]
    assert len(lines) == 1, f"{source}: {len(lines)} lines end with {comment!r}"
    return lines[0]


# Each removal must stop the emulator with a hazard: the barrier after the row statistics
# (other warps read them), the one after P_ij and dS_ij (the transposed products read other
# warps' granules), the wait for Q_i/dO_i (copies land on tiles being read); in
# standard_bwd.cu the GEMM's barrier before a stage is refilled, in the dV and dK GEMMs that
# read Pᵀ and dSᵀ (attn_gemm.cuh's A_TRANS path; K = N_q = 100 gives 4 stages of 32).
# (The row sum's partial sums sit in static shared memory, which the emulator does not track.)
BROKEN_SYNC = {
    "flash1: no barrier after the row statistics":
        ("flash1", "flash1_bwd.cu", "__syncthreads();", "// row statistics visible"),
    "flash1: no barrier after P and dS":
        ("flash1", "flash1_bwd.cu", "__syncthreads();", "// P_ij and dS_ij are complete"),
    "flash1: no wait for Q_i and dO_i":
        ("flash1", "flash1_bwd.cu", "attn_cp_async_wait<0>();",
         "// Q_i, dO_i (and K_j, V_j) landed"),
    "standard: no barrier before a GEMM stage refill":
        ("standard", "standard_bwd.cu", "__syncthreads();", "// stage st is free again"),
}


@pytest.mark.parametrize("what", BROKEN_SYNC)
def test_emulator_catches_a_missing_synchronization_in_the_backward_ports(what):
    name, source, statement, comment = BROKEN_SYNC[what]
    wl = workload((1, 1, 1, 100, 64, 32, False), passes="bwd")
    gpu = get_gpu("h100-sxm")
    spec = ports.port_launches(name, wl, get_algorithm(name).plan(wl, gpu, gpu.smem_bytes_per_block))
    inputs = make_inputs(wl, seed=1)
    intact = emulate_mod.emulate(spec, inputs)          # the same launches run clean unedited
    assert all(np.isfinite(intact[n].astype(np.float32)).all() for n in spec.outputs)
    old = line_ending_with(source, comment)
    assert statement in old
    assert_removal_is_caught(spec, inputs, source, "BROKEN_SYNC", old)
