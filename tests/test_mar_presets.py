"""MAR presets against the paper's tables (reports/published.csv) and the official README's commands."""

import pytest

from bench.report import published
from generators.mar.model import MAR_CONFIGS
from generators.mar.presets import PRESETS, UNGUIDED, VAE_FILE

# the official README's evaluation commands, copied by hand: model, --diffloss_d, --diffloss_w, --cfg
README = {"mar-b": ("MAR-B", 6, 1024, 2.9), "mar-l": ("MAR-L", 8, 1280, 3.0), "mar-h": ("MAR-H", 12, 1536, 3.2)}


@pytest.mark.parametrize("name", sorted(README))
def test_presets_follow_the_readme_commands(name):
    p = PRESETS[name]
    model, depth, width, cfg = README[name]
    assert (p.model, MAR_CONFIGS[p.model].diffloss_d, MAR_CONFIGS[p.model].diffloss_w, p.cfg_scale) == \
        (model, depth, width, cfg)
    assert (p.num_iter, p.sampling_steps, p.cfg_schedule, p.temperature, p.weights) == \
        (256, 100, "linear", 1.0, "model_ema")
    assert (p.image_size, p.eval_size, p.num_classes) == (256, 256, 1000)


@pytest.mark.parametrize("name", sorted(README))
def test_preset_numbers_are_the_papers(name):
    p = PRESETS[name]
    assert published.claim_disagreement(p.model, 256, p.cfg_scale, p.paper["fid"]) is None
    assert published.claim_disagreement(p.model, 256, None, p.paper_unguided["fid"]) is None
    row = published.paper_rows(p.model, 256, 256, p.cfg_scale).iloc[0]
    assert (row["inception_score"], row["precision"], row["recall"]) == \
        (p.paper["is"], p.paper["precision"], p.paper["recall"])
    assert UNGUIDED == {"cfg_scale": 1.0, "temperature": 0.95}


def test_files():
    checkpoints = [p.checkpoint for p in PRESETS.values()]
    assert len({f.filename for f in checkpoints + [VAE_FILE]}) == 4  # one cache path each
    assert all(f.url.startswith("https://www.dropbox.com/scl/fi/") and f.url.endswith("&dl=1")
               for f in checkpoints + [VAE_FILE])
    assert VAE_FILE.sha256 == "34ce001bcfffb7af67ec8af1e683a30d7bd45760855ddc7deedc1330f2cfd38f"
    assert all(f.sha256 is None for f in checkpoints)  # no digest two public sources agree on
