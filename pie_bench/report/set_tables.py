"""The terminal table of metrics over sets (FID, KID, IS, PR, PSD, diversity): one row per editor, each value
with its bootstrap interval ``[low, high]`` where the width allows, and footnotes saying what is undefined and
why, how to read small-n FID, which columns are toy and which editors are deterministic."""
from __future__ import annotations

import math
from typing import Optional

from rich import box
from rich.console import Console
from rich.table import Table

from pie_bench.core.formatting import fmt_value
from pie_bench.report.model import TOY_MARK, BoardView, Block, Metric


def set_cell(block: Block, m: Metric, with_ci: bool) -> str:
    stat = block.set_metrics.get(m.name)
    if stat is None:
        return ""
    if not math.isfinite(stat.mean):
        return "[dim]n/a[/dim]"
    text = fmt_value(stat.mean, m.scale)
    if with_ci and math.isfinite(stat.low) and math.isfinite(stat.high) and stat.high > stat.low:
        text += f" [dim][{fmt_value(stat.low, m.scale)}, {fmt_value(stat.high, m.scale)}][/dim]"
    return text


def _header(m: Metric) -> str:
    from pie_bench.report.tables import column_header

    return column_header(m)


def build_set_table(view: BoardView, metrics: list[Metric], with_ci: bool, title: str,
                    category: Optional[str] = None) -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, title_justify="left", collapse_padding=True)
    table.add_column("editor", no_wrap=True)
    table.add_column("n", justify="right", no_wrap=True)
    for m in metrics:
        table.add_column(_header(m), justify="right", no_wrap=True)
    eds = view.ordered_editors
    for i, ed in enumerate(eds):
        block = ed.overall if category is None else ed.per_category.get(category)
        if block is None or not block.set_metrics:
            continue
        ns = {s.n for s in block.set_metrics.values()}
        label = f"[dim]{ed.name}[/dim]" if ed.bound else ed.name
        if ed.seeds > 1:
            label += f" [dim](×{ed.seeds} seeds)[/dim]"
        last_method = not ed.bound and i + 1 < len(eds) and eds[i + 1].bound
        table.add_row(label, "/".join(map(str, sorted(ns))), *[set_cell(block, m, with_ci) for m in metrics],
                      end_section=last_method)
    return table


def set_footnotes(view: BoardView, category: Optional[str] = None) -> list[str]:
    notes, reasons, seen = [], {}, set()
    for ed in view.editors.values():
        block = ed.overall if category is None else ed.per_category.get(category)
        for name, stat in (block.set_metrics if block else {}).items():
            m = view.set_metrics.get(name) or Metric(name)
            if stat.reason:
                reasons.setdefault(stat.reason, []).append(f"{m.display} ({ed.name})")
            if stat.note and stat.note not in seen:
                seen.add(stat.note)
                if "deterministic" in stat.note:
                    dets = [e.name for e in view.editors.values() if not e.stochastic]
                    notes.append(f"diversity of {', '.join(dets)}: {stat.note}")
                else:
                    notes.append(f"{m.display}: {stat.note}")
    for reason, where in reasons.items():
        notes.append(f"n/a: {reason}: {', '.join(where[:4])}{' ...' if len(where) > 4 else ''}")
    failed = [f"{e.name} ({e.n_failed_seeds})" for e in view.editors.values() if e.n_failed_seeds]
    if failed:
        notes.append("failed runs of further seeds, left out of the diversity scores (see samples*.jsonl): "
                     + ", ".join(failed))
    toy = [m.display for m in view.set_metrics.values() if m.toy]
    if toy:
        notes.append(f"{TOY_MARK} toy (random) weights, a pipeline check only: {', '.join(toy)}")
    notes.append("\\[low, high]: 95% bootstrap interval over samples (seeded); n: samples in the set")
    return notes


def print_set_metrics(view: BoardView, console: Console, per_category: bool = False) -> None:
    """The set-metric tables (overall; with ``per_category`` one per edit category too), fitted to the width:
    with intervals, then without, then split into parts."""
    metrics = [m for m in view.set_metrics.values()
               if any(m.name in e.overall.set_metrics for e in view.editors.values())]
    if not metrics:
        return
    from pie_bench.report.tables import natural_width

    groups = [(None, f"{view.dataset.name} — metrics over sets")]
    if per_category:
        groups += [(c, f"{view.dataset.name} — sets, category {c} {view.category_names.get(c, '')}")
                   for c in view.categories]
    for category, title in groups:
        tables = None
        for with_ci in (True, False):
            t = build_set_table(view, metrics, with_ci, title, category)
            if natural_width(console, t) <= console.width:
                tables = [t]
                break
        if tables is None:  # split the columns into parts that fit, without intervals
            parts: list[list[Metric]] = [[]]
            for m in metrics:
                trial = parts[-1] + [m]
                wide = natural_width(console, build_set_table(view, trial, False, title, category))
                if parts[-1] and wide > console.width:
                    parts.append([m])
                else:
                    parts[-1] = trial
            tables = [build_set_table(view, p, False, f"{title} ({i + 1}/{len(parts)})", category)
                      for i, p in enumerate(parts)]
        console.print()
        for t in tables:
            console.print(t)
        for note in set_footnotes(view, category):
            console.print(f"[dim]{note}[/dim]")
