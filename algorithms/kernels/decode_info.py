"""KV-cache accounting and per-token decode timing, shared by ``gqa`` and ``mla``.

Both algorithms put two dicts into ``rec.info`` (and so into ``attnsim run --format json``):

``kv_cache``
    bytes per token (all layers, at the workload's storage dtype), bytes for the workload's
    context (seq_k) and batch, the same per dtype (fp16/bf16/fp8), and how many tokens fit in
    the GPU's HBM after the weights. Without a model preset the "network" is the one
    simulated attention layer and the weights are not counted.

``decode`` (decode workloads only)
    predicted time of one decode step (every sequence of the batch gains ``seq_q`` tokens):

        attention only        = L x t_attn          t_attn: the simulated kernels of one layer
                                                    through the timing model (default switches)
        weights               = max(W e / BW, 2 W B n / R)    W: the parameters the step
                                                    reads (``ModelConfig.decode_weight_params``:
                                                    the active ones, the input embedding's
                                                    looked-up rows only) less those the
                                                    simulated attention kernels already read
                                                    (MLA's W_UK and W_UV), e: weight bytes,
                                                    n: new tokens per sequence; BW and R the
                                                    timing model's achievable HBM bandwidth
                                                    and large-GEMM rate (``hbm_rate``,
                                                    ``gemm_rate``)
        attention + weights   = the sum (other per-token work — norms, activations, sampling,
                                                    the MoE router — is not modelled)

Where decode attention stops being memory-bound: every count of a decode step (bytes,
FLOPs, exps) is a sum over independent (sequence, KV head) pairs, so all of them grow
linearly with the batch B and the ratio compute/memory of the timing model does not change
with B: **batching does not make decode attention compute-bound** (each sequence brings its
own cache). What raises its arithmetic intensity is the number of query rows that share one
K/V load — r = (query heads per KV head) x (new tokens), or H x n for MLA's latent — and
the ratio grows about linearly in r, so attention turns compute-bound near
r* ≈ r / (compute/memory). The weights' GEMMs, in contrast, reuse each weight across the
batch: they stop being memory-bound at B* = e · R / (2 · BW · n).
"""
from __future__ import annotations

import math

from hwmodels.gpus import DTYPE_BYTES
from hwmodels.timing import gemm_rate, hbm_rate, predict_time

KV_DTYPES = ("fp16", "bf16", "fp8")


def hbm_fit(weights_bytes: int | None, bytes_per_token: int, gpu, context: int) -> dict:
    """How much KV cache the GPU's HBM holds once the weights are in (None: weights unknown,
    counted as 0)."""
    free = gpu.hbm_bytes - (weights_bytes or 0)
    tokens = max(0, free // bytes_per_token)
    return {
        "gpu": gpu.name,
        "hbm_bytes": gpu.hbm_bytes,
        "weights_bytes": weights_bytes,
        "weights_fit": free > 0,
        "tokens_that_fit": int(tokens),
        "sequences_that_fit_at_context": int(tokens // context) if context else None,
        "assumption": ("weights = parameters x the workload's dtype bytes, all in this GPU's "
                       "HBM, nothing else reserved" if weights_bytes is not None else
                       "no model given: weights not counted, one attention layer"),
    }


def kv_cache_accounting(elements_per_token_per_layer: int, layers: int, dtype: str,
                        context: int, batch: int, gpu, weights_bytes: int | None) -> dict:
    """The ``kv_cache`` dict from the per-layer cache elements of one token."""
    def per_token(dt):
        return elements_per_token_per_layer * layers * DTYPE_BYTES[dt]

    return {
        "layers": layers,
        "storage_dtype": dtype,
        "elements_per_token_per_layer": elements_per_token_per_layer,
        "bytes_per_token": per_token(dtype),
        "context_tokens": int(context),
        "batch": int(batch),
        "bytes_total": per_token(dtype) * int(context) * int(batch),
        "per_dtype": {dt: {"bytes_per_token": per_token(dt),
                           "bytes_total": per_token(dt) * int(context) * int(batch)}
                      for dt in KV_DTYPES},
        **hbm_fit(weights_bytes, per_token(dtype), gpu, context),
    }


def kv_cache_info(wl, gpu, elements_per_token_per_layer: int) -> dict:
    """``kv_cache`` for a workload: its model's layers and weights, or one bare layer."""
    model = getattr(wl, "model", None)
    info = kv_cache_accounting(elements_per_token_per_layer,
                               model.layers if model is not None else 1, wl.dtype, wl.seq_k,
                               wl.batch, gpu,
                               model.weight_bytes(wl.dtype) if model is not None else None)
    info["model"] = model.name if model is not None else None
    return info


def decode_info(wl, gpu, kernels, rows_per_kv_load: int,
                attention_weight_params: int = 0) -> dict:
    """``decode``: per-step time, attention only and with the weights, and the bounds.
    ``attention_weight_params``: parameters per layer that ``kernels`` already read (left out
    of the weights term, which would otherwise read them twice)."""
    model = getattr(wl, "model", None)
    layers = model.layers if model is not None else 1
    t = predict_time(gpu, kernels)
    memory_s = sum(k.memory_s for k in t.kernels)
    compute_s = sum(k.compute_s for k in t.kernels)
    ratio = compute_s / memory_s if memory_s > 0 else float("inf")
    attention_s = layers * t.predicted_s
    n_new, e = wl.seq_q, wl.elem_bytes
    bandwidth, rate = hbm_rate(gpu), gemm_rate(gpu, wl.dtype)
    out = {
        "new_tokens_per_sequence": n_new,
        "batch": wl.batch,
        "context_tokens": wl.seq_k,
        "layers": layers,
        "attention_per_layer_s": t.predicted_s,
        "attention_per_layer_bound": t.bound,
        "attention_only_s": attention_s,
        "weights_params_per_step": None,
        "weights_params_in_attention": None,
        "weights_bytes_per_step": None,
        "weights_s": None,
        "attention_plus_weights_s": None,
        "time_per_token_s": attention_s,
        "tokens_per_s": wl.batch * n_new / attention_s if attention_s > 0 else None,
        "attention_compute_over_memory": ratio,
        "attention_memory_bound_at_any_batch": ratio < 1.0,
        "attention_stops_memory_bound_at_batch": None,
        "query_rows_per_kv_load": rows_per_kv_load,
        "query_rows_per_kv_load_for_compute_bound":
            math.ceil(rows_per_kv_load / ratio) if 0 < ratio < 1 else rows_per_kv_load,
        "weights_compute_bound_from_batch": math.ceil(e * rate / (2 * bandwidth * n_new)),
        "note": ("decode attention's bytes and FLOPs both grow linearly with the batch, so "
                 "its compute/memory ratio — and its bound — do not change with the batch; "
                 "it turns compute-bound only when more query rows share each K/V load "
                 "(query_rows_per_kv_load_for_compute_bound, approximate). The weights' GEMMs "
                 "turn compute-bound from weights_compute_bound_from_batch."),
    }
    if model is not None:
        params = (model.decode_weight_params(wl.batch * n_new)
                  - layers * attention_weight_params)
        weights_bytes = params * e
        weights_s = max(weights_bytes / bandwidth, 2.0 * params * wl.batch * n_new / rate)
        total = attention_s + weights_s
        out.update(weights_params_per_step=params,
                   weights_params_in_attention=layers * attention_weight_params,
                   weights_bytes_per_step=weights_bytes, weights_s=weights_s,
                   attention_plus_weights_s=total, time_per_token_s=total,
                   tokens_per_s=wl.batch * n_new / total)
    return out
