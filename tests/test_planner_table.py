"""flash2's and flash3's tile choices, table-driven: each row's tiles are derived by hand from
the rule each module's docstring states, over head dims, SRAM budgets M, dtypes and GPUs.

flash2 (algorithms/flash2): the largest B_r, then B_c, from {128, 64, 32, 16} such that
    shared memory (B_r + 2 B_c) d e <= M  and  fp32 registers 4 B_r (d + B_c) <= half the
    register file (256 KiB on every GPU in the catalog: 131072 B) and <= the 255 registers
    each of the CTA's 128 threads may hold (255·4·128 = 130560 B): 130560 B.
flash3 (algorithms/flash3): W consumer warpgroups of 64 rows (B_r = 64 W, W in 3, 2, 1)
    share the registers the producer warpgroup leaves (65536 - 128·24), in multiples of 8,
    at most 255 a thread: 160 a thread for W = 3, 240 for W = 2, 248 for W = 1. For each W
    the largest B_c from {176, 128, 112, 96, 64, 32, 16} with (B_r + 2 s B_c) d e <= M (s
    stages of K and V; fp8 adds a V_jᵀ per stage: 3 s B_c) and d/2 + B_c <= that share (a
    thread's O rows and two score tiles); the plan is the W with the largest B_r x B_c, the
    larger W on a tie; causal, the same W with B_c at most 128. Hopper only.
M = None: the GPU's shared memory per block (A100 166912 B, H100/H200 232448 B).
"""
import pytest

from algorithms.base import PlanError
from attnsim import Workload, simulate

KIB = 1024

FLASH2 = [
    # gpu, head_dim, dtype, M, (B_r, B_c), why
    ("a100-40gb", 64, "fp16", None, (128, 128), "384·64·2 = 48 KiB; regs 512·192 = 96 KiB"),
    ("h100-sxm", 64, "fp16", 32 * KIB, (128, 64), "128 + 2 B_c <= 256"),
    ("h100-sxm", 64, "fp16", 16 * KIB, (64, 32), "B_r = 128 leaves no room; 64 + 2 B_c <= 128"),
    ("h100-sxm", 64, "fp32", 48 * KIB, (128, 32), "4-byte rows: 128 + 2 B_c <= 192"),
    ("a100-80gb", 128, "fp16", None, (128, 64),
     "regs: B_c = 128 needs 512·256 = 131072 B, 256 a thread; 512·192 = 96 KiB"),
    ("h100-sxm", 128, "bf16", 64 * KIB, (128, 64), "128 + 2 B_c <= 256"),
    ("h100-sxm", 128, "fp16", 48 * KIB, (128, 32), "128 + 2 B_c <= 192"),
    ("h200", 256, "fp16", None, (64, 128), "regs: B_r = 128 needs 4·128·(256 + 16) > 128 KiB"),
    ("a100-40gb", 256, "fp16", 160 * KIB, (64, 128), "(64 + 256)·512 = 160 KiB exactly"),
    ("h100-pcie", 256, "fp16", 100 * KIB, (64, 64), "64 + 2 B_c <= 200"),
    ("h100-sxm", 40, "fp16", 24 * KIB, (128, 64), "(128 + 128)·80 = 20 KiB; B_c = 128 is 30 KiB"),
]

FLASH3 = [
    # gpu, head_dim, dtype, stages, M, (B_r, B_c), why
    ("h100-sxm", 64, "fp16", 2, None, (192, 128),
     "W 3: 32 + B_c <= 160 -> 128, smem 704·128 = 88 KiB; W 2: 128 x 176 is smaller"),
    ("h100-sxm", 64, "fp16", 2, 100 * KIB, (192, 128), "W 3: 192 + 4 B_c <= 800: B_c <= 152"),
    ("h100-sxm", 64, "fp16", 2, 64 * KIB, (192, 80),
     "W 3: 192 + 4 B_c <= 512 -> 80 (15360); W 2: 128 + 4 B_c <= 512 -> 96 (12288)"),
    ("h200", 128, "fp16", 2, None, (128, 176),
     "W 2: 64 + B_c <= 240, (128 + 704)·256 = 208 KiB; W 3: 64 + B_c <= 160 -> 192 x 96"),
    ("h100-pcie", 128, "bf16", 2, 160 * KIB, (192, 96),
     "W 3: regs -> 96, 192 + 384 <= 640; W 2: 128 + 4 B_c <= 640 -> 128 x 128 is smaller"),
    ("h100-sxm", 128, "fp16", 3, None, (192, 96),
     "W 3: 192 + 6·96 <= 908; W 2: 128 + 6 B_c <= 908 -> 128 x 128 is smaller"),
    ("h100-sxm", 256, "fp16", 2, None, (128, 80),
     "W 2: regs cap B_c at 112, 128 + 4 B_c <= 454 -> 80, the release's 128 x 80; "
     "W 3: 32 (6144); W 1: 96 (6144)"),
    # fp8 adds a transposed copy of V per stage (fp8 wgmma reads V K-major): B_r + 6 B_c rows
    ("h100-sxm", 128, "fp8", 2, 100 * KIB, (192, 96),
     "1-byte rows: W 3: 192 + 6·96 <= 800; W 2: 128 + 6 B_c <= 800 -> 112"),
    ("h100-sxm", 128, "fp8", 2, 104 * KIB, (192, 96), "W 2: 128 + 6 B_c <= 832 -> 112 only"),
    # where they fit, the fp8 release's own tiles (5018ac6a: 128 x 256 at d = 128)
    ("h100-sxm", 128, "fp8", 2, None, (128, 256), "(128 + 1536)·128 = 208 KiB <= 227 KiB"),
]


def plan_of(name, gpu, head_dim, dtype, sram, **options):
    wl = Workload(batch=1, heads=1, seq_q=512, head_dim=head_dim, dtype=dtype)
    return simulate(name, wl, gpu, compute=False, sram_bytes=sram, options=options).plan


@pytest.mark.parametrize("gpu, head_dim, dtype, sram, tiles, why", FLASH2)
def test_flash2_tiles(gpu, head_dim, dtype, sram, tiles, why):
    p = plan_of("flash2", gpu, head_dim, dtype, sram)
    assert (p["block_q"], p["block_k"]) == tiles, why
    e = {"fp16": 2, "bf16": 2, "fp32": 4}[dtype]
    assert p["smem_bytes"] == (tiles[0] + 2 * tiles[1]) * head_dim * e


@pytest.mark.parametrize("gpu, head_dim, dtype, stages, sram, tiles, why", FLASH3)
def test_flash3_tiles(gpu, head_dim, dtype, stages, sram, tiles, why):
    p = plan_of("flash3", gpu, head_dim, dtype, sram, stages=stages)
    assert (p["block_q"], p["block_k"], p["stages"]) == (*tiles, stages), why
    assert p["consumer_warpgroups"] == tiles[0] // 64
    e = {"fp16": 2, "bf16": 2, "fp8": 1}[dtype]
    per_stage = 3 if dtype == "fp8" else 2             # K_j, V_j (and V_jᵀ in fp8)
    assert p["smem_bytes"] == (tiles[0] + per_stage * stages * tiles[1]) * head_dim * e


def test_flash3_register_split_is_the_release_s():
    """setmaxnreg's split of a 64K-register SM with the producer at 24: 240 a consumer
    thread for two warpgroups and 160 for three, the release's MmaRegisterRequirement."""
    from algorithms.flash3 import consumer_registers_per_thread
    from hwmodels import get_gpu
    h100 = get_gpu("h100")
    assert [consumer_registers_per_thread(h100, w) for w in (1, 2, 3)] == [248, 240, 160]


@pytest.mark.parametrize("gpu", ["a100-40gb", "a100-80gb"])
def test_flash3_needs_hopper(gpu):
    with pytest.raises(PlanError, match="wgmma"):
        plan_of("flash3", gpu, 64, "fp16", None)


def test_flash2_d128_tile_is_set_by_the_registers_a_thread_may_hold():
    """At d = 128 the 128 x 128 tile's accumulators (4·128·(128 + 128) = 131072 B over 128
    threads) need 256 registers a thread, one more than cc 8.0/9.0 allow: a GPU whose threads
    could hold 256 would take it (the half register file allows it), the A100 takes 128 x 64."""
    from hwmodels import get_gpu
    a100 = get_gpu("a100-80gb")
    assert plan_of("flash2", a100, 128, "fp16", None)["block_k"] == 64
    roomier = a100.replace(max_registers_per_thread=256)
    assert plan_of("flash2", roomier, 128, "fp16", None)["block_k"] == 128


@pytest.mark.parametrize("head_dim, tiles", [(64, (192, 128)), (128, (128, 128)),
                                             (256, (128, 80))])
def test_flash3_causal_keeps_the_warpgroups_and_narrows_b_c_to_128(head_dim, tiles):
    """Causal, the release runs the same kernel with B_c at most 128 ("Is_causal ? 128 :
    176" at d = 128): the non-causal W, B_c = min(B_c, 128)."""
    wl = Workload(batch=1, heads=1, seq_q=512, head_dim=head_dim, causal=True)
    p = simulate("flash3", wl, "h100", compute=False).plan
    assert (p["block_q"], p["block_k"]) == tiles


def test_no_kernel_asks_more_registers_a_thread_than_the_hardware_has():
    """Every kernel's declared fp32 tiles fit the 255 registers a thread may hold (cc 8.0 and
    9.0) over the threads it declares, at d = 64 and 128, causal and not, on the H100."""
    from algorithms.registry import algorithm_names
    over = set()
    for name in algorithm_names():
        for head_dim in (64, 128):
            for causal in (False, True):
                wl = Workload(batch=1, heads=4, seq_q=2048, head_dim=head_dim, causal=causal)
                try:
                    result = simulate(name, wl, "h100", compute=False)
                except PlanError:
                    continue
                for k in result.kernels:
                    if k.register_bytes_per_cta > result.gpu.register_bytes_for_threads(
                            k.threads_per_cta):
                        over.add((name, k.name, head_dim, causal))
    assert over == set()


def warps_and_readers(name: str, **workload) -> tuple[int, int]:
    wl = Workload(batch=1, heads=4, seq_q=2048, head_dim=128, **workload)
    k = simulate(name, wl, "h100", compute=False).kernels[0]
    return k.threads_per_cta // 32, k.smem_readers


def test_mma_sync_kernels_lay_out_warps_as_flashattention_2():
    """Two 16-row tiles a warp when the fp32 tiles fit (each warp reads K_j and V_j once for
    32 rows), else one: at d = 128, FA-2's 128 x 64 tile takes 4 warps (192 registers a
    thread); block_sparse's 128 x 128 and diff's two 2d-wide maps take 8 (4 would need 256
    and 384); GQA per head is FlashAttention-2 exactly, tiles included."""
    assert warps_and_readers("flash2") == (4, 4)
    assert warps_and_readers("block_sparse") == (8, 8)
    assert warps_and_readers("diff") == (8, 8)
    assert warps_and_readers("gqa", kv_heads=1) == (4, 4)
    gqa = simulate("gqa", Workload(batch=1, heads=4, kv_heads=1, seq_q=2048, head_dim=128),
                   "h100", compute=False).plan
    flash2 = simulate("flash2", Workload(batch=1, heads=4, seq_q=2048, head_dim=128),
                      "h100", compute=False).plan
    assert (gqa["block_q"], gqa["block_k"]) == (flash2["block_q"], flash2["block_k"])
