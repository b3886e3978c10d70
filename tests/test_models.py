"""Model presets, custom model TOML files and KV-cache accounting against closed forms."""
import pytest

from attnsim.errors import AttnsimError
from attnsim.models import (PRESETS, ModelFileError, get_model, kv_cache_summary,
                            load_model_file, model_names)
from hwmodels import get_gpu

H100 = get_gpu("h100")

# Per token, all layers, elements: MHA/GQA 2 · n_g · d_h · L, MLA (d_c + d_h^R) · L — with the
# published configs written out here (config.json / papers), not read from the presets.
EXPECTED_KV_ELEMENTS = {
    "llama-2-7b": 2 * 32 * 128 * 32,
    "llama-2-13b": 2 * 40 * 128 * 40,
    "llama-2-70b": 2 * 8 * 128 * 80,
    "llama-3-8b": 2 * 8 * 128 * 32,
    "llama-3-70b": 2 * 8 * 128 * 80,
    "mistral-7b": 2 * 8 * 128 * 32,
    "deepseek-v2": (512 + 64) * 60,
    "deepseek-v2-lite": (512 + 64) * 27,
}


@pytest.mark.parametrize("name", sorted(EXPECTED_KV_ELEMENTS))
@pytest.mark.parametrize("dtype,e", [("fp16", 2), ("bf16", 2), ("fp8", 1)])
def test_kv_bytes_per_token_closed_form(name, dtype, e):
    m = get_model(name)
    assert m.kv_bytes_per_token(dtype) == EXPECTED_KV_ELEMENTS[name] * e
    assert m.kv_cache_bytes(4096, 3, dtype) == EXPECTED_KV_ELEMENTS[name] * e * 4096 * 3


def test_required_presets_and_well_known_sizes():
    for name in ("llama-2-7b", "llama-2-70b", "llama-3-8b", "mistral-7b", "deepseek-v2"):
        assert name in PRESETS and PRESETS[name].source
    # the numbers people quote: 512 KiB/token for Llama-2-7B, 320 KiB for Llama-2-70B fp16
    assert get_model("llama-2-7b").kv_bytes_per_token("fp16") == 512 * 1024
    assert get_model("llama-2-70b").kv_bytes_per_token("fp16") == 320 * 1024
    # released checkpoints' parameter totals (safetensors metadata)
    assert get_model("llama-2-7b").params == 6_738_415_616
    assert get_model("llama-2-70b").params == 68_976_648_192
    assert get_model("llama-3-8b").params == 8_030_261_248
    assert get_model("mistral-7b").params == 7_241_732_096


def test_tokens_that_fit_after_weights():
    m = get_model("llama-3-8b")
    s = kv_cache_summary(m, H100, context=8192, batch=2, dtype="fp16")
    free = 80 * 2**30 - 8_030_261_248 * 2
    assert s["tokens_that_fit"] == free // (2 * 8 * 128 * 32 * 2)
    assert s["sequences_that_fit_at_context"] == s["tokens_that_fit"] // 8192
    assert s["bytes_total"] == 2 * 8 * 128 * 32 * 2 * 8192 * 2
    assert s["per_dtype"]["fp8"]["bytes_per_token"] == 2 * 8 * 128 * 32
    big = kv_cache_summary(get_model("llama-2-70b"), H100, 4096, 1, "fp16")
    assert not big["weights_fit"] and big["tokens_that_fit"] == 0   # 138 GB > 80 GiB


def test_decode_reads_the_embedding_rows_it_looks_up():
    """A decode step reads every active parameter once, except the input embedding table,
    of which each new token reads one row (vocab sizes from the config.json files)."""
    m = get_model("llama-3-8b")
    assert m.vocab_size == 128256
    assert m.decode_weight_params(1) == 8_030_261_248 - 128255 * 4096
    assert m.decode_weight_params(64) == 8_030_261_248 - (128256 - 64) * 4096
    assert m.decode_weight_params(10**9) == m.params          # every row looked up: the table
    assert get_model("llama-2-7b").decode_weight_params(1) == 6_738_415_616 - 31999 * 4096
    # the mixture-of-experts presets quote a published activated count and leave it whole
    assert get_model("deepseek-v2").decode_weight_params(1) == 21_000_000_000


def test_unknown_model_lists_valid_names():
    with pytest.raises(AttnsimError) as exc:
        get_model("llama-9-1t")
    for name in model_names():
        assert name in str(exc.value)


def write(tmp_path, text):
    path = tmp_path / "model.toml"
    path.write_text(text)
    return str(path)


def test_custom_model_from_toml(tmp_path):
    m = get_model(write(tmp_path, 'name = "tiny"\nlayers = 4\nd_model = 512\nheads = 8\n'
                                  'kv_heads = 2\nhead_dim = 64\nparams = 3e7\n'))
    assert (m.attention, m.kv_bytes_per_token("fp16")) == ("gqa", 2 * 2 * 64 * 4 * 2)
    assert m.vocab_size == 0 and m.decode_weight_params(1) == 30_000_000
    v = get_model(write(tmp_path, 'base = "llama-3-8b"\nname = "v"\nvocab_size = 32000\n'))
    assert v.decode_weight_params(2) == v.params - (32000 - 2) * 4096
    mla = load_model_file(write(tmp_path, 'base = "deepseek-v2"\nname = "ds-small"\n'
                                          'layers = 2\n'))
    assert mla.is_mla and mla.kv_bytes_per_token("fp8") == 576 * 2


@pytest.mark.parametrize("text,message", [
    ('name = "x"\nlayers = 4\n', "missing field"),
    ('name = "x"\nlayers = "four"\nd_model = 1\nheads = 1\nhead_dim = 1\nparams = 1\n',
     "'layers' must be a number"),
    ('name = "x"\nlayers = 4.5\nd_model = 1\nheads = 1\nhead_dim = 1\nparams = 1\n',
     "whole number"),
    ('name = "x"\nlayers = 4\nd_model = 64\nheads = 6\nkv_heads = 4\nhead_dim = 8\n'
     'params = 10\n', "multiple of kv_heads"),
    ('name = "x"\nlayrs = 4\n', "unknown field"),
    ('name = "x"\nlayers = 4\nd_model = 64\nheads = 4\nhead_dim = 16\nparams = 10\n'
     'attention = "mla"\n', "needs positive kv_lora_rank"),
    ('name = [broken', "not valid TOML"),
    ('name = "x"\nlayers = 4\nd_model = 64\nheads = 4\nhead_dim = 16\nparams = 1000\n'
     'vocab_size = 32000\n', "input embedding table"),
    ('name = "x"\nlayers = 4\nd_model = 64\nheads = 4\nhead_dim = 16\nparams = 1000\n'
     'vocab_size = -1\n', "'vocab_size' must be positive"),
])
def test_malformed_model_toml(tmp_path, text, message):
    with pytest.raises(ModelFileError, match=message):
        get_model(write(tmp_path, text))


def test_missing_model_file():
    with pytest.raises(ModelFileError, match="does not exist"):
        get_model("/nonexistent/model.toml")
