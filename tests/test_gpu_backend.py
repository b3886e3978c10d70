"""attnsim.gpu's plumbing against a stand-in for CuPy (no GPU, no CuPy needed).

The stand-in records what the backend asks of CuPy — modules compiled (source text and
options), kernels launched (grid, block, shared memory, argument types), arrays made and
filled, events timed — so the code paths a GPU session will run first are exercised here:
compile once per (source, defines), the opt-in for > 48 KiB of shared memory, arguments
typed as the kernels declare them, inputs rotated among copies, refills before every run.
"""
import re
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from algorithms import ports
from algorithms.registry import get_algorithm
from attnsim import gpu as backend
from attnsim import make_inputs
from hwmodels import get_gpu
from _benchmarks import load_benchmark
from port_cases import SHAPES, workload


class FakeKernel:
    def __init__(self, module, name):
        self.module, self.name = module, name
        self.max_dynamic_shared_size_bytes = 48 * 1024

    def __call__(self, grid, block, args, shared_mem=0):
        self.module.log.append(SimpleNamespace(kernel=self.name, grid=grid, block=block,
                                               args=args, smem=shared_mem,
                                               smem_limit=self.max_dynamic_shared_size_bytes))


class FakeCupy:
    """Just enough of CuPy for attnsim.gpu, on NumPy arrays."""

    def __init__(self, l2_bytes=50 * 2**20):
        self.modules, self.log, self.l2 = [], [], l2_bytes
        fake = self

        class RawModule:
            def __init__(self, code, options):
                self.code, self.options, self.log = code, options, fake.log
                fake.modules.append(self)

            def get_function(self, name):
                assert f"{name}(" in self.code
                return FakeKernel(self, name)

        class Event:
            def record(self):
                fake.log.append("event")

            def synchronize(self):
                pass

        self.RawModule = RawModule
        self.cuda = SimpleNamespace(
            runtime=SimpleNamespace(
                getDeviceCount=lambda: 1,
                getDeviceProperties=lambda i: {
                    "name": b"NVIDIA H100 80GB HBM3", "major": 9, "minor": 0,
                    "multiProcessorCount": 132, "totalGlobalMem": 80 * 2**30,
                    "l2CacheSize": fake.l2, "sharedMemPerBlockOptin": 227 * 1024,
                    "sharedMemPerBlock": 48 * 1024},
                deviceGetAttribute=lambda attr, dev: {13: 1980000, 36: 2619000, 37: 5120}[attr],
                runtimeGetVersion=lambda: 12080,
                driverGetVersion=lambda: (_ for _ in ()).throw(RuntimeError("no driver"))),
            Device=lambda: SimpleNamespace(id=0, synchronize=lambda: None),
            Event=Event, get_elapsed_time=lambda a, b: 0.25)

    asarray = staticmethod(lambda x, dtype=None: np.array(x, dtype=dtype))
    empty = staticmethod(np.empty)
    copy = staticmethod(np.copy)
    asnumpy = staticmethod(np.asarray)


@pytest.fixture
def fake_cupy(monkeypatch):
    cp = FakeCupy()
    monkeypatch.setattr(backend, "_cupy", cp)
    monkeypatch.setattr(backend, "_cupy_error", None)
    monkeypatch.setattr(backend, "_modules", {})
    monkeypatch.setattr(backend, "_device_infos", {})
    return cp


def flash2_spec(shape=SHAPES[2], gpu="h100-sxm"):
    wl, g = workload(shape), get_gpu(gpu)
    return wl, ports.port_launches("flash2", wl, get_algorithm("flash2").plan(
        wl, g, g.smem_bytes_per_block), gpu=g)


def test_device_is_identified_and_mapped(fake_cupy):
    ok, text = backend.gpu_available()
    assert ok and "sm_90" in text and "132 SMs" in text
    gpu, warning = backend.detect_gpu_model()
    assert gpu.name == "h100-sxm" and warning is None


def test_each_source_and_define_set_compiles_once(fake_cupy):
    wl, spec = flash2_spec()
    for _ in range(3):
        backend.run_port(spec, make_inputs(wl), warmup=0, repeats=1)
    (module,) = fake_cupy.modules
    assert not re.search(r"^\s*#include", module.code, re.M)  # header inlined, nothing else
    assert module.options[0] == "-std=c++17"
    assert {f"-D{k}={v}" for k, v in spec.launches[0].defines.items()} == set(module.options[1:])
    assert not any(o.startswith("-arch") for o in module.options)  # CuPy adds the device's


def test_launches_carry_the_declared_grid_block_smem_and_typed_arguments(fake_cupy):
    wl, spec = flash2_spec()
    run = backend.run_port(spec, make_inputs(wl), warmup=1, repeats=4)
    calls = [c for c in fake_cupy.log if c != "event"]
    assert len(calls) == 1 + 1 + 4                             # check run, warm-up, repeats
    launch = spec.launches[0]
    for call in calls:
        assert (call.grid, call.block, call.smem) == (launch.grid, launch.block, launch.smem_bytes)
        for arg, declared in zip(call.args, launch.args):
            if isinstance(declared, str):
                assert isinstance(arg, np.ndarray)
                assert arg.dtype == backend._DTYPES[spec.tensors[declared].dtype]
            elif declared is None:                   # flash2's seed without dropout
                assert arg == np.uint64(0) and arg.dtype == np.uint64
            else:
                assert arg.dtype == (np.int32 if declared.ctype == "int" else np.float32)
    assert run.median_s == 0.25e-3 and len(run.times_s) == 4


def test_large_shared_memory_is_opted_in(fake_cupy):
    wl, spec = flash2_spec(SHAPES[3])                          # d = 128: 96 KiB of tiles
    assert spec.launches[0].smem_bytes > 48 * 1024
    backend.run_port(spec, make_inputs(wl), warmup=0, repeats=1)
    call = next(c for c in fake_cupy.log if c != "event")
    assert call.smem_limit == spec.launches[0].smem_bytes


def test_inputs_rotate_through_copies_beyond_l2(fake_cupy):
    wl, spec = flash2_spec(SHAPES[0])
    per_copy = 3 * 97 * 64 * 2 * 2                     # q, k, v of (1, 2, 97, 64) in fp16
    fake_cupy.l2 = int(1.2 * per_copy)                 # 2 x L2 needs 3 copies
    run = backend.run_port(spec, make_inputs(wl), warmup=0, repeats=6)
    calls = [c for c in fake_cupy.log if c != "event"][1:]
    assert run.copies == 3
    assert [id(c.args[0]) for c in calls[:3]] == [id(c.args[0]) for c in calls[3:]]
    assert len({id(c.args[0]) for c in calls}) == 3


def test_null_pointer_and_fill(fake_cupy):
    """A declared None argument is passed as a null pointer; filled work tensors are reset
    before every run (a state a kernel accumulates into)."""
    wl = workload((1, 2, 1, 100, 100, 32, False))
    spec = ports.PORTS["linear"](wl, SimpleNamespace(block=32, kind="elu", feature_tiles=1,
                                                     tile_units=32, features=32, projections=0))
    filled = replace(spec.tensors["s_state"], fill=0.0)
    spec = replace(spec, tensors={**spec.tensors, "s_state": filled})
    backend.run_port(spec, make_inputs(wl), warmup=0, repeats=2)
    state_kernel = [c for c in fake_cupy.log if c != "event" and c.kernel == "feature_state"]
    assert len(state_kernel) == 3 and np.all(state_kernel[-1].args[3] == 0)
    assert state_kernel[-1].args[2] == np.uint64(0)            # linear has no projection W
    launch = ports.Launch("x.cu", "k", (1, 1, 1), (32, 1, 1), 0, {}, (None,), None)
    assert backend._args(launch, {}) == (np.uint64(0),)


def test_launch_once_runs_each_declared_launch_once_after_compiling(fake_cupy):
    """What benchmarks/ncu_dram.py profiles: one run of the port, no warm-up, no timing."""
    wl = workload((1, 2, 2, 100, 100, 64, True))
    g = get_gpu("h100-sxm")
    spec = ports.port_launches("standard", wl, get_algorithm("standard").plan(
        wl, g, g.smem_bytes_per_block), gpu=g)
    tensors = backend.launch_once(spec, make_inputs(wl))
    launched = [e.kernel for e in fake_cupy.log if not isinstance(e, str)]
    assert launched == [l.kernel for l in spec.launches]
    assert "event" not in fake_cupy.log                         # nothing timed
    assert set(tensors) == set(spec.tensors)


def test_ncu_driver_run_once_mode(fake_cupy, monkeypatch):
    """benchmarks/ncu_dram.py --run-once: the process ncu profiles (device model matched,
    plan, declaration, one run) — everything but ncu itself."""
    driver = load_benchmark("ncu_dram")
    assert driver.main(["flash2", "--seq", "300", "--batch", "1", "--heads", "2",
                        "--causal", "--run-once"]) == 0
    assert [e.kernel for e in fake_cupy.log if not isinstance(e, str)] == ["flash2_fwd"]


def test_device_calls_without_cupy_say_why(monkeypatch):
    """Without CuPy, asking for the device is a clear error with the fix, not an
    AttributeError on None."""
    monkeypatch.setattr(backend, "_cupy", None)
    monkeypatch.setattr(backend, "_cupy_error", "CuPy is not importable (test); install it "
                                                "with: pip install 'attnsim[gpu]'")
    monkeypatch.setattr(backend, "_device_infos", {})
    assert backend.gpu_available()[0] is False
    with pytest.raises(backend.GpuUnavailable, match="pip install"):
        backend.detect_gpu_model()
    wl, spec = flash2_spec()
    with pytest.raises(backend.GpuUnavailable, match="pip install"):
        backend.launch_once(spec, make_inputs(wl))


def test_environment_records_clocks_versions_and_what_is_missing(fake_cupy):
    env = backend.environment()
    assert env["device"] == "NVIDIA H100 80GB HBM3" and env["compute_capability"] == "90"
    assert env["sm_clock_max_mhz"] == 1980.0
    # HBM3 at 2619 MHz, double data rate, 5120-bit bus: 3352 GB/s (H100 SXM's 3.35 TB/s)
    assert env["hbm_peak_gbs_from_clocks"] == pytest.approx(3352.32)
    assert env["cuda_runtime"] == 12080 and env["cuda_driver"] is None   # a failing query


def test_backward_setup_runs_once_untimed_and_saved_tensors_rotate(fake_cupy):
    """--pass bwd: the forward that gives the backward its O and lse runs once, before the
    correctness run, never in warm-ups or timed repeats; each input copy gets its own O and
    lse (copied after the setup), like its own Q, K, V, dO."""
    wl, g = workload(SHAPES[0], passes="bwd"), get_gpu("h100-sxm")
    spec = ports.port_launches("flash2", wl, get_algorithm("flash2").plan(
        wl, g, g.smem_bytes_per_block), gpu=g)
    fake_cupy.l2 = 1                                   # the minimum: 2 copies
    run = backend.run_port(spec, make_inputs(wl), warmup=1, repeats=2)
    calls = [c for c in fake_cupy.log if c != "event"]
    bwd = ["flash2_bwd_preprocess", "flash2_bwd", "flash2_bwd_convert_dq"]
    assert [c.kernel for c in calls] == ["flash2_fwd"] + bwd * 4   # setup, check, 1 + 2 runs
    assert len(fake_cupy.modules) == 2                 # flash2_fwd.cu and flash2_bwd.cu
    pre = [c for c in calls if c.kernel == "flash2_bwd_preprocess"]
    assert run.copies == 2 and id(pre[2].args[1]) != id(pre[3].args[1])   # o of two copies
    assert id(pre[0].args[1]) == id(calls[0].args[3])  # the check run reads the setup's o
    assert run.rel_error is None and run.rel_errors is None
