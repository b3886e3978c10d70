"""benchmarks/profile_eager.py without a GPU: its steps are the simulated program's kernels,
in launch order, and its predictions are the simulator's; bad shapes get one line, exit 2."""
import pathlib
import subprocess
import sys

import pytest

from _benchmarks import load_benchmark
from algorithms.standard.pytorch_eager import kernel_names
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


def test_predict_only_runs_without_a_gpu_and_bad_shapes_exit_2():
    done = subprocess.run([sys.executable, str(SCRIPT), "--predict-only", "--seq", "1024",
                           "--causal"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "N 1024, d 128, causal" in done.stdout and "mask_triu" in done.stdout
    bad = subprocess.run([sys.executable, str(SCRIPT), "--predict-only", "--head-dim", "96"],
                         capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2
    assert bad.stderr.startswith("profile_eager: --seq takes")
    assert len(bad.stderr.strip().splitlines()) == 1
