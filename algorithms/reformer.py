"""Reformer LSH attention — Kitaev, Kaiser, Levskaya, "Reformer: The Efficient Transformer"
(ICLR 2020, arXiv 2001.04451), §2 (LSH attention: angular hashing, sort and chunk, shared-QK,
multi-round hashing, causal masking) and §3 (reversible layers).

Idea: hash the (shared) query/key vectors with random rotations so that similar vectors
share a bucket, sort by bucket, cut the sorted order into chunks, and attend only within a
chunk and to the previous one; several hash rounds are combined by their log-sum-exp.

Notation -> code: n_rounds == ``hashes`` (H); average bucket size == chunk length m ==
``bucket_size`` (C); n_buckets == N / C (b, must be even); R (d x b/2 per round) ==
``rotations``; h(x) = argmax([xR; -xR]); s_i (sorted slot) == ``perm``; the per-round
outputs o^(r) and log-sum-exps z^(r) == ``o_rounds``, ``lse_rounds``.

Shared-QK (§2): keys are the normalised queries k_j = q_j/|q_j|;
the workload's K is not read. A token does not attend to itself unless it has no other
target: its own logit is replaced by SELF_LOGIT (-1e5), which carries weight only when
every other key of the window is masked. A query attends to keys of its own sorted chunk and
of the previous chunk (the first chunk wraps to the last) that share its bucket in this
round (the set P_i of §2) — and, when causal, that are not after it. Multi-round (§2):
rounds are combined as o_i = Σ_r exp(z_i^(r) - logsumexp_r z_i^(r)) o_i^(r). So that a key
found in several rounds is not counted several times, its logit is lowered by log N_ij,
N_ij = the rounds in which i and j share a bucket (our de-duplication; keys cut off by a
chunk boundary in some round are then slightly under-weighted).

Buckets beyond 128 are factorised, as Hugging Face's ReformerConfig allows (``num_buckets``
may be a list of factors, e.g. [64, 128]): b = f_1 f_2 ..., each factor hashed by its own
rotation of f_i/2 columns, bucket = mixed-radix combination. This keeps R at
Σ f_i/2 = O(log b) columns instead of b/2, which would make hashing Θ(N² d / C).

Kernels per (batch, head) (e = storage bytes, C = bucket size, b = N/C, k = Σ f_i/2):
  ``reformer_hash``: one CTA per B_h query rows: reads B_h d e + H k d e (R, per CTA), writes
      bucket ids and positions (2 H B_h x 4 B); FLOPs 2 B_h H k d; other B_h H (3 k + 2 f)
      (f factors), of which the argmax over ±xR, 2 B_h H k, runs on the ALU.
  ``reformer_sort_hist`` + P x ``reformer_sort_pass``: LSD radix sort of the H N (bucket,
      position) pairs of each round (``algorithms.kernels.radix_sort``: CUB's onesweep, Adinets &
      Merrill 2022, arXiv 2206.01784): one histogram pass reading the keys (4 H N bytes) and
      P = ⌈log2(b)/8⌉ scatter passes of 8-bit digits, each reading and writing the 4-byte
      keys and 4-byte values (8 H N bytes read + 8 H N written per pass). Positions are
      already in order, so a stable sort on the bucket bits alone orders by (bucket, position).
  ``reformer_attn``: one CTA per (round, chunk): reads the 2C sorted positions (8C B), gathers
      2C query rows and 2C value rows (4 C d e) and the bucket ids of all rounds of those
      tokens (8 C H B); writes C output rows (C d e) and, when H > 1, C fp32 lse (4C B).
      FLOPs 2 C·2C·d twice per chunk (scores, P V). Of its other ops the masks and selects
      (4 + [causal]), the bucket compares over rounds (H) and the row max (1), per score
      entry, run on the ALU. Below fp32 it converts 2C d (K̂ = Q/|Q|, normalised in fp32)
      + C·2C (P) + C d (O rows) values per chunk.
  ``reformer_combine`` (H > 1): one CTA per B_c rows: reads H B_c d e + 4 H B_c, writes B_c d e;
      the max over rounds (H B_c) on the ALU, B_c d conversions of O below fp32.
The exact closed form of the traffic is derived in ``tests/test_approx_reformer.py``.
Bound: Θ(H N d + H N log N) bytes (the sort's passes grow as log b = log(N/C)); FLOPs
Θ(H N C d + H N d log N).

Count-only mode: which keys share a bucket depends on the data, but the schedule does not:
every chunk computes its full C x 2C score tile and masks it (as a GPU kernel does), the
radix sort makes the same passes over the same number of keys whatever their values, and
gathers move the same bytes whichever rows they fetch. So counts are data-independent and
count-only mode gives exactly the executed counts; what is data-dependent is only which
rows are gathered, which entries are masked, and hence the output and its error (and the
gathers' coalescing, which the simulator does not model: it counts bytes, not sectors).

Reversible layers (§3): ``reversible_activation_bytes`` reports the activation memory of L
layers with and without reversible residuals; ``run`` puts it in ``rec.info["reversible"]``.

Hashing on stored values: ``reformer_hash`` reads Q and R at e bytes, and the argmax is
computed on exactly those values (``storage_values``: rounded to fp16/bf16), so that a real
kernel, which can only hash what it stored, finds the same buckets (the CUDA port does, up
to float32 summation order); the attention itself is computed from the float32 inputs.

Differences from the paper's implementation: the hash rotation R is one Gaussian matrix per
round shared by all heads; the first chunk looks back to the last one (wrap-around, our
choice: every chunk then does equal work); no dropout; the per-round outputs go through HBM
in the storage dtype. Defaults: bucket size 64 (the paper's chunk length, per FACTS.md),
4 hash rounds (our choice; the paper's Fig. 4 compares several round counts).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from algorithms.base import AlgorithmInfo, Option, Plan, PlanError
from algorithms.kernels import footprints
from algorithms.kernels import step_latency
from algorithms.kernels.common import (MMA_ROWS, cdiv, finish_heads, head_view, iter_heads,
                                       l2_arguments, new_output)
from algorithms.kernels.radix_sort import (KEY_BYTES, RADIX_BITS, VALUE_BYTES, radix_sort,
                                  sort_buffers, sort_tile)
from hwmodels.compiled import compiled
from hwmodels.footprint import Allocation, Footprint
from hwmodels.memory import SramOverflowError
from hwmodels.primitives import (count_alu, count_convert, count_exp, count_load, count_other,
                                 count_store, count_store_result, matmul_nn, matmul_nt)

INFO = AlgorithmInfo(
    name="reformer",
    title="Reformer LSH attention, shared-QK (forward)",
    paper="Kitaev et al., 2020 (arXiv 2001.04451)",
    exact=False,
    io_bound="Θ(H N d + H N log N) bytes; FLOPs Θ(H N C d)",
    no_kv_heads="its keys are its queries (shared-QK attention), one per query head",
    options=(
        Option("hashes", int, 4, "hash rounds H (the paper's Fig. 4 compares round counts)",
               validate=lambda v: None if v > 0 else "must be a positive integer"),
        Option("bucket_size", int, 64, "average bucket size = chunk length C (paper: 64); "
               "N / C buckets, which must be even",
               validate=lambda v: None if v > 0 else "must be a positive integer"),
        Option("seed", int, None, "seed of the random rotations; default: the inputs' seed "
               "(the CLI's --input-seed), so one seed fixes both the data and the hashes",
               validate=lambda v: None if v >= 0 else "must be a non-negative integer"),
        Option("layers", int, 12, "layers L for the reversible-activation accounting",
               validate=lambda v: None if v > 0 else "must be a positive integer"),
    ),
    count_only="exact: the schedule (tiles, sort passes, gathers) is data-independent; "
               "only bucket ids, the rows gathered and the masks depend on the data",
)

SELF_LOGIT = -1.0e5       # a token's logit to itself: used only when nothing else is visible
MAX_FACTOR = 128          # buckets per hash factor (rotation of 64 columns)
LSE_BYTES = 4
BLOCK_CANDIDATES = (128, 64, 32, 16)
THREADS_PER_CTA = 128


@dataclass(frozen=True)
class ReformerPlan(Plan):
    hashes: int             # H
    bucket_size: int        # C: chunk length, average bucket size
    n_buckets: int          # b = N / C
    factors: tuple          # b = Π factors, each even and <= 128
    rotation_cols: int      # k = Σ f/2 columns of R per round
    sort_passes: int        # P = ⌈bits / 8⌉
    hash_block: int         # B_h rows per hash CTA
    combine_block: int      # B_c rows per combine CTA
    sort_tile: int          # keys per radix-sort CTA
    attn_smem_bytes: int
    seed: int | None        # None: the inputs' seed
    layers: int


def bucket_factors(n_buckets: int) -> tuple:
    """b as a product of even factors <= 128 (one factor when b <= 128)."""
    factors, rest = [], n_buckets
    while rest > MAX_FACTOR:
        f = next((f for f in range(MAX_FACTOR, 1, -2) if rest % f == 0 and (rest // f) % 2 == 0),
                 None)
        if f is None:
            raise PlanError(f"reformer: {n_buckets} buckets cannot be split into even factors "
                            f"<= {MAX_FACTOR}; choose N / bucket_size a power of two")
        factors.append(f)
        rest //= f
    factors.append(rest)
    return tuple(factors)


def attn_buffers(c: int, d: int, e: int, hashes: int) -> dict:
    return {"Q_c": c * d * e, "Khat_2c": 2 * c * d * e, "V_2c": 2 * c * d * e,
            "S": c * 2 * c * 4, "pos_2c": 2 * c * VALUE_BYTES,
            "buckets_2c": 2 * c * hashes * KEY_BYTES}


def hash_buffers(rows: int, d: int, e: int, cols: int) -> dict:
    return {"Q_h": rows * d * e, "R_r": d * cols * e, "proj": rows * cols * 4}


def combine_buffers(rows: int, d: int, e: int, hashes: int) -> dict:
    return {"O_r": hashes * rows * d * e, "lse_r": hashes * rows * LSE_BYTES}


def plan(wl, gpu, sram_bytes: int, hashes: int = 4, bucket_size: int = 64, seed=None,
         layers: int = 12) -> ReformerPlan:
    n, c = wl.seq_q, bucket_size
    if wl.seq_k != wl.seq_q:
        raise PlanError(f"reformer is self-attention with shared QK: seq_k ({wl.seq_k}) must "
                        f"equal seq_q ({wl.seq_q})")
    if n % c:
        raise PlanError(f"reformer: --bucket-size {c} must divide the sequence length {n} "
                        f"(the sorted order is cut into chunks of that length)")
    nb = n // c
    if nb < 2 or nb % 2:
        raise PlanError(f"reformer: N / bucket_size = {n}/{c} = {nb} buckets, but the "
                        f"angular hash needs an even number >= 2 (argmax over ±R columns); "
                        f"choose --bucket-size so that N / bucket_size is even")
    factors = bucket_factors(nb)
    cols = sum(f // 2 for f in factors)
    d, e = wl.head_dim, wl.elem_bytes
    need = attn_buffers(c, d, e, hashes)
    if sum(need.values()) > sram_bytes:
        raise SramOverflowError(
            f"reformer with bucket size {c}, head_dim {d} and {hashes} hashes needs "
            f"{sum(need.values()):,} bytes of SRAM per attention CTA "
            f"({', '.join(f'{k} {v:,} B' for k, v in need.items())}) but the budget is "
            f"{sram_bytes:,} bytes; use a smaller --bucket-size or fewer --hashes")
    hash_block = next((b for b in BLOCK_CANDIDATES
                       if sum(hash_buffers(b, d, e, cols).values()) <= sram_bytes), None)
    combine_block = next((b for b in BLOCK_CANDIDATES
                          if sum(combine_buffers(b, d, e, hashes).values()) <= sram_bytes), None)
    if hash_block is None or combine_block is None:
        raise SramOverflowError(f"reformer: hashing ({cols} rotation columns) or combining "
                                f"{hashes} rounds does not fit {sram_bytes:,} bytes of SRAM "
                                f"even with 16-row tiles; use fewer --hashes")
    tile = sort_tile(sram_bytes)
    if tile is None:
        raise SramOverflowError(f"reformer: the radix sort needs at least "
                                f"{sum(sort_buffers(256).values()):,} bytes of SRAM per CTA "
                                f"(256 keys and values and a 256-bin histogram) but the "
                                f"budget is {sram_bytes:,} bytes; use a larger --sram-kb")
    bits = max(1, math.ceil(math.log2(nb)))
    return ReformerPlan(hashes=hashes, bucket_size=c, n_buckets=nb, factors=factors,
                        rotation_cols=cols, sort_passes=cdiv(bits, RADIX_BITS),
                        hash_block=hash_block, combine_block=combine_block, sort_tile=tile,
                        attn_smem_bytes=sum(need.values()), seed=seed, layers=layers)


ROTATION_STREAM = 2001_04451     # R: default_rng([seed, ROTATION_STREAM])

def rotations(p: ReformerPlan, d: int, inputs, dtype: str = "fp32") -> np.ndarray:
    """R: (H, d, k) Gaussian random rotations (the paper's random projection), from the
    plan's seed or, when unset, the inputs' seed, as float32 values of the storage ``dtype``
    (``storage_values``: R is counted, and read by ``reformer_hash``, at e bytes)."""
    seed = p.seed if p.seed is not None else int(getattr(inputs, "seed", 0) or 0)
    # its own stream of the seed: make_inputs draws Q first from default_rng(seed), and R
    # drawn from the same stream would be built from the very values of the queries
    rng = np.random.default_rng([seed, ROTATION_STREAM])
    return storage_values(rng.standard_normal((p.hashes, d, p.rotation_cols)).astype(np.float32),
                          dtype)


def storage_values(x, dtype: str) -> np.ndarray:
    """float32 values of ``x`` rounded to the 16-bit storage type (fp16, bf16: round to
    nearest even, as the device converts); other dtypes unchanged.

    The hash is an argmax, a discontinuous function of Q and R: it is computed on the values
    the simulated kernel reads from HBM (Q rows and R at e bytes), not on the float32 inputs,
    so that a kernel hashing its stored fp16/bf16 data (the CUDA port) finds the same
    buckets, up to float32 summation order."""
    if dtype not in ("fp16", "bf16"):
        return np.asarray(x, dtype=np.float32)
    from algorithms.ports.core import from_storage, to_storage   # lazy: ports import modules
    return from_storage(to_storage(x, dtype), dtype)


# ---- running -----------------------------------------------------------------------------

def run(wl, p: ReformerPlan, inputs, rec, compute: bool) -> dict:
    """The four kernels (hash, the sort's histogram and scatter passes, chunked attention,
    the rounds' combine when there are several) declared once, then run head by head."""
    kernels = Kernels(hash=hash_record(rec, wl, p), hist=sort_record(rec, wl, p, "hist"),
                      passes=[sort_record(rec, wl, p, f"pass{i}")
                              for i in range(p.sort_passes)],
                      attn=attention_record(rec, wl, p),
                      comb=combine_record(rec, wl, p) if p.hashes > 1 else None)
    rot = (rotations(p, wl.head_dim, inputs, wl.dtype) if compute
           else np.zeros((p.hashes, 0, 0), dtype=np.float32))
    o = new_output(wl, compute)
    rows_alloc = wl.seq_q if compute else 0
    # (B, H, hashes, N) bucket ids and sorted permutations, returned with o (executed mode)
    all_buckets = np.zeros((wl.batch, wl.heads, p.hashes, rows_alloc), dtype=np.int32)
    all_perm = np.zeros((wl.batch, wl.heads, p.hashes, rows_alloc), dtype=np.int32)
    for b, h, q, _k, v in iter_heads(wl, inputs, compute):
        buckets, perm = run_head(kernels, wl, p, q, v, rot, head_view(o, b, h, compute),
                                 compute)
        if compute:
            all_buckets[b, h], all_perm[b, h] = buckets, perm
    for counters in kernels.all():
        finish_heads(counters, wl, compute)
    rec.info["reversible"] = reversible_activation_bytes(wl, p.layers)
    rec.info["lsh"] = lsh_info(wl, p)
    return {"o": o, "buckets": all_buckets, "perm": all_perm} if compute else {}


@dataclass
class Kernels:
    """The counters of one Reformer call's kernels."""
    hash: object
    hist: object
    passes: list
    attn: object
    comb: object      # None with one round of hashes

    def all(self) -> list:
        return [self.hash, self.hist, *self.passes, self.attn] \
            + ([self.comb] if self.comb is not None else [])


def hash_record(rec, wl, p: ReformerPlan):
    """``reformer_hash``: a CTA per block of ``hash_block`` rows of a head, each rotating its
    rows by every round's R and writing a bucket id and a position per round."""
    n, d, e, hh = wl.seq_q, wl.head_dim, wl.elem_bytes, p.hashes
    heads_total = wl.batch * wl.heads
    hb = hash_buffers(p.hash_block, d, e, p.rotation_cols)
    ids = hh * n * (KEY_BYTES + VALUE_BYTES)        # a bucket id and a position per round
    r_bytes = hh * d * p.rotation_cols * e
    return rec.kernel("reformer_hash", ctas=cdiv(n, p.hash_block) * heads_total, buffers=hb,
                      threads_per_cta=THREADS_PER_CTA, matmul_dtype=wl.dtype,
                      prologue_bytes_per_cta=hb["Q_h"] + hb["R_r"],
                      # the warps take 16 rows of Q_h at a time, each time reading all of R_r
                      smem_readers=cdiv(p.hash_block, MMA_ROWS),
                      mma_rows_per_cta=p.hash_block,
                      # every CTA of a head reads all of R
                      **l2_arguments(rec, heads_total, cdiv(n, p.hash_block), sum(hb.values()),
                                     n * d * e + r_bytes + ids, r_bytes, THREADS_PER_CTA))


def sort_record(rec, wl, p: ReformerPlan, step: str):
    """One launch of the bucket sort (``hist``, or ``pass<i>``): a CTA per tile of every
    round's (bucket id, position) pairs."""
    return rec.kernel(f"reformer_sort_{step}",
                      ctas=cdiv(wl.seq_q, p.sort_tile) * p.hashes * wl.batch * wl.heads,
                      buffers=sort_buffers(p.sort_tile), tc_path="none", threads_per_cta=256)


def attention_record(rec, wl, p: ReformerPlan):
    """``reformer_attn``: a CTA per (chunk, round, head), its queries against its own chunk's
    keys and the chunk's before it."""
    n, d, e, hh = wl.seq_q, wl.head_dim, wl.elem_bytes, p.hashes
    heads_total = wl.batch * wl.heads
    ab = attn_buffers(p.bucket_size, d, e, hh)
    ids = hh * n * (KEY_BYTES + VALUE_BYTES)
    rows = 2 * n * d * e                            # a head's Q (the keys too) and V rows
    outputs = hh * n * (d * e + (LSE_BYTES if hh > 1 else 0))
    return rec.kernel("reformer_attn", ctas=p.n_buckets * hh * heads_total, buffers=ab,
                      threads_per_cta=THREADS_PER_CTA, matmul_dtype=wl.dtype,
                      # S = Q_c K̂ᵀ over the chunk and the one before it
                      prologue_bytes_per_cta=ab["Q_c"] + ab["Khat_2c"],
                      epilogue_elements_per_cta=p.bucket_size * d,   # the chunk's O rows
                      # a warp per 16 queries, each reading the 2C keys and values
                      smem_readers=cdiv(p.bucket_size, MMA_ROWS),
                      mma_rows_per_cta=p.bucket_size,
                      # one step a chunk: its queries against the 2C keys
                      **step_latency.chain(step_latency.forward_step(2 * p.bucket_size), 1,
                                           p.n_buckets * hh * heads_total),
                      # a chunk re-reads the rows, positions and ids of the chunk before
                      # it, and every round gathers the head's rows and ids again
                      **l2_arguments(rec, heads_total, p.n_buckets * hh, sum(ab.values()),
                                     rows + ids + outputs, rows + ids, THREADS_PER_CTA))


def combine_record(rec, wl, p: ReformerPlan):
    """``reformer_combine``: the rounds' outputs merged by their log-sum-exps, a CTA per
    ``combine_block`` rows of a head."""
    return rec.kernel("reformer_combine",
                      ctas=cdiv(wl.seq_q, p.combine_block) * wl.batch * wl.heads,
                      buffers=combine_buffers(p.combine_block, wl.head_dim, wl.elem_bytes,
                                              p.hashes),
                      tc_path="none", threads_per_cta=THREADS_PER_CTA)


def run_head(k: Kernels, wl, p: ReformerPlan, q, v, rot, o_head, compute: bool):
    """One head through the four kernels; returns its bucket ids and sorted permutation
    (each (hashes, N); empty in count-only mode)."""
    n, d, e, hh = wl.seq_q, wl.head_dim, wl.elem_bytes, p.hashes
    rows_alloc = n if compute else 0
    # HBM scratch of this head: bucket ids and positions per round, sorted copies,
    # per-round outputs and log-sum-exps
    buckets = np.zeros((hh, rows_alloc), dtype=np.int32)
    positions = np.zeros((hh, rows_alloc), dtype=np.int32)
    q_hash = storage_values(q, wl.dtype) if compute else q     # Q rows as stored
    hash_head(k.hash, q_hash, rot, np.array(p.factors, dtype=np.int64), buckets, positions, n,
              d, hh, p.rotation_cols, p.hash_block, e, compute)
    sorted_keys = np.zeros((hh, rows_alloc), dtype=np.int32)
    perm = np.zeros((hh, rows_alloc), dtype=np.int32)
    for r in range(hh):
        radix_sort(k.hist, k.passes, buckets[r], positions[r], sorted_keys[r], perm[r], n,
                   p.sort_passes, compute)
    o_rounds = np.zeros((hh if hh > 1 else 0, rows_alloc, d), dtype=np.float32)
    lse_rounds = np.zeros((hh if hh > 1 else 0, rows_alloc), dtype=np.float32)
    attn_head(k.attn, q, v, buckets, perm, o_rounds, lse_rounds, o_head, n, d, hh,
              p.bucket_size, p.n_buckets, wl.scale, wl.causal, e, compute)
    if k.comb is not None:
        combine_head(k.comb, o_rounds, lse_rounds, o_head, n, d, hh, p.combine_block, e,
                     compute)
    return buckets, perm


def lsh_info(wl, p: ReformerPlan) -> dict:
    """The JSON ``lsh`` block: buckets, the sort's passes and their bytes."""
    pairs = p.hashes * wl.seq_q * wl.batch * wl.heads
    return {"n_buckets": p.n_buckets, "bucket_factors": list(p.factors),
            "sort_passes": p.sort_passes, "radix_bits": RADIX_BITS,
            # every scatter pass reads and writes each (bucket id, position) pair
            "sort_bytes_per_pass": 2 * (KEY_BYTES + VALUE_BYTES) * pairs,
            "sort_histogram_bytes": KEY_BYTES * pairs}


@compiled
def hash_head(c, q, rot, factors, buckets, positions, n, d, hashes, cols, block, e, compute):
    """h(x) = argmax([xR; -xR]) per factor, mixed-radix combined, for every round."""
    nf = factors.shape[0]
    for r0 in range(0, n, block):
        r1 = min(r0 + block, n)
        rows = r1 - r0
        count_load(c, rows * d * e)                            # Q rows -> SRAM
        qi = q[r0:r1]
        for r in range(hashes):
            count_load(c, d * cols * e)                        # R_r -> SRAM
            proj = matmul_nn(c, qi, rot[r], rows, cols, d, e, compute)     # x R_r
            count_alu(c, rows * 2 * cols)                      # argmax over ±
            count_other(c, rows * (cols + 2 * nf))             # negate, combine
            if compute:
                _argmax_buckets(proj, factors, buckets[r], positions[r], r0)
        count_store(c, hashes * rows * (4 + 4))                # bucket ids, positions -> HBM


@compiled
def _argmax_buckets(proj, factors, out_buckets, out_pos, r0):
    rows = proj.shape[0]
    for i in range(rows):
        bucket = 0
        radix = 1
        col = 0
        for fi in range(factors.shape[0]):
            half = factors[fi] // 2
            best = 0
            best_val = proj[i, col]
            for j in range(half):                            # +x R columns, then -x R
                if proj[i, col + j] > best_val:
                    best_val = proj[i, col + j]
                    best = j
            for j in range(half):
                if -proj[i, col + j] > best_val:
                    best_val = -proj[i, col + j]
                    best = half + j
            bucket += best * radix
            radix *= factors[fi]
            col += half
        out_buckets[r0 + i] = bucket
        out_pos[r0 + i] = r0 + i


@compiled
def attn_head(c, q, v, buckets, perm, o_rounds, lse_rounds, o, n, d, hashes, chunk, nchunks,
              scale, causal, e, compute):
    """One CTA per (round, chunk): attend to own chunk and the previous one (wrapping)."""
    w = 2 * chunk
    for r in range(hashes):
        for ch in range(nchunks):
            prev = (ch - 1 + nchunks) % nchunks
            count_load(c, w * 4)                               # sorted positions of 2 chunks
            count_load(c, w * d * e)                           # gather Q rows (keys = Q/|Q|)
            count_load(c, w * d * e)                           # gather V rows
            count_load(c, w * hashes * 4)                      # their bucket ids, all rounds
            count_other(c, 2 * w * d + w * d)                  # |q|², normalise
            count_exp(c, w)                                    # rsqrt
            count_other(c, chunk * w)                          # scale
            count_alu(c, chunk * w * (4 + (1 if causal else 0)))   # masks, select
            count_alu(c, chunk * w * hashes)                   # N_ij: bucket compares
            count_other(c, chunk * w * (hashes + 1))           # N_ij: adds; - log N_ij
            count_exp(c, chunk * w)                            # log N_ij
            count_alu(c, chunk * w)                            # row max
            count_other(c, 2 * chunk * w)                      # subtract, row sum
            count_exp(c, chunk * w)                            # exp
            count_other(c, chunk * d + chunk)                  # O / l, lse = m + log l
            count_exp(c, chunk)                                # log l
            tok = np.empty(0, dtype=np.int32)
            qk = np.empty((0, 0), dtype=np.float32)
            keys = np.empty((0, 0), dtype=np.float32)
            vals = np.empty((0, 0), dtype=np.float32)
            if compute:
                tok = np.concatenate((perm[r, prev * chunk:(prev + 1) * chunk],
                                      perm[r, ch * chunk:(ch + 1) * chunk]))
                keys = np.empty((w, d), dtype=np.float32)
                vals = np.empty((w, d), dtype=np.float32)
                for j in range(w):
                    keys[j] = q[tok[j]]
                    vals[j] = v[tok[j]]
                qk = keys[chunk:].copy()                       # this chunk's queries
                for j in range(w):
                    nrm = np.sqrt((keys[j] * keys[j]).sum())
                    if nrm > 0:
                        keys[j] = keys[j] / nrm
            count_convert(c, w * d, e)                         # K̂ = Q/|Q| (fp32) -> MMA dtype
            s = matmul_nt(c, qk, keys, chunk, w, d, e, compute)  # C x 2C scores
            pmat = np.empty((0, 0), dtype=np.float32)
            lse = np.empty(0, dtype=np.float32)
            if compute:
                pmat, lse = _masked_softmax(s, tok, buckets, r, chunk, scale, causal)
            count_convert(c, chunk * w, e)                     # P -> the MMA's dtype
            ov = matmul_nn(c, pmat, vals, chunk, d, w, e, compute)  # P V
            count_convert(c, chunk * d, e)                     # O rows to the storage dtype
            if hashes == 1:
                count_store(c, chunk * d * e)                  # scatter O rows -> HBM
                if compute:
                    for i in range(chunk):
                        o[tok[chunk + i]] = ov[i]
            else:
                count_store(c, chunk * d * e + chunk * LSE_BYTES)  # o^(r), z^(r) -> HBM
                if compute:
                    for i in range(chunk):
                        o_rounds[r, tok[chunk + i]] = ov[i]
                        lse_rounds[r, tok[chunk + i]] = lse[i]


@compiled
def _masked_softmax(s, tok, buckets, r, chunk, scale, causal):
    """Row-normalised weights and lse of one chunk's C x 2C scores under the LSH masks."""
    rows, w = s.shape
    hashes = buckets.shape[0]
    p = np.empty((rows, w), dtype=np.float32)
    lse = np.empty(rows, dtype=np.float32)
    for i in range(rows):
        ti = tok[chunk + i]
        mx = -np.inf
        for j in range(w):
            tj = tok[j]
            if buckets[r, tj] != buckets[r, ti] or (causal and tj > ti):
                val = -np.inf
            elif tj == ti:
                val = SELF_LOGIT
            else:
                shared = 0
                for rr in range(hashes):
                    if buckets[rr, tj] == buckets[rr, ti]:
                        shared += 1
                val = s[i, j] * scale - np.log(np.float32(shared))
            p[i, j] = val
            if val > mx:
                mx = val
        total = 0.0
        for j in range(w):
            p[i, j] = np.exp(p[i, j] - mx)
            total += p[i, j]
        for j in range(w):
            p[i, j] = p[i, j] / total
        lse[i] = mx + np.log(total)
    return p, lse


@compiled
def combine_head(c, o_rounds, lse_rounds, o, n, d, hashes, block, e, compute):
    """o_i = Σ_r exp(z_i^(r) - logsumexp_r z_i^(r)) o_i^(r)."""
    for r0 in range(0, n, block):
        r1 = min(r0 + block, n)
        rows = r1 - r0
        count_load(c, hashes * rows * (d * e + LSE_BYTES))     # o^(r), z^(r) -> SRAM
        count_alu(c, rows * hashes)                            # max
        count_other(c, 2 * rows * hashes)                      # subtract, sum
        count_exp(c, rows * hashes)
        count_other(c, 2 * rows * d * hashes + rows * d)       # weighted sum, / total
        count_store_result(c, rows * d, e)                     # O rows -> HBM
        if compute:
            for i in range(r0, r1):
                mx = lse_rounds[:, i].max()
                wts = np.exp(lse_rounds[:, i] - mx)
                acc = np.zeros(d, dtype=np.float32)
                for r in range(hashes):
                    acc += wts[r] * o_rounds[r, i]
                o[i] = acc / wts.sum()


# ---- reversible layers ----------------------------------------------------------------------

def reversible_activation_bytes(wl, layers: int) -> dict:
    """Activations kept for the backward pass of ``layers`` layers (Reformer §3).

    With ordinary residual layers, backpropagation keeps each layer's inputs to its
    attention and feed-forward sublayers:    A_std = 2 L b N d_model e  bytes = O(N L).
    Reversible layers (y1 = x1 + Attn(x2), y2 = x2 + FF(y1)) recompute every layer's inputs
    from its outputs during the backward pass, so only the top layer's pair (y1, y2) is kept:
                                             A_rev = 2 b N d_model e    bytes = O(N).
    d_model = heads x head_dim, e = storage bytes. Activations inside one sublayer (recomputed
    or kept the same way in both) are left out of both.
    """
    d_model = wl.heads * wl.head_dim
    per_tensor = wl.batch * wl.seq_q * d_model * wl.elem_bytes
    return {"layers": int(layers), "d_model": int(d_model),
            "standard_bytes": int(2 * layers * per_tensor),
            "reversible_bytes": int(2 * per_tensor),
            "formula": "standard = 2 L b N d_model e; reversible = 2 b N d_model e",
            "training": bool(wl.has_backward)}


# ---- float64 reference and the exact problem it approximates ------------------------------

def _shared_keys(q):
    nrm = np.linalg.norm(q, axis=-1, keepdims=True)
    return q / np.where(nrm > 0, nrm, 1.0)


def exact_problem(wl, p, inputs):
    """(q, k, v, mask) of the exact softmax attention Reformer approximates: keys are the
    normalised queries, no self-attention unless a row has no other visible key."""
    q = np.asarray(inputs.q, dtype=np.float64)
    n = wl.seq_q
    allowed = ~np.eye(n, dtype=bool)
    # rows with no visible key but their own: causal, the first; else only when N = 1
    lonely = np.arange(n) == 0 if wl.causal else np.full(n, n == 1)
    allowed[lonely, lonely] = True
    return q, _shared_keys(q), inputs.v, allowed


def reference_buckets(q, rot, factors):
    """(H, N) bucket ids in float64, same hash as the kernel."""
    out = np.zeros((rot.shape[0], q.shape[0]), dtype=np.int64)
    for r in range(rot.shape[0]):
        proj = q @ rot[r].astype(np.float64)
        col, radix = 0, 1
        for f in factors:
            half = f // 2
            part = proj[:, col:col + half]
            out[r] += radix * np.argmax(np.concatenate([part, -part], axis=1), axis=1)
            radix *= f
            col += half
    return out


def reference(wl, p: ReformerPlan, inputs):
    """float64 LSH attention with the same rotations (buckets recomputed in float64)."""
    rot = rotations(p, wl.head_dim, inputs, wl.dtype)
    group = wl.heads // wl.kv_heads
    out = np.zeros(inputs.q.shape, dtype=np.float64)
    for b in range(wl.batch):
        for h in range(wl.heads):
            q = np.asarray(inputs.q[b, h], dtype=np.float64)
            v = np.asarray(inputs.v[b, h // group], dtype=np.float64)
            q_hash = storage_values(inputs.q[b, h], wl.dtype).astype(np.float64)
            out[b, h] = _reference_head(q, q_hash, v, rot, p, wl.scale, wl.causal)
    return out


def _reference_head(q, q_hash, v, rot, p, scale, causal):
    n, c, nb, hh = q.shape[0], p.bucket_size, p.n_buckets, p.hashes
    keys = _shared_keys(q)
    bk = reference_buckets(q_hash, rot, p.factors)             # (H, N), from the stored Q
    o_r = np.zeros((hh, n, q.shape[1]))
    lse_r = np.zeros((hh, n))
    for r in range(hh):
        perm = np.argsort(bk[r], kind="stable")
        for ch in range(nb):
            prev = (ch - 1) % nb
            tok = np.concatenate([perm[prev * c:(prev + 1) * c], perm[ch * c:(ch + 1) * c]])
            qi = tok[c:]
            # N_ij of the chunk's pairs only (the whole N x N table took H + 8 bytes a pair)
            shared = (bk[:, qi, None] == bk[:, None, tok]).sum(axis=0)
            s = q[qi] @ keys[tok].T * scale - np.log(np.maximum(shared, 1))
            same = bk[r][qi][:, None] == bk[r][tok][None, :]
            s = np.where(same, s, -np.inf)
            if causal:
                s = np.where(tok[None, :] > qi[:, None], -np.inf, s)
            s = np.where(tok[None, :] == qi[:, None], SELF_LOGIT, s)
            mx = s.max(axis=1, keepdims=True)
            e = np.exp(s - mx)
            tot = e.sum(axis=1, keepdims=True)
            o_r[r, qi] = (e / tot) @ v[tok]
            lse_r[r, qi] = (mx + np.log(tot))[:, 0]
    wts = np.exp(lse_r - lse_r.max(axis=0, keepdims=True))
    return np.einsum("rn,rnd->nd", wts, o_r) / wts.sum(axis=0)[:, None]


def io_bound(wl, p: ReformerPlan, sram_bytes: int) -> float:
    """Θ(H N d + H N log N) in bytes, all heads: per round the gathered Q and V rows and the
    output (N d e each, the factor 2 of the look-back window included), plus the radix sort's
    8-byte pairs read and written once per 8-bit digit of log2(N / C)."""
    n, d, e, hh = wl.seq_q, wl.head_dim, wl.elem_bytes, p.hashes
    per_head = hh * n * (5 * d * e) + hh * n * 16 * math.log2(n / p.bucket_size) / RADIX_BITS
    return float(per_head * wl.batch * wl.heads)


def footprint(wl, p: ReformerPlan):
    """HBM allocations of one call (B H heads, r = hashes rounds, int32 ids):
    Q (= K, shared-QK) and V; R (r x d x k at e); per round and head the bucket ids and
    positions written by the hash kernel, the sorted keys and permutation the radix sort
    writes (Θ(r N) ints), and with more than one digit pass a scratch pair the passes
    ping-pong through (the per-CTA histograms, a few KB, are not counted, as in
    ``radix_sort``); with r > 1 the per-round outputs (e bytes) and fp32 lse until the
    combine; O. The reversible layers' saving is across layers (``rec.info["reversible"]``),
    not within this call."""
    b, h, n, d, e, r = wl.batch, wl.heads, wl.seq_q, wl.head_dim, wl.elem_bytes, p.hashes
    ints = b * h * r * n * KEY_BYTES
    sort = ("reformer_sort_hist",) + tuple(f"reformer_sort_pass{i}" for i in range(p.sort_passes))
    phases = ("reformer_hash",) + sort + ("reformer_attn",) \
        + (("reformer_combine",) if r > 1 else ())
    first, last = phases[0], phases[-1]
    allocs = footprints.inputs(wl, first, last, names=("q", "v")) + [
        Allocation("rotations", r * d * p.rotation_cols * e, first, "reformer_hash", "input"),
        Allocation("buckets", ints, first, "reformer_attn"),
        Allocation("positions", ints, first, sort[-1]),
        Allocation("sorted_buckets", ints, sort[1], sort[-1]),
        Allocation("perm", ints, sort[1], "reformer_attn"),
        Allocation("o", b * h * n * d * e, "reformer_attn", last, "output")]
    if p.sort_passes > 1:        # the digit passes ping-pong through one more key/value pair
        allocs.append(Allocation("sort_scratch", 2 * ints, sort[1], sort[-1]))
    if r > 1:
        allocs += [Allocation("o_rounds", b * h * r * n * d * e, "reformer_attn", last),
                   Allocation("lse_rounds", b * h * r * n * LSE_BYTES, "reformer_attn", last)]
    return Footprint(phases, allocs)


def plannable_seq(wl, p: ReformerPlan, n: int) -> int:
    """The longest sequence <= n the plan accepts: a multiple of 2 C whose bucket count
    splits into even factors <= 128 (0 when there is none)."""
    step = 2 * p.bucket_size
    nb = (n // step) * 2
    while nb >= 2:
        try:
            bucket_factors(nb)
            return nb * p.bucket_size
        except PlanError:
            nb -= 2
    return 0
