"""Rich tables of leaderboards and comparisons that fit the console they are printed to.

The default is compact: the board's key metrics (``BoardView.key_metrics``: on ShapesEdit attribute
accuracy, background PSNR/LPIPS, GT PSNR, CLIP-edited; on PIE-Bench the protocol's six) and the median
latency, one line per editor. Where the console is too narrow the standard errors go first, then the
last key columns (a footnote names them and points to ``--wide``). ``wide=True`` shows every metric and
both latency percentiles, split into as many tables as the width needs, each repeating the editor column.

Numbers are spelled by ``pie_bench.core.formatting`` at the paper's scale, as in the HTML report; both
read the leaderboard through the report's view (``pie_bench.report.model``).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Optional, Sequence, Union

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from pie_bench.core.formatting import SHORT, direction_arrow, fmt_seconds, fmt_value, scaled
from pie_bench.report.model import TOY_MARK, Block, BoardView, EditorView, Metric, board_view
from pie_bench.run.leaderboard import Leaderboard

_UNIT = re.compile(r"^(.*?)\s*(x10\^-?\d+|x[\d.]+|%)$")


def _name_unit(m: Metric) -> tuple[str, str]:
    match = _UNIT.match(m.display)
    return (match.group(1), match.group(2)) if match else (m.display, "")


def display_name(m: Metric) -> str:
    """The metric as the tables and their footnotes name it: its label without the unit."""
    return _name_unit(m)[0]


def column_header(m: Metric) -> str:
    """Two short lines: the metric's name (``†`` for toy weights), then its unit and direction."""
    name, unit = _name_unit(m)
    return f"{name}{TOY_MARK if m.toy else ''}\n{unit + ' ' if unit else ''}{direction_arrow(m.higher_is_better)}"


def fmt_se(se: float) -> str:
    """A standard error in the narrow form the tables use: two significant figures at most."""
    return f"{se:.0f}" if se >= 10 else (f"{se:.1f}" if se >= 1 else f"{se:.2f}")


def metric_text(block: Block, m: Metric, with_se: bool, with_n: bool) -> str:
    stat = block.metrics.get(m.name)
    if stat is None:
        return ""
    text = fmt_value(stat.mean, m.scale)
    se = scaled(stat.stderr, m.scale)
    if with_se and stat.n > 1 and math.isfinite(se) and math.isfinite(stat.mean):
        text += f"[dim]±{fmt_se(se)}[/dim]"
    if with_n and stat.n != block.n_ok:
        text += f" [dim]({stat.n})[/dim]"
    return text


def count_text(block: Block) -> str:
    text = str(block.n_ok)
    if block.n_failed:
        text += f" [red]✗{block.n_failed}[/red]"
    if block.n_skipped:
        text += f" [dim]⊘{block.n_skipped}[/dim]"
    return text


def editor_label(view: BoardView, ed: EditorView) -> str:
    label = ed.name
    if ed.toy and not view.all_methods_toy:
        label += " [yellow](toy)[/yellow]"
    if ed.load_error:
        label += " [red](not run)[/red]"
    return f"[dim]{label}[/dim]" if ed.bound else label


@dataclass
class Layout:
    metrics: list[Metric]
    with_se: bool
    with_n: bool
    p95: bool
    p50: bool = True


def _table(view: BoardView, layout: Layout, title: str, category: Optional[str] = None) -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, title_justify="left", collapse_padding=True)
    if category == "*":
        table.add_column("category · editor", no_wrap=True)
    else:
        table.add_column("editor", no_wrap=True)
    table.add_column("n", justify="right", no_wrap=True)
    for m in layout.metrics:
        table.add_column(column_header(m), justify="right", no_wrap=True)
    if layout.p50 and category != "*":  # latency is a property of the editor, not of an edit category
        table.add_column("p50\ns/img", justify="right", no_wrap=True)
    if layout.p95 and category != "*":
        table.add_column("p95\ns/img", justify="right", no_wrap=True)
    return table


def _row(view: BoardView, ed: EditorView, block: Block, layout: Layout, indent: str = "") -> list[str]:
    cells = [indent + editor_label(view, ed), count_text(block)]
    cells += [metric_text(block, m, layout.with_se, layout.with_n) for m in layout.metrics]
    if indent:
        return cells
    if layout.p50:
        cells.append(fmt_seconds(block.latency.p50))
    if layout.p95:
        cells.append(fmt_seconds(block.latency.p95))
    return cells


def build_table(view: BoardView, layout: Layout, title: str, per_category: bool = False) -> Table:
    table = _table(view, layout, title, "*" if per_category else None)
    eds = view.ordered_editors
    if not per_category:
        for i, ed in enumerate(eds):
            last_method = not ed.bound and i + 1 < len(eds) and eds[i + 1].bound
            table.add_row(*_row(view, ed, ed.overall, layout), end_section=last_method)
        return table
    cats = view.categories
    for c in cats:
        blocks = [(ed, ed.per_category[c]) for ed in eds if c in ed.per_category]
        if not blocks:
            continue
        name = view.category_names.get(c, "")
        table.add_row(f"[bold]{c} {name}[/bold]", *[""] * (len(table.columns) - 1))
        for j, (ed, block) in enumerate(blocks):
            table.add_row(*_row(view, ed, block, layout, indent="  "), end_section=j + 1 == len(blocks))
    return table


def natural_width(console: Console, table: Table) -> int:
    return Measurement.get(console, console.options.update(max_width=10 ** 6), table).maximum


def fit_compact(console: Console, view: BoardView, title: str, per_category: bool) -> tuple[Table, list[Metric]]:
    """The widest compact table that fits: key metrics with ±, without ±, then fewer key columns."""
    key = view.key_metrics
    candidates = [Layout(key, True, False, False)]
    candidates += [Layout(key[:k], False, False, False) for k in range(len(key), 0, -1)]
    for layout in candidates:
        table = build_table(view, layout, title, per_category)
        if natural_width(console, table) <= console.width:
            return table, key[len(layout.metrics):]
    return table, key[len(layout.metrics):]  # narrower than one metric column: rich folds what remains


def fit_wide(console: Console, view: BoardView, title: str, per_category: bool) -> list[Table]:
    """Every metric, in as few tables as fit the width (each with the editor and n columns)."""
    groups: list[list[Metric]] = [[]]
    for m in view.ordered_metrics:
        trial = groups[-1] + [m]
        table = build_table(view, Layout(trial, True, True, True), title, per_category)
        if groups[-1] and natural_width(console, table) > console.width:
            groups.append([m])
        else:
            groups[-1] = trial
    tables = []
    for i, group in enumerate(groups):
        part = f" ({i + 1}/{len(groups)})" if len(groups) > 1 else ""
        last = i + 1 == len(groups)  # latency once, in the last part
        tables.append(build_table(view, Layout(group, True, True, last, last), title + part, per_category))
    return tables


def _footnotes(view: BoardView, shown: Sequence[Metric], dropped: Sequence[Metric], wide: bool) -> list[str]:
    notes = []
    if any(m.toy for m in shown):
        notes.append(f"{TOY_MARK} toy (random) weights, a pipeline check only: "
                     + ", ".join(display_name(m) for m in shown if m.toy))
    if not wide:
        uneven = [m for m in shown if any(m.name in e.overall.metrics and e.overall.metrics[m.name].n != e.overall.n_ok
                                          for e in view.editors.values())]
        if uneven:
            ns = sorted({e.overall.metrics[m.name].n for m in uneven for e in view.editors.values()
                         if m.name in e.overall.metrics})
            span = str(ns[0]) if len(ns) == 1 else f"{ns[0]}–{ns[-1]}"
            notes.append(f"{', '.join(display_name(m) for m in uneven)}: over the samples where defined (n={span}; "
                         "e.g. no unedited region); --wide shows each n")
    if dropped:
        notes.append(f"{len(dropped)} more key column(s) need a wider terminal: "
                     + ", ".join(display_name(m) for m in dropped) + " (or --wide)")
    elif not wide and len(view.metrics) > len(shown):
        notes.append(f"{len(view.metrics) - len(shown)} more metric(s) and p95 latency: --wide")
    bounds = [e for e in view.editors.values() if e.bound]
    if bounds:
        notes.append("last group, bounds (never ranked): " + "; ".join(f"{e.name} = {e.bound}" for e in bounds))
    if any(e.overall.n_failed or e.overall.n_skipped for e in view.editors.values()):
        notes.append("n: samples averaged; ✗ failed and ⊘ skipped samples are excluded from the means")
    return notes


def headline(view: BoardView) -> str:
    title = f"{view.dataset.name} — all categories"
    if view.all_methods_toy:
        title += "  [bold yellow](TOY MODELS: pipeline check, not editing quality)[/bold yellow]"
    elif any(e.toy for e in view.editors.values() if not e.bound):
        title += "  [yellow](editors marked toy ran on toy models)[/yellow]"
    return title


def print_leaderboard(board: Union[Leaderboard, dict, BoardView], console: Console | None = None,
                      per_category: bool = True, wide: bool = False) -> None:
    view = board_view(board)
    console = console or Console()
    titles = [(headline(view), False)]
    if per_category and view.categories:
        titles.append((f"{view.dataset.name} — per edit category", True))
    for i, (title, by_cat) in enumerate(titles):
        if i:
            console.print()
        if wide:
            tables, shown, dropped = fit_wide(console, view, title, by_cat), list(view.metrics.values()), []
        else:
            table, dropped = fit_compact(console, view, title, by_cat)
            tables, shown = [table], [m for m in view.key_metrics if m not in dropped]
        for t in tables:
            console.print(t)
        if not by_cat:
            for note in _footnotes(view, shown, dropped, wide):
                console.print(f"[dim]{note}[/dim]")
    from pie_bench.report.set_tables import print_set_metrics

    print_set_metrics(view, console, per_category=wide and per_category)  # per category only with --wide
    for ed in view.editors.values():
        if ed.load_error:
            console.print(f"[red]{ed.name}: not run: {ed.load_error}[/red]")
        if ed.overall.n_failed and ed.failures:
            first = ed.failures[0]
            console.print(f"[red]{ed.name}: {ed.overall.n_failed} failed sample(s), excluded from means; "
                          f"first: {first.sample_id}: {first.text}[/red]")


def comparison_table(result: dict, a_name: str, b_name: str) -> Table:
    table = Table(title=f"compare {a_name} → {b_name}", box=box.SIMPLE_HEAD, title_justify="left")
    for col in ("editor", "metric", "A", "B", "Δ", "2·se", "flag"):
        table.add_column(col, justify="right" if col not in ("editor", "metric") else "left")
    for r in result["rows"]:
        flag = "[red]REGRESSION[/red]" if r["regression"] else ("[green]changed[/green]" if r["flagged"] else "")
        table.add_row(r["editor"], SHORT.get(r["metric"], r["metric"]), fmt_value(r["a"], digits=4),
                      fmt_value(r["b"], digits=4), fmt_value(r["delta"], digits=4), fmt_value(2 * r["se"], digits=4), flag)
    return table
