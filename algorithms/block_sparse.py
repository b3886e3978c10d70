"""Block-sparse FlashAttention — Dao et al., "FlashAttention: Fast and Memory-Efficient Exact
Attention with IO-Awareness" (2022, arXiv 2205.14135), §3.3 and Proposition 4, with the
FlashAttention-2 forward (arXiv 2307.08691) as the dense kernel it sparsifies.

Idea: given a block mask over B x B tiles, skip the zero tiles entirely; IO and FLOPs scale
with the fraction s of non-zero tiles.

Pattern: either a random block mask — each of the T_r query blocks keeps
k = max(1, round(s T_c)) of the T_c key blocks, uniformly without replacement from
``np.random.default_rng(seed)`` (block density exactly k / T_c, linear in s) — or a boolean
(T_r, T_c) block mask loaded from ``--mask-file`` (.npy), which then overrides --density and
--seed. ``causal`` intersects the mask with the causal mask (tiles above the diagonal
dropped, diagonal tiles masked elementwise).

Notation -> code: s == ``density`` (--density), B == ``block`` (--block; B_r = B_c = B;
default the largest of 128, 64, 32, 16 that fits SRAM and the register budget of FA-2's plan),
``seed`` (--seed), ``mask_file`` (--mask-file).
HBM traffic: the block-sparse executor's (``algorithms.kernels.block_sparse_exec``):
    reads = N_q d e + Σ_tiles 2 c_t d e + 8 T_r + 4 nnz, writes = N_q d e + 4 N_q.
IO bound (Proposition 4): Θ(N d + N² d² M⁻¹ s) = Θ(N d + s N² d / B) with B ∝ M/d.
FLOPs: 4 B² d per tile, s times FA-2's.
Differences from the paper: the paper's kernel is FlashAttention-1's loop order (K/V blocks
outer); here FA-2's (Q blocks outer, one CTA each), which reads Q once instead of O, ℓ, m
per tile — the same Θ bound.
"""
from __future__ import annotations

import os
import struct
import sys
from dataclasses import dataclass

import numpy as np

from algorithms.base import AlgorithmInfo, Option, PlanError
from algorithms.kernels.block_sparse_exec import (TilePlan, fixed_tile_plan, positive_int,
                                          pattern_footprint, run_pattern, sparse_io_bound,
                                          square_tile_plan)
from algorithms.kernels.common import cdiv
from algorithms.kernels.footprints import INDEX_BYTES
from algorithms.kernels.sparse_patterns import (MAX_LAYOUT_TILES, block_layout,
                                                layout_element_mask, random_block_csr,
                                                too_many_tiles)
from hwmodels.footprint import Allocation

DEFAULT_DENSITY = 0.25


def _density_in_range(s):
    return None if 0.0 < s <= 1.0 else f"must be in (0, 1] (fraction of non-zero blocks), got {s}"


INFO = AlgorithmInfo(
    name="block_sparse",
    title="Block-sparse FlashAttention (FA-2 forward over a block mask)",
    paper="Dao et al., 2022 (arXiv 2205.14135), Proposition 4",
    exact=True,
    io_bound="Θ(Nd + N²d²M⁻¹s)",
    options=(
        Option("density", float, DEFAULT_DENSITY, "fraction s of non-zero blocks (random mask)",
               validate=_density_in_range),
        Option("block", int, None, "block size B (B_r = B_c = B; default: the largest of "
               "128, 64, 32, 16 that fits SRAM and registers)",
               validate=positive_int("tokens per block")),
        Option("seed", int, 0, "seed of the random block mask"),
        Option("mask_file", str, None, "boolean (T_r, T_c) block mask as .npy (overrides "
               "--density and --seed)"),
    ),
    count_only="exact: the block layout is built from the block mask, no N² mask",
)


@dataclass(frozen=True)
class BlockSparsePlan(TilePlan):
    density: float          # requested s (random mask) or the file's block density
    blocks_per_row: int     # k for the random mask (0 with a mask file)
    seed: int
    mask_file: str | None


# the mask is read this many bytes of rows at a time: np.nonzero of a chunk takes 16 bytes per
# kept block, so a chunk's indices stay within 64 MiB whatever the file's size
MASK_CHUNK_BYTES = 2**22
MAX_NPY_HEADER_BYTES = 10_000   # numpy's own limit on the headers it parses (max_header_size)


def load_block_mask(path: str, tq: int, tk: int, block: int) -> tuple[np.ndarray, np.ndarray]:
    """The boolean (T_r, T_c) block mask in ``path`` as CSR (row_ptr, cols). The .npy header
    is checked against the tiling and the file's size before any data is read, and the data
    is walked in row chunks of a memory map, so neither a header claiming a huge shape nor a
    large mask allocates more than the kept blocks' indices."""
    name = f"block_sparse: --mask-file {path!r}"
    if not os.path.exists(path):
        raise PlanError(f"{name} does not exist")
    if not os.path.isfile(path):        # a device or pipe: /dev/zero would never end
        raise PlanError(f"{name} is not a regular file; give a .npy file (numpy.save)")
    shape, fortran, dtype, offset = read_npy_header(path, name)
    if dtype != np.bool_ and not np.issubdtype(dtype, np.integer):
        raise PlanError(f"{name} must hold booleans (or 0/1), got dtype {dtype}")
    if shape != (tq, tk):
        raise PlanError(f"{name} holds a {shape} mask but --block {block} tiles this workload "
                        f"into ({tq}, {tk}) blocks (T_r, T_c); save a ({tq}, {tk}) mask")
    data_bytes = tq * tk * dtype.itemsize
    if os.path.getsize(path) - offset < data_bytes:
        raise PlanError(f"{name} is truncated: its {shape} {dtype} mask needs {data_bytes:,} "
                        f"bytes of data, the file holds {os.path.getsize(path) - offset:,}")
    mask = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape,
                     order="F" if fortran else "C")
    row_ptr, cols = mask_to_csr_in_chunks(mask, name)
    if row_ptr[-1] == 0:
        raise PlanError(f"{name} has no non-zero block")
    return row_ptr, cols


def read_npy_header(path: str, name: str):
    """(shape, fortran order, dtype, data offset) of the .npy file ``path``, read from its
    header alone; PlanError naming ``name`` for an .npz archive, a file that is not .npy or a
    damaged header."""
    with open(path, "rb") as fh:
        start = fh.read(12)            # magic, version, header length (2 or 4 bytes)
        if start[:4] == b"PK\x03\x04":        # a zip: what numpy.savez writes
            raise PlanError(f"{name} is a .npz archive; save the (T_r, T_c) mask alone with "
                            f"numpy.save (.npy)")
        if start[:6] != b"\x93NUMPY":
            raise PlanError(f"{name} is not a .npy file (it does not begin with numpy's "
                            f".npy header); save the mask with numpy.save")
        # numpy allocates the header length a version 2 file claims (up to 4 GiB) to read it
        claimed = struct.unpack("<I", start[8:])[0] if len(start) == 12 else 0
        if start[6:8] == b"\x02\x00" and claimed > MAX_NPY_HEADER_BYTES:
            raise PlanError(f"{name} has a damaged .npy header (it claims {claimed:,} bytes of "
                            f"header); save the mask with numpy.save")
        fh.seek(0)
        try:
            version = np.lib.format.read_magic(fh)
            if version not in ((1, 0), (2, 0)):     # 3.0: utf-8 field names, never a mask
                raise ValueError(f"format version {version[0]}.{version[1]}")
            shape, fortran, dtype = (np.lib.format.read_array_header_1_0(fh) if version == (1, 0)
                                     else np.lib.format.read_array_header_2_0(fh))
        except Exception as err:        # numpy's header parser also raises tokenize's errors
            raise PlanError(f"{name} has a damaged or unsupported .npy header ({err}); save "
                            f"the mask with numpy.save") from None
        return shape, fortran, dtype, fh.tell()


def mask_to_csr_in_chunks(mask, name: str) -> tuple[np.ndarray, np.ndarray]:
    """CSR (row_ptr, cols) of the non-zero entries of a (T_r, T_c) 0/1 array, walked
    ``MASK_CHUNK_BYTES`` of rows at a time; refused past ``MAX_LAYOUT_TILES`` kept blocks
    before their indices are built."""
    tq, tk = mask.shape
    step = max(1, MASK_CHUNK_BYTES // (tk * mask.dtype.itemsize))
    row_ptr, cols, kept = np.zeros(tq + 1, dtype=np.int64), [], 0
    for r0 in range(0, tq, step):
        chunk = mask[r0:r0 + step]
        if chunk.dtype != np.bool_ and not np.isin(chunk, (0, 1)).all():
            raise PlanError(f"{name} must hold booleans (or 0/1), got dtype {mask.dtype} with "
                            f"other values")
        per_row = np.count_nonzero(chunk, axis=1)
        row_ptr[r0 + 1:r0 + 1 + len(chunk)] = per_row
        kept += int(per_row.sum())
        if kept > MAX_LAYOUT_TILES:
            raise too_many_tiles(kept, tq, "at least " if r0 + step < tq else "")
        cols.append(np.nonzero(chunk)[1].astype(np.int64))
    np.cumsum(row_ptr, out=row_ptr)
    return row_ptr, np.concatenate(cols)


def plan(wl, gpu, sram_bytes: int, density: float = DEFAULT_DENSITY, block: int | None = None,
         seed: int = 0, mask_file: str | None = None) -> BlockSparsePlan:
    if block is None:
        tiles = square_tile_plan(wl, gpu, sram_bytes, "block_sparse")
    else:
        tiles = fixed_tile_plan(wl, gpu, sram_bytes, block, "block_sparse")
    block = tiles.block_q
    tq, tk = cdiv(wl.seq_q, block), cdiv(wl.seq_k, block)
    per_row = 0
    if mask_file:
        density = len(load_block_mask(mask_file, tq, tk, block)[1]) / (tq * tk)
    else:
        per_row = max(1, round(density * tk))
    return BlockSparsePlan(**tiles.to_dict(), density=density, blocks_per_row=per_row,
                           seed=seed, mask_file=mask_file)


def layout(wl, p: BlockSparsePlan):
    tq, tk = cdiv(wl.seq_q, p.block_q), cdiv(wl.seq_k, p.block_k)
    if p.mask_file:
        row_ptr, cols = load_block_mask(p.mask_file, tq, tk, p.block_q)
    else:
        row_ptr, cols = random_block_csr(tq, tk, p.blocks_per_row, p.seed)
    return block_layout(row_ptr, cols, wl.causal, wl.seq_q, wl.seq_k, p.block_q)


def pattern_params(p) -> dict:
    return {"block": p.block_q, "requested_density": p.density, "seed": p.seed,
            "mask_file": p.mask_file}


def element_mask(wl, p) -> np.ndarray:
    """Boolean (N_q, N_k) mask: the visited tiles expanded, causal included (executed mode)."""
    return layout_element_mask(layout(wl, p), wl.causal)


def run(wl, p, inputs, rec, compute: bool) -> dict:
    return run_pattern(sys.modules[__name__], wl, p, inputs, rec, compute)


def io_bound(wl, p: BlockSparsePlan, sram_bytes: int) -> float:
    """Proposition 4: (N_q d + s N_q N_k d / B) e with s the mask's block density."""
    tk = cdiv(wl.seq_k, p.block_k)
    s = p.blocks_per_row / tk if not p.mask_file else p.density
    return sparse_io_bound(wl, p.block_q, s)


def footprint(wl, p):
    """Q, K, V, O, lse and the block list the kernel is given: CSR row pointers (T_r + 1) and
    one int32 column per kept block (T_r k for the random mask, the mask file's non-zero
    blocks); causal skipping of the blocks above the diagonal is index arithmetic."""
    tq = cdiv(wl.seq_q, p.block_q)
    if p.mask_file:
        kept = len(load_block_mask(p.mask_file, tq, cdiv(wl.seq_k, p.block_k), p.block_q)[1])
    else:
        kept = tq * p.blocks_per_row
    return pattern_footprint(sys.modules[__name__], wl, p, lambda kernel: [
        Allocation("block_list", INDEX_BYTES * (tq + 1 + kept), kernel, kernel, "input")])
