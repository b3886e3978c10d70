"""Counted HBM traffic and FLOPs equal the closed forms each algorithm implies.

The closed forms are derived here from N, d, e and the plan's block sizes — by formula, or
by enumerating the (row block, column block) pairs — never by re-running the simulator.
"""
import dataclasses
import math

import pytest

from attnsim import Workload, simulate
from hwmodels.timing import smem_bytes

cdiv = lambda a, b: -(-a // b)  # noqa: E731

SHAPES = [  # batch, heads, seq_q, seq_k, head_dim
    (1, 1, 256, 256, 64),
    (2, 3, 333, 333, 40),
    (1, 2, 200, 517, 64),
    (1, 1, 300, 120, 32),
]
SRAM = 20 * 1024


def visible_tiles(nq, nk, br, bc, causal):
    """(rows, cols, needs_mask) of each visited tile, bottom-right causal alignment."""
    tiles = []
    for r0 in range(0, nq, br):
        rows = min(br, nq - r0)
        end = nk if not causal else max(0, min(nk, r0 + rows + nk - nq))
        for c0 in range(0, end, bc):
            cols = min(bc, nk - c0)
            tiles.append((rows, cols, causal and c0 + cols - 1 > r0 + nk - nq))
    return tiles


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("causal", [False, True])
def test_flash2_closed_form(shape, causal):
    b, h, nq, nk, d = shape
    wl = Workload(batch=b, heads=h, seq_q=nq, seq_k=nk, head_dim=d, causal=causal)
    r = simulate("flash2", wl, "h100", sram_bytes=SRAM, compute=False)
    br, bc, e, bh = r.plan["block_q"], r.plan["block_k"], 2, b * h
    tiles = visible_tiles(nq, nk, br, bc, causal)
    kv_tiles_cols = sum(cols for _, cols, _ in tiles)
    # Q once, K and V once per visited tile; O and the fp32 lse written once.
    assert r.counts["hbm_read_bytes"] == bh * (nq * d * e + 2 * kv_tiles_cols * d * e)
    assert r.counts["hbm_write_bytes"] == bh * (nq * d * e + 4 * nq)
    assert r.counts["matmul_flops"] == bh * sum(4 * rows * cols * d for rows, cols, _ in tiles)
    tile_exp = sum(rows * cols + rows for rows, cols, _ in tiles)
    assert r.counts["exp_ops"] == bh * (tile_exp + nq)
    tile_other = sum(4 * rows * cols + 4 * rows + rows * d + (rows * cols if m else 0)
                     for rows, cols, m in tiles)
    assert r.counts["other_flops"] == bh * (tile_other + nq * d + nq)
    # of them on the ALU: the row max and its max with m (r c + r), the causal select (r c)
    assert r.counts["alu_ops"] == bh * sum(rows * cols + rows + (rows * cols if m else 0)
                                           for rows, cols, m in tiles)
    # fp32 -> fp16: P before every P V product, O once
    assert r.counts["convert_ops"] == bh * (sum(rows * cols for rows, cols, _ in tiles) + nq * d)
    assert r.counts["kernel_launches"] == 1
    assert r.counts["ctas"] == bh * cdiv(nq, br)
    if not causal:
        tr = cdiv(nq, br)
        assert r.counts["hbm_read_bytes"] == bh * (nq * d * e + tr * 2 * nk * d * e)
        assert r.counts["matmul_flops"] == 4 * bh * nq * nk * d


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("causal", [False, True])
def test_flash1_closed_form(shape, causal):
    b, h, nq, nk, d = shape
    wl = Workload(batch=b, heads=h, seq_q=nq, seq_k=nk, head_dim=d, causal=causal)
    r = simulate("flash1", wl, "h100", sram_bytes=SRAM, compute=False)
    e, bh, stat = 2, b * h, 4
    m_elems = SRAM // e
    bc = math.ceil(m_elems / (4 * d))
    if bc * 4 * d > m_elems:
        bc = m_elems // (4 * d)
    br = min(bc, d)
    assert (r.plan["block_k"], r.plan["block_q"]) == (bc, br)
    # Algorithm 1's loop order: for each K/V block j, every Q block i that can see it.
    pairs = []
    for c0 in range(0, nk, bc):
        cols = min(bc, nk - c0)
        first_row = max(0, c0 - (nk - nq)) if causal else 0
        for r0 in range((first_row // br) * br, nq, br):
            rows = min(br, nq - r0)
            pairs.append((rows, cols, causal and c0 + cols - 1 > r0 + nk - nq))
    init = nq * d * e + 2 * nq * stat
    per_pair_read = sum(2 * rows * d * e + 2 * rows * stat for rows, _, _ in pairs)
    per_pair_write = sum(rows * d * e + 2 * rows * stat for rows, _, _ in pairs)
    assert r.counts["hbm_read_bytes"] == bh * (2 * nk * d * e + per_pair_read)
    assert r.counts["hbm_write_bytes"] == bh * (init + per_pair_write)
    assert r.counts["matmul_flops"] == bh * sum(4 * rows * cols * d for rows, cols, _ in pairs)
    assert r.counts["exp_ops"] == bh * sum(rows * cols + 2 * rows for rows, cols, _ in pairs)
    assert r.counts["other_flops"] == bh * sum(
        4 * rows * cols + 6 * rows + 4 * rows * d + (rows * cols if m else 0)
        for rows, cols, m in pairs)
    # ALU: row max (r c), m_new = max(m_i, m̃) (r), causal select (r c); conversions: P̃
    # before P̃ V and O_i on every store (r c + r d); the init kernel stores zeros, no
    # conversion
    assert r.counts["alu_ops"] == bh * sum(rows * cols + rows + (rows * cols if m else 0)
                                           for rows, cols, m in pairs)
    assert r.counts["convert_ops"] == bh * sum(rows * cols + rows * d for rows, cols, _ in pairs)
    assert r.counts["kernel_launches"] == 2 and r.counts["ctas"] == 2 * bh
    # the release's 4 split-K warps sum their fp32 partial P V (d) and row max and sum (2)
    # through shared memory on every visited pair: written and read back (pricing only)
    fwd = next(k for k in r.kernels if k.name == "flash1_fwd")
    exchange = bh * 2 * 4 * sum(rows for rows, _, _ in pairs) * (4 * d + 2 * stat)
    assert fwd.smem_exchange_bytes == exchange
    assert smem_bytes(fwd) - smem_bytes(dataclasses.replace(fwd, smem_exchange_bytes=0)) \
        == pytest.approx(exchange)
    if not causal:  # the paper's form: K, V once; Q, O, l, m once per K/V block
        tc = cdiv(nk, bc)
        assert r.counts["hbm_read_bytes"] == bh * (2 * nk * d * e + tc * (2 * nq * d * e + 8 * nq))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("causal", [False, True])
def test_standard_closed_form(shape, causal):
    b, h, nq, nk, d = shape
    wl = Workload(batch=b, heads=h, seq_q=nq, seq_k=nk, head_dim=d, causal=causal)
    r = simulate("standard", wl, "h100", sram_bytes=SRAM, compute=False)
    e, bh = 2, b * h
    tm, tn = r.plan["gemm_tile_m"], r.plan["gemm_tile_n"]
    assert r.plan["softmax_passes"] == 1          # rows of <= 517 fp16 fit in 20 KiB
    # S = QKᵀ: each output tile reads its Q rows and K rows; O = PV: its P rows and V.
    qk_read = (cdiv(nk, tn) * nq * d + cdiv(nq, tm) * nk * d) * e
    pv_read = (cdiv(d, tn) * nq * nk + cdiv(nq, tm) * nk * d) * e
    softmax = nq * nk * e                          # read S, write P
    mask_read = nq * nk * (e + 1) if causal else 0  # S and the boolean mask
    mask_write = nq * nk * e if causal else 0
    assert r.counts["hbm_read_bytes"] == bh * (qk_read + softmax + mask_read + pv_read)
    assert r.counts["hbm_write_bytes"] == bh * (nq * nk * e + softmax + mask_write + nq * d * e)
    assert r.counts["matmul_flops"] == bh * 4 * nq * nk * d
    assert r.counts["exp_ops"] == bh * nq * nk
    # scale in the GEMM epilogue, max/subtract/sum/divide in the softmax, select in the mask
    assert r.counts["other_flops"] == bh * nq * nk * (1 + 4 + (1 if causal else 0))
    # ALU: the softmax's max, the mask's select; conversions: S and O leave the GEMMs as
    # fp16, P leaves the softmax as fp16
    assert r.counts["alu_ops"] == bh * nq * nk * (1 + (1 if causal else 0))
    assert r.counts["convert_ops"] == bh * (2 * nq * nk + nq * d)
    assert r.counts["kernel_launches"] == (4 if causal else 3)


def test_standard_long_rows_take_two_passes():
    nq = nk = 4096
    wl = Workload(seq_q=nq, head_dim=64)
    r = simulate("standard", wl, "h100", sram_bytes=4096, compute=False)   # 2048 fp16 per row
    assert r.plan["softmax_passes"] == 2 and r.plan["softmax_chunk"] == 2048
    one = simulate("standard", wl, "h100", compute=False)
    assert r.counts["hbm_read_bytes"] - one.counts["hbm_read_bytes"] == nq * nk * 2 + _gemm_diff(r, one, wl)


def _gemm_diff(r, one, wl):
    """The GEMMs' tiles may also shrink with the budget: their reads differ by this much."""
    def gemm_reads(plan):
        tm, tn, nq, nk, d, e = plan["gemm_tile_m"], plan["gemm_tile_n"], wl.seq_q, wl.seq_k, wl.head_dim, 2
        return ((cdiv(nk, tn) * nq * d + cdiv(nq, tm) * nk * d) + (cdiv(d, tn) * nq * nk + cdiv(nq, tm) * nk * d)) * e
    return gemm_reads(r.plan) - gemm_reads(one.plan)


@pytest.mark.parametrize("dtype,e", [("fp16", 2), ("bf16", 2), ("fp32", 4), ("fp8", 1)])
def test_bytes_follow_the_storage_dtype(dtype, e):
    wl = Workload(seq_q=256, head_dim=64, dtype=dtype)
    r = simulate("flash2", wl, "h100", compute=False)
    tr = cdiv(256, r.plan["block_q"])
    assert r.counts["hbm_read_bytes"] == 256 * 64 * e + tr * 2 * 256 * 64 * e
    assert r.counts["hbm_write_bytes"] == 256 * 64 * e + 4 * 256   # lse stays fp32
