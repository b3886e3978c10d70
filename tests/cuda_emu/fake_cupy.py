"""A stand-in for CuPy whose kernels run on the CPU emulator: a dry run of the GPU code paths.

``EmulatedCupy`` gives ``attnsim.gpu`` what it uses of CuPy — ``RawModule`` (the NVRTC text
and options), kernel launches, arrays, CUDA events, device properties (an H100 SXM) — with
NumPy arrays and every launch executed by ``cuda_emu``. With it installed, ``tests/gpu`` and
``attnsim gpu-check`` run end to end on a machine without a GPU (slowly, and with meaningless
times): set ``ATTNSIM_EMULATED_CUPY=1`` when running ``pytest -m gpu tests/gpu``.
"""
from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np

from cuda_emu.emulate import build_text, kernel_params, run_binary

H100_PROPERTIES = {"name": b"NVIDIA H100 80GB HBM3 (emulated)", "major": 9, "minor": 0,
                   "multiProcessorCount": 132, "totalGlobalMem": 80 * 2**30,
                   "l2CacheSize": 50 * 2**20, "sharedMemPerBlockOptin": 227 * 1024,
                   "sharedMemPerBlock": 48 * 1024}


class _Kernel:
    def __init__(self, module, name):
        self.module, self.name = module, name
        self.max_dynamic_shared_size_bytes = 48 * 1024

    def __call__(self, grid, block, args, shared_mem=0):
        if shared_mem > self.max_dynamic_shared_size_bytes:
            raise RuntimeError(f"{self.name}: {shared_mem} bytes of dynamic shared memory "
                               f"without the opt-in (max_dynamic_shared_size_bytes)")
        arrays, words = [], []
        for a in args:
            if isinstance(a, np.ndarray):
                if not a.flags.c_contiguous:
                    raise RuntimeError(f"{self.name}: non-contiguous array argument")
                arrays.append(a)
                words.append(("t", len(arrays) - 1))
            elif isinstance(a, np.uint64):
                assert int(a) == 0, "only null pointers are passed as integers"
                words.append(("n",))
            elif isinstance(a, np.int32):
                words.append(("i", int(a)))
            elif isinstance(a, np.float32):
                words.append(("f", float(a)))
            else:
                raise TypeError(f"{self.name}: argument of type {type(a).__name__}")
        out = run_binary(self.module.binary, self.module.kernels, arrays,
                         [(self.name, tuple(grid), tuple(block), shared_mem, words)], self.name)
        for a, b in zip(arrays, out):
            a[...] = b


class _RawModule:
    def __init__(self, code, options=()):
        defines = dict(re.fullmatch(r"-D(\w+)=(.*)", o).groups() for o in options
                       if o.startswith("-D"))
        self.kernels = sorted(kernel_params(code))
        self.binary = build_text(code, defines, self.kernels, "RawModule")

    def get_function(self, name):
        if name not in self.kernels:
            raise AttributeError(f"no kernel {name!r} in the module")
        return _Kernel(self, name)


class _Event:
    def record(self):
        pass

    def synchronize(self):
        pass


class EmulatedCupy:
    """The parts of the ``cupy`` module that attnsim.gpu uses."""
    RawModule = _RawModule
    float32 = np.float32
    cuda = SimpleNamespace(
        runtime=SimpleNamespace(getDeviceCount=lambda: 1,
                                getDeviceProperties=lambda i: dict(H100_PROPERTIES),
                                # SM clock 1980 MHz, HBM3 2619 MHz x 5120 bits (H100 SXM)
                                deviceGetAttribute=lambda attr, dev: {13: 1980000, 36: 2619000,
                                                                      37: 5120}[attr],
                                runtimeGetVersion=lambda: 12080, driverGetVersion=lambda: 12080),
        Device=lambda: SimpleNamespace(id=0, synchronize=lambda: None),
        Event=_Event, get_elapsed_time=lambda start, end: 1.0)

    asarray = staticmethod(lambda x, dtype=None: np.array(x, dtype=dtype))
    empty = staticmethod(lambda shape, dtype=np.float32: np.full(
        shape, np.nan if np.dtype(dtype).kind == "f" else 0, dtype=dtype))
    copy = staticmethod(np.copy)
    asnumpy = staticmethod(np.asarray)
    arange = staticmethod(np.arange)
    where = staticmethod(np.where)
    exp = staticmethod(np.exp)
    isfinite = staticmethod(np.isfinite)
    inf = np.inf
    # ---- used by attnsim.gpu.mla_device_reference (K = [K^C ; k^R] per head) ----
    concatenate = staticmethod(np.concatenate)


def install(gpu_module) -> None:
    """Make ``attnsim.gpu`` use the emulated CuPy."""
    gpu_module._cupy = EmulatedCupy()
    gpu_module._cupy_error = None
    gpu_module._modules.clear()
    gpu_module._device_infos.clear()
