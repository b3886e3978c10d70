"""The simulated memory hierarchy: per-CTA SRAM budget and per-kernel counter records.

HBM tensors are NumPy arrays. SRAM is a per-CTA budget of M bytes: each kernel declares the
buffers its CTAs keep on chip, and a kernel whose footprint exceeds M is rejected with an
error that names the buffers and the numbers. Every kernel launch gets its own counter array
(``hwmodels.counters``); the counted Numba primitives (``hwmodels.primitives``) add to it.
Keeping one array per kernel lets the timing model apply wave quantization and the
overlap rules kernel by kernel; the totals are their sum.

Exact counts at any size: the int64 array only ever holds what one kernel body counted
since the last ``Recorder.repeat`` (in count-only mode: one head, whose counts the
workload limits keep far below 2**63, see ``attnsim.validate``). ``repeat`` folds it into
Python integers before multiplying by batch x heads, and totals are summed in Python
integers, so a count never wraps around however large the product.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import numpy as np

from hwmodels.counters import (ADDITIVE_SLOTS, COUNTER_NAMES, CTAS, KERNEL_LAUNCHES,
                               NUM_SLOTS, SRAM_PEAK_BYTES, counters_to_dict, new_counters)
from hwmodels.gpus import GPU

TC_PATHS = ("mma_sync", "wgmma", "none")
OVERLAP_MODES = ("serial", "overlap")
SOFTMAX_PIPES = ("xu", "fma", "alu")     # the pipes a softmax runs on (``hwmodels.timing``)
LIBRARY_PIPES = SOFTMAX_PIPES            # the pipes a math-library routine's instructions use


class SramOverflowError(ValueError):
    """A plan whose on-chip buffers do not fit the per-CTA SRAM budget."""


def describe_buffers(buffers: dict[str, int]) -> str:
    return " + ".join(f"{name} {nbytes:,} B" for name, nbytes in buffers.items())


def check_sram_fits(what: str, buffers: dict[str, int], budget_bytes: int, hint: str = "") -> int:
    """Total footprint of ``buffers``; SramOverflowError if it exceeds ``budget_bytes``."""
    need = int(sum(buffers.values()))
    if need > budget_bytes:
        raise SramOverflowError(
            f"{what} needs {need:,} bytes of SRAM per CTA ({describe_buffers(buffers)}) but the "
            f"budget is {budget_bytes:,} bytes"
            + (f"; {hint}" if hint else "; use a smaller --head-dim or a larger --sram-kb"))
    return need


@dataclass(frozen=True)
class StepLoad:
    """One global load on a tile step's chain (``KernelRecord.step_loads``).

    source: "stream" for data the kernel streams and re-reads (an L2 hit as often as its
        re-reads hit, ``hwmodels.timing.l2_reread_hit``, else a DRAM access); "l2" for a
        few bytes a row that stay in L2 (a row's log-sum-exp).
    gemm_share, softmax_share: the shares of the step's GEMM phase and softmax phase the
        warp works through between the load's issue and its use.
    events: the step's chain events (as ``KernelRecord.step_events``) the warp waits out
        between issue and use: they cover the load's latency too.
    steps: the share of the kernel's steps that make it (1: every step)."""

    source: str
    gemm_share: float = 0.0
    softmax_share: float = 0.0
    events: tuple = ()
    steps: float = 1.0


STEP_LOAD_SOURCES = ("stream", "l2")


def check_step_load(load) -> None:
    """A ``StepLoad`` with a known source and shares in [0, 1]."""
    if not isinstance(load, StepLoad) or load.source not in STEP_LOAD_SOURCES:
        raise ValueError(f"step_loads takes StepLoads with a source in {STEP_LOAD_SOURCES}, "
                         f"got {load!r}")
    for share in (load.gemm_share, load.softmax_share, load.steps):
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"a StepLoad's shares lie in [0, 1], got {load!r}")


@dataclass
class KernelRecord:
    """One simulated kernel launch and everything the timing model needs about it.

    Attributes:
        name: kernel name, e.g. ``"flash2_fwd"``.
        ctas: thread blocks in the grid (all heads and batches).
        buffers: on-chip buffers of one CTA, name -> bytes (the declared SRAM footprint).
        threads_per_cta: threads per CTA (limits CTAs per SM with registers).
        register_bytes_per_cta: fp32 accumulators kept in registers by one CTA.
        tc_path: tensor-core instruction path: "mma_sync" (sm80), "wgmma" (sm90) or "none".
        overlap: "serial" when a warp alternates softmax and GEMM (FlashAttention-2),
            "overlap" when other warps hide one behind the other (FlashAttention-3).
        cta_work: optional relative work of each CTA of *one head*, in launch order (None:
            all equal). Used for wave quantization and causal imbalance.
        matmul_dtype: dtype of the matmul inputs (selects the tensor-core peak).
        unique_hbm_bytes: compulsory traffic of the whole kernel — every distinct byte read
            once and every output byte written once — or None if not declared.
        l2_working_set_bytes: bytes that the CTAs resident at one time re-read from each
            other's loads (e.g. the K/V of the heads in flight). When it fits in L2, the
            re-reads beyond ``unique_hbm_bytes`` are served by L2 (``hwmodels.timing``).
        chains_per_cta: independent GEMM -> softmax -> GEMM dependency chains one CTA keeps
            in flight. 1 when its warps meet at a barrier on every tile (FlashAttention-2);
            FlashAttention-3 runs W consumer warpgroups in ping-pong (2, or 3 at d <= 64):
            W (1 where the release builds no ping-pong and the warpgroups run in step; what
            each overlaps with its own GEMMs is ``softmax_beside_own_gemm``). The timing
            model hides a
            chain's latency only behind the other chains resident on the SM
            (``hwmodels.timing``).
        smem_readers: warps (mma.sync) or warpgroups (wgmma) that each read the shared
            operand tile of the kernel's GEMMs from shared memory (FA-2's 4 warps each read
            all of K_j and V_j); the counters record one read per matmul.
        mma_rows_per_cta: rows of the CTA's GEMM output tile shared by those readers (B_r);
            with ``smem_readers`` it prices the repeated operand reads. 0: not declared.
        prologue_bytes_per_cta: bytes a CTA must load before its first MMA (FA: Q_i and
            the first K_j; a GEMM: the first k-chunks of A and B). Every tensor-core kernel
            declares it (tests/test_kernel_pricing_declarations.py); 0, for the elementwise
            and row kernels, prices the prologue as one DRAM latency.
        epilogue_elements_per_cta: output elements a CTA finishes once its tiles are done:
            normalized, converted, staged through shared memory and stored, one step after
            the other while its tensor cores idle (``hwmodels.timing``): FlashAttention-2's
            O_i after its last tile; FlashAttention v1's O_i after every inner step, as
            Algorithm 1 writes it back. Every attention tile loop declares it
            (tests/test_kernel_pricing_declarations.py); 0 for kernels priced at a measured
            GEMM rate, which holds cuBLAS's own epilogue, and for elementwise kernels.
        smem_exchange_bytes: shared-memory bytes the warps pass each other beyond their
            operand tiles (FlashAttention v1's "split-K" warps: each warp's partial P V, or
            dQ, and row statistics written to shared memory and read back to be summed);
            pricing only, like ``smem_readers``: the SRAM counters keep the algorithm's
            tile traffic. 0: none.
        register_operand_bytes_per_flop: bytes per matmul FLOP that the SRAM counters record
            as reads of a GEMM operand the kernel keeps in registers, which the shared-memory
            pipe therefore does not carry: the flash tile's P, which FlashAttention-2 and -3
            feed to the P V GEMM from registers (``gemm_rs``; ``wgmma`` with A in
            registers), e / 4d per FLOP of the tile's two GEMMs
            (``algorithms.kernels.flash_tile.p_in_registers``). Pricing only. 0: none.
        row_padding: the rows the kernel's MMAs and softmax compute over the rows its
            counters record (>= 1). A CTA computes its whole row tile whatever the sequence
            leaves of it (FlashAttention-2's forward does not load Q_i's rows past the end,
            runs its GEMMs and softmax on the whole tile and writes the valid rows only:
            flash_fwd_kernel.h), and an MMA instruction computes its whole shape (16 rows
            for ``mma.sync``, 64 for ``wgmma``): one query row, as in decoding, costs a whole
            tile. The timing model prices the compute pipes, the issue and the re-reads of
            the shared GEMM operand at the rows computed; the counters keep the algorithm's
            (``algorithms.kernels.common.row_padding``). 1: every row computed is counted.
        step_events: what lies on one tile step's dependency chain besides the pipes' busy
            time, as (event, count) pairs: "mma" (a GEMM's last MMA retiring), "smem" (a
            shared-memory load the next instruction waits for), "sfu" (an exp), "fp" (a
            dependent fp32 add/max/multiply), "shfl" (a warp shuffle round), "bar" (a
            barrier); the timing model prices each at the GPU's
            measured latency (``hwmodels.timing``, ``algorithms.kernels.step_latency``).
            Pricing only. (): none declared.
        softmax_beside_own_gemm: the share of each softmax pipe's work ("xu": exps, "fma",
            "alu") that a chain issues while its own GEMMs of the step are still in flight,
            as (pipe, fraction) pairs: the rest waits for them, a phase of the chain after
            the GEMM phase (``hwmodels.timing``). Read off the compiled kernel where a source
            gives it (FlashAttention-3's release: ``algorithms.flash3``). Pricing only.
            (): the whole softmax follows the GEMMs.
        chain_steps: the tile steps those events are paid on, summed over the kernel's CTAs
            and over each CTA's independent chains. 0: none.
        barrier_threads: the threads that meet at the step's barriers (``step_events``'
            "bar"), which take longer the more warps meet: FlashAttention-3's named barriers
            join two consumer warpgroups, not its producer. 0: the whole CTA.
        step_loads: global loads a tile step issues into registers and uses later in the
            same step or the next (the v1 release's next Q_i and dO_i, staged through
            registers on their way to shared memory; its forward's fp32 O_i and its loop
            kernel's fp32 dQ_i read back to be added to): each a ``StepLoad`` saying where
            the data comes from and how much of the step's work lies between issue and use.
            What of the load's latency that work does not cover waits on the chain
            (``hwmodels.timing``). Pricing only.
            (): none (cp.async and TMA loads, issued a whole tile ahead, wait on no chain).
        library_lane_ops: lane-ops the compiled kernel spends, beyond the ops it counts, in
            the math library's routines, as (pipe, lane-ops) pairs over the pipes "fma",
            "alu" and "xu": a kernel built without ``--use_fast_math`` (PyTorch's) computes
            ``std::exp`` as an accurate ``expf``, several instructions around one MUFU.EX2,
            and ``x / y`` as an IEEE division (``algorithms.standard.aten_softmax``).
            Pricing only (``accurate_math``). (): none (the counted ops are the instructions).
        thread_round_bytes: bytes one thread of a register-staged streaming kernel (no
            shared-memory tiles) moves in one round: the loads it issues before it waits for
            them, plus the stores it then issues. Its threads hold no more in flight, so the
            kernel takes one DRAM round trip, at the latency its own traffic loads the DRAM
            to, for every SMs x resident threads x this many bytes (``hwmodels.timing``,
            ``loaded_latency``): ATen's elementwise loop over non-contiguous operands moves one
            element a round (``algorithms.standard.pytorch_eager``). 0: not declared.
        read_sector_use: the share of each 32-byte sector L2 delivers that the kernel's
            reads use: 1 when a warp's loads are coalesced; e / 32 when each thread of a warp
            reads one e-byte element from a different sector (a transposing copy). The
            counts keep the bytes requested; the L2 term moves whole sectors.
        raw: the int64 counter array the kernel body adds to (``hwmodels.counters``).
        folded: exact Python-int counts folded out of ``raw`` by ``Recorder.repeat``.
        ``counters`` is their sum.
    """

    name: str
    ctas: int
    buffers: dict[str, int]
    threads_per_cta: int = 128
    register_bytes_per_cta: int = 0
    tc_path: str = "mma_sync"
    overlap: str = "serial"
    cta_work: np.ndarray | None = None
    matmul_dtype: str = "fp16"
    unique_hbm_bytes: int | None = None
    l2_working_set_bytes: int | None = None
    chains_per_cta: int = 1
    smem_readers: int = 1
    mma_rows_per_cta: int = 0
    prologue_bytes_per_cta: int = 0
    read_sector_use: float = 1.0
    smem_exchange_bytes: int = 0
    epilogue_elements_per_cta: int = 0
    register_operand_bytes_per_flop: float = 0.0
    step_events: tuple = ()
    softmax_beside_own_gemm: tuple = ()
    chain_steps: int = 0
    step_loads: tuple = ()
    barrier_threads: int = 0
    library_lane_ops: tuple = ()
    thread_round_bytes: int = 0
    row_padding: float = 1.0
    raw: np.ndarray = field(default_factory=new_counters)
    folded: list = field(default_factory=lambda: [0] * NUM_SLOTS)

    @property
    def counters(self) -> np.ndarray:
        """Exact counts, slot by slot, as an object array of Python ints (never wraps)."""
        self._check_not_wrapped()
        return np.array([f + int(r) for f, r in zip(self.folded, self.raw)], dtype=object)

    def fold_and_scale(self, times: int) -> None:
        """The counts so far stand for ``times`` repetitions: multiply the additive slots in
        Python integers and clear them from the int64 array."""
        self._check_not_wrapped()
        for slot in ADDITIVE_SLOTS:
            self.folded[slot] = (self.folded[slot] + int(self.raw[slot])) * int(times)
            self.raw[slot] = 0

    def _check_not_wrapped(self) -> None:
        """Counts only grow: a negative int64 count wrapped around. The workload limits
        (``attnsim.validate``) keep one kernel body far below 2**63; this is the alarm if a
        body ever exceeds them, so that a wrapped count is an error, never a number."""
        if (self.raw < 0).any():
            raise OverflowError(f"kernel {self.name}: an int64 counter wrapped around "
                                f"({dict(zip(COUNTER_NAMES, self.raw.tolist()))})")

    @property
    def sram_bytes_per_cta(self) -> int:
        return int(sum(self.buffers.values()))

    def counts(self) -> dict[str, int]:
        return counters_to_dict(self.counters)


# The record behind each counter array handed to a kernel body, so that ``Recorder.repeat``
# (which kernels call with the array alone) scales the record's exact counts.
_RECORD_OF_ARRAY: "weakref.WeakValueDictionary[int, KernelRecord]" = weakref.WeakValueDictionary()


class Recorder:
    """Collects the kernels one simulated algorithm launches.

    Arguments:
        gpu: the simulated GPU.
        sram_budget_bytes: M, the on-chip bytes one CTA may use (default: the GPU's
            maximum shared memory per block).
    """

    def __init__(self, gpu: GPU, sram_budget_bytes: int | None = None):
        self.gpu = gpu
        self.sram_budget_bytes = int(sram_budget_bytes or gpu.smem_bytes_per_block)
        self.kernels: list[KernelRecord] = []
        self.info: dict = {}  # algorithm-specific facts for the result (pattern density, ...)

    def kernel(self, name: str, *, ctas: int, buffers: dict[str, int], threads_per_cta=128,
               register_bytes_per_cta=0, tc_path="mma_sync", overlap="serial", cta_work=None,
               matmul_dtype="fp16", unique_hbm_bytes=None,
               l2_working_set_bytes=None, chains_per_cta=1, smem_readers=1,
               mma_rows_per_cta=0, prologue_bytes_per_cta=0,
               read_sector_use=1.0, smem_exchange_bytes=0,
               epilogue_elements_per_cta=0, register_operand_bytes_per_flop=0.0,
               step_events=(), chain_steps=0, softmax_beside_own_gemm=(),
               step_loads=(), barrier_threads=0, library_lane_ops=(),
               thread_round_bytes=0, row_padding=1.0) -> np.ndarray:
        """Declare one kernel launch; returns the counter array its body adds to."""
        if tc_path not in TC_PATHS:
            raise ValueError(f"tc_path must be one of {TC_PATHS}, got {tc_path!r}")
        if overlap not in OVERLAP_MODES:
            raise ValueError(f"overlap must be one of {OVERLAP_MODES}, got {overlap!r}")
        for pipe, share in dict(softmax_beside_own_gemm).items():
            if pipe not in SOFTMAX_PIPES or not 0.0 <= share <= 1.0:
                raise ValueError(f"softmax_beside_own_gemm takes shares in [0, 1] of the "
                                 f"pipes {SOFTMAX_PIPES}, got {pipe!r}: {share!r}")
        for load in step_loads:
            check_step_load(load)
        for pipe, ops in dict(library_lane_ops).items():
            if pipe not in LIBRARY_PIPES or ops < 0:
                raise ValueError(f"library_lane_ops takes non-negative lane-ops on the pipes "
                                 f"{LIBRARY_PIPES}, got {pipe!r}: {ops!r}")
        if thread_round_bytes < 0 or (thread_round_bytes and sum(buffers.values())):
            raise ValueError(f"kernel {name!r}: thread_round_bytes ({thread_round_bytes}) is "
                             f"a register-staged kernel's, non-negative and without buffers")
        if not row_padding >= 1.0:
            raise ValueError(f"kernel {name!r}: row_padding ({row_padding}) is the rows "
                             f"computed over the rows counted, at least 1")
        check_sram_fits(f"kernel {name!r}", buffers, self.sram_budget_bytes)
        rec = KernelRecord(name=name, ctas=int(ctas), buffers=dict(buffers),
                           threads_per_cta=threads_per_cta,
                           register_bytes_per_cta=register_bytes_per_cta, tc_path=tc_path,
                           overlap=overlap,
                           cta_work=None if cta_work is None else np.asarray(cta_work, float),
                           matmul_dtype=matmul_dtype, unique_hbm_bytes=unique_hbm_bytes,
                           l2_working_set_bytes=l2_working_set_bytes,
                           chains_per_cta=int(chains_per_cta), smem_readers=int(smem_readers),
                           mma_rows_per_cta=int(mma_rows_per_cta),
                           prologue_bytes_per_cta=int(prologue_bytes_per_cta),
                           read_sector_use=float(read_sector_use),
                           smem_exchange_bytes=int(smem_exchange_bytes),
                           epilogue_elements_per_cta=int(epilogue_elements_per_cta),
                           register_operand_bytes_per_flop=float(
                               register_operand_bytes_per_flop),
                           step_events=tuple((str(e), float(n)) for e, n in step_events),
                           softmax_beside_own_gemm=tuple(
                               (str(pipe), float(share))
                               for pipe, share in dict(softmax_beside_own_gemm).items()),
                           chain_steps=int(chain_steps), step_loads=tuple(step_loads),
                           barrier_threads=int(barrier_threads),
                           library_lane_ops=tuple((str(pipe), float(ops)) for pipe, ops
                                                  in dict(library_lane_ops).items()),
                           thread_round_bytes=int(thread_round_bytes),
                           row_padding=float(row_padding))
        rec.folded[KERNEL_LAUNCHES] = 1
        rec.folded[CTAS] = int(ctas)
        rec.folded[SRAM_PEAK_BYTES] = rec.sram_bytes_per_cta
        self.kernels.append(rec)
        _RECORD_OF_ARRAY[id(rec.raw)] = rec
        return rec.raw

    def resident_ctas(self, ctas: int, sram_bytes_per_cta: int, register_bytes_per_cta: int = 0,
                      threads_per_cta: int = 128) -> int:
        """CTAs of a grid resident at one time (for L2 working sets)."""
        per_sm = self.gpu.ctas_per_sm(sram_bytes_per_cta, register_bytes_per_cta,
                                      threads_per_cta)
        return min(ctas, self.gpu.sm_count * per_sm)

    @staticmethod
    def repeat(counters: np.ndarray, times: int) -> None:
        """Scale the additive slots: a body counted for one head stands for ``times`` heads.

        ``counters`` is an array from ``kernel()``: the record's exact counts are scaled in
        Python integers. Any other int64 array is scaled in place, refusing a product that
        would not fit."""
        rec = _RECORD_OF_ARRAY.get(id(counters))
        if rec is not None and rec.raw is counters:
            rec.fold_and_scale(times)
            return
        scaled = [int(counters[s]) * int(times) for s in ADDITIVE_SLOTS]
        if any(abs(v) >= 2**63 for v in scaled):
            raise OverflowError("a counter scaled outside a kernel record exceeds int64")
        counters[ADDITIVE_SLOTS] = scaled

    def totals(self) -> np.ndarray:
        """Sum over kernels in Python integers (object array, exact at any size); the SRAM
        peak is the largest kernel's footprint."""
        total = np.array([0] * NUM_SLOTS, dtype=object)
        for k in self.kernels:
            counts = k.counters
            peak = max(total[SRAM_PEAK_BYTES], counts[SRAM_PEAK_BYTES])
            total = total + counts
            total[SRAM_PEAK_BYTES] = peak
        return total
