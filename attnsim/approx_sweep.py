"""Cost and accuracy side by side: sweep an approximate algorithm's feature / hash count.

    >>> from attnsim import Workload
    >>> from attnsim.approx_sweep import sweep_accuracy
    >>> rows = sweep_accuracy("performer", Workload(seq_q=256, head_dim=16), "features",
    ...                       [16, 64, 256], seeds=(0, 1, 2))
    >>> [(r["value"], r["hbm_bytes"], r["error_vs_exact"]) for r in rows]
"""
from __future__ import annotations

import numpy as np

from attnsim.inputs import FAMILIES, make_inputs
from attnsim.simulate import simulate
from attnsim.workload import Workload

SWEEP_OPTION = {"rfa": "features", "performer": "features", "reformer": "hashes"}


def sweep_accuracy(algorithm: str, workload, option: str | None = None, values=(),
                   gpu="h100", seeds=(0,), options: dict | None = None,
                   input_seed: int = 0, magnitude: float = 1.0,
                   family: str = "normal") -> list[dict]:
    """One row per value of ``option``: counted cost (the same for every seed) and the
    relative Frobenius error against exact softmax attention, averaged over ``seeds`` of
    the random features / hashes, on one fixed set of inputs.

    Arguments:
        algorithm: ``rfa``, ``performer`` or ``reformer`` (or any algorithm with a
            ``seed`` option).
        workload: the shapes; keep N small, every point runs in executed mode.
        option: the swept option (default: features for rfa/performer, hashes for reformer).
        values: the option's values, e.g. (16, 64, 256).
        seeds: seeds of the random projection / rotations to average over.
        options: other fixed options of the algorithm.
        input_seed, magnitude, family: the inputs (``make_inputs``; ``family`` one of
            ``attnsim.inputs.FAMILIES``: errors on ``normal`` inputs measure noise against
            a near-zero output, the structured families measure the approximation).
    Return:
        [{"value", "hbm_bytes", "flops", "predicted_s", "error_vs_exact",
          "error_vs_exact_per_seed"}, ...]
    """
    option = option or SWEEP_OPTION[algorithm]
    inputs = make_inputs(workload, input_seed, magnitude, family=family)
    rows = []
    for value in values:
        errors, result = [], None
        for seed in seeds:
            opts = {**(options or {}), option: value, "seed": seed}
            result = simulate(algorithm, workload, gpu, options=opts, inputs=inputs)
            errors.append(result.error_vs_exact)
        rows.append({"value": value, "hbm_bytes": result.hbm_bytes, "flops": result.flops,
                     "predicted_s": result.time.predicted_s,
                     "error_vs_exact": float(np.mean(errors)),
                     "error_vs_exact_per_seed": [float(x) for x in errors]})
    return rows


def error_by_family(algorithm: str, workload, gpu="h100", families=FAMILIES, seeds=(0,),
                    options: dict | None = None, input_seed: int = 0) -> list[dict]:
    """``error_vs_exact`` of one configuration on each input family, averaged over
    ``seeds`` of the algorithm's randomness: [{"family", "error_vs_exact",
    "error_vs_exact_per_seed"}, ...]."""
    rows = []
    for family in families:
        inputs = make_inputs(workload, input_seed, family=family)
        errors = [simulate(algorithm, workload, gpu, inputs=inputs,
                           options={**(options or {}), "seed": seed}).error_vs_exact
                  for seed in seeds]
        rows.append({"family": family, "error_vs_exact": float(np.mean(errors)),
                     "error_vs_exact_per_seed": [float(x) for x in errors]})
    return rows


# The report's table: each approximate algorithm at a cheap and a generous setting, so that
# the rows show the error falling with features / hashes on every family.
REPORT_WORKLOAD = Workload(batch=1, heads=1, seq_q=256, head_dim=64, dtype="fp16")
REPORT_CONFIGS = (
    ("performer", "m = 64, orthogonal", {"features": 64}, False),
    ("performer", "m = 64, i.i.d.", {"features": 64, "features_kind": "iid"}, False),
    ("performer", "m = 256, orthogonal", {"features": 256}, False),
    ("rfa", "D = 16", {"features": 16}, False),
    ("rfa", "D = 256", {"features": 256}, False),
    ("rfa", "D = 256, gated (causal)", {"features": 256, "gate": True}, True),
    ("reformer", "1 hash", {"hashes": 1}, False),
    ("reformer", "4 hashes", {"hashes": 4}, False),
)
REPORT_SEEDS = (0, 1, 2)


def family_error_table(gpu="h100", workload=REPORT_WORKLOAD, configs=REPORT_CONFIGS,
                       seeds=REPORT_SEEDS, families=FAMILIES) -> list[dict]:
    """``error_vs_exact`` of each (algorithm, setting) on each input family, averaged over
    ``seeds`` of the algorithm's randomness (inputs from seed 0):
    [{"algorithm", "setting", "options", "causal", "errors": {family: error}}, ...]."""
    records = []
    for algorithm, setting, options, causal in configs:
        wl = workload.replace(causal=causal)
        rows = error_by_family(algorithm, wl, gpu, families, seeds, options)
        records.append({"algorithm": algorithm, "setting": setting, "options": options,
                        "causal": causal, "workload": wl.to_dict(),
                        "errors": {r["family"]: r["error_vs_exact"] for r in rows}})
    return records
