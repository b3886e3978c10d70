"""The GPU ports declared as data (algorithms/ports/), checked on the CPU.

Launch grids equal the CTAs the simulator's Recorder counts, tile defines equal the plan's
tiles, shared memory fits the GPU, every declared kernel exists in its .cu file with the
argument list the declaration passes, the sources compile with nvcc (when present), and
gpu-check without a device says it skipped and exits 0.
"""
import json
import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from algorithms import ports
from algorithms.registry import get_algorithm
from attnsim import gpu as backend
from attnsim import gpu_check
from attnsim.simulate import simulate
from hwmodels.gpus import GPUS
from hwmodels import get_gpu
from attnsim import make_inputs
from port_cases import (BF16_CASES, DENSE_PORTS, FEATURE_SHAPES, GPU_MODELS, PORT_CASES, SHAPES,
                        workload)
from port_plans import (NVCC, compile_as_the_backend_sends_it, expected_defines, plan_of,
                        plan_or_skip)


def test_flash2_warp_row_tiles():
    """Two 16-row tiles per warp when S and O fragments (B_c/2 + d/2 floats per tile and
    thread) fit 192 registers: FA-2's 4 warps for 128 x 128 at d = 64; one otherwise."""
    assert ports.warp_m_tiles(128, 128, 64) == 2          # 2 (64 + 32) = 192
    assert ports.warp_m_tiles(128, 128, 128) == 1         # 2 (64 + 64) = 256
    assert ports.warp_m_tiles(128, 64, 128) == 1          # 192, but d = 128 spills
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


def test_every_port_case_is_planned_on_every_gpu_model():
    """plan_or_skip skips a case the simulator refuses to plan; a case refused everywhere
    would never run (as a 257 x 129 bigbird case once did: BigBird is self-attention only)."""
    refused = []
    for case in PORT_CASES:
        for gpu_name in GPU_MODELS:
            try:
                plan_of(case.name, case.workload, get_gpu(gpu_name), case.options)
            except ValueError as err:
                refused.append(f"{case.id} on {gpu_name}: {err}")
    assert refused == []



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


def test_every_kernel_is_in_every_build_of_its_source():
    """No extern "C" kernel sits inside a preprocessor conditional: every build of a source
    (bf16, dropout, any tiles) has the same kernels, which a RawModule is looked up by and
    the emulated CuPy lists from the text (a kernel left out of the dropout builds once
    broke those there). Conditionals still select code inside the kernels."""
    for path in sorted(ports.CUDA_DIR.glob("*.cu")):
        depth, opened = 0, []
        for no, line in enumerate(path.read_text().splitlines(), 1):
            word = line.strip().split(" ", 1)[0]
            if word in ("#if", "#ifdef", "#ifndef"):
                depth += 1
                opened.append(no)
            elif word == "#endif":
                depth -= 1
                opened.pop()
            elif line.startswith('extern "C"'):
                assert depth == 0, f"{path.name}:{no}: a kernel inside the #if of line {opened}"
        assert depth == 0, path.name
    assert "ring_step" in kernel_signatures("flash2_fwd.cu")


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




@pytest.mark.skipif(NVCC is None, reason="nvcc not on PATH")
def test_flash2_source_as_the_backend_sends_it_compiles_for_sm80(tmp_path):
    """The text NVRTC would get (header inlined) compiles, warnings as errors, with the tiles
    of an A100 plan and a head_dim the MMA k-step pads (40)."""
    wl = workload((1, 2, 2, 97, 97, 40, True))
    (launch,) = ports.port_launches("flash2", wl, plan_of("flash2", wl, get_gpu("a100-40gb"))).launches
    done = compile_as_the_backend_sends_it(tmp_path, launch, "sm_80")
    assert done.returncode == 0, done.stderr


# ---- the backend without a device ------------------------------------------------------------

def test_gpu_check_without_a_device_skips_with_exit_0(monkeypatch, capsys):
    from attnsim.cli import main
    monkeypatch.setattr(backend, "gpu_available", lambda: (False, "no CUDA device (test)"))
    assert main(["gpu-check"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out == ["attnsim gpu-check: GPU checks skipped: no CUDA device (test)"]
    assert gpu_check.gpu_section_rows() == []
    from reports.gpu_check import gpu_check_section
    assert gpu_check_section(get_gpu("h100")) is None


def test_gpu_check_without_a_device_answers_in_the_format_and_file_asked(monkeypatch, capsys,
                                                                         tmp_path):
    import json
    from attnsim.cli import main
    monkeypatch.setattr(backend, "gpu_available", lambda: (False, "no CUDA device (test)"))
    assert main(["gpu-check", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"skipped": "no CUDA device (test)"}
    out = tmp_path / "check.json"
    assert main(["gpu-check", "--format", "json", "-o", str(out)]) == 0
    assert json.loads(out.read_text()) == {"skipped": "no CUDA device (test)"}


@pytest.mark.parametrize("args,message", [(["--hw", "nosuch"], "unknown GPU 'nosuch'"),
                                          (["--pass", "bwd", "local"],
                                           "--pass bwd is not available for it")])
def test_gpu_check_refuses_bad_flags_even_without_a_device(monkeypatch, capsys, args, message):
    """A CI job with a typo must fail on a runner without a GPU too."""
    from attnsim.cli import main
    monkeypatch.setattr(backend, "gpu_available", lambda: (False, "no CUDA device (test)"))
    assert main(["gpu-check", *args]) == 2
    assert message in capsys.readouterr().err


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


def test_gpu_check_section_when_a_device_is_present(monkeypatch):
    from reports.document import Document
    row = {key: None for key, _ in gpu_check.COLUMNS}
    row.update(algorithm="flash2", seq=4096, measured_s=2e-3, predicted_s=1.5e-3, ratio=0.75)
    monkeypatch.setattr(backend, "gpu_available", lambda: (True, "test device"))
    monkeypatch.setattr(backend, "sdpa_available", lambda: (False, "no torch (test)"))
    monkeypatch.setattr(gpu_check, "check_rows", lambda *a, **k: [row])
    from reports.gpu_check import gpu_check_section
    section, data = gpu_check_section(get_gpu("h100"))
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
