"""What every port declaration is made of: tensors, scalars, launches, the storage types and
the checks and tensors the ports share. Bound: none of its own (declarations move no data).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from algorithms.kernels.common import cdiv

CUDA_DIR = Path(__file__).resolve().parent.parent / "cuda"


class PortUnsupported(ValueError):
    """The port cannot run this workload/plan (the message says why)."""


@dataclass(frozen=True)
class Tensor:
    """A device tensor of a port.

    Attributes:
        shape: element shape.
        dtype: "fp16", "bf16", "fp32", "int32" or "uint8" (``HOST_DTYPES``: bf16 travels as
            its uint16 bit patterns, see ``to_storage``).
        role: "input" (q, k, v, do: fp16/bf16 copies of the simulator's inputs), "const" (small
            host data in ``data``: block layouts, masks), "output" (written by the launches;
            those named in ``PortLaunches.outputs`` are compared with the CPU result),
            "work" (scratch in HBM: S, P, partial results, running statistics), "saved"
            (written once by ``PortLaunches.setup`` from the inputs — the forward's O and lse
            that a backward-only run reads — then read-only like an input).
        fill: initial value of an output/work tensor (None: left uninitialized).
        derive: values computed from the host inputs (``attnsim.inputs.Inputs``), as the
            algorithm's module computes them: for an "input" that is not one of the
            simulator's q, k, v, do (MLA's latent cache and weights; read through
            ``host_values``), or for a "const" tensor without ``data`` (a random projection
            seeded by the inputs' seed; read through ``const_data``).
    """
    shape: tuple
    dtype: str
    role: str
    fill: float | None = None
    data: np.ndarray | None = field(default=None, compare=False)
    derive: object = field(default=None, compare=False)

    def host_values(self, name: str, host_inputs) -> np.ndarray:
        """The float32 host values of an input tensor."""
        return self.derive(host_inputs) if self.derive is not None else getattr(host_inputs, name)


@dataclass(frozen=True)
class Scalar:
    """A by-value kernel argument: ``ctype`` is "int" or "float"."""
    value: float
    ctype: str


@dataclass(frozen=True)
class Launch:
    """One kernel launch.

    Attributes:
        source: file name under ``algorithms/cuda``.
        kernel: its ``extern "C"`` name.
        grid, block: launch dimensions (x, y, z).
        smem_bytes: dynamic shared memory per CTA.
        defines: compile-time ``-D`` values (tile sizes); one compiled module per distinct set.
        args: the kernel's arguments in order: tensor names (str), ``Scalar`` values, or
            None for a null pointer (an optional tensor left out).
        sim_kernel: the simulated kernel (``KernelRecord.name``) this launch stands for.
    """
    source: str
    kernel: str
    grid: tuple
    block: tuple
    smem_bytes: int
    defines: dict
    args: tuple
    sim_kernel: str | None

    @property
    def ctas(self) -> int:
        return int(np.prod(self.grid))


@dataclass(frozen=True)
class PortLaunches:
    """Everything needed to run one algorithm's port on one workload.

    Attributes:
        launches: the launches that stand for the simulated kernels (run and timed in order).
        output: the main output tensor (``outputs[0]``).
        outputs: every tensor compared with the CPU result of the same name (default:
            ``(output,)``; a backward port compares dq, dk, dv, and o for fwd+bwd).
        cpu_output: the key of the simulation's ``outputs`` that ``output`` is compared with,
            when its name differs (MLA: the port's o is the simulation's ``o_mla``).
        setup: launches run once, untimed and not counted, before the first run of
            ``launches``: they fill the "saved" tensors (a backward-only run's O and lse,
            which the simulator takes as given).
    """
    algorithm: str
    tensors: dict
    launches: tuple
    output: str = "o"
    notes: tuple = ()
    outputs: tuple = ()
    setup: tuple = ()
    cpu_output: str | None = None

    def __post_init__(self):
        if not self.outputs:
            object.__setattr__(self, "outputs", (self.output,))
        elif self.output not in self.outputs:
            object.__setattr__(self, "output", self.outputs[0])

    @property
    def all_launches(self) -> tuple:
        """setup, then launches: everything one correctness run executes."""
        return (*self.setup, *self.launches)

    def cpu_key(self, name: str) -> str:
        """The simulation output a port output is compared with."""
        return self.cpu_output if name == self.output and self.cpu_output else name

    @property
    def sources(self) -> list[str]:
        return sorted({l.source for l in self.all_launches})


# ---- storage dtypes --------------------------------------------------------------------------

STORAGE_DTYPES = ("fp16", "bf16")
# numpy type that holds each tensor dtype on the host (bf16 as raw bits: numpy has no bf16)
HOST_DTYPES = {"fp16": np.float16, "bf16": np.uint16, "fp32": np.float32, "int32": np.int32,
               "uint8": np.uint8}
# relative Frobenius error a port's output must stay under against the CPU result: fp16 is
# the ports' target; bf16 keeps 8 significand bits to fp16's 11, so its rounding is 8x
# coarser and the target scales with it.
ERROR_TARGETS = {"fp16": 2e-3, "bf16": 1.6e-2}


def to_storage(values, dtype: str) -> np.ndarray:
    """Host array in the device layout of ``dtype``: bf16 as uint16 bits, rounded to
    nearest even (NaN kept NaN), as cvt.rn.bf16.f32 rounds on the device."""
    if dtype != "bf16":
        return _c_order(np.asarray(values, dtype=HOST_DTYPES[dtype]))
    bits = _c_order(np.asarray(values, dtype=np.float32)).view(np.uint32)
    nan = (bits & 0x7FFFFFFF) > 0x7F800000
    rounded = ((bits.astype(np.uint64) + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    return np.where(nan, ((bits >> 16) | 0x40).astype(np.uint16), rounded)


def const_data(t: Tensor, host_inputs) -> np.ndarray:
    """The host data of a "const" tensor: its ``data``, or ``derive(host_inputs)``."""
    return t.data if t.derive is None else t.derive(host_inputs)


def _c_order(a: np.ndarray) -> np.ndarray:
    # (not np.ascontiguousarray: it turns a 0-d value into a 1-element array)
    return a if a.flags.c_contiguous else a.copy(order="C")


def from_storage(array, dtype: str) -> np.ndarray:
    """float32 values of a host array in the device layout of ``dtype``."""
    if dtype != "bf16":
        return np.asarray(array).astype(np.float32)
    return (np.asarray(array, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


# ---- shared checks and tensors -------------------------------------------------------------

def pad16(d: int) -> int:
    return cdiv(d, 16) * 16


def round_up(x: int, m: int) -> int:
    return cdiv(x, m) * m


def check_common(name: str, wl, passes=("fwd",), dropout: bool = False) -> None:
    """What every port checks first; ``dropout``: the port applies ``--dropout`` (else it is
    refused)."""
    if wl.dtype not in STORAGE_DTYPES:
        raise PortUnsupported(f"the {name} port runs fp16 or bf16 (mma.sync inputs); the "
                              f"workload is {wl.dtype}: use --dtype fp16 or --dtype bf16")
    if wl.head_dim % 8 or wl.head_dim > 256:
        raise PortUnsupported(f"the {name} port needs head_dim a multiple of 8 and <= 256 "
                              f"(16-byte rows for cp.async); got {wl.head_dim}")
    if getattr(wl, "dropout", 0.0) > 0 and not dropout:
        # The simulator's keep mask is a pure splitmix64 hash of (seed, b·H + h, i, j)
        # (algorithms/kernels/dropout.py), reproduced bit for bit by attn_dropout.cuh; a port whose
        # kernels do not apply it refuses dropout rather than run without it.
        raise PortUnsupported(f"the {name} port does not apply dropout (its kernels do not draw "
                              f"the simulator's keep mask, algorithms/cuda/attn_dropout.cuh; the "
                              f"standard, flash1 and flash2 ports do); got --dropout "
                              f"{wl.dropout}: use --dropout 0")
    if wl.passes not in passes:
        if passes != ("fwd",):
            raise PortUnsupported(f"the {name} port runs --pass {', '.join(passes)}; got "
                                  f"--pass {wl.passes}")
        raise PortUnsupported(f"the {name} port runs the forward pass only; got --pass {wl.passes}")


def check_backward_port(name: str, wl, plan):
    """The backward plan, or PortUnsupported for what the backward ports do not run."""
    if wl.kv_heads != wl.heads:
        raise PortUnsupported(f"the {name} backward port is multi-head only (kv_heads == heads, "
                              f"as the simulator's backward); got heads={wl.heads}, "
                              f"kv_heads={wl.kv_heads}: use --pass fwd for GQA/MQA")
    bp = getattr(plan, "bwd", None)
    if bp is None:
        raise PortUnsupported(f"the {name} plan has no backward tiles (plan the workload with "
                              f"--pass {wl.passes})")
    return bp


def gemm_tile_problem(plan) -> str | None:
    """What attn_gemm.cuh's CTA (2 x 2 warps of m16n8k16) cannot tile in the plan's GEMM
    tiles, or None: tile_m and tile_n multiples of 32, tile_k of 16."""
    tm, tn, tk = plan.gemm_tile_m, plan.gemm_tile_n, plan.gemm_tile_k
    if tm % 32 or tn % 32 or tk % 16:
        return (f"GEMM tiles tile_m, tile_n multiples of 32 and tile_k of 16 (2 x 2 warps of "
                f"m16n8k16; the plan has {tm} x {tn} x {tk}: a larger --sram-kb gives it "
                f"larger tiles)")
    return None


def qkv_tensors(wl) -> dict:
    b, h, g, d = wl.batch, wl.heads, wl.kv_heads, wl.head_dim
    return {"q": Tensor((b, h, wl.seq_q, d), wl.dtype, "input"),
            "k": Tensor((b, g, wl.seq_k, d), wl.dtype, "input"),
            "v": Tensor((b, g, wl.seq_k, d), wl.dtype, "input")}


def out_tensor(wl, fill=None) -> Tensor:
    return Tensor((wl.batch, wl.heads, wl.seq_q, wl.head_dim), wl.dtype, "output", fill)


def stats_tensor(wl, role="output", fill=None) -> Tensor:
    return Tensor((wl.batch, wl.heads, wl.seq_q), "fp32", role, fill)


def head_args(wl) -> tuple:
    """n_q, n_k, heads, kv_group, scale."""
    return (Scalar(wl.seq_q, "int"), Scalar(wl.seq_k, "int"), Scalar(wl.heads, "int"),
            Scalar(wl.heads // wl.kv_heads, "int"), Scalar(wl.scale, "float"))


def flash_tile_smem(block_q: int, block_k: int, d: int) -> int:
    """Q_i, K_j, V_j 16-bit tiles, head_dim padded to the MMA k-step."""
    return (block_q + 2 * block_k) * pad16(d) * 2


def check_mma_tiles(name: str, block_q: int, block_k: int) -> None:
    if block_q % 16 or block_k % 16 or block_q > 256:
        raise PortUnsupported(f"the {name} port needs block_q, block_k multiples of 16 "
                              f"(m16n8k16 MMAs) and block_q <= 256; the plan has "
                              f"{block_q} x {block_k}")


def algorithm_module(name: str):
    """The registered module of ``name`` (imported lazily: the registry imports ports' users)."""
    from algorithms.registry import get_algorithm
    return get_algorithm(name)
