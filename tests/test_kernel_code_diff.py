"""benchmarks/kernel_code_diff.py: the cubin reader and the identical/differs verdict on tiny
kernels compiled with the machine's nvcc (skipped without one; CI has it)."""
import shutil

import pytest

from _benchmarks import load_benchmark

kcd = load_benchmark("kernel_code_diff")

NVCC = shutil.which("nvcc")
KERNEL = '''// {comment}
extern "C" __global__ void scale_by(float* x, int n) {{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] *= {factor};
}}
extern "C" __global__ void untouched(float* x) {{ x[threadIdx.x] = 1.f; }}
'''


def cubin(tmp_path, name, **fmt):
    tree = tmp_path / name
    (tree / kcd.CUDA).mkdir(parents=True)
    (tree / kcd.CUDA / "k.cu").write_text(KERNEL.format(**fmt))
    return kcd.compile_cubin(NVCC, tree, "k.cu", "sm_80", "")


def test_elf_reader_rejects_what_is_not_a_cubin():
    with pytest.raises(ValueError, match="not a 64-bit ELF"):
        kcd.elf_sections(b"#!/bin/sh\n")


@pytest.mark.skipif(NVCC is None, reason="needs nvcc")
def test_comments_leave_the_code_identical_and_a_constant_does_not(tmp_path):
    base, log = cubin(tmp_path, "a", comment="one", factor="2.f")
    moved, _ = cubin(tmp_path, "b", comment="another\n// and a line more", factor="2.f")
    changed, _ = cubin(tmp_path, "c", comment="one", factor="3.f")
    a, b, c = kcd.kernel_code(base), kcd.kernel_code(moved), kcd.kernel_code(changed)
    assert set(a) == {"scale_by", "untouched"}
    assert a == b
    assert a["scale_by"][0] != c["scale_by"][0] and a["untouched"] == c["untouched"]
    assert kcd.registers(log)["scale_by"].endswith("regs")
