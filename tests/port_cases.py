"""Cases shared by the CPU tests of the port declarations (tests/test_ports*.py), the CPU
emulation of the ports (tests/test_cuda_emulated.py) and the GPU tests of the ports
(tests/gpu/test_ports_gpu.py): one list, three backends.

Sizes are deliberately ragged (not multiples of any tile), with N_q != N_k, GQA, a head_dim
that the MMA k-step must pad (40), causal rows that see no key (N_q > N_k), split-KV decode.
"""
from dataclasses import dataclass, field

from algorithms import ports
from attnsim import Workload
from attnsim.reference import (attention_backward_reference, attention_reference,
                               relative_error)

# (batch, heads, kv_heads, seq_q, seq_k, head_dim, causal)
SHAPES = [
    (1, 2, 2, 97, 97, 64, False),
    (1, 2, 2, 97, 97, 64, True),
    (2, 4, 2, 200, 333, 40, True),
    (1, 1, 1, 333, 200, 128, True),
    (1, 3, 1, 257, 129, 32, False),
]
DECODE_SHAPES = [
    (2, 8, 2, 1, 300, 64, False),
    (1, 8, 1, 3, 257, 40, True),
]
DENSE_PORTS = ("standard", "flash1", "flash2")
# options that make the patterns sparse at these small N (defaults are sized for N ~ 4K)
SPARSE_OPTIONS = {
    "local": {"window": 64},
    "sparse_transformer": {"stride": 32},
    "longformer": {"window": 64, "global_tokens": 2},
    "bigbird": {"block": 32},
    "block_sparse": {"block": 32, "density": 0.5},
}
# BigBird's pattern is defined for self-attention (N_q = N_k): its ragged GQA case is square
SELF_ATTENTION_ONLY = ("bigbird",)
SELF_ATTENTION_SHAPE = (1, 3, 1, 257, 257, 32, False)
GPU_MODELS = ("a100-40gb", "h100-sxm")
# random-feature ports (with linear, the feature-map family of feature_attn.cu); d = 128 with
# the default features slices the state (T_m > 1: performer on both GPUs, rfa on the A100)
FEATURE_PORTS = ("rfa", "performer")
FEATURE_SHAPES = [(1, 2, 1, 150, 150, 128, False)]


def workload(shape, decode=False, dtype="fp16", passes="fwd") -> Workload:
    b, h, g, nq, nk, d, causal = shape
    return Workload(batch=b, heads=h, kv_heads=g, seq_q=nq, seq_k=nk, head_dim=d,
                    causal=causal, decode=decode, dtype=dtype, passes=passes)


def case_id(shape) -> str:
    b, h, g, nq, nk, d, causal = shape
    return f"b{b}h{h}g{g}-{nq}x{nk}-d{d}-{'causal' if causal else 'full'}"


@dataclass(frozen=True)
class PortCase:
    name: str
    shape: tuple
    options: dict = field(default_factory=dict)
    decode: bool = False
    dtype: str = "fp16"
    passes: str = "fwd"
    dropout: float = 0.0

    @property
    def workload(self) -> Workload:
        wl = workload(self.shape, self.decode, self.dtype, self.passes)
        return wl.replace(dropout=self.dropout) if self.dropout else wl

    @property
    def id(self) -> str:
        opts = "".join(f"-{k}={v}" for k, v in self.options.items())
        dtype = "" if self.dtype == "fp16" else f"-{self.dtype}"
        passes = "" if self.passes == "fwd" else f"-{self.passes}"
        dropout = f"-dropout={self.dropout}" if self.dropout else ""
        return (f"{self.name}-{'decode-' if self.decode else ''}{case_id(self.shape)}{opts}"
                f"{dtype}{passes}{dropout}")


# 9 new tokens over 2 splits at d = 64: the combine merges 8 rows a CTA (combine_rows), so
# each head's rows take two combine CTAs
GQA_COMBINE_ROWS_CASE = PortCase("gqa", (1, 4, 2, 9, 300, 64, True), {"splits": 2}, decode=True)
PORT_CASES = (
    [PortCase(n, s) for n in DENSE_PORTS for s in SHAPES]
    + [PortCase("gqa", s) for s in SHAPES]
    + [PortCase("gqa", s, {"pack_group": True}) for s in SHAPES[2:]]
    + [PortCase("gqa", s, decode=True) for s in DECODE_SHAPES]
    + [PortCase("gqa", s, {"splits": 2}, decode=True) for s in DECODE_SHAPES]
    + [GQA_COMBINE_ROWS_CASE]
    + [PortCase(n, s, o) for n, o in SPARSE_OPTIONS.items()
       for s in (SHAPES[1], SELF_ATTENTION_SHAPE if n in SELF_ATTENTION_ONLY else SHAPES[4])]
    + [PortCase("linear", s) for s in SHAPES]
    + [PortCase("linear", (2, 4, 2, 200, 333, 40, False))]
    + [PortCase(n, s) for n in FEATURE_PORTS for s in SHAPES + FEATURE_SHAPES]
    + [PortCase("performer", SHAPES[0], {"redraw": "head"}),
       PortCase("rfa", SHAPES[2], {"features": 24, "sigma": 2.0})]
)
# MLA decode (absorbed): small latents (d_c = 64, 128: one warp per row tile), d_c = 256 (2
# column slices) and DeepSeek-V2's 512 / 64 (4 slices); several new tokens, causal; splits
MLA_CASES = [
    PortCase("mla", (2, 4, 4, 1, 300, 32, False), {"kv_lora_rank": 64, "rope_dim": 16},
             decode=True),
    PortCase("mla", (1, 8, 8, 3, 257, 64, True), {"kv_lora_rank": 128, "rope_dim": 32},
             decode=True),
    PortCase("mla", (1, 16, 16, 2, 150, 64, True),
             {"kv_lora_rank": 256, "rope_dim": 64, "splits": 2}, decode=True),
    PortCase("mla", (1, 4, 4, 1, 200, 128, False), decode=True),
    # 32 heads in one CTA (2 row tiles x 4 slices), one split: mla_attn writes o_lat itself
    PortCase("mla", (1, 32, 32, 1, 130, 64, False), {"splits": 1}, decode=True),
    # 9 new tokens, 2 splits, d_c = 64: two combine CTAs a head (8 rows each)
    PortCase("mla", (1, 4, 4, 9, 300, 32, True), {"kv_lora_rank": 64, "rope_dim": 16,
                                                  "splits": 2}, decode=True),
]
PORT_CASES += MLA_CASES
# bf16 storage (the ATTN_BF16 build of the same sources): one case per port family
BF16_CASES = [
    PortCase("flash2", SHAPES[2], dtype="bf16"),
    PortCase("flash1", SHAPES[1], dtype="bf16"),
    PortCase("standard", SHAPES[1], dtype="bf16"),
    PortCase("gqa", DECODE_SHAPES[1], {"splits": 2}, decode=True, dtype="bf16"),
    PortCase("local", SHAPES[1], {"window": 64}, dtype="bf16"),
    PortCase("linear", SHAPES[4], dtype="bf16"),
    PortCase("mla", (2, 4, 4, 1, 300, 32, False), {"kv_lora_rank": 64, "rope_dim": 16},
             decode=True, dtype="bf16"),
    PortCase("performer", SHAPES[1], dtype="bf16"),
]
PORT_CASES += BF16_CASES
# training passes (flash2 only; multi-head: the simulator's backward has no GQA): ragged,
# causal and not, N_q > N_k (causal rows that see no key), N_q < N_k, d = 40 (padded), the
# A100/H100 plans' 64 x 128 tiles at d = 128, bf16
BACKWARD_CASES = [
    PortCase("flash2", SHAPES[0], passes="bwd"),
    PortCase("flash2", SHAPES[1], passes="bwd"),
    PortCase("flash2", SHAPES[0], passes="fwd+bwd"),
    PortCase("flash2", (1, 2, 2, 200, 333, 40, True), passes="fwd+bwd"),
    PortCase("flash2", (2, 2, 2, 200, 333, 40, False), passes="bwd"),
    PortCase("flash2", SHAPES[3], passes="bwd"),
    PortCase("flash2", (1, 1, 1, 150, 260, 128, False), passes="fwd+bwd"),
    PortCase("flash2", SHAPES[1], dtype="bf16", passes="bwd"),
]
PORT_CASES += BACKWARD_CASES


def storage_round(x, dtype):
    """x rounded to the workload's 16-bit storage type, as float32."""
    return ports.from_storage(ports.to_storage(x, dtype), dtype)


def fp16_baseline(inputs, wl) -> float:
    """Error of a plain implementation in the workload's storage type (fp16 or bf16): exact
    attention of the rounded inputs, rounded — the floor 16-bit storage sets. As
    flash-attn's tests do, a kernel is judged against twice this error."""
    exact, _ = attention_reference(inputs.q, inputs.k, inputs.v, causal=wl.causal,
                                   scale=wl.scale)
    rounded = [storage_round(x, wl.dtype) for x in (inputs.q, inputs.k, inputs.v)]
    plain, _ = attention_reference(*rounded, causal=wl.causal, scale=wl.scale)
    return relative_error(storage_round(plain, wl.dtype), exact)


def backward_baseline(inputs, wl) -> dict:
    """The backward's counterpart of ``fp16_baseline``, per gradient: the exact gradients of
    the storage-rounded inputs (and dO), rounded to the storage type, against the exact
    gradients of the inputs."""
    exact = attention_backward_reference(inputs.q, inputs.k, inputs.v, inputs.do,
                                         causal=wl.causal, scale=wl.scale)
    rounded = [storage_round(x, wl.dtype) for x in (inputs.q, inputs.k, inputs.v, inputs.do)]
    plain = attention_backward_reference(*rounded, causal=wl.causal, scale=wl.scale)
    return {name: relative_error(storage_round(p, wl.dtype), e)
            for name, p, e in zip(("dq", "dk", "dv"), plain, exact)}


# ---- diff (differential attention) ---------------------------------------------------------
# Multi-head only (the simulator refuses kv_heads != heads); head_dim = the paper's 2d, a
# multiple of 32 for the port (each half a multiple of the MMA k-step). Ragged, N_q != N_k
# both ways (333 x 200 causal: rows < 133 see no key), every supported head_dim.
DIFF_SHAPES = [
    (1, 2, 2, 97, 97, 64, False),
    (1, 2, 2, 97, 97, 64, True),
    (2, 3, 3, 200, 333, 32, True),
    (1, 1, 1, 333, 200, 128, True),
    (1, 2, 2, 150, 170, 96, False),
]
DIFF_CASES = ([PortCase("diff", s) for s in DIFF_SHAPES]
              + [PortCase("diff", DIFF_SHAPES[1], dtype="bf16")])
PORT_CASES += DIFF_CASES


def diff_fp16_baseline(inputs, wl, plan) -> tuple:
    """(exact, baseline error) for diff: the paper's Equations 1–3 in float64 on the inputs,
    and the error of the same float64 computation on inputs rounded to the storage type with
    its output rounded — the floor 16-bit storage sets (fp16_baseline's idea, for diff)."""
    from dataclasses import replace
    from algorithms import diff
    exact = diff.reference(wl, plan, inputs, attention_reference)
    rounded = replace(inputs, q=storage_round(inputs.q, wl.dtype),
                      k=storage_round(inputs.k, wl.dtype), v=storage_round(inputs.v, wl.dtype))
    plain = storage_round(diff.reference(wl, plan, rounded, attention_reference), wl.dtype)
    return exact, relative_error(plain, exact)


# ---- masked_dense (a pattern's mask on standard attention: the block-sparse ports' baseline) --
# the mask kernel reads the pattern's boolean mask: windowed and causal, block-sparse with GQA
# and N_q != N_k, BigBird's random blocks (self-attention only), bf16
MASKED_DENSE_CASES = [
    PortCase("masked_dense", SHAPES[1], {"mask_of": "local", "window": 64}),
    PortCase("masked_dense", SHAPES[4], {"mask_of": "block_sparse", "block": 32, "density": 0.5}),
    PortCase("masked_dense", SHAPES[0], {"mask_of": "bigbird", "block": 32}),
    PortCase("masked_dense", SHAPES[2], {"mask_of": "longformer", "window": 64,
                                         "global_tokens": 2}),
    PortCase("masked_dense", SHAPES[1], {"mask_of": "local", "window": 64}, dtype="bf16"),
]
PORT_CASES += MASKED_DENSE_CASES


# ---- mla --path upproject (up-projected decode, mla_upproject.cu) ----------------------------
# The GEMM [K^C | V] = c_KV [W_UK | W_UV]ᵀ, then one head per CTA over d_k = d_h + d_h^R and
# d_v = d_h: small latents (d_c = 64, 128), DeepSeek-V2's d_c = 512 / d_h^R = 64 (d_k = 192 at
# d_h = 128); one and several new tokens (causal; 20 tokens: two row warps), the plan's splits
# and one split; bf16.
# The last case is DeepSeek-V2's 128 heads x 512 / 64 over a 1K cache: for the declaration tests
# and the GPU tests (too large for the emulator; its CPU simulation takes ~15 s).
MLA_UP_CASES = [
    PortCase("mla", (2, 4, 4, 1, 300, 32, False),
             {"path": "upproject", "kv_lora_rank": 64, "rope_dim": 16}, decode=True),
    PortCase("mla", (1, 8, 8, 3, 257, 64, True),
             {"path": "upproject", "kv_lora_rank": 128, "rope_dim": 32}, decode=True),
    PortCase("mla", (1, 16, 16, 2, 100, 32, True),
             {"path": "upproject", "kv_lora_rank": 512, "rope_dim": 64, "splits": 1},
             decode=True),
    PortCase("mla", (1, 4, 4, 1, 200, 128, False), {"path": "upproject", "splits": 2},
             decode=True),
    PortCase("mla", (1, 8, 8, 3, 257, 64, True),
             {"path": "upproject", "kv_lora_rank": 128, "rope_dim": 32}, decode=True,
             dtype="bf16"),
    # 20 new tokens, causal: B_r = 20, two row warps share every K/V tile (one split)
    PortCase("mla", (1, 2, 2, 20, 300, 32, True),
             {"path": "upproject", "kv_lora_rank": 64, "rope_dim": 16, "splits": 1},
             decode=True),
    PortCase("mla", (1, 128, 128, 1, 1024, 128, False), {"path": "upproject"}, decode=True),
]
PORT_CASES += MLA_UP_CASES


def mla_storage_baseline(wl, plan, inputs) -> tuple:
    """(exact, baseline error) for mla (either path): o by its definition in float64
    (``mla.up_projected`` + softmax attention), and the error of the same float64 computation
    on inputs rounded to the storage type, with the up-projected K, V and the output rounded
    too — the floor that 16-bit storage of the inputs, of the up-projected cache and of o sets
    (``fp16_baseline``'s idea, for MLA's latent inputs)."""
    from algorithms import mla
    x = mla.mla_inputs(wl, plan, inputs)
    q, k, v = mla.up_projected(wl, x)
    exact, _ = attention_reference(q, k, v, causal=wl.causal, scale=plan.scale)
    q, k, v = mla.up_projected(wl, {n: storage_round(a, wl.dtype) for n, a in x.items()})
    plain, _ = attention_reference(q, storage_round(k, wl.dtype), storage_round(v, wl.dtype),
                                   causal=wl.causal, scale=plan.scale)
    return exact, relative_error(storage_round(plain, wl.dtype), exact)

# ---- reformer (LSH attention, shared QK) ---------------------------------------------------
# The simulator needs N a multiple of the bucket size C and N / C even: ragged against the
# 128-row hash and combine tiles and the sort tile (192, 320, 384 tokens; 10 buckets, not a
# power of two); 1 and 4 hash rounds; C = 32, 64; d = 64, 128; causal and not; GQA (V of kv
# head h / g); bf16. The last case (GPU only: too large for the emulator) has 8 sort tiles
# per round (the look-back across CTAs), two digit passes and factorised buckets (512 =
# 128 x 4, 66 rotation columns).
REFORMER_CASES = [
    PortCase("reformer", (1, 2, 2, 192, 192, 64, True), {"bucket_size": 32, "hashes": 4}),
    PortCase("reformer", (1, 2, 2, 256, 256, 64, False), {"bucket_size": 64, "hashes": 1}),
    PortCase("reformer", (1, 2, 1, 384, 384, 128, True), {"bucket_size": 64, "hashes": 4}),
    PortCase("reformer", (1, 1, 1, 320, 320, 128, False), {"bucket_size": 32, "hashes": 1}),
    PortCase("reformer", (1, 2, 2, 192, 192, 64, False), {"bucket_size": 32, "hashes": 4},
             dtype="bf16"),
    PortCase("reformer", (1, 1, 1, 32768, 32768, 64, True), {"bucket_size": 64, "hashes": 2}),
]
PORT_CASES += REFORMER_CASES

# ---- nsa (Native Sparse Attention) -----------------------------------------------------------
# Causal only (the simulator rejects non-causal). Small NSA parameters keep the emulator fast
# and still give several compressed tokens, selection blocks and a window per query: l = 16,
# d_s = 8, l' = 32, n = 4, w = 64. Shapes: GQA (8 query heads over 2 KV heads; MQA 4 over 1),
# g = 32, MHA g = 1, ragged N (not a multiple of l, l', d_s or any tile), N below the window
# and N_k < n l' (fewer blocks than slots), N_q < N_k (a chunk of a prefill), N_k < l (no
# compressed token: nsa_compress is not launched, rows N_q > N_k see no key), head_dim 64,
# 128 and 96, fp16 and bf16.
NSA_SMALL = {"compress_block": 16, "compress_stride": 8, "select_block": 32, "selected": 4,
             "window": 64}
NSA_SHAPES = [
    (1, 8, 2, 130, 130, 64, True),
    (1, 1, 1, 97, 97, 128, True),
    (1, 32, 1, 12, 40, 128, True),      # g = 32 over B_r = 4: 4 heads' gate columns a warp
    (1, 8, 2, 50, 150, 64, True),
    (2, 4, 1, 75, 75, 96, True),
    (1, 4, 2, 40, 12, 64, True),
]
NSA_CASES = ([PortCase("nsa", s, NSA_SMALL) for s in NSA_SHAPES]
             + [PortCase("nsa", NSA_SHAPES[3], NSA_SMALL, dtype="bf16")])
PORT_CASES += NSA_CASES
# The paper's defaults (l = 32, d_s = 16, l' = 64, n = 16, w = 512), 16 query heads over one
# KV head, N = 1100 > n l' = 1024 and > w: declarations only (tests/test_ports_nsa.py) — the CPU
# simulation that the emulator and device tests compare with is slow at this size.
NSA_PAPER_CASES = [PortCase("nsa", (1, 16, 1, 1100, 1100, 128, True)),
                   PortCase("nsa", (1, 64, 4, 4096, 4096, 128, True), dtype="bf16")]

# ---- backward of standard attention and FlashAttention-1 (standard_bwd.cu, flash1_bwd.cu) ----
# Multi-head only (the simulator has no GQA backward). Ragged, causal and not, N_q > N_k
# (causal rows that see no key) and N_q < N_k, d = 40 (padded), 64, 128, both passes, bf16;
# the two d = 40, batch 2, causal, fwd+bwd cases only for the declarations and the GPU.
BACKWARD_PORT_CASES = [
    PortCase("standard", SHAPES[1], passes="bwd"),
    PortCase("standard", (1, 1, 1, 150, 260, 40, False), passes="fwd+bwd"),
    PortCase("flash1", SHAPES[1], passes="bwd"),
    PortCase("flash1", SHAPES[3], passes="bwd"),
    PortCase("flash1", (1, 2, 2, 200, 333, 40, False), passes="fwd+bwd"),
    PortCase("standard", SHAPES[3], passes="bwd"),
    PortCase("standard", SHAPES[1], dtype="bf16", passes="bwd"),
    PortCase("flash1", SHAPES[1], dtype="bf16", passes="bwd"),
    PortCase("standard", (2, 2, 2, 200, 333, 40, True), passes="fwd+bwd"),
    PortCase("flash1", (2, 2, 2, 200, 333, 40, True), passes="fwd+bwd"),
    # standard's dropout (the simulator's hashed keep mask, bit for bit): forward + backward
    PortCase("standard", SHAPES[1], passes="fwd+bwd", dropout=0.2),
    PortCase("standard", (1, 1, 1, 150, 260, 40, False), passes="bwd", dropout=0.2),
    # flash1's dropout (Z regenerated on chip from the same mask): forward, both passes with
    # two K/V blocks (A100 plan at d = 40; H100 plan at d = 128)
    PortCase("flash1", SHAPES[1], dropout=0.2),
    PortCase("flash1", (1, 2, 2, 200, 333, 40, False), passes="fwd+bwd", dropout=0.2),
    PortCase("flash1", SHAPES[3], passes="bwd", dropout=0.2),
]
PORT_CASES += BACKWARD_PORT_CASES

# ---- flash2's dropout (flash2_fwd.cu, flash2_bwd.cu built with ATTN_DROPOUT) ----------------
# Z regenerated on chip from the simulator's keep mask in both passes: forward, backward and
# both; causal and not; ragged N_q != N_k both ways (333 x 200 causal: rows < 133 see no
# key); d = 40 (padded), 64, 128; GQA in the forward (the mask indexes query heads); bf16.
FLASH2_DROPOUT_CASES = [
    PortCase("flash2", SHAPES[1], dropout=0.2),
    PortCase("flash2", SHAPES[2], dropout=0.2),
    PortCase("flash2", (1, 1, 1, 150, 260, 128, False), passes="bwd", dropout=0.2),
    PortCase("flash2", (1, 2, 2, 200, 333, 40, True), passes="fwd+bwd", dropout=0.2),
    PortCase("flash2", SHAPES[3], passes="bwd", dropout=0.2),
    PortCase("flash2", SHAPES[0], dtype="bf16", passes="fwd+bwd", dropout=0.2),
]
PORT_CASES += FLASH2_DROPOUT_CASES

# ---- ring (Ring Attention on one GPU: ring_step in flash2_fwd.cu) -----------------------------
# P ring steps with the running state in HBM between them: ragged blocks (333 over 4 devices:
# blocks of 84, the last of 81), N_q != N_k both ways (300 x 200 causal: the first devices'
# rows see no key; 100 x 250), GQA, d = 40 (padded) and 128, one device (one step is both the
# first and the last), causal (the last device is the one timed) and not, bf16.
RING_CASES = [
    PortCase("ring", (1, 2, 1, 333, 333, 40, True), {"devices": 4}),
    PortCase("ring", (1, 2, 2, 333, 333, 64, False), {"devices": 4}),
    PortCase("ring", (2, 2, 1, 300, 200, 64, True), {"devices": 3}),
    PortCase("ring", (1, 1, 1, 100, 250, 128, False), {"devices": 5}),
    PortCase("ring", (1, 3, 3, 97, 97, 64, True), {"devices": 1}),
    PortCase("ring", (1, 2, 1, 333, 333, 40, True), {"devices": 4}, dtype="bf16"),
]
PORT_CASES += RING_CASES
