"""The README's Python API example and its report excerpt print what the README says."""
from __future__ import annotations

import doctest
import pathlib

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def test_readme_python_example():
    result = doctest.testfile(str(README), module_relative=False,
                              optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 10
    assert result.failed == 0


def test_readme_report_excerpt_is_the_reports_output(capsys):
    """The excerpt of ``python -m attnsim report --hw h100`` the README shows is what the
    report prints for those algorithms now (the columns compared as words, since the full
    report's widths follow its longest cell)."""
    from attnsim.cli import main
    text = README.read_text(encoding="utf-8")
    excerpt = text.split("An excerpt (H100 SXM5, the default workload")[1].split("```")[1]
    rows = {line.split()[0]: line.split() for line in excerpt.strip().splitlines()[1:]}
    assert main(["report", "--hw", "h100", "--algorithms", ",".join(rows)]) == 0
    printed = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()
               if line.split()[:1] and line.split()[0] in rows and line.split()[1:2] == ["yes"]}
    assert printed == rows
