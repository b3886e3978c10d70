"""The CUDA ports executed on the CPU by the emulator in tests/cuda_emu (no GPU needed).

The same .cu text NVRTC would compile (header inlined), launched exactly as declared in
algorithms/ports.py (grid, block, shared memory, arguments), with NaN-filled shared memory
and outputs, must reproduce the CPU simulation (or the float64 reference) to the fp16
target: relative error < 2e-3. The emulator replaces only the PTX wrappers (ldmatrix,
mma.sync, cp.async), with versions written from the PTX ISA's fragment layouts; what it cannot
check (timing, real races, the PTX strings themselves) is left to tests/gpu.
"""
import json

import numpy as np
import pytest

from algorithms import ports
from algorithms.base import check_options
from algorithms.registry import get_algorithm
from attnsim import make_inputs, simulate
from attnsim.reference import attention_reference, relative_error
from hwmodels.gpus import get_gpu
from cuda_emu import emulate as emulate_mod
from port_cases import (BF16_CASES, DECODE_SHAPES, FEATURE_SHAPES, PORT_CASES, SHAPES, PortCase,
                        fp16_baseline, workload)

pytestmark = pytest.mark.skipif(emulate_mod.compiler() is None, reason="g++ not on PATH")
FP16_TARGET = 2e-3


# a fast subset of the shared cases (the emulator runs every CUDA thread as a green thread)
EMULATED = [PortCase("flash2", SHAPES[i]) for i in (1, 2, 3, 4)] + [
    PortCase("flash1", SHAPES[1]), PortCase("flash1", SHAPES[3]),
    PortCase("standard", SHAPES[0]), PortCase("standard", SHAPES[1]),
    PortCase("gqa", DECODE_SHAPES[0], decode=True),
    PortCase("gqa", DECODE_SHAPES[1], {"splits": 2}, decode=True),
    PortCase("gqa", SHAPES[2], {"pack_group": True}),
    PortCase("local", SHAPES[1], {"window": 64}),
    PortCase("bigbird", SHAPES[1], {"block": 32}),
    PortCase("block_sparse", SHAPES[4], {"block": 32, "density": 0.5}),
    PortCase("linear", (2, 4, 2, 200, 333, 40, False)),
    PortCase("linear", SHAPES[1]), PortCase("linear", SHAPES[2]), PortCase("linear", SHAPES[3]),
    PortCase("rfa", SHAPES[2]), PortCase("rfa", SHAPES[4]), PortCase("rfa", FEATURE_SHAPES[0]),
    PortCase("rfa", SHAPES[2], {"features": 24, "sigma": 2.0}),
    PortCase("performer", SHAPES[0]), PortCase("performer", SHAPES[2]),
    PortCase("performer", SHAPES[3]),                        # causal, 4 slices + combine
    PortCase("performer", FEATURE_SHAPES[0]),                # non-causal, 8 slices
    PortCase("performer", SHAPES[0], {"redraw": "head"}),
] + BF16_CASES
assert all(c in PORT_CASES for c in EMULATED)


def run_emulated(name, wl, gpu, magnitude=1.0, options=None):
    module = get_algorithm(name)
    plan = module.plan(wl, gpu, gpu.smem_bytes_per_block,
                       **check_options(module.INFO, options or {}))
    inputs = make_inputs(wl, seed=1, magnitude=magnitude)
    cpu = simulate(name, wl, gpu, compute=True, inputs=inputs, check=False, options=options)
    out = emulate_mod.emulate(ports.port_launches(name, wl, plan, cpu.extra, gpu=gpu), inputs)
    return cpu, out, inputs


@pytest.mark.parametrize("case", EMULATED, ids=lambda c: c.id)
def test_emulated_port_matches_the_cpu_simulation(case):
    wl = case.workload
    cpu, out, inputs = run_emulated(case.name, wl, get_gpu("h100-sxm"), options=case.options)
    o = ports.from_storage(out["o"], wl.dtype)
    assert not np.isnan(o).any()
    err = relative_error(o, cpu.outputs["o"])
    assert err < ports.ERROR_TARGETS[wl.dtype]
    if wl.dtype == "bf16" and case.name in ("flash2", "flash1", "standard", "gqa"):
        # exact attention: within twice the error of plain bf16 attention (flash-attn's rule)
        assert err <= 2 * fp16_baseline(inputs, wl)


def test_emulated_flash2_lse_and_empty_causal_rows():
    wl = workload(SHAPES[3])                        # N_q = 333 > N_k = 200: rows < 133 see nothing
    cpu, out, inputs = run_emulated("flash2", wl, get_gpu("a100-40gb"))
    _, lse = attention_reference(inputs.q, inputs.k, inputs.v, causal=True, scale=wl.scale)
    assert np.all(out["o"][0, 0, :133] == 0) and np.all(np.isneginf(out["lse"][0, 0, :133]))
    finite = np.isfinite(lse)
    assert np.allclose(out["lse"][finite], lse[finite], rtol=1e-3, atol=1e-3)


def test_emulated_flash2_large_logits_match_the_fp16_baseline():
    """Logits ~1e2: error at most twice that of rounding the exact result to fp16."""
    wl = workload((1, 1, 1, 150, 150, 64, True))
    _, out, inputs = run_emulated("flash2", wl, get_gpu("h100-sxm"), magnitude=10.0)
    exact, _ = attention_reference(inputs.q, inputs.k, inputs.v, causal=True, scale=wl.scale)
    assert relative_error(out["o"].astype(np.float32), exact) <= max(2 * fp16_baseline(inputs, wl),
                                                                     FP16_TARGET)


# The emulator's hazard checks must catch what a missing barrier or wait would break on a
# GPU: each edit below removes one synchronization of flash2_fwd.cu's single-buffered loop.
BROKEN_SYNC = {
    "no barrier before the K refill": (
        "        __syncthreads();                                       // every warp is done with K_j\n", ""),
    "no wait for V_j": (
        "        attn_cp_async_wait<1>();                               // V_j has landed\n", ""),
}


@pytest.mark.parametrize("what", BROKEN_SYNC)
def test_emulator_catches_a_missing_synchronization(what):
    old, new = BROKEN_SYNC[what]

    def edit(text):
        assert old in text, "flash2_fwd.cu changed: update BROKEN_SYNC"
        return text.replace(old, new)

    wl = workload((1, 1, 1, 200, 200, 32, False))
    gpu = get_gpu("h100-sxm")
    spec = ports.port_launches("flash2", wl, get_algorithm("flash2").plan(wl, gpu, gpu.smem_bytes_per_block))
    with pytest.raises(emulate_mod.EmulationError, match="hazard") as err:
        emulate_mod.emulate(spec, make_inputs(wl, seed=1), edit=edit)
    assert err.value.status == 8


@pytest.fixture
def emulated_backend(monkeypatch):
    """attnsim.gpu with the emulator standing in for CuPy (measured time fixed at 1 ms)."""
    from attnsim import gpu as backend

    def fake_run_port(spec, inputs, reference=None, **kw):
        out = ports.from_storage(emulate_mod.emulate(spec, inputs)[spec.output],
                                 spec.tensors[spec.output].dtype)
        err = relative_error(out, reference) if reference is not None else None
        return backend.PortRun(algorithm=spec.algorithm, median_s=1e-3, times_s=[1e-3],
                               rel_error=err, copies=2, notes=spec.notes)

    monkeypatch.setattr(backend, "gpu_available", lambda: (True, "emulated device"))
    monkeypatch.setattr(backend, "detect_gpu_model", lambda: (get_gpu("h100-sxm"), None))
    monkeypatch.setattr(backend, "run_port", fake_run_port)
    monkeypatch.setattr(backend, "sdpa_available", lambda: (False, "no torch (test)"))
    return backend


def test_gpu_check_dtype_bf16_runs_the_bf16_build(emulated_backend, capsys):
    from attnsim.cli import main
    assert main(["gpu-check", "flash2", "--seq", "97", "--batch", "1", "--heads", "2",
                 "--dtype", "bf16", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert "bf16" in data["workload"]
    (row,) = data["rows"]
    assert row["error_vs"] == "cpu" and row["rel_error"] < ports.ERROR_TARGETS["bf16"]
    assert "above" not in row["note"]


def test_gpu_check_end_to_end_on_the_emulator(monkeypatch, capsys):
    """gpu-check's plumbing (plans, simulation, declarations, errors, rows, JSON) with the
    emulator standing in for CuPy: every number but the (fixed) measured time is real."""
    from attnsim import gpu as backend
    from attnsim.cli import main

    def fake_run_port(spec, inputs, reference=None, **kw):
        out = emulate_mod.emulate(spec, inputs)[spec.output].astype(np.float32)
        err = relative_error(out, reference) if reference is not None else None
        return backend.PortRun(algorithm=spec.algorithm, median_s=1e-3, times_s=[1e-3],
                               rel_error=err, copies=2, notes=spec.notes)

    def fake_reference(wl, inputs):
        return attention_reference(inputs.q, inputs.k, inputs.v, causal=wl.causal,
                                   scale=wl.scale)[0]

    monkeypatch.setattr(backend, "gpu_available", lambda: (True, "emulated device"))
    monkeypatch.setattr(backend, "detect_gpu_model", lambda: (get_gpu("h100-sxm"), None))
    monkeypatch.setattr(backend, "run_port", fake_run_port)
    monkeypatch.setattr(backend, "device_reference", fake_reference)
    monkeypatch.setattr(backend, "sdpa_available", lambda: (False, "no torch (test)"))
    assert main(["gpu-check", "flash2", "gqa", "--seq", "97", "200", "--batch", "1",
                 "--heads", "4", "--cpu-check-max-n", "100", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    rows = {(r["algorithm"], r["seq"]): r for r in data["rows"]}
    assert set(rows) == {("flash2", 97), ("flash2", 200), ("gqa", 97), ("gqa", 200)}
    assert rows[("flash2", 97)]["error_vs"] == "cpu"            # N <= --cpu-check-max-n
    assert rows[("flash2", 200)]["error_vs"] == "gpu fp32"      # above: device reference
    assert rows[("gqa", 200)]["error_vs"] == "cpu"              # decode: one query row
    for row in rows.values():
        assert row["rel_error"] < FP16_TARGET
        assert row["measured_s"] == 1e-3
        assert row["ratio"] == pytest.approx(row["predicted_s"] / 1e-3)
        assert row["hbm_gbs"] > 0 and row["tflops"] > 0
    assert data["model"] == "h100-sxm"


@pytest.mark.parametrize("name", ["rfa", "performer"])
def test_emulated_sliced_causal_sweep_on_the_a100_plan(name):
    """The A100's smaller shared memory slices the causal state at d = 128 (rfa: 2 slices of
    B = 32 rows; performer: 4 slices, B = 16): per-slice partials merged by the combine."""
    wl, gpu = workload(SHAPES[3]), get_gpu("a100-40gb")
    plan = get_algorithm(name).plan(wl, gpu, gpu.smem_bytes_per_block)
    assert plan.feature_tiles > 1
    cpu, out, _ = run_emulated(name, wl, gpu)
    o = ports.from_storage(out["o"], wl.dtype)
    assert not np.isnan(o).any()
    assert relative_error(o, cpu.outputs["o"]) < FP16_TARGET


def test_gpu_check_of_approximate_ports_says_when_there_is_no_reference(emulated_backend,
                                                                        capsys):
    """linear / rfa / performer approximate softmax attention: the device's dense fp32
    reference is no reference for them, so above --cpu-check-max-n the error is reported as
    not checked (and why), not compared with the wrong thing."""
    from attnsim.cli import main
    assert main(["gpu-check", "performer", "linear", "--seq", "97", "160", "--batch", "1",
                 "--heads", "2", "--cpu-check-max-n", "100", "--format", "json"]) == 0
    rows = {(r["algorithm"], r["seq"]): r for r in json.loads(capsys.readouterr().out)["rows"]}
    for name in ("performer", "linear"):
        small, large = rows[(name, 97)], rows[(name, 160)]
        assert small["error_vs"] == "cpu" and small["rel_error"] < FP16_TARGET
        assert large["error_vs"] == "none" and large["rel_error"] is None
        assert "error not checked" in large["note"] and "--cpu-check-max-n" in large["note"]


@pytest.mark.parametrize("shape", [SHAPES[1], SHAPES[3], FEATURE_SHAPES[0]],
                         ids=["causal", "causal-4-slices", "full-8-slices"])
def test_emulated_performer_keeps_its_accuracy_at_larger_logits(shape):
    """Inputs x2 (logits x4): Performer's exponents then span more e-folds than fp16 holds.
    The port keeps each key's features relative to its own max (its weight g in fp32), scales
    A's rows and g V before they are rounded, and normalises S by z for φ(Q) S; without these
    the error here was 1e-1 (the fp32 simulator does not see the problem)."""
    wl = workload(shape)
    cpu, out, _ = run_emulated("performer", wl, get_gpu("h100-sxm"), magnitude=2.0)
    assert relative_error(out["o"].astype(np.float32), cpu.outputs["o"]) < FP16_TARGET
