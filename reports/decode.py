"""The report's decode section: KV cache and predicted per-token latency per model preset and
context length, on the report's GPU (count-only simulations of one decode step, batch 1)."""
from __future__ import annotations

from attnsim.models import PRESETS
from attnsim.simulate import simulate
from attnsim.workload import Workload
from reports import format as fmt
from reports.document import Section, Table

CONTEXTS = (4096, 32768, 131072)
BATCH = 1


def decode_step(model, gpu, context: int, batch: int = BATCH, dtype: str = "fp16"):
    """One simulated decode step of ``model`` (gqa, or mla with the absorbed path)."""
    wl = Workload(batch=batch, heads=model.heads, kv_heads=model.kv_heads, seq_q=1,
                  seq_k=context, head_dim=model.head_dim, dtype=dtype, decode=True, model=model)
    return simulate("mla" if model.is_mla else "gqa", wl, gpu, compute=False)


def decode_section(gpu, wl) -> tuple[Section, list[dict]]:
    """(Section, JSON records): the report workload's --model, or every preset."""
    models = [wl.model] if getattr(wl, "model", None) is not None else list(PRESETS.values())
    dtype = wl.dtype if wl.dtype in ("fp16", "bf16", "fp8") else "fp16"
    rows, records = [], []
    for model in models:
        for context in CONTEXTS:
            r = decode_step(model, gpu, context, dtype=dtype)
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
               "active parameters read once per step, max(bytes/bandwidth, 2·params·batch/"
               "peak)",
               "compute/memory of decode attention does not change with the batch (each "
               "sequence reads its own cache): batching never makes it compute-bound",
               "tokens fit: (HBM − parameters × dtype bytes) / KV bytes per token; nothing "
               "else reserved"])
    paragraphs = ["Per generated token at batch 1: KV cache read by attention in every layer, "
                  "plus the weights. GQA/MQA shrink the cache by heads/kv-heads; MLA caches "
                  "d_c + d_h^R elements per token and layer."]
    return Section("Decode: KV cache and per-token latency", paragraphs, [table]), records
