"""How the kernels are compiled (hwmodels.compiled) and what the command line sets before
Numba loads (attnsim.__main__)."""
import os
import subprocess
import sys

import shutil
import textwrap
from pathlib import Path

import numpy as np
from numba import njit
from numba.core.caching import FunctionCache
from numba.core.registry import CPUDispatcher

from hwmodels.compiled import compiled, sources_digest


# not cached on disk: a cached caller would load with its callees inside and compile nothing
@compiled(cache=False)
def _add(c, n):
    c[0] += n


@compiled(cache=False)
def _calls_with_constants(c):
    _add(c, 4)
    _add(c, 8)
    _add(c, c.shape[0])


@njit
def _plain_add(c, n):
    c[0] += n


@njit
def _plain_calls_with_constants(c):
    _plain_add(c, 4)
    _plain_add(c, 8)
    _plain_add(c, c.shape[0])


def test_constants_passed_between_kernels_share_one_specialization():
    c = np.zeros(1, dtype=np.int64)
    _calls_with_constants(c)
    assert c[0] == 13
    assert len(_add.signatures) == 1
    # what plain Numba does with the same calls: one compilation per constant value
    _plain_calls_with_constants(np.zeros(1, dtype=np.int64))
    assert len(_plain_add.signatures) == 3


def test_compiled_functions_are_cached_on_disk_and_build_no_c_callback():
    from hwmodels.primitives import count_load
    from hwmodels.compiled import compiled_sources_digest
    assert isinstance(count_load._cache, FunctionCache)
    # keyed on its own file and on every compiled source (see the next tests)
    assert count_load._cache._impl.locator.get_source_stamp()[1] == compiled_sources_digest()
    assert count_load.targetoptions["no_cfunc_wrapper"] is True
    assert _add._cache.__class__.__name__ == "NullCache"


_CALLEE = textwrap.dedent("""\
    from hwmodels.compiled import compiled

    @compiled
    def tile_count():
        return {}
    """)
_CALLER = textwrap.dedent("""\
    from hwmodels.compiled import compiled
    from algorithms.callee import tile_count

    @compiled
    def kernel_count():
        return 10 * tile_count()
    """)


def test_editing_a_callee_recompiles_its_cached_callers(tmp_path):
    """A cached caller holds its callees' machine code, and Numba keys its cache on the
    caller's file alone: with only the callee's file edited (a git pull of one module), the
    caller loaded from the cache would still count with the old callee."""
    (tmp_path / "hwmodels").mkdir()
    shutil.copy(Path(__file__).parents[1] / "hwmodels" / "compiled.py", tmp_path / "hwmodels")
    (tmp_path / "algorithms").mkdir()
    callee = tmp_path / "algorithms" / "callee.py"
    callee.write_text(_CALLEE.format(1))
    (tmp_path / "algorithms" / "caller.py").write_text(_CALLER)
    run = ("import sys; sys.path.insert(0, sys.argv[1]); "
           "from algorithms.caller import kernel_count; print(kernel_count())")

    def kernel_count() -> str:
        return subprocess.run([sys.executable, "-c", run, str(tmp_path)], capture_output=True,
                              text=True, check=True, cwd=tmp_path).stdout.strip()
    assert kernel_count() == "10"
    assert kernel_count() == "10"                                  # from the disk cache
    assert list((tmp_path / "algorithms" / "__pycache__").glob("caller.kernel_count*.nbi"))
    callee.write_text(_CALLEE.format(2))
    assert kernel_count() == "20"


def test_the_sources_digest_covers_the_files_that_define_compiled_functions(tmp_path):
    (tmp_path / "algorithms" / "kernels").mkdir(parents=True)
    (tmp_path / "hwmodels").mkdir()
    kernel = tmp_path / "algorithms" / "kernels" / "tile.py"
    wrapped = tmp_path / "algorithms" / "kernels" / "rounding.py"
    plain = tmp_path / "algorithms" / "plan.py"
    imports = "from hwmodels.compiled import compiled\n"
    kernel.write_text(imports + "@compiled\ndef f():\n    return 1\n")
    wrapped.write_text(imports + "def g():\n    return 1\ng_jit = compiled(g)\n")
    plain.write_text("def plan():\n    return 1\n")
    before = sources_digest(tmp_path)
    plain.write_text("def plan():\n    return 2\n")                # no compiled code
    assert sources_digest(tmp_path) == before
    kernel.write_text(imports + "@compiled\ndef f():\n    return 2\n")
    after_kernel = sources_digest(tmp_path)
    assert after_kernel != before
    wrapped.write_text(imports + "def g():\n    return 2\ng_jit = compiled(g)\n")
    assert sources_digest(tmp_path) != after_kernel


def test_the_digest_covers_every_module_that_compiles_code():
    """Every module of the project with a compiled function (a Numba dispatcher at module
    level) is one the digest reads."""
    import importlib
    import pkgutil

    import algorithms
    import hwmodels
    from hwmodels.compiled import defines_compiled_code
    missing = []
    for package in (algorithms, hwmodels):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            module = importlib.import_module(info.name)
            if any(isinstance(v, CPUDispatcher) for v in vars(module).values()
                   if getattr(v, "__module__", None) == info.name
                   or getattr(getattr(v, "py_func", None), "__module__", None) == info.name):
                if not defines_compiled_code(Path(module.__file__).read_bytes()):
                    missing.append(info.name)
    assert not missing


def _python(code: str, **env) -> str:
    run_env = {k: v for k, v in os.environ.items() if k != "NUMBA_OPT"}
    run_env.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, env=run_env).stdout.strip()


def test_importing_attnsim_loads_no_numba_until_a_name_is_used():
    out = _python("import sys, attnsim; print('numba' in sys.modules); "
                  "attnsim.Workload; print('numba' in sys.modules)")
    assert out.split() == ["False", "True"]


def test_the_command_line_compiles_at_o1_unless_numba_opt_is_set():
    code = ("import sys, attnsim.__main__ as m; sys.argv = ['attnsim', 'list']; m.main(); "
            "import numba.core.config as c; print('OPT', int(c.OPT))")
    assert _python(code).splitlines()[-1] == "OPT 1"
    assert _python(code, NUMBA_OPT="3").splitlines()[-1] == "OPT 3"


# ---- what compiled code does not call ---------------------------------------------------------
# Each of these pulls one of Numba's generic implementations into the first compile of every
# process that reaches it, seconds apiece on a cold cache: np.where's broadcasting with its
# formatted shape-mismatch error (strings, joins), the sorts' quicksort/mergesort, np.unique,
# the typed heap, dict and list of tuples. The kernels write the few selects and small sorts
# they need as loops (algorithms.kernels.common: safe_normalizers, finite_or_zero,
# sort_small_in_place, sorted_unique, sorted_distinct; hwmodels.cta_schedule).
COSTLY_IN_COMPILED = {"where", "sort", "argsort", "unique", "heappush", "heappop", "sorted",
                      "dict", "heapify"}


def _compiled_functions():
    import ast
    import pathlib
    root = pathlib.Path(__file__).resolve().parents[1]
    for path in sorted([*root.glob("algorithms/**/*.py"), *root.glob("hwmodels/**/*.py")]):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for fn in ast.walk(tree):
            if not isinstance(fn, ast.FunctionDef):
                continue
            for d in fn.decorator_list:
                target = d.func if isinstance(d, ast.Call) else d
                if isinstance(target, ast.Name) and target.id == "compiled":
                    yield path.relative_to(root), fn
                    break


def test_compiled_code_calls_none_of_the_costly_generic_implementations():
    import ast
    found, offenders = 0, []
    for path, fn in _compiled_functions():
        found += 1
        for node in ast.walk(fn):
            if isinstance(node, ast.Call):
                f = node.func
                name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
                if name in COSTLY_IN_COMPILED:
                    offenders.append(f"{path}:{node.lineno} {fn.name} calls {name}()")
            elif isinstance(node, ast.Dict):
                offenders.append(f"{path}:{node.lineno} {fn.name} builds a dict")
    assert found > 100                     # the scan sees the kernels
    assert not offenders, "\n".join(offenders)


def test_the_small_sorts_match_numpy():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from algorithms.kernels.common import sort_small_in_place, sorted_distinct, sorted_unique

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.integers(0, 99), max_size=60))
    def check(values):
        a = np.array(values, dtype=np.int64)
        assert sort_small_in_place(a.copy()).tolist() == sorted(values)
        assert sorted_unique(a).tolist() == sorted(set(values))
        for span in (100, 10_000):           # both the insertion sort and the marked scan
            scratch = np.zeros(span, dtype=np.bool_)
            assert sorted_distinct(a, scratch).tolist() == sorted(set(values))
            assert not scratch.any()          # left all False for the next row

    check()
