"""The report's FP8 section: FlashAttention-3's FP8 variants, their error against float64 on
the paper's outlier inputs (executed) and their predicted time on the report's workload
(count-only) — Shah et al. 2024 (arXiv 2407.08608), §3.3 and §4.3."""
from __future__ import annotations

from attnsim.fp8_error import VARIANTS, error_workload_like, variant_errors
from attnsim.simulate import simulate
from reports import format as fmt
from reports.document import Section, Table, left_out_section

HEADING = "FP8 (FlashAttention-3): error by quantization variant"

# FA-3 paper, Table 3: baseline FP8, "no incoherent processing", "no block quant", FA-3 FP8
PAPER_RMSE = {"per-tensor": 2.4e-2, "block": 2.4e-2, "per-tensor + Hadamard": 9.3e-3,
              "block + Hadamard": 9.1e-3}


def fp8_section(gpu, wl) -> tuple[Section, dict]:
    """(Section, JSON data): one row per variant. The section is about FA-3's fp8 forward
    (its release has no fp8 backward and flash3 no dropout), so it times the report
    workload's forward without dropout, whatever its --pass and --dropout; on a GPU without
    fp8 tensor cores it is left out, saying so."""
    if not gpu.tensor_fp8_flops_per_s:
        reason = (f"{gpu.full_name} has no fp8 tensor cores (tensor_fp8_flops_per_s = 0), "
                  f"so FlashAttention-3's fp8 kernels do not run on it")
        return left_out_section(HEADING, reason), {"left_out": reason}
    errors = variant_errors(error_workload_like(wl), gpu)
    timed = wl.replace(dtype="fp8", passes="fwd", dropout=0.0)
    rows, records = [], []
    for name, options in VARIANTS:
        err = errors["variants"][name]
        r = simulate("flash3", timed, gpu, compute=False, options=options)
        quantize = next(k for k in r.time.kernels if k.name == "flash3_fp8_quantize")
        records.append({"name": name, **err, "paper_rmse": PAPER_RMSE.get(name),
                        "predicted_s": r.time.predicted_s, "quantize_kernel_s": quantize.total_s,
                        "other_flops": r.counts["other_flops"]})
        rows.append([name, options["fp8_scales"], options["rotation"], f"{err['rmse']:.2e}",
                     f"{err['relative_error']:.3f}",
                     f"{PAPER_RMSE[name]:.1e}" if name in PAPER_RMSE else "—",
                     fmt.seconds(r.time.predicted_s), fmt.seconds(quantize.total_s)])
    rmse = {name: e["rmse"] for name, e in errors["variants"].items()}
    base, block, best = rmse["per-tensor"], rmse["block"], rmse["block + Hadamard"]
    ew = error_workload_like(wl)
    table = Table(
        "fp8", f"FlashAttention-3 FP8 (e4m3) on {gpu.full_name}",
        ["variant", "scales", "rotation", "RMSE", "rel. error", "paper RMSE", "predicted",
         "of which quantize"],
        rows, records,
        notes=[f"errors: executed on {ew.describe()}, inputs {errors['inputs']}, against "
               f"float64 exact attention; P cast to e4m3 at 2^8·exp(S − m), fp32 accumulation",
               f"predicted: count-only on {timed.describe()}"
               + ("" if (wl.passes, wl.dropout) == ("fwd", 0.0) else
                  " (the report workload's forward without dropout: FA-3's fp8 release has "
                  "no backward, flash3 no dropout)")
               + "; the quantize kernel (bf16 in, "
               "e4m3 + scales out, the rotation) standing alone, where the paper fuses it into "
               "the rotary embedding"])
    paragraphs = [f"Incoherent processing (Q and K times a random ±1-diagonal Hadamard "
                  f"matrix) lowers the RMSE {block / best:.1f}x against block scales alone and "
                  f"{base / best:.1f}x against the per-tensor baseline (the paper: 2.6x against "
                  f"its baseline); once rotated, block scales change little (the paper's "
                  f"ablation: 9.3e-3 without them, 9.1e-3 with)."]
    data = {"error_workload": errors["workload"], "inputs": errors["inputs"],
            "variants": records}
    return Section(HEADING, paragraphs, [table]), data
