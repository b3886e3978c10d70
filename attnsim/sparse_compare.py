"""A sparse pattern's block-sparse kernel against the same mask on dense standard attention.

    >>> from attnsim import Workload
    >>> from attnsim.sparse_compare import compare_with_dense
    >>> c = compare_with_dense("bigbird", Workload(seq_q=8192), "h100")
    >>> c.hbm_saving, c.time_saving

Both run through ``simulate`` (count-only by default); the dense one is the registered
``masked_dense`` algorithm with ``mask_of`` = the pattern and the same pattern options.
"""
from __future__ import annotations

from dataclasses import dataclass

from attnsim.simulate import SimResult, simulate
from attnsim.workload import Workload

SPARSE_PATTERNS = ("local", "sparse_transformer", "longformer", "bigbird", "block_sparse")


@dataclass(frozen=True)
class SparseVsDense:
    """``sparse``: the block-sparse kernel; ``dense``: standard attention with the same mask."""
    sparse: SimResult
    dense: SimResult

    @property
    def hbm_saving(self) -> float:
        """Dense HBM bytes ÷ sparse HBM bytes."""
        return self.dense.hbm_bytes / self.sparse.hbm_bytes

    @property
    def flop_saving(self) -> float:
        return self.dense.flops / self.sparse.flops

    @property
    def time_saving(self) -> float:
        return self.dense.time.predicted_s / self.sparse.time.predicted_s

    def to_dict(self) -> dict:
        return {"algorithm": self.sparse.algorithm, "pattern": self.sparse.extra.get("pattern"),
                "sparse_hbm_bytes": self.sparse.hbm_bytes, "dense_hbm_bytes": self.dense.hbm_bytes,
                "hbm_saving": self.hbm_saving, "flop_saving": self.flop_saving,
                "sparse_predicted_s": self.sparse.time.predicted_s,
                "dense_predicted_s": self.dense.time.predicted_s,
                "time_saving": self.time_saving}


def compare_with_dense(algorithm: str, wl: Workload, gpu="h100", *, options: dict | None = None,
                       compute: bool = False, sram_bytes: int | None = None) -> SparseVsDense:
    """Simulate ``algorithm`` (one of SPARSE_PATTERNS) and the same mask on dense standard
    attention, with the same options."""
    if algorithm not in SPARSE_PATTERNS:
        raise ValueError(f"compare_with_dense takes one of {', '.join(SPARSE_PATTERNS)}, "
                         f"got {algorithm!r}")
    options = dict(options or {})
    sparse = simulate(algorithm, wl, gpu, compute=compute, sram_bytes=sram_bytes, options=options)
    dense = simulate("masked_dense", wl, gpu, compute=compute, sram_bytes=sram_bytes,
                     options={"mask_of": algorithm, **options})
    return SparseVsDense(sparse, dense)


LAYOUT_SEQS = (4096, 16384, 65536)
FIXED_OPTIONS = {"stride": 128, "summary": 8}     # Child et al. §4.2: l = 128, c = 8


def sparse_transformer_layouts(gpu="h100", wl: Workload | None = None, seqs=LAYOUT_SEQS,
                               sram_bytes: int | None = None) -> list[dict]:
    """The Sparse Transformer in natural order (``dense`` layout) and in the paper's blocked
    layout, count-only, at each N: the strided pattern at l = √N and the fixed pattern at
    the paper's l = 128, c = 8 (FIXED_OPTIONS). One record per (pattern, N, layout) with HBM
    bytes, FLOPs, predicted time, tiles visited and the fraction of dense tiles."""
    wl = wl or Workload(batch=4, heads=16, seq_q=4096, head_dim=128, dtype="fp16")
    records = []
    for pattern, options in (("strided", {}), ("fixed", FIXED_OPTIONS)):
        for n in seqs:
            # the layouts of one forward pass, whatever the report's --pass or --decode
            w = wl.replace(seq_q=n, seq_k=n, decode=False, passes="fwd", dropout=0.0)
            for layout in ("dense", "blocked"):
                r = simulate("sparse_transformer", w, gpu, compute=False,
                             sram_bytes=sram_bytes,
                             options={"pattern": pattern, **options, "layout": layout})
                pat = r.extra["pattern"]
                records.append({"pattern": pattern, "seq": n, "layout": layout,
                                "stride": pat["stride"], "summary": pat.get("summary"),
                                "hbm_bytes": r.hbm_bytes, "flops": r.flops,
                                "matmul_flops": r.counts["matmul_flops"],
                                "predicted_s": r.time.predicted_s, "bound": r.time.bound,
                                "blocks_visited": pat["blocks_visited"],
                                "block_density": pat["block_density"],
                                "density": pat["density"]})
    return records
