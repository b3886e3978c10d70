"""The layout docs/architecture.md describes: what each layer may import, and what
``algorithms/`` shows at its top."""
from __future__ import annotations

import ast
import pathlib
import re

from algorithms.registry import algorithm_names

ROOT = pathlib.Path(__file__).resolve().parent.parent
LAYERS = {"hwmodels": 0, "algorithms": 1, "attnsim": 2, "reports": 3}


def _imports(path: pathlib.Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def test_no_layer_imports_a_layer_above_it():
    """hwmodels <- algorithms <- attnsim <- reports; only the CLI reaches into reports."""
    upward = []
    for layer, rank in LAYERS.items():
        for path in (ROOT / layer).rglob("*.py"):
            for module in _imports(path):
                top = module.split(".")[0]
                allowed = path == ROOT / "attnsim" / "cli.py" and top == "reports"
                if LAYERS.get(top, -1) > rank and not allowed:
                    upward.append(f"{path.relative_to(ROOT)} imports {module}")
    assert upward == []


def test_hwmodels_modules_import_each_other_one_way():
    """No import cycle inside hwmodels (the GPU catalog and the GPU files once had one)."""
    graph = {}
    for path in (ROOT / "hwmodels").glob("*.py"):
        if path.name == "__init__.py":
            continue
        graph[path.stem] = {m.split(".")[1] for m in _imports(path)
                            if m.startswith("hwmodels.") and m.count(".") == 1}
    cycles = [(a, b) for a in graph for b in graph[a] if a in graph.get(b, ())]
    assert cycles == []


def test_algorithms_top_level_is_the_registry():
    """Every module or package at the top of algorithms/ is a registered algorithm, apart
    from the contract, the registry and the three subpackages of shared code."""
    top = {p.stem for p in (ROOT / "algorithms").glob("*.py")} - {"__init__"}
    packages = {p.name for p in (ROOT / "algorithms").iterdir()
                if p.is_dir() and (p / "__init__.py").exists()}
    assert top | packages == set(algorithm_names()) | {"base", "registry", "kernels", "ports"}


def test_code_speaks_of_the_project_not_of_a_tracker():
    pattern = re.compile(r"\b[Ii]ssue \d+\b|\bissue \d+'s\b")
    hits = []
    for sub in ("algorithms", "attnsim", "hwmodels", "reports", "tests", "benchmarks", "docs"):
        for path in (ROOT / sub).rglob("*"):
            if path.suffix in {".py", ".md", ".sh", ".cu", ".cuh"} and path.is_file():
                for n, line in enumerate(path.read_text().splitlines(), 1):
                    if pattern.search(line):
                        hits.append(f"{path.relative_to(ROOT)}:{n}")
    assert hits == []
