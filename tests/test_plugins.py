"""The README's three "Adding ..." sections, followed literally: each section's Python file and entry-point
table become a throwaway distribution installed with pip (into a temporary folder), which is then listed and
benched through the CLI in a subprocess. Plus the registry's rules: broken plugins listed as unavailable,
built-ins not shadowable, one typed option syntax for editors and metrics."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from pie_bench.core.errors import ConfigError
from pie_bench.core.options import coerce_kwargs
from pie_bench.core.registry import Registry, subclass_check

REPO = Path(__file__).resolve().parent.parent


def readme_section(kind: str) -> tuple[str, str, dict]:
    """(file name, Python source, entry points) of README's "### Adding a(n) <kind>" section."""
    text = (REPO / "README.md").read_text()
    body = re.split(r"^### ", text, flags=re.M)
    section = next(s for s in body if re.match(rf"Adding an? {kind}\b", s))
    python = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    toml = re.search(r"```toml\n(.*?)```", section, re.S).group(1)
    name = re.match(r"# (\w+\.py)", python).group(1)
    return name, python, tomllib.loads(toml)["project"]["entry-points"]


def install_plugin(kind: str, tmp_path: Path) -> Path:
    """pip-install the README's plugin for ``kind`` into a fresh target folder; return that folder."""
    name, source, eps = readme_section(kind)
    src = tmp_path / f"src-{kind}"
    src.mkdir()
    (src / name).write_text(source)
    groups = "\n".join(f'[project.entry-points."{g}"]\n' + "".join(f'{k} = "{v}"\n' for k, v in table.items())
                       for g, table in eps.items())
    (src / "pyproject.toml").write_text(
        f'[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n\n'
        f'[project]\nname = "readme-{kind}-plugin"\nversion = "0.1"\n\n{groups}\n'
        f'[tool.setuptools]\npy-modules = ["{name[:-3]}"]\n')
    site = tmp_path / f"site-{kind}"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "--target", str(site), str(src)], check=True, capture_output=True, timeout=300)
    return site


def cli(args, site: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{REPO}", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(REPO / "cli.py"), *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)


def bench(args, site, tmp_path) -> dict:
    out = tmp_path / "run"
    res = cli(["bench", "--no-progress", "--no-report", "--out", str(out), *args], site, tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    return json.loads((out / "leaderboard.json").read_text())


def test_readme_editor_plugin(tmp_path):
    site = install_plugin("editor", tmp_path)
    listing = cli(["list-editors"], site, tmp_path)
    assert listing.returncode == 0 and "my_editor" in listing.stdout and "readme-editor-plugin" in listing.stdout
    board = bench(["--editors", "my_editor,identity", "--data", "smoke", "--limit", "2", "--metrics",
                   "mse_unedit_part", "--editor-arg", "my_editor.strength=0.75"], site, tmp_path)
    ed = board["editors"]["my_editor"]
    assert ed["config"]["strength"] == 0.75 and ed["n_ok"] == 2
    # only the edit region changes, so the background is exact, as for identity
    assert ed["metrics"]["mse_unedit_part"]["mean"] == 0.0


def test_readme_metric_plugin(tmp_path, smoke):
    site = install_plugin("metric", tmp_path)
    listing = cli(["list-metrics"], site, tmp_path)
    assert listing.returncode == 0 and "mean_brightness" in listing.stdout
    board = bench(["--editors", "identity", "--data", "smoke", "--limit", "2", "--metrics",
                   "psnr_unedit_part,mean_brightness:channel=0"], site, tmp_path)
    got = board["editors"]["identity"]["metrics"]["mean_brightness:channel=0"]["mean"]
    # identity returns the source: the mean red channel of the first two smoke photos, computed here
    expected = np.mean([s.image[..., 0].astype(np.float64).mean() / 255 for s in smoke.samples[:2]])
    assert got == pytest.approx(expected, abs=1e-5)


def test_readme_dataset_plugin(tmp_path):
    site = install_plugin("dataset", tmp_path)
    listing = cli(["list-datasets"], site, tmp_path)
    assert listing.returncode == 0 and "stripes" in listing.stdout
    board = bench(["--editors", "identity", "--data", "stripes", "--metrics", "psnr_unedit_part,mse_unedit_part"],
                  site, tmp_path)
    ed = board["editors"]["identity"]
    assert ed["n_ok"] == 4 and ed["metrics"]["mse_unedit_part"]["mean"] == 0.0


# ---------------------------------------------------------------------------------------------
# registry rules, in process


def _dist(site: Path, name: str, group: str, entries: dict) -> None:
    dist = site / f"{name.replace('-', '_')}-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in entries.items()))


def test_broken_and_shadowing_plugins(tmp_path, monkeypatch):
    site = tmp_path / "site"
    (site / "bad_metric.py").parent.mkdir(parents=True)
    (site / "bad_metric.py").write_text("import surely_missing_dependency_7\n")
    (site / "not_a_metric.py").write_text("class Thing:\n    pass\n")
    _dist(site, "bad-metrics", "pie_bench.test_metrics",
          {"broken": "bad_metric:M", "wrong_base": "not_a_metric:Thing", "psnr": "not_a_metric:Thing"})
    monkeypatch.syspath_prepend(str(site))
    reg = Registry("metric", "pie_bench.test_metrics", {"psnr": "metrics.pixel:BackgroundPSNR"},
                   subclass_check("metrics.base:Metric"))
    ok, bad = reg.split_available()
    assert ok == ["psnr"]  # the built-in, not the plugin of the same name
    assert "surely_missing_dependency_7" in bad["broken"]
    assert "not a subclass of metrics.base.Metric" in bad["wrong_base"]
    assert any("shadows the built-in" in why for why in reg.rejected.values())
    with pytest.raises(ConfigError, match="did you mean 'psnr'"):
        reg.get("pnsr")


def test_one_typed_option_syntax_for_editors_and_metrics():
    from editors.base import apply_overrides
    from editors.identity import IdentityConfig
    from metrics.lpips_metric import BackgroundLPIPS
    from metrics.registry import build_metrics

    # "1" means what the field's type says, whoever reads it
    assert coerce_kwargs(BackgroundLPIPS, {"chunk": "1"}, "m") == {"chunk": 1}
    assert apply_overrides(IdentityConfig(), {"seed": "1"}, "identity").seed == 1
    (lp,) = build_metrics(["lpips_unedit_part:resolution=64;chunk=2"], "toy")
    assert lp.resolution == 64 and lp.chunk == 2
    with pytest.raises(ConfigError, match="expected an integer"):
        build_metrics(["lpips_unedit_part:chunk=two"], "toy")
    with pytest.raises(ConfigError, match="bad option 'nett'"):
        build_metrics(["lpips_unedit_part:nett=alex"], "toy")
