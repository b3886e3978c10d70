"""The scripts under benchmarks/ as modules (they are scripts, not a package), and the
packages beside them that they import (benchmarks/published/)."""
import importlib
import importlib.util
import pathlib
import sys

BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"


def benchmarks_on_path():
    """benchmarks/ on sys.path, as Python puts it for a script it runs from there, so that
    the packages there import under the names the scripts import them by (``published``).
    Appended, not prepended: it shadows no module found elsewhere."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.append(str(BENCHMARKS))


def load_benchmark(name: str):
    """benchmarks/<name>.py, imported once and registered in sys.modules (its dataclasses
    look their module up there)."""
    if name in sys.modules:
        return sys.modules[name]
    benchmarks_on_path()
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_benchmark_module(name: str):
    """A module of a package under benchmarks/ (``"published.charts"``), the same module
    object the scripts import."""
    benchmarks_on_path()
    return importlib.import_module(name)
