"""Block layouts and element masks of the sparse patterns against the papers' definitions.

The masks in tests/_sparse_helpers.py are written from the papers' set notation, separately
from algorithms/kernels/sparse_patterns.py (interval/residue counting and bisection over tiles).
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from _sparse_helpers import cdiv, paper_mask, tiles_of
from algorithms.kernels.sparse_patterns import (FIXED, LOCAL, LONGFORMER, STRIDED, bigbird_csr,
                                        element_layout, element_mask, random_block_csr)

KINDS = {"local": (LOCAL, ("window",)), "longformer": (LONGFORMER, ("window", "global_tokens")),
         "strided": (STRIDED, ("stride",)), "fixed": (FIXED, ("stride", "summary"))}

CASES = [  # name, options, seq_q, seq_k
    ("local", {"window": 7}, 97, 97),
    ("local", {"window": 64}, 130, 200),
    ("local", {"window": 500}, 77, 77),                     # window larger than N
    ("local", {"window": 1}, 50, 50),
    ("longformer", {"window": 10, "global_tokens": 3}, 97, 97),
    ("longformer", {"window": 33, "global_tokens": 40}, 150, 181),
    ("longformer", {"window": 2, "global_tokens": 0}, 64, 64),
    ("strided", {"stride": 9}, 97, 97),
    ("strided", {"stride": 1}, 40, 40),
    ("strided", {"stride": 23}, 120, 250),
    ("fixed", {"stride": 16, "summary": 4}, 97, 97),
    ("fixed", {"stride": 10, "summary": 10}, 61, 61),
    ("fixed", {"stride": 32, "summary": 1}, 100, 170),
]


def _prm(name, opts):
    kind, keys = KINDS[name]
    return kind, np.array([opts[k] for k in keys], dtype=np.int64)


@pytest.mark.parametrize("name,opts,nq,nk", CASES)
@pytest.mark.parametrize("causal", [False, True])
def test_element_mask_matches_paper_definition(name, opts, nq, nk, causal):
    kind, prm = _prm(name, opts)
    np.testing.assert_array_equal(element_mask(kind, prm, causal, nq, nk),
                                  paper_mask(name, nq, nk, causal, **opts))


@pytest.mark.parametrize("name,opts,nq,nk", CASES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("br,bc", [(16, 16), (32, 16), (16, 64)])
def test_layout_visits_exactly_the_nonempty_tiles(name, opts, nq, nk, causal, br, bc):
    kind, prm = _prm(name, opts)
    mask = paper_mask(name, nq, nk, causal, **opts)
    lay = element_layout(kind, prm, causal, nq, nk, br, bc)
    expected = [(i, j) for i in range(cdiv(nq, br)) for j in range(cdiv(nk, bc))
                if mask[i * br:(i + 1) * br, j * bc:(j + 1) * bc].any()]
    rows = np.repeat(np.arange(cdiv(nq, br)), np.diff(lay.row_ptr))
    assert list(zip(rows.tolist(), lay.cols.tolist())) == expected
    tiles = tiles_of(mask, br, bc)
    assert lay.partial.tolist() == [t[2] for t in tiles]
    assert lay.attended_pairs == mask.sum() == sum(t[3] for t in tiles)
    assert lay.density() == pytest.approx(mask.mean(), abs=0)
    assert lay.block_density() == len(expected) / (cdiv(nq, br) * cdiv(nk, bc))


def _bigbird_block_mask(t, w, g, r, seed):
    row_ptr, cols = bigbird_csr(t, t, w, g, r, seed)
    bm = np.zeros((t, t), dtype=bool)
    bm[np.repeat(np.arange(t), np.diff(row_ptr)), cols] = True
    return row_ptr, cols, bm


@pytest.mark.parametrize("t,w,g,r", [(20, 3, 2, 3), (12, 1, 3, 2), (9, 5, 0, 4), (8, 3, 2, 0),
                                     (6, 3, 2, 3), (4, 3, 2, 3)])   # short: fewer than r left
def test_bigbird_block_pattern(t, w, g, r):
    row_ptr, cols, bm = _bigbird_block_mask(t, w, g, r, seed=1)
    first, last = (g + 1) // 2, g // 2
    glob = [*range(first), *range(t - last, t)]
    for i in range(t):
        row = cols[row_ptr[i]:row_ptr[i + 1]]
        assert list(row) == sorted(set(row.tolist()))          # ascending, no duplicates
        if i in glob:
            assert bm[i].all()                                  # global rows see everything
            continue
        window = set(range(max(0, i - w // 2), min(t, i + w // 2 + 1)))
        fixed = window | set(glob)
        assert fixed <= set(row.tolist())                       # window and global columns
        assert len(set(row.tolist()) - fixed) == min(r, t - len(fixed))   # r random others
    assert bm[:, glob].all()                                    # everyone sees the globals


def test_bigbird_random_blocks_reproducible_by_seed():
    a = bigbird_csr(64, 64, 3, 2, 3, 7)
    b = bigbird_csr(64, 64, 3, 2, 3, 7)
    c = bigbird_csr(64, 64, 3, 2, 3, 8)
    assert np.array_equal(a[1], b[1]) and not np.array_equal(a[1], c[1])


def test_bigbird_random_blocks_cover_all_candidates():
    """Over many rows the random draw reaches every allowed block (not a biased subset)."""
    row_ptr, cols, bm = _bigbird_block_mask(40, 3, 2, 3, seed=3)
    hits = bm[1:-1].sum(axis=0)
    assert (hits[1:-1] > 0).all()


@pytest.mark.parametrize("tq,tk,k", [(10, 10, 3), (7, 30, 1), (5, 8, 8)])
def test_random_block_rows_have_exactly_k_distinct_blocks(tq, tk, k):
    row_ptr, cols = random_block_csr(tq, tk, k, seed=0)
    assert np.all(np.diff(row_ptr) == k)
    for i in range(tq):
        row = cols[row_ptr[i]:row_ptr[i + 1]]
        assert np.all(np.diff(row) > 0) and row.min() >= 0 and row.max() < tk


@settings(max_examples=200, deadline=None)
@given(name=st.sampled_from(sorted(KINDS)), nq=st.integers(1, 120), nk=st.integers(1, 120),
       causal=st.booleans(), br=st.sampled_from([1, 5, 16, 32]), bc=st.sampled_from([1, 7, 16]),
       a=st.integers(1, 70), b=st.integers(0, 70))
def test_layout_random_shapes_and_parameters(name, nq, nk, causal, br, bc, a, b):
    """Random sizes and parameters (window/stride a; globals/summary b, kept valid)."""
    opts = {"local": {"window": a}, "longformer": {"window": a, "global_tokens": min(b, nk)},
            "strided": {"stride": a}, "fixed": {"stride": a, "summary": max(1, min(b, a))}}[name]
    kind, prm = _prm(name, opts)
    mask = paper_mask(name, nq, nk, causal, **opts)
    lay = element_layout(kind, prm, causal, nq, nk, br, bc)
    tiles = [(i, j) for i in range(cdiv(nq, br)) for j in range(cdiv(nk, bc))
             if mask[i * br:(i + 1) * br, j * bc:(j + 1) * bc].any()]
    rows = np.repeat(np.arange(cdiv(nq, br)), np.diff(lay.row_ptr))
    assert list(zip(rows.tolist(), lay.cols.tolist())) == tiles
    assert lay.partial.tolist() == [t[2] for t in tiles_of(mask, br, bc)]
    assert lay.attended_pairs == mask.sum()
