"""A sweep's quality-speed trade-off: each configuration's quality (one metric's mean) against its median
seconds per image, the Pareto front among them, as a terminal table and a character plot.

The points come from the one leaderboard a sweep writes (every variant is a row); bounds are shown but
never on the front. The front is ``pie_bench.report.plots.pareto_front``, the one the report draws.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Union

from rich import box
from rich.console import Console
from rich.table import Table

from pie_bench.core.formatting import fmt_seconds, fmt_value, scaled
from pie_bench.report.model import BoardView, board_view
from pie_bench.report.plots import pareto_front
from pie_bench.report.tables import fmt_se
from pie_bench.run.leaderboard import Leaderboard

DEFAULT_QUALITY = ("gt_attribute_accuracy", "clip_similarity_target_image_edit_part")


@dataclass
class Point:
    name: str
    seconds: float
    quality: float  # at display scale
    se: float
    bound: bool = False
    on_front: bool = False


def quality_metric(view: BoardView, wanted: Optional[str] = None) -> str:
    """``wanted``, else attribute accuracy where the board has it (ShapesEdit), else CLIP-edited."""
    if wanted:
        if wanted not in view.metrics:
            raise KeyError(wanted)
        return wanted
    return next((m for m in DEFAULT_QUALITY if m in view.metrics), next(iter(view.metrics), ""))


def sweep_points(board: Union[Leaderboard, dict, BoardView], metric: str) -> list[Point]:
    view = board_view(board)
    info = view.metric(metric)
    points = []
    for name, ed in view.editors.items():
        stat, lat = ed.overall.metrics.get(metric), ed.overall.latency.p50
        if stat is None or lat is None or not math.isfinite(stat.mean):
            continue
        points.append(Point(name, max(float(lat), 1e-4), scaled(stat.mean, info.scale), scaled(stat.stderr, info.scale),
                            bool(ed.bound)))
    methods = [p for p in points if not p.bound]
    front = set(pareto_front([(p.seconds, p.quality) for p in methods], info.higher_is_better))
    for p in methods:
        p.on_front = (p.seconds, p.quality) in front
    return sorted(points, key=lambda p: (p.seconds, p.name))


def front_table(points: list[Point], metric_label: str, reused: Optional[dict[str, int]] = None) -> Table:
    """``reused``: per configuration, the samples whose inversion came from another configuration (their
    latency excludes the inversion; ``sweep --no-share-inversions`` times each with its own)."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("", no_wrap=True)
    table.add_column("configuration", overflow="fold")
    table.add_column(metric_label, justify="right", no_wrap=True)
    table.add_column("p50 s/img", justify="right", no_wrap=True)
    if reused is not None:
        table.add_column("inv. reused", justify="right", no_wrap=True)
    for p in points:
        se = f"[dim]±{fmt_se(p.se)}[/dim]" if math.isfinite(p.se) else ""
        name = f"[dim]{p.name} (bound)[/dim]" if p.bound else p.name
        row = ["★" if p.on_front else "", name, fmt_value(p.quality) + se, fmt_seconds(p.seconds)]
        if reused is not None:
            row.append(str(reused.get(p.name, 0) or ""))
        table.add_row(*row)
    return table


def char_plot(points: list[Point], width: int = 60, height: int = 12) -> list[str]:
    """Quality (rows) against log seconds (columns): ``*`` on the front, ``o`` other methods, ``x`` bounds."""
    if not points:
        return []
    xs = [math.log10(p.seconds) for p in points]
    ys = [p.quality for p in points]
    # the axis spans the methods: a bound at ~0 s (identity) would squash them into the right edge; bounds
    # outside the span sit at its ends
    span = [x for p, x in zip(points, xs) if not p.bound] or xs
    x0, x1 = min(span), max(span)
    xs = [min(max(x, x0), x1) for x in xs]
    y0, y1 = min(ys), max(ys)
    grid = [[" "] * width for _ in range(height)]
    for p, x, y in zip(points, xs, ys):
        col = 0 if x1 == x0 else round((x - x0) / (x1 - x0) * (width - 1))
        row = 0 if y1 == y0 else round((y1 - y) / (y1 - y0) * (height - 1))
        mark = "x" if p.bound else ("*" if p.on_front else "o")
        if grid[row][col] != "*":
            grid[row][col] = mark
    label_w = max(len(f"{y1:.1f}"), len(f"{y0:.1f}"))
    lines = []
    for i, row in enumerate(grid):
        label = f"{y1:.1f}" if i == 0 else (f"{y0:.1f}" if i == height - 1 else "")
        lines.append(f"{label:>{label_w}} │{''.join(row)}")
    lines.append(" " * label_w + " └" + "─" * width)
    left, right = fmt_seconds(10 ** x0), fmt_seconds(10 ** x1)
    lines.append(" " * (label_w + 2) + left + " " * max(1, width - len(left) - len(right)) + right)
    return lines


def print_sweep(board: Union[Leaderboard, dict, BoardView], console: Console, metric: Optional[str] = None,
                reused: Optional[dict[str, int]] = None) -> list[Point]:
    view = board_view(board)
    name = quality_metric(view, metric)
    info = view.metric(name)
    points = sweep_points(view, name)
    console.print(f"[bold]quality–speed[/bold]: {info.header} against seconds per image (★ Pareto front)")
    console.print(front_table(points, info.header, reused))
    width = max(20, min(72, console.width - 12))
    for line in char_plot(points, width=width):
        console.print(line, highlight=False, markup=False)
    console.print("[dim]* Pareto front · o other configurations · x bounds · x axis log seconds per image (p50)[/dim]")
    return points
