"""HBM footprints the algorithms share: their inputs and outputs, FlashAttention-style single
kernels, split-KV attention, and how a backward pass adds to its forward's.

Each algorithm module's ``footprint(wl, plan) -> hwmodels.footprint.Footprint`` declares its
allocations with these helpers (bytes over all batches and heads, at the storage dtype e;
fp32 where the kernels keep fp32). Phases are the kernel names the algorithm launches, in
order, so a footprint can be checked against the kernels a run records.
"""
from __future__ import annotations

from hwmodels.footprint import Allocation, Footprint, sequence  # noqa: F401 (re-exported)

STAT_BYTES = 4          # fp32 softmax statistics (lse, ℓ, m, D), partial outputs, accumulators
INDEX_BYTES = 4         # int32 indices (CSR layouts, selections, sort keys and values)


def q_bytes(wl, width: int | None = None) -> int:
    """Q (or O, or dQ): batch x heads x N_q x width at e bytes."""
    return wl.batch * wl.heads * wl.seq_q * (width or wl.head_dim) * wl.elem_bytes


def kv_bytes(wl, width: int | None = None) -> int:
    """One of K or V: batch x kv_heads x N_k x width at e bytes."""
    return wl.batch * wl.kv_heads * wl.seq_k * (width or wl.head_dim) * wl.elem_bytes


def row_stat_bytes(wl) -> int:
    """One fp32 value per query row and head (lse, ℓ, m, D)."""
    return wl.batch * wl.heads * wl.seq_q * STAT_BYTES


def kv_kind(wl) -> str:
    """K and V are the KV cache in a decode step (they outlive it), inputs otherwise."""
    return "cache" if getattr(wl, "decode", False) else "input"


def inputs(wl, first: str, last: str, names=("q", "k", "v")) -> list[Allocation]:
    """Q, K, V (those named), live through the whole call."""
    sizes = {"q": q_bytes(wl), "k": kv_bytes(wl), "v": kv_bytes(wl)}
    return [Allocation(n, sizes[n], first, last, "input" if n == "q" else kv_kind(wl))
            for n in names]


def output(wl, writer: str, last: str, lse: bool = True,
           width: int | None = None) -> list[Allocation]:
    """O (and the fp32 log-sum-exp), allocated for the kernel that writes them, kept to the end."""
    out = [Allocation("o", q_bytes(wl, width), writer, last, "output")]
    if lse:
        out.append(Allocation("lse", row_stat_bytes(wl), writer, last, "output"))
    return out


def single_kernel(wl, kernel: str, lse: bool = True, extra=()) -> Footprint:
    """One fused kernel that reads Q, K, V and writes O (and lse): FlashAttention's forwards
    and the kernels built on them (flash3, diff, the block-sparse family). ``extra``: more
    allocations live in that kernel (a CSR layout, parameters)."""
    return Footprint((kernel,), inputs(wl, kernel, kernel) + output(wl, kernel, kernel, lse)
                     + list(extra))


def with_passes(wl, forward: Footprint | None, backward: Footprint | None) -> Footprint:
    """The footprint of ``wl.passes``: the forward, the backward alone (what the forward
    saved is then its input, live from its first phase), or both in sequence — the
    forward's tensors that the backward reads (same name) live from the forward into the
    backward, which is what training keeps resident."""
    if wl.passes == "fwd":
        return forward
    if wl.passes == "bwd":
        return backward
    return sequence(forward, backward)


def grads(wl, writer: str, last: str, dq_writer: str | None = None) -> list[Allocation]:
    """dQ, dK, dV at e bytes (outputs of the backward)."""
    return [Allocation("dq", q_bytes(wl), dq_writer or writer, last, "output"),
            Allocation("dk", kv_bytes(wl), writer, last, "output"),
            Allocation("dv", kv_bytes(wl), writer, last, "output")]


def packed_attention(wl, kernel: str, *, q_heads: int, kv_heads: int, dk: int, dv: int,
                     splits: int, v_in_k: bool = False, q_name: str = "q",
                     kv_names=("k", "v"), kv_kind_: str | None = None, first: str | None = None,
                     last: str | None = None, o_name: str = "o", o_last: str | None = None,
                     o_kind: str = "output") -> tuple[tuple, list[Allocation]]:
    """Phases and allocations of ``algorithms.kernels.splitkv.packed_attention``: Q (d_k),
    K (d_k) and V (d_v; none when the values are K's first columns), O (d_v, e bytes) and
    the fp32 lse; with S > 1 splits, the fp32 partials O_s (S x d_v) and lse_s written by the
    split kernel and freed by the combine kernel, which writes O and lse.

    ``q_name``/``kv_names`` None: the caller declares Q / K and V itself (MLA's are built
    from other tensors). ``first``/``last``: the call's first and last phases (inputs live
    across them);
    ``o_last``: the last reader of O when it is a workspace of a longer run (MLA's latent
    output); ``kv_kind_`` overrides ``kv_kind(wl)``."""
    b, e, nq, nk = wl.batch, wl.elem_bytes, wl.seq_q, wl.seq_k
    phases = (kernel,) + (("splitkv_combine",) if splits > 1 else ())
    first, last = first or phases[0], last or phases[-1]
    kind = kv_kind_ or kv_kind(wl)
    allocs = []
    if q_name:
        allocs.append(Allocation(q_name, b * q_heads * nq * dk * e, first, last, "input"))
    if kv_names:
        allocs.append(Allocation(kv_names[0], b * kv_heads * nk * dk * e, first, last, kind))
        if not v_in_k:
            allocs.append(Allocation(kv_names[1], b * kv_heads * nk * dv * e, first, last, kind))
    if splits > 1:
        allocs += [Allocation("o_partials", splits * b * q_heads * nq * dv * STAT_BYTES,
                              kernel, "splitkv_combine"),
                   Allocation("lse_partials", splits * b * q_heads * nq * STAT_BYTES,
                              kernel, "splitkv_combine")]
    writer = phases[-1]
    allocs += [Allocation(o_name, b * q_heads * nq * dv * e, writer, o_last or last, o_kind),
               Allocation("lse", b * q_heads * nq * STAT_BYTES, writer, o_last or last,
                          o_kind if o_kind == "output" else "workspace")]
    return phases, allocs
