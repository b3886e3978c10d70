"""Shared test helpers. The float64 reference lives in attnsim.reference (never copied here)."""
import numpy as np
import pytest

from attnsim import Workload, make_inputs, simulate

# Deliberately awkward sizes (not multiples of any block size), as flash-attn's tests do.
RAGGED_SHAPES = [
    # batch, heads, seq_q, seq_k, head_dim
    (1, 2, 97, 97, 40),
    (2, 1, 200, 333, 64),
    (1, 3, 257, 129, 59),
]
EXACT_FORWARD = ("standard", "flash1", "flash2")


def rel_err(x, ref):
    ref = np.asarray(ref, np.float64)
    return float(np.linalg.norm(np.asarray(x, np.float64) - ref) / np.linalg.norm(ref))


@pytest.fixture
def run_both():
    """simulate() in executed and count-only mode; returns both results."""
    def _run(algorithm, wl, **kw):
        executed = simulate(algorithm, wl, kw.pop("gpu", "h100"), compute=True, **kw)
        counted = simulate(algorithm, wl, "h100" if "gpu" not in kw else kw["gpu"],
                           compute=False, **{k: v for k, v in kw.items() if k != "inputs"})
        return executed, counted
    return _run


__all__ = ["RAGGED_SHAPES", "EXACT_FORWARD", "rel_err", "Workload", "make_inputs", "simulate"]
