"""How long a newcomer waits: `python -m attnsim report --hw h100` cold (no Numba cache, as
after a fresh install) and warm (everything cached).

    python benchmarks/bench_first_run.py                 # cold once, warm best of 3
    python benchmarks/bench_first_run.py --jobs 1        # the report without worker processes
    python benchmarks/bench_first_run.py --profile       # where a cold run's compile time goes
    python benchmarks/bench_first_run.py --units         # each unit of the report's work, cold

The working tree is copied (without caches, virtual environments or .git) into a temporary
folder and the report runs there with this interpreter, so Numba finds no cache, exactly as
after `pip install`. Run it on an otherwise idle machine: it measures wall time.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SKIP = shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc", ".git", ".venv", "venv",
                              ".ci-venv", ".pytest_cache", ".hypothesis", "*.egg-info", "out")

# Run inside the copy: the report, with a Numba listener that sums compile time per function.
PROFILER = """
import collections, os, sys, time
os.environ.setdefault("NUMBA_OPT", "1")       # as python -m attnsim does
from numba.core import event
spent, started = collections.Counter(), {}
class Compiles(event.Listener):
    def on_start(self, ev):
        started[id(ev.data["dispatcher"]), str(ev.data["args"])] = time.perf_counter()
    def on_end(self, ev):
        d = ev.data["dispatcher"]
        t0 = started.pop((id(d), str(ev.data["args"])), None)
        if t0 is not None:
            spent[f"{d.py_func.__module__}.{d.py_func.__name__}"] += time.perf_counter() - t0
event.register("numba:compile", Compiles())
from attnsim.cli import main
main(sys.argv[1:])
print("compile time per function (inclusive of the functions it calls):", file=sys.stderr)
for name, s in spent.most_common(25):
    print(f"  {s:7.2f} s  {name}", file=sys.stderr)
"""

# Run inside the copy: each unit of the report's work (an algorithm family of the sweep, a
# side task), one after the other in one process, cold then warm; the first column is what
# suite.FIRST_RUN_SECONDS records.
UNITS = """
import os, sys, time
os.environ.setdefault("NUMBA_OPT", "1")       # as python -m attnsim does
from attnsim import cli, suite
from algorithms.registry import algorithm_names
from hwmodels import get_gpu
a = cli.build_parser().parse_args(sys.argv[1:])
gpu = get_gpu(a.hw)
wl, seqs = cli.workload_from_args(a), cli.parse_seqs(a.seqs)
sram = cli.sram_bytes_from_args(a, gpu)
side = cli._report_side_tasks(a, gpu, wl, None, seqs, sram)
units = [(f[0], lambda f=f: suite._sweep_family(gpu, wl, f, seqs, sram, True))
         for f in suite._families(algorithm_names())]
units += [(key, lambda fn=fn, args=args: fn(*args)) for key, (fn, args) in side.items()]
for name, run in units:
    t0 = time.perf_counter()
    run()
    print(f"{time.perf_counter() - t0:7.1f} s  {name}", flush=True)
"""


def copy_tree(dest: Path) -> Path:
    tree = dest / "attnsim-tree"
    shutil.copytree(ROOT, tree, ignore=SKIP)
    return tree


def timed(cmd: list[str], cwd: Path) -> tuple[float, str]:
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return elapsed, done.stderr


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hw", default="h100")
    ap.add_argument("--jobs", type=int, default=None, help="report --jobs (default: its own)")
    ap.add_argument("--warm-runs", type=int, default=3)
    ap.add_argument("--profile", action="store_true",
                    help="cold run under a Numba compile-time listener (top 25 functions)")
    ap.add_argument("--units", action="store_true",
                    help="seconds of each unit of the report's work, cold then warm")
    a = ap.parse_args()
    report = ["report", "--hw", a.hw] + ([] if a.jobs is None else ["--jobs", str(a.jobs)])
    with tempfile.TemporaryDirectory(prefix="attnsim-first-run-") as tmp:
        tree = copy_tree(Path(tmp))
        if a.units:
            for state in ("cold (no Numba cache)", "warm"):
                env = {**os.environ, "PYTHONPATH": str(tree)}
                done = subprocess.run([sys.executable, "-c", UNITS, *report], cwd=tree,
                                      env=env, capture_output=True, text=True)
                print(f"{state}:\n{done.stdout}{done.stderr[-2000:]}", end="")
            return
        if a.profile:
            cold, err = timed([sys.executable, "-c", PROFILER, *report], tree)
            print(err[err.find("compile time per function"):], end="")
        else:
            cold, _ = timed([sys.executable, "-m", "attnsim", *report], tree)
        warm = min(timed([sys.executable, "-m", "attnsim", *report], tree)[0]
                   for _ in range(a.warm_runs))
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"report {' '.join(report[1:])} on {cpus} CPUs: cold {cold:.1f} s (no Numba "
          f"cache), warm {warm:.1f} s (best of {a.warm_runs})")


if __name__ == "__main__":
    main()
