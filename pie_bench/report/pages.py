"""The report's entry points: ``write_report`` (a run's page) and ``write_compare_report`` (A against B).

``write_report(run_dir)`` writes ``<run_dir>/report/index.html`` beside its images and plots. The folder
is self-contained: no server, no network, no CDN; the CSS and the few lines of sorting and filtering JS
are inlined from ``static/``, so it opens from ``file://`` and can be zipped and mailed as it is. The
pages are jinja2 templates (``templates/``) with autoescape on: see ``render``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from pie_bench.core.errors import ResultsError
from pie_bench.core.sample import EDIT_TYPES, edit_type_name
from pie_bench.report.files import write_file
from pie_bench.report.gallery import build_gallery, gallery_rows, load_source_samples, run_records
from pie_bench.report.html_tables import LeaderboardTable, delta_rows, leaderboard_table, set_metric_table
from pie_bench.report.model import (BoardView, board_view, comparison_view, load_board, manifest_dataset,
                                    merged_metrics)
from pie_bench.report.plots import category_plot, pareto_plot
from pie_bench.report.render import render
from pie_bench.run.run_folder import LEADERBOARD, RunFolder


def resolve_leaderboard(path: Path) -> Path:
    path = Path(path)
    return path / LEADERBOARD if path.is_dir() else path


def _make_dir(out_dir: Path, flag: str) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ResultsError(f"{out_dir}: cannot create the report folder ({exc.strerror}); pass a writable {flag}") from None


def toy_note(views: Sequence[BoardView]) -> Optional[str]:
    """The banner's text where editors of the boards ran on toy backbones, else None (toy metric weights
    mark their own columns, ``Metric.marked_header``, with a note under the table)."""
    names = sorted({n for v in views for n in v.toy_editors})
    if not names:
        return None
    return (f"editors {', '.join(names)} ran on toy (random-weight) models: their numbers check the "
            "pipeline, not editing quality")


def details_rows(view: BoardView) -> list[tuple[str, object]]:
    ds = view.dataset
    return [("run", view.run), ("created", view.created_at), ("command", view.command),
            ("git", f"{view.git_sha}{' (dirty)' if view.git_dirty else ''}"), ("device", view.device),
            ("processes", view.processes),
            ("dataset", f"{ds.name} · {ds.source} · n={ds.n} · sha {str(ds.annotations_sha256 or '')[:16]}"),
            ("metrics backbone", view.metrics_backbone)]


def write_report(run_dir, out_dir=None) -> Path:
    """Write the run's report folder (default ``<run_dir>/report``) and return its ``index.html``."""
    run_dir = Path(run_dir)
    if not (run_dir / LEADERBOARD).is_file():
        raise ResultsError(f"{run_dir}: no {LEADERBOARD} here; pass a run folder written by `cli.py bench` "
                           "(results/runs/<run>)")
    view = board_view(load_board(run_dir / LEADERBOARD))
    out_dir = Path(out_dir) if out_dir is not None else run_dir / "report"
    _make_dir(out_dir, "--out")
    folder = RunFolder(run_dir)
    records = run_records(folder, view)
    editors = list(view.editors)

    samples, source_note = load_source_samples(manifest_dataset(folder.read_manifest() or {}) or view.dataset)
    rows = gallery_rows(records, samples)
    has_source = samples is not None
    has_target = has_source and any(r.sample is not None and r.sample.has_target_image for r in rows)

    skips: dict = {}
    for rec in records:
        if rec.status == "skipped":
            skips[(rec.editor, str(rec.edit_type))] = skips.get((rec.editor, str(rec.edit_type)), 0) + 1
    categories: list[tuple[str, LeaderboardTable]] = []
    for c in view.categories:
        name = edit_type_name(int(c)) if int(c) in EDIT_TYPES else c
        categories.append((f"{c} · {name}", leaderboard_table(view, c, f"category-{c}", skips)))
    figures = []
    cap = pareto_plot([("run", view)], out_dir / "pareto.svg")
    if cap:
        figures.append(("pareto-plot", "pareto.svg", "quality vs latency", cap))
    cap = category_plot(view, out_dir / "categories.svg")
    if cap:
        figures.append(("category-plot", "categories.svg", "per-category means", cap))
    the_gallery = build_gallery(rows, editors, view, run_dir, out_dir, has_source, has_target)

    text = render("report.html.j2", title=f"PIE-Bench report — {view.run}", toy_note=toy_note([view]),
                  board=view, overall=leaderboard_table(view, None, "overall"), categories=categories,
                  sets=set_metric_table(view, None, "set-overall"),
                  category_sets=[set_metric_table(view, c, f"set-category-{c}") for c in view.categories],
                  figures=figures, source_note=source_note, the_gallery=the_gallery, details=details_rows(view))
    index = out_dir / "index.html"
    write_file(index, text.encode())
    return index


@dataclass
class Side:
    tag: str  # A | B
    path: Path
    board: BoardView
    table: LeaderboardTable


def write_compare_report(a_json, b_json, out_dir, z: float = 2.0) -> Path:
    """``compare A B --html OUT``: deltas with flagged changes, both leaderboards and an A→B plot."""
    from pie_bench.report.compare import compare_leaderboards

    a_path, b_path = resolve_leaderboard(Path(a_json)), resolve_leaderboard(Path(b_json))
    a, b = load_board(a_path), load_board(b_path)
    comparison = comparison_view(compare_leaderboards(a, b, z=z))
    out_dir = Path(out_dir)
    _make_dir(out_dir, "--html")
    va, vb = board_view(a), board_view(b)
    caption = pareto_plot([("A", va), ("B", vb)], out_dir / "pareto.svg")
    sides = [Side(tag, path, v, leaderboard_table(v, None, f"leaderboard-{tag.lower()}"))
             for tag, path, v in (("A", a_path, va), ("B", b_path, vb))]
    text = render("compare.html.j2", title="PIE-Bench comparison", toy_note=toy_note([va, vb]),
                  comparison=comparison, rows=delta_rows(comparison, merged_metrics(va, vb)), z=z,
                  caption=caption, a=sides[0], b=sides[1])
    index = out_dir / "index.html"
    write_file(index, text.encode())
    return index
