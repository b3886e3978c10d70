"""``flash1 --grid release``: the grid of the FlashAttention v1 release the FlashAttention-2
paper measures FlashAttention against (flash-attention v1, fmha_fwd_launch_template.h and
fmha_bwd_launch_template.h): the forward deals a head's Q blocks round-robin to several
CTAs, the backward gives each K/V block a CTA of its own when that fills the SMs better.

The choices are checked against values worked out by hand from the release's two
heuristics; the forward's counts against a closed form (every split CTA loads the K_j, V_j
its Q blocks see; nothing else moves); the backward's counts against the one-CTA-per-head
grid's (the split only spreads Algorithm 4's outer loop over CTAs); the outputs against the
default grid's, bit for bit.
"""
import numpy as np
import pytest

from algorithms.flash1 import release_forward_splits
from algorithms.flash1.backward import release_backward_splits
from attnsim import Workload, make_inputs, simulate


@pytest.mark.parametrize("heads, sms, per_sm, row_blocks, splits", [
    # 16 heads on 108 SMs: 13 splits fill 208 / 216 slots (0.963); 6 fill 0.889; 27 fill 1.0
    (16, 108, 1, 128, 13),
    (16, 108, 1, 8, 6),        # at most T_r = 8 splits: 6 is the best of 1..8 (0.889)
    (128, 108, 1, 32, 5),      # 640 / 648 = 0.988 at 5; 4 gives 512 / 540 = 0.948
    (108, 108, 1, 32, 1),      # one full wave already
    (64, 132, 2, 32, 4),       # two CTAs an SM: 256 / 264 = 0.970 at 4; 3 gives 0.727
    (1, 132, 1, 4, 4),         # a lone head: as many splits as its blocks
])
def test_forward_splits_follow_the_release_heuristic(heads, sms, per_sm, row_blocks, splits):
    assert release_forward_splits(heads, sms, per_sm, row_blocks) == splits


@pytest.mark.parametrize("heads, sms, per_sm, seq_k, block_k, causal, splits", [
    (16, 108, 1, 16384, 128, True, 128),     # causal with >= 10 key blocks: always split
    (16, 108, 1, 1024, 128, True, 8),        # 16/108 against (128/216) / 1.0625
    (108, 108, 1, 1024, 128, False, 1),      # a full wave: 1.0 against 1.0 / 1.125
    (120, 108, 1, 512, 128, False, 4),       # 120/216 = 0.556 < (480/540 = 0.889) / 1.25
    (100, 108, 1, 512, 128, False, 1),       # 100/108 = 0.926 >= (400/432 = 0.926) / 1.25
    (8, 108, 1, 2048, 128, False, 16),       # 8/108 against 128/216 / 1.0625
])
def test_backward_splits_follow_the_release_heuristic(heads, sms, per_sm, seq_k, block_k,
                                                      causal, splits):
    assert release_backward_splits(heads, sms, per_sm, seq_k, block_k, causal) == splits


def run(wl, grid, compute=False, sram_kb=24):
    return simulate("flash1", wl, "h100", compute=compute, sram_bytes=sram_kb * 1024,
                    inputs=make_inputs(wl, 2) if compute else None, options={"grid": grid})


def kernel(result, name):
    return next(k for k in result.kernels if k.name == name)


@pytest.mark.parametrize("nq, nk, causal", [(300, 300, False), (257, 333, False),
                                            (300, 300, True), (200, 261, True)])
def test_forward_split_reads_k_and_v_once_per_split_that_sees_them(nq, nk, causal):
    wl = Workload(batch=2, heads=3, seq_q=nq, seq_k=nk, head_dim=16, causal=causal)
    head, release = run(wl, "head"), run(wl, "release")
    s = release.plan["splits"]
    bq, bk, d, e = release.plan["block_q"], release.plan["block_k"], 16, 2
    assert s > 1
    t_r = -(-nq // bq)
    extra = 0                            # K_j, V_j loads beyond one per head, per head
    for c0 in range(0, nk, bk):
        cols = min(bk, nk - c0)
        first = max(0, c0 - (nk - nq)) // bq if causal else 0
        seen_by = min(s, t_r - first)    # distinct residues among blocks first .. T_r - 1
        extra += (seen_by - 1) * 2 * cols * d * e
    k_head, k_rel = kernel(head, "flash1_fwd").counts(), kernel(release, "flash1_fwd").counts()
    assert k_rel["hbm_read_bytes"] == k_head["hbm_read_bytes"] + 6 * extra
    assert k_rel["sram_write_bytes"] == k_head["sram_write_bytes"] + 6 * extra
    for slot in ("hbm_write_bytes", "matmul_flops", "other_flops", "exp_ops", "sram_read_bytes"):
        assert k_rel[slot] == k_head[slot], slot
    assert kernel(release, "flash1_fwd").ctas == 6 * s


@pytest.mark.parametrize("causal", [False, True])
def test_backward_split_spreads_the_same_work_over_a_cta_per_key_block(causal):
    wl = Workload(batch=1, heads=2, seq_q=300, seq_k=333, head_dim=16, causal=causal,
                  passes="bwd")
    head, release = run(wl, "head"), run(wl, "release")
    bwd = release.plan["bwd"]
    blocks = -(-333 // bwd["block_k"])
    assert bwd["splits"] == blocks > 1
    assert kernel(release, "flash1_bwd").ctas == 2 * blocks
    split, whole = kernel(release, "flash1_bwd").counts(), kernel(head, "flash1_bwd").counts()
    assert {**split, "ctas": whole["ctas"]} == whole


@pytest.mark.parametrize("causal", [False, True])
def test_release_grid_computes_the_same_outputs_and_gradients(causal):
    wl = Workload(batch=1, heads=2, seq_q=150, seq_k=170, head_dim=16, causal=causal,
                  passes="fwd+bwd")
    head, release = run(wl, "head", compute=True), run(wl, "release", compute=True)
    assert release.plan["splits"] > 1 and release.plan["bwd"]["splits"] > 1
    for name, value in head.outputs.items():
        np.testing.assert_array_equal(np.asarray(release.outputs[name]), np.asarray(value))


def test_the_release_grid_fills_the_gpu_that_one_cta_per_head_leaves_idle():
    """16 heads of 16k tokens (the FA-2 paper's d = 128 sweep at its longest) on the A100's
    108 SMs: a CTA per head leaves 92 idle, the release's split does not."""
    wl = Workload(batch=1, heads=16, seq_q=16384, head_dim=128, passes="fwd+bwd")
    head = simulate("flash1", wl, "a100-80gb", compute=False)
    release = simulate("flash1", wl, "a100-80gb", compute=False, options={"grid": "release"})
    assert release.plan["splits"] == 13 and release.plan["bwd"]["splits"] > 100
    assert head.time.predicted_s > 4 * release.time.predicted_s
