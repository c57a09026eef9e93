"""The one lazy registry behind editors, metrics and datasets (lm-evaluation-harness style).

Each entry is a ``"module:object"`` string imported on first use, so a broken optional dependency marks
that one entry unavailable, with its reason, and never breaks the others (``--editors all`` runs every
editor that imports). Third-party distributions add entries through an entry-point group, with no core
change::

    [project.entry-points."pie_bench.editors"]     # or pie_bench.metrics / pie_bench.datasets
    my_editor = "my_pkg.editor:MyEditor"

Built-ins cannot be shadowed: a plugin that reuses a built-in name is listed as rejected, with the reason,
and the built-in is used. Every entry is checked against its kind's base (an ``Editor`` subclass, a
``Metric`` subclass, a dataset loader) when it is resolved.
"""
from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Callable, Optional

from pie_bench.core.errors import ConfigError


@dataclass
class Entry:
    name: str
    target: str  # "module:object"
    source: str  # "builtin" or the distribution that provides the entry point
    kind: str
    check: Optional[Callable[[object], Optional[str]]] = field(default=None, repr=False)
    _obj: object = field(default=None, repr=False)
    _error: Optional[str] = None

    def resolve(self):
        if self._obj is None and self._error is None:
            module, _, attr = self.target.partition(":")
            try:
                obj = importlib.import_module(module)
                for part in filter(None, attr.split(".")):
                    obj = getattr(obj, part)
                why = self.check(obj) if self.check else None
                if why:
                    self._error = why
                else:
                    self._obj = obj
            except ModuleNotFoundError as exc:
                # a missing module that IS the entry's own file means it is not there at all
                self._error = (f"missing dependency {exc.name!r}" if exc.name and not module.startswith(exc.name)
                               else f"module {module} not found")
            except Exception as exc:  # any import-time failure makes this entry unavailable, not the others
                self._error = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
        if self._obj is None:
            raise ConfigError(f"{self.kind} {self.name!r} ({self.target}) is unavailable ({self._error}); "
                              f"install its dependencies or leave it out")
        return self._obj

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


def subclass_check(base_ref: str) -> Callable[[object], Optional[str]]:
    """A check that the resolved object is a subclass of ``module:Class`` (imported only when checking)."""
    def check(obj) -> Optional[str]:
        module, _, attr = base_ref.partition(":")
        base = getattr(importlib.import_module(module), attr)
        if not (isinstance(obj, type) and issubclass(obj, base)):
            return f"{obj!r} is not a subclass of {base.__module__}.{base.__name__}"
        return None
    return check


class Registry:
    def __init__(self, kind: str, group: str, builtins: dict[str, str],
                 check: Optional[Callable[[object], Optional[str]]] = None):
        self.kind, self.group, self.builtins, self.check = kind, group, dict(builtins), check
        self._table: Optional[dict[str, Entry]] = None
        self._built_from: dict[str, str] = {}
        self.rejected: dict[str, str] = {}  # "name (distribution)" -> why it is not used

    def entries(self, refresh: bool = False) -> dict[str, Entry]:
        # rebuilt when the built-in table was changed (tests patch it) as well as on request
        if self._table is None or refresh or self._built_from != self.builtins:
            self._built_from = dict(self.builtins)
            table = {n: Entry(n, t, "builtin", self.kind, self.check) for n, t in self.builtins.items()}
            self.rejected = {}
            for ep in entry_points(group=self.group):
                dist = getattr(ep, "dist", None)
                source = dist.name if dist else "entry point"
                if ep.name in self.builtins:
                    self.rejected[f"{ep.name} ({source})"] = f"shadows the built-in {self.kind} {ep.name!r}; rename it"
                    continue
                table[ep.name] = Entry(ep.name, ep.value, source, self.kind, self.check)
            self._table = table
        return self._table

    def names(self) -> list[str]:
        return list(self.entries())

    def entry(self, name: str) -> Entry:
        table = self.entries()
        if name not in table:
            close = difflib.get_close_matches(name, table, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(f"unknown {self.kind} {name!r}; {hint}available: {', '.join(sorted(table))}")
        return table[name]

    def get(self, name: str):
        return self.entry(name).resolve()

    def split_available(self, names: Optional[list[str]] = None) -> tuple[list[str], dict[str, str]]:
        """(available names, {unavailable name: reason}) over ``names`` (default: all)."""
        ok, bad = [], {}
        for n in names if names is not None else self.names():
            e = self.entry(n)
            if e.available:
                ok.append(n)
            else:
                bad[n] = e.error or "unavailable"
        return ok, bad
