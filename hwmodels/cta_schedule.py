"""How long a grid of CTAs of unequal work keeps the SMs busy: list scheduling in launch order.

The hardware's block scheduler gives each new CTA to an SM with room for it, in launch
order; with one CTA's worth of room per SM that is list scheduling, each CTA to the server
that frees first. ``greedy_makespan`` computes its makespan exactly for a grid of ``heads``
copies of one head's per-CTA work (FlashAttention's causal grids: the work of a query tile
grows along the diagonal, and every head repeats it).

Written with flat arrays and loops only: a heap of tuples, a dict and ``sorted`` would each
pull one of Numba's generic implementations into the first compile (about 7 s of a cold
report on two CPUs, against about 1 s for this form).
"""
from __future__ import annotations

import numpy as np

from hwmodels.compiled import compiled

# Free-time states remembered to find the schedule's period (8-byte floats, one row per
# head): 32 MiB at most.
STATES_KEPT = 1 << 22


@compiled
def greedy_makespan(work, heads, servers):
    """List scheduling in launch order: each CTA goes to the server that frees first. The
    grid is ``heads`` copies of one head's ``work``, read in place rather than tiled (a tiled
    copy would hold one float per CTA of the whole grid).

    Servers are kept in groups that free at the same time, in ascending order: the first
    group's servers take the next CTAs together while those CTAs' work is the same (a grid
    of equal CTAs is scheduled a wave at a time, not a CTA at a time). The servers' free
    times evolve as a multiset, and the evolution commutes with adding a constant to every
    free time: when the free times after head j equal those after an earlier head g shifted
    by some delta, the heads after j repeat heads g+1..j, each period shifting them by
    delta, and the makespan follows without scheduling the rest (with integral work, as the
    tile counts are, every sum is exact; otherwise a repeat is rarely exact and the loop
    runs on)."""
    per_head = work.shape[0]
    if per_head * heads <= servers:
        return work.max()
    run = _equal_runs(work)
    times = np.zeros(servers)                        # group free times, ascending
    counts = np.zeros(servers, dtype=np.int64)       # servers in each group
    counts[0] = servers
    groups = 1
    kept = min(heads, STATES_KEPT // servers)
    states = np.empty((kept, servers))               # free times after head h, ascending
    slots = np.full(_table_size(kept), -1, dtype=np.int64)   # state hash -> heads with it
    for h in range(heads):
        i = 0
        while i < per_head:
            t, take = times[0], min(counts[0], run[i])
            counts[0] -= take
            if counts[0] == 0:
                groups = _drop_first(times, counts, groups)
            groups = _add_servers(times, counts, groups, t + work[i], take)
            i += take
        if h >= kept:
            continue
        _expand(times, counts, groups, states[h])
        g = _earlier_repeat(states, h, slots)
        if g >= 0:
            period, delta = h - g, states[h, 0] - states[g, 0]
            r = (heads - 1 - g) % period
            m = (heads - 1 - g - r) // period
            return states[g + r, servers - 1] + m * delta
    return times[groups - 1]


@compiled
def _equal_runs(work):
    """run[i]: how many CTAs from i on, within the head, have the same work as CTA i."""
    n = work.shape[0]
    run = np.empty(n, dtype=np.int64)
    run[n - 1] = 1
    for i in range(n - 2, -1, -1):
        run[i] = run[i + 1] + 1 if work[i] == work[i + 1] else 1
    return run


@compiled
def _drop_first(times, counts, groups):
    for j in range(1, groups):
        times[j - 1] = times[j]
        counts[j - 1] = counts[j]
    return groups - 1


@compiled
def _add_servers(times, counts, groups, t, n):
    """Put ``n`` servers that free at ``t`` into the ascending groups; returns the count."""
    j = groups
    while j > 0 and times[j - 1] > t:
        j -= 1
    if j > 0 and times[j - 1] == t:
        counts[j - 1] += n
        return groups
    for k in range(groups, j, -1):
        times[k] = times[k - 1]
        counts[k] = counts[k - 1]
    times[j] = t
    counts[j] = n
    return groups + 1


@compiled
def _expand(times, counts, groups, out):
    """Every server's free time, ascending, into ``out``."""
    k = 0
    for j in range(groups):
        out[k:k + counts[j]] = times[j]
        k += counts[j]


@compiled
def _table_size(entries):
    size = 2
    while size < 2 * entries:
        size *= 2
    return size


@compiled
def _earlier_repeat(states, h, slots):
    """The earlier head whose free times equal head h's up to a shift, or -1 (then head h is
    entered in the open-addressing table ``slots``, keyed by the hash of its shape)."""
    mask = slots.shape[0] - 1
    j = _shape_hash(states[h]) & mask
    while slots[j] >= 0:
        if _same_shape(states[slots[j]], states[h]):
            return slots[j]
        j = (j + 1) & mask
    slots[j] = h
    return -1


@compiled
def _same_shape(a, b):
    """a - a[0] == b - b[0], element by element (the free times relative to the earliest)."""
    for i in range(a.shape[0]):
        if a[i] - a[0] != b[i] - b[0]:
            return False
    return True


@compiled
def _shape_hash(values):
    """FNV-1a over the bit patterns of values - values[0] (equal shapes, equal hashes)."""
    bits = (values - values[0]).view(np.uint64)
    h = np.uint64(14695981039346656037)
    for b in bits:
        h = (h ^ b) * np.uint64(1099511628211)
    return np.int64(h >> np.uint64(1))
