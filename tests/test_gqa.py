"""gqa: MHA/GQA/MQA prefill and split-KV decode against FlashAttention-2, the float64
reference and closed forms derived here from the shapes and the plan."""
import math

import numpy as np
import pytest

from algorithms.base import PlanError
from attnsim.inputs import make_inputs
from attnsim.models import get_model
from attnsim.reference import attention_reference, relative_error
from attnsim.simulate import simulate
from attnsim.workload import Workload
from hwmodels import get_gpu
from hwmodels.timing import TimingOptions

H100 = get_gpu("h100")
TOL = 2e-6          # float32 online softmax vs float64, relative Frobenius error


def cdiv(a, b):
    return -(-a // b)


@pytest.mark.parametrize("causal", [False, True])
def test_mha_equals_flash2_numerically_and_in_counts(causal):
    wl = Workload(batch=2, heads=3, seq_q=150, seq_k=203, head_dim=40, causal=causal)
    a, b = simulate("flash2", wl, H100), simulate("gqa", wl, H100)
    assert b.counts == a.counts
    assert b.plan["group"] == 1 and b.plan["block_q"] == a.plan["block_q"]
    assert relative_error(b.outputs["o"], a.outputs["o"]) < 1e-6   # same math, op order differs
    assert b.error_vs_reference < TOL


@pytest.mark.parametrize("causal", [False, True])
def test_mqa_equals_flash2_with_one_kv_head(causal):
    wl = Workload(batch=1, heads=4, kv_heads=1, seq_q=170, head_dim=32, causal=causal)
    a, b = simulate("flash2", wl, H100), simulate("gqa", wl, H100)
    assert b.counts == a.counts
    assert relative_error(b.outputs["o"], a.outputs["o"]) < 1e-6   # same math, op order differs
    packed = simulate("gqa", wl, H100, options={"pack_group": True})
    assert relative_error(packed.outputs["o"], a.outputs["o"]) < TOL
    assert packed.counts["matmul_flops"] == a.counts["matmul_flops"]
    # K/V read once per group instead of once per query head
    assert packed.counts["hbm_read_bytes"] < a.counts["hbm_read_bytes"]


def test_packed_prefill_traffic_closed_form():
    b, h, g_kv, n, d = 2, 8, 2, 333, 64
    wl = Workload(batch=b, heads=h, kv_heads=g_kv, seq_q=n, head_dim=d)
    r = simulate("gqa", wl, H100, options={"pack_group": True}, compute=False)
    p, e = r.plan, 2
    assert p["group"] == h // g_kv
    t_r = cdiv(n, p["block_q"])
    assert r.counts["hbm_read_bytes"] == b * (h * n * d * e + g_kv * t_r * 2 * n * d * e)
    assert r.counts["hbm_write_bytes"] == b * h * n * (d * e + 4)
    assert r.counts["matmul_flops"] == 4 * b * h * n * n * d
    assert r.counts["ctas"] == b * g_kv * t_r
    # ALU ops (no mask): each query row's max over its n keys plus one max with m per key
    # tile, T_c = ⌈n/B_c⌉ tiles; conversions (fp16): P (n per row) and O (d per row)
    t_c = cdiv(n, p["block_k"])
    assert r.counts["alu_ops"] == b * h * n * (n + t_c)
    assert r.counts["convert_ops"] == b * h * n * (n + d)


@pytest.mark.parametrize("kv_heads,new,causal,mag", [(2, 1, False, 1.0), (1, 3, True, 1.0),
                                                     (4, 2, True, 30.0), (2, 5, False, 30.0)])
def test_decode_matches_reference(kv_heads, new, causal, mag):
    wl = Workload(batch=2, heads=4, kv_heads=kv_heads, seq_q=new, seq_k=517, head_dim=48,
                  causal=causal, decode=True)
    inputs = make_inputs(wl, seed=3, magnitude=mag)
    r = simulate("gqa", wl, H100, inputs=inputs)
    ref, lse = attention_reference(inputs.q, inputs.k, inputs.v, causal=causal, scale=wl.scale)
    assert r.plan["splits"] > 1            # the split-KV path with its combine kernel
    # float32 error grows with the logits: judge against FlashAttention-2 on the same inputs
    baseline = simulate("flash2", wl.replace(decode=False), H100, inputs=inputs)
    assert relative_error(r.outputs["o"], ref) <= 2 * baseline.error_vs_reference + TOL
    np.testing.assert_allclose(r.outputs["lse"], lse, rtol=1e-5, atol=1e-4)


def test_split_kv_equals_unsplit():
    wl = Workload(batch=1, heads=8, kv_heads=2, seq_q=2, seq_k=1000, head_dim=64, decode=True,
                  causal=True)
    inputs = make_inputs(wl, seed=1)
    one = simulate("gqa", wl, H100, inputs=inputs, options={"splits": 1})
    many = simulate("gqa", wl, H100, inputs=inputs, options={"splits": 8})
    assert one.plan["splits"] == 1 and many.plan["splits"] == 8
    np.testing.assert_allclose(many.outputs["o"], one.outputs["o"], rtol=0, atol=2e-6)
    np.testing.assert_allclose(many.outputs["lse"], one.outputs["lse"], rtol=1e-6, atol=1e-5)
    assert [k.name for k in many.kernels] == ["gqa_decode", "splitkv_combine"]
    assert [k.name for k in one.kernels] == ["gqa_decode"]


def test_a_grid_that_almost_fills_the_sms_is_not_split():
    """flash-attn's num_splits_heuristic: no split once the unsplit grid has 80% of the SMs'
    worth of CTAs (a split's partials and combine would buy only a fuller last wave); below
    that, the wave-efficiency rule. On the A100's 108 SMs, 256 CTAs fill 2.37 waves (the
    last 37% full, 2 splits would fill 95%) and stay unsplit; 64 CTAs are split."""
    from algorithms.kernels.splitkv import ALMOST_FULL, choose_splits
    assert ALMOST_FULL == 0.8
    assert choose_splits(256, 64, 108) == 1 and choose_splits(87, 64, 108) == 1
    assert choose_splits(86, 64, 108) > 1 and choose_splits(64, 64, 108) > 1
    # MLA's absorbed path on a prefill whose grid fills the A100: one kernel, no combine
    wl = Workload(batch=2, heads=16, seq_q=512, head_dim=128)
    r = simulate("mla", wl, get_gpu("a100"), compute=False)
    assert r.plan["splits"] == 1 and "splitkv_combine" not in [k.name for k in r.kernels]


def test_the_combine_spreads_each_heads_rows_over_ctas():
    """flash-attn's combine merges a few rows a CTA ("kBlockM ... as small as possible for
    more parallelism": 4 rows at a value width that is a multiple of 128, 8 of 64, else 16),
    so a step of several new tokens spreads each head's rows over CTAs instead of one CTA
    walking them all; the traffic is the same."""
    from algorithms.kernels.splitkv import combine_rows
    assert (combine_rows(128), combine_rows(512), combine_rows(64), combine_rows(40)) == \
        (4, 4, 8, 16)
    wl = Workload(batch=2, heads=4, kv_heads=2, seq_q=9, seq_k=300, head_dim=64, decode=True,
                  causal=True)
    r = simulate("gqa", wl, H100, options={"splits": 2}, compute=False)
    combine = next(k for k in r.kernels if k.name == "splitkv_combine")
    assert combine.ctas == 2 * 4 * 2                    # B x H x ceil(9 / 8)
    one = Workload(batch=2, heads=4, kv_heads=2, seq_q=1, seq_k=300, head_dim=64, decode=True)
    r1 = simulate("gqa", one, H100, options={"splits": 2}, compute=False)
    assert next(k for k in r1.kernels if k.name == "splitkv_combine").ctas == 2 * 4


@pytest.mark.parametrize("splits", [1, 3])
def test_decode_traffic_closed_form(splits):
    b, h, g_kv, nq, n, d, e = 3, 8, 2, 1, 1000, 128, 2
    wl = Workload(batch=b, heads=h, kv_heads=g_kv, seq_q=nq, seq_k=n, head_dim=d, decode=True)
    r = simulate("gqa", wl, H100, options={"splits": splits}, compute=False)
    s, g = r.plan["splits"], h // g_kv
    assert s == splits
    out_b = 4 if s > 1 else e
    reads = b * g_kv * (s * g * nq * d * e + 2 * n * d * e)
    writes = b * g_kv * s * g * nq * (d * out_b + 4)
    if s > 1:
        reads += b * h * s * nq * (d + 1) * 4
        writes += b * h * nq * (d * e + 4)
    assert r.counts["hbm_read_bytes"] == reads
    assert r.counts["hbm_write_bytes"] == writes
    assert r.counts["matmul_flops"] == 4 * b * h * nq * n * d
    # ALU: a row's max over the n keys + a max with m per key tile (the chunks are whole
    # tiles: ⌈n/B_c⌉ in all), + the combine's max over the S partials of each row.
    # Conversions (fp16): P, and O once — by the attention kernel unsplit, by the combine
    # when split (the partials stay fp32)
    alu = b * h * nq * (n + cdiv(n, r.plan["block_k"]))
    if s > 1:
        alu += b * h * nq * s
    assert r.counts["alu_ops"] == alu
    assert r.counts["convert_ops"] == b * h * nq * (n + d)


def test_decode_count_only_equals_executed():
    wl = Workload(batch=2, heads=6, kv_heads=3, seq_q=2, seq_k=300, head_dim=32, decode=True,
                  causal=True)
    assert (simulate("gqa", wl, H100).counts ==
            simulate("gqa", wl, H100, compute=False).counts)


def test_auto_splits_fill_the_sms():
    wl = Workload(batch=1, heads=64, kv_heads=8, seq_q=1, seq_k=32768, head_dim=128,
                  decode=True)
    r = simulate("gqa", wl, H100, compute=False)
    ctas = r.kernels[0].ctas
    assert ctas == 8 * r.plan["splits"]
    assert ctas / (math.ceil(ctas / H100.sm_count) * H100.sm_count) >= 0.85


def test_decode_growth_is_linear_and_prefill_quadratic():
    seqs = [4096, 8192, 16384, 32768, 65536]
    dec = [simulate("gqa", Workload(heads=32, kv_heads=8, seq_q=1, seq_k=n, head_dim=128,
                                    decode=True), H100, compute=False).hbm_bytes for n in seqs]
    pre = [simulate("gqa", Workload(heads=4, kv_heads=1, seq_q=n, head_dim=64), H100,
                    options={"pack_group": True}, compute=False).hbm_bytes for n in seqs]
    slope_dec = np.polyfit(np.log(seqs), np.log(dec), 1)[0]
    slope_pre = np.polyfit(np.log(seqs), np.log(pre), 1)[0]
    assert abs(slope_dec - 1.0) < 0.05     # Θ(G N d): the cache, once per KV head
    assert abs(slope_pre - 2.0) < 0.1      # Θ(N² d / B_r)


def test_decode_info_and_kv_cache_in_result():
    model = get_model("llama-3-8b")
    wl = Workload(batch=4, heads=32, kv_heads=8, seq_q=1, seq_k=8192, head_dim=128,
                  decode=True, model=model)
    r = simulate("gqa", wl, H100, compute=False)
    kv, dec = r.extra["kv_cache"], r.extra["decode"]
    assert kv["bytes_per_token"] == 2 * 8 * 128 * 32 * 2
    assert kv["bytes_total"] == kv["bytes_per_token"] * 8192 * 4
    assert math.isclose(dec["attention_only_s"], 32 * r.time.predicted_s)
    # batch 4: memory-bound, at the copy benchmark's bandwidth; the 4 tokens look up 4 rows
    # of the input embedding table, not all 128,256
    params = model.params - (128256 - 4) * 4096
    assert dec["weights_params_per_step"] == params and dec["weights_params_in_attention"] == 0
    weights_s = params * 2 / (H100.hbm_bandwidth_bytes_per_s * H100.hbm_achievable_fraction)
    assert math.isclose(dec["weights_s"], weights_s)
    assert math.isclose(dec["time_per_token_s"], dec["attention_only_s"] + weights_s)
    # bytes and FLOPs grow with the batch together: at a fixed split count the pipes'
    # compute/memory ratio does not move (the auto split count itself depends on the batch),
    # and the steps' instruction latencies, which the CTAs an SM holds at once wait out
    # together, weigh less as more CTAs share an SM: the ratio does not grow with the batch
    def ratio(batch, timing=TimingOptions()):
        t = simulate("gqa", wl.replace(batch=batch), H100, compute=False, options={"splits": 4},
                     timing=timing).time
        return sum(k.compute_s for k in t.kernels) / sum(k.memory_s for k in t.kernels)
    # (to 5%, not exactly: the graded L2 hit fraction moves with the batch's working set, and
    # the timing model's latency-bound memory with the CTAs per SM)
    pipes = TimingOptions(step_latency=False)
    assert math.isclose(ratio(8, pipes), ratio(4, pipes), rel_tol=0.05)
    assert ratio(8) <= 1.05 * ratio(4)
    assert dec["attention_memory_bound_at_any_batch"]


def test_bad_parameters_raise_clear_errors():
    wl = Workload(heads=8, kv_heads=2, seq_q=1, seq_k=256, head_dim=64, decode=True)
    with pytest.raises(PlanError, match="--splits 9 exceeds"):
        simulate("gqa", wl, H100, options={"splits": 9}, compute=False)
    with pytest.raises(PlanError, match="applies to decode"):
        simulate("gqa", wl.replace(decode=False), H100, options={"splits": 2}, compute=False)
    with pytest.raises(PlanError, match="run mla|attnsim run mla"):
        simulate("gqa", wl.replace(model=get_model("deepseek-v2")), H100, compute=False)
    with pytest.raises(ValueError, match="multiple of kv_heads"):
        Workload(heads=6, kv_heads=4)


def test_decode_counts_follow_the_bound():
    ratios = []
    for n in (8192, 32768, 131072):
        r = simulate("gqa", Workload(heads=32, kv_heads=8, seq_q=1, seq_k=n, head_dim=128,
                                     decode=True), H100, compute=False)
        ratios.append(r.io_ratio)
    # K and V (2 G N d e) against the bound's G N d e: the ratio tends to 2, the constant
    assert all(1.9 < x < 2.2 for x in ratios)


def test_kv_rereads_need_only_the_tiles_in_flight_when_a_kv_heads_ctas_run_together():
    """The CTAs that share a KV head launch together; when they are all resident at once they
    walk its K/V in step, so L2 must hold only the tiles in flight (the working set does not
    grow with the cache); when a KV head's CTAs span several waves, a re-read comes after
    other heads' K/V have passed through L2, and every KV head in flight must stay there (the
    working set grows with N)."""
    def working_set(wl):
        run = simulate("gqa", wl, H100, compute=False, options={"pack_group": 1})
        return next(k for k in run.kernels if k.name.startswith("gqa")).l2_working_set_bytes

    def decode(n):       # 8 query heads a KV head, each its own CTA: 8 CTAs read each K/V
        return Workload(batch=8, heads=64, kv_heads=8, seq_q=1, seq_k=n, head_dim=128,
                        decode=True)

    assert working_set(decode(8192)) == working_set(decode(65536))

    def prefill(n):      # 8 x N/128 CTAs a KV head: more than the SMs hold
        return Workload(batch=1, heads=16, kv_heads=2, seq_q=n, head_dim=128)

    assert working_set(prefill(65536)) == 2 * working_set(prefill(32768))
