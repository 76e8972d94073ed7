"""The board as one self-contained HTML page: a sortable table, each row's settings and provenance, the papers'
numbers, charts and sample grids, with nothing fetched from anywhere (no CDN, no fonts, no network).

Run names, settings and warnings come from users, so every string is escaped where it lands: `html.escape` in
text and attributes; the sort data is JSON inside `<script type="application/json">` with `<`, `>` and `&`
written as \\u003c, \\u003e, \\u0026 (a run named `</script>` cannot end the block); charts are matplotlib SVGs
shown as `<img>` data URIs (an image runs no script). A Content-Security-Policy allows only the page's own
script (by its hash), inline styles and data: images, so even a string that slipped through could neither
run nor fetch anything.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from bench import __version__
from bench.report import charts as charting
from bench.metrics.registry import lower_is_better
from bench.report.board import UNDEFINED_WHY, Board
from bench.report.compare import NOISE_RULE, is_setting, setting_label
from bench.report.formats import cell, paper_table, short, title, unrecorded_note
from bench.result import now

#: a sample grid larger than this is linked by path instead of inlined (the page should stay mailable)
MAX_GRID_BYTES = 2 * 1024 * 1024
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:1.5em;color:#222}
p,ul,.warn{max-width:100em}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;margin-top:1.6em}
.meta{color:#555;margin:.2em 0 1em}.about{max-width:60em;margin:0 0 1em}.note{color:#555;font-size:.9em}
table{border-collapse:collapse;font-size:.88em}
th,td{border-bottom:1px solid #ddd;padding:4px 8px;text-align:right;vertical-align:top;white-space:nowrap}
th{background:#f4f4f6;cursor:pointer;user-select:none;position:sticky;top:0}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
td.text,th.text{text-align:left}td.wrap{white-space:normal;min-width:18em;text-align:left}
tr.baseline td{background:#eef5ff}.no{color:#b00020;font-weight:600}.yes{color:#1a7f37}
.beyond{font-weight:700}.better{color:#1a7f37}.worse{color:#b00020}.within{color:#888}.missing{color:#aaa}
details{position:relative}summary{cursor:pointer}
details .provenance{position:absolute;z-index:5;left:0;top:1.6em;background:#fff;border:1px solid #bbb;
 box-shadow:0 4px 14px rgba(0,0,0,.18);padding:.6em .9em;min-width:44em;max-width:64em;text-align:left;
 white-space:normal;font-size:.95em}
.provenance h3{font-size:1em;margin:.6em 0 .2em}.provenance table{font-size:.9em}
.provenance td{text-align:left;white-space:normal;word-break:break-all;border:none;padding:1px 6px}
.provenance td:first-child{white-space:nowrap;word-break:normal;color:#555}
.warn{background:#fff8e1;border-left:4px solid #f0b400;padding:.4em .8em;margin:.6em 0}
.charts{display:flex;flex-wrap:wrap;gap:1.2em}figure{margin:0}figcaption{font-size:.85em;color:#555}
.charts img{max-width:100%;height:auto;border:1px solid #eee}
.grids img{max-width:24em;image-rendering:pixelated;border:1px solid #eee}
"""

SCRIPT = """
(function () {
  var data = JSON.parse(document.getElementById("board-data").textContent);
  var table = document.getElementById("board");
  var body = table.tBodies[0];
  function key(v) { return v === "Infinity" ? Infinity : v === "-Infinity" ? -Infinity : v; }
  function order(a, b, ascending) {
    a = key(a); b = key(b);
    var aMissing = a === null || a === "", bMissing = b === null || b === "";
    if (aMissing || bMissing) { return aMissing - bMissing; }  /* missing values last, both ways */
    var c = (typeof a === "number" && typeof b === "number") ? (a < b ? -1 : a > b ? 1 : 0)
      : String(a).localeCompare(String(b), undefined, {numeric: true});
    return ascending ? c : -c;
  }
  Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, column) {
    th.addEventListener("click", function () {
      var ascending = th.getAttribute("aria-sort") !== "ascending";
      Array.prototype.forEach.call(table.tHead.rows[0].cells, function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (r, s) {
        return order(data.rows[r.dataset.i][column], data.rows[s.dataset.i][column], ascending);
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
})();
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def script_json(obj: Any) -> str:
    """JSON safe inside a <script> element: no `<`, `>` or `&` survives to end the element or open a comment."""
    text = json.dumps(obj, ensure_ascii=False, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def sort_value(value: Any) -> Any:
    """A cell's sort key for the page's script: numbers as numbers (inf as "Infinity"), flags as 0/1, missing
    as null, anything else as its text."""
    if value is None or (not isinstance(value, (str, bool)) and pd.isna(value)):
        return None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)) or hasattr(value, "item"):
        number = float(value)
        return number if math.isfinite(number) else ("Infinity" if number > 0 else "-Infinity")
    return str(value)


# -- the table ---------------------------------------------------------------------------------------------------
def _cell_html(column: str, value: Any, row: pd.Series, numeric: bool, board_missing: dict) -> str:
    why = board_missing.get((row.get("run"), column), "")
    shown = esc("NaN" if why == UNDEFINED_WHY else cell(column, value))
    classes = [] if numeric else ["text"]
    hint = why
    if shown in ("-", "NaN"):
        classes.append("missing")
    if column == "comparable" and value is False:
        classes.append("no")
        hint = row.get("why not comparable", "")
    elif column == "comparable" and value is True:
        classes.append("yes")
    elif column.endswith(" delta") and isinstance(row.get(column.replace(" delta", " noise")), str):
        verdict = row[column.replace(" delta", " noise")]
        better = (value < 0) == lower_is_better(column)
        classes += [verdict] + ([("better" if better else "worse")] if verdict == "beyond" else [])
        hint = f"{verdict} noise" + (f": {'better' if better else 'worse'} than the baseline"
                                     if verdict == "beyond" else "")
    elif column == "paper fid" and "paper source" in row and not pd.isna(row["paper source"]):
        hint = row["paper source"]
    elif column == "why not comparable":
        classes = ["wrap"]
    attrs = f' class="{" ".join(classes)}"' if classes else ""
    attrs += f' title="{esc(hint)}"' if hint else ""
    return f"<td{attrs}>{shown}</td>"


def _fields(row: pd.Series, columns: list[str], label=lambda c: c) -> str:
    cells = "".join(f"<tr><td>{esc(label(c))}</td><td>{esc(row[c])}</td></tr>" for c in columns
                    if c in row.index and not (not isinstance(row[c], str) and pd.isna(row[c])))
    return f"<table>{cells}</table>" if cells else "<p class='missing'>none recorded</p>"


def _provenance(row: pd.Series) -> str:
    """What stands behind one row, grouped: settings, provenance (networks, checkpoints, versions, device),
    outcomes (timings, noise, paths, outputs), warnings."""
    columns = [c for c in row.index if "." in c or c in ("task", "generator", "created", "path", "upgraded_from")]
    settings = [c for c in columns if is_setting(c)]
    provenance = [c for c in columns if c.startswith("provenance.") and c not in settings]
    outcomes = [c for c in columns if c not in settings and c not in provenance]
    warnings = row.get("warnings") if isinstance(row.get("warnings"), tuple) else ()
    warned = "".join(f"<li>{esc(w)}</li>" for w in warnings)
    return ("<div class='provenance'>"
            f"<h3>Settings</h3>{_fields(row, settings, setting_label)}"
            f"<h3>Provenance</h3>{_fields(row, provenance)}"
            f"<h3>Outcomes, files and noise estimate</h3>{_fields(row, outcomes)}"
            + (f"<h3>Warnings</h3><ul>{warned}</ul>" if warned else "") + "</div>")


def shown_columns(board: Board) -> list[str]:
    """The board's columns as the page shows them: the noise verdicts mark their deltas (bold: beyond noise;
    grey: within) instead of taking columns of their own, and the paper's source is the paper FID's tooltip."""
    return [c for c in board.board.columns if not c.endswith(" noise") and c != "paper source"]


def table_html(board: Board) -> str:
    frame = board.board[shown_columns(board)]
    numeric = [pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])
               for c in frame.columns]
    head = "".join(f'<th class="{"" if n else "text"}" title="click to sort">{esc(title(c))}</th>'
                   for c, n in zip(frame.columns, numeric))
    rows = []
    for i, (_, row) in enumerate(frame.iterrows()):
        details = _provenance(board.table.iloc[i])
        cells = [f"<td class='text'><details><summary>{esc(row['run'])}</summary>{details}</details></td>"]
        full = board.board.iloc[i]
        cells += [_cell_html(c, row[c], full, n, board.board.attrs.get("missing", {}))
                  for c, n in zip(frame.columns[1:], numeric[1:])]
        marker = ' class="baseline"' if row.get("baseline") is True else ""
        rows.append(f'<tr data-i="{i}"{marker}>{"".join(cells)}</tr>')
    return f'<table id="board"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _plain_table(frame: pd.DataFrame) -> str:
    head = "".join(f"<th class='text'>{esc(title(c))}</th>" for c in frame.columns)
    body = "".join("<tr>" + "".join(f"<td class='text'>{esc(cell(c, v))}</td>" for c, v in zip(frame.columns, r))
                   + "</tr>" for r in frame.itertuples(index=False))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def differing_html(board: Board) -> str:
    """Settings that differ: one row per setting, one column per run in board order; "not recorded" where a run
    lacks it."""
    note = "".join(f"<p class='note'>{esc(line.strip())}</p>" for line in unrecorded_note(board).splitlines()) \
        if board.unrecorded else ""
    if not board.differing:
        return ("<p>None: every recorded setting is the same in all runs.</p>" + note) if board.compared else ""
    runs = board.board["run"].tolist()
    head = "<th class='text'>setting</th>" + "".join(f"<th class='text'>{esc(r)}</th>" for r in runs)
    body = "".join(
        f"<tr><td class='text'>{esc(setting)}</td>" + "".join(
            f"<td class='text' title='{esc(values[r])}'>{esc(short(setting, values[r]))}</td>" if r in values
            else "<td class='text missing'>not recorded</td>"
            for r in runs) + "</tr>" for setting, values in board.differing.items())
    return f"<table class='differing'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{note}"


# -- images ------------------------------------------------------------------------------------------------------
def _grid_file(row: pd.Series) -> Path | None:
    """The run's `outputs.grid`, looked for as recorded, then beside its result file."""
    recorded = row.get("outputs.grid")
    if not isinstance(recorded, str) or not recorded:
        return None
    grid, result_dir = Path(recorded), Path(str(row.get("path", ""))).parent
    for candidate in (grid, result_dir / grid, result_dir / grid.name):
        if candidate.is_file():
            return candidate
    return None


def grids_html(board: Board) -> str:
    figures = []
    for _, row in board.table.iterrows():
        path = _grid_file(row)
        if path is None:
            if isinstance(row.get("outputs.grid"), str):
                figures.append(f"<p class='note'>{esc(row['run'])}: sample grid {esc(row['outputs.grid'])} "
                               "not found</p>")
            continue
        data = path.read_bytes()
        if len(data) > MAX_GRID_BYTES or not data.startswith(PNG_SIGNATURE):
            why = f"{len(data) / 2**20:.1f} MiB, over the {MAX_GRID_BYTES // 2**20} MiB inlined" \
                if len(data) > MAX_GRID_BYTES else "not a PNG"
            figures.append(f"<p class='note'>{esc(row['run'])}: {esc(path)} not inlined ({why})</p>")
            continue
        uri = "data:image/png;base64," + base64.b64encode(data).decode()
        figures.append(f"<figure><img src='{uri}' alt='samples of {esc(row['run'])}'>"
                       f"<figcaption>{esc(row['run'])}</figcaption></figure>")
    return "<div class='charts grids'>" + "".join(figures) + "</div>" if figures else ""


def charts_html(board: Board) -> str:
    figures = [f"<figure><img class='chart' src='data:image/svg+xml;base64,{base64.b64encode(c.svg).decode()}' "
               f"alt='{esc(c.title)}: {esc(c.description)}'><figcaption>{esc(c.title)}: {esc(c.description)}"
               f"</figcaption></figure>" for c in charting.charts(board)]
    return "<div class='charts'>" + "".join(figures) + "</div>" if figures else ""


# -- the page ----------------------------------------------------------------------------------------------------
def to_html(board: Board, title_text: str = "bench leaderboard") -> str:
    """The whole page."""
    frame = board.board[shown_columns(board)]
    data = {"columns": list(frame.columns),
            "rows": [[sort_value(v) for v in row] for row in frame.itertuples(index=False)]}
    script_hash = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
    policy = f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'sha256-{script_hash}'"
    meta = [f"{len(frame)} result{'s' if len(frame) != 1 else ''}", f"generated {now()} by bench {__version__}",
            f"ranked by {title(board.sort_by)}"]
    if board.baseline is not None:
        meta.append(f"baseline: {board.baseline}")
    sections = []
    if board.skipped:
        sections.append("<div class='warn'><b>Skipped files</b><ul>"
                        + "".join(f"<li>{esc(s)}</li>" for s in board.skipped) + "</ul></div>")
    sections.append(table_html(board))
    sections.append("<p class='note'>Click a column to sort (again to reverse); click a run for its settings and "
                    "provenance." + (" Rows marked ✗ are not comparable with the baseline (hover for why)."
                                     if "comparable" in frame else "") + "</p>")
    if any(c.endswith(" noise") for c in board.board.columns):
        sections.append(f"<p class='note'>Noise: a delta in <b class='better'>bold green</b> (better) or "
                        "<b class='worse'>bold red</b> (worse) is beyond noise, one in "
                        "<span class='within'>grey</span> "
                        f"within it; beyond when {esc(NOISE_RULE)}. Plain where a run has no estimate.</p>")
    if board.compared and not board.paper.empty:
        sections.append("<h2>Published numbers at the runs' settings</h2>" + _plain_table(paper_table(board)))
    if board.compared:
        sections.append("<h2>Settings that differ between runs</h2>" + differing_html(board))
    if board.warnings:
        sections.append("<h2>Warnings recorded by the runs</h2><ul>" + "".join(
            f"<li>{esc(w)} <span class='note'>({esc(', '.join(runs))})</span></li>"
            for w, runs in board.warnings.items()) + "</ul>")
    charts = charts_html(board)
    if charts:
        sections.append("<h2>Charts</h2>" + charts)
    grids = grids_html(board)
    if grids:
        sections.append("<h2>Samples</h2>" + grids)
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<meta http-equiv='Content-Security-Policy' content=\"{policy}\">"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<link rel='icon' href='data:,'><title>{esc(title_text)}</title><style>{STYLE}</style></head><body>"
            f"<h1>{esc(title_text)}</h1><p class='meta'>{esc(' · '.join(meta))}</p>"
            + (f"<p class='about'>{esc(board.about)}</p>" if board.about else "")
            + "".join(sections)
            + f"<script type='application/json' id='board-data'>{script_json(data)}</script>"
            f"<script>{SCRIPT}</script></body></html>\n")
