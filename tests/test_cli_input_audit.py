"""Inputs a hostile or careless user gives: each gets one line that names what to change (exit 2)
or a warning, never a number that silently describes something else."""
import os

import pytest

from attnsim.cli import main


def run_cli(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_an_algorithm_without_kv_heads_refuses_a_gqa_model(capsys):
    """reformer's keys are its queries: a GQA model's 8 K/V heads would be echoed and
    ignored, as a typed --kv-heads is refused."""
    code, _, err = run_cli(capsys, "run", "reformer", "--count-only", "--seq", "1024",
                           "--model", "llama-3-8b")
    assert code == 2
    assert "--model llama-3-8b has 8 K/V heads for 32 query heads" in err
    assert "--heads and --head-dim instead of --model" in err


def test_a_model_that_does_not_fit_warns(capsys):
    code, out, err = run_cli(capsys, "run", "gqa", "--decode", "--count-only", "--model",
                             "llama-3-70b", "--seq", "8192", "--batch", "64")
    assert code == 0 and out
    assert "warning: llama-3-70b: its weights alone (141 GB) exceed" in err
    # weights that fit, with a cache that does not
    code, _, err = run_cli(capsys, "run", "gqa", "--decode", "--count-only", "--model",
                           "llama-3-8b", "--seq", "131072", "--batch", "8")
    assert code == 0 and "the KV cache of 8 sequence(s) of 131,072 tokens" in err
    code, _, err = run_cli(capsys, "run", "gqa", "--decode", "--count-only", "--model",
                           "llama-3-8b", "--seq", "8192", "--batch", "4")
    assert code == 0 and "warning" not in err


@pytest.mark.parametrize("line,message", [
    ("clock_hz = 1e30", "'clock_hz' must be in [1e+08, 1e+10], the range of real GPUs"),
    ("sm_count = 99999999999999999999", "'sm_count' must be in [1, 1,024]"),
    ("hbm_bandwidth_bytes_per_s = 1e20", "'hbm_bandwidth_bytes_per_s' must be in"),
])
def test_a_gpu_field_far_out_of_range_is_called_so(capsys, tmp_path, line, message):
    """Values beyond 2^63 used to be called 'not finite'."""
    path = write(tmp_path, "gpu.toml", f'base = "h100"\n{line}\n')
    code, _, err = run_cli(capsys, "run", "flash2", "--count-only", "--hw", path)
    assert code == 2 and message in err and "finite" not in err


@pytest.mark.parametrize("text,message", [
    ('base = "llama-3-8b"\nname = "x"\nparams = 1e9\n',
     "active_params (8,030,261,248, from the base) exceeds params (1,000,000,000); set "
     "active_params"),
    ('base = "deepseek-v2"\nname = "y"\nattention = "gqa"\n',
     "kv_lora_rank (512, from the base) and rope_head_dim (64, from the base) are MLA "
     "fields; set attention = \"mla\", or set both to 0"),
])
def test_a_model_file_names_what_it_inherited(capsys, tmp_path, text, message):
    code, _, err = run_cli(capsys, "run", "gqa", "--count-only", "--model",
                           write(tmp_path, "m.toml", text))
    assert code == 2 and message in err


def test_sram_advice_names_the_gpu_when_sram_kb_is_already_all_of_it(capsys, tmp_path):
    path = write(tmp_path, "gpu.toml", 'base = "h100"\nsmem_bytes_per_block = 1024\n'
                                       'smem_bytes_per_sm = 1024\n')
    code, _, err = run_cli(capsys, "run", "flash2", "--count-only", "--hw", path)
    assert code == 2 and "a larger --sram-kb" not in err
    assert "a GPU with more shared memory per block" in err and "smem_bytes_per_block" in err
    # below the GPU's shared memory, a larger --sram-kb is still the advice
    code, _, err = run_cli(capsys, "run", "flash2", "--count-only", "--sram-kb", "1")
    assert code == 2 and "a larger --sram-kb" in err


def test_nsa_decode_says_the_cache_length_is_what_does_not_fit(capsys):
    code, _, err = run_cli(capsys, "run", "nsa", "--decode", "--count-only", "--seq", "4194304",
                           "--heads", "1")
    assert code == 2
    assert "65,536 selection blocks" in err and "a shorter --seq" in err


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
@pytest.mark.parametrize("flag", ["--hw", "--model"])
def test_a_fifo_named_as_a_toml_file_is_refused_not_read(capsys, tmp_path, flag):
    """Opening a FIFO blocks until a writer comes: refused before the read."""
    path = str(tmp_path / "pipe.toml")
    os.mkfifo(path)
    code, _, err = run_cli(capsys, "run", "gqa", "--count-only", flag, path)
    assert code == 2 and "is not a regular file" in err


def test_a_model_file_with_an_upper_case_suffix_is_read(capsys, tmp_path):
    """--hw reads X.TOML; --model reads it too."""
    path = write(tmp_path, "M.TOML", 'base = "llama-3-8b"\nname = "upper"\n')
    code, out, _ = run_cli(capsys, "run", "gqa", "--count-only", "--seq", "512", "--model", path)
    assert code == 0 and "upper" in out


@pytest.mark.parametrize("args,flag", [
    (["run", "flash2", "--count-only", "--seq", "1024", "--seq", "2048"], "--seq"),
    (["run", "flash2", "--count-only", "--seq=1024", "--seq", "2048"], "--seq"),
    (["run", "local", "--count-only", "--window", "4", "--window", "8"], "--window"),
    (["report", "--hw", "h100", "--algorithms", "flash2", "--hw", "a100"], "--hw"),
    (["report", "-o", "a.md", "--output", "b.md"], "--output"),             # an alias
    (["run", "flash2", "--count-only", "--head-d", "64", "--head-dim", "128"], "--head-dim"),
])
def test_a_flag_given_twice_is_refused(capsys, args, flag):
    """argparse would keep the last value without a word."""
    code, _, err = run_cli(capsys, *args)
    assert code == 2 and f"{flag} is given twice; give it once" in err


def test_out_of_memory_advises_count_only_only_where_it_was_not_given():
    from attnsim.cli import describe_error
    code, line = describe_error(MemoryError())
    assert code == 2 and "add --count-only" in line
    code, line = describe_error(MemoryError(), count_only=True)
    assert code == 2 and "even with --count-only" in line and "add --count-only" not in line
