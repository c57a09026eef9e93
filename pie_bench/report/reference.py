"""Published PIE-Bench tables as reference leaderboards: one JSON file each in ``reference_tables/``
(format in that folder's README), loaded and checked here. ``reference_view`` puts a run beside one.

A table is data: a file with a missing field, a non-numeric value or an unknown format version is a
one-line ``ConfigError`` naming the file and the field, never a crash deep in the comparison.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from pie_bench.core.errors import ConfigError

TABLES_DIR = Path(__file__).with_name("reference_tables")
FORMAT = 1


@dataclass
class ReferenceRow:
    method: str
    editor: str  # our registry name, "" for a method the harness does not implement
    values: dict[str, float]
    base_model: str = ""
    steps: Optional[int] = None
    seconds: Optional[float] = None
    note: str = ""


@dataclass
class ReferenceTable:
    id: str
    title: str
    source: dict
    dataset: str
    n_images: int
    scales: dict[str, float]
    rows: list[ReferenceRow]
    spread: dict[str, float] = field(default_factory=dict)
    spread_how: str = ""
    columns: dict[str, str] = field(default_factory=dict)
    protocol: str = ""
    hardware: str = ""
    path: str = ""

    def row_for(self, editor: str, steps: Optional[int] = None) -> Optional[ReferenceRow]:
        """The editor's row; where the table has several for it (FireFlow at 8 and 15 steps), the one with
        ``steps``, else the first."""
        rows = [r for r in self.rows if r.editor and r.editor == editor]
        return next((r for r in rows if steps is not None and r.steps == steps), rows[0] if rows else None)

    def column(self, metric: str) -> str:
        return self.columns.get(metric, metric)


def available() -> list[str]:
    return sorted(p.stem for p in TABLES_DIR.glob("*.json"))


def _number(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{where}: expected a finite number, got {value!r}; fix the table file")
    return float(value)


def _field(data: dict, key: str, kind, where: str):
    if key not in data:
        raise ConfigError(f"{where}: missing field {key!r}; see pie_bench/report/reference_tables/README.md")
    value = data[key]
    if not isinstance(value, kind):
        raise ConfigError(f"{where}: field {key!r} must be {getattr(kind, '__name__', kind)}, got "
                          f"{type(value).__name__}; see pie_bench/report/reference_tables/README.md")
    return value


def parse_table(data, where: str) -> ReferenceTable:
    """A table from its decoded JSON (``where`` names the file in errors)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: a reference table is a JSON object; see pie_bench/report/reference_tables/README.md")
    if data.get("format") != FORMAT:
        raise ConfigError(f"{where}: format {data.get('format')!r}; this harness reads format {FORMAT}")
    scales = {k: _number(v, f"{where}: scales.{k}") for k, v in _field(data, "scales", dict, where).items()}
    spread_block = data.get("spread", {})
    if not isinstance(spread_block, dict):
        raise ConfigError(f"{where}: field 'spread' must be an object with 'how' and 'values'")
    spread = {k: _number(v, f"{where}: spread.values.{k}") for k, v in spread_block.get("values", {}).items()}
    rows = []
    for i, r in enumerate(_field(data, "rows", list, where)):
        at = f"{where}: rows[{i}]"
        if not isinstance(r, dict):
            raise ConfigError(f"{at}: a row is a JSON object")
        values = {k: _number(v, f"{at}.values.{k}") for k, v in _field(r, "values", dict, at).items()}
        unknown = sorted(set(values) - set(scales))
        if unknown:
            raise ConfigError(f"{at}: values for {', '.join(unknown)} but no scale for them in 'scales'")
        seconds = r.get("seconds")
        rows.append(ReferenceRow(method=str(_field(r, "method", str, at)), editor=str(r.get("editor") or ""),
                                 values=values, base_model=str(r.get("base_model") or ""),
                                 steps=r.get("steps") if isinstance(r.get("steps"), int) else None,
                                 seconds=None if seconds is None else _number(seconds, f"{at}.seconds"),
                                 note=str(r.get("note") or "")))
    return ReferenceTable(id=str(_field(data, "id", str, where)), title=str(data.get("title", "")),
                          source=_field(data, "source", dict, where), dataset=str(_field(data, "dataset", str, where)),
                          n_images=int(_number(_field(data, "n_images", int, where), f"{where}: n_images")),
                          scales=scales, rows=rows, spread=spread, spread_how=str(spread_block.get("how", "")),
                          columns={str(k): str(v) for k, v in data.get("columns", {}).items()},
                          protocol=str(data.get("protocol", "")), hardware=str(data.get("hardware", "")),
                          path=where)


def load_table(spec: str) -> ReferenceTable:
    """A table by id (a file in ``reference_tables/``) or by path to a JSON file."""
    path = Path(spec)
    if not (spec.endswith(".json") and path.is_file()):
        path = TABLES_DIR / f"{spec}.json"
        if not path.is_file():
            raise ConfigError(f"reference table {spec!r} not found; available: {', '.join(available())} "
                              "(or pass a path to a table JSON file)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc}); fix the table file") from None
    return parse_table(data, str(path))
