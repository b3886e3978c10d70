"""Never a wrong number, never a traceback: exact counts at the largest accepted sizes, the
validation layer's ranges, the host-memory guard, and every input that once went wrong."""
import json
import os
import re
import tracemalloc

import numpy as np
import pytest

from attnsim import Workload, simulate
from attnsim.cli import main
from attnsim.errors import AttnsimError
from attnsim.validate import (MAX_HEAD_DIM, MAX_ROWS, MAX_SEQ, check_host_memory,
                              executed_host_bytes)
from hwmodels.counters import HBM_READ_BYTES, MATMUL_FLOPS
from hwmodels.gpus import builtin_gpu
from hwmodels.memory import Recorder

cdiv = lambda a, b: -(-a // b)  # noqa: E731


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(capsys, *args) -> str:
    """Run the CLI on bad input: status 2 and exactly one stderr line, returned."""
    code, _, err = run_cli(capsys, *args)
    assert code == 2, err
    assert err.startswith("attnsim: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


# ---- exact counts ------------------------------------------------------------------------------

def test_repeat_scales_in_python_integers_and_later_counts_stay_unscaled():
    rec = Recorder(builtin_gpu("h100"))
    c = rec.kernel("k", ctas=1, buffers={"tile": 1024})
    c[HBM_READ_BYTES] = 2**40
    c[MATMUL_FLOPS] = 3 * 2**61                      # close to the int64 limit already
    Recorder.repeat(c, 2**40)                         # one head stands for 2**40 heads
    c[HBM_READ_BYTES] += 5                            # counted after scaling: not scaled
    k = rec.kernels[0]
    assert k.counters[HBM_READ_BYTES] == 2**80 + 5
    assert k.counters[MATMUL_FLOPS] == 3 * 2**101
    assert rec.totals()[MATMUL_FLOPS] == 3 * 2**101


def test_a_wrapped_kernel_counter_is_an_error_not_a_number():
    rec = Recorder(builtin_gpu("h100"))
    c = rec.kernel("k", ctas=1, buffers={"tile": 1024})
    c[MATMUL_FLOPS] = -2**63                          # what 2**63 - 1 + 1 leaves in int64
    with pytest.raises(OverflowError, match="kernel k: an int64 counter wrapped around"):
        rec.totals()
    with pytest.raises(OverflowError):
        Recorder.repeat(c, 2)


def test_two_to_the_63_flops_no_longer_wrap_to_minus_two_to_the_63():
    """batch 4 x 16 heads x N = 2**24 x d = 128: 4·b·h·N²·d = 2**63 FLOPs exactly."""
    wl = Workload(batch=4, heads=16, seq_q=2**24, head_dim=128)
    r = simulate("flash2", wl, "h100", compute=False)
    assert r.counts["matmul_flops"] == 2**63
    assert r.time.predicted_s > 0 and r.time.bound == "matmul"


def test_largest_accepted_workload_totals_equal_their_closed_forms():
    """The largest workload the limits accept for flash2 (N = 2**24, d = 256, its largest
    head dim, and batch x heads x N = 2**30 rows) counts 2**64 matmul FLOPs: every total is
    exact, and one more row is refused."""
    b, h, n, d, e = 4, 16, MAX_SEQ, 256, 2
    assert b * h * n == MAX_ROWS
    wl = Workload(batch=b, heads=h, seq_q=n, head_dim=d)
    r = simulate("flash2", wl, "h100", compute=False)
    br, bh, tr = r.plan["block_q"], b * h, cdiv(n, r.plan["block_q"])
    bc = r.plan["block_k"]
    assert r.counts["matmul_flops"] == 4 * bh * n * n * d == 2**64
    assert r.counts["hbm_read_bytes"] == bh * (n * d * e + tr * 2 * n * d * e)
    assert r.counts["hbm_write_bytes"] == bh * (n * d * e + 4 * n)
    # exp: one per score and one per row per tile (the rescale), one per row for the lse
    assert r.counts["exp_ops"] == bh * (n * n + tr * cdiv(n, bc) * br + n)
    assert r.counts["ctas"] == bh * tr
    assert all(isinstance(v, int) and v >= 0 for v in r.counts.values())
    assert 0 < r.time.predicted_s < float("inf")
    with pytest.raises(AttnsimError, match="query rows exceeds 2\\*\\*30"):
        Workload(batch=b, heads=h + 1, seq_q=n, head_dim=d)


# ---- the validation layer --------------------------------------------------------------------

@pytest.mark.parametrize("args,message", [
    (["--heads", 10**12], "--heads must be in [1, 16,384], got 1,000,000,000,000"),
    (["--batch", -1], "--batch must be in [1, 1,048,576], got -1"),
    (["--seq", 2**24 + 1], "--seq must be in [1, 16,777,216]"),
    (["--head-dim", MAX_HEAD_DIM + 1], "--head-dim must be in [1, 1,024]"),
    (["--sram-kb", "inf"], "--sram-kb must be a number of KiB in [1/1024 (one byte), 227]"),
    (["--sram-kb", "nan"], "--sram-kb must be a number of KiB"),
    (["--sram-kb", "0.0001"], "--sram-kb must be a number of KiB"),   # was: the full budget
    (["--sram-kb", "1e308"], "--sram-kb must be a number of KiB"),    # found by the fuzz test
    (["--dropout", "nan"], "--dropout must be a finite number in [0, 1)"),
    (["--scale", "inf"], "--scale must be a finite number in (0, 10,000]"),
    (["--scale", "0"], "--scale must be a finite number in (0, 10,000]"),  # rfa divided by 0
    (["--batch", "x"], "argument --batch: invalid int value: 'x'"),
    (["--decode", "--new-tokens", 0], "--new-tokens must be in [1, 16,777,216], got 0"),
    (["--decode", "--new-tokens", 10**12], "--new-tokens must be in [1, 16,777,216]"),  # hung
    (["--model", "llama-3-8b", "--batch", 4096, "--seq", 2**20],
     "batch x heads x --seq = 137,438,953,472 query rows exceeds 2**30"),
])
def test_workload_flags_are_checked_and_named(capsys, args, message):
    err = one_error_line(capsys, "run", "gqa", "--count-only", *args)
    assert message in err


@pytest.mark.parametrize("algo", ["flash2", "flash3"])
def test_flash_head_dims_above_256_are_refused(capsys, algo):
    err = one_error_line(capsys, "run", algo, "--head-dim", 1000, "--count-only")
    assert "--head-dim 1000" in err and "up to 256, as flash-attn" in err


@pytest.mark.parametrize("algo", ["flash2", "flash3"])
def test_flash_head_dims_off_the_mma_grid_say_how_flash_attn_runs_them(capsys, algo):
    code, out, _ = run_cli(capsys, "run", algo, "--head-dim", 7, "--count-only",
                           "--format", "json")
    assert code == 0
    assert json.loads(out)["note"].startswith("head dim 7 is not a multiple of 8: "
                                              "flash-attn pads it to 8")
    code, out, _ = run_cli(capsys, "run", algo, "--head-dim", 64, "--count-only",
                           "--format", "json")
    assert "note" not in json.loads(out)


@pytest.mark.parametrize("head_dim,compiled", [(7, 64), (96, 128)])
def test_flash3_says_when_the_release_compiles_no_kernel_for_the_head_dim(capsys, head_dim,
                                                                          compiled):
    """The release's forward exists at d = 64, 128 and 256 only: elsewhere the result is a
    kernel planned for that head dim, and the output says so."""
    code, out, _ = run_cli(capsys, "run", "flash3", "--head-dim", head_dim, "--count-only",
                           "--format", "json")
    note = json.loads(out)["note"]
    assert code == 0 and "compiles its forward for head dims 64, 128, 256 only" in note
    assert f"the release's d = {compiled} kernel" in note
    code, out, _ = run_cli(capsys, "run", "flash3", "--head-dim", 96, "--pass", "bwd",
                           "--count-only", "--format", "json")
    assert code == 0 and "note" not in json.loads(out)      # the backward's d <= 128 kernel


@pytest.mark.parametrize("flags,named", [
    (["--stages", "1"], "--stages shapes"), (["--no-pipelining"], "--no-pipelining shapes"),
    (["--pingpong", "off", "--pipelining", "paper"], "--pipelining, --pingpong shape")])
def test_flash3_backward_refuses_the_forwards_options(capsys, flags, named):
    err = one_error_line(capsys, "run", "flash3", "--pass", "bwd", "--seq", 1024,
                         "--count-only", *flags)
    assert named in err and "--pass fwd+bwd" in err
    code, _, _ = run_cli(capsys, "run", "flash3", "--pass", "fwd+bwd", "--seq", 1024,
                         "--count-only", *flags)
    assert code == 0                          # they shape the forward of fwd+bwd


@pytest.mark.parametrize("passes", ["fwd", "bwd"])
def test_flash3_refuses_fp32(capsys, passes):
    err = one_error_line(capsys, "run", "flash3", "--dtype", "fp32", "--pass", passes,
                         "--seq", 256, "--count-only")
    assert "fp16, bf16 and fp8" in err and "--dtype" in err


def test_flash3_names_registers_when_they_are_what_refuses_the_tile(capsys, tmp_path):
    gpu = tmp_path / "small-regs.toml"
    gpu.write_text('base = "h100-sxm"\nname = "h100-small-regs"\nsources = "a test"\n'
                   "register_bytes_per_sm = 16384\n")
    err = one_error_line(capsys, "run", "flash3", "--seq", 1024, "--count-only", "--hw",
                         str(gpu))
    assert "bytes of registers" in err and "SRAM" not in err


@pytest.mark.parametrize("algo,expect", [
    # was "need 2,048 bytes of SRAM but the budget is 232,448": the registers refused it
    ("standard", "16x16 tile's fp32 accumulator needs 1,024 bytes of registers"),
    ("mla", "232,448 bytes of SRAM and 1,024 bytes of fp32 registers"),
    # was "leaves one consumer warpgroup -12,288"
    ("flash3", "leaves one consumer warpgroup 0 "),
])
def test_a_tiny_register_file_is_named_without_contradictory_figures(capsys, tmp_path, algo,
                                                                     expect):
    gpu = write(tmp_path, "tiny-regs.toml", 'base = "h100-sxm"\nname = "tiny-regs"\n'
                                              "register_bytes_per_sm = 1024\n")
    err = one_error_line(capsys, "run", algo, "--seq", 1024, "--count-only", "--hw", gpu)
    assert expect in err and not re.search(r" -\d", err)          # no negative figure


def test_report_growth_needs_two_different_lengths(capsys):
    err = one_error_line(capsys, "report", "--seqs", "1024,1024")
    assert "--seqs needs at least two different lengths" in err


def test_algorithm_options_must_be_finite(capsys):
    err = one_error_line(capsys, "run", "block_sparse", "--density", "nan", "--count-only")
    assert "--density" in err


# ---- GPU and model files ---------------------------------------------------------------------

def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text) if isinstance(text, str) else path.write_bytes(text)
    return str(path)


@pytest.mark.parametrize("flag,fields", [
    ("--hw", 'base = "h100"\nname = "two\\nlines"\nhbm_bytes = 2000000000\n'),
    ("--hw", 'base = "h100"\nfull_name = "tab\\there"\n'),
    ("--model", 'base = "llama-3-8b"\nname = "two\\nlines"\n'),
])
def test_names_with_control_characters_are_refused(capsys, tmp_path, flag, fields):
    """A newline in a GPU's name split the one-line HBM warning that quotes it in two."""
    path = write(tmp_path, "odd.toml", fields)
    algo = ["gqa", "--decode"] if flag == "--model" else ["standard", "--seq", 100000]
    err = one_error_line(capsys, "run", *algo, flag, path, "--count-only")
    assert "must be printable text on one line" in err


def test_mla_model_file_kv_heads_must_equal_heads(capsys, tmp_path):
    """mla up-projects the latent into every head: kv_heads 8 of 128 was accepted and echoed
    as the workload's kv_heads, a GQA grouping mla does not simulate."""
    path = write(tmp_path, "mla.toml", 'base = "deepseek-v2"\nname = "x"\nkv_heads = 8\n')
    err = one_error_line(capsys, "run", "mla", "--decode", "--model", path, "--count-only")
    assert "kv_heads must equal heads (128), got 8" in err


def test_gpu_file_base_cycles_are_named(capsys, tmp_path):
    me = write(tmp_path, "me.toml", "")
    write(tmp_path, "me.toml", f'base = "{me}"\n')
    err = one_error_line(capsys, "run", "flash2", "--hw", me, "--count-only")
    assert "'base' makes a cycle" in err and me in err
    a, b = str(tmp_path / "a.toml"), str(tmp_path / "b.toml")
    write(tmp_path, "a.toml", f'base = "{b}"\n')
    write(tmp_path, "b.toml", f'base = "{a}"\n')
    err = one_error_line(capsys, "run", "flash2", "--hw", a, "--count-only")
    assert f"{a} -> {b} -> {a}" in err


def test_model_file_base_cycle_is_named(capsys, tmp_path):
    me = str(tmp_path / "m.toml")
    write(tmp_path, "m.toml", f'base = "{me}"\nname = "x"\n')
    err = one_error_line(capsys, "run", "gqa", "--model", me, "--decode", "--count-only")
    assert "model file" in err and "'base' makes a cycle" in err


@pytest.mark.parametrize("field,value,message", [
    ("hbm_bandwidth_bytes_per_s", "5e-324", "must be in [1e+09, 1e+14]"),   # was: time null
    ("sm_count", "1e12", "must be in [1, 1,024]"),                           # was: accepted
    ("sm_count", str(10**30), "'sm_count' must be"),
    ("clock_hz", "nan", "must be finite"),
    ("mma_sync_fraction_of_peak", "1.5", "is a fraction of the peak and must be in (0, 1]"),
])
def test_gpu_file_fields_have_physical_ranges(capsys, tmp_path, field, value, message):
    path = write(tmp_path, "g.toml", f'base = "h100"\n{field} = {value}\n')
    err = one_error_line(capsys, "run", "flash2", "--hw", path, "--count-only")
    assert path in err and f"'{field}'" in err and message in err


def test_binary_and_directory_gpu_files_name_the_file(capsys, tmp_path):
    path = write(tmp_path, "bin.toml", bytes(range(128, 256)))
    err = one_error_line(capsys, "run", "flash2", "--hw", path, "--count-only")
    assert path in err and "not a text file" in err
    folder = tmp_path / "dir.toml"
    folder.mkdir()
    err = one_error_line(capsys, "run", "flash2", "--hw", str(folder), "--count-only")
    assert str(folder) in err and "is a directory" in err


def test_model_file_fields_have_ranges(capsys, tmp_path):
    path = write(tmp_path, "m.toml", 'base = "llama-3-8b"\nname = "big"\nlayers = 1e9\n')
    err = one_error_line(capsys, "run", "gqa", "--model", path, "--decode", "--count-only")
    assert "'layers' must be in [1, 4,096]" in err


# ---- files the user gives and outputs --------------------------------------------------------

def test_mask_files_that_are_not_one_npy_array(capsys, tmp_path):
    npz = str(tmp_path / "m.npz")
    np.savez(npz, mask=np.ones((4, 4), bool))
    err = one_error_line(capsys, "run", "block_sparse", "--mask-file", npz, "--count-only")
    assert "is a .npz archive" in err
    err = one_error_line(capsys, "run", "block_sparse", "--mask-file", str(tmp_path),
                         "--count-only")
    assert "--mask-file" in err and "is a directory" in err


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_full_disk_output_is_one_line(capsys):
    err = one_error_line(capsys, "run", "flash2", "--count-only", "--output", "/dev/full")
    assert "--output '/dev/full' cannot be written: No space left on device" in err


def test_output_in_a_missing_folder_is_refused_before_computing(capsys, tmp_path):
    err = one_error_line(capsys, "report", "--output", str(tmp_path / "no" / "r.txt"))
    assert "--output" in err and "does not exist" in err


# ---- host memory -------------------------------------------------------------------------------

def test_executed_mode_refuses_what_the_machine_cannot_hold(capsys, monkeypatch):
    # standard attention's S and P of one head in flight: 65536² scores x 8 B = 32 GiB
    import attnsim.validate as validate
    monkeypatch.setattr(validate, "available_host_bytes", lambda: 16 * 2**30)
    err = one_error_line(capsys, "run", "standard", "--seq", 65536, "--heads", 16)
    assert "executed mode needs about" in err and "--count-only" in err


def test_host_memory_estimate_counts_the_score_matrices_in_flight():
    """The float64 reference walks the rows in blocks (``attnsim.reference.row_blocks``),
    so what grows as N² is the algorithms' own score matrices, a head per core, and the
    dropout multiplier Z (float32, B x H x N_q x N_k), not the reference."""
    wl = Workload(batch=1, heads=4, seq_q=65536, head_dim=64)
    assert executed_host_bytes(wl) >= 2 * 4 * 65536**2        # S and P of one head
    with pytest.raises(AttnsimError, match="add --count-only"):
        check_host_memory(wl, available=16 * 2**30)
    check_host_memory(Workload(batch=1, heads=1, seq_q=256, head_dim=64), available=2**30)
    shape = dict(batch=2, heads=4, seq_q=8192, head_dim=64)
    assert executed_host_bytes(Workload(**shape, dropout=0.1)) \
        - executed_host_bytes(Workload(**shape)) == 4 * 2 * 4 * 8192**2


def test_executed_feature_attention_counts_its_feature_maps(monkeypatch):
    """φ(Q), φ(K) grow with --features, which the workload alone does not show: 2**16 random
    features at N = 8192 are about 13 GB a head, refused before anything is drawn."""
    import attnsim.validate as validate
    monkeypatch.setattr(validate, "available_host_bytes", lambda: 8 * 2**30)
    wl = Workload(batch=1, heads=2, seq_q=8192, head_dim=64)
    with pytest.raises(AttnsimError, match=r"performer's feature maps.*--features or --seq"):
        simulate("performer", wl, "h100", options={"features": 2**16})
    small = Workload(batch=1, heads=2, seq_q=512, head_dim=64)
    simulate("performer", small, "h100", options={"features": 64})


@pytest.mark.parametrize("algo", ["performer", "rfa"])
def test_feature_counts_are_bounded_by_what_the_papers_use(capsys, algo):
    """Θ(d log d) features: 2**16 is far above any paper's and still drawn in seconds; a
    million would spend minutes drawing W before counting anything."""
    err = one_error_line(capsys, "run", algo, "--features", 2_000_000, "--seq", 64,
                         "--count-only")
    assert "--features" in err and "65,536" in err
    code, _, _ = run_cli(capsys, "run", algo, "--features", 2**16, "--seq", 64,
                         "--count-only")
    assert code == 0


@pytest.mark.parametrize("causal", [False, True])
def test_count_only_allocates_nothing_proportional_to_batch_heads_seq(causal):
    """2**26 query rows over 2**12 heads: a few MiB, not one entry per row or per CTA
    (causal CTAs have unequal work, which the timing model schedules CTA by CTA)."""
    wl = Workload(batch=2**8, heads=16, seq_q=2**14, head_dim=64, causal=causal)
    tracemalloc.start()
    try:
        r = simulate("flash2", wl, "h100", compute=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    if not causal:
        assert r.counts["matmul_flops"] == 4 * 2**12 * 2**28 * 64
    assert r.counts["ctas"] == 2**12 * 2**14 // r.plan["block_q"]
    assert peak < 16 * 2**20


# ---- errors that are bugs ----------------------------------------------------------------------

def test_an_internal_error_says_it_is_a_bug_and_debug_shows_it(capsys, monkeypatch):
    import attnsim.cli as cli

    def broken(*args, **kwargs):
        raise RuntimeError("something impossible")

    monkeypatch.setattr(cli, "simulate", broken)
    code, _, err = run_cli(capsys, "run", "flash2", "--count-only")
    assert code == 1 and err.count("\n") == 1
    assert "internal error (a bug in attnsim" in err and "--debug" in err
    assert "RuntimeError: something impossible" in err
    with pytest.raises(RuntimeError):
        main(["run", "flash2", "--count-only", "--debug"])


def test_json_of_a_valid_run_is_unchanged_in_shape(capsys):
    code, out, _ = run_cli(capsys, "run", "flash2", "--count-only", "--format", "json")
    assert code == 0
    data = json.loads(out)
    assert isinstance(data["counts"]["matmul_flops"], int)


def test_gpu_check_flags_are_checked_without_a_device(capsys):
    err = one_error_line(capsys, "gpu-check", "flash2", "--seq", -1)
    assert "each --seq length must be in [1, 16,777,216], got -1" in err


@pytest.mark.parametrize("args,message", [
    (["--heads", 8, "--kv-heads", 3], "--heads (8) must be a multiple of --kv-heads (3)"),
    (["--batch", 4096, "--seq", 256, 2**20], "batch x heads x --seq = 68,719,476,736"),
])
def test_gpu_check_workloads_are_checked_as_run_checks_them_without_a_device(capsys, args,
                                                                             message):
    seqs = [] if "--seq" in args else ["--seq", 256]      # a flag given twice is refused
    err = one_error_line(capsys, "gpu-check", "flash2", *seqs, *args)
    assert message in err


def test_mla_model_rows_count_the_latent_cache_not_the_up_projected_heads(capsys):
    """DeepSeek-V2's cache is one latent row per token: at N = 2**24 its 128 heads made
    2**31 "key/value rows" and the limit refused a decode step whose latent cache (19 GB)
    fits. The absorbed path now runs; the up-projected path, which does build per-head K
    and V, is refused with the path that fits named."""
    from attnsim.models import get_model
    model = get_model("deepseek-v2")
    wl = Workload(batch=1, heads=128, seq_q=1, seq_k=MAX_SEQ, head_dim=128, decode=True,
                  model=model)
    assert wl.batch * wl.kv_heads * wl.seq_k > MAX_ROWS       # what used to be counted
    r = simulate("mla", wl, "h100", compute=False)
    assert r.time.predicted_s > 0 and r.memory["fits"]
    code, out, err = run_cli(capsys, "run", "mla", "--model", "deepseek-v2", "--decode",
                             "--seq", MAX_SEQ, "--count-only", "--format", "json")
    assert code == 0, err
    assert json.loads(out)["workload"]["seq_k"] == MAX_SEQ
    err = one_error_line(capsys, "run", "mla", "--model", "deepseek-v2", "--decode", "--seq",
                         MAX_SEQ, "--path", "upproject", "--count-only")
    assert "upproject rebuilds K and V per head" in err and "use --path absorbed" in err
    # the latent rows keep the limit: 128 sequences of 2**24 tokens are 2**31 latent rows
    err = one_error_line(capsys, "run", "mla", "--model", "deepseek-v2", "--decode", "--seq",
                         MAX_SEQ, "--batch", 128, "--count-only")
    assert "batch x --seq = 2,147,483,648 latent cache rows exceeds 2**30" in err


@pytest.mark.parametrize("args,message", [
    (["flash2", "--path", "upproject"], "--path applies to mla's rows"),
    (["flash2", "--devices", 4], "--devices applies to ring's rows"),
    (["mla", "--kv-heads", 2], "mla: --kv-heads 2 does not apply"),
    (["reformer", "--kv-heads", 2], "reformer: --kv-heads 2 does not apply"),
])
def test_gpu_check_flags_of_an_algorithm_not_checked_are_refused(capsys, args, message):
    """They were dropped without a word (with or without a device)."""
    err = one_error_line(capsys, "gpu-check", *args)
    assert message in err


def test_row_limit_with_a_model_does_not_suggest_heads(capsys):
    """A --model fixes the heads (and --heads is refused with it): the row limit's fix names
    only the batch and the length."""
    err = one_error_line(capsys, "run", "flash2", "--model", "llama-3-8b", "--batch", 8192,
                         "--seq", 65536, "--count-only")
    assert "exceeds 2**30" in err and "--heads" not in err and "--batch or --seq" in err
    err = one_error_line(capsys, "run", "flash2", "--batch", 1024, "--heads", 64, "--seq",
                         65536, "--count-only")
    assert "--batch, --heads or --seq" in err
