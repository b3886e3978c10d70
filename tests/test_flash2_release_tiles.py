"""``flash2 --tiles release``: FlashAttention-2's forward on the tiles and warps its release
dispatches per head dim (flash-attention csrc/flash_attn/src/flash_fwd_launch_template.h,
``run_mha_fwd_hdim*``; the same table at v2.0.0, v2.6.0 and 2.8.4). The dispatch is
written out here from the release's source; the counts against the tile-pair closed form;
the outputs against the float64 reference; the refusals against the CLI.
"""
import dataclasses

import numpy as np
import pytest

from algorithms.flash2.release import forward_tiles
from attnsim import Workload, attention_reference, make_inputs, simulate
from attnsim.cli import main
from hwmodels import get_gpu
from shapes import EXACT_TOL, rel_err

H100, A100 = get_gpu("h100"), get_gpu("a100")
SM86 = dataclasses.replace(A100, name="sm86-like", smem_bytes_per_block=99 * 1024,
                           smem_bytes_per_sm=100 * 1024)
cdiv = lambda a, b: -(-a // b)  # noqa: E731

# (d, causal, dropout) -> (B_r, B_c, warps) on sm80/sm90 and on sm86/sm89, as the release's
# run_mha_fwd_hdim{32,64,96,128,192,256} choose them (16-bit inputs)
DISPATCH = {
    (32, False, False): ((128, 128, 4), (128, 128, 4)),
    (64, False, False): ((128, 128, 4), (128, 128, 4)),
    (64, True, True): ((128, 64, 4), (128, 64, 4)),
    (96, False, False): ((128, 64, 4), (128, 64, 4)),
    (96, True, False): ((128, 64, 4), (64, 64, 4)),
    (128, False, False): ((128, 64, 4), (128, 32, 4)),
    (128, True, False): ((128, 64, 4), (64, 64, 4)),
    (128, False, True): ((128, 32, 4), (128, 32, 4)),
    (192, True, False): ((128, 64, 8), (128, 64, 8)),
    (192, False, True): ((64, 64, 4), (64, 64, 4)),
}


@pytest.mark.parametrize("key", list(DISPATCH), ids=str)
def test_tiles_follow_the_release_dispatch(key):
    d, causal, dropout = key
    sm80, sm8x = DISPATCH[key]
    assert forward_tiles(d, A100, causal, dropout) == sm80
    assert forward_tiles(d, H100, causal, dropout) == sm80
    assert forward_tiles(d, SM86, causal, dropout) == sm8x


def test_head_dim_256_follows_the_shared_memory_rule():
    """run_mha_fwd_hdim256: 128 x 64 on 8 warps where a CTA may take 2 d (128 + 2·64) bytes
    and an SM holds less than 4 d (64 + 2·64) — the A100's 163 and 164 KiB — else 64 x 64
    on 4 warps: the H100, whose 228 KiB hold two such CTAs, and the sm8x GPUs."""
    assert forward_tiles(256, A100, False, False) == (128, 64, 8)
    assert forward_tiles(256, H100, True, False) == (64, 64, 4)
    assert forward_tiles(256, SM86, False, False) == (64, 64, 4)


def plan_of(gpu, d, causal=False, tiles="release", n=1024):
    wl = Workload(batch=2, heads=4, seq_q=n, head_dim=d, causal=causal)
    return simulate("flash2", wl, gpu, options={"tiles": tiles}, compute=False)


def test_the_h100_runs_two_64_by_64_ctas_an_sm_at_d_256_the_a100_one_of_8_warps():
    h = plan_of(H100, 256)
    (k,) = h.kernels
    assert (h.plan["block_q"], h.plan["block_k"], h.plan["warps"]) == (64, 64, 4)
    assert k.sram_bytes_per_cta == (64 + 2 * 64) * 256 * 2 == 96 * 1024
    assert h.time.kernels[0].ctas_per_sm == 2 and k.smem_readers == 4
    a = plan_of(A100, 256)
    (k,) = a.kernels
    assert (a.plan["block_q"], a.plan["block_k"], a.plan["warps"]) == (128, 64, 8)
    assert k.threads_per_cta == 256 and k.smem_readers == 8
    assert a.time.kernels[0].ctas_per_sm == 1
    paper = plan_of(H100, 256, tiles="paper")          # the M-derived plan differs there
    assert (paper.plan["block_q"], paper.plan["block_k"], paper.plan["warps"]) == (64, 128, 4)


@pytest.mark.parametrize("gpu", [A100, H100], ids=["a100", "h100"])
@pytest.mark.parametrize("d", [64, 128])
@pytest.mark.parametrize("causal", [False, True])
def test_where_the_paper_plan_already_is_the_release_nothing_changes(gpu, d, causal):
    release, paper = plan_of(gpu, d, causal), plan_of(gpu, d, causal, tiles="paper")
    assert release.plan == paper.plan
    assert release.counts == paper.counts
    assert release.time.predicted_s == paper.time.predicted_s


@pytest.mark.parametrize("nq, nk, d, causal", [
    (300, 300, 96, True), (257, 700, 192, False), (130, 130, 256, True), (200, 77, 32, False)])
def test_counts_follow_the_tile_pairs_and_outputs_are_exact(nq, nk, d, causal):
    """Q once, K and V once per visited B_r x B_c tile, O and the fp32 lse once; count-only
    equals executed; the output matches the float64 reference."""
    wl = Workload(batch=1, heads=2, seq_q=nq, seq_k=nk, head_dim=d, causal=causal)
    inputs = make_inputs(wl, seed=5)
    r = simulate("flash2", wl, A100, options={"tiles": "release"}, inputs=inputs)
    co = simulate("flash2", wl, A100, options={"tiles": "release"}, compute=False)
    br, bc, _ = forward_tiles(d, A100, causal, False)
    assert (r.plan["block_q"], r.plan["block_k"]) == (br, bc)
    e, cols = 2, 0
    for r0 in range(0, nq, br):
        rows = min(br, nq - r0)
        end = nk if not causal else max(0, min(nk, r0 + rows + nk - nq))
        cols += sum(min(bc, nk - c0) for c0 in range(0, end, bc))
    assert r.counts["hbm_read_bytes"] == 2 * (nq * d * e + 2 * cols * d * e)
    assert r.counts["hbm_write_bytes"] == 2 * (nq * d * e + 4 * nq)
    assert r.counts["ctas"] == 2 * cdiv(nq, br)
    assert co.counts == r.counts
    ref, _ = attention_reference(inputs.q, inputs.k, inputs.v, causal=causal)
    assert rel_err(r.outputs["o"], ref) < EXACT_TOL


@pytest.mark.parametrize("args, names", [
    (["--head-dim", "80"], ("--head-dim", "--tiles paper")),
    (["--dtype", "fp32"], ("--dtype", "--tiles paper")),
    (["--head-dim", "256", "--sram-kb", "64"], ("--sram-kb", "--tiles paper")),
])
def test_what_the_release_has_no_kernel_for_is_refused_in_one_line(capsys, args, names):
    code = main(["run", "flash2", "--tiles", "release", "--count-only", "--seq", "256"] + args)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert all(n in err for n in names), err


def test_json_names_the_tiles_and_the_warps(capsys):
    import json
    code = main(["run", "flash2", "--tiles", "release", "--hw", "a100", "--head-dim", "256",
                 "--seq", "512", "--count-only", "--format", "json"])
    d = json.loads(capsys.readouterr().out)
    assert code == 0 and d["options"]["tiles"] == "release"
    assert d["plan"]["warps"] == 8 and d["kernels"][0]["smem_readers"] == 8
    assert np.isfinite(d["time"]["predicted_s"])
