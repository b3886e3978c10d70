"""The GPU ports declared as data (algorithms/ports/), checked on the CPU.

Launch grids equal the CTAs the simulator's Recorder counts, tile defines equal the plan's
tiles, shared memory fits the GPU, every declared kernel exists in its .cu file with the
argument list the declaration passes, the sources compile with nvcc (when present), and
gpu-check without a device says it skipped and exits 0.
"""
import json
import re
from dataclasses import replace
import shutil
import subprocess

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from algorithms import ports
from algorithms.base import check_options
from algorithms.registry import get_algorithm
from attnsim import gpu as backend
from attnsim import gpu_check
from attnsim.simulate import simulate
from hwmodels.gpus import GPUS, get_gpu
from attnsim import make_inputs
from port_cases import (BF16_CASES, DENSE_PORTS, FEATURE_SHAPES, GPU_MODELS, PORT_CASES, SHAPES,
                        workload)


def plan_of(name, wl, gpu, options=None):
    module = get_algorithm(name)
    return module.plan(wl, gpu, gpu.smem_bytes_per_block,
                       **check_options(module.INFO, options or {}))


def plan_or_skip(name, wl, gpu, options=None):
    try:
        return plan_of(name, wl, gpu, options)
    except ValueError as err:                 # a case the simulator itself refuses to plan
        pytest.skip(f"the simulator does not plan this case: {err}")


def expected_defines(name, plan, d, source=None):
    """The tile defines a port must compile with, read off the plan (``source``: the
    launch's file, for ports with several)."""
    if source == "flash1_bwd.cu":               # the backward's own tiles (Algorithm 4)
        return {"BLOCK_Q": plan.bwd.block_q, "BLOCK_K": plan.bwd.block_k, "HEAD_DIM": d}
    if source == "flash2_bwd.cu":               # the backward's own tiles
        bp = plan.bwd
        return {"BLOCK_Q": bp.block_q, "BLOCK_K": bp.block_k, "HEAD_DIM": d,
                "BWD_WARPS": ports.flash2_bwd_warps(bp.block_q, bp.block_k, d)}
    if name == "standard":
        return {"TILE_M": plan.gemm_tile_m, "TILE_N": plan.gemm_tile_n,
                "TILE_K": plan.gemm_tile_k, "HEAD_DIM": d}
    if name == "gqa":
        return {"BLOCK_Q": plan.block_q, "GROUP": plan.group, "BLOCK_K": plan.block_k,
                "HEAD_DIM": d}
    if name in ("linear", "rfa", "performer"):
        return {"CHUNK": plan.block, "HEAD_DIM": d, "FEAT_KIND": ports.FEATURE_KINDS[plan.kind],
                "FEAT_UNITS": plan.tile_units}
    if name == "mla":
        from algorithms.splitkv import value_column_slices
        return {"GROUP": plan.head_block, "BLOCK_Q": plan.block_q, "BLOCK_K": plan.block_k,
                "DC": plan.kv_lora_rank, "DR": plan.rope_dim, "HEAD_DIM": d,
                "COL_SLICES": value_column_slices(plan.kv_lora_rank),
                "TILE_M": plan.gemm_tile_m, "TILE_N": plan.gemm_tile_n,
                "TILE_K": plan.gemm_tile_k}
    defines = {"BLOCK_Q": plan.block_q, "BLOCK_K": plan.block_k, "HEAD_DIM": d}
    if name == "flash2":        # a port-side choice, not a tile size: see test below
        defines["WARP_M_TILES"] = ports.warp_m_tiles(plan.block_q, plan.block_k, d)
    if name == "diff":          # keys per score slice in registers: a port-side choice
        defines["SUB_K"] = ports.diff_sub_k(plan.block_k, d)
    return defines


def test_flash2_warp_row_tiles():
    """Two 16-row tiles per warp when S and O fragments (B_c/2 + d/2 floats per tile and
    thread) fit 192 registers: FA-2's 4 warps for 128 x 128 at d = 64; one otherwise."""
    assert ports.warp_m_tiles(128, 128, 64) == 2          # 2 (64 + 32) = 192
    assert ports.warp_m_tiles(128, 128, 128) == 1         # 2 (64 + 64) = 256
    assert ports.warp_m_tiles(16, 64, 64) == 1            # a single row tile
    assert ports.warp_m_tiles(64, 64, 40) == 2            # d = 40 pads to 48


# ---- declarations vs plans -------------------------------------------------------------------

@pytest.mark.parametrize("gpu_name", GPU_MODELS)
@pytest.mark.parametrize("case", PORT_CASES, ids=lambda c: c.id)
def test_launches_match_the_simulated_kernels(case, gpu_name):
    gpu, wl = get_gpu(gpu_name), case.workload
    plan = plan_or_skip(case.name, wl, gpu, case.options)
    spec = ports.port_launches(case.name, wl, plan, gpu=gpu)
    sim = simulate(case.name, wl, gpu, compute=False, options=case.options)
    simulated = {k.name: k.ctas for k in sim.kernels}
    launched = {l.sim_kernel: l.ctas for l in spec.launches}
    assert launched == simulated                       # same kernels, same CTA counts
    assert all(l.sim_kernel is None for l in spec.setup)   # untimed, uncounted
    for launch in spec.all_launches:
        storage = {"ATTN_BF16": 1} if wl.dtype == "bf16" else {}
        assert launch.defines == {**expected_defines(case.name, plan, wl.head_dim, launch.source),
                                  **storage}
        assert 0 <= launch.smem_bytes <= gpu.smem_bytes_per_block
        assert np.prod(launch.block) <= 1024 and np.prod(launch.block) % 32 == 0


def test_flash2_grid_and_smem_are_the_plans():
    """Derived by hand: B_r x B_c tiles, one CTA per (Q block, head), (B_r + 2 B_c) d e bytes."""
    gpu, wl = get_gpu("h100-sxm"), workload((2, 4, 2, 1000, 1000, 64, False))
    plan = plan_of("flash2", wl, gpu)
    (launch,) = ports.port_launches("flash2", wl, plan).launches
    assert launch.grid == (-(-1000 // plan.block_q), 2 * 4, 1)
    assert launch.smem_bytes == plan.smem_bytes == (plan.block_q + 2 * plan.block_k) * 64 * 2
    assert launch.block == (plan.block_q // (16 * ports.warp_m_tiles(plan.block_q, plan.block_k, 64)) * 32, 1, 1)


def test_standard_mask_is_launched_only_when_causal():
    gpu = get_gpu("h100-sxm")
    for causal in (False, True):
        wl = workload((1, 2, 2, 97, 97, 64, causal))
        spec = ports.port_launches("standard", wl, plan_of("standard", wl, gpu))
        kernels = [l.kernel for l in spec.launches]
        assert ("standard_mask" in kernels) == causal
        if causal:
            allowed = spec.tensors["allowed"].data
            i, j = np.nonzero(allowed == 0)
            assert np.all(j > i) and allowed.sum() == 97 * 98 // 2


@pytest.mark.parametrize("wl_change, words", [
    ({"dtype": "fp32"}, "fp16 or bf16"),
    ({"head_dim": 36}, "multiple of 8"),
    ({"head_dim": 264}, "<= 256"),
])
def test_unsupported_workloads_say_why(wl_change, words):
    gpu = get_gpu("h100-sxm")
    wl = workload(SHAPES[0]).replace(**wl_change)
    for name in DENSE_PORTS:
        try:
            plan = plan_of(name, wl, gpu)
        except ValueError:
            continue                                   # the simulator itself refuses it
        with pytest.raises(ports.PortUnsupported, match=words):
            ports.port_launches(name, wl, plan)


def test_unknown_port_is_refused():
    with pytest.raises(ports.PortUnsupported, match="no GPU port"):
        ports.port_launches("flash9", workload(SHAPES[0]), None)


def test_smem_over_the_gpu_limit_is_refused():
    wl = workload(SHAPES[0])
    plan = plan_of("flash2", wl, get_gpu("h100-sxm"))
    tiny = get_gpu("h100-sxm").replace(smem_bytes_per_block=1024)
    with pytest.raises(ports.PortUnsupported, match="shared"):
        ports.port_launches("flash2", wl, plan, gpu=tiny)


# ---- the .cu sources -------------------------------------------------------------------------

C_TYPES = {"attn_t": ("fp16", "bf16"), "float": "fp32", "int": "int32", "unsigned char": "uint8"}
KERNEL_RE = re.compile(r'extern "C" __global__ void(?:\s+__launch_bounds__\([^)]*\))?\s+'
                       r'(\w+)\(([^)]*)\)', re.S)


def kernel_signatures(source):
    text = ports.source_path(source).read_text()
    sigs = {}
    for name, params in KERNEL_RE.findall(text):
        parsed = []
        for p in params.split(","):
            p = " ".join(p.replace("__restrict__", "").replace("const", "").split())
            base = p.rsplit(" ", 1)[0].replace("*", "").strip()
            parsed.append((C_TYPES[base], "*" in p))
        sigs[name] = parsed
    return sigs


def all_specs():
    """Port declarations over every shared case and GPU model (those the simulator plans)."""
    for gpu_name in GPU_MODELS:
        gpu = get_gpu(gpu_name)
        for case in PORT_CASES:
            try:
                plan = plan_of(case.name, case.workload, gpu, case.options)
            except ValueError:
                continue                       # not planned by the simulator (see above)
            yield ports.port_launches(case.name, case.workload, plan, gpu=gpu)


def test_declared_arguments_match_the_kernel_signatures():
    """Every launch passes as many arguments as its kernel takes, pointers where it takes
    pointers (of the tensor's dtype) and ints/floats where it takes those."""
    checked = set()
    for spec in all_specs():
        for launch in spec.all_launches:
            sig = kernel_signatures(launch.source)[launch.kernel]
            assert len(sig) == len(launch.args), launch.kernel
            for (ctype, is_ptr), arg in zip(sig, launch.args):
                if is_ptr:
                    allowed = ctype if isinstance(ctype, tuple) else (ctype,)
                    assert arg is None or spec.tensors[arg].dtype in allowed, (launch.kernel, arg)
                else:
                    assert isinstance(arg, ports.Scalar)
                    assert arg.ctype == {"int32": "int", "fp32": "float"}[ctype]
            checked.add(launch.kernel)
    assert {"flash2_fwd", "flash1_init", "flash1_fwd", "standard_scores", "standard_mask",
            "standard_softmax", "standard_pv", "gqa_splitkv", "gqa_combine",
            "block_sparse_fwd", "feature_state", "feature_apply", "feature_causal",
            "feature_combine", "mla_absorb_q", "mla_attn", "mla_combine", "mla_absorb_o"} <= checked
    assert {"flash2_bwd_preprocess", "flash2_bwd", "flash2_bwd_convert_dq"} <= checked
    assert {"standard_bwd_dv", "standard_bwd_dp", "standard_bwd_softmax", "standard_bwd_mask",
            "standard_bwd_dq", "standard_bwd_dk", "flash1_bwd_init", "flash1_bwd",
            "standard_dropout", "standard_bwd_dropout"} <= checked


def test_every_declared_source_exists_and_documents_its_defines():
    sources = {(s, d) for spec in all_specs() for l in spec.all_launches
               for s, d in [(l.source, tuple(l.defines))]}
    for source, defines in sources:
        assert ports.source_path(source).is_file()
        header = ports.source_path(source).read_text().split("#include", 1)[0]
        for name in set(defines) - {"ATTN_BF16"}:      # the storage switch: attn_common.cuh
            assert name in header, f"{source}'s header does not document -D{name}"


def test_every_cu_file_has_a_header_naming_tile_defines():
    for path in sorted(ports.CUDA_DIR.glob("*.cu")):
        text = path.read_text()
        assert text.startswith("// " + path.name), path.name
        assert ports.tile_defines_in_header(path.name), f"{path.name} names no tile define"
        assert 'extern "C" __global__' in text


def test_backend_inlines_the_shared_header():
    text = backend.load_source("flash2_fwd.cu")
    assert '#include "attn_common.cuh"' not in text
    assert "attn_swizzle" in text and "flash2_fwd(" in text


def test_no_cupy_import_under_algorithms():
    for path in ports.CUDA_DIR.parent.glob("*.py"):
        assert not re.search(r"^\s*(import|from)\s+cupy", path.read_text(), re.M), path.name


NVCC = shutil.which("nvcc")


@pytest.mark.skipif(NVCC is None, reason="nvcc not on PATH")
def test_flash2_source_as_the_backend_sends_it_compiles_for_sm80(tmp_path):
    """The text NVRTC would get (header inlined) compiles, warnings as errors, with the tiles
    of an A100 plan and a head_dim the MMA k-step pads (40)."""
    wl = workload((1, 2, 2, 97, 97, 40, True))
    (launch,) = ports.port_launches("flash2", wl, plan_of("flash2", wl, get_gpu("a100-40gb"))).launches
    src = tmp_path / "flash2_inlined.cu"
    src.write_text(backend.load_source(launch.source))
    done = subprocess.run([NVCC, "-arch=sm_80", "-std=c++17", "-Werror", "all-warnings", "-c",
                           "-o", "/dev/null", str(src),
                           *[f"-D{k}={v}" for k, v in launch.defines.items()]],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


# ---- the backend without a device ------------------------------------------------------------

def test_gpu_check_without_a_device_skips_with_exit_0(monkeypatch, capsys):
    from attnsim.cli import main
    monkeypatch.setattr(backend, "gpu_available", lambda: (False, "no CUDA device (test)"))
    assert main(["gpu-check"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out == ["attnsim gpu-check: GPU checks skipped: no CUDA device (test)"]
    assert gpu_check.gpu_section_rows() == []
    assert gpu_check.report_section(get_gpu("h100")) is None


def test_gpu_check_rejects_unknown_algorithms_even_without_a_device(capsys):
    from attnsim.cli import main
    assert main(["gpu-check", "flash9"]) == 2
    assert "no GPU port for flash9" in capsys.readouterr().err


def test_gpu_available_reports_a_reason():
    ok, reason = backend.gpu_available()
    assert isinstance(ok, bool) and reason


@pytest.mark.parametrize("device, sms, gib, model", [
    ("NVIDIA H100 80GB HBM3", 132, 80, "h100-sxm"),
    ("NVIDIA H100 PCIe", 114, 80, "h100-pcie"),
    ("NVIDIA H200", 132, 141, "h200"),
    ("NVIDIA A100-SXM4-40GB", 108, 40, "a100-40gb"),
    ("NVIDIA A100-SXM4-80GB", 108, 80, "a100-80gb"),
])
def test_devices_map_to_their_models(device, sms, gib, model):
    gpu, warning = backend.match_gpu_model(device, sms, gib * 2**30)
    assert gpu.name == model and warning is None


def test_unknown_device_gets_the_closest_sm_count_with_a_warning():
    gpu, warning = backend.match_gpu_model("NVIDIA L40S", 142, 48 * 2**30)
    assert gpu.sm_count == min((g.sm_count for g in GPUS.values()), key=lambda s: abs(s - 142))
    assert "closest" in warning and "L40S" in warning


def test_input_copies_exceed_twice_the_l2():
    wl = workload(SHAPES[0])
    spec = ports.port_launches("flash2", wl, plan_of("flash2", wl, get_gpu("h100-sxm")))
    per_copy = sum(int(np.prod(t.shape)) * 2 for t in spec.tensors.values() if t.role == "input")
    l2 = 8 * per_copy + 1
    n = backend.input_copies(spec, l2, max_copies=64)
    assert n * per_copy > 2 * l2 and (n - 1) * per_copy <= 2 * l2


def test_report_section_when_a_device_is_present(monkeypatch):
    from reports.document import Document
    row = {key: None for key, _ in gpu_check.COLUMNS}
    row.update(algorithm="flash2", seq=4096, measured_s=2e-3, predicted_s=1.5e-3, ratio=0.75)
    monkeypatch.setattr(backend, "gpu_available", lambda: (True, "test device"))
    monkeypatch.setattr(backend, "sdpa_available", lambda: (False, "no torch (test)"))
    monkeypatch.setattr(gpu_check, "check_rows", lambda *a, **k: [row])
    section, data = gpu_check.report_section(get_gpu("h100"))
    assert data["rows"] == [row] and data["device"] == "test device"
    text = Document("t", [section], {}).render("markdown")
    assert "pred/meas" in text and "0.75" in text and "2.000 ms" in text


@pytest.mark.parametrize("name", ["linear", "rfa", "performer"])
def test_feature_ports_launch_the_causal_sweep_or_state_and_apply(name):
    """Causal: the chunked sweep, one CTA per (head, slice), plus the combine when sliced;
    non-causal: state then apply. The projection W is the module's, for the inputs' seed."""
    gpu = get_gpu("h100-sxm")
    for shape in (SHAPES[3], FEATURE_SHAPES[0]):
        wl = workload(shape)
        plan = plan_of(name, wl, gpu)
        spec = ports.port_launches(name, wl, plan, gpu=gpu)
        kernels = [l.kernel for l in spec.launches]
        if wl.causal:
            assert kernels == ["feature_causal"] + ["feature_combine"] * (plan.feature_tiles > 1)
        else:
            assert kernels == ["feature_state", "feature_apply"]
        assert spec.launches[0].grid == (plan.feature_tiles, wl.batch * wl.heads, 1)
        if name != "linear":
            w = spec.tensors["w"]
            data = ports.const_data(w, make_inputs(wl, seed=5))
            assert data.shape == w.shape == (1, plan.projections, wl.head_dim)
            module = get_algorithm(name)
            expected = (module.projection(plan, wl.head_dim, 5) if name == "rfa"
                        else module.projection_fn(plan, wl.head_dim, 5)(0, 0))
            assert np.array_equal(data[0], expected)


def test_feature_port_refuses_a_block_it_cannot_tile():
    from dataclasses import replace
    wl, gpu = workload(SHAPES[1]), get_gpu("h100-sxm")
    plan = replace(plan_of("performer", wl, gpu), block=24)
    with pytest.raises(ports.PortUnsupported, match="multiple of 16"):
        ports.port_launches("performer", wl, plan)


def test_gpu_check_reports_a_failing_port_and_exits_1(monkeypatch, capsys):
    from attnsim.cli import main

    def broken(*a, **k):
        raise RuntimeError("CUDA_ERROR_ILLEGAL_ADDRESS (test)")

    monkeypatch.setattr(backend, "gpu_available", lambda: (True, "test device"))
    monkeypatch.setattr(backend, "detect_gpu_model", lambda: (get_gpu("h100-sxm"), None))
    monkeypatch.setattr(backend, "sdpa_available", lambda: (False, "no torch (test)"))
    monkeypatch.setattr(backend, "device_reference", lambda wl, inputs: np.zeros(1))
    monkeypatch.setattr(backend, "run_port", broken)
    assert main(["gpu-check", "flash2", "--seq", "64", "--batch", "1", "--heads", "1",
                 "--cpu-check-max-n", "1", "--format", "json"]) == 1
    captured = capsys.readouterr()
    (row,) = json.loads(captured.out)["rows"]
    assert row["failed"] and "ILLEGAL_ADDRESS" in row["note"] and row["predicted_s"] > 0
    assert "1 port run(s) failed: flash2 N=64" in captured.err


# ---- bf16 storage ------------------------------------------------------------------------------

def test_bf16_ports_declare_bf16_tensors_and_the_storage_define():
    gpu = get_gpu("h100-sxm")
    for case in BF16_CASES:
        spec = ports.port_launches(case.name, case.workload,
                                   plan_of(case.name, case.workload, gpu, case.options), gpu=gpu)
        assert {t.dtype for t in spec.tensors.values()} & {"fp16", "bf16"} == {"bf16"}
        assert all(l.defines.get("ATTN_BF16") == 1 for l in spec.launches)
        fp16 = ports.port_launches(case.name, case.workload.replace(dtype="fp16"),
                                   plan_of(case.name, case.workload, gpu, case.options), gpu=gpu)
        assert all("ATTN_BF16" not in l.defines for l in fp16.launches)


@given(st.lists(st.floats(allow_nan=False, allow_infinity=False, width=32,
                          min_value=-2.0 ** 127, max_value=2.0 ** 127), min_size=1, max_size=64))
def test_bf16_host_rounding_is_within_half_an_ulp(values):
    """to_storage rounds to the nearest bf16 (8 significand bits): for x in [2^e, 2^(e+1))
    the spacing is 2^(e-7), so the error is at most 2^(e-8)."""
    x = np.asarray(values, dtype=np.float32)
    back = ports.from_storage(ports.to_storage(x, "bf16"), "bf16").astype(np.float64)
    normal = np.abs(x) >= np.finfo(np.float32).tiny
    _, e = np.frexp(x[normal].astype(np.float64))          # |x| in [2^(e-1), 2^e)
    assert np.all(np.abs(back[normal] - x[normal]) <= np.ldexp(1.0, e - 1 - 8))


def test_bf16_host_rounding_breaks_ties_to_even():
    """Halfway cases go to the even significand, as cvt.rn.bf16.f32 does."""
    ulp = 2.0 ** -7                                    # bf16 spacing in [1, 2)
    x = np.array([1 + ulp / 2, 1 + 3 * ulp / 2, -(1 + ulp / 2)], dtype=np.float32)
    back = ports.from_storage(ports.to_storage(x, "bf16"), "bf16")
    assert back.tolist() == [1.0, 1 + 2 * ulp, -1.0]


def test_bf16_host_conversion_keeps_nan_and_infinities():
    x = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 3.0e38], dtype=np.float32)
    back = ports.from_storage(ports.to_storage(x, "bf16"), "bf16")
    assert np.isnan(back[0]) and back[1] == np.inf and back[2] == -np.inf
    assert back[3] == 0 and np.signbit(back[4]) and np.isfinite(back[5])


# ---- flash2 backward ---------------------------------------------------------------------------

def test_flash2_backward_grid_smem_and_tensors():
    """Derived by hand from FA-2's Algorithm 2: preprocess and convert one CTA per (Q block,
    head), the main kernel one per (K/V block, head), shared memory Q_i, dO_i, K_j, V_j and
    P_ij, dS_ij; outputs dq, dk, dv (o too for fwd+bwd)."""
    gpu = get_gpu("h100-sxm")
    wl = workload((2, 4, 4, 1000, 700, 64, True)).replace(passes="bwd")
    plan = plan_of("flash2", wl, gpu)
    bq, bk = plan.bwd.block_q, plan.bwd.block_k
    assert (bq, bk) == (128, 128)
    spec = ports.port_launches("flash2", wl, plan, gpu=gpu)
    pre, main, conv = spec.launches
    assert pre.grid == conv.grid == (-(-1000 // bq), 8, 1)
    assert main.grid == (-(-700 // bk), 8, 1) and main.block == (8 * 32, 1, 1)
    assert main.smem_bytes == plan.bwd.smem_bytes == (2 * bq + 2 * bk) * 64 * 2 + 2 * bq * bk * 2
    assert spec.outputs == ("dq", "dk", "dv") and spec.output == "dq"
    (fwd,) = spec.setup                               # O and lse for the backward: untimed
    assert fwd.kernel == "flash2_fwd" and fwd.sim_kernel is None
    assert spec.tensors["o"].role == spec.tensors["lse"].role == "saved"
    assert spec.tensors["do"].role == "input" and spec.tensors["dq_acc"].dtype == "fp32"
    both = ports.port_launches("flash2", wl.replace(passes="fwd+bwd"), plan, gpu=gpu)
    assert [l.kernel for l in both.launches] == ["flash2_fwd", "flash2_bwd_preprocess",
                                                 "flash2_bwd", "flash2_bwd_convert_dq"]
    assert both.outputs == ("o", "dq", "dk", "dv") and both.setup == ()
    assert both.tensors["o"].role == "output"


def test_flash2_backward_warps():
    """8 warps (FA-2's sm80 backward) for the plans' tiles; fewer only when the tiles
    cannot be split 8 ways into 16 x 16 granules."""
    assert ports.flash2_bwd_warps(128, 128, 64) == 8
    assert ports.flash2_bwd_warps(64, 128, 128) == 8
    assert ports.flash2_bwd_warps(128, 128, 40) == 8          # d pads to 48: 3 chunks of 16
    assert ports.flash2_bwd_warps(64, 64, 40) == 4            # 4 x 2 warps cannot split 48
    assert ports.flash2_bwd_warps(16, 64, 64) == 4
    assert ports.flash2_bwd_warps(16, 16, 64) == 1


def test_backward_is_refused_where_not_ported():
    gpu = get_gpu("h100-sxm")
    wl = workload(SHAPES[0]).replace(passes="bwd")
    with pytest.raises(ports.PortUnsupported, match="forward pass only"):
        ports.port_launches("gqa", wl.replace(passes="fwd+bwd"), plan_of("gqa", wl.replace(passes="fwd"), gpu))
    plan = plan_of("flash2", wl, gpu)
    gqa = wl.replace(heads=4, kv_heads=2)           # the simulator plans no GQA backward
    with pytest.raises(ValueError, match="kv_heads"):
        plan_of("flash2", gqa, gpu)
    with pytest.raises(ports.PortUnsupported, match="multi-head only"):
        ports.port_launches("flash2", gqa, plan)
    with pytest.raises(ports.PortUnsupported, match="no backward tiles"):
        ports.port_launches("flash2", wl, plan_of("flash2", wl.replace(passes="fwd"), gpu))


@pytest.mark.skipif(NVCC is None, reason="nvcc not on PATH")
@pytest.mark.parametrize("gpu_name, d", [("a100-40gb", 128), ("h100-sxm", 40)])
def test_flash2_backward_source_as_the_backend_sends_it_compiles(tmp_path, gpu_name, d):
    wl = workload((1, 2, 2, 97, 97, d, True)).replace(passes="bwd")
    gpu = get_gpu(gpu_name)
    spec = ports.port_launches("flash2", wl, plan_of("flash2", wl, gpu))
    main = spec.launches[1]
    src = tmp_path / "flash2_bwd_inlined.cu"
    src.write_text(backend.load_source(main.source))
    arch = "sm_80" if gpu_name.startswith("a100") else "sm_90"
    done = subprocess.run([NVCC, f"-arch={arch}", "-std=c++17", "-Werror", "all-warnings", "-c",
                           "-o", "/dev/null", str(src),
                           *[f"-D{k}={v}" for k, v in main.defines.items()]],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


# ---- diff ----------------------------------------------------------------------------------------

def test_diff_sub_k_keeps_the_score_slice_within_the_register_budget():
    """SUB_K x 2d <= 4096 (no ptxas spill at B_c = 128, see ports.DIFF_SUB_K_BUDGET), SUB_K a
    multiple of 16 dividing B_c."""
    assert [ports.diff_sub_k(128, d2) for d2 in (32, 64, 96, 128)] == [128, 64, 32, 32]
    assert ports.diff_sub_k(64, 32) == 64 and ports.diff_sub_k(48, 128) == 16


@pytest.mark.parametrize("head_dim, words", [(48, "multiple of 32"), (256, "<= 128")])
def test_diff_port_refuses_head_dims_it_cannot_run(head_dim, words):
    gpu = get_gpu("h100-sxm")
    wl = workload((1, 2, 2, 97, 97, head_dim, False))
    with pytest.raises(ports.PortUnsupported, match=words):
        ports.port_launches("diff", wl, plan_of("diff", wl, gpu))


def test_diff_port_passes_the_simulators_lambdas_and_scales():
    from algorithms import diff
    gpu = get_gpu("a100-40gb")
    wl = workload((2, 3, 3, 200, 333, 64, True))
    plan = plan_of("diff", wl, gpu, {"layer": 5, "seed": 3})
    spec = ports.port_launches("diff", wl, plan, gpu=gpu)
    (launch,) = spec.launches
    lam = spec.tensors["lambda"]
    assert lam.role == "const" and lam.dtype == "fp32" and lam.shape == (3,)
    assert np.array_equal(lam.data, diff.lambdas(wl, plan).astype(np.float32))
    args = dict(zip(("n_q", "n_k", "heads", "scale", "out_scale", "rms_eps", "causal"),
                    [a.value for a in launch.args[5:]]))
    assert args == {"n_q": 200, "n_k": 333, "heads": 3, "scale": wl.scale,
                    "out_scale": 1 - diff.lambda_init(5), "rms_eps": diff.RMS_EPS, "causal": 1}
    assert launch.smem_bytes == plan.smem_bytes and "lse" not in spec.tensors


def test_diff_device_reference_is_diffs_formula(monkeypatch):
    """gpu-check's large-N reference for diff: diff.reference with the device's float32
    attention (stood in for here by the float64 one) — not plain attention."""
    from algorithms import diff
    from attnsim import make_inputs
    from attnsim.reference import attention_reference, relative_error
    monkeypatch.setattr(backend, "device_reference", lambda wl, x: attention_reference(
        x.q, x.k, x.v, causal=wl.causal, scale=wl.scale)[0])
    wl = workload((1, 2, 2, 50, 70, 64, True))
    plan = plan_of("diff", wl, get_gpu("h100-sxm"))
    inputs = make_inputs(wl, seed=4)
    ours = backend.diff_device_reference(wl, plan, inputs)
    exact = diff.reference(wl, plan, inputs, attention_reference)
    assert ours.shape == (1, 2, 50, 64) and relative_error(ours, exact) < 1e-6
    plain = attention_reference(inputs.q, inputs.k, inputs.v, causal=True, scale=wl.scale)[0]
    assert relative_error(plain, exact) > 0.1


def test_diff_torch_formulation_matches_the_reference():
    """The SDPA baseline gpu-check times for diff computes diff (run on the CPU here)."""
    torch = pytest.importorskip("torch")
    from algorithms import diff
    from attnsim import make_inputs
    from attnsim.reference import attention_reference, relative_error
    wl = workload((2, 3, 3, 64, 64, 64, True)).replace(dtype="fp32")
    plan = plan_of("diff", wl, get_gpu("h100-sxm"))
    inputs = make_inputs(wl, seed=5)
    lam = torch.tensor(diff.lambdas(wl, plan), dtype=torch.float32)
    out = backend.torch_diff_attention(torch, *(torch.from_numpy(getattr(inputs, n))
                                                for n in ("q", "k", "v")),
                                       lam, 1 - plan.lambda_init, diff.RMS_EPS, True, wl.scale)
    exact = diff.reference(wl, plan, inputs, attention_reference)
    assert relative_error(out.numpy(), exact) < 1e-5


def diff_port_hbm_bytes(wl, launch) -> tuple[int, int]:
    """(read, written) HBM bytes of diff_fwd.cu as its loops move them (cp.async zero-fills
    rows past N without reading): per CTA Q_i, the visible K_j and V_j blocks, O_i."""
    bq, bk, d2 = launch.defines["BLOCK_Q"], launch.defines["BLOCK_K"], wl.head_dim
    row = d2 * wl.elem_bytes
    read = written = 0
    for x in range(launch.grid[0]):
        r0, r1 = x * bq, min(x * bq + bq, wl.seq_q)
        key_end = (max(0, min(wl.seq_k, r1 + wl.seq_k - wl.seq_q)) if wl.causal else wl.seq_k)
        read += (r1 - r0) * row
        for c0 in range(0, -(-key_end // bk) * bk, bk):
            read += 2 * min(bk, wl.seq_k - c0) * row            # K_j (both halves), V_j
        written += (r1 - r0) * row
    bh = launch.grid[1]
    return read * bh, written * bh


@pytest.mark.parametrize("case", [c for c in PORT_CASES if c.name == "diff"], ids=lambda c: c.id)
def test_diff_port_moves_the_simulators_hbm_bytes(case):
    """The port's loops (mirrored above) read and write the bytes the simulator counts; the
    λ_h read (4 bytes per CTA) is the one documented extra."""
    gpu, wl = get_gpu("h100-sxm"), case.workload
    (launch,) = ports.port_launches("diff", wl, plan_of("diff", wl, gpu)).launches
    (kernel,) = simulate("diff", wl, gpu, compute=False).kernels
    counts = kernel.counts()
    assert diff_port_hbm_bytes(wl, launch) == (counts["hbm_read_bytes"], counts["hbm_write_bytes"])


def test_plan_configurations_cover_every_ported_source():
    """algorithms.port_configs lists what the plans give the ports over the A100/H100 sweep
    (compiled by .ci/compile_cuda.sh): every .cu source appears, with its tile defines."""
    from algorithms import port_configs
    configs = port_configs.configs()
    sources = {s for s, _ in configs}
    assert sources == {p.name for p in ports.CUDA_DIR.glob("*.cu")}
    assert len(configs) == len(set(configs))
    for source, defines in configs:
        assert all(d.startswith("-D") and "=" in d for d in defines.split())


# ---- standard and flash1 backward (algorithms/ports/backward.py) -----------------------------

def test_standard_backward_grids_tensors_and_passes():
    """Derived by hand from Algorithm 3 as autograd runs it: four GEMMs with the forward's
    128 x 128 tiles (dV, dK: N_k x d outputs; dP: N_q x N_k; dQ: N_q x d), one CTA per row for
    the softmax and (causal) masked_fill backward; dP and dS share the padded work tensor."""
    gpu = get_gpu("h100-sxm")
    wl = workload((2, 4, 4, 1000, 700, 64, True)).replace(passes="bwd")
    plan = plan_of("standard", wl, gpu)
    assert (plan.gemm_tile_m, plan.gemm_tile_n) == (128, 128)
    spec = ports.port_launches("standard", wl, plan, gpu=gpu)
    grids = {l.kernel: l.grid for l in spec.launches}
    assert grids == {"standard_bwd_dv": (1, 6, 8), "standard_bwd_dp": (6, 8, 8),
                     "standard_bwd_softmax": (1000, 8, 1), "standard_bwd_mask": (1000, 8, 1),
                     "standard_bwd_dq": (1, 8, 8), "standard_bwd_dk": (1, 6, 8)}
    softmax = next(l for l in spec.launches if l.kernel == "standard_bwd_softmax")
    assert softmax.smem_bytes == 2 * 700 * 2                 # the rows of P and dP
    assert spec.tensors["ds"].shape == (8, 1000, 704) and spec.tensors["p"].role == "saved"
    assert [l.kernel for l in spec.setup] == ["standard_scores", "standard_mask",
                                              "standard_softmax"]
    assert "o" not in spec.tensors and spec.outputs == ("dq", "dk", "dv")
    full = ports.port_launches("standard", wl.replace(causal=False), plan, gpu=gpu)
    assert "standard_bwd_mask" not in {l.kernel for l in full.launches}
    both = ports.port_launches("standard", wl.replace(passes="fwd+bwd"), plan, gpu=gpu)
    assert [l.kernel for l in both.launches][:4] == ["standard_scores", "standard_mask",
                                                     "standard_softmax", "standard_pv"]
    assert both.outputs == ("o", "dq", "dk", "dv") and both.tensors["p"].role == "work"


def test_flash1_backward_tiles_smem_and_passes():
    """Algorithm 4 on the H100 at d = 64: B_c = ceil(M/8d) = 227, B_r = 64 (the simulator's
    backward plan), one CTA per head, 8 warps; shared memory Q_i, dO_i, K_j, V_j, P_ij, dS_ij
    with B_c padded to 240, and two fp32 row vectors. --pass bwd: O, l, m from the forward."""
    gpu = get_gpu("h100-sxm")
    wl = workload((2, 4, 4, 1000, 700, 64, True)).replace(passes="bwd")
    plan = plan_of("flash1", wl, gpu)
    assert (plan.bwd.block_q, plan.bwd.block_k) == (64, 227)
    spec = ports.port_launches("flash1", wl, plan, gpu=gpu)
    init, main = spec.launches
    assert init.grid == main.grid == (8, 1, 1) and main.block == (256, 1, 1)
    assert main.defines == {"BLOCK_Q": 64, "BLOCK_K": 227, "HEAD_DIM": 64}
    assert main.smem_bytes == (2 * 64 + 2 * 240) * 64 * 2 + 2 * 64 * 240 * 2 + 2 * 64 * 4
    assert [l.kernel for l in spec.setup] == ["flash1_init", "flash1_fwd"]
    assert {n for n, t in spec.tensors.items() if t.role == "saved"} == {"o", "l", "m"}
    assert ports.flash1_kv_granules_per_warp(227, 64) == 8        # 15 x 4 granules / 8 warps
    both = ports.port_launches("flash1", wl.replace(passes="fwd+bwd"), plan, gpu=gpu)
    assert [l.kernel for l in both.launches] == ["flash1_init", "flash1_fwd", "flash1_bwd_init",
                                                 "flash1_bwd"]
    assert both.outputs == ("o", "dq", "dk", "dv") and both.tensors["o"].role == "output"


def test_flash1_backward_refuses_dk_dv_beyond_its_registers():
    gpu = get_gpu("h100-sxm")
    wl = workload((1, 1, 1, 300, 300, 64, False)).replace(passes="bwd")
    plan = plan_of("flash1", wl, gpu)
    big = replace(plan, bwd=replace(plan.bwd, block_k=400))   # 25 x 4 granules: 13 a warp
    with pytest.raises(ports.PortUnsupported, match="registers of 8 warps"):
        ports.port_launches("flash1", wl, big)


def test_flash2_refuses_dropout():
    """The simulator runs dropout (a hashed keep mask); flash2's kernels do not draw it, so
    the port refuses it (it used to run without it) instead of running without it."""
    gpu = get_gpu("h100-sxm")
    for passes in ("fwd", "bwd", "fwd+bwd"):
        wl = workload(SHAPES[0]).replace(passes=passes, dropout=0.1)
        with pytest.raises(ports.PortUnsupported, match="does not apply dropout"):
            ports.port_launches("flash2", wl, plan_of("flash2", wl, gpu))


def test_flash1_dropout_passes_the_seed_to_both_kernels():
    """flash1 regenerates Z on chip: the forward and backward kernels take the seed tensor,
    threshold round(p 2^24) and 1/(1 - p); without dropout a null seed (Z = 1)."""
    gpu = get_gpu("h100-sxm")
    wl = workload(SHAPES[1]).replace(passes="fwd+bwd", dropout=0.25)
    spec = ports.port_launches("flash1", wl, plan_of("flash1", wl, gpu))
    for launch in (spec.launches[1], spec.launches[3]):
        seed, threshold, keep = launch.args[-3:]
        assert seed == "dropout_seed" and threshold.value == 1 << 22
        assert keep.value == float(np.float32(1 / 0.75))          # float32, as the simulator
    plain = ports.port_launches("flash1", wl.replace(dropout=0.0), plan_of("flash1", wl, gpu))
    assert plain.launches[3].args[-3] is None and "dropout_seed" not in plain.tensors


def test_standard_dropout_launches_the_framework_kernels():
    """standard with --dropout: the forward's dropout kernel between softmax and P V (which
    reads P ∘ Z), the backward's dropout_bwd before the softmax backward; --pass bwd saves P,
    P ∘ Z and the mask from the setup."""
    gpu = get_gpu("h100-sxm")
    wl = workload(SHAPES[1]).replace(passes="bwd", dropout=0.1)
    spec = ports.port_launches("standard", wl, plan_of("standard", wl, gpu))
    assert [l.kernel for l in spec.setup][-1] == "standard_dropout"
    assert [l.sim_kernel for l in spec.launches] == ["dv_gemm", "dp_gemm", "dropout_bwd",
                                                     "softmax_bwd", "mask_bwd", "dq_gemm",
                                                     "dk_gemm"]
    assert spec.launches[0].args[0] == "p_drop"
    assert {n for n, t in spec.tensors.items() if t.role == "saved"} == {"p", "p_drop",
                                                                         "dropout_mask"}
    fwd = ports.port_launches("standard", wl.replace(passes="fwd"), plan_of("standard", wl, gpu))
    pv = fwd.launches[-1]
    assert pv.kernel == "standard_pv" and pv.args[0] == "p_drop"
    seed = fwd.tensors["dropout_seed"].derive(make_inputs(wl, seed=(7 << 32) + 5))
    assert seed.dtype == np.int32 and list(seed) == [5, 7]


@pytest.mark.parametrize("name", ("standard", "flash1"))
def test_backward_ports_refuse_gqa_and_forward_plans(name):
    gpu = get_gpu("h100-sxm")
    wl = workload(SHAPES[0]).replace(passes="bwd")
    with pytest.raises(ValueError, match="kv_heads"):             # the simulator refuses it
        plan_of(name, wl.replace(heads=4, kv_heads=2), gpu)
    with pytest.raises(ports.PortUnsupported, match="multi-head only"):
        ports.port_launches(name, wl.replace(heads=4, kv_heads=2), plan_of(name, wl, gpu))
    with pytest.raises(ports.PortUnsupported, match="no backward tiles"):
        ports.port_launches(name, wl, plan_of(name, wl.replace(passes="fwd"), gpu))


@pytest.mark.skipif(NVCC is None, reason="nvcc not on PATH")
@pytest.mark.parametrize("name, gpu_name, d", [("flash1", "a100-40gb", 128),
                                               ("flash1", "h100-sxm", 40),
                                               ("standard", "h100-sxm", 40)])
def test_backward_sources_as_the_backend_sends_them_compile(tmp_path, name, gpu_name, d):
    wl = workload((1, 2, 2, 97, 97, d, True)).replace(passes="bwd")
    gpu = get_gpu(gpu_name)
    main = ports.port_launches(name, wl, plan_of(name, wl, gpu)).launches[-1]
    src = tmp_path / f"{name}_bwd_inlined.cu"
    src.write_text(backend.load_source(main.source))
    arch = "sm_80" if gpu_name.startswith("a100") else "sm_90"
    done = subprocess.run([NVCC, f"-arch={arch}", "-std=c++17", "-Werror", "all-warnings", "-c",
                           "-o", "/dev/null", str(src),
                           *[f"-D{k}={v}" for k, v in main.defines.items()]],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
