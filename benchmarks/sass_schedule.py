"""What FlashAttention-3's compiled kernels overlap: their steady-state loops, read off the SASS.

    python benchmarks/sass_schedule.py --flash-attention REPO --cutlass REPO \\
        --ptxas PATH --cuobjdump PATH [--commit 7f67966c] [--json FILE]

The FA-3 paper pipelines each consumer warpgroup's softmax with its own GEMMs (Section 3.2):
the next S = Q K^T and this step's P V are issued together and the next softmax starts once
S is in. Whether the exponentials really run while P V is in flight is the compiler's to
decide: ptxas may place the wait for every wgmma (``WARPGROUP.DEPBAR.LE gsb0, 0x0``) earlier
than the source's ``warpgroup_wait<0>()``. This script builds the release's forward kernels
(hopper/flash_fwd_hdim{64,128,256}_fp16_sm90.cu at ``--commit``, with the CUTLASS its
submodule pins) to PTX with nvcc, assembles the PTX with ``--ptxas`` (12.3.107: the release
asks for CUDA >= 12.3, its maintainers recommended 12.3 "for best performance" and later
pinned it, "nvcc 12.3 gives the best perf currently"; pip install
nvidia-cuda-nvcc-cu12==12.3.107 has it), disassembles it (``--cuobjdump``: pip install
nvidia-cuda-cuobjdump), and in each kernel's steady-state loop (the innermost loop that
issues both GEMMs of a tile) counts a consumer thread's softmax instructions by pipe before that wait and
from it on. ``algorithms/flash3/__init__.py`` (``RELEASE_SOFTMAX_SPLIT``) prices the release
with the counts; ``reports/fa3_sass_schedule.json`` holds the run they come from.

The backward (hopper/flash_bwd_hdim{64,128}_fp16_sm90.cu, ``compute_dqkv_ws``) issues
S = Q K^T and dP = dO V^T together, waits for S alone (``warpgroup_wait<1>()``,
``WARPGROUP.DEPBAR.LE gsb0, 0x1``) before the exponentials of P and for dP
(``warpgroup_wait<0>()``) before dS; the script counts, in the loop that issues all five
GEMMs, a consumer thread's softmax instructions between those two waits (beside the dP GEMM)
and elsewhere in the loop, for ``algorithms/flash3/backward.py`` (``RELEASE_SOFTMAX_SPLIT``).

No GPU needed. The PyTorch headers the sources include are replaced by stubs (the device
code uses none of them). ``--commit`` takes any commit with those per-head-dim sources (the
release and the months after it); later releases generate their kernels into
hopper/instantiations/ with other template parameters, a different program to read. The PTX comes from this machine's nvcc (its ISA version lowered to
what the given ptxas reads): the front end keeps the source's order of the waits, so where
they land in the SASS is the given ptxas's doing.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import re
import subprocess
import sys
import tempfile
from collections import Counter

from tabulate import tabulate

HEAD_DIMS = (64, 128, 256)
BACKWARD_HEAD_DIMS = (64, 128)       # the release compiles no backward beyond d = 128
NVCC_FLAGS = ("-O3", "-std=c++17", "--use_fast_math", "--expt-relaxed-constexpr",
              "--expt-extended-lambda", "-U__CUDA_NO_HALF_OPERATORS__",
              "-U__CUDA_NO_HALF_CONVERSIONS__", "-U__CUDA_NO_BFLOAT16_OPERATORS__",
              "-U__CUDA_NO_BFLOAT16_CONVERSIONS__", "-U__CUDA_NO_BFLOAT162_OPERATORS__",
              "-U__CUDA_NO_BFLOAT162_CONVERSIONS__", "-DCUTLASS_DEBUG_TRACE_LEVEL=0",
              "-DNDEBUG", "-arch=sm_90a")     # hopper/setup.py's flags, to PTX
# The softmax's instructions by the pipe the timing model prices them on (hwmodels.timing:
# exps on the special-function units, adds and multiplies on the FMA pipe, max, select and
# the fp32 -> fp16 packing on the ALU pipe).
PIPE_OF_OPCODE = {"MUFU": "xu", "FFMA": "fma", "FADD": "fma", "FMUL": "fma",
                  "FMNMX": "alu", "FSEL": "alu", "FSETP": "alu", "F2FP": "alu"}
WGMMA_OPCODES = ("HGMMA", "QGMMA")
FULL_WAIT = re.compile(r"WARPGROUP\.DEPBAR\.LE\s+gsb0,\s*0x0\b")
ALL_BUT_ONE_WAIT = re.compile(r"WARPGROUP\.DEPBAR\.LE\s+gsb0,\s*0x1\b")
# PTX ISA version each CUDA release's ptxas reads up to (PTX ISA reference, "Release Notes")
PTX_ISA_OF_CUDA = {(12, 3): "8.3", (12, 4): "8.4", (12, 5): "8.5", (12, 6): "8.5",
                   (12, 8): "8.7", (12, 9): "8.8", (13, 0): "9.0"}
# The stand-ins for the PyTorch headers the sources include (host code only uses them).
ATEN_STUBS = {
    "ATen/cuda/CUDAContext.h": "#pragma once\n#include <cuda_runtime.h>\n"
                               "#define C10_CUDA_CHECK(x) (void)(x)\n"
                               "#define C10_CUDA_KERNEL_LAUNCH_CHECK() (void)0\n",
    "ATen/cuda/CUDAGeneratorImpl.h": "#pragma once\n",
    "ATen/CUDAGeneratorImpl.h": "#pragma once\n",
    "ATen/cuda/CUDAGraphsUtils.cuh": "#pragma once\n#include <cstdint>\n"
                                     "namespace at { struct PhiloxCudaState "
                                     "{ uint64_t seed_, offset_; }; }\n",
}


# ---- reading SASS ---------------------------------------------------------------------------

def sass_functions(text: str) -> dict[str, list[tuple[int, str]]]:
    """cuobjdump -sass output -> {mangled kernel name: [(address, instruction), ...]}, each
    instruction without its predicate."""
    functions, current = {}, None
    for line in text.splitlines():
        m = re.search(r"Function : (\S+)", line)
        if m:
            current = functions.setdefault(m.group(1), [])
            continue
        m = re.match(r"\s+/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;", line)
        if m and current is not None:
            current.append((int(m.group(1), 16), re.sub(r"^@!?U?P\w+\s+", "", m.group(2))))
    return functions


def loops(body: list[tuple[int, str]]) -> list[list[str]]:
    """Every range from a backward branch's target to the branch, shortest first."""
    at = {address: i for i, (address, _) in enumerate(body)}
    found = []
    for i, (address, instruction) in enumerate(body):
        m = re.match(r"BRA\s+(?:`\()?0x([0-9a-f]+)", instruction)
        if m and int(m.group(1), 16) < address and int(m.group(1), 16) in at:
            found.append([ins for _, ins in body[at[int(m.group(1), 16)]:i + 1]])
    return sorted(found, key=len)


def wgmma_groups(loop: list[str]) -> int:
    """The wgmma groups a loop commits: each GEMM's last wgmma carries ``gsb0``."""
    return sum(ins.startswith(WGMMA_OPCODES) and "gsb0" in ins for ins in loop)


def steady_state_loop(body: list[tuple[int, str]]) -> list[str]:
    """The instructions of the innermost loop that issues both GEMMs of a tile (two wgmma
    groups: Q K^T and P V; a loop around P V alone, as later releases have for their last
    tiles, is not it), or failing one, the innermost that issues any wgmma."""
    candidates = loops(body)
    both = [loop for loop in candidates if wgmma_groups(loop) >= 2]
    any_ = [loop for loop in candidates if wgmma_groups(loop) >= 1]
    return (both or any_ or [[]])[0]


def pipe_counts(instructions: list[str]) -> dict[str, int]:
    """Softmax instructions by pipe, and the wgmma instructions."""
    counts = Counter()
    for ins in instructions:
        opcode = ins.split()[0].split(".")[0] if ins else ""
        if opcode in PIPE_OF_OPCODE:
            counts[PIPE_OF_OPCODE[opcode]] += 1
        elif opcode in WGMMA_OPCODES:
            counts["wgmma"] += 1
    return {pipe: counts[pipe] for pipe in ("xu", "fma", "alu", "wgmma")}


def split_at_full_wait(loop: list[str]) -> tuple[list[str], list[str]]:
    """The loop's instructions before its first wait for every wgmma in flight, and from it
    on (all of it after, if it never waits so)."""
    for i, ins in enumerate(loop):
        if FULL_WAIT.match(ins):
            return loop[:i], loop[i:]
    return [], loop


def split_beside_last_gemm(loop: list[str]) -> tuple[list[str], list[str]]:
    """The loop's instructions between its first wait that leaves one wgmma group in flight
    and the next wait for every group (what runs beside that last group: the backward's dP
    GEMM), and the rest of the loop (all of it, if it never waits so)."""
    for i, ins in enumerate(loop):
        if ALL_BUT_ONE_WAIT.match(ins):
            for j in range(i + 1, len(loop)):
                if FULL_WAIT.match(loop[j]):
                    return loop[i:j], loop[:i] + loop[j:]
            return loop[i:], loop[:i]
    return [], loop


def kernel_shape(name: str) -> dict | None:
    """Head dim, tile and causal flag from a mangled ``compute_attn_ws`` name
    (``Flash_fwd_kernel_traits<d, B_r, B_c, warps, stages, ...>``, then ``Is_causal``)."""
    m = re.search(r"Flash_fwd_kernel_traits(?:_fp8)?ILi(\d+)ELi(\d+)ELi(\d+)E.*?EELb([01])E", name)
    if not m:
        return None
    return {"head_dim": int(m.group(1)), "block_q": int(m.group(2)),
            "block_k": int(m.group(3)), "causal": m.group(4) == "1"}


def backward_kernel_shape(name: str) -> dict | None:
    """Head dim, tile and causal flag from a mangled ``compute_dqkv_ws`` name
    (``Flash_bwd_kernel_traits<d, B_r, B_c, warps, ...>``, then ``Is_causal``)."""
    m = re.search(r"compute_dqkv_wsI23Flash_bwd_kernel_traitsILi(\d+)ELi(\d+)ELi(\d+)E"
                  r".*?EELb([01])E", name)
    if not m:
        return None
    return {"head_dim": int(m.group(1)), "block_q": int(m.group(2)),
            "block_k": int(m.group(3)), "causal": m.group(4) == "1"}


def backward_schedule_of(sass_text: str) -> list[dict]:
    """Each warp-specialized backward kernel of a SASS listing: its shape, its steady-state
    loop's length, and a consumer thread's softmax instructions beside its dP GEMM and
    elsewhere in the loop."""
    return loop_schedules(sass_text, backward_kernel_shape, split_beside_last_gemm,
                          ("beside_dp_gemm", "elsewhere"))


def schedule_of(sass_text: str) -> list[dict]:
    """Each forward kernel of a SASS listing: its shape, its steady-state loop's length, and
    a consumer thread's softmax instructions before and after its wait for every wgmma."""
    return loop_schedules(sass_text, kernel_shape, split_at_full_wait,
                          ("before_full_wait", "after_full_wait"))


def loop_schedules(sass_text: str, shape_of, split, keys: tuple[str, str]) -> list[dict]:
    """Every kernel ``shape_of`` recognizes (by its mangled name) in a SASS listing: its
    shape, its steady-state loop's length, and the pipe counts of the two parts ``split``
    cuts the loop into, under ``keys``; ordered by head dim, then causal."""
    out = []
    for name, body in sass_functions(sass_text).items():
        shape = shape_of(name)
        loop = steady_state_loop(body)
        if shape is None or not loop:
            continue
        first, second = split(loop)
        out.append({**shape, "loop_instructions": len(loop),
                    keys[0]: pipe_counts(first), keys[1]: pipe_counts(second)})
    return sorted(out, key=lambda k: (k["head_dim"], k["causal"]))


# ---- building ---------------------------------------------------------------------------------

def toolkit_main(argv, doc: str, json_help: str, archs, read_arch) -> int:
    """The command line of a script that builds a source for each of ``archs`` and reads its
    SASS: ``read_arch(arch, nvcc, cuobjdump)`` returns (what to record, what to print); the
    records go to --json. A toolkit that cannot build gets one line and exit status 2."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--nvcc", default="nvcc")
    ap.add_argument("--cuobjdump", default="cuobjdump")
    ap.add_argument("--json", help=json_help)
    a = ap.parse_args(argv)
    result = {}
    for arch in archs:
        try:
            result[arch], shown = read_arch(arch, a.nvcc, a.cuobjdump)
        except (OSError, subprocess.CalledProcessError) as exc:
            print(f"{pathlib.Path(sys.argv[0]).name}: cannot build for {arch} ({exc}); give "
                  f"--nvcc and --cuobjdump (the CUDA toolkit's)", file=sys.stderr)
            return 2
        print(shown)
    if a.json:
        write_run(a.json, a.nvcc, result)
    return 0


def write_run(path: str, nvcc: str, result: dict) -> None:
    """Write a SASS reading to ``path`` as JSON, with the nvcc release that built it."""
    version = subprocess.run([nvcc, "--version"], capture_output=True,
                             text=True).stdout.strip().splitlines()[-1]
    pathlib.Path(path).write_text(json.dumps({"nvcc": version, **result}, indent=1,
                                             sort_keys=True) + "\n")


def run(cmd: list, **kw) -> str:
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    if done.returncode:
        raise RuntimeError(f"{' '.join(map(str, cmd[:3]))} ... failed:\n{done.stderr[-3000:]}")
    return done.stdout


def unpack(repo: str, commit: str, paths: list[str], into: pathlib.Path) -> None:
    archive = subprocess.run(["git", "-C", repo, "archive", commit, *paths],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "x", "-C", str(into)], input=archive, check=True)


def prepare_sources(fa_repo: str, commit: str, cutlass_repo: str, into: pathlib.Path) -> None:
    """hopper/ at the commit, CUTLASS's headers at the commit its submodule pins, stubs."""
    unpack(fa_repo, commit, ["hopper"], into)
    pinned = run(["git", "-C", fa_repo, "ls-tree", commit, "csrc/cutlass"]).split()[2]
    unpack(cutlass_repo, pinned, ["include", "tools/util/include"], into)
    for path, text in ATEN_STUBS.items():
        stub = into / "stub" / path
        stub.parent.mkdir(parents=True, exist_ok=True)
        stub.write_text(text)


def ptxas_release(ptxas: str) -> tuple[int, int]:
    m = re.search(r"release (\d+)\.(\d+)", run([ptxas, "--version"]))
    return int(m.group(1)), int(m.group(2))


def build_sass(src: pathlib.Path, nvcc: str, ptxas: str, cuobjdump: str) -> str:
    ptx = src.with_suffix(".ptx")
    run([nvcc, "-ptx", *NVCC_FLAGS, "-I.", "-I../include", "-I../tools/util/include",
         "-I../stub", src.name, "-o", ptx.name], cwd=src.parent)
    isa = PTX_ISA_OF_CUDA.get(ptxas_release(ptxas))
    if isa:
        text = ptx.read_text()
        ptx.write_text(re.sub(r"^\.version \d+\.\d+", f".version {isa}", text, count=1,
                              flags=re.M))
    cubin = src.with_suffix(".cubin")
    run([ptxas, "-arch=sm_90a", "-O3", str(ptx), "-o", str(cubin)])
    return run([cuobjdump, "-sass", str(cubin)])


def table(kernels: list[dict], fmt: str = "simple") -> str:
    """The kernels' schedules as a table (this script prints it, docs/validation.md shows it)."""
    rows = []
    for k in kernels:
        before, after = k["before_full_wait"], k["after_full_wait"]
        rows.append([k["head_dim"], "causal" if k["causal"] else "non-causal",
                     f"{k['block_q']} x {k['block_k']}", k["loop_instructions"],
                     before["wgmma"] + after["wgmma"]]
                    + [f"{before[p]} / {after[p]}" for p in ("xu", "fma", "alu")])
    return tabulate(rows, headers=["d", "mask", "tile", "instructions a step",
                                   "wgmma a step", "exp: before / after the wait",
                                   "FMA pipe: before / after", "ALU pipe: before / after"],
                    tablefmt=fmt)


def backward_table(kernels: list[dict], fmt: str = "simple") -> str:
    """The backward kernels' schedules as a table."""
    rows = [[k["head_dim"], f"{k['block_q']} x {k['block_k']}", k["loop_instructions"],
             k["beside_dp_gemm"]["wgmma"] + k["elsewhere"]["wgmma"]]
            + [f"{k['beside_dp_gemm'][p]} / {k['elsewhere'][p]}" for p in ("xu", "fma", "alu")]
            for k in kernels]
    return tabulate(rows, headers=["d", "tile", "instructions a step", "wgmma a step",
                                   "exp: beside dP / elsewhere", "FMA pipe: beside / elsewhere",
                                   "ALU pipe: beside / elsewhere"], tablefmt=fmt)


SOURCES = {"fwd": ("flash_fwd_hdim{}_fp16_sm90.cu", HEAD_DIMS, schedule_of),
           "bwd": ("flash_bwd_hdim{}_fp16_sm90.cu", BACKWARD_HEAD_DIMS, backward_schedule_of)}


def read_release(a) -> dict[str, list[dict]]:
    """Build every head dim's forward and backward of the release at ``a.commit`` and read
    their schedules: {"fwd": [...], "bwd": [...]}."""
    kernels = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        prepare_sources(a.flash_attention, a.commit, a.cutlass, root)
        for pass_, (pattern, head_dims, reader) in SOURCES.items():
            kernels[pass_] = []
            for d in head_dims:
                src = root / "hopper" / pattern.format(d)
                if not src.exists():
                    raise RuntimeError(f"{a.commit} has no hopper/{src.name}")
                kernels[pass_] += reader(build_sass(src, a.nvcc, a.ptxas, a.cuobjdump))
    return kernels


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flash-attention", required=True, help="a clone of flash-attention")
    ap.add_argument("--cutlass", required=True, help="a clone of NVIDIA/cutlass")
    ap.add_argument("--commit", default="7f67966c", help="flash-attention commit "
                    "(default: 7f67966c, FA-3's release with the paper)")
    ap.add_argument("--nvcc", default="nvcc", help="nvcc for the PTX (>= 12.3)")
    ap.add_argument("--ptxas", required=True, help="the ptxas to assemble with")
    ap.add_argument("--cuobjdump", required=True, help="cuobjdump (sm_90a)")
    ap.add_argument("--json", help="write the counts here (reports/fa3_sass_schedule.json)")
    a = ap.parse_args(argv)
    try:
        kernels = read_release(a)
    except (OSError, RuntimeError, subprocess.CalledProcessError) as exc:
        print(f"sass_schedule.py: error: {str(exc).strip().splitlines()[0]} (check "
              "--flash-attention, --cutlass, --commit, --nvcc, --ptxas and --cuobjdump)",
              file=sys.stderr)
        return 2
    print(table(kernels["fwd"]), backward_table(kernels["bwd"]), sep="\n\n")
    if a.json:
        pinned = run(["git", "-C", a.flash_attention, "ls-tree", a.commit,
                      "csrc/cutlass"]).split()[2]
        source = {"flash_attention_commit": run(["git", "-C", a.flash_attention, "rev-parse",
                                                 a.commit]).strip(),
                  "cutlass_commit": pinned,
                  "front_end": run([a.nvcc, "--version"]).strip().splitlines()[-1],
                  "ptxas": run([a.ptxas, "--version"]).strip().splitlines()[-1],
                  "ptxas_release": ".".join(map(str, ptxas_release(a.ptxas))),
                  "nvcc_flags": list(NVCC_FLAGS),
                  "sources": [f"hopper/{pattern.format(d)}"
                              for pattern, head_dims, _ in SOURCES.values() for d in head_dims]}
        pathlib.Path(a.json).write_text(json.dumps(
            {"source": source, "kernels": kernels["fwd"], "backward_kernels": kernels["bwd"]},
            indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
