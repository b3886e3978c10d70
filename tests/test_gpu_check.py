"""attnsim gpu-check's header: the rates it says the model uses must be the ones it uses."""
import pytest

from attnsim.gpu_check import model_rates, render
from hwmodels import get_gpu
from hwmodels.timing import TimingOptions, kernel_time


def test_model_clock_is_the_sustained_clock_not_the_boost_clock():
    a100 = get_gpu("a100-80gb")
    rates = model_rates(a100)
    assert a100.sustained_clock_hz != a100.clock_hz      # the case that tells them apart
    assert rates["model_clock_mhz"] == pytest.approx(1305.0)
    assert rates["model_boost_clock_mhz"] == pytest.approx(1410.0)


def test_model_hbm_bandwidths_are_the_peak_and_the_charged_rate():
    h100 = get_gpu("h100-sxm")
    rates = model_rates(h100)
    assert rates["model_hbm_gbs"] == pytest.approx(3350.0)
    assert rates["model_hbm_achievable_gbs"] == pytest.approx(
        3350.0 * h100.hbm_achievable_fraction)
    assert rates["model_hbm_achievable_gbs"] < rates["model_hbm_gbs"]
    assert rates["model_l2_achievable_gbs"] == pytest.approx(9765.2)   # [L2-RRZE]


def test_model_clock_is_the_clock_the_timing_model_scales_its_pipes_by():
    """A kernel of exp operations only: its SFU time is ops / (16 x SMs x the model clock)."""
    from hwmodels.counters import EXP_OPS, KERNEL_LAUNCHES
    from hwmodels.memory import KernelRecord
    a100 = get_gpu("a100-80gb")
    k = KernelRecord(name="exp only", ctas=a100.sm_count, buffers={})
    k.raw[EXP_OPS] = 16 * a100.sm_count * 10**6
    k.raw[KERNEL_LAUNCHES] = 0
    t = kernel_time(a100, k, TimingOptions())
    assert t.exp_s == pytest.approx(1e6 / (model_rates(a100)["model_clock_mhz"] * 1e6))


def test_text_header_shows_both_clocks():
    header = {"device": "d", "model": "a100-80gb", "workload": "w", "sdpa": "no",
              "warning": None, "environment": {"sm_clock_max_mhz": 1410.0},
              **model_rates(get_gpu("a100-80gb"))}
    text = render([], "text", header)
    assert "model: 1305 sustained, 1410 boost" in text
