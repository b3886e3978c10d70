"""The contract every algorithm module fulfils.

A module ``algorithms/<name>.py`` defines:

``INFO: AlgorithmInfo``
    Name, paper, whether it is exact, its options (CLI flags), the passes it supports and
    its IO bound in words.
``plan(wl, gpu, sram_bytes, **options) -> Plan``
    Choose tiles from the workload and the per-CTA SRAM budget M (``sram_bytes``); raise
    ``SramOverflowError``/``PlanError`` with a message naming the numbers when nothing fits.
    A plan is a frozen dataclass with ``to_dict()``.
``run(wl, plan, inputs, rec, compute) -> dict[str, np.ndarray]``
    Launch the kernels on ``rec`` (a ``hwmodels.Recorder``) and run their bodies through
    the counted primitives. ``inputs`` holds float32 (batch, heads, seq, head_dim) arrays
    ``q, k, v`` (and ``do`` for backward passes); in count-only mode (``compute=False``)
    it is ``None`` and the same loops run with the arithmetic skipped. Returns the outputs
    by name (``"o"``, ``"lse"``, ``"dq"``...), empty in count-only mode.
``io_bound(wl, plan, sram_bytes) -> float``
    The theorem's leading term evaluated in bytes (no hidden constant): tests compare the
    counted traffic to it and fit its exponents; the report prints their ratio.
``footprint(wl, plan) -> hwmodels.footprint.Footprint``
    The HBM tensors one call allocates and the kernels they live across (phases = the
    kernel names ``run`` launches, in order), as a closed form: the peak, what is live at it
    and ``max_seq_that_fits`` follow (``attnsim.memory``). Optionally
    ``plannable_seq(wl, plan, n) -> int``: the longest length <= n the plan accepts.

The workload ``wl`` is duck-typed (``attnsim.Workload``): batch, heads, kv_heads, seq_q,
seq_k, head_dim, dtype, elem_bytes, causal, scale, passes, dropout.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass


# The most query or key/value rows (batch x heads x length) a workload may have: more than
# any one GPU's HBM holds (``attnsim.validate`` explains the bound and applies it; an
# algorithm that materialises more rows than the workload declares checks its own).
MAX_ROWS = 2**30


class PlanError(ValueError):
    """Parameters or a workload an algorithm cannot plan for (the message says why)."""


@dataclass(frozen=True)
class Option:
    """An algorithm-specific parameter, exposed as ``--<name with dashes>`` and in JSON.

    ``validate`` returns an error message for a bad value, or None.
    """
    name: str
    type: type
    default: object
    help: str
    choices: tuple | None = None
    validate: object = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class AlgorithmInfo:
    name: str
    title: str                       # e.g. "FlashAttention-2 forward"
    paper: str                       # e.g. "Dao, 2023 (arXiv 2307.08691)"
    exact: bool
    io_bound: str                    # e.g. "Θ(N²d²/M)"
    options: tuple = ()
    passes: tuple = ("fwd",)         # which of "fwd", "bwd" it simulates
    count_only: str = "exact"        # "exact": same counts without data; or how it copes
    dropout: bool = False            # simulates dropout on P (``--dropout``)
    # its published kernel runs fp8, and executed mode quantizes as that kernel does (e4m3);
    # elsewhere --dtype fp8 prices fp8 storage and tensor rates, in count-only mode only
    fp8_kernel: bool = False
    # why --kv-heads does not apply (its K/V are not per-head: MLA's one latent cache), or
    # None: the algorithm reads K/V heads shared by groups of query heads (GQA/MQA)
    no_kv_heads: str | None = None


@dataclass(frozen=True)
class Plan:
    """Base for plans: frozen, printable."""

    def to_dict(self) -> dict:
        return asdict(self)


def check_options(info: AlgorithmInfo, given: dict) -> dict:
    """Defaults filled in, unknown names and bad values rejected with the valid ones named."""
    known = {o.name: o for o in info.options}
    unknown = sorted(set(given) - set(known))
    if unknown:
        valid = ", ".join(o.flag for o in info.options) or "none"
        raise PlanError(f"{info.name} has no option(s) "
                        f"{', '.join('--' + u.replace('_', '-') for u in unknown)}; "
                        f"its options: {valid}")
    values = {}
    for name, opt in known.items():
        value = given.get(name, opt.default)
        if value is not None and opt.type is not None and not isinstance(value, opt.type):
            try:
                value = opt.type(value)
            except (TypeError, ValueError):
                raise PlanError(f"{info.name}: {opt.flag} must be {opt.type.__name__}, "
                                f"got {value!r}") from None
        if opt.choices and value not in opt.choices:
            raise PlanError(f"{info.name}: {opt.flag} must be one of "
                            f"{', '.join(map(str, opt.choices))}, got {value!r}")
        if opt.validate is not None and value is not None:
            problem = opt.validate(value)
            if problem:
                raise PlanError(f"{info.name}: {opt.flag} {problem}")
        values[name] = value
    return values
