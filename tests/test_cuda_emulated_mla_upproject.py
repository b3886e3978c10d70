"""mla --path upproject's CUDA port (algorithms/cuda/mla_upproject.cu) executed on the CPU by
the emulator in tests/cuda_emu: the up-projection GEMM, the split-KV attention over
K = [K^C_h ; k^R] (d_k = d_h + d_h^R) and V_h (d_v = d_h), and the combine, launched exactly as
algorithms/ports/decode.py declares them.

Each case's output is judged twice: against the CPU simulation's ``o_mla`` (the storage
type's target, ports.ERROR_TARGETS), and against the float64 definition (``mla.up_projected``
+ ``attention_reference``) within twice the error that rounding the inputs, the up-projected
K, V and o to the storage type alone gives (flash-attn's rule; ``mla_storage_baseline``), so
that a simulator and a port that agreed on a wrong answer would still fail.
"""
import json

import numpy as np
import pytest

from algorithms import mla, ports
from algorithms.base import check_options
from algorithms.registry import get_algorithm
from attnsim import make_inputs
from attnsim.reference import relative_error
from cuda_emu import emulate as emulate_mod
from hwmodels import get_gpu
from port_cases import MLA_UP_CASES, mla_storage_baseline
from test_cuda_emulated import (assert_removal_is_caught, emulated_backend,  # noqa: F401
                                run_emulated)

pytestmark = pytest.mark.skipif(emulate_mod.compiler() is None, reason="g++ not on PATH")
H100 = get_gpu("h100-sxm")
# every case small enough to emulate (the last is DeepSeek-V2's 128 heads: declarations only)
EMULATED = [c for c in MLA_UP_CASES if c.shape[1] <= 16]


def plan_of(case, gpu=H100):
    module = get_algorithm("mla")
    return module.plan(case.workload, gpu, gpu.smem_bytes_per_block,
                       **check_options(module.INFO, case.options))


@pytest.mark.parametrize("case", EMULATED, ids=lambda c: c.id)
def test_emulated_upproject_matches_the_simulation_and_the_definition(case):
    wl = case.workload
    cpu, out, inputs, spec = run_emulated("mla", wl, H100, options=case.options,
                                          with_spec=True)
    assert [l.kernel for l in spec.launches][:2] == ["mla_upproject", "mla_up_attn"]
    o = ports.from_storage(out["o"], wl.dtype)
    assert not np.isnan(o).any()
    target = ports.ERROR_TARGETS[wl.dtype]
    assert relative_error(o, cpu.outputs["o_mla"]) < target
    exact, baseline = mla_storage_baseline(wl, plan_of(case), inputs)
    assert relative_error(o, exact) <= 2 * baseline


def test_emulated_upproject_writes_the_up_projected_cache():
    """The GEMM's kv (B, N_k, 2, H, d_h) holds K^C_h = c_KV W_UK^hᵀ and V_h = c_KV W_UV^hᵀ
    in the simulator's column order (all heads' K^C, then all heads' V)."""
    case = EMULATED[0]
    wl = case.workload
    _, out, inputs, spec = run_emulated("mla", wl, H100, options=case.options, with_spec=True)
    x = mla.mla_inputs(wl, plan_of(case), inputs)
    kv = ports.from_storage(out["kv"], wl.dtype)                 # (B, N_k, 2, H, d_h)
    c = x["c_kv"].astype(np.float64)
    for part, w in ((0, x["w_uk"]), (1, x["w_uv"])):
        want = np.einsum("bnc,hdc->bnhd", c, w.astype(np.float64))
        assert relative_error(kv[:, :, part], want) < ports.ERROR_TARGETS[wl.dtype]


# Each edit removes one synchronization of mla_up_attn's K/V double use of shared memory;
# the case has two row warps (20 new tokens) and three key blocks, so the hazard is real.
UP_BROKEN_SYNC = {
    "no barrier before the K refill": (
        "        __syncthreads();                                       // every warp is done with K_j\n", ""),
    "no wait for V_j": (
        "        attn_cp_async_wait<1>();                               // V_j has landed\n", ""),
    "no barrier before the V refill": (
        "        __syncthreads();                                       // every warp is done with V_j\n", ""),
}


@pytest.mark.parametrize("what", UP_BROKEN_SYNC)
def test_emulator_catches_a_missing_synchronization_in_mla_upproject(what):
    old, new = UP_BROKEN_SYNC[what]
    (case,) = [c for c in MLA_UP_CASES if c.shape[3] == 20]
    wl = case.workload
    spec = ports.port_launches("mla", wl, plan_of(case), gpu=H100)
    (attn,) = [l for l in spec.launches if l.kernel == "mla_up_attn"]
    assert attn.block[0] == 64 and attn.grid[0] == 1            # two warps, one split
    assert_removal_is_caught(spec, make_inputs(wl, seed=1), "mla_upproject.cu",
                             "UP_BROKEN_SYNC", old, new)


def test_gpu_check_mla_path_upproject_on_the_emulator(emulated_backend, capsys):  # noqa: F811
    """gpu-check --path upproject: the up-projected port's rows, checked against the
    simulation's o_mla, labelled with their path."""
    from attnsim.cli import main
    assert main(["gpu-check", "mla", "--path", "upproject", "--seq", "150", "--batch", "1",
                 "--heads", "4", "--head-dim", "64", "--format", "json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["rows"]
    assert row["algorithm"] == "mla --path upproject"
    assert row["error_vs"] == "cpu" and row["rel_error"] < ports.ERROR_TARGETS["fp16"]
    assert row["predicted_s"] > 0


def test_gpu_check_mla_above_the_cpu_bound_uses_the_device_reference(emulated_backend,  # noqa: F811
                                                                     monkeypatch, capsys):
    """Above --cpu-check-max-n² (mla: B·H·N_k) the rows are checked against
    ``mla_device_reference`` (numpy standing in for CuPy), not left unchecked."""
    from attnsim.cli import main
    from port_plans import NumpyAsCupy
    monkeypatch.setattr(emulated_backend, "_require_cupy", lambda: NumpyAsCupy())
    assert main(["gpu-check", "mla", "--path", "upproject", "--seq", "150", "--batch", "1",
                 "--heads", "4", "--head-dim", "64", "--cpu-check-max-n", "16",
                 "--format", "json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["rows"]
    assert row["error_vs"] == "gpu fp32" and row["rel_error"] < ports.ERROR_TARGETS["fp16"]
