"""Custom GPUs from TOML files, validated field by field.

A file either describes every field of ``hwmodels.gpus.GPU`` or starts from a built-in
GPU with ``base = "h100"`` and overrides some fields::

    # my_gpu.toml: an H100 SXM whose HBM runs at 3.0 TB/s
    base = "h100"
    name = "h100-slow-hbm"
    full_name = "H100 SXM5 with 3.0 TB/s HBM"
    hbm_bandwidth_bytes_per_s = 3.0e12
    sources = "our own measurement, 2026-11"

Errors name the file, the field and what is wrong with it.
"""
from __future__ import annotations

import dataclasses
import math

from hwmodels.config_file import base_chain, read_toml, start_from_base
from hwmodels.gpus import GPU, STEP_EVENT_LATENCY_FIELDS, builtin_gpu


class GpuFileError(ValueError):
    """A GPU TOML file that cannot be used as it is."""


_FIELDS = {f.name: f for f in dataclasses.fields(GPU)}
_INT_FIELDS = {n for n, f in _FIELDS.items() if f.type in ("int", int)}
_FLOAT_FIELDS = {n for n, f in _FIELDS.items() if f.type in ("float", float)}
_STR_FIELDS = {"name", "full_name", "sources"}
_CURVE_FIELDS = {"stream_curve"}
_BOOL_FIELDS = {"has_wgmma"}
_MAY_BE_ZERO = {"tensor_fp8_flops_per_s", "nvlink_bytes_per_s", "launch_overhead_s",
                # 0 means "not given": the timing model falls back as hwmodels.gpus documents
                "sustained_clock_hz", "fp32_lanes_per_sm", "dram_latency_s",
                "l2_atomic_bytes_per_s", "tensor_tf32_gemm_fraction",
                "barrier_clocks_per_warp", "l2_latency_clocks", "stream_curve_sm_count",
                "stream_curve_peak_bytes_per_s", *STEP_EVENT_LATENCY_FIELDS.values()}
_FRACTIONS = {"mma_sync_fraction_of_peak", "tensor_gemm_fraction", "tensor_fp8_gemm_fraction",
              "hbm_achievable_fraction", "l2_achievable_fraction", "tensor_tf32_gemm_fraction"}
_OPTIONAL = {n for n, f in _FIELDS.items() if f.default is not dataclasses.MISSING}

# What hardware of this kind has, with room to spare: (lowest, highest) accepted value of each
# numeric field. The built-in GPUs' values (hwmodels.gpus) sit well inside; the upper ends
# are 5-100x today's largest parts (B200: 148 SMs, 192 GB of HBM3e at 8 TB/s, about 4.5
# dense fp8 PFLOP/s per NVIDIA's datasheet), so a file with a unit slip (bytes for KiB,
# FLOP/s for TFLOP/s) or a typo is refused instead of simulated. Fields not listed are
# checked as positive and finite.
FIELD_RANGES = {
    "sm_count": (1, 1024),
    "clock_hz": (1e8, 1e10),
    "smem_bytes_per_sm": (1024, 2**24),
    "smem_bytes_per_block": (1024, 2**24),
    "register_bytes_per_sm": (1024, 2**24),
    # every compute capability since 2.0 runs 1024-thread blocks [CUDA-CC]
    "max_threads_per_sm": (1024, 2**16),
    "max_ctas_per_sm": (1, 1024),
    "l2_bytes": (1024, 2**34),
    "l2_bandwidth_bytes_per_s": (1e9, 1e15),
    "hbm_bytes": (2**20, 2**40),
    "hbm_bandwidth_bytes_per_s": (1e9, 1e14),
    "tensor_fp16_flops_per_s": (1e9, 1e17),
    "tensor_bf16_flops_per_s": (1e9, 1e17),
    "tensor_tf32_flops_per_s": (1e9, 1e17),
    "tensor_fp8_flops_per_s": (1e9, 1e17),
    "fp32_flops_per_s": (1e9, 1e16),
    "sfu_ops_per_clock_per_sm": (1, 1024),
    "nvlink_bytes_per_s": (1e9, 1e14),
    "launch_overhead_s": (1e-8, 1.0),
    "mma_sync_fraction_of_peak": (1e-3, 1.0),
    # the timing model's achievable rates (0 where allowed: not given, see hwmodels.gpus)
    "sustained_clock_hz": (1e8, 1e10),
    "tensor_gemm_fraction": (1e-3, 1.0),
    "tensor_fp8_gemm_fraction": (1e-3, 1.0),
    "tensor_tf32_gemm_fraction": (1e-3, 1.0),
    "hbm_achievable_fraction": (1e-3, 1.0),
    "l2_achievable_fraction": (1e-3, 1.0),
    "fp32_lanes_per_sm": (1, 1024),
    "alu_lanes_per_sm": (1, 1024),
    "smem_bytes_per_clock_per_sm": (4, 4096),
    "issue_per_clock_per_sm": (1, 64),
    "dram_latency_s": (1e-8, 1e-4),
    "l2_atomic_bytes_per_s": (1e9, 1e15),
    "max_registers_per_thread": (16, 1024),
    **{name: (1, 10000) for name in STEP_EVENT_LATENCY_FIELDS.values()},    # clocks
    "barrier_clocks_per_warp": (0.01, 1000),
    "l2_latency_clocks": (1, 10000),
    "stream_curve_sm_count": (1, 1024),
    "stream_curve_peak_bytes_per_s": (1e9, 1e14),
}


def get_gpu(name_or_path: str) -> GPU:
    """A built-in GPU by (case-insensitive) name or alias, or a custom one from a TOML file."""
    if name_or_path.lower().endswith(".toml"):
        return load_gpu_file(name_or_path)
    return builtin_gpu(name_or_path)


def load_gpu_file(path: str) -> GPU:
    """Read and validate a GPU description; raises GpuFileError naming the problem."""
    with base_chain(path, "GPU", GpuFileError):
        return gpu_from_mapping(read_toml(path, "GPU", GpuFileError), origin=path)


def gpu_from_mapping(data: dict, origin: str = "<mapping>") -> GPU:
    values, data = start_from_base(data, _FIELDS, lambda name: dataclasses.asdict(get_gpu(name)),
                                   "GPU", origin, GpuFileError)
    base = dict(values)
    for key, value in data.items():
        values[key] = _checked(origin, key, value)
    if _modified(base, values) and "full_name" not in data:
        values["full_name"] = f"{values['name']} (custom, based on {base['name']})"
    missing = [n for n in _FIELDS if n not in values and n not in _OPTIONAL]
    if missing:
        raise GpuFileError(f"{origin}: missing field(s) {', '.join(missing)} "
                           f"(or start from a built-in GPU with base = \"h100\")")
    gpu = GPU(**values)
    _check_consistency(origin, gpu)
    return gpu


def _modified(base: dict, values: dict) -> bool:
    """Whether a file changes its base's hardware: then the base's full name (which messages
    show, e.g. "NVIDIA H100-SXM5-80GB has no fp8 tensor cores") no longer describes it."""
    kept = {"name", "full_name", "sources"}
    return bool(base) and any(values[k] != v for k, v in base.items() if k not in kept)


def _checked(origin: str, key: str, value):
    where = f"{origin}: field {key!r}"
    if key in _STR_FIELDS:
        if not isinstance(value, str) or (key != "sources" and not value.strip()):
            raise GpuFileError(f"{where} must be a non-empty string, got {value!r}")
        if key != "sources" and not value.isprintable():
            # messages and warnings quote the names: a newline would split their one line
            raise GpuFileError(f"{where} must be printable text on one line (no newline, tab "
                               f"or other control character), got {value!r}")
        return value
    if key in _CURVE_FIELDS:
        return checked_stream_curve(where, value)
    if key in _BOOL_FIELDS:
        if not isinstance(value, bool):
            raise GpuFileError(f"{where} must be true or false, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise GpuFileError(f"{where} must be a number, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise GpuFileError(f"{where} must be finite, got {value!r}")
    if abs(value) >= 2**63:          # beyond any range below, and beyond a 64-bit integer
        raise GpuFileError(f"{where} {_range_text(key)}got {value!r}")
    if key in _INT_FIELDS:
        if isinstance(value, float) and not value.is_integer():
            raise GpuFileError(f"{where} must be a whole number, got {value!r}")
        value = int(value)
    if value < 0 or (value == 0 and key not in _MAY_BE_ZERO):
        raise GpuFileError(f"{where} must be positive, got {value!r}")
    if key in _FRACTIONS and value > 1:
        raise GpuFileError(f"{where} is a fraction of the peak and must be in (0, 1], "
                           f"got {value!r}")
    lo, hi = FIELD_RANGES.get(key, (None, None))
    if lo is not None and value != 0 and not lo <= value <= hi:
        raise GpuFileError(f"{where} {_range_text(key)}got {value!r}")
    return float(value) if key in _FLOAT_FIELDS else value


def checked_stream_curve(where: str, value) -> tuple:
    """An occupancy sweep ([[threads per SM, bytes/s], ...], ``hwmodels.gpus.GPU``): the
    threads and the bandwidth both rise row by row, and so does the time a round takes
    (threads / bandwidth): more load never shortens the DRAM's latency, which keeps the
    timing model's solution for a kernel's utilization unique."""
    hint = "an array of [threads per SM, bytes/s] pairs, e.g. [[64, 1.8e11], [2048, 1.7e12]]"
    if not isinstance(value, list) or (value and len(value) < 2):
        raise GpuFileError(f"{where} must be {hint} (two rows at least), or [] for none")
    rows = []
    for row in value:
        if not (isinstance(row, list) and len(row) == 2
                and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                        and math.isfinite(x) for x in row)):
            raise GpuFileError(f"{where} must be {hint}; got the row {row!r}")
        threads, rate = row
        if not (isinstance(threads, int) or float(threads).is_integer()) \
                or not 1 <= threads <= 2**16 or not 1e9 <= rate <= 1e14:
            raise GpuFileError(f"{where}: the row {row!r} needs a whole number of threads in "
                               f"[1, 65,536] and a bandwidth in [1e9, 1e14] bytes/s")
        rows.append((int(threads), float(rate)))
    for (t0, r0), (t1, r1) in zip(rows, rows[1:]):
        if not (t1 > t0 and r1 > r0 and t1 / r1 >= t0 / r0):
            raise GpuFileError(f"{where}: from row {[t0, r0]} to {[t1, r1]} the threads and "
                               f"the bandwidth must both rise, the bandwidth by no more than "
                               f"the threads (a round never gets faster under more load)")
    return tuple(rows)


def _range_text(key: str) -> str:
    """What the field accepts, as the start of an error message."""
    lo, hi = FIELD_RANGES.get(key, (None, None))
    if lo is None:
        return "must be a positive number below 2^63, "
    zero = " (or 0: none)" if key in _MAY_BE_ZERO else ""
    return f"must be in [{_number(lo)}, {_number(hi)}]{zero}, the range of real GPUs, "


def _number(x) -> str:
    return f"{x:,}" if isinstance(x, int) else f"{x:g}"


def _check_consistency(origin: str, gpu: GPU) -> None:
    if gpu.smem_bytes_per_block > gpu.smem_bytes_per_sm:
        raise GpuFileError(
            f"{origin}: smem_bytes_per_block ({gpu.smem_bytes_per_block}) exceeds "
            f"smem_bytes_per_sm ({gpu.smem_bytes_per_sm})")
    if gpu.max_threads_per_sm % 32:
        raise GpuFileError(f"{origin}: max_threads_per_sm ({gpu.max_threads_per_sm}) must be a "
                           f"multiple of the 32-thread warp")
    if gpu.sustained_clock_hz > gpu.clock_hz:
        raise GpuFileError(
            f"{origin}: sustained_clock_hz ({gpu.sustained_clock_hz:g}), the clock under load, "
            f"exceeds clock_hz ({gpu.clock_hz:g}), the boost clock; lower it or raise clock_hz")
    for field in ("tensor_fp16_flops_per_s", "tensor_bf16_flops_per_s",
                  "tensor_tf32_flops_per_s"):
        if getattr(gpu, field) < gpu.fp32_flops_per_s:
            raise GpuFileError(
                f"{origin}: {field} ({getattr(gpu, field):g}) is below fp32_flops_per_s "
                f"({gpu.fp32_flops_per_s:g}); tensor cores are the faster path on every GPU "
                f"that has them: check the units (FLOP/s)")
    if gpu.stream_curve and not (gpu.stream_curve_sm_count and gpu.stream_curve_peak_bytes_per_s
                                 >= max(rate for _, rate in gpu.stream_curve)):
        raise GpuFileError(
            f"{origin}: stream_curve needs stream_curve_sm_count (the SMs of the board that "
            f"ran the sweep) and stream_curve_peak_bytes_per_s (its best stream rate, at least "
            f"the sweep's top {max(r for _, r in gpu.stream_curve):g} bytes/s)")
    if gpu.l2_bytes > gpu.hbm_bytes:
        # the model keeps re-reads in L2 when they fit: an L2 larger than the memory it
        # caches would serve traffic no real GPU can
        raise GpuFileError(
            f"{origin}: l2_bytes ({gpu.l2_bytes:,}) exceeds hbm_bytes ({gpu.hbm_bytes:,}); "
            f"an L2 cache is smaller than the HBM it caches: check the units (bytes)")
