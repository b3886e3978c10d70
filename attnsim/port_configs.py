"""The compile configurations the simulator's plans give the CUDA ports, over a sweep of
realistic workloads: what ``.ci/compile_cuda.sh`` compiles besides its hand-picked cases, so
that every tile set a plan picks on an A100 or H100 is known to compile (and not to spill
beyond its budget) before a GPU ever sees it.

    python -m attnsim.port_configs        # one line per config: source<TAB>-DNAME=value ...

The sweep: A100 40/80 GB, H100 SXM and H200; head_dim 64 and 128; causal and not; 16
heads over 4096 tokens (prefill), GQA/MLA decode steps over a 32K-token cache (MLA: both
``--path``s), the forward + backward of flash2, flash1 and standard (with and without
dropout), NSA (causal) with 1, 4
and 16 query heads per KV head, and the ports' option variants that change their tiles.
Workloads a port refuses (``PortUnsupported``) or the simulator cannot plan are skipped: the
tests already check that those are refused with a reason.

Bound: none of its own (it moves no data); each configuration belongs to a port whose IO
bound is its algorithm module's.
"""
from __future__ import annotations

import sys

from algorithms import ports
from algorithms.base import check_options
from algorithms.registry import get_algorithm

GPUS = ("a100-40gb", "a100-80gb", "h100-sxm", "h200")
HEAD_DIMS = (64, 128)
BACKWARD_PORTS = ("flash2", "flash1", "standard")   # ports with a backward (--pass fwd+bwd)


def _workloads(name: str):
    from attnsim.workload import Workload
    for d in HEAD_DIMS:
        for causal in (False, True):
            base = Workload(batch=1, heads=16, seq_q=4096, head_dim=d, causal=causal)
            if name == "gqa":
                yield base.replace(kv_heads=4), {}
                yield base.replace(kv_heads=4), {"pack_group": True}
                yield base.replace(seq_q=1, seq_k=32768, kv_heads=4, decode=True,
                                   causal=False), {}
            elif name == "nsa":         # causal only; MHA, g = 4 and the paper's g = 16
                if causal:
                    yield base, {}
                    yield base.replace(kv_heads=4), {}
                    yield base.replace(heads=64, kv_heads=4), {}
            elif name == "mla":
                for heads in (16, 128):
                    step = base.replace(heads=heads, seq_q=1, seq_k=32768, decode=True,
                                        causal=False)
                    yield step, {}
                    yield step, {"path": "upproject"}
                # the up-projected path with several new tokens (speculative decoding's few: B_r = 4)
                yield base.replace(seq_q=4, seq_k=32768, decode=True), {"path": "upproject"}
            else:
                yield base, {}
                if name in BACKWARD_PORTS:
                    yield base.replace(passes="fwd+bwd"), {}
                    # dropout compiles flash2's kernels with ATTN_DROPOUT (flash1 and
                    # standard take it at run time: no new configuration)
                    yield base.replace(passes="fwd+bwd", dropout=0.1), {}


def configs() -> list[tuple[str, str]]:
    """Sorted distinct (source, "-DNAME=value ...") over the sweep."""
    from hwmodels import get_gpu
    found = set()
    for gpu_name in GPUS:
        gpu = get_gpu(gpu_name)
        for name in ports.ported_algorithms():
            module = get_algorithm(name)
            for wl, options in _workloads(name):
                try:
                    plan = module.plan(wl, gpu, gpu.smem_bytes_per_block,
                                       **check_options(module.INFO, options))
                    spec = ports.port_launches(name, wl, plan, gpu=gpu)
                except ValueError:                 # PlanError, SramOverflowError, PortUnsupported
                    continue
                for launch in spec.all_launches:
                    defines = " ".join(f"-D{k}={v}" for k, v in sorted(launch.defines.items()))
                    found.add((launch.source, defines))
    return sorted(found)


def main() -> int:
    for source, defines in configs():
        print(f"{source}\t{defines}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
