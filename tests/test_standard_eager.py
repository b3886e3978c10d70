"""``standard --program pytorch-eager``: flash-attention's benchmark baseline
``attention_pytorch`` as PyTorch eager runs it, forward and (autograd) backward. Count-only
equals executed, the output and the gradients match the float64 reference, the HBM bytes
equal closed forms derived here from the benchmark's source line by line (the forward) and
from autograd's formula for each op (the backward), the footprint holds the extra buffers,
and what the program cannot run is refused with the flag named."""
import numpy as np
import pytest

from algorithms.base import PlanError, check_options
from algorithms.registry import get_algorithm
from attnsim import Workload, make_inputs, simulate
from attnsim.cli import main
from hwmodels import get_gpu

EAGER = {"program": "pytorch-eager"}
H100 = get_gpu("h100")
cdiv = lambda a, b: -(-a // b)  # noqa: E731


def wl(b=2, h=3, n=97, d=40, **kw):
    return Workload(batch=b, heads=h, seq_q=n, head_dim=d, **kw)


CASES = [wl(), wl(causal=True), wl(b=1, causal=True), wl(h=1, n=130),
         wl(causal=True, dtype="bf16"), wl(causal=True, dtype="fp32"),
         wl(causal=True, dropout=0.1), wl(b=1, h=2, n=1030, d=16, causal=True)]
TRAINING = [wl(passes="bwd"), wl(causal=True, passes="fwd+bwd"), wl(b=1, passes="bwd"),
            wl(h=1, n=130, causal=True, passes="bwd"), wl(causal=True, dtype="fp32", passes="bwd"),
            wl(causal=True, dropout=0.1, passes="fwd+bwd"), wl(n=300, d=64, passes="bwd")]


def kernel_counts(result):
    return [(k.name, k.ctas, k.counts()) for k in result.kernels]


@pytest.mark.parametrize("workload", CASES + TRAINING, ids=str)
def test_count_only_equals_executed_and_outputs_are_exact(workload):
    executed = simulate("standard", workload, "h100", options=EAGER,
                        inputs=make_inputs(workload, 5))
    counted = simulate("standard", workload, "h100", options=EAGER, compute=False)
    assert kernel_counts(counted) == kernel_counts(executed)
    assert counted.counts == executed.counts
    assert counted.time.predicted_s == executed.time.predicted_s
    # O (and dQ, dK, dV) against the float64 reference: measured 1.6e-7 to 3.5e-7
    assert executed.error_vs_reference < 1e-6
    algorithm0 = simulate("standard", workload, "h100", inputs=make_inputs(workload, 5))
    if workload.passes == "fwd":
        # the same float32 arithmetic as Algorithm 0: the additive -10000 underflows exp to
        # 0 exactly where Algorithm 0 writes -inf
        assert np.array_equal(executed.outputs["o"], algorithm0.outputs["o"])
        return
    # the same gradients as Algorithm 3 (softmax_scale applied after the GEMM instead of in
    # its epilogue, the mask added instead of selected: float32 rounding apart, 2e-7)
    for g in ("dq", "dk", "dv"):
        ref = algorithm0.outputs[g]
        assert np.abs(executed.outputs[g] - ref).max() <= 5e-7 * np.abs(ref).max()


def expected_bytes(b, h, n, d, e, causal, tm, tn):
    """HBM (read, write) bytes of attention_pytorch, kernel by kernel, from the benchmark's
    lines (flash-attention benchmarks/benchmark_flash_attention.py)."""
    bh = b * h
    read = write = 0
    copies = b > 1 and h > 1          # (b h) merge of a packed-qkv slice: a view only if 1
    if copies:                         # rearrange(q), rearrange(k), einsum's V operand
        read += 3 * bh * n * d * e
        write += 3 * bh * n * d * e
    # baddbmm (beta = 0: the preallocated scores are not read): panels of Q and K per tile
    read += bh * (cdiv(n, tn) * n * d + cdiv(n, tm) * n * d) * e
    write += bh * n * n * e
    if causal:
        write += 4 * n * n                           # torch.full, float32
        # triu: a thread holds 2 fp32 elements and loads them when one has j >= i + 1,
        # i.e. row i reads from column 2·⌊i/2⌋ on; writes everything
        read += 4 * sum(n - 2 * (i // 2) for i in range(n))
        write += 4 * n * n
        if e != 4:                                   # .to(fp16/bf16)
            read += 4 * n * n
            write += e * n * n
        read += bh * 2 * n * n * e                   # scores + mask (mask broadcast per head)
        write += bh * n * n * e
    read += bh * n * n * e                           # softmax
    write += bh * n * n * e
    # bmm P V: P row panels once per output column tile, V per row tile; O written
    read += bh * (cdiv(d, tn) * n * n + cdiv(n, tm) * n * d) * e
    write += bh * n * d * e
    return read, write


@pytest.mark.parametrize("shape", [(2, 3, 97, 40), (1, 4, 256, 64), (3, 1, 130, 32),
                                   (4, 16, 512, 128)])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype,e", [("fp16", 2), ("fp32", 4)])
def test_hbm_bytes_closed_form(shape, causal, dtype, e):
    b, h, n, d = shape
    r = simulate("standard", wl(b, h, n, d, causal=causal, dtype=dtype), "h100", options=EAGER,
                 compute=False)
    assert r.plan["softmax_passes"] == 1
    read, write = expected_bytes(b, h, n, d, e, causal, r.plan["gemm_tile_m"],
                                 r.plan["gemm_tile_n"])
    assert (r.counts["hbm_read_bytes"], r.counts["hbm_write_bytes"]) == (read, write)
    launches = 3 + 3 * (b > 1 and h > 1) + (3 + (e != 4) if causal else 0)
    assert r.counts["kernel_launches"] == launches
    assert r.counts["matmul_flops"] == 4 * b * h * n * n * d


def test_extra_work_over_algorithm0_is_the_copies_and_the_mask():
    """Per head the program adds 6 N d e bytes of copies; causal, it reads the mask at e bytes
    instead of Algorithm 0's 1-byte bool and builds it once per call; the FLOPs of the GEMMs
    and the softmax are the same."""
    b, h, n, d, e = 2, 3, 128, 64, 2
    for causal in (False, True):
        w = wl(b, h, n, d, causal=causal)
        a0 = simulate("standard", w, "h100", compute=False)
        eager = simulate("standard", w, "h100", options=EAGER, compute=False)
        traffic = lambda r: r.counts["hbm_read_bytes"] + r.counts["hbm_write_bytes"]  # noqa: E731
        # full (write 4), triu (read from column 2⌊i/2⌋, write 4), cast (read 4, write e)
        build = 4 * n * n + 4 * sum(n - 2 * (i // 2) for i in range(n)) + (4 + 4 + e) * n * n
        extra = 6 * b * h * n * d * e + (b * h * (e - 1) * n * n + build if causal else 0)
        assert traffic(eager) - traffic(a0) == extra
        assert eager.counts["exp_ops"] == a0.counts["exp_ops"]


@pytest.mark.parametrize("n, dtype, block", [(1024, "fp16", False), (1025, "fp16", True),
                                            (2048, "bf16", True), (1024, "fp32", False)])
def test_the_softmax_counts_atens_kernel_for_the_row_length(n, dtype, block):
    """host_softmax gives a row of at most 1024 elements (4096 bytes) a warp, which takes one
    exp an element; a longer row a CTA, which reads the row three times (once from HBM, twice
    on chip) and takes the exp in its sum pass and again in its output pass. Beside the
    counted ops, the library routines PyTorch compiles without fast math, from their SASS:
    expf 6 FMA-pipe + 1 ALU instructions around its MUFU.EX2 (5 + 1 where the sum's add
    takes its last multiply), the IEEE divide 1 MUFU.RCP + 4 FMA-pipe + 4 ALU/branch."""
    b, h = 1, 2
    w = wl(b, h, n, 64, dtype=dtype)
    r = simulate("standard", w, "h100", options=EAGER, compute=False)
    (k,) = [k for k in r.kernels if k.name == "softmax"]
    c, e, elements = k.counts(), w.elem_bytes, b * h * n * n
    assert c["exp_ops"] == (2 if block else 1) * elements
    assert c["other_flops"] == (5 if block else 4) * elements     # max, x - max (x2), sum, divide
    assert c["alu_ops"] == elements                               # the max
    assert (c["hbm_read_bytes"], c["hbm_write_bytes"]) == (elements * e, elements * e)
    assert c["sram_read_bytes"] == (3 if block else 1) * elements * e
    per = {"fma": 15, "alu": 6, "xu": 1} if block else {"fma": 10, "alu": 5, "xu": 1}
    assert dict(k.library_lane_ops) == {pipe: elements * v for pipe, v in per.items()}
    a0 = simulate("standard", w, "h100", compute=False)
    (k0,) = [k for k in a0.kernels if k.name == "softmax"]
    assert k0.library_lane_ops == () and k0.counts()["exp_ops"] == elements


def footprint_of(w):
    module = get_algorithm("standard")
    plan = module.plan(w, H100, H100.smem_bytes_per_block,
                       **check_options(module.INFO, EAGER))
    return module.footprint(w, plan)


@pytest.mark.parametrize("causal", [False, True])
def test_footprint_phases_are_the_kernels_and_peak_is_closed_form(causal):
    b, h, n, d, e = 2, 4, 1024, 64, 2
    w = wl(b, h, n, d, causal=causal)
    f = footprint_of(w)
    r = simulate("standard", w, "h100", options=EAGER, compute=False)
    assert f.phases == tuple(k.name for k in r.kernels)
    scores, head_rows = b * h * n * n * e, b * h * n * d * e
    # S and P (or the preallocated scores and S) live together; Q, K, V and their copies
    # (V's copy and O in the bmm); causal: the fp32 mask is a local to the end, and during the
    # add its fp16 cast and both S live
    at_bmm = 2 * scores + 7 * head_rows + (4 * n * n if causal else 0)
    at_add = 2 * scores + 5 * head_rows + 4 * n * n + e * n * n
    assert f.peak_bytes == (max(at_bmm, at_add) if causal else at_bmm)
    if causal:
        assert f.allocation("causal_mask").nbytes == 4 * n * n
        assert f.allocation("causal_mask_cast").nbytes == e * n * n
    assert f.allocation("scores_preallocated").nbytes == scores


@pytest.mark.parametrize("workload,flag", [
    (Workload(batch=1, heads=2, seq_q=64, seq_k=128, head_dim=32), "--seq-k 128"),
    (Workload(batch=1, heads=2, seq_q=64, seq_k=128, head_dim=32, passes="bwd"), "--seq-k 128"),
    (Workload(batch=1, heads=2, seq_q=1, seq_k=64, head_dim=32, decode=True), "drop --decode"),
    (wl(h=4, kv_heads=2), "--kv-heads 2"), (wl(h=4, kv_heads=2, passes="fwd+bwd"), "--kv-heads 2"),
    (wl(dtype="fp8"), "--dtype fp16"), (wl(dtype="fp8", passes="bwd"), "--dtype fp16")])
def test_what_the_program_cannot_run_is_refused_naming_the_flag(workload, flag):
    with pytest.raises(PlanError, match="--program pytorch-eager") as err:
        simulate("standard", workload, "h100", options=EAGER, compute=False)
    assert flag in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("argv,named,not_named", [
    (["--seq", "64", "--seq-k", "128"], "drop --seq-k", "--decode"),
    (["--seq", "64", "--decode"], "drop --decode", "--seq-k")])
def test_cli_names_the_flag_given_for_unequal_lengths(capsys, argv, named, not_named):
    """There is no --seq-q flag; --decode and --seq-k each get their own message, and the
    fix it names runs."""
    base = ["run", "standard", "--program", "pytorch-eager", "--count-only"]
    assert main(base + argv) == 2
    err = capsys.readouterr().err
    assert named in err and not_named not in err and "--seq-q" not in err
    fixed = [a for a in argv if a not in ("--seq-k", "128", "--decode")]
    assert main(base + fixed) == 0
    capsys.readouterr()


def test_cli_refuses_what_the_program_cannot_run_in_one_line(capsys):
    code = main(["run", "standard", "--program", "pytorch-eager", "--pass", "bwd",
                 "--seq", "128", "--seq-k", "256", "--count-only"])
    out, err = capsys.readouterr()
    assert code == 2 and err.count("\n") == 1 and "--program pytorch-eager" in err
    assert "Traceback" not in err


# ---- the backward: autograd through attention_pytorch ---------------------------------------

def test_backward_gradients_hold_at_large_logits():
    """Logits x8 (``--inputs scaled`` is x4; here the scale itself): softmax's backward
    stays exact where P is nearly one-hot."""
    w = wl(n=130, causal=True, passes="bwd", scale=8 / 40 ** 0.5)
    r = simulate("standard", w, "h100", options=EAGER, inputs=make_inputs(w, 9))
    assert r.error_vs_reference < 2e-6                  # measured 1.06e-6


def expected_backward_bytes(b, h, n, d, e, tm, tn, dropout=False):
    """HBM (read, write) bytes of autograd's backward through attention_pytorch, op by op
    (derivatives.yaml): bmm's two products, [native_dropout_backward], softmax's backward
    (ATen's two kernels: tmp = dP ∘ P, then the row kernel on tmp and P), baddbmm's two
    products each times alpha out of place, and unbind's stack (three copies into the packed
    gradient). A GEMM (m x k)(k x n) reads A's row panels once per column
    tile and B's column panels once per row tile, and writes m x n."""
    def gemm(m, n_, k):
        return (cdiv(n_, tn) * m * k + cdiv(m, tm) * k * n_) * e, m * n_ * e
    per_head = [gemm(n, n, d),                    # dP = dO V'ᵀ
                gemm(n, d, n),                    # dV' = Pᵀ dO
                (2 * n * n * e, n * n * e),       # grad * output: dP and P in, tmp out
                (2 * n * n * e, n * n * e),       # the row kernel: tmp and P in, dS out
                gemm(n, d, n),                    # dS k'ᵀ
                (n * d * e, n * d * e),           # × scale
                gemm(d, n, n),                    # q'ᵀ dS: (d x N), as k' is
                (n * d * e, n * d * e),           # × scale
                *[(n * d * e, n * d * e)] * 3]    # the stack's copies of dq, dk, dv
    if dropout:                                   # dP ∘ mask / (1 - p): 1-byte mask
        per_head.append((n * n * e + n * n, n * n * e))
    return (b * h * sum(r for r, _ in per_head), b * h * sum(w for _, w in per_head))


@pytest.mark.parametrize("shape", [(2, 3, 97, 40), (1, 4, 256, 64), (4, 16, 512, 128)])
@pytest.mark.parametrize("dtype,e", [("fp16", 2), ("fp32", 4)])
@pytest.mark.parametrize("causal", [False, True])
def test_backward_hbm_bytes_closed_form(shape, dtype, e, causal):
    b, h, n, d = shape
    r = simulate("standard", wl(b, h, n, d, causal=causal, dtype=dtype, passes="bwd"), "h100",
                 options=EAGER, compute=False)
    assert r.plan["bwd"]["softmax_bwd_passes"] == 1
    read, write = expected_backward_bytes(b, h, n, d, e, r.plan["gemm_tile_m"],
                                          r.plan["gemm_tile_n"])
    assert (r.counts["hbm_read_bytes"], r.counts["hbm_write_bytes"]) == (read, write)
    assert r.counts["kernel_launches"] == 11            # causal or not: the add's backward
    assert r.counts["matmul_flops"] == 8 * b * h * n * n * d     # is the identity
    assert r.counts["exp_ops"] == 0


def test_backward_with_dropout_adds_its_elementwise_kernel():
    b, h, n, d, e = 2, 3, 97, 40, 2
    r = simulate("standard", wl(b, h, n, d, dropout=0.1, passes="bwd"), "h100", options=EAGER,
                 compute=False)
    read, write = expected_backward_bytes(b, h, n, d, e, r.plan["gemm_tile_m"],
                                          r.plan["gemm_tile_n"], dropout=True)
    assert (r.counts["hbm_read_bytes"], r.counts["hbm_write_bytes"]) == (read, write)
    assert [k.name for k in r.kernels][:3] == ["dp_bmm", "dv_bmm", "dropout_bwd"]


def test_backward_against_algorithm3_is_the_multiplies_and_the_stack():
    """The same four GEMMs and softmax backward as Algorithm 3; per head +3 N² e for the
    product ATen's softmax backward writes and reads back, +4 N d e for the two out-of-place
    multiplies by alpha and +6 N d e for the stack, and, causal, none of Algorithm 3's
    masked_fill backward (the additive mask passes dS through)."""
    b, h, n, d, e = 2, 3, 128, 64, 2
    traffic = lambda r: r.counts["hbm_read_bytes"] + r.counts["hbm_write_bytes"]  # noqa: E731
    for causal in (False, True):
        w = wl(b, h, n, d, causal=causal, passes="bwd")
        a3 = simulate("standard", w, "h100", compute=False)
        eager = simulate("standard", w, "h100", options=EAGER, compute=False)
        gemms = lambda r: {k.name[:2]: k.counts()["hbm_read_bytes"]  # noqa: E731
                           for k in r.kernels if k.name.endswith(("_gemm", "_bmm"))}
        # dK's product is (d x N) here, (N x d) in Algorithm 3: its panels differ
        assert {g: v for g, v in gemms(eager).items() if g != "dk"} == \
            {g: v for g, v in gemms(a3).items() if g != "dk"}
        mask_bwd = 2 * b * h * n * n * e + b * h * n * n if causal else 0
        dk_diff = (gemms(eager)["dk"] - gemms(a3)["dk"])
        product = 3 * b * h * n * n * e
        assert traffic(eager) - traffic(a3) == \
            product + 10 * b * h * n * d * e - mask_bwd + dk_diff


def test_fwd_plus_bwd_is_the_forward_then_the_backward():
    w = wl(4, 8, 512, 64, causal=True)
    parts = [simulate("standard", Workload(batch=4, heads=8, seq_q=512, head_dim=64,
                                           causal=True, passes=p), "h100", options=EAGER,
                      compute=False) for p in ("fwd", "bwd", "fwd+bwd")]
    fwd, bwd, both = parts
    assert [k.name for k in both.kernels] == [k.name for k in fwd.kernels + bwd.kernels]
    for key in ("hbm_read_bytes", "hbm_write_bytes", "matmul_flops", "kernel_launches"):
        assert both.counts[key] == fwd.counts[key] + bwd.counts[key]
    assert w.passes == "fwd"


def test_the_stack_transposes_dk_through_whole_sectors():
    """dK' is (B·H, d, N) (k' was), and the stack walks the packed gradient along d: its
    copy reads as the forward's K copy does; dQ's and dV's are coalesced."""
    w = Workload(batch=4, heads=8, seq_q=512, head_dim=128, passes="bwd")
    r = simulate("standard", w, H100, options=EAGER, compute=False)
    kernels = {k.name: k for k in r.kernels}
    assert kernels["stack_k"].read_sector_use == 2 / 32
    assert kernels["stack_q"].read_sector_use == kernels["stack_v"].read_sector_use == 1.0
    assert kernels["stack_k"].counts() == kernels["stack_q"].counts()


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_backward_footprint_phases_are_the_kernels_and_peak_is_closed_form(dropout):
    b, h, n, d, e = 2, 4, 1024, 64, 2
    for passes in ("bwd", "fwd+bwd"):
        w = wl(b, h, n, d, causal=True, passes=passes, dropout=dropout)
        f = footprint_of(w)
        r = simulate("standard", w, "h100", options=EAGER, compute=False)
        assert f.phases == tuple(k.name for k in r.kernels)
    scores, head_rows = b * h * n * n * e, b * h * n * d * e
    f = footprint_of(wl(b, h, n, d, passes="bwd", dropout=dropout))
    # at the softmax backward: P, dP, the product tmp and dS (allocated before the product
    # runs); Q, K, V, dO, the saved copies q' and k' (V' is freed after dP), dV'. Dropout's
    # backward (P, the 1-byte mask, dP̃ and dP) stays below it
    peak = 4 * scores + 7 * head_rows
    assert f.peak_bytes == peak
    assert f.allocation("dqkv").nbytes == 3 * head_rows


def test_cli_runs_the_backward_and_json_lists_its_kernels(capsys):
    import json
    code = main(["run", "standard", "--program", "pytorch-eager", "--pass", "fwd+bwd",
                 "--seq", "256", "--batch", "2", "--heads", "2", "--count-only",
                 "--format", "json"])
    out, _ = capsys.readouterr()
    d = json.loads(out)
    names = [k["name"] for k in d["kernels"]]
    assert code == 0 and d["workload"]["passes"] == "fwd+bwd"
    assert names[-12:] == ["bmm", "dp_bmm", "dv_bmm", "softmax_bwd_mul", "softmax_bwd",
                           "dq_bmm", "dq_scale",
                           "dk_bmm", "dk_scale", "stack_q", "stack_k", "stack_v"]
    # PyTorch's row kernel holds P and the product the kernel before it wrote, not dP
    (row,) = [k for k in d["kernels"] if k["name"] == "softmax_bwd"]
    assert list(row["buffers"]) == ["P_row,tmp_row"]


def test_cli_runs_the_program_and_json_names_it(capsys):
    import json
    code = main(["run", "standard", "--program", "pytorch-eager", "--causal", "--seq", "256",
                 "--batch", "2", "--heads", "2", "--count-only", "--format", "json"])
    out, _ = capsys.readouterr()
    d = json.loads(out)
    assert code == 0 and d["options"]["program"] == "pytorch-eager"
    assert [k["name"] for k in d["kernels"]][:3] == ["q_copy", "k_copy", "baddbmm"]
    # what a thread of the broadcast add holds in flight, and what that costs it
    (add,) = [k for k in d["kernels"] if k["name"] == "mask_add"]
    assert add["thread_round_bytes"] == 6 and add["time"]["latency_s"] > 0
    assert len(d["gpu"]["stream_curve"]) == 8


@pytest.mark.parametrize("dtype,e", [("fp16", 2), ("fp32", 4)])
def test_the_transposing_k_copy_moves_whole_sectors_through_l2(dtype, e):
    """rearrange(k, 'b s h d -> (b h) d s') walks its contiguous output: a warp's 32 loads
    fall in 32 sectors, each used for e of its 32 bytes, so L2 moves 32/e times the bytes
    the copy reads (its counts do not change); the other copies are coalesced."""
    from hwmodels.timing import TimingOptions, kernel_time
    w = Workload(batch=4, heads=8, seq_q=512, head_dim=128, dtype=dtype)
    r = simulate("standard", w, H100, options=EAGER, compute=False)
    kernels = {k.name: k for k in r.kernels}
    k_copy, q_copy = kernels["k_copy"], kernels["q_copy"]
    assert k_copy.counts() == q_copy.counts()                  # the same bytes requested
    assert k_copy.read_sector_use == e / 32 and q_copy.read_sector_use == 1.0
    reads = 4 * 8 * 512 * 128 * e
    l2_bytes = reads * 32 / e + reads                         # sectors read, then written
    t = kernel_time(H100, k_copy, TimingOptions())
    assert t.l2_s == pytest.approx(l2_bytes / H100.l2_bytes_per_s(), rel=1e-12)
    off = kernel_time(H100, k_copy, TimingOptions(sector_use=False))
    assert off.l2_s == pytest.approx(2 * reads / H100.l2_bytes_per_s(), rel=1e-12)
    assert kernel_time(H100, q_copy, TimingOptions()).l2_s == pytest.approx(off.l2_s)


@pytest.mark.parametrize("n", [1024, 4096, 8192])
def test_the_mask_stays_in_l2_only_while_a_head_streaming_past_it_fits(n):
    """The add walks its output head after head: between two heads' reads of a mask entry
    L2 sees the rest of one head's S, mask and output, 3 e N² bytes. Where that fits in the
    usable half of L2 every re-read of the mask is a hit (DRAM moves S, the output and the
    mask once); beyond it L2 keeps usable / (3 e N²) of them and the rest come from DRAM."""
    from hwmodels.timing import L2_USABLE_FRACTION, TimingOptions, dram_bytes
    b, h, e = 2, 4, 2
    r = simulate("standard", Workload(batch=b, heads=h, seq_q=n, head_dim=64, causal=True),
                 H100, options=EAGER, compute=False)
    (add,) = [k for k in r.kernels if k.name == "mask_add"]
    plane = n * n * e
    requested = 3 * b * h * plane                             # S and mask read, S' written
    once = 2 * b * h * plane + plane                          # the mask read once
    usable = L2_USABLE_FRACTION * H100.l2_bytes
    hit = min(1.0, usable / (3 * plane))
    assert add.counts()["hbm_read_bytes"] + add.counts()["hbm_write_bytes"] == requested
    assert dram_bytes(H100, add) == int(once + (requested - once) * (1 - hit))
    assert (hit == 1.0) == (n == 1024)
    assert dram_bytes(H100, add, TimingOptions(l2_cache=False)) == requested


@pytest.mark.parametrize("dtype,e", [("fp16", 2), ("fp32", 4)])
def test_atens_elementwise_kernels_declare_what_a_thread_holds_in_flight(dtype, e):
    """ATen's loop over non-contiguous operands (the copies of permuted slices, the add of
    the broadcast mask, the stack into the packed gradient) takes a thread's elements one
    after the other: one element of each operand a round. Its vectorized loop (contiguous
    operands) loads a thread's 4 elements of every input at once. The fill only stores;
    triu loads its 8 bytes and stores 8."""
    w = Workload(batch=2, heads=4, seq_q=256, head_dim=64, causal=True, dtype=dtype,
                 passes="fwd+bwd")
    r = simulate("standard", w, H100, options=EAGER, compute=False)
    rounds = {k.name: k.thread_round_bytes for k in r.kernels}
    expected = {"q_copy": 2 * e, "k_copy": 2 * e, "v_copy": 2 * e, "mask_add": 3 * e,
                "mask_full": 0, "mask_triu": 16, "softmax_bwd_mul": 4 * 3 * e,
                "dq_scale": 4 * 2 * e, "dk_scale": 4 * 2 * e, "stack_q": 2 * e,
                "stack_k": 2 * e, "stack_v": 2 * e}
    if dtype != "fp32":
        expected["mask_cast"] = 4 * (4 + e)
    assert {name: rounds[name] for name in expected} == expected
    # the tiled kernels keep theirs in shared memory: Little's law there is the tiles'
    assert all(rounds[name] == 0 for name in ("baddbmm", "softmax", "bmm", "dp_bmm"))


def test_the_broadcast_add_waits_on_dram_a_round_at_the_latency_its_load_sets():
    """At N = 8192 (fp16, d = 128) on the H100 SXM5 the add's threads hold 6 bytes a round
    (S, the mask and the sum), 12 KiB an SM: the GH200 sweep puts that load at about half
    the DRAM's rate, where a round takes about 0.93 us; as a stream it would take the copy
    bandwidth (``--no-loaded-latency``)."""
    from hwmodels.timing import TimingOptions, kernel_time
    w = Workload(batch=2, heads=16, seq_q=8192, head_dim=128, causal=True)
    r = simulate("standard", w, H100, options=EAGER, compute=False)
    (add,) = [k for k in r.kernels if k.name == "mask_add"]
    t = kernel_time(H100, add, TimingOptions())
    rounds = 2 * 16 * 8192 * 8192 / (132 * 2048)
    assert t.mechanism == "DRAM latency"
    assert 0.85e-6 < t.latency_s / rounds < 1.0e-6
    assert t.stream_round_s == pytest.approx(t.latency_s / rounds, rel=1e-9)
    off = kernel_time(H100, add, TimingOptions(loaded_latency=False))
    assert off.mechanism == "HBM bandwidth" and off.latency_s == 0
    assert 1.6 < t.total_s / off.total_s < 1.9


def test_the_legacy_loops_round_is_what_its_compiled_code_keeps_in_flight():
    """``benchmarks/aten_elementwise_sass.py`` built ATen's non-contiguous loop (a binary op
    in fp16) for sm_80 and sm_90 (reports/aten_elementwise_sass.json): each element's two
    loads follow the previous element's store, so one element of each operand is in flight,
    as ``legacy_loop_round`` declares; and its registers let 2048 threads share an SM, the
    occupancy the model gives the kernel (the thread limit)."""
    import json
    import pathlib
    from algorithms.standard import pytorch_eager as eager
    sass = json.loads((pathlib.Path(__file__).parents[1] / "reports"
                       / "aten_elementwise_sass.json").read_text())
    for arch in ("sm_80", "sm_90"):
        assert sass[arch]["global_memory_order"] == ["LDG", "LDG", "STG"] * eager.THREAD_ELEMENTS
        assert sass[arch]["elements_in_flight"] == 1
        assert sass[arch]["registers"] * H100.max_threads_per_sm * 4 <= H100.register_bytes_per_sm
    assert eager.legacy_loop_round(2, 2, 2) == sass["sm_90"]["elements_in_flight"] * 3 * 2
