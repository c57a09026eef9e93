"""The benchmark loop: editors x samples -> edited PNG + scored JSONL record, then the leaderboard.

Each finished sample is written at once, so a rerun of the same command resumes where it stopped.
A sample that fails is recorded as failed with its error and excluded from means (never scored 0).
"""
from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image

from editors.base import SkipSample, as_edit_output
from editors.registry import get_editor_class
from metrics.base import MetricBatch

from pie_bench.datasets.pie import Dataset
from pie_bench.run.distributed import Dist, init_distributed, rank_device, shard
from pie_bench.core.errors import ConfigError, HarnessError, ResultsError
from pie_bench.core.provenance import device_info, device_label, git_state, now_iso, package_versions, synchronize
from pie_bench.run.leaderboard import LEADERBOARD_KIND, LEADERBOARD_VERSION, Leaderboard
from pie_bench.run.results import (JsonlWriter, SampleRecord, atomic_write_bytes,
                      append_missing_lines, atomic_write_json, encode_float, record_key, summarise_editor,
                      write_error)
from pie_bench.run.lock import FolderLock
from pie_bench.run.run_folder import RunFolder

log = logging.getLogger("pie_bench")

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
          "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


@dataclass
class BenchOptions:
    editors: Sequence[str]
    editor_args: dict[str, dict[str, str]] = field(default_factory=dict)
    backbone: str = "toy"
    device: str = "cpu"
    dtype: str = "float32"
    warmup: int = 1
    fail_fast: bool = False
    retry_failed: bool = False
    command: str = ""
    rank: int = 0
    world: int = 1
    batch_size: int = 1  # samples per edit_batch call, for editors that override it


class FailFast(HarnessError):
    pass


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, HarnessError) else f"{type(exc).__name__}: {text}"


def instantiate_editors(names: Sequence[str], editor_args: dict[str, dict[str, str]]) -> list:
    unknown = set(editor_args) - set(names)
    if unknown:
        raise ConfigError(f"--editor-arg given for {', '.join(sorted(unknown))}, which is not in --editors "
                          f"({', '.join(names)})")
    return [get_editor_class(n)(**editor_args.get(n, {})) for n in names]


def save_png(path: Path, image: np.ndarray) -> None:
    import io

    buf = io.BytesIO()
    # lossless either way; zlib level 1 is ~2.8x faster to write than the default 6, files ~7% larger
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    atomic_write_bytes(path, buf.getvalue(), fsync=False)


def score_sample(metrics: list, sample, edited: np.ndarray) -> dict:
    target = sample.target_image if sample.has_target_image else None
    batch = MetricBatch.from_arrays([sample.image], [edited], [sample.mask], [sample.source_prompt],
                                    [sample.target_prompt], targets=[target], sample_ids=[sample.id],
                                    attributes=[sample.extras.get("attributes")],
                                    attribute_scorers=[sample.attribute_scorer])
    out = {}
    for m in metrics:
        if m.requires_target and batch.target is None:
            continue
        value = m.compute(batch)
        out[m.name] = encode_float(float(value[0]))
    return out


def editor_info(editor) -> dict:
    return {"config": editor.config_dict(), "config_hash": editor.config_hash(), "backbone": editor.backbone_id,
            "toy": editor.is_toy, "seed": getattr(editor.config, "seed", None), "paper": editor.paper}


class ProgressSink:
    """Progress callbacks; the CLI passes a rich implementation, tests the silent default."""

    def start(self, total: int) -> None: ...
    def editor(self, name: str, total: int) -> None: ...
    def advance(self, status: str) -> None: ...
    def note(self, text: str) -> None: ...
    def stop(self) -> None: ...


def _save_png_or_raise(path: Path, image: np.ndarray) -> None:
    """A write failure (disk full, read-only) stops the run: it is the output folder's fault, and
    recording every following sample as failed would only bury the cause."""
    try:
        save_png(path, image)
    except OSError as exc:
        raise write_error(path, exc) from None


def _check_image(image: np.ndarray, editor: str, sample_id: str) -> None:
    # NaN latents decode to black, and diffusers' safety checker blacks out flagged images; neither
    # is an edit, and scoring one would pass a broken pipeline off as a weak editor
    if not image.any():
        raise ValueError(f"{editor} returned an all-black image for sample {sample_id} (NaN in the "
                         "pipeline, e.g. an fp16 overflow, or a safety checker); under --dtype float16 try float32")


def _failure_text(exc: BaseException) -> str:
    text = one_line(exc)
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        text += " (out of GPU memory: free memory, use fewer processes per GPU or --dtype float16, " \
                "then rerun with --retry-failed)"
    return text


def run_bench(dataset: Dataset, opts: BenchOptions, metrics: list, out: Path,
              progress: Optional[ProgressSink] = None, samples: Optional[Sequence] = None,
              dist: Optional[Dist] = None) -> dict:
    """Run every editor on ``samples`` (default: the whole dataset) and return the leaderboard dict.

    Under ``accelerate launch``/``torchrun`` (or with ``dist`` given) the remaining work is split
    across ranks; each rank appends to its own ``samples.rank<k>.jsonl``; rank 0 then merges and
    writes the leaderboard, which every rank returns."""
    dist = dist or init_distributed(opts.device)
    opts.rank, opts.world = dist.rank, dist.world
    if not dist.is_main:
        progress = None  # one progress display per launch: rank 0's
    progress = progress or ProgressSink()
    folder = RunFolder(out)
    device = torch.device(rank_device(opts.device, dist))
    dtype = DTYPES[opts.dtype]
    samples = list(dataset.samples if samples is None else samples)
    editors = instantiate_editors(list(opts.editors), opts.editor_args)
    for ed in editors:  # provenance must be known before load (config hash includes the backbone)
        ed.backbone_id = opts.backbone
        ed.is_toy = opts.backbone == "toy" and ed.uses_backbone
    lock = FolderLock(folder.root, opts.command)

    def start() -> list[str]:
        folder.create()
        lock.acquire()
        try:
            folder.prepare(dataset.describe(), {ed.name: editor_info(ed) for ed in editors},
                           {"metrics": [m.name for m in metrics]})
            return sorted(folder.done_keys(opts.retry_failed))
        except BaseException:
            lock.release()
            raise

    # rank 0 alone reads the folder, so every rank shards the same remaining work
    done = set(dist.on_main(start))
    try:
        new_lines, load_errors = _run_shard(dataset, opts, metrics, folder, editors, samples, done, device,
                                            dtype, progress, dist)
        gathered = dist.gather((dist.rank, new_lines, load_errors))

        def finish() -> dict:
            errors: dict[str, str] = {}
            for rank, lines, errs in gathered:
                if rank != dist.rank:
                    append_missing_lines(folder.shard_path(rank, dist.world), lines)
                errors.update(errs)
            return write_leaderboard(folder, dataset, opts, metrics, errors)

        return dist.on_main(finish)
    finally:
        if dist.is_main:
            lock.release()


def _run_shard(dataset: Dataset, opts: BenchOptions, metrics: list, folder: RunFolder, editors: list,
               samples: list, done: set, device: torch.device, dtype: torch.dtype, progress: ProgressSink,
               dist: Dist) -> tuple[list[str], dict[str, str]]:
    """This rank's part of the run; returns the record lines it wrote and its editor load errors."""
    writer = JsonlWriter(folder.shard_path(dist.rank, dist.world))
    dev_label = device_label(device)
    load_errors: dict[str, str] = {}
    todo_by_editor = {}
    for ed in editors:
        chash = ed.config_hash()
        remaining = [s for s in samples if record_key(ed.name, chash, dataset.annotations_sha256, s.id) not in done]
        todo_by_editor[ed.name] = shard(remaining, dist.rank, dist.world)
    progress.start(sum(len(t) for t in todo_by_editor.values()))
    try:
        for ed in editors:
            chash = ed.config_hash()
            todo = todo_by_editor[ed.name]
            progress.editor(ed.name, len(todo))
            if not todo:
                continue
            try:
                ed.load(opts.backbone, device, dtype)
            except Exception as exc:  # weights missing etc.: the editor is reported, the others go on
                load_errors[ed.name] = one_line(exc)
                progress.note(f"[red]{ed.name}: could not load: {load_errors[ed.name]}[/red]")
                log.debug("load failure", exc_info=True)
                if opts.fail_fast:
                    raise FailFast(f"{ed.name}: could not load ({load_errors[ed.name]})") from None
                for _ in todo:
                    progress.advance("failed")
                continue
            assert ed.config_hash() == chash, f"{ed.name}.load() changed its config hash"
            state = {"timed": 0}
            pending: list = []  # (sample, record) ready to edit, waiting for a full batch
            batch = max(1, opts.batch_size) if ed.batches() else 1
            for sample in todo:
                rec = SampleRecord(sample_id=sample.id, editor=ed.name, config_hash=chash, dataset=dataset.name,
                                   dataset_sha256=dataset.annotations_sha256, edit_type=sample.edit_type,
                                   status="ok", seed=getattr(ed.config, "seed", None), rank=dist.rank,
                                   world=dist.world, device=dev_label, created_at=now_iso())
                try:
                    reason = ed.skip_reason(sample)
                    if reason:
                        raise SkipSample(reason)
                    _ = sample.image  # image problems are the sample's failure, not the editor's latency
                except Exception as exc:
                    _record_failure(rec, exc)
                    _finish(writer, progress, opts, rec, ed.name, sample.id)
                    continue
                pending.append((sample, rec))
                if len(pending) >= batch:
                    _edit_chunk(ed, pending, metrics, folder, device, opts, writer, progress, state)
                    pending = []
            if pending:
                _edit_chunk(ed, pending, metrics, folder, device, opts, writer, progress, state)
            del ed
    finally:
        writer.close()
        progress.stop()
    return writer.lines, load_errors


def _generator(rec: SampleRecord) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(rec.seed if rec.seed is not None else 0)


def _record_failure(rec: SampleRecord, exc: BaseException) -> None:
    if isinstance(exc, SkipSample):
        rec.status, rec.error = "skipped", str(exc)
        return
    rec.status, rec.error = "failed", _failure_text(exc)
    rec.latency_s = None
    rec.metrics = {}
    log.debug("sample failure", exc_info=True)
    if isinstance(exc, torch.cuda.OutOfMemoryError) and torch.cuda.is_available():
        torch.cuda.empty_cache()
    rec.extras = {"traceback": traceback.format_exc(limit=3)[-2000:]}


def _finish(writer: JsonlWriter, progress: ProgressSink, opts: BenchOptions, rec: SampleRecord, editor: str,
            sample_id: str) -> None:
    writer.write(rec)
    progress.advance(rec.status)
    if rec.status == "failed" and opts.fail_fast:
        raise FailFast(f"{editor} failed on sample {sample_id}: {rec.error} (--fail-fast)")


def _timed(ed, samples: list, recs: list, device: torch.device) -> tuple[list, float]:
    synchronize(device)
    t0 = time.perf_counter()
    with torch.inference_mode(False):
        if len(samples) == 1:
            results = [ed.edit(samples[0], _generator(recs[0]))]
        else:
            results = ed.edit_batch(samples, [_generator(r) for r in recs])
    synchronize(device)
    return results, time.perf_counter() - t0


def _edit_chunk(ed, chunk: list, metrics: list, folder: RunFolder, device: torch.device, opts: BenchOptions,
                writer: JsonlWriter, progress: ProgressSink, state: dict) -> None:
    """Edit ``chunk`` [(sample, record)] in one ``edit_batch`` call (or one ``edit``), then score, save
    and write each. A batch that raises is redone one sample at a time, so the failure lands on the
    sample that caused it. Latency per sample is the call's time over the chunk size."""
    samples, recs = [c[0] for c in chunk], [c[1] for c in chunk]
    results: Optional[list] = None
    if len(chunk) > 1:
        try:
            results, seconds = _timed(ed, samples, recs, device)
            if len(results) != len(chunk):
                raise ValueError(f"{ed.name}.edit_batch returned {len(results)} outputs for {len(chunk)} samples")
            latencies = [seconds / len(chunk)] * len(chunk)
        except Exception:
            log.debug("batch failed; redoing one by one", exc_info=True)
            results = None
    if results is None:
        for sample, rec in chunk:
            _edit_one(ed, sample, rec, metrics, folder, device, opts, writer, progress, state)
        return
    # the warm-up cost is spread over the whole call, so a call that holds a warm-up sample is all warm-up
    warm = state["timed"] < opts.warmup
    for (sample, rec), result, lat in zip(chunk, results, latencies):
        _finish_result(ed, sample, rec, result, lat, metrics, folder, opts, state, warmup=warm)
        _finish(writer, progress, opts, rec, ed.name, sample.id)


def _edit_one(ed, sample, rec: SampleRecord, metrics: list, folder: RunFolder, device: torch.device,
              opts: BenchOptions, writer: JsonlWriter, progress: ProgressSink, state: dict) -> None:
    try:
        (result,), seconds = _timed(ed, [sample], [rec], device)
        _finish_result(ed, sample, rec, result, seconds, metrics, folder, opts, state)
    except ResultsError:
        raise
    except Exception as exc:
        _record_failure(rec, exc)
    _finish(writer, progress, opts, rec, ed.name, sample.id)


def _finish_result(ed, sample, rec: SampleRecord, result, latency: float, metrics: list, folder: RunFolder,
                   opts: BenchOptions, state: dict, warmup: Optional[bool] = None) -> None:
    """Validate, score and save one edited image into ``rec`` (raises on a bad image)."""
    try:
        rec.latency_s = latency
        rec.warmup = state["timed"] < opts.warmup if warmup is None else warmup
        state["timed"] += 1
        result = as_edit_output(result, sample.id, ed.name)
        _check_image(result.image, ed.name, sample.id)
        rec.extras = {k: v for k, v in result.extras.items() if isinstance(v, (int, float, str, bool))}
        rec.metrics = score_sample(metrics, sample, result.image)
        img_path = folder.image_path(ed.name, sample.id)
        _save_png_or_raise(img_path, result.image)
        rec.image = str(img_path.relative_to(folder.root))
    except ResultsError:
        raise
    except Exception as exc:
        _record_failure(rec, exc)


def build_leaderboard(folder: RunFolder, dataset_info: dict, metric_info: dict, extra: dict) -> Leaderboard:
    manifest = folder.read_manifest() or {"editors": {}}
    records = folder.records()
    editors = {}
    for name, info in manifest["editors"].items():
        recs = [r for r in records if r.editor == name and r.config_hash == info["config_hash"]
                and r.dataset_sha256 == dataset_info.get("annotations_sha256")]
        if not recs and name not in extra.get("load_errors", {}):
            continue
        editors[name] = {**info, **summarise_editor(recs, metric_info)}
        if name in extra.get("load_errors", {}):
            editors[name]["load_error"] = extra["load_errors"][name]
    toy = any(e.get("toy") for e in editors.values()) or bool(extra.get("metrics_toy"))
    # a resumed run may mix records from launches with different process counts
    launches = sorted({r.world for r in records if r.editor in editors})
    return Leaderboard.from_dict({
        "kind": LEADERBOARD_KIND,
        "schema_version": LEADERBOARD_VERSION,
        "selection": extra.get("selection", {}),
        "created_at": now_iso(),
        "run": folder.root.name,
        "command": extra.get("command", ""),
        "toy": toy,
        "toy_note": _toy_note(editors, metric_info) if toy else "",
        "git": git_state(),
        "packages": package_versions(),
        "device": extra.get("device", {}),
        "processes": extra.get("world", 1),
        "processes_in_records": launches,
        "n_failed": sum(e.get("n_failed", 0) for e in editors.values()),
        "dataset": dataset_info,
        "metrics_backbone": extra.get("metrics_backbone", ""),
        "metric_info": metric_info,
        "editors": editors,
    })


def _toy_note(editors: dict, metric_info: dict) -> str:
    """Say exactly which numbers come from toy (random-weight) models."""
    toy_editors = [n for n, e in editors.items() if e.get("toy")]
    toy_metrics = [n for n, i in metric_info.items() if i.get("toy")]
    parts = []
    if toy_editors:
        parts.append(f"editors {', '.join(toy_editors)} ran on toy (random-weight) models: their numbers check the "
                     "pipeline, not editing quality")
    if toy_metrics:
        parts.append(f"metrics {', '.join(toy_metrics)} use toy (random) weights: their values check the pipeline only")
    return "; ".join(parts)


def write_leaderboard(folder: RunFolder, dataset: Dataset, opts: BenchOptions, metrics: list,
                      load_errors: Optional[dict] = None) -> dict:
    metric_info = {m.name: m.describe() for m in metrics}
    metrics_backbone = metrics[0].backbone if metrics else ""
    board = build_leaderboard(folder, dataset.describe(), metric_info, {
        "command": opts.command, "device": device_info(opts.device), "world": opts.world,
        "metrics_backbone": metrics_backbone, "metrics_toy": any(m.is_toy for m in metrics),
        "load_errors": load_errors or {}, "selection": dataset.meta.get("selection", {})}).to_dict()
    try:
        atomic_write_json(folder.leaderboard_path, board)
    except OSError as exc:
        raise ResultsError(f"{folder.leaderboard_path}: could not write the leaderboard ({exc.strerror}); "
                           "per-sample records are safe in samples*.jsonl - free space and rerun to resume") from None
    return board


def any_failed(board: Union[Leaderboard, dict]) -> bool:
    board = board if isinstance(board, Leaderboard) else Leaderboard.from_dict(board)
    return any(e.n_failed or e.load_error for e in board.editors.values())
