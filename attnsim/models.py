"""Model presets (real published configurations), custom models from TOML, KV-cache accounting.

A ``ModelConfig`` describes what decode needs of a transformer: its layer count, attention
shape (heads, KV heads, head dim, or MLA's latent dims) and parameter count. Every preset
cites its source. Parameter counts of the dense models are the totals of their released
checkpoints; they equal the sum of the config.json shapes (embeddings + lm_head + per layer
q/k/v/o projections, 3 MLP matrices, 2 RMSNorms, + final norm), which
``tests/test_models.py`` recomputes.

KV cache per token, all layers, in elements (e = storage bytes per element):

    MHA / GQA / MQA   2 · n_g · d_h · L        (K and V of each KV head; n_g = n_h for MHA)
    MLA               (d_c + d_h^R) · L        (latent c_KV and the shared RoPE key k^R)

Weights: bytes = parameter count x weight dtype bytes. Assumption (stated wherever it is
used): the weights are stored at the workload's dtype (fp16/bf16 2 B, fp8 1 B), every
parameter sits in the one GPU's HBM, and nothing else (activations, workspace, CUDA
context) is reserved; the rest of HBM holds KV cache. A decode step reads the weights
that one token activates once (``active_params``: all of them for a dense model, the
routed-to experts for a mixture of experts — a lower bound at batch > 1, where different
tokens choose different experts), less the input embedding table where the model states
its ``vocab_size`` (a lookup reads one row a token; the Llama-family presets, whose
parameter counts are their shapes' sums, state it; the mixture-of-experts presets quote
a published activated count whose rounding cannot tell whether it holds that table, and
leave it in).

A custom model is a TOML file (``--model path/to/model.toml``)::

    # my_model.toml: a 1B GQA model
    name = "tiny-gqa"
    layers = 16
    d_model = 2048
    heads = 32
    kv_heads = 8
    head_dim = 64
    params = 1.2e9
    vocab_size = 32000     # optional: decode looks up its embedding rows, not the whole table
    source = "our config.json"

MLA models set ``attention = "mla"`` and ``kv_lora_rank``, ``rope_head_dim`` (and optionally
``q_lora_rank``). Errors name the file, the field and the problem.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from attnsim.errors import AttnsimError
from algorithms.kernels.decode_info import kv_cache_accounting
from hwmodels.config_file import base_chain, read_toml, start_from_base
from hwmodels.gpus import DTYPE_BYTES

ATTENTION_KINDS = ("mha", "gqa", "mqa", "mla")


class ModelFileError(AttnsimError):
    """A model TOML file that cannot be used as it is."""


@dataclass(frozen=True)
class ModelConfig:
    """What decode needs of one transformer. Field names carry their meaning.

    Attributes:
        name: short name used on the command line.
        full_name: the published model's name.
        layers: L, transformer blocks (each with one attention layer).
        d_model: hidden size.
        heads: n_h, query heads.
        kv_heads: n_g, key/value heads (= heads for MHA, 1 for MQA; for MLA, the heads
            the latent is up-projected into, as config.json states).
        head_dim: d_h (for MLA: the non-RoPE query/key dim, also the value dim).
        params: total parameters (all stored in HBM).
        active_params: parameters one token reads (MoE: shared + routed experts); None =
            params.
        attention: "mha", "gqa", "mqa" or "mla".
        kv_lora_rank: MLA's d_c, the KV latent width (0 otherwise).
        rope_head_dim: MLA's d_h^R, the decoupled RoPE key width (0 otherwise).
        q_lora_rank: MLA's d_c', the query latent width (0: queries not compressed).
        vocab_size: rows of the input embedding table, which a decode step looks up one row
            of per token rather than reading whole (0: not stated, or tied to the lm_head,
            which does read it whole; the step then reads every active parameter).
        source: where the numbers come from.
    """

    name: str
    full_name: str
    layers: int
    d_model: int
    heads: int
    kv_heads: int
    head_dim: int
    params: int
    active_params: int | None = None
    attention: str = "gqa"
    kv_lora_rank: int = 0
    rope_head_dim: int = 0
    q_lora_rank: int = 0
    vocab_size: int = 0
    source: str = ""

    def __post_init__(self):
        if self.active_params is None:
            object.__setattr__(self, "active_params", self.params)

    @property
    def is_mla(self) -> bool:
        return self.attention == "mla"

    def kv_elements_per_token_per_layer(self) -> int:
        """Cached elements per token in one layer (see the module docstring)."""
        if self.is_mla:
            return self.kv_lora_rank + self.rope_head_dim
        return 2 * self.kv_heads * self.head_dim

    def kv_bytes_per_token(self, dtype: str) -> int:
        """KV-cache bytes per token, all layers, at storage dtype ``dtype``."""
        return self.kv_elements_per_token_per_layer() * self.layers * dtype_bytes(dtype)

    def kv_cache_bytes(self, context: int, batch: int, dtype: str) -> int:
        """KV-cache bytes of ``batch`` sequences of ``context`` tokens."""
        return self.kv_bytes_per_token(dtype) * int(context) * int(batch)

    def weight_bytes(self, dtype: str) -> int:
        """Bytes of all the weights at ``dtype`` (the HBM they occupy)."""
        return self.params * dtype_bytes(dtype)

    def active_weight_bytes(self, dtype: str) -> int:
        """Bytes of the weights one decode step reads (see the module docstring)."""
        return self.active_params * dtype_bytes(dtype)

    def decode_weight_params(self, tokens: int) -> int:
        """Parameters a decode step of ``tokens`` new tokens (all sequences together) reads:
        every active parameter once, except the input embedding table (``vocab_size`` x
        ``d_model``, where stated), of which each token reads its own row."""
        if not self.vocab_size:
            return self.active_params
        rows = min(int(tokens), self.vocab_size)
        return self.active_params - (self.vocab_size - rows) * self.d_model

    def tokens_that_fit(self, hbm_bytes: int, kv_dtype: str, weight_dtype: str) -> int:
        """Tokens of KV cache that fit in ``hbm_bytes`` after the weights (0 if none)."""
        free = hbm_bytes - self.weight_bytes(weight_dtype)
        return max(0, free // self.kv_bytes_per_token(kv_dtype))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def dtype_bytes(dtype: str) -> int:
    if dtype not in DTYPE_BYTES or dtype == "tf32":
        raise AttnsimError(f"unknown storage dtype {dtype!r}; valid: fp16, bf16, fp32, fp8")
    return DTYPE_BYTES[dtype]


def _llama_params(vocab, d, layers, heads, kv_heads, head_dim, ffn):
    """Parameters of a Llama-architecture checkpoint from its config.json shapes: input
    embedding and untied lm_head (vocab x d each), per layer q/o (d x heads·d_h), k/v
    (d x kv_heads·d_h), gate/up/down (d x ffn) and two RMSNorm weights, and the final norm."""
    per_layer = (2 * d * heads * head_dim + 2 * d * kv_heads * head_dim + 3 * d * ffn + 2 * d)
    return 2 * vocab * d + layers * per_layer + d


# ---- presets ----------------------------------------------------------------------------------
# Sources: the Hugging Face config.json of each checkpoint (hidden_size, num_hidden_layers,
# num_attention_heads, num_key_value_heads, intermediate_size, vocab_size), and the papers.

PRESETS: dict[str, ModelConfig] = {m.name: m for m in (
    ModelConfig(
        name="llama-2-7b", full_name="Llama 2 7B", layers=32, d_model=4096, heads=32,
        kv_heads=32, head_dim=128, attention="mha",
        params=_llama_params(32000, 4096, 32, 32, 32, 128, 11008),   # 6,738,415,616
        vocab_size=32000,
        source="meta-llama/Llama-2-7b-hf config.json; Touvron et al. 2023 (arXiv 2307.09288) "
               "Table 1"),
    ModelConfig(
        name="llama-2-13b", full_name="Llama 2 13B", layers=40, d_model=5120, heads=40,
        kv_heads=40, head_dim=128, attention="mha",
        params=_llama_params(32000, 5120, 40, 40, 40, 128, 13824),   # 13,015,864,320
        vocab_size=32000,
        source="meta-llama/Llama-2-13b-hf config.json"),
    ModelConfig(
        name="llama-2-70b", full_name="Llama 2 70B", layers=80, d_model=8192, heads=64,
        kv_heads=8, head_dim=128, attention="gqa",
        params=_llama_params(32000, 8192, 80, 64, 8, 128, 28672),    # 68,976,648,192
        vocab_size=32000,
        source="meta-llama/Llama-2-70b-hf config.json (num_key_value_heads = 8); "
               "arXiv 2307.09288 §2.2 (GQA for 34B/70B)"),
    ModelConfig(
        name="llama-3-8b", full_name="Meta Llama 3 8B", layers=32, d_model=4096, heads=32,
        kv_heads=8, head_dim=128, attention="gqa",
        params=_llama_params(128256, 4096, 32, 32, 8, 128, 14336),   # 8,030,261,248
        vocab_size=128256,
        source="meta-llama/Meta-Llama-3-8B config.json"),
    ModelConfig(
        name="llama-3-70b", full_name="Meta Llama 3 70B", layers=80, d_model=8192, heads=64,
        kv_heads=8, head_dim=128, attention="gqa",
        params=_llama_params(128256, 8192, 80, 64, 8, 128, 28672),   # 70,553,706,496
        vocab_size=128256,
        source="meta-llama/Meta-Llama-3-70B config.json"),
    ModelConfig(
        name="mistral-7b", full_name="Mistral 7B v0.1", layers=32, d_model=4096, heads=32,
        kv_heads=8, head_dim=128, attention="gqa",
        params=_llama_params(32000, 4096, 32, 32, 8, 128, 14336),    # 7,241,732,096
        vocab_size=32000,
        source="mistralai/Mistral-7B-v0.1 config.json; Jiang et al. 2023 (arXiv 2310.06825) "
               "Table 1"),
    ModelConfig(
        name="deepseek-v2", full_name="DeepSeek-V2", layers=60, d_model=5120, heads=128,
        kv_heads=128, head_dim=128, attention="mla", kv_lora_rank=512, rope_head_dim=64,
        q_lora_rank=1536,
        params=236_000_000_000,          # "236B total parameters" (arXiv 2405.04434 abstract)
        active_params=21_000_000_000,    # "21B ... activated for each token" (same)
        source="DeepSeek-V2, arXiv 2405.04434 §2.1 and App. B (d_c = 512, d_h^R = 64, "
               "n_h = 128, d_h = 128, 60 layers, d_c' = 1536); deepseek-ai/DeepSeek-V2 "
               "config.json"),
    ModelConfig(
        name="deepseek-v2-lite", full_name="DeepSeek-V2-Lite", layers=27, d_model=2048,
        heads=16, kv_heads=16, head_dim=128, attention="mla", kv_lora_rank=512,
        rope_head_dim=64, q_lora_rank=0,
        params=15_700_000_000,           # "15.7B total parameters" (model card)
        active_params=2_400_000_000,     # "2.4B activated" (model card)
        source="deepseek-ai/DeepSeek-V2-Lite config.json and model card; arXiv 2405.04434 "
               "App. D (queries not compressed)"),
)}

ALIASES = {"llama2-7b": "llama-2-7b", "llama2-13b": "llama-2-13b", "llama2-70b": "llama-2-70b",
           "llama3-8b": "llama-3-8b", "llama3-70b": "llama-3-70b", "deepseek-v2-236b": "deepseek-v2"}


def model_names() -> list[str]:
    return list(PRESETS)


def get_model(name_or_path: str) -> ModelConfig:
    """A preset by (case-insensitive) name, or a custom model from a ``.toml`` file."""
    if isinstance(name_or_path, ModelConfig):
        return name_or_path
    key = str(name_or_path).strip().lower()
    key = ALIASES.get(key, key)
    if key in PRESETS:
        return PRESETS[key]
    if str(name_or_path).lower().endswith(".toml"):       # as --hw reads GPU files
        return load_model_file(name_or_path)
    raise AttnsimError(f"unknown model {name_or_path!r}; valid models: "
                       f"{', '.join(model_names())}, or a path to a .toml file")


# ---- custom models from TOML ------------------------------------------------------------------

_FIELDS = {f.name: f for f in dataclasses.fields(ModelConfig)}
_REQUIRED = ("name", "layers", "d_model", "heads", "head_dim", "params")
_STR_FIELDS = {"name", "full_name", "attention", "source"}
_MAY_BE_ZERO = {"kv_lora_rank", "rope_head_dim", "q_lora_rank", "vocab_size"}

# (lowest, highest) of each numeric field: the published models above sit well inside
# (the largest: 128 heads, 126 layers (Llama 3.1 405B), d_model 16,384, 671B parameters);
# heads and head_dim share the workload's limits (attnsim.validate).
FIELD_RANGES = {
    "layers": (1, 4096),
    "d_model": (1, 2**20),
    "heads": (1, 2**14),
    "kv_heads": (1, 2**14),
    "head_dim": (1, 1024),
    "params": (1, 10**15),
    "active_params": (1, 10**15),
    "kv_lora_rank": (0, 2**16),
    "rope_head_dim": (0, 2**12),
    "q_lora_rank": (0, 2**20),
    "vocab_size": (0, 2**24),
}


def load_model_file(path: str) -> ModelConfig:
    with base_chain(path, "model", ModelFileError):
        return model_from_mapping(read_toml(path, "model", ModelFileError), origin=path)


def model_from_mapping(data: dict, origin: str = "<mapping>") -> ModelConfig:
    """Validate ``data`` field by field (the error names the field) -> ModelConfig."""
    values, data = start_from_base(data, _FIELDS, lambda name: get_model(name).to_dict(),
                                   "model", origin, ModelFileError)
    for key, value in data.items():
        values[key] = _checked(origin, key, value)
    missing = [n for n in _REQUIRED if n not in values]
    if missing:
        raise ModelFileError(f"{origin}: missing field(s) {', '.join(missing)} "
                             f"(or start from a preset with base = \"llama-3-8b\")")
    values.setdefault("full_name", values["name"])
    values.setdefault("kv_heads", values["heads"])
    if "attention" not in values:
        values["attention"] = ("mla" if values.get("kv_lora_rank") else
                               "mha" if values["kv_heads"] == values["heads"] else
                               "mqa" if values["kv_heads"] == 1 else "gqa")
    model = ModelConfig(**values)
    _check_consistency(origin, model, given=set(data))
    return model


def _checked(origin: str, key: str, value):
    where = f"{origin}: field {key!r}"
    if key in _STR_FIELDS:
        if not isinstance(value, str) or (key != "source" and not value.strip()):
            raise ModelFileError(f"{where} must be a non-empty string, got {value!r}")
        if key != "source" and not value.isprintable():
            # messages and warnings quote the names: a newline would split their one line
            raise ModelFileError(f"{where} must be printable text on one line (no newline, "
                                 f"tab or other control character), got {value!r}")
        if key == "attention" and value not in ATTENTION_KINDS:
            raise ModelFileError(f"{where} must be one of {', '.join(ATTENTION_KINDS)}, "
                                 f"got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ModelFileError(f"{where} must be a number, got {value!r}")
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        raise ModelFileError(f"{where} must be a whole number, got {value!r}")
    value = int(value)
    if value < 0 or (value == 0 and key not in _MAY_BE_ZERO):
        raise ModelFileError(f"{where} must be positive, got {value!r}")
    lo, hi = FIELD_RANGES.get(key, (0, None))
    if hi is not None and not lo <= value <= hi:
        raise ModelFileError(f"{where} must be in [{lo:,}, {hi:,}], got {value:,}")
    return value


def _check_consistency(origin: str, m: ModelConfig, given: set = frozenset()) -> None:
    """Fields that contradict each other; ``given``: the fields the file itself sets (a
    message names a value the file left to its base as the base's)."""
    def field(name: str) -> str:
        value = getattr(m, name)
        shown = f"{value:,}" if isinstance(value, int) else repr(value)
        return f"{name} ({shown}{'' if name in given else ', from the base'})"

    if m.is_mla and m.kv_heads != m.heads:
        # MLA up-projects its latent into every query head (config.json's num_key_value_heads
        # = num_attention_heads): a workload's kv_heads below heads would describe GQA
        # groups that mla does not simulate, yet be echoed in its output
        raise ModelFileError(f"{origin}: attention = \"mla\" up-projects the latent into "
                             f"every head, so kv_heads must equal heads ({m.heads}), got "
                             f"{m.kv_heads}; set kv_heads = {m.heads}")
    if m.heads % m.kv_heads:
        raise ModelFileError(f"{origin}: heads ({m.heads}) must be a multiple of kv_heads "
                             f"({m.kv_heads}): each key/value head serves a whole group")
    if m.active_params > m.params:
        raise ModelFileError(f"{origin}: {field('active_params')} exceeds {field('params')}; "
                             f"set active_params to at most params")
    if m.vocab_size * m.d_model > m.active_params:
        raise ModelFileError(f"{origin}: the input embedding table ({field('vocab_size')} x "
                             f"{field('d_model')}) holds more than {field('active_params')}; "
                             f"set vocab_size to the model's, or to 0")
    if m.is_mla and (m.kv_lora_rank <= 0 or m.rope_head_dim <= 0):
        raise ModelFileError(f"{origin}: attention = \"mla\" needs positive kv_lora_rank "
                             f"(d_c) and rope_head_dim (d_h^R)")
    if not m.is_mla and (m.kv_lora_rank or m.rope_head_dim):
        raise ModelFileError(f"{origin}: {field('kv_lora_rank')} and {field('rope_head_dim')} "
                             f"are MLA fields; set attention = \"mla\", or set both to 0")
    expected = {"mha": m.heads, "mqa": 1}.get(m.attention)
    if expected is not None and m.kv_heads != expected:
        raise ModelFileError(f"{origin}: attention = {m.attention!r} means kv_heads = "
                             f"{expected}, got {m.kv_heads}")


# ---- KV-cache accounting for listings and reports ------------------------------------------------

def kv_cache_summary(model: ModelConfig, gpu, context: int, batch: int, dtype: str) -> dict:
    """KV-cache bytes per token and in total, per dtype, and the tokens that fit in the
    GPU's HBM after the weights (weights at ``dtype``; see the module docstring)."""
    info = kv_cache_accounting(model.kv_elements_per_token_per_layer(), model.layers, dtype,
                               context, batch, gpu, model.weight_bytes(dtype))
    info["model"] = model.name
    return info


# ---- command-line helpers ---------------------------------------------------------------------

def shape_from_model(model: ModelConfig | None, *, heads, kv_heads, head_dim, defaults):
    """(heads, kv_heads, head_dim) for a workload: the model's unless none is given; flags
    that contradict the model are an error (None = flag not given)."""
    if model is None:
        return (heads if heads is not None else defaults.heads, kv_heads,
                head_dim if head_dim is not None else defaults.head_dim)
    out = []
    for given, field, flag in ((heads, "heads", "--heads"), (kv_heads, "kv_heads", "--kv-heads"),
                               (head_dim, "head_dim", "--head-dim")):
        preset = getattr(model, field)
        if given is not None and given != preset:
            raise AttnsimError(f"{flag} {given} conflicts with {model.name}'s {field} = "
                               f"{preset}; drop {flag} or write a model TOML (see "
                               f"attnsim.models)")
        out.append(preset)
    return tuple(out)


def presets_listing() -> dict:
    """``attnsim list`` extras: the presets as JSON records and one text table."""
    records = [{**m.to_dict(), "kv_elements_per_token_per_layer":
                m.kv_elements_per_token_per_layer(),
                "kv_bytes_per_token_fp16": m.kv_bytes_per_token("fp16")}
               for m in PRESETS.values()]
    rows = [[m.name, m.attention, m.layers, m.d_model, m.heads, m.kv_heads, m.head_dim,
             f"{m.kv_lora_rank}+{m.rope_head_dim}" if m.is_mla else "—",
             f"{m.params / 1e9:.2f}B" + (f" ({m.active_params / 1e9:.1f}B active)"
                                         if m.active_params != m.params else ""),
             f"{m.kv_bytes_per_token('fp16') / 1024:.0f} KiB"] for m in PRESETS.values()]
    headers = ["model (--model)", "attention", "layers", "d_model", "heads", "kv heads",
               "head dim", "d_c+d_R", "params", "KV/token fp16"]
    return {"models": records, "_tables": [("Model presets", rows, headers)]}
