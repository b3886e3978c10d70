"""The report's sweep gives the same results in worker processes as in one process."""
from __future__ import annotations

import pickle

import pytest

from attnsim import Workload, simulate, suite
from hwmodels import get_gpu

SMALL = Workload(batch=1, heads=4, kv_heads=2, seq_q=512, head_dim=64)


def _table(rows, series):
    return ([(r.name, r.result.counts, r.result.time.predicted_s,
              r.accuracy.error_vs_reference if r.accuracy else None) for r in rows],
            [(s.name, s.seqs, s.hbm_bytes) for s in series])


@pytest.mark.parametrize("names", [["flash2", "gqa", "linear"], ["flash2"]])
def test_sweep_in_workers_equals_the_serial_sweep(names):
    gpu = get_gpu("h100")
    serial = suite.sweep(gpu, SMALL, (256, 512), names, jobs=1)
    forked = suite.sweep(gpu, SMALL, (256, 512), names, jobs=2)
    assert [r.name for r in forked[0]] == names        # registry order kept
    assert _table(*forked) == _table(*serial)


def test_families_cover_each_name_once_and_keep_unknown_names():
    groups = suite._families(["reformer", "flash2", "rfa", "linear", "newcomer"])
    assert sorted(n for g in groups for n in g) == ["flash2", "linear", "newcomer", "reformer",
                                                    "rfa"]
    assert ("rfa", "linear") in groups and ("newcomer",) in groups   # one family, asked order


def test_sim_results_pickle_with_their_info():
    r = simulate("flash3", SMALL, "h100", compute=False)     # INFO holds validator lambdas
    back = pickle.loads(pickle.dumps(r))
    assert back.info is r.info and back.counts == r.counts


def test_the_sweep_runs_in_one_worker_per_cpu():
    assert suite.default_jobs() == suite.available_cpus() >= 1
