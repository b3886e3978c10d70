"""The CUDA ports executed on the CPU by the emulator in tests/cuda_emu (no GPU needed).

The same .cu text NVRTC would compile (header inlined), launched exactly as declared in
algorithms/ports/ (grid, block, shared memory, arguments), with NaN-filled shared memory
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
from attnsim.reference import attention_backward_reference, attention_reference, relative_error
from hwmodels import get_gpu
from _benchmarks import load_benchmark
from cuda_emu import emulate as emulate_mod
from port_cases import (BF16_CASES, DECODE_SHAPES, DIFF_CASES, FEATURE_SHAPES,
                        GQA_COMBINE_ROWS_CASE, MLA_CASES,
                        MASKED_DENSE_CASES, PORT_CASES, SHAPES, PortCase, backward_baseline, diff_fp16_baseline,
                        fp16_baseline, workload)

pytestmark = pytest.mark.skipif(emulate_mod.compiler() is None, reason="g++ not on PATH")
FP16_TARGET = 2e-3


# a fast subset of the shared cases (the emulator runs every CUDA thread as a green thread)
EMULATED = [PortCase("flash2", SHAPES[i]) for i in (1, 2, 3, 4)] + [
    PortCase("flash1", SHAPES[1]), PortCase("flash1", SHAPES[3]),
    PortCase("standard", SHAPES[0]), PortCase("standard", SHAPES[1]),
    PortCase("gqa", DECODE_SHAPES[0], decode=True),
    PortCase("gqa", DECODE_SHAPES[1], {"splits": 2}, decode=True),
    GQA_COMBINE_ROWS_CASE,
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
    PortCase("flash2", (1, 1, 1, 97, 97, 192, True)),     # 24 chunks a row: the grouped swizzle
] + MLA_CASES + BF16_CASES + [
    # flash2's backward: dq, dk, dv (and o for fwd+bwd) against the CPU simulation
    PortCase("flash2", SHAPES[1], passes="bwd"),
    PortCase("flash2", SHAPES[0], passes="fwd+bwd"),
    PortCase("flash2", (1, 2, 2, 200, 333, 40, True), passes="fwd+bwd"),
    PortCase("flash2", SHAPES[3], passes="bwd"),
    PortCase("flash2", SHAPES[1], dtype="bf16", passes="bwd"),
]
EMULATED += DIFF_CASES                # every diff case: 2d = 32 ... 128, N_q <> N_k, bf16
EMULATED += [MASKED_DENSE_CASES[i] for i in (0, 1, 4)]   # window + causal, block mask + GQA, bf16
assert all(c in PORT_CASES for c in EMULATED if c.shape[5] != 192)


def run_emulated(name, wl, gpu, magnitude=1.0, options=None, with_spec=False):
    module = get_algorithm(name)
    plan = module.plan(wl, gpu, gpu.smem_bytes_per_block,
                       **check_options(module.INFO, options or {}))
    inputs = make_inputs(wl, seed=1, magnitude=magnitude)
    cpu = simulate(name, wl, gpu, compute=True, inputs=inputs, check=False, options=options)
    spec = ports.port_launches(name, wl, plan, cpu.extra, gpu=gpu)
    out = emulate_mod.emulate(spec, inputs)
    return (cpu, out, inputs, spec) if with_spec else (cpu, out, inputs)


@pytest.mark.parametrize("case", EMULATED, ids=lambda c: c.id)
def test_emulated_port_matches_the_cpu_simulation(case):
    wl = case.workload
    cpu, out, inputs, spec = run_emulated(case.name, wl, get_gpu("h100-sxm"),
                                          options=case.options, with_spec=True)
    baseline = backward_baseline(inputs, wl) if wl.has_backward else {}
    for name in spec.outputs:                   # o; dq, dk, dv for the backward
        x = ports.from_storage(out[name], wl.dtype)
        assert not np.isnan(x).any(), name
        err = relative_error(x, cpu.outputs[spec.cpu_key(name)])
        assert err < ports.ERROR_TARGETS[wl.dtype], name
        if wl.dtype == "bf16" and case.name in ("flash2", "flash1", "standard", "gqa"):
            # exact attention: within twice the error of plain bf16 attention (flash-attn's rule)
            assert err <= 2 * baseline.get(name, fp16_baseline(inputs, wl)), name


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


def test_emulated_flash2_backward_rows_that_see_no_key():
    """N_q = 333 > N_k = 200, causal: query rows < 133 see no key (lse = -inf), so their dQ is
    0, and they add nothing to dK, dV; every key is seen by some row."""
    wl = workload(SHAPES[3], passes="bwd")
    cpu, out, inputs = run_emulated("flash2", wl, get_gpu("a100-40gb"))
    assert np.all(out["dq"][0, 0, :133] == 0) and np.isneginf(out["lse"][0, 0, :133]).all()
    dq, dk, dv = attention_backward_reference(inputs.q, inputs.k, inputs.v, inputs.do,
                                              causal=True, scale=wl.scale)
    for name, ref in (("dq", dq), ("dk", dk), ("dv", dv)):
        assert relative_error(out[name].astype(np.float32), ref) < FP16_TARGET


def test_emulated_flash2_backward_large_logits_match_the_fp16_baseline():
    """Logits ~1e2 (Q, K x 10), against the float64 backward: each gradient's error at most
    twice that of the exact gradients of the fp16-rounded inputs, rounded to fp16."""
    wl = workload((1, 1, 1, 150, 150, 64, True), passes="bwd")
    _, out, inputs = run_emulated("flash2", wl, get_gpu("h100-sxm"), magnitude=10.0)
    exact = dict(zip(("dq", "dk", "dv"), attention_backward_reference(
        inputs.q, inputs.k, inputs.v, inputs.do, causal=True, scale=wl.scale)))
    baseline = backward_baseline(inputs, wl)
    for name in ("dq", "dk", "dv"):
        x = out[name].astype(np.float32)
        assert np.isfinite(x).all(), name
        assert relative_error(x, exact[name]) <= max(2 * baseline[name], FP16_TARGET), name


def assert_removal_is_caught(spec, inputs, source, table, old, new=""):
    """Running ``spec`` with ``old`` replaced by ``new`` in ``source`` (one synchronization
    removed) must stop the emulator with a shared-memory hazard (exit status 8)."""
    def edit(text):
        assert old in text, f"{source} changed: update {table}"
        return text.replace(old, new)

    with pytest.raises(emulate_mod.EmulationError, match="hazard") as err:
        emulate_mod.emulate(spec, inputs, edit={source: edit})
    assert err.value.status == 8


# The emulator's hazard checks must catch what a missing barrier or wait would break on a
# GPU: each edit below removes one synchronization of flash2_fwd.cu's single-buffered loop.
BROKEN_SYNC = {
    "no barrier before the K refill": (
        "        __syncthreads();                                       // every warp is done with K_j\n", ""),
    "no wait for V_j": (
        "        attn_cp_async_wait<1>();                               // V_j has landed\n", ""),
}


# ... and in mla_decode.cu's exchange of P between the warps that share a row tile
MLA_BROKEN_SYNC = {
    "no barrier after publishing a P slice": (
        "            __syncthreads();                                   // P slice c (and row sums) visible\n",
        ""),
    "no barrier before overwriting the P slice": (
        "            __syncthreads();                                   // P slice c and the tile consumed\n",
        ""),
}


@pytest.mark.parametrize("what", MLA_BROKEN_SYNC)
def test_emulator_catches_a_missing_synchronization_in_mla(what):
    old, new = MLA_BROKEN_SYNC[what]
    case = MLA_CASES[3]                                # d_c = 512: 4 warps share each row tile
    gpu = get_gpu("h100-sxm")
    wl = case.workload
    plan = get_algorithm("mla").plan(wl, gpu, gpu.smem_bytes_per_block,
                                     **check_options(get_algorithm("mla").INFO, case.options))
    spec = ports.port_launches("mla", wl, plan, gpu=gpu)
    assert_removal_is_caught(spec, make_inputs(wl, seed=1), "mla_decode.cu", "MLA_BROKEN_SYNC",
                             old, new)


@pytest.mark.parametrize("what", BROKEN_SYNC)
def test_emulator_catches_a_missing_synchronization(what):
    old, new = BROKEN_SYNC[what]
    wl = workload((1, 1, 1, 200, 200, 32, False))
    gpu = get_gpu("h100-sxm")
    spec = ports.port_launches("flash2", wl, get_algorithm("flash2").plan(wl, gpu, gpu.smem_bytes_per_block))
    assert_removal_is_caught(spec, make_inputs(wl, seed=1), "flash2_fwd.cu", "BROKEN_SYNC",
                             old, new)


@pytest.fixture
def emulated_backend(monkeypatch):
    """attnsim.gpu with the emulator standing in for CuPy (measured time fixed at 1 ms)."""
    from attnsim import gpu as backend

    def fake_run_port(spec, inputs, reference=None, keep_output=False, keep=(), **kw):
        run = emulate_mod.emulate(spec, inputs)
        outs = {n: ports.from_storage(run[n], spec.tensors[n].dtype) for n in spec.outputs}
        errs = backend.reference_errors(spec, outs, reference)     # every compared output
        kept = {n: run[n] for n in keep}
        return backend.PortRun(algorithm=spec.algorithm, median_s=1e-3, times_s=[1e-3],
                               rel_error=max(errs.values()) if errs else None, copies=2,
                               notes=spec.notes, rel_errors=errs,
                               outputs={**outs, **kept} if keep_output or keep else None)

    monkeypatch.setattr(backend, "gpu_available", lambda: (True, "emulated device"))
    monkeypatch.setattr(backend, "detect_gpu_model", lambda: (get_gpu("h100-sxm"), None))
    monkeypatch.setattr(backend, "run_port", fake_run_port)
    monkeypatch.setattr(backend, "sdpa_available", lambda: (False, "no torch (test)"))
    monkeypatch.setattr(backend, "environment", lambda: {"device": "emulated"})
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


def test_gpu_check_mla_decode_on_the_emulator(emulated_backend, capsys):
    """gpu-check's mla rows: a decode step over a latent cache (d_c = 512, d_h^R = 64), the
    port's output compared with the simulation's o_mla."""
    from attnsim.cli import main
    assert main(["gpu-check", "mla", "--seq", "150", "--batch", "1", "--heads", "4",
                 "--head-dim", "64", "--format", "json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["rows"]
    assert row["error_vs"] == "cpu" and row["rel_error"] < FP16_TARGET
    assert row["predicted_s"] > 0 and row["sdpa_s"] is None


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
    monkeypatch.setattr(backend, "environment", lambda: {"device": "emulated",
                                                         "sm_clock_max_mhz": 1980.0})
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
    assert data["environment"]["sm_clock_max_mhz"] == 1980.0
    assert data["model_clock_mhz"] == pytest.approx(get_gpu("h100-sxm").sustained_clock / 1e6)


def test_both_flash2_warp_layouts_are_correct():
    """benchmarks/flash2_warp_layout.py times WARP_M_TILES 1 and 2 against each other on a
    GPU; both layouts must compute the same attention (checked here on the emulator)."""
    script = load_benchmark("flash2_warp_layout")
    wl = workload((1, 2, 2, 150, 150, 64, True))
    gpu = get_gpu("h100-sxm")
    plan = get_algorithm("flash2").plan(wl, gpu, gpu.smem_bytes_per_block)
    inputs = make_inputs(wl, seed=1)
    cpu = simulate("flash2", wl, gpu, compute=True, inputs=inputs, check=False)
    base = ports.port_launches("flash2", wl, plan, gpu=gpu)
    for tiles in (1, 2):
        spec = script.variant(base, tiles)
        assert spec.launches[0].block[0] == plan.block_q // (16 * tiles) * 32
        o = emulate_mod.emulate(spec, inputs)["o"].astype(np.float32)
        assert relative_error(o, cpu.outputs["o"]) < FP16_TARGET


# The same for flash2_bwd.cu: without the barrier before the Q_i/dO_i refill, the copies
# land on tiles other warps are still reading; without the one after P_ij and dS_ij are
# stored (attn_st_shared32, checked for races), warps read P/dS rows other warps stored
# in the same epoch; without the wait, the copies land late, on tiles already being read.
BROKEN_BWD_SYNC = {
    "no barrier before the Q/dO refill":
        "        __syncthreads();                           // every warp is done with Q_i and dO_i\n",
    "no barrier after P and dS":
        "        __syncthreads();                           // P_ij and dS_ij are complete\n",
    "no wait for Q_i and dO_i":
        "        attn_cp_async_wait<0>();                   // Q_i, dO_i (and K_j, V_j) have landed\n",
}


@pytest.mark.parametrize("what", BROKEN_BWD_SYNC)
def test_emulator_catches_a_missing_synchronization_in_the_backward(what):
    old = BROKEN_BWD_SYNC[what]
    wl = workload((1, 1, 1, 200, 150, 32, False), passes="bwd")
    gpu = get_gpu("h100-sxm")
    spec = ports.port_launches("flash2", wl, get_algorithm("flash2").plan(wl, gpu, gpu.smem_bytes_per_block))
    inputs = make_inputs(wl, seed=1)
    intact = emulate_mod.emulate(spec, inputs)          # the same launches run clean unedited
    assert all(np.isfinite(intact[n].astype(np.float32)).all() for n in spec.outputs)
    assert_removal_is_caught(spec, inputs, "flash2_bwd.cu", "BROKEN_BWD_SYNC", old)


def test_gpu_check_pass_bwd_on_the_emulator(emulated_backend, capsys):
    """--pass fwd+bwd: flash2 runs its forward and backward kernels, compared on o, dq, dk,
    dv; the prediction is the simulation of both passes; standard's backward port as well."""
    from attnsim.cli import main
    from attnsim.simulate import simulate as sim
    assert main(["gpu-check", "flash2", "standard", "--seq", "97", "--batch", "1", "--heads",
                 "2", "--causal", "--pass", "fwd+bwd", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["passes"] == "fwd+bwd" and "fwd+bwd" in data["workload"]
    rows = {r["algorithm"]: r for r in data["rows"]}
    flash2, standard = rows["flash2"], rows["standard"]
    assert set(flash2["rel_errors"]) == {"o", "dq", "dk", "dv"}
    assert flash2["rel_error"] == max(flash2["rel_errors"].values()) < FP16_TARGET
    assert "errors: o" in flash2["note"]
    wl = workload((1, 2, 2, 97, 97, 64, True), passes="fwd+bwd")
    assert flash2["predicted_s"] == sim("flash2", wl, get_gpu("h100-sxm"), compute=False).time.predicted_s
    # standard's backward port (standard_bwd.cu) runs too: o, dq, dk, dv compared
    assert set(standard["rel_errors"]) == {"o", "dq", "dk", "dv"}
    assert standard["rel_error"] < FP16_TARGET and standard["measured_s"] is not None


def test_gpu_check_pass_bwd_alone_on_the_emulator(emulated_backend, capsys):
    """--pass bwd: dq, dk, dv compared (the CPU run outputs no o), O and lse from the setup."""
    from attnsim.cli import main
    assert main(["gpu-check", "flash2", "flash1", "--seq", "64", "--batch", "1", "--heads",
                 "2", "--pass", "bwd", "--format", "json"]) == 0
    rows = {r["algorithm"]: r for r in json.loads(capsys.readouterr().out)["rows"]}
    assert set(rows["flash2"]["rel_errors"]) == {"dq", "dk", "dv"}
    assert rows["flash2"]["rel_error"] < FP16_TARGET and "untimed forward" in rows["flash2"]["note"]
    # flash1's backward port (flash1_bwd.cu): O, l, m from its untimed forward
    assert set(rows["flash1"]["rel_errors"]) == {"dq", "dk", "dv"}
    assert rows["flash1"]["rel_error"] < FP16_TARGET and "untimed forward" in rows["flash1"]["note"]


def test_device_backward_reference_is_the_analytic_gradient(monkeypatch):
    """gpu.device_backward_reference (the reference above --cpu-check-max-n), run with
    NumPy standing in for CuPy, against the float64 reference."""
    from attnsim import gpu as backend
    from cuda_emu.fake_cupy import EmulatedCupy
    monkeypatch.setattr(backend, "_cupy", EmulatedCupy())
    wl = workload((2, 2, 2, 70, 90, 32, True), passes="fwd+bwd")
    inputs = make_inputs(wl, seed=4)
    ref = backend.device_backward_reference(wl, inputs)
    exact = attention_backward_reference(inputs.q, inputs.k, inputs.v, inputs.do, causal=True,
                                         scale=wl.scale)
    o, _ = attention_reference(inputs.q, inputs.k, inputs.v, causal=True, scale=wl.scale)
    assert relative_error(ref["o"], o) < 1e-5
    for name, x in zip(("dq", "dk", "dv"), exact):
        assert relative_error(ref[name], x) < 1e-5, name




# ---- diff (differential attention) -------------------------------------------------------------

def test_emulated_diff_bf16_within_twice_the_bf16_baseline():
    """The bf16 build: within twice the error of the float64 formula on bf16-rounded inputs,
    bf16-rounded (fp16_baseline's rule, on diff's own reference)."""
    (case,) = [c for c in DIFF_CASES if c.dtype == "bf16"]
    wl, gpu = case.workload, get_gpu("h100-sxm")
    cpu, out, inputs = run_emulated("diff", wl, gpu)
    exact, baseline = diff_fp16_baseline(inputs, wl, get_algorithm("diff").plan(
        wl, gpu, gpu.smem_bytes_per_block))
    assert relative_error(ports.from_storage(out["o"], wl.dtype), exact) <= 2 * baseline


def test_emulated_diff_large_logits_match_the_fp16_baseline():
    """Logits ~1e2 in both maps: error against diff's float64 reference at most twice the
    error of the same formula on fp16-rounded inputs with an fp16-rounded output."""
    wl = workload((1, 2, 2, 150, 150, 64, True))
    gpu = get_gpu("h100-sxm")
    _, out, inputs = run_emulated("diff", wl, gpu, magnitude=10.0)
    exact, baseline = diff_fp16_baseline(inputs, wl, get_algorithm("diff").plan(
        wl, gpu, gpu.smem_bytes_per_block))
    o = out["o"].astype(np.float32)
    assert np.isfinite(o).all()
    assert relative_error(o, exact) <= 2 * baseline


def test_emulated_diff_rows_that_see_no_key_are_zero():
    wl = workload((1, 1, 1, 333, 200, 128, True))      # causal, rows < 133 see no key
    cpu, out, _ = run_emulated("diff", wl, get_gpu("a100-40gb"))
    assert np.all(out["o"][0, 0, :133] == 0) and np.all(cpu.outputs["o"][0, 0, :133] == 0)
    assert np.all(np.any(out["o"][0, 0, 133:] != 0, axis=-1))


# Each edit removes one synchronization of diff_fwd.cu's single-buffered K/V loop.
DIFF_BROKEN_SYNC = {
    "no barrier before the K refill": (
        "                    __syncthreads();                             // every warp is done with K_j\n", ""),
    "no barrier before the V refill": (
        "        __syncthreads();                                         // every warp is done with V_j\n", ""),
    "no wait for V_j": (
        "                    attn_cp_async_wait<0>();                     // V_j has landed\n", ""),
}


@pytest.mark.parametrize("what", DIFF_BROKEN_SYNC)
def test_emulator_catches_a_missing_synchronization_in_diff(what):
    old, new = DIFF_BROKEN_SYNC[what]
    wl = workload((1, 1, 1, 200, 300, 64, False))
    gpu = get_gpu("h100-sxm")
    spec = ports.port_launches("diff", wl, get_algorithm("diff").plan(wl, gpu, gpu.smem_bytes_per_block))
    assert_removal_is_caught(spec, make_inputs(wl, seed=1), "diff_fwd.cu", "DIFF_BROKEN_SYNC",
                             old, new)


def test_gpu_check_diff_on_the_emulator(monkeypatch, capsys):
    """gpu-check for diff: the CPU simulation up to --cpu-check-max-n, above it diff's own
    float32 reference (two softmax maps), never the plain attention reference."""
    from attnsim import gpu as backend
    from attnsim.cli import main

    def fake_run_port(spec, inputs, reference=None, **kw):
        out = ports.from_storage(emulate_mod.emulate(spec, inputs)[spec.output],
                                 spec.tensors[spec.output].dtype)
        err = relative_error(out, reference) if reference is not None else None
        return backend.PortRun(algorithm=spec.algorithm, median_s=1e-3, times_s=[1e-3],
                               rel_error=err, copies=2, notes=spec.notes)

    def fake_reference(wl, inputs):            # float32 softmax attention, as on the device
        return attention_reference(inputs.q, inputs.k, inputs.v, causal=wl.causal,
                                   scale=wl.scale)[0].astype(np.float32)

    monkeypatch.setattr(backend, "gpu_available", lambda: (True, "emulated device"))
    monkeypatch.setattr(backend, "detect_gpu_model", lambda: (get_gpu("h100-sxm"), None))
    monkeypatch.setattr(backend, "run_port", fake_run_port)
    monkeypatch.setattr(backend, "device_reference", fake_reference)
    monkeypatch.setattr(backend, "sdpa_available", lambda: (False, "no torch (test)"))
    assert main(["gpu-check", "diff", "--seq", "97", "200", "--batch", "1", "--heads", "2",
                 "--causal", "--cpu-check-max-n", "100", "--format", "json"]) == 0
    rows = {r["seq"]: r for r in json.loads(capsys.readouterr().out)["rows"]}
    assert rows[97]["error_vs"] == "cpu" and rows[200]["error_vs"] == "gpu fp32"
    for row in rows.values():
        assert row["rel_error"] < FP16_TARGET and row["sdpa_s"] is None




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


# ---- SDPA's backends, and flash3's stand-in ----------------------------------------------------

def fake_sdpa_times(calls):
    """torch_sdpa_time stand-in: PyTorch's default 3 ms, flash 2 ms, cudnn 1.5 ms, and the
    efficient backend refusing (as SDPA does for what it cannot run)."""
    times = {None: 3e-3, "flash": 2e-3, "cudnn": 1.5e-3, "efficient": None}

    def fake(wl, inputs, *, repeats=30, warmup=3, sdpa_backend=None):
        calls.append(sdpa_backend)
        s = times[sdpa_backend]
        return s, "torch (fake)" if s is not None else "SDPA's efficient backend cannot run"
    return fake


def test_gpu_check_times_each_sdpa_backend(emulated_backend, monkeypatch, capsys):
    from attnsim.cli import main
    calls = []
    monkeypatch.setattr(emulated_backend, "sdpa_available", lambda: (True, "torch (fake)"))
    monkeypatch.setattr(emulated_backend, "torch_sdpa_time", fake_sdpa_times(calls))
    assert main(["gpu-check", "flash2", "--seq", "97", "--batch", "1", "--heads", "2",
                 "--format", "json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["rows"]
    assert row["sdpa_s"] == 3e-3 and row["of_sdpa"] == pytest.approx(3.0)   # measured: 1 ms
    assert row["sdpa_backends"] == {
        "flash": {"s": 2e-3, "why": "torch (fake)"},
        "cudnn": {"s": 1.5e-3, "why": "torch (fake)"},
        "efficient": {"s": None, "why": "SDPA's efficient backend cannot run"}}
    assert calls == [None, "flash", "cudnn", "efficient"]


def test_gpu_check_sets_flash3_against_sdpas_cudnn_backend(emulated_backend, monkeypatch,
                                                          capsys):
    """flash3 has no port: its row has the prediction and cuDNN's time, nothing measured."""
    from attnsim.cli import main
    calls = []
    monkeypatch.setattr(emulated_backend, "sdpa_available", lambda: (True, "torch (fake)"))
    monkeypatch.setattr(emulated_backend, "torch_sdpa_time", fake_sdpa_times(calls))
    assert main(["gpu-check", "flash3", "--seq", "4096", "--format", "json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["rows"]
    predicted = simulate("flash3", workload((4, 16, 16, 4096, 4096, 64, False)),
                         get_gpu("h100-sxm"), compute=False).time.predicted_s
    assert row["measured_s"] is None and row["ratio"] is None
    assert row["predicted_s"] == pytest.approx(predicted)
    assert row["stand_in"] == {"kernel": "sdpa-cudnn", "s": 1.5e-3,
                               "predicted_over_stand_in": pytest.approx(predicted / 1.5e-3)}
    assert calls == ["cudnn"] and "no CUDA port" in row["note"]


def test_gpu_check_flash3_on_an_a100_model_says_it_is_not_simulated(emulated_backend, capsys):
    from attnsim.cli import main
    assert main(["gpu-check", "flash3", "--hw", "a100", "--seq", "256", "--format",
                 "json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["rows"]
    assert row["predicted_s"] is None and row["note"].startswith("not simulated")


def _stub_torch(monkeypatch, attention=None):
    """A torch without a device API beyond is_available (enough to reach backend forcing)."""
    import sys
    import types
    torch = types.ModuleType("torch")
    torch.__version__ = "0.0-stub"
    torch.cuda = types.SimpleNamespace(is_available=lambda: True)
    nn = types.ModuleType("torch.nn")
    functional = types.ModuleType("torch.nn.functional")
    torch.nn, nn.functional = nn, functional
    for name, mod in (("torch", torch), ("torch.nn", nn), ("torch.nn.functional", functional)):
        monkeypatch.setitem(sys.modules, name, mod)
    if attention is not None:
        nn.attention = attention
        monkeypatch.setitem(sys.modules, "torch.nn.attention", attention)
    else:
        monkeypatch.setitem(sys.modules, "torch.nn.attention", None)   # ImportError


def test_a_forced_sdpa_backend_that_cannot_run_gives_pytorchs_reason(monkeypatch):
    import types
    from attnsim import gpu as backend
    forced = []

    class Refusing:
        def __enter__(self):
            raise RuntimeError("No available kernel. Aborting execution.\n(details)")

        def __exit__(self, *exc):
            return False

    attention = types.ModuleType("torch.nn.attention")
    attention.SDPBackend = types.SimpleNamespace(FLASH_ATTENTION="F", CUDNN_ATTENTION="C",
                                                 EFFICIENT_ATTENTION="E")
    attention.sdpa_kernel = lambda backends: forced.append(backends) or Refusing()
    _stub_torch(monkeypatch, attention)
    wl = workload(SHAPES[0])
    s, why = backend.torch_sdpa_time(wl, make_inputs(wl, seed=0), sdpa_backend="cudnn")
    assert s is None and forced == [["C"]]
    assert why == "SDPA's cudnn backend cannot run this workload: No available kernel. " \
                  "Aborting execution."


def test_forcing_a_backend_needs_sdpa_kernel(monkeypatch):
    from attnsim import gpu as backend
    _stub_torch(monkeypatch)
    wl = workload(SHAPES[0])
    s, why = backend.torch_sdpa_time(wl, make_inputs(wl, seed=0), sdpa_backend="flash")
    assert s is None and "sdpa_kernel" in why and ">= 2.3" in why
