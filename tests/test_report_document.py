"""The report as a document with figures: ``report --output DIR/report.md|.html``, the
figures it references, GPUs side by side, the design-point section, and the text-only
fallback without matplotlib."""
import json
import re

import pytest

from attnsim import suite
from attnsim.cli import main
from attnsim.workload import Workload
from hwmodels import get_gpu

SMALL = ["--batch", "1", "--heads", "2", "--seq", "512", "--seqs", "256,512,1024",
         "--no-accuracy"]


def run_cli(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def referenced_images(text: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)


def test_markdown_document_writes_the_figures_it_references(capsys, tmp_path):
    """The sample's command (docs/report-h100.md), on a reduced configuration."""
    pytest.importorskip("matplotlib")
    out = tmp_path / "out" / "report.md"
    out.parent.mkdir()
    code, _, err = run_cli(capsys, "report", "--hw", "h100", "--algorithms",
                           "standard,flash2,flash3", *SMALL, "--output", str(out))
    assert code == 0, err
    text = out.read_text()
    images = referenced_images(text)
    assert [i.split("/")[-1] for i in images] == [
        "roofline.png", "time_terms.png", "growth.png", "time_vs_n.png", "resident_hbm.png",
        "throughput.png",
        "decode.png"]
    for rel in images:
        assert rel.startswith("report/")
        png = out.parent / rel
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    # each figure sits under the table it illustrates
    assert text.index("| flash3") < text.index("report/roofline.png") < text.index(
        "## Where the time goes")
    assert "## FlashAttention-2/3 throughput against N" in text
    assert "designed to win" not in text          # no NSA, GQA or MLA in this subset
    assert "wrote" in err and "7 figure files" in err


def test_html_document_and_svg(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "r.html"
    code, _, err = run_cli(capsys, "report", "--hw", "a100", "--algorithms", "flash2",
                           *SMALL, "--output", str(out), "--svg")
    assert code == 0, err
    html = out.read_text()
    assert html.startswith("<!DOCTYPE html>") and "<table>" in html
    srcs = re.findall(r'<img src="([^"]+)"', html)
    assert "r/roofline.png" in srcs
    for src in srcs:
        assert (tmp_path / src).is_file()
        assert (tmp_path / src.replace(".png", ".svg")).read_text().lstrip().startswith("<?xml")
    assert "flash3" not in {s.split("/")[-1] for s in srcs}


def test_without_matplotlib_the_document_says_how_to_get_figures(capsys, tmp_path,
                                                                  monkeypatch):
    import reports.document as document
    monkeypatch.setattr(document, "matplotlib_available", lambda: False)
    out = tmp_path / "report.md"
    code, _, err = run_cli(capsys, "report", "--algorithms", "flash2", *SMALL,
                           "--output", str(out))
    assert code == 0
    text = out.read_text()
    assert referenced_images(text) == []
    assert "pip install -e '.[plot]'" in text and "flash2" in text
    assert not (tmp_path / "report").exists()
    assert "no figures: matplotlib is not installed" in err


def test_svg_needs_a_document_and_plot_one_gpu(capsys, tmp_path):
    code, _, err = run_cli(capsys, "report", "--algorithms", "flash2", *SMALL, "--svg")
    assert code == 2 and err.count("\n") == 1
    assert "--svg writes figures beside a document" in err
    code, _, err = run_cli(capsys, "report", "--hw", "a100,h100", "--algorithms", "flash2",
                           *SMALL, "--plot", str(tmp_path / "g.png"))
    assert code == 2 and err.count("\n") == 1 and "give one --hw" in err


def test_gpus_side_by_side(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "report", "--hw", "a100,h100,h200", "--algorithms",
                           "flash2,flash3", *SMALL, "--format", "json")
    assert code == 0
    data = json.loads(out)
    assert [g["name"] for g in data["gpus"]] == ["a100-80gb", "h100-sxm", "h200"]
    by_gpu = {g: {a["algorithm"]: a for a in rows} for g, rows in data["algorithms"].items()}
    assert "error" in by_gpu["a100-80gb"]["flash3"]          # Hopper only: said, not hidden
    assert by_gpu["h100-sxm"]["flash2"]["time"]["predicted_s"] < \
        by_gpu["a100-80gb"]["flash2"]["time"]["predicted_s"]
    # how far each GPU's predictions have been from measured figures, each GPU its own rows
    # (the H200 has one FA-3 point)
    trust = data["validation"]
    assert {(r["gpu"], r["algorithm"]) for r in trust["h200"]} == {("h200", "flash3")}
    assert {r["gpu"] for r in trust["h100-sxm"]} == {"h100-sxm"}
    assert {r["algorithm"] for r in trust["a100-80gb"]} >= {"flash2"}
    code, out, _ = run_cli(capsys, "report", "--hw", "a100,h100", "--algorithms", "flash2",
                           *SMALL)
    assert "NVIDIA A100-SXM4-80GB" in out and "NVIDIA H100-SXM5-80GB" in out
    assert "fwd+bwd a100-80gb" in out
    assert "How far to trust the predicted times" in out
    code, out, _ = run_cli(capsys, "report", "--hw", "a100,h100", "--algorithms", "gqa",
                           *SMALL, "--format", "json")
    rows = json.loads(out)["designed_to_win"]
    assert [r["label"] for r in rows] == ["GQA-8 decode, 32K", "MQA decode, 32K"]
    assert all(r[g]["speedup_over_baseline"] > 1 for r in rows for g in ("a100-80gb",
                                                                         "h100-sxm"))


def test_design_points_set_our_number_beside_the_papers():
    gpu = get_gpu("h100")
    points = suite.run_design_points(gpu, suite.design_points(nsa_seqs=(8192,)))
    assert {p.algorithm for p in points} == {"nsa", "gqa", "mla"}
    for p in points:
        assert p.error is None and p.result is not None and p.baseline_result is not None
        assert "arXiv" in p.source and p.claim
        assert p.baseline_workload.heads == p.workload.heads
    nsa = next(p for p in points if p.algorithm == "nsa")
    assert (nsa.workload.heads, nsa.workload.kv_heads, nsa.workload.causal) == (64, 4, True)
    mla = next(p for p in points if p.algorithm == "mla")
    assert mla.result.extra["kv_cache"]["elements_per_token_per_layer"] == 512 + 64
    mqa = next(p for p in points if p.algorithm == "gqa" and p.workload.kv_heads == 1)
    # one K/V head read instead of 64: the cache read shrinks 64x, the bytes nearly so
    assert 40 < mqa.baseline_result.hbm_bytes / mqa.result.hbm_bytes <= 64
    from reports.designed import designed_section
    section, records = designed_section(points, gpu)
    assert len(section.tables[0].rows) == len(points) == len(records)
    assert all(r["speedup_over_baseline"] == pytest.approx(
        r["baseline_result"]["time"]["predicted_s"] / r["result"]["time"]["predicted_s"])
        for r in records)


def test_time_split_sums_to_the_prediction_and_terms_are_read_generically():
    from attnsim.simulate import simulate
    from reports.plots import predicted_split, timing_terms
    for name in ("flash1", "ring", "standard"):
        r = simulate(name, Workload(batch=1, heads=4, seq_q=2048, head_dim=64), "h100",
                     compute=False)
        split = predicted_split(r.time)
        assert sum(split.values()) == pytest.approx(r.time.predicted_s, rel=1e-12)
        terms = timing_terms(r.time)
        assert {"memory", "matmul", "exp", "other", "launch"} <= set(terms)
        assert "predicted" not in terms
        assert terms["memory"] == r.time.memory_s
        assert terms["alu"] == r.time.alu_s > 0          # the ALU pipe's term, read as well


def test_gpu_table_names_the_fma_and_alu_lanes():
    from reports.tables import gpu_table
    rows = dict(gpu_table(get_gpu("h100")).rows)
    assert rows["FMA / ALU lanes per SM"].startswith("128 / 64 ")
    assert dict(gpu_table(get_gpu("a100")).rows)["FMA / ALU lanes per SM"].startswith("64 / 64 ")


def test_roofline_ceilings_follow_the_gpu():
    """The ceilings are the timing model's achievable rates, read from the GPU's fields."""
    from reports.plots import roofline_ceilings
    a100, h100 = get_gpu("a100"), get_gpu("h100")
    mem, comp = roofline_ceilings(a100)
    assert mem["HBM"] == pytest.approx(a100.hbm_bandwidth_bytes_per_s
                                       * a100.hbm_achievable_fraction)
    assert "fp8 tensor" not in comp and "fp16 tensor, wgmma" not in comp
    assert comp["fp16 tensor, mma.sync"] == pytest.approx(          # no mma.sync derate
        a100.tensor_fp16_flops_per_s * a100.tensor_gemm_fraction)
    assert comp["fp32 CUDA cores"] == pytest.approx(2 * 64 * 108 * a100.sustained_clock)
    mem, comp = roofline_ceilings(h100)
    assert comp["fp16 tensor, mma.sync"] == pytest.approx(
        comp["fp16 tensor, wgmma"] * h100.mma_sync_fraction_of_peak)
    assert comp["fp8 tensor"] == pytest.approx(h100.tensor_fp8_flops_per_s
                                               * h100.tensor_fp8_gemm_fraction)
    assert comp["fp8 tensor"] < h100.tensor_fp8_flops_per_s


def test_resident_hbm_figure_draws_the_capacity():
    pytest.importorskip("matplotlib")
    from reports.plots import resident_hbm_figure
    gpu = get_gpu("h100")
    fig = resident_hbm_figure({"standard": [(4096, 3e9), (65536, 6e11)],
                               "flash2": [(4096, 1e8), (65536, 2e9)]}, gpu.hbm_bytes,
                              gpu.full_name)
    ax = fig.axes[0]
    assert any(list(line.get_ydata()) == [gpu.hbm_bytes] * 2 for line in ax.get_lines())
    assert resident_hbm_figure({}, gpu.hbm_bytes, gpu.full_name) is None


def test_error_against_cost_falls_with_more_features():
    pytest.importorskip("matplotlib")
    gpu = get_gpu("h100")
    wl = Workload(batch=1, heads=2, seq_q=1024, head_dim=64)
    records = suite.approx_cost_accuracy(gpu, wl, names={"rfa"})
    assert [r["value"] for r in records] == [16, 64, 256]
    errors = [r["error_vs_exact"] for r in records]
    times = [r["predicted_s"] for r in records]
    assert errors[0] > errors[1] > errors[2] > 0      # more features, closer to exact
    assert times[0] < times[1] < times[2]              # ... at a higher cost
    from reports.sweeps import approx_section
    section = approx_section(records, gpu)
    assert len(section.tables[0].rows) == 3 and section.figures[0].draw() is not None


def test_an_explicit_json_format_wins_over_a_markdown_file_name(capsys, tmp_path):
    out = tmp_path / "report.md"
    code, _, _ = run_cli(capsys, "report", "--algorithms", "flash2", *SMALL, "--format",
                         "json", "--output", str(out))
    assert code == 0
    assert json.loads(out.read_text())["algorithms"][0]["algorithm"] == "flash2"
    assert not (tmp_path / "report").exists()


def test_report_says_how_far_its_predictions_are_from_measured_ones():
    """The section quotes docs/validation.md's ranges for the report's GPU, row by row, and
    says when a GPU has no published figure rather than borrowing another's rows."""
    from reports.validation import load_summary, validation_section
    summary = load_summary()
    section, rows = validation_section(get_gpu("h100"))
    expected = [r for r in summary["rows"] if r["gpu"] == "h100-sxm"]
    assert rows == expected and {r["algorithm"] for r in rows} >= {"flash2", "flash3"}
    table = section.tables[0]
    assert [row[0] for row in table.rows] == [r["algorithm"] for r in expected]
    fp8 = next(row for row in table.rows if row[:2] == ["flash3", "fp8"])
    r = next(r for r in expected if r["dtype"] == "fp8")
    assert fp8[3] == f"{r['min']:.2f}–{r['max']:.2f}"
    a100_40, rows_40 = validation_section(get_gpu("a100-40gb"))
    assert not rows_40 and not a100_40.tables and "No published figure" in a100_40.paragraphs[0]


def test_report_quotes_the_predicted_speedups_measured_on_its_gpu(capsys):
    """Beside the points, the section quotes how far the model's speedups of one kernel or
    input type over another have been from the published ones on its GPU (a table titled as
    such, the summary's records in JSON); a GPU with none gets no such table."""
    from reports.validation import load_summary, switch_records, validation_section
    h100, _ = validation_section(get_gpu("h100"))
    expected = [s for s in load_summary()["switches"] if s["gpu"] == "h100-sxm"]
    assert expected and switch_records(["h100-sxm"]) == expected
    table = next(t for t in h100.tables if t.key == "validation_switches")
    assert [row[0] for row in table.rows] == [s["switch"] for s in expected]
    fp8 = next(s for s in expected if s["dtypes"] == ["fp16", "fp8"])
    row = table.rows[expected.index(fp8)]
    assert row[5] == f"{fp8['min']:.2f}–{fp8['max']:.2f}"
    h200, _ = validation_section(get_gpu("h200"))
    assert all(t.key != "validation_switches" for t in h200.tables)
    code, out, err = run_cli(capsys, "report", "--hw", "a100", "--algorithms", "flash2",
                             *SMALL, "--format", "json")
    assert code == 0, err
    records = json.loads(out)["validation_switches"]
    assert records and {s["gpu"] for s in records} == {"a100-80gb"}


def test_run_quotes_the_predicted_speedups_it_takes_part_in(capsys):
    """``attnsim run`` quotes the predicted speedups with its algorithm on one side and its
    input type on one side, on its GPU: FA-3 in fp8 its fp8-over-fp16 row only; FA-2 on the
    A100 its rows over FA-1 and over PyTorch eager; Algorithm 0 none."""
    code, out, err = run_cli(capsys, "run", "flash3", "--dtype", "fp8", "--seq", "3000",
                             "--count-only", "--format", "json")
    assert code == 0, err
    (fp8,) = json.loads(out)["validation_switches"]
    assert fp8["switch"] == "FlashAttention-3, fp8 over fp16" and "per_bar" not in fp8
    # d = 64 (the default), non-causal: the chart bar nearest N = 3000 on a log scale is 4096
    assert fp8["nearest_bar"]["bar"] == "d = 64, non-causal, N = 4096"
    code, out, err = run_cli(capsys, "run", "flash3", "--dtype", "fp8", "--seq", "3000",
                             "--head-dim", "96", "--count-only", "--format", "json")
    assert code == 0, err
    assert json.loads(out)["validation_switches"][0]["nearest_bar"] is None
    code, out, err = run_cli(capsys, "run", "flash2", "--hw", "a100", "--seq", "256",
                             "--count-only")
    assert code == 0, err
    assert ("FlashAttention-2 over FlashAttention (v1) (fwd+bwd)" in out
            and "FlashAttention-2 over PyTorch eager (fwd+bwd)" in out)
    code, out, err = run_cli(capsys, "run", "standard", "--seq", "256", "--count-only",
                             "--format", "json")
    assert code == 0, err
    assert json.loads(out)["validation_switches"] == []


def test_a_gpu_with_a_handful_of_points_is_pointed_to_the_gpus_with_more():
    """The H200's one measured point is quoted, and the section says it is one point and
    where the rest of the evidence for its mechanisms lies; the H100 SXM5, with hundreds,
    gets no such note."""
    from reports.validation import FEW_POINTS, validation_section
    h200, rows = validation_section(get_gpu("h200"))
    points = sum(r["points"] for r in rows)
    assert rows and h200.tables and points < FEW_POINTS
    note = h200.paragraphs[0]
    assert f"Only {points} published point" in note and "h100-sxm" in note
    assert "Only" not in validation_section(get_gpu("h100"))[0].paragraphs[0]
    one = next(r for r in rows if r["points"] == 1)      # one figure, not "1.20–1.20"
    assert h200.tables[0].rows[rows.index(one)][3] == f"{one['min']:.2f}"


def test_trust_section_says_how_far_two_boards_of_the_gpu_differ():
    """Where the page has two logs of one benchmark on boards of the report's GPU, the trust
    section says how far their times differ (a spread one set of constants cannot follow);
    for another GPU it says nothing of it."""
    from reports.validation import load_summary, validation_section
    spread = load_summary()["board_spread"]
    assert spread["gpu"] == "h100-sxm" and 1 <= spread["min"] <= spread["max"]
    h100, _ = validation_section(get_gpu("h100"))
    assert (f"took {spread['min']:.2f}–{spread['max']:.2f}x as long on one h100-sxm board "
            "as on another") in h100.paragraphs[0]
    a100, _ = validation_section(get_gpu("a100"))
    assert "Boards differ" not in a100.paragraphs[0]
    from reports.validation import comparison_validation_section
    both, _ = comparison_validation_section([get_gpu("h100"), get_gpu("a100")])
    assert both.paragraphs[0].count("Boards differ") == 1


def test_report_json_carries_the_validation_rows(capsys):
    code, out, err = run_cli(capsys, "report", "--hw", "a100", "--algorithms", "flash2",
                             *SMALL, "--format", "json")
    assert code == 0, err
    rows = json.loads(out)["validation"]
    assert rows and {r["gpu"] for r in rows} == {"a100-80gb"}


def test_run_quotes_the_measured_range_of_its_algorithm_gpu_and_inputs(capsys):
    """``attnsim run`` says how far its algorithm's predictions have been on that GPU, for
    its input type; Algorithm 0 is not the program the standard figures time, so it quotes
    nothing, and neither does a GPU without published figures."""
    from reports.validation import load_summary
    code, out, err = run_cli(capsys, "run", "flash2", "--hw", "a100", "--seq", "256",
                             "--count-only")
    assert code == 0, err
    row = next(r for r in load_summary()["rows"]
               if (r["gpu"], r["algorithm"]) == ("a100-80gb", "flash2"))
    assert (f"measured figures for flash2 (fp16/bf16) on a100-80gb: predicted/published "
            f"{row['min']:.2f}–{row['max']:.2f}") in out
    for args in (("standard", "--hw", "h100"), ("flash2", "--hw", "h200"),
                 ("flash3", "--hw", "h100-pcie")):       # its only figures are fp8
        code, out, err = run_cli(capsys, "run", *args, "--seq", "256", "--count-only",
                                 "--format", "json")
        assert code == 0, err
        assert json.loads(out)["validation"] is None
    code, out, err = run_cli(capsys, "run", "flash3", "--hw", "h100", "--dtype", "fp8",
                             "--seq", "256", "--count-only", "--format", "json")
    assert json.loads(out)["validation"]["dtype"] == "fp8"
    # gqa's figures are decoding steps (the Flash-Decoding post's): a decode run quotes
    # them, a prefill run does not
    for args, quoted in ((("--decode", "--seq", "4096"), True), (("--seq", "256"), False)):
        code, out, err = run_cli(capsys, "run", "gqa", "--hw", "a100", *args, "--count-only",
                                 "--format", "json")
        assert code == 0, err
        row = json.loads(out)["validation"]
        assert (row is not None and row["algorithm"] == "gqa (split-KV decode)") == quoted


def test_a_gpu_file_that_changes_a_validated_gpu_is_told_the_ranges_are_the_builtins(
        capsys, tmp_path):
    """A GPU file with ``base = "h100"`` keeps the name h100-sxm: the ranges are quoted as the
    built-in model's, naming what the file changes, in the report and in ``run``."""
    from reports.validation import validation_section
    path = tmp_path / "slow.toml"
    path.write_text('base = "h100"\nhbm_bandwidth_bytes_per_s = 3.0e12\n')
    section, rows = validation_section(get_gpu(str(path)))
    assert rows and "changes the built-in h100-sxm model (hbm_bandwidth_bytes_per_s)" in \
        section.paragraphs[0]
    assert "changes" not in validation_section(get_gpu("h100"))[0].paragraphs[0]
    code, out, err = run_cli(capsys, "run", "flash2", "--hw", str(path), "--seq", "256",
                             "--count-only")
    assert code == 0, err
    assert "for the built-in model, which this GPU file changes (hbm_bandwidth_bytes_per_s)" \
        in out
    code, out, err = run_cli(capsys, "run", "flash2", "--hw", str(path), "--seq", "256",
                             "--count-only", "--format", "json")
    assert json.loads(out)["validation"]["changed_fields"] == ["hbm_bandwidth_bytes_per_s"]
    code, out, err = run_cli(capsys, "run", "flash2", "--hw", "h100", "--seq", "256",
                             "--count-only", "--format", "json")
    assert json.loads(out)["validation"]["changed_fields"] == []


def test_a_longest_fitting_length_beyond_the_accepted_seq_says_so(capsys):
    """The longest context that fits HBM is a closed form and may pass --seq's bound (MLA's
    latent cache at 2**24 tokens): the text says a run would not accept it; JSON keeps the
    number."""
    args = ("run", "mla", "--model", "deepseek-v2", "--decode", "--seq", "16777216",
            "--count-only")
    code, out, err = run_cli(capsys, *args)
    assert code == 0, err
    assert "(above the longest accepted --seq, 16,777,216)" in out
    code, out, err = run_cli(capsys, *args, "--format", "json")
    assert json.loads(out)["memory"]["max_seq_that_fits"] > 16_777_216
