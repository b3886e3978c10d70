"""flash2's dropout (flash2_fwd.cu and flash2_bwd.cu built with ATTN_DROPOUT) executed on the
CPU emulator (tests/cuda_emu): o, dq, dk, dv against the CPU simulation, which draws the same
keep mask (algorithms/kernels/dropout.py); dropout must change the result (a port that ignored it
would pass the error bound of a small p only by luck, not at p = 0.5); the forward's P ∘ Z is
exactly the simulator's mask.

Few, small cases (the emulator runs every CUDA thread as a green thread); together they run
the forward, the backward and both passes, causal and not, ragged N_q != N_k both ways
(333 x 200 causal: rows that see no key), d = 40, 64 and 128, GQA in the forward, and bf16.
"""
import numpy as np
import pytest

from algorithms import ports
from algorithms.kernels.dropout import keep_multiplier
from algorithms.registry import get_algorithm
from attnsim import make_inputs
from attnsim.reference import relative_error
from cuda_emu import emulate as emulate_mod
from hwmodels import get_gpu
from port_cases import FLASH2_DROPOUT_CASES, workload
from test_cuda_emulated import run_emulated

pytestmark = pytest.mark.skipif(emulate_mod.compiler() is None, reason="g++ not on PATH")

OUTPUTS = {"fwd": {"o"}, "bwd": {"dq", "dk", "dv"}, "fwd+bwd": {"o", "dq", "dk", "dv"}}


def plan_of(wl, gpu):
    return get_algorithm("flash2").plan(wl, gpu, gpu.smem_bytes_per_block)


@pytest.mark.parametrize("case", FLASH2_DROPOUT_CASES, ids=lambda c: c.id)
def test_emulated_flash2_dropout_matches_the_cpu_simulation(case):
    wl = case.workload
    cpu, out, _, spec = run_emulated("flash2", wl, get_gpu("h100-sxm"), with_spec=True)
    assert set(spec.outputs) == OUTPUTS[wl.passes]
    assert all(l.defines.get("ATTN_DROPOUT") == 1 for l in spec.all_launches)
    for name in spec.outputs:
        x = ports.from_storage(out[name], wl.dtype)
        assert not np.isnan(x).any(), name
        assert relative_error(x, cpu.outputs[name]) < ports.ERROR_TARGETS[wl.dtype], name


def test_emulated_flash2_dropout_changes_the_output_and_gradients():
    """p = 0.5 moves o, dq, dk, dv far beyond the error target: the dropout build does apply
    Z (in both passes) and is still the simulator's result with dropout."""
    wl = workload((1, 1, 1, 64, 80, 32, False), passes="fwd+bwd").replace(dropout=0.5)
    gpu = get_gpu("h100-sxm")
    cpu, out, inputs = run_emulated("flash2", wl, gpu)
    plain = emulate_mod.emulate(ports.port_launches("flash2", wl.replace(dropout=0.0),
                                                    plan_of(wl, gpu)), inputs)
    for name in ("o", "dq", "dk", "dv"):
        dropped = ports.from_storage(out[name], wl.dtype)
        assert relative_error(dropped, cpu.outputs[name]) < ports.ERROR_TARGETS["fp16"], name
        assert relative_error(dropped, ports.from_storage(plain[name], wl.dtype)) > 0.1, name


def test_emulated_flash2_dropout_mask_is_the_simulators_bit_for_bit():
    """With V = I (d = N_k = 32) and one query block, O_i = (P~ ∘ Z) / l: O is zero exactly
    where algorithms.kernels.dropout's mask drops an entry, and the kept entries are P ∘ 1/(1 - p).
    A seed above 2³² makes both int32 halves of the seed matter; two heads check the head index."""
    wl = workload((1, 2, 2, 48, 32, 32, False)).replace(dropout=0.4)
    gpu = get_gpu("h100-sxm")
    inputs = make_inputs(wl, seed=(1 << 40) + 12345)
    inputs.v[...] = np.eye(32, dtype=inputs.v.dtype)
    out = emulate_mod.emulate(ports.port_launches("flash2", wl, plan_of(wl, gpu)), inputs)
    o = ports.from_storage(out["o"], wl.dtype)
    z = keep_multiplier(wl, inputs.seed)
    assert 0.3 < (z == 0).mean() < 0.5                         # p = 0.4 of the entries dropped
    assert np.array_equal(o == 0, z == 0)                      # the mask, entry by entry
    q = ports.from_storage(ports.to_storage(inputs.q, wl.dtype), wl.dtype).astype(np.float64)
    k = ports.from_storage(ports.to_storage(inputs.k, wl.dtype), wl.dtype).astype(np.float64)
    s = wl.scale * q @ np.swapaxes(k, -1, -2)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    assert relative_error(o, p * z) < ports.ERROR_TARGETS["fp16"]
