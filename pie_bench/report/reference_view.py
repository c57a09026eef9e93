"""A run beside a published table (``show RUN --reference ID``) and checked against it (``compare RUN
paper:ID``).

Ours is shown at the table's scale (``mean × scale``), with Δ = ours − theirs. A difference is flagged
when |Δ| exceeds the table's published run-to-run spread for that metric (``spread.values``: the largest
difference two published runs of one method at the same settings showed; the table file says which
runs), plus twice our standard error when the run covers fewer images than the table (the paper's
mean is over all of them; on the full set the same images are scored, so the spread alone applies).
A metric without a published spread is shown, never flagged.

Runs that cannot be compared are refused with one line: toy runs (random-weight models or metrics),
ShapesEdit, the smoke set and PIE-Bench++ (revised prompts) are not what the tables measured.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Optional

from rich import box
from rich.table import Table

from pie_bench.core.errors import ConfigError
from pie_bench.core.formatting import fmt_value
from pie_bench.report.reference import ReferenceTable, load_table
from pie_bench.run.leaderboard import Leaderboard, load_leaderboard

STEP_KEYS = ("num_ddim_steps", "num_inference_steps", "num_inversion_steps", "num_steps")


def run_steps(ed) -> Optional[int]:
    return next((ed.config[k] for k in STEP_KEYS if k in ed.config), None)


def refusal(board: Leaderboard, table: ReferenceTable) -> Optional[str]:
    """Why ``board`` cannot be compared with ``table`` (one line), or None."""
    name = str(board.dataset.get("name", ""))
    if name == "shapes":
        return ("ShapesEdit (generated 32-px scenes, this repo's small models) is not PIE-Bench: compare it with "
                "results/shapes.json, not with a paper")
    if name == "smoke":
        return "the smoke set (10 photos annotated here) is not PIE-Bench: run the official PIE-Bench folder"
    if name.startswith("hf:"):
        return (f"{name} (PIE-Bench++: revised prompts, no instructions) is not the set {table.id} measured: "
                "run the official PIE-Bench folder")
    if board.toy:
        what = "models" if any(e.toy for e in board.editors.values()) else "metric weights"
        return (f"a toy run (random {what}): its numbers check the code, not the method; compare a run on real "
                "weights (--backbone sd14/sd15 --metrics-backbone real)")
    return None


def notes(board: Leaderboard, table: ReferenceTable) -> list[str]:
    out = []
    n = int(board.dataset.get("n", 0) or 0)
    if n and n != table.n_images:
        out.append(f"the run scored {n} of the table's {table.n_images} images: twice our standard error is "
                   "added to the tolerance")
    for name, ed in board.editors.items():
        steps = run_steps(ed)
        row = table.row_for(ed.editor or name, steps)
        if row is None or row.steps is None:
            continue
        if steps is not None and steps != row.steps:
            out.append(f"{name} ran {steps} steps, the table's {row.method} {row.steps}: not the paper's settings")
    if table.hardware:
        out.append(f"{table.id} hardware: {table.hardware}")
    return out


def side_by_side(board: Leaderboard, table: ReferenceTable) -> list[dict]:
    """One row per (our editor with a table row, table metric the run has)."""
    n_run = int(board.dataset.get("n", 0) or 0)
    rows = []
    for name, ed in board.editors.items():
        ref = table.row_for(ed.editor or name, run_steps(ed))
        if ref is None or ed.bound:
            continue
        for metric, theirs in ref.values.items():
            stats = ed.metrics.get(metric)
            if stats is None:
                continue
            scale = table.scales[metric]
            ours, se = stats.value * scale, stats.error * scale
            delta = ours - theirs if math.isfinite(ours) else float("nan")
            tol = table.spread.get(metric)
            if tol is not None and n_run and n_run < table.n_images and math.isfinite(se):
                tol += 2 * se
            flagged = tol is not None and (not math.isfinite(delta) or abs(delta) > tol)
            worse = math.isfinite(delta) and ((delta < 0) if stats.higher_is_better else (delta > 0))
            rows.append({"editor": name, "method": ref.method, "metric": metric, "column": table.column(metric),
                         "ours": ours, "theirs": theirs, "delta": delta, "tolerance": tol, "flagged": flagged,
                         "worse": worse, "n": stats.n})
        if ref.seconds is not None and ed.latency.p50 is not None:
            rows.append({"editor": name, "method": ref.method, "metric": "seconds", "column": "s / image (p50)",
                         "ours": float(ed.latency.p50), "theirs": ref.seconds, "delta": ed.latency.p50 - ref.seconds,
                         "tolerance": None, "flagged": False, "worse": False, "n": ed.latency.n})
    return rows


def reference_table(rows: list[dict], table: ReferenceTable, run_name: str) -> Table:
    t = Table(title=f"{run_name} beside {table.id}: {table.title}", box=box.SIMPLE_HEAD, title_justify="left")
    for col in ("editor", "metric", "ours", "paper", "Δ", "spread", "flag"):
        t.add_column(col, justify="left" if col in ("editor", "metric") else "right")
    last = None
    for r in rows:
        flag = ("[red]off[/red]" if r["worse"] else "[yellow]off[/yellow]") if r["flagged"] else ""
        t.add_row(r["editor"] if r["editor"] != last else "", r["column"], fmt_value(r["ours"], digits=3),
                  fmt_value(r["theirs"], digits=3), fmt_value(r["delta"], digits=3),
                  "–" if r["tolerance"] is None else fmt_value(r["tolerance"], digits=3), flag)
        last = r["editor"]
    return t


def print_reference(board: Leaderboard, spec: str, console, run_name: str = "run") -> list[dict]:
    """The side-by-side table and its notes; raises ConfigError (one line) for a run that cannot be compared."""
    table = load_table(spec)
    why = refusal(board, table)
    if why:
        raise ConfigError(f"{run_name}: not comparable with {table.id}: {why}")
    rows = side_by_side(board, table)
    if not rows:
        ours = ", ".join(sorted(board.editors)) or "none"
        raise ConfigError(f"{run_name}: no editor of the run ({ours}) has a row in {table.id} "
                          f"({', '.join(r.editor for r in table.rows if r.editor)})")
    console.print(reference_table(rows, table, run_name))
    src = table.source
    console.print(f"[dim]source: {src.get('citation', '')}; {src.get('where', '')}; transcribed "
                  f"{src.get('transcribed', '?')}[/dim]")
    console.print(f"[dim]spread: {table.spread_how or 'none published'}[/dim]")
    for note in notes(board, table):
        console.print(f"[dim]note: {note}[/dim]")
    return rows


def _board_path(spec: str) -> Path:
    path = Path(spec)
    return path / "leaderboard.json" if path.is_dir() else path


def _run_name(spec: str) -> str:
    path = _board_path(spec)
    return path.parent.name if path.name == "leaderboard.json" else path.name


def show_board(leaderboard: str, console, per_category: bool, wide: bool, reference: Optional[str]) -> None:
    """``show``: the run's tables, or with ``reference`` the run beside a published table."""
    from pie_bench.report.tables import print_leaderboard

    board = load_leaderboard(_board_path(leaderboard))
    if reference:
        print_reference(board, reference, console, _run_name(leaderboard))
    else:
        print_leaderboard(board, console, per_category=per_category, wide=wide)


def compare_with_paper(a: str, spec: str, console, fail_on_regression: bool) -> None:
    """``compare RUN paper:ID``: the side-by-side table; exit 1 with --fail-on-regression when a metric is
    off beyond the spread in the worse direction."""
    rows = print_reference(load_leaderboard(_board_path(a)), spec, console, _run_name(a))
    off = [r for r in rows if r["flagged"]]
    worse = [r for r in off if r["worse"]]
    console.print(f"{len(off)} metric(s) off the paper beyond the published spread, {len(worse)} of them worse")
    if fail_on_regression and worse:
        sys.exit(1)
