"""GPU ports declared as data: the CUDA launches each simulated algorithm becomes.

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
``ATTN_BF16`` define that switches attn_common.cuh's storage type), head_dim a multiple of 8 (16-byte rows for ``cp.async``) and at most 256, tensors
(batch, heads, seq, head_dim) contiguous; kv head = h // (heads / kv_heads). A workload a
port cannot run raises ``PortUnsupported`` with the reason, before anything is compiled.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from algorithms.common import cdiv

CUDA_DIR = Path(__file__).resolve().parent / "cuda"


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
# the issue's target; bf16 keeps 8 significand bits to fp16's 11, so its rounding is 8x
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


def check_common(name: str, wl, passes=("fwd",)) -> None:
    if wl.dtype not in STORAGE_DTYPES:
        raise PortUnsupported(f"the {name} port runs fp16 or bf16 (mma.sync inputs); the "
                              f"workload is {wl.dtype}: use --dtype fp16 or --dtype bf16")
    if wl.head_dim % 8 or wl.head_dim > 256:
        raise PortUnsupported(f"the {name} port needs head_dim a multiple of 8 and <= 256 "
                              f"(16-byte rows for cp.async); got {wl.head_dim}")
    if wl.passes not in passes:
        if passes != ("fwd",):
            raise PortUnsupported(f"the {name} port runs --pass {', '.join(passes)}; got "
                                  f"--pass {wl.passes}")
        raise PortUnsupported(f"the {name} port runs the forward pass only; got --pass {wl.passes}")


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


# ---- standard ------------------------------------------------------------------------------

def standard_port(wl, plan, extra=None) -> PortLaunches:
    check_common("standard", wl)
    tm, tn, tk = plan.gemm_tile_m, plan.gemm_tile_n, plan.gemm_tile_k
    if tm % 32 or tn % 32 or tk % 16:
        raise PortUnsupported(f"the standard port's GEMM (2 x 2 warps of m16n8k16) needs "
                              f"tile_m, tile_n multiples of 32 and tile_k of 16; the plan has "
                              f"{tm} x {tn} x {tk}")
    if plan.softmax_passes != 1:
        raise PortUnsupported(f"the standard port's softmax stages a whole row in shared "
                              f"memory; N_k = {wl.seq_k} needs the simulator's two-pass "
                              f"softmax, which is not ported")
    nq, nk, d, bh = wl.seq_q, wl.seq_k, wl.head_dim, wl.batch * wl.heads
    ld_s = round_up(nk, 8)
    defines = {"TILE_M": tm, "TILE_N": tn, "TILE_K": tk, "HEAD_DIM": d}
    gemm_smem = 2 * (tm + tn) * tk * 2                 # two stages of A and B chunks
    n_q, n_k, heads, group, scale = head_args(wl)
    tensors = {**qkv_tensors(wl),
               "s": Tensor((bh, nq, ld_s), wl.dtype, "work"),
               "p": Tensor((bh, nq, ld_s), wl.dtype, "work"),
               "o": out_tensor(wl)}
    launches = [Launch("standard.cu", "standard_scores", (cdiv(nk, tn), cdiv(nq, tm), bh),
                       (128, 1, 1), gemm_smem, defines,
                       ("q", "k", "s", n_q, n_k, Scalar(ld_s, "int"), heads, group, scale),
                       "qk_gemm")]
    if wl.causal:
        from attnsim.reference import causal_mask
        tensors["allowed"] = Tensor((nq, nk), "uint8", "const",
                                    data=causal_mask(nq, nk).astype(np.uint8))
        launches.append(Launch("standard.cu", "standard_mask", (nq, bh, 1), (256, 1, 1), 0,
                               defines, ("s", "allowed", n_q, n_k, Scalar(ld_s, "int")), "mask"))
    launches.append(Launch("standard.cu", "standard_softmax", (nq, bh, 1), (256, 1, 1),
                           plan.softmax_chunk * 2, defines,
                           ("s", "p", n_q, n_k, Scalar(ld_s, "int"), Scalar(0, "int")),
                           "softmax"))
    launches.append(Launch("standard.cu", "standard_pv", (cdiv(d, tn), cdiv(nq, tm), bh),
                           (128, 1, 1), gemm_smem, defines,
                           ("p", "v", "o", n_q, n_k, Scalar(ld_s, "int"), heads, group),
                           "pv_gemm"))
    notes = (f"S and P rows padded to {ld_s} columns (16-byte rows)",) if ld_s != nk else ()
    return PortLaunches("standard", tensors, tuple(launches), notes=notes)


# ---- flash2 --------------------------------------------------------------------------------

# fp32 accumulator registers per thread (S and O fragments) that 2 row tiles per warp may use:
# 192 is what FlashAttention-2's 4-warp 128 x 128 tile at d = 64 holds (ptxas: 255 registers,
# 68 bytes spilled); above it one row tile per warp avoids heavy spills.
WARP_ACC_FLOATS = 192


def warp_m_tiles(block_q: int, block_k: int, d: int) -> int:
    """16-row tiles per warp of flash2_fwd.cu: 2 (K/V fragments reused for 32 rows, B_r / 32
    warps — 4 for B_r = 128, the plan's THREADS_PER_CTA) when the fp32 accumulators fit."""
    per_tile = block_k // 2 + pad16(d) // 2        # S and O C-fragments of one 16-row tile
    return 2 if block_q % 32 == 0 and 2 * per_tile <= WARP_ACC_FLOATS else 1


def flash2_port(wl, plan, extra=None) -> PortLaunches:
    """The forward (``flash2_fwd.cu``); with ``--pass bwd`` / ``fwd+bwd`` also the backward's
    three kernels (``flash2_bwd.cu``, see ``flash2_backward_launches``)."""
    check_common("flash2", wl, passes=("fwd", "bwd", "fwd+bwd"))
    bq, bk, d = plan.block_q, plan.block_k, wl.head_dim
    check_mma_tiles("flash2", bq, bk)
    mt = warp_m_tiles(bq, bk, d)
    launch = Launch("flash2_fwd.cu", "flash2_fwd", (cdiv(wl.seq_q, bq), wl.batch * wl.heads, 1),
                    (bq // (16 * mt) * 32, 1, 1), flash_tile_smem(bq, bk, d),
                    {"BLOCK_Q": bq, "BLOCK_K": bk, "HEAD_DIM": d, "WARP_M_TILES": mt},
                    ("q", "k", "v", "o", "lse", *head_args(wl), Scalar(int(wl.causal), "int")),
                    "flash2_fwd")
    tensors = {**qkv_tensors(wl), "o": out_tensor(wl), "lse": stats_tensor(wl)}
    if wl.passes == "fwd":
        return PortLaunches("flash2", tensors, (launch,))
    return flash2_backward_launches(wl, plan, launch)


# ---- flash2 backward -----------------------------------------------------------------------

FLASH2_BWD_THREADS = 256        # preprocess / convert (flash2_bwd.cu PRE_THREADS)


def flash2_bwd_warps(block_q: int, block_k: int, d: int) -> int:
    """Warps of flash2_bwd.cu's main kernel: the largest of 8, 4, 2, 1 that splits the
    S/dP tile (B_r x B_c, 16-row x 16-key granules), dK/dV (B_c x d) and dQ (B_r x d)
    evenly — 8 (FA-2's sm80 backward) for every plan tile of 64 x 128 or larger."""
    dchunks = pad16(d) // 16
    for w in (8, 4, 2, 1):
        ws_r = min(w, block_q // 16)
        kv_r = min(w, block_k // 16)
        if (w % ws_r == 0 and (block_q // 16) % ws_r == 0 and (block_k // 16) % (w // ws_r) == 0
                and w % kv_r == 0 and (block_k // 16) % kv_r == 0 and dchunks % (w // kv_r) == 0
                and dchunks % (w // ws_r) == 0):
            return w
    return 1


def flash2_bwd_smem(block_q: int, block_k: int, d: int) -> int:
    """Q_i, dO_i, K_j, V_j (head_dim padded to 16) and P_ij, dS_ij, all 16-bit."""
    return (2 * block_q + 2 * block_k) * pad16(d) * 2 + 2 * block_q * block_k * 2


def flash2_backward_launches(wl, plan, fwd: Launch) -> PortLaunches:
    """FA-2's backward as the simulator counts it (``algorithms.flash2_bwd``): preprocess,
    the K/V-block-parallel main kernel, dQ conversion, with the backward plan's tiles.

    ``fwd+bwd``: the forward launch, then the three backward launches, all timed; o, dq, dk,
    dv are compared with the CPU result. ``bwd``: the simulator counts the backward alone and
    takes O and lse as given (computed by an uncounted forward); the port computes them the
    same way, with the forward launch as untimed ``setup`` writing "saved" tensors — on the
    device, so it scales to any N (a host float64 reference would not), and from the same
    storage-type inputs the backward reads.
    """
    name = "flash2"
    if wl.kv_heads != wl.heads:
        raise PortUnsupported(f"the {name} backward port is multi-head only (kv_heads == heads, "
                              f"as the simulator's backward); got heads={wl.heads}, "
                              f"kv_heads={wl.kv_heads}: use --pass fwd for GQA/MQA")
    bp = getattr(plan, "bwd", None)
    if bp is None:
        raise PortUnsupported(f"the {name} plan has no backward tiles (plan the workload with "
                              f"--pass {wl.passes})")
    bq, bk, d = bp.block_q, bp.block_k, wl.head_dim
    check_mma_tiles(f"{name} backward", bq, bk)
    b, h, nq, nk, bh = wl.batch, wl.heads, wl.seq_q, wl.seq_k, wl.batch * wl.heads
    saved = "output" if wl.passes == "fwd+bwd" else "saved"
    tensors = {**qkv_tensors(wl),
               "do": Tensor((b, h, nq, d), wl.dtype, "input"),
               "o": Tensor((b, h, nq, d), wl.dtype, saved),
               "lse": stats_tensor(wl, saved),
               "delta": stats_tensor(wl, "work"),
               "dq_acc": Tensor((b, h, nq, d), "fp32", "work"),
               "dq": Tensor((b, h, nq, d), wl.dtype, "output"),
               "dk": Tensor((b, h, nk, d), wl.dtype, "output"),
               "dv": Tensor((b, h, nk, d), wl.dtype, "output")}
    defines = {"BLOCK_Q": bq, "BLOCK_K": bk, "HEAD_DIM": d,
               "BWD_WARPS": flash2_bwd_warps(bq, bk, d)}
    tr, tc = cdiv(nq, bq), cdiv(nk, bk)
    threads = (FLASH2_BWD_THREADS, 1, 1)
    n_q, n_k, scale = Scalar(nq, "int"), Scalar(nk, "int"), Scalar(wl.scale, "float")
    bwd = (Launch("flash2_bwd.cu", "flash2_bwd_preprocess", (tr, bh, 1), threads, 0, defines,
                  ("do", "o", "delta", "dq_acc", n_q), "flash2_bwd_preprocess"),
           Launch("flash2_bwd.cu", "flash2_bwd", (tc, bh, 1), (defines["BWD_WARPS"] * 32, 1, 1),
                  flash2_bwd_smem(bq, bk, d), defines,
                  ("q", "k", "v", "do", "lse", "delta", "dq_acc", "dk", "dv", n_q, n_k, scale,
                   Scalar(int(wl.causal), "int")), "flash2_bwd"),
           Launch("flash2_bwd.cu", "flash2_bwd_convert_dq", (tr, bh, 1), threads, 0, defines,
                  ("dq_acc", "dq", n_q, scale), "flash2_bwd_convert_dq"))
    if wl.passes == "fwd+bwd":
        return PortLaunches(name, tensors, (fwd, *bwd), output="o",
                            outputs=("o", "dq", "dk", "dv"))
    return PortLaunches(name, tensors, bwd, output="dq", outputs=("dq", "dk", "dv"),
                        setup=(replace(fwd, sim_kernel=None),),
                        notes=("O and lse computed by an untimed forward launch (setup)",))


# ---- flash1 --------------------------------------------------------------------------------

FLASH1_SUB_K = 32      # keys of S_ij computed at a time in registers (flash1_fwd.cu SUB_K)


def flash1_port(wl, plan, extra=None) -> PortLaunches:
    check_common("flash1", wl)
    bq, bk, d, bh = plan.block_q, plan.block_k, wl.head_dim, wl.batch * wl.heads
    bq_pad, bk_pad = round_up(bq, 16), round_up(bk, FLASH1_SUB_K)
    if bq_pad > 256:
        raise PortUnsupported(f"the flash1 port runs one warp per 16 rows of B_r, at most 16 "
                              f"warps; the plan's B_r = {bq}")
    defines = {"BLOCK_Q": bq, "BLOCK_K": bk, "HEAD_DIM": d}
    tensors = {**qkv_tensors(wl), "o": out_tensor(wl),
               "l": stats_tensor(wl, "work"), "m": stats_tensor(wl, "work")}
    init = Launch("flash1_fwd.cu", "flash1_init", (bh, 1, 1), (256, 1, 1), 0, defines,
                  ("o", "l", "m", Scalar(wl.seq_q, "int")), "flash1_init")
    fwd = Launch("flash1_fwd.cu", "flash1_fwd", (bh, 1, 1), (bq_pad // 16 * 32, 1, 1),
                 (bq_pad + 2 * bk_pad) * pad16(d) * 2, defines,
                 ("q", "k", "v", "o", "l", "m", *head_args(wl), Scalar(int(wl.causal), "int")),
                 "flash1_fwd")
    return PortLaunches("flash1", tensors, (init, fwd),
                        notes=(f"K_j/V_j tiles padded to {bk_pad} rows; S_ij in registers",))


# ---- block-sparse family (block_sparse, local, sparse_transformer, longformer, bigbird) ----

def block_sparse_family_port(name: str):
    """The ports of the pattern modules (``layout(wl, plan)`` gives the simulator's tiles in
    CSR form; ``element_mask(wl, plan)`` the boolean (N_q, N_k) pattern)."""
    def port(wl, plan, extra=None) -> PortLaunches:
        check_common(name, wl)
        bq, bk, d = plan.block_q, plan.block_k, wl.head_dim
        check_mma_tiles(name, bq, bk)
        module = _module(name)
        lay = module.layout(wl, plan)                  # exactly the simulator's tiles
        nnz = max(1, len(lay.cols))
        tensors = {**qkv_tensors(wl), "o": out_tensor(wl), "lse": stats_tensor(wl),
                   "block_ptr": Tensor((len(lay.row_ptr),), "int32", "const",
                                       data=np.asarray(lay.row_ptr, dtype=np.int32)),
                   "block_idx": Tensor((nnz,), "int32", "const",
                                       data=np.resize(np.asarray(lay.cols, np.int32), nnz)),
                   "tile_partial": Tensor((nnz,), "uint8", "const",
                                          data=np.resize(np.asarray(lay.partial, np.uint8), nnz))}
        elem = None
        if np.any(lay.partial):                        # partial tiles read the element mask
            mask = (extra or {}).get("mask")
            mask = module.element_mask(wl, plan) if mask is None else mask
            elem = "elem_mask"
            tensors[elem] = Tensor((wl.seq_q, wl.seq_k), "uint8", "const",
                                   data=np.asarray(mask, dtype=np.uint8))
        n_q, n_k, heads, group, scale = head_args(wl)
        launch = Launch("block_sparse_fwd.cu", "block_sparse_fwd",
                        (cdiv(wl.seq_q, bq), wl.batch * wl.heads, 1), (bq // 16 * 32, 1, 1),
                        flash_tile_smem(bq, bk, d), {"BLOCK_Q": bq, "BLOCK_K": bk, "HEAD_DIM": d},
                        ("q", "k", "v", "o", "lse", "block_ptr", "block_idx", "tile_partial",
                         elem, Scalar(0, "int"), n_q, n_k, heads, group, scale,
                         Scalar(-1, "int"), Scalar(-1, "int")),
                        f"{name}_fwd")
        return PortLaunches(name, tensors, (launch,),
                            notes=() if elem is None else
                            ("partial tiles read the element mask from HBM (not counted)",))
    port.__name__ = f"{name}_port"
    return port


# ---- feature-map attention: linear (elu + 1), rfa (trig), performer (positive) ---------------

FEATURE_KINDS = {"elu": 0, "trig": 1, "positive": 2}
FEATURE_THREADS = 128        # feature_attn.cu FA_THREADS: the simulator's THREADS_PER_CTA
FEATURE_MAX_CHUNK = 128      # A = φ(Q_c) φ(K_c)ᵀ of a warp's 16 rows stays in registers


def _a16(nbytes: int) -> int:
    return round_up(nbytes, 16)


def feature_smem(kernel: str, kind: str, block: int, d: int, tile_units: int, tiles: int) -> int:
    """Dynamic shared memory of a feature_attn.cu kernel (its carve-up, 16-byte aligned
    pieces): 16-bit tiles with head_dim and feature counts padded to 16, fp32 S_t and z_t."""
    per = 2 if kind == "trig" else 1
    dp, up, mp = pad16(d), pad16(tile_units), pad16(tile_units * per)
    tile = _a16(block * dp * 2)
    w = _a16(up * dp * 2) if kind != "elu" else 0
    phi, state = _a16(block * mp * 2), _a16(mp * d * 4) + _a16(mp * 4)
    row, red = _a16(block * 4), _a16(4 * (FEATURE_THREADS // 32))
    norm = 2 * _a16(mp * 4) if kind == "positive" else 0   # 1 / z and log z per feature
    if kernel == "state":
        return 2 * tile + w + phi + state + row + red
    if kernel == "apply":
        return (tile + w + phi + state + 2 * row + red + norm
                + (_a16(block * d * 4) if tiles > 1 else 0))
    if kernel == "causal":
        return 3 * tile + w + 2 * phi + state + 2 * row + red + norm
    return tiles * block * 4                               # combine: per-row slice weights


def _projection_tensor(name: str, wl, plan) -> Tensor:
    """W of rfa / performer, computed as the module computes it for the same inputs (seed:
    the plan's, else the inputs' seed): (1, P, d) shared by all heads, or (B·H, P, d) for
    performer's ``redraw="head"``."""
    module = _module(name)
    d, heads = wl.head_dim, wl.batch * wl.heads
    per_head = getattr(plan, "redraw", "none") == "head"

    def derive(inputs):
        from algorithms.feature_attention import resolve_seed
        seed = resolve_seed(plan.seed, inputs)
        if name == "rfa":
            return module.projection(plan, d, seed)[None]
        fn = module.projection_fn(plan, d, seed)
        if per_head:
            return np.stack([fn(b, h) for b in range(wl.batch) for h in range(wl.heads)])
        return fn(0, 0)[None]

    return Tensor((heads if per_head else 1, plan.projections, d), wl.dtype, "const",
                  derive=derive)


def feature_port(name: str):
    """The port of a feature-map module (``algorithms.feature_attention`` plans): non-causal
    state + apply kernels, or the causal sweep (+ combine when the state is sliced)."""
    def port(wl, plan, extra=None) -> PortLaunches:
        check_common(name, wl)
        kind, block, tiles, tu = plan.kind, plan.block, plan.feature_tiles, plan.tile_units
        if kind not in FEATURE_KINDS:
            raise PortUnsupported(f"the {name} port computes elu + 1, trig or positive "
                                  f"features; the plan has {kind!r}")
        if block % 16 or block > FEATURE_MAX_CHUNK:
            raise PortUnsupported(f"the {name} port needs the plan's block a multiple of 16 "
                                  f"and <= {FEATURE_MAX_CHUNK} (16-row MMA tiles, A in "
                                  f"registers); the plan has {block}")
        d, bh, nq, nk = wl.head_dim, wl.batch * wl.heads, wl.seq_q, wl.seq_k
        total = d if kind == "elu" else plan.projections
        m = plan.features
        if kind == "trig":
            in_scale = 1.0 / plan.sigma
        elif kind == "positive":
            in_scale = float(np.sqrt(wl.scale))
        else:
            in_scale = 0.0
        defines = {"CHUNK": block, "HEAD_DIM": d, "FEAT_KIND": FEATURE_KINDS[kind],
                   "FEAT_UNITS": tu}
        tensors = {**qkv_tensors(wl), "o": out_tensor(wl)}
        w, w_per_head = None, Scalar(0, "int")
        if kind != "elu":
            tensors["w"] = _projection_tensor(name, wl, plan)
            w, w_per_head = "w", Scalar(int(tensors["w"].shape[0] > 1), "int")
        n_q, n_k, heads, group, _ = head_args(wl)
        scale, threads = Scalar(in_scale, "float"), (FEATURE_THREADS, 1, 1)
        units, ntiles = Scalar(total, "int"), Scalar(tiles, "int")

        def smem(kernel):
            return feature_smem(kernel, kind, block, d, tu, tiles)

        if not wl.causal:
            tensors["s_state"] = Tensor((bh, m, d), "fp32", "work")
            tensors["z_state"] = Tensor((bh, m), "fp32", "work")
            shifts = None
            if kind == "positive" and tiles > 1:
                shifts = "shifts"
                tensors[shifts] = Tensor((bh, tiles), "fp32", "work")
            launches = (
                Launch("feature_attn.cu", "feature_state", (tiles, bh, 1), threads,
                       smem("state"), defines,
                       ("k", "v", w, "s_state", "z_state", shifts, n_k, heads, group, scale,
                        w_per_head, units, Scalar(m, "int")), f"{name}_state"),
                Launch("feature_attn.cu", "feature_apply", (cdiv(nq, block), bh, 1), threads,
                       smem("apply"), defines,
                       ("q", w, "s_state", "z_state", shifts, "o", n_q, n_k, scale, w_per_head,
                        ntiles, units, Scalar(m, "int")), f"{name}_apply"))
            return PortLaunches(name, tensors, launches)
        part = (None, None, None)
        if tiles > 1:
            tensors["pnum"] = Tensor((tiles, bh, nq, d), "fp32", "work")
            tensors["pden"] = Tensor((tiles, bh, nq), "fp32", "work")
            part = ("pnum", "pden", None)
            if kind == "positive":
                tensors["plog"] = Tensor((tiles, bh, nq), "fp32", "work")
                part = ("pnum", "pden", "plog")
        launches = [Launch("feature_attn.cu", "feature_causal", (tiles, bh, 1), threads,
                           smem("causal"), defines,
                           ("q", "k", "v", w, "o", *part, n_q, n_k, heads, group, scale,
                            w_per_head, units), f"{name}_causal")]
        if tiles > 1:
            launches.append(Launch("feature_attn.cu", "feature_combine", (cdiv(nq, block), bh, 1),
                                   threads, smem("combine"), defines, (*part, "o", n_q, ntiles),
                                   f"{name}_combine"))
        return PortLaunches(name, tensors, tuple(launches))
    port.__name__ = f"{name}_port"
    return port


# ---- gqa: packed heads, split-KV (prefill and decode) ----------------------------------------

GQA_MAX_ROWS = 512       # packed rows of a CTA: at most 32 warps of 16


def gqa_port(wl, plan, extra=None) -> PortLaunches:
    """algorithms.gqa's plan: ``group`` query heads packed per CTA, ``block_q`` tokens per
    head, ``block_k`` keys per tile, ``splits`` key chunks (> 1: a combine kernel)."""
    check_common("gqa", wl)
    g, bq, bk, splits = plan.group, plan.block_q, plan.block_k, plan.splits
    rows = round_up(g * bq, 16)
    if bk % 16 or rows > GQA_MAX_ROWS:
        raise PortUnsupported(f"the gqa port needs block_k a multiple of 16 and group x "
                              f"block_q <= {GQA_MAX_ROWS}; the plan has {g} x {bq}, {bk}")
    d, bh = wl.head_dim, wl.batch * wl.heads
    t_r = cdiv(wl.seq_q, bq)
    defines = {"BLOCK_Q": bq, "GROUP": g, "BLOCK_K": bk, "HEAD_DIM": d}
    tensors = {**qkv_tensors(wl), "o": out_tensor(wl), "lse": stats_tensor(wl)}
    if splits > 1:
        tensors["o_part"] = Tensor((bh, splits, wl.seq_q, d), "fp32", "work")
        tensors["lse_part"] = Tensor((bh, splits, wl.seq_q), "fp32", "work")
    part = ("o_part", "lse_part") if splits > 1 else (None, None)
    n_q, n_k, heads, group, scale = head_args(wl)
    launches = [Launch("gqa_decode.cu", "gqa_splitkv",
                       (splits, wl.batch * (wl.heads // g) * t_r, 1), (rows // 16 * 32, 1, 1),
                       (rows + 2 * bk) * pad16(d) * 2, defines,
                       ("q", "k", "v", *part, "o", "lse", n_q, n_k, heads, group, scale,
                        Scalar(int(wl.causal), "int")),
                       "gqa_decode" if plan.mode == "decode" else "gqa_fwd")]
    if splits > 1:
        launches.append(Launch("gqa_decode.cu", "gqa_combine", (bh, 1, 1),
                               (round_up(d, 32), 1, 1), 0, defines,
                               ("o_part", "lse_part", "o", "lse", n_q, Scalar(splits, "int")),
                               "splitkv_combine"))
    return PortLaunches("gqa", tensors, tuple(launches))


# ---- mla: absorbed decode over the latent cache ------------------------------------------------

def mla_port(wl, plan, extra=None) -> PortLaunches:
    """algorithms.mla's absorbed path: per-head absorption GEMMs around a packed split-KV
    attention over the latent (``splitkv.value_column_slices`` warps share each row tile's
    d_c output columns, exchanging P through shared memory, as the plan declares)."""
    from algorithms.splitkv import value_column_slices
    check_common("mla", wl)
    if plan.path != "absorbed":
        raise PortUnsupported("the mla port runs the absorbed path; --path upproject (an "
                              "up-projection GEMM, then per-head attention) is not ported")
    d_c, d_r, d = plan.kv_lora_rank, plan.rope_dim, wl.head_dim
    g, bq, bk, splits = plan.head_block, plan.block_q, plan.block_k, plan.splits
    slices = value_column_slices(d_c)
    rows = round_up(g * bq, 16)
    tm, tn, tk = plan.gemm_tile_m, plan.gemm_tile_n, plan.gemm_tile_k
    problems = []
    if d_c % (16 * slices) or d_r % 8:
        problems.append(f"d_c a multiple of {16 * slices} and d_h^R of 8 (got {d_c}, {d_r})")
    if bk % (16 * slices):
        problems.append(f"block_k a multiple of {16 * slices} (got {bk})")
    if rows // 16 * slices > 32:
        problems.append(f"at most 32 warps ({rows // 16} row tiles x {slices} column slices)")
    if tm % 32 or tn % 32 or tk % 16:
        problems.append(f"GEMM tiles tile_m, tile_n multiples of 32 and tile_k of 16 (got "
                        f"{tm} x {tn} x {tk})")
    if problems:
        raise PortUnsupported("the mla port needs " + "; ".join(problems))
    b, h, nq, nk, bh = wl.batch, wl.heads, wl.seq_q, wl.seq_k, wl.batch * wl.heads
    dk_pad = pad16(d_c + d_r)
    defines = {"GROUP": g, "BLOCK_Q": bq, "BLOCK_K": bk, "DC": d_c, "DR": d_r, "HEAD_DIM": d,
               "COL_SLICES": slices, "TILE_M": tm, "TILE_N": tn, "TILE_K": tk}
    latent = _mla_latent_inputs(wl, plan)
    tensors = {
        "q": Tensor((b, h, nq, d), wl.dtype, "input"),                 # q^C
        "q_rope": Tensor((b, h, nq, d_r), wl.dtype, "input", derive=latent("q_rope")),
        "c_kv": Tensor((b, nk, d_c), wl.dtype, "input", derive=latent("c_kv")),
        "k_rope": Tensor((b, nk, d_r), wl.dtype, "input", derive=latent("k_rope")),
        "w_uk": Tensor((h, d, d_c), wl.dtype, "input", derive=latent("w_uk")),
        "w_uv": Tensor((h, d, d_c), wl.dtype, "input", derive=latent("w_uv")),
        "q_lat": Tensor((b, h, nq, d_c), wl.dtype, "work"),
        "o_lat": Tensor((b, h, nq, d_c), wl.dtype, "work"),
        "lse": stats_tensor(wl, "work"),
        "o": out_tensor(wl)}
    if splits > 1:
        tensors["o_part"] = Tensor((bh, splits, nq, d_c), "fp32", "work")
        tensors["lse_part"] = Tensor((bh, splits, nq), "fp32", "work")
    part = ("o_part", "lse_part") if splits > 1 else (None, None)
    m_rows = b * nq
    gemm_smem = 2 * (tm + tn) * tk * 2
    attn_smem = ((rows + bk) * dk_pad + rows * (bk // slices)) * 2 + 2 * rows * slices * 4
    ints = lambda *xs: tuple(Scalar(x, "int") for x in xs)          # noqa: E731
    launches = [
        Launch("mla_decode.cu", "mla_absorb_q", (cdiv(d_c, tn), cdiv(m_rows, tm), h),
               (128, 1, 1), gemm_smem, defines, ("q", "w_uk", "q_lat", *ints(b, nq, h)),
               "mla_absorb_q"),
        Launch("mla_decode.cu", "mla_attn", (splits, b * (h // g) * cdiv(nq, bq), 1),
               (rows // 16 * slices * 32, 1, 1), attn_smem, defines,
               ("q_lat", "q_rope", "c_kv", "k_rope", *part, "o_lat", "lse",
                *ints(nq, nk, h), Scalar(plan.scale, "float"), Scalar(int(wl.causal), "int")),
               "mla_latent_attn")]
    if splits > 1:
        launches.append(Launch("mla_decode.cu", "mla_combine", (bh, 1, 1),
                               (round_up(d_c, 32), 1, 1), 0, defines,
                               ("o_part", "lse_part", "o_lat", "lse", *ints(nq, splits)),
                               "splitkv_combine"))
    launches.append(Launch("mla_decode.cu", "mla_absorb_o", (cdiv(d, tn), cdiv(m_rows, tm), h),
                           (128, 1, 1), gemm_smem, defines, ("o_lat", "w_uv", "o", *ints(b, nq, h)),
                           "mla_absorb_o"))
    return PortLaunches("mla", tensors, tuple(launches), cpu_output="o_mla",
                        notes=("latent cache, RoPE parts and weights drawn as algorithms.mla "
                               "draws them",))


def _mla_latent_inputs(wl, plan):
    """``name -> (inputs -> values)`` for MLA's extra inputs, computed once per inputs object
    (``algorithms.mla.mla_inputs``: seeded by the inputs' seed, as the simulation draws them)."""
    from algorithms import mla
    cache = {}

    def getter(name):
        def values(host_inputs):
            if cache.get("of") is not host_inputs:
                cache.update(of=host_inputs, x=mla.mla_inputs(wl, plan, host_inputs))
            return cache["x"][name]
        return values
    return getter


# ---- diff: differential attention (two online softmaxes, one fused kernel) ------------------

# S registers x accumulator width a diff_fwd.cu warp may hold: SUB_K * HEAD_DIM <= 4096 keeps
# ptxas (nvcc 13.0, sm_80 and sm_90) free of spills with BLOCK_K = 128: 2d = 64 -> SUB_K 64
# (218/231 registers), 2d = 128 -> SUB_K 32 (255, no spill; SUB_K 64 spills 76-200 bytes).
DIFF_SUB_K_BUDGET = 4096


def diff_sub_k(block_k: int, head_dim: int) -> int:
    """Keys of one score map held in registers at a time by diff_fwd.cu (divides B_c)."""
    for sub in range(block_k, 15, -16):
        if block_k % sub == 0 and sub * head_dim <= DIFF_SUB_K_BUDGET:
            return sub
    return 16


def diff_port(wl, plan, extra=None) -> PortLaunches:
    """algorithms.diff's plan: B_r x B_c tiles of 2d-wide rows (flash2.plan at d = 2d); λ per
    head from ``diff.lambdas``, exactly the simulator's values (fp32)."""
    check_common("diff", wl)
    d2 = wl.head_dim
    if d2 % 32 or d2 > 128:
        raise PortUnsupported(f"the diff port needs head_dim (the paper's 2d) a multiple of 32 "
                              f"(each half d a multiple of the MMA k-step 16) and <= 128 (two "
                              f"2d-wide fp32 accumulators per thread); got {d2}: use --head-dim "
                              f"32, 64, 96 or 128")
    if wl.kv_heads != wl.heads:
        raise PortUnsupported("the diff port runs multi-head attention (kv_heads == heads), as "
                              "the simulator does; drop --kv-heads")
    bq, bk = plan.block_q, plan.block_k
    check_mma_tiles("diff", bq, bk)
    module = _module("diff")
    lam = np.asarray(module.lambdas(wl, plan), dtype=np.float32)
    tensors = {**qkv_tensors(wl), "o": out_tensor(wl),
               "lambda": Tensor((wl.heads,), "fp32", "const", data=lam)}
    n_q, n_k, heads, _, scale = head_args(wl)
    launch = Launch("diff_fwd.cu", "diff_fwd", (cdiv(wl.seq_q, bq), wl.batch * wl.heads, 1),
                    (bq // 16 * 32, 1, 1), flash_tile_smem(bq, bk, d2),
                    {"BLOCK_Q": bq, "BLOCK_K": bk, "HEAD_DIM": d2, "SUB_K": diff_sub_k(bk, d2)},
                    ("q", "k", "v", "lambda", "o", n_q, n_k, heads, scale,
                     Scalar(1.0 - plan.lambda_init, "float"), Scalar(module.RMS_EPS, "float"),
                     Scalar(int(wl.causal), "int")),
                    "diff_fwd")
    return PortLaunches("diff", tensors, (launch,),
                        notes=("reads λ per head (4 bytes per CTA, not counted)",))


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
    "gqa": gqa_port,
    "linear": feature_port("linear"),
    "rfa": feature_port("rfa"),
    "performer": feature_port("performer"),
    "mla": mla_port,
    "diff": diff_port,
}


def _module(name: str):
    from algorithms.registry import get_algorithm
    return get_algorithm(name)


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
