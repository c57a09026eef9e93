"""The report's view of a leaderboard: the one place in the report package that reads the leaderboard.

It reads the typed leaderboard (``pie_bench.run.leaderboard``; a JSON dict goes through its schema first).
Plots, tables, gallery, pages and templates see only the display dataclasses below, built by ``board_view``.
The run manifest's dataset block and ``compare``'s result rows are read here too, for the same reason.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from pie_bench.core.formatting import SHORT, as_float, metric_label, scale_suffix
from pie_bench.run.leaderboard import (LEADERBOARD_KIND, LEADERBOARD_VERSION, CategorySummary, EditorSummary,
                                       Leaderboard, MetricStats, SetMetricStats, as_leaderboard, load_leaderboard)


TOY_MARK = "†"
# the compact tables' columns: what the edit did, what it kept, and (ShapesEdit) how close to the truth
GROUND_TRUTH_KEY = ("gt_attribute_accuracy", "psnr_unedit_part", "lpips_unedit_part", "gt_psnr",
                    "clip_similarity_target_image_edit_part")
PROTOCOL_KEY = ("structure_distance", "psnr_unedit_part", "lpips_unedit_part", "ssim_unedit_part",
                "clip_similarity_target_image", "clip_similarity_target_image_edit_part")


@dataclass(frozen=True)
class Metric:
    name: str
    scale: float = 1.0
    higher_is_better: bool = True
    label: Optional[str] = None  # the metric's own label, where its metric_info declares one
    declared: bool = True  # False: only seen in the editors' blocks (no metric_info entry)
    toy: bool = False  # computed with toy (random) weights: marked with TOY_MARK wherever it is shown

    @property
    def header(self) -> str:
        return metric_label(self.name, self.scale, self.higher_is_better, self.label)

    @property
    def short(self) -> str:
        return SHORT.get(self.name, self.name)

    @property
    def display(self) -> str:
        """The name without the direction: the metric's label, else its short name and scale."""
        return self.label or self.short + scale_suffix(self.scale)

    @property
    def marked_header(self) -> str:
        """The header with TOY_MARK after the name where the metric's weights are toy."""
        if not self.toy:
            return self.header
        return metric_label(self.name, self.scale, self.higher_is_better, self.display + TOY_MARK)


@dataclass
class Stat:
    mean: float  # as stored (not at display scale); NaN when undefined
    stderr: float
    n: int


@dataclass
class SetStat:
    """A set metric's value (as stored; NaN when undefined, with the reason) and bootstrap interval."""
    mean: float
    low: float
    high: float
    n: int
    reason: str = ""
    note: str = ""


@dataclass
class Latency:
    p50: Optional[float] = None
    p95: Optional[float] = None
    n: int = 0


@dataclass
class Block:
    """An editor's numbers over all samples or over one edit category."""
    n_ok: int = 0
    name: str = ""  # the category's name (category blocks)
    n_failed: int = 0
    n_skipped: Optional[int] = None  # category blocks carry no skip count
    metrics: dict[str, Stat] = field(default_factory=dict)
    latency: Latency = field(default_factory=Latency)
    set_metrics: dict[str, SetStat] = field(default_factory=dict)


@dataclass
class Problem:
    """A failed or skipped sample as the leaderboard lists it (its first 50 per editor)."""
    sample_id: Optional[str]
    text: Optional[str]  # the error, or the skip reason


@dataclass
class EditorView:
    name: str
    overall: Block
    per_category: dict[str, Block]
    toy: bool = False
    load_error: Optional[str] = None
    failures: list[Problem] = field(default_factory=list)
    skipped: list[Problem] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    config_hash: Optional[str] = None
    backbone: Optional[str] = None
    paper: str = ""
    bound: str = ""  # what the baseline bounds; "" for a method
    stochastic: bool = False
    seeds: int = 1
    n_failed_seeds: int = 0  # failed runs of the further seeds (bench --seeds)

    @property
    def n_unlisted(self) -> int:
        """Failed and skipped samples beyond those listed."""
        total = self.overall.n_failed + (self.overall.n_skipped or 0)
        return max(0, total - len(self.failures) - len(self.skipped))

    @property
    def has_problems(self) -> bool:
        return bool(self.load_error or self.failures or self.skipped or self.n_unlisted)

    @property
    def config_json(self) -> str:
        return json.dumps(self.config, indent=1, sort_keys=True)


@dataclass
class DatasetView:
    name: Optional[str] = None
    source: Any = None
    n: Optional[int] = None
    annotations_sha256: Optional[str] = None
    categories: Optional[list] = None  # the categories the run loaded (None: all)


@dataclass
class BoardView:
    dataset: DatasetView
    metrics: dict[str, Metric]  # metric_info order, else the names found in the editors' blocks
    editors: dict[str, EditorView]
    run: Optional[str] = None
    created_at: Optional[str] = None
    command: Optional[str] = None
    git_sha: str = ""
    git_dirty: bool = False
    device: Any = None  # "k=v, ..." text
    processes: Any = None
    metrics_backbone: Optional[str] = None
    packages: str = ""
    toy: bool = False
    toy_note: Optional[str] = None
    set_metrics: dict[str, Metric] = field(default_factory=dict)  # metrics over sets, set_metric_info order

    def metric(self, name: str) -> Metric:
        return self.metrics.get(name) or Metric(name, declared=False)

    @property
    def category_names(self) -> dict[str, str]:
        return {c: b.name for e in self.editors.values() for c, b in e.per_category.items() if b.name}

    @property
    def toy_editors(self) -> list[str]:
        return [n for n, e in self.editors.items() if e.toy]

    @property
    def headline_toy(self) -> bool:
        """Whether editors ran on toy backbones (toy metric weights mark their own columns instead)."""
        return bool(self.toy_editors)

    @property
    def ordered_editors(self) -> list[EditorView]:
        """Methods first, then the bounds: they frame the methods and don't compete with them."""
        eds = list(self.editors.values())
        return [e for e in eds if not e.bound] + [e for e in eds if e.bound]

    @property
    def all_methods_toy(self) -> bool:
        """Every method (not counting the bounds, which load no model) ran on a toy backbone: only then is
        the whole table a pipeline check."""
        methods = [e for e in self.editors.values() if not e.bound]
        return bool(methods) and all(e.toy for e in methods)

    @property
    def key_metrics(self) -> list[Metric]:
        """The few columns that fit one line: on a dataset with ground truth what it measures exactly,
        else the PIE-Bench protocol's headline metrics; a board with neither, its first six."""
        names = GROUND_TRUTH_KEY if "gt_attribute_accuracy" in self.metrics else PROTOCOL_KEY
        key = [self.metrics[n] for n in names if n in self.metrics]
        return key or list(self.metrics.values())[:6]

    @property
    def ordered_metrics(self) -> list[Metric]:
        """Every metric, the key ones first: the columns that matter are the ones in view."""
        key = self.key_metrics
        return key + [m for m in self.metrics.values() if m not in key]

    @property
    def categories(self) -> list[str]:
        return sorted({c for e in self.editors.values() for c in e.per_category}, key=int)


# ---------------------------------------------------------------------------------------------
# readers


def _stat(m: MetricStats) -> Stat:
    return Stat(as_float(m.mean), as_float(m.stderr), int(m.n or 0))


def _set_stat(m: SetMetricStats) -> SetStat:
    return SetStat(as_float(m.value), as_float(m.ci_low), as_float(m.ci_high), int(m.n or 0), m.reason, m.note)


def _block(b: Union[EditorSummary, CategorySummary]) -> Block:
    return Block(n_ok=b.n_ok, n_failed=b.n_failed, n_skipped=getattr(b, "n_skipped", None), name=getattr(b, "name", ""),
                 metrics={k: _stat(v) for k, v in b.metrics.items()},
                 latency=Latency(b.latency.p50, b.latency.p95, b.latency.n),
                 set_metrics={k: _set_stat(v) for k, v in b.set_metrics.items()})


def _editor(name: str, ed: EditorSummary) -> EditorView:
    return EditorView(
        name=name, overall=_block(ed), toy=bool(ed.toy), load_error=ed.load_error or None,
        per_category={c: _block(b) for c, b in ed.per_category.items()},
        failures=[Problem(f.get("sample_id"), f.get("error")) for f in ed.failures],
        skipped=[Problem(s.get("sample_id"), s.get("reason")) for s in ed.skipped],
        config=ed.config, config_hash=ed.config_hash, backbone=ed.backbone, paper=ed.paper, bound=ed.bound,
        stochastic=ed.stochastic, seeds=ed.seeds, n_failed_seeds=ed.n_failed_seeds)


def dataset_view(ds: Optional[dict]) -> DatasetView:
    """A leaderboard's or a run manifest's (run.json) dataset block."""
    ds = ds or {}
    return DatasetView(name=ds.get("name"), source=ds.get("source"), n=ds.get("n"),
                       annotations_sha256=ds.get("annotations_sha256"), categories=ds.get("categories") or None)


def manifest_dataset(manifest: dict) -> Optional[DatasetView]:
    return dataset_view(manifest["dataset"]) if manifest.get("dataset") else None


def load_board(path: Path) -> Leaderboard:
    """The leaderboard at ``path``, loaded and version-checked by the run layer."""
    return load_leaderboard(path)


def board_view(board: Union[Leaderboard, dict, BoardView]) -> BoardView:
    """The view of a leaderboard (typed, or its JSON form, read through the typed schema); a view passes
    through."""
    if isinstance(board, BoardView):
        return board
    if isinstance(board, dict):  # an in-memory dict may lack the header (files are version-checked by load_board)
        board = {"kind": LEADERBOARD_KIND, "schema_version": LEADERBOARD_VERSION, **board}
    board = as_leaderboard(board)
    editors = {n: _editor(n, e) for n, e in board.editors.items()}
    if board.metric_info:
        metrics = {n: Metric(n, i.get("scale", 1.0), i.get("higher_is_better", True), i.get("label"),
                             toy=bool(i.get("toy")))
                   for n, i in board.metric_info.items()}
    else:
        metrics = {n: Metric(n, declared=False) for n in sorted({m for e in board.editors.values() for m in e.metrics})}
    git, dev, pk = board.git or {}, board.device, board.packages
    return BoardView(
        dataset=dataset_view(board.dataset), metrics=metrics, editors=editors, run=board.run,
        created_at=board.created_at, command=board.command, git_sha=str(git.get("sha", "")),
        git_dirty=bool(git.get("dirty")),
        device=", ".join(f"{k}={v}" for k, v in dev.items()) if isinstance(dev, dict) else dev,
        processes=board.processes, metrics_backbone=board.metrics_backbone,
        packages=", ".join(f"{k} {v}" for k, v in pk.items()) if isinstance(pk, dict) else pk,
        toy=bool(board.toy), toy_note=board.toy_note,
        set_metrics={n: Metric(n, i.get("scale", 1.0), i.get("higher_is_better", True), i.get("label"),
                               toy=bool(i.get("toy"))) for n, i in board.set_metric_info.items()})


def merged_metrics(a: BoardView, b: BoardView) -> dict[str, Metric]:
    """What the compare page knows of each metric: B's declaration over A's."""
    out = {n: m for n, m in a.metrics.items() if m.declared}
    out.update({n: m for n, m in b.metrics.items() if m.declared})
    return out


# ---------------------------------------------------------------------------------------------
# comparison rows (``pie_bench.report.compare.compare_leaderboards``'s result)


@dataclass
class CompareRow:
    editor: str
    metric: str
    a: float
    b: float
    delta: float
    se: float
    n_a: Any
    n_b: Any
    flagged: bool
    regression: bool


@dataclass
class Comparison:
    rows: list[CompareRow]
    notes: list[str]
    n_flagged: int
    n_regressions: int


def comparison_view(result: dict) -> Comparison:
    rows = [CompareRow(r["editor"], r["metric"], r["a"], r["b"], r["delta"], r["se"], r.get("n_a"),
                       r.get("n_b"), r["flagged"], r["regression"]) for r in result["rows"]]
    return Comparison(rows, list(result["notes"]), result["n_flagged"], result["n_regressions"])
