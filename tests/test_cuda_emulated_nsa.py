"""The nsa port (algorithms/cuda/nsa_fwd.cu + the window through block_sparse_fwd.cu) run on
the CPU emulator, against the CPU simulation (tests/port_cases.py's NSA_CASES).

The output is judged where the selection can be: NSA's top-n is a discrete choice made from
fp32 scores in the simulator and from scores of fp16/bf16-rounded inputs (K̃, q) here, so
at a near-tie the two may pick different blocks and the outputs at that position differ by
far more than rounding. The tests therefore check (1) the port's selected indices against
the simulator's: almost all equal, and every difference a near-tie of the float64 scores
(within a few storage roundings of each other), (2) the output against the CPU simulation
at every position whose selections agree, and (3) the output at every position against
NSA's float64 reference run with the port's own selection (``nsa.reference(selection=)``).
"""
import json

import numpy as np
import pytest

from algorithms import nsa, ports
from algorithms.base import check_options
from algorithms.registry import get_algorithm
from attnsim import make_inputs, simulate
from attnsim.reference import attention_reference, relative_error
from hwmodels import get_gpu
from cuda_emu import emulate as emulate_mod
from port_cases import NSA_CASES, NSA_SHAPES, NSA_SMALL, workload
from test_cuda_emulated import assert_removal_is_caught, emulated_backend  # noqa: F401

pytestmark = pytest.mark.skipif(emulate_mod.compiler() is None, reason="g++ not on PATH")
MAX_FLIP_FRACTION = 0.02


def run_nsa(wl, options=NSA_SMALL, gpu_name="h100-sxm", seed=1):
    gpu = get_gpu(gpu_name)
    module = get_algorithm("nsa")
    plan = module.plan(wl, gpu, gpu.smem_bytes_per_block, **check_options(module.INFO, options))
    inputs = make_inputs(wl, seed=seed)
    cpu = simulate("nsa", wl, gpu, compute=True, inputs=inputs, check=False, options=options)
    spec = ports.port_launches("nsa", wl, plan, cpu.extra, gpu=gpu)
    return plan, inputs, cpu, spec, emulate_mod.emulate(spec, inputs)


def near_tie_flips(wl, plan, inputs, sel, cpu_sel):
    """Positions (b, kv head, t) whose selections differ, after checking each is a near-tie
    (``nsa.selection_differences``)."""
    diff = nsa.selection_differences(wl, plan, inputs, sel, cpu_sel)
    assert diff.all_near_ties, diff.flipped[~diff.near_tie]
    return diff.flipped


def check_selection_format(plan, wl, sel):
    """Ascending, −1 padded, n_t = min(n, j_t + 1) blocks, the forced ones included."""
    for t in range(wl.seq_q):
        kpos = t + wl.seq_k - wl.seq_q
        n_t = 0 if kpos < 0 else min(plan.selected, kpos // plan.select_block + 1)
        rows = sel[:, :, t].reshape(-1, plan.selected)
        assert (rows[:, n_t:] == -1).all()
        chosen = rows[:, :n_t]
        assert (np.diff(chosen, axis=-1) > 0).all()
        if n_t:
            jt = kpos // plan.select_block
            assert (chosen[:, 0] == 0).all() and (chosen[:, -1] == jt).all()
            if jt >= 1:
                assert (chosen[:, -2] == jt - 1).all()


# every nsa case but the fp16 N_q < N_k one, whose bf16 twin runs the same launches (the
# emulator runs every CUDA thread as a green thread: these take ~40 s on 2 busy cores)
EMULATED_NSA = [c for c in NSA_CASES if not (c.shape == NSA_SHAPES[3] and c.dtype == "fp16")]


@pytest.mark.parametrize("case", EMULATED_NSA, ids=lambda c: c.id)
def test_emulated_nsa_matches_the_cpu_simulation(case):
    wl = case.workload
    plan, inputs, cpu, spec, out = run_nsa(wl, case.options)
    target = ports.ERROR_TARGETS[wl.dtype]
    o = ports.from_storage(out["o"], wl.dtype)
    assert np.isfinite(o).all()
    sel, cpu_sel = out["sel"], cpu.outputs["sel"]
    check_selection_format(plan, wl, sel)
    flips = near_tie_flips(wl, plan, inputs, sel, cpu_sel)
    assert len(flips) <= MAX_FLIP_FRACTION * sel[..., 0].size
    agree = ~np.zeros(wl.seq_q, bool)
    agree[np.unique(flips[:, 2]) if len(flips) else []] = False       # positions, all groups
    assert relative_error(o[:, :, agree], cpu.outputs["o"][:, :, agree]) < target
    ref = nsa.reference(wl, plan, inputs, attention_reference, selection=sel)
    assert relative_error(o, ref) < target


def test_emulated_nsa_rows_that_see_no_key():
    """N_q = 40 > N_k = 12 < l: no compressed token (no nsa_compress launch), rows t < 28 see
    no key: every branch is empty, their output is 0 and their selection all −1."""
    wl = workload(NSA_SHAPES[5])
    plan, _, cpu, spec, out = run_nsa(wl)
    assert "nsa_compress" not in [l.kernel for l in spec.launches]
    assert (out["o"][:, :, :28] == 0).all() and (out["sel"][:, :, :28] == -1).all()
    assert (cpu.outputs["o"][:, :, :28] == 0).all()
    assert np.any(out["o"][:, :, 28:] != 0, axis=-1).all()


# Each edit removes one synchronization of nsa_fwd.cu; the emulator must stop with a
# shared-memory hazard: the K̃ refill of pass 2 landing on a tile other warps still read, the
# score bins read by the top-n threads before every warp's atomics are in (the atomics block
# of cuda_emu.h), and nsa_slc's K refill landing on the sub-block other warps still read.
NSA_BROKEN_SYNC = {
    "no barrier before pass 2's K̃ refill":
        "        __syncthreads();                                       // pass 2: every warp is done with K̃_j\n",
    "no barrier between the credits and the top-n":
        "        __syncthreads();                                       // the tile's credits are in\n",
    "no barrier before the K_s refill":
        "        __syncthreads();                                       // every warp is done with K_s\n",
}


@pytest.fixture(scope="module")
def sync_case():
    """g = 32: nsa_cmp packs 32 x B_r = 16 rows in 32 warps over two tiles of compressed
    tokens (B_c = 32, N_c = 57 at l = 8, d_s = 2), nsa_slc has two warps and positions with
    several selected sub-blocks. The intact source runs clean on it."""
    wl = workload((1, 32, 1, 24, 120, 32, True))
    options = {"compress_block": 8, "compress_stride": 2, "select_block": 32, "selected": 4,
               "window": 32}
    gpu = get_gpu("h100-sxm")
    module = get_algorithm("nsa")
    plan = module.plan(wl, gpu, gpu.smem_bytes_per_block, **check_options(module.INFO, options))
    assert (plan.group, plan.cmp_block_q, plan.cmp_block_k) == (32, 16, 32)
    assert plan.compressed_tokens == 57
    spec = ports.port_launches("nsa", wl, plan, gpu=gpu)
    inputs = make_inputs(wl, seed=1)
    assert np.isfinite(ports.from_storage(emulate_mod.emulate(spec, inputs)["o"], "fp16")).all()
    return spec, inputs


@pytest.mark.parametrize("what", NSA_BROKEN_SYNC)
def test_emulator_catches_a_missing_synchronization_in_nsa(what, sync_case):
    spec, inputs = sync_case
    assert_removal_is_caught(spec, inputs, "nsa_fwd.cu", "NSA_BROKEN_SYNC", NSA_BROKEN_SYNC[what])


def test_gpu_check_nsa_on_the_emulator(emulated_backend, capsys):
    """gpu-check nsa: the sweep is a causal prefill with 4 query heads per KV head (the
    paper's parameters); checked against the CPU simulation up to --cpu-check-max-n, its
    top-n against the simulator's; above it the error is reported as not checked (no device
    reference for NSA)."""
    from attnsim.cli import main
    assert main(["gpu-check", "nsa", "--seq", "70", "90", "--batch", "1", "--heads", "4",
                 "--cpu-check-max-n", "80", "--format", "json"]) == 0
    rows = {r["seq"]: r for r in json.loads(capsys.readouterr().out)["rows"]}
    small, large = rows[70], rows[90]
    assert small["error_vs"] == "cpu" and small["rel_error"] < ports.ERROR_TARGETS["fp16"]
    assert small["predicted_s"] > 0 and small["sdpa_s"] is None
    assert large["error_vs"] == "none" and large["rel_error"] is None
    assert "error not checked" in large["note"]
    # with the CPU run as the reference the top-n is judged too (nsa_selection_verdict)
    verdict = small["selection"]
    assert verdict["all_near_ties"] and verdict["judged_error"] < ports.ERROR_TARGETS["fp16"]
    assert verdict["rel_error_with_own_selection"] < ports.ERROR_TARGETS["fp16"]
    assert "nsa selection:" in small["note"] and "selection" not in large

