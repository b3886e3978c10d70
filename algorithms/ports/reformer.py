"""GPU port declaration: reformer (LSH attention with shared QK, algorithms/reformer.py).

Bound: the port moves what algorithms.reformer counts (that module states the bound), plus
the radix sort's uncounted scratch (histograms, tile counters, look-back flags).

Launches, per the simulator's kernels (``reformer_hash``, ``reformer_sort_hist``,
``reformer_sort_pass{p}`` for each 8-bit digit, ``reformer_attn``, ``reformer_combine`` when
hashes > 1), from ``algorithms/cuda/reformer.cu`` with one define set taken from the plan.
The rotations R are a "const" tensor holding ``reformer.rotations`` for the same inputs (the
plan's seed, else the inputs' seed), stored transposed (rounds, k, d) so that R_rᵀ loads as
the B operand of the hash MMA. The bucket ids and sorted permutation are outputs compared
with the simulation's (``buckets``, ``perm``: int32, (B, H, rounds, N)).
"""
from __future__ import annotations

import numpy as np

from algorithms.kernels.common import cdiv
from algorithms.ports.core import (Launch, PortLaunches, PortUnsupported, Scalar, Tensor,
                                   algorithm_module, check_common, out_tensor, pad16,
                                   qkv_tensors)

REFORMER_THREADS = 128       # hash, attn, combine: the simulator's THREADS_PER_CTA
SORT_THREADS = 256           # the sort kernels' threads_per_cta (one digit bin a thread)
RADIX = 256
REFORMER_MAX_CHUNK = 64      # one warp per 16 queries of the chunk, 4 warps
REFORMER_MAX_COLS = 128      # R columns per round: the proj fragment of a warp in registers
FLAG_VALUE_LIMIT = 1 << 29   # look-back flag words hold counts below 2^29
GRID_Y_LIMIT = 65535         # CUDA's grid.y (the sort's segments) and grid.z (attn's heads)


def reformer_defines(wl, plan) -> dict:
    """The compile-time tiles of every reformer.cu kernel, read off the plan."""
    return {"HEAD_DIM": wl.head_dim, "CHUNK": plan.bucket_size, "HASHES": plan.hashes,
            "HASH_ROWS": plan.hash_block, "ROT_COLS": plan.rotation_cols,
            "SORT_TILE": plan.sort_tile, "COMBINE_ROWS": plan.combine_block}


def _check(wl, plan) -> None:
    check_common("reformer", wl)
    c = plan.bucket_size
    problems = []
    if c % 16 or c > REFORMER_MAX_CHUNK:
        problems.append(f"--bucket-size a multiple of 16 and <= {REFORMER_MAX_CHUNK} (one "
                        f"warp per 16 queries of a chunk, four warps; got {c})")
    if plan.rotation_cols > REFORMER_MAX_COLS:
        problems.append(f"at most {REFORMER_MAX_COLS} rotation columns per round (got "
                        f"{plan.rotation_cols} for {plan.n_buckets} buckets: use a larger "
                        f"--bucket-size)")
    if wl.batch * wl.heads * plan.hashes > GRID_Y_LIMIT:
        problems.append(f"batch x heads x hashes <= {GRID_Y_LIMIT} (the sort's grid.y; got "
                        f"{wl.batch * wl.heads * plan.hashes})")
    if wl.seq_q >= FLAG_VALUE_LIMIT:
        problems.append(f"N < 2^29 (look-back flag words; got {wl.seq_q})")
    if problems:
        raise PortUnsupported("the reformer port needs " + "; ".join(problems))


def _rotations_tensor(wl, plan) -> Tensor:
    """R_rᵀ (rounds, k, d): reformer.rotations for the same inputs, transposed."""
    module = algorithm_module("reformer")

    def derive(inputs):
        rot = module.rotations(plan, wl.head_dim, inputs, wl.dtype)      # (rounds, d, k)
        return np.ascontiguousarray(rot.transpose(0, 2, 1))

    return Tensor((plan.hashes, plan.rotation_cols, wl.head_dim), wl.dtype, "const",
                  derive=derive)


def sort_tensors(wl, plan) -> dict:
    """The sort's tensors: bucket ids and positions in (hash output), sorted keys and the
    permutation out, ping-pong pairs between digit passes, and the scratch (histograms, tile
    counters, look-back flags), zero-filled before every run. Layout (B, H, rounds, N)."""
    n, hh, passes = wl.seq_q, plan.hashes, plan.sort_passes
    segments, tiles = wl.batch * wl.heads * hh, cdiv(n, plan.sort_tile)
    pairs = (wl.batch, wl.heads, hh, n)                  # the simulation's layout
    tensors = {"buckets": Tensor(pairs, "int32", "output"),
               "positions": Tensor(pairs, "int32", "work"),
               "sorted_keys": Tensor(pairs, "int32", "work"),
               "perm": Tensor(pairs, "int32", "output"),
               "sort_hist": Tensor((segments, passes, RADIX), "int32", "work", fill=0),
               "sort_tiles": Tensor((segments, passes), "int32", "work", fill=0),
               "sort_flags": Tensor((segments, passes, tiles, RADIX), "int32", "work", fill=0)}
    for p in range(min(2, passes - 1)):
        tensors[f"keys_tmp{p}"] = Tensor(pairs, "int32", "work")
        tensors[f"vals_tmp{p}"] = Tensor(pairs, "int32", "work")
    return tensors


def sort_launches(wl, plan, defines) -> list[Launch]:
    """The histogram, then one scatter pass per digit (pass p reads what p - 1 wrote), over
    the (head, round) segments of ``sort_tensors``."""
    n, passes, tiles = wl.seq_q, plan.sort_passes, cdiv(wl.seq_q, plan.sort_tile)
    grid = (tiles, wl.batch * wl.heads * plan.hashes, 1)
    block = (SORT_THREADS, 1, 1)
    ints = lambda *xs: tuple(Scalar(x, "int") for x in xs)          # noqa: E731
    launches = [Launch("reformer.cu", "reformer_sort_hist", grid, block, 0, defines,
                       ("buckets", "sort_hist", *ints(n, passes)), "reformer_sort_hist")]
    src = ("buckets", "positions")
    for p in range(passes):
        dst = (("sorted_keys", "perm") if p == passes - 1
               else (f"keys_tmp{p % 2}", f"vals_tmp{p % 2}"))
        launches.append(Launch("reformer.cu", "reformer_sort_pass", grid, block,
                               plan.sort_tile * 8, defines,            # keys + values tile
                               (*src, *dst, "sort_hist", "sort_tiles", "sort_flags",
                                *ints(n, passes, p)), f"reformer_sort_pass{p}"))
        src = dst
    return launches


def reformer_port(wl, plan, extra=None) -> PortLaunches:
    """algorithms.reformer's plan: hash CTAs of ``hash_block`` rows, sort CTAs of
    ``sort_tile`` keys, one attention CTA per (chunk, round, head), combine CTAs of
    ``combine_block`` rows."""
    _check(wl, plan)
    n, d, hh, c = wl.seq_q, wl.head_dim, plan.hashes, plan.bucket_size
    bh = wl.batch * wl.heads
    qkv = qkv_tensors(wl)
    tensors = {
        "q": qkv["q"], "v": qkv["v"],                    # shared QK: K is not read
        "rot_t": _rotations_tensor(wl, plan),
        "factors": Tensor((len(plan.factors),), "int32", "const",
                          data=np.array(plan.factors, dtype=np.int32)),
        **sort_tensors(wl, plan),
        "o": out_tensor(wl)}
    if hh > 1:
        tensors["o_rounds"] = Tensor((bh, hh, n, d), wl.dtype, "work")
        tensors["lse_rounds"] = Tensor((bh, hh, n), "fp32", "work")
    defines = reformer_defines(wl, plan)
    block = (REFORMER_THREADS, 1, 1)
    dp, cols = pad16(d), pad16(plan.rotation_cols)
    hash_smem = (plan.hash_block + cols) * dp * 2 + plan.hash_block * cols * 4   # Q_h, R_rᵀ, proj
    launches = [Launch("reformer.cu", "reformer_hash", (cdiv(n, plan.hash_block), bh, 1), block,
                       hash_smem, defines,
                       ("q", "rot_t", "factors", "buckets", "positions", Scalar(n, "int"),
                        Scalar(len(plan.factors), "int")), "reformer_hash")]
    launches += sort_launches(wl, plan, defines)
    rounds = ("o_rounds", "lse_rounds") if hh > 1 else (None, None)
    launches.append(Launch("reformer.cu", "reformer_attn", (plan.n_buckets, hh, bh), block,
                           2 * (2 * c) * dp * 2, defines,                   # Q, V of 2C rows
                           ("q", "v", "buckets", "perm", "o", *rounds, Scalar(n, "int"),
                            Scalar(wl.heads, "int"), Scalar(wl.heads // wl.kv_heads, "int"),
                            Scalar(wl.scale, "float"), Scalar(int(wl.causal), "int")),
                           "reformer_attn"))
    if hh > 1:
        launches.append(Launch("reformer.cu", "reformer_combine",
                               (cdiv(n, plan.combine_block), bh, 1), block, 0, defines,
                               ("o_rounds", "lse_rounds", "o", Scalar(n, "int")),
                               "reformer_combine"))
    return PortLaunches("reformer", tensors, tuple(launches), outputs=("o", "buckets", "perm"),
                        notes=("rotations R drawn as algorithms.reformer draws them; the "
                               "sort's histograms, tile counters and look-back flags are "
                               "uncounted scratch",))
