"""DRAM bytes of a CUDA port measured by Nsight Compute, against the simulator's counts
(a script for a machine with a GPU, CuPy and ``ncu``; measured DRAM bytes against the counts).

    python benchmarks/ncu_dram.py flash2 --seq 16384 --batch 4 --heads 16 --head-dim 64
    python benchmarks/ncu_dram.py standard --seq 4096 --format markdown --json standard.json
    python benchmarks/ncu_dram.py gqa --decode --seq 65536 --heads 32 --kv-heads 8
    python benchmarks/ncu_dram.py flash2 --seq 4096 --pipes      # + FMA/ALU/XU instructions

For one algorithm and workload it

1. simulates the workload in count-only mode on the device's GPU model (``--hw auto``) and
   declares the port's launches from the same plan;
2. runs ``ncu --clock-control none --metrics dram__bytes_read.sum,dram__bytes_write.sum
   --print-units base --csv`` on this script in ``--run-once`` mode, which compiles the port
   (outside the profiled kernels) and runs each of its launches exactly once;
3. prints, per kernel, the simulator's counted HBM reads/writes, the timing model's DRAM
   estimate after its L2 filter, the bytes ncu measured and their ratios
   (``attnsim.ncu`` explains the three numbers). ``--json FILE`` writes the rows.
4. with ``--pipes``, also collects ncu's per-pipe instruction counts (FMA, ALU, XU) and prints
   them beside the warp-instructions the timing model prices on each pipe.

``ncu`` usually needs permission to read the performance counters (root, or the driver's
``NVreg_RestrictProfilingToAdminUsers=0``). ``--ncu PATH`` picks the binary.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from algorithms import ports  # noqa: E402
from algorithms.base import check_options  # noqa: E402
from algorithms.registry import get_algorithm  # noqa: E402
from attnsim import ncu  # noqa: E402
from attnsim.cli import add_workload_args, workload_from_args  # noqa: E402
from attnsim.workload import Workload  # noqa: E402

DEFAULT = Workload(batch=4, heads=16, seq_q=8192, head_dim=64)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("algorithm", help=f"a ported algorithm: {', '.join(ports.ported_algorithms())}")
    add_workload_args(p, DEFAULT)
    p.add_argument("--hw", default="auto", help="GPU model of the prediction (auto: the device's)")
    p.add_argument("--ncu", default="ncu", help="the Nsight Compute CLI")
    p.add_argument("--format", default="text", choices=("text", "markdown"))
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    p.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                   help="an algorithm option, as `attnsim list` names it (repeatable), e.g. "
                        "--option path=upproject for mla")
    p.add_argument("--pipes", action="store_true",
                   help="also compare the FMA, ALU and XU pipes' instruction counts")
    p.add_argument("--run-once", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def algorithm_options(a) -> dict:
    """``--option NAME=VALUE`` pairs (option names with - or _), values cast by the module."""
    options = {}
    for pair in a.option:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise SystemExit(f"ncu_dram: --option takes NAME=VALUE, got {pair!r}")
        options[name.strip().replace("-", "_")] = value.strip()
    return options


def setup(a):
    """(workload, GPU model, simulation, port declaration) for the arguments."""
    from attnsim import gpu as backend
    from attnsim.simulate import simulate
    from hwmodels import get_gpu
    wl = workload_from_args(a)
    gpu = backend.detect_gpu_model()[0] if a.hw == "auto" else get_gpu(a.hw)
    module = get_algorithm(a.algorithm)
    options = check_options(module.INFO, algorithm_options(a))
    plan = module.plan(wl, gpu, gpu.smem_bytes_per_block, **options)
    sim = simulate(a.algorithm, wl, gpu, compute=False, options=options)
    spec = ports.port_launches(a.algorithm, wl, plan, sim.extra, gpu=gpu)
    return wl, gpu, sim, spec


def run_once(a) -> int:
    """The profiled process: compile, then every launch of the port once."""
    from attnsim import gpu as backend
    from attnsim.inputs import make_inputs
    wl, _, _, spec = setup(a)
    backend.launch_once(spec, make_inputs(wl, seed=0))
    return 0


def profile(a, argv: list[str]) -> int:
    from attnsim import gpu as backend
    ok, why = backend.gpu_available()
    if not ok:
        print(f"ncu_dram: no GPU to profile: {why}", file=sys.stderr)
        return 2
    if shutil.which(a.ncu) is None:
        print(f"ncu_dram: Nsight Compute's CLI {a.ncu!r} is not on PATH; install Nsight "
              f"Compute or pass --ncu /path/to/ncu", file=sys.stderr)
        return 2
    wl, gpu, sim, spec = setup(a)
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "ncu.csv"
        metrics = ncu.NCU_METRICS + ("," + ncu.PIPE_NCU_METRICS if a.pipes else "")
        cmd = [a.ncu, "--clock-control", "none", "--metrics", metrics,
               "--print-units", "base", "--csv", "--log-file", str(log),
               sys.executable, str(Path(__file__).resolve()), "--run-once", *argv]
        done = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
        if done.returncode or not log.exists():
            sys.stderr.write(done.stdout[-3000:] + done.stderr[-3000:])
            print(f"ncu_dram: ncu failed (exit {done.returncode}); command: {' '.join(cmd)}",
                  file=sys.stderr)
            return 1
        launches = ncu.parse_ncu_csv(log.read_text(), pipes=a.pipes)
    kernels = [l.kernel for l in spec.launches]
    mine = ncu.port_launches_only(launches, kernels, [l.kernel for l in spec.setup])
    rows = ncu.compare(spec.launches, sim.kernels, sim.time.kernels, mine)
    print(f"{a.algorithm} on {gpu.full_name}: {wl.describe()}")
    print(ncu.render_rows(rows, a.format))
    out = {"algorithm": a.algorithm, "gpu": gpu.name, "workload": wl.describe(),
           "rows": [r.as_dict() for r in rows]}
    if a.pipes:
        pipe_rows = ncu.compare_pipes(spec.launches, sim.kernels, mine)
        print("\nwarp-instructions per pipe, counted (the timing model's) and measured:")
        print(ncu.render_pipe_rows(pipe_rows, a.format))
        out["pipes"] = [r.as_dict() for r in pipe_rows]
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2))
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    a = parse_args(argv)
    return run_once(a) if a.run_once else profile(a, argv)


if __name__ == "__main__":
    sys.exit(main())
