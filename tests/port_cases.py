"""Workloads shared by the CPU tests of the port declarations (tests/test_ports.py) and the
GPU tests of the ports themselves (tests/gpu/test_ports_gpu.py): one list, two backends.

Sizes are deliberately ragged (not multiples of any tile), with N_q != N_k, GQA, a head_dim
that the MMA k-step must pad (40), and causal rows that see no key (N_q > N_k).
"""
from attnsim import Workload

# (batch, heads, kv_heads, seq_q, seq_k, head_dim, causal)
SHAPES = [
    (1, 2, 2, 97, 97, 64, False),
    (1, 2, 2, 97, 97, 64, True),
    (2, 4, 2, 200, 333, 40, True),
    (1, 1, 1, 333, 200, 128, True),
    (1, 3, 1, 257, 129, 32, False),
]
DENSE_PORTS = ("standard", "flash1", "flash2")
GPU_MODELS = ("a100-40gb", "h100-sxm")


def workload(shape) -> Workload:
    b, h, g, nq, nk, d, causal = shape
    return Workload(batch=b, heads=h, kv_heads=g, seq_q=nq, seq_k=nk, head_dim=d, causal=causal)


def case_id(shape) -> str:
    b, h, g, nq, nk, d, causal = shape
    return f"b{b}h{h}g{g}-{nq}x{nk}-d{d}-{'causal' if causal else 'full'}"
