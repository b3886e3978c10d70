"""attnsim: a reference simulator of the GPU memory hierarchy for attention.

    >>> from attnsim import Workload, simulate
    >>> r = simulate("flash2", Workload(batch=1, heads=2, seq_q=1000, head_dim=64), "h100")
    >>> r.counts["hbm_read_bytes"], r.time.predicted_s, r.time.bound
"""
from attnsim.errors import AttnsimError
from attnsim.inputs import Inputs, make_inputs
from attnsim.reference import attention_reference, relative_error
from attnsim.simulate import SimResult, simulate
from attnsim.workload import Workload

__all__ = ["AttnsimError", "Inputs", "make_inputs", "attention_reference", "relative_error",
           "SimResult", "simulate", "Workload"]
__version__ = "0.1.0"
