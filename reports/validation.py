"""How far the report's predicted times are from measured ones: the ranges of
docs/validation.md (predicted over published throughput) for the report's GPU.

``reports/validation_summary.json`` is written by ``benchmarks/validate_published.py
--summary`` with the page it summarizes; tests/test_published.py checks that both are the
script's output, so the report never quotes a stale range.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
from importlib import resources

from hwmodels.gpus import GPUS
from reports.document import Section, Table

SUMMARY_FILE = "validation_summary.json"
FEW_POINTS = 10      # fewer published points than this on a GPU: the report points further
EAGER_LABEL = "standard (PyTorch eager program)"    # the program the standard figures time
MLA_LABEL = "mla (absorbed decode, latent kernels)"  # what the FlashMLA figures time
# The summary's name of an algorithm whose published figures time one program of it
GQA_LABEL = "gqa (split-KV decode)"                 # what the Flash-Decoding figures time
SUMMARY_LABELS = {"standard": EAGER_LABEL, "mla": MLA_LABEL, "gqa": GQA_LABEL}


@functools.lru_cache(maxsize=1)
def load_summary() -> dict:
    """The summary as written (read once; callers do not modify it)."""
    return json.loads(resources.files("reports").joinpath(SUMMARY_FILE)
                      .read_text(encoding="utf-8"))


def input_kind(dtype: str) -> str | None:
    """The summary's input types: fp8, or fp16/bf16 (same tensor rate); none for fp32."""
    return "fp8" if dtype == "fp8" else "fp16/bf16" if dtype in ("fp16", "bf16") else None


def changed_fields(gpu) -> list[str]:
    """The hardware fields in which ``gpu`` differs from the built-in GPU of its name (a GPU
    file with ``base = "h100"`` keeps the name): the ranges were measured for the built-in
    one. Its labels (sources, and the full name a modified file is given) are not
    hardware."""
    builtin = GPUS.get(gpu.name)
    if builtin is None:
        return []
    mine, theirs = dataclasses.asdict(gpu), dataclasses.asdict(builtin)
    return [k for k in mine if k not in ("sources", "full_name") and mine[k] != theirs[k]]


def row_for(gpu_name: str, algorithm: str, dtype: str, options: dict | None = None,
            summary: dict | None = None, decode: bool = True) -> dict | None:
    """The summary's row for one run: its GPU, algorithm (standard counts only as the
    PyTorch eager program, which the published standard figures time; mla only on its
    absorbed path, FlashMLA's; gqa only decoding, as the Flash-Decoding figures) and input
    type."""
    options = options or {}
    if algorithm == "standard" and options.get("program") != "pytorch-eager":
        return None
    if algorithm == "mla" and options.get("path", "absorbed") != "absorbed":
        return None
    if algorithm == "gqa" and not decode:
        return None
    algorithm = SUMMARY_LABELS.get(algorithm, algorithm)
    summary = summary or load_summary()
    return next((r for r in summary["rows"] if (r["gpu"], r["algorithm"], r["dtype"])
                 == (gpu_name, algorithm, input_kind(dtype))), None)


def ratio_range(row: dict) -> str:
    """A row's predicted/published range, one figure when its points agree to two decimals."""
    low, high = f"{row['min']:.2f}", f"{row['max']:.2f}"
    return low if low == high else f"{low}–{high}"


def run_sentence(row: dict, gpu, summary: dict | None = None) -> str:
    """One line for ``attnsim run``: how far this algorithm's predictions have been."""
    summary = summary or load_summary()
    changed = changed_fields(gpu)
    return (f"measured figures for {row['algorithm']} ({row['dtype']}) on {row['gpu']}: "
            f"predicted/published {ratio_range(row)}, median "
            f"{row['median']:.2f} over {row['points']} point{'s' if row['points'] > 1 else ''} "
            "(above 1 the prediction is too "
            f"fast; {summary['page']})"
            + (f"; for the built-in model, which this GPU file changes ({', '.join(changed)})"
               if changed else ""))


def _intro(summary: dict) -> str:
    return (f"The timing model against the figures measured for the same workloads "
            f"({summary['page']}, written by {summary['script']}): {summary['ratio']}.")


def _board_note(summary: dict, gpu) -> str:
    """How far two boards of this GPU model differ on one benchmark, where the page has two
    logs of it: the part of any comparison with one's own GPU that no model constant sets."""
    spread = summary.get("board_spread")
    if not spread or spread["gpu"] != gpu.name:
        return ""
    return (f" Boards differ as well: the same benchmark ({spread['benchmark']}) took "
            f"{spread['min']:.2f}–{spread['max']:.2f}x as long on one {gpu.name} board as on "
            f"another, kernel by kernel ({spread['kernels']} kernels; the logs "
            f"{' and '.join(spread['logs'])} in {summary['page']}), where the model gives "
            "both boards one time.")


def _few_points_note(rows: list[dict], validated: list[str], gpu) -> str:
    """Where a GPU has only a handful of published points: they say little beyond the board
    that measured them, so point to the GPUs with more, whose mechanisms it shares."""
    points = sum(r["points"] for r in rows)
    if points >= FEW_POINTS:
        return ""
    others = [name for name in validated if name != gpu.name]
    return (f" Only {points} published point{'s' if points > 1 else ''} "
            f"{'were' if points > 1 else 'was'} measured on this GPU; its "
            "predictions share their mechanisms with those of " + ", ".join(others)
            + ", and carry their errors (`attnsim report --hw h100` quotes the H100 SXM5's).")


def _changed_note(gpu) -> str:
    changed = changed_fields(gpu)
    return (f" This GPU file changes the built-in {gpu.name} model (" + ", ".join(changed)
            + "): the ranges are the built-in model's, and its own predictions move with "
            "what it changes." if changed else "")


def _table(rows: list[dict], summary: dict, with_gpu: bool) -> Table:
    lo, hi = summary["band"]
    return Table(
        key="validation", title="",
        headers=(["GPU"] if with_gpu else []) + [
            "algorithm", "inputs", "points", "predicted / published", "median",
            f"within {lo}–{hi}"],
        rows=[([r["gpu"]] if with_gpu else []) + [
            r["algorithm"], r["dtype"], r["points"], ratio_range(r),
            f"{r['median']:.2f}", f"{r['inside_band']} of {r['points']}"] for r in rows],
        records=rows)


def switch_records(gpu_names, summary: dict | None = None) -> list[dict]:
    """The summary's predicted speedups (one kernel or input type over another, bar by bar)
    measured on the GPUs named."""
    summary = summary or load_summary()
    return [s for s in summary.get("switches", []) if s["gpu"] in gpu_names]


def nearest_bar(record: dict, head_dim: int, causal: bool, seq: int) -> dict | None:
    """The switch's bar at this head dimension and mask whose N is nearest ``seq`` (on a log
    scale), or None where the charts have none."""
    bars = [b for b in record.get("per_bar", []) if b["d"] == head_dim and b["causal"] == causal]
    if not bars or seq <= 0:
        return None
    return min(bars, key=lambda b: (abs(math.log2(b["n"] / seq)), b["n"]))


def switches_for_run(gpu_name: str, algorithm: str, workload, options: dict | None = None,
                     summary: dict | None = None) -> list[dict]:
    """The predicted speedups with this run's algorithm on one side, measured on its GPU with
    its input type on one side (standard only as the PyTorch eager program the charts time),
    each with the bar nearest the run's workload (``nearest_bar``) instead of all of them."""
    options = options or {}
    if algorithm == "standard" and options.get("program") != "pytorch-eager":
        return []
    kind = input_kind(workload.dtype)
    if kind is None:
        return []
    return [{**{k: v for k, v in s.items() if k != "per_bar"},
             "nearest_bar": nearest_bar(s, workload.head_dim, workload.causal, workload.seq_q)}
            for s in switch_records([gpu_name], summary)
            if algorithm in s["algorithms"] and any(input_kind(d) == kind for d in s["dtypes"])]


def switch_sentence(records: list[dict], summary: dict | None = None) -> str:
    """One line for ``attnsim run``: how far the predicted speedups it takes part in have
    been from the published ones, and at the chart bar nearest its workload."""
    summary = summary or load_summary()

    def nearest(s):
        b = s["nearest_bar"]
        return (f"; nearest this workload, {b['bar']}: {b['published']:.2f}x published, "
                f"{b['predicted']:.2f}x predicted" if b else "")
    return ("predicted speedups against published ones, bar by bar ("
            + f"{records[0]['gpu']}; above 1 the model overstates the gain; "
            + f"{summary['page']}): "
            + "; ".join(f"{s['switch']} ({s['passes']}): {ratio_range(s)} over "
                        f"{s['bars']} bars{nearest(s)}" for s in records))


def _switch_table(records: list[dict], summary: dict, with_gpu: bool) -> Table:
    lo, hi = summary["band"]
    return Table(
        key="validation_switches",
        title="Predicted speedups of one kernel or input type over another",
        headers=(["GPU"] if with_gpu else []) + [
            "switch", "pass", "bars", "published speedup", "predicted speedup",
            "predicted / published", "median", f"within {lo}–{hi}",
            "furthest bar: published / predicted"],
        rows=[([s["gpu"]] if with_gpu else []) + [
            s["switch"], s["passes"], s["bars"], "{:.2f}–{:.2f}".format(*s["published"]),
            "{:.2f}–{:.2f}".format(*s["predicted"]), ratio_range(s),
            f"{s['median']:.2f}", f"{s['inside_band']} of {s['bars']}",
            f"{s['furthest']['bar']}: {s['furthest']['published']:.2f} / "
            f"{s['furthest']['predicted']:.2f}"] for s in records],
        records=records,
        notes=[f"Bar by bar, wherever a published chart, or one benchmark run, shows both "
               f"sides ({summary['page']}): "
               "a speedup is the ratio of two predictions, in which an error both share "
               "cancels and an error of one alone does not; above 1 the model overstates "
               "what the switch gains."])


def validation_section(gpu, summary: dict | None = None) -> tuple[Section, list[dict]]:
    """The section and its records (the rows for ``gpu``; none for a GPU without published
    figures, such as a custom GPU file)."""
    summary = summary or load_summary()
    rows = [r for r in summary["rows"] if r["gpu"] == gpu.name]
    validated = sorted({r["gpu"] for r in summary["rows"]})
    intro = (_intro(summary) + " Algorithms without a row have no published figure on this "
             "GPU; they are priced by the same mechanisms and constants, and the rows of the "
             "loops they share (FlashAttention-2's, under local, sparse, GQA and the rest) "
             "are the nearest evidence. The report's 'standard' is Algorithm 0; the published "
             "standard-attention figures time PyTorch eager code, simulated as "
             "`standard --program pytorch-eager`; the MLA figures time FlashMLA's decode "
             "kernel, `mla --path absorbed` without its absorption GEMMs, which the report's "
             "'mla' includes.")
    if rows:
        intro += _few_points_note(rows, validated, gpu) + _board_note(summary, gpu) \
            + _changed_note(gpu)
    else:
        intro = (f"No published figure for {gpu.full_name} ({gpu.name}) is compared on "
                 f"{summary['page']}, which covers " + ", ".join(validated) + ": its "
                 "predictions share their mechanisms with those GPUs' and carry their "
                 "errors (`attnsim report --hw h100` quotes the H100 SXM5's), and any "
                 "constant of its own that no microbenchmark measured on it (see the GPU "
                 "table's sources) adds to them. A GPU file measured on one of those boards "
                 "re-predicts that board's published points: `python "
                 "benchmarks/validate_published.py --measured FILE --output PAGE`.")
    switches = switch_records([gpu.name], summary)
    tables = ([_table(rows, summary, with_gpu=False)] if rows else []) \
        + ([_switch_table(switches, summary, with_gpu=False)] if switches else [])
    return Section("How far to trust the predicted times", paragraphs=[intro],
                   tables=tables), rows


def comparison_validation_section(gpus, summary: dict | None = None) -> tuple[Section, dict]:
    """The same ranges for GPUs side by side: one table with a GPU column, and the records
    by GPU name (an empty list for a GPU without published figures)."""
    summary = summary or load_summary()
    by_gpu = {g.name: [r for r in summary["rows"] if r["gpu"] == g.name] for g in gpus}
    missing = [g.full_name for g in gpus if not by_gpu[g.name]]
    text = (_intro(summary)
            + (" No published figure is compared for " + ", ".join(missing) + "."
               if missing else "")
            + "".join(_board_note(summary, g) + _changed_note(g)
                      for g in gpus if by_gpu[g.name]))
    rows = [r for g in gpus for r in by_gpu[g.name]]
    switches = switch_records([g.name for g in gpus], summary)
    tables = ([_table(rows, summary, with_gpu=True)] if rows else []) \
        + ([_switch_table(switches, summary, with_gpu=True)] if switches else [])
    return Section("How far to trust the predicted times", paragraphs=[text],
                   tables=tables), by_gpu
