"""The workload: what is being simulated (shapes, dtype, masking, passes)."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from attnsim.errors import AttnsimError
from hwmodels.gpus import DTYPE_BYTES

PASSES = ("fwd", "bwd", "fwd+bwd")


@dataclass(frozen=True)
class Workload:
    """One attention call: tensors are (batch, heads, seq, head_dim) as in PyTorch's SDPA.

    Attributes:
        batch: sequences per call.
        heads: query heads.
        seq_q: query length N (and the key length unless ``seq_k`` is given).
        head_dim: d.
        seq_k: key/value length; None means ``seq_q``.
        kv_heads: key/value heads (GQA groups); None means ``heads`` (MHA), 1 is MQA.
        dtype: storage dtype of Q, K, V, O in HBM: fp16, bf16, fp32 or fp8.
        causal: bottom-right aligned causal mask (see ``algorithms.kernels.common``).
        scale: softmax scale; None means 1/sqrt(head_dim).
        passes: "fwd", "bwd" or "fwd+bwd".
        dropout: dropout probability on P (training).
        decode: a decode step: ``seq_q`` new tokens attend to a KV cache of ``seq_k`` tokens
            (algorithms that distinguish prefill from decode, e.g. ``gqa``, switch schedule).
        model: the model preset this workload comes from (``attnsim.models.ModelConfig``),
            or None; algorithms use it for KV-cache and per-token decode accounting.
    """

    batch: int = 1
    heads: int = 1
    seq_q: int = 1024
    head_dim: int = 64
    seq_k: int | None = None
    kv_heads: int | None = None
    dtype: str = "fp16"
    causal: bool = False
    scale: float | None = None
    passes: str = "fwd"
    dropout: float = 0.0
    decode: bool = False
    model: object = None

    def __post_init__(self):
        if self.seq_k is None:
            object.__setattr__(self, "seq_k", self.seq_q)
        if self.kv_heads is None:
            object.__setattr__(self, "kv_heads", self.heads)
        if self.scale is None:
            object.__setattr__(self, "scale", 1.0 / math.sqrt(self.head_dim)
                               if isinstance(self.head_dim, int) and self.head_dim > 0 else 1.0)
        self.validate()

    def validate(self, flags: dict | None = None) -> None:
        """Every field in its physical range (``attnsim.validate``); ``flags`` maps fields to
        the command-line flags the messages should name."""
        from attnsim.validate import check_workload
        if self.dtype not in DTYPE_BYTES or self.dtype == "tf32":
            raise AttnsimError(f"unknown dtype {self.dtype!r}; valid dtypes: fp16, bf16, fp32, fp8")
        if self.passes not in PASSES:
            raise AttnsimError(f"unknown pass {self.passes!r}; valid: {', '.join(PASSES)}")
        check_workload(self, flags)
        self._check_decode()

    def _check_decode(self) -> None:
        """A decode step is inference, forward only (as --pass bwd is refused with it):
        dropout, a training option, would only add a kernel and change the time."""
        if self.decode and self.dropout > 0:
            raise AttnsimError(f"--dropout {self.dropout:g} is a training option and --decode "
                               f"one inference step: drop --dropout (or --decode)")

    @property
    def elem_bytes(self) -> int:
        return DTYPE_BYTES[self.dtype]

    @property
    def has_forward(self) -> bool:
        return "fwd" in self.passes

    @property
    def has_backward(self) -> bool:
        return "bwd" in self.passes

    def replace(self, **changes) -> "Workload":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def describe(self) -> str:
        kv = "" if self.kv_heads == self.heads else f", kv_heads={self.kv_heads}"
        seq = f"N={self.seq_q}" if self.seq_q == self.seq_k else f"N_q={self.seq_q}, N_k={self.seq_k}"
        return (f"batch={self.batch}, heads={self.heads}{kv}, {seq}, d={self.head_dim}, "
                f"{self.dtype}, {'causal' if self.causal else 'non-causal'}, {self.passes}"
                + (f", dropout={self.dropout}" if self.dropout else "")
                + (", decode" if self.decode else "")
                + (f", model={getattr(self.model, 'name', self.model)}" if self.model else ""))
