"""Predicted vs published: attnsim's timing model against published FlashAttention figures.

    python benchmarks/validate_published.py [--output docs/validation.md] [--readme README.md]

Writes docs/validation.md whole (or prints it): for each published figure it simulates the
same workload in count-only mode (``simulate(..., compute=False)``) and gives the published
value, the prediction and their ratio (predicted / published; above 1 the model is
optimistic); then the FlashAttention-3 paper's charts, which source set which constant of
the timing model, what each mechanism contributes, and the targets of the timing model
with whether they are met; ``--readme`` rewrites the README's block of the same figures
between its markers. Every number in the document is computed by the package
benchmarks/published/ (its docstring maps its modules); this file is the command line. About
30 s once Numba has compiled (every simulation is count-only). Attention figures only
validate: no constant of the model is set from them.
"""
from __future__ import annotations

import argparse
import os
import sys

from hwmodels.gpu_file import GpuFileError, load_gpu_file
from published.document import document
from published.predictions import use_measured
from published.readme import MarkersError, readme_block, with_block
from published.summary import summary_json

# The built-in model's page: a page predicted with measured constants must go elsewhere.
DEFAULT_PAGE = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                            "docs", "validation.md"))


def measured_error(path: str, output: str | None) -> str | None:
    """Load ``path`` as the measured GPU (``use_measured``); the one-line reason it cannot be
    used, or None."""
    if output and os.path.abspath(output) == os.path.abspath(DEFAULT_PAGE):
        return ("docs/validation.md is the built-in model's page (tests/test_published.py "
                "checks it); write the measured page elsewhere with --output")
    try:
        use_measured(load_gpu_file(path))
    except (GpuFileError, ValueError) as exc:
        return str(exc)
    return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--output", help="write the document here (default: standard output)")
    ap.add_argument("--format", default="github", choices=("github", "simple", "plain"),
                    help="table format (tabulate): github = markdown")
    ap.add_argument("--measured", metavar="FILE",
                    help="a GPU file measured on an A100 SXM4 80GB, an H100 SXM5 or an H100 "
                         "PCIe (benchmarks/gpu_microbench.py --toml): predict that GPU's "
                         "points with it instead of the built-in model")
    ap.add_argument("--summary", metavar="FILE",
                    help="also write the points' ranges by GPU and algorithm as JSON (the "
                         "report reads reports/validation_summary.json)")
    ap.add_argument("--readme", metavar="FILE",
                    help="also rewrite the block of validation figures between the markers "
                         "in FILE (README.md)")
    a = ap.parse_args(argv)
    if a.measured and a.readme:
        print("validate_published.py: error: --readme: the README quotes the built-in "
              "model's figures; leave --readme out with --measured", file=sys.stderr)
        return 2
    readme = _read_readme(a.readme) if a.readme else None
    if isinstance(readme, int):
        return readme
    if a.measured:
        error = measured_error(a.measured, a.output)
        if error:
            print(f"validate_published.py: error: --measured {a.measured}: {error}",
                  file=sys.stderr)
            return 2
    text = document(a.format)
    if a.summary:
        with open(a.summary, "w", encoding="utf-8") as f:
            f.write(summary_json())
    if a.output:
        with open(a.output, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    if readme is not None:
        with open(a.readme, "w", encoding="utf-8") as f:
            f.write(with_block(readme, readme_block(a.format)))
    return 0


def _read_readme(path: str) -> str | int:
    """The README's text, checked for the block's markers before anything is computed; 2
    (after one line on stderr) when it cannot be read or lacks them."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        with_block(text, "")
    except (OSError, UnicodeDecodeError, MarkersError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        print(f"validate_published.py: error: --readme {path}: {reason}", file=sys.stderr)
        return 2
    return text


if __name__ == "__main__":
    raise SystemExit(main())
