"""benchmarks/profile_eager.py without a GPU: its steps are the simulated program's kernels,
in launch order, and its predictions are the simulator's; bad shapes get one line, exit 2."""
import pathlib
import subprocess
import sys

import pytest

from _benchmarks import load_benchmark
from algorithms.standard.pytorch_eager import kernel_names
from attnsim.simulate import simulate
from attnsim.workload import Workload

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "profile_eager.py"


@pytest.fixture(scope="module")
def pe():
    return load_benchmark("profile_eager")


@pytest.mark.parametrize("causal", [False, True])
def test_the_steps_are_the_simulated_kernels_in_launch_order(pe, causal):
    shape = pe.Shape(512, 128, causal)
    predicted = pe.predicted_steps(shape)
    wl = Workload(batch=32, heads=16, seq_q=512, head_dim=128, causal=causal)
    assert tuple(predicted) == kernel_names(wl)
    # the script's own step names (the marks of measured_steps) cover every kernel
    source = SCRIPT.read_text()
    assert all(f'mark("{name}")' in source for name in predicted)
    table = pe.rows(predicted, None)
    assert table[-1][0] == "total"
    assert float(table[-1][1]) == pytest.approx(sum(predicted.values()) * 1e6, abs=0.1)


@pytest.mark.parametrize("causal", [False, True])
def test_the_backward_steps_are_the_simulated_backward_kernels(pe, causal):
    from algorithms.standard.pytorch_eager_backward import kernel_names as backward_names
    shape = pe.Shape(1024, 64, causal)
    predicted = pe.predicted_steps(shape, passes="bwd")
    wl = Workload(batch=16, heads=32, seq_q=1024, head_dim=64, causal=causal, passes="bwd")
    # a step per op: ATen's softmax backward launches its product and its row kernel in one
    assert tuple(predicted) == tuple(n for n in backward_names(wl) if n != "softmax_bwd_mul")
    run = simulate("standard", wl, "h100-sxm", compute=False,
                   options={"program": "pytorch-eager"})
    kernel_s = {k.name: k.total_s for k in run.time.kernels}
    assert predicted["softmax_bwd"] == pytest.approx(kernel_s["softmax_bwd_mul"]
                                                     + kernel_s["softmax_bwd"])
    source = SCRIPT.read_text()
    assert all(f'mark("{name}")' in source for name in predicted)
    # the whole autograd backward, measured beside the steps, is compared with their total
    table = pe.rows(predicted, {**{name: 1e-6 for name in predicted}, "autograd (whole)": 2e-6})
    assert table[-2][0] == "total" and table[-1][0] == "autograd (whole)"
    assert float(table[-1][3]) == pytest.approx(sum(predicted.values()) / 2e-6, rel=1e-2)


def test_predict_only_runs_without_a_gpu_and_bad_shapes_exit_2():
    done = subprocess.run([sys.executable, str(SCRIPT), "--predict-only", "--seq", "1024",
                           "--causal"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "N 1024, d 128, causal" in done.stdout and "mask_triu" in done.stdout
    assert "backward" in done.stdout and "stack_k" in done.stdout
    assert "DRAM MB (model)" in done.stdout and "of copy" in done.stdout
    bad = subprocess.run([sys.executable, str(SCRIPT), "--predict-only", "--head-dim", "96"],
                         capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2
    assert bad.stderr.startswith("profile_eager: --seq takes")
    assert len(bad.stderr.strip().splitlines()) == 1


def test_the_bandwidth_table_divides_the_models_bytes_by_the_measured_time(pe):
    """Each step's reached bandwidth is the model's DRAM bytes over its measured time, and
    its share of the copy rate; steps without a measurement show dashes. The bytes are the
    kernels' own, a step summing the kernels its op launches."""
    shape = pe.Shape(1024, 64, False)
    dram = pe.predicted_step_dram(shape, passes="bwd")
    assert tuple(dram) == tuple(pe.predicted_steps(shape, passes="bwd"))
    wl = Workload(batch=16, heads=32, seq_q=1024, head_dim=64, passes="bwd")
    run = simulate("standard", wl, "h100-sxm", compute=False,
                   options={"program": "pytorch-eager"})
    by_kernel = {k.name: k.dram_bytes for k in run.time.kernels}
    assert dram["softmax_bwd"] == by_kernel["softmax_bwd_mul"] + by_kernel["softmax_bwd"]
    table = pe.bandwidth_rows({"a": 2e9, "b": 1e9}, {"a": 1e-3}, 4e12)
    assert table[0] == ["a", "2000.0", "2000", "0.50"]
    assert table[1] == ["b", "1000.0", "—", "—"]
    assert pe.bandwidth_rows({"a": 2e9}, None, None)[0][2:] == ["—", "—"]
