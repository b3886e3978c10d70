"""Cases shared by the CPU tests of the port declarations (tests/test_ports.py), the CPU
emulation of the ports (tests/test_cuda_emulated.py) and the GPU tests of the ports
(tests/gpu/test_ports_gpu.py): one list, three backends.

Sizes are deliberately ragged (not multiples of any tile), with N_q != N_k, GQA, a head_dim
that the MMA k-step must pad (40), causal rows that see no key (N_q > N_k), split-KV decode.
"""
from dataclasses import dataclass, field

import numpy as np

from algorithms import ports
from attnsim import Workload
from attnsim.reference import attention_reference, relative_error

# (batch, heads, kv_heads, seq_q, seq_k, head_dim, causal)
SHAPES = [
    (1, 2, 2, 97, 97, 64, False),
    (1, 2, 2, 97, 97, 64, True),
    (2, 4, 2, 200, 333, 40, True),
    (1, 1, 1, 333, 200, 128, True),
    (1, 3, 1, 257, 129, 32, False),
]
DECODE_SHAPES = [
    (2, 8, 2, 1, 300, 64, False),
    (1, 8, 1, 3, 257, 40, True),
]
DENSE_PORTS = ("standard", "flash1", "flash2")
# options that make the patterns sparse at these small N (defaults are sized for N ~ 4K)
SPARSE_OPTIONS = {
    "local": {"window": 64},
    "sparse_transformer": {"stride": 32},
    "longformer": {"window": 64, "global_tokens": 2},
    "bigbird": {"block": 32},
    "block_sparse": {"block": 32, "density": 0.5},
}
GPU_MODELS = ("a100-40gb", "h100-sxm")
# random-feature ports (with linear, the feature-map family of feature_attn.cu); d = 128 with
# the default features slices the state (T_m > 1: performer on both GPUs, rfa on the A100)
FEATURE_PORTS = ("rfa", "performer")
FEATURE_SHAPES = [(1, 2, 1, 150, 150, 128, False)]


def workload(shape, decode=False, dtype="fp16") -> Workload:
    b, h, g, nq, nk, d, causal = shape
    return Workload(batch=b, heads=h, kv_heads=g, seq_q=nq, seq_k=nk, head_dim=d,
                    causal=causal, decode=decode, dtype=dtype)


def case_id(shape) -> str:
    b, h, g, nq, nk, d, causal = shape
    return f"b{b}h{h}g{g}-{nq}x{nk}-d{d}-{'causal' if causal else 'full'}"


@dataclass(frozen=True)
class PortCase:
    name: str
    shape: tuple
    options: dict = field(default_factory=dict)
    decode: bool = False
    dtype: str = "fp16"

    @property
    def workload(self) -> Workload:
        return workload(self.shape, self.decode, self.dtype)

    @property
    def id(self) -> str:
        opts = "".join(f"-{k}={v}" for k, v in self.options.items())
        dtype = "" if self.dtype == "fp16" else f"-{self.dtype}"
        return f"{self.name}-{'decode-' if self.decode else ''}{case_id(self.shape)}{opts}{dtype}"


PORT_CASES = (
    [PortCase(n, s) for n in DENSE_PORTS for s in SHAPES]
    + [PortCase("gqa", s) for s in SHAPES]
    + [PortCase("gqa", s, {"pack_group": True}) for s in SHAPES[2:]]
    + [PortCase("gqa", s, decode=True) for s in DECODE_SHAPES]
    + [PortCase("gqa", s, {"splits": 2}, decode=True) for s in DECODE_SHAPES]
    + [PortCase(n, s, o) for n, o in SPARSE_OPTIONS.items() for s in (SHAPES[1], SHAPES[4])]
    + [PortCase("linear", s) for s in SHAPES]
    + [PortCase("linear", (2, 4, 2, 200, 333, 40, False))]
    + [PortCase(n, s) for n in FEATURE_PORTS for s in SHAPES + FEATURE_SHAPES]
    + [PortCase("performer", SHAPES[0], {"redraw": "head"}),
       PortCase("rfa", SHAPES[2], {"features": 24, "sigma": 2.0})]
)
# bf16 storage (the ATTN_BF16 build of the same sources): one case per port family
BF16_CASES = [
    PortCase("flash2", SHAPES[2], dtype="bf16"),
    PortCase("flash1", SHAPES[1], dtype="bf16"),
    PortCase("standard", SHAPES[1], dtype="bf16"),
    PortCase("gqa", DECODE_SHAPES[1], {"splits": 2}, decode=True, dtype="bf16"),
    PortCase("local", SHAPES[1], {"window": 64}, dtype="bf16"),
    PortCase("linear", SHAPES[4], dtype="bf16"),
    PortCase("performer", SHAPES[1], dtype="bf16"),
]
PORT_CASES += BF16_CASES


def storage_round(x, dtype):
    """x rounded to the workload's 16-bit storage type, as float32."""
    return ports.from_storage(ports.to_storage(x, dtype), dtype)


def fp16_baseline(inputs, wl) -> float:
    """Error of a plain implementation in the workload's storage type (fp16 or bf16): exact
    attention of the rounded inputs, rounded — the floor 16-bit storage sets. As
    flash-attn's tests do, a kernel is judged against twice this error."""
    exact, _ = attention_reference(inputs.q, inputs.k, inputs.v, causal=wl.causal,
                                   scale=wl.scale)
    rounded = [storage_round(x, wl.dtype) for x in (inputs.q, inputs.k, inputs.v)]
    plain, _ = attention_reference(*rounded, causal=wl.causal, scale=wl.scale)
    return relative_error(storage_round(plain, wl.dtype), exact)
