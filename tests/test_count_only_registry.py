"""Every registered algorithm, in each of its main modes: count-only mode counts exactly what
executed mode counts — every slot, kernel by kernel — and predicts the same time.

CASES must name every registered algorithm (``test_every_registered_algorithm_has_cases``), so
a new algorithm cannot skip this test; each list covers the modes its options switch between.
Sizes are ragged and small (executed mode runs the arithmetic).
"""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from algorithms.registry import algorithm_names
from attnsim import Workload, make_inputs, simulate


def wl(nq=97, nk=None, d=40, heads=2, kv_heads=None, causal=False, **kw):
    return Workload(batch=2, heads=heads, kv_heads=kv_heads, seq_q=nq, seq_k=nk, head_dim=d,
                    causal=causal, **kw)


SMALL_NSA = {"compress_block": 16, "compress_stride": 8, "select_block": 32, "selected": 4,
             "window": 40}
CASES = {
    "standard": [(wl(nk=130, kv_heads=1, causal=True), {}),
                 (wl(causal=True, passes="fwd+bwd", dropout=0.1), {}),
                 (wl(causal=True), {"program": "pytorch-eager"}),
                 (wl(causal=True, passes="fwd+bwd", dropout=0.1), {"program": "pytorch-eager"}),
                 (wl(passes="bwd"), {"program": "pytorch-eager"})],
    "flash1": [(wl(nk=130, causal=True), {}),
               (wl(passes="fwd+bwd", dropout=0.1), {}),
               (wl(causal=True, passes="bwd"), {}),
               (wl(nq=130, nk=161, causal=True, passes="fwd+bwd"), {"grid": "release"}),
               (wl(nq=300, nk=557, causal=True, passes="fwd+bwd"),
                {"grid": "release", "tiles": "release"}),
               (wl(nq=300, nk=200, causal=True), {"tiles": "release"})],
    "flash2": [(wl(nq=130, nk=97, kv_heads=1, causal=True), {}),
               (wl(causal=True, passes="fwd+bwd", dropout=0.1), {}),
               (wl(passes="bwd"), {})],
    "flash3": [(wl(nk=200, causal=True), {}), (wl(d=64), {"stages": 3}),
               (wl(nq=300, nk=263, causal=True, passes="fwd+bwd"), {}),
               (wl(nq=200, d=96, passes="bwd"), {})],
    "local": [(wl(nq=200, causal=True), {"window": 32}), (wl(nq=200), {"window": 48})],
    "sparse_transformer": [(wl(nq=200, causal=True), {"stride": 16}),
                           (wl(nq=200), {"stride": 16, "pattern": "fixed", "summary": 4})],
    "longformer": [(wl(nq=200), {"window": 32, "global_tokens": 2}),
                   (wl(nq=200, causal=True), {"window": 32, "global_tokens": 3})],
    "bigbird": [(wl(nq=256), {"block": 16, "seed": 3}),
                (wl(nq=250, causal=True), {"block": 16, "random_blocks": 2})],
    "block_sparse": [(wl(nq=200), {"density": 0.5, "block": 32, "seed": 1}),
                     (wl(nq=200, causal=True), {"density": 0.3, "block": 16})],
    "masked_dense": [(wl(nq=200, causal=True), {"mask_of": "local", "window": 32}),
                     (wl(nq=256), {"mask_of": "bigbird", "block": 16})],
    "gqa": [(wl(nq=130, heads=4, kv_heads=2, causal=True), {}),
            (wl(nq=130, heads=4, kv_heads=2, causal=True), {"pack_group": True}),
            (wl(nq=1, nk=300, heads=8, kv_heads=2, decode=True), {}),
            (wl(nq=3, nk=257, heads=8, kv_heads=1, causal=True, decode=True), {"splits": 2}),
            # flash-attn's split-KV CTA: the group's rows in a 64-row tile, 4 warps
            (wl(nq=1, nk=300, heads=8, kv_heads=2, decode=True), {"tiles": "release"})],
    "mla": [(wl(nq=1, nk=301, heads=4, d=32, decode=True), {"kv_lora_rank": 64, "rope_dim": 16}),
            (wl(nq=3, nk=257, heads=8, d=64, causal=True, decode=True),
             {"path": "upproject", "kv_lora_rank": 128, "rope_dim": 32}),
            (wl(nq=2, nk=150, heads=16, d=64, causal=True, decode=True),
             {"kv_lora_rank": 256, "rope_dim": 64, "splits": 2})],
    "ring": [(wl(nq=333, kv_heads=1, causal=True), {"devices": 4}),
             (wl(nq=300, nk=200), {"devices": 3})],
    "diff": [(wl(nq=97, nk=130, d=64, causal=True), {"layer": 3, "seed": 2}), (wl(d=32), {})],
    "nsa": [(wl(nq=300, heads=2, kv_heads=1, d=32, causal=True), SMALL_NSA),
            (wl(nq=97, nk=161, heads=3, causal=True), {"selected": 3, "window": 7, "seed": 4})],
    "linear": [(wl(nq=130), {}), (wl(nq=130, heads=4, kv_heads=2, causal=True), {})],
    "rfa": [(wl(nq=130, nk=200), {"seed": 1}),
            (wl(nq=130, causal=True), {"features": 24, "sigma": 2.0, "seed": 2})],
    "performer": [(wl(nq=130), {"seed": 1, "redraw": "head"}),
                  (wl(nq=130, d=128, causal=True), {"seed": 2})],
    "reformer": [(wl(nq=256, d=32), {"hashes": 2, "bucket_size": 32}),
                 (wl(nq=192, heads=4, kv_heads=2, causal=True), {"hashes": 3, "bucket_size": 16})],
}


def test_every_registered_algorithm_has_cases():
    assert sorted(CASES) == sorted(algorithm_names())


def kernel_counts(result):
    return [(k.name, k.ctas, k.counts()) for k in result.kernels]


@pytest.mark.parametrize("name, workload, options",
                         [pytest.param(n, w, o, id=f"{n}-{i}") for n, cases in CASES.items()
                          for i, (w, o) in enumerate(cases)])
def test_count_only_equals_executed(name, workload, options):
    executed = simulate(name, workload, "h100", options=options, inputs=make_inputs(workload, 3))
    counted = simulate(name, workload, "h100", options=options, compute=False)
    assert counted.outputs == {} and executed.outputs
    assert kernel_counts(counted) == kernel_counts(executed)
    assert counted.counts == executed.counts
    assert counted.time.predicted_s == executed.time.predicted_s
    # the ALU's ops are a part of the elementwise ops, kernel by kernel (none at all where
    # nothing is compared: a backward from the saved lse, random Fourier features); every
    # algorithm narrows what it computes in fp32 to the fp16 it stores
    assert all(k.counts()["alu_ops"] <= k.counts()["other_flops"] for k in counted.kernels)
    assert counted.counts["convert_ops"] > 0


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(["flash1", "flash1-release", "flash1-tiles", "flash2", "ring",
                             "diff", "flash3-fp8", "gqa", "mla", "nsa"]),
       nq=st.integers(3, 300),
       extra_keys=st.integers(0, 200), d=st.sampled_from([16, 40, 64]),
       causal=st.booleans(), passes=st.sampled_from(["fwd", "fwd+bwd"]),
       dropout=st.sampled_from([0.0, 0.1]), sram_kb=st.sampled_from([None, 24, 48]))
def test_count_only_runs_of_tiles_equal_executed_tile_by_tile(name, nq, extra_keys, d, causal,
                                                              passes, dropout, sram_kb):
    """Count-only mode steps through a run of tiles (or Q blocks) that count alike once and
    scales it (flash_tile.count_tiles, same_tiles_run, rows_run: the flash2 forward and
    ring, the FlashAttention forward and both backward passes, the differential kernel, the
    packed kernel of GQA and MLA, NSA's compressed tiles and its selected positions);
    executed mode steps through every tile. Over ragged shapes, N_k >= N_q, causal or not,
    dropout and tile sizes (the SRAM budget picks them) the two count the same, kernel by
    kernel; FlashAttention-3's fp8 forward steps through its own tile loop."""
    if name == "ring":        # a forward, over 3 devices: lengths they divide, so none idles
        passes = "fwd"
        nq, extra_keys = nq - nq % 3, extra_keys - extra_keys % 3
    if name in ("diff", "flash3-fp8", "gqa", "mla", "nsa"):        # forward kernels
        passes = "fwd"
    if name == "nsa":         # causal by design
        causal = True
    dtype = "fp8" if name == "flash3-fp8" else "fp16"
    grid = {"flash1-release": {"grid": "release"},
            # the release's tiles and traffic (on its grid), which set their own tile sizes
            "flash1-tiles": {"grid": "release", "tiles": "release"}}.get(name, {})
    if name == "flash1-tiles":
        sram_kb = None
    name = name.removesuffix("-fp8").removesuffix("-release").removesuffix("-tiles")
    w = Workload(batch=1, heads=2, seq_q=nq, seq_k=nq + extra_keys, head_dim=d, causal=causal,
                 passes=passes, dropout=dropout if passes != "fwd" else 0.0, dtype=dtype,
                 kv_heads=1 if name == "gqa" else None)
    options = {"ring": {"devices": 3}, "mla": {"kv_lora_rank": 64, "rope_dim": 16},
               "nsa": {"selected": 3, "select_block": 32, "window": 48}}.get(name, grid)
    sram = sram_kb * 1024 if sram_kb else None
    executed = simulate(name, w, "h100", options=options, inputs=make_inputs(w, 5),
                        sram_bytes=sram)
    counted = simulate(name, w, "h100", options=options, compute=False, sram_bytes=sram)
    assert kernel_counts(counted) == kernel_counts(executed)
