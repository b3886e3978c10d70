"""FlashAttention-3's FP8 error against float64, per quantization variant, on inputs with
outliers — the experiment of Shah et al. 2024 (arXiv 2407.08608), §4.3 "Numerical error
validation": Q, K, V entries N(0, 1) + N(0, 100)·Bernoulli(0.001), i.e. standard normal
with 0.1% of the entries given an extra N(0, 10²) term, "to simulate outlier features in
large models". The paper reports RMSE 2.4e-2 for its FP8 baseline (per-tensor scales),
9.3e-3 without block quantization and 2.4e-2 without incoherent processing, and 9.1e-3 for
FP8 FlashAttention-3 (both): the rotation is what lowers the error.

Each variant is ``flash3`` executed at ``--dtype fp8`` (e4m3 Q, K, V and P, fp32
accumulation: ``algorithms.flash3``) on the same inputs, compared with float64 exact
attention (``attnsim.reference``).
"""
from __future__ import annotations

import numpy as np

from attnsim.inputs import Inputs
from attnsim.reference import attention_reference, relative_error
from attnsim.simulate import simulate
from attnsim.workload import Workload

OUTLIER_FRACTION = 0.001      # Bernoulli(0.001): the paper's share of outlier entries
OUTLIER_STD = 10.0            # N(0, 100): the outliers' extra term
OUTLIER_DESCRIPTION = "N(0,1) + N(0,100)·Bernoulli(0.001) (FA-3 paper §4.3)"

# (name, flash3 options): the paper's baseline, its two ablations (Table 3: "no incoherent
# processing", "no block quant") and FA-3's FP8 recipe.
VARIANTS = (
    ("per-tensor", {"fp8_scales": "tensor", "rotation": "none"}),
    ("block", {"fp8_scales": "block", "rotation": "none"}),
    ("per-tensor + Hadamard", {"fp8_scales": "tensor", "rotation": "hadamard"}),
    ("block + Hadamard", {"fp8_scales": "block", "rotation": "hadamard"}),
)

# Small enough to execute in a few seconds, large enough for 8 Q blocks and several K/V
# blocks per head (block scales differ from a per-tensor scale only with many blocks).
ERROR_WORKLOAD = Workload(batch=1, heads=4, seq_q=1024, head_dim=128, dtype="fp8")


def outlier_inputs(wl, seed: int = 0, fraction: float = OUTLIER_FRACTION,
                   outlier_std: float = OUTLIER_STD) -> Inputs:
    """Q, K, V with entries N(0,1) + N(0, outlier_std²)·Bernoulli(fraction), float32."""
    rng = np.random.default_rng(seed)

    def draw(*shape):
        x = rng.standard_normal(shape, dtype=np.float32)
        outlier = rng.random(shape) < fraction
        extra = np.float32(outlier_std) * rng.standard_normal(shape, dtype=np.float32)
        return x + outlier * extra

    return Inputs(q=draw(wl.batch, wl.heads, wl.seq_q, wl.head_dim),
                  k=draw(wl.batch, wl.kv_heads, wl.seq_k, wl.head_dim),
                  v=draw(wl.batch, wl.kv_heads, wl.seq_k, wl.head_dim), seed=seed)


def variant_errors(wl: Workload | None = None, gpu="h100", seed: int = 0) -> dict:
    """{workload, inputs, seed, variants: {name: {fp8_scales, rotation, rmse,
    relative_error}}}: each FP8 variant of flash3 on the same outlier inputs against
    float64 attention."""
    wl = (wl or ERROR_WORKLOAD).replace(dtype="fp8")
    inputs = outlier_inputs(wl, seed)
    exact, _ = attention_reference(inputs.q, inputs.k, inputs.v, causal=wl.causal,
                                   scale=wl.scale)
    variants = {}
    for name, options in VARIANTS:
        r = simulate("flash3", wl, gpu, options=options, inputs=inputs, check=False)
        o = np.asarray(r.outputs["o"], dtype=np.float64)
        variants[name] = {**options, "rmse": float(np.sqrt(np.mean((o - exact) ** 2))),
                          "relative_error": relative_error(o, exact)}
    shape = {"batch": wl.batch, "heads": wl.heads, "seq": wl.seq_q, "head_dim": wl.head_dim,
             "causal": wl.causal}
    return {"workload": shape, "inputs": OUTLIER_DESCRIPTION, "seed": seed,
            "variants": variants}


def error_workload_like(wl) -> Workload:
    """``ERROR_WORKLOAD`` with ``wl``'s head dim and mask (a fresh Workload, so the softmax
    scale follows the head dim)."""
    e = ERROR_WORKLOAD
    return Workload(batch=e.batch, heads=e.heads, seq_q=e.seq_q, head_dim=wl.head_dim,
                    causal=wl.causal, dtype="fp8")


def attach_variant_errors(result) -> None:
    """An executed FP8 flash3 run's ``fp8`` object gains ``error_by_variant``: the three
    variants on outlier inputs at ``error_workload_like(run's workload)`` (count-only runs
    compute no errors)."""
    if result.compute and "fp8" in result.extra:
        result.extra["fp8"]["error_by_variant"] = variant_errors(
            error_workload_like(result.workload), result.gpu)
