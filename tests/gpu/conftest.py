"""GPU tests: skipped, with the reason, unless CuPy and a CUDA device are usable.

ATTNSIM_EMULATED_CUPY=1 runs them without a GPU, every kernel on the CPU emulator
(tests/cuda_emu/fake_cupy.py): a slow dry run of the GPU code paths, timings meaningless.

Without a GPU, the tests marked ``emulated_subset`` (a handful of representative ports and
gpu-check end to end) still run on every ``pytest``: each one with the emulated CuPy installed
in attnsim.gpu for its duration only, so the GPU harness itself is exercised on every change
(about a minute of CPU time; needs g++, as the emulator does).
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


# set at collection: no usable device, so the emulated subset runs on the emulated CuPy
_emulate_subset = False


def pytest_collection_modifyitems(config, items):
    global _emulate_subset
    from attnsim.gpu import gpu_available
    from cuda_emu.emulate import compiler
    ok, reason = gpu_available()
    if ok:
        return
    _emulate_subset = compiler() is not None
    skip = pytest.mark.skip(reason=f"GPU tests need CuPy and a CUDA device: {reason}")
    for item in items:
        if "gpu" in item.keywords and not (_emulate_subset and "emulated_subset" in item.keywords):
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def emulated_cupy(request):
    """Without a device: attnsim.gpu with the emulated CuPy for one emulated_subset test,
    then as it was."""
    if not (_emulate_subset and "emulated_subset" in request.keywords):
        yield None
        return
    from attnsim import gpu
    from cuda_emu import fake_cupy
    saved = (gpu._cupy, gpu._cupy_error, dict(gpu._modules), dict(gpu._device_infos))
    fake_cupy.install(gpu)
    yield gpu
    gpu._cupy, gpu._cupy_error = saved[:2]
    for cache, old in zip((gpu._modules, gpu._device_infos), saved[2:]):
        cache.clear()
        cache.update(old)
