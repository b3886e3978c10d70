"""The one validation layer: every number a user gives, checked before anything is planned
or allocated, with a message that names the flag (or the workload field) and the valid range.

Why these limits (``WORKLOAD_LIMITS``):

* ``seq`` ≤ 2**24 (16,777,216 tokens): above the longest context any published model
  serves (10M tokens), and what keeps one head's counts in int64. Count-only mode counts
  one head in the kernels' int64 arrays and scales it to batch x heads in Python integers
  (``hwmodels.memory``). One head's counts are small multiples of N_q·N_k·d (FLOPs: at most
  14 N² d for a forward and backward, 4 + 10 by FlashAttention-2 §3) or of N_q·N_k (bytes
  and elementwise ops: a few per score), so with N ≤ 2**24 and d ≤ 2**10 they stay below
  2**62; a wrapped counter would be refused as a bug (``KernelRecord``), never printed.
  Totals are exact at any accepted size.
* ``head_dim`` ≤ 1024: four times the largest head dim FlashAttention supports (256) and
  above any published model's (MLA's latent is an option of ``mla``, not the head dim).
* ``batch`` ≤ 2**20, ``heads`` ≤ 2**14: far above real deployments (the largest published
  models have 128 query heads).
* query rows and key rows, batch x heads x seq, ≤ 2**30 each: 2**30 fp16 rows of d = 64 are
  128 GiB, as much as the largest GPU's HBM (H200: 141 GB), so no single GPU holds more; the
  bound also keeps the timing model's CTA-by-CTA schedule of causal grids short. Key rows
  are the rows the K/V cache holds: for an MLA model one latent row per token
  (``key_value_rows``; ``mla --path upproject`` checks its per-head K and V itself).
"""
from __future__ import annotations

import contextlib
import contextvars
import math
import os

from algorithms.base import MAX_ROWS, PlanError
from attnsim.errors import AttnsimError
from attnsim.reference import BLOCK_BYTES as REFERENCE_BLOCK_BYTES

MAX_SEQ = 2**24
MAX_HEAD_DIM = 1024
MAX_BATCH = 2**20
MAX_HEADS = 2**14
MAX_SEED = 2**63 - 1
MAX_SCALE = 10_000

# Workload field -> (lowest, highest) accepted value.
WORKLOAD_LIMITS = {
    "batch": (1, MAX_BATCH),
    "heads": (1, MAX_HEADS),
    "kv_heads": (1, MAX_HEADS),
    "seq_q": (1, MAX_SEQ),
    "seq_k": (1, MAX_SEQ),
    "head_dim": (1, MAX_HEAD_DIM),
}


# Workload field -> the flag the user typed, while the CLI builds a workload (see ``flag_names``).
_FLAG_NAMES: contextvars.ContextVar[dict] = contextvars.ContextVar("flag_names", default={})


@contextlib.contextmanager
def flag_names(mapping: dict):
    """Workloads built inside name ``mapping[field]`` (a flag) in their messages."""
    token = _FLAG_NAMES.set(mapping)
    try:
        yield
    finally:
        _FLAG_NAMES.reset(token)


# True while workloads are built as closed-form probes that are never simulated (see
# ``hypothetical_workloads``).
_HYPOTHETICAL: contextvars.ContextVar[bool] = contextvars.ContextVar("hypothetical",
                                                                     default=False)


@contextlib.contextmanager
def hypothetical_workloads():
    """Workloads built inside are probes of closed forms (the HBM footprint's search for the
    longest context that fits), never simulated: the size limits, which keep a simulation's
    counts in int64 and its loops short, do not apply; the fields' types and signs do."""
    token = _HYPOTHETICAL.set(True)
    try:
        yield
    finally:
        _HYPOTHETICAL.reset(token)


def check_int(value, name: str, lo: int, hi: int | None = None) -> int:
    """``value`` as an int in [lo, hi]; AttnsimError naming ``name`` and the range."""
    valid = f"[{lo:,}, {hi:,}]" if hi is not None else f"≥ {lo:,}"
    if isinstance(value, bool) or not isinstance(value, int):
        raise AttnsimError(f"{name} must be a whole number in {valid}, got {value!r}")
    if value < lo or (hi is not None and value > hi):
        raise AttnsimError(f"{name} must be in {valid}, got {value:,}")
    return value


def check_float(value, name: str, lo: float, hi: float, *, lo_open=False, hi_open=False,
                unit: str = "") -> float:
    """``value`` as a finite float in the interval; AttnsimError naming ``name``."""
    interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}{unit}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise AttnsimError(f"{name} must be a number in {interval}, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise AttnsimError(f"{name} must be a finite number in {interval}, got {value}")
    if value < lo or value > hi or (lo_open and value == lo) or (hi_open and value == hi):
        raise AttnsimError(f"{name} must be in {interval}, got {value:g}")
    return value


def check_workload(wl, flags: dict | None = None) -> None:
    """Every field of a ``Workload`` in its physical range. ``flags`` maps a field to the
    name the user typed (the CLI passes flag names; the Python API reports field names)."""
    flags = flags or _FLAG_NAMES.get()

    def name(field):
        return flags.get(field, f"workload {field}")

    hypothetical = _HYPOTHETICAL.get()
    for field, (lo, hi) in WORKLOAD_LIMITS.items():
        check_int(getattr(wl, field), name(field), lo, None if hypothetical else hi)
    if wl.heads % wl.kv_heads:
        raise AttnsimError(f"{flags.get('heads', 'heads')} ({wl.heads}) must be a multiple of "
                           f"{flags.get('kv_heads', 'kv_heads')} ({wl.kv_heads}): each "
                           f"key/value head serves a whole group")
    for rows, heads, field, what in (
            (wl.batch * wl.heads * wl.seq_q, "heads", "seq_q", "query"),
            key_value_rows(wl)):
        if rows > MAX_ROWS and not hypothetical:
            # a --model fixes the heads: only the batch and the length are the user's to change
            heads_flag = "" if getattr(wl, "model", None) is not None else ", --heads"
            raise AttnsimError(
                f"batch x {heads + ' x ' if heads else ''}{name(field)} = {rows:,} {what} "
                f"rows exceeds 2**30 ({MAX_ROWS:,}, more than any one GPU's HBM holds); use "
                f"a smaller --batch{heads_flag} or "
                f"{name(field) if name(field).startswith('--') else '--seq'}")
    check_float(wl.dropout, name("dropout"), 0.0, 1.0, hi_open=True)
    if isinstance(wl.scale, bool) or not isinstance(wl.scale, (int, float)) \
            or not math.isfinite(wl.scale) or not 0 < wl.scale <= MAX_SCALE:
        raise AttnsimError(f"{name('scale')} must be a finite number in (0, {MAX_SCALE:,}] "
                           f"(the usual 1/sqrt(d) is at most 1; random-feature methods divide "
                           f"by it, and far larger scales overflow fp32 scores), got "
                           f"{wl.scale!r}")


def key_value_rows(wl) -> tuple[int, str, str, str]:
    """(rows, the heads that multiply batch x length or "", field, label) of the K/V the
    workload stores, for the row limit. An MLA model's workload runs on ``mla`` only
    (``attnsim.simulate``), whose cache holds one latent row (c_KV and k^R) per token,
    whatever its head count: counting its 128 up-projected heads refused a context of 2**24
    tokens whose latent cache (19 GB at fp16) fits one GPU. ``mla --path upproject``, which
    materialises per-head K and V, checks those rows itself
    (``algorithms.mla.check_upproject_rows``)."""
    model = getattr(wl, "model", None)
    if model is not None and getattr(model, "is_mla", False):
        return wl.batch * wl.seq_k, "", "seq_k", "latent cache"
    return wl.batch * wl.kv_heads * wl.seq_k, "kv heads", "seq_k", "key/value"


def sram_budget_bytes(sram_kb, smem_bytes_per_block: int, flag: str = "--sram-kb") -> int | None:
    """``--sram-kb`` in bytes (None: not given): at least one byte, at most the GPU's shared
    memory per block."""
    if sram_kb is None:
        return None
    valid = (f"a number of KiB in [1/1024 (one byte), {smem_bytes_per_block / 1024:g}] "
             f"(the GPU's shared memory per block)")
    if isinstance(sram_kb, bool) or not isinstance(sram_kb, (int, float)) \
            or not math.isfinite(sram_kb):
        raise AttnsimError(f"{flag} must be {valid}, got {sram_kb!r}")
    if not 1 <= sram_kb * 1024 <= smem_bytes_per_block:      # compared before rounding:
        raise AttnsimError(f"{flag} must be {valid}, got {sram_kb:g}")   # 1e308 KiB is inf B
    return round(sram_kb * 1024)


def check_gpu_check_flags(a) -> None:
    """``gpu-check``'s workload flags in the same ranges as ``run``'s, checked even when no
    device is present (the run would be skipped, the typo should not be)."""
    for n in a.seq:
        check_int(n, "each --seq length", 1, MAX_SEQ)
    for flag, hi in (("batch", MAX_BATCH), ("heads", MAX_HEADS), ("kv_heads", MAX_HEADS),
                     ("head_dim", MAX_HEAD_DIM), ("repeats", 10**6)):
        value = getattr(a, flag, None)
        if value is not None:
            check_int(value, "--" + flag.replace("_", "-"), 1, hi)
    for d in getattr(a, "devices", None) or []:
        check_int(d, "each --devices count", 1, 4096)
    if getattr(a, "cpu_check_max_n", None) is not None:
        check_int(a.cpu_check_max_n, "--cpu-check-max-n", 0, MAX_SEQ)
    _check_gpu_check_workloads(a)


def _check_gpu_check_workloads(a) -> None:
    """Each swept workload as ``run`` would check it (heads a multiple of --kv-heads, rows
    within 2**30), so a shape that could never run is refused before the device is sought."""
    from attnsim.workload import Workload     # workload.py imports this module
    flags = {"batch": "--batch", "heads": "--heads", "head_dim": "--head-dim",
             "kv_heads": "--kv-heads" if getattr(a, "kv_heads", None) is not None
             else "--heads", "seq_q": "--seq", "seq_k": "--seq"}
    with flag_names(flags):
        for n in a.seq:
            Workload(batch=a.batch, heads=a.heads, kv_heads=getattr(a, "kv_heads", None),
                     seq_q=n, head_dim=a.head_dim, causal=getattr(a, "causal", False),
                     dtype=getattr(a, "dtype", "fp16"), passes=getattr(a, "passes", "fwd"))


def check_seqs(seqs: list[int], flag: str = "--seqs") -> list[int]:
    """The growth table's lengths: at least two distinct ones, each a valid sequence length."""
    for n in seqs:
        check_int(n, f"each {flag} length", 1, MAX_SEQ)
    distinct = sorted(set(seqs))
    if len(distinct) < 2:
        raise AttnsimError(f"{flag} needs at least two different lengths to show growth, "
                           f"got {','.join(map(str, seqs))}")
    return distinct


def check_option_values(info, options: dict) -> None:
    """Algorithm options: numbers finite, seeds within int64, other integers no larger
    than the longest sequence (the algorithms' own validators check their finer ranges),
    file options naming a readable file."""
    by_name = {o.name: o for o in info.options}
    for key, value in options.items():
        opt = by_name.get(key)
        if opt is None or value is None:
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise PlanError(f"{info.name}: {opt.flag} must be a finite number, got {value}")
        if isinstance(value, int) and not isinstance(value, bool):
            # seeds span int64; every other integer option counts tokens, blocks, features,
            # hashes, devices, splits or stages of one sequence, never more than its length
            hi = MAX_SEED if "seed" in key else MAX_SEQ
            if "seed" in key and value < 0:
                raise PlanError(f"{info.name}: {opt.flag} must be a non-negative integer (a "
                                f"numpy seed), got {value:,}")
            if abs(value) > hi:
                raise PlanError(f"{info.name}: {opt.flag} must be at most {hi:,} in size, "
                                f"got {value:,}")
        if key == "mask_file":
            check_input_file(value, f"{info.name}: {opt.flag}")


def check_input_file(path: str, name: str) -> None:
    """A file the user named must exist, be a regular file and be readable (PlanError: a
    file an algorithm option names is part of its plan)."""
    if os.path.isdir(path):
        raise PlanError(f"{name} {path!r} is a directory; give a file")
    if not os.path.exists(path):
        raise PlanError(f"{name} {path!r} does not exist")
    if not os.path.isfile(path):        # a device or pipe: reading /dev/zero never ends
        raise PlanError(f"{name} {path!r} is not a regular file; give a file")
    if not os.access(path, os.R_OK):
        raise PlanError(f"{name} {path!r} is not readable")


def check_writable(path: str, flag: str, may_create_folder: bool = False) -> None:
    """An output file the user named can be created: not a directory, in a directory that
    exists (or, when the writer creates it, under one) and that we may write to. A full
    disk shows only when writing (the CLI names it then)."""
    if not path:
        raise AttnsimError(f"{flag} '' names no file; give a file name, or drop {flag} to "
                           f"write to stdout")
    if os.path.isdir(path):
        raise AttnsimError(f"{flag} {path!r} is a directory; give a file name")
    folder = os.path.dirname(os.path.abspath(path))
    existing = folder
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if existing != folder and not may_create_folder:
        raise AttnsimError(f"{flag} {path!r}: the folder {folder!r} does not exist")
    if not os.path.isdir(existing):
        raise AttnsimError(f"{flag} {path!r}: {existing!r} is a file, not a folder")
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise AttnsimError(f"{flag} {path!r} is not writable (permission denied)")
    if not os.path.exists(path) and not os.access(existing, os.W_OK):
        raise AttnsimError(f"{flag} {path!r}: the folder {existing!r} is not writable")


# ---- host memory of an executed run -----------------------------------------------------------

def available_host_bytes() -> int | None:
    """Memory this machine can still give (MemAvailable of /proc/meminfo; elsewhere the free
    physical pages), or None when neither is known."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def executed_host_bytes(wl) -> int:
    """Host memory an executed run needs at its peak, in bytes (an upper estimate).

    * inputs and outputs in float32: Q, K, V, O (and dO, dQ, dK, dV for a backward);
    * the float64 reference (``attnsim.reference``): float64 copies of Q, K, V and O (and
      of dO, dQ, and dK, dV per query head before they are summed over a group), and a
      handful of temporaries of one block of scores (``reference.BLOCK_BYTES``): it walks
      the rows in blocks and never holds a (B, H, N_q, N_k) array;
    * the dropout multiplier Z, (B, H, N_q, N_k) float32, which the references read;
    * the algorithms' own workspaces, at most two float32 (N_q, N_k) matrices per head in
      flight (standard attention's S and P), one head per CPU core. The patterns' boolean
      (N_q, N_k) masks (1 B a pair) and the float64 references of NSA, the feature maps and
      Reformer fit in it: they hold no N_q x N_k float64 or int64 array
      (tests/test_host_memory_audit.py).
    """
    b, h, nq, nk, d = wl.batch, wl.heads, wl.seq_q, wl.seq_k, wl.head_dim
    q_elems, kv_elems = b * h * nq * d, b * wl.kv_heads * nk * d
    tensors = 2 if wl.has_backward else 1                  # (Q, O) or also (dO, dQ) ...
    io32 = 4 * tensors * (2 * q_elems + 2 * kv_elems)
    ref64 = 8 * (2 * q_elems + 2 * kv_elems) + \
        (8 * (2 * q_elems + 2 * b * h * nk * d) if wl.has_backward else 0)
    blocks = (8 if wl.has_backward else 4) * REFERENCE_BLOCK_BYTES
    dropout = 4 * b * h * nq * nk if wl.dropout > 0 else 0
    workers = max(1, min(os.cpu_count() or 1, b * h))
    workspace = 2 * 4 * nq * nk * workers
    return io32 + ref64 + blocks + dropout + workspace


def check_host_memory(wl, available: int | None = None, extra: int = 0,
                      what: str = "", also: list | tuple = ()) -> None:
    """Refuse an executed run that needs more host memory than the machine has available;
    ``extra``: an algorithm's own workspaces (``what`` names them, ``also`` the flags that
    shrink them)."""
    available = available_host_bytes() if available is None else available
    if available is None:
        return
    need = executed_host_bytes(wl) + extra
    if need > available:
        raise AttnsimError(
            f"executed mode needs about {_gib(need)} of host memory for this workload "
            f"(inputs, outputs, the float64 reference, {wl.seq_q:,} x {wl.seq_k:,} score "
            f"matrices of the heads in flight{what}) but {_gib(available)} is available; add "
            f"--count-only (the same counts, no data), or use a smaller --batch, --heads"
            f"{''.join(', ' + flag for flag in also)} or --seq")


def _gib(nbytes: int) -> str:
    return f"{nbytes / 2**30:,.1f} GiB"
