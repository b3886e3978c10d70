"""One int64 counter array with named slots, shared by every simulated kernel.

Every counted primitive (``hwmodels.primitives``) adds to one of these slots. Units are in
the names: bytes are counted at the workload's *storage* dtype (fp16/bf16 = 2 bytes, fp8 = 1,
fp32 softmax statistics = 4), whatever dtype the CPU happens to compute in.

Slots are plain module-level integers so Numba folds them into constants. The int64 array
holds what one kernel body counts; scaling to every head and summing over kernels happen in
Python integers (``hwmodels.memory``), so reported totals are exact at any size.
"""
import numpy as np

HBM_READ_BYTES = 0        # bytes moved HBM -> SRAM (or registers)
HBM_WRITE_BYTES = 1       # bytes moved SRAM -> HBM (atomic adds included)
SRAM_READ_BYTES = 2       # bytes read from on-chip tiles by matmuls and elementwise ops
SRAM_WRITE_BYTES = 3      # bytes written into on-chip tiles (loads and results)
SRAM_PEAK_BYTES = 4       # declared on-chip footprint of the largest kernel's CTA
MATMUL_FLOPS = 5          # 2*m*n*k per (m x k) @ (k x n) product, on tensor cores
EXP_OPS = 6               # exp / log / other special-function ops (SFU)
OTHER_FLOPS = 7           # max, add, mul, div, compare ... elementwise fp32 ops
KERNEL_LAUNCHES = 8       # kernels launched
CTAS = 9                  # thread blocks launched, all kernels together
INTERCONNECT_BYTES = 10   # bytes sent between devices (NVLink), multi-device algorithms
ATOMIC_BYTES = 11         # of HBM_WRITE_BYTES, the part written by atomic read-modify-write
ALU_OPS = 12              # of OTHER_FLOPS, the max/min, compare and select ops (the ALU pipe;
                          # add, multiply, divide run on the FMA pipe)
CONVERT_OPS = 13          # elements converted from fp32 to a narrower storage dtype (P before
                          # the P V product, results before their store)
NUM_SLOTS = 14

COUNTER_NAMES = (
    "hbm_read_bytes",
    "hbm_write_bytes",
    "sram_read_bytes",
    "sram_write_bytes",
    "sram_peak_bytes",
    "matmul_flops",
    "exp_ops",
    "other_flops",
    "kernel_launches",
    "ctas",
    "interconnect_bytes",
    "atomic_bytes",
    "alu_ops",
    "convert_ops",
)
assert len(COUNTER_NAMES) == NUM_SLOTS


class Slot:
    """Namespace of the slot indices, for Python code that prefers ``Slot.HBM_READ_BYTES``."""
    HBM_READ_BYTES = HBM_READ_BYTES
    HBM_WRITE_BYTES = HBM_WRITE_BYTES
    SRAM_READ_BYTES = SRAM_READ_BYTES
    SRAM_WRITE_BYTES = SRAM_WRITE_BYTES
    SRAM_PEAK_BYTES = SRAM_PEAK_BYTES
    MATMUL_FLOPS = MATMUL_FLOPS
    EXP_OPS = EXP_OPS
    OTHER_FLOPS = OTHER_FLOPS
    KERNEL_LAUNCHES = KERNEL_LAUNCHES
    CTAS = CTAS
    INTERCONNECT_BYTES = INTERCONNECT_BYTES
    ATOMIC_BYTES = ATOMIC_BYTES
    ALU_OPS = ALU_OPS
    CONVERT_OPS = CONVERT_OPS


# Slots that add up when the same kernel body runs for several heads. The others
# (peak footprint, launches, CTAs) are set once per kernel by the Recorder.
ADDITIVE_SLOTS = np.array(
    [HBM_READ_BYTES, HBM_WRITE_BYTES, SRAM_READ_BYTES, SRAM_WRITE_BYTES, MATMUL_FLOPS,
     EXP_OPS, OTHER_FLOPS, INTERCONNECT_BYTES, ATOMIC_BYTES, ALU_OPS, CONVERT_OPS],
    dtype=np.int64,
)


def new_counters() -> np.ndarray:
    """A zeroed counter array."""
    return np.zeros(NUM_SLOTS, dtype=np.int64)


def counters_to_dict(counters: np.ndarray) -> dict[str, int]:
    """Counter array -> {slot name: int}."""
    return {name: int(counters[i]) for i, name in enumerate(COUNTER_NAMES)}
