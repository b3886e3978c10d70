"""The report's decode sections: KV cache and predicted per-token latency per model preset and
context length, on the report's GPU (count-only simulations of one decode step, batch 1); and
the decode paths — dense GQA, MLA, NSA with its compressed cache, the linear family's
recurrent state — by bytes loaded per step against the context length, with the NSA paper's
decoding table reproduced."""
from __future__ import annotations

import functools
import math

from algorithms.base import PlanError
from attnsim.models import PRESETS
from attnsim.simulate import NOT_SIMULATED, simulate
from attnsim.workload import Workload
from reports import format as fmt
from reports.document import Section, Table

CONTEXTS = (4096, 32768, 131072)
BATCH = 1
DECODE_HEADING = "Decode: KV cache and per-token latency"


def decode_step(model, gpu, context: int, batch: int = BATCH, dtype: str = "fp16"):
    """One simulated decode step of ``model`` (gqa, or mla with the absorbed path)."""
    wl = Workload(batch=batch, heads=model.heads, kv_heads=model.kv_heads, seq_q=1,
                  seq_k=context, head_dim=model.head_dim, dtype=dtype, decode=True, model=model)
    return simulate("mla" if model.is_mla else "gqa", wl, gpu, compute=False)


def decode_section(gpu, wl) -> tuple[Section, list[dict]]:
    """(Section, JSON records): the report workload's --model, or every preset."""
    models = [wl.model] if getattr(wl, "model", None) is not None else list(PRESETS.values())
    dtype = wl.dtype if wl.dtype in ("fp16", "bf16", "fp8") else "fp16"
    rows, records, left_out = [], [], {}
    for model in models:
        for context in CONTEXTS:
            try:
                r = decode_step(model, gpu, context, dtype=dtype)
            except NOT_SIMULATED as exc:  # no plan on this GPU: the row is left out
                left_out.setdefault((model.name, str(exc)), []).append(f"{context // 1024}K")
                continue
            kv, dec = r.extra["kv_cache"], r.extra["decode"]
            records.append({"model": model.name, "algorithm": r.algorithm, "context": context,
                            "batch": BATCH, "kv_cache": kv, "decode": dec})
            rows.append([model.name, r.algorithm, f"{context // 1024}K",
                         fmt.nbytes(kv["bytes_per_token"]), fmt.nbytes(kv["bytes_total"]),
                         fmt.seconds(dec["attention_only_s"]),
                         fmt.seconds(dec["attention_plus_weights_s"]),
                         dec["attention_per_layer_bound"],
                         f"{dec['attention_compute_over_memory']:.2f}",
                         f"{kv['tokens_that_fit']:,}" if kv["weights_fit"] else "weights don't fit"])
    table = Table(
        "decode", f"One decode step on {gpu.full_name}, batch {BATCH}, {dtype} cache and weights",
        ["model", "algorithm", "context", "KV / token", "KV cache", "attention / token",
         "+ weights / token", "attention bound", "compute/memory", "tokens fit in HBM"],
        rows, records,
        notes=["attention: all layers, simulated (split-KV decode; MLA absorbed); weights: "
               "the active parameters read once per step, max(bytes / bandwidth, 2·params·"
               "batch / GEMM rate), at the timing model's achievable HBM bandwidth and "
               "large-GEMM rate; the input embedding table counts only the rows the step "
               "looks up (where the model states its vocabulary: the Llama-family presets), "
               "MLA's W_UK and W_UV are read in the attention column, not again here",
               "compute/memory of decode attention does not change with the batch (each "
               "sequence reads its own cache): batching never makes it compute-bound",
               "tokens fit: (HBM − parameters × dtype bytes) / KV bytes per token; nothing "
               "else reserved"])
    if not rows:                          # the report leaves the section out, saying why
        raise PlanError(next(reason for _, reason in left_out))
    table.notes += [f"{name}{'' if len(at) == len(CONTEXTS) else ' at ' + ', '.join(at)} "
                    f"left out: {reason}" for (name, reason), at in left_out.items()]
    paragraphs = ["Per generated token at batch 1: KV cache read by attention in every layer, "
                  "plus the weights. GQA/MQA shrink the cache by heads/kv-heads; MLA caches "
                  "d_c + d_h^R elements per token and layer."]
    return Section(DECODE_HEADING, paragraphs, [table]), records


# ---- decode paths: what one step loads against the context length -------------------------

PATHS_HEADING = "Decode paths: what a step loads against the context"
# NSA paper (Yuan et al. 2025, arXiv 2502.11089), Table 4: memory access volume per decoding
# step in equivalent tokens, and the expected speedup over full attention.
NSA_PAPER_TABLE = {8192: (2048, 4.0), 16384: (2560, 6.4), 32768: (3584, 9.1), 65536: (5632, 11.6)}
PATH_CONTEXTS = (4096, 32768, 131072)
PATH_ALGORITHMS = ("gqa", "mla", "nsa", "linear", "rfa", "performer")
# the NSA paper's attention shape: 64 query heads in 4 GQA groups (head_dim 128, ours)
PATH_SHAPE = {"heads": 64, "kv_heads": 4, "head_dim": 128}


@functools.lru_cache(maxsize=64)
def _path_step(algorithm: str, gpu, context: int, dtype: str, schedule: str | None = None):
    wl = Workload(batch=1, seq_q=1, seq_k=context, dtype=dtype, causal=True, decode=True,
                  **PATH_SHAPE)
    options = {"decode_schedule": schedule} if schedule else None
    return simulate(algorithm, wl, gpu, compute=False, options=options)


def _resident_bytes(r) -> int:
    kv = r.extra.get("kv_cache", {})
    return kv.get("resident_bytes_total", kv.get("bytes_total", 0))


def nsa_table(gpu, dtype: str) -> Table:
    """The paper's decoding table, reproduced by the simulated decode step."""
    rows, records = [], []
    for context, (paper_tokens, paper_speedup) in NSA_PAPER_TABLE.items():
        split = _path_step("nsa", gpu, context, dtype)
        fused = _path_step("nsa", gpu, context, dtype, "fused")
        dense = _path_step("gqa", gpu, context, dtype)
        tok = split.extra["nsa"]["decode"]["tokens_per_step_per_kv_group"]
        speedup = context / tok["total"]
        records.append({"context": context, "dense_tokens": context, **tok,
                        "paper_tokens": paper_tokens, "speedup": speedup,
                        "paper_speedup": paper_speedup, "dense_hbm_bytes": dense.hbm_bytes,
                        "fused_hbm_bytes": fused.hbm_bytes, "split_hbm_bytes": split.hbm_bytes,
                        "dense_predicted_s": dense.time.predicted_s,
                        "fused_predicted_s": fused.time.predicted_s,
                        "split_predicted_s": split.time.predicted_s})
        rows.append([f"{context // 1024}K", f"{context:,}", f"{tok['compressed']:,}",
                     f"{tok['selected']:,}", f"{tok['window']:,}", f"{tok['total']:,}",
                     f"{paper_tokens:,}", f"{speedup:.1f}×", f"{paper_speedup}×",
                     f"{dense.hbm_bytes / fused.hbm_bytes:.1f}× / "
                     f"{dense.hbm_bytes / split.hbm_bytes:.1f}×",
                     f"{fmt.seconds(dense.time.predicted_s)} / "
                     f"{fmt.seconds(split.time.predicted_s)}"])
    return Table(
        "nsa_decode", "NSA decoding: tokens loaded per step and KV group (the NSA paper's "
        "Table 4)",
        ["context", "dense", "compressed", "selected", "window", "NSA", "paper NSA",
         "speedup", "paper", "HBM bytes dense ÷ NSA, fused / split", "time dense / NSA"],
        rows, records,
        notes=["a token is its key and value; dense: every cached token once per KV group "
               "(split-KV GQA decoding); NSA: ⌊(N − l)/d⌋ + 1 compressed tokens + n l′ "
               "selected + w window, l = 32, d = 16, l′ = 64, n = 16, w = 512 (the paper "
               "rounds the compressed term to N/d)",
               "HBM bytes: all kernels of the simulated step, 64 query heads over 4 KV heads, "
               "head_dim 128, batch 1; fused: one CTA per KV group; split (chosen at batch 1): "
               "the branches over many CTAs, whose fp32 partial states cost bytes; these "
               "contexts complete a compressed block, so the step also compresses l new tokens",
               "time: predicted, one layer, attention only; NSA's split step is five launches "
               "(4 µs each in the model), which outweigh its smaller reads below about 32K"])


def paths_table(gpu, dtype: str) -> Table:
    """HBM bytes per decode step of every decode path against the context length."""
    rows, records, reasons = [], [], []
    for algorithm in PATH_ALGORITHMS:
        try:
            results = [_path_step(algorithm, gpu, n, dtype) for n in PATH_CONTEXTS]
        except NOT_SIMULATED as exc:     # no plan on this GPU: the row says why
            rows.append([algorithm, "n/a: " + fmt.clip(str(exc))]
                        + ["—"] * (len(PATH_CONTEXTS) + 3))
            records.append({"algorithm": algorithm, "error": str(exc)})
            reasons.append(f"{algorithm} n/a: {exc}")
            continue
        hbm = [r.hbm_bytes for r in results]
        exponent = (math.log(hbm[-1] / hbm[0]) / math.log(PATH_CONTEXTS[-1] / PATH_CONTEXTS[0]))
        last = results[-1]
        records.append({"algorithm": algorithm, "contexts": list(PATH_CONTEXTS),
                        "hbm_bytes": hbm, "growth_exponent": exponent,
                        "resident_bytes": [_resident_bytes(r) for r in results],
                        "predicted_s": [r.time.predicted_s for r in results],
                        "kernels": [k.name for k in last.kernels]})
        rows.append([algorithm, *(fmt.nbytes(b) for b in hbm), f"{exponent:.2f}",
                     fmt.nbytes(_resident_bytes(last)), fmt.seconds(last.time.predicted_s),
                     last.time.bound])
    ctx = [f"HBM / step {n // 1024}K" for n in PATH_CONTEXTS]
    return Table(
        "decode_paths", f"One decode step, one layer, {PATH_SHAPE['heads']} query heads over "
        f"{PATH_SHAPE['kv_heads']} KV heads, head_dim {PATH_SHAPE['head_dim']}, batch 1, "
        f"{dtype}, on {gpu.full_name}",
        ["algorithm", *ctx, "exponent in N", f"cache / state at {PATH_CONTEXTS[-1] // 1024}K",
         f"predicted at {PATH_CONTEXTS[-1] // 1024}K", "bound"], rows, records,
        notes=["gqa: split-KV (flash-decoding), the whole cache once per KV head; mla: the "
               "absorbed path over the d_c + d_R latent (512 + 64), W_UK and W_UV read too; nsa: the compressed cache, "
               "n selected blocks and the window once per KV group; linear, rfa, performer: "
               "the recurrent state (m × d + m, fp32) read and written per KV head",
               "exponent: log-log slope of the bytes between the first and last context",
               "nsa: the split schedule at batch 1; linear family: the state's value columns "
               "over several CTAs per KV head, each re-reading the queries, keys, W and z",
               *reasons])


def decode_paths_section(gpu, wl) -> tuple[Section, dict]:
    """(Section, JSON): NSA's decoding table and every decode path's bytes per step."""
    dtype = wl.dtype if wl.dtype in ("fp16", "bf16", "fp8") else "fp16"
    paths_t = paths_table(gpu, dtype)
    if all("error" in r for r in paths_t.records):   # the report leaves the section out
        raise PlanError(paths_t.records[0]["error"])
    paragraphs = ["What one generated token reads, against the context length: dense GQA and "
                  "MLA read their whole cache every step; NSA reads its compressed cache "
                  "(N/16 tokens), 16 selected blocks and a 512-token window, shared by the query "
                  "heads of a KV group; linear attention, RFA and Performer read and write a "
                  "fixed-size state, whatever the context."]
    tables, data = [paths_t], {"nsa": [], "paths": paths_t.records}
    try:
        nsa_t = nsa_table(gpu, dtype)
        tables.insert(0, nsa_t)
        data["nsa"] = nsa_t.records
    except NOT_SIMULATED as exc:         # NSA or dense GQA has no plan on this GPU
        data["nsa_left_out"] = str(exc)
        paragraphs.append(f"NSA's decoding table (the NSA paper's Table 4) is left out: {exc}")
    return Section(PATHS_HEADING, paragraphs, tables), data
