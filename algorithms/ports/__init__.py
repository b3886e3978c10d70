"""GPU ports declared as data: the CUDA launches each simulated algorithm becomes.

One module per port family (``core`` holds what they share); this package's namespace
re-exports them, so ``from algorithms import ports; ports.port_launches(...)`` is the API.

Bound: a port moves what its algorithm's module counts (its IO bound is that module's);
what a port reads beyond the counts is listed in docs/gpu.md.

For every ported algorithm, a function ``(wl, plan, extra) -> PortLaunches`` lists the
kernel launches of its CUDA port (``algorithms/cuda/*.cu``): source file, kernel name, grid,
block, dynamic shared memory, ``-D`` defines and the tensors each launch reads and writes.
Everything is derived from the simulator's plan, so the port's tiles *are* the plan's
tiles (``BLOCK_Q == plan.block_q``...) and its grid has the CTAs the Recorder counts
(``Launch.sim_kernel`` names the simulated kernel a launch stands for); tests check both.

Nothing here imports CuPy (``algorithms`` never does): ``attnsim.gpu`` compiles and launches
these declarations when a device is present.

Conventions shared by every port: fp16 or bf16 storage, the workload's dtype (the ports
use fp16/bf16 tensor-core MMAs with fp32 accumulation; ``port_launches`` adds the
``ATTN_BF16`` define that switches attn_common.cuh's storage type), head_dim a multiple of 8
(16-byte rows for ``cp.async``) and at most 256, tensors (batch, heads, seq, head_dim)
contiguous; kv head = h // (heads / kv_heads). A workload a
port cannot run raises ``PortUnsupported`` with the reason, before anything is compiled.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from algorithms.ports.core import (CUDA_DIR, ERROR_TARGETS, HOST_DTYPES,  # noqa: F401
                                   STORAGE_DTYPES, Launch, PortLaunches, PortUnsupported, Scalar, Tensor,
                                   algorithm_module, check_common, check_mma_tiles, const_data,
                                   flash_tile_smem, from_storage, head_args, out_tensor, pad16,
                                   qkv_tensors, round_up, stats_tensor, to_storage)
from algorithms.ports.backward import (FLASH1_BWD_MAX_KV_GRANULES,  # noqa: F401
                                       flash1_backward_launches, flash1_bwd_smem,
                                       flash1_kv_granules_per_warp, standard_backward_launches)
from algorithms.ports.decode import GQA_MAX_ROWS, gqa_port, mla_port  # noqa: F401
from algorithms.ports.dense import FLASH1_SUB_K, flash1_port, standard_port  # noqa: F401
from algorithms.ports.diff import DIFF_SUB_K_BUDGET, diff_port, diff_sub_k  # noqa: F401
from algorithms.ports.feature import (FEATURE_KINDS, FEATURE_MAX_CHUNK,  # noqa: F401
                                      FEATURE_THREADS, feature_port, feature_smem)
from algorithms.ports.flash2 import (FLASH2_BWD_THREADS, WARP_ACC_FLOATS,  # noqa: F401
                                     flash2_backward_launches, flash2_bwd_smem, flash2_bwd_warps,
                                     flash2_port, warp_m_tiles)
from algorithms.ports.nsa import nsa_port  # noqa: F401
from algorithms.ports.reformer import reformer_defines, reformer_port  # noqa: F401
from algorithms.ports.ring import ring_port  # noqa: F401
from algorithms.ports.sparse import (block_sparse_family_port,  # noqa: F401
                                     masked_dense_port)

# ---- the registry of ports -----------------------------------------------------------------

PORTS = {
    "standard": standard_port,
    "flash2": flash2_port,
    "flash1": flash1_port,
    "block_sparse": block_sparse_family_port("block_sparse"),
    "local": block_sparse_family_port("local"),
    "sparse_transformer": block_sparse_family_port("sparse_transformer"),
    "longformer": block_sparse_family_port("longformer"),
    "bigbird": block_sparse_family_port("bigbird"),
    "masked_dense": masked_dense_port,
    "gqa": gqa_port,
    "linear": feature_port("linear"),
    "rfa": feature_port("rfa"),
    "performer": feature_port("performer"),
    "mla": mla_port,
    "diff": diff_port,
    "reformer": reformer_port,
    "nsa": nsa_port,
    "ring": ring_port,
}



def ported_algorithms() -> list[str]:
    """Ported algorithms that are registered in this build, in the order of ``PORTS``."""
    from algorithms.registry import algorithm_names
    registered = set(algorithm_names())
    return [name for name in PORTS if name in registered]


def port_launches(name: str, wl, plan, extra: dict | None = None, gpu=None) -> PortLaunches:
    """The launches of ``name``'s port for this workload and plan.

    ``extra``: the simulation's ``rec.info`` (sparse patterns' element mask). ``gpu``: when
    given, launches whose shared memory exceeds its per-block limit raise PortUnsupported.
    """
    if name not in PORTS:
        raise PortUnsupported(f"{name} has no GPU port; ported: {', '.join(PORTS)}")
    port = with_storage_define(PORTS[name](wl, plan, extra), wl.dtype)
    if gpu is not None:
        for launch in port.all_launches:
            if launch.smem_bytes > gpu.smem_bytes_per_block:
                raise PortUnsupported(
                    f"{name}: kernel {launch.kernel} needs {launch.smem_bytes:,} bytes of shared "
                    f"memory per block, more than {gpu.full_name}'s "
                    f"{gpu.smem_bytes_per_block:,}")
    return port


def with_storage_define(port: PortLaunches, dtype: str) -> PortLaunches:
    """Compile every launch for the workload's storage type (``ATTN_BF16`` for bf16)."""
    stray = [n for n, t in port.tensors.items() if t.dtype in STORAGE_DTYPES and t.dtype != dtype]
    if stray:
        raise AssertionError(f"{port.algorithm}: tensors {stray} are not in the workload's "
                             f"dtype {dtype} (declare them with wl.dtype)")
    if dtype != "bf16":
        return port
    bf16 = lambda ls: tuple(replace(l, defines={**l.defines, "ATTN_BF16": 1}) for l in ls)
    return replace(port, launches=bf16(port.launches), setup=bf16(port.setup))


def source_path(source: str) -> Path:
    return CUDA_DIR / source


def tile_defines_in_header(source: str) -> list[str]:
    """Names of the -D defines a .cu source documents in its header comment."""
    text = source_path(source).read_text()
    header = text.split("#include", 1)[0]
    return [name for name in ("BLOCK_Q", "BLOCK_K", "HEAD_DIM", "TILE_M", "TILE_N", "TILE_K",
                              "CHUNK", "ROWS", "GROUP", "DC", "DR", "COL_SLICES",
                              "BWD_WARPS") if name in header]
