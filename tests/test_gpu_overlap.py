"""benchmarks/gpu_overlap.py without a GPU: its loop compiles for sm_80 and sm_90 to what it
claims to time (MMAs, exps, a barrier), the comparison it prints is the timing model's own
rule applied to the measured phases, and a machine without a GPU gets one line and exit 2."""
import json
import shutil
import subprocess
import sys

import pytest

from _benchmarks import BENCHMARKS, load_benchmark

SCRIPT = BENCHMARKS / "gpu_overlap.py"


@pytest.fixture(scope="module")
def ov():
    return load_benchmark("gpu_overlap")


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not on PATH")
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_the_loop_compiles_to_mmas_exps_and_a_barrier(ov, arch, tmp_path):
    source = tmp_path / "overlap.cu"
    source.write_text(ov.OVERLAP_SOURCE)
    ptx = tmp_path / "overlap.ptx"
    done = subprocess.run(["nvcc", f"-arch={arch}", "-std=c++17", "-Werror", "all-warnings",
                           "-ptx", "-o", str(ptx), str(source)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    text = ptx.read_text()
    assert "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32" in text
    assert "ex2.approx.ftz.f32" in text
    assert "bar.sync" in text or "barrier.sync" in text


def test_one_chain_is_serial_and_many_hide_the_shorter_phase(ov):
    assert ov.model_ratio(1.0, 0.5, 1) == pytest.approx(1.0)
    # two chains over two stations of equal demand: mean-value analysis gives 1.5 D of 2 D
    assert ov.model_ratio(1.0, 1.0, 2) == pytest.approx(0.75)
    assert ov.model_ratio(1.0, 0.5, 400) == pytest.approx(1.0 / 1.5, rel=1e-3)


def test_the_exp_phase_is_scaled_to_last_as_long_as_the_gemm_phase(ov):
    assert ov.balanced_exp_steps(64, 2e-3, 1e-3) == 128
    assert ov.balanced_exp_steps(64, 1e-3, 4e-3) == 16
    assert ov.balanced_exp_steps(64, 1e-6, 1.0) == 1


def test_the_two_ctas_verdict_follows_the_nearer_reading(ov):
    """Two CTAs per SM: the model counts one chain with lockstep_ctas (the loop takes G + P)
    and two without (mean-value analysis: 0.75 of G + P when G = P)."""
    two = next(a for a in ov.ARRANGEMENTS if a.name == "two CTAs")
    in_step = ov.compare(ov.Timing("two CTAs", 1e-3, 1e-3, 1.98e-3), two)
    assert in_step["closer_to"] == "lockstep"
    assert in_step["measured"] == pytest.approx(0.99)
    assert (in_step["model_lockstep"], in_step["model_free"]) == pytest.approx((1.0, 0.75))
    assert in_step["hidden"] == pytest.approx(0.5)
    apart = ov.compare(ov.Timing("two CTAs", 1e-3, 1e-3, 1.5e-3), two)
    assert apart["closer_to"] == "out of step"
    control = ov.compare(ov.Timing("one warp a sub-partition", 1e-3, 1e-3, 2e-3),
                         ov.ARRANGEMENTS[0])
    assert "closer_to" not in control          # both readings of the model agree there


def test_the_arrangements_put_one_warp_of_each_group_on_every_sub_partition(ov):
    """Warps go to sub-partitions by index modulo 4: every arrangement runs whole groups of
    four, and the staggered one has two, so each sub-partition holds one warp of each."""
    assert all(a.warps % 4 == 0 and a.ctas_per_sm * a.warps <= 8 for a in ov.ARRANGEMENTS)
    assert all(a.warps == 8 and a.barrier for a in ov.ARRANGEMENTS if a.stagger)
    assert [a.name for a in ov.ARRANGEMENTS if a.chains_lockstep != a.chains_free] == \
        ["two CTAs", "free warps"]


def test_the_table_has_a_row_per_arrangement(ov):
    timings = [ov.Timing(a.name, 1e-3, 1.1e-3, 1.9e-3) for a in ov.ARRANGEMENTS]
    rows = ov.report_rows(timings)
    assert len(rows) == len(ov.ARRANGEMENTS)
    assert all(len(r) == len(ov.HEADERS) for r in rows)
    assert rows[0][5] == f"{1.9 / 2.1:.3f}"


def test_without_a_gpu_one_line_and_exit_2():
    probe = subprocess.run([sys.executable, "-c",
                            "import cupy, sys; sys.exit(0 if cupy.cuda.runtime."
                            "getDeviceCount() else 1)"], capture_output=True)
    if probe.returncode == 0:
        pytest.skip("this machine has a GPU")
    done = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True,
                          cwd=BENCHMARKS.parent)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1
    assert done.stderr.startswith("gpu_overlap: ")
    assert "Traceback" not in done.stderr


class _FakeCupy:
    """Just enough of CuPy for ``measure()``: every launch is recorded, and takes the time a
    toy GPU would (1 µs an MMA group, 0.5 µs an exp step, the phases serial), so the whole
    script runs here: launch geometry, balancing, the table and the JSON."""

    def __init__(self, sms):
        self.launches, self.sms, self._elapsed = [], sms, 0.0
        cuda = type("cuda", (), {})()
        cuda.Event = lambda: type("Event", (), {"record": lambda s: None,
                                                "synchronize": lambda s: None})()
        cuda.get_elapsed_time = lambda start, end: self._elapsed * 1e3
        self.cuda = cuda
        self.int32 = int
        self.float32 = "float32"

    def zeros(self, n, dtype):
        return [0.0] * n

    def RawKernel(self, source, name):
        assert name == "overlap_loop" and name in source

        def launch(grid, block, args):
            out, iters, groups, steps, barrier, stagger = args
            assert len(out) >= grid[0] * block[0]
            self.launches.append((grid[0], block[0], groups, steps, barrier, stagger))
            self._elapsed = iters * (groups * 1e-6 + steps * 0.5e-6)
        return launch


def test_the_measurement_runs_end_to_end_on_a_stand_in(ov, monkeypatch, tmp_path, capsys):
    fake = _FakeCupy(sms=132)
    monkeypatch.setattr(ov, "_require_cupy", lambda: (fake, {
        "multiProcessorCount": 132, "name": b"Stand-in", "major": 9, "minor": 0}))
    out = tmp_path / "overlap.json"
    assert ov.main(["--json", str(out)]) == 0
    # the exp phase balanced against 8 MMA groups: 16 steps of 0.5 µs
    geometry = {(grid, block, barrier, stagger) for grid, block, _, _, barrier, stagger
                in fake.launches}
    assert geometry == {(132, 128, 1, 0), (132, 256, 1, 0), (132, 256, 1, 1),
                        (264, 128, 1, 0), (132, 256, 0, 0)}
    data = json.loads(out.read_text())
    assert data["exp_steps"] == 16
    assert all(c["measured"] == pytest.approx(1.0) for c in data["comparison"])
    assert "ping-pong" in capsys.readouterr().out
