"""Ring Attention's CUDA port (``ring_step`` in algorithms/cuda/flash2_fwd.cu) executed on the
CPU by the emulator in tests/cuda_emu, launched exactly as algorithms/ports/ring.py declares it:
P timed steps of the simulated device, the other devices' steps as untimed setup.

Each case's output is judged against the CPU simulation (the storage type's target) and
against exact float64 attention within twice the error plain 16-bit attention has
(flash-attn's rule), so that a simulator and a port that agreed on a wrong answer still fail.
"""
import numpy as np
import pytest

from algorithms import ports
from algorithms.ring import device_rows
from attnsim.reference import attention_reference, relative_error
from cuda_emu import emulate as emulate_mod
from hwmodels import get_gpu
from port_cases import RING_CASES, fp16_baseline, workload
from test_cuda_emulated import assert_removal_is_caught, run_emulated

pytestmark = pytest.mark.skipif(emulate_mod.compiler() is None, reason="g++ not on PATH")
H100 = get_gpu("h100-sxm")


@pytest.mark.parametrize("case", RING_CASES, ids=lambda c: c.id)
def test_emulated_ring_matches_the_simulation_and_exact_attention(case):
    wl = case.workload
    cpu, out, inputs, spec = run_emulated("ring", wl, H100, options=case.options, with_spec=True)
    assert [l.sim_kernel for l in spec.launches] == [f"ring_step{s}"
                                                     for s in range(case.options["devices"])]
    o = ports.from_storage(out["o"], wl.dtype)
    assert not np.isnan(o).any()
    assert relative_error(o, cpu.outputs["o"]) < ports.ERROR_TARGETS[wl.dtype]
    exact, lse = attention_reference(inputs.q, inputs.k, inputs.v, causal=wl.causal,
                                     scale=wl.scale)
    assert relative_error(o, exact) <= 2 * fp16_baseline(inputs, wl)
    finite = np.isfinite(lse)
    assert np.array_equal(np.isfinite(out["lse"]), finite)      # rows that see no key: -inf
    tol = 1e-3 * (8 if wl.dtype == "bf16" else 1)        # bf16 rounds 8x coarser than fp16
    assert np.allclose(out["lse"][finite], lse[finite], rtol=tol, atol=tol)


def test_the_timed_steps_alone_compute_the_simulated_device():
    """Without the setup, the P timed launches write the simulated device's rows (the last
    one, causal) and nothing else: the outputs start as NaN bytes in the emulator."""
    case = RING_CASES[0]                              # 333 rows over 4 devices, causal
    wl = case.workload
    cpu, out, inputs, spec = run_emulated("ring", wl, H100, options=case.options, with_spec=True)
    timed_only = emulate_mod.emulate(ports.PortLaunches("ring", spec.tensors, spec.launches),
                                     inputs)
    plan = cpu.plan
    lo, hi = device_rows(plan["simulated_device"], wl.seq_q, plan["rows_per_device"])
    assert (lo, hi) == (252, 333)
    o = ports.from_storage(timed_only["o"], wl.dtype)
    assert np.isnan(o[:, :, :lo]).all()
    assert np.array_equal(o[:, :, lo:hi], ports.from_storage(out["o"], wl.dtype)[:, :, lo:hi])


def test_the_state_carried_between_steps_is_read_back():
    """A step that started from the empty state instead of the one in HBM would attend only
    the last visiting block: the error must then be far above the target."""
    case = RING_CASES[1]
    wl = case.workload
    cpu, _, inputs, spec = run_emulated("ring", wl, H100, options=case.options, with_spec=True)
    forget = lambda text: text.replace("if (!st.first) flash2_load_state(", "if (false) flash2_load_state(")
    out = emulate_mod.emulate(spec, inputs, edit={"flash2_fwd.cu": forget})
    o = ports.from_storage(out["o"], wl.dtype)
    assert relative_error(o, cpu.outputs["o"]) > 0.3


def test_a_missing_barrier_in_the_shared_loop_is_caught_in_the_ring_step():
    """ring_step runs flash2_fwd's loop: removing its K refill barrier is a hazard there too."""
    wl = workload((1, 1, 1, 520, 520, 64, False))   # 260 keys a step: 3 blocks
    _, _, inputs, spec = run_emulated("ring", wl, H100, options={"devices": 2}, with_spec=True)
    assert_removal_is_caught(spec, inputs, "flash2_fwd.cu", "this test",
                             "        __syncthreads();                                       "
                             "// every warp is done with K_j\n")
