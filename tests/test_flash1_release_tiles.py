"""``flash1 --tiles release``: FlashAttention (v1) on the tiles and the HBM traffic of its
release (flash-attention v1, fmha_api.cpp, fmha_fwd_hdim*.cu, fmha_fprop_kernel_1xN.h,
fmha_dgrad_kernel_1xN_loop.h, fmha_bwd_launch_template.h): 128 or 256 keys per K/V block, Q
in 16-row steps, an fp32 output accumulator (o_tmp) and one log-sum-exp per row written and
read back between K/V blocks, nothing initialized in HBM; in the backward D stored at the
first K/V block and dQ in an fp32 buffer (one CTA a head) or added with fp32 atomics between
a D kernel and a conversion (a CTA per K/V block).

The tile rule is checked against the release's dispatch written out here; the HBM bytes of
both passes against closed forms derived per 16-row step (a step reads Q at every K/V block it
sees, o_tmp and lse at every one after its first, and writes lse at each, o_tmp before its
last and O at its last), not against the module's loop; the outputs and gradients against
a float64 softmax(Q Kᵀ τ) V and its gradients written in this file; the release's limits
against the CLI.
"""
import numpy as np
import pytest

from algorithms.flash1.release import key_block
from attnsim import Workload, make_inputs, simulate
from attnsim.cli import main

STEP = 16


@pytest.mark.parametrize("d, seq_k, block", [
    (64, 4096, 256), (64, 129, 256),     # d <= 64: 256 keys once they exceed 128
    (64, 128, 128), (32, 100, 128),      # keys <= 128: the 128-key kernel
    (16, 1000, 256), (128, 4096, 128),   # d > 64: always 128
    (72, 8192, 128),
])
def test_key_block_follows_the_release_dispatch(d, seq_k, block):
    assert key_block(d, seq_k) == block


def visits_per_step(nq, nk, block_k, causal):
    """K/V blocks each 16-row step sees: those whose first key its last row sees (bottom-
    right causal alignment), and at least the first."""
    out = []
    for r0 in range(0, nq, STEP):
        r1 = min(r0 + STEP, nq)
        starts = range(0, nk, block_k)
        seen = [c0 for c0 in starts if not causal or c0 <= r1 - 1 + nk - nq]
        out.append((r1 - r0, max(1, len(seen))))
    return out


def release_forward_bytes(nq, nk, d, e, causal):
    """(HBM reads, HBM writes) of one head: K and V once; per step and K/V block seen, Q;
    after the first, o_tmp (fp32) and lse back; lse out at each, o_tmp before the last, O at
    the last."""
    reads = 2 * nk * d * e
    writes = 0
    for rows, v in visits_per_step(nq, nk, key_block(d, nk), causal):
        reads += v * rows * d * e + (v - 1) * rows * (4 * d + 4)
        writes += v * rows * 4 + (v - 1) * rows * 4 * d + rows * d * e
    return reads, writes


def run(wl, compute=False, grid="head", seed=3):
    return simulate("flash1", wl, "h100", compute=compute,
                    inputs=make_inputs(wl, seed) if compute else None,
                    options={"tiles": "release", "grid": grid})


@pytest.mark.parametrize("nq, nk, d, causal", [
    (300, 300, 64, False), (257, 700, 64, False), (100, 100, 32, False),   # one K/V block
    (300, 300, 64, True), (520, 777, 128, True), (333, 200, 16, True),      # N_q > N_k
])
def test_forward_hbm_bytes_match_the_per_step_closed_form(nq, nk, d, causal):
    wl = Workload(batch=2, heads=3, seq_q=nq, seq_k=nk, head_dim=d, causal=causal)
    r = run(wl)
    assert [k.name for k in r.kernels] == ["flash1_fwd"]     # no init kernel
    reads, writes = release_forward_bytes(nq, nk, d, 2, causal)
    assert r.counts["hbm_read_bytes"] == 6 * reads
    assert r.counts["hbm_write_bytes"] == 6 * writes
    assert r.plan["block_q"] == STEP and r.plan["block_k"] == key_block(d, nk)


@pytest.mark.parametrize("nq, nk, d, causal", [
    (300, 300, 64, False), (520, 777, 128, True), (333, 200, 16, True), (1000, 130, 64, True)])
def test_the_priced_steps_are_the_steps_the_loop_takes(nq, nk, d, causal):
    """What the timing model is told of the forward's work (its 16-row steps for the step
    latency, the rows it finishes for the epilogue and the split-K exchange) is what the
    closed form above walks: with N_q > N_k causal too, where the release visits the rows
    that see no key at the first K/V block."""
    wl = Workload(batch=2, heads=3, seq_q=nq, seq_k=nk, head_dim=d, causal=causal)
    (k,) = run(wl).kernels
    visits = visits_per_step(nq, nk, key_block(d, nk), causal)
    assert k.chain_steps == 6 * sum(v for _, v in visits)
    assert k.epilogue_elements_per_cta == d * sum(rows * v for rows, v in visits)
    bwd = run(wl.replace(passes="bwd"))
    (main,) = [k for k in bwd.kernels if k.name == "flash1_bwd"]
    assert main.chain_steps == 6 * sum(v for _, v in visits_per_step(
        nq, nk, bwd.plan["bwd"]["block_k"], causal))


def test_one_key_block_moves_no_accumulator():
    """Keys within one block: Q, K, V in, O and lse out, nothing else."""
    wl = Workload(batch=1, heads=1, seq_q=200, seq_k=256, head_dim=64)
    r = run(wl)
    assert r.counts["hbm_read_bytes"] == (200 + 2 * 256) * 64 * 2
    assert r.counts["hbm_write_bytes"] == 200 * 64 * 2 + 200 * 4


def reference(q, k, v, causal):
    """softmax(τ Q Kᵀ) V in float64, bottom-right causal mask; rows with no key give 0."""
    q, k, v = (x.astype(np.float64) for x in (q, k, v))
    s = q @ k.T / np.sqrt(q.shape[-1])
    nq, nk = s.shape
    if causal:
        s = np.where(np.arange(nk)[None, :] <= np.arange(nq)[:, None] + nk - nq, s, -np.inf)
    m = s.max(axis=1, keepdims=True)
    p = np.exp(s - np.where(np.isfinite(m), m, 0))
    l = p.sum(axis=1, keepdims=True)
    return np.where(l > 0, p @ v / np.where(l > 0, l, 1), 0.0)


@pytest.mark.parametrize("nq, nk, causal, grid", [
    (300, 557, False, "head"), (300, 300, True, "head"), (400, 333, True, "release"),
    (129, 1000, False, "release"),
])
def test_outputs_match_a_float64_softmax_attention(nq, nk, causal, grid):
    wl = Workload(batch=1, heads=2, seq_q=nq, seq_k=nk, head_dim=64, causal=causal)
    inputs = make_inputs(wl, 11)
    r = simulate("flash1", wl, "h100", inputs=inputs,
                 options={"tiles": "release", "grid": grid})
    for h in range(2):
        ref = reference(inputs.q[0, h], inputs.k[0, h], inputs.v[0, h], causal)
        err = np.abs(r.outputs["o"][0, h] - ref).max() / np.abs(ref).max()
        assert err < 2e-6       # float32 accumulation: about 4e-7 measured


def test_large_logits_stay_finite_and_exact():
    """Logits near 1e3: the saved log-sum-exp carries the max between K/V blocks."""
    wl = Workload(batch=1, heads=1, seq_q=100, seq_k=600, head_dim=32)
    inputs = make_inputs(wl, 4)
    inputs.q[...] *= 40.0
    r = simulate("flash1", wl, "h100", inputs=inputs, options={"tiles": "release"})
    ref = reference(inputs.q[0, 0], inputs.k[0, 0], inputs.v[0, 0], False)
    assert np.isfinite(r.outputs["o"]).all()
    # fp32 logits near 1e3 keep about 3e-6 of relative precision in exp: 3.3e-6 measured
    assert np.abs(r.outputs["o"][0, 0] - ref).max() / np.abs(ref).max() < 1e-5


def test_gradients_match_the_paper_tiles():
    """The release's backward (its tiles, lse for ℓ and m, D stored once, dQ in fp32) gives
    the gradients Algorithm 4 gives on the paper's tiles."""
    wl = Workload(batch=1, heads=2, seq_q=200, seq_k=300, head_dim=32, causal=True,
                  passes="fwd+bwd")
    inputs = make_inputs(wl, 6)
    rel = simulate("flash1", wl, "h100", inputs=inputs, options={"tiles": "release"})
    paper = simulate("flash1", wl, "h100", inputs=inputs)
    assert rel.plan["bwd"]["block_q"] == STEP and rel.plan["bwd"]["block_k"] == 256
    for g in ("dq", "dk", "dv"):
        scale = np.abs(paper.outputs[g]).max()
        assert np.abs(rel.outputs[g] - paper.outputs[g]).max() / scale < 3e-6   # 6e-7 measured


@pytest.mark.parametrize("args, names", [
    (["--dtype", "fp32"], "--dtype"),
    (["--head-dim", "100"], "--head-dim"),
    (["--head-dim", "256"], "--head-dim"),
    (["--sram-kb", "32"], "--sram-kb"),
])
def test_what_the_release_cannot_run_is_one_line_and_exit_2(capsys, args, names):
    code = main(["run", "flash1", "--tiles", "release", "--seq", "512", "--count-only",
                 *args])
    out, err = capsys.readouterr()
    assert code == 2
    line = err.strip()
    assert "\n" not in line and "--tiles" in line and names in line


@pytest.mark.parametrize("options", [{"tiles": "release"}, {"grid": "release"}])
def test_the_gpu_port_refuses_what_it_does_not_run(options):
    """The CUDA port runs Algorithms 1 and 4 on one CTA per head: gpu-check must not compare
    it with a simulation of the release's tiles or grid."""
    import algorithms.flash1 as flash1
    from algorithms.ports import PortUnsupported, port_launches
    from hwmodels import get_gpu
    gpu = get_gpu("h100")
    wl = Workload(batch=1, heads=2, seq_q=4096, head_dim=64)
    plan = flash1.plan(wl, gpu, gpu.smem_bytes_per_block, **options)
    with pytest.raises(PortUnsupported, match="--tiles release"):
        port_launches("flash1", wl, plan)


def release_backward_bytes(nq, nk, d, e, causal):
    """(HBM reads, HBM writes) of the release's loop kernel for one head: K, V in and dK,
    dV out once per K/V block; per step and K/V block seen, Q_i, dO_i and lse_i; at the
    first, O_i to compute D_i, which it stores; after it, D_i and the fp32 dQ buffer back;
    the buffer out before the step's last K/V block, dQ_i at e bytes at it."""
    reads = writes = 2 * nk * d * e
    for rows, v in visits_per_step(nq, nk, key_block(d, nk), causal):
        reads += v * rows * (2 * d * e + 4) + rows * d * e + (v - 1) * rows * (4 + 4 * d)
        writes += rows * 4 + (v - 1) * rows * 4 * d + rows * d * e
    return reads, writes


@pytest.mark.parametrize("nq, nk, d, causal", [
    (300, 557, 64, False), (200, 200, 32, False), (300, 300, 64, True), (520, 777, 128, True),
])
def test_loop_backward_hbm_bytes_match_the_per_step_closed_form(nq, nk, d, causal):
    wl = Workload(batch=1, heads=2, seq_q=nq, seq_k=nk, head_dim=d, causal=causal,
                  passes="bwd")
    r = run(wl)
    assert [k.name for k in r.kernels] == ["flash1_bwd"]     # nothing zeroed first
    reads, writes = release_backward_bytes(nq, nk, d, 2, causal)
    assert r.counts["hbm_read_bytes"] == 2 * reads
    assert r.counts["hbm_write_bytes"] == 2 * writes
    assert r.counts["atomic_bytes"] == 0


@pytest.mark.parametrize("nq, nk, d, causal", [(300, 700, 64, False), (2600, 2600, 64, True),
                                               (700, 900, 128, True)])
def test_split_backward_adds_dq_atomically_between_a_d_kernel_and_a_conversion(nq, nk, d,
                                                                                causal):
    """Split over K/V blocks (one head on the H100's 132 SMs), the release computes D in a
    kernel of its own with the fp32 dQ buffer cleared, adds each step's dQ_i to it with fp32
    atomics, and converts it to dQ after."""
    wl = Workload(batch=1, heads=1, seq_q=nq, seq_k=nk, head_dim=d, causal=causal,
                  passes="bwd")
    r = run(wl, grid="release")
    assert r.plan["bwd"]["splits"] > 1
    kernels = {k.name: k.counts() for k in r.kernels}
    assert list(kernels) == ["flash1_bwd_preprocess", "flash1_bwd", "flash1_bwd_convert_dq"]
    pre, main, conv = kernels.values()
    assert (pre["hbm_read_bytes"], pre["hbm_write_bytes"]) == (2 * nq * d * 2,
                                                               nq * 4 + nq * d * 4)
    pairs = sum(rows * v for rows, v in visits_per_step(nq, nk, key_block(d, nk), causal))
    assert main["atomic_bytes"] == pairs * d * 4
    assert main["hbm_read_bytes"] == 2 * nk * d * 2 + pairs * (2 * d * 2 + 8) + pairs * d * 4
    assert main["hbm_write_bytes"] == 2 * nk * d * 2 + pairs * d * 4
    assert (conv["hbm_read_bytes"], conv["hbm_write_bytes"]) == (nq * d * 4, nq * d * 2)


@pytest.mark.parametrize("grid", ["head", "release"])
def test_release_gradients_match_a_float64_backward(grid):
    """dQ, dK, dV of softmax(τ Q Kᵀ) V against dO, written out here in float64: dP = dO Vᵀ,
    dS = P ∘ (dP - rowsum(dO ∘ O)), dQ = τ dS K, dK = τ dSᵀ Q, dV = Pᵀ dO."""
    wl = Workload(batch=1, heads=1, seq_q=260, seq_k=600, head_dim=32, causal=True,
                  passes="fwd+bwd")
    inputs = make_inputs(wl, 8)
    r = simulate("flash1", wl, "h100", inputs=inputs,
                 options={"tiles": "release", "grid": grid})
    q, k, v, do = (x[0, 0].astype(np.float64) for x in (inputs.q, inputs.k, inputs.v,
                                                        inputs.do))
    tau = 1 / np.sqrt(32)
    s = q @ k.T * tau
    s = np.where(np.arange(600)[None, :] <= np.arange(260)[:, None] + 340, s, -np.inf)
    p = np.exp(s - s.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    o = p @ v
    ds = p * (do @ v.T - (do * o).sum(axis=1, keepdims=True))
    expected = {"dq": tau * ds @ k, "dk": tau * ds.T @ q, "dv": p.T @ do}
    for g, ref in expected.items():
        err = np.abs(r.outputs[g][0, 0] - ref).max() / np.abs(ref).max()
        assert err < 3e-6, g      # float32 tiles: about 6e-7 measured


@pytest.mark.parametrize("d", [64, 128])
def test_the_registers_holding_k_and_v_set_the_forward_occupancy(d):
    """The release's forward warps keep K_j, V_j (2 B_c d e bytes) and their fp32 partial
    outputs (4 x 16 x d x 4) in registers besides S: about 96-104 KiB a CTA, so two CTAs on
    an H100 SM (256 KiB of registers) where the 68-72 KiB of shared memory alone allow three."""
    import algorithms.flash1 as flash1
    from hwmodels import get_gpu
    gpu = get_gpu("h100")
    wl = Workload(batch=4, heads=16, seq_q=4096, head_dim=d)
    p = flash1.plan(wl, gpu, gpu.smem_bytes_per_block, tiles="release")
    regs = flash1.cta_register_bytes(p, d, 2)
    assert regs == 16 * p.block_k * 4 + 4 * 16 * 4 + 2 * p.block_k * d * 2 + 4 * 16 * d * 4
    assert gpu.ctas_per_sm(p.smem_bytes, 0, 128) == 3
    assert gpu.ctas_per_sm(p.smem_bytes, regs, 128) == 2
    r = run(Workload(batch=4, heads=16, seq_q=4096, head_dim=d))
    assert r.time.kernels[0].ctas_per_sm == 2


@pytest.mark.parametrize("gpu, d, n, v_in_registers", [
    ("h100", 128, 1024, False), ("a100", 64, 1024, False), ("h100", 64, 1024, False),
    ("a100", 64, 128, True), ("h100", 64, 128, True), ("h200", 64, 4096, False)])
def test_the_backward_serves_ds_and_v_from_registers_and_reloads_k(gpu, d, n, v_in_registers):
    """fmha_dgrad_kernel_1xN_loop.h builds S = Q_i K_jᵀ with K in shared memory
    (``Gemm_Q_K<Kernel_traits, /*K-in_regs=*/false>``, whatever the traits' K_IN_REGS), so
    K_j's reads stay priced; each warp keeps its own dS for dQ_i in registers, and V_j too
    (no flag 0x100) at d <= 64 on keys <= 128, never at d = 128, and at d = 64 on longer keys
    not on the A100 (sm80) and, from the release's "Support H100" commit on (the only release
    that runs on sm90), not on the H100 either. Of a 16-row step's 160 B_c d FLOPs that is
    16 B_c e of reads (and B_c d e more)."""
    wl = Workload(batch=1, heads=2, seq_q=n, head_dim=d, passes="bwd")
    r = simulate("flash1", wl, gpu, options={"tiles": "release"}, compute=False)
    (k,) = [k for k in r.kernels if k.name == "flash1_bwd"]
    e = 2
    expected = e / (10 * d) + (e / 160 if v_in_registers else 0.0)
    assert k.register_operand_bytes_per_flop == pytest.approx(expected)


@pytest.mark.parametrize("smem_kib, v_in_registers", [(99, True), (163, False), (227, False)])
def test_the_other_sm8x_gpus_keep_v_in_registers(smem_kib, v_in_registers):
    """fmha_bwd_hdim64.cu: the sm8x GPUs other than the A100 (99 KiB of shared memory a CTA:
    sm86, sm89) run the d = 64 backward on 256 keys with V_j in registers; the release tells
    them apart by compute capability, the simulator (whose GPUs carry none) by the shared
    memory a CTA may use."""
    import dataclasses

    from algorithms.flash1.release import backward_v_in_registers
    from hwmodels.gpus import builtin_gpu

    gpu = dataclasses.replace(builtin_gpu("a100"), smem_bytes_per_block=smem_kib * 1024)
    assert backward_v_in_registers(64, 4096, gpu) is v_in_registers
    assert backward_v_in_registers(64, 128, gpu) is True
    assert backward_v_in_registers(128, 4096, gpu) is False
