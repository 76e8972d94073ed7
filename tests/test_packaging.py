"""A non-editable install carries everything the harness reads at run time: the reference registry and the
published numbers are data files."""

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_ships_the_reference_registry(tmp_path):
    # Build from a copy of the sources: setuptools' build/ folder in a checkout may hold files from older builds.
    source = tmp_path / "source"
    source.mkdir()
    for name in ["pyproject.toml", "README.md"]:
        shutil.copy(REPO / name, source)
    for name in ["bench", "generators", "reference_stats", "reports"]:
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path / "dist"), str(source)], check=True)
    wheel = next((tmp_path / "dist").glob("bench-*.whl"))
    target = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(target)
    # Import the unpacked wheel from an unrelated folder: nothing may come from the checkout.
    probe = ("import json, bench, sys; from bench.references import known_references; "
             "from bench.report.published import published; from bench.references import resolve_reference; "
             "from generators.llamagen.presets import packaged_path; "
             "demo = resolve_reference('demo64', allow_download=False); "
             "print(json.dumps({'bench': bench.__file__, 'names': sorted(known_references()), "
             "'published': len(published()), 'demo_ref': str(demo.path), "
             "'weights': [str(packaged_path(n)) for n in ('demo_vq.safetensors', 'demo_gpt.safetensors') "
             "if packaged_path(n).is_file()]}))")
    found = json.loads(subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, check=True, text=True,
                                      capture_output=True, env={"PYTHONPATH": str(target), "PATH": ""}).stdout)
    assert Path(found["bench"]).is_relative_to(target)
    expected = {k for k in json.loads((REPO / "reference_stats" / "registry.json").read_text()) if not k.startswith("_")}
    assert set(found["names"]) == expected and "imagenet256" in expected
    assert found["published"] == len((REPO / "reports" / "published.csv").read_text().strip().splitlines()) - 1
    # the offline demo's files: its reference batch (sha256-verified on resolve) and both models' weights
    assert Path(found["demo_ref"]).is_relative_to(target) and len(found["weights"]) == 2
