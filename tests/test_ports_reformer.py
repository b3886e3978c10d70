"""The Reformer port's declaration (algorithms/ports/reformer.py), checked on the CPU: the
rotations, the sort's passes and scratch, refusals, and gpu-check's reference rule.
"""

import numpy as np
import pytest

from algorithms import ports
from attnsim import gpu as backend
from attnsim import gpu_check
from hwmodels import get_gpu
from attnsim import make_inputs
from port_cases import workload
from port_plans import plan_of


# ---- reformer --------------------------------------------------------------------------------

def test_reformer_rotations_are_the_modules_transposed():
    """R is "const" data: reformer.rotations for the inputs' seed (stored values), as R_rᵀ."""
    from algorithms import reformer
    gpu, wl = get_gpu("h100-sxm"), workload((1, 2, 2, 192, 192, 64, True))
    plan = plan_of("reformer", wl, gpu, {"bucket_size": 32})
    spec = ports.port_launches("reformer", wl, plan, gpu=gpu)
    inputs = make_inputs(wl, seed=7)
    rot_t = ports.const_data(spec.tensors["rot_t"], inputs)
    assert spec.tensors["rot_t"].shape == rot_t.shape == (4, plan.rotation_cols, 64)
    assert np.array_equal(rot_t, reformer.rotations(plan, 64, inputs, "fp16").transpose(0, 2, 1))
    assert spec.tensors["factors"].data.tolist() == list(plan.factors) == [6]
    assert "k" not in spec.tensors                     # shared QK: K is never read
    assert spec.outputs == ("o", "buckets", "perm")


def test_reformer_sort_passes_chain_through_scratch():
    """512 buckets (factors 128 x 4): 9 bits, two digit passes; 32768 keys in 8 sort tiles.
    Pass 0 reads the hash's output and writes a scratch pair, pass 1 reads it and writes the
    sorted keys and the permutation the attention reads; the sort's flags, counters and
    histograms are zero-filled for every run."""
    gpu, wl = get_gpu("h100-sxm"), workload((1, 1, 1, 32768, 32768, 64, True))
    plan = plan_of("reformer", wl, gpu, {"bucket_size": 64, "hashes": 2})
    assert plan.factors == (128, 4) and plan.sort_passes == 2 and plan.sort_tile == 4096
    spec = ports.port_launches("reformer", wl, plan, gpu=gpu)
    assert [l.sim_kernel for l in spec.launches] == [
        "reformer_hash", "reformer_sort_hist", "reformer_sort_pass0", "reformer_sort_pass1",
        "reformer_attn", "reformer_combine"]
    hist, pass0, pass1 = spec.launches[1:4]
    assert hist.grid == pass0.grid == (8, 2, 1) and pass0.smem_bytes == 4096 * 8
    assert pass0.args[:4] == ("buckets", "positions", "keys_tmp0", "vals_tmp0")
    assert pass1.args[:4] == ("keys_tmp0", "vals_tmp0", "sorted_keys", "perm")
    assert [a.value for a in pass1.args[-3:]] == [32768, 2, 1]
    for name in ("sort_hist", "sort_tiles", "sort_flags"):
        assert spec.tensors[name].fill == 0
    assert spec.tensors["sort_flags"].shape == (2, 2, 8, 256)


@pytest.mark.parametrize("bucket_size, n, words", [(24, 192, "multiple of 16"),
                                                   (128, 512, "<= 64")])
def test_reformer_port_refuses_chunks_it_cannot_tile(bucket_size, n, words):
    gpu, wl = get_gpu("h100-sxm"), workload((1, 1, 1, n, n, 32, False))
    plan = plan_of("reformer", wl, gpu, {"bucket_size": bucket_size})
    with pytest.raises(ports.PortUnsupported, match=words):
        ports.port_launches("reformer", wl, plan)


def test_gpu_check_reformer_uses_the_cpu_run_while_its_linear_cost_fits(monkeypatch):
    """reformer's CPU run costs N 2C rounds per head (not N²): with --cpu-check-max-n 400
    the defaults (C = 64, 4 rounds) are checked at N = 256 (131,072 <= 160,000) and not at
    512, where the note says why; buckets and perm are compared besides o."""
    seen = {}

    def fake_run_port(spec, inputs, reference=None, **kw):
        seen["reference"] = reference
        return backend.PortRun(algorithm=spec.algorithm, median_s=1e-3, times_s=[1e-3],
                               rel_error=0.0 if reference else None, copies=2,
                               rel_errors={n: 0.0 for n in reference} if reference else None)

    monkeypatch.setattr(backend, "run_port", fake_run_port)
    gpu = get_gpu("h100-sxm")
    base = workload((1, 1, 1, 256, 256, 64, False))
    row = gpu_check.check_one("reformer", base, gpu, cpu_max_n=400, sdpa=False)
    assert row["error_vs"] == "cpu" and set(seen["reference"]) == {"o", "buckets", "perm"}
    row = gpu_check.check_one("reformer", base.replace(seq_q=512, seq_k=512), gpu,
                              cpu_max_n=400, sdpa=False)
    assert seen["reference"] is None and "N 2C rounds > 400²" in row["note"]
