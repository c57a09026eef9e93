"""Static HTML report of a run (and of a comparison of two leaderboards).

``write_report(run_dir)`` writes ``<run_dir>/report/index.html`` beside its images and plots. The folder
is self-contained: no server, no network, no CDN; the sorting and filtering is a few lines of inline JS,
so it opens from ``file://`` and can be zipped and mailed as it is.

Everything that comes from a dataset or a record (prompts, ids, error messages, editor configs) goes
through ``html.escape``: annotation files are third-party input and must not be able to run script in
the reader's browser.
"""
from __future__ import annotations

import hashlib
import html
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image

from pie_bench.core.errors import HarnessError, ResultsError
from pie_bench.run.results import SampleRecord, atomic_write_bytes, decode_float, load_leaderboard
from pie_bench.run.run_folder import LEADERBOARD, RunFolder
from pie_bench.core.sample import EDIT_TYPES, edit_type_name
from pie_bench.report.tables import SHORT, fmt_latency, scale_suffix

THUMB = 256  # gallery thumbnails: sharp at the 160 px display size on high-dpi screens
JPEG_QUALITY = 90
LAZY_AFTER = 24  # rows beyond this load their images lazily (a full 700-sample run is ~6000 images)
# The paper's headline trade-off: prompt fidelity (CLIP whole) and background preservation (LPIPS) vs cost.
PARETO_METRICS = ("clip_similarity_target_image", "lpips_unedit_part")
MASK_RGB = np.array([255, 40, 40], dtype=np.float32)
MASK_ALPHA = 0.45


def write_file(path: Path, data: bytes) -> None:
    """Atomic write, world-readable: a report is meant to be served or shared (mkstemp makes 0600)."""
    atomic_write_bytes(path, data, fsync=False)
    os.chmod(path, 0o644)


def h(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, HarnessError) else f"{type(exc).__name__}: {text}"


# ---------------------------------------------------------------------------------------------
# numbers


def metric_label(name: str, info: dict) -> str:
    label = info.get("label") or (SHORT.get(name, name) + scale_suffix(info.get("scale", 1.0)))
    return f"{label} {'↑' if info.get('higher_is_better', True) else '↓'}"


def scaled(value, scale: float) -> float:
    v = decode_float(value)
    return v * scale if math.isfinite(v) else v


def fmt_num(v: float, digits: int = 2) -> str:
    if math.isnan(v):
        return "–"
    if math.isinf(v):
        return "∞" if v > 0 else "−∞"
    return f"{v:.{digits}f}"


def sort_key(v: Optional[float]) -> str:
    """data-v for the sorting JS: '' (undefined, sorts last), 'Infinity', or the number."""
    if v is None or math.isnan(v):
        return ""
    if math.isinf(v):
        return "Infinity" if v > 0 else "-Infinity"
    return repr(float(v))


def metric_names(board: dict) -> list[str]:
    info = board.get("metric_info", {})
    return list(info) or sorted({m for e in board["editors"].values() for m in e.get("metrics", {})})


def best_values(blocks: dict[str, Optional[dict]], names: Sequence[str], info: dict) -> dict[str, float]:
    """Best mean per metric among ``blocks`` (editor -> metrics dict), by the metric's direction."""
    out = {}
    for n in names:
        vals = [decode_float(b[n]["mean"]) for b in blocks.values() if b and n in b]
        vals = [v for v in vals if not math.isnan(v)]
        if len(vals) > 1:
            out[n] = max(vals) if info.get(n, {}).get("higher_is_better", True) else min(vals)
    return out


# ---------------------------------------------------------------------------------------------
# source images from the run's dataset


def load_source_samples(dataset_info: dict) -> tuple[Optional[dict], str]:
    """The run's samples by id, reloaded from the data spec recorded in run.json, or (None, why not).

    The report must still be written when the data is elsewhere (a run folder copied off the GPU
    box): then it shows the editors' outputs only."""
    from pie_bench.datasets.pie import DATA_SOURCES, load_dataset

    name, source = dataset_info.get("name", ""), str(dataset_info.get("source", ""))
    if name == "shapes" and name not in DATA_SOURCES:
        try:  # the generated set registers itself on import (the CLI imports it for --data)
            import pie_bench.datasets.shapes  # noqa: F401
        except Exception:
            pass
    categories = dataset_info.get("categories") or None
    attempts: list[tuple[str, Optional[list]]] = []
    if name in DATA_SOURCES:
        attempts = [(name, None)]
    elif source.startswith("hf:"):
        # the annotations hash covers the configs that were loaded: try the run's categories, then all
        attempts = [(source, categories), (source, None)] if categories else [(source, None)]
    elif source and Path(source).exists():
        attempts = [(source, None)]
    else:
        return None, (f"source images unavailable: dataset {name!r} ({source}) is not on this machine; "
                      "only the editors' outputs are shown")
    why = ""
    for spec, cats in attempts:
        try:
            ds = load_dataset(spec, categories=cats)
        except Exception as exc:  # any loader failure only costs the source column
            why = f"could not load {spec} ({one_line(exc)})"
            continue
        if ds.annotations_sha256 == dataset_info.get("annotations_sha256"):
            return {s.id: s for s in ds.samples}, ""
        why = (f"{spec} now has other annotations (sha {ds.annotations_sha256[:12]}, the run used "
               f"{str(dataset_info.get('annotations_sha256', ''))[:12]})")
    return None, f"source images unavailable: {why}; only the editors' outputs are shown"


def mask_overlay(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    out = image.astype(np.float32)
    out[mask] = out[mask] * (1 - MASK_ALPHA) + MASK_RGB * MASK_ALPHA
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def safe_name(text: str) -> str:
    """File name for an id or editor name; a hash suffix keeps ids that sanitise alike apart."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in text).lstrip(".") or "_"
    return safe if safe == text else f"{safe}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"


def write_thumb(image, dest: Path, size: int = THUMB) -> None:
    """JPEG thumbnail (lossy is fine here: the metrics were computed on the lossless PNGs)."""
    img = Image.fromarray(image) if isinstance(image, np.ndarray) else image
    img = img.convert("RGB")
    img.thumbnail((size, size), Image.LANCZOS)
    import io

    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=JPEG_QUALITY)
    write_file(dest, buf.getvalue())


class ThumbCache:
    """Which input each thumbnail was made from, so a rerun (the report at the end of every resumed
    bench) only redoes new outputs, and a folder reused for another run never shows stale images."""

    NAME = ".thumbs.json"

    def __init__(self, out_dir: Path):
        self.path = out_dir / "images" / self.NAME
        try:
            self.table = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.table = {}

    def fresh(self, dest: Path, key: str) -> bool:
        return dest.exists() and self.table.get(str(dest.relative_to(self.path.parent))) == key

    def made(self, dest: Path, key: str) -> None:
        self.table[str(dest.relative_to(self.path.parent))] = key

    def save(self) -> None:
        write_file(self.path, json.dumps(self.table, sort_keys=True).encode())

    def file(self, src: Path, dest: Path) -> None:
        st = src.stat()
        key = f"{src.resolve()}|{st.st_mtime_ns}|{st.st_size}"
        if not self.fresh(dest, key):
            with Image.open(src) as img:
                img.load()
                write_thumb(img, dest)
            self.made(dest, key)

    def array(self, make, dest: Path, key: str) -> None:
        if not self.fresh(dest, key):
            write_thumb(make(), dest)
            self.made(dest, key)


# ---------------------------------------------------------------------------------------------
# plots (matplotlib through the Agg canvas directly: never touches the caller's pyplot backend)


def plot_metrics(board: dict) -> list[str]:
    """Up to two metrics to plot: the paper's headline pair where present, else the first others."""
    present = [n for n in metric_names(board)
               if any(e.get("metrics", {}).get(n, {}).get("n") for e in board["editors"].values())]
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
    import io

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


def _points(board: dict, metric: str) -> dict[str, tuple[float, float]]:
    scale = board.get("metric_info", {}).get(metric, {}).get("scale", 1.0)
    out = {}
    for name, ed in board["editors"].items():
        lat = ed.get("latency", {}).get("p50")
        y = scaled(ed.get("metrics", {}).get(metric, {}).get("mean"), scale)
        if lat is not None and math.isfinite(y):
            out[name] = (max(float(lat), 1e-4), y)  # log axis: the identity baseline takes ~0 s
    return out


def pareto_plot(boards: Sequence[tuple[str, dict]], path: Path) -> Optional[str]:
    """Quality vs seconds/image per editor, one panel per metric. With two boards (a comparison) each
    editor is drawn as an arrow from A to B. Returns a caption, or None when there is nothing to plot."""
    board = boards[-1][1]
    metrics = plot_metrics(board)
    if not metrics:
        return None
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    info = board.get("metric_info", {})
    fig = _figure(5.2 * len(metrics), 4.2)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    skipped: set[str] = set()
    names = list(dict.fromkeys(n for _, b in boards for n in b["editors"]))
    colors = {n: f"C{i % 10}" for i, n in enumerate(names)}  # same colour per editor as the bar chart
    plotted = 0
    for ax, metric in zip(axes, metrics):
        mi = info.get(metric, {})
        series = [(label, _points(b, metric)) for label, b in boards]
        allx = [p[0] for _, pts in series for p in pts.values()]
        for name in board["editors"]:
            if name not in series[-1][1]:
                skipped.add(name)
        for si, (label, pts) in enumerate(series):
            last = si == len(series) - 1
            for name, (x, y) in pts.items():
                c = colors[name]
                plotted += 1
                ax.scatter([x], [y], s=46, color=c if last else "none", edgecolors=c, zorder=3,
                           label=name if last else None)
                if last:
                    ax.annotate(name, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
                    prev = series[si - 1][1].get(name) if si else None
                    if prev:
                        ax.annotate("", xy=(x, y), xytext=prev, arrowprops={"arrowstyle": "->", "color": c})
            if last and len(pts) > 1:
                front = pareto_front(list(pts.values()), mi.get("higher_is_better", True))
                ax.step([p[0] for p in front], [p[1] for p in front], where="post", ls="--", color="0.5",
                        lw=1, zorder=1, label="Pareto front")
        if allx and max(allx) / min(allx) > 20:
            ax.set_xscale("log")
        else:  # near-equal latencies: few, short tick labels instead of overlapping 0.000142...
            ax.xaxis.set_major_locator(MaxNLocator(4))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
        ax.set_xlabel("seconds / image (p50, warm-up excluded)")
        ax.set_ylabel(metric_label(metric, mi))
        ax.set_title(f"{SHORT.get(metric, metric)} vs latency" + (" (toy models)" if board.get("toy") else ""),
                     fontsize=10)
        ax.grid(alpha=0.3)
    if not plotted:
        return None  # no editor has both a timed sample and a finite mean
    if axes[-1].get_legend_handles_labels()[0]:
        axes[-1].legend(fontsize=7, loc="best")
    _save_svg(fig, path)
    caption = ("Better is up for ↑ metrics, down for ↓ ones; left is faster. The dashed line joins the "
               "editors no other editor beats on both axes. Latencies under 0.1 ms are drawn at 0.1 ms.")
    if len(boards) > 1:
        caption += " Hollow markers: A; filled: B; arrows A → B."
    if skipped:
        caption += f" Not plotted (no timed sample or undefined mean): {', '.join(sorted(skipped))}."
    return caption


def category_plot(board: dict, path: Path) -> Optional[str]:
    metrics = plot_metrics(board)
    cats = sorted({c for e in board["editors"].values() for c in e.get("per_category", {})}, key=int)
    if not metrics or not cats:
        return None
    info = board.get("metric_info", {})
    editors = list(board["editors"])
    fig = _figure(max(6.0, 0.9 * len(cats) * max(1, len(editors)) ** 0.5 + 2), 3.2 * len(metrics))
    axes = fig.subplots(len(metrics), 1, squeeze=False)[:, 0]
    width = 0.8 / max(1, len(editors))
    nonfinite = set()
    for ax, metric in zip(axes, metrics):
        scale = info.get(metric, {}).get("scale", 1.0)
        for i, name in enumerate(editors):
            pcs = board["editors"][name].get("per_category", {})
            ys = []
            for c in cats:
                y = scaled(pcs.get(c, {}).get("metrics", {}).get(metric, {}).get("mean"), scale)
                if math.isinf(y):
                    nonfinite.add(name)
                ys.append(y if math.isfinite(y) else np.nan)
            xs = np.arange(len(cats)) + (i - (len(editors) - 1) / 2) * width
            ax.bar(xs, ys, width=width, label=name, color=f"C{i % 10}")
        ax.set_xticks(np.arange(len(cats)), [f"{c} {edit_type_name(int(c))}" if int(c) in EDIT_TYPES else c
                                             for c in cats], rotation=20, ha="right", fontsize=8)
        ax.set_ylabel(metric_label(metric, info.get(metric, {})))
        ax.grid(axis="y", alpha=0.3)
    if not any(np.isfinite(b.get_height()) for ax in axes for b in ax.patches):
        return None  # every mean undefined or infinite: an empty chart would only mislead
    axes[0].legend(fontsize=7, ncols=min(4, len(editors)))
    axes[0].set_title("per edit category" + (" (toy models)" if board.get("toy") else ""), fontsize=10)
    _save_svg(fig, path)
    caption = "Mean per edit category (paper scales)."
    if nonfinite:
        caption += f" Infinite means (e.g. PSNR of an unchanged background) have no bar: {', '.join(sorted(nonfinite))}."
    return caption


# ---------------------------------------------------------------------------------------------
# HTML pieces


CSS = """
:root { --fg:#1d2330; --muted:#667085; --line:#d9dee7; --bg:#f6f7fb; --accent:#2f5bd3; }
* { box-sizing: border-box; }
html { scroll-padding-top: 48px; }  /* anchors and scrolled-to rows clear the sticky nav */
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
       margin: 0; background: var(--bg); }
header { background: #1d2330; color: #fff; padding: 14px 24px; }
header h1 { margin: 0 0 4px; font-size: 20px; }
header .meta { color: #c6cbd6; font-size: 12px; }
nav { padding: 6px 24px; background: #fff; border-bottom: 1px solid var(--line); position: sticky; top: 0; z-index: 5; }
nav a { margin-right: 16px; color: var(--accent); text-decoration: none; }
main { padding: 0 24px 40px; }
section { margin-top: 22px; }
h2 { font-size: 17px; margin: 0 0 8px; }
h3 { font-size: 14px; margin: 14px 0 6px; }
.toy-banner { background: #fff3bf; border: 2px solid #f0b400; color: #5c4400; padding: 10px 24px;
              font-weight: 600; }
.note { color: var(--muted); font-size: 12px; margin: 4px 0; }
.warn { background: #fff4e5; border-left: 4px solid #f59f00; padding: 6px 10px; margin: 8px 0; }
table { border-collapse: collapse; background: #fff; border: 1px solid var(--line); }
th, td { padding: 5px 9px; border-bottom: 1px solid var(--line); text-align: right; vertical-align: top; }
th { background: #eef1f7; font-weight: 600; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
table.sortable th { cursor: pointer; user-select: none; }
table.sortable th[aria-sort=ascending]::after { content: " ▲"; font-size: 10px; }
table.sortable th[aria-sort=descending]::after { content: " ▼"; font-size: 10px; }
td .se, td .n { color: var(--muted); font-size: 11px; }
td.best { font-weight: 700; background: #eaf7ee; }
.badge { display: inline-block; font-size: 11px; padding: 0 6px; border-radius: 8px; margin-left: 4px; }
.badge.toy { background: #fff3bf; color: #5c4400; }
.badge.err, .status.failed { background: #ffe3e3; color: #a61e1e; }
.status.skipped { background: #e7f0ff; color: #1c4fa0; }
.status.missing { background: #eceef2; color: #555; }
.status { display: block; padding: 40px 6px; width: 160px; min-height: 160px; text-align: center;
          font-weight: 600; border-radius: 4px; }
.status .why { display: block; font-weight: 400; font-size: 11px; margin-top: 6px; word-break: break-word; }
.plots img { max-width: 100%; background: #fff; border: 1px solid var(--line); margin: 4px 8px 4px 0; }
.filters { margin: 8px 0; display: flex; gap: 16px; align-items: center; flex-wrap: wrap; }
#gallery td { text-align: left; }
#gallery img { width: 160px; height: 160px; object-fit: contain; display: block; background: #eee;
               transition: transform .12s; transform-origin: top left; position: relative; }
#gallery img:hover { transform: scale(1.6); z-index: 3; box-shadow: 0 4px 16px rgba(0,0,0,.35); }
#gallery .m { font-size: 11px; color: var(--muted); max-width: 160px; }
#gallery .m b { color: var(--fg); font-weight: 600; }
#gallery .prompt { max-width: 240px; font-size: 12px; }
#gallery .prompt mark { background: #ffe8a3; }
#gallery .sid { font-family: ui-monospace, monospace; font-size: 12px; }
.cat { display: inline-block; background: #eef1f7; border-radius: 8px; padding: 0 6px; font-size: 11px; }
tr.regression td { background: #fff0f0; }
tr.changed td { background: #f0fbf3; }
details pre { background: #fff; border: 1px solid var(--line); padding: 8px; overflow-x: auto; font-size: 12px; }
"""

JS = """
(function () {
  function key(td) {
    if (!td) return null;
    var v = td.getAttribute('data-v');
    if (v === null) return td.textContent.trim().toLowerCase();
    if (v === '') return null;
    return parseFloat(v);
  }
  function sortTable(table, col, th) {
    var asc = th.getAttribute('aria-sort') !== 'ascending';
    table.querySelectorAll('thead th').forEach(function (x) { x.removeAttribute('aria-sort'); });
    th.setAttribute('aria-sort', asc ? 'ascending' : 'descending');
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a.cells[col]), y = key(b.cells[col]);
      if (x === null && y === null) return 0;
      if (x === null) return 1;   /* undefined values last in both directions */
      if (y === null) return -1;
      var c = (typeof x === 'number' && typeof y === 'number') ? (x === y ? 0 : (x < y ? -1 : 1))
                                                               : String(x).localeCompare(String(y));
      return asc ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  document.querySelectorAll('table.sortable').forEach(function (table) {
    table.querySelectorAll('thead th').forEach(function (th, i) {
      th.tabIndex = 0;
      th.title = (th.title ? th.title + ' - ' : '') + 'click to sort';
      th.addEventListener('click', function () { sortTable(table, i, th); });
      th.addEventListener('keydown', function (e) { if (e.key === 'Enter') sortTable(table, i, th); });
    });
  });
  var gallery = document.getElementById('gallery');
  if (!gallery) return;
  var fc = document.getElementById('filter-category'), fe = document.getElementById('filter-editor'),
      fs = document.getElementById('filter-status'), count = document.getElementById('gallery-count');
  function apply() {
    var cat = fc.value, ed = fe.value, st = fs.value, shown = 0, rows = gallery.tBodies[0].rows;
    for (var i = 0; i < rows.length; i++) {
      var r = rows[i];
      var ok = (cat === 'all' || r.getAttribute('data-category') === cat) &&
               (st === 'all' || (' ' + r.getAttribute('data-status') + ' ').indexOf(' ' + st + ' ') >= 0);
      r.style.display = ok ? '' : 'none';
      if (ok) shown++;
    }
    gallery.querySelectorAll('[data-editor]').forEach(function (c) {
      c.style.display = (ed === 'all' || c.getAttribute('data-editor') === ed) ? '' : 'none';
    });
    count.textContent = shown + ' of ' + rows.length + ' samples shown';
  }
  [fc, fe, fs].forEach(function (s) { s.addEventListener('change', apply); });
  apply();
})();
"""


def page(title: str, body: str, board_like: Sequence[dict]) -> str:
    banner = ""
    toy = [b for b in board_like if b.get("toy")]
    if toy:
        note = toy[0].get("toy_note") or "numbers come from toy (random-weight) models"
        banner = (f'<div class="toy-banner" id="toy-banner">TOY MODELS — {h(note)}. '
                  "Do not quote these numbers as editing quality.</div>")
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            # belt and braces behind the escaping: nothing loads from the network ('file:' because some
            # browsers do not count sibling files as 'self' on file:// pages)
            f'<meta http-equiv="Content-Security-Policy" content="default-src \'self\'; img-src \'self\' file: data:; '
            f'style-src \'unsafe-inline\'; script-src \'unsafe-inline\'">\n'
            f"<title>{h(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{banner}\n{body}\n"
            f"<script>{JS}</script>\n</body>\n</html>\n")


def metric_cell(m: Optional[dict], scale: float, best: Optional[float]) -> str:
    if m is None:
        return '<td data-v=""></td>'
    mean = decode_float(m.get("mean"))
    v = scaled(m.get("mean"), scale)
    se = scaled(m.get("stderr"), scale)
    cls = ' class="best"' if best is not None and mean == best else ""
    se_txt = f' <span class="se">±{fmt_num(se)}</span>' if math.isfinite(se) and math.isfinite(v) and m.get("n", 0) > 1 else ""
    return f'<td data-v="{sort_key(v)}"{cls}>{fmt_num(v)}{se_txt} <span class="n">n={int(m.get("n", 0))}</span></td>'


def latency_cells(lat: dict) -> str:
    p50, p95 = fmt_latency(lat or {})
    n = (lat or {}).get("n", 0)
    return (f'<td data-v="{sort_key(lat.get("p50") if lat else None)}">{h(p50)}</td>'
            f'<td data-v="{sort_key(lat.get("p95") if lat else None)}">{h(p95)} <span class="n">n={n}</span></td>')


def leaderboard_table(board: dict, category: Optional[str] = None, table_id: str = "",
                      skipped: Optional[dict] = None) -> str:
    """``skipped``: (editor, category) -> count from the records; the leaderboard's category blocks
    don't carry skips, and a blank there would read as zero."""
    info = board.get("metric_info", {})
    names = metric_names(board)
    blocks = {}
    for name, ed in board["editors"].items():
        block = ed if category is None else ed.get("per_category", {}).get(category)
        if block is not None:
            blocks[name] = block
    best = best_values({k: b.get("metrics", {}) for k, b in blocks.items()}, names, info)
    head = ['<th title="editor">editor</th>',
            '<th title="samples ok / failed / skipped (failed and skipped are excluded from the means)">'
            "ok/fail/skip</th>"]
    head += [f'<th title="{h(n)}: mean ± stderr over n defined values">{h(metric_label(n, info.get(n, {})))}</th>'
             for n in names]
    head += ['<th title="median seconds per image">p50</th>', '<th title="95th percentile">p95</th>']
    rows = []
    for name, block in blocks.items():
        ed = board["editors"][name]
        label = h(name)
        if ed.get("toy"):
            label += '<span class="badge toy">toy</span>'
        if ed.get("load_error"):
            label += f'<span class="badge err" title="{h(ed["load_error"])}">load error</span>'
        n_ok, n_failed = block.get("n_ok", 0), block.get("n_failed", 0)
        n_skip = block.get("n_skipped", (skipped or {}).get((name, category), 0 if skipped is not None else "–"))
        counts = f"{n_ok}/{n_failed}/{n_skip}"
        cells = [f'<td data-v="{h(name)}" class="editor">{label}</td>', f'<td data-v="{n_ok}">{counts}</td>']
        for n in names:
            scale = info.get(n, {}).get("scale", 1.0)
            cells.append(metric_cell(block.get("metrics", {}).get(n), scale, best.get(n)))
        cells.append(latency_cells(block.get("latency", {})))
        rows.append(f'<tr data-editor-row="{h(name)}">{"".join(cells)}</tr>')
    tid = f' id="{h(table_id)}"' if table_id else ""
    return (f'<table class="sortable leaderboard"{tid}><thead><tr>{"".join(head)}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


def bracket_marks(prompt: str) -> str:
    """Escape, then show PIE's [edited words] highlighted (escaping leaves the brackets alone)."""
    return re.sub(r"\[([^\]]*)\]", r"<mark>\1</mark>", h(prompt))


def record_metrics_html(rec: SampleRecord, names: Sequence[str], info: dict) -> str:
    parts = []
    for n in names:
        if n in rec.metrics:
            v = scaled(rec.metrics[n], info.get(n, {}).get("scale", 1.0))
            label = SHORT.get(n, n)
            parts.append(f"{h(label)} <b>{fmt_num(v)}</b>")
    if rec.latency_s is not None:
        parts.append(f"{h(fmt_latency({'p50': rec.latency_s})[0])}{' (warm-up)' if rec.warmup else ''}")
    return '<div class="m">' + " · ".join(parts) + "</div>"


@dataclass
class GalleryRow:
    sample_id: str
    edit_type: int
    sample: object = None  # pie_bench.core.sample.Sample when the dataset could be reloaded
    records: dict = field(default_factory=dict)  # editor -> SampleRecord


def run_records(folder: RunFolder, board: dict) -> list[SampleRecord]:
    """The records the leaderboard was built from (same editor config and dataset)."""
    sha = board["dataset"].get("annotations_sha256")
    hashes = {n: e.get("config_hash") for n, e in board["editors"].items()}
    return [r for r in folder.records() if hashes.get(r.editor) == r.config_hash and r.dataset_sha256 == sha]


def img_tag(rel: str, alt: str, lazy: bool) -> str:
    return f'<img src="{h(rel)}" alt="{h(alt)}"{" loading=lazy" if lazy else ""}>'


def gallery_html(rows: list[GalleryRow], editors: list[str], board: dict, run_dir: Path, out_dir: Path,
                 has_source: bool, has_target: bool) -> str:
    info = board.get("metric_info", {})
    names = metric_names(board)
    img_dir = out_dir / "images"
    cache = ThumbCache(out_dir)
    head = ['<th>sample</th>']
    if has_source:
        head += ['<th>source</th>', '<th>edit mask</th>']
    if has_target:
        head.append('<th>target</th>')
    head += [f'<th data-editor="{h(e)}">{h(e)}</th>' for e in editors]
    body = []
    for i, row in enumerate(rows):
        lazy = i >= LAZY_AFTER
        s = row.sample
        fname = safe_name(row.sample_id)
        cat = f"{row.edit_type} {edit_type_name(row.edit_type)}" if row.edit_type in EDIT_TYPES else str(row.edit_type)
        desc = [f'<div class="sid">{h(row.sample_id)}</div><span class="cat">{h(cat)}</span>']
        if s is not None:
            desc.append(f'<div class="prompt">source: {bracket_marks(s.source_prompt_raw)}</div>'
                        f'<div class="prompt">target: {bracket_marks(s.target_prompt_raw)}</div>')
            if getattr(s, "instruction", None):
                desc.append(f'<div class="prompt">instruction: {h(s.instruction)}</div>')
        cells = [f'<td>{"".join(desc)}</td>']
        if has_source:
            src_cells = ['<td><span class="status missing">no source</span></td>'] * 2
            if s is not None:
                try:
                    src, ovl = img_dir / "_source" / f"{fname}.jpg", img_dir / "_mask" / f"{fname}.jpg"
                    key = f"{board['dataset'].get('annotations_sha256')}|{row.sample_id}"
                    cache.array(lambda: s.image, src, key)
                    cache.array(lambda: mask_overlay(s.image, s.mask), ovl, key)
                    src_cells = [f"<td>{img_tag(f'images/_source/{fname}.jpg', 'source ' + row.sample_id, lazy)}</td>",
                                 f"<td>{img_tag(f'images/_mask/{fname}.jpg', 'mask ' + row.sample_id, lazy)}"
                                 f'<div class="m">edit region {100 * float(np.mean(s.mask)):.0f}%</div></td>']
                except Exception as exc:  # one unreadable image must not sink the report
                    src_cells = [f'<td><span class="status failed">source unreadable'
                                 f'<span class="why">{h(one_line(exc))}</span></span></td>', "<td></td>"]
            cells += src_cells
        if has_target:
            tgt = '<td></td>'
            if s is not None and s.has_target_image:
                try:
                    dest = img_dir / "_target" / f"{fname}.jpg"
                    cache.array(lambda: s.target_image, dest,
                                f"{board['dataset'].get('annotations_sha256')}|{row.sample_id}")
                    tgt = f"<td>{img_tag(f'images/_target/{fname}.jpg', 'target ' + row.sample_id, lazy)}</td>"
                except Exception as exc:
                    tgt = f'<td><span class="status failed">target unreadable<span class="why">{h(one_line(exc))}</span></span></td>'
            cells.append(tgt)
        statuses = set()
        for ed in editors:
            rec = row.records.get(ed)
            attr = f'data-editor="{h(ed)}"'
            if rec is None:
                statuses.add("missing")
                load_error = board["editors"].get(ed, {}).get("load_error")
                reason = "could not load (see Failures)" if load_error else "no record for this sample"
                cells.append(f'<td {attr} data-status="missing"><span class="status missing" title="{h(load_error or "")}">'
                             f'not run<span class="why">{h(reason)}</span></span></td>')
                continue
            statuses.add(rec.status)
            if rec.status != "ok":
                cells.append(f'<td {attr} data-status="{h(rec.status)}"><span class="status {h(rec.status)}">'
                             f'{h(rec.status)}<span class="why">{h(rec.error or "")}</span></span></td>')
                continue
            src = run_dir / rec.image if rec.image else None
            dest = img_dir / safe_name(ed) / f"{fname}.jpg"
            try:
                if src is None or not src.is_file():
                    raise ResultsError(f"{rec.image or '(no image path)'} is missing from the run folder")
                cache.file(src, dest)
                pic = img_tag(f"images/{safe_name(ed)}/{fname}.jpg", f"{ed} {row.sample_id}", lazy)
            except Exception as exc:
                pic = f'<span class="status missing">image missing<span class="why">{h(one_line(exc))}</span></span>'
            cells.append(f'<td {attr} data-status="ok">{pic}{record_metrics_html(rec, names, info)}</td>')
        body.append(f'<tr class="gallery-row" data-category="{row.edit_type}" data-sample="{h(row.sample_id)}" '
                    f'data-status="{h(" ".join(sorted(statuses)))}">{"".join(cells)}</tr>')
    cats = sorted({r.edit_type for r in rows})
    cat_opts = "".join(f'<option value="{c}">{c} {h(edit_type_name(c)) if c in EDIT_TYPES else ""}</option>'
                       for c in cats)
    ed_opts = "".join(f'<option value="{h(e)}">{h(e)}</option>' for e in editors)
    filters = ('<div class="filters">'
               f'<label>category <select id="filter-category"><option value="all">all</option>{cat_opts}</select></label>'
               f'<label>editor <select id="filter-editor"><option value="all">all</option>{ed_opts}</select></label>'
               '<label>status <select id="filter-status"><option value="all">all</option>'
               '<option value="failed">with failures</option><option value="skipped">with skips</option>'
               '<option value="missing">not run</option></select></label>'
               f'<span id="gallery-count" class="note">{len(rows)} samples</span></div>')
    if rows:
        cache.save()
    return (filters + f'<table id="gallery"><thead><tr>{"".join(head)}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>')


def failures_html(board: dict) -> str:
    items = []
    for name, ed in board["editors"].items():
        if ed.get("load_error"):
            items.append(f"<li><b>{h(name)}</b>: could not load: {h(ed['load_error'])}</li>")
        for f in ed.get("failures", []):
            items.append(f"<li><b>{h(name)}</b> failed on <code>{h(f.get('sample_id'))}</code>: {h(f.get('error'))}</li>")
        for s in ed.get("skipped", []):
            items.append(f"<li><b>{h(name)}</b> skipped <code>{h(s.get('sample_id'))}</code>: {h(s.get('reason'))}</li>")
        shown = len(ed.get("failures", [])) + len(ed.get("skipped", []))
        total = ed.get("n_failed", 0) + ed.get("n_skipped", 0)
        if total > shown:
            items.append(f"<li><b>{h(name)}</b>: {total - shown} more not listed (see samples*.jsonl)</li>")
    if not items:
        return '<p class="note">No failed or skipped samples.</p>'
    return ('<p class="note">Failed and skipped samples are excluded from the means (never scored 0); '
            f'the n in each cell counts what was averaged.</p><ul id="failure-list">{"".join(items)}</ul>')


def details_html(board: dict) -> str:
    ds = board.get("dataset", {})
    git = board.get("git", {})
    dev = board.get("device", {})
    rows = [("run", board.get("run")), ("created", board.get("created_at")), ("command", board.get("command")),
            ("git", f"{git.get('sha', '')}{' (dirty)' if git.get('dirty') else ''}"),
            ("device", ", ".join(f"{k}={v}" for k, v in dev.items()) if isinstance(dev, dict) else dev),
            ("processes", board.get("processes")),
            ("dataset", f"{ds.get('name')} · {ds.get('source')} · n={ds.get('n')} · sha {str(ds.get('annotations_sha256', ''))[:16]}"),
            ("metrics backbone", board.get("metrics_backbone"))]
    meta = "".join(f"<tr><th>{h(k)}</th><td style='text-align:left'>{h(v)}</td></tr>" for k, v in rows)
    eds = []
    for name, ed in board["editors"].items():
        cfg = json.dumps(ed.get("config", {}), indent=1, sort_keys=True)
        eds.append(f"<details><summary><b>{h(name)}</b> · config {h(ed.get('config_hash'))} · backbone "
                   f"{h(ed.get('backbone'))} · {h(ed.get('paper', ''))}</summary><pre>{h(cfg)}</pre></details>")
    pk = board.get("packages", {})
    pkgs = h(", ".join(f"{k} {v}" for k, v in pk.items())) if isinstance(pk, dict) else h(pk)
    return f"<table>{meta}</table><h3>editors</h3>{''.join(eds)}<p class='note'>packages: {pkgs}</p>"


# ---------------------------------------------------------------------------------------------
# entry points


def resolve_leaderboard(path: Path) -> Path:
    path = Path(path)
    return path / LEADERBOARD if path.is_dir() else path


def write_report(run_dir, out_dir=None) -> Path:
    """Write the run's report folder (default ``<run_dir>/report``) and return its ``index.html``."""
    run_dir = Path(run_dir)
    if not (run_dir / LEADERBOARD).is_file():
        raise ResultsError(f"{run_dir}: no {LEADERBOARD} here; pass a run folder written by `cli.py bench` "
                           "(results/runs/<run>)")
    board = load_leaderboard(run_dir / LEADERBOARD)
    out_dir = Path(out_dir) if out_dir is not None else run_dir / "report"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ResultsError(f"{out_dir}: cannot create the report folder ({exc.strerror}); pass a writable --out") from None
    folder = RunFolder(run_dir)
    manifest = folder.read_manifest() or {}
    records = run_records(folder, board)
    editors = list(board["editors"])

    samples, source_note = load_source_samples(manifest.get("dataset") or board.get("dataset", {}))
    by_id: dict[str, GalleryRow] = {}
    for rec in records:
        row = by_id.setdefault(rec.sample_id, GalleryRow(rec.sample_id, rec.edit_type))
        row.records[rec.editor] = rec
    if samples is not None:
        order = {sid: i for i, sid in enumerate(samples)}
        for row in by_id.values():
            row.sample = samples.get(row.sample_id)
        rows = sorted(by_id.values(), key=lambda r: (order.get(r.sample_id, len(order)), r.sample_id))
    else:
        rows = sorted(by_id.values(), key=lambda r: (r.edit_type, r.sample_id))
    has_source = samples is not None
    has_target = has_source and any(r.sample is not None and r.sample.has_target_image for r in rows)

    ds = board.get("dataset", {})
    cats = sorted({c for e in board["editors"].values() for c in e.get("per_category", {})}, key=int)
    parts = [f'<header><h1>PIE-Bench report — {h(board.get("run"))}</h1><div class="meta">'
             f'dataset {h(ds.get("name"))} ({h(ds.get("n"))} samples) · {len(editors)} editor(s) · '
             f'metrics backbone {h(board.get("metrics_backbone"))} · {h(board.get("created_at"))}</div></header>',
             '<nav><a href="#leaderboard">Leaderboard</a><a href="#per-category">Per category</a>'
             '<a href="#plots">Plots</a><a href="#gallery-section">Gallery</a><a href="#failures">Failures</a>'
             '<a href="#details">Run details</a></nav><main>']
    parts.append('<section id="leaderboard"><h2>Leaderboard (all categories)</h2>'
                 '<p class="note">Paper scales; mean ± stderr with n = samples averaged (failed, skipped and '
                 'undefined values excluded). Best per column in bold. Latency: seconds per image, warm-up '
                 'excluded. Click a header to sort.</p>' + leaderboard_table(board, None, "overall") + "</section>")
    skips: dict = {}
    for rec in records:
        if rec.status == "skipped":
            skips[(rec.editor, str(rec.edit_type))] = skips.get((rec.editor, str(rec.edit_type)), 0) + 1
    cat_parts = []
    for c in cats:
        name = edit_type_name(int(c)) if int(c) in EDIT_TYPES else c
        cat_parts.append(f'<h3>{h(c)} · {h(name)}</h3>' + leaderboard_table(board, c, f"category-{c}", skips))
    parts.append('<section id="per-category"><h2>Per edit category</h2>' + "".join(cat_parts) + "</section>")
    plots = []
    cap = pareto_plot([("run", board)], out_dir / "pareto.svg")
    if cap:
        plots.append(f'<figure><img id="pareto-plot" src="pareto.svg" alt="quality vs latency"><figcaption class="note">{h(cap)}</figcaption></figure>')
    cap = category_plot(board, out_dir / "categories.svg")
    if cap:
        plots.append(f'<figure><img id="category-plot" src="categories.svg" alt="per-category means"><figcaption class="note">{h(cap)}</figcaption></figure>')
    parts.append('<section id="plots" class="plots"><h2>Plots</h2>' + ("".join(plots) or '<p class="note">No metric with values to plot.</p>') + "</section>")
    note = f'<p class="warn" id="source-note">{h(source_note)}</p>' if source_note else ""
    parts.append('<section id="gallery-section"><h2>Gallery</h2><p class="note">One row per sample; the mask '
                 'column tints the region to edit red. Thumbnails are JPEG; the metrics were computed on the '
                 f'lossless PNGs in the run folder.</p>{note}'
                 + gallery_html(rows, editors, board, run_dir, out_dir, has_source, has_target) + "</section>")
    parts.append('<section id="failures"><h2>Failed and skipped samples</h2>' + failures_html(board) + "</section>")
    parts.append('<section id="details"><h2>Run details</h2>' + details_html(board) + "</section></main>")
    index = out_dir / "index.html"
    write_file(index, page(f"PIE-Bench report — {board.get('run')}", "\n".join(parts), [board]).encode())
    return index


def write_compare_report(a_json, b_json, out_dir, z: float = 2.0) -> Path:
    """``compare A B --html OUT``: deltas with flagged changes, both leaderboards and an A→B plot."""
    from pie_bench.report.compare import compare_leaderboards

    a_path, b_path = resolve_leaderboard(Path(a_json)), resolve_leaderboard(Path(b_json))
    a, b = load_leaderboard(a_path), load_leaderboard(b_path)
    result = compare_leaderboards(a, b, z=z)
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ResultsError(f"{out_dir}: cannot create the report folder ({exc.strerror}); pass a writable --html") from None
    info = {**a.get("metric_info", {}), **b.get("metric_info", {})}
    head = "".join(f"<th>{c}</th>" for c in ("editor", "metric", "A", "B", "Δ", "2·se", "n A/B", "flag"))
    rows = []
    for r in result["rows"]:
        mi = info.get(r["metric"], {})
        scale = mi.get("scale", 1.0) if r["metric"] in info else 1.0
        label = metric_label(r["metric"], mi) if r["metric"] in info else r["metric"]
        va, vb, d, se = (scaled(r[k], scale) for k in ("a", "b", "delta", "se"))
        cls = "regression" if r["regression"] else ("changed" if r["flagged"] else "")
        flag = "REGRESSION" if r["regression"] else ("changed" if r["flagged"] else "")
        digits = 0 if r["metric"] == "n_failed" else 3
        rows.append(f'<tr class="{cls}"><td data-v="{h(r["editor"])}">{h(r["editor"])}</td>'
                    f'<td data-v="{h(label)}">{h(label)}</td>'
                    f'<td data-v="{sort_key(va)}">{fmt_num(va, digits)}</td><td data-v="{sort_key(vb)}">{fmt_num(vb, digits)}</td>'
                    f'<td data-v="{sort_key(d)}">{"+" if math.isfinite(d) and d > 0 else ""}{fmt_num(d, digits)}</td>'
                    f'<td data-v="{sort_key(2 * se)}">{fmt_num(2 * se, digits)}</td>'
                    f'<td>{h(r.get("n_a"))}/{h(r.get("n_b"))}</td><td data-v="{h(flag)}">{flag}</td></tr>')
    notes = "".join(f'<p class="warn">{h(n)}</p>' for n in result["notes"])
    plots = ""
    cap = pareto_plot([("A", a), ("B", b)], out_dir / "pareto.svg")
    if cap:
        plots = (f'<figure><img id="pareto-plot" src="pareto.svg" alt="A to B quality vs latency">'
                 f'<figcaption class="note">{h(cap)}</figcaption></figure>')

    def side(tag: str, board: dict, path: Path) -> str:
        git = board.get("git", {})
        return (f'<h3>{tag}: {h(path)}</h3><p class="note">run {h(board.get("run"))} · git {h(str(git.get("sha", ""))[:12])}'
                f'{" (dirty)" if git.get("dirty") else ""} · dataset {h(board["dataset"].get("name"))} · '
                f'{h(board.get("created_at"))}</p>' + leaderboard_table(board, None, f"leaderboard-{tag.lower()}"))

    body = (f'<header><h1>PIE-Bench comparison — {h(a_path.parent.name)} → {h(b_path.parent.name)}</h1>'
            f'<div class="meta">A = baseline {h(a_path)} · B = new {h(b_path)} · flag: |Δ| &gt; {z:g} × combined '
            f'stderr</div></header><main><section id="summary"><h2>Summary</h2>'
            f'<p id="compare-summary"><b>{result["n_flagged"]}</b> flagged change(s), '
            f'<b>{result["n_regressions"]}</b> regression(s).</p>{notes}</section>'
            f'<section id="deltas"><h2>Deltas (paper scales)</h2><table class="sortable" id="compare">'
            f'<thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></section>'
            f'<section id="plots" class="plots"><h2>Plot</h2>{plots or "<p class=note>No metric to plot.</p>"}</section>'
            f'<section id="leaderboards"><h2>Leaderboards</h2>{side("A", a, a_path)}{side("B", b, b_path)}</section></main>')
    index = out_dir / "index.html"
    write_file(index, page("PIE-Bench comparison", body, [a, b]).encode())
    return index
