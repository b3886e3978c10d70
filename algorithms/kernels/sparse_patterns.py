"""Sparse attention patterns as element-level rules and the block layouts derived from them.

Two families, one output (``BlockLayout``, the list of (Q block, K block) tiles a block-sparse
kernel visits):

* element patterns (sliding window, Longformer, Sparse Transformer strided/fixed) are defined
  by ``row_count(kind, prm, causal, qpos, a, b)``: how many keys j in [a, b) the query at key
  position ``qpos`` may attend, in O(1) (interval and residue arithmetic); ``block_any``
  answers, also in O(1), whether any query of a block of consecutive rows attends any key
  of a range (the union of the rows' sets is again intervals and residue ranges). The layout
  is thus found without materialising the N_q x N_k mask: for each Q block a bisection over
  K-block ranges discards empty ranges whole (``element_layout``). The element mask itself
  (executed mode, small N) is built from ``row_count``; the tests check both rules against
  masks written from the papers' set definitions.
* block patterns (BigBird, block-sparse with a block mask) are lists of key blocks per query
  block at the tile size; ``block_layout`` intersects them with the causal mask.

Positions: query row i sits at key position ``qpos = i + N_k - N_q`` (bottom-right
alignment, as the causal mask of ``algorithms.kernels.common``), so decode-like shapes work.
``causal`` keeps keys j <= qpos.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from algorithms.base import PlanError
from algorithms.kernels.common import cdiv, sorted_distinct
from hwmodels.compiled import compiled

# Tiles a layout may list. The simulator enumerates every tile of a pattern, count-only mode
# included (int64 column and flag per tile, and the kernel loop over them): 2**24 tiles take
# about 0.2 GB and seconds; the largest patterns the documentation promises (the N^1.5
# strided pattern at 1M tokens) list a few million. Beyond it a run takes minutes and GBs.
MAX_LAYOUT_TILES = 2**24


def too_many_tiles(tiles: int, block_rows: int, what: str) -> PlanError:
    return PlanError(
        f"the pattern lists {what}{tiles:,} tiles over {block_rows:,} query blocks, more than "
        f"the {MAX_LAYOUT_TILES:,} the simulator enumerates (it visits every tile, also with "
        f"--count-only): use a smaller --seq or a sparser pattern (a larger --stride or "
        f"--block, a smaller --window or --density)")


def least_tiles(kind: int, prm, causal: bool, tq: int, tc: int, seq_k: int, bk: int) -> int:
    """A lower bound on a Sparse Transformer pattern's tiles, in O(1): every K block that
    holds a residue (strided) or summary key (fixed) is visited by every Q block (about half
    of them when causal), at least N_k / max(l, B_c) blocks per Q block."""
    if kind not in (STRIDED, FIXED):
        return 0
    per_row = min(tc, seq_k // max(int(prm[0]), bk))
    return tq * per_row // 2 - tq if causal else tq * per_row


def check_layout_tiles(tiles: int, block_rows: int) -> None:
    """Refuse a layout of more than ``MAX_LAYOUT_TILES`` tiles before it is drawn."""
    if tiles > MAX_LAYOUT_TILES:
        raise too_many_tiles(tiles, block_rows, "")

# pattern kinds and their parameter vectors ``prm`` (int64)
LOCAL = 0        # prm = (w,):   causal: j in (qpos - w, qpos]; else |j - qpos| <= w // 2
LONGFORMER = 1   # prm = (w, g): the local window, plus global tokens 0..g-1 (rows and columns)
STRIDED = 2      # prm = (l,):   |j - qpos| <= l, or (qpos - j) mod l == 0   (Child et al. A1, A2)
FIXED = 3        # prm = (l, c): floor(j/l) == floor(qpos/l), or j mod l >= l - c


@compiled
def _overlap(a0, a1, b0, b1):
    """|[a0, a1) ∩ [b0, b1)|."""
    return max(0, min(a1, b1) - max(a0, b0))


@compiled
def _residues(a, b, r, l):
    """Number of j in [a, b) with j ≡ r (mod l)."""
    if b <= a:
        return 0
    return (b - 1 - r) // l - (a - 1 - r) // l


@compiled
def _summary_upto(x, l, c):
    """Number of j in [0, x) with j mod l >= l - c (the fixed pattern's summary columns)."""
    return (x // l) * c + max(0, x % l - (l - c))


@compiled
def _summaries(a, b, l, c):
    if b <= a:
        return 0
    return _summary_upto(b, l, c) - _summary_upto(a, l, c)


@compiled
def _window(w, causal, qpos):
    """[lo, hi) of the sliding window: the w previous keys when causal, else w//2 each side."""
    if causal:
        return qpos - w + 1, qpos + 1
    return qpos - w // 2, qpos + w // 2 + 1


@compiled
def row_count(kind, prm, causal, qpos, a, b):
    """Keys j in [a, b) that the query at key position ``qpos`` attends (causal included).
    ``a, b`` must already lie in [0, N_k)."""
    if causal:
        b = min(b, qpos + 1)
    if b <= a:
        return 0
    if kind == LOCAL:
        lo, hi = _window(prm[0], causal, qpos)
        return _overlap(lo, hi, a, b)
    if kind == LONGFORMER:
        g = prm[1]
        if qpos < g:                                 # a global query attends every key
            return b - a
        lo, hi = _window(prm[0], causal, qpos)
        both = _overlap(max(lo, 0), min(hi, g), a, b)
        return _overlap(lo, hi, a, b) + _overlap(0, g, a, b) - both
    if kind == STRIDED:
        l = prm[0]
        lo, hi = qpos - l, qpos + l + 1              # A1: the last l keys (and next l if not causal)
        a1 = _overlap(lo, hi, a, b)
        a2 = _residues(a, b, qpos, l)                # A2: every l-th key, in phase with qpos
        both = _residues(max(a, lo), min(b, hi), qpos, l)
        return a1 + a2 - both
    # FIXED
    l, c = prm[0], prm[1]
    lo = (qpos // l) * l                             # A1: the query's own block of l keys
    hi = lo + l
    a1 = _overlap(lo, hi, a, b)
    a2 = _summaries(a, b, l, c)                      # A2: last c keys of every block
    both = _summaries(max(a, lo), min(b, hi), l, c)
    return a1 + a2 - both


@compiled
def _cyclic_upto(y, l, width):
    """Number of t in [0, y) (y may be negative: a signed count) with t mod l < width."""
    return (y // l) * width + min(width, y % l)


@compiled
def block_any(kind, prm, causal, q0, q1, a, b):
    """True when some query at key position in [q0, q1) attends some key in [a, b): O(1),
    from the union of the rows' key sets (consecutive rows: intervals and residue ranges)."""
    if causal:
        b = min(b, q1)                               # no row of the block sees past q1 - 1
    if b <= a:
        return False
    if kind == LOCAL:
        w = prm[0]
        if causal:
            return _overlap(q0 - w + 1, q1, a, b) > 0
        return _overlap(q0 - w // 2, q1 + w // 2, a, b) > 0
    if kind == LONGFORMER:
        w, g = prm[0], prm[1]
        if q0 < g:                                   # global rows: all keys (causal: <= q)
            if not causal or _overlap(0, min(q1, g), a, b) > 0:
                return True
        r0 = max(q0, g)                              # the block's non-global rows
        if r0 >= q1:
            return False
        if _overlap(0, g, a, b) > 0:
            return True
        if causal:
            return _overlap(r0 - w + 1, q1, a, b) > 0
        return _overlap(r0 - w // 2, q1 + w // 2, a, b) > 0
    if kind == STRIDED:
        l = prm[0]
        hi = q1 if causal else q1 + l
        if _overlap(q0 - l, hi, a, b) > 0:           # A1 of the rows
            return True
        width = min(l, q1 - q0)                      # A2: residues of the rows, a cyclic range
        return _cyclic_upto(b - q0, l, width) - _cyclic_upto(a - q0, l, width) > 0
    l, c = prm[0], prm[1]                            # FIXED
    hi = q1 if causal else ((q1 - 1) // l + 1) * l
    if _overlap((q0 // l) * l, hi, a, b) > 0:        # A1: the rows' blocks
        return True
    return _summaries(a, b, l, c) > 0                # A2: summary keys


@compiled
def _block_full(kind, prm, causal, q0, q1, a, b):
    """True when every query of [q0, q1) attends every key of [a, b) (stops at the first
    row that does not)."""
    for qpos in range(q0, q1):
        if row_count(kind, prm, causal, qpos, a, b) < b - a:
            return False
    return True


@compiled
def attended_pairs(kind, prm, causal, seq_q, seq_k):
    """Σ over queries of the keys they attend: O(N_q)."""
    total = 0
    shift = seq_k - seq_q
    for i in range(seq_q):
        total += row_count(kind, prm, causal, i + shift, 0, seq_k)
    return total


@compiled
def element_mask(kind, prm, causal, seq_q, seq_k):
    """The boolean (N_q, N_k) mask of an element pattern (executed mode: small N only)."""
    mask = np.zeros((seq_q, seq_k), dtype=np.bool_)
    shift = seq_k - seq_q
    for i in range(seq_q):
        for j in range(seq_k):
            mask[i, j] = row_count(kind, prm, causal, i + shift, j, j + 1) > 0
    return mask


@dataclass(frozen=True)
class BlockLayout:
    """Tiles a block-sparse kernel visits, in CSR form over Q blocks.

    Attributes:
        block_q, block_k: tile size B_r x B_c.
        row_ptr: (T_r + 1,) int64; Q block i visits ``cols[row_ptr[i]:row_ptr[i+1]]``.
        cols: (nnz,) int64 K block indices, ascending within a row.
        partial: (nnz,) bool, True where some pair of the tile is masked out.
        attended_pairs: (query, key) pairs attended, all tiles together.
    """
    seq_q: int
    seq_k: int
    block_q: int
    block_k: int
    row_ptr: np.ndarray
    cols: np.ndarray
    partial: np.ndarray
    attended_pairs: int

    @property
    def nnz(self) -> int:
        return int(self.cols.shape[0])

    @property
    def n_partial(self) -> int:
        return int(self.partial.sum())

    @property
    def tiles_per_row(self) -> np.ndarray:
        return np.diff(self.row_ptr)

    def density(self) -> float:
        """Fraction of the N_q x N_k (query, key) pairs attended."""
        return self.attended_pairs / (self.seq_q * self.seq_k)

    def block_density(self) -> float:
        """Fraction of the T_r x T_c tiles visited."""
        return self.nnz / (cdiv(self.seq_q, self.block_q) * cdiv(self.seq_k, self.block_k))

    def summary(self) -> dict:
        return {"density": self.density(), "block_density": self.block_density(),
                "blocks_visited": self.nnz, "partial_blocks": self.n_partial,
                "attended_pairs": self.attended_pairs}


@compiled
def _grow(arr, n):
    out = np.empty(max(2 * arr.shape[0], n), dtype=arr.dtype)
    out[:arr.shape[0]] = arr
    return out


@compiled
def _element_layout(kind, prm, causal, seq_q, seq_k, bq, bk, max_tiles):
    """(row_ptr, cols, partial); row_ptr[0] = -1 when the pattern has more than
    ``max_tiles`` tiles (the enumeration stops there)."""
    tr, tc = (seq_q + bq - 1) // bq, (seq_k + bk - 1) // bk
    row_ptr = np.zeros(tr + 1, dtype=np.int64)
    cols = np.empty(1024, dtype=np.int64)
    full = np.empty(1024, dtype=np.bool_)
    n = 0
    stack = np.empty((2 * 64, 2), dtype=np.int64)     # bisection depth <= log2(tc) + 1
    shift = seq_k - seq_q
    for i in range(tr):
        q0, q1 = i * bq + shift, min((i + 1) * bq, seq_q) + shift
        stack[0, 0], stack[0, 1] = 0, tc
        top = 1
        while top > 0:                                # -- bisect K-block ranges --
            top -= 1
            ka, kb = stack[top, 0], stack[top, 1]
            a, b = ka * bk, min(kb * bk, seq_k)
            if not block_any(kind, prm, causal, q0, q1, a, b):
                continue                              # an empty range is skipped whole
            if kb - ka > 1:
                mid = (ka + kb) // 2
                stack[top, 0], stack[top, 1] = mid, kb     # right half popped second
                stack[top + 1, 0], stack[top + 1, 1] = ka, mid
                top += 2
                continue
            if n == max_tiles:
                row_ptr[0] = -1
                return row_ptr, cols[:0].copy(), ~full[:0]
            if n == cols.shape[0]:
                cols, full = _grow(cols, n + 1), _grow(full, n + 1)
            cols[n] = ka
            full[n] = _block_full(kind, prm, causal, q0, q1, a, b)
            n += 1
        row_ptr[i + 1] = n
    return row_ptr, cols[:n].copy(), ~full[:n]


def element_layout(kind: int, prm, causal: bool, seq_q: int, seq_k: int, block_q: int,
                   block_k: int) -> BlockLayout:
    """The tiles an element pattern touches, without an N² mask: O(1) per bisection step,
    and per tile until its first row that is not full (O(B_r) only for full tiles)."""
    prm = np.asarray(prm, dtype=np.int64)
    tq, tc = cdiv(seq_q, block_q), cdiv(seq_k, block_k)
    least = least_tiles(kind, prm, causal, tq, tc, seq_k, block_k)
    if least > MAX_LAYOUT_TILES:
        raise too_many_tiles(least, tq, "at least ")
    row_ptr, cols, partial = _element_layout(kind, prm, causal, seq_q, seq_k, block_q, block_k,
                                             MAX_LAYOUT_TILES)
    if row_ptr[0] < 0:
        raise too_many_tiles(MAX_LAYOUT_TILES, len(row_ptr) - 1, "more than ")
    pairs = int(attended_pairs(kind, prm, causal, seq_q, seq_k))
    return BlockLayout(seq_q, seq_k, block_q, block_k, row_ptr, cols, partial, pairs)


@compiled
def _causal_filter(row_ptr_in, cols_in, causal, seq_q, seq_k, b):
    tr = row_ptr_in.shape[0] - 1
    nnz = cols_in.shape[0]
    row_ptr = np.zeros(tr + 1, dtype=np.int64)
    cols = np.empty(nnz, dtype=np.int64)
    pairs = np.empty(nnz, dtype=np.int64)
    partial = np.zeros(nnz, dtype=np.bool_)
    shift = seq_k - seq_q
    n = 0
    for i in range(tr):
        r0, r1 = i * b, min((i + 1) * b, seq_q)
        for t in range(row_ptr_in[i], row_ptr_in[i + 1]):
            c0 = cols_in[t] * b
            c1 = min(c0 + b, seq_k)
            cnt = (r1 - r0) * (c1 - c0)
            if causal and c1 - 1 > r0 + shift:        # not entirely below the diagonal
                cnt = 0
                for r in range(r0, r1):
                    cnt += max(0, min(c1, r + shift + 1) - c0)
            if cnt == 0:
                continue                              # above the causal diagonal: skipped
            cols[n], pairs[n] = cols_in[t], cnt
            partial[n] = cnt < (r1 - r0) * (c1 - c0)
            n += 1
        row_ptr[i + 1] = n
    return row_ptr, cols[:n].copy(), partial[:n].copy(), pairs[:n].copy()


def block_layout(row_ptr, cols, causal: bool, seq_q: int, seq_k: int, block: int) -> BlockLayout:
    """Layout of a block pattern (B x B tiles, ascending unique ``cols`` per row), with the
    causal mask applied: tiles above the diagonal dropped, diagonal tiles partial."""
    rp, c, partial, pairs = _causal_filter(np.asarray(row_ptr, np.int64),
                                           np.asarray(cols, np.int64), causal, seq_q, seq_k,
                                           block)
    return BlockLayout(seq_q, seq_k, block, block, rp, c, partial, int(pairs.sum()))


def layout_element_mask(layout: BlockLayout, causal: bool) -> np.ndarray:
    """The (N_q, N_k) element mask of a block layout (block patterns): visited tiles
    expanded, then the causal mask."""
    lay = layout
    tr = len(lay.row_ptr) - 1
    rows = np.repeat(np.arange(tr), lay.tiles_per_row)
    block_mask = np.zeros((tr, cdiv(lay.seq_k, lay.block_k)), dtype=bool)
    block_mask[rows, lay.cols] = True
    mask = np.repeat(np.repeat(block_mask, lay.block_q, axis=0), lay.block_k, axis=1)
    mask = mask[:lay.seq_q, :lay.seq_k]
    if causal:
        i = np.arange(lay.seq_q)[:, None]
        mask &= np.arange(lay.seq_k)[None, :] <= i + lay.seq_k - lay.seq_q
    return mask


# ---- random block choices (BigBird's random blocks, block_sparse's random mask) -----------

@compiled
def _sample_distinct(u, n, r, excluded, taken):
    """``r`` distinct values of [0, n + len(excluded)) avoiding the sorted ``excluded``,
    from r uniform floats ``u`` (Floyd's algorithm: exactly r draws, no rejection).
    ``taken`` is a scratch bool array of length >= n, all False (and left so)."""
    picked = np.empty(r, dtype=np.int64)
    for k in range(r):
        top = n - r + k                              # draw t uniformly in [0, top]
        t = min(int(u[k] * (top + 1)), top)
        if taken[t]:
            t = top                                  # t taken: top cannot be, take it
        taken[t] = True
        picked[k] = t
    for k in range(r):
        taken[picked[k]] = False
        b = picked[k]                                # skip over the excluded values
        for x in excluded:
            if x <= b:
                b += 1
        picked[k] = b
    return picked


@compiled
def _bigbird_rows(tq, tk, window, global_first, global_last, u):
    """CSR of BigBird's blocked pattern: global rows see all; other rows see the global
    blocks, the window blocks around the diagonal and u.shape[1] random other blocks (or
    all the other blocks, when fewer remain)."""
    random = u.shape[1]
    taken = np.zeros(tk, dtype=np.bool_)
    row_ptr = np.zeros(tq + 1, dtype=np.int64)
    cols = np.empty(tq * (window + global_first + global_last + random)
                    + (global_first + global_last) * tk, np.int64)
    n = 0
    for i in range(tq):
        if i < global_first or i >= tq - global_last:
            for j in range(tk):
                cols[n + j] = j
            n += tk
            row_ptr[i + 1] = n
            continue
        fixed = np.empty(window + global_first + global_last, dtype=np.int64)
        m = 0
        for j in range(global_first):
            fixed[m] = j
            m += 1
        for j in range(tk - global_last, tk):
            fixed[m] = j
            m += 1
        for j in range(max(0, i - window // 2), min(tk, i + window // 2 + 1)):
            fixed[m] = j
            m += 1
        fixed = sorted_distinct(fixed[:m], taken)
        free = tk - fixed.shape[0]                   # short sequences: all that remain
        chosen = _sample_distinct(u[i], free, min(random, free), fixed, taken)
        row = sorted_distinct(np.concatenate((fixed, chosen)), taken)
        cols[n:n + row.shape[0]] = row
        n += row.shape[0]
        row_ptr[i + 1] = n
    return row_ptr, cols[:n].copy()


def bigbird_csr(tq: int, tk: int, window: int, global_blocks: int, random: int, seed: int):
    """(row_ptr, cols) of BigBird's block pattern; the random blocks come from
    ``np.random.default_rng(seed)`` so that counts are reproducible."""
    check_layout_tiles(tq * (window + global_blocks + random), tq)
    u = np.random.default_rng(seed).random((tq, random))
    first, last = (global_blocks + 1) // 2, global_blocks // 2
    return _bigbird_rows(tq, tk, window, first, last, u)


@compiled
def _random_rows(tq, tk, u):
    per_row = u.shape[1]
    row_ptr = np.arange(tq + 1).astype(np.int64) * per_row
    cols = np.empty(tq * per_row, dtype=np.int64)
    none = np.empty(0, dtype=np.int64)
    taken = np.zeros(tk, dtype=np.bool_)
    for i in range(tq):
        row = _sample_distinct(u[i], tk, per_row, none, taken)
        cols[i * per_row:(i + 1) * per_row] = sorted_distinct(row, taken)
    return row_ptr, cols


def random_block_csr(tq: int, tk: int, per_row: int, seed: int):
    """Each of the ``tq`` block rows keeps ``per_row`` of the ``tk`` key blocks, uniformly
    without replacement (``np.random.default_rng(seed)``)."""
    check_layout_tiles(tq * per_row, tq)
    u = np.random.default_rng(seed).random((tq, per_row))
    return _random_rows(tq, tk, u)
