"""The board's charts, drawn by matplotlib as static SVG: the user's runs beside the papers' numbers.

Why matplotlib: it is well kept, researchers already know (and trust) its plots, and its SVG output is a
finished picture, so the HTML page needs no JavaScript charting library and no CDN, and opens offline. The page
shows each SVG as an `<img>` data URI: an image cannot run scripts or fetch anything, and the ids matplotlib
writes cannot clash between charts. Text is drawn as glyph outlines (`svg.fonttype: path`), math parsing is off
so a "$" in a run name is just a dollar sign, and `svg.hashsalt` and no date make the output reproducible.

    FID and IS vs cfg scale   each model's runs as a line, the paper's curve at the same resolution dashed
    FID vs model size         runs at their model's parameter count, the family's published curve
    Precision vs recall       runs and the published rows they match
    IS vs FID                 the same, the trade-off guidance moves along
    FID vs seconds per image  the runs' own sampling speed, by device
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from bench.errors import BenchError
from bench.report import published
from bench.report.board import Board

RC = {"svg.fonttype": "path", "svg.hashsalt": "bench-board", "text.parse_math": False, "font.size": 9,
      "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False}
#: annotate points with run names up to this many runs (beyond, the labels would hide the points)
MAX_LABELS = 12


@dataclass
class Chart:
    title: str
    svg: bytes
    description: str


def _matplotlib():
    try:
        import matplotlib
        from matplotlib.figure import Figure
    except ImportError:
        raise BenchError("--html draws its charts with matplotlib: pip install matplotlib") from None
    return matplotlib, Figure


def _points(board: Board) -> pd.DataFrame:
    """Per run: name, metrics, cfg (1.0 when unguided), model (the CSV's name), resolutions, parameters, and the
    published row it matches."""
    table = board.table
    rows = []
    matches = published.match_runs(table)
    params = published.published().groupby("model")["params_m"].max()
    for (_, row), (_, match) in zip(table.iterrows(), matches.iterrows()):
        cfg = published.run_field(row, "cfg_scale")
        model = match["paper model"] if not pd.isna(match["paper model"]) else None
        rows.append({
            "run": row["run"], "generator": row.get("generator"), "model": model,
            "cfg": 1.0 if published.unguided(cfg) and cfg is not None else cfg,
            "image_size": published.run_field(row, "image_size"), "eval_size": published.run_field(row, "eval_size"),
            "params": params.get(model) if model else None, "paper row": match["paper row"],
            **{m: row.get(m) for m in ("fid", "inception_score", "precision", "recall")},
            "images_per_s": row.get("timing.images_per_s"), "device": row.get("provenance.device")})
    return pd.DataFrame(rows)


def _finite(value: Any) -> bool:
    return value is not None and not pd.isna(value) and math.isfinite(float(value))


def _svg(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    return buffer.getvalue()


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _size(value: Any) -> str:
    return "" if value is None or pd.isna(value) else f"{int(value)}"


def _group_label(model: str | None, generator: Any, image: Any, evaluated: Any) -> str:
    name = model or (generator if isinstance(generator, str) else None) or "runs"
    image, evaluated = _size(image), _size(evaluated)
    sizes = f"{image}→{evaluated}" if image and evaluated and image != evaluated else image
    return f"{name} {sizes}".strip()


def _annotate(axes, xs, ys, labels, many: bool) -> None:
    """Each point's label; points that coincide (to 3 significant digits) share one label listing them all, and a
    label that would land on an earlier one is moved down a line (four demo runs used to sit at precision 0,
    recall 0 under four unreadable labels; runs of one speed crowd the speed chart the same way)."""
    if many:
        return
    shared: dict[tuple[str, str], list] = {}
    for x, y, label in zip(xs, ys, labels):
        shared.setdefault((f"{float(x):.3g}", f"{float(y):.3g}"), [float(x), float(y), []])[2].append(str(label))
    axes.autoscale_view()
    placed: list[tuple[float, float]] = []  # label anchors in display points
    for x, y, names in sorted(shared.values(), key=lambda p: -p[1]):
        px, py = axes.transData.transform((x, y)) * 72 / axes.figure.dpi
        dy = 4
        while any(abs(px - qx) < 70 and abs(py + dy - qy) < 8 for qx, qy in placed):
            dy -= 8
        placed.append((px, py + dy))
        axes.annotate(", ".join(names), (x, y), textcoords="offset points", xytext=(4, dy), fontsize=7, alpha=0.85)


def cfg_chart(points: pd.DataFrame, Figure) -> Chart | None:
    """FID and IS over the cfg scale: per model and resolution, the runs as a line and the paper's curve."""
    runs = points[[_finite(c) for c in points["cfg"]]]
    if runs.empty or not any(_finite(v) for v in runs["fid"]):
        return None
    groups = []  # (label, runs sorted by cfg, the paper's curve) per model, generator and resolution
    keys = [runs["model"].fillna(""), runs["generator"].fillna("").astype(str), runs["image_size"].fillna(-1),
            runs["eval_size"].fillna(-1)]
    for (model, generator, image, evaluated), group in runs.groupby(keys, sort=False):
        image, evaluated = (None if v == -1 else v for v in (image, evaluated))
        curve = published.paper_curve(model, image, evaluated) if model else pd.DataFrame()
        groups.append((_group_label(model or None, generator or None, image, evaluated), group.sort_values("cfg"),
                       curve))
    # The IS panel only when a run or a matched paper curve has IS (weights without a softmax layer give none:
    # an empty panel would read as a broken chart).
    with_is = any(_finite(v) for v in runs["inception_score"]) or any(
        not curve.empty and curve["inception_score"].notna().any() for _, _, curve in groups)
    figure = Figure(figsize=(9, 3.6) if with_is else (4.8, 3.6), layout="constrained")
    panels = list(zip(figure.subplots(1, 2) if with_is else [figure.subplots()],
                      ("fid", "inception_score"), ("FID (lower is better)", "Inception Score (higher is better)")))
    described = []
    for i, (label, group, curve) in enumerate(groups):
        color = f"C{i % 10}"
        for axes, metric, _ in panels:
            mine = group[[_finite(v) for v in group[metric]]]
            if not mine.empty:
                axes.plot(mine["cfg"], mine[metric], "o-", color=color, label=f"{label} (yours)")
            if not curve.empty and curve[metric].notna().any():
                paper = curve[curve[metric].notna()]
                training = _training(paper.iloc[0])
                axes.plot(paper["cfg"], paper[metric], "s--", color=color, mfc="none", alpha=0.8,
                          label=f"{label} paper ({_table(paper.iloc[0])}{training})")
        described.append(f"{label}: {_count(len(group), 'run')}"
                         + (", with the paper's curve" if not curve.empty else ""))
    for axes, _, name in panels:
        axes.set_xlabel("cfg scale (1 = no guidance)")
        axes.set_ylabel(name)
        if axes.lines:
            axes.legend(fontsize=7)
    if not with_is:
        described.append("no Inception Score recorded (Inception weights without a softmax layer)")
    return Chart("FID and IS vs cfg scale" if with_is else "FID vs cfg scale", _svg(figure), "; ".join(described))


def _table(row: pd.Series) -> str:
    """"arXiv:2406.06525 Table 9" -> "Table 9": the legend names the table, the page's table the paper."""
    return " ".join(str(row["source"]).split()[1:]) or str(row["source"])


def _training(row: pd.Series) -> str:
    if not pd.isna(row.get("epochs")):
        return f", {row['epochs']:g} epochs"
    steps = row.get("training")
    return "" if steps is None or pd.isna(steps) else f", {steps / 1e6:g}M steps" if steps >= 1e6 \
        else f", {steps / 1e3:g}K steps"


def size_chart(points: pd.DataFrame, Figure) -> Chart | None:
    """FID over parameters (log scale): runs at their model's size, beside their family's published numbers at
    the cfg scale of the family's best run."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    runs = points[[_finite(p) and _finite(f) for p, f in zip(points["params"], points["fid"])]]
    if runs.empty:
        return None
    figure = Figure(figsize=(5.2, 3.6), layout="constrained")
    axes = figure.subplots()
    # one published curve per model and resolution: at the runs' cfg scale the paper covers with most models
    # (ties: the scale of the better run)
    groups = runs.groupby([runs["model"], runs["image_size"].fillna(-1), runs["eval_size"].fillna(-1)], sort=False)
    seen, sizes = set(), set(runs["params"])
    for i, ((model, image, evaluated), group) in enumerate(groups):
        image, evaluated = (None if v == -1 else v for v in (image, evaluated))
        curves = [(published.family_at(model, image, evaluated, cfg), -fid, cfg)
                  for cfg, fid in zip(group["cfg"], group["fid"].astype(float))]
        family, _, cfg = max(curves, key=lambda c: (c[0]["model"].nunique(), c[1]))
        key = (tuple(family["model"]), image, evaluated, cfg)
        if family.empty or key in seen:
            continue
        seen.add(key)
        sizes.update(family["params_m"])
        cfg_words = "no guidance" if published.unguided(cfg) else f"cfg {float(cfg)!r}"
        axes.plot(family["params_m"], family["fid"], "s--", color=f"C{i % 10}", mfc="none", alpha=0.8,
                  label=f"paper {_group_label(None, str(model).split('-')[0], image, evaluated)}, "
                        f"{cfg_words}{_training(family.iloc[0])}")
    axes.plot(runs["params"], runs["fid"], "o", color="black", label="your runs")
    axes.set_xscale("log")
    axes.set_xticks(sorted(sizes))  # each model's size, written out (log ticks would need mathtext, which is off)
    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axes.xaxis.set_minor_formatter(NullFormatter())
    axes.tick_params(axis="x", labelrotation=45)
    _annotate(axes, runs["params"], runs["fid"], runs["run"], len(runs) > MAX_LABELS)  # once the axes are set
    axes.set_xlabel("parameters (millions, from reports/published.csv)")
    axes.set_ylabel("FID (lower is better)")
    axes.legend(fontsize=7)
    return Chart("FID vs model size", _svg(figure), f"{_count(len(runs), 'run')} of models with a published size")


def _paper_points(points: pd.DataFrame) -> pd.DataFrame:
    rows = points["paper row"].dropna().unique()
    return published.published().loc[list(rows)] if len(rows) else pd.DataFrame()


def scatter_chart(points: pd.DataFrame, Figure, x: str, y: str, title: str, xlabel: str, ylabel: str,
                  unit_square: bool = False) -> Chart | None:
    """Runs (labelled) and the published rows they match, one metric against another. `unit_square`: both are
    fractions, drawn on [0, 1] (an autoscaled axis from -0.04 to 0.04 around points at 0 says nothing)."""
    from matplotlib.ticker import MaxNLocator

    runs = points[[_finite(a) and _finite(b) for a, b in zip(points[x], points[y])]]
    if runs.empty:
        return None
    figure = Figure(figsize=(5.2, 3.6), layout="constrained")
    axes = figure.subplots()
    axes.plot(runs[x], runs[y], "o", color="black", label="your runs")
    paper = _paper_points(points)
    if not paper.empty:
        paper = paper[[_finite(a) and _finite(b) for a, b in zip(paper[x], paper[y])]]
    if not paper.empty:
        axes.plot(paper[x], paper[y], "s", color="C1", mfc="none", label="paper, at the runs' settings")
    axes.xaxis.set_major_locator(MaxNLocator(5))  # tiny ranges (recall 0 to 0.002) would crowd the labels
    if unit_square:
        axes.set_xlim(-0.02, 1.02)
        axes.set_ylim(-0.02, 1.02)
    _annotate(axes, runs[x], runs[y], runs["run"], len(runs) > MAX_LABELS)  # once the axes are set
    if not paper.empty:
        labels = [f"{model} " + ("no cfg" if pd.isna(cfg) else f"cfg {cfg:g}")
                  for model, cfg in zip(paper["model"], paper["cfg_scale"])]
        _annotate(axes, paper[x], paper[y], labels, len(paper) > MAX_LABELS)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.legend(fontsize=7)
    return Chart(title, _svg(figure), _count(len(runs), "run") + (f", {_count(len(paper), 'published row')}"
                                                                   if len(paper) else ""))


def _fid_over_log_time(axes, xlabel: str):
    """FID over a log time axis with plain tick labels, set before any label is placed (`_annotate` spaces labels
    in display coordinates, which the log scale changes)."""
    from matplotlib.ticker import FuncFormatter

    axes.set_xscale("log")
    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axes.set_xlabel(xlabel)
    axes.set_ylabel("FID (lower is better)")
    return axes


def speed_chart(points: pd.DataFrame, Figure) -> Chart | None:
    """FID over seconds per image (log scale), each run where it recorded its sampling speed: what a model's
    quality costs. Speeds are measured on each run's own device (named in the legend), so they compare only runs
    of one machine. Where a paper prints its own timing column for the runs' models (VAR's Table 1: wall-clock
    relative to VAR-d30, on the authors' GPU), a second panel draws that table as printed, in its own unit: it
    cannot share an axis with seconds measured here."""
    runs = points[[_finite(s) and s > 0 and _finite(f) for s, f in zip(points["images_per_s"], points["fid"])]]
    paper = published.timed_rows(set(points["model"].dropna()))
    paper = paper[[_finite(f) for f in paper["fid"]]]
    if runs.empty and paper.empty:
        return None
    count = (not runs.empty) + (not paper.empty)
    figure = Figure(figsize=(5.2 * count, 3.6), layout="constrained")
    panels = iter(figure.subplots(1, count, squeeze=False)[0])
    described = []
    if not runs.empty:
        axes = _fid_over_log_time(next(panels), "seconds per image (sampling + decode + features, this run's device)")
        seconds = 1.0 / runs["images_per_s"].astype(float)
        for i, (device, group) in enumerate(runs.groupby(runs["device"].fillna("device not recorded"), sort=False)):
            axes.plot(1.0 / group["images_per_s"].astype(float), group["fid"], "o", color=f"C{i % 10}",
                      label=str(device)[:60])
        _annotate(axes, seconds, runs["fid"], runs["run"], len(runs) > MAX_LABELS)
        axes.legend(fontsize=7, title="measured on", title_fontsize=7)
        described.append(f"{_count(len(runs), 'run')}; speeds compare only runs of the same device")
    if not paper.empty:
        axes = _fid_over_log_time(next(panels), "time per image as the paper prints it (its unit, its own GPU)")
        for i, ((source, unit), table) in enumerate(paper.groupby(["source", "time_unit"], sort=False)):
            axes.plot(table["time"], table["fid"], "s", color=f"C{i % 10}", mfc="none",
                      label=f"{source}, time {unit}")
            _annotate(axes, table["time"], table["fid"], list(table["model"]), len(table) > MAX_LABELS)
        axes.legend(fontsize=7, title="the paper's own timing column", title_fontsize=7)
        described.append(f"the papers' own timing of {', '.join(sorted(set(paper['model'])))}, measured on their "
                         "hardware, in their unit (not comparable with seconds measured here)")
    title = "FID vs seconds per image" if not runs.empty else "FID vs the papers' own timing"
    return Chart(title, _svg(figure), "; ".join(described))


def charts(board: Board) -> list[Chart]:
    """Every chart the board's data supports (a chart with nothing to show is left out)."""
    matplotlib, Figure = _matplotlib()
    points = _points(board)
    with matplotlib.rc_context(RC):
        drawn = [cfg_chart(points, Figure), size_chart(points, Figure),
                 scatter_chart(points, Figure, "recall", "precision", "Precision vs recall",
                               "Recall (coverage, higher is better)", "Precision (fidelity, higher is better)",
                               unit_square=True),
                 speed_chart(points, Figure),
                 scatter_chart(points, Figure, "fid", "inception_score", "IS vs FID",
                               "FID (lower is better)", "Inception Score (higher is better)")]
    return [chart for chart in drawn if chart is not None]
