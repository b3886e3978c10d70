"""The library instructions ``algorithms.standard.aten_softmax`` prices are the ones the
compiled code spends: each pass of ATen's softmax, read off its SASS
(``benchmarks/aten_softmax_sass.py``, the run in ``reports/aten_softmax_sass.json``), is the
ops the kernel counts plus the declared routines, for sm_80 and sm_90 alike."""
import json
import pathlib

import pytest

from algorithms.standard import aten_softmax

RECORD = json.loads((pathlib.Path(__file__).resolve().parents[1] / "reports"
                     / "aten_softmax_sass.json").read_text())
FMA_PIPE = ("FFMA", "FADD", "FMUL")                       # fp32 arithmetic
ALU_OR_BRANCH = ("SHF", "FCHK", "BSSY", "BSYNC", "BRA")   # the routines' integer and guard ops


def pipe_ops(counts: dict, prefixes: tuple) -> float:
    return sum(n for op, n in counts.items() if op.split(".")[0] in prefixes)


def routines(*names) -> dict:
    return {pipe: sum(r.get(pipe, 0) for r in names) for pipe in ("fma", "alu", "xu")}


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_the_output_pass_is_its_counted_ops_plus_expf_and_the_divide(arch):
    out = RECORD[arch]["block_output_pass"]
    lib = routines(aten_softmax.EXPF, aten_softmax.IEEE_DIVIDE)
    assert pipe_ops(out, FMA_PIPE) == 2 + lib["fma"]                 # x - max, the divide
    loop_branch = 1 / 8                                              # the loop's own BRA
    assert pipe_ops(out, ALU_OR_BRANCH) - loop_branch == pytest.approx(lib["alu"])
    assert out["MUFU.EX2"] == 1 and out["MUFU.RCP"] == lib["xu"]


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_the_sum_pass_folds_expfs_last_multiply_into_its_add(arch):
    sum_pass = RECORD[arch]["block_sum_pass"]
    assert pipe_ops(sum_pass, FMA_PIPE) == 2 + aten_softmax.EXPF_INTO_SUM["fma"]
    assert sum_pass["SHF.L.U32"] == aten_softmax.EXPF_INTO_SUM["alu"]
    assert sum_pass["MUFU.EX2"] == 1 and "MUFU.RCP" not in sum_pass


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_the_warp_kernel_takes_one_expf_and_one_divide_an_element(arch):
    """The whole warp kernel over a lane's 32 elements: its fp32 work is the three counted
    ops (x - max, the sum, the divide) and the two routines, within the few instructions
    of its slow-path call and shuffle reductions."""
    warp = RECORD[arch]["warp_row"]
    lib = routines(aten_softmax.EXPF, aten_softmax.IEEE_DIVIDE)
    assert pipe_ops(warp, FMA_PIPE) == pytest.approx(3 + lib["fma"], abs=0.6)
    assert warp["MUFU.EX2"] == 1 and warp["MUFU.RCP"] == pytest.approx(lib["xu"], abs=0.05)


@pytest.mark.parametrize("n, e, block", [(1024, 2, False), (1025, 2, True), (1024, 4, False),
                                         (1025, 4, True), (512, 8, False)])
def test_the_row_length_picks_the_kernel_as_host_softmax_does(n, e, block):
    assert aten_softmax.block_path(n, e) is block
