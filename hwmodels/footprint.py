"""What a simulation keeps resident in HBM: allocations, their lifetimes, and the peak.

An algorithm describes its run as a sequence of *phases* (its kernels in launch order, the
forward's then the backward's) and declares every HBM tensor it allocates as an
``Allocation``: its name, its size in bytes at the storage dtype (fp32 where the kernels
keep fp32: softmax statistics, dQ accumulators, running states), and the first and last
phase it is live in. A tensor is allocated before its first phase and freed after its last,
as a caching allocator (PyTorch's) frees a tensor when its last reader has run: inputs live
from the first phase, outputs until the last, what the forward saves for the backward until
the backward's last reader, workspaces only around the kernels that use them.

The footprint is the largest sum over the phases of the allocations live in it; the tensors
live at that phase are the ``by_tensor`` breakdown. Everything is a closed form of the
workload and the plan (Python ints: no allocation happens and no kernel runs), so it costs
the same at 1K and 1M tokens, and ``max_seq_that_fits`` can bisect on it.

What is not counted: the rest of the model (weights, other layers' activations, the
optimizer), the allocator's rounding and fragmentation, and the CUDA context; the footprint
is one attention call's, which is what the claims about attention's memory are about
(FlashAttention, Dao et al. 2022, arXiv 2205.14135, Theorem 1: O(N) memory beyond its
inputs and output, against standard attention's quadratic).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

KINDS = ("input", "output", "saved", "workspace", "cache", "state")
# a tensor that two parts of a run declare differently is what outlives more of it: the
# forward's O is an output that the backward reads, standard attention's P a forward
# workspace that training saves
_KIND_PRECEDENCE = ("output", "cache", "state", "saved", "input", "workspace")


@dataclass(frozen=True)
class Allocation:
    """One HBM tensor: ``nbytes`` over all batches and heads, live from phase ``first``
    through phase ``last`` (phase names of the footprint it belongs to).

    ``kind``: input (given to the call), output (returned), saved (kept by the forward
    for the backward), workspace (freed inside the call), cache (a KV or compressed cache
    that outlives the call), state (a recurrent state that outlives the call).
    """
    name: str
    nbytes: int
    first: str
    last: str
    kind: str = "workspace"

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"allocation {self.name}: kind {self.kind!r} is not one of {KINDS}")
        if int(self.nbytes) != self.nbytes or self.nbytes < 0:
            raise ValueError(f"allocation {self.name}: nbytes must be a non-negative integer, "
                             f"got {self.nbytes!r}")
        object.__setattr__(self, "nbytes", int(self.nbytes))


@dataclass(frozen=True)
class Footprint:
    """The phases of a run and the allocations live across them."""
    phases: tuple
    allocations: tuple

    def __post_init__(self):
        object.__setattr__(self, "phases", tuple(self.phases))
        object.__setattr__(self, "allocations", tuple(a for a in self.allocations if a.nbytes))
        if len(set(self.phases)) != len(self.phases):
            raise ValueError(f"phase names repeat: {self.phases}")
        # phase -> position (runs of many phases, ring's steps, look them up often)
        object.__setattr__(self, "_order", {ph: i for i, ph in enumerate(self.phases)})
        names = [a.name for a in self.allocations]
        if len(set(names)) != len(names):
            raise ValueError(f"allocation names repeat: {names}")
        for a in self.allocations:
            for end in (a.first, a.last):
                if end not in self.phases:
                    raise ValueError(f"allocation {a.name}: phase {end!r} is not one of "
                                     f"{self.phases}")
            if self._index(a.first) > self._index(a.last):
                raise ValueError(f"allocation {a.name}: freed ({a.last}) before it is "
                                 f"allocated ({a.first})")
        # live bytes at every phase, in one sweep (O(phases + allocations))
        delta = [0] * (len(self.phases) + 1)
        for a in self.allocations:
            delta[self._index(a.first)] += a.nbytes
            delta[self._index(a.last) + 1] -= a.nbytes
        object.__setattr__(self, "_live_bytes", list(itertools.accumulate(delta[:-1])))

    def _index(self, phase: str) -> int:
        return self._order[phase]

    def live(self, phase: str) -> tuple:
        """The allocations live during ``phase``."""
        i = self._index(phase)
        return tuple(a for a in self.allocations
                     if self._index(a.first) <= i <= self._index(a.last))

    def bytes_at(self, phase: str) -> int:
        return self._live_bytes[self._index(phase)]

    @property
    def peak_phase(self) -> str:
        """The first phase at which the live bytes are largest."""
        return self.phases[self._live_bytes.index(max(self._live_bytes))]

    @property
    def peak_bytes(self) -> int:
        return self.bytes_at(self.peak_phase) if self.phases else 0

    @property
    def by_tensor(self) -> dict:
        """Name -> bytes of the tensors live at the peak, largest first (among equals, what
        the run allocates before what it is given: flash attention's O before Q, K, V)."""
        if not self.phases:
            return {}
        live = sorted(self.live(self.peak_phase),
                      key=lambda a: (-a.nbytes, a.kind == "input", a.name))
        return {a.name: a.nbytes for a in live}

    @property
    def largest_at_peak(self) -> str | None:
        """The tensor that takes the most of the peak (the one that runs out first)."""
        return next(iter(self.by_tensor), None)

    def allocation(self, name: str) -> Allocation:
        return next(a for a in self.allocations if a.name == name)

    def to_dict(self) -> dict:
        return {
            "peak_bytes": self.peak_bytes,
            "peak_phase": self.peak_phase if self.phases else None,
            "by_tensor": self.by_tensor,
            "allocations": [{"name": a.name, "bytes": a.nbytes, "kind": a.kind,
                             "first": a.first, "last": a.last} for a in self.allocations],
        }


def sequence(*parts: Footprint) -> Footprint:
    """Footprints run one after another (phases concatenated); an allocation of the same
    name in several parts is one tensor live from its first part's ``first`` to its last
    part's ``last`` (e.g. Q, K, V from the forward through the backward); outputs, caches
    and states live to the last phase."""
    phases = tuple(ph for part in parts for ph in part.phases)
    merged: dict[str, Allocation] = {}
    for part in parts:
        for a in part.allocations:
            if a.name in merged:
                prev = merged[a.name]
                if prev.nbytes != a.nbytes:
                    raise ValueError(f"allocation {a.name}: {prev.nbytes} bytes in one part, "
                                     f"{a.nbytes} in another")
                kind = min(prev.kind, a.kind, key=_KIND_PRECEDENCE.index)
                merged[a.name] = Allocation(a.name, a.nbytes, prev.first, a.last, kind)
            else:
                merged[a.name] = a
    # what the call returns or keeps (outputs, caches, states) lives to its end
    kept = [Allocation(a.name, a.nbytes, a.first, phases[-1], a.kind)
            if a.kind in ("output", "cache", "state") else a for a in merged.values()]
    return Footprint(phases, tuple(kept))
