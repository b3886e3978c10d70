"""The benchmarks' PyTorch eager attention, timed kernel by kernel on a GPU, beside the
simulator's prediction for each kernel (``standard --program pytorch-eager``).

The FlashAttention papers' "standard attention" bars time flash-attention's
``attention_pytorch(qkv, dropout_p, causal)``, forward and autograd backward.
``algorithms/standard/pytorch_eager.py`` and ``pytorch_eager_backward.py`` simulate it kernel
by kernel, and docs/validation.md finds the predictions optimistic, forward and backward.
This script runs the same program step by step, each step between two CUDA events (the
backward as the ops autograd runs, called by hand, and the whole autograd backward beside
them), and prints measured against predicted per step, so that the step the model prices
wrong shows itself, and the bandwidth each step reached on the model's DRAM bytes against
this GPU's copy rate (a ``copy_`` of 512 MiB): the microbenchmark of PyTorch's softmax, its
broadcast add and its memory-bound bmms that no publication gives for these GPUs:

    python benchmarks/profile_eager.py                     # the FA-3 charts' d = 128 shapes
    python benchmarks/profile_eager.py --seq 512 2048 --head-dim 64 --causal --json out.json
    python benchmarks/profile_eager.py --pass bwd          # the backward's steps

The shapes are the papers' (batch 16k / N, 2048 / d heads, fp16). ``--predict-only`` prints
the predictions without a GPU.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import dataclass

from tabulate import tabulate

TOKENS, HIDDEN = 16384, 2048


@dataclass(frozen=True)
class Shape:
    seq: int
    head_dim: int
    causal: bool

    @property
    def batch(self) -> int:
        return max(1, TOKENS // self.seq)

    @property
    def heads(self) -> int:
        return HIDDEN // self.head_dim

    def label(self) -> str:
        return f"N {self.seq}, d {self.head_dim}, {'causal' if self.causal else 'non-causal'}"


# kernels one measured step launches together: ATen's softmax backward runs its product
# (tmp = dP ∘ P) and its row kernel inside the one op the script times
STEP_OF_KERNEL = {"softmax_bwd_mul": "softmax_bwd"}


def _per_step(shape: Shape, hw: str, passes: str, field: str) -> dict:
    """``field`` of each simulated kernel of the program, summed by the step that launches
    it, in launch order."""
    from attnsim.simulate import simulate
    from attnsim.workload import Workload
    wl = Workload(batch=shape.batch, heads=shape.heads, seq_q=shape.seq,
                  head_dim=shape.head_dim, causal=shape.causal, passes=passes)
    run = simulate("standard", wl, hw, compute=False, options={"program": "pytorch-eager"})
    steps: dict = {}
    for k in run.time.kernels:
        step = STEP_OF_KERNEL.get(k.name, k.name)
        steps[step] = steps.get(step, 0) + getattr(k, field)
    return steps


def predicted_steps(shape: Shape, hw: str = "h100-sxm", passes: str = "fwd") -> dict[str, float]:
    """Predicted seconds of each step of the simulated program (launches included), in
    launch order; the layout copies, the mask, the GEMMs and the backward's steps carry the
    names the script's steps use, a step the sum of the kernels its op launches."""
    return _per_step(shape, hw, passes, "total_s")


def predicted_step_dram(shape: Shape, hw: str = "h100-sxm", passes: str = "fwd") -> dict[str, int]:
    """The model's DRAM bytes (its estimate after L2) of each step, keyed as
    ``predicted_steps``: what a step's measured time is divided by for the bandwidth it
    reached."""
    return _per_step(shape, hw, passes, "dram_bytes")


def copy_bandwidth(nbytes: int = 1 << 29, repeats: int = 20) -> float:
    """This GPU's device-to-device copy rate, bytes moved (read and written) per second: a
    ``copy_`` between two fp16 tensors of ``nbytes`` each, the median of ``repeats``. The
    reference every step's reached bandwidth is set against; the model prices each eager
    kernel at its own copy bandwidth."""
    import torch
    src = torch.empty(nbytes // 2, dtype=torch.float16, device="cuda").normal_()
    dst = torch.empty_like(src)

    def one_call():
        marks, mark = marker()
        mark("start")
        dst.copy_(src)
        mark("copy")
        return marks

    return 2 * nbytes / timed(one_call, repeats)["copy"]


def bandwidth_rows(dram: dict, measured: dict | None, copy: float | None) -> list[list]:
    """Per step: the model's DRAM bytes, the bandwidth the measured time implies for them,
    and that bandwidth over this GPU's copy rate: below 1, the kernel runs under the copy
    bandwidth the model gives it."""
    out = []
    for name, nbytes in dram.items():
        meas = None if measured is None else measured.get(name)
        rate = nbytes / meas if meas else None
        out.append([name, f"{nbytes / 1e6:.1f}", "—" if rate is None else f"{rate / 1e9:.0f}",
                    "—" if rate is None or not copy else f"{rate / copy:.2f}"])
    return out


def timed(one_call, repeats: int) -> dict[str, float]:
    """Median seconds between consecutive marks of ``one_call()`` (a list of (name, CUDA
    event)), after three warm-up calls."""
    times: dict[str, list[float]] = {}
    for _ in range(3):
        one_call()
    for _ in range(repeats):
        marks = one_call()
        marks[-1][1].synchronize()
        for (_, e0), (name, e1) in zip(marks, marks[1:]):
            times.setdefault(name, []).append(e0.elapsed_time(e1) * 1e-3)
    return {name: statistics.median(ts) for name, ts in times.items()}


def marker():
    """(marks, mark): ``mark(name)`` records a CUDA event that ends the step ``name``."""
    import torch
    marks = []

    def mark(name):
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        marks.append((name, event))

    return marks, mark


def measured_steps(shape: Shape, repeats: int = 20) -> dict[str, float]:
    """Median device seconds of each step of attention_pytorch on this GPU (CUDA events
    around every step; ``torch.empty`` and the views are inside the next step's window)."""
    import torch
    dev = torch.device("cuda")
    b, n, h, d = shape.batch, shape.seq, shape.heads, shape.head_dim
    qkv = torch.randn(b, n, 3, h, d, device=dev, dtype=torch.float16)
    scale = d ** -0.5

    def one_call():
        marks, mark = marker()
        mark("start")
        q, k, v = qkv.unbind(dim=2)
        q = q.permute(0, 2, 1, 3).reshape(b * h, n, d)             # rearrange: a copy
        mark("q_copy")
        k = k.permute(0, 2, 3, 1).reshape(b * h, d, n)
        mark("k_copy")
        scores = torch.empty(b * h, n, n, dtype=qkv.dtype, device=dev)
        scores = torch.baddbmm(scores, q, k, beta=0, alpha=scale)
        mark("baddbmm")
        if shape.causal:
            full = torch.full((n, n), -10000.0, device=dev)
            mark("mask_full")
            mask = torch.triu(full, 1)
            mark("mask_triu")
            mask = mask.to(dtype=scores.dtype)
            mark("mask_cast")
            scores = scores + mask
            mark("mask_add")
        attention = torch.softmax(scores, dim=-1)
        mark("softmax")
        vv = v.permute(0, 2, 1, 3).reshape(b * h, n, d)            # einsum's copy of V
        mark("v_copy")
        torch.bmm(attention.view(b * h, n, n), vv)
        mark("bmm")
        return marks

    return timed(one_call, repeats)


def measured_backward_steps(shape: Shape, repeats: int = 20) -> dict[str, float]:
    """Median device seconds of each op autograd runs for attention_pytorch's backward
    (derivatives.yaml: bmm's, softmax's and baddbmm's backward, unbind's stack as cat's
    per-input copies), called by hand on the forward's tensors with dO laid out as the
    benchmark's ``randn_like(y)`` is; and, as "autograd (whole)", the benchmark's own
    ``y.backward(grad, retain_graph=True)``, which the steps should add up to."""
    import torch
    dev = torch.device("cuda")
    b, n, h, d = shape.batch, shape.seq, shape.heads, shape.head_dim
    scale = d ** -0.5
    qkv = torch.randn(b, n, 3, h, d, device=dev, dtype=torch.float16, requires_grad=True)
    q, k, v = qkv.detach().unbind(dim=2)
    qq = q.permute(0, 2, 1, 3).reshape(b * h, n, d)
    kk = k.permute(0, 2, 3, 1).reshape(b * h, d, n)
    vv = v.permute(0, 2, 1, 3).reshape(b * h, n, d)
    s = torch.baddbmm(torch.empty(b * h, n, n, dtype=qkv.dtype, device=dev), qq, kk, beta=0,
                      alpha=scale)
    if shape.causal:
        s = s + torch.triu(torch.full((n, n), -10000.0, device=dev), 1).to(s.dtype)
    p = torch.softmax(s, dim=-1)
    y = attention_pytorch(qkv, shape.causal)
    grad = torch.randn_like(y)                  # y's strides: (B·H, N, d) in memory
    do = grad.permute(0, 2, 1, 3).reshape(b * h, n, d)          # a view, as in autograd
    dqkv = torch.empty(b, n, 3, h, d, device=dev, dtype=qkv.dtype)

    def steps():
        marks, mark = marker()
        mark("start")
        dp = torch.bmm(do, vv.transpose(1, 2))
        mark("dp_bmm")
        dv = torch.bmm(p.transpose(1, 2), do)
        mark("dv_bmm")
        ds = torch._softmax_backward_data(dp, p, -1, p.dtype)
        mark("softmax_bwd")
        dq = torch.bmm(ds, kk.transpose(1, 2))
        mark("dq_bmm")
        dq = dq * scale
        mark("dq_scale")
        dk = torch.bmm(qq.transpose(1, 2), ds)
        mark("dk_bmm")
        dk = dk * scale
        mark("dk_scale")
        dqkv[:, :, 0].copy_(dq.view(b, h, n, d).permute(0, 2, 1, 3))
        mark("stack_q")
        dqkv[:, :, 1].copy_(dk.view(b, h, d, n).permute(0, 3, 1, 2))
        mark("stack_k")
        dqkv[:, :, 2].copy_(dv.view(b, h, n, d).permute(0, 2, 1, 3))
        mark("stack_v")
        return marks

    def whole():
        marks, mark = marker()
        qkv.grad = None
        mark("start")
        y.backward(grad, retain_graph=True)
        mark("autograd (whole)")
        return marks

    measured = {**timed(steps, repeats), **timed(whole, repeats)}
    # the steps are autograd's ops: the packed gradients agree
    difference = (dqkv.float() - qkv.grad.float()).abs().max().item()
    scale_of = qkv.grad.float().abs().max().item()
    if difference > 1e-2 * scale_of:
        print(f"profile_eager: the backward's steps differ from autograd's gradient by "
              f"{difference:.3g} (largest {scale_of:.3g})", file=sys.stderr)
    return measured


def attention_pytorch(qkv, causal: bool):
    """The benchmark's function (flash-attention benchmarks/benchmark_flash_attention.py),
    dropout 0, written with torch ops only (its rearranges as permute + reshape)."""
    import torch
    b, n, _, h, d = qkv.shape
    q, k, v = qkv.unbind(dim=2)
    q = q.permute(0, 2, 1, 3).reshape(b * h, n, d)
    k = k.permute(0, 2, 3, 1).reshape(b * h, d, n)
    scores = torch.empty(b * h, n, n, dtype=qkv.dtype, device=qkv.device)
    scores = torch.baddbmm(scores, q, k, beta=0, alpha=d ** -0.5).view(b, h, n, n)
    if causal:
        mask = torch.triu(torch.full((n, n), -10000.0, device=scores.device), 1)
        scores = scores + mask.to(dtype=scores.dtype)
    attention = torch.softmax(scores, dim=-1)
    return torch.einsum("bhts,bshd->bthd", attention, v)


def rows(predicted: dict, measured: dict | None) -> list[list]:
    out = []
    for name, pred in predicted.items():
        meas = None if measured is None else measured.get(name)
        out.append([name, f"{pred * 1e6:.1f}", "—" if meas is None else f"{meas * 1e6:.1f}",
                    "—" if not meas else f"{pred / meas:.2f}"])
    total_p = sum(predicted.values())
    total_m = None if measured is None else sum(measured.get(name, 0.0) for name in predicted)
    out.append(["total", f"{total_p * 1e6:.1f}", "—" if total_m is None else
                f"{total_m * 1e6:.1f}", "—" if not total_m else f"{total_p / total_m:.2f}"])
    for name, meas in (measured or {}).items():    # the whole call, beside its steps' sum
        if name not in predicted:
            out.append([name, f"{total_p * 1e6:.1f}", f"{meas * 1e6:.1f}",
                        f"{total_p / meas:.2f}"])
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seq", type=int, nargs="+", default=[512, 8192])
    ap.add_argument("--head-dim", type=int, nargs="+", default=[128])
    ap.add_argument("--causal", action="store_true", help="causal only (default: both)")
    ap.add_argument("--hw", default="h100-sxm", help="the model to predict with")
    ap.add_argument("--pass", dest="passes", choices=("fwd", "bwd", "both"), default="both",
                    help="the forward's steps, the backward's, or both (default)")
    ap.add_argument("--predict-only", action="store_true", help="no GPU: predictions only")
    ap.add_argument("--json", metavar="FILE")
    a = ap.parse_args(argv)
    bad = [s for s in a.seq if not 16 <= s <= TOKENS] + \
        [d for d in a.head_dim if d not in (64, 128, 256)]
    if bad:
        print(f"profile_eager: --seq takes 16..{TOKENS} and --head-dim 64, 128 or 256 (the "
              f"papers' shapes); got {bad}", file=sys.stderr)
        return 2
    if not a.predict_only:
        try:
            import torch
        except Exception as err:
            print(f"profile_eager: PyTorch is not importable ({type(err).__name__}); use "
                  f"--predict-only without a GPU", file=sys.stderr)
            return 2
        if not torch.cuda.is_available():
            print("profile_eager: PyTorch sees no CUDA device; use --predict-only without a "
                  "GPU", file=sys.stderr)
            return 2
    shapes = [Shape(s, d, c) for d in a.head_dim for s in a.seq
              for c in ((True,) if a.causal else (False, True))]
    passes = ("fwd", "bwd") if a.passes == "both" else (a.passes,)
    measure = {"fwd": measured_steps, "bwd": measured_backward_steps}
    copy = None if a.predict_only else copy_bandwidth()
    if copy:
        print(f"copy_ between two 512 MiB fp16 tensors: {copy / 1e9:.0f} GB/s moved")
    results = []
    for shape in shapes:
        for p in passes:
            predicted = predicted_steps(shape, a.hw, p)
            dram = predicted_step_dram(shape, a.hw, p)
            measured = None if a.predict_only else measure[p](shape)
            print(f"\n{shape.label()}, {'forward' if p == 'fwd' else 'backward'} (batch "
                  f"{shape.batch}, {shape.heads} heads, fp16), µs:")
            print(tabulate(rows(predicted, measured),
                           headers=["kernel", "predicted", "measured", "pred/meas"]))
            print("\nthe bandwidth each step reached, on the model's DRAM bytes:")
            print(tabulate(bandwidth_rows(dram, measured, copy),
                           headers=["kernel", "DRAM MB (model)", "GB/s (measured)",
                                    "of copy"]))
            results.append({"seq": shape.seq, "head_dim": shape.head_dim,
                            "causal": shape.causal, "pass": p, "predicted_s": predicted,
                            "measured_s": measured, "dram_bytes": dram})
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"hw": a.hw, "copy_bytes_per_s": copy, "shapes": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
