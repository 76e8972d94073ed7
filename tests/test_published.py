"""reports/published.csv: the papers' published numbers as data, each row citing its table.

Structural checks on every row, then a handful of rows compared with values copied by hand from the papers
(arXiv:2406.06525 v1 for LlamaGen, arXiv:2212.09748 for DiT, arXiv:2406.11838 for MAR), and the cross-table
consistency the papers imply: LlamaGen's Table 5 and Table 6 print the appendix's three-decimal values truncated to
two decimals; MAR's ablation tables repeat one setting's numbers across Tables 1, 2, 3 and 5.
"""

import math
from pathlib import Path

import pandas as pd
import pytest

CSV = Path(__file__).resolve().parent.parent / "reports" / "published.csv"

COLUMNS = [
    "model", "family", "params_m", "image_size", "eval_size", "epochs", "cfg_scale", "top_k", "top_p",
    "fid", "sfid", "inception_score", "precision", "recall", "rfid", "psnr", "ssim", "codebook_usage", "tokens",
    "time", "time_unit", "source", "note",
]
REQUIRED = ["model", "family", "image_size", "eval_size", "source"]
NUMERIC = [
    "params_m", "image_size", "eval_size", "epochs", "cfg_scale", "top_k", "top_p", "fid", "sfid",
    "inception_score", "precision", "recall", "rfid", "psnr", "ssim", "codebook_usage", "tokens", "time",
]
KEY = ["model", "image_size", "eval_size", "epochs", "cfg_scale", "source"]
LLAMAGEN = "arXiv:2406.06525"
DIT = "arXiv:2212.09748"
MAR = "arXiv:2406.11838"


@pytest.fixture(scope="module")
def raw() -> pd.DataFrame:
    """Every cell as the string written in the file ('' for empty), so nothing is coerced before it is checked."""
    return pd.read_csv(CSV, dtype=str, keep_default_na=False)


@pytest.fixture(scope="module")
def df(raw) -> pd.DataFrame:
    out = raw.copy()
    for c in NUMERIC:
        out[c] = pd.to_numeric(out[c].replace("", None), errors="raise")
    return out


def one(df: pd.DataFrame, **where) -> pd.Series:
    """The single row matching every column=value in `where` (None matches an empty cell)."""
    mask = pd.Series(True, index=df.index)
    for col, val in where.items():
        mask &= df[col].isna() if val is None else (df[col] == val)
    hits = df[mask]
    assert len(hits) == 1, f"{where}: {len(hits)} rows"
    return hits.iloc[0]


def test_columns_exact(raw):
    assert list(raw.columns) == COLUMNS


def test_required_columns_filled(raw):
    for c in REQUIRED:
        empty = raw[raw[c].str.strip() == ""]
        assert empty.empty, f"{c} empty in rows {list(empty.index)}"


def test_numeric_columns_parse(raw):
    for c in NUMERIC:
        for i, v in raw[c].items():
            if v != "":
                float(v)  # raises on anything that is not a number, e.g. '97.0%' or '1.4B'
                assert math.isfinite(float(v)), (c, i, v)


def test_ranges(df):
    assert (df["fid"].dropna() > 0).all()
    for c in ("precision", "recall", "ssim"):
        s = df[c].dropna()
        assert ((s >= 0) & (s <= 1)).all(), c
    assert (df["codebook_usage"].dropna().between(0, 100)).all()  # percent, as printed
    assert (df["image_size"] >= df["eval_size"]).all()
    assert (df["cfg_scale"].dropna() > 1).all()


def test_every_row_has_a_metric(df):
    metrics = df[["fid", "inception_score", "rfid"]]
    assert metrics.notna().any(axis=1).all()


def test_no_duplicate_keys(raw):
    dup = raw[raw.duplicated(KEY, keep=False)]
    assert dup.empty, dup[KEY].to_string()


def test_sources_cite_a_table(raw):
    assert raw["source"].str.startswith("arXiv:").all()
    assert raw["source"].str.contains(r" Table \d").all()


def test_llamagen_known_rows(df):
    # Table 9 (384 -> 256), LlamaGen-B 300 epochs; the README/brief round cfg 2.25 to 6.09, the table prints 6.092
    b225 = one(df, source=f"{LLAMAGEN} Table 9", model="LlamaGen-B", epochs=300, cfg_scale=2.25)
    assert b225["fid"] == 6.092 and round(b225["fid"], 2) == 6.09
    assert b225["image_size"] == 384 and b225["eval_size"] == 256
    assert one(df, source=f"{LLAMAGEN} Table 9", model="LlamaGen-B", epochs=300, cfg_scale=2.0)["fid"] == 6.437
    # Table 8 (256), LlamaGen-L 300 epochs cfg 1.75
    l175 = one(df, source=f"{LLAMAGEN} Table 8", model="LlamaGen-L", epochs=300, cfg_scale=1.75)
    assert (l175["fid"], l175["inception_score"], l175["sfid"]) == (3.805, 248.28, 8.487)
    # Table 6 headline and its Table 10 source row
    t6 = one(df, source=f"{LLAMAGEN} Table 6", model="LlamaGen-3B", cfg_scale=1.65)
    assert (t6["fid"], t6["inception_score"], t6["image_size"]) == (2.18, 263.33, 384)
    assert one(df, source=f"{LLAMAGEN} Table 10", model="LlamaGen-3B", epochs=300, cfg_scale=1.65)["fid"] == 2.189
    # Table 6 quotes DiT with one-decimal IS
    assert one(df, source=f"{LLAMAGEN} Table 6", model="DiT-XL/2")["inception_score"] == 278.2


def test_tokenizer_known_rows(df):
    vq16 = one(df, source=f"{LLAMAGEN} Table 3", model="VQ-16", tokens=256)
    assert (vq16["rfid"], vq16["psnr"], vq16["ssim"], vq16["codebook_usage"]) == (2.19, 20.79, 0.675, 97.0)
    assert one(df, source=f"{LLAMAGEN} Table 3", model="VQ-16", tokens=576)["rfid"] == 0.94
    assert one(df, source=f"{LLAMAGEN} Table 3", model="VQ-8", tokens=1024)["rfid"] == 0.59


def test_dit_known_rows(df):
    g = one(df, source=f"{DIT} Table 2", model="DiT-XL/2", cfg_scale=1.5)
    assert (g["fid"], g["sfid"], g["inception_score"], g["precision"], g["recall"]) == (2.27, 4.60, 278.24, 0.83, 0.57)
    assert one(df, source=f"{DIT} Table 2", model="DiT-XL/2", cfg_scale=None)["fid"] == 9.62
    assert one(df, source=f"{DIT} Table 3", model="DiT-XL/2", cfg_scale=1.5)["fid"] == 3.04


def _trunc2(x: float) -> float:
    return math.floor(x * 100 + 1e-9) / 100


@pytest.mark.parametrize("table", ["Table 5", "Table 6"])
def test_two_decimal_tables_truncate_the_appendix(df, table):
    """Every LlamaGen row of Tables 5/6 is an appendix (8/9/10) row cut to two decimals, at the same settings."""
    short = df[(df["source"] == f"{LLAMAGEN} {table}") & (df["family"] == "llamagen")]
    assert len(short) >= 7
    appendix = df[df["source"].isin([f"{LLAMAGEN} Table {n}" for n in (8, 9, 10)])]
    for _, r in short.iterrows():
        long = appendix[(appendix["model"] == r["model"]) & (appendix["image_size"] == r["image_size"])
                        & (appendix["epochs"] == r["epochs"]) & (appendix["cfg_scale"] == r["cfg_scale"])]
        assert len(long) == 1, (table, r["model"], r["image_size"], r["epochs"], r["cfg_scale"])
        for c in ("fid", "inception_score", "precision", "recall"):
            assert _trunc2(long.iloc[0][c]) == r[c], (table, r["model"], c)


VAR = "arXiv:2404.02905v2"


def test_var_known_rows(df):
    # Table 1 of v2 (the version the CSV pins); v1 printed 3.55 / 280.4 for d16 and 1.80 / 356.4 for d30-re
    d16 = one(df, source=f"{VAR} Table 1", model="VAR-d16")
    assert (d16["fid"], d16["inception_score"], d16["precision"], d16["recall"]) == (3.30, 274.4, 0.84, 0.51)
    assert (d16["params_m"], d16["cfg_scale"], d16["top_k"], d16["top_p"]) == (310, 1.5, 900, 0.96)
    re = one(df, source=f"{VAR} Table 1", model="VAR-d30-re")
    assert (re["fid"], re["inception_score"], re["precision"], re["recall"]) == (1.73, 350.2, 0.82, 0.60)
    assert "1.80 / IS 356.4" in re["note"]
    var_rows = df[df["family"] == "var"]
    assert sorted(var_rows["model"]) == ["VAR-d16", "VAR-d20", "VAR-d24", "VAR-d30", "VAR-d30-re"]
    assert (var_rows["image_size"] == 256).all() and (var_rows["eval_size"] == 256).all()
    # FID falls with size, as the paper's scaling claim says
    sized = var_rows[var_rows["model"] != "VAR-d30-re"].sort_values("params_m")
    assert sized["fid"].is_monotonic_decreasing and list(sized["params_m"]) == [310, 600, 1000, 2000]
def test_mar_known_rows(df):
    """MAR Table 4 (ImageNet 256, 800 epochs), copied by hand: the README's cfg scales key the guided rows."""
    for model, params, cfg, guided, unguided in [
            ("MAR-B", 208, 2.9, (2.31, 281.7, 0.82, 0.57), (3.48, 192.4, 0.78, 0.58)),
            ("MAR-L", 479, 3.0, (1.78, 296.0, 0.81, 0.60), (2.60, 221.4, 0.79, 0.60)),
            ("MAR-H", 943, 3.2, (1.55, 303.7, 0.81, 0.62), (2.35, 227.8, 0.79, 0.62))]:
        g = one(df, source=f"{MAR} Table 4", model=model, cfg_scale=cfg)
        assert (g["fid"], g["inception_score"], g["precision"], g["recall"]) == guided
        u = one(df, source=f"{MAR} Table 4", model=model, cfg_scale=None)
        assert (u["fid"], u["inception_score"], u["precision"], u["recall"]) == unguided
        assert g["params_m"] == u["params_m"] == params and g["epochs"] == u["epochs"] == 800
        assert g["family"] == "mar" and "linear cfg schedule" in g["note"] and "256 autoregressive steps" in g["note"]
    assert one(df, source=f"{MAR} Table 4", model="DiT-XL/2", cfg_scale=1.5)["fid"] == 2.27
    # Table 1: one token per step (256 steps) vs the default 64-step schedule, Diff Loss
    one_step = one(df, source=f"{MAR} Table 1", model="MAR (random, bidirect, 1 token/step), Diff Loss")
    default = one(df, source=f"{MAR} Table 1", model="MAR (default: random, bidirect, >1 token/step), Diff Loss")
    assert (one_step["fid"], default["fid"]) == (3.43, 3.50)
    assert one(df, source=f"{MAR} Table 2", model="MAR-L, VQ-16 tokenizer (LDM)")["rfid"] == 5.87
    assert one(df, source=f"{MAR} Table 3", model="MAR-L, MLP width 1536 (w/ CFG)")["fid"] == 1.91


def test_mar_tables_repeat_one_setting(df):
    """Rows the paper prints in two tables at one setting carry the same numbers in both."""
    pairs = [
        (("Table 1", "MAR (default: random, bidirect, >1 token/step), Diff Loss"), ("Table 2", "MAR-L, KL-16 tokenizer (LDM)")),
        (("Table 1", "MAR (default: random, bidirect, >1 token/step), Diff Loss (w/ CFG)"),
         ("Table 2", "MAR-L, KL-16 tokenizer (LDM) (w/ CFG)")),
        (("Table 2", "MAR-L, KL-16 tokenizer (ImageNet)"), ("Table 3", "MAR-L, MLP width 1024")),
        (("Table 2", "MAR-L, KL-16 tokenizer (ImageNet) (w/ CFG)"), ("Table 3", "MAR-L, MLP width 1024 (w/ CFG)")),
        (("Table 1", "MAR (default: random, bidirect, >1 token/step), CrossEnt"), ("Table 5", "MAR, random order, CrossEnt")),
        (("Table 1", "MAR (default: random, bidirect, >1 token/step), Diff Loss"), ("Table 5", "MAR, random order, Diff Loss")),
    ]
    for (t1, m1), (t2, m2) in pairs:
        a, b = one(df, source=f"{MAR} {t1}", model=m1), one(df, source=f"{MAR} {t2}", model=m2)
        assert (a["fid"], a["inception_score"]) == (b["fid"], b["inception_score"]), (m1, m2)
    assert len(df[df["source"].str.startswith(MAR)]) == 62


def test_timing_columns_as_printed(df, raw):
    """VAR's Table 1 prints wall-clock time per image relative to VAR-d30 (its GPU): VAR-d16 0.4 ... d30 1, and its
    comparison rows DiT-L/2 31 and DiT-XL/2 45 (the text: "DiT-XL/2 requires 45x the wall-clock time")."""
    var = "arXiv:2404.02905v2 Table 1"
    times = {m: one(df, source=var, model=m)["time"] for m in
             ("VAR-d16", "VAR-d20", "VAR-d24", "VAR-d30", "VAR-d30-re", "DiT-L/2", "DiT-XL/2")}
    assert times == {"VAR-d16": 0.4, "VAR-d20": 0.5, "VAR-d24": 0.6, "VAR-d30": 1, "VAR-d30-re": 1,
                     "DiT-L/2": 31, "DiT-XL/2": 45}
    dit = one(df, source=var, model="DiT-XL/2")
    assert (dit["fid"], dit["inception_score"], dit["precision"], dit["recall"]) == (2.27, 278.2, 0.83, 0.57)
    # a time always says its unit, and a unit never stands without a time
    assert ((raw["time"] == "") == (raw["time_unit"] == "")).all()
    assert set(raw.loc[raw["time"] != "", "time_unit"]) == {"x VAR-d30"}
