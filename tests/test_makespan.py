"""The timing model's CTA scheduler (hwmodels.cta_schedule.greedy_makespan) against list
scheduling written out plainly: every CTA of the grid, in launch order, to the SM that frees
first. The scheduler stops early once the SMs' free times repeat; these cases cover grids
that repeat after one head, after several, and never (non-integral work)."""
import heapq

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from hwmodels.cta_schedule import greedy_makespan


def list_schedule(work, heads, servers):
    """Every CTA of the grid to the server that frees first (one CTA per server when they
    are at least as many: the longest CTA's work)."""
    free_at = [0.0] * servers
    for i in range(len(work) * heads):
        heapq.heappush(free_at, heapq.heappop(free_at) + work[i % len(work)])
    return max(free_at)


@settings(max_examples=150, deadline=None)
@given(work=st.lists(st.integers(1, 40), min_size=1, max_size=120),
       heads=st.integers(1, 50), servers=st.integers(1, 140))
def test_integral_work_matches_list_scheduling_exactly(work, heads, servers):
    w = np.array(work, dtype=np.float64)
    expected = list_schedule(w, heads, servers)
    assert greedy_makespan(w, heads, servers) == expected


@settings(max_examples=60, deadline=None)
@given(work=st.lists(st.floats(0.01, 10.0), min_size=1, max_size=60),
       heads=st.integers(1, 30), servers=st.integers(1, 50))
def test_fractional_work_matches_list_scheduling(work, heads, servers):
    w = np.array(work, dtype=np.float64)
    expected = list_schedule(w, heads, servers)
    assert abs(greedy_makespan(w, heads, servers) - expected) <= 1e-12 * expected


def test_causal_grids_of_many_heads():
    # FlashAttention's causal forward at N = 64K with 128-row tiles: 512 CTAs per head,
    # their work growing along the diagonal, on 132 SMs
    work = np.arange(1, 513, dtype=np.float64)
    for heads in (3, 64, 1024):
        assert greedy_makespan(work, heads, 132) == list_schedule(work, heads, 132)
