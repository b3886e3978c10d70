"""benchmarks/gpu_microbench.py without a GPU: the measured numbers become the GPU fields the
timing model reads (checked against the datasheet, implausible ones refused), the GPU file it
writes loads back, its CUDA kernels compile for sm_80 and sm_90, and a machine without a GPU
gets one line and exit status 2."""
import pathlib
import shutil
import subprocess
import sys

import pytest

from _benchmarks import load_benchmark
from hwmodels import get_gpu
from hwmodels.gpu_file import load_gpu_file

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_microbench.py"


@pytest.fixture(scope="module")
def mb():
    return load_benchmark("gpu_microbench")


def h100_measurements(mb, **changes):
    m = mb.Measurements(device="NVIDIA H100 80GB HBM3 (sm_90, 132 SMs)", sm_count=132,
                        gemm_flops_per_s={"fp16": 780e12, "bf16": 795e12, "fp8": 1400e12,
                                          "tf32": 410e12},
                        sustained_clock_hz=1755.4e6, max_clock_hz=1980e6,
                        copy_bytes_per_s=3.0e12, triad_bytes_per_s=3.1e12,
                        dram_latency_s=352.34e-9, l2_read_bytes_per_s=9.9e12,
                        mma_sync_flops_per_s=520e12,
                        ex2_per_s=16 * 132 * 1755.4e6 * 0.98,
                        alu_max_per_s=64 * 132 * 1980e6 * 0.97,
                        fma_per_s=128 * 132 * 1980e6 * 0.99,
                        latency_clocks={"mma_latency_clocks": 33.2, "smem_latency_clocks": 29.04,
                                        "sfu_latency_clocks": 18.0, "fp_latency_clocks": 4.0,
                                        "shfl_latency_clocks": 23.0,
                                        "barrier_latency_clocks": 41.5})
    for key, value in changes.items():
        setattr(m, key, value)
    return m


def test_measurements_become_fractions_of_the_datasheet(mb):
    gpu = get_gpu("h100-sxm")
    d = mb.derive_fields(h100_measurements(mb), gpu)
    assert d.fields["tensor_gemm_fraction"] == pytest.approx(795e12 / 989.4e12, abs=1e-4)
    assert d.fields["tensor_fp8_gemm_fraction"] == pytest.approx(1400e12 / 1978.9e12, abs=1e-4)
    assert d.fields["tensor_tf32_gemm_fraction"] == pytest.approx(410e12 / 494.7e12, abs=1e-4)
    assert d.fields["hbm_achievable_fraction"] == pytest.approx(
        3.1e12 / gpu.hbm_bandwidth_bytes_per_s, abs=1e-4)
    assert d.fields["l2_achievable_fraction"] == pytest.approx(9.9e12 / 12e12, abs=1e-4)
    assert d.fields["sustained_clock_hz"] == 1755e6
    assert d.fields["dram_latency_s"] == pytest.approx(352.3e-9)
    assert d.ex2_per_clock_per_sm == pytest.approx(16 * 0.98 * 1755.4 / 1980)  # boost clock
    assert "sfu_ops_per_clock_per_sm" not in d.fields                         # reported only
    assert d.alu_per_clock_per_sm == pytest.approx(64 * 0.97)                  # the loops run
    assert d.fma_per_clock_per_sm == pytest.approx(128 * 0.99)                 # at the boost
    assert {"alu_lanes_per_sm", "fp32_lanes_per_sm"}.isdisjoint(d.fields)     # clock
    assert [d.fields[name] for name in mb.LATENCY_FIELDS] == \
        [33.2, 29.0, 18.0, 4.0, 23.0 + 4.0, pytest.approx(41.5 - 8 * 2.045, abs=0.05)]
    assert not d.rejected
    assert d.mma_sync_ceiling_flops_per_s == 520e12
    assert d.model_mma_sync_flops_per_s == pytest.approx(
        989.4e12 * gpu.tensor_gemm_fraction * gpu.mma_sync_fraction_of_peak)


def test_implausible_measurements_are_refused_with_the_reason(mb):
    gpu = get_gpu("h100-sxm")
    m = h100_measurements(mb, gemm_flops_per_s={"fp16": 1.2e15}, dram_latency_s=5e-6,
                          sustained_clock_hz=3.5e9, triad_bytes_per_s=None,
                          latency_clocks={"mma_latency_clocks": 0.2, "fp_latency_clocks": 4.0})
    d = mb.derive_fields(m, gpu)
    assert "0.2 clocks is outside 1-1000" in d.rejected["mma_latency_clocks"]
    assert d.fields["fp_latency_clocks"] == 4.0
    assert {"tensor_gemm_fraction", "dram_latency_s", "sustained_clock_hz"} <= set(d.rejected)
    assert "1.21x the datasheet" in d.rejected["tensor_gemm_fraction"]
    assert "5000 ns" in d.rejected["dram_latency_s"]
    assert "hbm_achievable_fraction" not in d.fields | d.rejected      # not measured
    rows = {r[0]: r for r in mb.report_rows(gpu, d)}
    assert rows["tensor_gemm_fraction"][3].startswith("implausible")
    assert rows["hbm_achievable_fraction"][3] == "not measured"
    assert rows["dram_latency_s"][3].startswith("implausible")
    assert rows["tensor_fp8_gemm_fraction"][3] == "not measured"
    assert rows["ex2 per SM and clock"][3] == "reported only"
    assert rows["smem_latency_clocks"][3] == "not measured"
    assert rows["smem_latency_clocks"][2] == "29.0 clk"
    assert rows["barrier_latency_clocks"][2] == "8.2 clk"        # the H100's, [AMORA-BAR]
    assert rows["max.f32 (ALU) per SM and clock"][2] == "64 (alu_lanes_per_sm)"
    assert rows["fma.f32 (FMA) per SM and clock"][2] == "128 (fp32_lanes_per_sm)"


# An H100 SXM5's sweep as it might measure: GH200's rows scaled to its 3.35 TB/s of HBM
SWEEP = dict(zip((64, 128, 256, 512, 768, 1024, 1536, 2048),
                 (237e9, 464e9, 854e9, 1397e9, 1868e9, 2200e9, 2650e9, 2850e9)))


def test_the_occupancy_sweep_becomes_the_stream_curve(mb):
    """Rows that rise as a memory does are written with the board's SMs and its best stream
    rate (the triad of the same run, 3.1 TB/s, above the sweep's top); a row above the
    datasheet, or one faster than the row before per thread, is refused with the reason."""
    gpu = get_gpu("h100-sxm")
    d = mb.derive_fields(h100_measurements(mb, stream_sweep=SWEEP), gpu)
    assert d.fields["stream_curve"] == [[t, rate] for t, rate in SWEEP.items()]
    assert d.fields["stream_curve_sm_count"] == 132
    assert d.fields["stream_curve_peak_bytes_per_s"] == 3.1e12
    rows = {r[0]: r for r in mb.report_rows(gpu, d)}
    assert rows["stream round, lightest to heaviest load"][1:] == \
        ["570–1518 ns", "570–1363 ns", "written"]
    fast = mb.derive_fields(h100_measurements(mb, stream_sweep={**SWEEP, 2048: 4e12}), gpu)
    assert "above the datasheet" in fast.rejected["stream_curve"]
    dip = mb.derive_fields(h100_measurements(mb, stream_sweep={**SWEEP, 256: 1000e9}), gpu)
    assert "not as a memory does" in dip.rejected["stream_curve"]
    assert "stream_curve" not in dip.fields and "stream_curve" not in \
        mb.derive_fields(h100_measurements(mb), gpu).fields


def test_the_gpu_file_loads_back_with_the_measured_constants(mb, tmp_path):
    gpu = get_gpu("h100-sxm")
    m = h100_measurements(mb, stream_sweep=SWEEP)
    d = mb.derive_fields(m, gpu)
    path = tmp_path / "measured.toml"
    path.write_text(mb.toml_text(gpu, d, m))
    loaded = load_gpu_file(str(path))
    assert loaded.name == "h100-sxm-measured"
    assert "gpu_microbench.py on NVIDIA H100" in loaded.sources
    for key, value in d.fields.items():
        if key == "stream_curve":
            assert loaded.stream_curve == tuple(tuple(row) for row in value)
        else:
            assert getattr(loaded, key) == pytest.approx(value)
    assert loaded.hbm_bandwidth_bytes_per_s == gpu.hbm_bandwidth_bytes_per_s   # from the base
    assert loaded.mma_sync_fraction_of_peak == gpu.mma_sync_fraction_of_peak


def test_the_pointer_chase_visits_every_line_once_per_cycle(mb):
    nxt, p = mb.chase_table(64 * 128, seed=3)
    seen = []
    for _ in range(64):
        seen.append(p)
        p = int(nxt[p])
    assert p == seen[0]                                  # back to the start after 64 loads
    assert sorted(seen) == [16 * i for i in range(64)]   # each line's first entry, once
    assert seen != sorted(seen)                          # in random order


def test_the_shared_memory_ring_is_one_cycle_through_every_word(mb):
    ring = mb.shared_ring(1024, seed=5)
    p, seen = 0, []
    for _ in range(1024):
        seen.append(p)
        p = int(ring[p])
    assert p == 0 and sorted(seen) == list(range(1024))


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not on PATH")
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_the_kernels_compile(mb, arch, tmp_path):
    source = tmp_path / "microbench.cu"
    source.write_text(mb.CHASE_SOURCE + mb.MMA_SOURCE + mb.EX2_SOURCE + mb.L2_READ_SOURCE
                      + mb.ALU_MAX_SOURCE + mb.FMA_SOURCE + mb.LATENCY_SOURCE
                      + mb.STREAM_SCALE_SOURCE)
    done = subprocess.run(["nvcc", f"-arch={arch}", "-std=c++17", "-Werror", "all-warnings",
                           "-c", "-o", str(tmp_path / "microbench.o"), str(source)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_without_a_gpu_one_line_and_exit_2():
    probe = subprocess.run([sys.executable, "-c",
                            "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"],
                           capture_output=True)
    if probe.returncode == 0:
        pytest.skip("this machine has a GPU")
    done = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True,
                          cwd=ROOT)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1
    assert done.stderr.startswith("gpu_microbench: ")
    assert "Traceback" not in done.stderr


def test_shuffle_and_barrier_are_written_as_the_model_counts_them(mb):
    """The chain times a bare shuffle, the model's round is a shuffle and its add; the loop
    times 8 warps at a barrier, the model's field is the fixed part, the per-warp slope kept
    from the built-in model: 23.0 + 4.0 and 41.5 - 8 x 2.045."""
    gpu = get_gpu("h100-sxm")
    d = mb.derive_fields(h100_measurements(mb), gpu)
    assert d.fields["shfl_latency_clocks"] == 27.0
    assert d.fields["barrier_latency_clocks"] == pytest.approx(41.5 - 8 * 2.045, abs=0.05)
    a100 = get_gpu("a100-80gb")                       # no slope published: the 8-warp figure
    assert mb.derive_fields(h100_measurements(mb), a100).fields["barrier_latency_clocks"] == 41.5


def test_the_l2_chase_is_written_in_clocks_at_the_boost_clock(mb):
    """The same pointer chase over 4 MiB (past L1, inside L2): its seconds a load at the boost
    clock the single thread runs at, 140 ns x 1980 MHz = 277.2 clocks; implausible ones are
    refused like the other latencies."""
    gpu = get_gpu("h100-sxm")
    d = mb.derive_fields(h100_measurements(mb, l2_latency_s=140e-9), gpu)
    assert d.fields["l2_latency_clocks"] == pytest.approx(277.2)
    rows = {r[0]: r for r in mb.report_rows(gpu, d)}
    assert rows["l2_latency_clocks"][1:] == ["277.2 clk", "264.5 clk", "written"]
    bad = mb.derive_fields(h100_measurements(mb, l2_latency_s=1e-3), gpu)
    assert "l2_latency_clocks" in bad.rejected
    assert mb.L2_CHASE_BYTES < gpu.l2_bytes // 4
