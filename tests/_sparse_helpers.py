"""Helpers of the tests/test_sparse_*.py files: the patterns written independently from the
papers' set definitions (vectorised NumPy on index grids), and closed-form counts of the
block-sparse forward derived from a dense mask. Not a test module (no test_ prefix)."""
import numpy as np

from attnsim import simulate

E = 2            # fp16 storage bytes
LSE_BYTES = 4    # fp32 log-sum-exp


def cdiv(a, b):
    return -(-a // b)


def grids(nq, nk):
    """(p, j): the query's key position (bottom-right aligned) and the key index."""
    p = np.arange(nq)[:, None] + (nk - nq)
    j = np.arange(nk)[None, :]
    return p, j


def paper_mask(name, nq, nk, causal, **o):
    """The pattern as the papers define it, plus our stated extensions (see each module)."""
    p, j = grids(nq, nk)
    if name == "local":
        w = o["window"]
        m = (j > p - w) & (j <= p) if causal else np.abs(j - p) <= w // 2
    elif name == "longformer":
        w, g = o["window"], o["global_tokens"]
        win = (j > p - w) & (j <= p) if causal else np.abs(j - p) <= w // 2
        m = win | (j < g) | (p < g)
    elif name == "strided":          # Child et al.: A1 = last l (±l if not causal), A2 = (p-j) mod l == 0
        l = o["stride"]
        m = (np.abs(p - j) <= l) | ((p - j) % l == 0)
    elif name == "fixed":            # A1 = same block of l, A2 = j mod l in {l-c, ..., l-1}
        l, c = o["stride"], o["summary"]
        m = (j // l == p // l) | (j % l >= l - c)
    else:
        raise ValueError(name)
    m = np.broadcast_to(m, (nq, nk)).copy()
    if causal:
        m &= j <= p
    return m


def tiles_of(mask, br, bc):
    """[(rows, cols, partial, pairs)] of every non-empty B_r x B_c tile, row-major."""
    nq, nk = mask.shape
    out = []
    for r0 in range(0, nq, br):
        for c0 in range(0, nk, bc):
            t = mask[r0:r0 + br, c0:c0 + bc]
            n = int(t.sum())
            if n:
                out.append((t.shape[0], t.shape[1], n < t.size, n))
    return out


def closed_form(tiles, nq, d, tr, bh):
    """Counts of the block-sparse FA-2 forward over ``tiles``, all heads (module docstring of
    algorithms/kernels/block_sparse_exec.py)."""
    reads = nq * d * E + sum(2 * cols * d * E for _, cols, _, _ in tiles) + 8 * tr + 4 * len(tiles)
    writes = nq * d * E + LSE_BYTES * nq
    matmul = sum(4 * r * c * d for r, c, _, _ in tiles)
    exp = sum(r * c + r for r, c, _, _ in tiles) + nq
    other = sum(4 * r * c + 4 * r + r * d + (r * c if part else 0) for r, c, part, _ in tiles)
    other += nq * d + nq
    return {"hbm_read_bytes": bh * reads, "hbm_write_bytes": bh * writes,
            "matmul_flops": bh * matmul, "exp_ops": bh * exp, "other_flops": bh * other,
            "kernel_launches": 1, "ctas": bh * tr}


def slope(xs, ys):
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def count_only(algorithm, wl, **options):
    return simulate(algorithm, wl, "h100", compute=False, options=options)
