"""How the kernels are compiled (hwmodels.compiled) and what the command line sets before
Numba loads (attnsim.__main__)."""
import os
import subprocess
import sys

import numpy as np
from numba import njit

from hwmodels.compiled import compiled


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
    assert count_load._cache.__class__.__name__ == "FunctionCache"
    assert count_load.targetoptions["no_cfunc_wrapper"] is True
    assert _add._cache.__class__.__name__ == "NullCache"


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
