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
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SKIP = shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc", ".git", ".venv", "venv",
                              ".ci-venv", ".pytest_cache", ".hypothesis", "*.egg-info", "out")

# Run inside the copy: the report, with a Numba listener that records each compilation's
# time. The sweep's workers are forked, so they inherit the listener; each process appends
# to its own file, and the totals are summed over processes at the end (a function compiled
# by both workers counts twice: that is CPU the workers both spend).
PROFILER = """
import collections, glob, os, sys, time
os.environ.setdefault("NUMBA_OPT", "1")       # as python -m attnsim does
from numba.core import event
started = {}
class Compiles(event.Listener):
    def on_start(self, ev):
        started[id(ev.data["dispatcher"]), str(ev.data["args"])] = time.perf_counter()
    def on_end(self, ev):
        d = ev.data["dispatcher"]
        t0 = started.pop((id(d), str(ev.data["args"])), None)
        if t0 is not None:
            with open(f"compile-times.{os.getpid()}", "a") as f:
                print(f"{d.py_func.__module__}.{d.py_func.__name__}\t"
                      f"{time.perf_counter() - t0}", file=f)
event.register("numba:compile", Compiles())
from attnsim.cli import main
main(sys.argv[1:])
spent, where = collections.Counter(), collections.defaultdict(set)
for path in glob.glob("compile-times.*"):
    for line in open(path):
        name, s = line.rsplit("\\t", 1)
        spent[name] += float(s)
        where[name].add(path)
print("compile time per function, summed over processes (inclusive of the functions it "
      "calls; x2: compiled in two processes):", file=sys.stderr)
for name, s in spent.most_common(30):
    print(f"  {s:7.2f} s  x{len(where[name])}  {name}", file=sys.stderr)
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


def timed(cmd: list[str], cwd: Path) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds of the command and every process it waited for, stderr).

    The CPU time is the steadier figure on a shared or virtual machine: other load stretches
    the wall time of a compile far more than its CPU time."""
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return elapsed, cpu, done.stderr


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hw", default="h100")
    ap.add_argument("--jobs", type=int, default=None, help="report --jobs (default: its own)")
    ap.add_argument("--warm-runs", type=int, default=3)
    ap.add_argument("--profile", action="store_true",
                    help="cold run under a Numba compile-time listener (top 30 functions)")
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
            cold, cold_cpu, err = timed([sys.executable, "-c", PROFILER, *report], tree)
            print(err[err.find("compile time per function"):], end="")
        else:
            cold, cold_cpu, _ = timed([sys.executable, "-m", "attnsim", *report], tree)
        warm = min(timed([sys.executable, "-m", "attnsim", *report], tree)[:2]
                   for _ in range(a.warm_runs))
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"report {' '.join(report[1:])} on {cpus} CPUs: cold {cold:.1f} s (no Numba "
          f"cache; {cold_cpu:.1f} CPU s), warm {warm[0]:.1f} s ({warm[1]:.1f} CPU s; best "
          f"of {a.warm_runs})")


if __name__ == "__main__":
    main()
