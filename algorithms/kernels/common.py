"""Helpers shared by the algorithm modules: head iteration, causal masks, placeholders.

Causal masks are aligned to the bottom-right corner, as in flash-attn >= 2.1 and
PyTorch's ``scaled_dot_product_attention`` with ``is_causal`` on square inputs: query row i
sees key j when ``j <= i + (seq_k - seq_q)``. For seq_q = 2, seq_k = 5 (1 = visible)::

    1 1 1 1 0
    1 1 1 1 1

and a query row with no visible key (seq_q > seq_k) outputs zeros, with lse = -inf.
"""
from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from algorithms.base import PlanError
from hwmodels.compiled import compiled
from hwmodels.memory import Recorder, SramOverflowError


def placeholder(ncols: int) -> np.ndarray:
    """A zero-row stand-in for an HBM tensor in count-only mode."""
    return np.empty((0, ncols), dtype=np.float32)


def placeholder_vector() -> np.ndarray:
    return np.empty(0, dtype=np.float32)


def kv_group(wl) -> int:
    """Query heads per key/value head (1 for MHA)."""
    return wl.heads // wl.kv_heads


def iter_heads(wl, inputs, compute: bool):
    """Yield ``(b, h, q, k, v)`` 2-D float32 views for every (batch, head).

    In count-only mode the schedule is the same for every head, so one placeholder head is
    yielded; call ``finish_heads`` afterwards to scale its counts to all heads.
    """
    if not compute:
        d = wl.head_dim
        yield -1, -1, placeholder(d), placeholder(d), placeholder(d)
        return
    group = kv_group(wl)
    for b in range(wl.batch):
        for h in range(wl.heads):
            yield b, h, inputs.q[b, h], inputs.k[b, h // group], inputs.v[b, h // group]


def head_workers() -> int:
    """Threads for executed-mode heads: the CPUs this process may use (ATTNSIM_THREADS sets it)."""
    env = os.environ.get("ATTNSIM_THREADS")
    if env:
        return max(1, int(env))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:                       # not on Linux
        return max(1, os.cpu_count() or 1)


def for_each_head(wl, inputs, compute: bool, counters: np.ndarray, body) -> None:
    """Run ``body(c, b, h, q, k, v)`` for every (batch, head), counting into ``counters``.

    Executed mode runs heads concurrently on the machine's cores: the bodies are Numba
    functions compiled with ``nogil=True``, and each head counts into its own array, summed
    at the end, so the counts do not depend on the threading. Count-only mode runs the one
    placeholder head of ``iter_heads`` and scales it to every head."""
    heads = list(iter_heads(wl, inputs, compute))
    workers = min(head_workers(), len(heads))
    if not compute or workers == 1:
        for b, h, q, k, v in heads:
            body(counters, b, h, q, k, v)
    else:
        def one_head(args):
            local = np.zeros_like(counters)
            body(local, *args)
            return local
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for local in pool.map(one_head, heads):
                counters += local
    finish_heads(counters, wl, compute)


def finish_heads(counters: np.ndarray, wl, compute: bool, heads: int | None = None) -> None:
    """In count-only mode, scale one head's counts to ``batch x heads`` heads."""
    if not compute:
        Recorder.repeat(counters, wl.batch * (wl.heads if heads is None else heads))


def new_output(wl, compute: bool, ncols: int | None = None) -> np.ndarray:
    """(batch, heads, seq_q, ncols) float32 output, or a placeholder in count-only mode."""
    ncols = wl.head_dim if ncols is None else ncols
    if not compute:
        return np.empty((0, 0, 0, ncols), dtype=np.float32)
    return np.zeros((wl.batch, wl.heads, wl.seq_q, ncols), dtype=np.float32)


def new_stats(wl, compute: bool, fill=0.0) -> np.ndarray:
    """(batch, heads, seq_q) float32 row statistics (lse, m, l)."""
    if not compute:
        return np.empty((0, 0, 0), dtype=np.float32)
    return np.full((wl.batch, wl.heads, wl.seq_q), fill, dtype=np.float32)


def head_view(arr: np.ndarray, b: int, h: int, compute: bool) -> np.ndarray:
    """``arr[b, h]``, or the matching zero-row placeholder in count-only mode."""
    if not compute:
        return arr.reshape((0,) + arr.shape[3:]) if arr.ndim == 4 else placeholder_vector()
    return arr[b, h]


MMA_ROWS = 16      # the M of an m16n8k16 MMA: a warp's row tile
WARP = 32
WGMMA_ROWS = 64    # the M of a wgmma: a warpgroup's (4 warps') row tile
WARPGROUP = 4 * WARP

# Float64 scores of one block of query rows in the references (``attnsim.reference`` and the
# feature-map references): they walk the rows in blocks this size, so that a long sequence
# is not materialised as several B x H x N_q x N_k float64 arrays at once (at B 1, H 16,
# N 4096 each is 2 GB, and page faults took most of a run's time). Rows of attention are
# independent, so blocking changes no number beyond BLAS's order of summation.
REFERENCE_BLOCK_BYTES = 8 << 20


def row_tiles(rows: int) -> int:
    """16-row MMA tiles of a CTA's ``rows`` query rows (padded to 16)."""
    return cdiv(rows, MMA_ROWS)


def mma_warps(gpu, rows: int, register_bytes: int) -> int:
    """Warps of an ``mma.sync`` attention CTA of ``rows`` query rows, laid out as
    FlashAttention-2 lays them: two 16-row tiles a warp, which then reads each K/V fragment
    from shared memory once for 32 rows (its 4-warp kernels at B_r = 128, d <= 128), when the
    CTA's fp32 tiles (``register_bytes``) fit the registers those threads may hold; otherwise
    one tile a warp (its 8-warp kernels at d = 192 and 256; the CUDA ports here always run
    one)."""
    tiles = row_tiles(rows)
    paired = cdiv(tiles, 2)
    if tiles > 1 and register_bytes <= gpu.register_bytes_for_threads(paired * WARP):
        return paired
    return tiles


def mma_layout(gpu, rows: int, register_bytes: int, seq_rows: int | None = None) -> dict:
    """``Recorder.kernel``'s warp-layout arguments for an ``mma.sync`` attention CTA of
    ``rows`` query rows laid out by ``mma_warps``: its threads, the warps that each read the
    shared K/V operand from shared memory, and the rows those warps cover; given the rows
    its CTAs cover between them (``seq_rows``: N_q, or a pack's g N_q), also the rows they
    compute over those (``row_padding``)."""
    warps = mma_warps(gpu, rows, register_bytes)
    layout = {"threads_per_cta": warps * WARP, "smem_readers": warps, "mma_rows_per_cta": rows}
    if seq_rows is not None:
        layout["row_padding"] = row_padding(seq_rows, rows)
    return layout


def wgmma_warpgroups(rows: int) -> int:
    """Warpgroups of a ``wgmma`` attention CTA of ``rows`` query rows: one per 64 rows, each
    reading the whole K and V tiles from shared memory."""
    return cdiv(rows, WGMMA_ROWS)


def row_padding(rows: int, tile_rows: int, mma_rows: int = MMA_ROWS) -> float:
    """Rows a kernel computes over the ``rows`` it counts, when it covers them with tiles of
    ``tile_rows`` rows (a CTA's row block, or a pack of heads' rows) and computes each tile
    whole, in MMAs of ``mma_rows`` rows (16 for ``mma.sync``, 64 for ``wgmma``): the rows
    past the end are computed and discarded (``KernelRecord.row_padding``). 1 when the tiles
    divide the rows."""
    if rows <= 0:
        return 1.0
    computed = cdiv(rows, tile_rows) * cdiv(tile_rows, mma_rows) * mma_rows
    return max(1.0, computed / rows)


def first_q_bytes(q_buffer_bytes: int, tile_rows: int, seq_rows: int) -> int:
    """The bytes of its Q tile a CTA loads before its first MMA: the tile's rows within the
    sequence (``seq_rows``), as the rows past the end are not loaded, though the tile's
    shared memory (``q_buffer_bytes``, ``tile_rows`` rows) holds them."""
    return q_buffer_bytes * min(tile_rows, seq_rows) // tile_rows


def heads_in_flight(rec, ctas_per_head: int, heads: int, sram_bytes_per_cta: int,
                    register_bytes_per_cta: int = 0, threads_per_cta: int = 128) -> int:
    """Heads whose CTAs are resident at one time (CTAs launch head after head): the number
    of heads' K/V that must share L2 for re-reads to hit (``hwmodels.timing``)."""
    resident = rec.resident_ctas(ctas_per_head * heads, sram_bytes_per_cta,
                                 register_bytes_per_cta, threads_per_cta)
    return min(heads, cdiv(resident, ctas_per_head) + 1)


def l2_arguments(rec, heads: int, ctas_per_head: int, smem: int, unique_per_head: int,
                 reread_per_head: int, threads_per_cta: int,
                 streamed_tile_bytes: int | None = None) -> dict:
    """``Recorder.kernel``'s L2 arguments for a kernel of ``ctas_per_head`` CTAs a head,
    launched head after head: the compulsory bytes (``unique_per_head`` a head), and the
    working set L2 must hold for the re-reads among a head's CTAs to hit
    (``hwmodels.timing``), as FlashAttention declares its K/V. CTAs that stream the same
    tiles in step (feature slices walking a head's K, V) re-read only the tiles in flight,
    ``streamed_tile_bytes`` a CTA, when a head's CTAs are resident together; otherwise the
    heads in flight keep their ``reread_per_head`` bytes."""
    resident = rec.resident_ctas(ctas_per_head * heads, smem, 0, threads_per_cta)
    if streamed_tile_bytes is not None and ctas_per_head <= resident:
        working_set = resident * streamed_tile_bytes
    else:
        working_set = reread_per_head * heads_in_flight(rec, ctas_per_head, heads, smem,
                                                        threads_per_cta=threads_per_cta)
    return {"unique_hbm_bytes": heads * unique_per_head, "l2_working_set_bytes": working_set}


def shared_operand_working_set(shared_bytes: int, streamed_per_head: int) -> int:
    """The L2 working set of an operand every head reads whole (a mask) in a kernel that
    walks head after head: between two heads' reads of an entry, the rest of one head's own
    traffic (``streamed_per_head``: what it reads and writes besides the operand) passes
    through L2 with the operand, so its re-reads hit only while both fit (LRU's reuse
    distance), not while the operand alone does."""
    return shared_bytes + streamed_per_head


# The shared memory a CTA may use on sm80 (A100; sm90, H100: 227 KiB); sm86/sm89: 99 KiB.
SM80_SMEM_PER_BLOCK = 163 * 1024


def runs_sm80_kernels(gpu) -> bool:
    """Whether flash-attention's releases take their sm80/sm90 branch on this GPU, not their
    sm8x one (sm86, sm89). They branch on compute capability, which the simulator's GPUs do
    not carry; what the branches differ in is the shared memory a CTA may use, which tells
    the classes apart (163 and 227 KiB against 99 KiB)."""
    return gpu.smem_bytes_per_block >= SM80_SMEM_PER_BLOCK


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


# ---- causal masks (bottom-right aligned) ---------------------------------------------------

@compiled
def causal_key_end(r1, seq_q, seq_k):
    """Exclusive end of the keys visible to query rows [.., r1): the last row sees the most."""
    end = r1 + seq_k - seq_q
    return max(0, min(seq_k, end))


@compiled
def causal_block_is_partial(r0, c1, seq_q, seq_k):
    """True when block rows [r0, ..) x keys [.., c1) has a masked entry (first row sees the least)."""
    return c1 - 1 > r0 + seq_k - seq_q


def key_tiles_per_row_block(q_lo: int, q_hi: int, k_lo: int, k_hi: int, seq_q: int,
                            seq_k: int, block_q: int, block_k: int, causal: bool) -> np.ndarray:
    """K/V tiles each CTA of query rows [r0, r0 + B_r), r0 = q_lo, q_lo + B_r, ... < q_hi,
    visits among keys [k_lo, k_hi), in launch order: the tiles from k_lo up to the last key
    its rows may see (``causal_key_end``, alignment given by seq_q and seq_k), and at least
    one, for a CTA still runs its epilogue. The timing model's ``cta_work``."""
    r1 = np.minimum(np.arange(q_lo, q_hi, block_q, dtype=np.int64) + block_q, q_hi)
    end = np.clip(r1 + (seq_k - seq_q), 0, seq_k) if causal else np.full_like(r1, seq_k)
    keys = np.maximum(0, np.minimum(k_hi, end) - k_lo)
    return np.maximum(1, -(-keys // block_k)).astype(np.float64)


def causal_element_mask(seq_q: int, seq_k: int) -> np.ndarray:
    """The bottom-right aligned causal mask as a (seq_q, seq_k) bool array: True where query
    i sees key j (j < causal_key_end(i + 1)), for kernels that read a mask (the dense ports)."""
    i = np.arange(seq_q)[:, None]
    j = np.arange(seq_k)[None, :]
    return j <= i + (seq_k - seq_q)


@compiled
def apply_causal_mask(s, r0, c0, seq_q, seq_k):
    """Set masked scores of tile ``s`` (rows from r0, keys from c0) to -inf in place."""
    rows, cols = s.shape
    for i in range(rows):
        last = r0 + i + seq_k - seq_q
        for j in range(max(0, last - c0 + 1), cols):
            s[i, j] = -np.inf


def causal_tile_pairs(seq_q: int, seq_k: int, block_q: int, block_k: int, causal: bool):
    """(visible tiles, partially masked tiles) for a block_q x block_k tiling: the numbers
    the closed forms use. Pure Python, O(T_r), for tests and bounds."""
    tr, tc = cdiv(seq_q, block_q), cdiv(seq_k, block_k)
    if not causal:
        return tr * tc, 0
    visible = partial = 0
    for i in range(tr):
        r0, r1 = i * block_q, min(seq_q, (i + 1) * block_q)
        end = max(0, min(seq_k, r1 + seq_k - seq_q))
        n = cdiv(end, block_k)
        visible += n
        partial += sum(1 for j in range(n) if min(seq_k, (j + 1) * block_k) - 1 > r0 + seq_k - seq_q)
    return visible, partial


def log2_floor(x: int) -> int:
    return int(math.floor(math.log2(x)))


# ---- online softmax on one tile (compiled loops: NumPy axis reductions are slow in Numba) ---

# Reassociation lets LLVM vectorize the row reductions; no 'nnan'/'ninf' flags, because
# masked scores are -inf on purpose.
_FAST = {"reassoc", "contract", "nsz"}


@compiled(fastmath=_FAST)
def _exp_rows_in_place(s, ref, sums):
    """s[i, :] = exp(s[i, :] - ref[i]); sums[i] = row sum."""
    rows, cols = s.shape
    for i in range(rows):
        r = ref[i]
        total = np.float32(0.0)
        row = s[i]
        for j in range(cols):
            p = np.exp(row[j] - r)
            row[j] = p
            total += p
        sums[i] = total


@compiled
def _row_max(s, init):
    rows, cols = s.shape
    out = init.copy()
    for i in range(rows):
        mx = out[i]
        for j in range(cols):
            mx = max(mx, s[i, j])
        out[i] = mx
    return out


@compiled
def finite_or_zero(m):
    out = m.copy()
    for i in range(m.shape[0]):
        if out[i] == -np.inf:
            out[i] = 0.0
    return out


@compiled
def online_softmax_tile(s, m, l):
    """FlashAttention's online softmax step on a scaled (and masked) score tile, in place.

    On entry ``s`` holds scores; ``m``, ``l`` the running row max and sum. On exit ``s``
    holds P = exp(S - m_new), ``m`` = m_new, ``l`` = alpha·l + rowsum(P), and the returned
    ``alpha`` = exp(m_old - m_new) rescales the accumulator. Rows that have seen no key
    keep m = -inf and contribute nothing (exp(-inf) = 0, never NaN)."""
    m_new = _row_max(s, m)
    ref = finite_or_zero(m_new)
    sums = np.empty(s.shape[0], dtype=np.float32)
    _exp_rows_in_place(s, ref, sums)
    alpha = np.exp(m - ref)
    for i in range(s.shape[0]):
        l[i] = alpha[i] * l[i] + sums[i]
        m[i] = m_new[i]
    return alpha


@compiled
def tile_softmax_stats(s):
    """Row max m̃ and row sum ℓ̃ of P̃ = exp(S - m̃), computing P̃ in place (flash1, line 10)."""
    init = np.full(s.shape[0], -np.inf, dtype=np.float32)
    m = _row_max(s, init)
    l = np.empty(s.shape[0], dtype=np.float32)
    _exp_rows_in_place(s, finite_or_zero(m), l)
    return m, l


# ---- small sorts ---------------------------------------------------------------------------
# The index lists sorted in kernels mostly hold a handful of entries (a row's window and
# random blocks, NSA's top-n blocks). An insertion sort is the right algorithm for them, and
# it compiles in a fraction of the time of Numba's generic np.sort / np.unique / np.argsort,
# which every worker process of a first run would otherwise compile for itself. Lists of
# block indices that may be long (a user's density or window) go through ``sorted_distinct``,
# which switches to marking and scanning the index range.

@compiled
def sort_small_in_place(a):
    """Ascending insertion sort of the 1-D array ``a``, in place; returns ``a``."""
    for i in range(1, a.shape[0]):
        x = a[i]
        j = i - 1
        while j >= 0 and a[j] > x:
            a[j + 1] = a[j]
            j -= 1
        a[j + 1] = x
    return a


@compiled
def sorted_unique(a):
    """The distinct values of the 1-D array ``a``, ascending (a new array)."""
    s = sort_small_in_place(a.copy())
    n = 0
    for i in range(s.shape[0]):
        if n == 0 or s[i] != s[n - 1]:
            s[n] = s[i]
            n += 1
    return s[:n].copy()


@compiled
def sorted_distinct(values, scratch):
    """The distinct values of the 1-D integer array ``values``, each in [0, len(scratch)),
    ascending (a new array). ``scratch``: a bool array, all False on entry and on return.
    Insertion sort while len(values)² <= len(scratch); beyond, marking the values in
    ``scratch`` and scanning it is cheaper (O(len(scratch)) against O(len(values)²))."""
    n = values.shape[0]
    if n * n <= scratch.shape[0]:
        return sorted_unique(values)
    for v in values:
        scratch[v] = True
    out = np.empty(n, dtype=np.int64)
    k = 0
    for t in range(scratch.shape[0]):
        if scratch[t]:
            scratch[t] = False
            out[k] = t
            k += 1
    return out[:k].copy()


@compiled
def safe_normalizers(m, l):
    """The epilogue's (l_safe, lse): l with 1 where l = 0, and lse = m + log l with -inf
    where l = 0, so that rows that saw no key get O = 0 and lse = -inf, never NaN.

    Written as a loop, like the other helpers here: Numba's ``np.where`` compiles its
    broadcasting and error-message machinery into the first run (seconds per process)."""
    l_safe = np.empty_like(l)
    lse = np.empty_like(l)
    for i in range(l.shape[0]):
        if l[i] == 0:
            l_safe[i] = 1.0
            lse[i] = -np.inf
        else:
            l_safe[i] = l[i]
            lse[i] = m[i] + np.log(l[i])
    return l_safe, lse


@compiled
def scale_rows(x, factor):
    """x[i, :] *= factor[i], in place."""
    for i in range(x.shape[0]):
        f = factor[i]
        for j in range(x.shape[1]):
            x[i, j] *= f


def check_tile_limits(what: str, bq: int, bk: int, d: int, smem: int, regs: int, holds: str,
                      sram_bytes: int, register_limit: int, limit_text: str, fix: str) -> None:
    """The error that names the numbers when given B_r x B_c tiles (``smem`` bytes of shared
    memory: ``holds``; ``regs`` of fp32 registers) exceed the SRAM budget or the registers:
    ``what`` the kernel, ``limit_text`` what bounds its registers, ``fix`` the flags that
    change the tiles."""
    if smem > sram_bytes:
        raise SramOverflowError(
            f"{what}: {bq} x {bk} tiles at head_dim {d} need {smem:,} bytes of SRAM per CTA "
            f"({holds}) but the budget is {sram_bytes:,} bytes; use {fix} or a larger "
            f"--sram-kb")
    if regs > register_limit:
        raise PlanError(f"{what}: {bq} x {bk} tiles at head_dim {d} need {regs:,} bytes of "
                        f"fp32 registers per CTA, more than {limit_text}; use {fix}")
