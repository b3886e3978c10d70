"""The CUDA ports on a real GPU, on the same cases as the CPU tests (tests/port_cases.py).

Each port's fp16 output must match the CPU simulation of the same algorithm on the same
inputs to a relative error < 2e-3 (the ports' target; bf16 cases: < 1.6e-2 and, for exact
attention, within twice the error of plain bf16 attention), ragged sizes, causal and not, GQA.
Skipped without CuPy or a CUDA device (tests/gpu/conftest.py). No timing assertions.
"""
import json

import numpy as np
import pytest

from algorithms import ports
from algorithms.base import check_options
from algorithms.registry import get_algorithm
from attnsim import make_inputs, simulate
from attnsim import gpu as backend
from attnsim.reference import attention_reference, relative_error
from port_cases import PORT_CASES, backward_baseline, fp16_baseline, workload

pytestmark = pytest.mark.gpu
FP16_TARGET = ports.ERROR_TARGETS["fp16"]


def device_model():
    gpu, _ = backend.detect_gpu_model()
    return gpu


def run_case(name, wl, magnitude=1.0, options=None):
    gpu = device_model()
    module = get_algorithm(name)
    try:
        plan = module.plan(wl, gpu, gpu.smem_bytes_per_block,
                           **check_options(module.INFO, options or {}))
    except ValueError as err:
        pytest.skip(f"the simulator does not plan this case: {err}")
    inputs = make_inputs(wl, seed=1, magnitude=magnitude)
    cpu = simulate(name, wl, gpu, compute=True, inputs=inputs, check=False, options=options)
    spec = ports.port_launches(name, wl, plan, cpu.extra, gpu=gpu)
    reference = {n: cpu.outputs[spec.cpu_key(n)] for n in spec.outputs}     # o; dq, dk, dv for a backward
    keep = ("sel",) if name == "nsa" else ()          # its top-n, judged on its own
    run = backend.run_port(spec, inputs, reference, warmup=0, repeats=1, keep_output=True,
                           keep=keep)
    return cpu, run, inputs


def test_the_emulated_subset_names_existing_cases():
    assert EMULATED_SUBSET <= {c.id for c in PORT_CASES}


# Run on every pytest without a GPU, on the emulated CuPy (conftest.py): one port of each
# family — dense forward (GQA, ragged, d padded to the MMA step), its backward, split-KV
# decode, the sparse executor, the feature-map family, MLA's absorbed decode, differential
# attention.
EMULATED_SUBSET = {
    "flash2-b2h4g2-200x333-d40-causal",
    "flash2-b1h2g2-97x97-d64-causal-bwd",
    "gqa-decode-b2h8g2-1x300-d64-full-splits=2",
    "local-b1h2g2-97x97-d64-causal-window=64",
    "linear-b1h2g2-97x97-d64-causal",
    "mla-decode-b2h4g4-1x300-d32-full-kv_lora_rank=64-rope_dim=16",
    "diff-b1h2g2-97x97-d64-causal",
}
EMULATED = pytest.mark.emulated_subset


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=EMULATED if c.id in EMULATED_SUBSET
                                               else ()) for c in PORT_CASES])
def test_port_matches_the_cpu_result(case):
    wl = case.workload
    cpu, run, inputs = run_case(case.name, wl, options=case.options)
    assert all(np.isfinite(x).all() for x in run.outputs.values())
    error = run.rel_error                                      # the largest over the outputs
    if case.name == "nsa":
        # a top-n flip at a near-tie of the block scores is right either way: judged where
        # the selections agree and against the float64 reference with the port's selection
        from attnsim.gpu_check import nsa_selection_verdict
        plan = get_algorithm("nsa").plan(wl, device_model(), device_model().smem_bytes_per_block,
                                         **check_options(get_algorithm("nsa").INFO, case.options))
        verdict = nsa_selection_verdict(wl, plan, inputs, run.outputs["o"], run.outputs["sel"],
                                        cpu.outputs)
        assert verdict["all_near_ties"], verdict["note"]
        error = verdict["judged_error"]
    assert error < ports.ERROR_TARGETS[wl.dtype]
    if wl.dtype == "bf16" and case.name in ("flash2", "flash1", "standard", "gqa"):
        baseline = backward_baseline(inputs, wl) if wl.has_backward else {}
        for name, err in run.rel_errors.items():
            assert err <= 2 * baseline.get(name, fp16_baseline(inputs, wl)), name


@pytest.mark.parametrize("name", ("flash1", "flash2"))
def test_large_logits_stay_finite_and_accurate(name):
    """Logits ~1e2: the online softmax must subtract the running max. (standard is left out:
    it stores S in fp16 by design, so its error at such logits is the fp16 rounding of S.)"""
    wl = workload((1, 2, 2, 150, 150, 64, True))
    cpu, run, inputs = run_case(name, wl, magnitude=10.0)
    exact, _ = attention_reference(inputs.q, inputs.k, inputs.v, causal=True, scale=wl.scale)
    assert np.isfinite(run.output).all()
    assert relative_error(run.output, exact) <= max(2 * fp16_baseline(inputs, wl), FP16_TARGET)


def test_causal_rows_that_see_no_key_are_zero():
    wl = workload((1, 1, 1, 333, 200, 64, True))     # rows i < 133 see no key
    _, run, _ = run_case("flash2", wl)
    assert np.all(run.output[0, 0, :133] == 0)


def test_flash2_lse_matches_the_reference():
    wl = workload((2, 4, 2, 200, 333, 40, True))
    gpu = device_model()
    plan = get_algorithm("flash2").plan(wl, gpu, gpu.smem_bytes_per_block)
    inputs = make_inputs(wl, seed=2)
    spec = ports.port_launches("flash2", wl, plan, gpu=gpu)
    cp = backend._import_cupy()
    tensors = backend._device_tensors(spec, inputs)
    backend._launch_all(spec, [backend.get_kernel(l) for l in spec.launches], tensors)
    lse = cp.asnumpy(tensors["lse"])
    _, ref = attention_reference(inputs.q, inputs.k, inputs.v, causal=True, scale=wl.scale)
    assert np.allclose(lse, ref, rtol=1e-3, atol=1e-3)


@EMULATED
def test_gpu_check_end_to_end_json(capsys):
    from attnsim.cli import main
    assert main(["gpu-check", "flash2", "--seq", "256", "512", "--batch", "1", "--heads", "2",
                 "--repeats", "3", "--no-sdpa", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [r["seq"] for r in data["rows"]] == [256, 512]
    for row in data["rows"]:
        assert row["measured_s"] > 0 and row["predicted_s"] > 0
        assert row["rel_error"] < FP16_TARGET


def test_flash2_backward_large_logits_against_the_float64_gradients():
    """Logits ~1e2: each gradient within twice the error of the exact gradients of the
    fp16-rounded inputs, rounded to fp16."""
    from attnsim.reference import attention_backward_reference
    wl = workload((1, 2, 2, 150, 150, 64, True), passes="bwd")
    _, run, inputs = run_case("flash2", wl, magnitude=10.0)
    exact = attention_backward_reference(inputs.q, inputs.k, inputs.v, inputs.do, causal=True,
                                         scale=wl.scale)
    baseline = backward_baseline(inputs, wl)
    for name, ref in zip(("dq", "dk", "dv"), exact):
        assert np.isfinite(run.outputs[name]).all()
        assert relative_error(run.outputs[name], ref) <= max(2 * baseline[name], FP16_TARGET)


def test_gpu_check_backward_json(capsys):
    from attnsim.cli import main
    assert main(["gpu-check", "flash2", "--seq", "256", "--batch", "1", "--heads", "2",
                 "--pass", "fwd+bwd", "--causal", "--repeats", "3", "--no-sdpa",
                 "--format", "json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["rows"]
    assert row["measured_s"] > 0 and row["predicted_s"] > 0
    assert set(row["rel_errors"]) == {"o", "dq", "dk", "dv"} and row["rel_error"] < FP16_TARGET
