"""Leaderboards researchers would publish from: result files in; a table, the papers' numbers, charts out.

    load.py       find result files (any *.json in bench's schema) and read them into one pandas table
    compare.py    deltas against a baseline, noise verdicts, comparability and why, settings that differ
    published.py  reports/published.csv: the papers' rows a run (or a preset) should reproduce
    board.py      the assembled, ranked `Board` every format renders
    formats.py    terminal text, CSV, Markdown, LaTeX
    charts.py     matplotlib SVG charts (FID/IS vs cfg, FID vs size, precision vs recall, IS vs FID)
    html.py       the self-contained, sortable HTML page

`bench report` (bench/cli.py) is `build` followed by the formats asked for.
"""

from __future__ import annotations

from pathlib import Path

from bench import atomic
from bench.report.board import Board, build, leaderboard, rank
from bench.report.compare import compare, differing_settings
from bench.report.formats import report_text, to_csv, to_latex, to_markdown, to_text
from bench.report.load import find_result_files, load_results

__all__ = ["Board", "build", "compare", "differing_settings", "find_result_files", "leaderboard", "load_results",
           "rank", "report_text", "to_csv", "to_html", "to_latex", "to_markdown", "to_text", "write"]


def to_html(board: Board, title: str = "bench leaderboard") -> str:
    """The self-contained HTML page (bench/report/html.py; imports matplotlib for its charts)."""
    from bench.report.html import to_html as page

    return page(board, title)


def write(board: Board, csv: str | Path | None = None, html: str | Path | None = None,
          markdown: str | Path | None = None, latex: str | Path | None = None,
          title: str = "bench leaderboard") -> list[Path]:
    """Write the formats given a path (atomically: a board being rewritten is never seen half-written)."""
    render = {"csv": lambda: to_csv(board.board), "html": lambda: to_html(board, title),
              "markdown": lambda: to_markdown(board.board), "latex": lambda: to_latex(board.board)}
    written = []
    for name, path in (("csv", csv), ("html", html), ("markdown", markdown), ("latex", latex)):
        if path:
            atomic.write_text(path, render[name]())
            written.append(Path(path))
    return written
