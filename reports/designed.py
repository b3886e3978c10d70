"""The report's "Where each algorithm was designed to win": NSA, GQA/MQA and MLA on the
configurations their papers evaluate, next to flash2 on the same configuration, with the
paper's claim beside our number (``attnsim.suite.design_points``)."""
from __future__ import annotations

from attnsim.serialize import result_dict
from reports import format as fmt
from reports.document import Section, Table

HEADING = "Where each algorithm was designed to win"


def designed_section(points, gpu, wl=None) -> tuple[Section, list[dict]]:
    """(Section, JSON records); ``wl``: the report's workload, named in the text."""
    rows, records, reasons = [], [], []
    for p in points:
        r, b = p.result, p.baseline_result
        if r is None or b is None:
            rows.append([p.label, p.workload.describe(), "n/a: " + fmt.clip(p.error or ""),
                         "—", "—", p.baseline_label, "—", "—", "—", p.claim_short])
            records.append({"label": p.label, "algorithm": p.algorithm, "error": p.error})
            if p.error and fmt.clip(p.error) != p.error:
                reasons.append(f"{p.label} n/a: {p.error}")
            continue
        speedup = b.time.predicted_s / r.time.predicted_s
        rows.append([p.label, p.workload.describe(), fmt.seconds(r.time.predicted_s),
                     r.time.bound, fmt.nbytes(r.hbm_bytes), p.baseline_label,
                     fmt.seconds(b.time.predicted_s), f"{speedup:.2f}×",
                     f"{b.hbm_bytes / r.hbm_bytes:.3g}×" if r.hbm_bytes else "—",
                     p.claim_short])
        records.append({"label": p.label, "algorithm": p.algorithm, "options": p.options,
                        "baseline": p.baseline, "baseline_label": p.baseline_label,
                        "claim": p.claim, "claim_short": p.claim_short, "source": p.source,
                        "speedup_over_baseline": speedup,
                        "hbm_ratio_baseline_over_ours": b.hbm_bytes / r.hbm_bytes
                        if r.hbm_bytes else None,
                        "result": result_dict(r), "baseline_result": result_dict(b)})
    claims = {}
    for p in points:
        claims.setdefault(p.algorithm, (p.claim, p.source))
    table = Table("designed_to_win", f"On {gpu.full_name}, count-only",
                  ["configuration", "workload", "predicted", "bound", "HBM", "baseline",
                   "baseline predicted", "our speedup", "HBM ÷", "paper's claim"],
                  rows, [_flat(rec) for rec in records],
                  notes=[f"{name}: {claim} ({source})." for name, (claim, source) in
                         claims.items()] + [
                      "flash2 loads K/V once per query head, so on GQA/MQA shapes it reads "
                      "what multi-head attention reads, and decoding it computes a whole "
                      "128-row tile for each query row (FlashAttention-2 before split-KV, as "
                      "the Flash-Decoding post timed it: docs/validation.md); gqa packs a "
                      "group's heads per K/V load (split-KV decode, the schedule later "
                      "FlashAttention releases run for one query row).",
                      "The papers' figures are measured end to end on their kernels and GPUs "
                      "(NSA: Triton on A100, d_k = 192, d_v = 128; here one head dim, 128); "
                      "ours are the timing model's predictions for this GPU: compare the "
                      "direction and the order of magnitude, not the digits."] + reasons)
    text = ("NSA was built for large GQA groups (64 query heads over 4 KV heads in its paper) "
            "and long contexts, GQA/MQA and MLA for decoding with a small KV cache. On the "
            "report's workload" + (f" ({wl.heads} query heads over {wl.kv_heads} KV heads, "
                                   f"N = {wl.seq_q:,})" if wl is not None else "")
            + " they can look slow; here each runs the configuration its paper evaluates, "
            "against flash2 on the same shapes.")
    return Section(HEADING, [text], [table]), records


def _flat(rec: dict) -> dict:
    """A CSV row: the record without the nested results, with their headline numbers."""
    flat = {k: v for k, v in rec.items() if k not in ("result", "baseline_result", "options")}
    for key, prefix in (("result", ""), ("baseline_result", "baseline_")):
        if key in rec:
            flat[f"{prefix}predicted_s"] = rec[key]["time"]["predicted_s"]
            flat[f"{prefix}bound"] = rec[key]["time"]["bound"]
            flat[f"{prefix}hbm_bytes"] = (rec[key]["counts"]["hbm_read_bytes"]
                                          + rec[key]["counts"]["hbm_write_bytes"])
    return flat
