"""The GPU backend: compile the declared CUDA ports, run them on the simulator's inputs, check
them against the CPU result and time them with CUDA events.

CuPy is optional (``pip install 'attnsim[gpu]'``). Without it, or without a device,
``gpu_available()`` says why and nothing here touches CUDA; the rest of attnsim works.

Pipeline for one algorithm on one workload (``run_port``):

1. ``algorithms.ports.port_launches`` turns the simulator's plan into launches (source,
   kernel, grid, block, shared memory, ``-D`` tile defines, tensors);
2. each (source, defines, arch) is compiled once by NVRTC through ``cupy.RawModule``
   (``-std=c++17``; CuPy adds ``-arch=sm_<cc>`` of the current device itself — NVRTC rejects
   a second ``-arch`` option, cupy/cupy#3292 — and the arch is part of our cache key);
   ``#include "attn_common.cuh"`` is inlined so the cache key covers the header too;
3. the launches run once on fp16/bf16 copies (the workload's dtype) of the simulator's inputs
   (after the port's untimed ``setup`` launches, e.g. the forward that gives a backward-only
   run its O and lse) and every compared output (``spec.outputs``: o; dq, dk, dv for a
   backward) is compared with the CPU result (relative Frobenius error, the maximum over the
   outputs is reported; targets in ``ports.ERROR_TARGETS``: 2e-3 for fp16, 1.6e-2 for bf16);
4. timing: warm-up launches, then ``repeats`` timed runs, each between its own pair of CUDA
   events, rotating among several copies of the inputs whose total size exceeds twice the L2
   cache, so that a run does not find its inputs in L2; the median is reported.
"""
from __future__ import annotations

import re
import statistics
import warnings
from dataclasses import dataclass, field

import numpy as np

from algorithms import ports
from hwmodels.gpus import GPUS, GPU

# ---- availability and device identification --------------------------------------------------

_cupy = None
_cupy_error: str | None = None


def _import_cupy():
    """The cupy module, or None (the reason kept for ``gpu_available``)."""
    global _cupy, _cupy_error
    if _cupy is None and _cupy_error is None:
        try:
            import cupy
            _cupy = cupy
        except Exception as err:          # ImportError, or a broken CUDA install
            _cupy_error = (f"CuPy is not importable ({type(err).__name__}: {err}); "
                           f"install it with: pip install 'attnsim[gpu]'")
    return _cupy


class GpuUnavailable(RuntimeError):
    """A device operation was asked for where CuPy or a CUDA device is missing."""


def _require_cupy():
    """The cupy module; raises GpuUnavailable with the reason (and the fix) when missing."""
    cp = _import_cupy()
    if cp is None:
        raise GpuUnavailable(_cupy_error)
    return cp


def gpu_available() -> tuple[bool, str]:
    """(True, device description) when CuPy and a CUDA device are usable, else (False, why)."""
    cp = _import_cupy()
    if cp is None:
        return False, _cupy_error
    try:
        n = cp.cuda.runtime.getDeviceCount()
    except Exception as err:
        return False, f"CuPy found no usable CUDA driver/device ({type(err).__name__}: {err})"
    if n < 1:
        return False, "CuPy is installed but no CUDA device is visible"
    info = device_info()
    return True, f"{info.name} (sm_{info.arch}, {info.sm_count} SMs)"


@dataclass(frozen=True)
class DeviceInfo:
    name: str
    arch: str                   # "90" for compute capability 9.0
    sm_count: int
    memory_bytes: int
    l2_bytes: int
    smem_bytes_per_block_optin: int


_device_infos: dict = {}


def device_info() -> DeviceInfo:
    """The current device's properties (queried once per device)."""
    cp = _require_cupy()
    dev = cp.cuda.Device()
    if dev.id not in _device_infos:
        _device_infos[dev.id] = _query_device(cp, dev.id)
    return _device_infos[dev.id]


def _query_device(cp, device_id: int) -> DeviceInfo:
    props = cp.cuda.runtime.getDeviceProperties(device_id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    return DeviceInfo(name=name, arch=f"{props['major']}{props['minor']}",
                      sm_count=int(props["multiProcessorCount"]),
                      memory_bytes=int(props["totalGlobalMem"]),
                      l2_bytes=int(props["l2CacheSize"]),
                      smem_bytes_per_block_optin=int(props.get("sharedMemPerBlockOptin",
                                                               props["sharedMemPerBlock"])))


def match_gpu_model(name: str, sm_count: int, memory_bytes: int) -> tuple[GPU, str | None]:
    """The built-in GPU model of a device, and a warning when it is only the closest one.

    Matches the product name first (H200, H100 PCIe/SXM, A100 40/80 GB); an unknown device
    gets the model with the nearest SM count, with a warning saying so.
    """
    upper = name.upper()
    gib = memory_bytes / 2**30
    if "H200" in upper:
        return GPUS["h200"], None
    if "H100" in upper:
        return (GPUS["h100-pcie"], None) if "PCIE" in upper else (GPUS["h100-sxm"], None)
    if "A100" in upper:
        return (GPUS["a100-80gb"], None) if gib > 60 else (GPUS["a100-40gb"], None)
    closest = min(GPUS.values(), key=lambda g: (abs(g.sm_count - sm_count), g.name))
    return closest, (f"no built-in model for {name!r} ({sm_count} SMs); predictions use the "
                     f"closest by SM count, {closest.name} ({closest.sm_count} SMs) — pass "
                     f"--hw NAME or a .toml file for a better match")


def detect_gpu_model() -> tuple[GPU, str | None]:
    info = device_info()
    return match_gpu_model(info.name, info.sm_count, info.memory_bytes)


# ---- compilation -----------------------------------------------------------------------------

_INCLUDE_LINE = re.compile(r'^[ \t]*#include[ \t]+"([^"]+)"[^\n]*$', re.MULTILINE)
_modules: dict = {}


def load_source(source: str) -> str:
    """The .cu text with its local ``#include "..."`` headers inlined (once each; their
    ``#pragma once`` dropped, as it would sit in the main file)."""
    seen: set[str] = set()

    def inline(match):
        header = match.group(1)
        if header in seen:
            return ""
        seen.add(header)
        text = ports.source_path(header).read_text().replace("#pragma once", "")
        return _INCLUDE_LINE.sub(inline, text)

    return _INCLUDE_LINE.sub(inline, ports.source_path(source).read_text())


def compile_options(defines: dict) -> tuple[str, ...]:
    """NVRTC options: C++17 and the tile defines. No include path: the sources include no
    header (fp16/bf16 are converted with PTX cvt in attn_common.cuh)."""
    return ("-std=c++17",) + tuple(f"-D{k}={int(v)}" for k, v in sorted(defines.items()))


def get_module(source: str, defines: dict):
    """The compiled ``cupy.RawModule`` of (source, defines, device arch), built once."""
    cp = _require_cupy()
    key = (source, tuple(sorted(defines.items())), device_info().arch)
    if key not in _modules:
        _modules[key] = cp.RawModule(code=load_source(source), options=compile_options(defines))
    return _modules[key]


def get_kernel(launch: ports.Launch):
    kernel = get_module(launch.source, launch.defines).get_function(launch.kernel)
    if launch.smem_bytes > 48 * 1024:        # above 48 KiB a kernel must opt in
        kernel.max_dynamic_shared_size_bytes = launch.smem_bytes
    return kernel


# ---- running ---------------------------------------------------------------------------------

_DTYPES = ports.HOST_DTYPES


def _device_tensors(spec: ports.PortLaunches, host_inputs) -> dict:
    """CuPy arrays for every tensor of the port (inputs as fp16/bf16 copies of
    ``host_inputs``, in the tensor's dtype)."""
    cp = _require_cupy()
    out = {}
    for name, t in spec.tensors.items():
        if t.role == "input":
            out[name] = cp.asarray(ports.to_storage(t.host_values(name, host_inputs), t.dtype))
        elif t.role == "const":
            out[name] = cp.asarray(ports.to_storage(ports.const_data(t, host_inputs), t.dtype))
        else:
            out[name] = cp.empty(t.shape, dtype=_DTYPES[t.dtype])
    return out


def _refill(spec: ports.PortLaunches, tensors: dict) -> None:
    for name, t in spec.tensors.items():
        if t.role in ("output", "work") and t.fill is not None:
            # the fill's bit pattern in the tensor's dtype (bf16 tensors hold uint16 bits)
            tensors[name].fill(ports.to_storage(np.float32(t.fill), t.dtype)[()])


def _args(launch: ports.Launch, tensors: dict) -> tuple:
    args = []
    for a in launch.args:
        if a is None:
            args.append(np.uint64(0))                       # a null pointer
        elif isinstance(a, str):
            args.append(tensors[a])
        elif a.ctype == "int":
            args.append(np.int32(a.value))
        else:
            args.append(np.float32(a.value))
    return tuple(args)


def _launch_all(spec: ports.PortLaunches, kernels: list, tensors: dict, launches=None) -> None:
    for launch, kernel in zip(spec.launches if launches is None else launches, kernels):
        kernel(launch.grid, launch.block, _args(launch, tensors), shared_mem=launch.smem_bytes)


@dataclass
class PortRun:
    """What one port run measured.

    Attributes:
        median_s: median time of the launches (all kernels of the port), seconds.
        times_s: every timed repeat.
        rel_error: relative Frobenius error against the reference: the largest over the
            compared outputs (None when no reference was given).
        rel_errors: the error of each compared output, by name (None without a reference).
        output: the port's main output (``spec.output``), float32 on the host (when
            ``keep_output``); ``outputs``: every compared output, by name, and the tensors
            named in ``run_port(keep=...)``.
        copies: input copies rotated through while timing.
    """
    algorithm: str
    median_s: float
    times_s: list
    rel_error: float | None
    copies: int
    notes: tuple = ()
    output: np.ndarray | None = field(default=None, repr=False)
    rel_errors: dict | None = None
    outputs: dict | None = field(default=None, repr=False)


# tensors each input copy has its own of (the rest: outputs and scratch, shared)
_PER_COPY = ("input", "const", "saved")


def reference_errors(spec: ports.PortLaunches, outputs: dict, reference) -> dict | None:
    """Relative error of each compared output. ``reference``: the CPU result as an array (the
    main output's) or a dict by output name (e.g. ``simulate(...).outputs``)."""
    from attnsim.reference import relative_error
    if reference is None:
        return None
    if not isinstance(reference, dict):
        reference = {spec.output: reference}
    return {name: relative_error(outputs[name], reference[name])
            for name in spec.outputs if name in reference}


def input_copies(spec: ports.PortLaunches, l2_bytes: int, max_copies: int = 16) -> int:
    """Copies of the inputs so that one pass over all of them exceeds twice the L2 size."""
    per_copy = sum(int(np.prod(t.shape)) * np.dtype(_DTYPES[t.dtype]).itemsize
                   for t in spec.tensors.values() if t.role in _PER_COPY)
    return int(min(max_copies, max(2, -(-2 * l2_bytes // max(1, per_copy)))))


def run_port(spec: ports.PortLaunches, host_inputs, reference=None, *,
             warmup: int = 3, repeats: int = 30, keep_output: bool = False,
             keep: tuple = ()) -> PortRun:
    """Run the port once for correctness, then time it (``spec.launches`` only; the setup
    launches run once, untimed). ``reference``: the CPU output — the main output's array,
    or a dict by output name compared for every name in ``spec.outputs``. ``keep``: further
    tensors of the correctness run to return in ``outputs`` (e.g. nsa's ``sel``), not
    compared here."""
    cp = _require_cupy()
    kernels = [get_kernel(l) for l in spec.launches]
    sets = [_device_tensors(spec, host_inputs)]
    _refill(spec, sets[0])
    _launch_all(spec, [get_kernel(l) for l in spec.setup], sets[0], spec.setup)
    _launch_all(spec, kernels, sets[0])
    cp.cuda.Device().synchronize()
    outs = {name: ports.from_storage(cp.asnumpy(sets[0][name]), spec.tensors[name].dtype)
            for name in spec.outputs}
    errs = reference_errors(spec, outs, reference)
    kept = {name: cp.asnumpy(sets[0][name]) for name in keep}     # before the timed runs
    err = max(errs.values()) if errs else None
    # further copies share the outputs/work buffers, not the inputs (nor the saved tensors
    # the setup computed from them)
    n = input_copies(spec, device_info().l2_bytes)
    for _ in range(n - 1):
        extra = {k: (cp.copy(v) if spec.tensors[k].role in _PER_COPY else v)
                 for k, v in sets[0].items()}
        sets.append(extra)
    for i in range(warmup):
        _refill(spec, sets[i % n])
        _launch_all(spec, kernels, sets[i % n])
    times = []
    for i in range(repeats):
        tensors = sets[i % n]
        _refill(spec, tensors)
        start, end = cp.cuda.Event(), cp.cuda.Event()
        start.record()
        _launch_all(spec, kernels, tensors)
        end.record()
        end.synchronize()
        times.append(cp.cuda.get_elapsed_time(start, end) * 1e-3)
    return PortRun(algorithm=spec.algorithm, median_s=statistics.median(times), times_s=times,
                   rel_error=err, copies=n, notes=spec.notes,
                   output=outs[spec.output] if keep_output else None, rel_errors=errs,
                   outputs={**outs, **kept} if keep_output or keep else None)


# ---- device reference and PyTorch SDPA ----------------------------------------------------------

def device_reference(wl, host_inputs) -> np.ndarray:
    """Exact softmax attention in float32 on the device (for sizes the CPU cannot afford),
    head by head; bottom-right aligned causal mask, as ``attnsim.reference``."""
    cp = _require_cupy()
    group = wl.heads // wl.kv_heads
    out = np.empty((wl.batch, wl.heads, wl.seq_q, wl.head_dim), dtype=np.float32)
    visible = None
    if wl.causal:
        i = cp.arange(wl.seq_q)[:, None]
        j = cp.arange(wl.seq_k)[None, :]
        visible = j <= i + (wl.seq_k - wl.seq_q)
    for b in range(wl.batch):
        for h in range(wl.heads):
            q = cp.asarray(host_inputs.q[b, h], dtype=cp.float32)
            k = cp.asarray(host_inputs.k[b, h // group], dtype=cp.float32)
            v = cp.asarray(host_inputs.v[b, h // group], dtype=cp.float32)
            out[b, h] = cp.asnumpy(_device_attend(cp, q, k, v, wl.scale, visible))
    return out


def _device_attend(cp, q, k, v, scale, visible):
    """softmax(scale q kᵀ, hidden where not ``visible``) v of one head, float32 on the device;
    rows that see no key are 0."""
    s = (q @ k.T) * np.float32(scale)
    if visible is not None:
        s = cp.where(visible, s, -cp.inf)
    m = s.max(axis=1, keepdims=True)
    m = cp.where(cp.isfinite(m), m, 0)
    p = cp.exp(s - m)
    l = p.sum(axis=1, keepdims=True)
    return (p @ v) / cp.where(l > 0, l, 1)


def device_backward_reference(wl, host_inputs) -> dict:
    """o, dq, dk, dv of exact softmax attention in float32 on the device, head by head (the
    analytic gradient, as ``attnsim.reference.attention_backward_reference``; multi-head)."""
    cp = _import_cupy()
    group = wl.heads // wl.kv_heads
    shape_q = (wl.batch, wl.heads, wl.seq_q, wl.head_dim)
    shape_k = (wl.batch, wl.kv_heads, wl.seq_k, wl.head_dim)
    out = {"o": np.empty(shape_q, np.float32), "dq": np.empty(shape_q, np.float32),
           "dk": np.zeros(shape_k, np.float32), "dv": np.zeros(shape_k, np.float32)}
    visible = None
    if wl.causal:
        i = cp.arange(wl.seq_q)[:, None]
        j = cp.arange(wl.seq_k)[None, :]
        visible = j <= i + (wl.seq_k - wl.seq_q)
    scale = np.float32(wl.scale)
    for b in range(wl.batch):
        for h in range(wl.heads):
            q = cp.asarray(host_inputs.q[b, h], dtype=cp.float32)
            k = cp.asarray(host_inputs.k[b, h // group], dtype=cp.float32)
            v = cp.asarray(host_inputs.v[b, h // group], dtype=cp.float32)
            do = cp.asarray(host_inputs.do[b, h], dtype=cp.float32)
            s = (q @ k.T) * scale
            if visible is not None:
                s = cp.where(visible, s, -cp.inf)
            m = s.max(axis=1, keepdims=True)
            p = cp.exp(s - cp.where(cp.isfinite(m), m, 0))
            l = p.sum(axis=1, keepdims=True)
            p = p / cp.where(l > 0, l, 1)
            dp = do @ v.T
            ds = p * (dp - (p * dp).sum(axis=1, keepdims=True))
            out["o"][b, h] = cp.asnumpy(p @ v)
            out["dq"][b, h] = cp.asnumpy((ds @ k) * scale)
            out["dk"][b, h // group] += cp.asnumpy((ds.T @ q) * scale)
            out["dv"][b, h // group] += cp.asnumpy(p.T @ do)
    return out


def sdpa_available() -> tuple[bool, str]:
    """(True, "torch <version>") when PyTorch with a CUDA device is importable, else why not."""
    try:
        import torch
    except Exception as err:
        return False, f"PyTorch not importable ({type(err).__name__})"
    if not torch.cuda.is_available():
        return False, "PyTorch sees no CUDA device"
    return True, f"torch {torch.__version__}"


# SDPA backends a check times one by one (``torch.nn.attention.SDPBackend`` names), besides the
# backend PyTorch dispatches to by default: FlashAttention-2's kernels, cuDNN's fused attention
# (on Hopper a warp-specialized wgmma/TMA kernel: FlashAttention-3's design, the stand-in for
# flash3, which has no port here) and xFormers' memory-efficient kernel.
SDPA_BACKENDS = {"flash": "FLASH_ATTENTION", "cudnn": "CUDNN_ATTENTION",
                 "efficient": "EFFICIENT_ATTENTION"}


def torch_sdpa_time(wl, host_inputs, *, warmup: int = 3, repeats: int = 30,
                    sdpa_backend: str | None = None) -> tuple[float | None, str]:
    """Median time of ``torch.nn.functional.scaled_dot_product_attention`` on the workload's
    passes, or (None, why not): "fwd" the forward; "fwd+bwd" the forward and the autograd
    backward (dQ, dK, dV from dO); "bwd" the backward alone (the forward run untimed before,
    its graph kept: what the simulator counts for --pass bwd). ``sdpa_backend``: one of
    ``SDPA_BACKENDS`` forced through ``torch.nn.attention.sdpa_kernel`` (None: PyTorch's own
    choice); a backend that cannot run the workload gives (None, PyTorch's reason)."""
    try:
        import torch
        import torch.nn.functional as F
    except Exception as err:
        return None, f"PyTorch not importable ({type(err).__name__})"
    if not torch.cuda.is_available():
        return None, "PyTorch has no CUDA device"
    if sdpa_backend is not None:
        try:
            from torch.nn.attention import SDPBackend, sdpa_kernel
        except ImportError:
            return None, (f"torch {torch.__version__} has no torch.nn.attention.sdpa_kernel "
                          f"(PyTorch >= 2.3 selects SDPA backends)")
        forced = sdpa_kernel([getattr(SDPBackend, SDPA_BACKENDS[sdpa_backend])])
        try:
            with forced:
                return torch_sdpa_time(wl, host_inputs, warmup=warmup, repeats=repeats)
        except RuntimeError as err:           # "No available kernel" and its reasons
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            return None, f"SDPA's {sdpa_backend} backend cannot run this workload: {first}"
    if wl.causal and wl.seq_q != wl.seq_k:
        return None, "SDPA's is_causal is top-left aligned for N_q != N_k"
    group = wl.heads // wl.kv_heads
    dev = torch.device("cuda")

    dtype = torch.bfloat16 if wl.dtype == "bf16" else torch.float16

    backward = wl.has_backward

    def copy():
        q = torch.as_tensor(host_inputs.q, device=dev).to(dtype)
        k = torch.as_tensor(host_inputs.k, device=dev).to(dtype)
        v = torch.as_tensor(host_inputs.v, device=dev).to(dtype)
        if group > 1:                                         # plain expansion, any torch version
            k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        if not backward:
            return q, k, v
        q, k, v = (x.requires_grad_() for x in (q, k, v))
        do = torch.as_tensor(host_inputs.do, device=dev).to(dtype)
        out = None if wl.has_forward else sdpa((q, k, v))     # bwd: forward outside the timing
        return q, k, v, do, out

    def sdpa(s):
        return F.scaled_dot_product_attention(*s[:3], is_causal=wl.causal, scale=wl.scale)

    def run(s):
        if not backward:
            return sdpa(s)
        out = sdpa(s) if s[4] is None else s[4]
        return torch.autograd.grad(out, s[:3], s[3], retain_graph=s[4] is not None)

    per_copy = 2 * (host_inputs.q.size + 2 * host_inputs.k.size * group)
    if backward:                                  # dO, O (and the gradients written)
        per_copy += 2 * 2 * host_inputs.q.size
    return _torch_median_time(torch, dev, copy, run, per_copy, warmup, repeats), \
        f"torch {torch.__version__}"


def _torch_median_time(torch, dev, copy, run, per_copy: int, warmup: int, repeats: int) -> float:
    """Median CUDA-event time of ``run(inputs)``, rotating among copies made by ``copy()``
    whose total exceeds twice the L2 (as run_port does), after ``warmup`` untimed runs."""
    l2 = torch.cuda.get_device_properties(dev).L2_cache_size
    sets = [copy() for _ in range(int(min(16, max(2, -(-2 * l2 // per_copy)))))]
    for i in range(warmup):
        run(sets[i % len(sets)])
    times = []
    for i in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run(sets[i % len(sets)])
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e-3)
    return statistics.median(times)


def warn_once(message: str | None) -> None:
    if message:
        warnings.warn(message, stacklevel=2)


def launch_once(spec: ports.PortLaunches, host_inputs) -> dict:
    """Compile the port, then run its setup launches (a backward-only port's forward) and each
    of its launches exactly once (for profilers: ncu sees one run of the port's kernels, plus
    the setup's and CuPy's own fills, which ncu_dram.py leaves out). Returns the tensors."""
    cp = _require_cupy()
    setup = [get_kernel(l) for l in spec.setup]           # compiled before any launch
    kernels = [get_kernel(l) for l in spec.launches]
    tensors = _device_tensors(spec, host_inputs)
    _refill(spec, tensors)
    _launch_all(spec, setup, tensors, spec.setup)
    cp.cuda.Device().synchronize()
    _launch_all(spec, kernels, tensors)
    cp.cuda.Device().synchronize()
    return tensors


# CUDA device attribute numbers (cudaDeviceAttr): stable across CUDA 12 and 13, unlike the
# cudaDeviceProp fields clockRate/memoryClockRate that CUDA 13 removed.
_ATTR_CLOCK_KHZ, _ATTR_MEM_CLOCK_KHZ, _ATTR_MEM_BUS_BITS = 13, 36, 37


def environment() -> dict:
    """What a measurement depends on besides the code, for reproducible reports: versions
    (CuPy, CUDA runtime and driver, PyTorch), the device, its maximum SM clock and the HBM
    peak implied by its memory clock and bus width (2 transfers per clock). Fields the
    platform does not report are None."""
    cp = _require_cupy()
    rt = cp.cuda.runtime
    info = device_info()
    dev = cp.cuda.Device().id

    def attempt(fn):
        try:
            return fn()
        except Exception:
            return None

    clock = attempt(lambda: rt.deviceGetAttribute(_ATTR_CLOCK_KHZ, dev))
    mem_clock = attempt(lambda: rt.deviceGetAttribute(_ATTR_MEM_CLOCK_KHZ, dev))
    bus = attempt(lambda: rt.deviceGetAttribute(_ATTR_MEM_BUS_BITS, dev))
    torch_version = None
    try:
        import torch
        torch_version = torch.__version__
    except Exception:
        pass
    return {
        "device": info.name, "compute_capability": info.arch, "sm_count": info.sm_count,
        "l2_bytes": info.l2_bytes,
        "sm_clock_max_mhz": None if not clock else clock / 1e3,
        "hbm_peak_gbs_from_clocks": None if not (mem_clock and bus) else
        2 * mem_clock * 1e3 * bus / 8 / 1e9,
        "cupy": getattr(cp, "__version__", None),
        "cuda_runtime": attempt(rt.runtimeGetVersion),
        "cuda_driver": attempt(rt.driverGetVersion),
        "torch": torch_version,
    }


# ---- mla: its device reference ------------------------------------------------------------------

def mla_device_reference(wl, plan, host_inputs) -> np.ndarray:
    """MLA's o (B, H, N_q, d_h) in float32 on the device, by its definition (either path's
    output): per sequence and head, K = [c_KV W_UK^hᵀ ; k^R], V = c_KV W_UV^hᵀ, q = [q^C ;
    q^R] (``algorithms.mla.up_projected``, one head at a time so 128 heads over a long cache
    fit), then softmax attention with the plan's scale. The latent inputs are drawn as the
    simulation draws them (``mla.mla_inputs``)."""
    from algorithms import mla
    cp = _require_cupy()
    x = mla.mla_inputs(wl, plan, host_inputs)
    visible = None
    if wl.causal:
        visible = cp.arange(wl.seq_k)[None, :] <= cp.arange(wl.seq_q)[:, None] + (wl.seq_k - wl.seq_q)
    f32 = lambda a: cp.asarray(a, dtype=cp.float32)              # noqa: E731
    out = np.empty((wl.batch, wl.heads, wl.seq_q, wl.head_dim), dtype=np.float32)
    for b in range(wl.batch):
        c, k_rope = f32(x["c_kv"][b]), f32(x["k_rope"][b])          # (N_k, d_c), (N_k, d_h^R)
        for h in range(wl.heads):
            k = cp.concatenate([c @ f32(x["w_uk"][h]).T, k_rope], axis=1)
            v = c @ f32(x["w_uv"][h]).T
            q = cp.concatenate([f32(x["q_nope"][b, h]), f32(x["q_rope"][b, h])], axis=1)
            out[b, h] = cp.asnumpy(_device_attend(cp, q, k, v, plan.scale, visible))
    return out


# ---- diff (differential attention): its device reference and its PyTorch formulation -----------

def diff_device_reference(wl, plan, host_inputs) -> np.ndarray:
    """Differential attention in float32 on the device: ``algorithms.diff.reference`` (the
    paper's Equations 1–3) with ``device_reference`` as its softmax attention (Q₁, K₁ and
    Q₂, K₂ are d wide, V 2d wide; the combine and RMSNorm run on the host)."""
    from algorithms import diff
    from attnsim.inputs import Inputs

    def attention(q, k, v, causal, scale):
        assert causal == wl.causal and scale == plan.scale          # diff's 1/√d, not wl.scale
        return device_reference(wl.replace(scale=scale), Inputs(q=q, k=k, v=v)), None

    return diff.reference(wl, plan, host_inputs, attention).astype(np.float32)


def torch_diff_attention(torch, q, k, v, lam, out_scale: float, eps: float, causal: bool,
                         scale: float):
    """Differential attention as PyTorch runs it without a fused kernel: two SDPA calls (Q₁K₁ᵀ
    and Q₂K₂ᵀ, each with the 2d-wide V), then (A₁ − λ A₂), RMSNorm over 2d and (1 − λ_init).
    ``lam``: (H,) tensor; q, k, v: (B, H, N, 2d)."""
    F = torch.nn.functional
    d = q.shape[-1] // 2
    a1 = F.scaled_dot_product_attention(q[..., :d], k[..., :d], v, is_causal=causal, scale=scale)
    a2 = F.scaled_dot_product_attention(q[..., d:], k[..., d:], v, is_causal=causal, scale=scale)
    x = a1.float() - lam.view(1, -1, 1, 1) * a2.float()
    x = x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps) * out_scale
    return x.to(q.dtype)


def torch_sdpa_diff_time(wl, plan, host_inputs, *, warmup: int = 3,
                         repeats: int = 30) -> tuple[float | None, str]:
    """Median time of ``torch_diff_attention`` (two SDPA calls and the combine) on the
    workload, or (None, why not): the unfused baseline of the diff port."""
    try:
        import torch
    except Exception as err:
        return None, f"PyTorch not importable ({type(err).__name__})"
    if not torch.cuda.is_available():
        return None, "PyTorch has no CUDA device"
    if wl.causal and wl.seq_q != wl.seq_k:
        return None, "SDPA's is_causal is top-left aligned for N_q != N_k"
    from algorithms import diff
    dev = torch.device("cuda")
    dtype = torch.bfloat16 if wl.dtype == "bf16" else torch.float16
    lam = torch.as_tensor(np.asarray(diff.lambdas(wl, plan), dtype=np.float32), device=dev)

    def copy():
        return tuple(torch.as_tensor(getattr(host_inputs, n), device=dev).to(dtype)
                     for n in ("q", "k", "v"))

    per_copy = 2 * (host_inputs.q.size + 2 * host_inputs.k.size)
    run = lambda s: torch_diff_attention(torch, *s, lam, 1.0 - plan.lambda_init,   # noqa: E731
                                         diff.RMS_EPS, wl.causal, plan.scale)
    return (_torch_median_time(torch, dev, copy, run, per_copy, warmup, repeats),
            f"torch {torch.__version__} (2 SDPA calls + combine)")
