"""The machine: GPU specs, TOML files, the SRAM budget and the timing model."""
import dataclasses

import numpy as np
import pytest

from hwmodels import GPUS, Recorder, SramOverflowError, TimingOptions, get_gpu, predict_time
from hwmodels.counters import COUNTER_NAMES, HBM_READ_BYTES, MATMUL_FLOPS, EXP_OPS, OTHER_FLOPS
from hwmodels.gpu_file import GpuFileError, gpu_from_mapping, load_gpu_file
from hwmodels.timing import quantization_factor


@pytest.mark.parametrize("gpu", list(GPUS.values()), ids=list(GPUS))
def test_specs_are_internally_consistent(gpu):
    # dense fp16 = SMs x FLOP/clk/SM x the clock we store: 1024 FMA/clk/SM on Ampere
    # (A100 whitepaper), twice that on Hopper (H100 whitepaper)
    per_sm_clk = 4096 if gpu.has_wgmma else 2048
    assert gpu.tensor_fp16_flops_per_s == pytest.approx(gpu.sm_count * per_sm_clk * gpu.clock_hz, rel=0.02)
    assert gpu.tensor_tf32_flops_per_s == pytest.approx(gpu.tensor_fp16_flops_per_s / 2, rel=0.01)
    assert gpu.smem_bytes_per_block <= gpu.smem_bytes_per_sm
    assert gpu.l2_bandwidth_bytes_per_s > gpu.hbm_bandwidth_bytes_per_s


def test_published_headline_numbers():
    h100, a100 = get_gpu("h100"), get_gpu("a100-40gb")
    assert h100.sfu_ops_per_s == pytest.approx(3.9e12, rel=0.02)      # FlashAttention-3, §1
    assert h100.tensor_fp16_flops_per_s / h100.sfu_ops_per_s > 250     # "~250x lower"
    assert a100.tensor_fp16_flops_per_s / a100.fp32_flops_per_s == 16  # FlashAttention-2, §2.1
    assert get_gpu("A100").name == "a100-80gb" and get_gpu("h100-sxm5").name == "h100-sxm"


def test_unknown_gpu_lists_valid_names():
    with pytest.raises(ValueError, match="valid names: a100-40gb, a100-80gb, h100-sxm"):
        get_gpu("v100")


def test_gpu_file_from_base(tmp_path):
    f = tmp_path / "g.toml"
    f.write_text('base = "a100"\nname = "a100-oc"\nfull_name = "A100 overclocked"\n'
                 "clock_hz = 1.5e9\nsm_count = 108\n")
    g = load_gpu_file(str(f))
    assert g.clock_hz == 1.5e9 and g.hbm_bandwidth_bytes_per_s == get_gpu("a100").hbm_bandwidth_bytes_per_s
    assert get_gpu(str(f)) == g


@pytest.mark.parametrize("data,message", [
    ({"base": "h100", "sm_count": 0}, "'sm_count' must be positive"),
    ({"base": "h100", "sm_count": 1.5}, "'sm_count' must be a whole number"),
    ({"base": "h100", "has_wgmma": 1}, "'has_wgmma' must be true or false"),
    ({"base": "h100", "warp_size": 32}, "unknown field(s) warp_size"),
    ({"base": "h100", "mma_sync_fraction_of_peak": 1.5}, "must be in [0.001, 1]"),
    ({"base": "h100", "smem_bytes_per_block": 2**20}, "exceeds smem_bytes_per_sm"),
    ({"base": "h100", "smem_bytes_per_block": 10**9}, "must be in [1,024, 16,777,216]"),
    ({"base": "tpu"}, "unknown GPU 'tpu'"),
    ({"name": "x", "sm_count": 10}, "missing field(s) full_name"),
])
def test_gpu_file_errors_name_the_field(data, message):
    with pytest.raises(GpuFileError) as exc:
        gpu_from_mapping(data, origin="my.toml")
    assert message in str(exc.value) and "my.toml" in str(exc.value)


def test_full_gpu_file_round_trip(tmp_path):
    g = get_gpu("h100-pcie")
    lines = []
    for k, v in dataclasses.asdict(g).items():
        lines.append(f'{k} = {str(v).lower() if isinstance(v, bool) else repr(v) if isinstance(v, str) else v}')
    f = tmp_path / "full.toml"
    f.write_text("\n".join(lines).replace("'", '"'))
    assert load_gpu_file(str(f)) == g


def test_sram_budget_rejects_an_oversized_plan():
    rec = Recorder(get_gpu("a100"), sram_budget_bytes=1000)
    with pytest.raises(SramOverflowError, match=r"needs 1,200 bytes of SRAM per CTA \(A 800 B \+ B 400 B\) but the budget is 1,000"):
        rec.kernel("k", ctas=1, buffers={"A": 800, "B": 400})


def test_counter_names_are_unique_and_in_bytes_or_ops():
    assert len(set(COUNTER_NAMES)) == len(COUNTER_NAMES)
    assert all(n.endswith(("_bytes", "_flops", "_ops", "launches", "ctas")) for n in COUNTER_NAMES)


# ---- timing model --------------------------------------------------------------------------

def one_kernel(gpu, ctas=1000, read=0, mm=0, exp=0, other=0, overlap="serial", cta_work=None,
               tc_path="mma_sync"):
    rec = Recorder(gpu)
    c = rec.kernel("k", ctas=ctas, buffers={"x": 1024}, overlap=overlap, cta_work=cta_work,
                   tc_path=tc_path)
    c[HBM_READ_BYTES], c[MATMUL_FLOPS], c[EXP_OPS], c[OTHER_FLOPS] = read, mm, exp, other
    return rec.kernels


def test_memory_bound_kernel_time_is_bytes_over_bandwidth():
    g = get_gpu("h100")
    t = predict_time(g, one_kernel(g, ctas=132 * 8, read=10**10))
    assert t.bound == "memory"
    assert t.predicted_s == pytest.approx(1e10 / 3.35e12 + g.launch_overhead_s)


def test_mma_sync_is_derated_on_hopper_not_on_ampere():
    h, a = get_gpu("h100"), get_gpu("a100")
    th = predict_time(h, one_kernel(h, ctas=132, mm=10**15))
    ta = predict_time(a, one_kernel(a, ctas=108, mm=10**15))
    assert th.matmul_s == pytest.approx(1e15 / (989.4e12 * 2 / 3))
    assert ta.matmul_s == pytest.approx(1e15 / 312e12)
    tw = predict_time(h, one_kernel(h, ctas=132, mm=10**15, tc_path="wgmma"))
    assert tw.matmul_s == pytest.approx(1e15 / 989.4e12)
    with pytest.raises(ValueError, match="wgmma"):
        predict_time(a, one_kernel(a, mm=1, tc_path="wgmma"))


def test_overlap_hides_softmax_behind_matmul():
    g = get_gpu("h100")
    serial = predict_time(g, one_kernel(g, ctas=132, mm=10**14, exp=10**11))
    overlap = predict_time(g, one_kernel(g, ctas=132, mm=10**14, exp=10**11, overlap="overlap"))
    assert serial.predicted_s == pytest.approx(overlap.predicted_s + 1e11 / g.sfu_ops_per_s)
    off = predict_time(g, one_kernel(g, ctas=132, mm=10**14, exp=10**11, overlap="overlap"),
                       TimingOptions(overlap=False))
    assert off.predicted_s == pytest.approx(serial.predicted_s)


def test_wave_quantization():
    g = get_gpu("h100")                                   # 132 SMs
    assert quantization_factor(g, one_kernel(g, ctas=132)[0]) == 1.0
    assert quantization_factor(g, one_kernel(g, ctas=133)[0]) == pytest.approx(2 * 132 / 133)
    assert quantization_factor(g, one_kernel(g, ctas=66)[0]) == pytest.approx(2.0)
    # causal-like imbalance: per-head CTAs doing 1..32 units of work
    q = quantization_factor(g, one_kernel(g, ctas=32 * 16, cta_work=np.arange(1, 33))[0])
    assert 1.0 < q < 2.0
    off = predict_time(g, one_kernel(g, ctas=66, read=10**9), TimingOptions(wave_quantization=False))
    assert off.quantization == 1.0


def test_launch_overhead_dominates_tiny_kernels():
    g = get_gpu("a100")
    t = predict_time(g, one_kernel(g, ctas=1, read=1000))
    assert t.bound == "launch"
    assert predict_time(g, one_kernel(g, ctas=1, read=1000),
                        TimingOptions(launch_overhead=False)).launch_s == 0


def test_l2_serves_rereads_in_proportion_to_the_working_set_that_fits():
    g = get_gpu("h100")
    rec = Recorder(g)
    c = rec.kernel("fits", ctas=1320, buffers={}, unique_hbm_bytes=10**8,
                   l2_working_set_bytes=10 * 2**20)
    c[HBM_READ_BYTES] = 10**10
    c = rec.kernel("spills", ctas=1320, buffers={}, unique_hbm_bytes=10**8,
                   l2_working_set_bytes=40 * 2**20)
    c[HBM_READ_BYTES] = 10**10
    fits, spills = predict_time(g, rec.kernels).kernels
    assert fits.dram_bytes == 10**8
    hit = 25 / 40                        # half of the 50 MiB L2 against a 40 MiB working set
    assert spills.dram_bytes == int(10**8 + (10**10 - 10**8) * (1 - hit))
    assert fits.memory_s == pytest.approx(1e10 / g.l2_bandwidth_bytes_per_s)   # L2-bound
    assert spills.memory_s == pytest.approx(spills.dram_bytes / g.hbm_bandwidth_bytes_per_s)
    off = predict_time(g, rec.kernels, TimingOptions(l2_cache=False))
    assert off.dram_bytes == 2 * 10**10
