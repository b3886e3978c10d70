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


def pytest_xdist_auto_num_workers(config):
    """pyproject's `-n auto` runs one test process per core, except for a run of the GPU
    tests (`-m gpu`, or tests/gpu named): those run in one process, so that the ports do not
    share the device or time each other's kernels, and compute-sanitizer (which
    benchmarks/gpu_session.sh wraps around pytest) sees every launch. None: xdist's default."""
    markexpr = config.getoption("markexpr", "") or ""
    selects_gpu = "gpu" in markexpr and "not gpu" not in markexpr
    if selects_gpu or any("tests/gpu" in str(a) for a in config.args):
        return 0
    return None


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
