"""Pure functions: results -> Tables (formatted rows for people, records for machines)."""
from __future__ import annotations

from reports import format as fmt
from reports.document import Table


def gpu_table(gpu) -> Table:
    items = [
        ("SMs", gpu.sm_count, str(gpu.sm_count)),
        ("clock", gpu.clock_hz, f"{gpu.clock_hz / 1e6:.0f} MHz"),
        ("shared memory per SM / per block (M)", gpu.smem_bytes_per_block,
         f"{fmt.kib(gpu.smem_bytes_per_sm)} / {fmt.kib(gpu.smem_bytes_per_block)}"),
        ("register file per SM", gpu.register_bytes_per_sm, fmt.kib(gpu.register_bytes_per_sm)),
        ("L2", gpu.l2_bytes, fmt.binary_bytes(gpu.l2_bytes)),
        ("HBM capacity", gpu.hbm_bytes, fmt.binary_bytes(gpu.hbm_bytes)),
        ("HBM bandwidth", gpu.hbm_bandwidth_bytes_per_s, fmt.si(gpu.hbm_bandwidth_bytes_per_s, "B/s")),
        ("fp16 / bf16 tensor (dense)", gpu.tensor_fp16_flops_per_s,
         fmt.si(gpu.tensor_fp16_flops_per_s, "FLOP/s")),
        ("tf32 tensor (dense)", gpu.tensor_tf32_flops_per_s, fmt.si(gpu.tensor_tf32_flops_per_s, "FLOP/s")),
        ("fp8 tensor (dense)", gpu.tensor_fp8_flops_per_s,
         fmt.si(gpu.tensor_fp8_flops_per_s, "FLOP/s") if gpu.tensor_fp8_flops_per_s else "none"),
        ("mma.sync path (sm80 kernels)", gpu.mma_sync_fraction_of_peak,
         f"{gpu.mma_sync_fraction_of_peak:.2f} of the wgmma path's rate" if gpu.has_wgmma
         else "the native tensor-core path"),
        ("large GEMMs reach (measured)", gpu.tensor_gemm_fraction,
         f"{gpu.tensor_gemm_fraction:.2f} of peak"
         + (f" (fp8 {gpu.tensor_fp8_gemm_fraction:.2f})" if gpu.tensor_fp8_flops_per_s else "")
         + f" (tf32 {gpu.gemm_fraction('tf32'):.2f})"),
        ("sustained clock under tensor load", gpu.sustained_clock,
         f"{gpu.sustained_clock / 1e6:.0f} MHz"),
        ("achievable HBM bandwidth", gpu.hbm_achievable_fraction,
         f"{gpu.hbm_achievable_fraction:.2f} of the datasheet"),
        ("achievable L2 read bandwidth", gpu.l2_bytes_per_s(),
         f"{fmt.si(gpu.l2_bytes_per_s(), 'B/s')} ({gpu.l2_achievable_fraction:.2f} of "
         f"{fmt.si(gpu.l2_bandwidth_bytes_per_s, 'B/s')})"),
        ("DRAM latency", gpu.dram_latency_s, fmt.seconds(gpu.dram_latency_s)),
        ("fp32 CUDA cores", gpu.fp32_flops_per_s, fmt.si(gpu.fp32_flops_per_s, "FLOP/s")),
        ("FMA / ALU lanes per SM", gpu.alu_lanes_per_sm,
         f"{gpu.fp32_lanes} / {gpu.alu_lanes_per_sm} (add, multiply / max, compare, select, "
         f"conversions)"),
        ("special functions (exp)", gpu.sfu_ops_per_s,
         f"{fmt.si(gpu.sfu_ops_per_s, 'op/s')} ({gpu.sfu_ops_per_clock_per_sm}/clk/SM)"),
        ("NVLink (both directions)", gpu.nvlink_bytes_per_s, fmt.si(gpu.nvlink_bytes_per_s, "B/s")),
        ("kernel launch overhead (modelled)", gpu.launch_overhead_s, fmt.seconds(gpu.launch_overhead_s)),
    ]
    return Table(key="gpu", title="", headers=["parameter", "value"],
                 rows=[[name, text] for name, _, text in items],
                 records=[{"parameter": name, "value": value} for name, value, _ in items],
                 notes=["Sources: NVIDIA whitepapers, datasheets and tuning guides, and "
                        "microbenchmarks for the achievable rates, cited field by field in "
                        "hwmodels/gpus.py."])


def algorithms_table(rows, title="") -> Table:
    headers = ["algorithm", "exact", "HBM read", "HBM write", "FLOPs", "FLOP/B", "SRAM/CTA",
               "predicted", "bound", "HBM ÷ IO bound", "causal", "fwd+bwd", "err vs exact"]
    out, records, reasons = [], [], []
    for row in rows:
        r = row.result
        if r is None:
            out.append([row.name, "", "—", "—", "—", "—", "—", "—", "—", "—", "—", "—",
                        "n/a: " + fmt.clip(row.error or "")])
            records.append({"algorithm": row.name, "error": row.error})
            if row.error and fmt.clip(row.error) != row.error:
                reasons.append(f"{row.name} n/a: {row.error}")
            continue
        c = r.counts
        err = _accuracy(row)
        name = r.algorithm + (" (causal)" if r.workload.causal and not row_workload_causal(rows) else "")
        name += exceeds_hbm(r)
        out.append([
            name, "yes" if r.info.exact else "no", fmt.nbytes(c["hbm_read_bytes"]),
            fmt.nbytes(c["hbm_write_bytes"]), fmt.flops(r.flops), f"{r.arithmetic_intensity:.3g}",
            fmt.kib(c["sram_peak_bytes"]), fmt.seconds(r.time.predicted_s), r.time.bound,
            f"{fmt.ratio(r.io_ratio)} of {r.info.io_bound}",
            fmt.seconds(row.causal.time.predicted_s) if row.causal else "—",
            fmt.seconds(row.training.time.predicted_s) + exceeds_hbm(row.training)
            if row.training else "—",
            fmt.sci(err),
        ])
        records.append({
            "algorithm": r.algorithm, "exact": r.info.exact,
            "hbm_read_bytes": c["hbm_read_bytes"], "hbm_write_bytes": c["hbm_write_bytes"],
            "matmul_flops": c["matmul_flops"], "exp_ops": c["exp_ops"],
            "other_flops": c["other_flops"], "arithmetic_intensity": r.arithmetic_intensity,
            "sram_peak_bytes": c["sram_peak_bytes"], "kernel_launches": c["kernel_launches"],
            "predicted_s": r.time.predicted_s, "bound": r.time.bound,
            "io_bound_formula": r.info.io_bound, "io_bound_bytes": r.io_bound_bytes,
            "io_ratio": r.io_ratio,
            "causal_predicted_s": row.causal.time.predicted_s if row.causal else None,
            "fwd_bwd_predicted_s": row.training.time.predicted_s if row.training else None,
            "error_vs_exact": err,
            "fits_hbm": r.fits_hbm,
        })
    notes = ([f"{EXCEEDS}: the run's HBM footprint exceeds the GPU's memory (see 'Longest "
              f"context on this GPU'); its counts and times are those of a GPU that could "
              f"hold it"] if any(EXCEEDS in cell for line in out for cell in map(str, line))
             else []) + reasons
    return Table(key="algorithms", title=title, headers=headers, rows=out, records=records,
                 notes=notes)


EXCEEDS = "(> HBM)"


def exceeds_hbm(result) -> str:
    """A mark for a result whose HBM footprint does not fit the GPU."""
    return f" {EXCEEDS}" if result.fits_hbm is False else ""


def row_workload_causal(rows) -> bool:
    """Whether the report's workload itself is causal (then no row needs the remark)."""
    return all(r.result is None or r.result.workload.causal for r in rows)


def _accuracy(row):
    a = row.accuracy
    if a is None:
        return None
    return a.error_vs_reference if a.info.exact else a.error_vs_exact


def timing_table(rows) -> Table:
    headers = ["algorithm", "kernels", "memory", "matmul", "exp (SFU)", "other (FMA)", "ALU",
               "smem", "issue", "chain", "fixed", "launch", "waves ×", "predicted", "bound",
               "set by"]
    out, records = [], []
    for row in rows:
        r = row.result
        if r is None:
            continue
        t = r.time
        out.append([r.algorithm, r.counts["kernel_launches"], fmt.seconds(t.memory_s),
                    fmt.seconds(t.matmul_s), fmt.seconds(t.exp_s), fmt.seconds(t.other_s),
                    fmt.seconds(t.alu_s), fmt.seconds(t.smem_s), fmt.seconds(t.issue_s), fmt.seconds(t.chain_s),
                    fmt.seconds(t.fixed_s), fmt.seconds(t.launch_s), f"{t.quantization:.3f}",
                    fmt.seconds(t.predicted_s), t.bound, _main_mechanism(t)])
        records.append({"algorithm": r.algorithm, "kernel_launches": r.counts["kernel_launches"],
                        "memory_s": t.memory_s, "matmul_s": t.matmul_s, "exp_s": t.exp_s,
                        "other_s": t.other_s, "alu_s": t.alu_s, "launch_s": t.launch_s,
                        "quantization": t.quantization, "predicted_s": t.predicted_s,
                        "bound": t.bound, "smem_s": t.smem_s, "issue_s": t.issue_s,
                        "chain_s": t.chain_s, "fixed_s": t.fixed_s,
                        "latency_s": t.latency_s, "atomic_s": t.atomic_s,
                        "exchange_s": t.exchange_s, "step_latency_s": t.step_latency_s,
                        "load_wait_s": t.load_wait_s,
                        "mechanism": _main_mechanism(t),
                        "time_by_mechanism_s": t.time_by_mechanism_s})
    return Table(key="timing", title="", headers=headers, rows=out, records=records,
                 notes=["Each column sums one term over the kernels, unoverlapped: the pipes "
                        "(memory, matmul, exp, other = adds and multiplies on the FMA pipe, ALU = "
                        "max/compare/select and fp32 conversions, smem = shared memory, issue), "
                        "'chain' the "
                        "GEMM-softmax dependency chain with the chains in flight per SM "
                        "(its tile steps' instruction latencies included), "
                        "'fixed' the exposed per-CTA prologue and epilogue, 'launch' what the "
                        "host pipeline "
                        "does not hide. 'predicted' combines them per kernel; 'set by' is the "
                        "mechanism that sets most of the time (hwmodels/timing.py)."])


def _main_mechanism(t) -> str:
    by = t.time_by_mechanism_s
    return max(by, key=by.get) if by else t.bound


def growth_table(series) -> Table:
    seqs = sorted({n for s in series for n in s.seqs})
    headers = ["algorithm"] + [f"N={n // 1024}K" if n % 1024 == 0 else f"N={n}" for n in seqs] + [
        "fitted exponent", "bound", "bound exponent", "HBM ÷ bound (first → last)"]
    out, records = [], []
    for s in series:
        by_n = dict(zip(s.seqs, s.hbm_bytes))
        fit, bexp = s.fitted_exponent(), s.bound_exponent()
        ratios = [b / ib for b, ib in zip(s.hbm_bytes, s.io_bound_bytes)]
        out.append([s.name] + [fmt.nbytes(by_n[n]) if n in by_n else "—" for n in seqs] + [
            fmt.ratio(fit), s.bound, fmt.ratio(bexp),
            f"{ratios[0]:.3g} → {ratios[-1]:.3g}" if ratios else "—"])
        for n, b, ib in zip(s.seqs, s.hbm_bytes, s.io_bound_bytes):
            records.append({"algorithm": s.name, "seq": n, "hbm_bytes": b, "io_bound_bytes": ib,
                            "io_bound_formula": s.bound})
    return Table(key="growth", title="", headers=headers, rows=out, records=records,
                 notes=["fitted exponent: slope of log(HBM bytes) vs log(N) over the upper half "
                        "of the sweep; bound exponent: the same for the bound's closed form. "
                        "A flat 'HBM ÷ bound' means the counts follow the theorem's leading term."])
