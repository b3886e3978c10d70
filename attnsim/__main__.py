"""``python -m attnsim`` and the ``attnsim`` script: the command line (``attnsim.cli``).

Before anything imports Numba, the command line asks LLVM for its -O1 pipeline instead of
-O3 (``NUMBA_OPT=1``; a value already in the environment wins). Compilation is most of a
first run after an install, and -O1 cuts it by about a third; the kernels' run time is the
same, because their loops are tile loops around NumPy/BLAS calls and counter updates, which
-O3's vectorizer does not speed up (``benchmarks/bench_first_run.py`` measures both).
"""
import os
import sys


def main() -> int:
    os.environ.setdefault("NUMBA_OPT", "1")
    from attnsim.cli import main as command_line
    return command_line()


if __name__ == "__main__":
    sys.exit(main())
