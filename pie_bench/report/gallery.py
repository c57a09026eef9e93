"""The gallery: one row per sample with its source, edit mask, target and each editor's output and
metrics, the thumbnails those need, and the run's samples reloaded from its dataset to show them."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from pie_bench.core.errors import HarnessError, ResultsError
from pie_bench.core.formatting import fmt_num, fmt_seconds, scaled
from pie_bench.core.paths import safe_name
from pie_bench.core.sample import EDIT_TYPES, edit_type_name
from pie_bench.report.model import BoardView, DatasetView, Metric
from pie_bench.report.thumbnails import ThumbCache, mask_overlay
from pie_bench.run.results import SampleRecord
from pie_bench.run.run_folder import RunFolder
from pie_bench.run.spawn import usable_cores

LAZY_AFTER = 24  # rows beyond this load their images lazily (a full 700-sample run is ~6000 images)


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, HarnessError) else f"{type(exc).__name__}: {text}"


def load_source_samples(dataset: DatasetView) -> tuple[Optional[dict], str]:
    """The run's samples by id, reloaded from the data spec recorded in run.json, or (None, why not).

    The report must still be written when the data is elsewhere (a run folder copied off the GPU
    box): then it shows the editors' outputs only."""
    from pie_bench.datasets.pie import load_dataset
    from pie_bench.datasets.registry import DATASETS

    name, source = dataset.name or "", str(dataset.source or "")
    categories = dataset.categories
    attempts: list[tuple[str, Optional[list]]] = []
    if name in DATASETS.entries():  # a named set (smoke, shapes, a plugin's)
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
        if ds.annotations_sha256 == dataset.annotations_sha256:
            return {s.id: s for s in ds.samples}, ""
        why = (f"{spec} now has other annotations (sha {ds.annotations_sha256[:12]}, the run used "
               f"{str(dataset.annotations_sha256 or '')[:12]})")
    return None, f"source images unavailable: {why}; only the editors' outputs are shown"


def run_records(folder: RunFolder, view: BoardView) -> list[SampleRecord]:
    """The records the leaderboard's per-sample means were built from (same editor config and dataset, the
    first seed of a ``--seeds`` run)."""
    sha = view.dataset.annotations_sha256
    hashes = {n: e.config_hash for n, e in view.editors.items()}
    return [r for r in folder.records()
            if hashes.get(r.editor) == r.config_hash and r.dataset_sha256 == sha and r.seed_index == 0]


@dataclass
class GalleryRow:
    sample_id: str
    edit_type: int
    sample: object = None  # pie_bench.core.sample.Sample when the dataset could be reloaded
    records: dict = field(default_factory=dict)  # editor -> SampleRecord


def gallery_rows(records: Sequence[SampleRecord], samples: Optional[dict]) -> list[GalleryRow]:
    """Records grouped by sample, in the dataset's order where it could be reloaded."""
    by_id: dict[str, GalleryRow] = {}
    for rec in records:
        row = by_id.setdefault(rec.sample_id, GalleryRow(rec.sample_id, rec.edit_type))
        row.records[rec.editor] = rec
    if samples is None:
        return sorted(by_id.values(), key=lambda r: (r.edit_type, r.sample_id))
    order = {sid: i for i, sid in enumerate(samples)}
    for row in by_id.values():
        row.sample = samples.get(row.sample_id)
    return sorted(by_id.values(), key=lambda r: (order.get(r.sample_id, len(order)), r.sample_id))


# ---------------------------------------------------------------------------------------------
# what the template draws


@dataclass
class Img:
    src: str
    alt: str
    lazy: bool


@dataclass
class Status:
    """A coloured box in place of an image: ``cls`` failed | skipped | missing."""
    cls: str
    text: str
    why: Optional[str] = None  # None: no reason line
    title: Optional[str] = None  # None: no tooltip


@dataclass
class Cell:
    img: Optional[Img] = None
    status: Optional[Status] = None
    notes: Optional[list[tuple[str, Optional[str]]]] = None  # the grey line under it: (text, bold value)
    editor: Optional[str] = None  # an editor's column (the editor filter hides it)
    data_status: Optional[str] = None


@dataclass
class PromptPart:
    text: str
    marked: bool  # one of PIE's [edited words]


@dataclass
class RowView:
    sample_id: str
    edit_type: int
    category: str
    prompts: list[tuple[str, list[PromptPart]]]  # (source | target | instruction, text)
    cells: list[Cell]
    statuses: str


@dataclass
class Gallery:
    head: list[tuple[str, Optional[str]]]  # (column title, editor)
    rows: list[RowView]
    categories: list[tuple[int, str]]  # (id, name) for the filter
    editors: list[str]


def bracket_parts(prompt: str) -> list[PromptPart]:
    """PIE marks the words an edit changes with brackets: ``a [red] car``."""
    parts, pos = [], 0
    for m in re.finditer(r"\[([^\]]*)\]", prompt):
        parts += [PromptPart(prompt[pos:m.start()], False), PromptPart(m.group(1), True)]
        pos = m.end()
    return [p for p in parts + [PromptPart(prompt[pos:], False)] if p.text or p.marked]


def record_notes(rec: SampleRecord, metrics: Sequence[Metric]) -> list[tuple[str, Optional[str]]]:
    notes: list[tuple[str, Optional[str]]] = [
        (m.short, fmt_num(scaled(rec.metrics[m.name], m.scale))) for m in metrics if m.name in rec.metrics]
    if rec.latency_s is not None:
        notes.append((fmt_seconds(rec.latency_s) + (" (warm-up)" if rec.warmup else ""), None))
    return notes


def _editor_cell(ed: str, rec: Optional[SampleRecord], view: BoardView, run_dir: Path, img_dir: Path,
                 cache: ThumbCache, fname: str, sample_id: str, lazy: bool) -> Cell:
    if rec is None:
        load_error = view.editors[ed].load_error if ed in view.editors else None
        reason = "could not load (see Failures)" if load_error else "no record for this sample"
        return Cell(status=Status("missing", "not run", reason, load_error or ""), editor=ed, data_status="missing")
    if rec.status != "ok":
        return Cell(status=Status(rec.status, rec.status, rec.error or ""), editor=ed, data_status=rec.status)
    src = run_dir / rec.image if rec.image else None
    dest = img_dir / safe_name(ed) / f"{fname}.jpg"
    cell = Cell(notes=record_notes(rec, list(view.metrics.values())), editor=ed, data_status="ok")
    try:
        if src is None or not src.is_file():
            raise ResultsError(f"{rec.image or '(no image path)'} is missing from the run folder")
        cache.file(src, dest)
        cell.img = Img(f"images/{safe_name(ed)}/{fname}.jpg", f"{ed} {sample_id}", lazy)
    except Exception as exc:
        cell.status = Status("missing", "image missing", one_line(exc))
    return cell


def build_gallery(rows: list[GalleryRow], editors: list[str], view: BoardView, run_dir: Path, out_dir: Path,
                  has_source: bool, has_target: bool) -> Gallery:
    """The gallery's rows, writing (or reusing) their thumbnails under ``out_dir/images``."""
    img_dir = out_dir / "images"
    cache = ThumbCache(out_dir)
    key_base = view.dataset.annotations_sha256
    head: list[tuple[str, Optional[str]]] = [("sample", None)]
    if has_source:
        head += [("source", None), ("edit mask", None)]
    if has_target:
        head.append(("target", None))
    head += [(e, e) for e in editors]
    # the edits' thumbnails first, on every core; the loop below then finds them made (or reports the failures)
    cache.warm([(run_dir / rec.image, img_dir / safe_name(ed) / f"{safe_name(row.sample_id)}.jpg")
                for row in rows for ed, rec in row.records.items()
                if ed in editors and rec.status == "ok" and rec.image], workers=usable_cores())
    out = []
    for i, row in enumerate(rows):
        lazy = i >= LAZY_AFTER
        s = row.sample
        fname = safe_name(row.sample_id)
        key = f"{key_base}|{row.sample_id}"
        prompts = []
        if s is not None:
            prompts = [("source", bracket_parts(s.source_prompt_raw)), ("target", bracket_parts(s.target_prompt_raw))]
            if getattr(s, "instruction", None):
                prompts.append(("instruction", [PromptPart(s.instruction, False)]))
        cells = []
        if has_source:
            src_cells = [Cell(status=Status("missing", "no source")), Cell(status=Status("missing", "no source"))]
            if s is not None:
                try:
                    src, ovl = img_dir / "_source" / f"{fname}.jpg", img_dir / "_mask" / f"{fname}.jpg"
                    cache.array(lambda: s.image, src, key)
                    cache.array(lambda: mask_overlay(s.image, s.mask), ovl, key)
                    src_cells = [Cell(Img(f"images/_source/{fname}.jpg", "source " + row.sample_id, lazy)),
                                 Cell(Img(f"images/_mask/{fname}.jpg", "mask " + row.sample_id, lazy),
                                      notes=[(f"edit region {100 * float(np.mean(s.mask)):.0f}%", None)])]
                except Exception as exc:  # one unreadable image must not sink the report
                    src_cells = [Cell(status=Status("failed", "source unreadable", one_line(exc))), Cell()]
            cells += src_cells
        if has_target:
            tgt = Cell()
            if s is not None and s.has_target_image:
                try:
                    dest = img_dir / "_target" / f"{fname}.jpg"
                    cache.array(lambda: s.target_image, dest, key)
                    tgt = Cell(Img(f"images/_target/{fname}.jpg", "target " + row.sample_id, lazy))
                except Exception as exc:
                    tgt = Cell(status=Status("failed", "target unreadable", one_line(exc)))
            cells.append(tgt)
        statuses = set()
        for ed in editors:
            cell = _editor_cell(ed, row.records.get(ed), view, run_dir, img_dir, cache, fname, row.sample_id, lazy)
            statuses.add(cell.data_status)
            cells.append(cell)
        cat = f"{row.edit_type} {edit_type_name(row.edit_type)}" if row.edit_type in EDIT_TYPES else str(row.edit_type)
        out.append(RowView(row.sample_id, row.edit_type, cat, prompts, cells, " ".join(sorted(statuses))))
    if rows:
        cache.save()
    cats = [(c, edit_type_name(c) if c in EDIT_TYPES else "") for c in sorted({r.edit_type for r in rows})]
    return Gallery(head, out, cats, editors)
