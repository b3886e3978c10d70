"""simulate(): one algorithm on one workload on one GPU -> counts, time, bound, output."""
from __future__ import annotations

import collections
import contextlib
import functools
import inspect
from dataclasses import dataclass, field

import numpy as np
from threadpoolctl import ThreadpoolController

from algorithms.base import PlanError, check_options
from algorithms.kernels.dropout import keep_multiplier
from algorithms.registry import get_algorithm
from attnsim.conditioning import error_conditioning
from attnsim.errors import AttnsimError
from attnsim.inputs import Inputs, make_inputs
from attnsim.memory import FootprintQuestion
from attnsim.reference import (attention_backward_reference, attention_reference,
                               relative_error)
from attnsim.validate import (MAX_SEED, check_host_memory, check_int, check_option_values)
from attnsim.workload import Workload
from hwmodels.counters import counters_to_dict
from hwmodels.gpus import GPU, MissingUnitError
from hwmodels import get_gpu
from hwmodels.memory import Recorder, SramOverflowError
from hwmodels.timing import TimingBreakdown, TimingOptions, predict_time


@dataclass(frozen=True)
class SimResult:
    """Everything one simulation produced. ``outputs`` is empty in count-only mode.

    ``error_vs_reference``: relative Frobenius error of the output against the float64
    reference of *the same math* (exact algorithms: exact attention).
    ``error_vs_exact``: for approximate algorithms, the same against exact softmax attention.
    ``extra["error_conditioning"]`` (executed runs compared with softmax attention): whether
    the logits' magnitude makes those comparisons ill-conditioned (``attnsim.conditioning``).
    """
    algorithm: str
    info: object
    gpu: GPU
    workload: Workload
    options: dict
    sram_budget_bytes: int
    plan: dict
    counts: dict
    kernels: tuple
    time: TimingBreakdown
    io_bound_bytes: float
    compute: bool
    outputs: dict = field(default_factory=dict)
    error_vs_reference: float | None = None
    error_vs_exact: float | None = None
    extra: dict = field(default_factory=dict)
    footprint_question: FootprintQuestion | None = field(default=None, repr=False,
                                                         compare=False)

    @functools.cached_property
    def memory(self) -> dict:
        """The HBM footprint and the longest sequence that fits (``attnsim.memory``), worked
        out on first use: the search costs more than a small executed simulation, and a
        sweep of them (the report's accuracy runs) never looks at it."""
        q = self.footprint_question
        return q.summary() if q is not None else {}

    @functools.cached_property
    def peak_hbm_bytes(self) -> int | None:
        """``memory["peak_bytes"]``, without the search; None without a footprint."""
        q = self.footprint_question
        return None if q is None else q.peak_bytes()

    @property
    def fits_hbm(self) -> bool | None:
        """Whether the footprint's peak fits the GPU's HBM (``memory["fits"]``, without the
        search for the longest sequence that fits); None without a footprint."""
        peak = self.peak_hbm_bytes
        return None if peak is None else peak <= self.gpu.hbm_bytes

    def __getstate__(self):
        # INFO holds its options' validators (closures, lambdas), which do not pickle: it
        # travels by the algorithm's name (the report's worker processes return results)
        return {**self.__dict__, "info": None}

    def __setstate__(self, state):
        state["info"] = get_algorithm(state["algorithm"]).INFO
        for key, value in state.items():
            object.__setattr__(self, key, value)

    @property
    def hbm_bytes(self) -> int:
        return self.counts["hbm_read_bytes"] + self.counts["hbm_write_bytes"]

    @property
    def flops(self) -> int:
        return self.counts["matmul_flops"] + self.counts["exp_ops"] + self.counts["other_flops"]

    @property
    def arithmetic_intensity(self) -> float:
        """FLOPs (matmul + exp + other) per HBM byte."""
        return self.flops / self.hbm_bytes if self.hbm_bytes else float("inf")

    @property
    def io_ratio(self) -> float:
        return self.hbm_bytes / self.io_bound_bytes if self.io_bound_bytes else float("nan")


def resolve_gpu(gpu: GPU | str) -> GPU:
    return gpu if isinstance(gpu, GPU) else get_gpu(gpu)


# What ``simulate`` raises when a workload has no plan on a GPU (tiles that do not fit, an
# option the algorithm does not take) or is not a valid input: the report leaves such a row
# or section out with the reason. Any other exception is a bug and propagates.
NOT_SIMULATED = (PlanError, SramOverflowError, AttnsimError, MissingUnitError)

SRAM_ADVICE = "a larger --sram-kb"


def _plan(module, workload, gpu, budget: int, opts: dict):
    """``module.plan``; where it advises a larger --sram-kb and the budget is already the
    GPU's whole shared memory per block, the advice --sram-kb cannot follow names the GPU's
    field instead."""
    try:
        return module.plan(workload, gpu, budget, **opts)
    except (PlanError, SramOverflowError) as exc:
        if budget < gpu.smem_bytes_per_block or SRAM_ADVICE not in str(exc):
            raise
        raise type(exc)(str(exc).replace(
            SRAM_ADVICE, f"a GPU with more shared memory per block ({gpu.full_name} has "
                         f"{gpu.smem_bytes_per_block:,} bytes, smem_bytes_per_block, the most "
                         f"--sram-kb can give)")) from None


def simulate(algorithm: str, workload: Workload, gpu: GPU | str = "h100", *,
             compute: bool = True, sram_bytes: int | None = None, options: dict | None = None,
             inputs: Inputs | None = None, seed: int = 0,
             timing: TimingOptions = TimingOptions(), check: bool = True) -> SimResult:
    """Run ``algorithm`` through the simulated hierarchy.

    Arguments:
        algorithm: a registered name (``algorithms.registry``).
        workload: shapes, dtype, masking and passes.
        gpu: a GPU or its name/TOML path.
        compute: executed mode (True: real arithmetic, outputs returned and checked) or
            count-only mode (False: same loops and counts, no data).
        sram_bytes: per-CTA SRAM budget M; default the GPU's shared memory per block.
        options: algorithm-specific options (see ``attnsim list``).
        inputs: the tensors to use (default: ``make_inputs(workload, seed)``).
        timing: switches of the timing model.
        check: compare executed outputs with the float64 reference.
    """
    module = get_algorithm(algorithm)
    info = module.INFO
    gpu = resolve_gpu(gpu)
    budget, opts = _checked_request(info, workload, gpu, sram_bytes, options or {})
    if compute:
        # before planning: a plan may already build per-block tables of the workload; given
        # inputs too, since the float64 reference and the outputs are still to be allocated
        check_host_memory(workload)
    plan = _plan(module, workload, gpu, budget, opts)
    if compute:
        # after the plan: a program that takes no fp8 at all (pytorch-eager, the releases'
        # tiles) refuses first, so the --count-only suggested here is a fix that runs
        check_executed_fp8(info, workload)
    if compute:
        _check_own_workspaces(module, workload, plan)
    rec = Recorder(gpu, budget)
    if compute and inputs is None:
        check_int(seed, "input seed (--input-seed)", 0, MAX_SEED)
        inputs = make_inputs(workload, seed)
    with _single_threaded_blas(compute):
        outputs = module.run(workload, plan, inputs if compute else None, rec, compute)
    totals = rec.totals()
    breakdown = predict_time(gpu, rec.kernels, timing)
    footprint = FootprintQuestion(info.name, workload, plan, gpu, budget, opts)
    if "ring" in rec.info:   # the longest total context the P devices hold
        rec.info["ring"]["max_context_tokens"] = footprint.summary()["max_seq_that_fits"]
    err_ref = err_exact = None
    extra = dict(rec.info)
    if compute and check and (getattr(module, "OUTPUT", "o") in outputs or "dq" in outputs):
        err_ref, err_exact = _errors(module, workload, plan, inputs, outputs, rec.info)
        conditioning = _conditioning(module, workload, plan, inputs, rec.info)
        if conditioning is not None:
            extra["error_conditioning"] = conditioning
    return SimResult(
        algorithm=info.name, info=info, gpu=gpu, workload=workload, options=opts,
        sram_budget_bytes=budget, plan=plan.to_dict(), counts=counters_to_dict(totals),
        kernels=tuple(rec.kernels), time=breakdown,
        io_bound_bytes=float(module.io_bound(workload, plan, budget)), compute=compute,
        outputs=outputs, error_vs_reference=err_ref, error_vs_exact=err_exact,
        extra=extra, footprint_question=footprint)


def _checked_request(info, workload: Workload, gpu: GPU, sram_bytes: int | None,
                     options: dict) -> tuple[int, dict]:
    """(the SRAM budget, the algorithm's options with their defaults) of a request the
    algorithm can run, or a one-line error naming the flag: a pass, a model, dropout, an
    SRAM budget or an option it does not take."""
    if workload.passes not in _supported_passes(info):
        raise AttnsimError(f"{info.name} simulates passes {', '.join(info.passes)}; "
                           f"--pass {workload.passes} is not available for it")
    check_model_attention(info, getattr(workload, "model", None))
    if workload.dropout > 0 and not info.dropout:
        raise AttnsimError(f"{info.name} does not simulate dropout; drop --dropout, or use one "
                           f"of the algorithms that do (standard, flash1, flash2)")
    budget = gpu.smem_bytes_per_block if sram_bytes is None else \
        check_int(sram_bytes, "SRAM budget (--sram-kb) in bytes", 1)
    if budget > gpu.smem_bytes_per_block:
        raise AttnsimError(f"SRAM budget (--sram-kb) {budget:,} B exceeds {gpu.full_name}'s "
                           f"{gpu.smem_bytes_per_block:,} B of shared memory per block")
    check_option_values(info, options)
    return budget, check_options(info, options)


def _check_own_workspaces(module, workload: Workload, plan) -> None:
    """An executed run's workspaces that an option sizes (the random features) must fit the
    host's memory too."""
    own_bytes = getattr(module, "executed_host_bytes", None)
    if own_bytes is None:
        return
    info = module.INFO
    sized_by = [o.flag for o in info.options if o.name == "features"]
    named = getattr(module, "EXECUTED_WORKSPACE", "own workspaces")
    check_host_memory(workload, extra=own_bytes(workload, plan),
                      what=f", {info.name}'s {named}", also=sized_by)


def check_model_attention(info, model) -> None:
    """MLA models run on mla only, and mla runs MLA models only: an MLA model's heads read
    one latent cache, so as heads x head_dim attention the numbers would describe a model
    that does not exist (and mla has no latent for a GQA model)."""
    if model is None or model.is_mla == (info.name == "mla"):
        return
    if model.is_mla:
        raise PlanError(f"{model.name} uses multi-head latent attention, which {info.name} "
                        f"does not simulate: run {run_command('mla', model)}")
    raise PlanError(f"{model.name} uses {model.attention.upper()} attention, not MLA: run "
                    f"{run_command('gqa', model)}")


def run_command(algorithm: str, model) -> str:
    """The command that runs ``model`` on ``algorithm``. A preset is found by its name; a
    model read from a TOML file is not (its name is only a label, and the file's path is
    not kept), so the user is sent back to the same file."""
    from attnsim.models import PRESETS
    if PRESETS.get(model.name) == model:
        return f"'attnsim run {algorithm} --model {model.name}'"
    return f"'attnsim run {algorithm} --model FILE' with FILE the same .toml file"


def check_executed_fp8(info, workload: Workload) -> None:
    """Executed fp8 needs the algorithm's own fp8 kernel: without one its arithmetic would
    run unquantized, an "fp8" error that is fp32's."""
    if workload.dtype == "fp8" and not info.fp8_kernel:
        raise AttnsimError(f"{info.name} has no fp8 kernel to execute (its arithmetic would not "
                           f"be quantized, so its error would not be fp8's): add --count-only "
                           f"for fp8 storage's counts and time, or run flash3 (FlashAttention-3's "
                           f"e4m3 forward)")


def _single_threaded_blas(compute: bool):
    """Executed mode multiplies many small tiles: a multi-threaded BLAS spends more time
    waking threads than multiplying (6x slower on a loaded 2-core machine), so tile
    products run on one BLAS thread."""
    if not compute:
        return contextlib.nullcontext()
    return blas_controller().limit(limits=1, user_api="blas")


@functools.lru_cache(maxsize=1)
def blas_controller() -> ThreadpoolController:
    """The process's BLAS libraries, found once: finding them reads /proc/self/maps, which
    costs more than a small executed simulation (the report runs hundreds). Compiled
    kernels call BLAS through SciPy's (``scipy.linalg.cython_blas``, Numba's provider), NumPy
    through its own: both are loaded before they are looked for."""
    import scipy.linalg.cython_blas  # noqa: F401  (loads SciPy's BLAS)
    return ThreadpoolController()


def _supported_passes(info) -> set[str]:
    supported = set(info.passes)
    if {"fwd", "bwd"} <= supported:
        supported.add("fwd+bwd")
    return supported


# Float64 references of the last small inputs: a sweep (the report's accuracy column and its
# approximation sweeps) simulates many algorithms and settings on the same drawn inputs.
# Keyed by the inputs' bytes, so an equal key means equal inputs, whatever objects hold them.
_REFERENCES: collections.OrderedDict = collections.OrderedDict()
_REFERENCES_KEPT = 8
_REFERENCE_KEY_LIMIT = 8 << 20          # bytes of q, k and v together


def _exact_attention(q, k, v, causal, scale, mask, keep):
    """``attention_reference(...)[0]``, remembered for small unmasked inputs without dropout."""
    small = q.nbytes + k.nbytes + v.nbytes <= _REFERENCE_KEY_LIMIT
    if mask is not None or keep is not None or not small:
        return attention_reference(q, k, v, causal=causal, scale=scale, mask=mask,
                                   dropout_keep=keep)[0]
    key = (causal, scale, *((x.shape, x.dtype.str, np.ascontiguousarray(x).tobytes())
                            for x in (q, k, v)))
    if key not in _REFERENCES:
        o = attention_reference(q, k, v, causal=causal, scale=scale)[0]
        o.setflags(write=False)                      # shared by every result that asks
        _REFERENCES[key] = o
        if len(_REFERENCES) > _REFERENCES_KEPT:
            _REFERENCES.popitem(last=False)
    _REFERENCES.move_to_end(key)
    return _REFERENCES[key]


def _softmax_problem(module, wl, plan, inputs, info):
    """(q, k, v, mask) of the softmax attention an executed run is compared with: the
    inputs, or the exact problem an algorithm that changes it names (Reformer's shared QK,
    RFA's normalised q, k)."""
    problem = getattr(module, "exact_problem", None)
    return problem(wl, plan, inputs) if problem else (inputs.q, inputs.k, inputs.v,
                                                      info.get("mask"))


def _conditioning(module, wl, plan, inputs, info) -> dict | None:
    """``attnsim.conditioning`` at the logits of the softmax attention the run is compared
    with; None for an exact algorithm of another function (differential attention, MLA),
    whose own reference forms other logits."""
    if module.INFO.exact and getattr(module, "reference", None) is not None:
        return None
    q, k, _, _ = _softmax_problem(module, wl, plan, inputs, info)
    return error_conditioning(q, k, wl.scale)


def _errors(module, wl, plan, inputs, outputs, info):
    """(error against the algorithm's own float64 math, error against exact attention).

    Exact algorithms of softmax attention are compared with ``attention_reference``; an
    exact algorithm that computes another function defines ``reference(wl, plan, inputs)``
    and is compared with that (no error against softmax attention is reported). A
    ``reference`` with an ``attention_reference`` parameter receives the float64 softmax
    attention of ``attnsim.reference`` (algorithms do not import the harness).

    With gradients among the outputs (backward passes), the error against exact attention
    is the largest relative error of o, dq, dk and dv against the float64 references.
    Dropout: the references use the same keep mask (``algorithms.kernels.dropout``).
    """
    own = getattr(module, "reference", None)
    if own is not None and "attention_reference" in inspect.signature(own).parameters:
        own = functools.partial(own, attention_reference=attention_reference)
    named = getattr(module, "OUTPUT", "o")       # MLA: o_mla, over its latent inputs
    if module.INFO.exact and own is not None and named in outputs:
        # an exact algorithm of a different function (differential attention, MLA): its
        # own math
        return relative_error(outputs[named], own(wl, plan, inputs)), None
    keep = keep_multiplier(wl, inputs.seed) if wl.dropout > 0 else None
    errors = []
    if "o" in outputs:
        q, k, v, mask = _softmax_problem(module, wl, plan, inputs, info)
        exact_o = _exact_attention(q, k, v, wl.causal, wl.scale, mask, keep)
        errors.append(relative_error(outputs["o"], exact_o))
    if "dq" in outputs:
        grads = attention_backward_reference(inputs.q, inputs.k, inputs.v, inputs.do,
                                             causal=wl.causal, scale=wl.scale,
                                             mask=info.get("mask"), dropout_keep=keep)
        errors += [relative_error(outputs[name], ref) for name, ref in zip(("dq", "dk", "dv"), grads)]
    err_exact = max(errors)
    if module.INFO.exact or "o" not in outputs:
        return err_exact, None
    err_own = relative_error(outputs["o"], own(wl, plan, inputs)) if own else None
    return err_own, err_exact


__all__ = ["simulate", "SimResult", "PlanError", "SramOverflowError"]
