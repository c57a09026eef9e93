"""The rows of the report's HTML tables (leaderboards overall and per category, compare deltas), as the
templates draw them: display text, the ``data-v`` the sorting JS orders by, and which cell is best.

The terminal's versions of these tables are ``pie_bench.report.tables``; both spell numbers through
``pie_bench.core.formatting``."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from pie_bench.core.formatting import NAN_TEXT, fmt_delta, fmt_num, fmt_seconds, scaled
from pie_bench.report.model import Block, BoardView, Comparison, Latency, Metric, Stat


def sort_key(v: Optional[float]) -> str:
    """data-v for the sorting JS: '' (undefined, sorts last), 'Infinity', or the number."""
    if v is None or math.isnan(v):
        return ""
    if math.isinf(v):
        return "Infinity" if v > 0 else "-Infinity"
    return repr(float(v))


@dataclass
class Cell:
    """``<td data-v=sort>text [±se] [n=..]</td>``; ``sort`` None: a cell with no data-v (sorts by its text)."""
    text: Any = ""
    sort: Optional[str] = None
    se: Optional[str] = None
    n: Any = None
    best: bool = False


@dataclass
class EditorRow:
    name: str
    counts: str  # ok/failed/skipped
    n_ok: int
    cells: list[Cell]  # one per metric column, then p50 and p95
    toy: bool = False
    load_error: Optional[str] = None
    bound: str = ""  # a bound's rows are drawn apart and never hold the best cell


@dataclass
class LeaderboardTable:
    table_id: str
    metrics: list[Metric]
    rows: list[EditorRow] = field(default_factory=list)


def best_values(blocks: dict[str, Block], metrics: Sequence[Metric]) -> dict[str, float]:
    """Best mean per metric among ``blocks`` (editor -> block), by the metric's direction."""
    out = {}
    for m in metrics:
        vals = [b.metrics[m.name].mean for b in blocks.values() if m.name in b.metrics]
        vals = [v for v in vals if not math.isnan(v)]
        if len(set(vals)) > 1:  # a column where all agree has no best
            out[m.name] = max(vals) if m.higher_is_better else min(vals)
    return out


def metric_cell(stat: Optional[Stat], scale: float, best: Optional[float], row_n: Optional[int] = None) -> Cell:
    """``row_n``: the row's sample count; a metric averaged over as many shows no n of its own (the
    counts column says it once), one defined on fewer samples shows its n."""
    if stat is None:
        return Cell(sort="")
    v, se = scaled(stat.mean, scale), scaled(stat.stderr, scale)
    show_se = math.isfinite(se) and math.isfinite(v) and stat.n > 1
    return Cell(fmt_num(v), sort_key(v), fmt_num(se) if show_se else None, None if stat.n == row_n else stat.n,
                best=best is not None and stat.mean == best)


def latency_cells(lat: Latency) -> list[Cell]:
    return [Cell(fmt_seconds(lat.p50), sort_key(lat.p50)), Cell(fmt_seconds(lat.p95), sort_key(lat.p95), n=lat.n)]


def leaderboard_table(view: BoardView, category: Optional[str] = None, table_id: str = "",
                      skipped: Optional[dict] = None) -> LeaderboardTable:
    """``skipped``: (editor, category) -> count from the records; the leaderboard's category blocks
    don't carry skips, and a blank there would read as zero."""
    metrics = view.ordered_metrics
    blocks = {}  # methods first, then the bounds
    for ed in view.ordered_editors:
        block = ed.overall if category is None else ed.per_category.get(category)
        if block is not None:
            blocks[ed.name] = block
    # bounds frame the methods (identity's background is perfect by construction): never "best"
    best = best_values({n: b for n, b in blocks.items() if not view.editors[n].bound}, metrics)
    table = LeaderboardTable(table_id, metrics)
    for name, block in blocks.items():
        ed = view.editors[name]
        n_skip = block.n_skipped
        if n_skip is None:
            n_skip = (skipped or {}).get((name, category), 0 if skipped is not None else NAN_TEXT)
        row_best = {} if ed.bound else best
        cells = [metric_cell(block.metrics.get(m.name), m.scale, row_best.get(m.name), block.n_ok) for m in metrics]
        table.rows.append(EditorRow(name, f"{block.n_ok}/{block.n_failed}/{n_skip}", block.n_ok,
                                    cells + latency_cells(block.latency), ed.toy, ed.load_error, ed.bound))
    return table


@dataclass
class DeltaRow:
    cls: str  # regression | changed | ""
    flag: str
    cells: list[Cell]


def delta_rows(comparison: Comparison, metrics: dict[str, Metric]) -> list[DeltaRow]:
    """The compare page's table: one row per (editor, metric) at the paper's scale."""
    rows = []
    for r in comparison.rows:
        mi = metrics.get(r.metric)
        scale, label = (mi.scale, mi.header) if mi else (1.0, r.metric)
        va, vb, d, se = (scaled(x, scale) for x in (r.a, r.b, r.delta, r.se))
        flag = "REGRESSION" if r.regression else ("changed" if r.flagged else "")
        digits = 0 if r.metric == "n_failed" else 3
        cells = [Cell(r.editor, r.editor), Cell(label, label),
                 Cell(fmt_num(va, digits), sort_key(va)), Cell(fmt_num(vb, digits), sort_key(vb)),
                 Cell(fmt_delta(d, digits), sort_key(d)), Cell(fmt_num(2 * se, digits), sort_key(2 * se)),
                 Cell(f"{'' if r.n_a is None else r.n_a}/{'' if r.n_b is None else r.n_b}"), Cell(flag, flag)]
        rows.append(DeltaRow("regression" if r.regression else ("changed" if r.flagged else ""), flag, cells))
    return rows


@dataclass
class SetCell:
    text: str = ""
    sort: str = ""
    ci: Optional[str] = None  # "[low, high]" at display scale
    reason: str = ""  # why the value is undefined


@dataclass
class SetRow:
    name: str
    n: str
    cells: list[SetCell]
    bound: str = ""
    seeds: int = 1


@dataclass
class SetMetricTable:
    table_id: str
    metrics: list[Metric]
    rows: list[SetRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def set_metric_table(view: BoardView, category: Optional[str] = None, table_id: str = "") -> SetMetricTable:
    """The metrics over sets (FID, KID, PR, PSD, diversity) with their bootstrap intervals; the terminal's is
    ``pie_bench.report.set_tables``, whose footnotes this table shares."""
    from pie_bench.report.set_tables import set_footnotes

    metrics = [m for m in view.set_metrics.values()
               if any(m.name in e.overall.set_metrics for e in view.editors.values())]
    table = SetMetricTable(table_id, metrics, notes=[n.replace("\\[", "[") for n in set_footnotes(view, category)])
    for ed in view.ordered_editors:
        block = ed.overall if category is None else ed.per_category.get(category)
        if block is None or not block.set_metrics:
            continue
        cells = []
        for m in metrics:
            s = block.set_metrics.get(m.name)
            if s is None:
                cells.append(SetCell())
                continue
            v, lo, hi = (scaled(x, m.scale) for x in (s.mean, s.low, s.high))
            ci = f"[{fmt_num(lo)}, {fmt_num(hi)}]" if math.isfinite(lo) and math.isfinite(hi) and hi > lo else None
            cells.append(SetCell(fmt_num(v) if math.isfinite(v) else "n/a", sort_key(v), ci, s.reason))
        ns = "/".join(map(str, sorted({s.n for s in block.set_metrics.values()})))
        table.rows.append(SetRow(ed.name, ns, cells, ed.bound, ed.seeds))
    return table
