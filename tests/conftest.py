"""Shared test fixtures. The float64 reference lives in attnsim.reference (never copied here);
shared shapes and helpers live in plain modules (shapes.py, port_cases.py) that test modules
import by name."""
import os

# The suite compiles every kernel (CI starts without a Numba cache): at LLVM -O1, as the
# command line does (attnsim/__main__.py), compilation takes about a third less and the
# kernels run as fast. Set before anything imports Numba; a value in the environment wins.
os.environ.setdefault("NUMBA_OPT", "1")

import pytest  # noqa: E402

from attnsim import Workload, make_inputs, simulate  # noqa: E402
from shapes import EXACT_FORWARD, RAGGED_SHAPES, rel_err  # noqa: E402


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
