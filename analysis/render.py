"""How a table is written (Markdown, LaTeX with booktabs, CSV) and what one of its cells says."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .seed_stats import t_interval

GAP = "—"
SHOW_RUNS = 5  # a cell lists its runs' own values up to this many runs; above, their t interval


@dataclass
class Table:
    name: str
    title: str
    frame: pd.DataFrame  # rows: init; columns: "baseline" and ranks (or comparison fields); values: display strings
    values: pd.DataFrame  # the same cells as numbers (NaN for gaps)
    notes: list[str] = field(default_factory=list)
    csv: pd.DataFrame | None = None  # what the CSV holds when it is not just `frame` (numbers, intervals)
    index_label: str = "init"  # what the rows are: the header of the first column

    def write_csv(self, path: Path) -> None:
        (self.frame if self.csv is None else self.csv).to_csv(path, index_label=self.index_label)

    def markdown(self) -> str:
        header = f"| {self.index_label} | " + " | ".join(str(c) for c in self.frame.columns) + " |"
        rule = "|---|" + "---|" * len(self.frame.columns)
        body = [f"| {idx} | " + " | ".join(str(v) for v in row) + " |" for idx, row in self.frame.iterrows()]
        notes = "".join(f"\n\n{note}" for note in self.notes)  # a blank line ends the table (GFM)
        return "\n".join([f"**{self.title}**", "", header, rule, *body]) + notes + "\n"

    def latex(self) -> str:
        cols = "l" + "r" * len(self.frame.columns)
        lines = [
            r"\begin{table}[t]",
            r"\centering",
            rf"\begin{{tabular}}{{{cols}}}",
            r"\toprule",
            f"{_latex(self.index_label)} & " + " & ".join(_latex(str(c)) for c in self.frame.columns) + r" \\",
            r"\midrule",
        ]
        lines += [
            f"{_latex(str(idx))} & " + " & ".join(_latex(str(v)) for v in row) + r" \\"
            for idx, row in self.frame.iterrows()
        ]
        lines += [
            r"\bottomrule",
            r"\end{tabular}",
            rf"\caption{{{_latex(self.title)}. {_latex(' '.join(self.notes))}}}",
            rf"\label{{tab:{self.name.replace('/', '-').replace('@', 'at')}}}",
            r"\end{table}",
        ]
        return "\n".join(lines) + "\n"


LATEX = {  # LaTeX's special characters, and the non-ASCII marks the tables use, as pdflatex takes them
    "\\": r"\textbackslash{}",
    "{": r"\{",
    "}": r"\}",
    "$": r"\$",
    "&": r"\&",
    "%": r"\%",
    "#": r"\#",
    "_": r"\_",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "†": r"$^\dagger$",
    "‡": r"$^\ddagger$",
    "°": r"$^\circ$",
    "—": "--",
    "–": "--",
    "−": "-",
    "±": r"$\pm$",
    "▲": r"$\triangle$",
    "≥": r"$\geq$",
    "≤": r"$\leq$",
    "×": r"$\times$",
    "…": "...",
}


def _latex(text: str) -> str:
    """`text` for a LaTeX table cell or caption: every special character escaped, in one place; any other
    non-ASCII character dropped to its closest ASCII (pdflatex without extra packages takes nothing else)."""
    import unicodedata

    escaped = "".join(LATEX.get(char, char) for char in str(text))
    return unicodedata.normalize("NFKD", escaped).encode("ascii", "ignore").decode()


def cell(
    values: list[float],
    scale: float = 100,
    digits: int = 1,
    baseline: float | None = None,
    mark: str = "",
    signed: bool = False,
    flag: str = "",
) -> str:
    """An arm's runs in one cell: their mean; with 2-5 runs their own values ("runs 38.6, 9.1, 3.6"), with
    more the t 95% interval of the mean ("[12.0, 22.2]"); then the change against the baseline with its mark
    ("(+13.5*)") and a `flag` such as the collapse's "†". `signed`: the mean is itself a change (e.g. of
    completion length) and keeps its sign."""
    mean = float(np.mean(values))
    text = f"{mean * scale:+.{digits}f}" if signed else f"{mean * scale:.{digits}f}"
    if len(values) > SHOW_RUNS:
        low, high = t_interval(values)
        text += f" [{low * scale:.{digits}f}, {high * scale:.{digits}f}]"
    if baseline is not None and not math.isnan(baseline):
        text += f" ({(mean - baseline) * scale:+.{digits}f}{mark})"
    text += f" {flag}" if flag else ""
    if 2 <= len(values) <= SHOW_RUNS:
        text += "; runs " + ", ".join(f"{v * scale:.{digits}f}" for v in values)
    return text


CELL_NOTE = (
    f"A cell is the mean over the arm's runs (training seeds); with 2-{SHOW_RUNS} runs their own values follow "
    f"('runs ...', in seed order), with more the t 95% interval of the mean over runs [low, high]."
)
