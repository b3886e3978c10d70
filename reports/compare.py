"""``attnsim report --hw a100,h100,h200``: the GPUs side by side in one document —
their parameters, and every algorithm's predicted time and bound on each."""
from __future__ import annotations

from attnsim.serialize import gpu_dict, jsonable, result_dict
from reports import format as fmt
from reports import tables
from reports.document import Document, Figure, Section, Table
from reports.validation import comparison_validation_section, switch_records


def gpus_table(gpus) -> Table:
    """The single-GPU parameter table, one value column per GPU."""
    per_gpu = [tables.gpu_table(g) for g in gpus]
    rows = [[first[0]] + [t.rows[i][1] for t in per_gpu]
            for i, first in enumerate(per_gpu[0].rows)]
    records = [{"parameter": rec["parameter"],
                **{g.name: t.records[i]["value"] for g, t in zip(gpus, per_gpu)}}
               for i, rec in enumerate(per_gpu[0].records)]
    return Table("gpus", "", ["parameter"] + [g.full_name for g in gpus], rows, records,
                 notes=per_gpu[0].notes)


def _causal_report(rows_by_gpu) -> bool:
    return tables.row_workload_causal(rows_by_gpu[0])


def comparison_table(gpus, rows_by_gpu) -> Table:
    """One row per algorithm: predicted time and bound on each GPU, and fwd+bwd."""
    names = [r.name for r in rows_by_gpu[0]]
    headers = ["algorithm"]
    for g in gpus:
        headers += [f"{g.name}", "bound"]
    headers += [f"fwd+bwd {g.name}" for g in gpus]
    out, records = [], []
    for i, name in enumerate(names):
        first = next((rows[i].result for rows in rows_by_gpu if rows[i].result), None)
        causal_only = (first is not None and first.workload.causal
                       and not _causal_report(rows_by_gpu))     # NSA on a non-causal report
        shown = name + (" (causal)" if causal_only else "")
        cells, rec = [shown], {"algorithm": name}
        for g, rows in zip(gpus, rows_by_gpu):
            r = rows[i].result
            cells += [fmt.seconds(r.time.predicted_s), r.time.bound] if r else ["n/a", "—"]
            rec[g.name] = ({"predicted_s": r.time.predicted_s, "bound": r.time.bound}
                           if r else {"error": rows[i].error})
        for g, rows in zip(gpus, rows_by_gpu):
            t = rows[i].training
            cells.append(fmt.seconds(t.time.predicted_s) if t else "—")
            if t:
                rec[g.name]["fwd_bwd_predicted_s"] = t.time.predicted_s
        out.append(cells)
        records.append(rec)
    return Table("compare", "", headers, out, records,
                 notes=["n/a: the algorithm does not run on that GPU (flash3 needs Hopper's "
                        "wgmma); bound: the resource whose kernels take the most time."])


def compare_figure(gpus, rows_by_gpu):
    """A dot plot: each algorithm's predicted time on each GPU, one marker per GPU on a log
    time axis (a missing marker: the algorithm does not run on that GPU)."""
    from reports.plots import _plt, _styles, _time_axis
    plt = _plt()
    names = [r.name for r in rows_by_gpu[0]]
    styles = _styles([g.full_name for g in gpus])
    fig, ax = plt.subplots(figsize=(9, 0.3 * len(names) + 1.4))
    ys = list(range(len(names)))[::-1]
    for j, (g, rows) in enumerate(zip(gpus, rows_by_gpu)):
        colour, marker = styles[g.full_name]
        size = max(4, 10 - 2 * j)   # later GPUs smaller: coinciding markers stay visible
        pts = [(row.result.time.predicted_s, y) for row, y in zip(rows, ys) if row.result]
        ax.semilogx([p[0] for p in pts], [p[1] for p in pts], marker, color=colour, ms=size,
                    linestyle="none", label=g.full_name)
    ax.set_yticks(ys)
    ax.set_yticklabels(names, fontsize=8)
    _time_axis(ax, "x")
    ax.set_xlabel("predicted time")
    ax.set_title("Predicted time on each GPU (the report's workload)", fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def designed_comparison_section(gpus, points_by_gpu) -> Section:
    """Each design point's predicted time and speedup over its baseline on every GPU."""
    headers = ["configuration", "baseline"]
    for g in gpus:
        headers += [g.name, f"speedup {g.name}"]
    rows, records = [], []
    for i, p in enumerate(points_by_gpu[0]):
        cells, rec = [p.label, p.baseline_label], {"label": p.label, "baseline": p.baseline}
        for g, points in zip(gpus, points_by_gpu):
            q = points[i]
            if q.result is None or q.baseline_result is None:
                cells += ["n/a", "—"]
                rec[g.name] = {"error": q.error}
                continue
            speedup = q.baseline_result.time.predicted_s / q.result.time.predicted_s
            cells += [fmt.seconds(q.result.time.predicted_s), f"{speedup:.2f}×"]
            rec[g.name] = {"predicted_s": q.result.time.predicted_s,
                           "baseline_predicted_s": q.baseline_result.time.predicted_s,
                           "speedup_over_baseline": speedup}
        rows.append(cells)
        records.append(rec)
    claims = {}
    for p in points_by_gpu[0]:
        claims.setdefault(p.algorithm, f"{p.algorithm}: {p.claim} ({p.source})")
    table = Table("designed_compare", "", headers, rows, records,
                  notes=["The papers' claims: " + "; ".join(claims.values()) + "."])
    return Section("Where each algorithm was designed to win, on each GPU",
                   ["NSA, GQA/MQA and MLA on the configurations their papers evaluate, each "
                    "against flash2 on the same shapes (count-only)."], [table])


def build_comparison(gpus, wl, rows_by_gpu, extra_sections=(), extra_data=None) -> Document:
    trust, trust_by_gpu = comparison_validation_section(gpus)
    sections = [
        Section("GPUs", tables=[gpus_table(gpus)]),
        Section("Algorithms on each GPU", paragraphs=[
            f"Workload: {wl.describe()}; each GPU's own SRAM budget (shared memory per block), "
            "count-only. Tiles are planned per GPU, so the counts can differ where the SRAM "
            "budgets do."],
            tables=[comparison_table(gpus, rows_by_gpu)],
            figures=[Figure("compare", "Predicted time of every algorithm on each GPU",
                            lambda: compare_figure(gpus, rows_by_gpu), after="compare")]),
        trust,
        *extra_sections,
    ]
    data = {"gpus": [gpu_dict(g) for g in gpus], "workload": wl.to_dict(),
            "algorithms": {g.name: [
                {**(result_dict(r.result) if r.result else {"algorithm": r.name,
                                                               "error": r.error}),
                 "training": result_dict(r.training) if r.training else None}
                for r in rows] for g, rows in zip(gpus, rows_by_gpu)},
            "validation": trust_by_gpu,
            "validation_switches": {g.name: switch_records([g.name]) for g in gpus},
            **(extra_data or {})}
    return Document(title="attnsim report — " + " vs ".join(g.full_name for g in gpus),
                    sections=sections, data=jsonable(data))
