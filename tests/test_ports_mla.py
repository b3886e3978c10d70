"""MLA's up-projected decode port (algorithms/ports/decode.py, mla_upproject.cu), checked on the
CPU: the bytes its loops move against the simulator's count, the device reference, refusals.
"""

import pytest

from algorithms import ports
from attnsim import gpu as backend
from attnsim.simulate import simulate
from hwmodels import get_gpu
from attnsim import make_inputs
from port_cases import PORT_CASES, workload
from port_plans import NumpyAsCupy, plan_of


# ---- mla --path upproject: the port's loads and stores vs the simulator's count -------------

def mla_upproject_port_hbm_bytes(wl, plan, launches) -> dict:
    """{sim kernel: (read, written)} bytes of mla_upproject.cu's loops, mirrored from the
    declared grids: the GEMM CTA's A and B panels (rows past M, N zero-filled, not read) and C
    tile; the attention CTA's Q rows, its key blocks' K (d_h + d_h^R: K^C and k^R) and V
    (d_h) rows up to the split's end, and its O or fp32 partial + lse; the combine's rows."""
    e, d, d_r, d_c = 2, wl.head_dim, plan.rope_dim, plan.kv_lora_rank
    tm, tn, bq, bk = plan.gemm_tile_m, plan.gemm_tile_n, plan.block_q, plan.block_k
    by = {l.kernel: l for l in launches}
    out = {}
    gx, gy, gz = by["mla_upproject"].grid
    n_out, read = 2 * wl.heads * d, 0
    for x in range(gx):
        for y in range(gy):
            rows, cols = min(tm, wl.seq_k - y * tm), min(tn, n_out - x * tn)
            read += (rows + cols) * d_c * e
    out["mla_upproject"] = (gz * read, wl.batch * wl.seq_k * n_out * e)
    splits, ctas = by["mla_up_attn"].grid[:2]
    t_r = -(-wl.seq_q // bq)
    blocks = -(-wl.seq_k // bk)
    read = written = 0
    for s in range(splits):
        k_lo = s * blocks // splits * bk
        k_hi = min(wl.seq_k, (s + 1) * blocks // splits * bk)
        for rb in range(t_r):
            r0, r1 = rb * bq, min(rb * bq + bq, wl.seq_q)
            end = min(k_hi, max(0, r1 + wl.seq_k - wl.seq_q)) if wl.causal else k_hi
            read += (r1 - r0) * (d + d_r) * e
            for c0 in range(k_lo, end, bk):
                read += min(bk, k_hi - c0) * (2 * d + d_r) * e
            written += (r1 - r0) * (d * (4 if splits > 1 else e) + 4)
    bh = ctas // t_r
    out["mla_attn"] = (bh * read, bh * written)
    if splits > 1:
        out["splitkv_combine"] = (bh * splits * wl.seq_q * (d + 1) * 4,
                                  bh * wl.seq_q * (d * e + 4))
    return out


@pytest.mark.parametrize("case", [c for c in PORT_CASES
                                  if c.options.get("path") == "upproject"], ids=lambda c: c.id)
def test_mla_upproject_port_moves_the_simulators_hbm_bytes(case):
    """No copy of k^R and no other extra: every kernel reads and writes what it is counted."""
    gpu, wl = get_gpu("a100-40gb"), case.workload
    plan = plan_of("mla", wl, gpu, case.options)
    spec = ports.port_launches("mla", wl, plan, gpu=gpu)
    sim = simulate("mla", wl, gpu, compute=False, options=case.options)
    counted = {k.name: (k.counts()["hbm_read_bytes"], k.counts()["hbm_write_bytes"])
               for k in sim.kernels}
    assert mla_upproject_port_hbm_bytes(wl, plan, spec.launches) == counted


@pytest.mark.parametrize("causal, new", [(False, 1), (True, 3)])
def test_mla_device_reference_is_the_definition(monkeypatch, causal, new):
    """gpu-check's large-N reference for mla (either path): the up-projected K, V and softmax
    attention by definition, one head at a time (numpy standing in for the device)."""
    from algorithms import mla
    from attnsim.reference import attention_reference, relative_error
    monkeypatch.setattr(backend, "_require_cupy", lambda: NumpyAsCupy())
    wl = workload((2, 4, 4, new, 90, 32, causal), decode=True)
    inputs = make_inputs(wl, seed=3)
    for path in mla.PATHS:
        plan = plan_of("mla", wl, get_gpu("h100-sxm"), {"path": path, "kv_lora_rank": 64,
                                                        "rope_dim": 16})
        q, k, v = mla.up_projected(wl, mla.mla_inputs(wl, plan, inputs))
        exact, _ = attention_reference(q, k, v, causal=causal, scale=plan.scale)
        ours = backend.mla_device_reference(wl, plan, inputs)
        assert ours.shape == (2, 4, new, 32) and relative_error(ours, exact) < 1e-5


@pytest.mark.parametrize("options, tiles, words", [
    ({"rope_dim": 12}, {}, "multiples of 8"),
    ({"kv_lora_rank": 100}, {}, "multiples of 8"),
    ({}, {"gemm_tile_m": 16, "gemm_tile_n": 16}, "GEMM tiles"),   # plan_gemm's smallest tile
])
def test_mla_upproject_port_refuses_what_it_cannot_run(options, tiles, words):
    """Before anything is compiled, with the reason and the fix."""
    from dataclasses import replace
    wl = workload((1, 4, 4, 1, 200, 64, False), decode=True)
    plan = replace(plan_of("mla", wl, get_gpu("h100-sxm"), {"path": "upproject", **options}),
                   **tiles)
    with pytest.raises(ports.PortUnsupported, match=words):
        ports.port_launches("mla", wl, plan)
