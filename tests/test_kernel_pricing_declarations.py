"""What every kernel tells the timing model beyond its counts, checked across the registry.

The timing model prices a CTA's prologue (its first tiles at DRAM latency, ``hwmodels.timing``)
from ``prologue_bytes_per_cta`` and the causal imbalance of a grid from ``cta_work``. A kernel
that leaves them out is not priced by those mechanisms at all, so two kernels that run the same
tile loop over the same tiles would get different times. These tests hold every tensor-core
kernel of every registered algorithm (the cases of ``test_count_only_registry``) to declaring
them, and kernels that share FlashAttention-2's forward loop to the same predicted time.
"""
import dataclasses

import numpy as np
import pytest

from algorithms.kernels.common import key_tiles_per_row_block
from attnsim import Workload, simulate
from test_count_only_registry import CASES

ALL_CASES = [pytest.param(n, w, o, id=f"{n}-{i}") for n, cases in CASES.items()
             for i, (w, o) in enumerate(cases)]


@pytest.mark.parametrize("name, workload, options", ALL_CASES)
def test_every_tensor_core_kernel_declares_what_its_first_mma_waits_for(name, workload, options):
    """A CTA's first MMA waits for its first operand tiles: some but not more than the
    shared memory it declares."""
    r = simulate(name, workload, "h100", options=options, compute=False)
    for k in r.kernels:
        if k.tc_path == "none" or not k.buffers:
            continue
        assert 0 < k.prologue_bytes_per_cta <= k.sram_bytes_per_cta, (k.name, k.buffers)


@pytest.mark.parametrize("name, workload, options", ALL_CASES)
def test_causal_tile_loops_declare_their_work_per_cta(name, workload, options):
    """A causal grid whose CTAs visit different numbers of tiles declares them (wave
    quantization and causal imbalance); and the declared work is the tiles the CTA visits."""
    r = simulate(name, workload, "h100", options=options, compute=False)
    for k in r.kernels:
        if k.cta_work is not None:
            assert k.cta_work.min() >= 1 and np.all(np.isfinite(k.cta_work)), k.name
    if name in ("flash2", "diff", "ring", "local", "gqa") and workload.causal:
        loops = [k for k in r.kernels if k.tc_path != "none"]
        assert loops and all(k.cta_work is not None for k in loops), [k.name for k in loops]


# kernels whose warps declare a layout but write no normalized tile: the hash kernel's output
# is a bucket id per row and round (an argmax)
NO_OUTPUT_TILE = {"reformer_hash"}


@pytest.mark.parametrize("name, workload, options", ALL_CASES)
def test_every_attention_tile_loop_declares_its_epilogue(name, workload, options):
    """A kernel whose warps take rows of a tile loop (``mma_rows_per_cta``) finishes output
    rows (normalized, converted, staged for the store) once its tiles are done, and declares
    how many elements; kernels priced at a measured GEMM rate do not, as cuBLAS's rate holds
    its own epilogue."""
    r = simulate(name, workload, "h100", options=options, compute=False)
    for k in r.kernels:
        if k.tc_path == "none" or k.mma_rows_per_cta <= 0 or k.name in NO_OUTPUT_TILE:
            continue
        assert k.epilogue_elements_per_cta > 0, k.name
        assert k.epilogue_elements_per_cta % workload.head_dim == 0 \
            or name in ("linear", "rfa", "performer"), k.name       # state slices: m_t x d


def test_the_flash_loops_declare_their_output_tile():
    """FlashAttention-2's and -3's forward finish O_i (B_r x d) after their last tile; the
    FA-2 backward dK_j and dV_j (2 B_c x d); FlashAttention v1 writes O_i back after every
    inner step (Algorithm 1 line 12): the rows of all the tiles it visits."""
    wl = Workload(batch=2, heads=4, seq_q=1000, head_dim=64, causal=True, passes="fwd+bwd")
    r = simulate("flash2", wl, "h100", compute=False)
    fwd, bwd = (k for k in r.kernels if k.name in ("flash2_fwd", "flash2_bwd"))
    assert fwd.epilogue_elements_per_cta == r.plan["block_q"] * 64
    assert bwd.epilogue_elements_per_cta == 2 * r.plan["bwd"]["block_k"] * 64
    r3 = simulate("flash3", wl.replace(passes="fwd"), "h100", compute=False)
    assert r3.kernels[0].epilogue_elements_per_cta == r3.plan["block_q"] * 64
    r1 = simulate("flash1", wl.replace(passes="fwd"), "h100", compute=False)
    (f1,) = [k for k in r1.kernels if k.name == "flash1_fwd"]
    bq, bk = r1.plan["block_q"], r1.plan["block_k"]
    visited = sum(1000 - (max(0, c0 - 0) // bq) * bq for c0 in range(0, 1000, bk))
    assert f1.epilogue_elements_per_cta == 64 * visited


def test_key_tiles_per_row_block_counts_the_tiles_the_loop_visits():
    """Rows [0, 100) in blocks of 32 against keys [0, 130), bottom-right causal (offset 30):
    the row blocks end at 32, 64, 96, 100, so they see keys up to 62, 94, 126, 130: 4, 6, 8,
    9 tiles of 16; keys [64, 130) only: 1 (nothing visible, the epilogue), 2, 4, 5."""
    tiles = key_tiles_per_row_block(0, 100, 0, 130, 100, 130, 32, 16, True)
    assert tiles.tolist() == [4, 6, 8, 9]
    assert key_tiles_per_row_block(0, 100, 64, 130, 100, 130, 32, 16, True).tolist() == [1, 2, 4, 5]
    assert key_tiles_per_row_block(0, 100, 0, 130, 100, 130, 32, 16, False).tolist() == [9] * 4
    # rows [40, 100) of a longer grid: the first block is rows 40..72
    assert key_tiles_per_row_block(40, 100, 0, 130, 100, 130, 32, 16, True).tolist() == [7, 9]


# (algorithm, options, relative tolerance): the sliding window reads its block layout (an
# index per visited tile) besides FlashAttention-2's traffic
FA2_FORWARD_LOOP = [("gqa", {}, 1e-12), ("ring", {"devices": 1}, 1e-12),
                    ("local", {"window": 1 << 20}, 1e-4)]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("seq, d", [(512, 128), (1000, 64), (4096, 128)])
def test_the_same_tile_loop_gets_the_same_time(seq, d, causal):
    """Sliding-window attention with a window past N, MHA through the GQA kernel and Ring
    Attention on one device run FlashAttention-2's forward over the same tiles: the same
    FLOPs, CTA work and prologue, so the same predicted time, prologue and causal imbalance
    included."""
    wl = Workload(batch=4, heads=16, seq_q=seq, head_dim=d, causal=causal)
    (f,) = (flash2 := simulate("flash2", wl, "h100", compute=False)).kernels
    for name, options, rel in FA2_FORWARD_LOOP:
        (k,) = (r := simulate(name, wl, "h100", options=options, compute=False)).kernels
        assert (k.counts()["matmul_flops"], k.cta_work.tolist(), k.prologue_bytes_per_cta) == \
            (f.counts()["matmul_flops"], f.cta_work.tolist(), f.prologue_bytes_per_cta), name
        assert r.time.predicted_s == pytest.approx(flash2.time.predicted_s, rel=rel), name


@pytest.mark.parametrize("name, workload, options", ALL_CASES)
def test_declared_compulsory_traffic_is_at_most_what_the_kernel_moves(name, workload, options):
    """``unique_hbm_bytes`` is every distinct byte read once and every output written once:
    never more than the kernel's counted requests."""
    r = simulate(name, workload, "h100", options=options, compute=False)
    for k in r.kernels:
        c = k.counts()
        if k.unique_hbm_bytes is not None:
            assert 0 < k.unique_hbm_bytes <= c["hbm_read_bytes"] + c["hbm_write_bytes"], k.name


def test_feature_slices_and_query_tiles_re_read_from_l2():
    """Performer at d = 128 slices its 621 features (the state alone is 318 KB): each slice's
    state CTA streams the head's K, V, and each query tile's apply CTA reads the head's W, S,
    z and key shifts. Those re-reads stay in L2 (the slices of a head stream together, a
    head's state is small), so DRAM moves each byte once: per head K, V, W and the state for
    the state kernel; Q, O, W and the state for the apply kernel."""
    wl = Workload(batch=2, heads=8, seq_q=4096, head_dim=128)
    r = simulate("performer", wl, "h100", compute=False)
    p, e, d, n, heads = r.plan, 2, 128, 4096, 16
    m, w, tiles = p["features"], p["projections"] * d * e, p["feature_tiles"]
    state = 4 * (m * d + m) + 4 * tiles
    assert tiles > 1
    expected = {"performer_state": heads * (2 * n * d * e + w + state),
                "performer_apply": heads * (2 * n * d * e + w + state)}
    for k, t in zip(r.kernels, r.time.kernels):
        c = k.counts()
        assert c["hbm_read_bytes"] + c["hbm_write_bytes"] > 2 * expected[k.name]
        assert t.dram_bytes == k.unique_hbm_bytes == expected[k.name]


ATTENTION_TILE_LOOPS = {"flash1": "flash1_fwd", "flash2": "flash2_fwd", "gqa": "gqa_fwd",
                        "local": "local_fwd", "diff": "diff_fwd", "ring": "ring_step0",
                        "nsa": "nsa_cmp", "reformer": "reformer_attn", "flash3": "flash3_fwd"}


@pytest.mark.parametrize("name", sorted(ATTENTION_TILE_LOOPS))
def test_attention_tile_loops_price_every_warps_operand_reads(name):
    """A CTA whose warps (warpgroups) each take some query rows and read all of the K and V
    tiles declares how many read them, so shared memory is priced per reader
    (``hwmodels.timing``): the Reformer port, for one, gives each 16 queries a warp."""
    wl, options = CASES[name][0]
    r = simulate(name, wl, "h100", options=options, compute=False)
    (k,) = [k for k in r.kernels if k.name == ATTENTION_TILE_LOOPS[name]]
    assert k.smem_readers > 1 and k.mma_rows_per_cta > 0, k.name
    if name == "reformer":
        assert (k.smem_readers, k.mma_rows_per_cta) == (r.plan["bucket_size"] // 16,
                                                       r.plan["bucket_size"])


@pytest.mark.parametrize("name", ["linear", "rfa", "performer"])
@pytest.mark.parametrize("causal", [False, True])
def test_feature_kernels_price_each_strips_operand_reads(name, causal):
    """The feature-map kernels' warps (the port's loops over 16-row tiles) each compute one
    16-row strip of a product at a time, reading the whole other operand for it."""
    wl = Workload(batch=2, heads=4, seq_q=1024, head_dim=64, causal=causal)
    r = simulate(name, wl, "h100", compute=False)
    block = r.plan["block"]
    for k in r.kernels:
        if k.tc_path != "none":
            assert (k.smem_readers, k.mma_rows_per_cta) == (-(-block // 16), block), k.name


# the kernels that run FlashAttention-2's tile step (``flash_tile.count_tile``) and feed its P
# to the P V product from registers, as FlashAttention-2's and -3's releases do
P_IN_REGISTERS = ("flash2_fwd", "flash3_fwd", "local_fwd", "longformer_fwd", "bigbird_fwd",
                  "block_sparse_fwd", "sparse_transformer_fwd", "sparse_transformer_blocked_fwd",
                  "nsa_win_fwd", "ring_step")


@pytest.mark.parametrize("name, workload, options", ALL_CASES)
def test_flash_tile_loops_keep_p_off_the_shared_memory_pipe(name, workload, options):
    """Every kernel of the flash tile step declares its P reads as register operands (e / 4d
    per matmul FLOP), never more than the SRAM reads it counts; so does FlashAttention v1's
    release program, for K_j and V_j too, and its backward for dS (and V_j); no other
    kernel does."""
    r = simulate(name, workload, "h100", options=options, compute=False)
    for k in r.kernels:
        rate = k.register_operand_bytes_per_flop
        if k.name.startswith(P_IN_REGISTERS):
            e = 1 if k.matmul_dtype == "fp8" else workload.elem_bytes
            assert rate == pytest.approx(e / (4 * workload.head_dim)), k.name
            assert rate * k.counts()["matmul_flops"] <= k.counts()["sram_read_bytes"], k.name
        elif k.name == "flash1_fwd" and options.get("tiles") == "release":
            # the release's warps hold K_j, V_j and P̃ in registers: (2 B_c d + 16 B_c) e
            # bytes of a 16-row step's reads per its 64 B_c d FLOPs
            e = workload.elem_bytes
            assert rate == pytest.approx(e / 32 + e / (4 * workload.head_dim)), k.name
            assert rate * k.counts()["matmul_flops"] <= k.counts()["sram_read_bytes"], k.name
        elif k.name == "flash1_bwd" and options.get("tiles") == "release":
            # its backward warps hold their own dS (dQ_i = dS K_j) in registers, V_j too
            # (dP = dO_i V_jᵀ) at d <= 64 on keys <= 128 only, on the A100 and the H100
            # alike, and reload K_j from shared memory: 16 c e (+ c d e) of a 16-row step's
            # reads per its 160 c d FLOPs
            e, d = workload.elem_bytes, workload.head_dim
            v_in_registers = d <= 64 and workload.seq_k <= 128
            assert rate == pytest.approx(e / (10 * d)
                                         + (e / 160 if v_in_registers else 0)), k.name
            assert rate * k.counts()["matmul_flops"] <= k.counts()["sram_read_bytes"], k.name
        elif k.name == "flash3_bwd":
            # FlashAttention-3's backward warpgroups keep P for dV_j and dS for dK_j in
            # registers (wgmma's A operand): 2 r c e of a tile's reads per its 10 r c d FLOPs
            e = workload.elem_bytes
            assert rate == pytest.approx(e / (5 * workload.head_dim)), k.name
            assert rate * k.counts()["matmul_flops"] <= k.counts()["sram_read_bytes"], k.name
        else:
            assert rate == 0, k.name


def test_p_in_registers_is_the_tiles_p_in_closed_form():
    """Non-causal FlashAttention-2 forward: every tile's P (B_r x B_c, e bytes) is counted as an
    SRAM read, B H N_q N_k e in all, and exactly those bytes leave the shared-memory term."""
    from hwmodels.timing import TimingOptions, smem_bytes
    wl = Workload(batch=2, heads=4, seq_q=1000, seq_k=700, head_dim=64)
    (k,) = simulate("flash2", wl, "h100", compute=False).kernels
    p_bytes = 2 * 4 * 1000 * 700 * wl.elem_bytes
    assert k.register_operand_bytes_per_flop * k.counts()["matmul_flops"] == p_bytes
    without = dataclasses.replace(k, register_operand_bytes_per_flop=0.0)
    assert smem_bytes(without) - smem_bytes(k) == pytest.approx(p_bytes)
    assert TimingOptions().smem_bandwidth


@pytest.mark.parametrize("name, seq_q, options, rows, tile_rows, mma_rows", [
    # one query row in FlashAttention-2's 128-row tile (d = 128): a decode step
    ("flash2", 1, {"tiles": "release"}, 1, 128, 16),
    # FlashAttention-3's 192-row tiles at d = 64 overrun 512 rows by a third of a tile
    ("flash3", 512, {}, 512, 192, 64),
    # the v1 release's 16-row steps
    ("flash1", 40, {"tiles": "release", "grid": "release"}, 40, 16, 16),
])
def test_flash_forwards_declare_the_rows_they_compute(name, seq_q, options, rows, tile_rows,
                                                      mma_rows):
    """A forward kernel computes whole row tiles, the rows past N_q included, and declares the
    rows it computes over the rows counted (``row_padding``), in closed form."""
    d = 64 if name == "flash3" else 128
    wl = Workload(batch=2, heads=4, seq_q=seq_q, seq_k=1024, head_dim=d)
    r = simulate(name, wl, "h100", options=options, compute=False)
    fwd = next(k for k in r.kernels if k.name.endswith("_fwd"))
    computed = -(-rows // tile_rows) * tile_rows
    assert -(-tile_rows // mma_rows) * mma_rows == tile_rows
    assert fwd.row_padding == pytest.approx(computed / rows)


def test_split_kv_decode_declares_its_packs_mma_rows():
    """``gqa``'s decode packs a group's query heads into a CTA's rows: 8 heads of one new
    token fill half of a 16-row ``mma.sync`` tile; 16 heads fill it."""
    for kv_heads, padding in ((2, 2.0), (1, 1.0)):
        wl = Workload(batch=2, heads=16, kv_heads=kv_heads, seq_q=1, seq_k=4096,
                      head_dim=128, decode=True)
        k = simulate("gqa", wl, "a100", compute=False).kernels[0]
        assert k.tc_path == "mma_sync" and k.mma_rows_per_cta == 16 // kv_heads
        assert k.row_padding == padding, kv_heads


def test_gqa_release_tiles_are_flash_attns_split_kv_cta():
    """``gqa --tiles release`` decodes as flash-attn's split-KV kernel: a group's query rows
    in a 64-row tile computed whole on 4 warps that each read the K/V tiles (of 128 keys at
    d = 128, 256 at d = 64); the traffic the step counts is the default tiles' but for the
    query rows each split reads (the splits follow the key blocks)."""
    for d, block_k in ((128, 128), (64, 256)):
        wl = Workload(batch=2, heads=16, kv_heads=2, seq_q=1, seq_k=4096, head_dim=d,
                      decode=True)
        r = simulate("gqa", wl, "a100", compute=False, options={"tiles": "release"})
        k = r.kernels[0]
        assert r.plan["block_k"] == block_k and r.plan["tile_rows"] == 64
        assert (k.threads_per_cta, k.smem_readers, k.mma_rows_per_cta) == (128, 4, 64)
        assert k.row_padding == 64 / 8
        auto = simulate("gqa", wl, "a100", compute=False)
        # the attention kernels read the cache once and the queries once a split
        reads = [x.kernels[0].counts()["hbm_read_bytes"] for x in (r, auto)]
        q_once = wl.batch * wl.heads * d * 2
        cache = 2 * wl.batch * wl.kv_heads * wl.seq_k * d * 2
        assert reads == [cache + q_once * x.plan["splits"] for x in (r, auto)]
        assert r.counts["matmul_flops"] == auto.counts["matmul_flops"]


@pytest.mark.parametrize("name, options", [("flash2", {"tiles": "release"}), ("flash3", {}),
                                           ("flash1", {"tiles": "release"})])
def test_a_ctas_first_mma_waits_for_the_q_rows_it_loads(name, options):
    """The rows of a Q tile past the sequence are not loaded (flash_fwd_kernel.h; FA-3's TMA
    fills them without reading): one query row's CTA waits for one row of Q and its first
    K tile, not for the whole Q tile its shared memory holds."""
    d = 128
    wl = Workload(batch=2, heads=4, seq_q=1, seq_k=1024, head_dim=d)
    r = simulate(name, wl, "h100", options=options, compute=False)
    k = next(k for k in r.kernels if k.name.endswith("_fwd"))
    assert k.prologue_bytes_per_cta == (1 + r.plan["block_k"]) * d * wl.elem_bytes
    assert k.prologue_bytes_per_cta < r.plan["block_q"] * d * wl.elem_bytes + \
        r.plan["block_k"] * d * wl.elem_bytes
