"""Report sections over sweeps: FlashAttention-2/3 throughput against N, and the
approximate algorithms' error against cost. Tables from records, with their figures."""
from __future__ import annotations

from reports import format as fmt
from reports import plots
from reports.document import Figure, Section, Table

THROUGHPUT_HEADING = "FlashAttention-2/3 throughput against N"
APPROX_HEADING = "Approximations: error against cost"


def throughput_section(records, gpu, wl) -> Section | None:
    """Predicted TFLOP/s of flash2/flash3 per dtype against N (``suite.throughput_sweep``)."""
    if not records:
        return None
    seqs = sorted({n for r in records for n in r["seqs"]})
    headers = ["algorithm", "dtype"] + [f"N={n // 1024}K" if n % 1024 == 0 else f"N={n}"
                                        for n in seqs] + ["tensor peak"]
    rows, flat = [], []
    for r in records:
        by_n = dict(zip(r["seqs"], r["flops_per_s"]))
        rows.append([r["algorithm"], r["dtype"]] + [
            f"{by_n[n] / 1e12:.0f}" if n in by_n else "—" for n in seqs]
            + [f"{gpu.tensor_flops_per_s(r['dtype']) / 1e12:.0f}"])
        for n, b, t, f in zip(r["seqs"], r["batch"], r["predicted_s"], r["flops_per_s"]):
            flat.append({"algorithm": r["algorithm"], "dtype": r["dtype"], "seq": n,
                         "batch": b, "predicted_s": t, "flops_per_s": f})
    table = Table("throughput", "Predicted TFLOP/s (all FLOPs counted ÷ predicted time)",
                  headers, rows, flat,
                  notes=["batch × N held at the report workload's "
                         f"{wl.batch * wl.seq_q:,} tokens, as the FlashAttention-2 and -3 "
                         "papers' benchmark figures; fp8 where the GPU has FP8 tensor cores and "
                         "the algorithm a published fp8 kernel (FlashAttention-3; "
                         "FlashAttention-2 has none), on Q, K, V already in e4m3 as FA-3's fp8 "
                         "benchmark feeds them (`--fp8-quantize upstream`; the FP8 section "
                         "prices the quantize kernel)."])
    fig = Figure("throughput", f"FlashAttention-2/3 predicted TFLOP/s against N, "
                 f"{gpu.full_name}", lambda: plots.throughput_figure(records, gpu),
                 after="throughput")
    return Section(THROUGHPUT_HEADING,
                   [f"{wl.heads} heads × d = {wl.head_dim}, "
                    f"{'causal' if wl.causal else 'non-causal'}, forward, count-only."],
                   [table], [fig])


def approx_section(records, gpu, exact=None) -> Section | None:
    """Error against cost of rfa/performer (features) and reformer (hashes)
    (``suite.approx_cost_accuracy``); ``exact``: a SimResult of an exact kernel on the same
    workload, drawn for comparison."""
    if not records:
        return None
    rows = [[r["algorithm"], f"{r['option']} = {r['value']}", fmt.sci(r["error_vs_exact"]),
             fmt.seconds(r["predicted_s"]), fmt.nbytes(r["hbm_bytes"]), fmt.flops(r["flops"])]
            for r in records]
    table = Table("approx_cost", "", ["algorithm", "knob", "error vs exact", "predicted",
                                      "HBM", "FLOPs"], rows, records,
                  notes=[f"error: relative Frobenius error against exact softmax attention, "
                         f"executed on {records[0]['accuracy_workload']}, standard-normal "
                         f"Q, K, V, features/hashes drawn with seed(s) {records[0]['seeds']} "
                         "(attnsim.approx_sweep); RFA against exact attention on unit-normalized "
                         "queries and keys, Reformer against exact shared-QK attention, as in "
                         "their papers; cost: count-only on the report's workload."
                         + (f" For comparison, {exact.algorithm} (exact) predicts "
                            f"{fmt.seconds(exact.time.predicted_s)}." if exact else "")])
    fig = Figure("approx", f"Approximate attention: error against predicted time, "
                 f"{gpu.full_name}",
                 lambda: plots.approx_figure(records, gpu, exact.algorithm if exact else None,
                                             exact.time.predicted_s if exact else None),
                 after="approx_cost")
    return Section(APPROX_HEADING,
                   ["More random features (rfa, performer) or hash rounds (reformer) cost "
                    "time and buy accuracy; an exact kernel is the line to beat."],
                   [table], [fig])
