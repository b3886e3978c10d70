"""Is a CUDA refactor free? Compare the machine code of every kernel between a git revision
and the working tree, without a GPU.

    python benchmarks/kernel_code_diff.py                     # HEAD vs the working tree, all
    python benchmarks/kernel_code_diff.py nsa_fwd.cu gqa_decode.cu --base main~1
    python benchmarks/kernel_code_diff.py --arch sm_90 --format markdown

For each source and each configuration that CI compiles (``bash .ci/compile_cuda.sh --list``:
the default defines, bf16, the hand-picked and the planned tile sets), it compiles the
revision's ``algorithms/cuda`` and the working tree's with ``nvcc -cubin`` for each
architecture and compares, kernel by kernel, the cubin's ``.text.<kernel>`` section (the
SASS itself) and its relocations. A kernel whose code is byte-identical runs identically: a
refactor that leaves every launched configuration identical needs no GPU to show that it
costs nothing. A kernel that differs is listed with both code sizes and register counts, so
that the change can be judged (or timed on a device).

Exit status: 0 when every kernel present in both is identical, 1 when one differs, 2 on a
compile error. Kernels added or removed are listed but do not fail the comparison.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tabulate import tabulate

ROOT = Path(__file__).resolve().parent.parent
CUDA = "algorithms/cuda"
ARCHES = ("sm_80", "sm_90")


def elf_sections(blob: bytes) -> dict[str, bytes]:
    """name -> contents of every section of a 64-bit little-endian ELF (a cubin)."""
    if blob[:4] != b"\x7fELF" or blob[4] != 2:
        raise ValueError("not a 64-bit ELF file")
    shoff, = struct.unpack_from("<Q", blob, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", blob, 0x3A)
    headers = [struct.unpack_from("<IIQQQQIIQQ", blob, shoff + i * shentsize)
               for i in range(shnum)]
    names_at = headers[shstrndx][4]
    out = {}
    for name_off, kind, _flags, _addr, offset, size, *_ in headers:
        end = blob.index(b"\0", names_at + name_off)
        name = blob[names_at + name_off:end].decode()
        out[name] = b"" if kind == 8 else blob[offset:offset + size]   # 8: SHT_NOBITS
    return out


def kernel_code(cubin: bytes) -> dict[str, str]:
    """kernel -> digest of its SASS (``.text.<kernel>``) and relocations."""
    sections = elf_sections(cubin)
    out = {}
    for name, text in sections.items():
        if name.startswith(".text."):
            kernel = name[len(".text."):]
            relocs = sections.get(".rela" + name, b"") + sections.get(".rel" + name, b"")
            out[kernel] = (hashlib.sha256(text + b"|" + relocs).hexdigest(), len(text))
    return out


def configurations(sources: list[str]) -> list[tuple[str, str]]:
    """(source, defines) for every configuration CI compiles, limited to ``sources``."""
    listed = subprocess.run(["bash", str(ROOT / ".ci/compile_cuda.sh"), "--list"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout
    rows = [tuple((line.split("\t") + [""])[:2]) for line in listed.splitlines() if line]
    return [(src, defs) for src, defs in rows if not sources or src in sources]


def compile_cubin(nvcc: str, tree: Path, src: str, arch: str, defs: str) -> tuple[bytes, str]:
    """(cubin bytes, ptxas -v output) of one source in one tree."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "k.cubin"
        cmd = [nvcc, "-cubin", f"-arch={arch}", "-std=c++17", "-Xptxas", "-v", "-o", str(out),
               *defs.split(), str(tree / CUDA / src)]
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode:
            raise RuntimeError(f"{src} {arch} {defs or '(defaults)'} in {tree}:\n{run.stderr}")
        return out.read_bytes(), run.stderr


def registers(ptxas: str) -> dict[str, str]:
    """kernel -> "R regs" (", S B spill" when ptxas spills) from ptxas -v."""
    regs, spills, kernel = {}, {}, None
    for line in ptxas.splitlines():
        if "Compiling entry function" in line:
            kernel = line.split("'")[1]
        elif kernel and "Used" in line and "registers" in line:
            regs[kernel] = line.split("Used")[1].split("registers")[0].strip() + " regs"
        elif kernel and "spill stores" in line:
            spills[kernel] = int(line.split("bytes stack frame,")[1].split("bytes spill")[0])
    return {k: r + (f", {spills[k]} B spill" if spills.get(k) else "") for k, r in regs.items()}


def checkout(base: str, into: Path) -> Path:
    """The revision's algorithms/cuda, written under ``into``."""
    files = subprocess.run(["git", "ls-tree", "--name-only", f"{base}:{CUDA}"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    (into / CUDA).mkdir(parents=True)
    for f in files:
        blob = subprocess.run(["git", "show", f"{base}:{CUDA}/{f}"], cwd=ROOT,
                              capture_output=True, check=True).stdout
        (into / CUDA / f).write_bytes(blob)
    return into


def compare_one(nvcc, base_tree, src, arch, defs) -> list[list]:
    rows = []
    if not (base_tree / CUDA / src).exists():
        return [[src, arch, defs or "(defaults)", "*", "new source", "", ""]]
    old, old_log = compile_cubin(nvcc, base_tree, src, arch, defs)
    new, new_log = compile_cubin(nvcc, ROOT, src, arch, defs)
    a, b = kernel_code(old), kernel_code(new)
    ra, rb = registers(old_log), registers(new_log)
    for kernel in sorted(set(a) | set(b)):
        if kernel not in a or kernel not in b:
            verdict = "added" if kernel in b else "removed"
        else:
            verdict = "identical" if a[kernel][0] == b[kernel][0] else "DIFFERS"
        size = lambda c: str(c[kernel][1]) if kernel in c else "-"
        rows.append([src, arch, defs or "(defaults)", kernel, verdict,
                     f"{size(a)} -> {size(b)}", f"{ra.get(kernel, '-')} -> {rb.get(kernel, '-')}"])
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sources", nargs="*", help="file names under algorithms/cuda (default: all)")
    ap.add_argument("--base", default="HEAD", help="git revision to compare with (default HEAD)")
    ap.add_argument("--arch", action="append", choices=ARCHES,
                    help="architecture (repeatable; default sm_80 and sm_90)")
    ap.add_argument("--format", choices=("plain", "markdown"), default="plain")
    ap.add_argument("--all-rows", action="store_true", help="list identical kernels too")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args(argv)
    nvcc = os.environ.get("NVCC") or shutil.which("nvcc")
    if not nvcc:
        print("kernel_code_diff: nvcc not found on PATH (set NVCC=/path/to/nvcc)", file=sys.stderr)
        return 2
    unknown = [s for s in args.sources if not (ROOT / CUDA / s).exists()]
    if unknown:
        valid = ", ".join(sorted(p.name for p in (ROOT / CUDA).glob("*.cu")))
        print(f"kernel_code_diff: no such source {', '.join(unknown)}; valid: {valid}",
              file=sys.stderr)
        return 2
    jobs = [(src, arch, defs) for src, defs in configurations(args.sources)
            for arch in (args.arch or ARCHES)]
    with tempfile.TemporaryDirectory() as tmp:
        base_tree = checkout(args.base, Path(tmp))
        try:
            with ThreadPoolExecutor(args.jobs) as pool:
                results = list(pool.map(lambda j: compare_one(nvcc, base_tree, *j), jobs))
        except RuntimeError as err:
            print(f"kernel_code_diff: compile failed: {err}", file=sys.stderr)
            return 2
    rows = [r for rs in results for r in rs]
    shown = rows if args.all_rows else [r for r in rows if r[4] != "identical"]
    headers = ["source", "arch", "defines", "kernel", "code", "bytes", "registers"]
    if shown:
        print(tabulate(shown, headers, tablefmt="github" if args.format == "markdown" else "simple"))
    counts = {v: sum(r[4] == v for r in rows) for v in ("identical", "DIFFERS", "added", "removed")}
    print(f"kernel_code_diff: {len(jobs)} compilations per tree vs {args.base}: " +
          ", ".join(f"{n} {v}" for v, n in counts.items() if n))
    return 1 if counts["DIFFERS"] else 0


if __name__ == "__main__":
    sys.exit(main())
