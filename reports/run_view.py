"""One simulation (``attnsim run``) as a document."""
from __future__ import annotations

from reports import format as fmt
from reports.document import Document, Section, Table
from attnsim.serialize import result_dict
from attnsim.validate import MAX_SEQ
from reports.validation import (changed_fields, row_for, run_sentence, switch_sentence,
                                switches_for_run)


def run_document(r) -> Document:
    c = r.counts
    count_rows = [
        ["HBM read", fmt.nbytes(c["hbm_read_bytes"]), c["hbm_read_bytes"]],
        ["HBM write", fmt.nbytes(c["hbm_write_bytes"]), c["hbm_write_bytes"]],
        ["DRAM estimate after L2", fmt.nbytes(r.time.dram_bytes), r.time.dram_bytes],
        ["HBM write, atomic part", fmt.nbytes(c["atomic_bytes"]), c["atomic_bytes"]],
        ["SRAM read", fmt.nbytes(c["sram_read_bytes"]), c["sram_read_bytes"]],
        ["SRAM write", fmt.nbytes(c["sram_write_bytes"]), c["sram_write_bytes"]],
        ["SRAM peak per CTA", fmt.kib(c["sram_peak_bytes"]), c["sram_peak_bytes"]],
        ["matmul FLOPs", fmt.flops(c["matmul_flops"]), c["matmul_flops"]],
        ["exp ops", fmt.si(c["exp_ops"], "op"), c["exp_ops"]],
        ["other FLOPs", fmt.flops(c["other_flops"]), c["other_flops"]],
        ["of other: max/compare/select (ALU)", fmt.si(c["alu_ops"], "op"), c["alu_ops"]],
        ["fp32 conversions", fmt.si(c["convert_ops"], "op"), c["convert_ops"]],
        ["kernel launches", str(c["kernel_launches"]), c["kernel_launches"]],
        ["CTAs", str(c["ctas"]), c["ctas"]],
        ["interconnect", fmt.nbytes(c["interconnect_bytes"]), c["interconnect_bytes"]],
        ["arithmetic intensity", f"{r.arithmetic_intensity:.3g} FLOP/B", r.arithmetic_intensity],
        [f"IO bound {r.info.io_bound}", fmt.nbytes(r.io_bound_bytes), r.io_bound_bytes],
        ["HBM bytes ÷ IO bound", fmt.ratio(r.io_ratio), r.io_ratio],
    ]
    counts = Table("counts", "", ["quantity", "value", "exact"],
                   [[a, b, f"{v:,}" if isinstance(v, int) else f"{v:.6g}"] for a, b, v in count_rows],
                   [{"quantity": a, "value": v} for a, _, v in count_rows])
    kt_rows, kt_records = [], []
    for kt in r.time.kernels:
        kt_rows.append([kt.name, kt.ctas, kt.ctas_per_sm, fmt.seconds(kt.memory_s),
                        fmt.seconds(kt.matmul_s), fmt.seconds(kt.exp_s), fmt.seconds(kt.other_s),
                        fmt.seconds(kt.alu_s), fmt.seconds(kt.smem_s),
                        fmt.seconds(kt.step_latency_s), fmt.seconds(kt.chain_s), kt.chains,
                        fmt.seconds(kt.fixed_s), f"{kt.quantization:.3f}",
                        fmt.seconds(kt.launch_s), fmt.seconds(kt.total_s), kt.bound,
                        kt.mechanism])
        kt_records.append(dict(kt.__dict__))
    kernels = Table("kernels", "", ["kernel", "CTAs", "CTAs/SM", "memory", "matmul", "exp",
                                    "fma", "alu", "smem", "step latency", "chain",
                                    "chains/SM", "fixed",
                                    "waves ×", "launch", "time", "bound", "set by"],
                    kt_rows, kt_records,
                    notes=[f"predicted total {fmt.seconds(r.time.predicted_s)}, bound by "
                           f"{r.time.bound}", *padding_notes(r)])
    plan = Table("plan", "", ["plan field", "value"], [[k, v] for k, v in r.plan.items()],
                 [r.plan])
    paragraphs = [f"{r.info.title} — {r.info.paper}",
                  f"GPU {r.gpu.full_name}; workload {r.workload.describe()}; "
                  f"SRAM budget M = {r.sram_budget_bytes:,} B; "
                  f"{'executed' if r.compute else 'count-only'} mode"
                  + (f"; options {r.options}" if r.options else "")]
    if r.error_vs_reference is not None:
        paragraphs.append(f"relative error vs float64 reference: {r.error_vs_reference:.2e}")
    if r.error_vs_exact is not None:
        paragraphs.append(f"relative error vs exact softmax attention: {r.error_vs_exact:.2e}")
    validation = row_for(r.gpu.name, r.algorithm, r.workload.dtype, r.options,
                         decode=bool(r.workload.decode))
    if validation:
        paragraphs.append(run_sentence(validation, r.gpu))
        # the ranges were measured for the built-in GPU: a GPU file that keeps its name but
        # changes its hardware says which fields, in JSON as in the sentence
        validation = {**validation, "changed_fields": changed_fields(r.gpu)}
    switches = switches_for_run(r.gpu.name, r.algorithm, r.workload, r.options)
    if switches:
        paragraphs.append(switch_sentence(switches))
    extras = [extra_table(key, value) for key, value in r.extra.items()
              if key != "mask" and value is not None]
    memory = [memory_table(r.memory)] if r.memory else []
    return Document(title=f"attnsim run {r.algorithm}",
                    sections=[Section("Simulation", paragraphs,
                                      [plan, counts, kernels, *memory, *extras])],
                    data={**result_dict(r), "validation": validation,
                          "validation_switches": switches})


# a kernel computing this many times the rows it counts gets a line saying so
NOTED_ROW_PADDING = 1.1


def padding_notes(r) -> list[str]:
    """A line for each kernel that computes notably more rows than it counts (whole row
    tiles over a short sequence, a decode step's one query row): why its pipes take longer
    than its counted FLOPs suggest."""
    return [f"{k.name} computes {k.row_padding:.3g}x the rows it counts (whole row tiles and "
            f"MMAs, the rows past the sequence discarded): its MMAs and softmax are priced "
            f"at the rows computed (--no-row-padding: at the rows counted)"
            for k in r.kernels if k.row_padding >= NOTED_ROW_PADDING]


def memory_table(m: dict) -> Table:
    """HBM footprint: the peak, the tensors live at it, the GPU's capacity, what fits."""
    longest = m["max_seq_that_fits"]
    rows = [["HBM peak", fmt.nbytes(m["peak_bytes"]), f"{m['peak_bytes']:,}"],
            *[[f"  {name}", fmt.nbytes(b), f"{b:,}"] for name, b in m["by_tensor"].items()],
            ["HBM capacity", fmt.nbytes(m["capacity_bytes"]), f"{m['capacity_bytes']:,}"],
            ["fits (this attention call)", "yes" if m["fits"] else "NO", str(m["fits"])],
            [f"longest {m['varies']} that fits", _longest_text(longest), str(longest)]]
    return Table("memory", "", ["memory", "value", "exact"], rows,
                 [{k: v for k, v in m.items() if k != "allocations"}],
                 notes=[f"peak in kernel {m['peak_phase']}; {m['search']}; the footprint of "
                        f"this one attention call (with --model, one layer's: kv_cache has "
                        f"the model's weights and whole cache)"])


def _longest_text(longest: int | None) -> str:
    """The longest length that fits HBM, said to be beyond what a run accepts when it is:
    the closed form can pass --seq's bound, which a user would otherwise try and be refused."""
    if not longest:
        return "none"
    if longest > MAX_SEQ:
        return f"{longest:,} (above the longest accepted --seq, {MAX_SEQ:,})"
    return f"{longest:,}"


def extra_table(key: str, value) -> Table:
    """An algorithm's extra facts (pattern, kv_cache, decode, ring...) as field/value rows,
    nested fields joined with dots."""
    rows = [[field, _cell(v)] for field, v in _flatten(value)]
    return Table(key, key, [f"{key} field", "value"], rows, [dict(_flatten(value))])


def _flatten(value, prefix=""):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _flatten(v, f"{prefix}.{k}" if prefix else str(k))
    else:
        yield prefix or "value", value


def _cell(v) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        text = ", ".join(_cell(x) for x in v[:8])
        return f"[{text}{', ...' if len(v) > 8 else ''}]"
    return str(v)
