"""The one place algorithms are registered: adding an algorithm is one module + one line."""
from __future__ import annotations

import importlib
from types import ModuleType

ALGORITHMS = (
    # exact, dense
    "standard",
    "flash1",
    "flash2",
    "flash3",
    # sparse and local, and the same masks on dense standard attention (their baseline)
    "local",
    "sparse_transformer",
    "longformer",
    "bigbird",
    "block_sparse",
    "masked_dense",
    # inference: KV cache and decoding
    "gqa",
    "mla",
    # multi-device and variants
    "ring",
    "diff",
    "nsa",
    # approximate: kernel features and hashing
    "linear",
    "rfa",
    "performer",
    "reformer",
)


def algorithm_names() -> list[str]:
    return list(ALGORITHMS)


def get_algorithm(name: str) -> ModuleType:
    """The module of a registered algorithm; ValueError listing the valid names otherwise."""
    key = name.strip().lower().replace("-", "_")
    if key not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}; valid algorithms: {', '.join(ALGORITHMS)}")
    return importlib.import_module(f"algorithms.{key}")


def all_algorithms() -> dict[str, ModuleType]:
    return {name: get_algorithm(name) for name in ALGORITHMS}
