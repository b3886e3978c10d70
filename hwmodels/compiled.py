"""``@compiled``: how every simulated kernel body and counted primitive is compiled.

It is Numba's ``njit`` with the options all of them share, written once:

* ``cache=True``: compiled machine code is kept on disk beside the sources, so only the
  first run after an install (or after a source file changes) compiles. Numba keys a
  function's cache on its own file only, but a compiled caller carries the machine code of
  everything it calls: after an edit (or a ``git pull``) of ``flash_tile.py`` alone, the
  cached ``flash2`` forward would go on counting with the old tile step. So every cache is
  keyed on its file and on one hash of all the files that define compiled functions
  (``compiled_sources_digest``): any change to any of them recompiles every kernel.
* No C-callback wrapper (``no_cfunc_wrapper``): nothing here passes a kernel as a
  first-class function, and the wrapper is one more module for LLVM to build per
  specialization (about 7% of a first report's compile time).
* One specialization per argument *type*, not per constant value. Called from another
  compiled function, plain Numba compiles a new specialization for every literal argument
  (``store_rows(c, z, 0, t, 1, m, 4, compute)`` and ``store_rows(..., 2, compute)`` become
  two compilations, each with everything it calls inlined). The kernels pass many small
  constants (element sizes, flags, zero offsets), and no kernel needs a constant's value at
  compile time, so calls are typed with the constants widened to their types.

A first run spends most of its time compiling (``benchmarks/bench_first_run.py`` measures
it); the command line also lowers LLVM's optimisation level for it (``attnsim.__main__``).
"""
from __future__ import annotations

import functools
import hashlib
from pathlib import Path

from numba.core import config, types
from numba.core.caching import CompileResultCacheImpl, FunctionCache
from numba.core.registry import CPUDispatcher

_SHARED_OPTIONS = {"nopython": True, "no_cfunc_wrapper": True}


class _TypeSpecializedDispatcher(CPUDispatcher):
    """A Numba dispatcher whose calls from compiled code are typed without literal values."""

    def get_call_template(self, args, kws):
        args = tuple(types.unliteral(a) for a in args)
        kws = {name: types.unliteral(t) for name, t in kws.items()}
        return super().get_call_template(args, kws)


# The packages whose compiled functions call one another (hwmodels' primitives are inlined
# into every kernel of algorithms/).
COMPILED_PACKAGES = ("hwmodels", "algorithms")
_PROJECT_ROOT = Path(__file__).resolve().parent.parent


def defines_compiled_code(text: bytes) -> bool:
    """A module that imports ``compiled``, as a decorator or called (``f_jit = compiled(f)``)."""
    return b"from hwmodels.compiled import" in text


def sources_digest(root: Path, packages=COMPILED_PACKAGES) -> bytes:
    """One SHA-256 over the path and text of every ``.py`` file under ``root/<package>`` that
    defines compiled functions (files without any cannot change compiled code), and of this
    module, which decides how everything is compiled."""
    h = hashlib.sha256()
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            name = path.relative_to(root).as_posix()
            text = path.read_bytes()
            if defines_compiled_code(text) or name == "hwmodels/compiled.py":
                h.update(name.encode() + b"\0")
                h.update(text)
    return h.digest()


@functools.lru_cache(maxsize=1)
def compiled_sources_digest() -> bytes:
    """``sources_digest`` of this installation, computed once per process."""
    return sources_digest(_PROJECT_ROOT)


def _keyed_on_all_sources(locator_class):
    """Numba's ``locator_class`` with the source stamp extended by the project's digest."""
    class Locator(locator_class):
        def get_source_stamp(self):
            return super().get_source_stamp(), compiled_sources_digest()
    Locator.__name__ = Locator.__qualname__ = f"AllSources{locator_class.__name__}"
    return Locator


class _AllSourcesCacheImpl(CompileResultCacheImpl):
    _locator_classes = [_keyed_on_all_sources(c) for c in CompileResultCacheImpl._locator_classes]


class _AllSourcesFunctionCache(FunctionCache):
    """Numba's on-disk function cache, stale when any compiled source changed."""
    _impl_class = _AllSourcesCacheImpl


def compiled(func=None, *, cache: bool = True, **options):
    """``@compiled`` or ``@compiled(fastmath=..., nogil=True)``: ``func`` compiled by Numba in
    nopython mode, cached on disk (unless ``cache=False``), specialized per argument type."""
    if func is None:
        return lambda f: compiled(f, cache=cache, **options)
    if config.DISABLE_JIT:                   # NUMBA_DISABLE_JIT=1: plain Python, for debuggers
        return func
    dispatcher = _TypeSpecializedDispatcher(py_func=func, locals={},
                                            targetoptions={**_SHARED_OPTIONS, **options})
    if cache:                                # Dispatcher.enable_caching, with our keys
        dispatcher._cache = _AllSourcesFunctionCache(dispatcher.py_func)
    return dispatcher
