"""Shapes and the error measure that the exact-attention tests share.

A plain module (not conftest.py), so that test modules import it by name under both a bare
``pytest`` and ``python -m pytest``: pytest puts tests/ on sys.path for its rootdir-relative
imports, as it does for port_cases.py.
"""
import numpy as np

# Deliberately awkward sizes (not multiples of any block size), as flash-attn's tests do.
RAGGED_SHAPES = [
    # batch, heads, seq_q, seq_k, head_dim
    (1, 2, 97, 97, 40),
    (2, 1, 200, 333, 64),
    (1, 3, 257, 129, 59),
]
EXACT_FORWARD = ("standard", "flash1", "flash2")

# Tolerances of float32 kernels against float64 (relative Frobenius error). Measured worst
# cases over these tests: 3.6e-7 (standard, flash1-3, ring, diff; linear, RFA, Performer and
# Reformer against their own float64 math, 8.6e-7 at most), 3.4e-6 with logits of ~1e3.
EXACT_TOL = 2e-6
LARGE_LOGIT_TOL = 1e-5


def rel_err(x, ref):
    """Relative Frobenius error of x against ref, both taken to float64."""
    ref = np.asarray(ref, np.float64)
    return float(np.linalg.norm(np.asarray(x, np.float64) - ref) / np.linalg.norm(ref))
