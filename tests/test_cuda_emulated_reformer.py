"""The reformer port (algorithms/cuda/reformer.cu) executed on the CPU emulator.

End to end against the CPU simulation: the bucket ids and the sorted permutation exactly
(int32), the output to the storage type's target. The radix sort alone on many CTAs (tiles of
256 keys, 2 and 3 digit passes, ragged last tile), where the decoupled look-back chains the
CTAs' digit counts: sorted as NumPy's stable argsort sorts, also when every CTA must walk
back over aggregates alone; tile ids that do not follow the order CTAs start in stop the
emulator (the look-back would wait on a CTA that has not run); a removed barrier is caught.

Bucket ties: the simulator hashes the stored fp16/bf16 Q and R (reformer.storage_values) as
the kernel does, so only float32 summation order differs (np.dot against the MMA's). A row
can then disagree only if its two best projections lie within float32 rounding of each
other; ``near_ties`` counts rows whose float64 margin is below 1e-5 of the projection scale,
and the cases here have none, so their buckets must agree exactly (as they do).
"""
from types import SimpleNamespace

import numpy as np
import pytest

from algorithms import ports, reformer
from algorithms.ports.reformer import sort_launches, sort_tensors
from attnsim import Workload, make_inputs
from attnsim.reference import relative_error
from cuda_emu import emulate as emulate_mod
from port_cases import REFORMER_CASES
from test_cuda_emulated import assert_removal_is_caught, run_emulated
from hwmodels import get_gpu

pytestmark = pytest.mark.skipif(emulate_mod.compiler() is None, reason="g++ not on PATH")

EMULATED = REFORMER_CASES[:5]                 # the GPU-only last case is too large here
NEAR_TIE = 1e-5


def near_ties(wl, plan, inputs) -> int:
    """Rows x rounds whose best and second-best hash projections (float64, from the stored
    Q and R) are closer than NEAR_TIE x the largest |projection| of the row."""
    rot = reformer.rotations(plan, wl.head_dim, inputs, wl.dtype).astype(np.float64)
    count = 0
    for b in range(wl.batch):
        for h in range(wl.heads):
            q = reformer.storage_values(inputs.q[b, h], wl.dtype).astype(np.float64)
            for r in range(plan.hashes):
                proj, col = q @ rot[r], 0
                for f in plan.factors:
                    part = proj[:, col:col + f // 2]
                    both = np.sort(np.concatenate([part, -part], axis=1), axis=1)
                    scale = np.abs(both).max(axis=1)
                    count += int(((both[:, -1] - both[:, -2]) < NEAR_TIE * scale).sum())
                    col += f // 2
    return count


@pytest.mark.parametrize("case", EMULATED, ids=lambda c: c.id)
def test_emulated_reformer_matches_the_simulation(case):
    wl, gpu = case.workload, get_gpu("h100-sxm")
    cpu, out, inputs, spec = run_emulated("reformer", wl, gpu, options=case.options,
                                          with_spec=True)
    plan = reformer.plan(wl, gpu, gpu.smem_bytes_per_block, **case.options)
    assert near_ties(wl, plan, inputs) == 0              # so the buckets must agree exactly
    assert np.array_equal(out["buckets"], cpu.outputs["buckets"])
    assert np.array_equal(out["perm"], cpu.outputs["perm"])
    o = ports.from_storage(out["o"], wl.dtype)
    assert not np.isnan(o).any()
    err = relative_error(o, cpu.outputs["o"])
    assert err < ports.ERROR_TARGETS[wl.dtype], err


# ---- the radix sort on many CTAs -------------------------------------------------------------

def sort_spec(keys: np.ndarray, tile: int, passes: int) -> ports.PortLaunches:
    """The port's sort launches alone on given (B, H, rounds, N) keys, tiles of ``tile``."""
    b, h, rounds, n = keys.shape
    wl = Workload(batch=b, heads=h, seq_q=n, head_dim=64)
    plan = SimpleNamespace(hashes=rounds, sort_tile=tile, sort_passes=passes)
    tensors = sort_tensors(wl, plan)
    positions = np.broadcast_to(np.arange(n, dtype=np.int32), keys.shape).copy()
    tensors["buckets"] = ports.Tensor(keys.shape, "int32", "const", data=keys.astype(np.int32))
    tensors["positions"] = ports.Tensor(keys.shape, "int32", "const", data=positions)
    launches = sort_launches(wl, plan, {"SORT_TILE": tile, "HASHES": rounds})
    return ports.PortLaunches("reformer", tensors, tuple(launches),
                              outputs=("sorted_keys", "perm"))


def sort_keys(passes: int, n: int = 2000, seed: int = 0) -> np.ndarray:
    """(1, 1, 2, n) keys with many equal ones (stability shows) that need ``passes`` digits."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 600 * 256 ** (passes - 2), size=(1, 1, 2, n))


@pytest.mark.parametrize("passes", [2, 3])
def test_emulated_sort_chains_many_tiles(passes):
    """8 CTAs per segment (the last one ragged), 2 segments: stable, as np.argsort."""
    keys = sort_keys(passes)
    assert keys.max() >= 2 ** (8 * (passes - 1))         # the top digit is used
    out = emulate_mod.emulate(sort_spec(keys, 256, passes), None)
    expected = np.argsort(keys, axis=-1, kind="stable")
    assert np.array_equal(out["perm"], expected)
    assert np.array_equal(out["sorted_keys"], np.take_along_axis(keys, expected, axis=-1))


INCLUSIVE_PUBLISH = ("    if (tile > 0) attn_st_flag(&flag[tile * RADIX + d], "
                     "FLAG_INCLUSIVE | (exclusive + mine));\n")
ATOMIC_TILE_ID = "tile_s = atomicAdd(&tile_counter[sp], 1);"


def edited(old, new):
    def edit(text):
        assert old in text, "reformer.cu changed: update the edit"
        return text.replace(old, new)
    return {"reformer.cu": edit}


def test_emulated_sort_look_back_over_aggregates_alone():
    """With no tile but the first publishing an inclusive prefix, every CTA walks back to
    tile 0 adding aggregates: the look-back's slow path gives the same sort."""
    keys = sort_keys(2, seed=1)
    out = emulate_mod.emulate(sort_spec(keys, 256, 2), None, edit=edited(INCLUSIVE_PUBLISH, ""))
    assert np.array_equal(out["perm"], np.argsort(keys, axis=-1, kind="stable"))


def test_emulator_stops_a_look_back_on_a_cta_that_has_not_run():
    """Tile ids from blockIdx in reverse instead of the atomic counter: tile t waits on tiles
    that start after it. The emulator runs CTAs one at a time and stops (status 9) rather
    than spin; on a GPU this order can hang whenever those CTAs are not resident."""
    spec = sort_spec(sort_keys(2), 256, 2)
    edit = edited(ATOMIC_TILE_ID, "tile_s = gridDim.x - 1 - blockIdx.x;")
    with pytest.raises(emulate_mod.EmulationError, match="has not started") as err:
        emulate_mod.emulate(spec, None, edit=edit)
    assert err.value.status == 9


def test_emulator_catches_a_missing_barrier_in_reformer_attn():
    """Without the barrier after the score and P V MMAs, a warp writes its O rows into the Q
    tile while other warps may still read those rows as keys."""
    case = EMULATED[0]
    wl, gpu = case.workload, get_gpu("h100-sxm")
    plan = reformer.plan(wl, gpu, gpu.smem_bytes_per_block, **case.options)
    spec = ports.port_launches("reformer", wl, plan, gpu=gpu)
    assert_removal_is_caught(spec, make_inputs(wl, seed=1), "reformer.cu", "this test",
                             "    __syncthreads();                                  // every "
                             "warp is done with the Q tile\n")
