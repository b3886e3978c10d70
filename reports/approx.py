"""The report's approximation sections: the approximate algorithms' error per input family
(``attnsim.approx_sweep.family_error_table``) and the Sparse Transformer's two kernel layouts
(``attnsim.sparse_compare.sparse_transformer_layouts``). Formatting only."""
from __future__ import annotations

from attnsim.inputs import FAMILIES
from reports import format as fmt
from reports.document import Section, Table

FAMILY_HEADING = "Approximation error by input family"
LAYOUT_HEADING = "Sparse Transformer: natural order vs the paper's blocked layout"


def family_error_section(records: list[dict], seeds: int, kernel: dict | None = None) -> Section:
    """One row per (algorithm, setting), one column per input family; ``kernel``
    (``approx_sweep.kernel_mse``) adds Performer's orthogonal-vs-i.i.d. kernel estimate."""
    measured = [r for r in records if r.get("errors") is not None]
    families = list(measured[0]["errors"]) if measured else list(FAMILIES)
    rows = [[r["algorithm"], r["setting"],
             *((f"{r['errors'][f]:.3g}" for f in families) if r.get("errors") is not None
               else [fmt.clip("n/a: " + r["error"], 40)] + [""] * (len(families) - 1))]
            for r in records]
    wl = records[0]["workload"] if records else {}
    table = Table("approx_error_by_family", "", ["algorithm", "setting", *families], rows,
                  records, notes=[f"{r['algorithm']} ({r['setting']}) n/a: {r['error']}"
                                  for r in records if r.get("errors") is None])
    return Section(FAMILY_HEADING, paragraphs=[
        f"Relative Frobenius error of the executed output against exact attention, N = "
        f"{wl.get('seq_q', '?')}, d = {wl.get('head_dim', '?')}, averaged over {seeds} seeds "
        "of the random features / hashes (inputs: seed 0). 'normal' is standard-normal Q, K, "
        "V: attention is diffuse and the exact output close to zero, so errors near or above "
        "1 there measure noise against almost nothing. The other families give attention "
        "structure (attnsim.inputs: logits x4, clustered keys with cluster values, rank-d/16 "
        "Q and K, queries near their keys). RFA is measured against exact attention on "
        "ℓ2-normalised queries and keys (its model), gated RFA against the gated attention it "
        "approximates, Reformer against exact shared-QK attention. Differences below about "
        "0.1 between settings are within seed noise (orthogonal vs i.i.d. Performer features "
        "in particular: the paper's claim is about the kernel estimate's variance, below)."],
        tables=[table, *([_kernel_table(kernel)] if kernel else [])])


def _kernel_table(k: dict) -> Table:
    rows = [["orthogonal", f"{k['orthogonal']:.4f}"], ["i.i.d.", f"{k['iid']:.4f}"],
            ["ratio per pair", " ".join(f"{r:.2f}" for r in k["ratio_per_pair"])]]
    return Table("performer_kernel_mse", "",
                 ["Performer W", "relative MSE of φ(x)·φ(y) as exp(x·y)"], rows, [k], notes=[
        f"Choromanski et al. 2021, Theorem 2: orthogonal rows lower the mean squared error of "
        f"the positive-feature estimate. m = {k['features']}, d = {k['head_dim']}, "
        f"{len(k['ratio_per_pair'])} pairs with N(0, {k['norm_sd']}²) entries, thousands of "
        f"draws (at larger norms the estimator's log-normal tail makes sample MSEs "
        f"meaningless)."])


def sparse_layout_section(records: list[dict], wl_text: str) -> Section:
    """Natural-order vs blocked Sparse Transformer (strided and fixed) at each N."""
    rows = []
    for r in records:
        rows.append([r["pattern"] + ("" if r["summary"] is None else f", c = {r['summary']}"),
                     f"{r['seq'] // 1024}K", r["stride"], r["layout"], fmt.nbytes(r["hbm_bytes"]),
                     fmt.flops(r["flops"]), f"{r['blocks_visited']:,}",
                     f"{100 * r['block_density']:.1f}%", f"{100 * r['density']:.2f}%",
                     fmt.seconds(r["predicted_s"]), r["bound"]])
    table = Table("sparse_transformer_layouts", "",
                  ["pattern", "N", "l", "layout", "HBM", "FLOPs", "tiles", "of dense tiles",
                   "pairs attended", "predicted", "bound"], rows, records)
    return Section(LAYOUT_HEADING,
                   paragraphs=[
        f"Strided pattern at l = √N and fixed pattern at l = 128, c = 8, {wl_text}, "
        "count-only. In natural order every tile holds a key of the second set (every l-th "
        "key; the last c of each block) while l < the tile width, so the kernel visits all "
        "tiles (its work follows N², as dense attention's) although a few % of the pairs are "
        "attended. The blocked layout (run sparse_transformer --layout blocked; Child et al. "
        "2019 §5) runs the first set in natural order and the second made contiguous — strided: "
        "queries and keys reordered by residue mod l, l dense blocks; fixed: the summary keys "
        "gathered — merged by log-sum-exp: strided work follows N√N, fixed N² c/l."],
        tables=[table])
