"""Cost and accuracy side by side: sweep an approximate algorithm's feature / hash count,
on inputs with structure (``attnsim.inputs`` families), and the report's tables.

    >>> from attnsim import Workload
    >>> from attnsim.approx_sweep import error_by_family, sweep_accuracy
    >>> rows = sweep_accuracy("performer", Workload(seq_q=256, head_dim=64), "features",
    ...                       [16, 64, 256], seeds=(0, 1, 2), family="clustered")
    >>> [(r["value"], r["hbm_bytes"], r["error_vs_exact"]) for r in rows]
    >>> error_by_family("reformer", Workload(seq_q=256, head_dim=64), options={"hashes": 4})

On the ``normal`` family (standard-normal Q, K) attention is diffuse and the exact output
near zero: relative errors there measure noise against almost nothing.
"""
from __future__ import annotations

import numpy as np

from algorithms.base import PlanError
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
    ("performer", "m = 16, orthogonal", {"features": 16}, False),
    ("performer", "m = 256, orthogonal", {"features": 256}, False),
    ("performer", "m = 256, i.i.d.", {"features": 256, "features_kind": "iid"}, False),
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
        record = {"algorithm": algorithm, "setting": setting, "options": options,
                  "causal": causal, "workload": wl.to_dict()}
        try:
            rows = error_by_family(algorithm, wl, gpu, families, seeds, options)
        except (PlanError, ValueError) as exc:
            # a setting this GPU cannot plan (little shared memory) is a row of its own,
            # with the reason, as the report's per-algorithm table has them
            records.append({**record, "errors": None, "error": " ".join(str(exc).split())})
            continue
        records.append({**record, "errors": {r["family"]: r["error_vs_exact"] for r in rows}})
    return records




def kernel_mse(features: int = 16, head_dim: int = 16, draws: int = 4000, pairs: int = 6,
               norm_sd: float = 0.15, seed: int = 0) -> dict:
    """Performer's claim at its source (Choromanski et al. 2021, Theorem 2: orthogonal rows
    of W give the positive-feature estimate φ(x)·φ(y) of exp(x·y) a smaller mean squared
    error than i.i.d. rows): the MSE relative to exp(x·y) over ``draws`` projections of
    each kind, for ``pairs`` pairs (x, y) with N(0, norm_sd² I) entries.

    The estimator is a mean of log-normal terms whose tail grows as exp(|x + y|²): at
    |x + y|² of several units a sample MSE from thousands of draws swings by factors of
    ten from seed to seed and says nothing; the default norms (|x + y|² ≈ 0.7) keep it
    estimable, and the orthogonal rows' advantage (about 0.8x) shows on every pair.
    Return: {"features", "head_dim", "norm_sd", "orthogonal", "iid" (mean MSE over the
    pairs), "ratio_per_pair"}."""
    from algorithms.performer import iid_gaussian, orthogonal_gaussian
    rng = np.random.default_rng([seed, 2])
    z = (rng.standard_normal((pairs, head_dim)) + rng.standard_normal((pairs, head_dim))) \
        * norm_sd                                                        # x + y per pair
    mse = {}
    for name, draw in (("orthogonal", orthogonal_gaussian), ("iid", iid_gaussian)):
        err = np.zeros(pairs)
        for t in range(draws):
            w = draw(features, head_dim, np.random.default_rng([seed, 3, t])).astype(np.float64)
            # φ(x)·φ(y) / exp(x·y) = mean_i exp(w_i·(x + y) - |x + y|²/2)
            est = np.exp(z @ w.T - 0.5 * (z * z).sum(axis=1, keepdims=True)).mean(axis=1)
            err += (est - 1.0) ** 2
        mse[name] = err / draws
    return {"features": features, "head_dim": head_dim, "norm_sd": norm_sd,
            "orthogonal": float(mse["orthogonal"].mean()), "iid": float(mse["iid"].mean()),
            "ratio_per_pair": [float(r) for r in mse["orthogonal"] / mse["iid"]]}
