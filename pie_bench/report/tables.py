"""Rich tables of leaderboards and comparisons, with the paper's display scales (numbers spelled by
``pie_bench.core.formatting``, as in the HTML report)."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table

from typing import Union

from pie_bench.core.formatting import SHORT, fmt_seconds, fmt_value, metric_header
from pie_bench.run.leaderboard import CategorySummary, EditorSummary, LatencyStats, Leaderboard, as_leaderboard


def _header(name: str, info: dict) -> str:
    return metric_header(name, info.get("scale", 1.0), info.get("higher_is_better", True))


def _latency(lat: LatencyStats) -> tuple[str, str]:
    return fmt_seconds(lat.p50), fmt_seconds(lat.p95)


def _metric_names(board: Leaderboard) -> list[str]:
    return list(board.metric_info) or sorted({m for e in board.editors.values() for m in e.metrics})


def _metric_cell(block: Union[EditorSummary, CategorySummary], name: str, info: dict, with_n: bool) -> str:
    m = block.metrics.get(name)
    if m is None:
        return ""
    text = fmt_value(m.mean, info.get(name, {}).get("scale", 1.0))
    return f"{text} [dim](n={m.n})[/dim]" if with_n else text


def leaderboard_table(board: Union[Leaderboard, dict]) -> Table:
    """Every metric at the paper's scale with its n, counts and latency, one row per editor."""
    board = as_leaderboard(board)
    info = board.metric_info
    names = _metric_names(board)
    title = f"{board.dataset.get('name')} — all categories"
    if board.toy:
        title += "  [bold yellow](TOY MODELS: pipeline check, not editing quality)[/bold yellow]"
    table = Table(title=title, show_lines=False)
    table.add_column("editor", style="bold")
    table.add_column("ok/fail/skip", justify="right")
    for n in names:
        table.add_column(_header(n, info.get(n, {})), justify="right")
    table.add_column("p50", justify="right")
    table.add_column("p95", justify="right")
    for name, ed in board.editors.items():
        label = name + (" [yellow](toy)[/yellow]" if ed.toy else "")
        if ed.load_error:
            label += " [red](load error)[/red]"
        table.add_row(label, f"{ed.n_ok}/{ed.n_failed}/{ed.n_skipped}",
                      *[_metric_cell(ed, n, info, with_n=True) for n in names], *_latency(ed.latency))
    return table


def print_leaderboard(board: Union[Leaderboard, dict], console: Console | None = None, per_category: bool = True) -> None:
    board = as_leaderboard(board)
    console = console or Console()
    if board.toy:
        console.print(f"[bold yellow]NOTE:[/bold yellow] {board.toy_note}")
    console.print(leaderboard_table(board))
    if per_category:
        table = per_category_table(board)
        if table.row_count:
            console.print(table)
    for name, ed in board.editors.items():
        if ed.load_error:
            console.print(f"[red]{name}: not run: {ed.load_error}[/red]")
        if ed.n_failed:
            first = ed.failures[0]
            console.print(f"[red]{name}: {ed.n_failed} failed sample(s), excluded from means; "
                          f"first: {first['sample_id']}: {first['error']}[/red]")


# the columns that fit one terminal line per category row: whether the edit happened, and whether the
# rest survived
CATEGORY_METRICS = ("gt_attribute_accuracy", "psnr_unedit_part", "lpips_unedit_part", "ssim_unedit_part",
                    "clip_similarity_target_image", "clip_similarity_target_image_edit_part")


def per_category_table(board: Union[Leaderboard, dict]) -> Table:
    """One table, a section per edit category and a row per editor: ten separate tables scroll off screen."""
    board = as_leaderboard(board)
    info = board.metric_info
    names = _metric_names(board)
    key = [n for n in CATEGORY_METRICS if n in names]
    names = key or names[:6]  # the full per-category numbers are in the JSON and the HTML report
    table = Table(title=f"{board.dataset.get('name')} — per edit category (key metrics)")
    table.add_column("category", style="bold")
    table.add_column("editor")
    table.add_column("ok/fail", justify="right")
    for n in names:
        table.add_column(_header(n, info.get(n, {})), justify="right")
    cats = sorted({c for e in board.editors.values() for c in e.per_category}, key=int)
    for c in cats:
        first = True
        for name, ed in board.editors.items():
            block = ed.per_category.get(c)
            if block is None:
                continue
            label = f"{c} {block.name}" if first else ""
            table.add_row(label, name, f"{block.n_ok}/{block.n_failed}",
                          *[_metric_cell(block, n, info, with_n=False) for n in names], end_section=False)
            first = False
        if not first:
            table.rows[-1].end_section = True
    return table


def comparison_table(result: dict, a_name: str, b_name: str) -> Table:
    table = Table(title=f"compare {a_name} → {b_name}")
    for col in ("editor", "metric", "A", "B", "Δ", "2·se", "flag"):
        table.add_column(col, justify="right" if col not in ("editor", "metric") else "left")
    for r in result["rows"]:
        flag = "[red]REGRESSION[/red]" if r["regression"] else ("[green]changed[/green]" if r["flagged"] else "")
        table.add_row(r["editor"], SHORT.get(r["metric"], r["metric"]), fmt_value(r["a"], digits=4),
                      fmt_value(r["b"], digits=4), fmt_value(r["delta"], digits=4), fmt_value(2 * r["se"], digits=4), flag)
    return table
