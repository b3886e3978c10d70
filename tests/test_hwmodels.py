"""The machine: GPU specs, TOML files, the SRAM budget and the timing model."""
import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hwmodels import GPUS, Recorder, SramOverflowError, TimingOptions, get_gpu, predict_time
from hwmodels.counters import (ALU_OPS, ATOMIC_BYTES, COUNTER_NAMES, CONVERT_OPS, EXP_OPS,
                               HBM_READ_BYTES, HBM_WRITE_BYTES, INTERCONNECT_BYTES,
                               MATMUL_FLOPS, OTHER_FLOPS, SRAM_READ_BYTES)
from hwmodels.gpu_file import GpuFileError, gpu_from_mapping, load_gpu_file
from hwmodels.timing import closed_network_time, quantization_factor


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
    upper = tmp_path / "OC.TOML"
    upper.write_text(f.read_text())
    assert get_gpu(str(upper)) == g


@pytest.mark.parametrize("data,message", [
    ({"base": "h100", "sm_count": 0}, "'sm_count' must be positive"),
    ({"base": "h100", "sm_count": 1.5}, "'sm_count' must be a whole number"),
    ({"base": "h100", "has_wgmma": 1}, "'has_wgmma' must be true or false"),
    ({"base": "h100", "warp_size": 32}, "unknown field(s) warp_size"),
    ({"base": "h100", "mma_sync_fraction_of_peak": 1.5}, "must be in (0, 1]"),
    ({"base": "h100", "tensor_gemm_fraction": 1.2}, "'tensor_gemm_fraction' is a fraction"),
    ({"base": "h100", "dram_latency_s": -1e-7}, "'dram_latency_s' must be positive"),
    ({"base": "h100", "dram_latency_s": 1.0}, "'dram_latency_s' must be in"),
    ({"base": "h100", "smem_bytes_per_block": 2**20}, "exceeds smem_bytes_per_sm"),
    ({"base": "h100", "smem_bytes_per_block": 10**9}, "must be in [1,024, 16,777,216]"),
    ({"base": "h100", "max_threads_per_sm": 32}, "'max_threads_per_sm' must be in [1,024,"),
    ({"base": "h100", "max_threads_per_sm": 1056 + 1}, "multiple of the 32-thread warp"),
    ({"base": "h100", "clock_hz": 1e9, "sustained_clock_hz": 2e9}, "exceeds clock_hz"),
    ({"base": "h100", "tensor_fp16_flops_per_s": 1e12}, "is below fp32_flops_per_s"),
    ({"base": "h100", "tensor_bf16_flops_per_s": 1e12},
     "tensor_bf16_flops_per_s (1e+12) is below fp32_flops_per_s"),
    ({"base": "h100", "tensor_tf32_flops_per_s": 1e12},
     "tensor_tf32_flops_per_s (1e+12) is below fp32_flops_per_s"),
    ({"base": "h100", "l2_bytes": 2**31, "hbm_bytes": 2**30}, "l2_bytes (2,147,483,648) exceeds "
                                                              "hbm_bytes (1,073,741,824)"),
    ({"base": "tpu"}, "unknown GPU 'tpu'"),
    ({"name": "x", "sm_count": 10}, "missing field(s) full_name"),
])
def test_gpu_file_errors_name_the_field(data, message):
    with pytest.raises(GpuFileError) as exc:
        gpu_from_mapping(data, origin="my.toml")
    assert message in str(exc.value) and "my.toml" in str(exc.value)


def test_relative_base_is_read_from_the_including_files_folder(tmp_path, monkeypatch):
    folder = tmp_path / "gpus"
    folder.mkdir()
    (folder / "ok.toml").write_text('base = "h100"\nname = "ok"\nsm_count = 100\n')
    (folder / "rel.toml").write_text('base = "ok.toml"\nname = "rel"\n')
    monkeypatch.chdir(tmp_path)                  # not the files' folder
    g = load_gpu_file(str(folder / "rel.toml"))
    assert g.name == "rel" and g.sm_count == 100
    monkeypatch.chdir(folder)
    assert load_gpu_file("rel.toml") == g


def test_a_modified_gpu_is_not_shown_under_its_bases_full_name():
    nofp8 = gpu_from_mapping({"base": "h100", "name": "h100-nofp8",
                              "tensor_fp8_flops_per_s": 0}, origin="my.toml")
    assert nofp8.full_name == "h100-nofp8 (custom, based on h100-sxm)"
    with pytest.raises(ValueError, match=r"^h100-nofp8 \(custom, based on h100-sxm\) has no "
                                         r"fp8 tensor cores"):
        nofp8.tensor_flops_per_s("fp8")
    # a renamed copy, or one with a full name of its own, keeps the name it has
    assert gpu_from_mapping({"base": "h100", "name": "copy"}).full_name == \
        get_gpu("h100").full_name
    assert gpu_from_mapping({"base": "h100", "full_name": "ours", "sm_count": 100}).full_name \
        == "ours"


def test_no_interconnect_refuses_to_price_peer_transfers():
    g = gpu_from_mapping({"base": "h100", "name": "no-link", "nvlink_bytes_per_s": 0})
    rec = Recorder(g)
    c = rec.kernel("ring_step0", ctas=132, buffers={"x": 1024})
    c[HBM_READ_BYTES], c[INTERCONNECT_BYTES] = 10**6, 10**6
    with pytest.raises(ValueError, match="no-link .*: nvlink_bytes_per_s is 0 .* needs a positive "
                                         "nvlink_bytes_per_s"):
        predict_time(g, rec.kernels)
    assert predict_time(g, rec.kernels, TimingOptions(interconnect=False)).interconnect_s == 0


def test_full_gpu_file_round_trip(tmp_path):
    g = get_gpu("h100-pcie")
    lines = []
    for k, v in dataclasses.asdict(g).items():
        if isinstance(v, tuple):          # the occupancy sweep: an array of [threads, bytes/s]
            v = [list(row) for row in v]
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
               tc_path="mma_sync", buffer_bytes=1024):
    rec = Recorder(gpu)
    c = rec.kernel("k", ctas=ctas, buffers={"x": buffer_bytes}, overlap=overlap, cta_work=cta_work,
                   tc_path=tc_path)
    c[HBM_READ_BYTES], c[MATMUL_FLOPS], c[EXP_OPS], c[OTHER_FLOPS] = read, mm, exp, other
    return rec.kernels


def test_memory_bound_kernel_time_is_bytes_over_achievable_bandwidth():
    g = get_gpu("h100")
    # 16 KiB in flight per CTA, 8 CTAs per SM: enough bytes in flight that the DRAM latency
    # (Little's law) does not bound it, at the datasheet bandwidth too
    stream = one_kernel(g, ctas=132 * 8, read=10**10, buffer_bytes=16 * 1024)
    t = predict_time(g, stream)
    assert t.bound == "memory" and t.kernels[0].mechanism == "HBM bandwidth"
    # the H100 SXM5's measured streaming bandwidth (3.01 of 3.35 TB/s), one DRAM latency of
    # prologue (340.6 ns, pointer chasing on the H800), one launch
    assert g.dram_latency_s == pytest.approx(340.6e-9)
    assert t.predicted_s == pytest.approx(1e10 / 3.01e12 + g.dram_latency_s
                                          + g.launch_overhead_s)
    datasheet = TimingOptions(achievable_rates=False, cta_fixed_costs=False)
    assert predict_time(g, stream, datasheet).predicted_s \
        == pytest.approx(1e10 / 3.35e12 + g.launch_overhead_s)


def test_tensor_rates_are_the_measured_gemm_fractions_and_mma_sync_ceiling():
    h, a = get_gpu("h100"), get_gpu("a100")
    th = predict_time(h, one_kernel(h, ctas=132, mm=10**15))
    ta = predict_time(a, one_kernel(a, ctas=108, mm=10**15))
    # MAMF x the mma.sync / wgmma ratio of the H800 microbenchmark (0.653 / 0.96)
    assert th.matmul_s == pytest.approx(1e15 / (794.5e12 * (494 / 757) / 0.96))
    assert ta.matmul_s == pytest.approx(1e15 / 271.2e12)             # MAMF, A100 SXM
    tw = predict_time(h, one_kernel(h, ctas=132, mm=10**15, tc_path="wgmma"))
    assert tw.matmul_s == pytest.approx(1e15 / 794.5e12)
    peak = TimingOptions(achievable_rates=False)
    assert predict_time(h, one_kernel(h, ctas=132, mm=10**15, tc_path="wgmma"),
                        peak).matmul_s == pytest.approx(1e15 / 989.4e12)
    with pytest.raises(ValueError, match="wgmma"):
        predict_time(a, one_kernel(a, mm=1, tc_path="wgmma"))


def test_tf32_gemms_run_at_their_own_measured_fraction_where_one_is_published():
    h, a = get_gpu("h100"), get_gpu("a100")
    for gpu, fraction in ((h, 417.64 / 494.7), (a, 271.2 / 312)):   # A100: the bf16 MAMF
        rec = Recorder(gpu)
        c = rec.kernel("k", ctas=gpu.sm_count, buffers={"x": 1024}, tc_path="wgmma"
                       if gpu.has_wgmma else "mma_sync", matmul_dtype="fp32")
        c[MATMUL_FLOPS] = 10**15
        t = predict_time(gpu, rec.kernels).kernels[0]
        assert gpu.gemm_fraction("tf32") == gpu.gemm_fraction("fp32") == pytest.approx(fraction)
        assert t.matmul_s == pytest.approx(1e15 / (gpu.tensor_tf32_flops_per_s * fraction))
    assert h.gemm_fraction("fp16") == pytest.approx(794.5 / 989.4)     # unchanged


def test_sustained_clock_sets_the_sfu_and_fma_rates():
    a = get_gpu("a100")                                  # 1305 MHz under load, 1410 boost
    t = predict_time(a, one_kernel(a, ctas=108, exp=10**12, other=10**12)).kernels[0]
    assert t.exp_s == pytest.approx(1e12 / (16 * 108 * 1305e6))
    assert t.other_s == pytest.approx(1e12 / (64 * 108 * 1305e6))
    h = get_gpu("h100")    # FP32 lanes from the whitepaper: the 1.98 GHz of the datasheet's
    assert h.fp32_lanes == 128 and a.fp32_lanes == 64    # 66.9 TFLOP/s no longer leaks in
    o = predict_time(h, one_kernel(h, ctas=132, other=10**12)).kernels[0]
    assert o.other_s == pytest.approx(1e12 / (128 * 132 * 1830e6))


def test_max_compare_select_and_conversions_run_on_the_alu_pipe():
    a = get_gpu("a100")
    rec = Recorder(a)
    c = rec.kernel("k", ctas=108, buffers={"x": 1024})
    # 10^12 elementwise ops, 4 x 10^11 of them maxes/selects; 4 x 10^11 conversions to fp16
    c[OTHER_FLOPS], c[ALU_OPS], c[CONVERT_OPS] = 10**12, 4 * 10**11, 4 * 10**11
    t = predict_time(a, rec.kernels).kernels[0]
    clock = 108 * 1305e6
    assert t.other_s == pytest.approx(6e11 / (64 * clock))      # adds, multiplies: FMA pipe
    # 16 ALU lanes per sub-partition; a cvt packs two values (cvt.rn.f16x2.f32)
    assert t.alu_s == pytest.approx((4e11 + 2e11) / (64 * clock))
    # issue: 32 lanes an instruction, 64 values a conversion instruction, 4 schedulers
    assert t.issue_s == pytest.approx((1e12 / 32 + 4e11 / 64) / (4 * clock))
    assert t.compute_s == pytest.approx(max(t.other_s, t.alu_s, t.issue_s))
    off = predict_time(a, rec.kernels, TimingOptions(alu_pipe=False)).kernels[0]
    assert off.alu_s == 0 and off.other_s == pytest.approx(1e12 / (64 * clock))
    assert off.issue_s == pytest.approx(1e12 / 32 / (4 * clock))
    c[ALU_OPS] = 9 * 10**11                                      # a max-heavy kernel
    t = predict_time(a, rec.kernels).kernels[0]
    assert t.mechanism == "ALU pipe" and t.bound == "alu"
    assert t.compute_s == pytest.approx((9e11 + 2e11) / (64 * clock))


def test_library_routines_add_their_instructions_to_the_pipes_and_the_issue():
    """A kernel built without fast math declares what its accurate expf and IEEE division
    add beyond the counted ops (``library_lane_ops``): the FMA, ALU and SFU pipes carry
    them and the issue counts them, one warp-instruction per 32 lanes; --no-accurate-math
    prices the counted ops alone."""
    a = get_gpu("a100")
    clock = 108 * 1305e6

    def timed(library, opts=TimingOptions()):
        rec = Recorder(a)
        c = rec.kernel("k", ctas=108, buffers={"x": 1024}, library_lane_ops=library)
        c[OTHER_FLOPS], c[EXP_OPS] = 10**12, 10**11
        return predict_time(a, rec.kernels, opts).kernels[0]

    plain = timed({})
    extra = timed({"fma": 6e11, "alu": 2e11, "xu": 1e11})
    assert extra.other_s == pytest.approx((1e12 + 6e11) / (64 * clock))
    assert extra.alu_s == pytest.approx(2e11 / (64 * clock))
    assert extra.exp_s == pytest.approx(2e11 / (16 * clock))
    assert extra.issue_s - plain.issue_s == pytest.approx(9e11 / 32 / (4 * clock))
    off = timed({"fma": 6e11, "alu": 2e11, "xu": 1e11}, TimingOptions(accurate_math=False))
    assert (off.other_s, off.alu_s, off.exp_s, off.issue_s) == \
        (plain.other_s, plain.alu_s, plain.exp_s, plain.issue_s)
    # the first model (ALU pipe off) runs the library's ALU instructions on the FMA pipe too
    first = timed({"fma": 6e11, "alu": 2e11}, TimingOptions(alu_pipe=False))
    assert first.other_s == pytest.approx((1e12 + 8e11) / (64 * clock))
    rec = Recorder(a)
    for bad in ({"tensor": 1.0}, {"fma": -1.0}):
        with pytest.raises(ValueError, match="library_lane_ops"):
            rec.kernel("k", ctas=1, buffers={"x": 1}, library_lane_ops=bad)


def test_resident_ctas_run_in_phase_and_add_no_chains():
    """Two CTAs fit per SM (1 KiB of shared memory each, 264 CTAs on 132 SMs): by default
    only the CTA's own staggered chains hide its softmax; with lockstep_ctas off each
    resident CTA is one more chain, and the time is the mean-value analysis of 2x as many."""
    g = get_gpu("h100")
    rec = Recorder(g)
    c = rec.kernel("k", ctas=2 * g.sm_count, buffers={"x": 1024}, tc_path="mma_sync",
                   chains_per_cta=2)
    c[MATMUL_FLOPS], c[EXP_OPS] = 10**14, 10**11
    in_phase = predict_time(g, rec.kernels).kernels[0]
    apart = predict_time(g, rec.kernels, TimingOptions(lockstep_ctas=False)).kernels[0]
    assert in_phase.ctas_per_sm >= 2
    assert (in_phase.chains, apart.chains) == (2, 4)
    for k in (in_phase, apart):
        assert k.chain_s == pytest.approx(closed_network_time((k.matmul_s, k.exp_s), k.chains))
    assert apart.chain_s < in_phase.chain_s
    serial = predict_time(g, rec.kernels, TimingOptions(overlap=False)).kernels[0]
    assert serial.chains == 1 and in_phase.chain_s < serial.chain_s


def test_closed_network_interpolates_between_serial_and_overlapped():
    assert closed_network_time((3.0, 1.0), 1) == pytest.approx(4.0)        # one chain: serial
    assert closed_network_time((2.0, 2.0), 2) == pytest.approx(3.0)        # exact MVA: 1.5 a
    assert closed_network_time((3.0, 1.0), 200) == pytest.approx(3.0, rel=1e-3)
    ts = [closed_network_time((3.0, 1.0), n) for n in range(1, 6)]
    assert all(x > y for x, y in zip(ts, ts[1:]))                          # more chains help
    assert closed_network_time((0.0, 0.0), 4) == 0.0


def test_chains_hide_softmax_behind_matmul_and_overlap_off_serializes():
    g = get_gpu("h100")
    serial = predict_time(g, one_kernel(g, ctas=132, mm=10**14, exp=10**11)).kernels[0]
    assert serial.chains == 1 and serial.chain_s == pytest.approx(serial.matmul_s + serial.exp_s)
    rec = Recorder(g)
    c = rec.kernel("k", ctas=132, buffers={"x": 1024}, tc_path="mma_sync", chains_per_cta=4)
    c[MATMUL_FLOPS], c[EXP_OPS] = 10**14, 10**11
    four = predict_time(g, rec.kernels).kernels[0]
    assert four.chains == 4
    assert four.chain_s == pytest.approx(closed_network_time((four.matmul_s, four.exp_s), 4))
    assert four.matmul_s < four.chain_s < serial.chain_s
    off = predict_time(g, rec.kernels, TimingOptions(overlap=False)).kernels[0]
    assert off.chain_s == pytest.approx(serial.chain_s)
    old = predict_time(g, rec.kernels, TimingOptions(pipe_model=False)).kernels[0]
    assert old.chain_s == pytest.approx(serial.chain_s)       # declared "serial": the old sum


def test_shared_memory_reads_count_once_per_reading_warp():
    g = get_gpu("a100")
    rec = Recorder(g)
    c = rec.kernel("k", ctas=108, buffers={"x": 1024}, smem_readers=4, mma_rows_per_cta=128)
    c[MATMUL_FLOPS], c[SRAM_READ_BYTES] = 2 * 128 * 128 * 64 * 1000, 10**6
    t = predict_time(g, rec.kernels).kernels[0]
    extra = 2 * 128 * 128 * 64 * 1000 * 2 / 2 * 3 / 128     # the 128 x 64 operand, 3 more times
    assert t.smem_s == pytest.approx((10**6 + extra) / (128 * 108 * 1305e6))
    assert predict_time(g, rec.kernels, TimingOptions(smem_bandwidth=False)).kernels[0].smem_s == 0


def test_thin_grids_are_latency_bound_by_littles_law():
    g = get_gpu("h100")
    rec = Recorder(g)
    c = rec.kernel("splitkv", ctas=8, buffers={"kv": 64 * 1024})
    c[HBM_READ_BYTES] = 10**9
    t = predict_time(g, rec.kernels).kernels[0]
    assert t.mechanism == "DRAM latency"
    # 8 CTAs keep 8 x 64 KiB in flight: 1 GB takes 1e9 / (8 x 64 KiB) DRAM latencies
    assert t.latency_s * t.quantization == pytest.approx(1e9 * g.dram_latency_s / (8 * 64 * 1024))
    off = predict_time(g, rec.kernels, TimingOptions(latency_bound_memory=False)).kernels[0]
    assert off.memory_s == pytest.approx(1e9 / 3.01e12)


def test_atomics_run_at_the_l2_atomic_rate():
    g = get_gpu("a100")
    rec = Recorder(g)
    c = rec.kernel("dq", ctas=1080, buffers={"x": 1024}, unique_hbm_bytes=10**8,
                   l2_working_set_bytes=2**20)        # dQ accumulators stay in L2
    c[HBM_WRITE_BYTES] = c[ATOMIC_BYTES] = 10**10
    t = predict_time(g, rec.kernels).kernels[0]
    assert g.atomic_bytes_per_s == g.l2_bytes_per_s() / 2             # read-modify-write in L2
    assert t.atomic_s == pytest.approx(1e10 / g.atomic_bytes_per_s)
    assert t.mechanism == "L2 atomics"
    off = predict_time(g, rec.kernels, TimingOptions(l2_atomics=False)).kernels[0]
    assert off.atomic_s == 0 and off.memory_s < t.memory_s


def test_prologue_is_paid_every_wave_by_a_lone_cta_per_sm():
    g = get_gpu("h100")
    rec = Recorder(g)
    c = rec.kernel("big", ctas=2 * 132, buffers={"tiles": 200 * 1024},
                   prologue_bytes_per_cta=100 * 1024)     # one CTA fits per SM: 2 waves
    c[HBM_READ_BYTES], c[MATMUL_FLOPS] = 10**9, 10**13
    t = predict_time(g, rec.kernels).kernels[0]
    per_byte = t.memory_s / 1e9
    assert t.fixed_s == pytest.approx(2 * (g.dram_latency_s + 132 * 100 * 1024 * per_byte))
    off = predict_time(g, rec.kernels, TimingOptions(cta_fixed_costs=False)).kernels[0]
    assert off.fixed_s == 0 and off.total_s < t.total_s


def test_resident_ctas_in_step_pay_the_prologue_every_generation():
    """Two CTAs fit per SM and four land on each: CTAs in step (``lockstep_ctas``) finish
    together and their successors load together, so both generations pay the prologue; out
    of step a neighbour computes while one loads and only the first wave pays it."""
    g = get_gpu("h100")
    rec = Recorder(g)
    c = rec.kernel("pair", ctas=4 * 132, buffers={"tiles": 100 * 1024},
                   prologue_bytes_per_cta=50 * 1024)
    c[HBM_READ_BYTES], c[MATMUL_FLOPS] = 10**9, 10**13
    t = predict_time(g, rec.kernels).kernels[0]
    assert t.ctas_per_sm == 2
    per_byte = t.memory_s / 1e9
    wave = g.dram_latency_s + 2 * 132 * 50 * 1024 * per_byte
    assert t.fixed_s == pytest.approx(2 * wave)
    apart = predict_time(g, rec.kernels, TimingOptions(lockstep_ctas=False)).kernels[0]
    assert apart.fixed_s == pytest.approx(wave)


def test_epilogue_steps_run_one_after_the_other_once_per_generation():
    """A tensor-bound kernel of two CTAs per SM, four CTAs on each SM, 16,384 output
    elements a CTA (a 128 x 128 O tile): after its last tile each CTA normalizes them (FMA
    pipe, 128 lanes), converts them (ALU, 64 lanes, two a cvt) and writes them to shared memory
    and reads them back for the store (128 B a clock), in turn. CTAs in step do theirs together
    on the SM's pipes, every generation; out of step only the last is exposed; the switch
    turns it off."""
    g = get_gpu("h100")
    rec = Recorder(g)
    c = rec.kernel("attn", ctas=4 * 132, buffers={"tiles": 100 * 1024},
                   epilogue_elements_per_cta=128 * 128)
    c[MATMUL_FLOPS] = 10**14                             # the tensor pipe sets the body
    t = predict_time(g, rec.kernels).kernels[0]
    n = 128 * 128
    clocks = n / 128 + n / 2 / 64 + 2 * n * 2 / 128      # 128 + 128 + 512
    per_generation = 2 * clocks / g.sustained_clock      # two resident CTAs share the pipes
    assert t.epilogue_s == pytest.approx(2 * per_generation)
    # beside it, only the prologue's latency (no prologue bytes or tile count declared)
    assert t.fixed_s == pytest.approx(t.epilogue_s + 2 * g.dram_latency_s)
    apart = predict_time(g, rec.kernels, TimingOptions(lockstep_ctas=False)).kernels[0]
    assert apart.epilogue_s == pytest.approx(per_generation)
    off = predict_time(g, rec.kernels, TimingOptions(cta_epilogue=False)).kernels[0]
    assert off.epilogue_s == 0 and off.total_s == pytest.approx(t.total_s - t.epilogue_s)


def test_an_epilogue_step_on_the_pipe_that_sets_the_body_is_not_charged_twice():
    """When shared memory outweighs the tensor pipe, the body's time is the shared-memory
    pipe's, which already holds the epilogue's staging: only the normalization and the
    conversion are added."""
    g = get_gpu("h100")
    rec = Recorder(g)
    c = rec.kernel("attn", ctas=132, buffers={"tiles": 200 * 1024},
                   epilogue_elements_per_cta=4096)
    c[MATMUL_FLOPS], c[SRAM_READ_BYTES] = 10**12, 10**12
    t = predict_time(g, rec.kernels).kernels[0]
    assert t.smem_s > t.matmul_s
    assert t.epilogue_s == pytest.approx((4096 / 128 + 4096 / 2 / 64) / g.sustained_clock)


def test_launches_are_a_host_pipeline():
    g = get_gpu("a100")
    rec = Recorder(g)
    c = rec.kernel("long", ctas=108, buffers={})
    c[HBM_READ_BYTES] = 10**10                                 # ~5.4 ms
    for i in range(5):
        rec.kernel(f"tiny{i}", ctas=1, buffers={})
    t = predict_time(g, rec.kernels)
    assert t.launch_s == pytest.approx(g.launch_overhead_s)   # only the first is exposed
    serial = predict_time(g, rec.kernels, TimingOptions(launch_pipeline=False))
    assert serial.launch_s == pytest.approx(6 * g.launch_overhead_s)
    tiny = Recorder(g)
    for i in range(10):
        tiny.kernel(f"t{i}", ctas=1, buffers={})
    host_bound = predict_time(g, tiny.kernels)
    assert host_bound.predicted_s == pytest.approx(10 * g.launch_overhead_s)
    assert host_bound.bound == "launch"


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
    assert fits.memory_s == pytest.approx(1e10 / g.l2_bytes_per_s())          # L2-bound
    assert spills.memory_s == pytest.approx(spills.dram_bytes
                                            / (3.01 / 3.35 * g.hbm_bandwidth_bytes_per_s))
    off = predict_time(g, rec.kernels, TimingOptions(l2_cache=False))
    assert off.dram_bytes == 2 * 10**10


def test_gpu_file_sets_the_achievable_rates_and_may_omit_them(tmp_path):
    f = tmp_path / "measured.toml"
    f.write_text('base = "h100"\nname = "h100-measured"\nfull_name = "our H100"\n'
                 "sustained_clock_hz = 1.755e9\ntensor_gemm_fraction = 0.78\n"
                 "hbm_achievable_fraction = 0.92\ndram_latency_s = 4.8e-7\n")
    g = load_gpu_file(str(f))
    assert (g.sustained_clock, g.tensor_gemm_fraction, g.dram_latency_s) == (1.755e9, 0.78, 4.8e-7)
    optional = {f.name for f in dataclasses.fields(g) if f.default is not dataclasses.MISSING}
    old = {k: v for k, v in dataclasses.asdict(get_gpu("a100")).items() if k not in optional}
    legacy = gpu_from_mapping(dict(old, name="legacy"), origin="legacy.toml")
    assert legacy.sustained_clock == legacy.clock_hz and legacy.tensor_gemm_fraction == 1.0


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(TimingOptions)])
def test_every_timing_mechanism_has_a_no_flag(field):
    from attnsim.cli import build_parser, timing_from_args
    flag = "--no-" + field.replace("_", "-")
    a = build_parser().parse_args(["run", "flash2", flag])
    assert getattr(timing_from_args(a), field) is False


def test_json_time_keeps_its_keys_and_adds_the_new_terms_per_kernel():
    from attnsim import Workload, simulate
    from attnsim.serialize import result_dict
    wl = Workload(batch=1, heads=4, seq_q=1024, head_dim=64)
    off = TimingOptions(smem_bandwidth=False)
    d = result_dict(simulate("flash2", wl, "h100", compute=False, timing=off))
    old = {"predicted_s", "bound", "dram_bytes", "memory_s", "matmul_s", "exp_s", "other_s",
           "interconnect_s", "launch_s", "quantization", "time_by_bound_s"}
    new = {"smem_s", "issue_s", "chain_s", "latency_s", "atomic_s", "fixed_s",
           "time_by_mechanism_s", "alu_s", "epilogue_s"}
    assert old | new <= set(d["time"])
    kt = d["kernels"][0]["time"]
    assert {"chain_s", "chains", "fixed_s", "latency_s", "mechanism", "alu_s",
            "epilogue_s"} <= set(kt)
    assert 0 < kt["epilogue_s"] < kt["fixed_s"]    # the epilogue is one of the fixed costs
    assert kt["smem_s"] == 0                       # the run's own options, not the defaults


def test_microbenchmark_constants_follow_their_derivation():
    """The latency, copy-bandwidth and mma.sync constants are published measurements turned
    into fields as hwmodels/gpus.py says: cycles at the measured clock, triad over datasheet,
    mma.sync over wgmma on one board. Every Hopper part shares the H800's latency."""
    a100, a100_40, h100, pcie, h200 = (get_gpu(n) for n in
                                       ("a100-80gb", "a100-40gb", "h100-sxm", "h100-pcie", "h200"))
    assert a100.dram_latency_s == pytest.approx(523.3 / 1395e6, rel=1e-3)
    for g in (h100, pcie, h200):
        assert g.dram_latency_s == pytest.approx(597.8 / 1755e6, rel=1e-3)
    assert a100_40.hbm_achievable_fraction * 1555e9 == pytest.approx(1358e9)
    assert a100.hbm_achievable_fraction * 2039e9 == pytest.approx(1794e9)
    assert pcie.hbm_achievable_fraction * 2000e9 == pytest.approx(1832e9)
    assert h100.hbm_achievable_fraction * 3.35e12 == pytest.approx(3.01e12)   # [QUACK]
    assert h200.hbm_achievable_fraction == pytest.approx(0.946, abs=5e-4)      # GH200's triad
    assert h100.mma_sync_fraction_of_peak == pytest.approx(0.680, abs=5e-4)
    assert a100.mma_sync_fraction_of_peak == 1.0
    # [L2-RRZE]: gpu-l2-cache's 16,896 kB row; the H100 SXM5 and H200 take the GH200's
    assert a100.l2_bytes_per_s() == pytest.approx(5447.7e9)
    assert a100_40.l2_bytes_per_s() == a100.l2_bytes_per_s()
    assert pcie.l2_bytes_per_s() == pytest.approx(6912.2e9)
    assert h100.l2_bytes_per_s() == h200.l2_bytes_per_s() == pytest.approx(9765.2e9)
    for g in (a100, pcie, h100):
        assert g.l2_bytes_per_s(achievable=False) == g.l2_bandwidth_bytes_per_s
        assert 0.6 < g.l2_achievable_fraction < 0.85     # a measured rate, below the figure


def test_l2_terms_use_the_measured_rate_and_the_switch_restores_the_figure():
    """An L2-bound kernel and an atomic one: priced at the measured L2 read bandwidth (and
    half of it for atomics); --no-achievable-rates prices both at the architectural figure."""
    g = get_gpu("h100")
    rec = Recorder(g)
    c = rec.kernel("l2_reads", ctas=1320, buffers={}, unique_hbm_bytes=10**8,
                   l2_working_set_bytes=2**20)
    c[HBM_READ_BYTES] = 10**10
    c = rec.kernel("dq", ctas=1320, buffers={}, unique_hbm_bytes=10**8,
                   l2_working_set_bytes=2**20)
    c[HBM_WRITE_BYTES] = c[ATOMIC_BYTES] = 10**10
    on = predict_time(g, rec.kernels).kernels
    off = predict_time(g, rec.kernels, TimingOptions(achievable_rates=False)).kernels
    assert on[0].l2_s == pytest.approx(1e10 / 9765.2e9)
    assert off[0].l2_s == pytest.approx(1e10 / 12e12)
    assert on[1].atomic_s == pytest.approx(1e10 / (9765.2e9 / 2))
    assert off[1].atomic_s == pytest.approx(1e10 / 6e12)


def test_split_k_exchange_is_a_phase_of_the_chain():
    """Split-K warps sum the partials a GEMM makes through shared memory before the step goes
    on (FlashAttention-2 §3.3): with one chain an SM, a tensor-bound GEMM phase, the softmax
    and the exchange run one after the other; off, the exchange hides behind the MMAs as
    operand loads do."""
    g = get_gpu("h100")
    rec = Recorder(g)
    c = rec.kernel("k", ctas=g.sm_count, buffers={"x": 1024}, tc_path="mma_sync",
                   smem_exchange_bytes=10**11)
    c[MATMUL_FLOPS], c[EXP_OPS], c[SRAM_READ_BYTES] = 10**14, 10**11, 10**11
    on = predict_time(g, rec.kernels).kernels[0]
    off = predict_time(g, rec.kernels, TimingOptions(exchange_phase=False)).kernels[0]
    exchange = 10**11 / (g.smem_bytes_per_clock_per_sm * g.sm_count * g.sustained_clock)
    assert on.matmul_s > on.smem_s                 # the MMAs set the GEMM phase either way
    assert on.chain_s == pytest.approx(on.matmul_s + on.exp_s + exchange)
    assert off.chain_s == pytest.approx(off.matmul_s + off.exp_s)


def test_softmax_issued_beside_its_own_gemms_leaves_the_rest_for_the_chain():
    """A kernel that issues a share of a pipe's softmax work while its own GEMMs are in
    flight (``softmax_beside_own_gemm``) keeps only the rest in the chain's softmax phase,
    no more of it than the GEMM phase lasts; the pipe's total still bounds the time, and
    --no-own-gemm-overlap puts the whole softmax back in the phase."""
    g = get_gpu("h100")

    def kernel_time_with(beside, opts=TimingOptions()):
        rec = Recorder(g)
        c = rec.kernel("k", ctas=132, buffers={"x": 1024}, tc_path="wgmma",
                       softmax_beside_own_gemm=beside)
        c[MATMUL_FLOPS], c[EXP_OPS] = 10**14, 4 * 10**10
        return predict_time(g, rec.kernels, opts).kernels[0]

    alone = kernel_time_with({})
    assert alone.chain_s == pytest.approx(alone.matmul_s + alone.exp_s)   # one chain: serial
    half = kernel_time_with({"xu": 0.5})
    assert half.chain_s == pytest.approx(half.matmul_s + 0.5 * half.exp_s)
    assert kernel_time_with({"xu": 0.5}, TimingOptions(own_gemm_overlap=False)).chain_s == \
        pytest.approx(alone.chain_s)
    # the GEMM phase hides no more than its own length; the exps still need their pipe
    rec = Recorder(g)
    c = rec.kernel("k", ctas=132, buffers={"x": 1024}, tc_path="wgmma",
                   softmax_beside_own_gemm={"xu": 1.0})
    c[MATMUL_FLOPS], c[EXP_OPS] = 10**12, 4 * 10**10
    t = predict_time(g, rec.kernels).kernels[0]
    assert t.exp_s > t.matmul_s
    assert t.chain_s == pytest.approx(t.matmul_s + (t.exp_s - t.matmul_s))
    assert t.compute_s == pytest.approx(t.exp_s) and t.mechanism == "SFU pipe"


def test_softmax_beside_own_gemm_takes_shares_of_the_softmax_pipes_only():
    rec = Recorder(get_gpu("h100"))
    for bad in ({"tensor": 0.5}, {"xu": 1.5}, {"fma": -0.1}):
        with pytest.raises(ValueError, match="softmax_beside_own_gemm"):
            rec.kernel("k", ctas=1, buffers={"x": 1}, softmax_beside_own_gemm=bad)


# ---- streaming kernels at the DRAM's loaded latency ----------------------------------------

def scale_like_kernel(gpu, threads_per_sm, elements=2**30, opts=TimingOptions()):
    """A kernel shaped like the occupancy sweep's 'scale' (A[i] = B[i] * c in doubles): each
    thread loads 8 bytes and stores 8, two CTAs of threads_per_sm / 2 threads on every SM."""
    rec = Recorder(gpu)
    c = rec.kernel("scale", ctas=elements // (threads_per_sm // 2), buffers={},
                   threads_per_cta=threads_per_sm // 2, tc_path="none",
                   register_bytes_per_cta=gpu.register_bytes_per_sm // 2,
                   thread_round_bytes=16)
    c[HBM_READ_BYTES], c[HBM_WRITE_BYTES] = 8 * elements, 8 * elements
    return predict_time(gpu, rec.kernels, opts).kernels[0]


@pytest.mark.parametrize("name", ["a100-80gb", "h100-pcie"])
def test_a_streaming_kernel_runs_at_the_rate_its_gpus_sweep_measured(name):
    """Priced on the board that ran the sweep (its achievable HBM rate is the sweep's own
    triad), the benchmark's kernel at each measured occupancy moves its bytes at the measured
    rate: the round time L(u) and the utilization it solves for reproduce the data."""
    gpu = get_gpu(name)
    assert gpu.hbm_bandwidth_bytes_per_s * gpu.hbm_achievable_fraction == \
        pytest.approx(gpu.stream_curve_peak_bytes_per_s)
    for threads, rate in gpu.stream_curve:
        k = scale_like_kernel(gpu, threads)
        assert k.latency_s == pytest.approx(16 * 2**30 / rate, rel=1e-9)
        assert k.total_s == pytest.approx(max(k.latency_s, k.hbm_s, k.l2_s), rel=1e-3)
    # the lightest loads are latency-bound, the heaviest stream at the HBM rate
    assert scale_like_kernel(gpu, 64).mechanism == "DRAM latency"
    assert scale_like_kernel(gpu, 4096 // 2).latency_s >= scale_like_kernel(gpu, 2048).hbm_s


def test_loaded_latency_is_a_switch_and_needs_a_curve():
    h = get_gpu("h100")
    k = scale_like_kernel(h, 512)
    off = scale_like_kernel(h, 512, opts=TimingOptions(loaded_latency=False))
    assert k.latency_s > k.hbm_s and k.mechanism == "DRAM latency"
    assert off.latency_s == 0 and off.total_s == pytest.approx(max(off.hbm_s, off.l2_s),
                                                               rel=1e-3)
    bare = scale_like_kernel(h.replace(stream_curve=()), 512)
    assert bare.latency_s == 0


def test_between_the_rows_the_round_time_is_interpolated_in_utilization():
    """On the H100 SXM5 (GH200's sweep, its own HBM rate) a thread with 6 bytes a round at
    full occupancy (ATen's broadcast add in fp16) solves u L(u) = dram / (rounds x rate) on
    the segment the data bracket; the closed form of that linear segment agrees."""
    h = get_gpu("h100")
    util, round_s = h.stream_round_curve()
    rate = h.hbm_bandwidth_bytes_per_s * h.hbm_achievable_fraction
    rec = Recorder(h)
    elements = 2**31
    c = rec.kernel("add", ctas=elements // 512, buffers={}, threads_per_cta=128,
                   tc_path="none", thread_round_bytes=6)
    c[HBM_READ_BYTES], c[HBM_WRITE_BYTES] = 4 * elements, 2 * elements
    k = predict_time(h, rec.kernels).kernels[0]
    rounds = elements / (132 * 2048)
    target = 6 * elements / (rounds * rate)
    i = int(np.searchsorted(util * round_s, target))      # the bracketing segment
    slope = (round_s[i] - round_s[i - 1]) / (util[i] - util[i - 1])
    a, b = slope, round_s[i - 1] - slope * util[i - 1]    # u (a u + b) = target
    u = (-b + np.sqrt(b * b + 4 * a * target)) / (2 * a)
    assert k.latency_s == pytest.approx(rounds * (a * u + b), rel=1e-9)
    assert 1.5 < k.latency_s / k.hbm_s < 3


def test_a_gpu_file_takes_an_occupancy_sweep_and_checks_it():
    base = {"base": "h100", "name": "h100-swept"}
    g = gpu_from_mapping({**base, "stream_curve": [[64, 2e11], [2048, 3e12]],
                          "stream_curve_sm_count": 132, "stream_curve_peak_bytes_per_s": 3.3e12})
    assert g.stream_curve == ((64, 2e11), (2048, 3e12))
    with pytest.raises(GpuFileError, match="the threads and the bandwidth must both rise"):
        gpu_from_mapping({**base, "stream_curve": [[64, 2e11], [128, 5e11]]})
    with pytest.raises(GpuFileError, match=r"\[threads per SM, bytes/s\] pairs"):
        gpu_from_mapping({**base, "stream_curve": [64, 2e11]})
    with pytest.raises(GpuFileError, match="stream_curve_peak_bytes_per_s"):
        gpu_from_mapping({**base, "stream_curve": [[64, 2e11], [2048, 3e12]],
                          "stream_curve_peak_bytes_per_s": 2e12})


@given(rounds=st.floats(1.0, 1e5), dram=st.floats(1e6, 1e12), more=st.floats(1.0, 4.0))
@settings(max_examples=200, deadline=None)
def test_the_rounds_time_is_the_one_its_utilization_agrees_with(rounds, dram, more):
    """``streaming_rounds_s``: the rounds last L(u) each at the utilization u they produce,
    or, where even the heaviest load's rounds move the bytes faster than the HBM rate, the
    bandwidth bound takes over (the time returned is then below dram / rate). More rounds
    or more bytes never take less time."""
    from hwmodels.timing import streaming_rounds_s
    h = get_gpu("h100")
    rate = h.hbm_bandwidth_bytes_per_s * h.hbm_achievable_fraction
    util, round_s = h.stream_round_curve()
    t = streaming_rounds_s(h, rounds, dram, rate)
    u = dram / (t * rate)
    if u < 1:
        assert t == pytest.approx(rounds * float(np.interp(u, util, round_s)), rel=1e-6)
    else:
        assert t == pytest.approx(rounds * round_s[-1], rel=1e-12)
    assert streaming_rounds_s(h, rounds * more, dram, rate) >= t * (1 - 1e-9)
    assert streaming_rounds_s(h, rounds, dram * more, rate) >= t * (1 - 1e-9)


def test_row_padding_prices_the_rows_a_kernel_computes():
    """A kernel that computes whole row tiles (``row_padding``: rows computed over rows
    counted) spends that many times the counted MMAs and elementwise ops on its pipes, and
    issues them; its bytes and counters stay as counted. --no-row-padding prices the counted
    rows only, as a kernel that declares no padding is priced."""
    g = get_gpu("a100")

    def kernel(padding):
        rec = Recorder(g)
        c = rec.kernel("k", ctas=16, buffers={"x": 1024}, tc_path="mma_sync",
                       smem_readers=4, mma_rows_per_cta=128, row_padding=padding)
        c[MATMUL_FLOPS], c[EXP_OPS], c[OTHER_FLOPS] = 4 * 10**9, 10**7, 4 * 10**7
        c[SRAM_READ_BYTES] = 10**8
        return rec.kernels

    plain, padded = kernel(1.0), kernel(128.0)
    t1, t128 = predict_time(g, plain).kernels[0], predict_time(g, padded).kernels[0]
    for term in ("matmul_s", "exp_s", "other_s"):
        assert getattr(t128, term) == pytest.approx(128 * getattr(t1, term)), term
    # the issue too, but for the shared-memory loads of the counted bytes
    assert 100 * t1.issue_s < t128.issue_s < 128 * t1.issue_s
    # the operand re-reads of the three further warps grow with the rows; the counted
    # bytes do not
    reread = 4 * 10**9 * 2 / 2 * 3 / 128
    rate = g.smem_bytes_per_clock_per_sm * g.sm_count * g.sustained_clock
    assert t128.smem_s - t1.smem_s == pytest.approx(127 * reread / rate)
    assert list(padded[0].counters) == list(plain[0].counters)
    assert t128.dram_bytes == t1.dram_bytes
    off = predict_time(g, padded, TimingOptions(row_padding=False)).kernels[0]
    assert off.total_s == pytest.approx(t1.total_s)
    with pytest.raises(ValueError, match="row_padding"):
        Recorder(g).kernel("k", ctas=1, buffers={}, row_padding=0.5)
