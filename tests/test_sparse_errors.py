"""Bad parameters of the sparse algorithms fail in plan(), before any kernel runs, with a
message naming the option and the fix."""
import json

import numpy as np
import pytest

import algorithms.kernels.block_sparse_exec as executor
import algorithms.sparse_transformer as sparse_transformer
from algorithms.base import PlanError
from attnsim import Workload, simulate
from attnsim.cli import main
from hwmodels.memory import SramOverflowError

WL = Workload(seq_q=1000, head_dim=64)


@pytest.fixture(autouse=True)
def no_kernel(monkeypatch):
    """Any error must come before the kernel: make reaching it a failure of its own."""
    def refuse(*args, **kwargs):
        raise AssertionError("the kernel ran before the parameters were rejected")
    monkeypatch.setattr(executor, "run_layout", refuse)
    # it binds the name when imported (above, before any patch): patched where it looks
    monkeypatch.setattr(sparse_transformer, "run_layout", refuse)


@pytest.mark.parametrize("alg,options,wl,match", [
    ("local", {"window": 0}, WL, r"--window must be a positive integer"),
    ("local", {"window": -3}, WL, r"--window must be a positive integer"),
    ("longformer", {"window": 0}, WL, r"--window must be a positive integer"),
    ("longformer", {"global_tokens": 1001}, WL, r"--global-tokens 1001 exceeds the 1000 keys"),
    ("longformer", {"global_tokens": -1}, WL, r"--global-tokens must be >= 0"),
    ("sparse_transformer", {"stride": 0}, WL, r"--stride must be a positive integer"),
    ("sparse_transformer", {"pattern": "fixed", "stride": 16, "summary": 17}, WL,
     r"--summary 17 exceeds the block \(--stride 16\)"),
    ("sparse_transformer", {"pattern": "dilated"}, WL, r"--pattern must be one of strided, fixed"),
    ("sparse_transformer", {"summary": 4}, WL, r"--summary applies to --pattern fixed"),
    ("bigbird", {"seed": -1}, WL, r"--seed must be a non-negative integer"),
    ("block_sparse", {"seed": -5}, WL, r"--seed must be a non-negative integer"),
    ("bigbird", {"window_blocks": 2}, WL, r"--window-blocks must be odd"),
    ("bigbird", {"block": 0}, WL, r"--block must be a positive integer"),
    ("bigbird", {"global_blocks": 17, "random_blocks": 0}, WL,
     r"--global-blocks 17 exceeds the 16 blocks of 64 tokens"),
    ("bigbird", {}, Workload(seq_q=1000, seq_k=2000, head_dim=64), r"needs seq_q == seq_k"),
    ("block_sparse", {"density": 0.0}, WL, r"--density must be in \(0, 1\]"),
    ("block_sparse", {"density": 1.5}, WL, r"--density must be in \(0, 1\]"),
    ("block_sparse", {"density": -0.2}, WL, r"--density must be in \(0, 1\]"),
    ("block_sparse", {"block": 0}, WL, r"--block must be a positive integer"),
    ("block_sparse", {"mask_file": "/nonexistent/m.npy"}, WL, r"does not exist"),
    ("masked_dense", {"mask_of": "local", "stride": 3}, WL, r"--mask-of local takes --window"),
    ("masked_dense", {"mask_of": "longformer", "window": 0}, WL, r"--window must be a positive"),
])
def test_bad_parameters_raise_before_the_kernel(alg, options, wl, match):
    with pytest.raises(PlanError, match=match):
        simulate(alg, wl, "h100", options=options, compute=False)


def test_block_too_large_for_sram():
    with pytest.raises(SramOverflowError, match=r"use a smaller --block"):
        simulate("block_sparse", Workload(seq_q=4096, head_dim=128), "h100",
                 options={"block": 512}, compute=False)


@pytest.mark.parametrize("alg,options,seq", [
    ("sparse_transformer", {}, 2**24),               # N^1.5 at 16M tokens: 5e8 tiles
    ("sparse_transformer", {"stride": 1}, 2**20),    # every tile of 1M tokens
    ("block_sparse", {"block": 16}, 2**20),          # 65,536 x 6,554 random tiles
])
def test_a_pattern_too_large_to_enumerate_is_refused_before_it_is_drawn(alg, options, seq):
    """Count-only mode still visits every tile: a pattern of more than 2**24 tiles would take
    minutes and gigabytes, so it is refused at once with the flags that shrink it."""
    with pytest.raises(PlanError, match=r"tiles over [\d,]+ query blocks, more than the "
                                        r"16,777,216 the simulator enumerates"):
        simulate(alg, Workload(seq_q=seq, head_dim=64), "h100", options=options,
                 compute=False)


@pytest.mark.parametrize("content,match", [
    (np.ones((3, 8), dtype=bool), r"holds a \(3, 8\) mask but --block 128 tiles this workload "
                                  r"into \(8, 8\) blocks"),
    (np.full((8, 8), 0.5), r"must hold booleans"),
    (np.zeros((8, 8), dtype=bool), r"has no non-zero block"),
])
def test_bad_mask_files(tmp_path, content, match):
    path = tmp_path / "mask.npy"
    np.save(path, content)
    with pytest.raises(PlanError, match=match):
        simulate("block_sparse", Workload(seq_q=1000, head_dim=64), "h100",
                 options={"mask_file": str(path)}, compute=False)


def test_cli_reports_the_error_and_the_pattern(capsys, monkeypatch):
    monkeypatch.undo()          # this test runs the kernel (count-only)
    assert main(["run", "local", "--seq", "1000", "--window", "0", "--count-only"]) == 2
    assert "--window must be a positive integer" in capsys.readouterr().err
    assert main(["run", "longformer", "--seq", "3000", "--window", "256", "--global-tokens",
                 "4", "--count-only", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["options"] == {"window": 256, "global_tokens": 4}
    assert doc["pattern"]["global_tokens"] == 4
    assert 0 < doc["pattern"]["density"] < doc["pattern"]["block_density"] < 1
    assert "mask" not in doc
