"""The CLI's --model/--decode flags, the JSON keys kv_cache and decode, presets in list, the
report's decode section."""
import json

import pytest

from attnsim.cli import main
from attnsim.models import get_model
from attnsim.workload import Workload
from hwmodels import get_gpu
from reports.decode import decode_section


def run_json(capsys, *args):
    assert main(list(args)) == 0
    return json.loads(capsys.readouterr().out)


def test_gqa_decode_json_keys(capsys):
    d = run_json(capsys, "run", "gqa", "--model", "llama-2-70b", "--decode", "--seq", "4096",
                 "--batch", "2", "--count-only", "--format", "json")
    assert d["workload"]["heads"] == 64 and d["workload"]["kv_heads"] == 8
    assert d["workload"]["seq_q"] == 1 and d["workload"]["seq_k"] == 4096
    assert d["kv_cache"]["bytes_per_token"] == 2 * 8 * 128 * 80 * 2
    assert d["kv_cache"]["bytes_total"] == 2 * 8 * 128 * 80 * 2 * 4096 * 2
    assert d["decode"]["time_per_token_s"] > d["decode"]["attention_only_s"] > 0


def test_mla_decode_json_keys(capsys):
    d = run_json(capsys, "run", "mla", "--model", "deepseek-v2", "--decode", "--seq", "2048",
                 "--count-only", "--format", "json", "--path", "upproject")
    assert d["options"]["path"] == "upproject"
    assert d["kv_cache"]["bytes_per_token"] == (512 + 64) * 60 * 2
    assert d["decode"]["time_per_token_s"] > 0
    assert d["mla"]["hbm_bytes_upproject_over_absorbed"] > 1


def test_kv_heads_without_preset(capsys):
    d = run_json(capsys, "run", "gqa", "--heads", "8", "--kv-heads", "2", "--decode",
                 "--seq", "300", "--new-tokens", "2", "--head-dim", "32", "--format", "json")
    assert d["kv_cache"]["bytes_per_token"] == 2 * 2 * 32 * 2 and d["kv_cache"]["layers"] == 1
    assert d["workload"]["causal"] and d["error_vs_reference"] < 2e-6
    assert d["decode"]["weights_s"] is None


@pytest.mark.parametrize("args,message", [
    (["--model", "gpt-5"], "valid models: llama-2-7b"),
    (["--model", "llama-2-7b", "--heads", "16"], "conflicts with llama-2-7b"),
    (["--heads", "6", "--kv-heads", "4"], "multiple of --kv-heads"),
    (["--new-tokens", "2"], "applies to --decode"),
    (["--decode", "--seq-k", "9"], "drop --seq-k"),
    (["--decode", "--seq", "512", "--new-tokens", "600"], "--new-tokens 600 exceeds --seq 512"),
    (["--decode", "--pass", "fwd+bwd"], "forward only: drop --pass fwd+bwd"),
    (["--input-seed", "-1"], "--input-seed must be in [0, "),
    (["--input-seed", str(2**64)], "--input-seed must be in [0, "),
])
def test_bad_flags_give_one_line_errors(capsys, args, message):
    assert main(["run", "gqa", "--count-only", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize("alg", ["flash2", "standard", "flash3"])
def test_an_mla_model_runs_only_as_mla(capsys, alg):
    """DeepSeek-V2's heads read one latent cache: as 128-head MHA the numbers would describe
    a model that does not exist."""
    assert main(["run", alg, "--model", "deepseek-v2", "--count-only", "--seq", "512"]) == 2
    assert "run 'attnsim run mla --model deepseek-v2'" in capsys.readouterr().err


def test_an_empty_model_name_is_unknown(capsys):
    assert main(["run", "gqa", "--model", "", "--count-only", "--seq", "512"]) == 2
    assert "unknown model ''" in capsys.readouterr().err


def test_mla_refuses_kv_heads_it_would_ignore(capsys):
    """Every head reads the one latent cache: --kv-heads would be echoed and ignored. The
    refusal comes from the algorithm's own declaration, which only MLA and Reformer (its
    keys are its queries) make."""
    from algorithms.registry import all_algorithms
    assert sorted(n for n, m in all_algorithms().items() if m.INFO.no_kv_heads) == \
        ["mla", "reformer"]
    assert main(["run", "mla", "--decode", "--count-only", "--seq", "512", "--kv-heads",
                 "1"]) == 2
    err = capsys.readouterr().err
    assert "mla: --kv-heads 1 does not apply: every head reads the one latent cache" in err
    assert "drop --kv-heads" in err


def test_list_has_presets(capsys):
    d = run_json(capsys, "list", "--format", "json")
    assert {"llama-2-70b", "deepseek-v2"} <= {m["name"] for m in d["models"]}
    assert main(["list"]) == 0
    assert "Model presets" in capsys.readouterr().out


def test_report_decode_section():
    wl = Workload(heads=32, kv_heads=8, head_dim=128, model=get_model("mistral-7b"))
    section, records = decode_section(get_gpu("h100"), wl)
    assert [r["context"] for r in records] == [4096, 32768, 131072]
    assert all(r["kv_cache"]["bytes_per_token"] == 2 * 8 * 128 * 32 * 2 for r in records)
    # the cache read grows with the context: so does the attention time per token
    times = [r["decode"]["attention_only_s"] for r in records]
    assert times == sorted(times) and times[-1] > 10 * times[0]
    assert section.tables[0].rows[0][0] == "mistral-7b"


def test_a_decode_step_through_flash2_says_it_computes_whole_tiles(capsys):
    """flash2 decoding computes its 128-row tile for one query row: the JSON declares the
    rows computed over the rows counted, the text says why the step costs what it does, and
    --no-row-padding prices the rows counted (faster, the counts the same)."""
    args = ["run", "flash2", "--decode", "--batch", "1", "--heads", "16", "--kv-heads", "2",
            "--seq", "65536", "--head-dim", "128", "--hw", "a100", "--count-only"]
    d = run_json(capsys, *args, "--format", "json")
    off = run_json(capsys, *args, "--format", "json", "--no-row-padding")
    assert d["kernels"][0]["row_padding"] == 128.0
    assert d["counts"] == off["counts"]
    assert d["time"]["predicted_s"] > 3 * off["time"]["predicted_s"]
    assert main(args) == 0
    assert "flash2_fwd computes 128x the rows it counts" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--seq", "512"], "--tiles release is flash-attn's split-KV decode of one new token"),
    (["--decode", "--new-tokens", "2", "--seq", "512"], "one new token"),
    (["--decode", "--seq", "512", "--heads", "128", "--kv-heads", "1"],
     "at most 64 query heads"),
])
def test_gqa_release_tiles_refuse_what_flash_attn_does_not_run(capsys, args, message):
    """flash-attn packs a group's heads into its 64-row tile only for one new token and at
    most 64 heads: anything else is one line naming the flag, exit 2."""
    assert main(["run", "gqa", "--tiles", "release", "--count-only", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "--tiles" in err[0]
