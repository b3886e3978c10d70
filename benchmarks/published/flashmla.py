"""FlashMLA, DeepSeek's MLA decoding kernel for Hopper (February 2025): the page's decode figures.

FlashMLA runs MLA's absorbed decode, the attention of every query head over one sequence's
latent cache (d_k = d_c + d_h^R = 576 columns, of which the first d_v = 512 are also the
values), split over the SMs, with a combine kernel for the sequences it splits. The simulator
runs the same computation as ``mla --path absorbed``: its kernel ``mla_latent_attn`` (and
``splitkv_combine`` when it splits). FlashMLA's benchmark, tests/test_flash_mla.py, times
``flash_mla_with_kvcache`` alone, on queries already absorbed (q̃ = q^C W_UK), so the
prediction is those kernels' time; ``mla``'s absorption GEMMs before and after are outside
the timer.

The benchmark's sweep: 128 sequences, a cache of 4096 or 8192 tokens, 16, 32, 64 or 128 query
heads (tensor parallelism 8 to 1), 1 or 2 new tokens (multi-token prediction), one latent
"KV head", bf16, causal, each length fixed or drawn at random (varlen). Only fixed lengths
are predicted: the random ones are not given. It reports

    FLOPs = 2 s_q (Σ N_k) h_q (d_k + d_v),
    bytes = 2 ((Σ N_k) d_k + B s_q h_q d_k + B s_q h_q d_v)      (bf16: 2 bytes)

over its time, and the page compares the same throughputs.
"""
from __future__ import annotations

import functools

from tabulate import tabulate

from attnsim.simulate import simulate
from attnsim.workload import Workload

from .figures import Comparison, evaluated
from .predictions import model_gpu

BATCH = 128
CACHE_LENGTHS = (4096, 8192)
QUERY_HEADS = (16, 32, 64, 128)
NEW_TOKENS = (1, 2)
D_K, D_V = 576, 512             # the latent and RoPE key (512 + 64); the values: the latent
LATENT_KERNELS = ("mla_latent_attn", "splitkv_combine")   # what flash_mla_with_kvcache runs
# d_h, DeepSeek-V2's per-head dimension: it sizes only the absorption GEMMs, outside the timer
HEAD_DIM = 128

# FMLA-H100: tests/test_flash_mla.py on a Modal H100, 24 February 2025 (the first release's
# kernel), cache 4096, fixed lengths: (query heads, new tokens) -> ms. The log stops at 64
# heads with one new token.
FMLA_H100_MS = {(16, 1): 0.215, (16, 2): 0.218, (32, 1): 0.218, (32, 2): 0.223,
                (64, 1): 0.223}
FMLA_H100_CACHE = 4096
# FMLA: the README's "up to 3000 GB/s in memory-bound configuration and 580 TFLOPS in
# computation-bound configuration on H800 SXM5" for the same kernel and sweep
FMLA_README_GBPS = 3000
FMLA_README_TFLOPS = 580


def workload(heads: int, new_tokens: int, cache: int) -> Workload:
    return Workload(batch=BATCH, heads=heads, seq_q=new_tokens, seq_k=cache,
                    head_dim=HEAD_DIM, dtype="bf16", causal=True, decode=True)


@functools.lru_cache(maxsize=None)
def latent_kernels(heads: int, new_tokens: int, cache: int, gpu: str = "h100-sxm") -> tuple:
    """The timing model's terms for the latent attention (and combine) kernels of one decode
    step of ``mla --path absorbed`` (``hwmodels.timing.KernelTime``)."""
    result = simulate("mla", workload(heads, new_tokens, cache), model_gpu(gpu),
                      compute=False, options={"path": "absorbed"})
    return tuple(k for k in result.time.kernels if k.name in LATENT_KERNELS)


def predicted_seconds(heads: int, new_tokens: int, cache: int, gpu: str = "h100-sxm") -> float:
    return sum(k.total_s for k in latent_kernels(heads, new_tokens, cache, gpu))


def flops(heads: int, new_tokens: int, cache: int) -> float:
    return 2.0 * new_tokens * BATCH * cache * heads * (D_K + D_V)


def bytes_moved(heads: int, new_tokens: int, cache: int) -> float:
    return 2.0 * (BATCH * cache * D_K + BATCH * new_tokens * heads * (D_K + D_V))


def sweep() -> list[tuple[int, int, int]]:
    return [(h, s, n) for n in CACHE_LENGTHS for h in QUERY_HEADS for s in NEW_TOKENS]


def best_gbps() -> tuple[float]:
    return (max(bytes_moved(*c) / predicted_seconds(*c) / 1e9 for c in sweep()),)


def best_tflops() -> tuple[float]:
    return (max(flops(*c) / predicted_seconds(*c) / 1e12 for c in sweep()),)


def h100_gbps(heads: int, new_tokens: int) -> tuple[float]:
    config = (heads, new_tokens, FMLA_H100_CACHE)
    return (bytes_moved(*config) / predicted_seconds(*config) / 1e9,)


SWEEP_TEXT = "its test sweep: B 128, cache 4k/8k, 16–128 heads, 1–2 new tokens, bf16"


def comparisons() -> list[Comparison]:
    """The README's two maxima (H800 SXM5, predicted as the H100 SXM5: the same SMs, clocks,
    3.35 TB/s and 990 TFLOP/s, [FMLA-dive]) and the H100 log's points."""
    rows = [
        Comparison("FMLA", "FlashMLA decode on H800 SXM5, best GB/s (memory-bound)",
                   "h100-sxm", SWEEP_TEXT, (FMLA_README_GBPS,), "GB/s", best_gbps,
                   algorithm="mla", dtype="bf16"),
        Comparison("FMLA", "FlashMLA decode on H800 SXM5, best TFLOP/s (compute-bound)",
                   "h100-sxm", SWEEP_TEXT, (FMLA_README_TFLOPS,), "TFLOP/s", best_tflops,
                   algorithm="mla", dtype="bf16"),
    ]
    for (heads, new_tokens), ms in FMLA_H100_MS.items():
        config = (heads, new_tokens, FMLA_H100_CACHE)
        rows.append(Comparison(
            "FMLA-H100", "FlashMLA decode GB/s, measured", "h100-sxm",
            f"B 128, cache {FMLA_H100_CACHE}, {heads} query heads, {new_tokens} new "
            f"token{'s' if new_tokens > 1 else ''}, bf16, causal ({ms} ms)",
            (bytes_moved(*config) / (ms * 1e-3) / 1e9,), "GB/s",
            functools.partial(h100_gbps, heads, new_tokens), algorithm="mla", dtype="bf16"))
    return rows


def kernel_mechanisms(heads: int, new_tokens: int, cache: int) -> str:
    """The mechanism that bounds each latent kernel of a configuration (``hwmodels.timing``)."""
    return ", ".join(k.mechanism for k in latent_kernels(heads, new_tokens, cache))


def sweep_table(fmt: str) -> str:
    rows = [[n, h, s, f"{predicted_seconds(h, s, n) * 1e3:.3f}",
             f"{bytes_moved(h, s, n) / predicted_seconds(h, s, n) / 1e9:.0f}",
             f"{flops(h, s, n) / predicted_seconds(h, s, n) / 1e12:.0f}",
             kernel_mechanisms(h, s, n)] for h, s, n in sweep()]
    return tabulate(rows, headers=["cache", "query heads", "new tokens", "predicted ms",
                                   "GB/s", "TFLOP/s", "bound by"], tablefmt=fmt)


def section(fmt: str) -> str:
    """The page's section on FlashMLA's figures."""
    measured = [r for c, _, rs in evaluated() if c.source == "FMLA-H100" for r in rs]
    readme = {c.unit: (pred[0], rs[0]) for c, pred, rs in evaluated() if c.source == "FMLA"}
    gbps, gbps_ratio = readme["GB/s"]
    tf, tf_ratio = readme["TFLOP/s"]
    h100 = [bytes_moved(h, s, FMLA_H100_CACHE) / (ms * 1e-3) / 1e9
            for (h, s), ms in FMLA_H100_MS.items()]
    return "\n\n".join([
        "## FlashMLA's decode figures",
        "A kernel built for decoding: DeepSeek's FlashMLA ([FMLA]), MLA's absorbed decode "
        "over the latent cache (`mla --path absorbed`; the prediction is its latent attention "
        "kernels' time, as FlashMLA's benchmark times `flash_mla_with_kvcache` on queries "
        "already absorbed; `mla`'s two absorption GEMMs are outside that timer). Its benchmark "
        "counts GB/s and TFLOP/s by its own formulas (`benchmarks/published/flashmla.py`), and "
        "the page divides the same counts by the predicted times. With up to 64 query rows a "
        "sequence the kernel streams the latent cache once at HBM bandwidth: the H100 log's "
        f"five points ([FMLA-H100], {min(h100):.0f}–{max(h100):.0f} GB/s) are predicted at "
        f"{min(measured):.2f}–{max(measured):.2f} of what was measured, and the README's best "
        f"{FMLA_README_GBPS} GB/s on the H800 SXM5 at {gbps_ratio:.2f} ({gbps:.0f} predicted). "
        "With 128 and more rows, two or more CTAs (FlashMLA's m-blocks of 64 rows; `mla`'s "
        "packs of 64 heads or its row blocks) read each sequence's latent: they are resident "
        "together and walk it in step, "
        "so the second reads each tile from L2 while it is still among the tiles in flight "
        "(`algorithms/kernels/splitkv.py: kv_working_set`); the kernel turns compute-bound, "
        "limited by its dependency chain (a 64 x 512 fp32 output takes half an SM's "
        "registers, so an SM holds one and no second chain hides the softmax, [FMLA-dive]). The "
        f"README's best {FMLA_README_TFLOPS} TFLOP/s is predicted at {tf:.0f} "
        f"({tf_ratio:.2f}); the deep-dive reports the H800 throttled to about 1600 MHz under "
        "this load, which the model's tensor rate (MAMF's large-GEMM fraction, "
        "`hwmodels/gpus.py`) carries only as far as a GEMM's power draw does. The sweep as "
        "predicted on the H100 SXM5 model:",
        sweep_table(fmt)])
