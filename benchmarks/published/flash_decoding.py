"""Decoding through FlashAttention-2: the Flash-Decoding blog post's micro-benchmark (October
2023), the page's decode points on the A100.

The post times one decoding step of attention on an A100 in f16: B sequences of N cached
tokens, one new query token each, 16 query heads of dimension 128 over 2 K/V heads (GQA; the
shapes of CodeLlama-34B on 4 GPUs), B x N = 65,536 tokens in all but its last row. Three
columns: PyTorch eager, FlashAttention v2.0.9 and Flash-Decoding.

- FlashAttention v2.0.9 is FlashAttention-2's forward before split-KV: one CTA per (sequence,
  query head) row block of 128 rows, of which one is a query, walking the whole cache; each
  query head's CTA reads its K/V head. That is ``flash2`` (the release's tiles) on
  ``seq_q = 1``: the page compares it. Its CTAs compute their whole 128-row tiles, so a step
  costs 128 rows of MMAs and softmax (``KernelRecord.row_padding``); without that
  (``--no-row-padding``) the model would put the thin grids (B <= 4: 16 to 64 CTAs) at
  several times the measured speed.
- Flash-Decoding splits the cache over the SMs and combines the partial results. Which kernel
  the post timed is not stated: FlashAttention's split-KV kernel (2.2) or xFormers' Triton
  split-K kernel, both behind ``xformers.ops.memory_efficient_attention``, which picks one.
  The page quotes the column beside ``gqa --decode`` (a split-KV kernel that packs a group's
  query heads into one CTA's rows) without counting it among the compared points.
- PyTorch eager is not predicted: its program for GQA (how it repeats the K/V heads) is not
  stated.

Which A100: the post says A100 only. The page takes the 80 GB part (the ``a100`` alias), as
for every unsized A100, and the post's own numbers point there: from 65,536 to 131,072 tokens
Flash-Decoding's time grows by what moving 67 MB more takes at 1.59 TB/s, above the 40 GB
part's 1.555 TB/s datasheet bandwidth (``marginal_bandwidth``).
"""
from __future__ import annotations

import functools

from tabulate import tabulate

from attnsim.workload import Workload
from hwmodels.timing import TimingOptions

from .figures import Comparison, evaluated
from .predictions import predicted_seconds

# FD-BLOG: (B, N) -> (PyTorch eager, FlashAttention v2.0.9, Flash-Decoding), µs
FD_BLOG_US = {(256, 256): (3058.6, 390.5, 63.4), (128, 512): (3151.4, 366.3, 67.7),
              (64, 1024): (3160.4, 364.8, 77.7), (32, 2048): (3158.3, 352.0, 58.5),
              (16, 4096): (3157.0, 401.7, 57.0), (8, 8192): (3173.1, 529.2, 56.4),
              (4, 16384): (3223.0, 582.7, 58.2), (2, 32768): (3224.1, 1156.1, 60.3),
              (1, 65536): (1335.6, 2300.6, 64.4), (1, 131072): (2664.0, 4592.2, 106.6)}
QUERY_HEADS, KV_HEADS, HEAD_DIM, ELEM_BYTES = 16, 2, 128, 2
GPU = "a100-80gb"
FA2_COLUMN, SPLIT_COLUMN = 1, 2


def workload(batch: int, seq: int, decode: bool = False) -> Workload:
    """One decoding step: a query token per sequence over a cache of ``seq`` tokens."""
    return Workload(batch=batch, heads=QUERY_HEADS, kv_heads=KV_HEADS, seq_q=1, seq_k=seq,
                    head_dim=HEAD_DIM, decode=decode)


def cache_bytes(batch: int, seq: int) -> float:
    """The K/V cache one step reads: B N tokens of K and V on each K/V head, in f16."""
    return 2.0 * batch * seq * KV_HEADS * HEAD_DIM * ELEM_BYTES


def cache_gbps(batch: int, seq: int, seconds: float) -> float:
    """The step's K/V cache over its time: the rate the page compares (GB/s)."""
    return cache_bytes(batch, seq) / seconds / 1e9


def flash2_seconds(batch: int, seq: int, gpu: str = GPU,
                   timing: TimingOptions = TimingOptions()) -> float:
    """FlashAttention v2.0.9's step as the model runs it: ``flash2`` on one query row."""
    return predicted_seconds("flash2", workload(batch, seq), gpu, timing)


def split_seconds(batch: int, seq: int, gpu: str = GPU) -> float:
    """A split-KV decode step as the model runs it: ``gqa --decode``."""
    return predicted_seconds("gqa", workload(batch, seq, decode=True), gpu)


def comparisons() -> list[Comparison]:
    """The FlashAttention v2.0.9 column, one point per (B, N)."""
    rows = []
    for (batch, seq), us in FD_BLOG_US.items():
        rows.append(Comparison(
            "FD-BLOG", "FA-2 v2.0.9 decode step (one query row a sequence), K/V cache GB/s, "
            "measured", GPU,
            f"B {batch}, N_k {seq}, {QUERY_HEADS} query heads over {KV_HEADS} K/V heads, "
            f"d {HEAD_DIM}, fp16, fwd ({us[FA2_COLUMN]} µs)",
            (cache_gbps(batch, seq, us[FA2_COLUMN] * 1e-6),), "GB/s",
            functools.partial(lambda b, n: (cache_gbps(b, n, flash2_seconds(b, n)),),
                              batch, seq),
            algorithm="flash2"))
    return rows


def marginal_bandwidth() -> float:
    """Flash-Decoding's extra cache over its extra time from the post's last two rows (bytes
    per second): a lower bound on the board's bandwidth."""
    (b1, n1), (b2, n2) = list(FD_BLOG_US)[-2:]
    extra_s = (FD_BLOG_US[b2, n2][SPLIT_COLUMN] - FD_BLOG_US[b1, n1][SPLIT_COLUMN]) * 1e-6
    return (cache_bytes(b2, n2) - cache_bytes(b1, n1)) / extra_s


def decode_table(fmt: str) -> str:
    """Both columns the page predicts, as published and as the model runs them."""
    unpadded = TimingOptions(row_padding=False)
    rows = []
    for (batch, seq), us in FD_BLOG_US.items():
        fa2, split = us[FA2_COLUMN], us[SPLIT_COLUMN]
        rows.append([batch, seq,
                     f"{fa2:.1f} / {flash2_seconds(batch, seq) * 1e6:.1f}",
                     f"{flash2_seconds(batch, seq, timing=unpadded) * 1e6:.1f}",
                     f"{split:.1f} / {split_seconds(batch, seq) * 1e6:.1f}",
                     f"{split_seconds(batch, seq, 'a100-40gb') * 1e6:.1f}"])
    return tabulate(rows, headers=[
        "B", "N", "FA v2.0.9 µs: published / flash2", "flash2 --no-row-padding",
        "Flash-Decoding µs: published / gqa --decode", "gqa --decode on the 40 GB A100"],
        tablefmt=fmt)


def section(fmt: str) -> str:
    """The page's section on decoding through FlashAttention-2."""
    measured = [r for c, _, rs in evaluated() if c.source == "FD-BLOG" for r in rs]
    split = [FD_BLOG_US[key][SPLIT_COLUMN] * 1e-6 / split_seconds(*key) for key in FD_BLOG_US]
    split_40 = [FD_BLOG_US[key][SPLIT_COLUMN] * 1e-6 / split_seconds(*key, "a100-40gb")
                for key in FD_BLOG_US]
    unpadded = [FD_BLOG_US[key][FA2_COLUMN] * 1e-6
                / flash2_seconds(*key, timing=TimingOptions(row_padding=False))
                for key in FD_BLOG_US]
    return "\n\n".join([
        "## Decoding through FlashAttention-2: the Flash-Decoding micro-benchmark",
        "The Flash-Decoding blog post ([FD-BLOG]) times one decoding step on an A100: B "
        "sequences of N cached tokens, one query token each, 16 query heads over 2 K/V heads, "
        "d = 128, fp16, B x N = 65,536 tokens (131,072 in the last row). Its FlashAttention "
        "v2.0.9 column is FlashAttention-2's forward before split-KV: one CTA per sequence, "
        "query head and 128-row block, of which one row is a query, walking the whole cache "
        "(`flash2` on one query row, the release's tiles; `benchmarks/published/"
        "flash_decoding.py`). The page compares it as GB/s of the K/V cache: "
        f"{min(measured):.2f}–{max(measured):.2f} of what was measured. The kernel computes "
        "its whole 128-row tile on every K/V tile, a query row and 127 rows past the end "
        "(flash_fwd_kernel.h: the rows past the sequence are neither loaded nor stored, the "
        "GEMMs and the softmax run on the whole tile), so at B <= 4, where 16 to 64 CTAs "
        "leave most of the 108 SMs idle, each SM's tensor cores set the time. The model "
        "prices the rows computed, not only those counted (`row_padding`); on the rows "
        f"counted alone (`--no-row-padding`) the same points would be "
        f"{min(unpadded):.2f}–{max(unpadded):.2f}.",
        "The Flash-Decoding column splits the cache over the SMs and combines the partial "
        "results; which kernel was timed is not stated (FlashAttention's split-KV kernel or "
        "xFormers' Triton split-K kernel, both behind `xformers.ops.memory_efficient_attention`), "
        "so the page quotes it beside `gqa --decode` (a split-KV kernel that packs a group's "
        "query heads into a CTA's rows) without counting it among the compared points: "
        f"{min(split):.2f}–{max(split):.2f} on the 80 GB A100 the page takes, "
        f"{min(split_40):.2f}–{max(split_40):.2f} on the 40 GB part. The post says only A100. "
        "From 65,536 to 131,072 tokens the column's time grows by what the extra 67 MB takes "
        f"at {marginal_bandwidth() / 1e12:.2f} TB/s, above the 40 GB part's 1.555 TB/s "
        "datasheet bandwidth, so the board is most likely the 80 GB part, the `a100` alias "
        "the page takes for every unsized A100; on it the model's split-KV step is faster "
        "than the "
        "measured one, by the most where the measured time is the least regular "
        "(B = 64, N = 1024). Its PyTorch eager column is not predicted: how it repeats the "
        "K/V heads for GQA is not stated.",
        decode_table(fmt)])
