"""attnsim: a reference simulator of the GPU memory hierarchy for attention.

    >>> from attnsim import Workload, simulate
    >>> r = simulate("flash2", Workload(batch=1, heads=2, seq_q=1000, head_dim=64), "h100")
    >>> r.counts["hbm_read_bytes"], r.time.predicted_s, r.time.bound

The names below are imported on first use, so that ``python -m attnsim`` can set Numba's
options before anything imports Numba (``attnsim.__main__``).
"""
from importlib import import_module

_EXPORTS = {
    "AttnsimError": "attnsim.errors",
    "Inputs": "attnsim.inputs",
    "make_inputs": "attnsim.inputs",
    "attention_reference": "attnsim.reference",
    "relative_error": "attnsim.reference",
    "SimResult": "attnsim.simulate",
    "simulate": "attnsim.simulate",
    "Workload": "attnsim.workload",
}
__all__ = list(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'attnsim' has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
