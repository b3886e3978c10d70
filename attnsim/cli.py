"""Command line: ``python -m attnsim {list,run,report,gpu-check}`` (also the ``attnsim`` script).

User errors print one line, ``attnsim: error: ...``, and exit with status 2. Anything else
is a bug and says so in one line, with status 1; ``--debug`` (or ATTNSIM_DEBUG=1) shows the
traceback too (a bug then ends as Python ends it; bad input keeps status 2).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
import traceback

from algorithms.base import Option
from algorithms.registry import algorithm_names, get_algorithm
from attnsim.errors import AttnsimError
from attnsim.inputs import FAMILIES, make_inputs
from attnsim.simulate import simulate
from attnsim.validate import (MAX_SEED, check_gpu_check_flags, check_host_memory, check_int,
                              check_seqs, check_writable, flag_names, sram_budget_bytes)
from attnsim.workload import PASSES, Workload
from hwmodels.gpus import GPUS, gpu_names
from hwmodels import get_gpu
from hwmodels.timing import TimingOptions

OUTPUT_FORMATS = ("text", "markdown", "json", "csv")


# ---- shared argument groups ----------------------------------------------------------------

def add_hw_args(p: argparse.ArgumentParser, default="h100") -> None:
    p.add_argument("--hw", default=default,
                   help=f"GPU: {', '.join(gpu_names())}, or a path to a .toml file "
                        f"(default {default})")
    p.add_argument("--sram-kb", type=float, default=None,
                   help="per-CTA SRAM budget M in KiB (default: the GPU's shared memory per "
                        "block); smaller values explore Theorem 2's N²d²/M")


def add_workload_args(p: argparse.ArgumentParser, defaults: Workload) -> None:
    g = p.add_argument_group("workload")
    g.add_argument("--batch", type=int, default=defaults.batch)
    g.add_argument("--heads", type=int, default=None,
                   help=f"query heads (default {defaults.heads}, or the --model's)")
    g.add_argument("--kv-heads", type=int, default=None,
                   help="key/value heads (GQA groups; 1 = MQA; default = --heads)")
    g.add_argument("--seq", type=int, default=defaults.seq_q,
                   help="sequence length N (with --decode: the KV-cache length)")
    g.add_argument("--seq-k", type=int, default=None, help="key length (default = --seq)")
    g.add_argument("--head-dim", type=int, default=None,
                   help=f"head dim d (default {defaults.head_dim}, or the --model's)")
    g.add_argument("--dtype", default=defaults.dtype, choices=("fp16", "bf16", "fp32", "fp8"))
    g.add_argument("--causal", action="store_true", default=defaults.causal)
    g.add_argument("--scale", type=float, default=None, help="softmax scale (default 1/sqrt(d))")
    g.add_argument("--pass", dest="passes", default=defaults.passes, choices=PASSES,
                   help="forward, backward or both (training)")
    g.add_argument("--dropout", type=float, default=defaults.dropout,
                   help="dropout probability on P (training)")
    g.add_argument("--model", default=None,
                   help="model preset (see 'attnsim list') or a model .toml file: sets heads, "
                        "kv heads and head dim; with gqa and mla, adds KV-cache and per-token "
                        "decode figures")
    g.add_argument("--decode", action="store_true",
                   help="one decode step: --new-tokens queries per sequence against a KV "
                        "cache of --seq tokens")
    g.add_argument("--new-tokens", type=int, default=None,
                   help="with --decode: new tokens per sequence (default 1; several attend "
                        "causally, as in speculative decoding)")
    p.set_defaults(workload_defaults=defaults)


def workload_from_args(a) -> Workload:
    from attnsim.models import get_model, shape_from_model
    model = get_model(a.model) if getattr(a, "model", None) is not None else None
    heads, kv_heads, head_dim = shape_from_model(
        model, heads=a.heads, kv_heads=a.kv_heads, head_dim=a.head_dim,
        defaults=getattr(a, "workload_defaults", Workload()))
    decode, new_tokens = getattr(a, "decode", False), getattr(a, "new_tokens", None)
    seq_q, seq_k, causal = a.seq, a.seq_k, a.causal
    if new_tokens is not None and not decode:
        raise AttnsimError("--new-tokens applies to --decode; add --decode or drop it")
    if decode:
        if a.seq_k is not None:
            raise AttnsimError("with --decode, --seq is the KV-cache length and --new-tokens "
                               "the query length; drop --seq-k")
        seq_q, seq_k = (1 if new_tokens is None else new_tokens), a.seq
        if getattr(a, "passes", "fwd") != "fwd":
            raise AttnsimError(f"--decode is one inference step, forward only: drop --pass "
                               f"{a.passes}")
        causal = causal or (isinstance(seq_q, int) and seq_q > 1)
    with flag_names(_workload_flags(a, model, decode)):
        wl = Workload(batch=a.batch, heads=heads, kv_heads=kv_heads, seq_q=seq_q,
                      seq_k=seq_k, head_dim=head_dim, dtype=a.dtype, causal=causal,
                      scale=a.scale, passes=a.passes, dropout=a.dropout, decode=decode,
                      model=model)
    if decode and wl.seq_q > wl.seq_k:
        raise AttnsimError(f"--new-tokens {wl.seq_q:,} exceeds --seq {wl.seq_k:,}: with --decode "
                           f"--seq is the KV cache including the new tokens (the last "
                           f"{wl.seq_q:,} of it); give --seq at least {wl.seq_q:,}")
    return wl


def _workload_flags(a, model, decode: bool) -> dict:
    """Workload field -> what the user typed to set it, for error messages."""
    from_model = f"--model {getattr(model, 'name', '')}'s " if model is not None else None
    return {"batch": "--batch", "dropout": "--dropout", "scale": "--scale",
            "heads": f"{from_model}heads" if from_model and a.heads is None else "--heads",
            "kv_heads": (f"{from_model}kv_heads" if from_model and a.kv_heads is None
                         else "--kv-heads" if a.kv_heads is not None else "--heads"),
            "head_dim": (f"{from_model}head_dim" if from_model and a.head_dim is None
                         else "--head-dim"),
            "seq_q": "--new-tokens" if decode else "--seq",
            "seq_k": "--seq" if decode or a.seq_k is None else "--seq-k"}


def sram_bytes_from_args(a, gpu) -> int | None:
    return sram_budget_bytes(a.sram_kb, gpu.smem_bytes_per_block)


def add_output_args(p, formats=OUTPUT_FORMATS) -> None:
    p.add_argument("--format", default="text", choices=formats)
    p.add_argument("--output", "-o", default=None, help="write to this file instead of stdout")


def emit(text: str, output: str | None) -> None:
    if output:
        write_output(output, text)
        print(f"wrote {output}", file=sys.stderr)
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


def write_output(path: str, text: str, flag: str = "--output") -> None:
    """Write ``text`` to ``path``; a one-line error naming ``flag`` when the file cannot be
    written (a directory, no permission, a full disk)."""
    try:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:
        raise AttnsimError(f"{flag} {path!r} cannot be written: "
                           f"{exc.strerror or exc}") from None


# ---- list ----------------------------------------------------------------------------------

def cmd_list(a) -> int:
    from tabulate import tabulate
    from algorithms.ports import PORTS
    from attnsim.gpu_check import STAND_INS
    algos = []
    for name in algorithm_names():
        info = get_algorithm(name).INFO
        stand_in = STAND_INS.get(name)
        algos.append({"name": name, "title": info.title, "paper": info.paper, "exact": info.exact,
                      "io_bound": info.io_bound, "passes": list(info.passes),
                      "options": [{"flag": o.flag, "default": o.default, "help": o.help}
                                  for o in info.options],
                      # what `gpu-check` runs: a CUDA port, or an SDPA backend as stand-in
                      "gpu_port": name in PORTS,
                      "gpu_stand_in": f"sdpa-{stand_in}" if stand_in else None})
    gpus = [{"name": g.name, "full_name": g.full_name, "sm_count": g.sm_count,
             "hbm_bandwidth_bytes_per_s": g.hbm_bandwidth_bytes_per_s,
             "tensor_fp16_flops_per_s": g.tensor_fp16_flops_per_s,
             "smem_bytes_per_block": g.smem_bytes_per_block} for g in GPUS.values()]
    extra = _list_extras()
    if a.format == "json":
        data = {k: v for k, v in extra.items() if not k.startswith("_")}
        emit(json.dumps({"algorithms": algos, "gpus": gpus, **data}, indent=2), a.output)
        return 0
    text = ["Algorithms", tabulate(
        [[x["name"], x["title"], x["paper"], "yes" if x["exact"] else "no", x["io_bound"],
          ",".join(x["passes"]), _gpu_column(x), " ".join(o["flag"] for o in x["options"]) or "—"]
         for x in algos],
        headers=["name", "algorithm", "paper", "exact", "IO bound", "passes", "GPU port",
                 "options"]),
        "", "GPUs", tabulate(
        [[g["name"], g["full_name"], g["sm_count"], f"{g['hbm_bandwidth_bytes_per_s'] / 1e12:.2f} TB/s",
          f"{g['tensor_fp16_flops_per_s'] / 1e12:.0f} TFLOP/s",
          f"{g['smem_bytes_per_block'] // 1024} KiB"] for g in gpus],
        headers=["name", "GPU", "SMs", "HBM", "fp16 dense", "smem/block"])]
    for title, rows, headers in extra.get("_tables", []):
        text += ["", title, tabulate(rows, headers=headers)]
    emit("\n".join(text), a.output)
    return 0


def _gpu_column(x: dict) -> str:
    if x["gpu_port"]:
        return "yes"
    return f"no (vs {x['gpu_stand_in']})" if x["gpu_stand_in"] else "no"


def _list_extras() -> dict:
    """Hook for other listings (model presets); returns {} when there are none."""
    from attnsim.models import presets_listing
    return presets_listing()


# ---- run -----------------------------------------------------------------------------------

def algorithm_option_parser(name: str) -> argparse.ArgumentParser:
    info = get_algorithm(name).INFO
    p = OneLineArgumentParser(prog=f"attnsim run {name}", add_help=False)
    for opt in info.options:
        add_option(p, opt)
    return p


def add_option(p: argparse.ArgumentParser, opt: Option) -> None:
    if opt.type is bool:
        p.add_argument(opt.flag, dest=opt.name, action="store_true", default=None, help=opt.help)
    else:
        p.add_argument(opt.flag, dest=opt.name, type=opt.type, default=None,
                       choices=opt.choices, help=opt.help)


def cmd_run(a, extra_args: list[str]) -> int:
    from reports.run_view import run_document
    info = get_algorithm(a.algorithm).INFO
    opt_parser = algorithm_option_parser(a.algorithm)
    opts, unknown = opt_parser.parse_known_args(extra_args)
    if unknown:
        valid = ", ".join(o.flag for o in info.options) or "none"
        raise ValueError(f"unrecognized argument(s) for {info.name}: {' '.join(unknown)}; "
                         f"its own options: {valid} (see 'attnsim list')")
    options = {k: v for k, v in vars(opts).items() if v is not None}
    check_int(a.input_seed, "--input-seed", 0, MAX_SEED)   # before numpy sees it
    if info.no_kv_heads and a.kv_heads is not None:
        # the report runs such an algorithm on its GQA workload, whose K/V heads it has no
        # use for; a user who types the flag would see it echoed and ignored
        raise AttnsimError(f"{info.name}: --kv-heads {a.kv_heads} does not apply: "
                           f"{info.no_kv_heads}; drop --kv-heads")
    gpu = get_gpu(a.hw)
    wl = workload_from_args(a)
    if info.no_kv_heads and wl.kv_heads != wl.heads and info.name != "mla":
        # the K/V heads came from --model (a typed --kv-heads is refused above); mla's
        # own check (simulate) says which algorithm a GQA model is for
        raise AttnsimError(f"{info.name}: --model {wl.model.name} has {wl.kv_heads} K/V "
                           f"heads for {wl.heads} query heads, which {info.name} cannot "
                           f"use: {info.no_kv_heads}; give --heads and --head-dim instead "
                           f"of --model")
    sram_bytes = sram_bytes_from_args(a, gpu)
    if not a.count_only:
        check_host_memory(wl)                     # before drawing the inputs
        warn_if_executed_work_is_large(a.algorithm, wl, gpu, sram_bytes, options, a.input_seed)
    inputs = None if a.count_only else make_inputs(wl, a.input_seed, family=a.inputs)
    result = simulate(a.algorithm, wl, gpu,
                      compute=not a.count_only, sram_bytes=sram_bytes,
                      options=options, seed=a.input_seed, inputs=inputs,
                      timing=timing_from_args(a))
    if inputs is not None:
        result = dataclasses.replace(result, extra={
            **result.extra, "inputs": {"family": a.inputs, "seed": a.input_seed}})
    from attnsim.fp8_error import attach_variant_errors
    attach_variant_errors(result)
    warn_if_it_does_not_fit(result)
    warn_if_the_model_does_not_fit(result)
    emit(run_document(result).render(a.format), a.output)
    warn_if_ill_conditioned(result)
    return 0


# Arithmetic (counted FLOPs and elementwise ops) from which an executed run takes tens of
# seconds to minutes: executed mode does each one in float32 on the CPU, and the rate
# depends on the algorithm (on two cores: flash2 at N = 8192, 16 heads, d = 64, 2.8e11 in
# 22 s; performer's default run, 9.2e9 in 9 s: about 1e9 a second).
EXECUTED_WORK_WARNING = 2.5e11


def warn_if_executed_work_is_large(algorithm, wl, gpu, sram_bytes, options, seed) -> None:
    """One line on stderr before a long executed run starts, naming ``--count-only``, which
    gives the same counts and predicted times without the arithmetic. The work comes from a
    count-only pass of the same run (the same loops without data: a small fraction of the
    executed run's time), not from a guess per algorithm."""
    counts = simulate(algorithm, wl, gpu, compute=False, sram_bytes=sram_bytes,
                      options=options, seed=seed).counts
    work = sum(counts.get(k, 0) for k in ("matmul_flops", "other_flops", "exp_ops", "alu_ops"))
    if work >= EXECUTED_WORK_WARNING:
        print(f"attnsim: warning: executed mode will do {work:.2e} counted operations in "
              f"float32 on this CPU, tens of seconds to minutes by algorithm; --count-only "
              f"gives the same counts and predicted times without the arithmetic",
              file=sys.stderr)


def warn_if_it_does_not_fit(result) -> None:
    """One line on stderr when the run's HBM footprint exceeds the GPU's memory (the counts
    are still printed: they are what the run would move on a GPU that held it)."""
    m = result.memory
    if not m or m["fits"]:
        return
    from reports.format import nbytes
    longest = m["max_seq_that_fits"]
    print(f"attnsim: warning: {result.algorithm} needs {nbytes(m['peak_bytes'])} of HBM "
          f"at its peak ({m['largest_at_peak']} is the largest tensor), more than "
          f"{result.gpu.full_name}'s {nbytes(m['capacity_bytes'])}; counts are printed "
          f"anyway; " + (f"the longest sequence that fits is {longest:,}" if longest else
                         "no sequence length fits this workload"), file=sys.stderr)


def warn_if_the_model_does_not_fit(result) -> None:
    """One line on stderr when a --model run's weights, or its weights and the KV cache of
    the workload's batch and context, exceed the GPU's memory: the attention footprint
    (``warn_if_it_does_not_fit``) is one layer's call, and a decode step's time per token
    then describes a GPU that could hold the whole model."""
    kv = result.extra.get("kv_cache") or {}
    if kv.get("weights_bytes") is None:
        return
    from reports.format import nbytes
    weights, cache, hbm = kv["weights_bytes"], kv["bytes_total"], kv["hbm_bytes"]
    if weights + cache <= hbm:
        return
    what = (f"its weights alone ({nbytes(weights)})" if weights > hbm else
            f"its weights ({nbytes(weights)}) and the KV cache of {kv['batch']:,} "
            f"sequence(s) of {kv['context_tokens']:,} tokens ({nbytes(cache)})")
    print(f"attnsim: warning: {kv['model']}: {what} exceed {result.gpu.full_name}'s "
          f"{nbytes(hbm)} of HBM; the figures are those of a GPU that could hold them "
          f"(kv_cache.tokens_that_fit: {kv['tokens_that_fit']:,})", file=sys.stderr)


def warn_if_ill_conditioned(result) -> None:
    """One line on stderr when the logits make the executed error's comparison with the
    float64 reference ill-conditioned (``attnsim.conditioning``; the figures are in the
    output's ``error_conditioning``). After the output, so that a run that fails to write it
    still ends with its one error line."""
    warning = (result.extra.get("error_conditioning") or {}).get("warning")
    if warning:
        print(f"attnsim: warning: {warning}", file=sys.stderr)


def add_timing_args(p) -> None:
    g = p.add_argument_group("timing model (switch mechanisms off to see their effect)")
    for flag, help_ in (("overlap", "softmax/GEMM overlap of kernels that declare it"),
                        ("memory-overlap", "memory time hidden behind compute"),
                        ("wave-quantization", "CTA waves and causal imbalance"),
                        ("launch-overhead", "per-kernel launch cost"),
                        ("tc-path-derate", "mma.sync below peak on Hopper"),
                        ("l2-cache", "re-reads served by L2 when the working set fits"),
                        ("separate-sfu", "exp on the special-function units"),
                        ("interconnect", "peer transfers of multi-device algorithms (ring)"),
                        ("achievable-rates", "measured GEMM/copy/L2 rates and sustained clock "
                                             "(off: datasheet peaks)"),
                        ("pipe-model", "issue rate and GEMM-softmax dependency chains (off: "
                                       "sum or max of the terms)"),
                        ("smem-bandwidth", "shared-memory traffic at 128 B/clk/SM"),
                        ("cta-fixed-costs", "per-CTA prologue (DRAM latency, pipeline fill)"),
                        ("cta-epilogue", "per-CTA epilogue (normalize, convert and stage the "
                                         "output through shared memory, in turn)"),
                        ("latency-bound-memory", "Little's law for thin grids"),
                        ("loaded-latency", "the DRAM latency under a kernel's own load: "
                                           "streaming kernels whose threads hold one round "
                                           "in flight (PyTorch's elementwise loops) wait a "
                                           "round trip at it a round, and staged loads wait "
                                           "it (off: streams at the copy bandwidth, staged "
                                           "loads at the unloaded latency)"),
                        ("launch-pipeline", "launches overlapping earlier kernels"),
                        ("l2-atomics", "fp32 atomics at the L2 atomic rate"),
                        ("lockstep-ctas", "resident CTAs running in phase (off: each "
                                          "resident CTA hides the others' softmax and "
                                          "their successors' first loads)"),
                        ("sector-use", "uncoalesced reads moving whole 32-byte sectors "
                                       "from L2"),
                        ("alu-pipe", "max/compare/select and fp32 conversions on the ALU "
                                     "pipe (off: all elementwise ops on the FMA pipe, "
                                     "conversions free)"),
                        ("exchange-phase", "split-K warps summing their partials through "
                                           "shared memory as a phase of the dependency "
                                           "chain (off: hidden behind the MMAs)"),
                        ("step-latency", "a tile step's wait on its instructions' latencies "
                                         "(MMA, shared memory, exp, dependent fp32 ops) "
                                         "beyond the pipes' busy time"),
                        ("sync-latency", "of that wait, the warps' shuffles and barriers "
                                         "at their measured latencies (off: free)"),
                        ("staged-load-latency", "of that wait, the latency of global loads "
                                                "a step stages through registers that the "
                                                "work between issue and use does not cover "
                                                "(off: free)"),
                        ("own-gemm-overlap", "the share of a softmax a kernel issues while "
                                             "its own GEMMs are in flight run beside them "
                                             "(off: the whole softmax waits for them)"),
                        ("accurate-math", "the instructions of the accurate expf and IEEE "
                                          "division a kernel built without fast math "
                                          "(PyTorch's) runs (off: one op each, as counted)"),
                        ("row-padding", "MMAs and softmax on a kernel's whole row tiles, the "
                                        "rows past the sequence included (a decode step's "
                                        "one query row costs a whole tile; off: the rows "
                                        "counted only)")):
        g.add_argument(f"--no-{flag}", action="store_true", help=f"disable: {help_}")


def timing_from_args(a) -> TimingOptions:
    """Every mechanism on unless its --no-<name> flag is given."""
    return TimingOptions(**{f.name: not getattr(a, f"no_{f.name}")
                            for f in dataclasses.fields(TimingOptions)})


# ---- report --------------------------------------------------------------------------------

def _refuse_repeated_gpus(given_names: list[str], gpus: list) -> None:
    """A GPU named twice (h100,h100, or h100 and its alias h100-sxm) would be compared with
    itself, column for column; two files with the same name could not be told apart."""
    seen = {}
    for given, gpu in zip(given_names, gpus):
        if gpu.name in seen:
            raise AttnsimError(f"--hw names {gpu.name} twice ({seen[gpu.name]} and {given}); "
                               f"list each GPU once (a GPU file with another 'name' to "
                               f"compare variants)")
        seen[gpu.name] = given


def cmd_report(a) -> int:
    from attnsim import suite
    from reports.report import build_report
    given = [h.strip() for h in a.hw.split(",") if h.strip()]
    gpus = [get_gpu(h) for h in given]
    if not gpus:
        raise ValueError("--hw needs a GPU name, e.g. --hw h100 or --hw a100,h100,h200")
    _refuse_repeated_gpus(given, gpus)
    document_out = _document_output(a)
    _report_refuse_clashing_outputs(a, document_out)
    wl = workload_from_args(a)
    seqs = parse_seqs(a.seqs)
    names = None
    if a.algorithms is not None:
        # each named once, in the order given; an empty list is a slip, not "all"
        names = list(dict.fromkeys(n.strip() for n in a.algorithms.split(",") if n.strip()))
        if not names:
            raise AttnsimError("--algorithms names no algorithm; give a comma-separated "
                               "list (see 'attnsim list') or drop it for all")
    for n in names or []:
        get_algorithm(n)
    # one budget for every GPU compared: it must fit the smallest one
    sram = sram_bytes_from_args(a, min(gpus, key=lambda g: g.smem_bytes_per_block))
    if len(gpus) > 1:
        return _report_comparison(a, gpus, wl, names, sram, document_out)
    gpu = gpus[0]
    n_algos = len(names or algorithm_names())
    side = _report_side_tasks(a, gpu, wl, names, seqs, sram)
    progress = _progress(n_algos + len(side))
    rows, series = suite.sweep(gpu, wl, seqs, names, sram_bytes=sram,
                               accuracy=not a.no_accuracy,
                               jobs=a.jobs or suite.default_jobs(),
                               progress=progress.update, side_tasks=side)
    sections, data, approx_sections = _report_sweeps(gpu, wl, rows, side)
    progress.close()
    more, more_data = _report_extras(gpu, side)
    doc = build_report(gpu, wl, rows, series, sram_bytes=sram,
                       accuracy_workload=None if a.no_accuracy else
                       suite.ACCURACY_WORKLOAD.replace(head_dim=wl.head_dim, dtype=wl.dtype),
                       extra_sections=sections + more + approx_sections,
                       extra_data={**data, **more_data})
    _emit_report(a, doc, document_out)
    if a.plot:
        from reports.plots import growth_plot
        try:
            growth_plot(series, gpu, a.plot)
        except OSError as exc:
            raise AttnsimError(f"--plot {a.plot!r} cannot be written: "
                               f"{exc.strerror or exc}") from None
        print(f"wrote {a.plot}", file=sys.stderr)
    return 0


def _document_output(a) -> bool:
    """Whether --output names a document with figures (.md, .html) rather than a file in
    --format (an explicit --format json or csv wins); --svg needs such a document."""
    doc = bool(a.output) and a.format in ("text", "markdown") and os.path.splitext(
        a.output)[1].lower() in (".md", ".markdown", ".html", ".htm")
    if a.svg and not doc:
        raise ValueError("--svg writes figures beside a document: give --output "
                         "DIR/report.md or DIR/report.html")
    return doc


def _report_refuse_clashing_outputs(a, document_out: bool) -> None:
    """Before computing: --plot and --output naming one file (the figure would overwrite the
    report), and a document whose figures folder (DIR/report/ of DIR/report.md) is a file,
    which would fail only once the whole report has been computed."""
    if a.plot and a.output and os.path.realpath(a.plot) == os.path.realpath(a.output):
        raise AttnsimError(f"--plot and --output both name {a.output!r}: the growth figure "
                           f"would overwrite the report; give --plot another file")
    if not document_out:
        return
    from reports.document import figures_folder, matplotlib_available
    folder = figures_folder(a.output)
    if a.plot and os.path.dirname(os.path.realpath(a.plot)) == os.path.realpath(folder):
        # the document rewrites its figures there: --plot could collide with one of them
        raise AttnsimError(f"--plot {a.plot!r} is inside {folder!r}, the folder --output "
                           f"{a.output!r} writes its figures into; give --plot a path "
                           f"outside it")
    if os.path.exists(folder) and not os.path.isdir(folder) and matplotlib_available():
        raise AttnsimError(f"--output {a.output!r} writes its figures into the folder "
                           f"{folder!r}, which is a file; move or remove that file, or give "
                           f"--output another name")


def _emit_report(a, doc, document_out: bool) -> None:
    if not document_out:
        emit(doc.render(a.format), a.output)
        return
    from reports.document import matplotlib_available, write_document
    try:
        written = write_document(doc, a.output, svg=a.svg)
    except OSError as exc:
        raise AttnsimError(f"--output {a.output!r} cannot be written: "
                           f"{exc.strerror or exc}") from None
    print(f"wrote {a.output}" + (f" and {len(written) - 1} figure files beside it"
                                 if len(written) > 1 else ""), file=sys.stderr)
    if not matplotlib_available():
        print("attnsim: no figures: matplotlib is not installed (pip install -e '.[plot]')",
              file=sys.stderr)


def _report_side_tasks(a, gpu, wl, names, seqs, sram) -> dict:
    """The report's sweeps besides the per-algorithm ones, as (function, args) the sweep's
    workers run: throughput against N, the approximations' error against cost, where each
    algorithm was designed to win (for the algorithms the report covers), decoding, FP8
    errors, the longest context that fits and the decode paths. In workers, a first run
    compiles their kernels beside the algorithms' own."""
    from attnsim import suite
    chosen = set(names or algorithm_names())
    tasks = {}
    tp_names = [n for n in suite.THROUGHPUT_ALGORITHMS if n in chosen]
    if tp_names:
        tasks["throughput"] = (suite.throughput_sweep, (gpu, wl, seqs, tp_names,
                                                        suite.THROUGHPUT_DTYPES, sram))
    if not a.no_accuracy and chosen & set(suite.APPROX_KNOBS):
        tasks["approx_cost_accuracy"] = (suite.approx_cost_accuracy, (gpu, wl, chosen, sram))
    points = [p for p in suite.design_points() if p.algorithm in chosen]
    if points:
        tasks["designed_to_win"] = (suite.run_design_points, (gpu, points))
    from attnsim.approx_sweep import SWEEP_OPTION, family_error_table, kernel_mse
    if not a.no_accuracy and chosen & set(SWEEP_OPTION):
        tasks["approx_error_by_family"] = (family_error_table, (gpu,))
        tasks["performer_kernel_mse"] = (kernel_mse, (16, 16, 2000))
    if "sparse_transformer" in chosen:
        from attnsim.sparse_compare import sparse_transformer_layouts
        seqs_shown = seqs[::-2][:3][::-1]           # the growth table's N: 4K, 16K, 64K
        tasks["sparse_transformer_layouts"] = (sparse_transformer_layouts,
                                               (gpu, wl, seqs_shown, sram))
    from reports.decode import decode_paths_section, decode_section
    from reports.fp8 import fp8_section
    from reports.memory import longest_context_section
    tasks["decode"] = (decode_section, (gpu, wl))
    if "flash3" in chosen and gpu.has_wgmma and not a.no_accuracy:
        tasks["fp8"] = (fp8_section, (gpu, wl))
    tasks["memory"] = (longest_context_section, (gpu, wl, names, sram))
    tasks["decode_paths"] = (decode_paths_section, (gpu, wl))
    return tasks


def _report_sweeps(gpu, wl, rows, side: dict):
    """The sections of the side tasks' results (``_report_side_tasks``)."""
    from reports import designed, sweeps
    sections, data = [], {}
    records = _report_side_result(side, "throughput", sweeps.THROUGHPUT_HEADING, sections,
                                  data)
    if records is not None:
        sec = sweeps.throughput_section(records, gpu, wl)
        if sec is not None:
            sections.append(sec)
            data["throughput"] = records
    records = _report_side_result(side, "approx_cost_accuracy", sweeps.APPROX_HEADING,
                                  sections, data)
    if records is not None:
        exact = next((r.result for r in rows if r.name == "flash2" and r.result), None)
        sec = sweeps.approx_section(records, gpu, exact)
        if sec is not None:
            sections.append(sec)
            data["approx_cost_accuracy"] = records
    points = _report_side_result(side, "designed_to_win", designed.HEADING, sections, data)
    if points is not None:
        sec, records = designed.designed_section(points, gpu, wl)
        sections.append(sec)
        data["designed_to_win"] = records
    approx_sections, approx_data = _approx_sections(side, wl)
    return sections, {**data, **approx_data}, approx_sections


def _report_comparison(a, gpus, wl, names, sram, document_out) -> int:
    """--hw a100,h100,...: every algorithm's predicted time and bound per GPU, side by side."""
    from attnsim import suite
    from reports.compare import build_comparison
    if a.plot:
        raise ValueError("--plot draws one GPU's growth figure: give one --hw, or use "
                         "--output DIR/report.md for the comparison's figures")
    from reports.compare import designed_comparison_section
    progress = _progress((len(names or algorithm_names()) + 1) * len(gpus))
    rows_by_gpu = [suite.run_all(g, wl, names, sram_bytes=sram, accuracy=False,
                                 progress=progress.update1) for g in gpus]
    chosen = set(names or algorithm_names())
    points_by_gpu = []
    for g in gpus:
        points_by_gpu.append(suite.run_design_points(
            g, [p for p in suite.design_points() if p.algorithm in chosen]))
        progress.update1()
    progress.close()
    sections, data = [], {}
    if points_by_gpu[0]:
        sections.append(designed_comparison_section(gpus, points_by_gpu))
        data["designed_to_win"] = sections[-1].tables[0].records
    doc = build_comparison(gpus, wl, rows_by_gpu, sections, data)
    _emit_report(a, doc, document_out)
    return 0


def _report_extras(gpu, side: dict):
    """Sections other capabilities add to the report (GPU cross-checks, decode, FP8, memory),
    the simulated ones from the side tasks' results (``_report_side_tasks``)."""
    from reports.gpu_check import gpu_check_section
    sections, data = [], {}
    sec = gpu_check_section(gpu)
    if sec is not None:
        sections.append(sec[0])
        data["gpu_check"] = sec[1]
    from reports import decode, fp8, memory
    from reports.document import Figure
    from reports.plots import decode_figure
    for key, heading in (("decode", decode.DECODE_HEADING), ("fp8", fp8.HEADING),
                         ("memory", memory.HEADING), ("decode_paths", decode.PATHS_HEADING)):
        result = _report_side_result(side, key, heading, sections, data)
        if result is None:
            continue
        sec, sec_data = result
        if key == "decode":
            sec.figures.append(Figure("decode", "Decoding: attention time per generated "
                                      "token against the context length",
                                      lambda records=sec_data: decode_figure(records, gpu)))
        sections.append(sec)
        data[key] = sec_data
    return sections, data


def _report_side_result(side: dict, key: str, heading: str, sections: list, data: dict):
    """The side task's result, or None when it was not run or the workload or GPU ruled it
    out (``suite.Skipped``): then its section is its heading and the reason, and its JSON
    the reason, so the rest of the report stands."""
    from attnsim.suite import Skipped
    from reports.document import left_out_section
    result = side.get(key)
    if isinstance(result, Skipped):
        sections.append(left_out_section(heading, result.reason))
        data[key] = {"left_out": result.reason}
        return None
    return result


def _approx_sections(side: dict, wl):
    """The approximation-error table by input family (executed) and the Sparse Transformer's
    two layouts (count-only), from the side tasks' results (``_report_side_tasks``)."""
    from attnsim.approx_sweep import REPORT_SEEDS
    from reports import approx
    sections, data = [], {}
    records = _report_side_result(side, "approx_error_by_family", approx.FAMILY_HEADING,
                                  sections, data)
    if records is not None:
        data["approx_error_by_family"] = records
        kernel = _report_side_result(side, "performer_kernel_mse", approx.FAMILY_HEADING, [],
                                     data)
        if kernel is not None:          # a left-out kernel table leaves its reason in data
            data["performer_kernel_mse"] = kernel
        sections.append(approx.family_error_section(records, len(REPORT_SEEDS), kernel))
    records = _report_side_result(side, "sparse_transformer_layouts", approx.LAYOUT_HEADING,
                                  sections, data)
    if records is not None:
        data["sparse_transformer_layouts"] = records
        sections.append(approx.sparse_layout_section(records, wl.describe()))
    return sections, data


def parse_seqs(text: str) -> list[int]:
    try:
        seqs = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--seqs must be comma-separated integers, got {text!r}") from None
    if len(seqs) < 2 or any(n < 1 for n in seqs):
        raise ValueError(f"--seqs needs at least two positive lengths, got {text!r}")
    return check_seqs(seqs)


def positive_jobs(text: str) -> int:
    try:
        jobs = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if not 1 <= jobs <= 256:
        raise argparse.ArgumentTypeError(f"must be between 1 and 256, got {jobs}")
    return jobs


class _progress:
    """tqdm on an interactive stderr, silent otherwise."""

    def __init__(self, total):
        try:
            from tqdm import tqdm
            # the first run after an install is mostly Numba compiling (cached afterwards)
            self.bar = tqdm(total=total, desc="simulating (a first run compiles the kernels)",
                            unit="step", leave=False, disable=None, file=sys.stderr)
        except ImportError:
            self.bar = None

    def update(self, n=1, done=None):
        """``n`` steps finished; ``done`` names what (shown beside the bar)."""
        if self.bar is not None:
            if done:
                self.bar.set_postfix_str(f"done: {done}", refresh=False)
            self.bar.update(n)

    def update1(self, _name=None):
        """One step done (the callback run_all and growth call with a name)."""
        self.update(1)

    def close(self):
        if self.bar is not None:
            self.bar.close()


# ---- parser --------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    from attnsim import suite
    p = OneLineArgumentParser(prog="attnsim", description="Simulate attention algorithms "
                                "through a GPU memory hierarchy: HBM/SRAM traffic, FLOPs, IO "
                                "bounds and predicted A100/H100 runtimes.")
    p.add_argument("--debug", action="store_true",
                   help="show the Python traceback of an error (also ATTNSIM_DEBUG=1)")
    sub = p.add_subparsers(dest="command", required=True)

    pl = sub.add_parser("list", help="algorithms and GPUs")
    add_output_args(pl, ("text", "json"))
    pl.set_defaults(func=cmd_list)

    pr = sub.add_parser("run", help="one algorithm on one workload",
                        description="Algorithm-specific options (see 'attnsim list') may follow.")
    pr.add_argument("algorithm", help=f"one of: {', '.join(algorithm_names())}")
    add_hw_args(pr)
    add_workload_args(pr, Workload(batch=1, heads=16, seq_q=4096, head_dim=64))
    pr.add_argument("--count-only", action="store_true",
                    help="same loops and counts without arithmetic (fast for long sequences)")
    pr.add_argument("--input-seed", type=int, default=0,
                    help="seed of the random inputs (Q, K, V) in executed mode; an algorithm's "
                         "own --seed (random features, blocks, hashes) is its option")
    pr.add_argument("--inputs", default="normal", choices=FAMILIES,
                    help="input family in executed mode: normal (standard normal, diffuse "
                         "attention), scaled (logits x4), clustered, lowrank, near_keys "
                         "(attention with structure; attnsim.inputs documents each)")
    add_timing_args(pr)
    add_output_args(pr, ("text", "markdown", "json"))
    pr.set_defaults(func=cmd_run, takes_extra=True)

    pp = sub.add_parser("report", help="the main report: every algorithm on one GPU",
                        description="--hw a100,h100,h200 puts several GPUs side by side; "
                                    "--output DIR/report.md or .html writes the document "
                                    "with its figures in DIR/report/ (needs matplotlib).")
    add_hw_args(pp)
    add_workload_args(pp, suite.DEFAULT_WORKLOAD)
    pp.add_argument("--seqs", default=",".join(map(str, suite.DEFAULT_GROWTH_SEQS)),
                    help="sequence lengths of the growth table")
    pp.add_argument("--algorithms", default=None, help="comma-separated subset")
    pp.add_argument("--no-accuracy", action="store_true",
                    help="skip the executed-mode accuracy column")
    pp.add_argument("--plot", default=None, help="also write a PNG of HBM traffic vs N")
    pp.add_argument("--jobs", type=positive_jobs, default=None,
                    help="worker processes for the simulations (default: the CPUs "
                         "available; a first run compiles the kernel families in all of them "
                         "at once)")
    pp.add_argument("--svg", action="store_true",
                    help="with --output DIR/report.md|.html: SVG figures beside the PNGs")
    add_output_args(pp)
    pp.set_defaults(func=cmd_report)

    try:
        from attnsim import gpu_check
    except ImportError:
        gpu_check = None
    if gpu_check is not None:
        gpu_check.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the command line. User errors: one line on stderr and status 2. Anything else is a
    bug: one line saying so and status 1 (``--debug`` or ATTNSIM_DEBUG=1 show the traceback,
    of bad input too, whose status stays 2)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or bool(os.environ.get("ATTNSIM_DEBUG"))
    argv = [x for x in argv if x != "--debug"]
    try:
        parser = build_parser()
        args, extra = parser.parse_known_args(argv)
        if extra and not getattr(args, "takes_extra", False):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        for flag in ("output", "plot"):       # refuse before computing, not after
            if getattr(args, flag, None) is not None:
                # a report document (DIR/report.md) creates its folder
                creates = flag == "output" and args.command == "report" and \
                    _document_output(args)
                check_writable(getattr(args, flag), f"--{flag}", may_create_folder=creates)
                check_not_an_input(args, extra, flag)
        if args.command == "gpu-check":
            check_gpu_check_flags(args)
        return args.func(args, extra) if getattr(args, "takes_extra", False) else args.func(args)
    except SystemExit as exc:          # argparse's --help (0) and its one-line errors (2)
        return exc.code if isinstance(exc.code, int) else 2
    except KeyboardInterrupt:
        print("attnsim: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:            # the reader went away (| head): stop quietly
        try:
            sys.stdout = open(os.devnull, "w")   # no second error when Python flushes stdout
        except OSError:
            pass
        return 1
    except Exception as exc:           # noqa: BLE001 - the one place every error ends up
        code, line = describe_error(exc, count_only="--count-only" in argv)
        if debug and code != 2:        # a bug: Python's own traceback and status
            raise
        if debug:                      # bad input stays status 2, so scripts see the same
            traceback.print_exc()
        print(line, file=sys.stderr)
        return code


def check_not_an_input(args, extra: list[str], flag: str) -> None:
    """--output/--plot must not name a file the run reads (--hw, --model, --mask-file, and
    the files their ``base`` chains read): it would be overwritten with the results."""
    out = os.path.realpath(getattr(args, flag))
    for name, path, via in _files_the_run_reads(args, extra):
        if os.path.exists(path) and os.path.realpath(path) == out:
            what = f"the file {name} reads" if via is None else \
                f"a file {name} reads (the base of {via!r})"
            raise AttnsimError(f"--{flag} {getattr(args, flag)!r} is {what}; write the "
                               f"results elsewhere")


def _files_the_run_reads(args, extra: list[str]):
    """(flag, path, the file whose ``base`` names it or None) of every input file: the
    GPU files (report's --hw may list several) and model file with their base chains, and
    an algorithm's --mask-file."""
    from hwmodels.config_file import files_read
    named = [("--hw", hw) for hw in _hw_entries(getattr(args, "hw", None))]
    if getattr(args, "model", None):
        named.append(("--model", args.model))
    for name, path in named:
        chain = files_read(path) or [path]
        yield name, chain[0], None
        yield from ((name, base, parent) for parent, base in zip(chain, chain[1:]))
    for i, arg in enumerate(extra):
        if arg == "--mask-file" and i + 1 < len(extra):
            yield "--mask-file", extra[i + 1], None
        elif arg.startswith("--mask-file="):
            yield "--mask-file", arg.split("=", 1)[1], None


def _hw_entries(hw: str | None) -> list[str]:
    """--hw as given and, for report's comma-separated list, each GPU in it."""
    if not hw:
        return []
    return list(dict.fromkeys([hw, *(h.strip() for h in hw.split(",") if h.strip())]))


def describe_error(exc: BaseException, count_only: bool = False) -> tuple[int, str]:
    """(exit status, the one stderr line) for an exception that reached ``main``;
    ``count_only``: the run already had --count-only (not advised again)."""
    if isinstance(exc, (ValueError, FileNotFoundError, PermissionError, IsADirectoryError)) \
            and not isinstance(exc, UnicodeError):
        # every user error (AttnsimError, PlanError, GPU and model file errors) is one
        return 2, f"attnsim: error: {_one_line(exc)}"
    if isinstance(exc, OSError) and exc.filename:   # a path the user gave, e.g. a full disk
        return 2, f"attnsim: error: {exc.filename!r}: {exc.strerror or _one_line(exc)}"
    if isinstance(exc, MemoryError):
        if count_only:
            return 2, ("attnsim: error: out of host memory for this workload even with "
                       "--count-only; use a smaller --batch, --heads or --seq, or a sparser "
                       "pattern")
        return 2, ("attnsim: error: out of host memory for this workload; add --count-only "
                   "(the same counts, no data), or use a smaller --batch, --heads or --seq, "
                   "or a sparser pattern")
    return 1, (f"attnsim: internal error (a bug in attnsim, please report it): "
               f"{type(exc).__name__}: {_one_line(exc)}; rerun with --debug to see the traceback")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


class StoreOnce(argparse.Action):
    """argparse's store, refusing a flag given twice: argparse keeps the last (--seq 1024
    --seq 2048 runs 2048) without a word, a slip that would print numbers for a workload the
    user did not mean. A flag counts however it was spelled (an unambiguous prefix,
    --flag=value, an alias such as -o for --output)."""

    def __call__(self, parser, namespace, values, option_string=None):
        given = parser.flags_given
        if option_string is not None:
            if self.dest in given:
                parser.error(f"{given[self.dest]} is given twice; give it once")
            given[self.dest] = max(self.option_strings, key=len)    # its long name
        setattr(namespace, self.dest, values)


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse, with its errors on one line (``attnsim: error: argument --batch: ...``) and
    status 2, as every other user error, and flags that take a value refused when given
    twice (``StoreOnce``, every value flag's action, argument groups' included)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.flags_given: dict[str, str] = {}
        for name in (None, "store"):           # an argument's default action, and "store"
            self.register("action", name, StoreOnce)

    def parse_known_args(self, args=None, namespace=None):
        self._args_seen = list(sys.argv[1:] if args is None else args)   # for error()
        self.flags_given = {}
        return super().parse_known_args(args, namespace)

    def error(self, message):
        print(f"attnsim: error: {' '.join(message.split())}{self._negative_hint(message)} "
              f"(see '{self.help_command}')", file=sys.stderr)
        raise SystemExit(2)

    def _negative_hint(self, message: str) -> str:
        """argparse reads a value such as -1e30 (which its negative-number pattern, digits
        and a point only, does not cover) as a flag and says "expected one argument"; name
        the form it does read."""
        match = re.match(r"argument ([^:\s]+): expected one argument", message)
        args = getattr(self, "_args_seen", [])
        typed = [f for f in (match.group(1).split("/") if match else []) if f in args]
        if not typed:
            return ""
        at = args.index(typed[0]) + 1
        value = args[at] if at < len(args) else ""
        if not value.startswith("-") or not _is_number(value):
            return ""
        return f"; for a negative value write {typed[0]}={value}"

    @property
    def help_command(self) -> str:
        return f"{self.prog} --help" if self.add_help else "attnsim list"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
