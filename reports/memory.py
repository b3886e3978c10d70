"""The report's HBM capacity sections: the longest context each algorithm fits on the GPU, and
Ring Attention's context against its device count (tables from ``attnsim.memory``)."""
from __future__ import annotations

from attnsim.memory import longest_context_table, ring_capacity_table
from reports import format as fmt
from reports.document import Section, Table

HEADING = "Longest context on this GPU"


def _tokens(n) -> str:
    return "—" if n is None else f"{n:,}"


def longest_context_section(gpu, wl, names=None, sram_bytes=None) -> tuple[Section, dict]:
    """(Section, JSON data): every algorithm, forward and training, at batch 1 and at the
    report's batch; then the ring table when ring is among the algorithms."""
    records = longest_context_table(gpu, wl, names, sram_bytes)
    rows = [[r["algorithm"], r["passes"], r["batch"],
             fmt.nbytes(r["peak_bytes"]) if r["peak_bytes"] is not None else "—",
             {True: "yes", False: "NO", None: "—"}[r["fits"]],
             _tokens(r["max_seq_that_fits"]), r["runs_out_first"] or "—"] for r in records]
    fits = Table(
        "longest_context", f"Longest context on {gpu.full_name} "
        f"({fmt.nbytes(gpu.hbm_bytes)} of HBM)",
        ["algorithm", "pass", "batch", f"HBM peak at N = {wl.seq_k:,}", "fits",
         "longest N that fits", "runs out first"], rows, records,
        notes=["HBM peak: the largest total of the tensors one attention call keeps live "
               "(inputs, outputs, what the forward saves for the backward, workspaces), from "
               "each algorithm's declared allocations; the rest of the model is not counted",
               "longest N: bisection on that closed form (self-attention: N_q = N_k = N); "
               "runs out first: the largest tensor at the peak just beyond it"])
    tables, data = [fits], {"longest_context": records}
    if names is None or "ring" in names:
        ring_records = ring_capacity_table(gpu, wl, sram_bytes=sram_bytes)
        ring_rows = [[r["devices"], f"{r['seq']:,}", fmt.nbytes(r["per_device_peak_bytes"]),
                      _tokens(r["max_context_tokens"]),
                      _tokens(r["max_context_tokens"] // r["devices"]
                              if r["max_context_tokens"] else None),
                      f"{r['causal_step_imbalance']['contiguous']:.3f}",
                      f"{r['causal_step_imbalance']['striped']:.3f}"]
                     for r in ring_records]
        tables.append(Table(
            "ring_capacity", "Ring Attention: context against devices",
            ["devices P", "N", "HBM peak per device", "max_context_tokens", "tokens per device",
             "causal imbalance, contiguous", "striped"],
            ring_rows, ring_records,
            notes=["per device: its Q block and K/V block, two receive buffers for the "
                   "visiting K/V blocks (one for P = 2), the fp32 running state and its O; "
                   "the context the ring holds grows linearly with P (Liu et al. 2023)",
                   "causal imbalance: the ring advances in lock step, so each step lasts as "
                   "long as its busiest device; Σ over steps of the busiest device's visible "
                   "score pairs ÷ the mean device's total (1 = balanced). Contiguous blocks "
                   "approach 2 as P grows; striped tokens (Brandon et al. 2023; --ring-order "
                   "striped) stay near 1"]))
        data["ring_capacity"] = ring_records
    paragraphs = [f"What one attention call on {wl.describe()} keeps in HBM, and the longest "
                  f"sequence each algorithm fits on this GPU. Standard attention materializes "
                  f"N x N scores (Θ(N²)); FlashAttention keeps Θ(N d) (Dao et al. 2022, "
                  f"Theorem 1)."]
    return Section(HEADING, paragraphs, tables), data
