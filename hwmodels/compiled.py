"""``@compiled``: how every simulated kernel body and counted primitive is compiled.

It is Numba's ``njit`` with the options all of them share, written once:

* ``cache=True``: compiled machine code is kept on disk beside the sources, so only the
  first run after an install (or after a source file changes) compiles.
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

from numba.core import config, types
from numba.core.registry import CPUDispatcher

_SHARED_OPTIONS = {"nopython": True, "no_cfunc_wrapper": True}


class _TypeSpecializedDispatcher(CPUDispatcher):
    """A Numba dispatcher whose calls from compiled code are typed without literal values."""

    def get_call_template(self, args, kws):
        args = tuple(types.unliteral(a) for a in args)
        kws = {name: types.unliteral(t) for name, t in kws.items()}
        return super().get_call_template(args, kws)


def compiled(func=None, *, cache: bool = True, **options):
    """``@compiled`` or ``@compiled(fastmath=..., nogil=True)``: ``func`` compiled by Numba in
    nopython mode, cached on disk (unless ``cache=False``), specialized per argument type."""
    if func is None:
        return lambda f: compiled(f, cache=cache, **options)
    if config.DISABLE_JIT:                   # NUMBA_DISABLE_JIT=1: plain Python, for debuggers
        return func
    dispatcher = _TypeSpecializedDispatcher(py_func=func, locals={},
                                            targetoptions={**_SHARED_OPTIONS, **options})
    if cache:
        dispatcher.enable_caching()
    return dispatcher
