"""``attnsim gpu-check``: run the CUDA ports on the local GPU and set measured against predicted.

For each ported algorithm and each N of a sweep: the measured time of the port (median over
repeats, inputs rotated past L2), the time the simulator predicts for the same workload on the
matching GPU model (``simulate(..., compute=False).time.predicted_s``), their ratio, the
measured TFLOP/s (simulator-counted matmul FLOPs / measured time), the effective HBM bandwidth
(simulator-counted HBM bytes / measured time), the port's error against the CPU result, and,
where PyTorch with CUDA is importable, the time of ``scaled_dot_product_attention``.

``--pass bwd`` / ``fwd+bwd`` check the backward (flash2, flash1 and standard; the other
ports' rows say "port skipped"): the prediction is the simulation of the same passes, the
error the largest over o, dq, dk, dv against the CPU result (the note lists each), SDPA is
timed through autograd for the same passes.

``--path absorbed upproject`` checks both of mla's decode paths (rows labelled
``mla --path ...``); the default is mla's default path (absorbed).

``nsa`` rows checked against the CPU run also judge the top-n: ``selection`` holds how
many positions chose other blocks than the simulator (each must be a near-tie of the
float64 block scores), the error where the selections agree and the error against NSA's
float64 reference with the port's own selection; the target is judged on those
(``nsa_selection_verdict``), ``rel_error`` stays the whole output's.

``ring`` runs one device of the ring (``--devices P``, several for one row set each): its P
steps on this GPU, where no K/V block travels. Its rows keep ``predicted_s`` / ``ratio`` (the
per-device prediction, link included) and add ``predicted_no_link_s`` / ``ratio_no_link``
(the prediction with ``TimingOptions(interconnect=False)``: what one GPU can measure); at
large blocks the link hides behind compute and the two agree. No SDPA time: the port
computes one device's N/P rows, not the whole attention.

Without CuPy or a device it prints one line saying the checks were skipped and why, and
exits 0: the checks are optional, not a failure.

``reports.gpu_check`` turns the rows into the report's "Measured on this GPU" section.
"""
from __future__ import annotations

import argparse
import json
import sys

from algorithms import ports
from algorithms.base import check_options
from algorithms.registry import get_algorithm
from attnsim import gpu as backend
from attnsim.errors import AttnsimError
from attnsim.inputs import make_inputs
from attnsim.reference import relative_error
from attnsim.simulate import simulate
from attnsim.workload import PASSES, Workload
from hwmodels import get_gpu
from hwmodels.timing import TimingOptions, predict_time

DEFAULT_SEQS = (1024, 2048, 4096, 8192)
DEFAULT_WORKLOAD = Workload(batch=4, heads=16, seq_q=1024, head_dim=64)
CPU_CHECK_MAX_N = 1024          # above this the CPU executed run is too slow: device fp32 reference
# Ports whose output is plain softmax attention, checkable against the device's dense reference
DENSE_EXACT = ("standard", "flash1", "flash2", "gqa")
# ... and those whose output is plain softmax attention but whose port runs only part of it
# (ring: one device's share), so that SDPA of the whole workload is not the same work
PLAIN_SOFTMAX = DENSE_EXACT + ("ring",)
FP16_TARGET = ports.ERROR_TARGETS["fp16"]   # the ports' target: rel. error < 2e-3 vs the CPU
# Algorithms with no CUDA port whose prediction is set against a production kernel of the same
# design instead (the SDPA backend named): FlashAttention-3 needs wgmma and TMA, which only a
# Hopper device can develop against; cuDNN's fused attention on Hopper is a warp-specialized
# wgmma/TMA kernel of its design. The ratio says how the model's flash3 compares with it —
# a stand-in, not a port: tiles, pipelining and scheduling are cuDNN's own.
STAND_INS = {"flash3": "cudnn"}

COLUMNS = (("algorithm", "algorithm"), ("seq", "N"), ("measured_s", "measured"),
           ("predicted_s", "predicted"), ("ratio", "pred/meas"), ("tflops", "TFLOP/s"),
           ("hbm_gbs", "HBM GB/s"), ("rel_error", "rel. error"), ("error_vs", "vs"),
           ("sdpa_s", "SDPA"), ("of_sdpa", "× SDPA speed"), ("note", "note"))


def skip_message(reason: str) -> str:
    return f"attnsim gpu-check: GPU checks skipped: {reason}"


# ---- one measurement ---------------------------------------------------------------------------

def check_one(name: str, wl: Workload, gpu, *, repeats: int = 30, cpu_max_n: int = CPU_CHECK_MAX_N,
              sdpa: bool = True, seed: int = 0, options: dict | None = None) -> dict:
    """Measure one algorithm's port on one workload; a dict with the COLUMNS keys (values
    None where not measured, ``note`` saying why; ``failed`` when the port raised).
    ``options``: the algorithm's options (mla's ``path``), named in the row's algorithm."""
    row = {key: None for key, _ in COLUMNS}
    label = " ".join([name] + [f"--{k.replace('_', '-')} {v}" for k, v in (options or {}).items()])
    row.update(algorithm=label, seq=wl.seq_k, note="", rel_errors=None)
    if name in STAND_INS:
        return stand_in_row(row, name, wl, gpu, repeats=repeats, sdpa=sdpa, seed=seed)
    module = get_algorithm(name)
    opts = check_options(module.INFO, options or {})
    try:
        plan = module.plan(wl, gpu, gpu.smem_bytes_per_block, **opts)
        sim = simulate(name, wl, gpu, compute=False, options=options)
    except ValueError as err:
        row["note"] = f"not simulated: {err}"
        return row
    row["predicted_s"] = sim.time.predicted_s
    try:
        spec = ports.port_launches(name, wl, plan, gpu=gpu)
    except ports.PortUnsupported as err:
        row["note"] = f"port skipped: {err}"
        return row
    inputs = make_inputs(wl, seed)
    reference, row["error_vs"], cpu, unchecked = error_reference(
        name, wl, gpu, plan, spec, inputs, cpu_max_n, options)
    # nsa's top-n is a discrete choice: keep the port's selection to judge it (see below)
    keep = ("sel",) if name == "nsa" and cpu is not None else ()
    try:
        run = backend.run_port(spec, inputs, reference, repeats=repeats, keep=keep)
    except Exception as err:          # a compile or launch error: record it, keep sweeping
        row.update(failed=True, note=f"FAILED: {type(err).__name__}: {err}"[:500])
        return row
    t = run.median_s
    row.update(measured_s=t, ratio=sim.time.predicted_s / t,
               tflops=sim.counts["matmul_flops"] / t / 1e12, hbm_gbs=sim.hbm_bytes / t / 1e9,
               rel_error=run.rel_error)
    notes = list(run.notes)
    if getattr(run, "rel_errors", None) and len(run.rel_errors) > 1:
        row["rel_errors"] = dict(run.rel_errors)
        notes.append("errors: " + ", ".join(f"{k} {v:.1e}" for k, v in run.rel_errors.items()))
    if reference is None:
        notes.append(unchecked)
    if sim.counts["interconnect_bytes"]:
        notes.append(without_link(row, sim, gpu, t))
    target = ports.ERROR_TARGETS[wl.dtype]
    judged = run.rel_error
    if keep:
        verdict = row["selection"] = nsa_selection_verdict(
            wl, plan, inputs, run.outputs["o"], run.outputs["sel"], cpu.outputs)
        judged = verdict["judged_error"]
        notes.append(verdict["note"])
    if judged is not None and judged >= target:
        notes.append(f"error above the {target:g} {wl.dtype} target")
    if sdpa and (name in DENSE_EXACT or name == "diff"):   # SDPA computes the same attention
        notes.extend(sdpa_columns(row, name, wl, plan, inputs, repeats, t))
    row["note"] = "; ".join(notes)
    return row


def cpu_check_cost(name: str, wl: Workload, plan) -> tuple[int, str]:
    """(the CPU run's cost per head, its name): N_q N_k; mla's (a decode step) B H N_k, its
    up-projection GEMM or its latent attention per key and head; reformer's N 2C rounds (LSH
    attention: each token meets 2C keys in each round)."""
    if name == "mla":
        return wl.batch * wl.heads * wl.seq_k, "B H N_k"
    if name == "reformer":
        return wl.seq_q * 2 * plan.bucket_size * plan.hashes, "N 2C rounds"
    return wl.seq_q * wl.seq_k, "N_q N_k"


def error_reference(name: str, wl: Workload, gpu, plan, spec, inputs, cpu_max_n: int,
                    options) -> tuple:
    """(the reference the port's outputs are held to, what it is: 'cpu', 'gpu fp32' or
    'none', the CPU run or None, the note saying why nothing is checked or None): the
    simulator's own executed run where it is small enough, else a device reference where
    the algorithm has one."""
    cost, cost_words = cpu_check_cost(name, wl, plan)
    if cost <= cpu_max_n ** 2:
        cpu = simulate(name, wl, gpu, compute=True, inputs=inputs, check=False, options=options)
        if len(spec.outputs) > 1:                     # a backward: dq, dk, dv (and o)
            return {n: cpu.outputs[spec.cpu_key(n)] for n in spec.outputs}, "cpu", cpu, None
        return cpu.outputs[spec.cpu_key(spec.output)], "cpu", cpu, None
    if name in PLAIN_SOFTMAX and not wl.has_backward:
        return backend.device_reference(wl, inputs), "gpu fp32", None, None
    if name == "mla":           # latent inputs: its definition in fp32 on the device
        return backend.mla_device_reference(wl, plan, inputs), "gpu fp32", None, None
    if name == "diff":          # not plain softmax attention: its own fp32 device reference
        return backend.diff_device_reference(wl, plan, inputs), "gpu fp32", None, None
    if name in DENSE_EXACT:
        grads = backend.device_backward_reference(wl, inputs)
        return {n: grads[n] for n in spec.outputs}, "gpu fp32", None, None
    # no device reference: only the CPU run is one, and it is too large here
    what = ("approximates softmax attention" if not get_algorithm(name).INFO.exact
            else "is not plain dense attention (no device reference for it)")
    return None, "none", None, (f"error not checked: {name} {what}, so only its CPU run is a "
                                f"reference, and {cost_words} > {cpu_max_n}² "
                                f"(--cpu-check-max-n)")


def sdpa_columns(row: dict, name: str, wl: Workload, plan, inputs, repeats: int,
                 port_s: float) -> list[str]:
    """PyTorch SDPA on the same attention, into ``row`` (its time, the port's share of it,
    each backend's time); the notes to add where it could not run."""
    if name == "diff":        # two SDPA calls + combine: the unfused formulation of diff
        row["sdpa_s"], why = backend.torch_sdpa_diff_time(wl, plan, inputs, repeats=repeats)
    else:
        row["sdpa_s"], why = backend.torch_sdpa_time(wl, inputs, repeats=repeats)
    notes = []
    if row["sdpa_s"] is None:
        notes.append(f"no SDPA: {why}")
    else:
        row["of_sdpa"] = row["sdpa_s"] / port_s          # flash2's target: >= 0.5
    if name in DENSE_EXACT:                             # each backend: which kernel is which
        row["sdpa_backends"] = sdpa_backend_times(wl, inputs, repeats)
    return notes


def nsa_selection_verdict(wl: Workload, plan, inputs, o, sel, cpu_outputs) -> dict:
    """Judge an nsa port's output where its top-n can be judged. The kernel scores blocks
    from fp16/bf16-rounded q and K̃, the simulator from fp32 values: at a near-tie of two
    blocks' scores the two may select differently, and the outputs at that position then
    differ by far more than rounding, although both are right. So: the selections are
    compared (``nsa.selection_differences``: every difference must be a near-tie of the
    float64 scores), the output against the CPU result where they agree, and everywhere
    against NSA's float64 reference run with the port's own selection.

    Returns ``positions_differing``, ``all_near_ties``, ``rel_error_where_agreeing``,
    ``rel_error_with_own_selection``, ``judged_error`` (the larger two when every difference
    is a near-tie, else the whole output's error) and ``note``."""
    from algorithms import nsa
    from attnsim.reference import attention_reference
    diff = nsa.selection_differences(wl, plan, inputs, sel, cpu_outputs["sel"])
    agree = diff.agree
    where = (relative_error(o[:, :, agree], cpu_outputs["o"][:, :, agree]) if agree.any()
             else None)
    own = relative_error(o, nsa.reference(wl, plan, inputs, attention_reference,
                                          selection=sel))
    whole = relative_error(o, cpu_outputs["o"])
    differing = int((~agree).sum())
    if not diff.all_near_ties:
        judged = whole
        note = (f"nsa selection: {int((~diff.near_tie).sum())} of {len(diff.flipped)} "
                f"differences from the CPU's top-n are not near-ties (a real disagreement); "
                f"error judged on the whole output")
    elif differing:
        judged = max(where or 0.0, own)
        agreeing = "n/a" if where is None else f"{where:.1e}"
        note = (f"nsa selection: {differing} of {wl.seq_q} positions chose other blocks, each "
                f"at a near-tie of the float64 scores; error {agreeing} where the selections "
                f"agree, {own:.1e} against the float64 reference with the port's selection "
                f"(whole output {whole:.1e})")
    else:
        judged = max(whole, own)
        note = f"nsa selection: identical to the CPU's at all {wl.seq_q} positions"
    return {"positions_differing": differing, "all_near_ties": diff.all_near_ties,
            "rel_error_where_agreeing": where, "rel_error_with_own_selection": own,
            "judged_error": judged, "note": note}


def without_link(row: dict, sim, gpu, measured_s: float) -> str:
    """For a multi-device algorithm (ring): one GPU transfers nothing, so the port measures
    one device's own kernels. Adds ``predicted_no_link_s`` (the simulation's kernels timed
    with ``TimingOptions(interconnect=False)``) and ``ratio_no_link`` to the row (``predicted_s``
    and ``ratio`` keep the full per-device prediction); returns the row's note."""
    alone = predict_time(gpu, list(sim.kernels), TimingOptions(interconnect=False)).predicted_s
    row.update(predicted_no_link_s=alone, ratio_no_link=alone / measured_s)
    hidden = alone >= row["predicted_s"] * (1 - 1e-9)
    return (f"one GPU: K/V blocks read in place, no transfer; predicted without the link "
            f"{alone * 1e3:.3f} ms, pred/meas {alone / measured_s:.2f}" +
            (" (the link hides behind compute: same prediction)" if hidden else
             f" (the link adds {(row['predicted_s'] - alone) * 1e3:.3f} ms to the prediction)"))


def sdpa_backend_times(wl: Workload, inputs, repeats: int) -> dict:
    """``{backend: {"s": median seconds or None, "why": ...}}`` over ``gpu.SDPA_BACKENDS``."""
    out = {}
    for name in backend.SDPA_BACKENDS:
        s, why = backend.torch_sdpa_time(wl, inputs, repeats=repeats, sdpa_backend=name)
        out[name] = {"s": s, "why": why}
    return out


def stand_in_row(row: dict, name: str, wl: Workload, gpu, *, repeats: int, sdpa: bool,
                 seed: int) -> dict:
    """The row of an algorithm without a port (``STAND_INS``): its prediction, and the time of
    the SDPA backend of the same design on the same workload (``stand_in``: kernel, seconds,
    predicted / stand-in). ``measured_s`` stays empty: nothing of ours ran."""
    try:
        sim = simulate(name, wl, gpu, compute=False)
    except ValueError as err:
        row["note"] = f"not simulated: {err}"
        return row
    row["predicted_s"] = sim.time.predicted_s
    kernel = STAND_INS[name]
    if not sdpa:
        row["note"] = f"no CUDA port; its stand-in, SDPA's {kernel} backend, not timed (no SDPA)"
        return row
    s, why = backend.torch_sdpa_time(wl, make_inputs(wl, seed), repeats=repeats,
                                     sdpa_backend=kernel)
    ratio = None if s is None else sim.time.predicted_s / s
    row["stand_in"] = {"kernel": f"sdpa-{kernel}", "s": s, "predicted_over_stand_in": ratio}
    row["note"] = (f"no CUDA port; stand-in: SDPA's {kernel} backend " +
                   (f"did not run ({why})" if s is None else
                    f"took {s * 1e3:.3f} ms ({why}), predicted/{kernel} = {ratio:.2f}"))
    return row


def checkable_algorithms() -> list[str]:
    """What gpu-check runs: every ported algorithm, then the stand-ins."""
    return ports.ported_algorithms() + [n for n in STAND_INS if n not in ports.PORTS]


def sweep_workload(name: str, base: Workload, n: int) -> Workload:
    """The workload of one sweep point: N_q = N_k = n; for ``gqa``, a decode step (one new
    token per sequence) over a KV cache of n tokens, with 4 query heads per KV head unless
    --kv-heads says otherwise; for ``mla``, a decode step over a latent cache of n tokens
    (DeepSeek-V2's d_c = 512, d_h^R = 64; --head-dim is d_h); for ``nsa``, a causal prefill
    (NSA rejects non-causal) with 4 query heads per KV head unless --kv-heads says otherwise."""
    if name == "gqa":
        kv = base.kv_heads
        if kv == base.heads:
            kv = base.heads // 4 if base.heads % 4 == 0 else 1
        return base.replace(seq_q=1, seq_k=n, kv_heads=kv, decode=True, causal=False)
    if name == "mla":                 # a decode step over a latent cache of n tokens
        return base.replace(seq_q=1, seq_k=n, kv_heads=base.heads, decode=True, causal=False)
    if name == "nsa":                 # causal by design (prefill), 4 query heads per KV head
        kv = base.kv_heads
        if kv == base.heads:
            kv = base.heads // 4 if base.heads % 4 == 0 else 1
        return base.replace(seq_q=n, seq_k=n, kv_heads=kv, causal=True)
    return base.replace(seq_q=n, seq_k=n)


def check_rows(gpu, base: Workload, seqs, algorithms, mla_paths=None, ring_devices=None,
               **kw) -> list[dict]:
    """One row per algorithm and N; ``mla_paths`` (e.g. ("absorbed", "upproject")): mla's
    rows once per decode path, each labelled with it (default: mla's default path);
    ``ring_devices`` (e.g. (4, 8)): ring's rows once per ring size, likewise."""
    rows = []
    for name in algorithms:
        variants = [None]
        if name == "mla" and mla_paths:
            variants = [{"path": p} for p in mla_paths]
        elif name == "ring" and ring_devices:
            variants = [{"devices": p} for p in ring_devices]
        for options in variants:
            for n in seqs:
                rows.append(check_one(name, sweep_workload(name, base, n), gpu,
                                      options=options, **kw))
    return rows


def resolve_model(hw: str):
    """(GPU model, warning or None): ``auto`` matches the device, otherwise a name/TOML path."""
    if hw == "auto":
        return backend.detect_gpu_model()
    return get_gpu(hw), None


def gpu_section_rows(gpu_name: str = "auto", base: Workload = DEFAULT_WORKLOAD,
                     seqs=DEFAULT_SEQS, algorithms=None, **kw) -> list[dict]:
    """The check rows for the report, or [] when no device (or CuPy) is available."""
    ok, _ = backend.gpu_available()
    if not ok:
        return []
    gpu, _ = resolve_model(gpu_name)
    kw.setdefault("sdpa", backend.sdpa_available()[0])
    return check_rows(gpu, base, seqs, algorithms or checkable_algorithms(), **kw)


# ---- rendering -----------------------------------------------------------------------------------

def _fmt(key, value):
    if value is None:
        return "—"
    if key in ("measured_s", "predicted_s", "sdpa_s"):
        return f"{value * 1e3:.3f} ms"
    if key in ("ratio", "of_sdpa"):
        return f"{value:.2f}"
    if key in ("tflops", "hbm_gbs"):
        return f"{value:.1f}"
    if key == "rel_error":
        return f"{value:.1e}"
    return str(value)


def table_rows(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    headers = [title for _, title in COLUMNS]
    return headers, [[_fmt(key, r[key]) for key, _ in COLUMNS] for r in rows]


def render(rows: list[dict], fmt: str, header: dict) -> str:
    if fmt == "json":
        return json.dumps({**header, "rows": rows}, indent=2, default=float)
    from tabulate import tabulate
    headers, body = table_rows(rows)
    lines = [f"device: {header['device']}; model: {header['model']}; workload: "
             f"{header['workload']}; SDPA: {header['sdpa']}"]
    env = header.get("environment") or {}
    if env:
        def show(x, fmt):
            return "?" if x is None else format(x, fmt)
        lines.append(f"max SM clock {show(env.get('sm_clock_max_mhz'), '.0f')} MHz (model: "
                     f"{header['model_clock_mhz']:.0f} sustained, "
                     f"{header['model_boost_clock_mhz']:.0f} boost); HBM peak from memory clock "
                     f"{show(env.get('hbm_peak_gbs_from_clocks'), '.0f')} GB/s (model: "
                     f"{header['model_hbm_gbs']:.0f}); CuPy {env.get('cupy')}, CUDA runtime "
                     f"{env.get('cuda_runtime')}, driver {env.get('cuda_driver')}, torch "
                     f"{env.get('torch')}")
    if header.get("warning"):
        lines.append(f"warning: {header['warning']}")
    lines.append(tabulate(body, headers=headers,
                          tablefmt="github" if fmt == "markdown" else "simple",
                          disable_numparse=True))
    return "\n".join(lines) + "\n"


def model_rates(gpu) -> dict:
    """The clock and HBM bandwidth the timing model prices the GPU at, for comparison with
    the device's own: ``model_clock_mhz`` is the clock every pipe rate is scaled by (the
    sustained clock under tensor load where the GPU has one, as ``TimingOptions`` uses by
    default), ``model_boost_clock_mhz`` the datasheet boost clock; the HBM bandwidth is the
    datasheet peak and the achievable (copy/stream) bandwidth the model charges; the L2
    bandwidth is the measured read rate the model charges L2 requests at (``gpu_microbench``
    measures the device's)."""
    return {"model_clock_mhz": gpu.sustained_clock / 1e6,
            "model_boost_clock_mhz": gpu.clock_hz / 1e6,
            "model_hbm_gbs": gpu.hbm_bandwidth_bytes_per_s / 1e9,
            "model_hbm_achievable_gbs":
                gpu.hbm_bandwidth_bytes_per_s * gpu.hbm_achievable_fraction / 1e9,
            "model_l2_achievable_gbs": gpu.l2_bytes_per_s() / 1e9}


# ---- the subcommand ------------------------------------------------------------------------------

def _environment() -> dict:
    """backend.environment(), or why it could not be read (never fails the check)."""
    try:
        return backend.environment()
    except Exception as err:
        return {"error": f"{type(err).__name__}: {err}"}


def check_flags_apply(a, names: list[str]) -> None:
    """Flags that shape one algorithm's rows need it among those checked: --path (mla) and
    --devices (ring) were dropped without a word when it was not named, and --kv-heads is
    refused for the algorithms that have no K/V heads (``run`` refuses it for them too;
    their sweep workload would replace it). Checked with or without a device."""
    for flag, value, owner in (("--path", getattr(a, "path", None), "mla"),
                               ("--devices", getattr(a, "devices", None), "ring")):
        if value and owner not in names:
            raise AttnsimError(f"{flag} applies to {owner}'s rows and {owner} is not among the "
                               f"algorithms checked ({', '.join(names)}); add {owner} or drop "
                               f"{flag}")
    if getattr(a, "kv_heads", None) is not None and a.algorithms:
        for name in names:
            why = get_algorithm(name).INFO.no_kv_heads
            if why:
                raise AttnsimError(f"{name}: --kv-heads {a.kv_heads} does not apply: {why}; "
                                   f"drop --kv-heads or check {name} separately")


def cmd_gpu_check(a) -> int:
    names = [n.strip().lower().replace("-", "_") for n in a.algorithms] or checkable_algorithms()
    unknown = [n for n in names if n not in checkable_algorithms()]
    if unknown:                       # a typo is an error even where the checks would be skipped
        raise ValueError(f"no GPU port for {', '.join(unknown)}; ported: "
                         f"{', '.join(ports.ported_algorithms())}; set against an SDPA "
                         f"stand-in: {', '.join(STAND_INS)}")
    check_flags_apply(a, names)
    if a.hw != "auto":
        get_gpu(a.hw)                 # an unknown GPU or a bad file: an error with or without one
    if a.algorithms:                  # a pass the named algorithm does not have
        for name in names:
            has = set(get_algorithm(name).INFO.passes)
            if not set(a.passes.split("+")) <= has:
                raise ValueError(f"{name} simulates passes {', '.join(sorted(has))}; --pass "
                                 f"{a.passes} is not available for it")
    ok, device = backend.gpu_available()
    if not ok:
        _write(a, json.dumps({"skipped": device}, indent=2) + "\n" if a.format == "json"
               else skip_message(device) + "\n")
        return 0
    gpu, warning = resolve_model(a.hw)
    sdpa_ok, sdpa_why = (False, "--no-sdpa") if a.no_sdpa else backend.sdpa_available()
    base = Workload(batch=a.batch, heads=a.heads, kv_heads=a.kv_heads, seq_q=a.seq[0],
                    head_dim=a.head_dim, causal=a.causal, dtype=a.dtype, passes=a.passes)
    rows = check_rows(gpu, base, a.seq, names, mla_paths=a.path, ring_devices=a.devices,
                      repeats=a.repeats,
                      cpu_max_n=a.cpu_check_max_n, sdpa=sdpa_ok)
    header = {"device": device, "model": gpu.name, "warning": warning, "sdpa": sdpa_why,
              "workload": base.describe().replace(f"N={base.seq_q}", "N swept"),
              "passes": base.passes,
              "environment": _environment(),
              **model_rates(gpu)}
    _write(a, render(rows, a.format, header))
    failed = [f"{r['algorithm']} N={r['seq']}" for r in rows if r.get("failed")]
    if failed:
        print(f"attnsim gpu-check: {len(failed)} port run(s) failed: {', '.join(failed)}",
              file=sys.stderr)
    return 1 if failed else 0


def _write(a, text: str) -> None:
    """To --output, or stdout: the results, or (no device) that the checks were skipped, in
    the format asked for."""
    if a.output:
        with open(a.output, "w", encoding="utf-8") as fh:
            fh.write(text)
    else:
        sys.stdout.write(text)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``gpu-check`` on the CLI's subparsers."""
    p = subparsers.add_parser(
        "gpu-check", help="run the CUDA ports on this GPU: measured vs predicted",
        description="Run the CUDA ports of the algorithms on the local GPU (CuPy) and compare "
                    "measured times with the simulator's predictions. Skipped, with exit "
                    "status 0, when CuPy or a CUDA device is missing.")
    p.add_argument("algorithms", nargs="*", metavar="ALGOS",
                   help=f"ported algorithms (default: all): {', '.join(ports.PORTS)}; and "
                        f"{', '.join(STAND_INS)}, set against an SDPA backend of its design")
    p.add_argument("--hw", default="auto",
                   help="GPU model for the predictions: auto (match the device) or a name/.toml")
    p.add_argument("--seq", type=int, nargs="+", default=list(DEFAULT_SEQS),
                   help="sequence lengths N to sweep")
    p.add_argument("--batch", type=int, default=DEFAULT_WORKLOAD.batch)
    p.add_argument("--heads", type=int, default=DEFAULT_WORKLOAD.heads)
    p.add_argument("--kv-heads", type=int, default=None)
    p.add_argument("--head-dim", type=int, default=DEFAULT_WORKLOAD.head_dim)
    p.add_argument("--causal", action="store_true")
    p.add_argument("--dtype", default="fp16", choices=ports.STORAGE_DTYPES,
                   help="storage type of Q, K, V, O (the ports build for fp16 or bf16)")
    p.add_argument("--pass", dest="passes", default="fwd", choices=PASSES,
                   help="passes to run and predict: fwd, bwd (the backward alone: O and lse "
                        "from an untimed forward) or fwd+bwd; backward: flash2, flash1, standard")
    p.add_argument("--path", nargs="+", default=None, choices=("absorbed", "upproject"),
                   help="mla's decode path(s) to check (default: absorbed); both: one row set "
                        "each, labelled 'mla --path ...'")
    p.add_argument("--devices", type=int, nargs="+", default=None,
                   help="ring's ring size(s) P to check (default: ring's default, 8); several: "
                        "one row set each, labelled 'ring --devices P'")
    p.add_argument("--repeats", type=int, default=30, help="timed repeats (median reported)")
    p.add_argument("--cpu-check-max-n", type=int, default=CPU_CHECK_MAX_N,
                   help="check against the CPU simulation up to N_q·N_k (mla: B·H·N_k) = "
                        "this squared (above: against a float32 reference on the device)")
    p.add_argument("--no-sdpa", action="store_true", help="do not time PyTorch SDPA")
    p.add_argument("--format", default="text", choices=("text", "json", "markdown"))
    p.add_argument("--output", "-o", default=None, help="write to this file instead of stdout")
    p.set_defaults(func=cmd_gpu_check)
    return p
