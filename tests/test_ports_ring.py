"""The ring port's declaration (algorithms/ports/ring.py), checked on the CPU: the timed
launches are the simulated device's P steps with the Recorder's CTAs, the setup covers every
device, the state tensors are the sizes the simulator counts, and gpu-check's ring row sets
the measurement against the prediction with and without the link."""
import numpy as np
import pytest

from algorithms import ports
from algorithms.ring import device_rows
from attnsim import gpu as backend
from attnsim import gpu_check
from attnsim.simulate import simulate
from hwmodels import get_gpu
from port_cases import workload
from port_plans import plan_of

H100 = get_gpu("h100-sxm")
cdiv = lambda a, b: -(-a // b)  # noqa: E731


@pytest.mark.parametrize("causal", [False, True])
def test_timed_steps_are_the_simulated_devices_and_setup_covers_the_ring(causal):
    wl = workload((2, 4, 2, 1000, 1000, 64, causal))
    plan = plan_of("ring", wl, H100, {"devices": 6})
    spec = ports.port_launches("ring", wl, plan, gpu=H100)
    dev = 5 if causal else 0                        # the busiest device: the last when causal
    assert plan.simulated_device == dev
    lo, hi = device_rows(dev, 1000, 167)            # blocks of ⌈1000 / 6⌉ = 167: the last 165
    assert (lo, hi) == ((835, 1000) if causal else (0, 167))
    assert [l.grid for l in spec.launches] == [(cdiv(hi - lo, plan.block_q), 8, 1)] * 6
    assert [l.args[-2:] for l in spec.launches] == [
        (ports.Scalar(dev, "int"), ports.Scalar(s, "int")) for s in range(6)]
    # every device's rows once, untimed: z = P, each CTA row block of the widest device
    assert [l.grid for l in spec.setup] == [(cdiv(167, plan.block_q), 8, 6)] * 6
    assert {l.kernel for l in spec.all_launches} == {"ring_step"}
    assert spec.tensors["acc_state"].shape == (2, 4, 1000, 64)
    assert spec.tensors["acc_state"].dtype == spec.tensors["m_state"].dtype == "fp32"


def test_state_bytes_the_port_moves_are_the_counted_ones():
    """Per CTA the kernel reads and writes rows x (d + 2) x 4 state bytes (acc, m, l) at each
    step but the first / last: over the simulated device's steps that is the simulator's
    (P - 1) (c d 4 + 8 c) each way — the rest of its count is FlashAttention-2's."""
    wl = workload((1, 2, 2, 700, 700, 64, False))
    P = 4
    sim = simulate("ring", wl, H100, options={"devices": P}, compute=False)
    fa2 = [simulate("flash2", wl.replace(seq_q=175, seq_k=175), H100, compute=False)] * P
    c, d = 175, 64
    state = wl.batch * wl.heads * (P - 1) * (c * d * 4 + 8 * c)
    # each step reads what a FlashAttention-2 pass of c rows over one block reads (Q_i at
    # every step); O and lse are written once, at the last step
    assert sim.counts["hbm_read_bytes"] == sum(f.counts["hbm_read_bytes"] for f in fa2) + state
    assert sim.counts["hbm_write_bytes"] == fa2[0].counts["hbm_write_bytes"] + state


def test_ring_refuses_what_its_kernel_does_not_run():
    wl = workload((1, 2, 2, 256, 256, 64, False))
    plan = plan_of("ring", wl, H100, {"devices": 2})
    with pytest.raises(ports.PortUnsupported, match="fp16 or bf16"):
        ports.port_launches("ring", wl.replace(dtype="fp32"), plan)


def test_gpu_check_ring_row_sets_the_measurement_against_the_prediction_without_link(
        monkeypatch):
    """Small blocks: the link bounds the per-device prediction; one GPU moves nothing, so
    the row adds the prediction without it. The CPU run is the reference while it fits.
    (32 heads: with fewer, the grid covers so few SMs that its compute hides the link.)"""
    seen = {}

    def fake_run_port(spec, inputs, reference=None, **kw):
        seen["reference"], seen["launches"] = reference, spec.launches
        return backend.PortRun(algorithm=spec.algorithm, median_s=1e-4, times_s=[1e-4],
                               rel_error=1e-4, copies=2, rel_errors={"o": 1e-4})

    monkeypatch.setattr(backend, "run_port", fake_run_port)
    wl = workload((1, 32, 32, 1024, 1024, 128, False))
    row = gpu_check.check_one("ring", wl, H100, sdpa=True)
    assert row["error_vs"] == "cpu" and seen["reference"].shape == (1, 32, 1024, 128)
    assert len(seen["launches"]) == 8                     # the default ring of 8 devices
    assert row["predicted_no_link_s"] < row["predicted_s"]
    assert row["ratio_no_link"] == pytest.approx(row["predicted_no_link_s"] / 1e-4)
    assert row["ratio"] == pytest.approx(row["predicted_s"] / 1e-4)
    assert "no transfer" in row["note"] and "the link adds" in row["note"]
    assert row["sdpa_s"] is None                          # SDPA of the whole N is other work


def test_gpu_check_ring_at_large_n_uses_the_device_reference(monkeypatch):
    monkeypatch.setattr(backend, "run_port", lambda spec, inputs, reference=None, **kw:
                        backend.PortRun(algorithm="ring", median_s=1e-3, times_s=[1e-3],
                                        rel_error=0.0, copies=2))
    monkeypatch.setattr(backend, "device_reference",
                        lambda wl, inputs: np.zeros((wl.batch, wl.heads, wl.seq_q, wl.head_dim)))
    row = gpu_check.check_one("ring", workload((1, 2, 2, 2048, 2048, 64, False)), H100,
                              sdpa=False)
    assert row["error_vs"] == "gpu fp32"


def test_gpu_check_devices_gives_one_row_set_per_ring_size(monkeypatch, capsys):
    monkeypatch.setattr(backend, "run_port", lambda spec, inputs, reference=None, **kw:
                        backend.PortRun(algorithm="ring", median_s=1e-3, times_s=[1e-3],
                                        rel_error=0.0, copies=2))
    monkeypatch.setattr(backend, "gpu_available", lambda: (True, "test device"))
    monkeypatch.setattr(backend, "detect_gpu_model", lambda: (H100, None))
    monkeypatch.setattr(backend, "environment", lambda: {})
    from attnsim.cli import main
    code = main(["gpu-check", "ring", "--devices", "2", "4", "--seq", "256", "--batch", "1",
                 "--heads", "2", "--no-sdpa", "--format", "json"])
    import json
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert code == 0
    assert [r["algorithm"] for r in rows] == ["ring --devices 2", "ring --devices 4"]
    assert all(r["ratio_no_link"] is not None for r in rows)
