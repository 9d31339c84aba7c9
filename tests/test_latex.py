"""Every .tex the analysis writes compiles: LaTeX's special characters escaped in one place (analysis.render), checked
on a sweep whose tables hold dollars, percent signs, underscores and the marks; compiled with pdflatex when the
machine has it (Debian: texlive-latex-recommended)."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from test_budget_axis import LEVELS, write_run

from analysis.__main__ import main as analysis_main
from analysis.render import _latex


def test_every_special_character_is_escaped():
    assert _latex("$0.03 & 50% of r_8 #1 {x} ~ ^ \\") == (
        r"\$0.03 \& 50\% of r\_8 \#1 \{x\} \textasciitilde{} \textasciicircum{} \textbackslash{}"
    )
    assert _latex("† ‡ ° — ± ▲ ≥ é") == r"$^\dagger$ $^\ddagger$ $^\circ$ -- $\pm$ $\triangle$ $\geq$ e"


def unescaped(line: str) -> list[str]:
    """What would break pdflatex in a line of a table: a special character without its backslash, or a $ that
    opens math it does not close."""
    body = re.sub(r"\\label\{[^}]*\}", "", line)
    problems = [c for c in "%#_" if re.search(rf"(?<!\\){re.escape(c)}", body)]
    if body.replace(r"\$", "").count("$") % 2:
        problems.append("$")
    if not body.isascii():
        problems.append("non-ASCII")
    return problems


def test_the_tables_of_a_sweep_compile(tmp_path):
    for rank in LEVELS:
        for seed in range(3):
            write_run(tmp_path / "sweep", rank, seed)
    out = tmp_path / "out"
    assert analysis_main([str(tmp_path / "sweep"), "--out", str(out)]) == 0
    written = sorted(out.glob("*.tex"))
    assert {p.name for p in written} >= {"runs_needed.tex", "significance.tex", "b_pass1_budget_x_rank_instruct.tex"}
    assert "$" in (out / "runs_needed.md").read_text()  # the costs in dollars are there to escape
    for path in written:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            assert not unescaped(line), (path.name, number, unescaped(line), line)
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex is not installed: the escaping is checked above, not compiled")
    document = tmp_path / "tables.tex"
    inputs = "\n".join(rf"\input{{{p.as_posix()}}}" for p in written)
    document.write_text(
        "\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n" + inputs + "\n\\end{document}\n"
    )
    done = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", document.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:]
