"""In which order a thread of ATen's non-contiguous elementwise loop loads and stores, read
off the SASS.

    python benchmarks/aten_elementwise_sass.py [--nvcc nvcc] [--cuobjdump cuobjdump] [--json FILE]

``benchmarks/aten_elementwise_loop.cu`` writes out the loop PyTorch runs for a binary op over
a broadcast or permuted operand (``CUDALoops.cuh``, ``launch_legacy_kernel``: 128 threads, 4
elements a thread, an offset calculator over the strides). This script builds it as PyTorch
builds its kernels (-O3) for sm_80 and sm_90, disassembles it, and lists the kernel's global
loads and stores in program order, with its registers a thread. Loads of the next element
after the store of this one mean a thread has one element of each operand in flight: what
``algorithms.standard.pytorch_eager.legacy_loop_round`` declares and the timing model's
``loaded_latency`` prices. No GPU needed.
"""
from __future__ import annotations

import pathlib
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from sass_schedule import sass_functions, toolkit_main  # noqa: E402

SOURCE = pathlib.Path(__file__).with_name("aten_elementwise_loop.cu")
ARCHS = ("sm_80", "sm_90")


def memory_order(sass_text: str) -> list[str]:
    """The kernel's global loads (LDG) and stores (STG), in program order."""
    (body,) = sass_functions(sass_text).values()
    return [ins.split(".")[0].split()[0] for _, ins in body if re.match(r"(LDG|STG)\b", ins)]


def elements_in_flight(order: list[str]) -> int:
    """The most loads a thread issues before a store, over the loads one element needs (the
    loads before the first store): 1 when every element waits for the one before."""
    per_element = order.index("STG")
    runs = "".join("L" if op == "LDG" else "S" for op in order).split("S")
    return max(len(run) for run in runs) // per_element


def build(arch: str, nvcc: str, cuobjdump: str) -> tuple[str, int]:
    """(SASS text, registers a thread) of the loop built for ``arch``."""
    with tempfile.TemporaryDirectory() as tmp:
        cubin = pathlib.Path(tmp) / f"loop_{arch}.cubin"
        subprocess.run([nvcc, "-O3", f"-arch={arch}", "-cubin", "-o", str(cubin), str(SOURCE)],
                       check=True, capture_output=True, text=True)
        sass = subprocess.run([cuobjdump, "-sass", str(cubin)], check=True,
                              capture_output=True, text=True).stdout
        usage = subprocess.run([cuobjdump, "-res-usage", str(cubin)], check=True,
                               capture_output=True, text=True).stdout
    return sass, int(re.search(r"REG:(\d+)", usage).group(1))


def read_arch(arch: str, nvcc: str, cuobjdump: str) -> tuple[dict, str]:
    """The loop built for ``arch``: its memory order, registers and elements in flight."""
    sass, registers = build(arch, nvcc, cuobjdump)
    order = memory_order(sass)
    record = {"global_memory_order": order, "registers": registers,
              "elements_in_flight": elements_in_flight(order)}
    return record, (f"{arch}: {' '.join(order)}; {registers} registers a thread; "
                    f"{record['elements_in_flight']} element(s) in flight a thread")


def main(argv=None) -> int:
    return toolkit_main(argv, __doc__, "write the order and the registers here", ARCHS,
                        read_arch)


if __name__ == "__main__":
    sys.exit(main())
