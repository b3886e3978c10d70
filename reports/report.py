"""The main report (``attnsim report --hw h100``): assembled from results, no simulation here."""
from __future__ import annotations

from attnsim.serialize import gpu_dict, jsonable, result_dict
from reports import plots, tables
from reports.validation import switch_records, validation_section
from reports.document import Document, Figure, Section


def build_report(gpu, wl, rows, series, *, sram_bytes=None, accuracy_workload=None,
                 extra_sections=(), extra_data=None) -> Document:
    """Document with the GPU, the per-algorithm table, the timing breakdown and the growth
    of HBM traffic with N against each algorithm's bound."""
    budget = sram_bytes or gpu.smem_bytes_per_block
    trust, trust_rows = validation_section(gpu)
    sections = [
        Section(f"GPU: {gpu.full_name}", tables=[tables.gpu_table(gpu)]),
        algorithms_section(gpu, wl, rows, budget, accuracy_workload),
        Section("Where the time goes", tables=[tables.timing_table(rows)],
                figures=[Figure("time_terms", "The timing model's terms per algorithm, over "
                                "its predicted time",
                                lambda: plots.time_terms_figure(rows, gpu), after="timing")]),
        trust,
        growth_section(gpu, series),
        *extra_sections,
    ]

    def data() -> dict:                      # built only for the JSON rendering
        return jsonable({**report_data(gpu, wl, rows, series, budget),
                         "validation": trust_rows,
                         "validation_switches": switch_records([gpu.name]),
                         **(extra_data or {})})
    return Document(title=f"attnsim report — {gpu.full_name}", sections=sections, data=data)


def algorithms_section(gpu, wl, rows, budget: int, accuracy_workload) -> Section:
    """Every algorithm on the report's workload: counts, predicted times, the roofline."""
    accuracy = (f" 'err vs exact': relative Frobenius error of the executed output against "
                f"float64 exact attention on {accuracy_workload.describe()}, standard-normal "
                f"Q, K, V — diffuse attention, on which feature and hashing approximations do "
                f"poorly (their error falls with more features or hashes: see "
                f"attnsim.approx_sweep). RFA is compared with exact attention on "
                f"unit-normalized queries and keys, Reformer with exact shared-QK attention, as "
                f"in the papers; MLA, whose output lives in its latent space, is compared with "
                f"float64 attention over the keys and values its latent up-projects to."
                if accuracy_workload else "")
    return Section("Algorithms", paragraphs=[
        f"Workload: {wl.describe()}; SRAM budget M = {budget:,} bytes per CTA. "
        "Counts are simulated (count-only mode) through the HBM/SRAM hierarchy; "
        "'predicted' is the timing model's estimate, 'bound' the resource that limits it. "
        "'causal' and 'fwd+bwd' are predicted times of the same workload with a causal "
        "mask and for training (forward + backward), where the algorithm has them."
        + accuracy],
        tables=[tables.algorithms_table(rows)],
        figures=[Figure("roofline", f"Roofline of {gpu.full_name} with every algorithm on "
                        "this workload (forward and forward + backward); a point above "
                        "the HBM roof has re-reads the timing model serves from L2",
                        lambda: plots.roofline_figure(gpu, rows), after="algorithms")])


def growth_section(gpu, series) -> Section:
    """HBM traffic, predicted time and resident HBM against N, with each bound's slope."""
    first = series[0].seqs[0] if series and series[0].seqs else "?"
    last = max((s.seqs[-1] for s in series if s.seqs), default="?")
    resident = {s.name: [(n, b) for n, b in zip(s.seqs, s.resident_bytes) if b]
                for s in series}
    return Section(
        "Growth of HBM traffic with sequence length",
        paragraphs=[f"Same workload with N from {first} to {last} (count-only)."],
        tables=[tables.growth_table(series)],
        figures=[Figure("growth", "HBM traffic against N with each IO bound's slope",
                        lambda: plots.growth_figure(series, gpu), after="growth"),
                 Figure("time_vs_n", "Predicted time against N",
                        lambda: plots.time_vs_n_figure(series, gpu), after="growth"),
                 Figure("resident_hbm", f"Resident HBM against N (the footprint's peak) "
                        f"with the capacity of {gpu.full_name}",
                        lambda: plots.resident_hbm_figure(resident, gpu.hbm_bytes,
                                                          gpu.full_name),
                        after="growth")])


def report_data(gpu, wl, rows, series, budget: int) -> dict:
    """The JSON report's GPU, workload, algorithms (each with its causal, training and
    accuracy runs) and growth series."""
    return {
        "gpu": gpu_dict(gpu),
        "workload": wl.to_dict(),
        "sram_budget_bytes": budget,
        "algorithms": [
            {**(result_dict(r.result) if r.result else {"algorithm": r.name, "error": r.error}),
             "causal": result_dict(r.causal) if r.causal else None,
             "training": result_dict(r.training) if r.training else None,
             "accuracy": ({"workload": r.accuracy.workload.to_dict(),
                           "error_vs_reference": r.accuracy.error_vs_reference,
                           "error_vs_exact": r.accuracy.error_vs_exact}
                          if r.accuracy else None)}
            for r in rows],
        "growth": [{"algorithm": s.name, "bound": s.bound, "seqs": s.seqs,
                    "hbm_bytes": s.hbm_bytes, "io_bound_bytes": s.io_bound_bytes,
                    "predicted_s": s.predicted_s, "flops": s.flops,
                    "fitted_exponent": s.fitted_exponent(),
                    "bound_exponent": s.bound_exponent()}
                   for s in series]}
