"""Run a port's CUDA source on the CPU through cuda_emu.h (tests without a GPU).

``emulate(spec, inputs)`` takes the same ``PortLaunches`` declaration the CuPy backend
launches, compiles the source (header inlined, exactly the text NVRTC would get) with g++
against the emulator, and runs every launch: grid, block, dynamic shared memory and
arguments as declared. Output and work tensors start as NaN bytes (0xFF) unless the
declaration gives a fill, and shared memory is NaN-filled before every CTA, so a kernel that
reads what it never wrote produces NaNs; bytes past each tensor are checked for stray writes.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from algorithms import ports
from attnsim.gpu import load_source

EMU_DIR = Path(__file__).resolve().parent
CACHE_DIR = Path(tempfile.gettempdir()) / "attnsim-cuda-emu"
SMEM_LIMIT = 256 * 1024
DTYPES = ports.HOST_DTYPES
KERNEL_RE = re.compile(r'extern "C" __global__ void(?:\s+__launch_bounds__\([^)]*\))?\s+'
                       r'(\w+)\(([^)]*)\)', re.S)


def compiler() -> str | None:
    return shutil.which("g++")


def kernel_params(source_text: str) -> dict[str, list[tuple[str, bool]]]:
    """kernel name -> [(C base type, is pointer)] from the source's signatures."""
    out = {}
    for name, params in KERNEL_RE.findall(source_text):
        parsed = []
        for p in params.split(","):
            p = " ".join(p.replace("__restrict__", "").replace("const", "").split())
            parsed.append((p.rsplit(" ", 1)[0].replace("*", "").strip(), "*" in p))
        out[name] = parsed
    return out


def harness(source_file: str, kernels: list[str], params: dict) -> str:
    """C++ main: reads tensors and launches from the work directory, runs, writes tensors."""
    cases = []
    for kid, name in enumerate(kernels):
        call = []
        for i, (ctype, is_ptr) in enumerate(params[name]):
            call.append(f"({ctype}*)P(L, {i})" if is_ptr else
                        f"I(L, {i})" if ctype == "int" else f"F(L, {i})")
        cases.append(f"        case {kid}: run(L, [&] {{ {name}({', '.join(call)}); }}); break;")
    cases_text = "\n".join(cases)
    return f'''#include "cuda_emu.h"
#include "{source_file}"
#include <fstream>

// needs attn_common.cuh's attn_f2, hence here and not in cuda_emu.h
inline attn_f2 attn_unpack2(unsigned v) {{
    return attn_f2{{emu_elem_bits(v & 0xffffu), emu_elem_bits(v >> 16)}};
}}
#include <string>

thread_local __attribute__((aligned(128))) unsigned char smem_raw[{SMEM_LIMIT}];
thread_local __attribute__((aligned(128))) unsigned char softmax_raw[{SMEM_LIMIT}];
thread_local __attribute__((aligned(128))) float smem_f[{SMEM_LIMIT // 4}];

static const int GUARD = 64;
struct Tensor {{ std::vector<unsigned char> bytes; size_t n; }};
struct Arg {{ char kind; long long t; double v; }};
struct Launch {{ int kernel; dim3 grid, block; size_t smem; std::vector<Arg> args; }};
static std::vector<Tensor> tensors;

static void* P(const Launch& L, int i) {{
    return L.args[i].kind == 'n' ? nullptr : tensors[L.args[i].t].bytes.data();
}}
static int I(const Launch& L, int i) {{ return (int)L.args[i].v; }}
static float F(const Launch& L, int i) {{ return (float)L.args[i].v; }}

static void run(const Launch& L, const std::function<void()>& body) {{
    if (L.smem > {SMEM_LIMIT}) {{ std::fprintf(stderr, "emu: smem %zu too large\\n", L.smem); std::fflush(stderr); std::_Exit(5); }}
    gridDim = L.grid; blockDim = L.block;
    for (unsigned z = 0; z < L.grid.z; ++z)
        for (unsigned y = 0; y < L.grid.y; ++y)
            for (unsigned x = 0; x < L.grid.x; ++x) {{
                blockIdx.x = x; blockIdx.y = y; blockIdx.z = z;
                std::memset(smem_raw, 0xff, sizeof smem_raw);
                std::memset(softmax_raw, 0xff, sizeof softmax_raw);
                std::memset(smem_f, 0xff, sizeof smem_f);
                emu::run_cta(body);
            }}
    for (size_t t = 0; t < tensors.size(); ++t)
        for (int g = 0; g < GUARD; ++g)
            if (tensors[t].bytes[tensors[t].n + g] != 0xa5) {{
                std::fprintf(stderr, "emu: write past the end of tensor %zu\\n", t); std::fflush(stderr); std::_Exit(6);
            }}
}}

int main(int argc, char** argv) {{
    const std::string dir = argv[1];
    emu::smem_base = smem_raw;                    // hazard checks cover the dynamic tiles
    emu::smem_size = sizeof smem_raw;
    std::ifstream desc(dir + "/launches.txt");
    size_t count; desc >> count;
    tensors.resize(count);
    for (size_t t = 0; t < count; ++t) {{
        desc >> tensors[t].n;
        tensors[t].bytes.assign(tensors[t].n + GUARD, 0xa5);
        std::ifstream in(dir + "/t" + std::to_string(t) + ".bin", std::ios::binary);
        in.read((char*)tensors[t].bytes.data(), (std::streamsize)tensors[t].n);
    }}
    size_t launches; desc >> launches;
    for (size_t k = 0; k < launches; ++k) {{
        Launch L; size_t nargs;
        desc >> L.kernel >> L.grid.x >> L.grid.y >> L.grid.z >> L.block.x >> L.block.y
             >> L.block.z >> L.smem >> nargs;
        L.args.resize(nargs);
        for (auto& a : L.args) {{
            desc >> a.kind;
            if (a.kind == 't') desc >> a.t; else if (a.kind != 'n') desc >> a.v;
        }}
        switch (L.kernel) {{
{cases_text}
        default: return 7;
        }}
    }}
    for (size_t t = 0; t < count; ++t) {{
        std::ofstream out(dir + "/t" + std::to_string(t) + ".out", std::ios::binary);
        out.write((const char*)tensors[t].bytes.data(), (std::streamsize)tensors[t].n);
    }}
    return 0;
}}
'''


def build_text(text: str, defines: dict, kernels: list[str], label: str = "kernel") -> Path:
    """Compile (once, cached by content) the emulator binary for a source text."""
    main = harness("kernel.cu", kernels, kernel_params(text))
    # -U_FORTIFY_SOURCE: a fortified _longjmp refuses to jump to another green thread's stack
    flags = (["-std=c++17", "-O1", "-w", "-fno-extern-tls-init", "-U_FORTIFY_SOURCE",
              "-I", str(EMU_DIR)]
             + [f"-D{k}={v}" for k, v in sorted(defines.items())])
    digest = hashlib.sha256("\0".join([text, main, *flags, (EMU_DIR / "cuda_emu.h").read_text()])
                            .encode()).hexdigest()[:16]
    out_dir = CACHE_DIR / digest
    binary = out_dir / "emu"
    if binary.exists():
        return binary
    out_dir.mkdir(parents=True, exist_ok=True)
    # Concurrent test runs (pytest-xdist's workers) share the cache directory: the first to
    # lock a build compiles it while the others wait for it, instead of compiling it again
    with open(out_dir / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not binary.exists():
            compile_binary(text, main, flags, out_dir, binary, label)
    return binary


def compile_binary(text: str, main: str, flags: list[str], out_dir: Path, binary: Path,
                   label: str) -> None:
    """g++ the harness and the kernel text into ``binary``."""
    # Private file names per process; only the finished binary is published, by an
    # atomic rename, so a reader never sees a half-written one.
    tag = f"{os.getpid()}.{id(text)}"
    (out_dir / f"kernel.{tag}.cu").write_text(text)
    main_cpp = out_dir / f"main.{tag}.cpp"
    main_cpp.write_text(main.replace('#include "kernel.cu"', f'#include "kernel.{tag}.cu"'))
    tmp = out_dir / f"emu.{tag}.tmp"
    done = subprocess.run([compiler(), *flags, "-x", "c++", str(main_cpp), "-o", str(tmp)],
                          capture_output=True, text=True, timeout=600)
    if done.returncode:
        raise RuntimeError(f"emulator build of {label} failed:\n{done.stderr[-4000:]}")
    tmp.replace(binary)


class EmulationError(RuntimeError):
    """The emulated kernel failed: exit status and the emulator's message."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


def run_binary(binary: Path, kernels: list[str], arrays: list[np.ndarray], launches,
               label: str = "kernel", timeout: float = 600) -> list[np.ndarray]:
    """Run ``launches`` — (kernel, grid, block, smem_bytes, args) with args ("t", i) for
    arrays[i], ("i", v), ("f", v) or ("n",) for a null pointer — and return the arrays after.
    Exit statuses of the emulator: 4 deadlock, 6 write past a tensor, 8 shared-memory hazard."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        lines = [str(len(arrays))]
        for i, a in enumerate(arrays):
            (work / f"t{i}.bin").write_bytes(np.ascontiguousarray(a).tobytes())
            lines.append(str(a.nbytes))
        lines.append(str(len(launches)))
        for kernel, grid, block, smem, args in launches:
            words = [" ".join(f"{w!r}" if isinstance(w, float) else str(w) for w in a)
                     for a in args]
            lines.append(" ".join(map(str, [kernels.index(kernel), *grid, *block, smem,
                                            len(args), *words])))
        (work / "launches.txt").write_text("\n".join(lines) + "\n")
        done = subprocess.run([str(binary), str(work)], capture_output=True, text=True,
                              timeout=timeout)
        if done.returncode:
            raise EmulationError(f"emulated {label} failed ({done.returncode}): "
                                 f"{done.stderr[-2000:]}", done.returncode)
        return [np.frombuffer((work / f"t{i}.out").read_bytes(), dtype=a.dtype).reshape(a.shape)
                for i, a in enumerate(arrays)]


def emulate(spec: ports.PortLaunches, host_inputs, timeout: float = 600,
            edit=None) -> dict[str, np.ndarray]:
    """Run every launch of ``spec`` (its ``setup`` launches first) on the CPU; returns every
    tensor after the run. Each distinct (source, defines) is built once; launches run in
    order on the same arrays, consecutive launches of one build in one emulator process.
    ``edit``: optional function applied to the source text (tests that break a kernel), or a
    dict {source file: function} to edit only some sources."""
    launches_all = spec.all_launches
    key = lambda l: (l.source, tuple(sorted(l.defines.items())))
    builds = {}
    for k in dict.fromkeys(key(l) for l in launches_all):
        source, defines = k
        text = load_source(source)
        fn = edit.get(source) if isinstance(edit, dict) else edit
        if fn is not None:
            text = fn(text)
        kernels = sorted({l.kernel for l in launches_all if key(l) == k})
        builds[k] = (build_text(text, dict(defines), kernels, source), kernels)
    if isinstance(edit, dict):
        missing = set(edit) - {source for source, _ in builds}
        assert not missing, f"edit names sources the port does not launch: {missing}"
    names = list(spec.tensors)
    arrays = []
    for name in names:
        t = spec.tensors[name]
        dtype = DTYPES[t.dtype]
        if t.role == "input":
            arrays.append(ports.to_storage(t.host_values(name, host_inputs), t.dtype))
        elif t.role == "const":
            arrays.append(ports.to_storage(ports.const_data(t, host_inputs), t.dtype))
        elif t.fill is not None:
            arrays.append(np.full(t.shape, ports.to_storage(np.float32(t.fill), t.dtype), dtype=dtype))
        else:                                          # NaN bytes: unwritten data shows
            arrays.append(np.frombuffer(b"\xff" * (int(np.prod(t.shape)) * np.dtype(dtype).itemsize),
                                        dtype=dtype).reshape(t.shape))
    groups = []                                        # consecutive launches of one build
    for launch in launches_all:
        args = []
        for a in launch.args:
            if a is None:
                args.append(("n",))
            elif isinstance(a, str):
                args.append(("t", names.index(a)))
            else:
                args.append(("i" if a.ctype == "int" else "f", a.value))
        words = (launch.kernel, launch.grid, launch.block, launch.smem_bytes, args)
        if groups and groups[-1][0] == key(launch):
            groups[-1][1].append(words)
        else:
            groups.append((key(launch), [words]))
    for k, launches in groups:
        binary, kernels = builds[k]
        arrays = run_binary(binary, kernels, arrays, launches, spec.algorithm, timeout)
    return dict(zip(names, arrays))
