"""GPU tests: skipped, with the reason, unless CuPy and a CUDA device are usable.

ATTNSIM_EMULATED_CUPY=1 runs them without a GPU, every kernel on the CPU emulator
(tests/cuda_emu/fake_cupy.py): a slow dry run of the GPU code paths, timings meaningless.
"""
import os
import sys
from pathlib import Path

import pytest

# the cases shared with the CPU tests live in tests/port_cases.py
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def pytest_configure(config):
    if os.environ.get("ATTNSIM_EMULATED_CUPY") == "1":
        from attnsim import gpu
        from cuda_emu import fake_cupy
        fake_cupy.install(gpu)


def pytest_collection_modifyitems(config, items):
    from attnsim.gpu import gpu_available
    ok, reason = gpu_available()
    if ok:
        return
    skip = pytest.mark.skip(reason=f"GPU tests need CuPy and a CUDA device: {reason}")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
