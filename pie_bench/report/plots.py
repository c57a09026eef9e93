"""The report's figures: quality against latency (with the Pareto front) and means per edit category.

matplotlib through the Agg canvas directly: never touches the caller's pyplot backend. SVG with text as
paths and a fixed hash salt, so a rerun writes the same bytes and the viewer needs no font."""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from pie_bench.core.formatting import scaled
from pie_bench.core.sample import EDIT_TYPES, edit_type_name
from pie_bench.report.files import write_file
from pie_bench.report.model import BoardView, board_view

# The paper's headline trade-off: prompt fidelity (CLIP whole) and background preservation (LPIPS) vs cost.
PARETO_METRICS = ("clip_similarity_target_image", "lpips_unedit_part")


def plot_metrics(board) -> list[str]:
    """Up to two metrics to plot: the paper's headline pair where present, else the first others.
    ``board``: a leaderboard dict or its ``BoardView``."""
    view = board_view(board)
    present = [n for n in view.metrics
               if any(n in e.overall.metrics and e.overall.metrics[n].n for e in view.editors.values())]
    chosen = [m for m in PARETO_METRICS if m in present]
    for m in present:
        if len(chosen) >= 2:
            break
        if m not in chosen:
            chosen.append(m)
    return chosen


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save_svg(fig, path: Path) -> None:
    import matplotlib

    buf = io.BytesIO()
    # text as paths (no font needed by the viewer); fixed salt and no date keep reruns byte-identical
    with matplotlib.rc_context({"svg.fonttype": "path", "svg.hashsalt": "pie_bench"}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    write_file(path, buf.getvalue())


def pareto_front(points: list[tuple[float, float]], higher_is_better: bool) -> list[tuple[float, float]]:
    """Points not dominated by one that is at least as fast and at least as good."""
    sign = 1.0 if higher_is_better else -1.0
    front, best = [], -math.inf
    for x, y in sorted(points, key=lambda p: (p[0], -sign * p[1])):
        if sign * y > best:
            front.append((x, y))
            best = sign * y
    return front


def toy_suffix(view: BoardView, metric) -> str:
    """What of a panel is toy: the editors' backbones, else the metric's weights, else nothing."""
    return " (toy models)" if view.headline_toy else (" (toy weights)" if metric.toy else "")


def _points(view: BoardView, metric: str) -> dict[str, tuple[float, float]]:
    scale = view.metric(metric).scale
    out = {}
    for name, ed in view.editors.items():
        lat = ed.overall.latency.p50
        stat = ed.overall.metrics.get(metric)
        y = scaled(stat.mean if stat else None, scale)
        if lat is not None and math.isfinite(y):
            out[name] = (max(float(lat), 1e-4), y)  # log axis: the identity baseline takes ~0 s
    return out


def pareto_plot(boards: Sequence[tuple[str, BoardView]], path: Path) -> Optional[str]:
    """Quality vs seconds/image per editor, one panel per metric. With two boards (a comparison) each
    editor is drawn as an arrow from A to B. Returns a caption, or None when there is nothing to plot."""
    boards = [(label, board_view(b)) for label, b in boards]
    view = boards[-1][1]
    metrics = plot_metrics(view)
    if not metrics:
        return None
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    fig = _figure(5.2 * len(metrics), 4.2)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    skipped: set[str] = set()
    names = list(dict.fromkeys(n for _, b in boards for n in b.editors))
    colors = {n: f"C{i % 10}" for i, n in enumerate(names)}  # same colour per editor as the bar chart
    bounds = {n for n, e in view.editors.items() if e.bound}  # drawn as crosses, outside the front
    plotted = 0
    for ax, metric in zip(axes, metrics):
        mi = view.metric(metric)
        series = [(label, _points(b, metric)) for label, b in boards]
        allx = [p[0] for _, pts in series for p in pts.values()]
        for name in view.editors:
            if name not in series[-1][1]:
                skipped.add(name)
        for si, (label, pts) in enumerate(series):
            last = si == len(series) - 1
            for name, (x, y) in pts.items():
                c = colors[name]
                plotted += 1
                bound = name in bounds
                # bounds: crosses, outside the front (they frame the methods, they don't compete)
                ax.scatter([x], [y], s=46, color=c if last or bound else "none", edgecolors=c, zorder=3,
                           marker="X" if bound else "o", label=(name + (" (bound)" if bound else "")) if last else None)
                if last:
                    ax.annotate(name, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
                    prev = series[si - 1][1].get(name) if si else None
                    if prev:
                        ax.annotate("", xy=(x, y), xytext=prev, arrowprops={"arrowstyle": "->", "color": c})
            methods = [p for n, p in pts.items() if n not in bounds]
            if last and len(methods) > 1:
                front = pareto_front(methods, mi.higher_is_better)
                ax.step([p[0] for p in front], [p[1] for p in front], where="post", ls="--", color="0.5",
                        lw=1, zorder=1, label="Pareto front")
        if allx and max(allx) / min(allx) > 20:
            ax.set_xscale("log")
        else:  # near-equal latencies: few, short tick labels instead of overlapping 0.000142...
            ax.xaxis.set_major_locator(MaxNLocator(4))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
        ax.set_xlabel("seconds / image (p50, warm-up excluded)")
        ax.set_ylabel(mi.header)
        ax.set_title(f"{mi.short} vs latency" + toy_suffix(view, mi), fontsize=10)
        ax.grid(alpha=0.3)
    if not plotted:
        return None  # no editor has both a timed sample and a finite mean
    if axes[-1].get_legend_handles_labels()[0]:
        axes[-1].legend(fontsize=7, loc="best")
    _save_svg(fig, path)
    caption = ("Better is up for ↑ metrics, down for ↓ ones; left is faster. The dashed line joins the "
               "methods no other method beats on both axes. Latencies under 0.1 ms are drawn at 0.1 ms.")
    if any(e.bound for e in view.editors.values()):
        caption += " Crosses: bounds (identity, oracle, blank), outside the front."
    if len(boards) > 1:
        caption += " Hollow markers: A; filled: B; arrows A → B."
    if skipped:
        caption += f" Not plotted (no timed sample or undefined mean): {', '.join(sorted(skipped))}."
    return caption


def category_label(c) -> str:
    return f"{c} {edit_type_name(int(c))}" if int(c) in EDIT_TYPES else str(c)


def category_plot(board, path: Path) -> Optional[str]:
    """Grouped bars: each plotted metric's mean per edit category and editor. Returns a caption or None."""
    view = board_view(board)
    metrics = plot_metrics(view)
    cats = view.categories
    if not metrics or not cats:
        return None
    editors = list(view.editors)
    fig = _figure(max(6.0, 0.9 * len(cats) * max(1, len(editors)) ** 0.5 + 2), 3.2 * len(metrics))
    axes = fig.subplots(len(metrics), 1, squeeze=False)[:, 0]
    width = 0.8 / max(1, len(editors))
    nonfinite = set()
    for ax, metric in zip(axes, metrics):
        mi = view.metric(metric)
        for i, name in enumerate(editors):
            pcs = view.editors[name].per_category
            ys = []
            for c in cats:
                stat = pcs[c].metrics.get(metric) if c in pcs else None
                y = scaled(stat.mean if stat else None, mi.scale)
                if math.isinf(y):
                    nonfinite.add(name)
                ys.append(y if math.isfinite(y) else np.nan)
            xs = np.arange(len(cats)) + (i - (len(editors) - 1) / 2) * width
            ax.bar(xs, ys, width=width, label=name, color=f"C{i % 10}")
        ax.set_xticks(np.arange(len(cats)), [category_label(c) for c in cats], rotation=20, ha="right", fontsize=8)
        ax.set_ylabel(mi.header)
        ax.grid(axis="y", alpha=0.3)
    if not any(np.isfinite(b.get_height()) for ax in axes for b in ax.patches):
        return None  # every mean undefined or infinite: an empty chart would only mislead
    axes[0].legend(fontsize=7, ncols=min(4, len(editors)))
    axes[0].set_title("per edit category" + (" (toy models)" if view.headline_toy else ""), fontsize=10)
    _save_svg(fig, path)
    caption = "Mean per edit category (paper scales)."
    if nonfinite:
        caption += f" Infinite means (e.g. PSNR of an unchanged background) have no bar: {', '.join(sorted(nonfinite))}."
    return caption

