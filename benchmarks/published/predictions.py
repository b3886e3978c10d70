"""The papers' benchmark shapes, the GPUs of the page and the predictions made for them.

Every other module of the package prices a published figure through ``predicted_seconds``
or ``tflops``: a count-only simulation (``simulate(..., compute=False)``) of the workload on
the GPU's model, with the program the published figure timed (``PUBLISHED_PROGRAM``).

TFLOP/s are counted as the FlashAttention papers' benchmark script counts them
(flash-attention's benchmarks/benchmark_flash_attention.py, ``flops``): forward 4·B·N²·H·d,
halved when causal; backward 2.5x and forward+backward 3.5x the forward — not from the
simulator's FLOP counters, so that predicted and published throughputs divide the same work
by their times.

The GPU models are the one piece of state: ``MEASURED`` (set by ``use_measured``, for
``--measured FILE``) replaces a built-in model, and every cached result of the package
depends on it, so ``use_measured`` empties every cache.
"""
from __future__ import annotations

import functools
import sys

from attnsim.simulate import simulate
from attnsim.workload import Workload
from hwmodels import get_gpu
from hwmodels.timing import TimingOptions

# FlashAttention-2 README, "Performance" / A100: "Head dimension 64 or 128, hidden dimension
# 2048 (i.e. either 32 or 16 heads). Sequence length 512, 1k, 2k, 4k, 8k, 16k. Batch size set
# to 16k / seqlen." The FlashAttention-3 paper uses the same sizing (pytorch/benchmark commit
# ff65cb6: "the FA3 paper sizes inputs such that B*S=16k and H*Dhead=2048"), with head dim
# 64, 128 and 256.
SEQS = (512, 1024, 2048, 4096, 8192, 16384)
TOKENS = 16384
HIDDEN = 2048
PASS_FLOP_FACTOR = {"fwd": 1.0, "bwd": 2.5, "fwd+bwd": 3.5}


# The GPUs of the published figures; ``--measured FILE`` replaces one with a GPU file measured
# on that board (benchmarks/gpu_microbench.py --toml), so a GPU session's constants re-predict
# every point of that GPU. Peaks ("% of peak") stay the datasheet's, as the papers divide.
PAGE_GPUS = ("a100-80gb", "h100-sxm", "h100-pcie")
MEASURED: dict = {}     # the only state of the package: board name -> measured GPU


def model_gpu(name: str):
    """The GPU the predictions use: the measured file given for it, else the built-in model."""
    return MEASURED.get(name) or get_gpu(name)


def board_of(gpu) -> str | None:
    """Which GPU of the page a GPU file describes: the one whose SMs, dense fp16 peak and HBM
    (size and bandwidth) it keeps, as a file based on it does."""
    for name in PAGE_GPUS:
        ref = get_gpu(name)
        if (gpu.sm_count, gpu.tensor_fp16_flops_per_s, gpu.hbm_bytes,
                gpu.hbm_bandwidth_bytes_per_s) == (ref.sm_count, ref.tensor_fp16_flops_per_s,
                                                   ref.hbm_bytes, ref.hbm_bandwidth_bytes_per_s):
            return name
    return None


def use_measured(gpu) -> str:
    """Predict the points of ``gpu``'s board with it (``None``: back to the built-in models);
    returns the board's name. Clears every cached prediction."""
    if gpu is None:
        MEASURED.clear()
        name = ""
    else:
        name = board_of(gpu)
        if name is None:
            raise ValueError(
                f"it describes {gpu.sm_count} SMs, {gpu.tensor_fp16_flops_per_s / 1e12:.1f} "
                f"TFLOP/s fp16 and {gpu.hbm_bandwidth_bytes_per_s / 1e12:.2f} TB/s of HBM, "
                "which is none of the page's GPUs (" + ", ".join(PAGE_GPUS) + "); "
                "measure on one of them (gpu_microbench.py --toml keeps its base's datasheet "
                "fields)")
        MEASURED[name] = gpu
    clear_cached_predictions()
    return name


def clear_cached_predictions() -> None:
    """Empty the ``functools.lru_cache`` of every function of this package, wherever it is
    defined: each caches results computed with the GPU models that ``MEASURED`` chooses."""
    package = __name__.rpartition(".")[0]
    for name, module in list(sys.modules.items()):
        if name.startswith(package + "."):
            for value in list(vars(module).values()):
                if callable(getattr(value, "cache_clear", None)):
                    value.cache_clear()


def paper_workload(seq: int, head_dim: int, causal: bool = False, dtype: str = "fp16",
                   passes: str = "fwd") -> Workload:
    """The papers' benchmark shape: batch = 16k / N, heads = 2048 / d."""
    return Workload(batch=TOKENS // seq, heads=HIDDEN // head_dim, seq_q=seq, head_dim=head_dim,
                    causal=causal, dtype=dtype, passes=passes)


def paper_flops(wl: Workload) -> float:
    """FLOPs as the FlashAttention benchmarks count them (benchmark_flash_attention.py)."""
    fwd = 4.0 * wl.batch * wl.heads * wl.seq_q * wl.seq_k * wl.head_dim
    if wl.causal:
        fwd /= 2
    return fwd * PASS_FLOP_FACTOR[wl.passes]


def measured_tflops(wl: Workload, ms: float) -> float:
    """A benchmark log's time in ms as TFLOP/s, counted as the FlashAttention benchmarks count."""
    return paper_flops(wl) / (ms * 1e-3) / 1e12


# What every published figure of an algorithm timed, where the simulator's default differs:
# FlashAttention-2's release, on the tiles and warps it dispatches per head dim (``flash2
# --tiles release``; the same as the default plan at d = 64 and 128, not at d = 256).
PUBLISHED_PROGRAM = {"flash2": (("tiles", "release"),)}


def with_published_program(algorithm: str, options: tuple) -> tuple:
    """``options`` with the published program's settings added where they are not given."""
    given = dict(options)
    for name, value in PUBLISHED_PROGRAM.get(algorithm, ()):
        given.setdefault(name, value)
    return tuple(given.items())


@functools.lru_cache(maxsize=None)
def predicted_seconds(algorithm: str, wl: Workload, gpu: str,
                      timing: TimingOptions = TimingOptions(), options: tuple = ()) -> float:
    """``options``: the algorithm's options as (name, value) pairs (hashable, for the cache),
    the published program's (``PUBLISHED_PROGRAM``) added."""
    return simulate(algorithm, wl, model_gpu(gpu) if isinstance(gpu, str) else gpu,
                    compute=False, timing=timing,
                    options=dict(with_published_program(algorithm, options))).time.predicted_s


def tflops(algorithm: str, wl: Workload, gpu: str,
           timing: TimingOptions = TimingOptions(), options: tuple = ()) -> float:
    return paper_flops(wl) / predicted_seconds(algorithm, wl, gpu, timing, options) / 1e12


def peak_tflops(gpu: str, dtype: str = "fp16") -> float:
    return get_gpu(gpu).tensor_flops_per_s(dtype) / 1e12


def exp_over_mma_time(head_dim: int, gpu: str = "h100-sxm") -> float:
    """One score's exponential on the special-function units over its 4 d MMA FLOPs at the
    tensor peak, both at the model's clock: 1 means a softmax's exps alone take as long as
    the tile's GEMMs."""
    g = model_gpu(gpu)
    sfu = g.sfu_ops_per_clock_per_sm * g.sm_count * g.sustained_clock
    return g.tensor_flops_per_s("fp16") / (4 * head_dim * sfu)


def sweep(head_dims, causals=(False, True), dtype="fp16", passes="fwd"):
    return [paper_workload(n, d, c, dtype, passes)
            for d in head_dims for c in causals for n in SEQS]
