"""Lazy editor registry (lm-evaluation-harness style).

Built-ins are ``"module:Class"`` strings imported on first use, so a broken optional dependency
of one editor marks that editor unavailable without breaking ``--editors all``. Third-party
packages add editors through the ``pie_bench.editors`` entry-point group, with no core change::

    [project.entry-points."pie_bench.editors"]
    my_editor = "my_pkg.editor:MyEditor"
"""
from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Optional

from pie_bench.core.errors import ConfigError

ENTRY_POINT_GROUP = "pie_bench.editors"

BUILTIN_EDITORS: dict[str, str] = {
    "identity": "editors.identity:IdentityEditor",
    "ddim_p2p": "editors.ddim_p2p:DDIMP2PEditor",
    "nti_p2p": "editors.nti_p2p:NullTextP2PEditor",
    "npi_p2p": "editors.npi_p2p:NegativePromptP2PEditor",
    "ip2p": "editors.ip2p:InstructPix2PixEditor",
    "pix2pix_zero": "editors.pix2pix_zero:Pix2PixZeroEditor",
    "icd": "editors.icd:ICDEditor",
}


@dataclass
class EditorEntry:
    name: str
    target: str  # "module:Class"
    source: str  # "builtin" or the distribution providing the entry point
    _cls: Optional[type] = None
    _error: Optional[str] = None

    def resolve(self) -> type:
        if self._cls is None and self._error is None:
            module, _, attr = self.target.partition(":")
            try:
                self._cls = getattr(importlib.import_module(module), attr)
            except ModuleNotFoundError as exc:
                # a missing module that IS the editor's own file means it is not written yet
                self._error = f"missing dependency {exc.name!r}" if exc.name != module else f"module {module} not found"
            except Exception as exc:  # any import-time failure makes this editor unavailable, not the others
                self._error = f"{type(exc).__name__}: {exc}"
        if self._cls is None:
            raise ConfigError(f"editor {self.name!r} is unavailable ({self._error}); "
                              "install its dependencies or drop it from --editors")
        return self._cls

    @property
    def available(self) -> bool:
        try:
            self.resolve()
            return True
        except ConfigError:
            return False

    @property
    def error(self) -> Optional[str]:
        return self._error


def _entries() -> dict[str, EditorEntry]:
    table = {name: EditorEntry(name, target, "builtin") for name, target in BUILTIN_EDITORS.items()}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in table and table[ep.name].source == "builtin":
            continue  # built-ins win: a plugin cannot silently replace a reference editor
        dist = getattr(ep, "dist", None)
        table[ep.name] = EditorEntry(ep.name, ep.value, dist.name if dist else "entry point")
    return table


_REGISTRY: Optional[dict[str, EditorEntry]] = None


def registry(refresh: bool = False) -> dict[str, EditorEntry]:
    global _REGISTRY
    if _REGISTRY is None or refresh:
        _REGISTRY = _entries()
    return _REGISTRY


def get_entry(name: str) -> EditorEntry:
    table = registry()
    if name not in table:
        close = difflib.get_close_matches(name, table, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(f"unknown editor {name!r}; {hint}available: {', '.join(sorted(table))}")
    return table[name]


def get_editor_class(name: str) -> type:
    return get_entry(name).resolve()


def resolve_editor_names(spec: str, backbone: Optional[str] = None) -> tuple[list[str], dict[str, str]]:
    """``all`` -> every available editor (unavailable ones returned with their reason, including those
    that declare they cannot run on ``backbone``, e.g. iCD on ShapesEdit); otherwise a comma list, each
    name checked (an explicitly named editor is run, and fails to load if it must)."""
    table = registry()
    if spec.strip() == "all":
        names, unavailable = [], {}
        for name, entry in table.items():
            if not entry.available:
                unavailable[name] = entry.error or "unavailable"
            elif backbone is not None and (why := entry.resolve().backbone_unavailable(backbone)):
                unavailable[name] = why
            else:
                names.append(name)
        return names, unavailable
    names = [n.strip() for n in spec.split(",") if n.strip()]
    for n in names:
        get_entry(n).resolve()
    return names, {}
