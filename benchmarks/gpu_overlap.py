"""Do the tensor cores and the special-function units hide each other? The timing model's
dependency-chain rule, measured on a loop with nothing else in it.

The timing model (``hwmodels.timing``) prices a kernel's compute from a GEMM phase G and a
softmax phase P that depend on each other, tile after tile; they hide each other only as far
as the chains in flight on an SM let them: mean-value analysis of a closed network of g
chains over the two pipes (g = 1: G + P; g large: max(G, P)). Two of its rules carry the
FlashAttention-2 and -3 predictions docs/validation.md finds furthest off:

* identical CTAs that share an SM and start together stay in step (``lockstep_ctas``), so
  two FlashAttention-2 CTAs reach their GEMMs together and their softmax together and do
  not hide each other: one chain, not two;
* chains a kernel staggers on purpose (FlashAttention-3's ping-pong warpgroups) hide each
  other as mean-value analysis says.

Here each warp alternates a phase of ``mma.sync.m16n8k16`` (fp16 in, fp32 accumulate,
operands in registers) and a phase of ``ex2.approx``, each reading a result of the one
before, as attention's softmax reads S and its next GEMM reads P. No memory traffic. The
arrangements (``ARRANGEMENTS``), each one wave of CTAs over every SM:

  one warp a sub-partition  1 CTA of 4 warps per SM, a barrier every iteration: one chain,
                            G + P (the control).
  two warps in step         1 CTA of 8 warps, a barrier every iteration, all in phase.
  ping-pong                 1 CTA of 8 warps, a barrier every iteration; the second four
                            warps run their exp phase first: two staggered chains.
  two CTAs                  2 CTAs of 4 warps per SM, each with its own barrier, launched
                            together: FlashAttention-2's two CTAs per SM. In step (the
                            model), or do they drift apart and hide each other?
  free warps                1 CTA of 8 warps, no barrier: do warps that start together
                            drift apart?

Warps go to the SM's four sub-partitions by warp index modulo 4 (what Nsight Compute's
per-sub-partition counters show), so each four consecutive warps put one warp on every
sub-partition, and each sub-partition has its own tensor core and special-function units.

Each arrangement is timed three ways: MMAs only (G), exps only (P), and both (the loop); the
exp count is set once so that P is about G in the ping-pong arrangement, where hiding is
most visible. It prints the loop's time over G + P (1: serial; max(G, P) / (G + P): fully
hidden) beside the model's for the same G and P, with and without ``lockstep_ctas``. Nothing
is written to a GPU file: the result says whether a mechanism holds, not a constant.

    python benchmarks/gpu_overlap.py [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass

from hwmodels.timing import closed_network_time

OVERLAP_SOURCE = r"""
#define MMA_STEP(j)                                                                      \
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "                    \
                 "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"     \
                 : "+f"(c[j][0]), "+f"(c[j][1]), "+f"(c[j][2]), "+f"(c[j][3])            \
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1))
#define EX2_STEP(x) asm volatile("ex2.approx.ftz.f32 %0, %1;" : "=f"(x) : "f"(-(x)))

extern "C" __global__ void overlap_loop(float* out, int iters, int mma_groups, int exp_steps,
                                        int barrier, int stagger) {
    const unsigned lane = threadIdx.x & 31u;
    // warps 4-7 (one on each sub-partition) take their exp phase first when staggered
    const bool exp_first = stagger && ((threadIdx.x >> 7) & 1u);
    unsigned a0 = 0x2c002c00u + lane, a1 = 0x2c012c01u + lane;
    unsigned a2 = 0x2c022c02u + lane, a3 = 0x2c032c03u + lane;
    const unsigned b0 = 0x2c042c04u + lane, b1 = 0x2c052c05u + lane;
    float c[4][4] = {};
    float x0 = 0.25f + 1e-6f * lane, x1 = x0 + 0.125f, x2 = x0 + 0.25f, x3 = x0 + 0.5f;
    for (int i = 0; i < iters; ++i) {
        for (int half = 0; half < 2; ++half) {
            if ((half == 0) != exp_first) {
                // the GEMM phase reads the last exp (as P V reads P)
                a0 ^= __float_as_uint(x0) & 1u;
                for (int g = 0; g < mma_groups; ++g) {
                    MMA_STEP(0); MMA_STEP(1); MMA_STEP(2); MMA_STEP(3);
                }
            } else {
                // the exp phase reads the GEMM's result (as the softmax reads S)
                x0 += 1e-30f * c[0][0]; x1 += 1e-30f * c[1][1];
                x2 += 1e-30f * c[2][2]; x3 += 1e-30f * c[3][3];
                for (int s = 0; s < exp_steps; ++s) {
                    EX2_STEP(x0); EX2_STEP(x1); EX2_STEP(x2); EX2_STEP(x3);
                }
            }
        }
        if (barrier) __syncthreads();
    }
    float s = x0 + x1 + x2 + x3;
#pragma unroll
    for (int j = 0; j < 4; ++j)
        s += c[j][0] + c[j][1] + c[j][2] + c[j][3];
    out[blockIdx.x * blockDim.x + threadIdx.x] = s;
}
"""
MMA_GROUPS = 8              # 32 MMAs a warp per iteration
FIRST_EXP_STEPS = 64        # 256 exps a thread per iteration, before balancing
ITERS = 8192
REPEATS = 3


@dataclass(frozen=True)
class Arrangement:
    name: str
    ctas_per_sm: int
    warps: int                # per CTA
    barrier: bool             # __syncthreads() every iteration
    stagger: bool             # warps 4-7 take their exp phase first
    chains_lockstep: int      # chains the model counts (lockstep_ctas on) ...
    chains_free: int          # ... and off
    question: str


ARRANGEMENTS = (
    Arrangement("one warp a sub-partition", 1, 4, True, False, 1, 1,
                "the control: one chain, G + P"),
    Arrangement("two warps in step", 1, 8, True, False, 1, 1,
                "warps that meet at a barrier every tile do not hide each other"),
    Arrangement("ping-pong", 1, 8, True, True, 2, 2,
                "two staggered chains hide each other as mean-value analysis says"),
    Arrangement("two CTAs", 2, 4, True, False, 1, 2,
                "two CTAs that start together stay in step (lockstep_ctas)"),
    Arrangement("free warps", 1, 8, False, False, 1, 2,
                "warps with no barrier that start together stay in step"),
)


@dataclass
class Timing:
    arrangement: str
    mma_only_s: float
    exp_only_s: float
    loop_s: float


class Unavailable(RuntimeError):
    """What this machine lacks to run the measurement (one line, with the fix)."""


# ---- from timings to the comparison (no GPU needed) -----------------------------------------

def model_ratio(g_s: float, p_s: float, chains: int) -> float:
    """The model's time of the loop over G + P, for ``chains`` chains on each SM."""
    return closed_network_time((g_s, p_s), chains) / (g_s + p_s)


def balanced_exp_steps(steps: int, mma_only_s: float, exp_only_s: float) -> int:
    """The exp steps that make the exp phase last about as long as the GEMM phase."""
    return max(1, round(steps * mma_only_s / exp_only_s))


def compare(t: Timing, a: Arrangement) -> dict:
    """Measured loop / (G + P), fully hidden's, and the model's with and without lockstep;
    ``closer_to``: which of the model's two readings the measurement is nearer."""
    g, p = t.mma_only_s, t.exp_only_s
    measured = t.loop_s / (g + p)
    lockstep, free = model_ratio(g, p, a.chains_lockstep), model_ratio(g, p, a.chains_free)
    row = {"arrangement": a.name, "measured": measured, "hidden": max(g, p) / (g + p),
           "model_lockstep": lockstep, "model_free": free}
    if a.chains_lockstep != a.chains_free:
        row["closer_to"] = "lockstep" if abs(measured - lockstep) <= abs(measured - free) \
            else "out of step"
    return row


def report_rows(timings: list[Timing]) -> list[list[str]]:
    by_name = {a.name: a for a in ARRANGEMENTS}
    rows = []
    for t in timings:
        a = by_name[t.arrangement]
        c = compare(t, a)
        rows.append([a.name, f"{a.ctas_per_sm} x {a.warps}", f"{t.mma_only_s * 1e3:.3f}",
                     f"{t.exp_only_s * 1e3:.3f}", f"{t.loop_s * 1e3:.3f}",
                     f"{c['measured']:.3f}", f"{c['hidden']:.3f}",
                     f"{c['model_lockstep']:.3f}", f"{c['model_free']:.3f}",
                     c.get("closer_to", "—")])
    return rows


HEADERS = ["arrangement", "CTAs x warps per SM", "G only (ms)", "P only (ms)", "loop (ms)",
           "loop / (G + P)", "fully hidden", "model", "model, --no-lockstep-ctas",
           "nearer"]


# ---- the measurement (GPU) ------------------------------------------------------------------

def _require_cupy():
    try:
        import cupy
    except Exception as err:
        raise Unavailable(f"CuPy is not importable ({type(err).__name__}); install it with: "
                          f"pip install 'attnsim[gpu]'") from err
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as err:
        raise Unavailable(f"no CUDA device ({type(err).__name__}); run this on a machine with "
                          f"a GPU") from err
    if count < 1:
        raise Unavailable("no CUDA device; run this on a machine with a GPU")
    props = cupy.cuda.runtime.getDeviceProperties(0)
    if props["major"] < 8:
        raise Unavailable(f"mma.sync.m16n8k16 needs compute capability 8.0 or later; this GPU "
                          f"is {props['major']}.{props['minor']}")
    return cupy, props


def _seconds(cupy, run) -> float:
    """Best device seconds of ``run()`` over REPEATS (CuPy events around it)."""
    best = float("inf")
    for _ in range(REPEATS):
        start, end = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        run()
        end.record()
        end.synchronize()
        best = min(best, cupy.cuda.get_elapsed_time(start, end) * 1e-3)
    return best


def measure() -> tuple[str, int, list[Timing]]:
    cupy, props = _require_cupy()
    sms = props["multiProcessorCount"]
    device = f"{props['name'].decode()} (sm_{props['major']}{props['minor']}, {sms} SMs)"
    kernel = cupy.RawKernel(OVERLAP_SOURCE, "overlap_loop")
    out = cupy.zeros(2 * sms * 8 * 32, dtype=cupy.float32)

    def seconds_of(a: Arrangement, mma_groups: int, exp_steps: int) -> float:
        grid, block = (a.ctas_per_sm * sms,), (32 * a.warps,)
        args = (out, cupy.int32(ITERS), cupy.int32(mma_groups), cupy.int32(exp_steps),
                cupy.int32(a.barrier), cupy.int32(a.stagger))
        kernel(grid, block, args)                                   # compile and warm
        return _seconds(cupy, lambda: kernel(grid, block, args))

    pingpong = next(a for a in ARRANGEMENTS if a.stagger)
    steps = balanced_exp_steps(FIRST_EXP_STEPS, seconds_of(pingpong, MMA_GROUPS, 0),
                               seconds_of(pingpong, 0, FIRST_EXP_STEPS))
    timings = [Timing(a.name, seconds_of(a, MMA_GROUPS, 0), seconds_of(a, 0, steps),
                      seconds_of(a, MMA_GROUPS, steps)) for a in ARRANGEMENTS]
    return device, steps, timings


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", metavar="FILE", help="write the timings and the comparison")
    a = ap.parse_args(argv)
    try:
        device, steps, timings = measure()
    except Unavailable as err:
        print(f"gpu_overlap: {err}", file=sys.stderr)
        return 2
    from tabulate import tabulate
    print(f"{device}: {MMA_GROUPS * 4} mma.sync.m16n8k16 and {steps * 4} ex2 a thread per "
          f"iteration, {ITERS} iterations, best of {REPEATS}")
    print(tabulate(report_rows(timings), headers=HEADERS))
    if a.json:
        by_name = {x.name: x for x in ARRANGEMENTS}
        with open(a.json, "w") as f:
            json.dump({"device": device, "mma_groups": MMA_GROUPS, "exp_steps": steps,
                       "iters": ITERS, "timings": [asdict(t) for t in timings],
                       "comparison": [compare(t, by_name[t.arrangement]) for t in timings]},
                      f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
