"""The differential attention port's declaration (algorithms/ports/diff.py), checked on the CPU:
its score slices, refusals, λ values, device reference and the HBM bytes its loops move.
"""

from types import SimpleNamespace

import numpy as np
import pytest

from algorithms import ports
from attnsim import gpu as backend
from attnsim.simulate import simulate
from hwmodels import get_gpu
from port_cases import PORT_CASES, workload
from port_plans import plan_of


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
    assert plan.scale == 1 / np.sqrt(32)             # the paper's 1/√d, d = head_dim / 2
    assert args == {"n_q": 200, "n_k": 333, "heads": 3, "scale": plan.scale,
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


class _ArrayTensor(np.ndarray):
    """The few torch.Tensor methods torch_diff_attention calls, on a float64 ndarray."""

    def float(self):
        return self

    def view(self, *shape):
        return np.asarray(self).reshape(shape).view(_ArrayTensor)

    def pow(self, exponent):
        return self ** exponent

    def mean(self, dim=None, keepdim=False):
        return np.asarray(self).mean(axis=dim, keepdims=keepdim).view(_ArrayTensor)

    def to(self, dtype):
        return self


def _array_sdpa(q, k, v, is_causal=False, scale=None):
    """F.scaled_dot_product_attention's definition: softmax(scale q kᵀ) v, causal top-left
    aligned (key j visible to query i when j <= i), float64."""
    logits = np.asarray(q) @ np.asarray(k).swapaxes(-1, -2) * scale
    if is_causal:
        n_q, n_k = logits.shape[-2:]
        logits = np.where(np.tril(np.ones((n_q, n_k), bool)), logits, -np.inf)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    return (p / p.sum(-1, keepdims=True) @ np.asarray(v)).view(_ArrayTensor)


ARRAY_TORCH = SimpleNamespace(nn=SimpleNamespace(functional=SimpleNamespace(
    scaled_dot_product_attention=_array_sdpa)),
    rsqrt=lambda x: (1.0 / np.sqrt(np.asarray(x))).view(_ArrayTensor))


@pytest.mark.parametrize("framework", ["arrays", "torch"])
def test_diff_torch_formulation_matches_the_reference(framework):
    """The SDPA baseline gpu-check times for diff computes diff: its formulation (the split,
    λ, RMSNorm, (1 − λ_init), the paper's scale) run on the CPU with PyTorch when it is
    installed, and always on a float64 stand-in for the torch calls it makes."""
    from algorithms import diff
    from attnsim import make_inputs
    from attnsim.reference import attention_reference, relative_error
    wl = workload((2, 3, 3, 64, 64, 64, True)).replace(dtype="fp32")
    plan = plan_of("diff", wl, get_gpu("h100-sxm"))
    inputs = make_inputs(wl, seed=5)
    if framework == "torch":
        torch = pytest.importorskip("torch")
        wrap = torch.from_numpy
        lam = torch.tensor(diff.lambdas(wl, plan), dtype=torch.float32)
    else:
        torch, wrap = ARRAY_TORCH, lambda x: np.asarray(x, np.float64).view(_ArrayTensor)
        lam = wrap(diff.lambdas(wl, plan))
    out = backend.torch_diff_attention(torch, *(wrap(getattr(inputs, n)) for n in ("q", "k", "v")),
                                       lam, 1 - plan.lambda_init, diff.RMS_EPS, True, plan.scale)
    exact = diff.reference(wl, plan, inputs, attention_reference)
    assert relative_error(np.asarray(out), exact) < (1e-5 if framework == "torch" else 1e-12)


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
    """attnsim.port_configs lists what the plans give the ports over the A100/H100 sweep
    (compiled by .ci/compile_cuda.sh): every .cu source appears, with its tile defines."""
    from attnsim import port_configs
    configs = port_configs.configs()
    sources = {s for s, _ in configs}
    assert sources == {p.name for p in ports.CUDA_DIR.glob("*.cu")}
    assert len(configs) == len(set(configs))
    for source, defines in configs:
        assert all(d.startswith("-D") and "=" in d for d in defines.split())
