"""Refusals that name the cause the user gave and a fix that runs: executed fp8 on a program
that takes no fp8, --kv-heads on Reformer's shared-QK attention, --dropout on a decode step,
and a model from a TOML file suggested to another algorithm."""
import pytest

from attnsim import Workload
from attnsim.cli import main
from attnsim.errors import AttnsimError

GQA_MODEL = """name = "tiny"
layers = 2
d_model = 256
heads = 4
kv_heads = 2
head_dim = 64
params = 1e6
"""

MLA_MODEL = GQA_MODEL.replace('"tiny"', '"tiny-mla"').replace("kv_heads = 2", "kv_heads = 4") \
    + 'attention = "mla"\nkv_lora_rank = 128\nrope_head_dim = 32\n'


def refused(capsys, argv) -> str:
    """The one stderr line of a refused command line."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("attnsim: error: ") and err.count("\n") == 1, err
    return err


def runs(capsys, argv) -> None:
    assert main(argv) == 0, capsys.readouterr().err
    capsys.readouterr()


@pytest.mark.parametrize("program,own", [
    (["standard", "--program", "pytorch-eager"], "torch.baddbmm takes no fp8"),
    (["flash2", "--tiles", "release"], "the release runs fp16 and bf16 only")])
def test_executed_fp8_shows_the_programs_own_refusal_first(capsys, program, own):
    """A program with no fp8 at all refuses before the generic 'add --count-only', which
    would only lead to that refusal; its own fix (another --dtype) runs."""
    argv = ["run", *program, "--seq", "64", "--heads", "2", "--head-dim", "64"]
    err = refused(capsys, argv + ["--dtype", "fp8"])
    assert own in err and "--count-only" not in err
    runs(capsys, argv + ["--dtype", "fp16"])


def test_executed_fp8_without_an_fp8_kernel_still_suggests_count_only(capsys):
    argv = ["run", "flash2", "--seq", "64", "--heads", "2", "--dtype", "fp8"]
    assert "add --count-only" in refused(capsys, argv)
    runs(capsys, argv + ["--count-only"])


def test_reformer_refuses_kv_heads(capsys):
    """Its keys are its queries: grouped K/V heads would change nothing it counts."""
    argv = ["run", "reformer", "--seq", "1024", "--heads", "4", "--count-only"]
    err = refused(capsys, argv + ["--kv-heads", "2"])
    assert "--kv-heads 2 does not apply" in err and "drop --kv-heads" in err
    runs(capsys, argv)


def test_decode_refuses_dropout(capsys):
    """Dropout is a training option and a decode step is inference (forward only)."""
    argv = ["run", "flash2", "--decode", "--seq", "1024", "--count-only"]
    err = refused(capsys, argv + ["--dropout", "0.1"])
    assert "--dropout 0.1" in err and "--decode" in err
    runs(capsys, argv)
    with pytest.raises(AttnsimError, match="--decode"):
        Workload(seq_q=1, seq_k=64, decode=True, dropout=0.1)
    Workload(seq_q=64, dropout=0.1)                 # training keeps it


@pytest.mark.parametrize("model_text,given,suggested", [
    (GQA_MODEL, "mla", "gqa"), (MLA_MODEL, "flash2", "mla")])
def test_a_model_file_is_suggested_as_a_file_not_by_its_name(capsys, tmp_path, model_text,
                                                              given, suggested):
    """The name inside a TOML file is not a preset: 'attnsim run gqa --model tiny' fails."""
    path = tmp_path / "model.toml"
    path.write_text(model_text)
    step = ["--decode", "--seq", "256", "--count-only"]
    err = refused(capsys, ["run", given, "--model", str(path), *step])
    name = "tiny-mla" if suggested == "mla" else "tiny"
    assert f"--model {name}'" not in err
    assert f"'attnsim run {suggested} --model FILE' with FILE the same .toml file" in err
    runs(capsys, ["run", suggested, "--model", str(path), *step])


def test_a_preset_is_still_suggested_by_its_name(capsys):
    err = refused(capsys, ["run", "mla", "--model", "llama-3-8b", "--decode", "--seq", "256",
                           "--count-only"])
    assert "run 'attnsim run gqa --model llama-3-8b'" in err
