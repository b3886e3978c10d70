"""mla: the absorbed and up-projected decode paths against each other, the float64 reference
over the up-projected K/V, and their traffic/FLOP closed forms (derived here)."""
import math

import numpy as np
import pytest

from algorithms import mla
from algorithms.base import PlanError
from attnsim.inputs import make_inputs
from attnsim.models import get_model
from attnsim.reference import attention_reference, relative_error
from attnsim.simulate import simulate
from attnsim.workload import Workload
from hwmodels import get_gpu

H100 = get_gpu("h100")


def cdiv(a, b):
    return -(-a // b)


def gemm_traffic(m, n, k, p, e):
    """(reads, writes, flops) of the tiled GEMM (m x k) @ (k x n) with the plan's tiles."""
    t_m, t_n = cdiv(m, p["gemm_tile_m"]), cdiv(n, p["gemm_tile_n"])
    return (t_n * m * k + t_m * k * n) * e, m * n * e, 2 * m * n * k


def attention_traffic(b, packs, g, nq, n, dk, dv, splits, e, v_in_k, q_heads):
    """(reads, writes) of the split-KV kernels (one query block) + combine."""
    out_b = 4 if splits > 1 else e
    reads = b * packs * (splits * g * nq * dk * e + n * (dk + (0 if v_in_k else dv)) * e)
    writes = b * packs * splits * g * nq * (dv * out_b + 4)
    if splits > 1:
        reads += b * q_heads * splits * nq * (dv + 1) * 4
        writes += b * q_heads * nq * (dv * e + 4)
    return reads, writes


@pytest.mark.parametrize("causal,new", [(False, 1), (True, 3)])
def test_both_paths_give_the_reference_output(causal, new):
    wl = Workload(batch=2, heads=4, seq_q=new, seq_k=301, head_dim=32, decode=True,
                  causal=causal)
    inputs = make_inputs(wl, seed=5)
    absorbed = simulate("mla", wl, H100, inputs=inputs)
    up = simulate("mla", wl, H100, inputs=inputs, options={"path": "upproject"})
    plan = mla.plan(wl, H100, H100.smem_bytes_per_block)
    q, k, v = mla.up_projected(wl, mla.mla_inputs(wl, plan, inputs))
    ref, _ = attention_reference(q, k, v, causal=causal, scale=plan.scale)
    assert plan.scale == pytest.approx((32 + 64) ** -0.5)
    assert relative_error(absorbed.outputs["o_mla"], ref) < 2e-6
    assert relative_error(up.outputs["o_mla"], ref) < 2e-6
    assert relative_error(absorbed.outputs["o_mla"], up.outputs["o_mla"]) < 2e-6
    # what an executed run reports is that same comparison
    assert absorbed.error_vs_reference == pytest.approx(
        relative_error(absorbed.outputs["o_mla"], ref), rel=1e-9)
    assert up.error_vs_reference < 2e-6 and up.error_vs_exact is None


@pytest.mark.parametrize("splits", [1, 3])
def test_absorbed_traffic_closed_form(splits):
    b, h, nq, n, d, d_c, d_r, e = 2, 16, 1, 700, 128, 512, 64, 2
    wl = Workload(batch=b, heads=h, seq_q=nq, seq_k=n, head_dim=d, decode=True)
    r = simulate("mla", wl, H100, compute=False, options={"splits": splits})
    p = r.plan
    g, s = p["head_block"], p["splits"]
    assert s == splits and h % g == 0
    q_r, q_w, q_f = gemm_traffic(b * nq, d_c, d, p, e)          # q̃_h = q^C_h W_UK^h
    o_r, o_w, o_f = gemm_traffic(b * nq, d, d_c, p, e)          # o_h = ô_h W_UV^hᵀ
    a_r, a_w = attention_traffic(b, h // g, g, nq, n, d_c + d_r, d_c, s, e, True, h)
    assert r.counts["hbm_read_bytes"] == h * (q_r + o_r) + a_r
    assert r.counts["hbm_write_bytes"] == h * (q_w + o_w) + a_w
    assert r.counts["matmul_flops"] == h * (q_f + o_f) + 2 * b * h * nq * n * (2 * d_c + d_r)
    # the latent attention's ALU ops: per head and row, the max over the n keys and one max
    # with m per key tile (⌈n/B_c⌉ in all: the chunks are whole tiles); conversions (fp16):
    # P (n per row), and ô (d_c) when unsplit — split, the combine converts it and spends
    # one max per partial
    attn = {k.name: k.counts() for k in r.kernels}
    assert attn["mla_latent_attn"]["alu_ops"] == b * h * nq * (n + cdiv(n, p["block_k"]))
    assert attn["mla_latent_attn"]["convert_ops"] == b * h * nq * (n + (d_c if s == 1 else 0))
    if s > 1:
        assert attn["splitkv_combine"]["alu_ops"] == b * h * nq * s
        assert attn["splitkv_combine"]["convert_ops"] == b * h * nq * d_c


@pytest.mark.parametrize("splits", [1, 2])
def test_upproject_traffic_closed_form(splits):
    b, h, nq, n, d, d_c, d_r, e = 2, 4, 1, 300, 64, 512, 64, 2
    wl = Workload(batch=b, heads=h, seq_q=nq, seq_k=n, head_dim=d, decode=True)
    r = simulate("mla", wl, H100, compute=False, options={"path": "upproject", "splits": splits})
    p = r.plan
    s = p["splits"]
    u_r, u_w, u_f = gemm_traffic(n, 2 * h * d, d_c, p, e)       # [K^C | V] = c_KV W_UKVᵀ
    a_r, a_w = attention_traffic(b, h, 1, nq, n, d + d_r, d, s, e, False, h)
    assert r.counts["hbm_read_bytes"] == b * u_r + a_r
    assert r.counts["hbm_write_bytes"] == b * u_w + a_w
    assert r.counts["matmul_flops"] == b * u_f + 2 * b * h * nq * n * (2 * d + d_r)


def test_paths_compared_in_info_and_count_only_equals_executed():
    wl = Workload(batch=1, heads=8, seq_q=1, seq_k=260, head_dim=64, decode=True)
    for path in mla.PATHS:
        run = simulate("mla", wl, H100, options={"path": path})
        assert simulate("mla", wl, H100, compute=False, options={"path": path}).counts == run.counts
        info = run.extra["mla"]
        assert info[path]["hbm_bytes"] == run.hbm_bytes
        assert info[path]["matmul_flops"] == run.counts["matmul_flops"]
    # at decode the up-projection rebuilds K and V of the whole cache: far more of both
    assert info["hbm_bytes_upproject_over_absorbed"] > 1
    assert info["matmul_flops_upproject_over_absorbed"] > 1


def test_deepseek_v2_preset_decode():
    model = get_model("deepseek-v2")
    wl = Workload(batch=1, heads=128, kv_heads=128, seq_q=1, seq_k=32768, head_dim=128,
                  decode=True, model=model)
    r = simulate("mla", wl, H100, compute=False)
    assert r.plan["kv_lora_rank"] == 512 and r.plan["rope_dim"] == 64
    assert r.extra["kv_cache"]["bytes_per_token"] == (512 + 64) * 60 * 2
    assert r.extra["decode"]["query_rows_per_kv_load"] == 128
    # the latent is read once per head block: (H / g) (d_c + d_h^R) N e bytes at least
    assert r.counts["hbm_read_bytes"] >= 128 // r.plan["head_block"] * 576 * 32768 * 2


@pytest.mark.parametrize("path", ["absorbed", "upproject"])
def test_decode_weights_leave_out_what_the_attention_reads(path):
    """W_UK and W_UV (d_h x d_c per head, in the activated parameters) are read by the
    simulated kernels of both paths; the per-token weights term must not read them again."""
    model = get_model("deepseek-v2")
    wl = Workload(batch=1, heads=128, kv_heads=128, seq_q=1, seq_k=4096, head_dim=128,
                  decode=True, model=model)
    r = simulate("mla", wl, H100, compute=False, options={"path": path})
    dec = r.extra["decode"]
    in_attention = 60 * 2 * 128 * 128 * 512
    assert dec["weights_params_in_attention"] == in_attention
    assert dec["weights_params_per_step"] == 21_000_000_000 - in_attention
    bandwidth = H100.hbm_bandwidth_bytes_per_s * H100.hbm_achievable_fraction
    assert math.isclose(dec["weights_s"], dec["weights_params_per_step"] * 2 / bandwidth)


def test_bad_parameters_raise_clear_errors():
    wl = Workload(heads=4, seq_q=1, seq_k=256, head_dim=64, decode=True)
    with pytest.raises(PlanError, match="not MLA"):
        simulate("mla", wl.replace(model=get_model("llama-2-7b"), heads=32, kv_heads=32,
                                    head_dim=128), H100, compute=False)
    with pytest.raises(PlanError, match="conflicts with deepseek-v2"):
        simulate("mla", wl.replace(model=get_model("deepseek-v2"), heads=128, head_dim=128),
                 H100, compute=False, options={"kv_lora_rank": 256})
    with pytest.raises(PlanError, match="must be one of"):
        simulate("mla", wl, H100, compute=False, options={"path": "sideways"})
    with pytest.raises(PlanError, match="exceeds"):
        simulate("mla", wl, H100, compute=False, options={"splits": 99})


def test_decode_traffic_grows_linearly_with_the_cache():
    seqs = [65536, 131072, 262144, 524288, 1048576]   # large N: the weights' constant fades
    for path in mla.PATHS:
        hbm, bound = [], []
        for n in seqs:
            r = simulate("mla", Workload(heads=8, seq_q=1, seq_k=n, head_dim=64, decode=True),
                         H100, compute=False, options={"path": path})
            hbm.append(r.hbm_bytes)
            bound.append(r.io_bound_bytes)
        slope = np.polyfit(np.log(seqs), np.log(hbm), 1)[0]
        assert abs(slope - 1.0) < 0.05, path
        ratios = np.array(hbm) / np.array(bound)
        assert ratios.min() >= 1 and ratios.max() / ratios.min() < 1.2, path


@pytest.mark.parametrize("gpu_name, heads", [("h100", 128), ("h100", 16), ("a100-80gb", 16)])
def test_absorbed_plan_makes_room_for_the_probability_exchange(gpu_name, heads):
    """d_v = 512 is split over 4 warps a row tile (128 fp32 columns each), which pass P and
    the row statistics through shared memory: the plan counts those buffers, and B_c splits
    into 4 slices of whole 16-key steps."""
    gpu = get_gpu(gpu_name)
    wl = Workload(batch=4, heads=heads, seq_q=1, seq_k=4096, head_dim=128, decode=True)
    p = mla.plan(wl, gpu, gpu.smem_bytes_per_block)
    rows, e = p.head_block * p.block_q, 2
    q_k = (rows + p.block_k) * 576 * e
    exchange = rows * p.block_k // 4 * e + 2 * rows * 4 * 4
    assert p.smem_bytes == q_k + exchange <= gpu.smem_bytes_per_block
    assert p.block_k % 64 == 0
    # without the exchange buffers the A100 would have picked B_c = 128 for 16 heads; the
    # 1.5 KB they need do not fit next to Q (16 x 576) and K (128 x 576)
    if gpu_name == "a100-80gb":
        assert (16 + 128) * 576 * e + 16 * 32 * e + 2 * 16 * 4 * 4 > gpu.smem_bytes_per_block
