"""VAR presets as data: files on the official Hub repo, pins, the README's FID recipe, and the paper numbers they
carry against reports/published.csv (the board's source), including where the README and the pinned version
disagree."""

from __future__ import annotations

import pytest

from bench.report.published import claim_disagreement, expected_fid
from generators.var.model import var_config
from generators.var.presets import HF_REPO, PAPER, PRESETS, SHA256, VAE_FILE


def test_preset_names_and_files():
    assert set(PRESETS) == {"var-d16", "var-d20", "var-d24", "var-d30", "var-vae"}
    for name, p in PRESETS.items():
        assert p.vae_file == VAE_FILE and p.image_size == p.eval_size == 256
        files = [p.vae_file] + ([p.var_file] if p.var_file else [])
        for f in files:
            assert f.source == f"https://huggingface.co/{HF_REPO}/resolve/main/{f.filename}"
            assert f.sha256 == SHA256[f.filename]
        if p.depth is not None:
            assert p.var_file.filename == f"var_d{p.depth}.pth"
            var_config(p.depth)  # a released architecture
    assert PRESETS["var-vae"].depth is None and PRESETS["var-vae"].var_file is None


def test_pins():
    assert VAE_FILE.sha256 == "7c3ec27ae28a3f87055e83211ea8cc8558bd1985d7b51742d074fb4c2fcf186c"
    assert all(SHA256[f"var_d{d}.pth"] is None for d in (16, 20, 24, 30))  # no two public sources agree yet
    for digest in SHA256.values():
        assert digest is None or (len(digest) == 64 and int(digest, 16) >= 0)


@pytest.mark.parametrize("depth", [16, 20, 24, 30])
def test_readme_recipe_and_paper_numbers(depth):
    p = PRESETS[f"var-d{depth}"]
    assert (p.cfg_scale, p.top_k, p.top_p, p.more_smooth) == (1.5, 900, 0.96, False)
    assert expected_fid(f"VAR-d{depth}", 256, p.cfg_scale) == (p.paper["fid"], PAPER)


def test_readme_fids_are_v1s_and_disagree_with_the_pinned_version():
    """The README's table prints arXiv v1's FIDs; the pinned v2 Table 1 differs for every model, and the board
    says so (bench generators shows the message)."""
    readme = {d: PRESETS[f"var-d{d}"].readme_fid for d in (16, 20, 24, 30)}
    assert readme == {16: 3.55, 20: 2.95, 24: 2.33, 30: 1.97}
    message = claim_disagreement("VAR-d16", 256, 1.5, readme[16])
    assert message is not None and "3.55" in message and "3.3" in message and PAPER in message
