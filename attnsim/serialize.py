"""SimResult -> plain JSON-able dicts. The keys are a public interface: extend, never rename."""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from hwmodels.timing import kernel_time


def jsonable(x):
    """Recursively convert numpy scalars/arrays and dataclasses into JSON types."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return jsonable(dataclasses.asdict(x))
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def gpu_dict(gpu) -> dict:
    d = dataclasses.asdict(gpu)
    d["sfu_ops_per_s"] = gpu.sfu_ops_per_s
    d["sustained_clock"] = gpu.sustained_clock
    d["fp32_lanes"] = gpu.fp32_lanes
    d["l2_achievable_bytes_per_s"] = gpu.l2_bytes_per_s()
    d["atomic_bytes_per_s"] = gpu.atomic_bytes_per_s
    return d


def result_dict(r) -> dict:
    """The JSON object of ``attnsim run --format json``."""
    kernels = []
    # the run's own timing (its options, launches pipelined); a kernel alone otherwise
    times = r.time.kernels if len(r.time.kernels) == len(r.kernels) else \
        tuple(kernel_time(r.gpu, k) for k in r.kernels)
    for k, kt in zip(r.kernels, times):
        kernels.append({"name": k.name, "ctas": k.ctas, "sram_bytes_per_cta": k.sram_bytes_per_cta,
                        "buffers": k.buffers, "tc_path": k.tc_path, "overlap": k.overlap,
                        "chains_per_cta": k.chains_per_cta, "smem_readers": k.smem_readers,
                        "step_events": dict(k.step_events), "chain_steps": k.chain_steps,
                        "softmax_beside_own_gemm": dict(k.softmax_beside_own_gemm),
                        "library_lane_ops": dict(k.library_lane_ops),
                        "thread_round_bytes": k.thread_round_bytes,
                        "row_padding": k.row_padding,
                        "counts": k.counts(), "time": dataclasses.asdict(kt)})
    time = r.time.to_dict()
    time.pop("kernels")
    out = {
        "algorithm": r.algorithm,
        "title": r.info.title,
        "paper": r.info.paper,
        "exact": r.info.exact,
        "gpu": gpu_dict(r.gpu),
        "workload": r.workload.to_dict(),
        "options": r.options,
        "mode": "executed" if r.compute else "count-only",
        "sram_budget_bytes": r.sram_budget_bytes,
        "plan": r.plan,
        "counts": r.counts,
        "derived": {"hbm_bytes": r.hbm_bytes, "flops": r.flops,
                    "arithmetic_intensity_flop_per_byte": r.arithmetic_intensity},
        "time": time,
        "io_bound": {"formula": r.info.io_bound, "bytes": r.io_bound_bytes,
                     "ratio": r.io_ratio},
        "kernels": kernels,
        "error_vs_reference": r.error_vs_reference,
        "error_vs_exact": r.error_vs_exact,
        "memory": r.memory,
    }
    for key, value in r.extra.items():
        if key != "mask" and key not in out:
            out[key] = value
    return jsonable(out)
