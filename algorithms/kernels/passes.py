"""Forward / backward / both: how an algorithm with a backward pass runs ``wl.passes``.

An algorithm module with ``INFO.passes = ("fwd", "bwd")`` provides
``forward(wl, plan, inputs, rec, compute) -> saved`` (its outputs plus whatever its backward
reads: O, the softmax statistics, or P for standard attention) and
``backward(wl, plan, inputs, saved, rec, compute) -> {"dq", "dk", "dv"}``, and its ``run``
calls ``run_passes``:

* ``"fwd"``: the forward, counted.
* ``"fwd+bwd"``: the forward then the backward, both counted on the same Recorder.
* ``"bwd"``: the backward alone is counted; the tensors the forward would have saved are
  its inputs. In executed mode they are computed by an *uncounted* forward (a throwaway
  Recorder); in count-only mode there is no data to compute.
"""
from __future__ import annotations

from algorithms.base import PlanError
from hwmodels.memory import Recorder

OUTPUT_KEYS = ("o", "lse", "dq", "dk", "dv")


def run_passes(wl, plan, inputs, rec, compute: bool, forward, backward) -> dict:
    if wl.passes == "fwd":
        out = forward(wl, plan, inputs, rec, compute)
    elif wl.passes == "fwd+bwd":
        saved = forward(wl, plan, inputs, rec, compute)
        out = {**saved, **backward(wl, plan, inputs, saved, rec, compute)}
    else:
        saved = {}
        if compute:
            saved = forward(wl, plan, inputs, Recorder(rec.gpu, rec.sram_budget_bytes), compute)
        out = backward(wl, plan, inputs, saved, rec, compute)
    return {key: value for key, value in out.items() if key in OUTPUT_KEYS} if compute else {}


def bound_for_passes(wl, forward_bytes: float, backward_bytes: float) -> float:
    """The IO bound of the passes simulated: forward, backward or their sum."""
    return (forward_bytes if wl.has_forward else 0.0) + (backward_bytes if wl.has_backward else 0.0)


def check_backward_workload(name: str, wl) -> None:
    """What the backward simulations do not cover, rejected before any kernel runs."""
    if wl.has_backward and wl.kv_heads != wl.heads:
        raise PlanError(f"{name}: the backward pass is simulated for multi-head attention only "
                        f"(kv_heads == heads); got heads={wl.heads}, kv_heads={wl.kv_heads}. "
                        f"Use --pass fwd for GQA/MQA, or drop --kv-heads (or the GQA "
                        f"--model that sets it)")
