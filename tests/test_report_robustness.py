"""``attnsim report`` on workloads and GPUs its side sections cannot all handle: the report
completes, leaving such a section (or row) out with the reason; clashing output paths are
refused before anything is computed; the markdown and CSV renderings stay well formed."""
import csv
import io
import json
import re

import pytest

from attnsim.cli import main
from attnsim.workload import Workload
from hwmodels import get_gpu

SMALL = ["--batch", "1", "--heads", "2", "--seq", "512", "--seqs", "256,512"]


def run_cli(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def report_json(capsys, *args) -> dict:
    code, out, err = run_cli(capsys, "report", *args, "--format", "json")
    assert code == 0, err
    return json.loads(out)


def gpu_file(tmp_path, name: str, text: str) -> str:
    path = tmp_path / f"{name}.toml"
    path.write_text(f'name = "{name}"\n{text}')
    return str(path)


# ---- the FP8 section times the forward, whatever the report's --pass and --dropout ----------

def test_fp8_section_runs_on_a_training_workload_with_dropout(capsys):
    data = report_json(capsys, "--algorithms", "flash3", *SMALL, "--pass", "fwd+bwd",
                       "--dropout", "0.1")
    variants = data["fp8"]["variants"]
    assert len(variants) == 4 and all(v["predicted_s"] > 0 for v in variants)


@pytest.mark.parametrize("passes, dtype", [("bwd", "fp16"), ("fwd+bwd", "bf16")])
def test_fp8_section_says_it_times_the_forward(passes, dtype):
    from reports.fp8 import fp8_section
    wl = Workload(batch=1, heads=2, seq_q=512, head_dim=128, dtype=dtype, passes=passes)
    section, data = fp8_section(get_gpu("h100"), wl)
    note = next(n for n in section.tables[0].notes if n.startswith("predicted:"))
    assert "fp8, non-causal, fwd" in note and "forward without dropout" in note
    assert len(data["variants"]) == 4
    plain, _ = fp8_section(get_gpu("h100"), wl.replace(passes="fwd"))
    assert "forward without dropout" not in " ".join(plain.tables[0].notes)


# ---- the Sparse Transformer's layouts on workloads its kernels do not take -----------------

@pytest.mark.parametrize("flags, reason", [
    (["--heads", "2", "--head-dim", "512"], "support head dims up to 256"),
    (["--model", "deepseek-v2"], "multi-head latent attention"),
    (["--heads", "2", "--sram-kb", "4"], "--sram-kb"),
])
def test_sparse_layouts_left_out_with_the_reason(capsys, flags, reason):
    args = ["--algorithms", "sparse_transformer", "--batch", "1", "--seq", "512", "--seqs",
            "256,512", "--no-accuracy", *flags]
    data = report_json(capsys, *args)
    assert reason in data["sparse_transformer_layouts"]["left_out"]
    code, out, err = run_cli(capsys, "report", *args)
    assert code == 0, err
    section = out.split("Sparse Transformer: natural order vs the paper's blocked layout")[1]
    assert section.split("\n")[3].startswith("Left out of this report: ")


# ---- GPUs with little shared memory: decode rows and sections degrade, not the report -------

def test_a_48_kib_gpu_leaves_out_the_decode_rows_that_do_not_fit(capsys, tmp_path):
    hw = gpu_file(tmp_path, "smem48", 'base = "a100"\nsmem_bytes_per_block = 49152\n'
                                      'smem_bytes_per_sm = 65536\n')
    data = report_json(capsys, "--no-accuracy", "--algorithms", "flash2", "--hw", hw, *SMALL)
    decode_models = {r["model"] for r in data["decode"]}
    assert "llama-2-7b" in decode_models and "deepseek-v2" not in decode_models
    paths = {r["algorithm"]: r for r in data["decode_paths"]["paths"]}
    assert "error" in paths["mla"] and paths["gqa"]["hbm_bytes"]
    assert "fits no K/V tile" in data["decode_paths"]["nsa_left_out"]
    code, out, err = run_cli(capsys, "report", "--no-accuracy", "--algorithms", "flash2",
                             "--hw", hw, *SMALL)
    assert code == 0, err
    assert "deepseek-v2 left out: mla (absorbed): no tile" in out
    assert "NSA's decoding table (the NSA paper's Table 4) is left out: nsa:" in out
    assert re.search(r"\n\s+mla n/a: mla \(absorbed\): no tile", out)


def test_a_gpu_too_small_for_decoding_leaves_the_decode_sections_out(capsys, tmp_path):
    """Only flash2 asked for: the decode sections, which run gqa, say why they are missing."""
    hw = gpu_file(tmp_path, "smem8", 'base = "a100"\nsmem_bytes_per_block = 8192\n'
                                     'smem_bytes_per_sm = 65536\n')
    data = report_json(capsys, "--no-accuracy", "--algorithms", "flash2", "--hw", hw,
                       "--batch", "1", "--heads", "2", "--head-dim", "64", "--seq", "512",
                       "--seqs", "256,512")
    assert data["algorithms"][0]["time"]["predicted_s"] > 0
    for key in ("decode", "decode_paths"):
        assert data[key]["left_out"].startswith("gqa: no tiling")


# ---- a Hopper GPU file without fp8 tensor cores -------------------------------------------

def test_no_fp8_tensor_cores_leaves_out_the_fp8_section_and_rows(capsys, tmp_path):
    hw = gpu_file(tmp_path, "h100-nofp8", 'base = "h100"\ntensor_fp8_flops_per_s = 0\n')
    data = report_json(capsys, "--algorithms", "flash3", "--hw", hw, *SMALL)
    assert "has no fp8 tensor cores" in data["fp8"]["left_out"]
    assert {r["dtype"] for r in data["throughput"]} == {"fp16"}


# ---- output paths that clash, refused before computing -------------------------------------

def test_plot_and_output_naming_one_file_are_refused(capsys, tmp_path, monkeypatch):
    from attnsim import suite
    monkeypatch.setattr(suite, "sweep", lambda *a, **k: pytest.fail("computed first"))
    path = str(tmp_path / "x.png")
    code, _, err = run_cli(capsys, "report", "--algorithms", "flash2", "--no-accuracy",
                           *SMALL, "--plot", path, "--output", path)
    assert code == 2 and err.count("\n") == 1
    assert "--plot and --output both name" in err
    assert not (tmp_path / "x.png").exists()


def test_a_file_where_the_figures_folder_goes_is_refused_up_front(capsys, tmp_path,
                                                                   monkeypatch):
    pytest.importorskip("matplotlib")
    from attnsim import suite
    monkeypatch.setattr(suite, "sweep", lambda *a, **k: pytest.fail("computed first"))
    (tmp_path / "report").write_text("in the way")
    code, _, err = run_cli(capsys, "report", "--algorithms", "flash2", "--no-accuracy",
                           *SMALL, "--output", str(tmp_path / "report.md"))
    assert code == 2 and err.count("\n") == 1
    assert f"figures into the folder {str(tmp_path / 'report')!r}, which is a file" in err
    assert not (tmp_path / "report.md").exists()


# ---- markdown and CSV renderings -----------------------------------------------------------

def test_markdown_cells_escape_pipes(capsys, tmp_path):
    hw = gpu_file(tmp_path, "a100|variant", 'base = "a100"\n')
    code, out, err = run_cli(capsys, "report", "--hw", f"{hw},h100", "--algorithms",
                             "flash2", "--no-accuracy", *SMALL, "--format", "markdown")
    assert code == 0, err
    tables = [line for line in out.splitlines() if line.startswith("|")]
    assert any("a100\\|variant" in line for line in tables)
    blocks, widths = [], None
    for line in out.splitlines() + [""]:            # every row of a table: as many cells
        if line.startswith("|"):
            cells = len(re.split(r"(?<!\\)\|", line))
            widths = (widths or set()) | {cells}
        elif widths is not None:
            blocks.append(widths)
            widths = None
    assert blocks and all(len(w) == 1 for w in blocks)


def test_csv_cells_hold_json_not_python_reprs():
    from reports.document import Document, Section, Table
    record = {"name": "x", "nested": {"a": None, "b": True, "c": [1, 2.5]}, "flag": False,
              "none": None}
    doc = Document("t", [Section("s", tables=[Table("k", "", [], [], [record])])], {})
    rows = list(csv.DictReader(line for line in io.StringIO(doc.render("csv"))
                               if not line.startswith("#") and line.strip()))
    assert json.loads(rows[0]["nested"]) == record["nested"]
    assert rows[0]["flag"] == "false" and rows[0]["none"] == ""


def test_report_csv_has_no_python_reprs(capsys):
    code, out, err = run_cli(capsys, "report", "--algorithms", "gqa", "--no-accuracy", *SMALL,
                             "--format", "csv")
    assert code == 0, err
    assert "{'" not in out and "True" not in out and "None" not in out
    decode = out.split("# decode:")[1].split("\n\n")[0]
    row = next(csv.DictReader(io.StringIO(decode.split("\n", 1)[1])))
    assert json.loads(row["kv_cache"])["bytes_per_token"] > 0


# ---- n/a reasons: cut at a word, given whole below the table --------------------------------

def test_na_reasons_are_cut_at_a_word_and_given_whole_in_a_note():
    from attnsim.suite import AlgorithmRow
    from reports import format as fmt
    from reports.tables import algorithms_table
    reason = ("flash3 needs Hopper's wgmma and TMA; NVIDIA A100-SXM4-80GB has neither "
              "(use flash2, or --hw h100)")
    table = algorithms_table([AlgorithmRow("flash3", None, error=reason),
                              AlgorithmRow("nsa", None, error="short reason")])
    cell = table.rows[0][-1]
    assert cell.startswith("n/a: flash3 needs") and cell.endswith("…")
    shown = cell[len("n/a: "):-1]
    assert reason.startswith(shown) and not reason[len(shown)].isalnum()   # a whole word
    assert f"flash3 n/a: {reason}" in table.notes
    assert table.rows[1][-1] == "n/a: short reason" and len(table.notes) == 1
    assert fmt.clip("a" * 80).endswith("…") and len(fmt.clip("a" * 80)) == 60


def test_plot_inside_the_documents_figures_folder_is_refused(capsys, tmp_path, monkeypatch):
    """The document rewrites its figures in DIR/report/: a --plot there could be one."""
    from attnsim import suite
    monkeypatch.setattr(suite, "sweep", lambda *a, **k: pytest.fail("computed first"))
    (tmp_path / "report").mkdir()
    code, _, err = run_cli(capsys, "report", "--algorithms", "flash2", "--no-accuracy",
                           *SMALL, "--output", str(tmp_path / "report.md"),
                           "--plot", str(tmp_path / "report" / "growth.png"))
    assert code == 2 and err.count("\n") == 1
    assert "the folder --output" in err and "outside it" in err


# ---- what a left-out section is, and what is a bug ------------------------------------------

def test_only_a_missing_plan_or_unit_leaves_a_section_out(monkeypatch):
    """A side task that finds no plan on the GPU (or the GPU lacks the unit) becomes a
    section left out with the reason; any other exception, a plain ValueError included, is a
    bug and propagates rather than reading as a missing row."""
    from algorithms.base import PlanError
    from attnsim import suite
    from hwmodels.gpus import MissingUnitError
    from reports import decode

    def raising(exc):
        def fn():
            raise exc
        return fn
    assert suite.side_task(raising(PlanError("no tile fits")), ()) == suite.Skipped("no tile fits")
    assert suite.side_task(raising(MissingUnitError("no fp8")), ()) == suite.Skipped("no fp8")
    with pytest.raises(ValueError, match="a bug"):
        suite.side_task(raising(ValueError("a bug")), ())
    monkeypatch.setattr(decode, "decode_step", lambda *a, **k: raising(ValueError("a bug"))())
    with pytest.raises(ValueError, match="a bug"):
        decode.decode_section(get_gpu("h100"), Workload(batch=1, heads=2, seq_q=512,
                                                        seq_k=512, head_dim=64))
