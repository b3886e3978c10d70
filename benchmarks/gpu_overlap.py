"""Do the tensor cores and the special-function units hide each other? The timing model's
dependency-chain rule, measured on loops with nothing else in them.

The timing model (``hwmodels.timing``) prices a kernel's compute from a GEMM phase G and a
softmax phase P that depend on each other, tile after tile; they hide each other only as far
as the chains in flight on an SM let them: mean-value analysis of a closed network of g
chains over the two pipes (g = 1: G + P; g large: max(G, P)). Three of its rules carry the
FlashAttention-2 and -3 predictions docs/validation.md finds furthest off:

* identical CTAs that share an SM and start together stay in step (``lockstep_ctas``), so
  two FlashAttention-2 CTAs reach their GEMMs together and their softmax together and do
  not hide each other: one chain, not two;
* chains a kernel staggers on purpose (FlashAttention-3's ping-pong warpgroups) hide each
  other as mean-value analysis says;
* FlashAttention-3's two-stage pipeline (the P V GEMM of one tile runs under the softmax of
  the next) doubles its chains: 2W for W consumer warpgroups.

Each warp alternates a GEMM phase and an exp phase (``ex2.approx``), each reading a result
of the one before, as attention's softmax reads S and its next GEMM reads P. No memory
traffic. Two loops, each launched as one wave of CTAs over every SM (``ARRANGEMENTS``):

``mma.sync`` (sm_80 and later; FlashAttention-2's instruction), ``m16n8k16`` with operands
in registers:

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

``wgmma`` (sm_90a; FlashAttention-3's), ``m64n64k16``, A in registers and B in shared
memory, issued by warpgroups of four warps. The GEMM phase computes S (as Q Kᵀ, independent
of the exps) and then O += P B with P from the last exps (as P V); the exp phase reads S:

  one warpgroup             1 chain, every GEMM waited for before the exps (the control).
  one warpgroup, pipelined  the P V GEMM is waited for only before the next GEMM phase, so
                            it runs under the exps (FlashAttention-3's Section 3.2 as the
                            paper draws it; ``flash3 --pipelining paper``): 2 chains.
  two warpgroups in step    2 warpgroups, a barrier every iteration, in phase: 1 chain.
  two warpgroups, ping-pong the second warpgroup runs its exp phase first: 2 chains
                            (FlashAttention-3's forward at d <= 128 as its release compiles
                            it: its SASS waits for P V before the exps, docs/validation.md).
  ping-pong, pipelined      both: FlashAttention-3 at d = 128 as the paper draws it, 4
                            chains.
  in step, pipelined        two pipelined warpgroups with no stagger: FlashAttention-3
                            where its release builds no ping-pong barrier (fp16 at
                            d = 256, fp8 at d = 64) as the paper draws it: 2 chains, not 4.
  two warpgroups, free      2 warpgroups, no barrier between them: FlashAttention-3's
                            consumers where its release builds no ping-pong barrier, as
                            they wait only on the producer. In step (the model: 1 chain),
                            or do they drift apart and hide each other's exps (2)?

This kernel's own SASS (ptxas 13.0) runs the exps after the wait for S and before the wait for
P V, as written; the release of FlashAttention-3 at d <= 128 does not
(``benchmarks/sass_schedule.py``).

Warps go to the SM's four sub-partitions by warp index modulo 4 (what Nsight Compute's
per-sub-partition counters show), so each four consecutive warps (a warpgroup) put one warp
on every sub-partition, and each sub-partition has its own tensor core and special-function
units.

Each arrangement is timed three ways: GEMMs only (G), exps only (P), and both (the loop);
the exp count is set once per loop so that P is about G in its ping-pong arrangement, where
hiding is most visible. It prints the loop's time over G + P (1: serial; max(G, P) / (G + P):
fully hidden) beside the model's for the same G and P, with and without ``lockstep_ctas``.
Nothing is written to a GPU file: the result says whether a mechanism holds, not a constant.

    python benchmarks/gpu_overlap.py [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
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
def _wgmma_m64n64k16() -> str:
    """The ``wgmma`` call: 32 fp32 accumulators a thread, A (4 registers of fp16 pairs) from
    registers, B from the shared-memory descriptor, D = A B + (scale_d ? D : 0)."""
    d = ", ".join(f"%{i}" for i in range(32))
    outs = ", ".join(f'"+f"(d[{i}])' for i in range(32))
    return (
        "__device__ __forceinline__ void wgmma_m64n64k16(float (&d)[32], unsigned a0,\n"
        "        unsigned a1, unsigned a2, unsigned a3, unsigned long long desc, int scale_d) {\n"
        '    asm volatile("{\\n.reg .pred p;\\nsetp.ne.b32 p, %37, 0;\\n"\n'
        '                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 "\n'
        f'                 "{{{d}}}, {{%32, %33, %34, %35}}, %36, p, 1, 1, 0;\\n}}\\n"\n'
        f"                 : {outs}\n"
        '                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "l"(desc), "r"(scale_d));\n'
        "}\n")


WGMMA_SOURCE = _wgmma_m64n64k16() + r"""
// B is one 64 x 16 fp16 tile, K-major, without swizzle: 8 x 8 core matrices of 128 bytes,
// the two along K 128 bytes apart, the eight along N 256 bytes apart.
__device__ __forceinline__ unsigned long long b_descriptor(const void* tile) {
    const unsigned addr = static_cast<unsigned>(__cvta_generic_to_shared(tile));
    return (unsigned long long)((addr & 0x3FFFFu) >> 4)
         | ((unsigned long long)(128u >> 4) << 16)
         | ((unsigned long long)(256u >> 4) << 32);
}

#define EX2_STEP(x) asm volatile("ex2.approx.ftz.f32 %0, %1;" : "=f"(x) : "f"(-(x)))

// PENDING: the GEMM groups left in flight while the exps run: 0, every GEMM waited for; 1,
// the P V GEMM runs under the exps (FlashAttention-3's two-stage pipeline). A compile-time
// constant, and the exps outside any branch: ptxas serializes wgmma around divergent code
// that touches its registers.
template <int PENDING>
__device__ __forceinline__ void wgmma_loop(float* out, int iters, int mma_groups,
                                           int exp_steps, int barrier, int stagger) {
    __shared__ __align__(128) unsigned short b_tile[64 * 16];
    for (int i = threadIdx.x; i < 64 * 16; i += blockDim.x) b_tile[i] = 0x2c00u + (i & 7);
    __syncthreads();
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");   // visible to wgmma
    __syncthreads();
    const unsigned long long desc = b_descriptor(b_tile);
    const unsigned lane = threadIdx.x & 31u;
    // staggered, the second warpgroup runs its exps before its GEMMs
    const bool exp_first = stagger && ((threadIdx.x >> 7) & 1u);
    const int exps_before = exp_first ? exp_steps : 0, exps_after = exp_steps - exps_before;
    const unsigned q0 = 0x2c002c00u + lane, q1 = 0x2c012c01u + lane;
    const unsigned q2 = 0x2c022c02u + lane, q3 = 0x2c032c03u + lane;
    unsigned p0 = 0x2c042c04u + lane;
    const unsigned p1 = 0x2c052c05u + lane, p2 = 0x2c062c06u, p3 = 0x2c072c07u;
    float s[32], o[32];
    for (int j = 0; j < 32; ++j) { s[j] = 0.0f; o[j] = 0.0f; }
    float x0 = 0.25f + 1e-6f * lane, x1 = x0 + 0.125f, x2 = x0 + 0.25f, x3 = x0 + 0.5f;
    for (int i = 0; i < iters; ++i) {
        for (int t = 0; t < exps_before; ++t) {
            EX2_STEP(x0); EX2_STEP(x1); EX2_STEP(x2); EX2_STEP(x3);
        }
        asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");  // P V done
        p0 ^= __float_as_uint(x0) & 1u;                   // P from the last exps
        asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
        for (int g = 0; g < mma_groups; ++g)              // S = Q K^T
            wgmma_m64n64k16(s, q0, q1, q2, q3, desc, g > 0);
        asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
        for (int g = 0; g < mma_groups; ++g)              // O += P V
            wgmma_m64n64k16(o, p0, p1, p2, p3, desc, 1);
        asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
        asm volatile("wgmma.wait_group.sync.aligned %0;\n" :: "n"(PENDING) : "memory");
        // the exps read S (as the softmax reads Q K^T)
        x0 += 1e-30f * s[0]; x1 += 1e-30f * s[9]; x2 += 1e-30f * s[18]; x3 += 1e-30f * s[27];
        for (int t = 0; t < exps_after; ++t) {
            EX2_STEP(x0); EX2_STEP(x1); EX2_STEP(x2); EX2_STEP(x3);
        }
        if (barrier) __syncthreads();
    }
    asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
    float sum = x0 + x1 + x2 + x3;
    for (int j = 0; j < 32; ++j) sum += s[j] + o[j];
    out[blockIdx.x * blockDim.x + threadIdx.x] = sum;
}

extern "C" __global__ void __launch_bounds__(256) overlap_wgmma(
        float* out, int iters, int mma_groups, int exp_steps, int barrier, int stagger) {
    wgmma_loop<0>(out, iters, mma_groups, exp_steps, barrier, stagger);
}

extern "C" __global__ void __launch_bounds__(256) overlap_wgmma_pipelined(
        float* out, int iters, int mma_groups, int exp_steps, int barrier, int stagger) {
    wgmma_loop<1>(out, iters, mma_groups, exp_steps, barrier, stagger);
}
"""

MMA_GROUPS = 8              # mma.sync: 32 MMAs a warp per iteration; wgmma: 8 + 8
FIRST_EXP_STEPS = 64        # 256 exps a thread per iteration, before balancing
ITERS = 8192
REPEATS = 3
MMA_SYNC, WGMMA = "mma.sync", "wgmma"


@dataclass(frozen=True)
class Arrangement:
    name: str
    path: str                 # the loop: MMA_SYNC (any sm_80+ GPU) or WGMMA (sm_90a)
    ctas_per_sm: int
    warps: int                # per CTA (a warpgroup is four)
    barrier: bool             # __syncthreads() every iteration
    stagger: bool             # warps 4-7 (the second warpgroup) take their exp phase first
    chains_lockstep: int      # chains the model counts (lockstep_ctas on) ...
    chains_free: int          # ... and off
    question: str
    pipelined: bool = False   # wgmma: the P V GEMM runs under the exps

    @property
    def kernel(self) -> str:
        if self.path == MMA_SYNC:
            return "overlap_loop"
        return "overlap_wgmma_pipelined" if self.pipelined else "overlap_wgmma"


ARRANGEMENTS = (
    Arrangement("one warp a sub-partition", MMA_SYNC, 1, 4, True, False, 1, 1,
                "the control: one chain, G + P"),
    Arrangement("two warps in step", MMA_SYNC, 1, 8, True, False, 1, 1,
                "warps that meet at a barrier every tile do not hide each other"),
    Arrangement("ping-pong", MMA_SYNC, 1, 8, True, True, 2, 2,
                "two staggered chains hide each other as mean-value analysis says"),
    Arrangement("two CTAs", MMA_SYNC, 2, 4, True, False, 1, 2,
                "two CTAs that start together stay in step (lockstep_ctas)"),
    Arrangement("free warps", MMA_SYNC, 1, 8, False, False, 1, 2,
                "warps with no barrier that start together stay in step"),
    Arrangement("one warpgroup", WGMMA, 1, 4, True, False, 1, 1,
                "the control: one chain, G + P"),
    Arrangement("one warpgroup, pipelined", WGMMA, 1, 4, True, False, 2, 2,
                "the two-stage pipeline is a second chain", pipelined=True),
    Arrangement("two warpgroups in step", WGMMA, 1, 8, True, False, 1, 1,
                "warpgroups that meet at a barrier every tile do not hide each other"),
    Arrangement("two warpgroups, ping-pong", WGMMA, 1, 8, True, True, 2, 2,
                "FlashAttention-3's ping-pong: two chains"),
    Arrangement("ping-pong, pipelined", WGMMA, 1, 8, True, True, 4, 4,
                "FlashAttention-3 at d = 128: 2W = 4 chains", pipelined=True),
    Arrangement("in step, pipelined", WGMMA, 1, 8, True, False, 2, 2,
                "FlashAttention-3 without its ping-pong barrier: the warpgroups' own "
                "pipelines, 2 chains", pipelined=True),
    Arrangement("two warpgroups, free", WGMMA, 1, 8, False, False, 1, 2,
                "warpgroups that wait on no barrier of each other's (FlashAttention-3's "
                "fp8 release at d = 64, fp16 at d = 256) stay in step, or drift apart and "
                "hide each other's exps ('the warp schedulers do some of this overlapping "
                "for us, for free', its authors' blog)"),
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
        rows.append([a.path, a.name, f"{a.ctas_per_sm} x {a.warps}",
                     f"{t.mma_only_s * 1e3:.3f}", f"{t.exp_only_s * 1e3:.3f}",
                     f"{t.loop_s * 1e3:.3f}",
                     f"{c['measured']:.3f}", f"{c['hidden']:.3f}",
                     f"{c['model_lockstep']:.3f}", f"{c['model_free']:.3f}",
                     c.get("closer_to", "—")])
    return rows


HEADERS = ["loop", "arrangement", "CTAs x warps per SM", "G only (ms)", "P only (ms)", "loop (ms)",
           "loop / (G + P)", "fully hidden", "model", "model, --no-lockstep-ctas",
           "nearer"]


# ---- the measurement (GPU) ------------------------------------------------------------------

def _require_cupy():
    """(cupy, the device's properties); Unavailable, with the reason ``attnsim.gpu`` gives,
    where CuPy or a CUDA device is missing."""
    from attnsim.gpu import gpu_available
    ok, why = gpu_available()
    if not ok:
        raise Unavailable(why)
    import cupy
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


def _wgmma_kernels(cupy, folder: str) -> dict:
    """The wgmma loops, built by NVRTC for sm_90a (``wgmma`` exists only for the
    arch-specific target, which CuPy's own compile does not ask for) and loaded as a module."""
    nvrtc = cupy.cuda.nvrtc
    program = nvrtc.createProgram(WGMMA_SOURCE, "overlap_wgmma.cu", (), ())
    try:
        try:
            nvrtc.compileProgram(program, ("-arch=sm_90a", "-std=c++17"))
        except nvrtc.NVRTCError as err:
            log = nvrtc.getProgramLog(program).strip().splitlines()
            raise RuntimeError(f"NVRTC could not build it for sm_90a: "
                               f"{log[-1] if log else err}") from err
        cubin = nvrtc.getCUBIN(program)
    finally:
        nvrtc.destroyProgram(program)
    path = os.path.join(folder, "overlap_wgmma.cubin")
    with open(path, "wb") as f:
        f.write(cubin)
    module = cupy.RawModule(path=path)
    return {name: module.get_function(name)
            for name in ("overlap_wgmma", "overlap_wgmma_pipelined")}


def _time_path(cupy, kernels: dict, path: str, sms: int, out) -> tuple[int, list[Timing]]:
    """(the balanced exp steps, a Timing per arrangement) of one loop."""
    def seconds_of(a: Arrangement, mma_groups: int, exp_steps: int) -> float:
        kernel = kernels[a.kernel]
        grid, block = (a.ctas_per_sm * sms,), (32 * a.warps,)
        args = (out, cupy.int32(ITERS), cupy.int32(mma_groups), cupy.int32(exp_steps),
                cupy.int32(a.barrier), cupy.int32(a.stagger))
        kernel(grid, block, args)                                   # load and warm
        return _seconds(cupy, lambda: kernel(grid, block, args))

    arrangements = [a for a in ARRANGEMENTS if a.path == path]
    pingpong = next(a for a in arrangements if a.stagger and not a.pipelined)
    steps = balanced_exp_steps(FIRST_EXP_STEPS, seconds_of(pingpong, MMA_GROUPS, 0),
                               seconds_of(pingpong, 0, FIRST_EXP_STEPS))
    return steps, [Timing(a.name, seconds_of(a, MMA_GROUPS, 0), seconds_of(a, 0, steps),
                          seconds_of(a, MMA_GROUPS, steps)) for a in arrangements]


def measure() -> tuple[str, dict, list[Timing], list[str]]:
    """(device, exp steps by loop, timings, notes): the mma.sync loop on any sm_80+ GPU, the
    wgmma loop on sm_90 too; a loop that cannot be built or run is a note, not an error."""
    cupy, props = _require_cupy()
    sms = props["multiProcessorCount"]
    device = f"{props['name'].decode()} (sm_{props['major']}{props['minor']}, {sms} SMs)"
    out = cupy.zeros(2 * sms * 8 * 32, dtype=cupy.float32)
    steps, timings, notes = {}, [], []
    with tempfile.TemporaryDirectory() as folder:
        builders = {MMA_SYNC: lambda: {"overlap_loop": cupy.RawKernel(OVERLAP_SOURCE,
                                                                      "overlap_loop")}}
        if props["major"] == 9:
            builders[WGMMA] = lambda: _wgmma_kernels(cupy, folder)
        else:
            notes.append(f"{WGMMA} loop not measured: wgmma needs a Hopper (sm_90) GPU")
        for path, build in builders.items():
            try:
                steps[path], measured = _time_path(cupy, build(), path, sms, out)
            except Exception as err:       # the other loop's figures must not be lost
                notes.append(f"{path} loop not measured: {type(err).__name__}: {err}"[:300])
                continue
            timings += measured
    return device, steps, timings, notes


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", metavar="FILE", help="write the timings and the comparison")
    a = ap.parse_args(argv)
    try:
        device, steps, timings, notes = measure()
    except Unavailable as err:
        print(f"gpu_overlap: {err}", file=sys.stderr)
        return 2
    from tabulate import tabulate
    per_iteration = {MMA_SYNC: f"{MMA_GROUPS * 4} mma.sync.m16n8k16 a warp",
                     WGMMA: f"{2 * MMA_GROUPS} wgmma.m64n64k16 a warpgroup"}
    for path, n in steps.items():
        print(f"{device}, {path} loop: {per_iteration[path]} and {n * 4} ex2 a thread per "
              f"iteration, {ITERS} iterations, best of {REPEATS}")
    print(tabulate(report_rows(timings), headers=HEADERS))
    for note in notes:
        print(f"note: {note}")
    if a.json:
        by_name = {x.name: x for x in ARRANGEMENTS}
        with open(a.json, "w") as f:
            json.dump({"device": device, "mma_groups": MMA_GROUPS, "exp_steps": steps,
                       "iters": ITERS, "timings": [asdict(t) for t in timings],
                       "comparison": [compare(t, by_name[t.arrangement]) for t in timings],
                       "notes": notes}, f, indent=2)
    return 0 if timings else 1


if __name__ == "__main__":
    sys.exit(main())
