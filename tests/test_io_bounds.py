"""Theorem 2 of the FlashAttention paper, checked by fitting the counted HBM traffic.

Standard attention: Θ(N d + N²) HBM accesses. FlashAttention: Θ(N² d² M⁻¹), for d <= M <= N d.
Growth exponents are fitted on log-log axes over several N, d and M (count-only mode).
"""
import numpy as np
import pytest

from attnsim import Workload, simulate


def hbm(algorithm, n=4096, d=64, sram=None, causal=False):
    wl = Workload(seq_q=n, head_dim=d, causal=causal)
    return simulate(algorithm, wl, "h100", sram_bytes=sram, compute=False).hbm_bytes


def exponent(xs, ys):
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


NS = [8192, 16384, 32768, 65536]   # M <= N d holds from N = 2048 at d = 64 on an H100


@pytest.mark.parametrize("algorithm", ["standard", "flash1", "flash2"])
def test_quadratic_in_sequence_length(algorithm):
    assert exponent(NS, [hbm(algorithm, n) for n in NS]) == pytest.approx(2.0, abs=0.05)


def test_flash1_traffic_is_quadratic_in_head_dim_at_fixed_sram():
    ds = [32, 64, 128, 256]
    sram = 128 * 1024                       # M = 64K fp16 elements: B_c = M/4d >= 64 for all d here
    traffic = [hbm("flash1", n=16384, d=d, sram=sram) for d in ds]
    # d² M⁻¹ N²: the K/V-once term (2 N d) is negligible next to T_c (2 N d) = 8 N² d² / M.
    assert exponent(ds, traffic) == pytest.approx(2.0, abs=0.1)


def test_flash1_traffic_is_inverse_in_sram_size():
    srams = [16 * 1024, 32 * 1024, 64 * 1024, 128 * 1024]
    traffic = [hbm("flash1", n=16384, d=64, sram=m) for m in srams]
    assert exponent(srams, traffic) == pytest.approx(-1.0, abs=0.05)


def test_standard_traffic_does_not_depend_on_sram_size_much():
    """Θ(N d + N²) has no M: only the GEMMs' tile sizes (a constant factor) move with M."""
    srams = [16 * 1024, 64 * 1024, 227 * 1024]
    traffic = [hbm("standard", n=8192, sram=m) for m in srams]
    assert abs(exponent(srams, traffic)) < 0.15


@pytest.mark.parametrize("algorithm", ["flash1", "flash2"])
def test_counts_over_bound_ratio_is_flat(algorithm):
    """Counted traffic divided by the theorem's leading term tends to a constant."""
    ratios = []
    for n in NS:
        r = simulate(algorithm, Workload(seq_q=n, head_dim=64), "h100", compute=False)
        ratios.append(r.io_ratio)
    assert max(ratios) / min(ratios) < 1.1


@pytest.mark.parametrize("flash", ["flash1", "flash2"])
@pytest.mark.parametrize("d", [64, 128])
def test_flash_reads_less_than_standard_beyond_small_n(flash, d):
    for n in [1024, 4096, 16384]:
        assert hbm(flash, n, d) < hbm("standard", n, d)


def test_flash_advantage_grows_with_sram():
    """At fixed N and d, flash1/standard falls as M grows (N²d²/M against N²)."""
    ratios = [hbm("flash1", 8192, 64, m) / hbm("standard", 8192, 64, m)
              for m in (16 * 1024, 64 * 1024, 200 * 1024)]
    assert ratios[0] > ratios[1] > ratios[2]


def test_causal_halves_flash_traffic_not_standard():
    n = 16384
    assert hbm("flash2", n, causal=True) / hbm("flash2", n) == pytest.approx(0.5, abs=0.03)
    assert hbm("standard", n, causal=True) > hbm("standard", n)   # the mask is an extra pass
