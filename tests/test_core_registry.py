"""Editor registry: lazy built-ins, unavailable optional editors, did-you-mean, third-party entry points."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from editors import registry
from editors.base import apply_overrides
from editors.identity import IdentityConfig
from pie_bench.core.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def fresh_registry(monkeypatch):
    monkeypatch.setattr(registry.EDITORS, "builtins", dict(registry.EDITORS.builtins))
    registry.registry(refresh=True)
    yield registry.EDITORS.builtins
    registry.registry(refresh=True)


def test_unknown_editor_did_you_mean():
    with pytest.raises(ConfigError, match="did you mean 'identity'"):
        registry.get_entry("identtiy")


def test_broken_optional_dependency_does_not_break_all(fresh_registry, tmp_path, monkeypatch):
    mod = tmp_path / "needs_missing_dep.py"
    mod.write_text("import surely_not_installed_pkg_42\nclass E: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    fresh_registry["broken"] = "needs_missing_dep:E"
    registry.registry(refresh=True)
    names, unavailable = registry.resolve_editor_names("all")
    assert "identity" in names and "broken" not in names
    assert "surely_not_installed_pkg_42" in unavailable["broken"]
    with pytest.raises(ConfigError, match="unavailable"):
        registry.resolve_editor_names("identity,broken")


def test_editor_arg_overrides_are_typed():
    cfg = apply_overrides(IdentityConfig(), {"seed": "7"}, "identity")
    assert cfg.seed == 7
    with pytest.raises(ConfigError, match="expected an integer"):
        apply_overrides(IdentityConfig(), {"seed": "seven"}, "identity")
    with pytest.raises(ConfigError, match="unknown key.*did you mean identity.seed"):
        apply_overrides(IdentityConfig(), {"sed": "1"}, "identity")


PLUGIN = '''
from dataclasses import dataclass
import numpy as np
from editors.base import Editor, EditorConfig, EditOutput

@dataclass
class DarkenConfig(EditorConfig):
    factor: float = 0.5

class DarkenEditor(Editor):
    """A third-party editor: darkens the masked region (a plugin, no core change)."""
    name = "darken"
    Config = DarkenConfig
    requires = frozenset({"image"})
    paper = "test plugin"
    uses_backbone = False

    def edit(self, sample, generator):
        out = sample.image.astype(np.float32)
        out[sample.mask] *= self.config.factor
        return EditOutput(image=out.round().astype(np.uint8))
'''


def test_third_party_editor_via_entry_point(tmp_path):
    """Install a throwaway distribution (a dist-info with an entry point) and bench it through the CLI."""
    site = tmp_path / "site"
    (site / "darken_plugin").mkdir(parents=True)
    (site / "darken_plugin" / "__init__.py").write_text(textwrap.dedent(PLUGIN))
    dist = site / "darken_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: darken-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[pie_bench.editors]\ndarken = darken_plugin:DarkenEditor\n")
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{REPO}"}
    listing = subprocess.run([sys.executable, "cli.py", "list-editors"], cwd=REPO, env=env, capture_output=True,
                             text=True, timeout=120)
    assert listing.returncode == 0 and "darken" in listing.stdout and "darken-plugin" in listing.stdout
    out = tmp_path / "run"
    res = subprocess.run([sys.executable, "cli.py", "bench", "--data", "smoke", "--editors", "darken,identity", "--limit", "2",
                          "--metrics", "mse_unedit_part", "--editor-arg", "darken.factor=0.25", "--no-progress",
                          "--out", str(out)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    board = json.loads((out / "leaderboard.json").read_text())
    assert board["editors"]["darken"]["config"]["factor"] == 0.25
    assert board["editors"]["darken"]["n_ok"] == 2
    # darkening only the edit region leaves the background exact: MSE 0 like identity
    assert board["editors"]["darken"]["metrics"]["mse_unedit_part"]["mean"] == 0.0
    assert (out / "darken").is_dir() and len(list((out / "darken").glob("*.png"))) == 2
