"""Whether an executed run's error against the float64 reference can be read as the
algorithm's: the softmax's conditioning at the run's logits.

Executed mode forms the logits x = scale · q·k in fp32 (the tensor cores' accumulator; but
for flash3's fp8 kernel, S and P are not rounded to the storage dtype) and exponentiates
x − m, m the row's largest logit. Rounding a logit to fp32 moves it by up to |x| · u,
u = 2⁻²⁴, and exp turns that absolute error into a relative error of the same size
(d exp(x) / exp(x) = dx) in every entry of P that matters (those near the row's maximum,
whose logits are about as large as m). The float64 reference makes no such error, so an
exact algorithm's error cannot fall much below max |x| · u: the comparison's floor grows
with the logits' magnitude, whatever the algorithm does. The backward is worse:
dS = P ∘ (dP − rowsum(P ∘ dP)) cancels where large logits make P nearly one-hot, and the
gradients' relative errors then exceed the floor by orders of magnitude (standard-normal
inputs at --scale 10000: 1 and more, N = 256).

The comparison is called ill-conditioned when the floor reaches 2⁻¹¹, half precision's unit
roundoff: there an fp32 kernel's result can no longer be told, from its logits alone, from
one a 16-bit pipeline would give, so an algorithm's bug of that size would hide in it. That
is max |x| ≥ 2⁻¹¹ / 2⁻²⁴ = 2¹³ = 8192. At the default scale 1/√d the input families' logits
stay below about 30 (a floor under 2 · 10⁻⁶); --scale 10000 takes standard-normal inputs
to about 5 · 10⁵ (the clustered, lowrank and near_keys families set their logits whatever
the scale, ``attnsim.inputs``).

The magnitude is max |scale · q·k| over every head and every (query, key) pair, masked or
not (an upper bound of the logits a kernel exponentiates): one fp32 matrix product per head
in chunks of rows, vectorized (BLAS), no Python loop over its N_q x N_k entries.
"""
from __future__ import annotations

import numpy as np

FP32_UNIT_ROUNDOFF = 2.0 ** -24
FP16_UNIT_ROUNDOFF = 2.0 ** -11
# the logit magnitude from which fp32's rounding of it reaches half precision's unit roundoff
ILL_CONDITIONED_LOGIT = FP16_UNIT_ROUNDOFF / FP32_UNIT_ROUNDOFF        # 8192
CHUNK_ELEMENTS = 1 << 22        # logits of one chunk of rows (16 MiB of fp32)


def max_abs_logit(q: np.ndarray, k: np.ndarray, scale: float) -> float:
    """max |scale · q_i·k_j| over all heads and pairs; q (B, H, N_q, d), k (B, G, N_k, d)
    with H a multiple of G (query head h reads key head h // (H / G), as the reference)."""
    heads, groups, d = q.shape[1], k.shape[1], q.shape[-1]
    per_group = heads // groups
    rows = max(1, CHUNK_ELEMENTS // max(1, k.shape[2]))
    largest = 0.0
    for b in range(q.shape[0]):
        for g in range(groups):
            # the group's query heads share one key head: one product for all of them
            queries = q[b, g * per_group:(g + 1) * per_group].reshape(-1, d)
            keys_t = k[b, g].T
            for r0 in range(0, len(queries), rows):
                s = queries[r0:r0 + rows] @ keys_t
                largest = max(largest, float(s.max()), float(-s.min()))
    return largest * abs(float(scale))


def error_conditioning(q: np.ndarray, k: np.ndarray, scale: float) -> dict:
    """The run's conditioning facts (``SimResult.extra["error_conditioning"]``, the JSON key
    of the same name): the largest logit magnitude, the relative error fp32 rounding of it
    puts into exp (the comparison's floor), the magnitude above which the comparison is
    ill-conditioned, whether it is, and a warning sentence when it is (else None)."""
    largest = max_abs_logit(q, k, scale)
    floor = largest * FP32_UNIT_ROUNDOFF
    ill = largest >= ILL_CONDITIONED_LOGIT
    return {"max_abs_logit": largest, "fp32_logit_rounding": floor,
            "ill_conditioned_above": ILL_CONDITIONED_LOGIT, "ill_conditioned": ill,
            "warning": _warning(largest, floor) if ill else None}


def _warning(largest: float, floor: float) -> str:
    return (f"the logits reach |scale·q·k| = {largest:.3g} (ill-conditioned from "
            f"{ILL_CONDITIONED_LOGIT:,.0f}): fp32 rounds them by up to {floor:.1e}, which exp "
            f"turns into relative errors as large, and more in the backward, so the error vs "
            f"the float64 reference measures the softmax's conditioning, not the algorithm; "
            f"lower --scale (or use --inputs clustered, lowrank or near_keys, whose logits do "
            f"not grow with it) for a meaningful comparison")
