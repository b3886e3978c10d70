"""Helpers of the port declaration tests (tests/test_ports*.py): plan a case, or skip one the
simulator itself refuses; the tile defines a port must compile with; numpy standing in for
CuPy in the device references' tests.
"""
import shutil
import subprocess

import numpy as np
import pytest

from algorithms import ports
from algorithms.kernels.splitkv import combine_rows
from algorithms.base import check_options
from algorithms.registry import get_algorithm

NVCC = shutil.which("nvcc")        # the compile tests run where nvcc is on PATH


def compile_as_the_backend_sends_it(tmp_path, launch, arch):
    """nvcc on the text NVRTC would get for ``launch`` (headers inlined, its defines), warnings
    as errors: the finished process (returncode, stderr)."""
    from attnsim import gpu as backend
    src = tmp_path / f"{launch.kernel}_inlined.cu"
    src.write_text(backend.load_source(launch.source))
    return subprocess.run([NVCC, f"-arch={arch}", "-std=c++17", "-Werror", "all-warnings", "-c",
                           "-o", "/dev/null", str(src),
                           *[f"-D{k}={v}" for k, v in launch.defines.items()]],
                          capture_output=True, text=True, timeout=300)


def plan_of(name, wl, gpu, options=None):
    module = get_algorithm(name)
    return module.plan(wl, gpu, gpu.smem_bytes_per_block,
                       **check_options(module.INFO, options or {}))


def plan_or_skip(name, wl, gpu, options=None):
    try:
        return plan_of(name, wl, gpu, options)
    except ValueError as err:                 # a case the simulator itself refuses to plan
        pytest.skip(f"the simulator does not plan this case: {err}")


def expected_defines(name, plan, d, source=None, dropout=0.0):
    """The tile defines a port must compile with, read off the plan (``source``: the
    launch's file, for ports with several; ``dropout``: the workload's p — flash2 compiles
    its dropout in, ``ATTN_DROPOUT``)."""
    if name == "flash2" and dropout > 0:
        defines = {**expected_defines(name, plan, d, source), "ATTN_DROPOUT": 1}
        if source == "flash2_fwd.cu":
            defines["WARP_M_TILES"] = ports.warp_m_tiles(plan.block_q, plan.block_k, d, True)
        return defines
    if source == "flash1_bwd.cu":               # the backward's own tiles (Algorithm 4)
        return {"BLOCK_Q": plan.bwd.block_q, "BLOCK_K": plan.bwd.block_k, "HEAD_DIM": d}
    if source == "flash2_bwd.cu":               # the backward's own tiles
        bp = plan.bwd
        return {"BLOCK_Q": bp.block_q, "BLOCK_K": bp.block_k, "HEAD_DIM": d,
                "BWD_WARPS": ports.flash2_bwd_warps(bp.block_q, bp.block_k, d)}
    if name == "masked_dense":                   # standard's kernels on its dense plan
        name, plan = "standard", plan.dense
    if name == "nsa":           # nsa_fwd.cu's tiles, or the window's FlashAttention-2 tiles
        if source == "block_sparse_fwd.cu":
            return {"BLOCK_Q": plan.win.block_q, "BLOCK_K": plan.win.block_k, "HEAD_DIM": d}
        return {"HEAD_DIM": d, "COMPRESS_TILE": plan.compress_tile,
                "CBLOCK": plan.compress_block, "CSTRIDE": plan.compress_stride,
                "GROUP": plan.group, "BLOCK_Q": plan.cmp_block_q, "BLOCK_K": plan.cmp_block_k,
                "SBLOCK": plan.select_block, "N_SEL": plan.selected,
                "SELECT_TILE": plan.select_tile}
    if name == "standard":
        return {"TILE_M": plan.gemm_tile_m, "TILE_N": plan.gemm_tile_n,
                "TILE_K": plan.gemm_tile_k, "HEAD_DIM": d}
    if name == "gqa":
        return {"BLOCK_Q": plan.block_q, "GROUP": plan.group, "BLOCK_K": plan.block_k,
                "HEAD_DIM": d, "COMBINE_ROWS": combine_rows(d)}
    if name in ("linear", "rfa", "performer"):
        return {"CHUNK": plan.block, "HEAD_DIM": d, "FEAT_KIND": ports.FEATURE_KINDS[plan.kind],
                "FEAT_UNITS": plan.tile_units}
    if source == "mla_upproject.cu":            # mla --path upproject: one head per CTA
        return {"BLOCK_Q": plan.block_q, "BLOCK_K": plan.block_k, "HEAD_DIM": d,
                "DR": plan.rope_dim, "DC": plan.kv_lora_rank, "TILE_M": plan.gemm_tile_m,
                "TILE_N": plan.gemm_tile_n, "TILE_K": plan.gemm_tile_k,
                "COMBINE_ROWS": combine_rows(d)}
    if name == "mla":
        from algorithms.kernels.splitkv import value_column_slices
        return {"GROUP": plan.head_block, "BLOCK_Q": plan.block_q, "BLOCK_K": plan.block_k,
                "DC": plan.kv_lora_rank, "DR": plan.rope_dim, "HEAD_DIM": d,
                "COL_SLICES": value_column_slices(plan.kv_lora_rank),
                "TILE_M": plan.gemm_tile_m, "TILE_N": plan.gemm_tile_n,
                "TILE_K": plan.gemm_tile_k, "COMBINE_ROWS": combine_rows(plan.kv_lora_rank)}
    if name == "reformer":
        return {"HEAD_DIM": d, "CHUNK": plan.bucket_size, "HASHES": plan.hashes,
                "HASH_ROWS": plan.hash_block, "ROT_COLS": plan.rotation_cols,
                "SORT_TILE": plan.sort_tile, "COMBINE_ROWS": plan.combine_block}
    defines = {"BLOCK_Q": plan.block_q, "BLOCK_K": plan.block_k, "HEAD_DIM": d}
    if name in ("flash2", "ring"):   # a port-side choice, not a tile size: see test below
        defines["WARP_M_TILES"] = ports.warp_m_tiles(plan.block_q, plan.block_k, d)
    if name == "diff":          # keys per score slice in registers: a port-side choice
        defines["SUB_K"] = ports.diff_sub_k(plan.block_k, d)
    return defines


class NumpyAsCupy:
    """numpy standing in for CuPy in the device references' tests (plus ``asnumpy``)."""
    def __getattr__(self, name):
        return np.asarray if name == "asnumpy" else getattr(np, name)
