"""The instructions PyTorch's row softmax spends per element, read off the SASS.

    python benchmarks/aten_softmax_sass.py [--nvcc nvcc] [--cuobjdump cuobjdump] [--json FILE]

``benchmarks/aten_softmax_math.cu`` writes out the per-element work of ATen's two softmax
kernels (a CTA a row: its max, sum and output passes; a warp a row) with ``std::exp`` and
``/`` as SoftMax.cu has them. This script builds it as PyTorch builds its kernels (-O3,
without ``--use_fast_math``) for sm_80 and sm_90, disassembles it, and counts each pass's
instructions per element: in a block pass, its loop's over the 8 elements a vector load
brings; in the warp kernel, the whole function's over a lane's 32. The slow-path call
of the IEEE division (``CALL.REL.NOINC``) is listed but not executed for normal operands.
``algorithms/standard/aten_softmax.py`` prices the accurate expf and the division from these
counts. No GPU needed.
"""
from __future__ import annotations

import pathlib
import subprocess
import sys
import tempfile
from collections import Counter

from tabulate import tabulate

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from sass_schedule import loops, sass_functions, toolkit_main  # noqa: E402

SOURCE = pathlib.Path(__file__).with_name("aten_softmax_math.cu")
ARCHS = ("sm_80", "sm_90")
BLOCK_PASSES = ("block_max_pass", "block_sum_pass", "block_output_pass")
ELEMENTS_PER_VECTOR = 8        # ILP: a 16-byte load of halves
ELEMENTS_PER_LANE = 32         # warp_row: 1024 elements over 32 lanes


def opcodes(instructions: list[str]) -> Counter:
    """Opcode (with its modifiers) of each instruction."""
    return Counter(ins.split()[0] for ins in instructions if ins)


def per_element(sass_text: str) -> dict[str, dict[str, float]]:
    """kernel -> opcode -> instructions per element."""
    functions = sass_functions(sass_text)
    out = {}
    for name in BLOCK_PASSES:
        loop = loops(functions[name])[0]
        out[name] = {op: n / ELEMENTS_PER_VECTOR for op, n in opcodes(loop).items()}
    body = [ins for _, ins in functions["warp_row"]]
    out["warp_row"] = {op: n / ELEMENTS_PER_LANE for op, n in opcodes(body).items()}
    return out


def build(arch: str, nvcc: str, cuobjdump: str) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        cubin = pathlib.Path(tmp) / f"aten_softmax_{arch}.cubin"
        subprocess.run([nvcc, "-O3", f"-arch={arch}", "-cubin", "-o", str(cubin), str(SOURCE)],
                       check=True, capture_output=True, text=True)
        return subprocess.run([cuobjdump, "-sass", str(cubin)], check=True,
                              capture_output=True, text=True).stdout


def table(counts: dict[str, dict[str, float]]) -> str:
    ops = sorted({op for kernel in counts.values() for op in kernel})
    rows = [[op] + [counts[k].get(op, 0) for k in counts] for op in ops]
    return tabulate(rows, headers=["opcode"] + list(counts), floatfmt=".3g")


def read_arch(arch: str, nvcc: str, cuobjdump: str) -> tuple[dict, str]:
    """The passes built for ``arch``: each one's instructions per element."""
    counts = per_element(build(arch, nvcc, cuobjdump))
    return counts, f"== {arch}: instructions per element\n{table(counts)}\n"


def main(argv=None) -> int:
    return toolkit_main(argv, __doc__, "write the per-element counts here", ARCHS, read_arch)


if __name__ == "__main__":
    sys.exit(main())
