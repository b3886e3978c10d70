"""The simulated machine: GPU specs, the counted memory hierarchy, and the timing model.

This package imports nothing else of attnsim's: algorithms and the harness build on it.
"""
from hwmodels.counters import COUNTER_NAMES, ADDITIVE_SLOTS, Slot, new_counters, counters_to_dict
from hwmodels.gpus import GPU, GPUS, builtin_gpu, gpu_names, dtype_bytes, DTYPE_BYTES
from hwmodels.gpu_file import get_gpu, load_gpu_file
from hwmodels.memory import KernelRecord, Recorder, SramOverflowError
from hwmodels.timing import TimingOptions, KernelTime, TimingBreakdown, predict_time

__all__ = [
    "COUNTER_NAMES", "ADDITIVE_SLOTS", "Slot", "new_counters", "counters_to_dict",
    "GPU", "GPUS", "builtin_gpu", "get_gpu", "load_gpu_file", "gpu_names", "dtype_bytes", "DTYPE_BYTES",
    "KernelRecord", "Recorder", "SramOverflowError",
    "TimingOptions", "KernelTime", "TimingBreakdown", "predict_time",
]
