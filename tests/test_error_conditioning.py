"""The executed error's conditioning: large logits make the comparison with the float64
reference ill-conditioned, and the run says so (attnsim.conditioning)."""
import json
import re

import numpy as np
import pytest

from attnsim import Workload, make_inputs, simulate
from attnsim import conditioning
from attnsim.cli import main
from attnsim.reference import expand_kv

RUN = ["run", "flash2", "--seq", "128", "--head-dim", "32", "--heads", "2"]


def test_the_largest_logit_is_found_in_every_chunk_and_group(monkeypatch):
    """Against the float64 definition over all heads, with GQA (two query heads per key
    head) and chunks far smaller than a head's logits."""
    wl = Workload(batch=2, heads=4, kv_heads=2, seq_q=37, seq_k=53, head_dim=8)
    x = make_inputs(wl, 5)
    s = np.asarray(x.q, np.float64) @ expand_kv(np.asarray(x.k, np.float64), 4).swapaxes(-1, -2)
    monkeypatch.setattr(conditioning, "CHUNK_ELEMENTS", 100)
    assert conditioning.max_abs_logit(x.q, x.k, 0.3) == pytest.approx(0.3 * np.abs(s).max(),
                                                                      rel=1e-6)


def test_ill_conditioned_from_logits_of_8192():
    """2¹³: where fp32's rounding of a logit (2⁻²⁴ relative) reaches fp16's unit roundoff."""
    def facts(logit):
        return conditioning.error_conditioning(np.full((1, 1, 1, 1), logit, np.float32),
                                               np.ones((1, 1, 1, 1), np.float32), 1.0)
    assert not facts(8191.0)["ill_conditioned"] and facts(8191.0)["warning"] is None
    big = facts(-8192.0)                 # a large negative logit rounds as much
    assert big["ill_conditioned"] and big["fp32_logit_rounding"] == 2.0 ** -11
    assert "lower --scale" in big["warning"]


def test_a_normal_run_is_well_conditioned_and_scale_10000_is_not():
    wl = Workload(batch=1, heads=2, seq_q=128, head_dim=32, passes="fwd+bwd")
    normal = simulate("standard", wl, "h100")
    assert normal.extra["error_conditioning"]["ill_conditioned"] is False
    assert normal.extra["error_conditioning"]["warning"] is None
    assert normal.extra["error_conditioning"]["max_abs_logit"] < 30
    large = simulate("standard", wl.replace(scale=10_000.0), "h100")
    facts = large.extra["error_conditioning"]
    assert facts["ill_conditioned"] is True and facts["max_abs_logit"] > 8192
    # what the warning is for: an exact algorithm's error far above its usual 1e-6
    assert large.error_vs_reference > 1e-3 and "conditioning" in facts["warning"]
    assert "error_conditioning" not in simulate("standard", wl, "h100", compute=False).extra


def test_the_cli_warns_once_and_json_carries_the_facts(capsys):
    assert main(RUN + ["--format", "json"]) == 0
    out, err = capsys.readouterr()
    data = json.loads(out)
    assert err == "" and data["error_conditioning"]["warning"] is None
    assert data["error_vs_reference"] < 1e-5                       # the key stays
    assert main(RUN + ["--scale", "10000", "--format", "json"]) == 0
    out, err = capsys.readouterr()
    data = json.loads(out)
    assert data["error_conditioning"]["ill_conditioned"] is True
    assert err.count("\n") == 1 and err.startswith("attnsim: warning: the logits reach")
    assert data["error_conditioning"]["warning"] in err
    assert main(RUN + ["--scale", "10000"]) == 0
    out, err = capsys.readouterr()
    assert re.search(r"ill_conditioned +True", out) and err.startswith("attnsim: warning:")
    assert main(RUN + ["--count-only", "--format", "json"]) == 0
    assert "error_conditioning" not in json.loads(capsys.readouterr().out)
