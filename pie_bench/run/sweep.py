"""``sweep``: every combination of a grid of editor settings, run through the normal runner into one run
folder (resumable; one config hash per combination) and summarised in one leaderboard.

Each combination is an editor *variant* named ``<editor>@<key>=<value>,...`` (grid order), so records,
images and leaderboard rows stay apart while the registry name says which editor it is. Variants that
run the same inversion (P2P editors with the same number of DDIM steps on the same sample) share it
through the editors' in-process inversion cache; records count the reuses (``extras.inversion_cached``).

Grids: ``--grid num_ddim_steps=10,20,50`` (applies to every ``--editor``), ``--grid nti_p2p.inner_steps=1,3``
(one editor), or a YAML/JSON file ``{editor: {key: [values]}}``.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
from dataclasses import dataclass, field
from typing import Optional, Sequence

from editors.registry import get_editor_class

from pie_bench.core.errors import ConfigError, HarnessError
from pie_bench.core.options import read_table_file

VARIANT_SEP = "@"


@dataclass
class Variant:
    alias: str  # the name records and rows carry
    editor: str  # the registry name
    args: dict[str, str] = field(default_factory=dict)

    @property
    def shares_inversions(self) -> bool:
        """Whether the editor can reuse another variant's inversion (its config has ``share_inversion``)."""
        return any(f.name == "share_inversion" for f in dataclasses.fields(get_editor_class(self.editor).Config))


def _values(text: str, where: str) -> list[str]:
    values = [v.strip() for v in text.split(",")]
    if not text.strip() or any(not v for v in values):
        raise ConfigError(f"{where}: empty value list; give comma-separated values, e.g. num_ddim_steps=10,20,50")
    return values


def parse_grid(editors: Sequence[str], specs: Sequence[str], grid_file: Optional[str] = None) -> dict[str, dict[str, list[str]]]:
    """``{editor: {key: [values as strings]}}`` from ``--grid`` strings and an optional YAML/JSON file."""
    editors = [e.strip() for e in editors if e.strip()]
    grids: dict[str, dict[str, list[str]]] = {e: {} for e in editors}
    if grid_file:
        for ed, table in read_table_file(grid_file, "sweep grid", "{editor: {key: [values]}}").items():
            grids.setdefault(ed, {})
            for key, vals in table.items():
                vals = vals if isinstance(vals, list) else [vals]
                if not vals:
                    raise ConfigError(f"{grid_file}: {ed}.{key}: empty value list; give at least one value")
                grids[ed][str(key)] = [v if isinstance(v, str) else json.dumps(v) for v in vals]
    for spec in specs:
        key, eq, text = spec.partition("=")
        where = f"--grid {spec!r}"
        if not eq or not key.strip():
            raise ConfigError(f"{where}: expected KEY=V1,V2 or EDITOR.KEY=V1,V2, e.g. num_ddim_steps=10,20,50")
        editor, dot, name = key.strip().rpartition(".")
        targets = [editor] if dot else list(grids)
        if not targets:
            raise ConfigError(f"{where}: no editor to apply it to; pass --editor NAME or write EDITOR.KEY=...")
        for t in targets:
            grids.setdefault(t, {})[name] = _values(text, where)
    if not grids:
        raise ConfigError("sweep: no editor given; pass --editor NAME (repeatable) or a --grid-file")
    return grids


def expand(grids: dict[str, dict[str, list[str]]]) -> list[Variant]:
    """Every combination, checked against each editor's config (an unknown key or a value of the wrong
    type is a one-line error before anything runs)."""
    out: list[Variant] = []
    for editor, grid in grids.items():
        try:
            cls = get_editor_class(editor)
        except HarnessError as exc:
            raise ConfigError(f"sweep: {' '.join(str(exc).split())}") from None
        keys = list(grid)
        for combo in itertools.product(*(grid[k] for k in keys)):
            args = dict(zip(keys, combo))
            try:
                cls(**args)
            except HarnessError as exc:
                msg = " ".join(str(exc).split()).replace("--editor-arg", "--grid")
                raise ConfigError(f"sweep: {msg}") from None
            alias = editor + (VARIANT_SEP + ",".join(f"{k}={v}" for k, v in args.items()) if args else "")
            out.append(Variant(alias, editor, args))
    return out


def bench_options_fields(variants: Sequence[Variant]) -> dict:
    """The ``BenchOptions`` fields that run ``variants``: names, per-name args, and the registry name of each."""
    return {"editors": [v.alias for v in variants], "editor_args": {v.alias: v.args for v in variants if v.args},
            "aliases": {v.alias: v.editor for v in variants if v.alias != v.editor}}
