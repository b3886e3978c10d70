"""FlashAttention-3: FlashAttention-2's math and traffic, Hopper's instructions and overlap."""
import pytest

from algorithms import flash2
from algorithms.base import PlanError
from attnsim import Workload, make_inputs, simulate
from hwmodels.memory import SramOverflowError
from hwmodels.timing import TimingOptions
from shapes import EXACT_TOL, RAGGED_SHAPES


@pytest.mark.parametrize("shape", RAGGED_SHAPES)
@pytest.mark.parametrize("causal", [False, True])
def test_matches_reference_and_count_only(shape, causal):
    b, h, nq, nk, d = shape
    wl = Workload(batch=b, heads=h, seq_q=nq, seq_k=nk, head_dim=d, causal=causal)
    r = simulate("flash3", wl, "h100", sram_bytes=64 * 1024, inputs=make_inputs(wl, 11))
    assert r.error_vs_reference < EXACT_TOL
    assert simulate("flash3", wl, "h100", sram_bytes=64 * 1024, compute=False).counts == r.counts


def test_same_traffic_as_flash2_with_the_same_tiles(monkeypatch):
    """FA-3 changes the instructions, not the IO: flash2 run on flash3's B_r x B_c tiles (its
    own plan picks others) counts the same HBM bytes and the same operations."""
    wl = Workload(batch=2, heads=4, seq_q=1000, head_dim=64, causal=True)
    f3 = simulate("flash3", wl, "h100", compute=False)
    # d = 64: three consumer warpgroups, 160 registers a thread, hold 192 x 128
    assert (f3.plan["block_q"], f3.plan["block_k"], f3.plan["consumer_warpgroups"]) == \
        (192, 128, 3)
    tiles = flash2.Flash2Plan(192, 128, f3.plan["smem_bytes"], f3.plan["register_bytes"])
    monkeypatch.setattr(flash2, "plan", lambda wl, gpu, sram_bytes, **options: tiles)
    f2 = simulate("flash2", wl, "h100", compute=False)
    assert (f2.plan["block_q"], f2.plan["block_k"]) == (192, 128)
    same = ("hbm_read_bytes", "hbm_write_bytes", "matmul_flops", "exp_ops", "other_flops")
    assert {k: f2.counts[k] for k in same} == {k: f3.counts[k] for k in same}
    cdiv = lambda a, b: -(-a // b)  # noqa: E731
    # non-causal closed form: Q once, K and V once per Q block, O and lse once
    wl = wl.replace(causal=False)
    f3 = simulate("flash3", wl, "h100", compute=False)
    tr, e = cdiv(1000, 192), 2
    assert f3.counts["hbm_read_bytes"] == 8 * (1000 * 64 * e + tr * 2 * 1000 * 64 * e)
    assert f3.counts["hbm_write_bytes"] == 8 * (1000 * 64 * e + 4 * 1000)


def test_faster_than_flash2_for_the_modelled_reasons():
    wl = Workload(batch=4, heads=16, seq_q=4096, head_dim=128)
    f2 = simulate("flash2", wl, "h100", compute=False).time
    f3 = simulate("flash3", wl, "h100", compute=False).time
    assert f3.predicted_s < f2.predicted_s
    # wgmma against mma.sync: the H800 microbenchmark's ratio, 0.653 / 0.96
    assert f3.matmul_s == pytest.approx(f2.matmul_s * (494 / 757) / 0.96, rel=1e-6)
    # switch off what distinguishes them (independent chains, the tensor-core path, and the
    # per-warp shared-memory reads, per-CTA prologues and step latencies their different
    # tiles imply) and flash3's time becomes flash2's
    off = TimingOptions(overlap=False, tc_path_derate=False, smem_bandwidth=False,
                        cta_fixed_costs=False, step_latency=False, own_gemm_overlap=False)
    f2_off = simulate("flash2", wl, "h100", compute=False, timing=off).time
    f3_off = simulate("flash3", wl, "h100", compute=False, timing=off).time
    assert f3_off.predicted_s == pytest.approx(f2_off.predicted_s, rel=0.02)


def test_pipelining_changes_only_what_a_warpgroup_overlaps_on_the_same_tiles():
    """``--no-pipelining`` is the paper's Table 2 ablation and ``--pipelining paper`` its
    Section 3.2 as drawn: the same tiles, counts and kernel as the release, so only the time
    changes. The release (the default) runs beside a warpgroup's own GEMMs the share of its
    softmax the compiled kernel issues before waiting for them, one chain a warpgroup; the
    ablation none of it; the paper's drawing keeps two tiles in flight a warpgroup, 2W
    chains, each softmax wholly beside the other tile's GEMMs."""
    for d, warpgroups in ((128, 2), (64, 3)):
        wl = Workload(batch=4, heads=16, seq_q=8448, head_dim=d)
        release = simulate("flash3", wl, "h100", compute=False)
        off = simulate("flash3", wl, "h100", compute=False, options={"no_pipelining": True})
        paper = simulate("flash3", wl, "h100", compute=False, options={"pipelining": "paper"})
        assert (release.plan["pipelining"], off.plan["pipelining"], paper.plan["pipelining"]) \
            == (True, False, True)
        assert release.plan["softmax_beside_own_gemm"] and \
            off.plan["softmax_beside_own_gemm"] == paper.plan["softmax_beside_own_gemm"] == {}
        schedule = ("pipelining", "pipelining_as", "softmax_beside_own_gemm")
        for other in (off, paper):
            assert {k: v for k, v in other.plan.items() if k not in schedule} == \
                {k: v for k, v in release.plan.items() if k not in schedule}
            assert other.counts == release.counts
        kr, ko, kp = (r.time.kernels[0] for r in (release, off, paper))
        assert (kr.chains, ko.chains, kp.chains) == (warpgroups, warpgroups, 2 * warpgroups)
        assert (ko.matmul_s, ko.exp_s, ko.smem_s) == (kr.matmul_s, kr.exp_s, kr.smem_s)
        assert kp.chain_s < kr.chain_s <= ko.chain_s
        assert paper.time.predicted_s < release.time.predicted_s <= off.time.predicted_s
        # with the chains and the overlap switched off the options make no difference
        serial = TimingOptions(overlap=False, own_gemm_overlap=False)
        times = {simulate("flash3", wl, "h100", compute=False, timing=serial,
                          options=o).time.predicted_s
                 for o in ({}, {"no_pipelining": True}, {"pipelining": "paper"})}
        assert len(times) == 1


def test_release_overlap_is_read_off_the_compiled_release():
    """The shares of the softmax a warpgroup runs beside its own GEMMs are the counts
    benchmarks/sass_schedule.py read off the release's SASS (reports/fa3_sass_schedule.json:
    7f67966c, ptxas 12.3), per head dim and causal; a head dim the release does not compile
    takes the next one it does, as later releases round it up."""
    import json
    import pathlib
    from algorithms.flash3 import RELEASE_SOFTMAX_SPLIT, release_softmax_beside_gemm
    run = json.loads((pathlib.Path(__file__).resolve().parents[1] / "reports" /
                      "fa3_sass_schedule.json").read_text())
    assert run["source"]["flash_attention_commit"].startswith("7f67966c")
    assert run["source"]["ptxas_release"] == "12.3"
    read = {(k["head_dim"], k["causal"]): {pipe: (k["before_full_wait"][pipe],
                                                  k["after_full_wait"][pipe])
                                           for pipe in ("xu", "fma", "alu")}
            for k in run["kernels"]}
    assert read == RELEASE_SOFTMAX_SPLIT
    # the release's tiles are the planner's: the SASS was read off the kernels simulated
    for k in run["kernels"]:
        wl = Workload(batch=1, heads=2, seq_q=4096, head_dim=k["head_dim"], causal=k["causal"])
        plan = simulate("flash3", wl, "h100", compute=False).plan
        assert (plan["block_q"], plan["block_k"]) == (k["block_q"], k["block_k"])
        before, after = k["before_full_wait"], k["after_full_wait"]
        assert plan["softmax_beside_own_gemm"] == pytest.approx(
            {p: before[p] / (before[p] + after[p]) for p in ("xu", "fma", "alu")}, abs=5e-5)
    # no exp runs beside the GEMMs at d = 64 and d = 128 non-causal; two fifths at d = 256
    assert release_softmax_beside_gemm(64, False)["xu"] == 0.0
    assert release_softmax_beside_gemm(128, False)["xu"] == 0.0
    assert release_softmax_beside_gemm(256, False)["xu"] == pytest.approx(17 / 42, abs=5e-5)
    assert release_softmax_beside_gemm(96, True) == release_softmax_beside_gemm(128, True)
    assert release_softmax_beside_gemm(192, False) == release_softmax_beside_gemm(256, False)


def test_no_pipelining_and_the_papers_pipelining_contradict(capsys):
    from attnsim.cli import main
    wl = Workload(batch=1, heads=1, seq_q=512, head_dim=128)
    with pytest.raises(PlanError, match="--no-pipelining and --pipelining paper"):
        simulate("flash3", wl, "h100", compute=False,
                 options={"no_pipelining": True, "pipelining": "paper"})
    assert main(["run", "flash3", "--no-pipelining", "--pipelining", "paper",
                 "--count-only"]) == 2
    assert "--pipelining paper" in capsys.readouterr().err
    assert main(["run", "flash3", "--pipelining", "drawn", "--count-only"]) == 2
    assert "--pipelining" in capsys.readouterr().err


@pytest.mark.parametrize("dtype, d, pingpong", [
    ("fp16", 64, True), ("fp16", 128, True), ("fp16", 256, False),
    ("fp8", 64, False), ("fp8", 128, True), ("fp8", 256, True)])
def test_warpgroups_add_chains_only_where_the_release_builds_its_pingpong(dtype, d, pingpong):
    """The release compiles its scheduler barrier for 16-bit dtypes at d <= 128 and for fp8
    at d >= 128: W chains a CTA with it; without it the W consumer warpgroups run in step,
    one chain. The fp8 release waits for each GEMM (no pipelining); the 16-bit release's
    pipelining overlaps a share of each softmax, not a second chain (``--pipelining paper``:
    two a warpgroup)."""
    options = {"fp8_quantize": "upstream"} if dtype == "fp8" else {}
    wl = Workload(batch=2, heads=16, seq_q=4096, head_dim=d, dtype=dtype)
    r = simulate("flash3", wl, "h100", compute=False, options=options)
    w = r.plan["consumer_warpgroups"]
    assert w >= 2 and r.plan["pingpong"] is pingpong
    assert r.plan["pipelining"] is (dtype == "fp16")
    assert r.time.kernels[-1].chains == (w if pingpong else 1)
    unpiped = simulate("flash3", wl, "h100", compute=False,
                       options={**options, "no_pipelining": True})
    assert unpiped.time.kernels[-1].chains == (w if pingpong else 1)
    if dtype == "fp16":
        paper = simulate("flash3", wl, "h100", compute=False, options={"pipelining": "paper"})
        assert paper.time.kernels[-1].chains == 2 * (w if pingpong else 1)


@pytest.mark.parametrize("kernel, d, tiles, pipelining, pingpong", [
    ("release", 64, (192, 128, 4), False, False), ("release", 128, (128, 256, 2), False, True),
    ("release", 256, (128, 128, 2), False, True),
    ("pretransposed", 64, (192, 128, 2), True, True),
    ("pretransposed", 128, (128, 128, 4), True, True)])
@pytest.mark.parametrize("causal", [False, True])
def test_fp8_kernels_run_their_own_tiles_and_mainloop(kernel, d, tiles, pipelining, pingpong,
                                                      causal):
    """hopper/flash_fwd_launch_template.h: the first public fp8 forward (5018ac6a,
    run_mha_fwd_hdim*_fp8) and the pull request before it (1899c970) fix their tiles per head
    dim, causal or not; the release's ``mma_fp8`` waits for each GEMM (``wgmma`` wait 0) and
    takes turns at d >= 128, the pull request runs the 16-bit mainloop (pipelined, turns at
    d <= 128) on V transposed before the kernel: no Vᵀ buffer, no transpose traffic."""
    wl = Workload(batch=2, heads=4, seq_q=1024, head_dim=d, dtype="fp8", causal=causal)
    r = simulate("flash3", wl, "h100", compute=False,
                 options={"fp8_quantize": "upstream", "fp8_kernel": kernel})
    p = r.plan
    assert (p["block_q"], p["block_k"], p["stages"]) == tiles
    assert (p["pipelining"], p["pingpong"], p["fp8_kernel"]) == (pipelining, pingpong, kernel)
    (k,) = r.kernels
    assert ("V_jᵀ stages" in k.buffers) is (kernel == "release")
    w = p["consumer_warpgroups"]
    assert r.time.kernels[-1].chains == (w if pingpong else 1)
    # the pull request's mainloop is the 16-bit one: the 16-bit release's overlap
    assert bool(p["softmax_beside_own_gemm"]) is pipelining
    # the transpose: V_j read and written once more in shared memory per tile, release only
    from algorithms.flash3 import count_fp8_tile_extras
    from hwmodels.counters import SRAM_READ_BYTES, SRAM_WRITE_BYTES, new_counters
    with_t, without = new_counters(), new_counters()
    count_fp8_tile_extras(with_t, 64, 96, d, True, True)
    count_fp8_tile_extras(without, 64, 96, d, True, False)
    assert with_t[SRAM_READ_BYTES] - without[SRAM_READ_BYTES] == 96 * d
    assert with_t[SRAM_WRITE_BYTES] - without[SRAM_WRITE_BYTES] == 96 * d


def test_fp8_kernel_needs_fp8(capsys):
    from attnsim.cli import main
    assert main(["run", "flash3", "--fp8-kernel", "release", "--count-only"]) == 2
    err = capsys.readouterr().err
    assert "--fp8-kernel" in err and "--dtype fp8" in err


def test_pingpong_what_if_changes_only_the_chains():
    """``--pingpong on`` gives fp8 at d = 64 the barrier its release leaves out (W chains:
    the fp8 release has no pipelining), ``off`` takes it from fp16 at d = 128 (1 chain, not
    W): same tiles and counts, only the time moves, and the barrier never makes
    the kernel slower. One warpgroup cannot take turns."""
    for dtype, d, choice, w in (("fp8", 64, "on", 3), ("fp16", 128, "off", 2)):
        options = {"fp8_quantize": "upstream"} if dtype == "fp8" else {}
        wl = Workload(batch=2, heads=16, seq_q=4096, head_dim=d, dtype=dtype)
        release = simulate("flash3", wl, "h100", compute=False, options=options)
        what_if = simulate("flash3", wl, "h100", compute=False,
                           options={**options, "pingpong": choice})
        assert what_if.plan["pingpong"] is (choice == "on")
        assert {k: v for k, v in what_if.plan.items() if k != "pingpong"} == \
            {k: v for k, v in release.plan.items() if k != "pingpong"}
        assert what_if.counts == release.counts
        on, off = (what_if, release) if choice == "on" else (release, what_if)
        assert (on.time.kernels[-1].chains, off.time.kernels[-1].chains) == (w, 1)
        assert on.time.predicted_s < off.time.predicted_s
    wl = Workload(batch=1, heads=1, seq_q=512, head_dim=128)
    with pytest.raises(PlanError, match="--pingpong on needs two consumer warpgroups"):
        simulate("flash3", wl, "h100", compute=False, sram_bytes=40 * 1024,
                 options={"pingpong": "on"})
    assert simulate("flash3", wl, "h100", compute=False, sram_bytes=40 * 1024,
                    options={"pingpong": "off"}).plan["consumer_warpgroups"] == 1


def test_needs_hopper_and_fitting_stages():
    wl = Workload(seq_q=256, head_dim=128)
    with pytest.raises(PlanError, match="needs Hopper's wgmma"):
        simulate("flash3", wl, "a100", compute=False)
    with pytest.raises(SramOverflowError, match="use fewer --stages"):
        simulate("flash3", wl, "h100", compute=False, options={"stages": 8}, sram_bytes=40000)
    with pytest.raises(PlanError, match="--stages must be at least 1"):
        simulate("flash3", wl, "h100", compute=False, options={"stages": 0})


def test_fp8_uses_the_fp8_peak_and_one_byte_elements():
    wl = Workload(batch=4, heads=16, seq_q=4096, head_dim=128)
    t16 = simulate("flash3", wl, "h100", compute=False)
    t8 = simulate("flash3", wl.replace(dtype="fp8"), "h100", compute=False)
    # the fp8 peak is twice fp16's (1978.9 vs 989.4) but large fp8 GEMMs reach a smaller
    # fraction of it (MAMF: 70.9% against 80.3%)
    assert t8.time.matmul_s == pytest.approx(t16.time.matmul_s / 2 * (794.5 / 989.4)
                                             / (1402.6 / 1978.9), rel=1e-4)
    assert t8.counts["hbm_read_bytes"] < t16.counts["hbm_read_bytes"]


@pytest.mark.parametrize("kernel, transposes", [("release", True), ("pretransposed", False)])
def test_fp8_sram_refusal_counts_the_transposed_v_only_where_the_kernel_has_one(kernel,
                                                                               transposes):
    """A budget too small for even 64 x 16 tiles is refused with the bytes the kernel needs:
    Q_i and the stages of K_j, V_j, and of V_jᵀ only where V is transposed in the kernel."""
    from hwmodels.memory import SramOverflowError
    wl = Workload(batch=1, heads=1, seq_q=256, head_dim=128, dtype="fp8")
    with pytest.raises(SramOverflowError) as err:
        simulate("flash3", wl, "h100", compute=False, sram_bytes=4096,
                 options={"fp8_quantize": "upstream", "fp8_kernel": kernel})
    need = 64 * 128 + 2 * (2 + transposes) * 16 * 128
    assert f"{need:,} bytes" in str(err.value)
    assert ("Vᵀ" in str(err.value)) is transposes
