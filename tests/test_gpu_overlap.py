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
def test_the_mma_sync_loop_compiles_to_mmas_exps_and_a_barrier(ov, arch, tmp_path):
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


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not on PATH")
def test_the_wgmma_loops_compile_for_sm90a_and_stay_asynchronous(ov, tmp_path):
    """Both wgmma kernels build, and ptxas does not serialize their wgmma: it does so
    (advisories C7512, C7518) when divergent code or a lack of registers would touch the
    accumulators of a wgmma in flight, and the pipelined loop would then time nothing of
    what it claims."""
    source = tmp_path / "overlap_wgmma.cu"
    source.write_text(ov.WGMMA_SOURCE)
    done = subprocess.run(["nvcc", "-arch=sm_90a", "-std=c++17", "-Werror", "all-warnings",
                           "-cubin", "-Xptxas", "-v", "-o", str(tmp_path / "w.cubin"),
                           str(source)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "serialized" not in done.stderr, done.stderr
    for name in ("overlap_wgmma", "overlap_wgmma_pipelined"):
        assert f"Compiling entry function '{name}' for 'sm_90a'" in done.stderr
    assert "0 bytes spill stores" in done.stderr
    ptx = tmp_path / "w.ptx"
    subprocess.run(["nvcc", "-arch=sm_90a", "-std=c++17", "-ptx", "-o", str(ptx), str(source)],
                   check=True, capture_output=True)
    text = ptx.read_text()
    assert "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16" in text
    assert "wgmma.wait_group.sync.aligned 1" in text          # the pipelined kernel
    assert "ex2.approx.ftz.f32" in text


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
    four (a warpgroup), and the staggered ones two, so each sub-partition holds one warp of
    each; every loop has an unpipelined ping-pong to balance its phases in; the lockstep
    question is asked of CTAs and warps (mma.sync) and of warpgroups (wgmma) with no barrier
    between them, and only wgmma pipelines."""
    assert all(a.warps % 4 == 0 and a.ctas_per_sm * a.warps <= 8 for a in ov.ARRANGEMENTS)
    assert all(a.warps == 8 and a.barrier for a in ov.ARRANGEMENTS if a.stagger)
    for path in (ov.MMA_SYNC, ov.WGMMA):
        assert any(a.stagger and not a.pipelined for a in ov.ARRANGEMENTS if a.path == path)
    assert [a.name for a in ov.ARRANGEMENTS if a.chains_lockstep != a.chains_free] == \
        ["two CTAs", "free warps", "two warpgroups, free"]
    assert {a.path for a in ov.ARRANGEMENTS if a.pipelined} == {ov.WGMMA}
    # the model's FlashAttention-3 count: 2 chains per warpgroup when pipelined
    fa3 = next(a for a in ov.ARRANGEMENTS if a.stagger and a.pipelined)
    assert fa3.chains_lockstep == 2 * fa3.warps // 4
    assert {a.kernel for a in ov.ARRANGEMENTS} == {"overlap_loop", "overlap_wgmma",
                                                   "overlap_wgmma_pipelined"}


def test_the_table_has_a_row_per_arrangement(ov):
    timings = [ov.Timing(a.name, 1e-3, 1.1e-3, 1.9e-3) for a in ov.ARRANGEMENTS]
    rows = ov.report_rows(timings)
    assert len(rows) == len(ov.ARRANGEMENTS)
    assert all(len(r) == len(ov.HEADERS) for r in rows)
    assert rows[0][:2] == [ov.MMA_SYNC, "one warp a sub-partition"]
    assert rows[0][6] == f"{1.9 / 2.1:.3f}"


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
    toy GPU would (1 µs a GEMM group, 0.5 µs an exp step, the phases serial), so the whole
    script runs here: both loops' launch geometry, balancing, the table and the JSON."""

    def __init__(self):
        self.launches, self._elapsed, self.built = [], 0.0, []
        fake = self

        class nvrtc:
            class NVRTCError(Exception):
                pass

            @staticmethod
            def createProgram(source, name, headers, include_names):
                assert "overlap_wgmma_pipelined" in source
                return 7

            @staticmethod
            def compileProgram(program, options):
                fake.built.append(tuple(options))

            getCUBIN = staticmethod(lambda program: b"cubin")
            getProgramLog = staticmethod(lambda program: "")
            destroyProgram = staticmethod(lambda program: None)

        self.cuda = type("cuda", (), {})()
        self.cuda.nvrtc = nvrtc
        self.cuda.Event = lambda: type("Event", (), {"record": lambda s: None,
                                                     "synchronize": lambda s: None})()
        self.cuda.get_elapsed_time = lambda start, end: self._elapsed * 1e3
        self.int32 = int
        self.float32 = "float32"

    def zeros(self, n, dtype):
        return [0.0] * n

    def _kernel(self, name):
        def launch(grid, block, args):
            out, iters, groups, steps, barrier, stagger = args
            assert len(out) >= grid[0] * block[0]
            self.launches.append((name, grid[0], block[0], barrier, stagger))
            self._elapsed = iters * (groups * 1e-6 + steps * 0.5e-6)
        return launch

    def RawKernel(self, source, name):
        assert name == "overlap_loop" and name in source
        return self._kernel(name)

    def RawModule(self, path):
        assert open(path, "rb").read() == b"cubin"
        return type("Module", (), {"get_function": lambda s, name: self._kernel(name)})()


def test_the_measurement_runs_end_to_end_on_a_stand_in(ov, monkeypatch, tmp_path, capsys):
    fake = _FakeCupy()
    monkeypatch.setattr(ov, "_require_cupy", lambda: (fake, {
        "multiProcessorCount": 132, "name": b"Stand-in", "major": 9, "minor": 0}))
    out = tmp_path / "overlap.json"
    assert ov.main(["--json", str(out)]) == 0
    assert fake.built == [("-arch=sm_90a", "-std=c++17")]
    assert set(fake.launches) == {
        ("overlap_loop", 132, 128, 1, 0), ("overlap_loop", 132, 256, 1, 0),
        ("overlap_loop", 132, 256, 1, 1), ("overlap_loop", 264, 128, 1, 0),
        ("overlap_loop", 132, 256, 0, 0),
        ("overlap_wgmma", 132, 128, 1, 0), ("overlap_wgmma", 132, 256, 1, 0),
        ("overlap_wgmma", 132, 256, 1, 1), ("overlap_wgmma", 132, 256, 0, 0),
        ("overlap_wgmma_pipelined", 132, 128, 1, 0),
        ("overlap_wgmma_pipelined", 132, 256, 1, 1),
        ("overlap_wgmma_pipelined", 132, 256, 1, 0)}
    data = json.loads(out.read_text())
    # the exp phase balanced against 8 GEMM groups: 16 steps of 0.5 µs
    assert data["exp_steps"] == {ov.MMA_SYNC: 16, ov.WGMMA: 16}
    assert len(data["comparison"]) == len(ov.ARRANGEMENTS)
    assert all(c["measured"] == pytest.approx(1.0) for c in data["comparison"])
    assert data["notes"] == []
    assert "ping-pong, pipelined" in capsys.readouterr().out


def test_a_gpu_before_hopper_measures_the_mma_sync_loop_and_says_why_not_wgmma(
        ov, monkeypatch, capsys):
    fake = _FakeCupy()
    monkeypatch.setattr(ov, "_require_cupy", lambda: (fake, {
        "multiProcessorCount": 108, "name": b"Stand-in", "major": 8, "minor": 0}))
    assert ov.main([]) == 0
    assert {launch[0] for launch in fake.launches} == {"overlap_loop"}
    assert "note: wgmma loop not measured: wgmma needs a Hopper (sm_90) GPU" in \
        capsys.readouterr().out


def test_a_wgmma_loop_that_does_not_build_is_a_note_and_the_mma_sync_figures_stay(
        ov, monkeypatch, capsys):
    fake = _FakeCupy()

    def refuse(program, options):
        raise fake.cuda.nvrtc.NVRTCError("NVRTC_ERROR_COMPILATION")
    fake.cuda.nvrtc.compileProgram = staticmethod(refuse)
    fake.cuda.nvrtc.getProgramLog = staticmethod(lambda p: "line 1\nerror: no sm_90a here\n")
    monkeypatch.setattr(ov, "_require_cupy", lambda: (fake, {
        "multiProcessorCount": 132, "name": b"Stand-in", "major": 9, "minor": 0}))
    assert ov.main([]) == 0
    printed = capsys.readouterr().out
    assert "note: wgmma loop not measured: RuntimeError: NVRTC could not build it for " \
           "sm_90a: error: no sm_90a here" in printed
    assert "two CTAs" in printed
