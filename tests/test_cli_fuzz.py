"""Property-based fuzzing of the command line, as a hostile user would type it.

Random subcommands, algorithms, flags and values (negative, zero, huge, inf, nan, not a
number), malformed GPU/model TOML files, .npy/.npz/directory mask files and unwritable
outputs. Every run must either succeed (status 0; with --format json, finite non-negative
counts, times and errors) or fail with status 2 and exactly one stderr line naming the problem —
never a traceback, never more than a few seconds (Numba's one-time compilations aside).

The CLI runs in-process (``attnsim.cli.main``), so an example costs milliseconds. The
examples are derandomized from ``ATTNSIM_FUZZ_SEED`` (default 0), which failures print;
``ATTNSIM_FUZZ_EXAMPLES`` raises the count for a longer hunt, and ``ATTNSIM_FUZZ_LOG=FILE``
appends every command line with its status and stderr to FILE (to see what was tried).
"""
import contextlib
import io
import json
import math
import os
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, note, seed, settings
from hypothesis import strategies as st
from numba.core.event import install_timer

from algorithms.registry import algorithm_names, get_algorithm
from attnsim.cli import main

FUZZ_SEED = int(os.environ.get("ATTNSIM_FUZZ_SEED", "0"))
EXAMPLES = int(os.environ.get("ATTNSIM_FUZZ_EXAMPLES", "300"))   # about 10 s here
SLOWEST_S = 20.0    # "a few seconds" on a loaded 2-core machine, compilation excluded

SMALL_INTS = ["1", "2", "3", "4", "8", "16", "64", "100", "128", "256"]
BAD_INTS = ["0", "-1", "-4096", "1000000000000", str(2**63), str(10**30), "2.5", "1e3",
            "x", "", "nan", "inf", "0x10", "16777217"]
SMALL_FLOATS = ["0", "0.1", "0.5", "1", "16", "64", "100"]
BAD_FLOATS = ["-1", "nan", "inf", "-inf", "1e-320", "1e308", "1e400", "x", "", "0.0001"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Inputs a user might hand over: good and bad TOML, masks, output paths."""
    d = tmp_path_factory.mktemp("fuzz")

    def put(name, content):
        path = d / name
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
        return str(path)

    self_base = str(d / "self.toml")
    put("self.toml", f'base = "{self_base}"\n')
    np.save(d / "mask4.npy", np.ones((4, 4), bool))
    np.save(d / "mask_float.npy", np.full((4, 4), 0.5))
    np.savez(d / "mask.npz", mask=np.ones((4, 4), bool))
    (d / "a_dir").mkdir()
    return {
        "gpu": ["h100", "a100", "a100-40gb", "h100-pcie", "h200",
                put("gpu_ok.toml", 'base = "h100"\nname = "slow"\nhbm_bandwidth_bytes_per_s = 2e12\n'),
                "b300",
                put("gpu_tiny_bw.toml", 'base = "h100"\nhbm_bandwidth_bytes_per_s = 5e-324\n'),
                put("gpu_huge_sm.toml", 'base = "h100"\nsm_count = 1e12\n'),
                put("gpu_str.toml", 'base = "h100"\nclock_hz = "fast"\n'),
                put("gpu_broken.toml", "sm_count = 10\n[oops\n"),
                put("gpu_binary.toml", bytes(range(256))),
                put("gpu_unknown.toml", 'base = "h100"\nwarp_size = 32\n'),
                put("gpu_nan.toml", 'base = "h100"\nclock_hz = nan\n'),
                self_base, str(d / "missing.toml"), str(d / "a_dir")],
        "model": ["llama-3-8b", "deepseek-v2", "mistral-7b", "gpt-9",
                  put("model_ok.toml", 'base = "llama-3-8b"\nname = "mine"\nlayers = 16\n'),
                  put("model_bad.toml", 'name = "m"\nlayers = -3\n'),
                  put("model_huge.toml", f'base = "llama-3-8b"\nname = "h"\nheads = {10**20}\n'),
                  put("model_self.toml", f'base = "{d / "model_self.toml"}"\n'),
                  put("model_broken.toml", "layers = [\n")],
        "mask": [str(d / "mask4.npy"), str(d / "mask_float.npy"), str(d / "mask.npz"),
                 str(d / "a_dir"), str(d / "missing.npy"), put("mask.txt", "1 0\n0 1\n")],
        "output": [str(d / "out.txt"), str(d / "a_dir"), str(d / "no" / "such" / "out.txt")]
        + (["/dev/full"] if os.path.exists("/dev/full") else []),
        "plot": [str(d / "growth.png"), str(d / "no" / "growth.png")],
    }


def mostly_valid(valid, bad, hostile):
    """Hostile examples draw one bad value in five; the others only valid ones, so that
    enough runs get through to have their numbers checked."""
    if not hostile:
        return st.sampled_from(valid)
    return st.integers(0, 4).flatmap(lambda i: st.sampled_from(bad if i == 0 else valid))


def int_value(hostile=True):
    return mostly_valid(SMALL_INTS, BAD_INTS, hostile)


def float_value(hostile=True):
    return mostly_valid(SMALL_FLOATS, BAD_FLOATS, hostile)


@st.composite
def workload_flags(draw, files, hostile):
    """Workload flags; the examples that are not hostile keep flags consistent with each
    other (--new-tokens with --decode, --kv-heads dividing --heads, a dropout below 1)."""
    args = []
    decode = draw(st.integers(0, 2)) == 0
    heads = draw(st.sampled_from(["1", "2", "4", "8", "16"]))
    use_model = hostile and draw(st.integers(0, 4)) == 0 or \
        not hostile and decode and draw(st.integers(0, 3)) == 0
    # a model sets heads, kv heads and head dim: only hostile examples contradict it
    flags = ["--batch", "--seq"] + (["--heads", "--kv-heads", "--head-dim"]
                                   if hostile or not use_model else [])
    flags += ["--seq-k", "--new-tokens"] if hostile else \
        (["--new-tokens"] if decode else ["--seq-k"])
    for flag in flags:
        if draw(st.integers(0, 3)) == 0:
            if not hostile and flag in ("--heads", "--kv-heads"):
                value = heads if flag == "--heads" else draw(st.sampled_from(["1", heads]))
                args += ["--heads", heads, flag, value] if flag == "--kv-heads" else [flag, value]
            else:
                args += [flag, draw(int_value(hostile))]
    if draw(st.integers(0, 4)) == 0:
        args += ["--scale", draw(float_value(hostile))]
    if draw(st.integers(0, 4)) == 0:
        args += ["--dropout", draw(float_value(hostile) if hostile else
                                   st.sampled_from(["0", "0.1", "0.5"]))]
    if draw(st.integers(0, 4)) == 0:
        args += ["--sram-kb", draw(float_value(hostile) if hostile else
                                   st.sampled_from(["16", "64", "100", "160"]))]
    if draw(st.integers(0, 2)) == 0:
        args.append("--causal")
    if decode:
        args.append("--decode")
    if draw(st.integers(0, 3)) == 0:
        args += ["--dtype", draw(st.sampled_from(["fp16", "bf16", "fp32", "fp8"]
                                                 + ["int4"] * hostile))]
    if draw(st.integers(0, 3)) == 0:
        args += ["--pass", draw(st.sampled_from(["fwd", "bwd", "fwd+bwd"] + ["both"] * hostile))]
    if draw(st.integers(0, 2)) == 0:
        args += ["--hw", draw(st.sampled_from(files["gpu"] if hostile else files["gpu"][:6]))]
    if use_model:
        args += ["--model", draw(st.sampled_from(files["model"] if hostile else
                                                 files["model"][:3]))]
    return args


@st.composite
def option_flags(draw, algo, files, hostile):
    args = []
    for opt in get_algorithm(algo).INFO.options:
        if draw(st.integers(0, 2)):
            continue
        if opt.type is bool:
            args.append(opt.flag)
        elif opt.name == "mask_file":
            args += [opt.flag, draw(st.sampled_from(files["mask"]))]
        elif opt.choices:
            args += [opt.flag, draw(st.sampled_from(list(opt.choices) + ["bogus"]))]
        elif opt.type is float:
            args += [opt.flag, draw(float_value(hostile))]
        elif opt.type is int:
            args += [opt.flag, draw(int_value(hostile))]
        else:
            args += [opt.flag, draw(st.sampled_from(["x", "", "strided", "local"]))]
    return args


@st.composite
def command_lines(draw, files):
    kind = draw(st.sampled_from(["run"] * 8 + ["report", "list", "nonsense"]))
    if kind == "list":
        return ["list", "--format", draw(st.sampled_from(["text", "json", "yaml"]))]
    if kind == "nonsense":
        return draw(st.sampled_from([[], ["--batch", "4"], ["run"], ["fly", "flash2"]]))
    output = []
    if draw(st.integers(0, 5)) == 0:
        output = ["--output", draw(st.sampled_from(files["output"]))]
    if kind == "report":
        # a small report: two algorithms, short lengths, no executed accuracy column
        algos = ",".join(draw(st.lists(st.sampled_from(algorithm_names() + ["nope"]),
                                       min_size=1, max_size=2)))
        seqs = draw(st.sampled_from(["128,256", "256,256", "128,x", "0,128", "128",
                                     f"128,{2**25}"]))
        plot = ["--plot", draw(st.sampled_from(files["plot"]))] if draw(
            st.integers(0, 7)) == 0 else []
        hw = ["--hw", draw(st.sampled_from(["h100", "a100,h100", "h100,b300", "h100,"]))]
        # one process: the report's worker pool would cost more than the example
        return ["report", "--algorithms", algos, "--seqs", seqs, "--no-accuracy", "--jobs",
                "1", "--batch", "1", "--heads", "2", "--seq", "256", "--head-dim", "64",
                "--format", draw(st.sampled_from(["json", "csv", "markdown", "text"])),
                *hw, *output, *plot]
    hostile = draw(st.booleans())
    algo = draw(st.sampled_from(algorithm_names() + ["flash3000"]))
    args = ["run", algo, *draw(workload_flags(files, hostile))]
    if algo != "flash3000":
        args += draw(option_flags(algo, files, hostile))
    # executed mode only on small shapes (it computes real outputs); count-only on anything
    executed = draw(st.integers(0, 4)) == 0 and "--model" not in args
    if not executed:
        args.append("--count-only")
    else:
        args += ["--batch", "1", "--heads", "2", "--seq", "128", "--new-tokens", "1"] \
            if "--decode" in args else ["--batch", "1", "--heads", "2", "--seq", "128"]
    if draw(st.booleans()):
        args += ["--input-seed", draw(int_value(hostile))]
    formats = ["json"] * 5 + ["text", "markdown"] + ["xml"] * hostile
    return args + ["--format", draw(st.sampled_from(formats))] + (output if hostile else [])


def run_in_process(argv):
    """(status, stdout, stderr, seconds): the seconds exclude Numba's compilations, a
    one-time cost per kernel and machine (cached on disk afterwards) that a clean clone
    pays on the first example reaching each kernel."""
    out, err = io.StringIO(), io.StringIO()
    compiling = []
    start = time.monotonic()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
            install_timer("numba:compile", compiling.append):
        try:
            code = main(argv)
        except SystemExit as exc:            # main should not raise it, but judge it anyway
            code = exc.code
    return code, out.getvalue(), err.getvalue(), time.monotonic() - start - sum(compiling)


def check_json_numbers(data) -> None:
    """Counts: non-negative integers; times and errors: finite and non-negative."""
    for name, value in data["counts"].items():
        assert isinstance(value, int) and value >= 0, (name, value)
    for name, value in data["time"].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            assert math.isfinite(value) and value >= 0, (name, value)
    assert data["time"]["predicted_s"] > 0
    for name in ("error_vs_reference", "error_vs_exact"):       # executed runs
        value = data.get(name)
        assert value is None or (math.isfinite(value) and value >= 0), (name, value)


@settings(max_examples=EXAMPLES, deadline=None, derandomize=False, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
          print_blob=True)
@seed(FUZZ_SEED)
@given(data=st.data())
def test_every_command_line_ends_well(files, data):
    argv = [str(a) for a in data.draw(command_lines(files), label="argv")]
    note(f"ATTNSIM_FUZZ_SEED={FUZZ_SEED}; argv: {' '.join(repr(a) for a in argv)}")
    code, out, err, seconds = run_in_process(argv)
    note(f"status {code} after {seconds:.1f} s; stderr: {err!r}")
    if os.environ.get("ATTNSIM_FUZZ_LOG"):
        with open(os.environ["ATTNSIM_FUZZ_LOG"], "a", encoding="utf-8") as log:
            log.write(f"{code}\t{seconds:.2f}\t{' '.join(argv)}\t{err.strip()[:300]}\n")
    assert "Traceback" not in err and "Traceback" not in out
    assert seconds < SLOWEST_S
    if code == 0:
        writes_file = "--output" in argv
        if "run" == argv[0] and "json" in argv and not writes_file:
            check_json_numbers(json.loads(out))
        return
    assert code == 2, f"status {code}: {err}"
    assert err.startswith("attnsim: error: ") and err.count("\n") == 1, err
