"""The typed leaderboard: the board, each editor's summary, metric and latency statistics.

One schema-version check (``Leaderboard.from_dict``) with a reader for the previous version, so ``compare``
and ``show`` read every committed ``results/*.json``. The JSON is the dataclasses' fields (``to_dict``);
floats keep the records' encoding (NaN -> null, +-inf -> "inf"/"-inf").

Schema history: 1 — the first release; 2 — adds ``selection`` (how the dataset's samples were chosen:
``--limit``, its mode, categories, ids); a version-1 board reads with ``selection`` marked unrecorded;
3 — adds set metrics (``set_metric_info``; per editor and category ``set_metrics``: FID, KID, PR, diversity,
..., each with n and a bootstrap interval) and per editor ``seeds``/``stochastic``; older boards read with none.
"""
from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from pie_bench.core.errors import ResultsError
from pie_bench.core.provenance import git_state, now_iso, package_versions
from pie_bench.run.results import decode_float, summarise_editor
from pie_bench.run.run_folder import RunFolder

LEADERBOARD_KIND = "pie_bench.leaderboard"
LEADERBOARD_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)


@dataclass
class MetricStats:
    mean: Any = None  # encoded float: None (no defined value), a number, or "inf"/"-inf"
    stderr: Any = None
    n: int = 0
    higher_is_better: bool = True

    @property
    def value(self) -> float:
        return decode_float(self.mean)

    @property
    def error(self) -> float:
        return decode_float(self.stderr)


@dataclass
class SetMetricStats:
    """A metric over a set (``metrics.sets``): its value on the whole set, a percentile-bootstrap interval,
    the number of samples, and why it is undefined (NaN) where it is."""

    value: Any = None  # encoded float
    ci_low: Any = None
    ci_high: Any = None
    n: int = 0
    reason: str = ""  # why value is null (n below the metric's minimum, no target images, ...)
    note: str = ""  # how to read it (FID's small-n bias, a deterministic editor's diversity)
    higher_is_better: bool = True

    @property
    def mean(self) -> float:  # read like MetricStats by the report's view
        return decode_float(self.value)

    @property
    def error(self) -> float:
        """A standard error read off the 95% interval (its width / 3.92), for ``compare``'s z rule."""
        return (decode_float(self.ci_high) - decode_float(self.ci_low)) / 3.92


@dataclass
class LatencyStats:
    p50: Optional[float] = None
    p95: Optional[float] = None
    mean: Optional[float] = None
    n: int = 0
    warmup_excluded: int = 0


@dataclass
class RankLatency(LatencyStats):
    rank: int = 0
    processes: int = 1
    device: str = ""


@dataclass
class CategorySummary:
    name: str
    n_ok: int = 0
    n_failed: int = 0
    metrics: dict[str, MetricStats] = field(default_factory=dict)
    latency: LatencyStats = field(default_factory=LatencyStats)
    set_metrics: dict[str, SetMetricStats] = field(default_factory=dict)


@dataclass
class EditorSummary:
    config: dict = field(default_factory=dict)
    config_hash: str = ""
    editor: str = ""  # the registry name; differs from the row's name for sweep variants (``editor@k=v``)
    backbone: str = ""
    toy: bool = False
    bound: str = ""  # "": a method; else what the baseline bounds (identity, oracle, blank): never "best"
    seed: Optional[int] = None
    paper: str = ""
    n: int = 0
    n_ok: int = 0
    n_failed: int = 0
    n_skipped: int = 0
    metrics: dict[str, MetricStats] = field(default_factory=dict)
    latency: LatencyStats = field(default_factory=LatencyStats)
    latency_per_rank: list[RankLatency] = field(default_factory=list)
    per_category: dict[str, CategorySummary] = field(default_factory=dict)
    failures: list[dict] = field(default_factory=list)  # {"sample_id", "error"}, the first 50
    skipped: list[dict] = field(default_factory=list)  # {"sample_id", "reason"}, the first 50
    devices: list[str] = field(default_factory=list)
    ranks: list[int] = field(default_factory=list)
    load_error: Optional[str] = None
    set_metrics: dict[str, SetMetricStats] = field(default_factory=dict)
    stochastic: bool = False  # the editor declares that its output depends on the seed
    seeds: int = 1  # outputs per sample (bench --seeds K; 1 for deterministic editors)
    n_failed_seeds: int = 0  # failed (sample, seed) runs beyond the first seed (not in n_failed, which counts samples)


@dataclass
class Leaderboard:
    editors: dict[str, EditorSummary] = field(default_factory=dict)
    metric_info: dict[str, dict] = field(default_factory=dict)
    set_metric_info: dict[str, dict] = field(default_factory=dict)
    dataset: dict = field(default_factory=dict)
    selection: dict = field(default_factory=dict)
    run: str = ""
    command: str = ""
    created_at: str = ""
    toy: bool = False
    toy_note: str = ""
    git: dict = field(default_factory=dict)
    packages: dict = field(default_factory=dict)
    device: dict = field(default_factory=dict)
    processes: int = 1
    processes_in_records: list[int] = field(default_factory=list)
    n_failed: int = 0
    metrics_backbone: str = ""
    partial: bool = False  # a signal stopped the run before every selected sample was done
    stopped_by: str = ""  # that signal (SIGTERM, SIGINT), also when it came after the last sample
    kind: str = LEADERBOARD_KIND
    schema_version: int = LEADERBOARD_VERSION

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        for ed in out["editors"].values():
            if ed.get("load_error") is None:
                ed.pop("load_error", None)
        return out

    @classmethod
    def from_dict(cls, data: Any, where: str = "leaderboard") -> "Leaderboard":
        if not isinstance(data, dict) or data.get("kind") != LEADERBOARD_KIND:
            raise ResultsError(f"{where}: not a pie_bench leaderboard (missing kind={LEADERBOARD_KIND!r})")
        version = data.get("schema_version")
        if version not in READABLE_VERSIONS:
            raise ResultsError(f"{where}: leaderboard schema version {version} is not one of "
                               f"{', '.join(map(str, READABLE_VERSIONS))}; regenerate it with this version of the harness")
        data = dict(data)
        if version == 1:
            data["selection"] = {"recorded": False}
        try:
            editors = {name: _editor(e, name) for name, e in (data.get("editors") or {}).items()}
            board = _build(cls, {**data, "editors": editors, "schema_version": LEADERBOARD_VERSION})
            _check_types(board)
            return board
        except (TypeError, AttributeError, ValueError) as exc:
            raise ResultsError(f"{where}: malformed leaderboard ({exc}); regenerate it with `pie-bench bench`") from None


def as_leaderboard(board: Union[Leaderboard, dict], where: str = "leaderboard") -> Leaderboard:
    """A typed leaderboard as is, its JSON form through the schema check (every reader's entry point)."""
    return board if isinstance(board, Leaderboard) else Leaderboard.from_dict(board, where)


def _matches(value, hint) -> bool:
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin is Union:
        return any(_matches(value, h) for h in typing.get_args(hint))
    if origin is not None:
        return isinstance(value, origin)
    if hint is type(None):
        return value is None
    if isinstance(value, bool):
        return hint is bool
    if hint is float:
        return isinstance(value, (int, float))
    return isinstance(value, hint)


def _check_types(obj, where: str = "") -> None:
    """Every field of the typed board holds its declared type, and every statistic an encoded float, so
    ``compare`` and the tables can read a board from anywhere without checks of their own."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value, here = getattr(obj, f.name), f"{where}.{f.name}" if where else f.name
        if not _matches(value, hints[f.name]):
            raise TypeError(f"{here} is {type(value).__name__}")
        children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        for key, child in children:
            if dataclasses.is_dataclass(child):
                _check_types(child, f"{here}[{key!r}]")
    if isinstance(obj, (MetricStats, SetMetricStats)):
        for name in ("mean", "stderr") if isinstance(obj, MetricStats) else ("value", "ci_low", "ci_high"):
            v = getattr(obj, name)
            if not (v is None or v in ("inf", "-inf") or (isinstance(v, (int, float)) and not isinstance(v, bool))):
                raise TypeError(f"{where}.{name} is {type(v).__name__}, not a number")


def _build(cls, d: dict):
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in names})


def _metrics(block: Optional[dict]) -> dict[str, MetricStats]:
    return {name: _build(MetricStats, stats) for name, stats in (block or {}).items()}


def _set_metrics(block: Optional[dict]) -> dict[str, SetMetricStats]:
    return {name: _build(SetMetricStats, stats) for name, stats in (block or {}).items()}


# boards written before editors declared ``bound`` (schema 2 from before 2026-12-02) name them only
KNOWN_BOUNDS = {"identity": "preservation ceiling: the source unchanged",
                "oracle": "ceiling: the ground-truth edit",
                "blank": "chance floor: a flat mean-colour image"}


def _editor(d: dict, name: str = "") -> EditorSummary:
    if not isinstance(d, dict):
        raise TypeError(f"an editor entry is {type(d).__name__}, not an object")
    if "bound" not in d and name in KNOWN_BOUNDS:
        d = {**d, "bound": KNOWN_BOUNDS[name]}
    cats = {k: _build(CategorySummary, {**c, "metrics": _metrics(c.get("metrics")),
                                        "set_metrics": _set_metrics(c.get("set_metrics")),
                                        "latency": _build(LatencyStats, c.get("latency") or {})})
            for k, c in (d.get("per_category") or {}).items()}
    return _build(EditorSummary, {**d, "metrics": _metrics(d.get("metrics")),
                                  "set_metrics": _set_metrics(d.get("set_metrics")),
                                  "latency": _build(LatencyStats, d.get("latency") or {}),
                                  "latency_per_rank": [_build(RankLatency, r) for r in d.get("latency_per_rank") or []],
                                  "per_category": cats})


def load_leaderboard(path: Path) -> Leaderboard:
    path = Path(path)
    if not path.is_file():
        raise ResultsError(f"{path}: leaderboard file not found; pass a leaderboard.json written by `pie-bench bench`")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ResultsError(f"{path}: not valid JSON ({exc}); regenerate it with `pie-bench bench`") from None
    return Leaderboard.from_dict(data, str(path))


# ---------------------------------------------------------------------------------------------
# built from a run folder


def build_leaderboard(folder: RunFolder, dataset_info: dict, metric_info: dict, extra: dict) -> Leaderboard:
    manifest = folder.read_manifest() or {"editors": {}}
    records = folder.records()
    editors = {}
    for name, info in manifest["editors"].items():
        recs = [r for r in records if r.editor == name and r.config_hash == info["config_hash"]
                and r.dataset_sha256 == dataset_info.get("annotations_sha256")]
        if not recs and name not in extra.get("load_errors", {}):
            continue
        # the per-sample means read the first seed only: a --seeds run stays comparable with one without
        first = [r for r in recs if r.seed_index == 0]
        editors[name] = {**info, **summarise_editor(first, metric_info),
                         "seeds": max([r.seed_index + 1 for r in recs if r.status == "ok"] or [1]),
                         "n_failed_seeds": sum(r.status == "failed" for r in recs if r.seed_index > 0)}
        sets = extra.get("set_scores", {}).get(name)
        if sets:
            editors[name]["set_metrics"] = sets["overall"]
            for cat, block in sets["per_category"].items():
                if cat in editors[name]["per_category"]:
                    editors[name]["per_category"][cat]["set_metrics"] = block
        if name in extra.get("load_errors", {}):
            editors[name]["load_error"] = extra["load_errors"][name]
    toy = any(e.get("toy") for e in editors.values()) or bool(extra.get("metrics_toy"))
    # a resumed run may mix records from launches with different process counts
    launches = sorted({r.world for r in records if r.editor in editors})
    return Leaderboard.from_dict({
        "kind": LEADERBOARD_KIND,
        "schema_version": LEADERBOARD_VERSION,
        "selection": extra.get("selection", {}),
        "created_at": now_iso(),
        "run": folder.root.name,
        "command": extra.get("command", ""),
        "toy": toy,
        "toy_note": _toy_note(editors, {**metric_info, **extra.get("set_metric_info", {})}) if toy else "",
        "git": git_state(),
        "packages": package_versions(),
        "device": extra.get("device", {}),
        "processes": extra.get("world", 1),
        "processes_in_records": launches,
        "n_failed": sum(e.get("n_failed", 0) for e in editors.values()),
        "dataset": dataset_info,
        "metrics_backbone": extra.get("metrics_backbone", ""),
        "partial": bool(extra.get("partial", False)),
        "stopped_by": extra.get("stopped_by", ""),
        "metric_info": metric_info,
        "set_metric_info": extra.get("set_metric_info", {}),
        "editors": editors,
    })


def _toy_note(editors: dict, metric_info: dict) -> str:
    """Say exactly which numbers come from toy (random-weight) models."""
    toy_editors = [n for n, e in editors.items() if e.get("toy")]
    toy_metrics = [n for n, i in metric_info.items() if i.get("toy")]
    parts = []
    if toy_editors:
        parts.append(f"editors {', '.join(toy_editors)} ran on toy (random-weight) models: their numbers check the "
                     "pipeline, not editing quality")
    if toy_metrics:
        parts.append(f"metrics {', '.join(toy_metrics)} use toy (random) weights: their values check the pipeline only")
    return "; ".join(parts)
