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
from port_cases import (BF16_CASES, DENSE_PORTS, FEATURE_SHAPES, GPU_MODELS,
                        NSA_PAPER_CASES, NSA_SHAPES, NSA_SMALL, PORT_CASES, SHAPES, workload)


def plan_of(name, wl, gpu, options=None):
    module = get_algorithm(name)
    return module.plan(wl, gpu, gpu.smem_bytes_per_block,
                       **check_options(module.INFO, options or {}))


def plan_or_skip(name, wl, gpu, options=None):
    try:
        return plan_of(name, wl, gpu, options)
    except ValueError as err:                 # a case the simulator itself refuses to plan
        pytest.skip(f"the simulator does not plan this case: {err}")


def expected_defines(name, plan, d, source=None, dropout=0.0):
    """The tile defines a port must compile with, read off the plan (``source``: the
    launch's file, for ports with several; ``dropout``: the workload's p — flash2 compiles
    its dropout in, ``ATTN_DROPOUT``)."""
    if name == "flash2" and dropout > 0:
        defines = {**expected_defines(name, plan, d, source), "ATTN_DROPOUT": 1}
        if source == "flash2_fwd.cu":
            defines["WARP_M_TILES"] = ports.warp_m_tiles(plan.block_q, plan.block_k, d, True)
        return defines
    if source == "flash1_bwd.cu":               # the backward's own tiles (Algorithm 4)
        return {"BLOCK_Q": plan.bwd.block_q, "BLOCK_K": plan.bwd.block_k, "HEAD_DIM": d}
    if source == "flash2_bwd.cu":               # the backward's own tiles
        bp = plan.bwd
        return {"BLOCK_Q": bp.block_q, "BLOCK_K": bp.block_k, "HEAD_DIM": d,
                "BWD_WARPS": ports.flash2_bwd_warps(bp.block_q, bp.block_k, d)}
    if name == "masked_dense":                   # standard's kernels on its dense plan
        name, plan = "standard", plan.dense
    if name == "nsa":           # nsa_fwd.cu's tiles, or the window's FlashAttention-2 tiles
        if source == "block_sparse_fwd.cu":
            return {"BLOCK_Q": plan.win.block_q, "BLOCK_K": plan.win.block_k, "HEAD_DIM": d}
        return {"HEAD_DIM": d, "COMPRESS_TILE": plan.compress_tile,
                "CBLOCK": plan.compress_block, "CSTRIDE": plan.compress_stride,
                "GROUP": plan.group, "BLOCK_Q": plan.cmp_block_q, "BLOCK_K": plan.cmp_block_k,
                "SBLOCK": plan.select_block, "N_SEL": plan.selected,
                "SELECT_TILE": plan.select_tile}
    if name == "standard":
        return {"TILE_M": plan.gemm_tile_m, "TILE_N": plan.gemm_tile_n,
                "TILE_K": plan.gemm_tile_k, "HEAD_DIM": d}
    if name == "gqa":
        return {"BLOCK_Q": plan.block_q, "GROUP": plan.group, "BLOCK_K": plan.block_k,
                "HEAD_DIM": d}
    if name in ("linear", "rfa", "performer"):
        return {"CHUNK": plan.block, "HEAD_DIM": d, "FEAT_KIND": ports.FEATURE_KINDS[plan.kind],
                "FEAT_UNITS": plan.tile_units}
    if source == "mla_upproject.cu":            # mla --path upproject: one head per CTA
        return {"BLOCK_Q": plan.block_q, "BLOCK_K": plan.block_k, "HEAD_DIM": d,
                "DR": plan.rope_dim, "DC": plan.kv_lora_rank, "TILE_M": plan.gemm_tile_m,
                "TILE_N": plan.gemm_tile_n, "TILE_K": plan.gemm_tile_k}
    if name == "mla":
        from algorithms.splitkv import value_column_slices
        return {"GROUP": plan.head_block, "BLOCK_Q": plan.block_q, "BLOCK_K": plan.block_k,
                "DC": plan.kv_lora_rank, "DR": plan.rope_dim, "HEAD_DIM": d,
                "COL_SLICES": value_column_slices(plan.kv_lora_rank),
                "TILE_M": plan.gemm_tile_m, "TILE_N": plan.gemm_tile_n,
                "TILE_K": plan.gemm_tile_k}
    if name == "reformer":
        return {"HEAD_DIM": d, "CHUNK": plan.bucket_size, "HASHES": plan.hashes,
                "HASH_ROWS": plan.hash_block, "ROT_COLS": plan.rotation_cols,
                "SORT_TILE": plan.sort_tile, "COMBINE_ROWS": plan.combine_block}
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
    # with dropout one: the keep mask's hashing next to two tiles' fragments spills
    for tiles in ((128, 128, 64), (128, 64, 64), (64, 64, 40)):
        assert ports.warp_m_tiles(*tiles, dropout=True) == 1


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
        assert launch.defines == {**expected_defines(case.name, plan, wl.head_dim, launch.source,
                                                     wl.dropout),
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


@pytest.mark.parametrize("causal", (False, True))
def test_masked_dense_reads_the_patterns_mask_with_causal_folded_in(causal):
    """masked_dense's mask kernel always runs and reads the pattern's element mask (and the
    same mask when the simulation was count-only, i.e. without one in ``extra``)."""
    gpu = get_gpu("h100-sxm")
    wl = workload((1, 2, 2, 200, 200, 64, causal))
    options = {"mask_of": "local", "window": 48}
    plan = plan_of("masked_dense", wl, gpu, options)
    sim = simulate("masked_dense", wl, gpu, compute=True, options=options)
    from_count_only = ports.port_launches("masked_dense", wl, plan)
    from_executed = ports.port_launches("masked_dense", wl, plan, sim.extra)
    expected = get_algorithm("local").element_mask(wl, plan.pattern)
    for spec in (from_count_only, from_executed):
        assert "standard_mask" in [l.kernel for l in spec.launches]
        np.testing.assert_array_equal(spec.tensors["allowed"].data, expected.astype(np.uint8))
    i, j = np.nonzero(expected)
    assert np.all(i - j < 48) and (np.all(j <= i) if causal else np.any(j > i))


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
            "feature_combine", "mla_absorb_q", "mla_attn", "mla_combine", "mla_absorb_o",
            "mla_upproject", "mla_up_attn", "mla_up_combine",
            "nsa_compress", "nsa_cmp", "nsa_slc"} <= checked
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


# ---- mla --path upproject: the port's loads and stores vs the simulator's count -------------

def mla_upproject_port_hbm_bytes(wl, plan, launches) -> dict:
    """{sim kernel: (read, written)} bytes of mla_upproject.cu's loops, mirrored from the
    declared grids: the GEMM CTA's A and B panels (rows past M, N zero-filled, not read) and C
    tile; the attention CTA's Q rows, its key blocks' K (d_h + d_h^R: K^C and k^R) and V
    (d_h) rows up to the split's end, and its O or fp32 partial + lse; the combine's rows."""
    e, d, d_r, d_c = 2, wl.head_dim, plan.rope_dim, plan.kv_lora_rank
    tm, tn, bq, bk = plan.gemm_tile_m, plan.gemm_tile_n, plan.block_q, plan.block_k
    by = {l.kernel: l for l in launches}
    out = {}
    gx, gy, gz = by["mla_upproject"].grid
    n_out, read = 2 * wl.heads * d, 0
    for x in range(gx):
        for y in range(gy):
            rows, cols = min(tm, wl.seq_k - y * tm), min(tn, n_out - x * tn)
            read += (rows + cols) * d_c * e
    out["mla_upproject"] = (gz * read, wl.batch * wl.seq_k * n_out * e)
    splits, ctas = by["mla_up_attn"].grid[:2]
    t_r = -(-wl.seq_q // bq)
    blocks = -(-wl.seq_k // bk)
    read = written = 0
    for s in range(splits):
        k_lo = s * blocks // splits * bk
        k_hi = min(wl.seq_k, (s + 1) * blocks // splits * bk)
        for rb in range(t_r):
            r0, r1 = rb * bq, min(rb * bq + bq, wl.seq_q)
            end = min(k_hi, max(0, r1 + wl.seq_k - wl.seq_q)) if wl.causal else k_hi
            read += (r1 - r0) * (d + d_r) * e
            for c0 in range(k_lo, end, bk):
                read += min(bk, k_hi - c0) * (2 * d + d_r) * e
            written += (r1 - r0) * (d * (4 if splits > 1 else e) + 4)
    bh = ctas // t_r
    out["mla_attn"] = (bh * read, bh * written)
    if splits > 1:
        out["splitkv_combine"] = (bh * splits * wl.seq_q * (d + 1) * 4,
                                  bh * wl.seq_q * (d * e + 4))
    return out


@pytest.mark.parametrize("case", [c for c in PORT_CASES
                                  if c.options.get("path") == "upproject"], ids=lambda c: c.id)
def test_mla_upproject_port_moves_the_simulators_hbm_bytes(case):
    """No copy of k^R and no other extra: every kernel reads and writes what it is counted."""
    gpu, wl = get_gpu("a100-40gb"), case.workload
    plan = plan_of("mla", wl, gpu, case.options)
    spec = ports.port_launches("mla", wl, plan, gpu=gpu)
    sim = simulate("mla", wl, gpu, compute=False, options=case.options)
    counted = {k.name: (k.counts()["hbm_read_bytes"], k.counts()["hbm_write_bytes"])
               for k in sim.kernels}
    assert mla_upproject_port_hbm_bytes(wl, plan, spec.launches) == counted


class NumpyAsCupy:
    """numpy standing in for CuPy in the device references' tests (plus ``asnumpy``)."""
    def __getattr__(self, name):
        return np.asarray if name == "asnumpy" else getattr(np, name)


@pytest.mark.parametrize("causal, new", [(False, 1), (True, 3)])
def test_mla_device_reference_is_the_definition(monkeypatch, causal, new):
    """gpu-check's large-N reference for mla (either path): the up-projected K, V and softmax
    attention by definition, one head at a time (numpy standing in for the device)."""
    from algorithms import mla
    from attnsim.reference import attention_reference, relative_error
    monkeypatch.setattr(backend, "_require_cupy", lambda: NumpyAsCupy())
    wl = workload((2, 4, 4, new, 90, 32, causal), decode=True)
    inputs = make_inputs(wl, seed=3)
    for path in mla.PATHS:
        plan = plan_of("mla", wl, get_gpu("h100-sxm"), {"path": path, "kv_lora_rank": 64,
                                                        "rope_dim": 16})
        q, k, v = mla.up_projected(wl, mla.mla_inputs(wl, plan, inputs))
        exact, _ = attention_reference(q, k, v, causal=causal, scale=plan.scale)
        ours = backend.mla_device_reference(wl, plan, inputs)
        assert ours.shape == (2, 4, new, 32) and relative_error(ours, exact) < 1e-5


@pytest.mark.parametrize("options, tiles, words", [
    ({"rope_dim": 12}, {}, "multiples of 8"),
    ({"kv_lora_rank": 100}, {}, "multiples of 8"),
    ({}, {"gemm_tile_m": 16, "gemm_tile_n": 16}, "GEMM tiles"),   # plan_gemm's smallest tile
])
def test_mla_upproject_port_refuses_what_it_cannot_run(options, tiles, words):
    """Before anything is compiled, with the reason and the fix."""
    from dataclasses import replace
    wl = workload((1, 4, 4, 1, 200, 64, False), decode=True)
    plan = replace(plan_of("mla", wl, get_gpu("h100-sxm"), {"path": "upproject", **options}),
                   **tiles)
    with pytest.raises(ports.PortUnsupported, match=words):
        ports.port_launches("mla", wl, plan)

# ---- reformer --------------------------------------------------------------------------------

def test_reformer_rotations_are_the_modules_transposed():
    """R is "const" data: reformer.rotations for the inputs' seed (stored values), as R_rᵀ."""
    from algorithms import reformer
    gpu, wl = get_gpu("h100-sxm"), workload((1, 2, 2, 192, 192, 64, True))
    plan = plan_of("reformer", wl, gpu, {"bucket_size": 32})
    spec = ports.port_launches("reformer", wl, plan, gpu=gpu)
    inputs = make_inputs(wl, seed=7)
    rot_t = ports.const_data(spec.tensors["rot_t"], inputs)
    assert spec.tensors["rot_t"].shape == rot_t.shape == (4, plan.rotation_cols, 64)
    assert np.array_equal(rot_t, reformer.rotations(plan, 64, inputs, "fp16").transpose(0, 2, 1))
    assert spec.tensors["factors"].data.tolist() == list(plan.factors) == [6]
    assert "k" not in spec.tensors                     # shared QK: K is never read
    assert spec.outputs == ("o", "buckets", "perm")


def test_reformer_sort_passes_chain_through_scratch():
    """512 buckets (factors 128 x 4): 9 bits, two digit passes; 32768 keys in 8 sort tiles.
    Pass 0 reads the hash's output and writes a scratch pair, pass 1 reads it and writes the
    sorted keys and the permutation the attention reads; the sort's flags, counters and
    histograms are zero-filled for every run."""
    gpu, wl = get_gpu("h100-sxm"), workload((1, 1, 1, 32768, 32768, 64, True))
    plan = plan_of("reformer", wl, gpu, {"bucket_size": 64, "hashes": 2})
    assert plan.factors == (128, 4) and plan.sort_passes == 2 and plan.sort_tile == 4096
    spec = ports.port_launches("reformer", wl, plan, gpu=gpu)
    assert [l.sim_kernel for l in spec.launches] == [
        "reformer_hash", "reformer_sort_hist", "reformer_sort_pass0", "reformer_sort_pass1",
        "reformer_attn", "reformer_combine"]
    hist, pass0, pass1 = spec.launches[1:4]
    assert hist.grid == pass0.grid == (8, 2, 1) and pass0.smem_bytes == 4096 * 8
    assert pass0.args[:4] == ("buckets", "positions", "keys_tmp0", "vals_tmp0")
    assert pass1.args[:4] == ("keys_tmp0", "vals_tmp0", "sorted_keys", "perm")
    assert [a.value for a in pass1.args[-3:]] == [32768, 2, 1]
    for name in ("sort_hist", "sort_tiles", "sort_flags"):
        assert spec.tensors[name].fill == 0
    assert spec.tensors["sort_flags"].shape == (2, 2, 8, 256)


@pytest.mark.parametrize("bucket_size, n, words", [(24, 192, "multiple of 16"),
                                                   (128, 512, "<= 64")])
def test_reformer_port_refuses_chunks_it_cannot_tile(bucket_size, n, words):
    gpu, wl = get_gpu("h100-sxm"), workload((1, 1, 1, n, n, 32, False))
    plan = plan_of("reformer", wl, gpu, {"bucket_size": bucket_size})
    with pytest.raises(ports.PortUnsupported, match=words):
        ports.port_launches("reformer", wl, plan)


def test_gpu_check_reformer_uses_the_cpu_run_while_its_linear_cost_fits(monkeypatch):
    """reformer's CPU run costs N 2C rounds per head (not N²): with --cpu-check-max-n 400
    the defaults (C = 64, 4 rounds) are checked at N = 256 (131,072 <= 160,000) and not at
    512, where the note says why; buckets and perm are compared besides o."""
    seen = {}

    def fake_run_port(spec, inputs, reference=None, **kw):
        seen["reference"] = reference
        return backend.PortRun(algorithm=spec.algorithm, median_s=1e-3, times_s=[1e-3],
                               rel_error=0.0 if reference else None, copies=2,
                               rel_errors={n: 0.0 for n in reference} if reference else None)

    monkeypatch.setattr(backend, "run_port", fake_run_port)
    gpu = get_gpu("h100-sxm")
    base = workload((1, 1, 1, 256, 256, 64, False))
    row = gpu_check.check_one("reformer", base, gpu, cpu_max_n=400, sdpa=False)
    assert row["error_vs"] == "cpu" and set(seen["reference"]) == {"o", "buckets", "perm"}
    row = gpu_check.check_one("reformer", base.replace(seq_q=512, seq_k=512), gpu,
                              cpu_max_n=400, sdpa=False)
    assert seen["reference"] is None and "N 2C rounds > 400²" in row["note"]


# ---- nsa -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("gpu_name", GPU_MODELS)
@pytest.mark.parametrize("case", NSA_PAPER_CASES, ids=lambda c: c.id)
def test_nsa_paper_defaults_launch_the_simulated_kernels(case, gpu_name):
    """At the paper's defaults (l = 32, d_s = 16, l' = 64, n = 16, w = 512): the four
    launches are the simulator's kernels with its CTA counts, the defines its plan's."""
    gpu, wl = get_gpu(gpu_name), case.workload
    plan = plan_of("nsa", wl, gpu)
    assert (plan.compress_block, plan.compress_stride, plan.select_block, plan.selected,
            plan.window) == (32, 16, 64, 16, 512)
    spec = ports.port_launches("nsa", wl, plan, gpu=gpu)
    sim = simulate("nsa", wl, gpu, compute=False)
    assert {l.sim_kernel: l.ctas for l in spec.launches} == {k.name: k.ctas for k in sim.kernels}
    assert [l.sim_kernel for l in spec.launches] == [k.name for k in sim.kernels]
    storage = {"ATTN_BF16": 1} if wl.dtype == "bf16" else {}
    for launch in spec.launches:
        assert launch.defines == {**expected_defines("nsa", plan, wl.head_dim, launch.source),
                                  **storage}
        assert launch.smem_bytes <= gpu.smem_bytes_per_block
        assert np.prod(launch.block) <= 1024


def test_nsa_declares_the_modules_parameters_and_the_window_band():
    """φ's weights and biases and the gate projections are the module's (``nsa.weights``);
    the window launch runs local's band layout with the causal window on chip (window_left
    w − 1, window_right 0, no element mask); sel is an int32 output of n per position."""
    from algorithms import local, nsa
    gpu = get_gpu("h100-sxm")
    wl = workload(NSA_SHAPES[0])
    plan = plan_of("nsa", wl, gpu, NSA_SMALL)
    spec = ports.port_launches("nsa", wl, plan, gpu=gpu)
    par = nsa.weights(wl, plan)
    inputs = make_inputs(wl, seed=3)
    for name, key in (("w_k", "wk"), ("w_v", "wv"), ("b_k", "bk"), ("b_v", "bv"),
                      ("w_gate", "wg")):
        t = spec.tensors[name]
        assert t.role == "input" and t.dtype == wl.dtype
        assert np.array_equal(t.host_values(name, inputs), par[key])
    assert spec.tensors["sel"].dtype == "int32"
    assert spec.tensors["sel"].shape == (1, 2, wl.seq_q, plan.selected)
    assert spec.outputs == ("o",)
    (win,) = [l for l in spec.launches if l.sim_kernel == "nsa_win_fwd"]
    lay = local.layout(wl, plan.win)
    assert np.array_equal(spec.tensors["block_ptr"].data, lay.row_ptr)
    assert win.args[8] is None                                  # the mask is computed on chip
    assert [a.value for a in win.args[-2:]] == [plan.window - 1, 0]


def test_nsa_skips_the_compression_when_no_block_is_complete():
    """N_k < l: the simulator records no nsa_compress, nor does the port launch one."""
    gpu = get_gpu("h100-sxm")
    wl = workload(NSA_SHAPES[5])
    plan = plan_of("nsa", wl, gpu, NSA_SMALL)
    assert plan.compressed_tokens == 0
    kernels = [l.kernel for l in ports.port_launches("nsa", wl, plan, gpu=gpu).launches]
    assert kernels == ["nsa_cmp", "block_sparse_fwd", "nsa_slc"]


def test_nsa_port_refuses_sub_blocks_below_the_mma_size():
    from dataclasses import replace
    gpu = get_gpu("h100-sxm")
    wl = workload(NSA_SHAPES[0])
    plan = replace(plan_of("nsa", wl, gpu, NSA_SMALL), select_tile=8)
    with pytest.raises(ports.PortUnsupported, match="multiple of 16"):
        ports.port_launches("nsa", wl, plan)
    wide = replace(plan_of("nsa", wl, gpu, NSA_SMALL), cmp_block_q=256)   # 4 x 256 rows
    with pytest.raises(ports.PortUnsupported, match="packed rows"):
        ports.port_launches("nsa", wl, wide)

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


def test_flash2_dropout_compiles_in_the_mask_and_passes_the_seed():
    """flash2 regenerates Z on chip (it used to refuse --dropout): with dropout the forward and
    the backward's main kernel are compiled with ATTN_DROPOUT and take the seed tensor,
    threshold round(p 2^24) and 1/(1 - p) in float32; without dropout no define (the kernels'
    registers are unchanged), no seed tensor and a null seed."""
    gpu = get_gpu("h100-sxm")
    for passes in ("fwd", "bwd", "fwd+bwd"):
        wl = workload(SHAPES[0]).replace(passes=passes, dropout=0.25)
        spec = ports.port_launches("flash2", wl, plan_of("flash2", wl, gpu))
        assert spec.tensors["dropout_seed"].role == "const"
        takes_seed = [l for l in spec.all_launches if l.kernel in ("flash2_fwd", "flash2_bwd")]
        assert len(takes_seed) == (1 if passes == "fwd" else 2)
        for launch in takes_seed:
            seed, threshold, keep = launch.args[-3:]
            assert seed == "dropout_seed" and threshold.value == 1 << 22
            assert keep.value == float(np.float32(1 / 0.75))
        assert all(l.defines["ATTN_DROPOUT"] == 1 for l in spec.all_launches)
        plain = ports.port_launches("flash2", wl.replace(dropout=0.0), plan_of("flash2", wl, gpu))
        assert "dropout_seed" not in plain.tensors
        assert all("ATTN_DROPOUT" not in l.defines for l in plain.all_launches)
        for launch in plain.all_launches:
            if launch.kernel in ("flash2_fwd", "flash2_bwd"):
                assert launch.args[-3] is None and launch.args[-2].value == 0


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
