"""Property tests (hypothesis): random shapes, the same invariants."""
import numpy as np
from hypothesis import HealthCheck, given, settings, strategies as st

from attnsim import Workload, make_inputs, simulate

shapes = st.fixed_dictionaries({
    "seq_q": st.integers(1, 150), "seq_k": st.integers(1, 150),
    "head_dim": st.sampled_from([8, 16, 24, 40, 64]), "heads": st.integers(1, 3),
    "causal": st.booleans(), "algorithm": st.sampled_from(["standard", "flash1", "flash2"]),
    "sram_kb": st.sampled_from([16, 48, 160]),
})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shapes)
def test_exact_algorithms_match_reference_and_count_only(p):
    wl = Workload(heads=p["heads"], seq_q=p["seq_q"], seq_k=p["seq_k"], head_dim=p["head_dim"],
                  causal=p["causal"])
    sram = p["sram_kb"] * 1024
    executed = simulate(p["algorithm"], wl, "a100", sram_bytes=sram, inputs=make_inputs(wl, 7))
    assert np.all(np.isfinite(executed.outputs["o"]))
    assert executed.error_vs_reference < 1e-4 or np.allclose(executed.outputs["o"], 0)
    counted = simulate(p["algorithm"], wl, "a100", sram_bytes=sram, compute=False)
    assert counted.counts == executed.counts
    assert counted.counts["sram_peak_bytes"] <= sram
    # every algorithm reads at least Q, K and V once and writes O once
    e = 2
    assert counted.counts["hbm_read_bytes"] >= (p["seq_q"] + 2 * p["seq_k"]) * p["head_dim"] * e * p["heads"] or p["causal"]
    assert counted.counts["hbm_write_bytes"] >= p["seq_q"] * p["head_dim"] * e * p["heads"]
