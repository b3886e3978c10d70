"""GPU tests: skipped, with the reason, unless CuPy and a CUDA device are usable."""
import sys
from pathlib import Path

import pytest

# the cases shared with the CPU tests live in tests/port_cases.py
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def pytest_collection_modifyitems(config, items):
    from attnsim.gpu import gpu_available
    ok, reason = gpu_available()
    if ok:
        return
    skip = pytest.mark.skip(reason=f"GPU tests need CuPy and a CUDA device: {reason}")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
