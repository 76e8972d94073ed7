"""The papers' numbers (`reports/published.csv`) and which of them a run, or a preset, should reproduce.

A run is matched by what it recorded: its model (LlamaGen's `gpt_model` "GPT-B" is the paper's "LlamaGen-B";
DiT's `model` "DiT-XL/2" is printed as such), the resolution it generated at, the resolution it was scored
at, and its cfg scale (1.0 or none = the paper's unguided row). Where top-k/top-p are recorded on both sides
they must agree too: a top-k 1000 run is not the paper's top-k 0 setting. Only runs of the released weights are
matched: a run that records `official_weights: false` (the user's own checkpoint under a release preset's name)
has no paper row, so the board shows no paper FID or difference for it; results written before the field existed
count as official.

One setting often has several rows: the same measurement printed twice (LlamaGen's Tables 5/6 truncate the
appendix's three decimals), other training lengths (50 to 300 epochs), or another paper reprinting it. The
rows are ranked, best first: the model's own paper (the source with most rows for that model), then the
longest training (the released checkpoints are the final ones: LlamaGen's 300 epochs, DiT-XL/2's 7M steps),
then the most decimals printed.
"""

from __future__ import annotations

import functools
import math
import re
from io import StringIO
from importlib.resources import files
from typing import Any, Iterable

import pandas as pd

from bench.errors import BenchError

NUMERIC = ("params_m", "image_size", "eval_size", "epochs", "cfg_scale", "top_k", "top_p", "fid", "sfid",
           "inception_score", "precision", "recall", "rfid", "psnr", "ssim", "codebook_usage", "tokens", "time")


@functools.lru_cache(maxsize=1)
def published() -> pd.DataFrame:
    """Every row of reports/published.csv, numbers parsed, plus the columns the ranking uses: `paper` (arXiv
    id), `training` (epochs, else the training steps its note states) and `fid_decimals` (as printed)."""
    try:
        text = (files("reports") / "published.csv").read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError) as err:
        raise BenchError(f"the published numbers (reports/published.csv) are not installed ({err}); "
                         "reinstall bench") from None
    raw = pd.read_csv(StringIO(text), dtype=str, keep_default_na=False)
    table = raw.copy()
    for column in NUMERIC:
        table[column] = pd.to_numeric(raw[column].replace("", None))
    table["paper"] = raw["source"].str.split().str[0]
    table["training"] = [epochs if not math.isnan(epochs) else _steps(note)
                         for epochs, note in zip(table["epochs"], raw["note"])]
    table["fid_decimals"] = [len(v.partition(".")[2]) if v else -1 for v in raw["fid"]]
    return table


def timed_rows(models: Iterable[str]) -> pd.DataFrame:
    """The papers' own timing columns that concern these models (the CSV's names): every row with a `time` from
    each table that prints one for any of them (VAR's Table 1 times VAR-d16 ... d30 and the DiTs relative to
    VAR-d30, on the authors' GPU). Times are comparable only within one table: its `time_unit` says how."""
    table = published()
    timed = table[table["time"].notna()]
    sources = set(timed.loc[timed["model"].isin(set(models)), "source"])
    return timed[timed["source"].isin(sources)].sort_values(["source", "time"], kind="stable")


def _steps(note: str) -> float:
    """"7M training steps" -> 7e6 (DiT counts steps, not epochs); NaN where the note states none."""
    found = re.search(r"(\d+(?:\.\d+)?)([KM]) training steps", note)
    return float(found.group(1)) * {"K": 1e3, "M": 1e6}[found.group(2)] if found else math.nan


def published_model(name: str | None) -> str | None:
    """The CSV's name for a model as a run or preset records it: "GPT-B" and "LlamaGen GPT-B" -> "LlamaGen-B",
    "DiT-XL/2" -> "DiT-XL/2"; None when the CSV has no such model."""
    if not isinstance(name, str) or not name.strip():
        return None
    name = name.strip()
    gpt = re.fullmatch(r"(?:LlamaGen[ -])?GPT-(\w+)", name, flags=re.IGNORECASE)
    if gpt:
        name = f"LlamaGen-{gpt.group(1).upper()}"
    by_lower = {m.lower(): m for m in published()["model"].unique()}
    return by_lower.get(name.lower())


def _same(column: pd.Series, value: float | None) -> pd.Series:
    """Rows whose `column` equals `value` (to float precision); empty cells match None."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return column.isna()
    return (column - float(value)).abs() < 1e-6


def unguided(cfg_scale: float | None) -> bool:
    """cfg 1.0 (or none recorded) is sampling without guidance: the paper's rows with an empty cfg_scale."""
    return cfg_scale is None or (isinstance(cfg_scale, float) and math.isnan(cfg_scale)) or float(cfg_scale) <= 1.0


def _own_paper(model: str) -> str:
    """The paper that reports a model most often: its own (others reprint a headline number)."""
    table = published()
    return table.loc[table["model"] == model, "paper"].value_counts().idxmax()


def _ranked(rows: pd.DataFrame, model: str) -> pd.DataFrame:
    """Best first: the model's own paper, the longest training, the most decimals, the CSV's order."""
    order = rows.assign(_own=rows["paper"] == _own_paper(model), _row=rows.index).sort_values(
        ["_own", "training", "fid_decimals", "_row"], ascending=[False, False, False, True], na_position="last")
    return order.drop(columns=["_own", "_row"])


def _at(rows: pd.DataFrame, image_size: int | None, eval_size: int | None, cfg_scale: float | None | str = "any",
        top_k: int | None = None, top_p: float | None = None) -> pd.DataFrame:
    """Rows with a FID at these settings; None = any resolution, cfg_scale "any" = every cfg scale; top-k/top-p
    only filter where the row records them."""
    mask = rows["fid"].notna()
    if cfg_scale != "any":
        mask &= _same(rows["cfg_scale"], None if unguided(cfg_scale) else cfg_scale)
    for column, value in (("image_size", image_size), ("eval_size", eval_size)):
        if value is not None:
            mask &= _same(rows[column], value)
    for column, value in (("top_k", top_k), ("top_p", top_p)):
        if value is not None:
            mask &= rows[column].isna() | _same(rows[column], value)
    return rows[mask]


def paper_rows(model: str, image_size: int | None, eval_size: int | None = None, cfg_scale: float | None = None,
               top_k: int | None = None, top_p: float | None = None) -> pd.DataFrame:
    """The published rows of this model at this generated resolution, scored resolution (None: any) and cfg scale
    (None or <= 1: the unguided rows), best first (see the module docstring). Empty when there are none."""
    name = published_model(model)
    table = published()
    if name is None:
        return table.iloc[0:0]
    return _ranked(_at(table[table["model"] == name], image_size, eval_size, cfg_scale, top_k, top_p), name)


def expected_fid(preset_model: str, image_size: int, cfg_scale: float | None,
                 eval_size: int | None = None) -> tuple[float, str] | None:
    """(FID, source) the paper gives for this model, resolution and cfg scale; None when it gives none."""
    rows = paper_rows(preset_model, image_size, eval_size, cfg_scale)
    if rows.empty:
        return None
    best = rows.iloc[0]
    return float(best["fid"]), str(best["source"])


def _agrees(printed: float, claimed: float) -> bool:
    """Whether `claimed` is `printed` shown with fewer decimals (LlamaGen truncates; others round)."""
    decimals = len(repr(float(claimed)).partition(".")[2])
    return abs(printed - claimed) < 10 ** -decimals - 1e-12


def _cfg_words(cfg_scale: float | None) -> str:
    return "no guidance" if unguided(cfg_scale) else f"cfg {float(cfg_scale)!r}"


def claim_disagreement(model: str, image_size: int, cfg_scale: float | None, claimed_fid: float,
                       eval_size: int | None = None) -> str | None:
    """Why a preset's "paper FID" is not the paper's FID at the preset's settings, or None when it is.

    E.g. llamagen-b claims 6.09 at cfg 2.0, but LlamaGen's Table 9 gives 6.437 at cfg 2.0; 6.09 is its cfg
    2.25 number. The message names both, so the preset (or the user's expectation) can be corrected.
    """
    rows = paper_rows(model, image_size, eval_size, cfg_scale)
    if not rows.empty and _agrees(float(rows.iloc[0]["fid"]), claimed_fid):
        return None
    name = published_model(model) or model
    message = f"claimed paper FID {claimed_fid!r} at {_cfg_words(cfg_scale)}, but " + (
        f"{rows.iloc[0]['source']} gives {rows.iloc[0]['fid']:g}" if not rows.empty
        else f"reports/published.csv has no {name} row at {image_size} px with {_cfg_words(cfg_scale)}")
    if name in set(published()["model"]):
        every_cfg = _ranked(_at(published()[published()["model"] == name], image_size, eval_size), name)
        found = [row for _, row in every_cfg.iterrows() if _agrees(float(row["fid"]), claimed_fid)]
        if found:
            epochs = "" if math.isnan(found[0]["epochs"]) else f", {found[0]['epochs']:g} epochs"
            message += (f"; {claimed_fid!r} is its FID at {_cfg_words(found[0]['cfg_scale'])} "
                        f"({found[0]['source']}{epochs})")
    return message


def paper_curve(model: str, image_size: int | None, eval_size: int | None) -> pd.DataFrame:
    """The paper's numbers over cfg scales for one model and resolution: its own paper, the longest training,
    one row per cfg scale (the most decimals), sorted by cfg with "no guidance" as cfg 1.0. For charts."""
    name = published_model(model)
    table = published()
    if name is None:
        return table.iloc[0:0]
    rows = _ranked(_at(table[table["model"] == name], image_size, eval_size), name)
    if rows.empty:
        return rows
    best = rows.iloc[0]
    rows = rows[(rows["paper"] == best["paper"]) & _same(rows["training"], best["training"])]
    rows = rows.assign(cfg=rows["cfg_scale"].fillna(1.0)).drop_duplicates("cfg", keep="first")
    return rows.sort_values("cfg")


def family_at(model: str, image_size: int | None, eval_size: int | None, cfg_scale: float | None) -> pd.DataFrame:
    """One row per model of `model`'s family, from its own paper, at this resolution and cfg scale, all at one
    training length (the one that covers the most models, then the longest), sorted by size: the paper's
    FID-vs-size curve a run sits on. For charts."""
    name = published_model(model)
    table = published()
    if name is None:
        return table.iloc[0:0]
    family = table.loc[table["model"] == name, "family"].iloc[0]
    rows = _at(table[(table["family"] == family) & (table["paper"] == _own_paper(name))
                     & table["params_m"].notna()], image_size, eval_size, cfg_scale)
    if rows.empty:
        return rows
    coverage = rows.groupby("training", dropna=False)["model"].nunique()
    training = max(coverage.index, key=lambda t: (coverage[t], -math.inf if math.isnan(t) else t))
    rows = rows[_same(rows["training"], training)]
    rows = rows.sort_values(["fid_decimals"], ascending=False, kind="stable").drop_duplicates("model")
    return rows.sort_values("params_m")


# -- matching runs ---------------------------------------------------------------------------------------------
#: where a result records what paper rows are matched on (dotted paths into the flattened result; first wins)
RUN_FIELDS = {
    "model": ("settings.generator_config.gpt_model", "settings.generator_config.model", "settings.model"),
    "image_size": ("settings.generator_config.image_size", "settings.image_size"),
    "eval_size": ("settings.generator_config.eval_size", "settings.eval_size", "samples.resolution"),
    "cfg_scale": ("settings.generator_config.cfg_scale", "settings.cfg_scale"),
    "top_k": ("settings.generator_config.top_k", "settings.top_k"),
    "top_p": ("settings.generator_config.top_p", "settings.top_p"),
    "official_weights": ("settings.generator_config.official_weights",),
}


def run_field(row: pd.Series, name: str) -> Any:
    """A run's model, image_size, eval_size, cfg_scale, top_k, top_p or official_weights as it recorded it (None if
    it did not)."""
    for column in RUN_FIELDS[name]:
        if column in row.index and not pd.isna(row[column]):
            return row[column]
    return None


def match_runs(table: pd.DataFrame) -> pd.DataFrame:
    """Per run (same index as `table`): the CSV's model name and the best published row at the run's resolution
    and cfg scale (`paper row`, an index into `published()`), or missing values where there is none. A run of
    other weights than the release's (`official_weights` false) keeps its model name but matches no row."""
    models, matches = [], []
    for _, row in table.iterrows():
        model = published_model(run_field(row, "model"))
        official = run_field(row, "official_weights")
        rows = pd.DataFrame() if model is None or (official is not None and not bool(official)) else paper_rows(
            model, *(run_field(row, k) for k in ("image_size", "eval_size", "cfg_scale", "top_k", "top_p")))
        models.append(model)
        matches.append(rows.index[0] if not rows.empty else None)
    return pd.DataFrame({"paper model": pd.Series(models, index=table.index, dtype="string"),
                         "paper row": pd.Series(matches, index=table.index, dtype="Int64")})
