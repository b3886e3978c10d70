"""The command line: list, run (text/json), report (all formats), and one-line errors."""
import json
import subprocess
import sys

import pytest

from attnsim.cli import main

RUN_JSON_COUNT_KEYS = {"hbm_read_bytes", "hbm_write_bytes", "matmul_flops", "exp_ops",
                       "other_flops", "sram_peak_bytes", "kernel_launches"}


def run_cli(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_names_algorithms_and_gpus(capsys):
    code, out, _ = run_cli(capsys, "list")
    assert code == 0
    for name in ("standard", "flash1", "flash2", "h100-sxm", "a100-80gb", "h100-pcie"):
        assert name in out
    code, out, _ = run_cli(capsys, "list", "--format", "json")
    data = json.loads(out)
    assert {a["name"] for a in data["algorithms"]} >= {"standard", "flash1", "flash2"}
    assert all("exact" in a and "paper" in a for a in data["algorithms"])
    ported = {a["name"]: (a["gpu_port"], a["gpu_stand_in"]) for a in data["algorithms"]}
    assert ported["flash2"] == (True, None) and ported["nsa"] == (True, None)
    assert ported["ring"] == (True, None)
    # every algorithm has a port but FlashAttention-3, measured against its stand-in
    assert {n: v for n, v in ported.items() if not v[0]} == {"flash3": (False, "sdpa-cudnn")}


@pytest.mark.parametrize("mode", [[], ["--count-only"]])
def test_run_json_has_the_public_keys(capsys, mode):
    code, out, _ = run_cli(capsys, "run", "flash2", "--hw", "h100", "--batch", "2", "--heads", "3",
                           "--seq", "257", "--head-dim", "64", "--causal", "--format", "json", *mode)
    assert code == 0
    d = json.loads(out)
    assert d["algorithm"] == "flash2" and d["gpu"]["name"] == "h100-sxm"
    assert d["workload"]["seq_q"] == 257 and d["workload"]["causal"] is True
    assert RUN_JSON_COUNT_KEYS <= set(d["counts"])
    assert {"predicted_s", "bound", "memory_s", "matmul_s", "exp_s", "other_s",
            "launch_s"} <= set(d["time"])
    assert d["io_bound"]["bytes"] > 0 and d["io_bound"]["ratio"] > 0
    assert d["mode"] == ("count-only" if mode else "executed")
    if not mode:
        assert d["error_vs_reference"] < 1e-4


def test_run_sram_override_changes_the_plan(capsys):
    _, out, _ = run_cli(capsys, "run", "flash1", "--seq", "512", "--count-only", "--format",
                        "json", "--sram-kb", "32")
    small = json.loads(out)
    _, out, _ = run_cli(capsys, "run", "flash1", "--seq", "512", "--count-only", "--format", "json")
    full = json.loads(out)
    assert small["sram_budget_bytes"] == 32 * 1024
    assert small["plan"]["block_k"] < full["plan"]["block_k"]
    assert small["counts"]["hbm_read_bytes"] > full["counts"]["hbm_read_bytes"]


def test_run_text_output(capsys):
    code, out, _ = run_cli(capsys, "run", "standard", "--seq", "300", "--heads", "2")
    assert code == 0
    assert "HBM read" in out and "predicted total" in out and "qk_gemm" in out


@pytest.mark.parametrize("fmt", ["text", "markdown", "json", "csv"])
def test_report_formats(capsys, tmp_path, fmt):
    out_file = tmp_path / f"report.{fmt}"
    code, _, _ = run_cli(capsys, "report", "--hw", "a100", "--batch", "1", "--heads", "2",
                         "--seq", "512", "--seqs", "256,512,1024", "--no-accuracy",
                         "--format", fmt, "--output", str(out_file))
    assert code == 0
    text = out_file.read_text()
    if fmt == "json":
        data = json.loads(text)
        assert {a["algorithm"] for a in data["algorithms"]} >= {"standard", "flash1", "flash2"}
        assert data["gpu"]["name"] == "a100-80gb"
        unavailable = {a["algorithm"] for a in data["algorithms"] if a.get("error")}
        assert unavailable <= {"flash3"}          # Hopper-only on an A100: said, not hidden
        assert all(len(g["seqs"]) == (0 if g["algorithm"] in unavailable else 3)
                   for g in data["growth"])
    elif fmt == "csv":
        assert "# algorithms" in text and "hbm_read_bytes" in text and "# growth" in text
    else:
        for word in ("flash2", "standard", "HBM", "bound", "NVIDIA A100"):
            assert word in text


BAD_INPUTS = [
    (["run", "flash3000"], "unknown algorithm 'flash3000'; valid algorithms: standard"),
    (["run", "flash2", "--hw", "b300"], "unknown GPU 'b300'; valid names: a100-40gb"),
    (["run", "flash2", "--heads", "6", "--kv-heads", "4"], "--heads (6) must be a multiple of --kv-heads (4)"),
    (["run", "flash2", "--seq", "0"], "--seq must be in [1, 16,777,216], got 0"),
    (["run", "flash1", "--head-dim", "256", "--sram-kb", "1"], "needs M >= 4d = 1024 elements"),
    (["run", "flash2", "--head-dim", "2048", "--hw", "a100"], "--head-dim must be in [1, 1,024]"),
    (["run", "flash2", "--window", "5"], "unrecognized argument(s) for flash2: --window"),
    (["run", "flash2", "--sram-kb", "1000"], "--sram-kb must be a number of KiB in [1/1024 (one byte), 227]"),
    (["run", "flash2", "--pass", "bwd", "--kv-heads", "4"], "multi-head attention only"),
    (["run", "flash3", "--dropout", "0.1"], "flash3 does not simulate dropout"),
    (["run", "ring", "--pass", "bwd"], "ring simulates passes fwd; --pass bwd is not available"),
    (["report", "--seqs", "12,x"], "--seqs must be comma-separated integers"),
    (["report", "--hw", "h100,h100-sxm", "--seqs", "1024"], "--hw names h100-sxm twice"),
    (["run", "flash2", "--hw", "nonexistent.toml"], "does not exist"),
]


@pytest.mark.parametrize("args,message", BAD_INPUTS)
def test_bad_input_is_one_clear_line(capsys, args, message):
    code, out, err = run_cli(capsys, *args, "--count-only") if args[0] == "run" else run_cli(capsys, *args)
    assert code == 2
    assert err.startswith("attnsim: error: ") and err.count("\n") == 1, err
    assert message in err
    assert "Traceback" not in err


def test_malformed_gpu_toml(capsys, tmp_path):
    bad = tmp_path / "gpu.toml"
    bad.write_text('base = "h100"\nhbm_bandwidth_bytes_per_s = "fast"\n')
    code, _, err = run_cli(capsys, "run", "flash2", "--hw", str(bad), "--count-only")
    assert code == 2 and "field 'hbm_bandwidth_bytes_per_s' must be a number" in err
    bad.write_text("sm_count = 10\n[oops\n")
    code, _, err = run_cli(capsys, "run", "flash2", "--hw", str(bad), "--count-only")
    assert code == 2 and "is not valid TOML" in err


def test_custom_gpu_toml_changes_the_prediction(capsys, tmp_path):
    slow = tmp_path / "slow.toml"
    slow.write_text('base = "h100"\nname = "h100-slow"\nfull_name = "H100, slow HBM"\n'
                    "hbm_bandwidth_bytes_per_s = 1.0e12\n")
    _, out, _ = run_cli(capsys, "run", "standard", "--hw", str(slow), "--count-only", "--format", "json")
    slow_t = json.loads(out)["time"]["memory_s"]
    _, out, _ = run_cli(capsys, "run", "standard", "--hw", "h100", "--count-only", "--format", "json")
    fast_t = json.loads(out)["time"]["memory_s"]
    assert slow_t > 3 * fast_t * 0.99


def test_module_entry_point_exit_code():
    """`python -m attnsim` as users run it: exit status 2 and no traceback on bad input."""
    p = subprocess.run([sys.executable, "-m", "attnsim", "run", "nope"], capture_output=True,
                       text=True)
    assert p.returncode == 2
    assert "valid algorithms" in p.stderr and "Traceback" not in p.stderr


def test_report_plot(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "growth.png"
    code, _, _ = run_cli(capsys, "report", "--batch", "1", "--heads", "1", "--seq", "512",
                         "--seqs", "256,512,1024", "--no-accuracy", "--plot", str(png),
                         "--output", str(tmp_path / "r.txt"))
    assert code == 0 and png.stat().st_size > 10_000


@pytest.mark.parametrize("extra", [["--decode"], ["--causal", "--seq-k", "256"],
                                   ["--pass", "bwd"], ["--dropout", "0.1"]])
def test_report_runs_on_every_kind_of_workload(capsys, tmp_path, extra):
    """The report's side tables (throughput, the Sparse Transformer's layouts, the ring's
    balance) take what they need of the workload: a decode step, a cross-attention, a
    backward or dropout must not fail them."""
    out_file = tmp_path / "report.md"
    code, _, err = run_cli(capsys, "report", "--hw", "h100", "--batch", "1", "--heads", "2",
                           "--seq", "512", "--seqs", "256,512", "--no-accuracy", "--jobs", "1",
                           "--algorithms", "flash2,flash3,ring,sparse_transformer", *extra,
                           "--output", str(out_file))
    assert code == 0, err
    assert "Traceback" not in err and out_file.read_text().count("flash2") > 0


@pytest.mark.parametrize("args,message", [
    (["run", "flash2", "--count-only", "--output", ""], "--output '' names no file"),
    (["report", "--algorithms", ""], "--algorithms names no algorithm"),
    (["report", "--algorithms", " , "], "--algorithms names no algorithm"),
])
def test_empty_names_are_refused_not_read_as_defaults(capsys, args, message):
    assert main(args) == 2
    assert message in capsys.readouterr().err


def test_output_never_overwrites_a_file_the_run_reads(capsys, tmp_path):
    gpu_file = tmp_path / "my.toml"
    gpu_file.write_text('base = "h100"\n')
    assert main(["run", "flash2", "--seq", "256", "--count-only", "--hw", str(gpu_file),
                 "--output", str(gpu_file)]) == 2
    assert "is the file --hw reads" in capsys.readouterr().err
    assert gpu_file.read_text() == 'base = "h100"\n'


def test_output_never_overwrites_a_file_a_base_chain_reads(capsys, tmp_path):
    base = tmp_path / "base.toml"
    base.write_text('base = "h100"\nname = "mybase"\n')
    child = tmp_path / "child.toml"
    child.write_text(f'base = "{base}"\nname = "mychild"\n')
    assert main(["run", "flash2", "--seq", "256", "--count-only", "--hw", str(child),
                 "--output", str(base)]) == 2
    err = capsys.readouterr().err
    assert f"is a file --hw reads (the base of '{child}')" in err and err.count("\n") == 1
    assert base.read_text() == 'base = "h100"\nname = "mybase"\n'
    model_base = tmp_path / "m_base.toml"
    model_base.write_text('base = "llama-3-8b"\nname = "mb"\n')
    (tmp_path / "m.toml").write_text('base = "m_base.toml"\nname = "mc"\n')   # relative
    assert main(["run", "gqa", "--decode", "--seq", "256", "--count-only", "--model",
                 str(tmp_path / "m.toml"), "--output", str(model_base)]) == 2
    assert "is a file --model reads (the base of" in capsys.readouterr().err
    assert model_base.read_text() == 'base = "llama-3-8b"\nname = "mb"\n'


def test_a_gpu_without_interconnect_refuses_the_ring_in_one_line(capsys, tmp_path):
    gpu = tmp_path / "nolink.toml"
    gpu.write_text('base = "h100-sxm"\nname = "h100-nolink"\nnvlink_bytes_per_s = 0\n')
    code, _, err = run_cli(capsys, "run", "ring", "--seq", "1024", "--count-only",
                           "--hw", str(gpu))
    assert code == 2 and err.count("\n") == 1 and "internal error" not in err
    assert "nvlink_bytes_per_s is 0 (no interconnect)" in err and "--no-interconnect" in err
    code, _, _ = run_cli(capsys, "run", "ring", "--seq", "1024", "--count-only", "--hw",
                         str(gpu), "--no-interconnect")
    assert code == 0


def test_debug_shows_the_traceback_of_bad_input_but_keeps_status_2(capsys):
    code, _, err = run_cli(capsys, "--debug", "run", "flash2", "--seq", "0", "--count-only")
    assert code == 2 and "Traceback" in err
    assert err.splitlines()[-1] == "attnsim: error: --seq must be in [1, 16,777,216], got 0"


@pytest.mark.parametrize("args,hint", [
    (["run", "rfa", "--causal", "--gate", "--gate-bias", "-1e30"], "write --gate-bias=-1e30"),
    (["run", "flash2", "--scale", "-1e-3"], "write --scale=-1e-3"),
])
def test_a_negative_number_in_scientific_notation_says_how_to_write_it(capsys, args, hint):
    code, _, err = run_cli(capsys, *args, "--seq", "256", "--count-only")
    assert code == 2 and err.count("\n") == 1
    assert "expected one argument" in err and hint in err


def test_a_missing_value_gets_no_negative_number_hint(capsys):
    code, _, err = run_cli(capsys, "run", "flash2", "--count-only", "--scale", "--causal")
    assert code == 2 and "expected one argument" in err and "negative" not in err


def test_a_long_executed_run_is_announced_with_the_count_only_way_out(capsys, monkeypatch):
    """Executed mode does every counted operation on the CPU: a count-only pass of the same
    run measures that work first, and above the threshold one stderr line says it will take
    tens of seconds to minutes and names --count-only; the output itself is unchanged."""
    import attnsim.cli as cli
    args = ("run", "flash2", "--seq", "64", "--format", "json")
    monkeypatch.setattr(cli, "EXECUTED_WORK_WARNING", 1e30)
    code, quiet, err = run_cli(capsys, *args)
    assert code == 0 and err == ""
    monkeypatch.setattr(cli, "EXECUTED_WORK_WARNING", 1e3)
    code, out, err = run_cli(capsys, *args)
    assert code == 0 and err.count("\n") == 1
    assert err.startswith("attnsim: warning: executed mode will do ")
    assert "--count-only gives the same counts" in err
    assert json.loads(out)["counts"] == json.loads(quiet)["counts"]
    code, _, err = run_cli(capsys, *args, "--count-only")
    assert code == 0 and err == ""
